//! The client's `EventStore` facade end to end (issue 8 §4, §5), against the real `tidelogd`
//! on 127.0.0.1 and against the in-process broker of the `embedded` feature: appends with each
//! expectation and the typed `WrongExpectedVersion`, reads and info, exact retries after a
//! crash, catch-up subscriptions (history, `CaughtUp`, live) to a stream and to a partition,
//! and a subscriber that falls behind a fast producer recovering without a gap or a duplicate.

use std::time::Duration;

use bytes::Bytes;
use tidelog_client::embedded::{EmbeddedBroker, EmbeddedConfig};
use tidelog_client::event_store::{
    EventData, EventStore, EventStoreError, Expected, ReadDirection, StreamId, StreamRecord, Subscription,
    SubscriptionConfig, SubscriptionEvent,
};
use tidelog_client::partitioner::partition_for_key;
use tidelog_client::{NewTopic, Producer, ProducerConfig, ProducerRecord};
use tidelog_e2e::{BrokerProcess, TestDir};

const TOPIC: &str = "accounts";
const PARTITIONS: u32 = 3;
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

async fn connect(broker: &BrokerProcess) -> EventStore {
    let store = within("connect", EventStore::connect([broker.addr().to_string()]))
        .await
        .expect("connects");
    within(
        "create topic",
        store
            .client()
            .admin()
            .create_topic(NewTopic::new(TOPIC, PARTITIONS)),
    )
    .await
    .expect("creates the topic");
    store
}

fn event(value: &str) -> EventData {
    EventData {
        value: Bytes::copy_from_slice(value.as_bytes()),
        headers: vec![("kind".to_owned(), Bytes::from_static(b"test"))],
        event_id: None,
    }
}

fn event_with_id(value: &str, id: &str) -> EventData {
    EventData {
        event_id: Some(Bytes::copy_from_slice(id.as_bytes())),
        ..event(value)
    }
}

fn values(records: &[StreamRecord]) -> Vec<String> {
    records
        .iter()
        .map(|record| String::from_utf8_lossy(record.value().map_or(&b"null"[..], |v| &v[..])).into_owned())
        .collect()
}

