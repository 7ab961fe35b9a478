//! Kafka request and response framing, without I/O: the request header of a frame (whose
//! version follows from the API key and version, through kafka-protocol's `HeaderVersion`),
//! and the size prefix and response header (v0, or v1 with its empty tagged-field section)
//! put in front of an encoded response body.
//!
//! Frames themselves (a 4-byte big-endian size, then that many bytes) are cut by
//! `tidelog_proto::frame::decode_frame`: the native protocol frames the same way.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use thiserror::Error;

/// Bytes every request header starts with: API key, API version, correlation id.
const HEADER_FIXED_BYTES: usize = 8;

/// A request whose header is parsed and whose body is not yet decoded.
#[derive(Debug)]
pub struct ParsedRequest {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    /// The body, as it followed the header in the frame (no copy).
    pub body: Bytes,
}

impl ParsedRequest {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// Why a frame is not a request this listener can read. Each ends the connection, as in
/// Kafka: without a readable header there is no response the client could match.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("a request of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown API key {api_key} (correlation id {correlation_id})")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    #[error("malformed request header for {api_key:?} v{version}: {reason}")]
    MalformedHeader {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
}

/// Parses the request header at the front of `frame`.
///
/// # Errors
/// A frame too short for a header, an API key Kafka does not define, or a header that does
/// not decode in the version its API and version call for.
pub fn parse_request(mut frame: Bytes) -> Result<ParsedRequest, RequestError> {
    let Some(fixed) = frame.get(..HEADER_FIXED_BYTES) else {
        return Err(RequestError::TooShort(frame.len()));
    };
    let raw_key = i16::from_be_bytes([fixed[0], fixed[1]]);
    let version = i16::from_be_bytes([fixed[2], fixed[3]]);
    let correlation_id = i32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|()| RequestError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    let header_version = api_key.request_header_version(version);
    let header =
        RequestHeader::decode(&mut frame, header_version).map_err(|error| RequestError::MalformedHeader {
            api_key,
            version,
            reason: error.to_string(),
        })?;
    Ok(ParsedRequest {
        api_key,
        header,
        body: frame,
    })
}

/// Why a response could not be encoded; a broker bug, never the client's doing.
#[derive(Debug, Error)]
#[error("encoding a response: {0}")]
pub struct EncodeError(pub String);

/// Encodes a response body (without header) in `version`.
///
/// # Errors
/// A field set that `version` cannot carry, or a value too large for its wire type.
pub fn encode_body<M: Encodable>(message: &M, version: i16) -> Result<Bytes, EncodeError> {
    let size = message
        .compute_size(version)
        .map_err(|error| EncodeError(error.to_string()))?;
    let mut buffer = BytesMut::with_capacity(size);
    message
        .encode(&mut buffer, version)
        .map_err(|error| EncodeError(error.to_string()))?;
    Ok(buffer.freeze())
}

/// The size prefix and response header for a body of `body_bytes` answering `api_key` v
/// `version`, to be written in front of the body's chunks.
///
/// # Errors
/// A response larger than a Kafka frame can announce (2 GiB).
pub fn response_head(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body_bytes: usize,
) -> Result<Bytes, EncodeError> {
    let header_version = api_key.response_header_version(version);
    // v1 adds the tagged-field section; ours is always empty (a zero count), so a default
    // value is never written as a tagged field.
    let header_bytes = if header_version >= 1 { 5 } else { 4 };
    let total = body_bytes
        .checked_add(header_bytes)
        .and_then(|total| i32::try_from(total).ok())
        .ok_or_else(|| {
            EncodeError(format!(
                "a response of {body_bytes} bytes does not fit in a frame"
            ))
        })?;
    let mut head = BytesMut::with_capacity(4 + header_bytes);
    head.put_i32(total);
    head.put_i32(correlation_id);
    if header_version >= 1 {
        head.put_u8(0);
    }
    Ok(head.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsResponse, MetadataRequest, ResponseHeader};
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    fn request_frame(api_key: ApiKey, version: i16, correlation_id: i32, body: &[u8]) -> Bytes {
        let mut header = RequestHeader::default();
        header.request_api_key = api_key as i16;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(StrBytes::from_static_str("test"));
        let mut frame = BytesMut::new();
        header
            .encode(&mut frame, api_key.request_header_version(version))
            .unwrap();
        frame.extend_from_slice(body);
        frame.freeze()
    }

    #[test]
    fn header_version_follows_the_api_and_version() {
        // Metadata v8 uses header v1, v9 header v2 (with a tagged-field section).
        for version in [8, 9] {
            // Null topics (all), then three booleans; v9 is flexible: a compact null array
            // and an empty tagged-field section.
            let body: &[u8] = if version == 8 {
                &[0xff, 0xff, 0xff, 0xff, 1, 0, 0]
            } else {
                &[0, 1, 0, 0, 0]
            };
            let parsed = parse_request(request_frame(ApiKey::Metadata, version, 7, body)).unwrap();
            assert_eq!(parsed.api_key, ApiKey::Metadata);
            assert_eq!(parsed.version(), version);
            assert_eq!(parsed.correlation_id(), 7);
            assert_eq!(parsed.header.client_id.as_deref(), Some("test"));
            assert_eq!(&parsed.body[..], body);
            let decoded = MetadataRequest::decode(&mut parsed.body.clone(), version).unwrap();
            assert_eq!(decoded.topics, None);
            assert!(decoded.allow_auto_topic_creation);
        }
    }

    #[test]
    fn short_frames_and_unknown_api_keys_are_refused() {
        assert_eq!(
            parse_request(Bytes::from_static(&[0, 3, 0])).unwrap_err(),
            RequestError::TooShort(3)
        );
        assert_eq!(
            parse_request(Bytes::from_static(&[0x7f, 0, 0, 1, 0, 0, 0, 9, 0, 0])).unwrap_err(),
            RequestError::UnknownApiKey {
                api_key: 0x7f00,
                correlation_id: 9
            }
        );
        // A client id longer than the frame.
        let malformed = parse_request(Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 9, 0, 50, b'x']));
        assert!(
            matches!(malformed, Err(RequestError::MalformedHeader { .. })),
            "{malformed:?}"
        );
    }

    #[test]
    fn response_head_frames_the_body_with_the_right_header_version() {
        let body = encode_body(&ApiVersionsResponse::default(), 3).unwrap();
        // ApiVersions responses always use header v0, whatever the version.
        let head = response_head(ApiKey::ApiVersions, 3, 42, body.len()).unwrap();
        assert_eq!(head.len(), 8);
        assert_eq!(
            i32::from_be_bytes(head[..4].try_into().unwrap()) as usize,
            4 + body.len()
        );
        // Metadata v9 responses use header v1: correlation id, then an empty tag section.
        let head = response_head(ApiKey::Metadata, 9, 42, 10).unwrap();
        assert_eq!(&head[..], &[0, 0, 0, 15, 0, 0, 0, 42, 0]);
        let mut header = head.slice(4..);
        let decoded = ResponseHeader::decode(&mut header, 1).unwrap();
        assert_eq!(decoded.correlation_id, 42);
        assert!(response_head(ApiKey::Metadata, 9, 1, i32::MAX as usize).is_err());
    }

    #[test]
    fn huge_array_counts_are_refused_not_allocated() {
        // Unpatched kafka-protocol aborts the process here (vendor/kafka-protocol).
        let mut body = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0, 1]);
        assert!(MetadataRequest::decode(&mut body, 0).is_err());
        let mut body = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0]);
        assert!(MetadataRequest::decode(&mut body, 9).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_header_parser(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_request(Bytes::from(bytes));
        }

        #[test]
        fn random_headers_of_every_api_parse_or_fail_cleanly(
            key in 0i16..100,
            version in -2i16..20,
            tail in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let mut frame = BytesMut::new();
            frame.put_i16(key);
            frame.put_i16(version);
            frame.put_i32(1);
            frame.extend_from_slice(&tail);
            let _ = parse_request(frame.freeze());
        }
    }
}
