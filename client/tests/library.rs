//! End-to-end tests of the client library against an in-process broker.

// Test code: a failed expectation is a failed test (STYLE.md allows unwrap/expect in tests).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::TestBroker;
use tidelog_client::partitioner::partition_for_key;
use tidelog_client::{
    Acks, Client, Consumer, ConsumerConfig, Error, ErrorCode, Header, NewTopic, Offset, OffsetReset,
    OffsetSpec, PartitionId, Producer, ProducerConfig, ProducerRecord, Record, Seek,
};

/// Upper bound on waiting for records that are known to be there.
const POLL_DEADLINE: Duration = Duration::from_secs(20);

/// Polls until `count` records arrived or the deadline passed.
async fn consume(consumer: &mut Consumer, count: usize) -> Vec<Record> {
    let deadline = tokio::time::Instant::now() + POLL_DEADLINE;
    let mut records = Vec::new();
    while records.len() < count {
        let now = tokio::time::Instant::now();
        assert!(
            now < deadline,
            "only {} of {count} records arrived",
            records.len()
        );
        records.extend(consumer.poll(deadline - now).await.expect("poll"));
    }
    records
}

fn value_of(record: &Record) -> String {
    String::from_utf8(record.value().expect("value").to_vec()).expect("utf-8")
}