async fn next_event<R: std::fmt::Debug>(subscription: &mut Subscription<R>) -> SubscriptionEvent<R> {
    match within("the next subscription event", subscription.next()).await {
        Some(Ok(event)) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The checks every broker gets: each expectation, typed conflicts, read, info.
async fn expectations_reads_and_info(store: &EventStore) {
    let stream = StreamId::new(TOPIC, "account-1");
    let partition = partition_for_key(b"account-1", PARTITIONS);
    // Another key's records in between, possibly in the same partition, must not count.
    let other = StreamId::new(TOPIC, "account-2");

    let first = within(
        "append",
        store.append(
            &stream,
            Expected::NoStream,
            vec![event("opened"), event("deposited")],
        ),
    )
    .await
    .expect("a new stream accepts no_stream");
    assert_eq!(
        first.partition, partition,
        "the stream lives where murmur2 puts its key"
    );
    assert_eq!(first.offsets.len(), 2);
    let version = first.offsets[1];
    within(
        "append other",
        store.append(&other, Expected::Any, vec![event("other")]),
    )
    .await
    .expect("any always holds");

    let again = within(
        "append",
        store.append(&stream, Expected::NoStream, vec![event("opened")]),
    )
    .await;
    match again {
        Err(EventStoreError::WrongExpectedVersion { expected, actual }) => {
            assert_eq!((expected, actual), (Expected::NoStream, version));
        }
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
    let exists = within(
        "append",
        store.append(&stream, Expected::Exists, vec![event("withdrew")]),
    )
    .await
    .expect("exists holds");
    let version_3 = exists.offsets[0];
    let stale = within(
        "append",
        store.append(&stream, Expected::Exact(version), vec![event("late")]),
    )
    .await;
    assert!(
        matches!(&stale, Err(EventStoreError::WrongExpectedVersion { expected: Expected::Exact(v), actual })
            if *v == version && *actual == version_3),
        "{stale:?}"
    );
    let exact = within(
        "append",
        store.append(&stream, Expected::Exact(version_3), vec![event("closed")]),
    )
    .await
    .expect("exact holds");
    let missing = StreamId::new(TOPIC, "account-none");
    let none = within(
        "append",
        store.append(&missing, Expected::Exists, vec![event("x")]),
    )
    .await;
    assert!(
        matches!(
            none,
            Err(EventStoreError::WrongExpectedVersion {
                expected: Expected::Exists,
                actual: -1
            })
        ),
        "{none:?}"
    );

    let info = within("info", store.info(&stream)).await.expect("info");
    assert_eq!(
        (info.first_offset, info.last_offset, info.records),
        (first.offsets[0], exact.offsets[0], 4)
    );
    let nothing = within("info", store.info(&missing)).await.expect("info");
    assert_eq!(
        (nothing.first_offset, nothing.last_offset, nothing.records),
        (-1, -1, 0)
    );

    let forward = within("read", store.read(&stream, 0, ReadDirection::Forward, 100))
        .await
        .expect("reads");
    assert_eq!(
        values(&forward.records),
        ["opened", "deposited", "withdrew", "closed"]
    );
    assert!(forward.end_of_stream);
    let backward = within("read", store.read(&stream, -1, ReadDirection::Backward, 2))
        .await
        .expect("reads");
    assert_eq!(values(&backward.records), ["closed", "withdrew"]);
    let rest = within(
        "read",
        store.read(&stream, backward.next_offset, ReadDirection::Backward, 10),
    )
    .await
    .expect("reads");
    assert_eq!(values(&rest.records), ["deposited", "opened"]);
}

#[test]
fn appends_check_each_expectation_and_conflicts_are_typed() {
    let dir = TestDir::new("event-store-append");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    runtime().block_on(async {
        let store = connect(&broker).await;
        expectations_reads_and_info(&store).await;
    });
}

#[test]
fn an_exact_retry_after_a_crash_gets_the_original_offsets() {
    let dir = TestDir::new("event-store-retry");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let rt = runtime();
    let stream = StreamId::new(TOPIC, "order-7");
    let batch = || vec![event_with_id("created", "evt-1"), event_with_id("paid", "evt-2")];
    let landed = rt.block_on(async {
        let store = connect(&broker).await;
        within("append", store.append(&stream, Expected::NoStream, batch()))
            .await
            .expect("appends")
    });
    broker.kill9();
    broker.restart();
    rt.block_on(async {
        let store = within("connect", EventStore::connect([broker.addr().to_string()]))
            .await
            .expect("connects");
        // The writer never saw its answer and retries, after the crash, with a new client.
        let retried = within("retry", store.append(&stream, Expected::NoStream, batch()))
            .await
            .expect("an exact retry succeeds");
        assert_eq!(retried.offsets, landed.offsets, "the original offsets");
        assert!(retried.deduplicated, "nothing written twice");
        let read = within("read", store.read(&stream, 0, ReadDirection::Forward, 10))
            .await
            .expect("reads");
        assert_eq!(values(&read.records), ["created", "paid"]);
        // Other events at the same expectation are a conflict, not a retry.
        let other = within(
            "append",
            store.append(&stream, Expected::NoStream, vec![event_with_id("x", "evt-9")]),
        )
        .await;
        assert!(
            matches!(other, Err(EventStoreError::WrongExpectedVersion { .. })),
            "{other:?}"
        );
        let version = landed.offsets[1];
        within(
            "append",
            store.append(&stream, Expected::Exact(version), vec![event("shipped")]),
        )
        .await
        .expect("the version survived the crash");
    });
}

#[test]
fn a_stream_subscription_delivers_history_then_caught_up_then_live_records() {
    let dir = TestDir::new("event-store-subscribe");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    runtime().block_on(async {
        let store = connect(&broker).await;
        let stream = StreamId::new(TOPIC, "cart-3");
        let other = StreamId::new(TOPIC, "cart-4");
        for n in 0..5 {
            within(
                "append",
                store.append(&stream, Expected::Any, vec![event(&format!("h{n}"))]),
            )
            .await
            .expect("appends");
            within(
                "append",
                store.append(&other, Expected::Any, vec![event("other")]),
            )
            .await
            .expect("appends");
        }
        let mut subscription = within("subscribe", store.subscribe(&stream, 0))
            .await
            .expect("subscribes");
        let mut history = Vec::new();
        loop {
            match next_event(&mut subscription).await {
                SubscriptionEvent::Record(record) => history.push(record),
                SubscriptionEvent::CaughtUp => break,
                SubscriptionEvent::FellBehind => panic!("fell behind while reading history"),
            }
        }
        assert_eq!(values(&history), ["h0", "h1", "h2", "h3", "h4"]);
        for n in 0..3 {
            within(
                "append",
                store.append(&other, Expected::Any, vec![event("other")]),
            )
            .await
            .expect("appends");
            within(
                "append",
                store.append(&stream, Expected::Any, vec![event(&format!("live{n}"))]),
            )
            .await
            .expect("appends");
            match next_event(&mut subscription).await {
                SubscriptionEvent::Record(record) => assert_eq!(values(&[record]), [format!("live{n}")]),
                other => panic!("expected the live record, got {other:?}"),
            }
        }
        // From an offset inside the stream: only what lies at or after it.
        let from = history[3].offset().get();
        let mut late = within("subscribe", store.subscribe(&stream, from))
            .await
            .expect("subscribes");
        let mut seen = Vec::new();
        loop {
            match next_event(&mut late).await {
                SubscriptionEvent::Record(record) => seen.push(record),
                SubscriptionEvent::CaughtUp => break,
                SubscriptionEvent::FellBehind => panic!("fell behind while reading history"),
            }
        }
        assert_eq!(values(&seen), ["h3", "h4", "live0", "live1", "live2"]);
    });
}

#[test]
fn a_subscriber_that_falls_behind_a_fast_producer_recovers_without_a_gap_or_a_duplicate() {
    let dir = TestDir::new("event-store-fell-behind");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    const RECORDS: usize = 3000;
    runtime().block_on(async {
        let store = connect(&broker).await;
        // A buffer of 8 events, so the subscriber below cannot keep up with the producer.
        let store = store
            .with_subscription_config(SubscriptionConfig::default().buffer_events(8).page_records(4))
            .expect("valid bounds");
        let mut subscription = within("subscribe", store.subscribe(&StreamId::new(TOPIC, "hot"), 0))
            .await
            .expect("subscribes");
        assert_eq!(
            next_event(&mut subscription).await,
            SubscriptionEvent::CaughtUp,
            "an empty stream"
        );
        let mut partition_subscription = within("subscribe", {
            let partition = partition_for_key(b"hot", PARTITIONS);
            store.subscribe_partition(TOPIC, partition, 0)
        })
        .await
        .expect("subscribes");
        assert_eq!(
            next_event(&mut partition_subscription).await,
            SubscriptionEvent::CaughtUp
        );

        // The fast producer: batched, idempotent, on the stream's key, with other keys mixed in.
        let producer = Producer::new(store.client().clone(), ProducerConfig::default()).expect("a producer");
        let mut deliveries = Vec::new();
        for n in 0..RECORDS {
            let key = if n % 3 == 2 { "cold" } else { "hot" };
            let record = ProducerRecord::new(TOPIC, format!("{key}-{n}")).key(key);
            deliveries.push(within("send", producer.send(record)).await.expect("sends"));
        }
        for delivery in deliveries {
            within("delivery", delivery).await.expect("delivered");
        }
        producer.close().await;
        let hot: Vec<String> = (0..RECORDS)
            .filter(|n| n % 3 != 2)
            .map(|n| format!("hot-{n}"))
            .collect();

        // Only now does the subscriber read: everything, once, in order, and it fell behind.
        let (seen, markers) = drain_until(&mut subscription, hot.len()).await;
        assert_eq!(seen, hot, "every record of the stream once, in order");
        assert!(
            markers.contains(&"FellBehind"),
            "the subscriber fell behind: {markers:?}"
        );
        assert_eq!(
            markers.last(),
            Some(&"CaughtUp"),
            "and caught up again: {markers:?}"
        );

        let same_partition: Vec<String> =
            if partition_for_key(b"cold", PARTITIONS) == partition_for_key(b"hot", PARTITIONS) {
                (0..RECORDS)
                    .map(|n| {
                        if n % 3 == 2 {
                            format!("cold-{n}")
                        } else {
                            format!("hot-{n}")
                        }
                    })
                    .collect()
            } else {
                hot.clone()
            };
        let (seen, markers) = drain_partition_until(&mut partition_subscription, same_partition.len()).await;
        assert_eq!(
            seen, same_partition,
            "every record of the partition once, in order"
        );
        assert!(markers.contains(&"FellBehind"), "{markers:?}");
        assert_eq!(markers.last(), Some(&"CaughtUp"), "{markers:?}");
    });
}

/// Takes events until `records` records and a `CaughtUp` after the last of them arrived.
async fn drain_until(
    subscription: &mut Subscription<StreamRecord>,
    records: usize,
) -> (Vec<String>, Vec<&'static str>) {
    let mut seen = Vec::new();
    let mut markers = Vec::new();
    // Bounded: every step takes one event, and each record arrives once.
    for _ in 0..records * 4 + 1000 {
        match next_event(subscription).await {
            SubscriptionEvent::Record(record) => seen.extend(values(&[record])),
            SubscriptionEvent::CaughtUp => {
                markers.push("CaughtUp");
                if seen.len() >= records {
                    break;
                }
            }
            SubscriptionEvent::FellBehind => markers.push("FellBehind"),
        }
    }
    (seen, markers)
}

async fn drain_partition_until(
    subscription: &mut Subscription<tidelog_client::Record>,
    records: usize,
) -> (Vec<String>, Vec<&'static str>) {
    let mut seen = Vec::new();
    let mut markers = Vec::new();
    for _ in 0..records * 4 + 1000 {
        match next_event(subscription).await {
            SubscriptionEvent::Record(record) => {
                seen.push(
                    String::from_utf8_lossy(record.value().map_or(&b"null"[..], |v| &v[..])).into_owned(),
                );
            }
            SubscriptionEvent::CaughtUp => {
                markers.push("CaughtUp");
                if seen.len() >= records {
                    break;
                }
            }
            SubscriptionEvent::FellBehind => markers.push("FellBehind"),
        }
    }
    (seen, markers)
}

#[test]
fn the_embedded_broker_serves_the_event_store_and_keeps_it_across_restarts() {
    let dir = TestDir::new("event-store-embedded");
    let data_dir = dir.data_dir();
    let rt = runtime();
    rt.block_on(async {
        let (broker, store) = within("start", EmbeddedBroker::start(&data_dir))
            .await
            .expect("starts");
        within(
            "create topic",
            store
                .client()
                .admin()
                .create_topic(NewTopic::new(TOPIC, PARTITIONS)),
        )
        .await
        .expect("creates the topic");
        expectations_reads_and_info(&store).await;
        within("shutdown", broker.shutdown())
            .await
            .expect("stops cleanly");
    });
    // Dropped rather than shut down: the drop stops it, so the directory opens again at once.
    let version = rt.block_on(async {
        let (broker, store) = within("restart", EmbeddedBroker::start(&data_dir))
            .await
            .expect("restarts");
        let info = within("info", store.info(&StreamId::new(TOPIC, "account-1")))
            .await
            .expect("info");
        assert_eq!(info.records, 4, "the stream survived the restart");
        drop(broker);
        info.last_offset
    });
    rt.block_on(async {
        let (broker, store) = within("restart", EmbeddedBroker::start(&data_dir))
            .await
            .expect("restarts");
        let stream = StreamId::new(TOPIC, "account-1");
        within(
            "append",
            store.append(&stream, Expected::Exact(version), vec![event("reopened")]),
        )
        .await
        .expect("the version continues");
        let mut subscription = within("subscribe", store.subscribe(&stream, 0))
            .await
            .expect("subscribes");
        let mut count = 0;
        while next_event(&mut subscription).await != SubscriptionEvent::CaughtUp {
            count += 1;
        }
        assert_eq!(count, 5);
        within("shutdown", broker.shutdown())
            .await
            .expect("stops cleanly");
    });
}

#[test]
fn a_live_subscription_continues_across_a_broker_restart_without_a_gap_or_a_duplicate() {
    let dir = TestDir::new("event-store-subscription-restart");
    let data_dir = dir.data_dir();
    runtime().block_on(async {
        let (broker, store) = within("start", EmbeddedBroker::start(&data_dir))
            .await
            .expect("starts");
        let addr = broker.native_addr();
        within(
            "create topic",
            store
                .client()
                .admin()
                .create_topic(NewTopic::new(TOPIC, PARTITIONS)),
        )
        .await
        .expect("creates the topic");
        let stream = StreamId::new(TOPIC, "survivor");
        for n in 0..3 {
            within(
                "append",
                store.append(&stream, Expected::Any, vec![event(&format!("before{n}"))]),
            )
            .await
            .expect("appends");
        }
        let mut subscription = within("subscribe", store.subscribe(&stream, 0))
            .await
            .expect("subscribes");
        let mut seen = Vec::new();
        loop {
            match next_event(&mut subscription).await {
                SubscriptionEvent::Record(record) => seen.extend(values(&[record])),
                SubscriptionEvent::CaughtUp => break,
                SubscriptionEvent::FellBehind => panic!("fell behind while reading history"),
            }
        }
        assert_eq!(seen, ["before0", "before1", "before2"]);

        // The broker goes away under the live subscription and comes back on the same address;
        // the subscription retries its read (bounded) and resumes where it was.
        within("shutdown", broker.shutdown())
            .await
            .expect("stops cleanly");
        let config = EmbeddedConfig::new(&data_dir).configure(|config| config.listen = addr);
        let (broker, writer) = within("restart", EmbeddedBroker::start_with(config))
            .await
            .expect("restarts");
        within(
            "append",
            writer.append(&stream, Expected::Any, vec![event("after")]),
        )
        .await
        .expect("appends after the restart");
        match next_event(&mut subscription).await {
            SubscriptionEvent::Record(record) => {
                assert_eq!(values(&[record]), ["after"], "no repeat, no gap")
            }
            other => panic!("expected the record appended after the restart, got {other:?}"),
        }
        drop(subscription);
        within("shutdown", broker.shutdown())
            .await
            .expect("stops cleanly");
    });
}

#[test]
fn subscribing_to_an_unknown_topic_fails_at_once() {
    let dir = TestDir::new("event-store-unknown-topic");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    runtime().block_on(async {
        let store = within("connect", EventStore::connect([broker.addr().to_string()]))
            .await
            .expect("connects");
        let refused = within("subscribe", store.subscribe(&StreamId::new("nowhere", "k"), 0)).await;
        assert!(
            matches!(&refused, Err(EventStoreError::Client(error)) if error.code() == Some(tidelog_client::ErrorCode::UnknownTopicOrPartition)),
            "{refused:?}"
        );
    });
}
