//! Malformed input over raw TCP: every kind gets an error response or a closed connection,
//! never a crash, and the broker keeps serving well-behaved clients afterwards. Also many
//! concurrent connections. Randomised parts print their seed (`TIDELOG_TEST_SEED` reproduces).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use rand::{Rng, RngCore};
use tidelog_e2e::raw::Reaction;
use tidelog_e2e::records::{assert_dense, batch_of, read_partition};
use tidelog_e2e::{test_rng, BrokerProcess, RawClient, TestDir};
use tidelog_proto::batch::{
    compute_crc, ATTRIBUTES_OFFSET, BATCH_LENGTH_OFFSET, CRC_OFFSET, LAST_OFFSET_DELTA_OFFSET, MAGIC_OFFSET,
    RECORDS_OFFSET, RECORD_COUNT_OFFSET,
};
use tidelog_proto::pb::{self, ErrorCode};

/// Bound on waiting for the broker's reaction to one piece of bad input.
const REACTION_TIMEOUT: Duration = Duration::from_secs(10);

fn start_broker(test_name: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    (dir, broker)
}

/// A well-behaved client on a fresh connection creates a topic, produces and reads back.
fn assert_serves_normally(broker: &mut BrokerProcess, after: &str) {
    broker.assert_alive(after);
    let mut client = RawClient::connect_or_panic(broker.addr());
    let topic = format!("healthy-{}", rand::random::<u32>());
    client.create_topic(&topic, 1, None);
    let base = client.produce_ok(&topic, 0, batch_of(&["still", "fine"]));
    assert_eq!(base, 0, "after {after}");
    let (records, _) = read_partition(&mut client, &topic, 0, 0);
    let values: Vec<String> = records.iter().map(|record| record.value_text()).collect();
    assert_eq!(values, vec!["still", "fine"], "after {after}");
}

fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + message.len());
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn header(api: i32, version: u32, correlation_id: u64) -> Option<pb::RequestHeader> {
    Some(pb::RequestHeader {
        api,
        version,
        correlation_id,
        client_id: "bad-input".into(),
    })
}

fn metadata_body() -> Option<pb::request::Body> {
    Some(pb::request::Body::Metadata(pb::MetadataRequest {
        topics: Vec::new(),
    }))
}

/// Sends one raw request and expects exactly one error response with `code` and the given
/// correlation id, on a connection that stays usable.
fn expect_error_and_open_connection(
    addr: SocketAddr,
    request: &pb::Request,
    code: ErrorCode,
    correlation_id: u64,
) {
    let mut client = RawClient::connect_or_panic(addr);
    client.send_bytes(&frame(&request.encode_to_vec())).unwrap();
    let response = client
        .read_response()
        .unwrap_or_else(|error| panic!("no response to {request:?}: {error}"))
        .unwrap_or_else(|| panic!("connection closed instead of answering {request:?}"));
    assert_eq!(response.error(), code, "response to {request:?}: {response:?}");
    assert_eq!(
        response.correlation_id, correlation_id,
        "response to {request:?}: {response:?}"
    );
    assert!(
        response.body.is_none(),
        "an error response carries no body: {response:?}"
    );
    assert!(
        !response.error_message.is_empty(),
        "an error response says why: {response:?}"
    );
    // The frame boundary was intact, so the connection goes on.
    let metadata = client.metadata(&[]);
    assert!(metadata.brokers.len() == 1, "{metadata:?}");
}

#[test]
fn oversized_frame_length_gets_invalid_request_then_the_connection_closes() {
    let (_dir, mut broker) = start_broker("oversized-frame");
    for prefix in [[0xff, 0xff, 0xff, 0xff], [0x10, 0x00, 0x00, 0x01], [0, 0, 0, 0]] {
        let mut client = RawClient::connect_or_panic(broker.addr());
        client.send_bytes(&prefix).unwrap();
        // A few body bytes: the broker must not wait for the rest of an oversized frame.
        client.send_bytes(&[1, 2, 3]).unwrap();
        match client.reaction(REACTION_TIMEOUT, REACTION_TIMEOUT) {
            Reaction::RespondedThenClosed(responses) => {
                assert_eq!(responses.len(), 1, "{responses:?}");
                assert_eq!(responses[0].correlation_id, 0, "{responses:?}");
                assert_eq!(responses[0].error(), ErrorCode::InvalidRequest, "{responses:?}");
            }
            other => panic!("length prefix {prefix:02x?}: expected an INVALID_REQUEST response and a close, got {other:?}"),
        }
        assert_serves_normally(&mut broker, &format!("length prefix {prefix:02x?}"));
    }
}

