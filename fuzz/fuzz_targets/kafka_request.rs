//! Bytes from a socket, as the Kafka listener reads them: cut frames, parse request headers,
//! decode the bodies of every served API and version (kafka-protocol's codecs with Tidelog's
//! patch, and the hand codecs for old versions). Nothing may panic or abort.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidelog_proto::frame::decode_frame;

fuzz_target!(|data: &[u8]| {
    let mut buffer = BytesMut::from(data);
    // Bounded: each successful decode consumes at least the 4-byte prefix.
    while let Ok(Some(frame)) = decode_frame(&mut buffer, 1 << 20) {
        let _ = tidelog_broker::kafka::decode_request(frame);
    }
});
