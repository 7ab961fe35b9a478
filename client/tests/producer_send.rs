//! The producer's `send` fast path keeps its guarantees: buffer bytes taken ahead by open
//! batches never stop a record as large as the whole buffer, and every record keeps the
//! wall-clock time of its own `send`, not its batch's.

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
