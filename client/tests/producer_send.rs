//! The producer's `send` fast path keeps its guarantees: buffer bytes taken ahead by open
//! batches never stop a record as large as the whole buffer, every record keeps the
//! wall-clock time of its own `send`, not its batch's, and records lent to `send` or sent
//! without a future (`send_detached`) land in order and are counted.

// Test code: a failed expectation is a failed test (STYLE.md allows unwrap/expect in tests).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestBroker;
use tidelog_client::{
    Consumer, ConsumerConfig, NewTopic, PartitionId, Producer, ProducerConfig, ProducerRecord, Record, Seek,
};

/// Upper bound on any wait for something that must happen.
const DEADLINE: Duration = Duration::from_secs(30);

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

async fn read_all(consumer: &mut Consumer, topic: &str, count: usize) -> Vec<Record> {
    consumer.assign(topic, &[]).await.expect("assign");
    consumer
        .seek(topic, PartitionId::new(0), Seek::Earliest)
        .expect("seek");
    let deadline = tokio::time::Instant::now() + DEADLINE;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_as_large_as_the_buffer_is_sent_after_a_stream_of_small_ones() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("big", 1))
        .await
        .expect("create topic");
    let buffer_bytes = 512 * 1024;
    let config = ProducerConfig::default()
        .batch_size_bytes(128 * 1024)
        .max_request_bytes(1024 * 1024)
        .buffer_bytes(buffer_bytes)
        // Long enough that the small records' batches are still open (holding what they
        // took ahead) when the large record asks for the whole buffer.
        .linger(Duration::from_millis(200));
    let producer = Producer::new(client.clone(), config).expect("producer");
    let p0 = PartitionId::new(0);
    let mut small = Vec::new();
    for i in 0..3_000u32 {
        let record = ProducerRecord::new("big", vec![i as u8; 100]).partition(p0);
        small.push(producer.send(record).await.expect("send a small record"));
    }
    // Its reservation (value plus per-record framing) is the buffer's whole size, the largest
    // `send` accepts: it can only go once every small record's batch gave its bytes back.
    let large = vec![7u8; buffer_bytes - 24];
    let sent = tokio::time::timeout(
        DEADLINE,
        producer.send(ProducerRecord::new("big", large.clone()).partition(p0)),
    )
    .await
    .expect("the large record is accepted once the small ones are delivered")
    .expect("send the large record");
    let delivered = tokio::time::timeout(DEADLINE, sent)
        .await
        .expect("the large record is delivered")
        .expect("delivered");
    assert_eq!(delivered.offset().map(|o| o.get()), Some(3_000));
    for delivery in small {
        delivery.await.expect("small record delivered");
    }
    producer.close().await;
    let mut consumer = Consumer::new(client, ConsumerConfig::default()).expect("consumer");
    let records = read_all(&mut consumer, "big", 3_001).await;
    assert_eq!(records[3_000].value().map(|v| v.len()), Some(large.len()));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_one_batch_carry_the_time_of_their_own_send() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("times", 1))
        .await
        .expect("create topic");
    // One batch: a long linger and a flush at the end.
    let config = ProducerConfig::default().linger(Duration::from_secs(10));
    let producer = Producer::new(client.clone(), config).expect("producer");
    let p0 = PartitionId::new(0);
    let mut windows = Vec::new();
    for i in 0..5u32 {
        let before = wall_ms();
        let delivery = producer
            .send(ProducerRecord::new("times", format!("{i}")).partition(p0))
            .await
            .expect("send");
        let after = wall_ms();
        drop(delivery);
        windows.push((before, after));
        // Let the wall clock move on by at least 3 ms (polled, bounded by DEADLINE).
        let started = tokio::time::Instant::now();
        while wall_ms() < after + 3 {
            assert!(started.elapsed() < DEADLINE, "the wall clock does not advance");
            tokio::task::yield_now().await;
        }
    }
    producer.flush().await;
    producer.close().await;
    let mut consumer = Consumer::new(client, ConsumerConfig::default()).expect("consumer");
    let records = read_all(&mut consumer, "times", 5).await;
    for (record, (before, after)) in records.iter().zip(&windows) {
        assert!(
            (*before..=*after).contains(&record.timestamp_ms()),
            "record {} has timestamp {} outside its send's {before}..={after}",
            record.offset().get(),
            record.timestamp_ms()
        );
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_many_queues_in_order_through_full_buffers_and_stops_at_the_first_bad_record() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("many", 2))
        .await
        .expect("create topic");
    // A buffer of a few batches: the call waits for room many times on its way.
    let config = ProducerConfig::default()
        .batch_size_bytes(16 * 1024)
        .max_request_bytes(64 * 1024)
        .buffer_bytes(64 * 1024)
        .linger(Duration::from_millis(1));
    let producer = Producer::new(client.clone(), config).expect("producer");
    let p0 = PartitionId::new(0);
    let total = 20_000u32;
    let mut deliveries = Vec::new();
    let before = wall_ms();
    producer
        .send_many(
            (0..total).map(|i| ProducerRecord::new("many", i.to_be_bytes().to_vec()).partition(p0)),
            &mut deliveries,
        )
        .await
        .expect("send_many");
    let after = wall_ms();
    assert_eq!(deliveries.len(), total as usize);
    for (i, delivery) in deliveries.drain(..).enumerate() {
        let delivered = tokio::time::timeout(DEADLINE, delivery)
            .await
            .expect("delivered in time")
            .expect("delivered");
        assert_eq!(delivered.offset().map(|o| o.get()), Some(i as i64));
    }

    // A record for a partition the topic does not have: the ones before it are queued, it
    // and the ones after it are not.
    let bad = (0..10u32)
        .map(|i| ProducerRecord::new("many", format!("ok-{i}")).partition(p0))
        .chain([ProducerRecord::new("many", "bad").partition(PartitionId::new(7))])
        .chain([ProducerRecord::new("many", "after").partition(p0)]);
    let error = producer
        .send_many(bad, &mut deliveries)
        .await
        .expect_err("partition 7 does not exist");
    assert!(
        matches!(error, tidelog_client::Error::UnknownTopicOrPartition { .. }),
        "{error:?}"
    );
    assert_eq!(deliveries.len(), 10);
    producer.flush().await;
    for delivery in deliveries.drain(..) {
        delivery.await.expect("records before the bad one are delivered");
    }
    producer.close().await;

    let mut consumer = Consumer::new(client, ConsumerConfig::default()).expect("consumer");
    let records = read_all(&mut consumer, "many", total as usize + 10).await;
    for (i, record) in records.iter().take(total as usize).enumerate() {
        assert_eq!(&record.value().expect("value")[..], &(i as u32).to_be_bytes());
        assert!(
            (before..=after).contains(&record.timestamp_ms()),
            "record {i} has timestamp {} outside the call's {before}..={after}",
            record.timestamp_ms()
        );
    }
    let tail: Vec<String> = records[total as usize..]
        .iter()
        .map(|r| String::from_utf8_lossy(r.value().expect("value")).into_owned())
        .collect();
    assert_eq!(tail, (0..10).map(|i| format!("ok-{i}")).collect::<Vec<_>>());
    // Nothing after the bad record was stored.
    let more = consumer.poll(Duration::from_millis(300)).await.expect("poll");
    assert!(more.is_empty(), "records after the bad one were stored: {more:?}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borrowed_and_detached_sends_land_in_order_and_count_in_the_metrics() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("lent", 1))
        .await
        .expect("create topic");
    // Small batches: many of them complete while records are still being sent.
    let config = ProducerConfig::default()
        .batch_size_bytes(4 * 1024)
        .linger(Duration::from_millis(1));
    let producer = Producer::new(client.clone(), config).expect("producer");
    let p0 = PartitionId::new(0);
    let records: Vec<ProducerRecord> = (0..5_000u32)
        .map(|i| ProducerRecord::new("lent", i.to_be_bytes().to_vec()).partition(p0))
        .collect();
    let mut tracked = Vec::new();
    for (i, record) in records.iter().enumerate() {
        if i % 100 == 0 {
            tracked.push((i, producer.send(record).await.expect("send a lent record")));
        } else {
            producer.send_detached(record).await.expect("send detached");
        }
    }
    // The same record lent again still goes: `send` copied it and left it as it was.
    producer.send_detached(&records[0]).await.expect("send it again");
    producer.flush().await;
    assert_eq!(producer.metrics().records_delivered(), 5_001);
    assert_eq!(producer.metrics().records_failed(), 0);
    for (i, delivery) in tracked {
        let delivered = delivery.await.expect("delivered");
        assert_eq!(delivered.offset().map(|o| o.get()), Some(i as i64));
    }
    producer.close().await;
    let mut consumer = Consumer::new(client, ConsumerConfig::default()).expect("consumer");
    let stored = read_all(&mut consumer, "lent", 5_001).await;
    for (i, record) in stored.iter().enumerate() {
        let expected = (i % 5_000) as u32;
        assert_eq!(record.offset().get(), i as i64);
        assert_eq!(&record.value().expect("value")[..], &expected.to_be_bytes());
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_record_that_fails_for_good_counts_as_failed() {
    let broker = TestBroker::start().await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("gone", 1))
        .await
        .expect("create topic");
    let config = ProducerConfig::default().retries(0);
    let producer = Producer::new(client.clone(), config).expect("producer");
    let p0 = PartitionId::new(0);
    // Learns the topic's partitions and the producer id while the topic exists.
    producer
        .send(ProducerRecord::new("gone", "first").partition(p0))
        .await
        .expect("send")
        .await
        .expect("delivered");
    client.admin().delete_topic("gone").await.expect("delete topic");
    producer
        .send_detached(ProducerRecord::new("gone", "lost").partition(p0))
        .await
        .expect("queued: the producer still knows the partition");
    producer.flush().await;
    assert_eq!(producer.metrics().records_delivered(), 1);
    assert_eq!(producer.metrics().records_failed(), 1);
    producer.close().await;
    broker.stop().await;
}
