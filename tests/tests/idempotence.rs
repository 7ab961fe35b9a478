//! The idempotent producer end to end, against real `tidelogd` processes on 127.0.0.1: a
//! response lost on the way back (a proxy drops the connection after the broker appended)
//! and a broker SIGKILLed between a send and its retry. Either way every record is stored
//! exactly once, in order.

use std::time::Duration;

use bytes::Bytes;
use tidelog_e2e::cli::run_cli_with_timeout;
use tidelog_e2e::proxy::Proxy;
use tidelog_e2e::records::{now_ms, read_partition, StoredRecord};
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::batch::{NewRecord, ProducerStamp, RecordBatchBuilder};
use tidelog_proto::pb::{self, ErrorCode};

const TOPIC: &str = "idempotent";

fn values(records: &[StoredRecord]) -> Vec<String> {
    records.iter().map(StoredRecord::value_text).collect()
}

/// A batch of `values` stamped with a producer id, epoch and base sequence.
fn stamped_batch(producer_id: i64, epoch: i16, base_sequence: i32, values: &[String]) -> Bytes {
    let mut builder = RecordBatchBuilder::new().with_producer(ProducerStamp {
        producer_id,
        producer_epoch: epoch,
        base_sequence,
    });
    let timestamp = now_ms();
    for value in values {
        builder.push(&NewRecord {
            timestamp,
            key: None,
            value: Some(Bytes::from(value.clone())),
            headers: Vec::new(),
        });
    }
    builder.build().expect("at least one record")
}

fn init_producer_id(client: &mut RawClient) -> (i64, i16) {
    let (correlation_id, mut request) =
        client.request(pb::request::Body::InitProducerId(pb::InitProducerIdRequest {
            producer_id: -1,
            producer_epoch: -1,
        }));
    // The raw client's API table predates InitProducerId: name the API here.
    if let Some(header) = request.header.as_mut() {
        header.api = pb::ApiKey::InitProducerId as i32;
    }
    client.send(&request).expect("sending InitProducerId");
    let response = client.wait_for(correlation_id).expect("InitProducerId");
    match response.body.clone() {
        Some(pb::response::Body::InitProducerId(body)) => {
            assert_eq!(body.error(), ErrorCode::None, "{body:?}");
            (
                body.producer_id,
                i16::try_from(body.producer_epoch).expect("epoch fits i16"),
            )
        }
        other => panic!(
            "InitProducerId answered with {other:?}: {:?} {}",
            response.error(),
            response.error_message
        ),
    }
}

#[test]
fn records_are_stored_once_in_order_when_produce_responses_are_lost() {
    let dir = TestDir::new("idempotence-proxy");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut admin = RawClient::connect_or_panic(broker.addr());
    admin.create_topic(TOPIC, 1, None);
    let proxy = Proxy::start(broker.addr());
    // Small batches so the CLI sends many produce requests; lose the answers to several.
    proxy.lose_next_produce_responses(4);
    let lines: Vec<String> = (0..3000).map(|n| format!("record-{n:05}")).collect();
    let input = lines.join("\n") + "\n";
    run_cli_with_timeout(
        Some(proxy.addr()),
        &[
            "produce",
            TOPIC,
            "--partition",
            "0",
            "--batch-size",
            "2048",
            "--linger-ms",
            "1",
        ],
        input.as_bytes(),
        Duration::from_secs(120),
    )
    .assert_success();
    assert_eq!(
        proxy.responses_dropped(),
        4,
        "the proxy lost four produce responses"
    );
    assert!(
        proxy.produce_requests() > 10,
        "the test needs many produce requests"
    );
    let (records, high_watermark) = read_partition(&mut admin, TOPIC, 0, 0);
    assert_eq!(high_watermark, lines.len() as i64, "every record exactly once");
    assert_eq!(values(&records), lines, "in order");
}

#[test]
fn a_batch_retried_after_a_broker_sigkill_gets_its_original_offsets() {
    let dir = TestDir::new("idempotence-sigkill");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic(TOPIC, 1, None);
    let (producer_id, epoch) = init_producer_id(&mut client);
    let first: Vec<String> = (0..5).map(|n| format!("first-{n}")).collect();
    let second: Vec<String> = (0..7).map(|n| format!("second-{n}")).collect();
    let third: Vec<String> = (0..3).map(|n| format!("third-{n}")).collect();
    let first_batch = stamped_batch(producer_id, epoch, 0, &first);
    let second_batch = stamped_batch(producer_id, epoch, 5, &second);
    let third_batch = stamped_batch(producer_id, epoch, 12, &third);
    assert_eq!(client.produce_ok(TOPIC, 0, first_batch.clone()), 0);
    // Under flush=always the answer means the append is durable; the producer never sees it.
    let lost = client.produce(TOPIC, 0, second_batch.clone()).expect("produce");
    assert_eq!(
        (lost.error(), lost.base_offset, lost.last_offset),
        (ErrorCode::None, 5, 11)
    );
    // This one may or may not be durable when the broker dies: either is fine.
    let in_flight = RawClient::produce_body(TOPIC, 0, third_batch.clone(), pb::Acks::Leader);
    client.send_body(in_flight).expect("sending the third batch");
    broker.kill9();
    broker.restart();

    let mut client = RawClient::connect_or_panic(broker.addr());
    for (batch, expected) in [(&first_batch, (0, 4)), (&second_batch, (5, 11))] {
        let retried = client.produce(TOPIC, 0, batch.clone()).expect("retry");
        assert_eq!(retried.error(), ErrorCode::None, "{retried:?}");
        assert_eq!(
            (retried.base_offset, retried.last_offset),
            expected,
            "original offsets"
        );
    }
    let retried = client.produce(TOPIC, 0, third_batch).expect("retry");
    assert_eq!(retried.error(), ErrorCode::None, "{retried:?}");
    assert_eq!((retried.base_offset, retried.last_offset), (12, 14));
    // A gap is refused; an older epoch is fenced once a newer one wrote.
    let gap = client
        .produce(TOPIC, 0, stamped_batch(producer_id, epoch, 20, &third))
        .expect("gap");
    assert_eq!(gap.error(), ErrorCode::OutOfOrderSequenceNumber, "{gap:?}");

    let (records, high_watermark) = read_partition(&mut client, TOPIC, 0, 0);
    assert_eq!(high_watermark, 15, "nothing stored twice");
    let expected: Vec<String> = first.iter().chain(&second).chain(&third).cloned().collect();
    assert_eq!(values(&records), expected);

    // Producer ids are never reused across a restart.
    let (next_id, _) = init_producer_id(&mut client);
    assert!(next_id > producer_id, "id {next_id} after {producer_id}");
}
