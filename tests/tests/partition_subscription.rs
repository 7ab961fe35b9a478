//! `EventStore::subscribe_partition` against the real `tidelogd`: a catch-up subscription to a
//! whole partition delivers its history, `CaughtUp`, then live records; a subscriber that
//! does not read while a fast producer writes falls behind (`FellBehind`) and then gets every
//! record once, in order, and `CaughtUp` again.

use std::time::Duration;

use tidelog_client::event_store::{EventStore, Subscription, SubscriptionConfig, SubscriptionEvent};
use tidelog_client::{NewTopic, PartitionId, Producer, ProducerConfig, ProducerRecord, Record};
use tidelog_e2e::{BrokerProcess, TestDir};

const TOPIC: &str = "ledger";
/// Generous: the suite runs many brokers on two cores.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {STEP_TIMEOUT:?}"),
    }
}

async fn produce(store: &EventStore, partition: u32, values: impl IntoIterator<Item = String>) {
    let producer = Producer::new(store.client().clone(), ProducerConfig::default()).expect("a producer");
    let mut deliveries = Vec::new();
    for value in values {
        let record = ProducerRecord::new(TOPIC, value).partition(PartitionId::new(partition));
        deliveries.push(within("send", producer.send(record)).await.expect("sends"));
    }
    for delivery in deliveries {
        within("delivery", delivery).await.expect("delivered");
    }
    producer.close().await;
}

fn value(record: &Record) -> String {
    String::from_utf8_lossy(record.value().map_or(&b"null"[..], |v| &v[..])).into_owned()
}

async fn next_event(subscription: &mut Subscription<Record>) -> SubscriptionEvent<Record> {
    match within("the next subscription event", subscription.next()).await {
        Some(Ok(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Records until the first `CaughtUp`.
async fn history(subscription: &mut Subscription<Record>) -> Vec<Record> {
    let mut records = Vec::new();
    // Bounded: each step takes one event; the history here is short.
    for _ in 0..10_000 {
        match next_event(subscription).await {
            SubscriptionEvent::Record(record) => records.push(record),
            SubscriptionEvent::CaughtUp => return records,
            SubscriptionEvent::FellBehind => panic!("fell behind while reading history"),
        }
    }
    panic!("no CaughtUp after 10000 events");
}

#[test]
fn a_partition_subscription_delivers_history_then_caught_up_then_live_records() {
    let dir = TestDir::new("partition-subscribe");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    runtime().block_on(async {
        let store = within("connect", EventStore::connect([broker.addr().to_string()]))
            .await
            .expect("connects");
        within(
            "create",
            store.client().admin().create_topic(NewTopic::new(TOPIC, 2)),
        )
        .await
        .expect("creates");
        produce(&store, 1, (0..5).map(|n| format!("h{n}"))).await;
        produce(&store, 0, ["elsewhere".to_owned()]).await;

        let mut empty = within("subscribe", store.subscribe_partition(TOPIC, 0, 1))
            .await
            .expect("subscribes");
        assert!(
            history(&mut empty).await.is_empty(),
            "partition 0 has nothing from offset 1"
        );

        let mut subscription = within("subscribe", store.subscribe_partition(TOPIC, 1, 2))
            .await
            .expect("subscribes");
        let seen = history(&mut subscription).await;
        assert_eq!(seen.iter().map(value).collect::<Vec<_>>(), ["h2", "h3", "h4"]);
        assert_eq!(
            seen.iter().map(|r| r.offset().get()).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        for n in 0..3 {
            produce(&store, 1, [format!("live{n}")]).await;
            match next_event(&mut subscription).await {
                SubscriptionEvent::Record(record) => {
                    assert_eq!(
                        (value(&record), record.offset().get()),
                        (format!("live{n}"), 5 + n)
                    );
                }
                other => panic!("expected the live record, got {other:?}"),
            }
        }
        // From past the end: nothing until the log reaches the start asked for, then only
        // what lies at or after it.
        let mut ahead = within("subscribe", store.subscribe_partition(TOPIC, 1, 10))
            .await
            .expect("subscribes");
        assert!(
            history(&mut ahead).await.is_empty(),
            "nothing at or after offset 10 yet"
        );
        produce(&store, 1, (8..12).map(|n| format!("n{n}"))).await;
        for offset in 10..12 {
            match next_event(&mut ahead).await {
                SubscriptionEvent::Record(record) => {
                    assert_eq!(
                        (record.offset().get(), value(&record)),
                        (offset, format!("n{offset}"))
                    );
                }
                other => panic!("expected the record at {offset}, got {other:?}"),
            }
        }
        let unknown = within("subscribe", store.subscribe_partition(TOPIC, 7, 0)).await;
        assert!(unknown.is_err(), "no partition 7");
    });
}

#[test]
fn a_partition_subscriber_that_falls_behind_a_fast_producer_recovers_without_a_gap_or_a_duplicate() {
    const RECORDS: usize = 3000;
    let dir = TestDir::new("partition-fell-behind");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    runtime().block_on(async {
        let store = within("connect", EventStore::connect([broker.addr().to_string()]))
            .await
            .expect("connects");
        within(
            "create",
            store.client().admin().create_topic(NewTopic::new(TOPIC, 1)),
        )
        .await
        .expect("creates");
        // A buffer of 8 events: the subscriber below cannot keep up.
        let store = store
            .with_subscription_config(SubscriptionConfig::default().buffer_events(8).page_records(4))
            .expect("valid bounds");
        let mut subscription = within("subscribe", store.subscribe_partition(TOPIC, 0, 0))
            .await
            .expect("subscribes");
        assert_eq!(
            next_event(&mut subscription).await,
            SubscriptionEvent::CaughtUp,
            "an empty partition"
        );

        // The subscriber reads nothing while the producer writes.
        let expected: Vec<String> = (0..RECORDS).map(|n| format!("r{n}")).collect();
        produce(&store, 0, expected.clone()).await;

        let mut seen = Vec::new();
        let mut markers = Vec::new();
        // Bounded: one event per step; each record arrives once, with a few markers.
        for _ in 0..RECORDS * 4 {
            match next_event(&mut subscription).await {
                SubscriptionEvent::Record(record) => {
                    assert_eq!(record.offset().get(), seen.len() as i64, "no gap, no duplicate");
                    seen.push(value(&record));
                }
                SubscriptionEvent::CaughtUp => {
                    markers.push("CaughtUp");
                    if seen.len() == RECORDS {
                        break;
                    }
                }
                SubscriptionEvent::FellBehind => markers.push("FellBehind"),
            }
        }
        assert_eq!(seen, expected, "every record once, in order");
        assert!(
            markers.contains(&"FellBehind"),
            "the subscriber fell behind: {markers:?}"
        );
        assert_eq!(
            markers.last(),
            Some(&"CaughtUp"),
            "and caught up again: {markers:?}"
        );
        for pair in markers.windows(2) {
            assert_ne!(pair[0], pair[1], "markers alternate: {markers:?}");
        }
    });
}
