//! The idempotent producer end to end, against real `tidelogd` processes on 127.0.0.1: a
//! response lost on the way back (a proxy drops the connection after the broker appended),
//! a broker SIGKILLed between a send and its retry, a retry of a batch stamped years ago after
//! maintenance ran, and a first batch that does not start at sequence 0. Every record is
//! stored exactly once, in order, or refused. (The producer-id counter: `producer_ids.rs`.)

use std::time::Duration;

use tidelog_e2e::cli::run_cli_with_timeout;
use tidelog_e2e::producers::{init_producer_id, stamped_batch, stamped_batch_at};
use tidelog_e2e::proxy::Proxy;
use tidelog_e2e::records::{read_partition, StoredRecord};
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::{self, ErrorCode};

const TOPIC: &str = "idempotent";

fn values(records: &[StoredRecord]) -> Vec<String> {
    records.iter().map(StoredRecord::value_text).collect()
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

/// Seen: producer-state expiry compared the broker's clock with the batch's own timestamps,
/// so a producer replaying events stamped years ago was forgotten at the next maintenance
/// pass and its retry was stored twice. With default expiry settings the retry must still be
/// recognised after maintenance has run (here: after it deleted a segment, which it logs).
#[test]
fn a_retry_of_a_batch_with_historical_timestamps_is_deduplicated_after_maintenance() {
    let dir = TestDir::new("idempotence-historical");
    let config = dir.path().join("tidelogd.toml");
    std::fs::write(
        &config,
        "maintenance_interval_ms = 200\n\n[log]\nsegment_bytes = 1048576\nretention_bytes = 1048576\n\n\
         [limits]\nbatch_bytes_max = 524288\n",
    )
    .unwrap();
    let broker = BrokerProcess::start(&dir.data_dir(), &["--config", config.to_str().unwrap()]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic(TOPIC, 1, None);
    let year_2000 = 946_684_800_000;
    // Three 400 KiB batches: the third rolls a segment, so maintenance has one to delete.
    let filler: Vec<String> = (0..40).map(|n| format!("{n:0>10240}")).collect();
    for _ in 0..3 {
        client.produce_ok(TOPIC, 0, tidelog_e2e::records::timed_batch(&filler, year_2000));
    }
    let (producer_id, epoch) = init_producer_id(&mut client);
    let replayed: Vec<String> = (0..5).map(|n| format!("replayed-{n}")).collect();
    let batch = stamped_batch_at(producer_id, epoch, 0, &replayed, year_2000);
    let first = client.produce(TOPIC, 0, batch.clone()).expect("produce");
    assert_eq!(first.error(), ErrorCode::None, "{first:?}");
    assert_eq!((first.base_offset, first.last_offset), (120, 124));

    tidelog_e2e::wait::poll_until(
        Duration::from_secs(60),
        "a maintenance pass that deletes the oldest segment",
        || {
            broker
                .log_text()
                .contains("retention deleted segments")
                .then_some(())
        },
    );
    let retry = client.produce(TOPIC, 0, batch).expect("retry");
    assert_eq!(retry.error(), ErrorCode::None, "{retry:?}");
    let (_, high_watermark) = read_partition(&mut client, TOPIC, 0, 80);
    assert_eq!(high_watermark, 125, "the retry is not stored twice");
    assert_eq!(
        (retry.base_offset, retry.last_offset),
        (120, 124),
        "the retry gets its original offsets"
    );
}

/// Seen on a full disk: a new producer's first batch (0..57) failed and its next one (58..99)
/// was stored across the gap. The broker must refuse a first batch from a producer it does
/// not know unless it starts at sequence 0 (the disk fault itself is simulated in the storage
/// tests; here the wire answer and that nothing is stored).
#[test]
fn a_producers_first_batch_past_sequence_zero_is_refused_as_unknown_producer() {
    let dir = TestDir::new("idempotence-gap");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic(TOPIC, 1, None);
    let (producer_id, epoch) = init_producer_id(&mut client);
    let first: Vec<String> = (0..58).map(|n| format!("first-{n}")).collect();
    let second: Vec<String> = (58..100).map(|n| format!("second-{n}")).collect();
    let gap = client
        .produce(TOPIC, 0, stamped_batch(producer_id, epoch, 58, &second))
        .expect("produce");
    assert_eq!(gap.error(), ErrorCode::UnknownProducerId, "{gap:?}");
    let (_, high_watermark) = read_partition(&mut client, TOPIC, 0, 0);
    assert_eq!(high_watermark, 0, "nothing stored across the gap");
    assert_eq!(
        client.produce_ok(TOPIC, 0, stamped_batch(producer_id, epoch, 0, &first)),
        0
    );
    assert_eq!(
        client.produce_ok(TOPIC, 0, stamped_batch(producer_id, epoch, 58, &second)),
        58
    );
    let (records, high_watermark) = read_partition(&mut client, TOPIC, 0, 0);
    assert_eq!(high_watermark, 100);
    let expected: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_eq!(values(&records), expected);
}
