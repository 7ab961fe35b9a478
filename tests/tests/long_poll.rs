//! Long-poll fetch: a fetch at the high watermark waits for data and returns soon after another
//! connection produces; with nothing arriving it returns empty after about `max_wait_ms`.

use std::time::{Duration, Instant};

use tidelog_e2e::raw::{fetch_partition, Reaction};
use tidelog_e2e::records::{batch_of, decode_records};
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::{self, ErrorCode};

/// A woken fetch must answer well before its 5 s wait runs out.
const WAKE_LATENCY_MAX: Duration = Duration::from_millis(2_500);

fn start_broker(test_name: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    (dir, broker)
}

#[test]
fn fetch_at_the_high_watermark_returns_soon_after_another_connection_produces() {
    let (_dir, broker) = start_broker("long-poll-wake");
    let mut producer = RawClient::connect_or_panic(broker.addr());
    producer.create_topic("polled", 1, None);
    producer.produce_ok("polled", 0, batch_of(&["old-0", "old-1"]));

    let mut poller = RawClient::connect_or_panic(broker.addr());
    let sent = Instant::now();
    let correlation_id = poller
        .send_body(RawClient::fetch_body("polled", 0, 2, 5_000, 1))
        .unwrap();
    // Nothing past offset 2 exists yet, so the fetch must be waiting, not answering.
    let early = poller.reaction(Duration::from_millis(300), Duration::from_millis(300));
    assert!(
        matches!(early, Reaction::Silent),
        "the fetch answered before any data: {early:?}"
    );

    let produced_at = Instant::now();
    let base = producer.produce_ok("polled", 0, batch_of(&["new-2"]));
    assert_eq!(base, 2);
    let response = poller.wait_for(correlation_id).unwrap();
    let woke_after = produced_at.elapsed();
    let total = sent.elapsed();
    let partition = fetch_partition(response);
    assert_eq!(partition.error(), ErrorCode::None, "{partition:?}");
    assert_eq!(partition.high_watermark, 3, "{partition:?}");
    let records = decode_records(partition.records);
    let fresh: Vec<String> = records
        .iter()
        .filter(|record| record.offset >= 2)
        .map(|record| record.value_text())
        .collect();
    assert_eq!(fresh, vec!["new-2"], "the woken fetch returns the new record");
    assert!(
        woke_after < WAKE_LATENCY_MAX,
        "the fetch answered {woke_after:?} after the produce (total {total:?}); it should wake at once"
    );
}

#[test]
fn fetch_waiting_on_several_partitions_wakes_for_any_of_them() {
    let (_dir, broker) = start_broker("long-poll-any");
    let mut producer = RawClient::connect_or_panic(broker.addr());
    producer.create_topic("left", 1, None);
    producer.create_topic("right", 2, None);
    let mut poller = RawClient::connect_or_panic(broker.addr());
    let partition = |partition| pb::fetch_request::Partition {
        partition,
        fetch_offset: 0,
        max_bytes: 1 << 20,
    };
    let body = pb::request::Body::Fetch(pb::FetchRequest {
        max_wait_ms: 5_000,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![
            pb::fetch_request::Topic {
                name: "left".into(),
                partitions: vec![partition(0)],
            },
            pb::fetch_request::Topic {
                name: "right".into(),
                partitions: vec![partition(0), partition(1)],
            },
        ],
    });
    let correlation_id = poller.send_body(body).unwrap();
    let early = poller.reaction(Duration::from_millis(300), Duration::from_millis(300));
    assert!(
        matches!(early, Reaction::Silent),
        "the fetch answered before any data: {early:?}"
    );
    let produced_at = Instant::now();
    producer.produce_ok("right", 1, batch_of(&["only here"]));
    let response = poller.wait_for(correlation_id).unwrap();
    let woke_after = produced_at.elapsed();
    assert!(
        woke_after < WAKE_LATENCY_MAX,
        "woke {woke_after:?} after the produce"
    );
    assert_eq!(response.error(), ErrorCode::None, "{response:?}");
    let Some(pb::response::Body::Fetch(fetch)) = response.body else {
        panic!("not a fetch response: {response:?}");
    };
    let mut found = Vec::new();
    for topic in fetch.topics {
        for partition in topic.partitions {
            assert_eq!(partition.error(), ErrorCode::None, "{partition:?}");
            for record in decode_records(partition.records) {
                found.push((topic.name.clone(), partition.partition, record.value_text()));
            }
        }
    }
    assert_eq!(found, vec![("right".to_string(), 1, "only here".to_string())]);
}

#[test]
fn idle_fetch_returns_empty_after_about_max_wait() {
    let (_dir, broker) = start_broker("long-poll-idle");
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("idle", 1, None);
    client.produce_ok("idle", 0, batch_of(&["only"]));
    let max_wait = Duration::from_millis(1_500);
    let started = Instant::now();
    let partition = client.fetch("idle", 0, 1, max_wait.as_millis() as u32, 1);
    let took = started.elapsed();
    assert_eq!(partition.error(), ErrorCode::None, "{partition:?}");
    assert!(
        partition.records.is_empty(),
        "nothing past the high watermark: {partition:?}"
    );
    assert_eq!(partition.high_watermark, 1);
    assert!(
        took >= max_wait - Duration::from_millis(100),
        "an idle fetch returned after {took:?}, before max_wait_ms {max_wait:?}"
    );
    assert!(
        took < max_wait + Duration::from_secs(2),
        "an idle fetch took {took:?} for {max_wait:?}"
    );
}

#[test]
fn fetch_with_min_bytes_zero_or_data_available_does_not_wait() {
    let (_dir, broker) = start_broker("long-poll-immediate");
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("ready", 1, None);
    client.produce_ok("ready", 0, batch_of(&["a", "b"]));
    // At the high watermark but min_bytes 0: answer at once, empty.
    let started = Instant::now();
    let empty = client.fetch("ready", 0, 2, 5_000, 0);
    assert!(
        started.elapsed() < WAKE_LATENCY_MAX,
        "min_bytes 0 waited {:?}",
        started.elapsed()
    );
    assert!(empty.records.is_empty(), "{empty:?}");
    // Data available: answer at once with it.
    let started = Instant::now();
    let full = client.fetch("ready", 0, 0, 5_000, 1);
    assert!(
        started.elapsed() < WAKE_LATENCY_MAX,
        "available data waited {:?}",
        started.elapsed()
    );
    let values: Vec<String> = decode_records(full.records)
        .iter()
        .map(|record| record.value_text())
        .collect();
    assert_eq!(values, vec!["a", "b"]);
}
