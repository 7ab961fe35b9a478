//! Responses framed for the socket as a list of chunks. A fetch response's record batches stay
//! the `Bytes` the storage read returned and go out as their own chunks (vectored write), so
//! fetched data is copied once, from the page cache, and never again in user space.
//!
//! The bytes are exactly what prost would encode for the same `Response`; a test checks it.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;
use tidelog_proto::frame::FRAME_HEADER_BYTES;
use tidelog_proto::pb;
use tidelog_proto::FrameError;

/// Field numbers of the messages encoded by hand below (see tidelog.proto).
const RESPONSE_FETCH_FIELD: u32 = 14;
const FETCH_TOPICS_FIELD: u32 = 1;
const TOPIC_NAME_FIELD: u32 = 1;
const TOPIC_PARTITIONS_FIELD: u32 = 2;
const PARTITION_RECORDS_FIELD: u32 = 6;

/// Record batches smaller than this are copied into the surrounding chunk: a separate I/O
/// slice for a few bytes costs more than the copy.
const INLINE_RECORDS_BYTES_MAX: usize = 4096;

/// One response frame, length prefix included, as chunks to write in order.
pub(crate) type FrameChunks = Vec<Bytes>;

/// Frames `response`, refusing one longer than `frame_bytes_max`.
pub(crate) fn encode_response(
    mut response: pb::Response,
    frame_bytes_max: usize,
) -> Result<FrameChunks, FrameError> {
    let length = response.encoded_len();
    if length > frame_bytes_max || u32::try_from(length).is_err() {
        return Err(FrameError::TooLarge {
            length,
            max: frame_bytes_max,
        });
    }
    let fetch = match response.body.take() {
        Some(pb::response::Body::Fetch(fetch)) => fetch,
        other => {
            response.body = other;
            let mut frame = BytesMut::with_capacity(FRAME_HEADER_BYTES + length);
            // Checked above: the length fits in u32.
            frame.put_u32(length as u32);
            response.encode_raw(&mut frame);
            return Ok(vec![frame.freeze()]);
        }
    };
    let mut chunks = Vec::new();
    let mut head = BytesMut::with_capacity(256);
    head.put_u32(length as u32);
    response.encode_raw(&mut head);
    encode_key(RESPONSE_FETCH_FIELD, WireType::LengthDelimited, &mut head);
    encode_varint(fetch.encoded_len() as u64, &mut head);
    for mut topic in fetch.topics {
        encode_key(FETCH_TOPICS_FIELD, WireType::LengthDelimited, &mut head);
        encode_varint(topic.encoded_len() as u64, &mut head);
        if !topic.name.is_empty() {
            prost::encoding::string::encode(TOPIC_NAME_FIELD, &topic.name, &mut head);
        }
        for mut partition in std::mem::take(&mut topic.partitions) {
            encode_key(TOPIC_PARTITIONS_FIELD, WireType::LengthDelimited, &mut head);
            encode_varint(partition.encoded_len() as u64, &mut head);
            let records = std::mem::take(&mut partition.records);
            partition.encode_raw(&mut head);
            if records.is_empty() {
                continue;
            }
            encode_key(PARTITION_RECORDS_FIELD, WireType::LengthDelimited, &mut head);
            encode_varint(records.len() as u64, &mut head);
            if records.len() <= INLINE_RECORDS_BYTES_MAX {
                head.extend_from_slice(&records);
            } else {
                chunks.push(head.split().freeze());
                chunks.push(records);
            }
        }
    }
    if !head.is_empty() {
        chunks.push(head.freeze());
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tidelog_proto::frame::encode_frame;

    /// A topic name with its partitions' (index, records) pairs.
    type TopicRecords = (String, Vec<(u32, Vec<u8>)>);

    fn fetch_response(partitions: Vec<TopicRecords>) -> pb::Response {
        pb::Response {
            correlation_id: 42,
            error: 0,
            error_message: String::new(),
            body: Some(pb::response::Body::Fetch(pb::FetchResponse {
                topics: partitions
                    .into_iter()
                    .map(|(name, partitions)| pb::fetch_response::Topic {
                        name,
                        partitions: partitions
                            .into_iter()
                            .map(|(partition, records)| pb::fetch_response::Partition {
                                partition,
                                error: 0,
                                message: String::new(),
                                high_watermark: 1000,
                                log_start_offset: 3,
                                records: Bytes::from(records),
                            })
                            .collect(),
                    })
                    .collect(),
            })),
        }
    }

    fn concatenated(chunks: &FrameChunks) -> Vec<u8> {
        chunks.iter().flat_map(|chunk| chunk.iter().copied()).collect()
    }

    proptest! {
        #[test]
        fn hand_encoded_fetch_frames_equal_prost(
            topics in proptest::collection::vec(
                ("[a-z]{0,6}", proptest::collection::vec(
                    (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..6000)), 0..4)),
                0..3),
        ) {
            let response = fetch_response(topics);
            let mut expected = BytesMut::new();
            encode_frame(&response, &mut expected, 1 << 30).unwrap();
            let chunks = encode_response(response, 1 << 30).unwrap();
            prop_assert_eq!(concatenated(&chunks), expected.to_vec());
        }
    }

    #[test]
    fn large_records_are_their_own_chunk_and_are_not_copied() {
        let records = vec![7u8; 100_000];
        let response = fetch_response(vec![("t".into(), vec![(0, records)])]);
        let chunks = encode_response(response, 1 << 30).unwrap();
        assert!(chunks.iter().any(|chunk| chunk.len() == 100_000));
    }

    #[test]
    fn other_responses_are_one_chunk() {
        let response = pb::Response {
            correlation_id: 1,
            error: pb::ErrorCode::InvalidRequest as i32,
            error_message: "no".into(),
            body: None,
        };
        let mut expected = BytesMut::new();
        encode_frame(&response, &mut expected, 1024).unwrap();
        let chunks = encode_response(response, 1024).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(concatenated(&chunks), expected.to_vec());
    }

    #[test]
    fn oversized_response_is_refused() {
        let response = fetch_response(vec![("t".into(), vec![(0, vec![0; 2048])])]);
        assert!(matches!(
            encode_response(response, 1024),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