async fn create(client: &Client, topic: NewTopic) {
    client.admin().create_topic(topic).await.expect("create topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_and_keyless_records_round_trip_with_their_offsets() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    create(&client, NewTopic::new("events", 3)).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");

    let mut sent = Vec::new();
    for i in 0..30 {
        let key = format!("user-{}", i % 7);
        let record = ProducerRecord::new("events", format!("keyed-{i}"))
            .key(key.clone())
            .header(Header::new("seq", Some(Bytes::from(i.to_string()))));
        sent.push((
            Some(key),
            format!("keyed-{i}"),
            producer.send(record).await.expect("send"),
        ));
    }
    for i in 0..30 {
        let record = ProducerRecord::new("events", format!("keyless-{i}"));
        sent.push((
            None,
            format!("keyless-{i}"),
            producer.send(record).await.expect("send"),
        ));
    }
    let mut expected: BTreeMap<(u32, i64), (Option<String>, String)> = BTreeMap::new();
    for (key, value, delivery) in sent {
        let delivery = delivery.await.expect("delivered");
        let offset = delivery.offset().expect("acks=leader reports offsets");
        if let Some(key) = &key {
            assert_eq!(
                delivery.partition().get(),
                partition_for_key(key.as_bytes(), 3),
                "murmur2 placement"
            );
        }
        assert!(
            expected
                .insert((delivery.partition().get(), offset.get()), (key, value))
                .is_none(),
            "two records got the same offset"
        );
    }
    producer.close().await;
    // Offsets in each partition are dense from 0.
    for partition in 0..3u32 {
        let offsets: Vec<i64> = expected
            .keys()
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as i64).collect::<Vec<_>>(),
            "partition {partition}"
        );
    }

    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default()).expect("consumer");
    consumer.assign("events", &[]).await.expect("assign");
    for partition in 0..3 {
        consumer
            .seek("events", PartitionId::new(partition), Seek::Earliest)
            .expect("seek");
    }
    let records = consume(&mut consumer, 60).await;
    assert_eq!(records.len(), 60);
    for record in &records {
        let (key, value) = &expected[&(record.partition().get(), record.offset().get())];
        assert_eq!(&value_of(record), value);
        assert_eq!(
            record
                .key()
                .map(|k| String::from_utf8(k.to_vec()).expect("utf-8")),
            *key
        );
        if key.is_some() {
            assert_eq!(record.headers().len(), 1);
            assert_eq!(record.headers()[0].key(), "seq");
        }
    }
    // Within a partition, records come in offset order.
    for partition in 0..3u32 {
        let offsets: Vec<i64> = records
            .iter()
            .filter(|r| r.partition().get() == partition)
            .map(|r| r.offset().get())
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[0] + 1 == w[1]),
            "partition {partition}: {offsets:?}"
        );
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_and_list_offsets_find_the_right_records() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    create(&client, NewTopic::new("log", 1)).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let p0 = PartitionId::new(0);
    let base = 1_700_000_000_000i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let base = base.max(now - 60_000);
    let mut deliveries = Vec::new();
    for i in 0..10 {
        let record = ProducerRecord::new("log", format!("v{i}"))
            .partition(p0)
            .timestamp_ms(base + i * 1000);
        deliveries.push(producer.send(record).await.expect("send"));
    }
    producer.flush().await;
    for (i, delivery) in deliveries.into_iter().enumerate() {
        assert_eq!(
            delivery.await.expect("delivered").offset(),
            Some(Offset::new(i as i64))
        );
    }

    let admin = client.admin();
    let earliest = admin
        .list_offsets("log", &[p0], OffsetSpec::Earliest)
        .await
        .expect("earliest");
    assert_eq!(earliest[0].offset(), Some(Offset::new(0)));
    let latest = admin
        .list_offsets("log", &[], OffsetSpec::Latest)
        .await
        .expect("latest");
    assert_eq!(latest[0].offset(), Some(Offset::new(10)));
    let at = admin
        .list_offsets("log", &[p0], OffsetSpec::Timestamp(base + 4500))
        .await
        .expect("by time");
    assert_eq!(
        at[0].offset(),
        Some(Offset::new(5)),
        "first record at or after the timestamp"
    );
    let after = admin
        .list_offsets("log", &[p0], OffsetSpec::Timestamp(base + 60_000))
        .await
        .expect("by time");
    assert_eq!(after[0].offset(), None, "no record that late");

    let described = admin.describe_topic("log").await.expect("describe");
    assert_eq!(described.partitions()[0].high_watermark(), Offset::new(10));
    assert_eq!(described.partitions()[0].log_start_offset(), Offset::new(0));

    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default()).expect("consumer");
    consumer.assign("log", &[p0]).await.expect("assign");
    consumer
        .seek("log", p0, Seek::Offset(Offset::new(7)))
        .expect("seek");
    let records = consume(&mut consumer, 3).await;
    assert_eq!(
        records.iter().map(value_of).collect::<Vec<_>>(),
        ["v7", "v8", "v9"]
    );

    consumer
        .seek("log", p0, Seek::Timestamp(base + 2000))
        .expect("seek");
    let records = consume(&mut consumer, 8).await;
    assert_eq!(records[0].offset(), Offset::new(2));
    assert_eq!(records[0].timestamp_ms(), base + 2000);

    // Latest: nothing until a new record arrives, then exactly that one.
    consumer.seek("log", p0, Seek::Latest).expect("seek");
    assert!(consumer
        .poll(Duration::from_millis(200))
        .await
        .expect("poll")
        .is_empty());
    let delivery = producer
        .send(ProducerRecord::new("log", "new").partition(p0))
        .await
        .expect("send");
    assert_eq!(delivery.await.expect("delivered").offset(), Some(Offset::new(10)));
    let records = consume(&mut consumer, 1).await;
    assert_eq!(value_of(&records[0]), "new");
    producer.close().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_offset_follows_the_reset_policy() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    create(&client, NewTopic::new("small", 1)).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let p0 = PartitionId::new(0);
    for i in 0..3 {
        drop(
            producer
                .send(ProducerRecord::new("small", format!("r{i}")))
                .await
                .expect("send"),
        );
    }
    producer.close().await;

    let strict = ConsumerConfig::default().offset_reset(OffsetReset::Error);
    let mut consumer = Consumer::new(client.clone(), strict).expect("consumer");
    consumer.assign("small", &[p0]).await.expect("assign");
    consumer
        .seek("small", p0, Seek::Offset(Offset::new(1000)))
        .expect("seek");
    let error = consumer.poll(POLL_DEADLINE).await.expect_err("out of range");
    match error {
        Error::OffsetOutOfRange {
            offset,
            high_watermark,
            ..
        } => {
            assert_eq!(offset, Offset::new(1000));
            assert_eq!(high_watermark, Offset::new(3));
        }
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }

    let lenient = ConsumerConfig::default().offset_reset(OffsetReset::Earliest);
    let mut consumer = Consumer::new(client.clone(), lenient).expect("consumer");
    consumer.assign("small", &[p0]).await.expect("assign");
    consumer
        .seek("small", p0, Seek::Offset(Offset::new(1000)))
        .expect("seek");
    let records = consume(&mut consumer, 3).await;
    assert_eq!(
        records.iter().map(value_of).collect::<Vec<_>>(),
        ["r0", "r1", "r2"]
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reports_existing_missing_and_deleted_topics() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    let admin = client.admin();
    admin
        .create_topic(
            NewTopic::new("configured", 2)
                .retention_ms(3_600_000)
                .segment_bytes(32 << 20),
        )
        .await
        .expect("create");
    let error = admin
        .create_topic(NewTopic::new("configured", 2))
        .await
        .expect_err("exists");
    assert_eq!(error.code(), Some(ErrorCode::TopicAlreadyExists), "{error:?}");

    let described = admin.describe_topic("configured").await.expect("describe");
    assert_eq!(described.partition_count(), 2);
    assert_eq!(described.config().retention_ms(), Some(3_600_000));
    assert_eq!(described.config().segment_bytes(), Some(32 << 20));
    let names: Vec<String> = admin
        .list_topics()
        .await
        .expect("list")
        .iter()
        .map(|t| t.name().to_owned())
        .collect();
    assert_eq!(names, ["configured"]);

    let missing = admin.describe_topic("nope").await.expect_err("missing");
    assert!(
        matches!(missing, Error::UnknownTopicOrPartition { .. }),
        "{missing:?}"
    );

    admin.delete_topic("configured").await.expect("delete");
    assert!(admin.list_topics().await.expect("list").is_empty());
    let again = admin.delete_topic("configured").await.expect_err("already gone");
    assert!(
        matches!(again, Error::UnknownTopicOrPartition { .. }),
        "{again:?}"
    );

    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let error = producer
        .send(ProducerRecord::new("nope", "x"))
        .await
        .expect_err("unknown topic");
    assert!(
        matches!(error, Error::UnknownTopicOrPartition { .. }),
        "{error:?}"
    );
    producer.close().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_none_records_arrive_without_offsets() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    create(&client, NewTopic::new("fire", 2)).await;
    let config = ProducerConfig::default().acks(Acks::None);
    let producer = Producer::new(client.clone(), config).expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..500 {
        let record = ProducerRecord::new("fire", format!("{i}")).partition(PartitionId::new(i % 2));
        deliveries.push(producer.send(record).await.expect("send"));
    }
    producer.close().await;
    for delivery in deliveries {
        assert_eq!(delivery.await.expect("written").offset(), None);
    }
    let mut consumer = Consumer::new(client.clone(), ConsumerConfig::default()).expect("consumer");
    consumer.assign("fire", &[]).await.expect("assign");
    for partition in 0..2 {
        consumer
            .seek("fire", PartitionId::new(partition), Seek::Earliest)
            .expect("seek");
    }
    let records = consume(&mut consumer, 500).await;
    let mut values: Vec<u32> = records
        .iter()
        .map(|r| value_of(r).parse().expect("number"))
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..500).collect::<Vec<_>>());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_batches_in_flight_keep_every_record_in_order() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    create(&client, NewTopic::new("bulk", 1)).await;
    // Small batches and a small buffer: many requests in flight and send() backpressure.
    let config = ProducerConfig::default()
        .batch_size_bytes(4096)
        .max_request_bytes(64 * 1024)
        .buffer_bytes(32 * 1024)
        .linger(Duration::from_millis(1));
    let producer = Producer::new(client.clone(), config).expect("producer");
    let total = 20_000u32;
    let mut last = None;
    for i in 0..total {
        let delivery = producer
            .send(ProducerRecord::new("bulk", i.to_be_bytes().to_vec()))
            .await
            .expect("send");
        last = Some(delivery);
    }
    producer.flush().await;
    let last = last.expect("sent at least one").await.expect("delivered");
    assert_eq!(last.offset(), Some(Offset::new(i64::from(total) - 1)));
    assert_eq!(producer.metrics().records_delivered(), u64::from(total));
    producer.close().await;

    let config = ConsumerConfig::default().partition_fetch_max_bytes(8192);
    let mut consumer = Consumer::new(client.clone(), config).expect("consumer");
    consumer.assign("bulk", &[]).await.expect("assign");
    consumer
        .seek("bulk", PartitionId::new(0), Seek::Earliest)
        .expect("seek");
    let records = consume(&mut consumer, total as usize).await;
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.offset(), Offset::new(i as i64));
        assert_eq!(&record.value().expect("value")[..], &(i as u32).to_be_bytes());
    }
    broker.stop().await;
}