#[test]
fn undecodable_protobuf_gets_invalid_request_with_correlation_id_zero_and_the_connection_stays_open() {
    let (_dir, mut broker) = start_broker("garbage-protobuf");
    // Field 1 (header), length-delimited, with a length far past the end; a truncated varint;
    // a field with wire type 7 (invalid).
    for garbage in [
        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
        &[0x08, 0xff][..],
        &[0x0f, 0x01][..],
    ] {
        let mut client = RawClient::connect_or_panic(broker.addr());
        client.send_bytes(&frame(garbage)).unwrap();
        let response = client.read_response().unwrap().expect("a response, not a close");
        assert_eq!(response.correlation_id, 0, "{response:?}");
        assert_eq!(response.error(), ErrorCode::InvalidRequest, "{response:?}");
        let metadata = client.metadata(&[]);
        assert_eq!(metadata.brokers.len(), 1, "{metadata:?}");
    }
    assert_serves_normally(&mut broker, "undecodable protobuf");
}

#[test]
fn requests_missing_parts_or_with_a_mismatched_api_get_invalid_request() {
    let (_dir, mut broker) = start_broker("missing-parts");
    let addr = broker.addr();
    let metadata = pb::ApiKey::Metadata as i32;
    let produce = pb::ApiKey::Produce as i32;
    // No header: the correlation id cannot be known.
    expect_error_and_open_connection(
        addr,
        &pb::Request {
            header: None,
            body: metadata_body(),
        },
        ErrorCode::InvalidRequest,
        0,
    );
    // No body.
    expect_error_and_open_connection(
        addr,
        &pb::Request {
            header: header(metadata, 1, 41),
            body: None,
        },
        ErrorCode::InvalidRequest,
        41,
    );
    // The header says Produce, the body is a Metadata request.
    expect_error_and_open_connection(
        addr,
        &pb::Request {
            header: header(produce, 1, 42),
            body: metadata_body(),
        },
        ErrorCode::InvalidRequest,
        42,
    );
    assert_serves_normally(&mut broker, "requests missing parts");
}

#[test]
fn unknown_versions_get_unsupported_version_and_unknown_apis_an_error() {
    let (_dir, mut broker) = start_broker("unknown-version");
    let addr = broker.addr();
    let metadata = pb::ApiKey::Metadata as i32;
    for (version, correlation_id) in [(0, 7), (2, 8), (u32::MAX, 9)] {
        expect_error_and_open_connection(
            addr,
            &pb::Request {
                header: header(metadata, version, correlation_id),
                body: metadata_body(),
            },
            ErrorCode::UnsupportedVersion,
            correlation_id,
        );
    }
    // An API key this broker does not know (a future one), with no matching body arm.
    let mut client = RawClient::connect_or_panic(addr);
    let request = pb::Request {
        header: header(99, 1, 77),
        body: None,
    };
    client.send_bytes(&frame(&request.encode_to_vec())).unwrap();
    let response = client.read_response().unwrap().expect("a response, not a close");
    assert_eq!(response.correlation_id, 77, "{response:?}");
    assert_ne!(response.error(), ErrorCode::None, "{response:?}");
    assert_serves_normally(&mut broker, "unknown versions and APIs");
}

/// A valid batch of `count` records, as `BytesMut` for tampering.
fn valid_batch(count: usize) -> BytesMut {
    let values: Vec<String> = (0..count).map(|index| format!("tampered-{index}")).collect();
    BytesMut::from(&batch_of(&values)[..])
}

