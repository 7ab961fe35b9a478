//! Bytes from a socket, as the broker's connection reads them: cut frames, decode requests.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tidelog_proto::frame::decode_frame;
use tidelog_proto::pb;

fuzz_target!(|data: &[u8]| {
    let mut buffer = BytesMut::from(data);
    // Bounded: each successful decode consumes at least the 4-byte prefix.
    while let Ok(Some(frame)) = decode_frame(&mut buffer, 1 << 20) {
        let _ = pb::Request::decode(frame.clone());
        let _ = pb::Response::decode(frame);
    }
});
