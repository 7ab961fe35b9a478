//! Frames: a big-endian `u32` length, then that many bytes of one protobuf message.
//!
//! ```text
//! +----------------+---------------------------------+
//! | length: u32 BE | protobuf `Request` / `Response` |
//! +----------------+---------------------------------+
//! ```
//! The length counts the message only, not itself. A length over the receiver's limit ends the
//! connection: after it the stream cannot be trusted to be in sync.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::FrameError;

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Cuts one whole frame's message bytes off the front of `buf`.
///
/// `Ok(None)` means more bytes are needed; the caller reads more and calls again.
/// The returned `Bytes` shares `buf`'s allocation: no copy.
pub fn decode_frame(buf: &mut BytesMut, max_frame_bytes: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(header) = buf.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    // The slice is exactly FRAME_HEADER_BYTES long, so the array conversion cannot fail.
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if length > max_frame_bytes {
        return Err(FrameError::TooLarge {
            length,
            max: max_frame_bytes,
        });
    }
    if length == 0 {
        return Err(FrameError::Empty);
    }
    if buf.len() < FRAME_HEADER_BYTES + length {
        // Reserve the rest now so the next read does not reallocate repeatedly.
        buf.reserve(FRAME_HEADER_BYTES + length - buf.len());
        return Ok(None);
    }
    buf.advance(FRAME_HEADER_BYTES);
    Ok(Some(buf.split_to(length).freeze()))
}

/// Appends `message` to `out` as one frame.
pub fn encode_frame<M: Message>(
    message: &M,
    out: &mut BytesMut,
    max_frame_bytes: usize,
) -> Result<(), FrameError> {
    let length = message.encoded_len();
    if length > max_frame_bytes || u32::try_from(length).is_err() {
        return Err(FrameError::TooLarge {
            length,
            max: max_frame_bytes,
        });
    }
    out.reserve(FRAME_HEADER_BYTES + length);
    // Checked just above: length fits in u32.
    out.put_u32(length as u32);
    // `out` has room for `length` more bytes, reserved just above, so encoding cannot fail.
    message.encode_raw(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use proptest::prelude::*;

    fn sample_request(correlation_id: u64) -> pb::Request {
        pb::Request {
            header: Some(pb::RequestHeader {
                api: pb::ApiKey::Metadata as i32,
                version: 1,
                correlation_id,
                client_id: "test".into(),
            }),
            body: Some(pb::request::Body::Metadata(pb::MetadataRequest {
                topics: vec!["a".into()],
            })),
        }
    }

    #[test]
    fn frame_round_trips_and_partial_input_asks_for_more() {
        let mut wire = BytesMut::new();
        encode_frame(&sample_request(7), &mut wire, 1024).unwrap();
        encode_frame(&sample_request(8), &mut wire, 1024).unwrap();
        let whole = wire.clone();
        for cut in 0..whole.len() {
            let mut partial = BytesMut::from(&whole[..cut]);
            let mut decoded = 0;
            while let Some(frame) = decode_frame(&mut partial, 1024).unwrap() {
                pb::Request::decode(frame).unwrap();
                decoded += 1;
            }
            assert!(decoded <= 2);
        }
        let first = decode_frame(&mut wire, 1024).unwrap().unwrap();
        assert_eq!(pb::Request::decode(first).unwrap(), sample_request(7));
        let second = decode_frame(&mut wire, 1024).unwrap().unwrap();
        assert_eq!(pb::Request::decode(second).unwrap(), sample_request(8));
        assert!(wire.is_empty());
    }

    #[test]
    fn oversized_frame_is_refused_before_it_is_buffered() {
        let mut wire = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            decode_frame(&mut wire, 1 << 20),
            Err(FrameError::TooLarge {
                length: 0x7fff_ffff,
                max: 1 << 20
            })
        );
    }

    #[test]
    fn empty_frame_is_an_error() {
        let mut wire = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(decode_frame(&mut wire, 1024), Err(FrameError::Empty));
    }

    proptest! {
        #[test]
        fn garbage_never_panics_the_decoder(bytes: Vec<u8>) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decode_frame(&mut buf, 4096) {
                let _ = pb::Request::decode(frame);
            }
        }
    }
}