fn fix_crc(batch: &mut BytesMut) {
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn corrupt_batches_are_refused_whole_and_nothing_is_appended() {
    let (_dir, mut broker) = start_broker("corrupt-batches");
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("guarded", 1, None);
    client.produce_ok("guarded", 0, batch_of(&["before"]));

    let mut cases: Vec<(&str, Bytes, &[ErrorCode])> = Vec::new();
    let corrupt: &[ErrorCode] = &[ErrorCode::CorruptMessage];
    {
        let mut batch = valid_batch(3);
        let last = batch.len() - 1;
        batch[last] ^= 0x55;
        cases.push(("a flipped value byte (CRC mismatch)", batch.freeze(), corrupt));
    }
    {
        let mut batch = valid_batch(3);
        batch[CRC_OFFSET] ^= 0x01;
        cases.push(("a wrong CRC", batch.freeze(), corrupt));
    }
    {
        let batch = valid_batch(3);
        cases.push((
            "a batch cut short",
            batch.freeze().slice(..RECORDS_OFFSET + 5),
            corrupt,
        ));
    }
    {
        let batch = valid_batch(3);
        cases.push(("only half a batch header", batch.freeze().slice(..30), corrupt));
    }
    {
        let mut batch = valid_batch(3);
        batch[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&4i32.to_be_bytes());
        batch[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4].copy_from_slice(&3i32.to_be_bytes());
        fix_crc(&mut batch);
        cases.push(("a record count one too high (valid CRC)", batch.freeze(), corrupt));
    }
    {
        let mut batch = valid_batch(3);
        batch[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&1i32.to_be_bytes());
        batch[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4].copy_from_slice(&0i32.to_be_bytes());
        fix_crc(&mut batch);
        cases.push((
            "a record count too low: trailing records (valid CRC)",
            batch.freeze(),
            corrupt,
        ));
    }
    {
        let mut batch = valid_batch(3);
        batch[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&0i32.to_be_bytes());
        fix_crc(&mut batch);
        cases.push(("a record count of zero (valid CRC)", batch.freeze(), corrupt));
    }
    {
        let mut batch = valid_batch(3);
        batch[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        batch[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4]
            .copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        fix_crc(&mut batch);
        cases.push(("a huge record count (valid CRC)", batch.freeze(), corrupt));
    }
    {
        let mut batch = valid_batch(3);
        batch[MAGIC_OFFSET] = 1;
        cases.push(("magic 1", batch.freeze(), corrupt));
    }
    {
        let mut batch = valid_batch(3);
        batch[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&(-5i32).to_be_bytes());
        cases.push(("a negative batch length", batch.freeze(), corrupt));
    }
    {
        let mut batch = valid_batch(3);
        batch[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        cases.push((
            "a batch length past the end",
            batch.freeze(),
            &[ErrorCode::CorruptMessage, ErrorCode::MessageTooLarge],
        ));
    }
    {
        let mut batch = valid_batch(3);
        batch[ATTRIBUTES_OFFSET + 1] |= 0x01; // gzip
        fix_crc(&mut batch);
        cases.push((
            "a batch marked gzip whose records are not gzip",
            batch.freeze(),
            corrupt,
        ));
    }
    {
        let mut batch = valid_batch(3);
        batch[ATTRIBUTES_OFFSET + 1] |= 0x05; // no such codec
        fix_crc(&mut batch);
        cases.push((
            "compression codec 5",
            batch.freeze(),
            &[ErrorCode::UnsupportedCompressionType],
        ));
    }
    {
        // A valid batch followed by a corrupt one: the whole request is refused.
        let mut both = BytesMut::new();
        both.put_slice(&valid_batch(2));
        let mut bad = valid_batch(2);
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        both.put_slice(&bad);
        cases.push(("a valid batch then a corrupt one", both.freeze(), corrupt));
    }
    {
        let mut trailing = BytesMut::new();
        trailing.put_slice(&valid_batch(2));
        trailing.put_slice(&[0, 0, 0]);
        cases.push(("a valid batch then three stray bytes", trailing.freeze(), corrupt));
    }

    for (what, records, expected) in cases {
        let result = client
            .produce("guarded", 0, records)
            .unwrap_or_else(|error| panic!("{what}: the connection failed: {error}"));
        assert!(
            expected.contains(&result.error()),
            "{what}: expected one of {expected:?}, got {result:?}"
        );
        let high_watermark = client.high_watermark("guarded", 0);
        assert_eq!(
            high_watermark, 1,
            "{what}: nothing may be appended, yet the log grew"
        );
    }
    let base = client.produce_ok("guarded", 0, batch_of(&["after"]));
    assert_eq!(
        base, 1,
        "the next valid batch goes right after the last valid one"
    );
    let (records, _) = read_partition(&mut client, "guarded", 0, 0);
    let values: Vec<String> = records.iter().map(|record| record.value_text()).collect();
    assert_eq!(values, vec!["before", "after"]);
    assert_serves_normally(&mut broker, "corrupt batches");
}

#[test]
fn produce_to_unknown_topics_and_partitions_gets_per_partition_errors() {
    let (_dir, mut broker) = start_broker("unknown-targets");
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("known", 2, None);
    let unknown_topic = client.produce("unknown", 0, batch_of(&["x"])).unwrap();
    assert_eq!(
        unknown_topic.error(),
        ErrorCode::UnknownTopicOrPartition,
        "{unknown_topic:?}"
    );
    let unknown_partition = client.produce("known", 2, batch_of(&["x"])).unwrap();
    assert_eq!(
        unknown_partition.error(),
        ErrorCode::UnknownTopicOrPartition,
        "{unknown_partition:?}"
    );
    let fetch = client.fetch("known", 9, 0, 0, 0);
    assert_eq!(fetch.error(), ErrorCode::UnknownTopicOrPartition, "{fetch:?}");
    let past_end = client.fetch("known", 0, 5, 0, 0);
    assert_eq!(past_end.error(), ErrorCode::OffsetOutOfRange, "{past_end:?}");
    let negative = client.fetch("known", 0, -3, 0, 0);
    assert_eq!(negative.error(), ErrorCode::OffsetOutOfRange, "{negative:?}");
    for name in ["", "a/b", "..", &"n".repeat(300)] {
        let result = client.create_topic_result(name, 1, None);
        assert_ne!(
            result.error(),
            ErrorCode::None,
            "topic name {name:?} must be refused: {result:?}"
        );
    }
    let too_many = client.create_topic_result("too-many-partitions", 1_000_000, None);
    assert_eq!(too_many.error(), ErrorCode::InvalidPartitions, "{too_many:?}");
    // Zero is protobuf's "unset": the broker's default partition count applies.
    client.create_topic("default-partitions", 0, None);
    let metadata = client.metadata(&["default-partitions"]);
    assert_eq!(metadata.topics[0].partitions.len(), 1, "{metadata:?}");
    assert_serves_normally(&mut broker, "requests for unknown topics and partitions");
}

#[test]
fn random_bytes_get_an_error_or_a_close_and_never_crash_the_broker() {
    let mut rng = test_rng("random_bytes_get_an_error_or_a_close_and_never_crash_the_broker");
    let (_dir, mut broker) = start_broker("random-bytes");
    for round in 0..40 {
        let mut client = RawClient::connect_or_panic(broker.addr());
        let mut bytes = vec![0u8; rng.random_range(1..2048)];
        rng.fill_bytes(&mut bytes);
        if round % 2 == 0 && bytes.len() > 4 {
            // Half the rounds carry a length prefix that fits, so the bytes reach the decoder.
            let length = (bytes.len() - 4) as u32;
            bytes[..4].copy_from_slice(&length.to_be_bytes());
        }
        client.send_bytes(&bytes).unwrap();
        client.shutdown_write().unwrap();
        // Every response must be a well-formed frame; then the broker closes (input ended).
        match client.reaction(REACTION_TIMEOUT, REACTION_TIMEOUT) {
            Reaction::Closed | Reaction::RespondedThenClosed(_) => {}
            Reaction::Responded(responses) => {
                panic!("round {round}: input ended but the connection stayed open after {responses:?}")
            }
            Reaction::Silent => {
                panic!("round {round}: input ended but the broker neither answered nor closed")
            }
        }
        broker.assert_alive(&format!("random bytes, round {round}"));
    }
    assert_serves_normally(&mut broker, "random bytes");
}

#[test]
fn mutated_produce_requests_never_store_a_corrupt_batch_or_crash_the_broker() {
    let mut rng = test_rng("mutated_produce_requests_never_store_a_corrupt_batch_or_crash_the_broker");
    let (_dir, mut broker) = start_broker("mutated-produce");
    let mut setup = RawClient::connect_or_panic(broker.addr());
    setup.create_topic("fuzzed", 2, None);
    for round in 0..60 {
        let mut client = RawClient::connect_or_panic(broker.addr());
        let values: Vec<String> = (0..rng.random_range(1..6))
            .map(|index| format!("fuzz-{round}-{index}"))
            .collect();
        let body = RawClient::produce_body(
            "fuzzed",
            rng.random_range(0..2),
            batch_of(&values),
            pb::Acks::Leader,
        );
        let (_, request) = client.request(body);
        let mut encoded = request.encode_to_vec();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..encoded.len());
            encoded[at] ^= 1 << rng.random_range(0..8);
        }
        client.send_bytes(&frame(&encoded)).unwrap();
        client.shutdown_write().unwrap();
        match client.reaction(REACTION_TIMEOUT, REACTION_TIMEOUT) {
            Reaction::Closed | Reaction::RespondedThenClosed(_) => {}
            Reaction::Responded(responses) => {
                panic!("round {round}: input ended but the connection stayed open after {responses:?}")
            }
            Reaction::Silent => {
                panic!("round {round}: input ended but the broker neither answered nor closed")
            }
        }
        broker.assert_alive(&format!("mutated produce request, round {round}"));
    }
    // Whatever was accepted is intact: read_partition validates every batch's CRC and records.
    for partition in 0..2 {
        let (records, high_watermark) = read_partition(&mut setup, "fuzzed", partition, 0);
        assert_dense(&records, 0, "fuzzed partition");
        assert_eq!(records.len() as i64, high_watermark);
    }
    assert_serves_normally(&mut broker, "mutated produce requests");
}

#[test]
fn a_client_that_vanishes_mid_frame_or_mid_request_does_not_disturb_others() {
    let (_dir, mut broker) = start_broker("vanishing-clients");
    let mut setup = RawClient::connect_or_panic(broker.addr());
    setup.create_topic("waiting", 1, None);
    // Half a length prefix, left hanging while others work.
    let mut stalled = RawClient::connect_or_panic(broker.addr());
    stalled.send_bytes(&[0, 0]).unwrap();
    // Half a frame, then gone.
    let mut vanished = RawClient::connect_or_panic(broker.addr());
    vanished.send_bytes(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
    drop(vanished);
    // A long poll in flight, then gone.
    let mut poller = RawClient::connect_or_panic(broker.addr());
    poller
        .send_body(RawClient::fetch_body("waiting", 0, 0, 30_000, 1))
        .unwrap();
    drop(poller);
    assert_serves_normally(&mut broker, "clients vanishing mid-frame and mid-request");
    // The producer below wakes the abandoned long poll; its answer has nowhere to go.
    setup.produce_ok("waiting", 0, batch_of(&["wake"]));
    assert_serves_normally(&mut broker, "an abandoned long poll was woken");
    drop(stalled);
}

#[test]
fn many_concurrent_connections_are_all_served() {
    let (_dir, mut broker) = start_broker("many-connections");
    let addr = broker.addr();
    RawClient::connect_or_panic(addr).create_topic("busy", 4, None);
    // Many idle-ish connections open at once, each making one request.
    let mut clients: Vec<RawClient> = (0..200).map(|_| RawClient::connect_or_panic(addr)).collect();
    let ids: Vec<u64> = clients
        .iter_mut()
        .map(|client| client.send_body(metadata_body().unwrap()).unwrap())
        .collect();
    for (client, id) in clients.iter_mut().zip(ids) {
        let response = client.wait_for(id).unwrap();
        assert_eq!(response.error(), ErrorCode::None, "{response:?}");
    }
    // Producers and consumers at the same time, on their own connections.
    let threads: Vec<_> = (0..12u32)
        .map(|thread| {
            std::thread::spawn(move || {
                let mut client = RawClient::connect_or_panic(addr);
                let partition = thread % 4;
                let mut sent = Vec::new();
                for batch in 0..25 {
                    let values: Vec<String> = (0..4)
                        .map(|index| format!("t{thread}-b{batch}-i{index}"))
                        .collect();
                    client.produce_ok("busy", partition, batch_of(&values));
                    let _ = client.fetch("busy", partition, 0, 0, 0);
                    sent.extend(values);
                }
                sent
            })
        })
        .collect();
    let mut expected = HashSet::new();
    for thread in threads {
        expected.extend(thread.join().expect("client thread"));
    }
    drop(clients);
    let mut reader = RawClient::connect_or_panic(addr);
    let mut stored = HashSet::new();
    for partition in 0..4 {
        let (records, _) = read_partition(&mut reader, "busy", partition, 0);
        assert_dense(&records, 0, "busy partition");
        for record in records {
            assert!(
                stored.insert(record.value_text()),
                "{:?} stored twice",
                record.value_text()
            );
        }
    }
    assert_eq!(stored, expected, "every acknowledged record, exactly once");
    assert_serves_normally(&mut broker, "many concurrent connections");
}
