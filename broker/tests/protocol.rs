//! The native protocol's rules (docs/protocol.md), checked against an in-process broker over
//! real TCP on 127.0.0.1 with hand-built frames.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{start_broker, RawClient};

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tidelog_broker::BrokerHandle;
use tidelog_proto::batch::{NewRecord, RecordBatchBuilder, CRC_OFFSET};
use tidelog_proto::pb::{self, request::Body, response, ErrorCode};

impl RawClient {
    async fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        records: Bytes,
    ) -> pb::produce_response::Partition {
        let response = self
            .call(produce_body(topic, partition, records, pb::Acks::Leader))
            .await;
        match response.body {
            Some(response::Body::Produce(mut produced)) => produced.topics.remove(0).partitions.remove(0),
            other => panic!("unexpected {other:?} ({})", response.error_message),
        }
    }

    async fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_wait_ms: u32,
    ) -> pb::fetch_response::Partition {
        let response = self.call(fetch_body(topic, partition, offset, max_wait_ms)).await;
        match response.body {
            Some(response::Body::Fetch(mut fetched)) => fetched.topics.remove(0).partitions.remove(0),
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn list_offset(
        &mut self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> pb::list_offsets_response::Partition {
        let body = Body::ListOffsets(pb::ListOffsetsRequest {
            topics: vec![pb::list_offsets_request::Topic {
                name: topic.into(),
                partitions: vec![pb::list_offsets_request::Partition { partition, timestamp }],
            }],
        });
        match self.call(body).await.body {
            Some(response::Body::ListOffsets(mut listed)) => listed.topics.remove(0).partitions.remove(0),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn produce_body(topic: &str, partition: u32, records: Bytes, acks: pb::Acks) -> Body {
    Body::Produce(pb::ProduceRequest {
        acks: acks as i32,
        timeout_ms: 10_000,
        topics: vec![pb::produce_request::Topic {
            name: topic.into(),
            partitions: vec![pb::produce_request::Partition {
                partition,
                records,
                ..Default::default()
            }],
        }],
    })
}

fn fetch_body(topic: &str, partition: u32, offset: i64, max_wait_ms: u32) -> Body {
    Body::Fetch(pb::FetchRequest {
        max_wait_ms,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![pb::fetch_request::Topic {
            name: topic.into(),
            partitions: vec![pb::fetch_request::Partition {
                partition,
                fetch_offset: offset,
                max_bytes: 1 << 20,
            }],
        }],
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A batch of `values` stamped `age_ms` before now. Record timestamps drive age-based rolls
/// and time retention, so tests use recent ones.
fn batch(values: &[&str], age_ms: i64) -> Bytes {
    let timestamp = now_ms() - age_ms;
    let mut builder = RecordBatchBuilder::new();
    for value in values {
        builder.push(&NewRecord {
            timestamp,
            key: None,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Vec::new(),
        });
    }
    builder.build().unwrap()
}

/// Values and offsets of every record in a fetch response's batches.
fn records(fetched: &pb::fetch_response::Partition) -> Vec<(i64, String)> {
    tidelog_proto::batch::BatchIter::new(fetched.records.clone())
        .flat_map(|batch| batch.unwrap().records().collect::<Vec<_>>())
        .map(|record| {
            let record = record.unwrap();
            (
                record.offset,
                String::from_utf8(record.value.unwrap().to_vec()).unwrap(),
            )
        })
        .collect()
}

async fn start(dir: &std::path::Path) -> BrokerHandle {
    start_broker(dir, |_| {}).await
}

#[tokio::test]
async fn produced_batches_are_fetched_back_at_their_assigned_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut client = RawClient::connect(&broker).await;
    assert_eq!(
        client.create_topic("events", 2).await.error,
        ErrorCode::None as i32
    );

    let first = client.produce("events", 1, batch(&["a", "b", "c"], 60_000)).await;
    assert_eq!((first.error, first.base_offset, first.last_offset), (0, 0, 2));
    let second = client.produce("events", 1, batch(&["d", "e"], 30_000)).await;
    assert_eq!((second.base_offset, second.last_offset), (3, 4));

    let all = client.fetch("events", 1, 0, 0).await;
    assert_eq!(all.high_watermark, 5);
    let values: Vec<_> = records(&all).into_iter().map(|(_, value)| value).collect();
    assert_eq!(values, ["a", "b", "c", "d", "e"]);

    // A fetch from inside a batch returns that whole batch.
    let middle = client.fetch("events", 1, 4, 0).await;
    assert_eq!(records(&middle), [(3, "d".to_string()), (4, "e".to_string())]);

    assert_eq!(client.list_offset("events", 1, -2).await.offset, 0);
    assert_eq!(client.list_offset("events", 1, -1).await.offset, 5);
    let by_time = client.list_offset("events", 1, now_ms() - 45_000).await;
    assert_eq!(by_time.offset, 3);
    assert!(by_time.timestamp >= now_ms() - 45_000, "{by_time:?}");
    assert_eq!(
        client.list_offset("events", 1, now_ms() + 60_000).await.offset,
        -1
    );
    // The other partition is untouched.
    assert_eq!(client.list_offset("events", 0, -1).await.offset, 0);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn fetch_outside_the_log_reports_the_valid_range() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    client.produce("t", 0, batch(&["x"], 1)).await;
    let beyond = client.fetch("t", 0, 7, 0).await;
    assert_eq!(beyond.error, ErrorCode::OffsetOutOfRange as i32);
    assert_eq!((beyond.log_start_offset, beyond.high_watermark), (0, 1));
    let unknown = client.fetch("missing", 0, 0, 0).await;
    assert_eq!(unknown.error, ErrorCode::UnknownTopicOrPartition as i32);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_corrupt_batch_is_refused_whole_and_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    let good = batch(&["ok"], 1);
    let mut bad = BytesMut::from(&batch(&["bad"], 1)[..]);
    bad[CRC_OFFSET] ^= 0xff;
    let mut both = BytesMut::from(&good[..]);
    both.extend_from_slice(&bad);
    let refused = client.produce("t", 0, both.freeze()).await;
    assert_eq!(
        refused.error,
        ErrorCode::CorruptMessage as i32,
        "{}",
        refused.message
    );
    assert!(refused.message.contains("CRC"), "{}", refused.message);
    let truncated = client.produce("t", 0, good.slice(..good.len() - 3)).await;
    assert_eq!(truncated.error, ErrorCode::CorruptMessage as i32);
    let empty = client.produce("t", 0, Bytes::new()).await;
    assert_eq!(empty.error, ErrorCode::InvalidRequest as i32);
    assert_eq!(client.list_offset("t", 0, -1).await.offset, 0);
    // The same connection still works.
    assert_eq!(client.produce("t", 0, good).await.base_offset, 0);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn topic_admin_errors_use_kafka_codes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut client = RawClient::connect(&broker).await;
    assert_eq!(client.create_topic("dup", 1).await.error, 0);
    assert_eq!(
        client.create_topic("dup", 1).await.error,
        ErrorCode::TopicAlreadyExists as i32
    );
    assert_eq!(
        client.create_topic("bad/name", 1).await.error,
        ErrorCode::InvalidTopic as i32
    );
    assert_eq!(
        client.create_topic("huge", 1_000_000).await.error,
        ErrorCode::InvalidPartitions as i32
    );
    let deleted = client
        .call(Body::DeleteTopics(pb::DeleteTopicsRequest {
            names: vec!["dup".into(), "nope".into()],
        }))
        .await;
    let Some(response::Body::DeleteTopics(deleted)) = deleted.body else {
        panic!()
    };
    assert_eq!(deleted.topics[0].error, 0);
    assert_eq!(deleted.topics[1].error, ErrorCode::UnknownTopicOrPartition as i32);
    // A deleted topic's name can be reused, and starts empty.
    assert_eq!(client.create_topic("dup", 1).await.error, 0);
    assert_eq!(client.list_offset("dup", 0, -1).await.offset, 0);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn undecodable_and_unsupported_requests_get_errors_and_the_connection_survives() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut client = RawClient::connect(&broker).await;
    client.send_raw(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    let garbage = client.next_response().await.unwrap();
    assert_eq!(
        (garbage.correlation_id, garbage.error),
        (0, ErrorCode::InvalidRequest as i32)
    );

    let (id, mut request) = client.request(Body::Metadata(pb::MetadataRequest::default()));
    request.header.as_mut().unwrap().version = 99;
    client.send(&request).await;
    assert_eq!(
        client.response_to(id).await.error,
        ErrorCode::UnsupportedVersion as i32
    );

    let (id, mismatched) = client.request_as(
        pb::ApiKey::Produce,
        Body::Metadata(pb::MetadataRequest::default()),
    );
    client.send(&mismatched).await;
    assert_eq!(
        client.response_to(id).await.error,
        ErrorCode::InvalidRequest as i32
    );

    assert_eq!(client.create_topic("still-fine", 1).await.error, 0);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut bystander = RawClient::connect(&broker).await;
    let mut attacker = RawClient::connect(&broker).await;
    attacker.send_raw(&[0xff, 0xff, 0xff, 0xff]).await;
    let refusal = attacker.next_response().await.unwrap();
    assert_eq!(refusal.error, ErrorCode::InvalidRequest as i32);
    assert!(
        refusal.error_message.contains("exceeds"),
        "{}",
        refusal.error_message
    );
    assert!(
        attacker.next_response().await.is_none(),
        "connection should be closed"
    );
    assert_eq!(bystander.create_topic("t", 1).await.error, 0);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn long_poll_fetch_is_woken_by_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut consumer = RawClient::connect(&broker).await;
    let mut producer = RawClient::connect(&broker).await;
    consumer.create_topic("t", 1).await;
    let (id, request) = consumer.request(fetch_body("t", 0, 0, 20_000));
    let asked = Instant::now();
    consumer.send(&request).await;
    producer.produce("t", 0, batch(&["wake"], 1)).await;
    let response = consumer.response_to(id).await;
    let Some(response::Body::Fetch(mut fetched)) = response.body else {
        panic!()
    };
    let partition = fetched.topics.remove(0).partitions.remove(0);
    assert_eq!(records(&partition), [(0, "wake".to_string())]);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "woken late: {:?}",
        asked.elapsed()
    );

    // With nothing to wake it, a fetch waits out its max_wait_ms and returns empty.
    let idle_started = Instant::now();
    let idle = consumer.fetch("t", 0, 1, 300).await;
    assert!(idle.records.is_empty());
    assert!(idle_started.elapsed() >= Duration::from_millis(300));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn pipelined_produces_append_in_send_order_and_acks_none_gets_no_response() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    let silent = client
        .request(produce_body("t", 0, batch(&["silent"], 1), pb::Acks::None))
        .1;
    client.send(&silent).await;
    let mut ids = Vec::new();
    for i in 0..50 {
        let value = format!("v{i}");
        let (id, request) = client.request(produce_body("t", 0, batch(&[&value], 1), pb::Acks::Leader));
        client.send(&request).await;
        ids.push(id);
    }
    for (i, id) in ids.into_iter().enumerate() {
        let response = client.response_to(id).await;
        let Some(response::Body::Produce(produced)) = response.body else {
            panic!()
        };
        assert_eq!(produced.topics[0].partitions[0].base_offset, i as i64 + 1);
    }
    assert!(
        client.early.is_empty(),
        "acks=none must not be answered: {:?}",
        client.early
    );
    let fetched = client.fetch("t", 0, 0, 0).await;
    assert_eq!(records(&fetched)[0], (0, "silent".to_string()));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn topics_and_records_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = start(dir.path()).await;
        let mut client = RawClient::connect(&broker).await;
        client.create_topic("kept", 3).await;
        client.produce("kept", 2, batch(&["one", "two"], 5)).await;
        broker.shutdown().await.unwrap();
    }
    let broker = start(dir.path()).await;
    let mut client = RawClient::connect(&broker).await;
    let metadata = client.call(Body::Metadata(pb::MetadataRequest::default())).await;
    let Some(response::Body::Metadata(metadata)) = metadata.body else {
        panic!()
    };
    assert_eq!(metadata.topics.len(), 1);
    assert_eq!(metadata.topics[0].partitions.len(), 3);
    assert_eq!(metadata.topics[0].partitions[2].high_watermark, 2);
    assert_eq!(
        client.produce("kept", 2, batch(&["three"], 6)).await.base_offset,
        2
    );
    let values: Vec<_> = records(&client.fetch("kept", 2, 0, 0).await)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, ["one", "two", "three"]);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn acks_none_data_becomes_visible_under_flush_always_without_other_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    let (_, silent) = client.request(produce_body("t", 0, batch(&["alone"], 1), pb::Acks::None));
    client.send(&silent).await;
    // A long poll returns as soon as the record is synced and visible.
    let fetched = client.fetch("t", 0, 0, 10_000).await;
    assert_eq!(records(&fetched), [(0, "alone".to_string())]);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn pipelined_fetches_beyond_the_memory_budget_wait_their_turn_and_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |config| {
        config.limits.fetch_bytes_max = 1 << 20;
        config.limits.frame_bytes_max = 2 << 20;
        config.limits.batch_bytes_max = 1 << 20;
        config.limits.connection_memory_bytes_max = 4 << 20;
        config.limits.memory_bytes_max = 8 << 20;
        config.kafka.frame_bytes_max = 2 << 20;
    })
    .await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    let value = "x".repeat(200_000);
    for _ in 0..5 {
        client.produce("t", 0, batch(&[&value], 1)).await;
    }
    // A few fetches fill the connection's budget, so they take turns; a client
    // that reads nothing until it has sent them all must still get every answer.
    let mut ids = Vec::new();
    for _ in 0..40 {
        let (id, request) = client.request(fetch_body("t", 0, 0, 0));
        client.send(&request).await;
        ids.push(id);
    }
    for id in ids {
        let response = client.response_to(id).await;
        let Some(response::Body::Fetch(fetched)) = response.body else {
            panic!("{response:?}")
        };
        assert!(!fetched.topics[0].partitions[0].records.is_empty());
    }
    broker.shutdown().await.unwrap();
}
