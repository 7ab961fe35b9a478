//! TruncateStream, EraseStream, ReopenStream and StreamInfo's marks (issue 9 §3,
//! docs/protocol.md) against an in-process broker over real TCP on 127.0.0.1: the codes and
//! marks answered in the body, a produce to an erased stream refused with STREAM_ERASED and
//! nothing stored, the stream's snapshots in `<topic>.snapshots` erased and re-opened with it,
//! and keyless records refused on a compacted topic while a delete topic takes them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{start_broker, RawClient};

use bytes::Bytes;
use tidelog_proto::batch::{NewRecord, RecordBatchBuilder};
use tidelog_proto::pb::{self, request::Body, response, ErrorCode};

fn batch(records: &[(Option<&str>, &str)]) -> Bytes {
    let mut builder = RecordBatchBuilder::new();
    for (key, value) in records {
        builder.push(&NewRecord {
            timestamp: 1_700_000_000_000,
            key: key.map(|key| Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: Vec::new(),
        });
    }
    builder.build().unwrap()
}

/// One partition's produce answer.
async fn produce(client: &mut RawClient, topic: &str, records: Bytes) -> pb::produce_response::Partition {
    common::produce_partition(client, topic, records).await
}

fn key(key: &str) -> Bytes {
    Bytes::copy_from_slice(key.as_bytes())
}

/// `(error, message, marks)` of a mark-changing call.
async fn change(client: &mut RawClient, body: Body) -> (i32, String, Option<pb::StreamMarks>) {
    match client.call_ok(body).await {
        response::Body::TruncateStream(answer) => (answer.error, answer.message, answer.marks),
        response::Body::EraseStream(answer) => (answer.error, answer.message, answer.marks),
        response::Body::ReopenStream(answer) => (answer.error, answer.message, answer.marks),
        other => panic!("unexpected {other:?}"),
    }
}

async fn info(client: &mut RawClient, topic: &str, name: &str) -> pb::StreamInfoResponse {
    let body = Body::StreamInfo(pb::StreamInfoRequest {
        topic: topic.into(),
        key: key(name),
    });
    match client.call_ok(body).await {
        response::Body::StreamInfo(answer) => answer,
        other => panic!("unexpected {other:?}"),
    }
}

async fn read_error(client: &mut RawClient, topic: &str, name: &str) -> i32 {
    let body = Body::ReadStream(pb::ReadStreamRequest {
        topic: topic.into(),
        key: key(name),
        from_offset: 0,
        direction: pb::ReadDirection::Forward as i32,
        limit: 0,
        max_bytes: 0,
        max_wait_ms: 0,
    });
    match client.call_ok(body).await {
        response::Body::ReadStream(answer) => answer.error,
        other => panic!("unexpected {other:?}"),
    }
}

async fn save(client: &mut RawClient, topic: &str, name: &str, at_offset: i64) -> pb::SaveSnapshotResponse {
    let body = Body::SaveSnapshot(pb::SaveSnapshotRequest {
        topic: topic.into(),
        key: key(name),
        at_offset,
        snapshot: Bytes::from_static(b"state"),
    });
    match client.call_ok(body).await {
        response::Body::SaveSnapshot(saved) => saved,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn marks_are_answered_in_the_body_and_an_erased_stream_refuses_produce() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |config| config.cleaner.threads = 0).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    let landed = produce(
        &mut client,
        "t",
        batch(&[(Some("a"), "0"), (Some("b"), "1"), (Some("a"), "2")]),
    )
    .await;
    assert_eq!(landed.error, 0, "{landed:?}");

    let truncate = |before| {
        Body::TruncateStream(pb::TruncateStreamRequest {
            topic: "t".into(),
            key: key("a"),
            before_offset: before,
        })
    };
    let (error, _, marks) = change(&mut client, truncate(1)).await;
    assert_eq!(error, 0);
    assert_eq!(marks.unwrap().truncated_before, 1);
    let (error, message, marks) = change(&mut client, truncate(-1)).await;
    assert_eq!(error, ErrorCode::OffsetOutOfRange as i32, "{message}");
    assert!(marks.is_none());
    let answer = info(&mut client, "t", "a").await;
    assert_eq!(
        (answer.first_offset, answer.last_offset, answer.records),
        (2, 2, 1)
    );
    assert_eq!(answer.marks.unwrap().truncated_before, 1);
    assert!(
        info(&mut client, "t", "b").await.marks.is_none(),
        "no marks: none answered"
    );

    let erase = Body::EraseStream(pb::EraseStreamRequest {
        topic: "t".into(),
        key: key("b"),
    });
    let (error, _, marks) = change(&mut client, erase).await;
    assert_eq!(error, 0);
    let marks = marks.unwrap();
    assert!(marks.erased);
    assert_eq!(marks.erase_before, 3);
    assert_eq!(
        (marks.erase_records_remaining, marks.erase_segments_remaining),
        (1, 1)
    );
    assert_eq!(marks.erase_deadline_ms - marks.erase_requested_ms, 3_600_000);
    assert_eq!(
        read_error(&mut client, "t", "b").await,
        ErrorCode::StreamErased as i32
    );
    let answer = info(&mut client, "t", "b").await;
    assert_eq!(answer.error, 0, "an erased stream is described: {answer:?}");
    assert_eq!(
        (answer.first_offset, answer.last_offset, answer.records),
        (-1, -1, 0)
    );
    assert!(answer.marks.unwrap().erased);

    let refused = produce(&mut client, "t", batch(&[(Some("a"), "3"), (Some("b"), "4")])).await;
    assert_eq!(refused.error, ErrorCode::StreamErased as i32, "{refused:?}");
    assert!(refused.message.contains("\"b\""), "{}", refused.message);
    let landed = produce(&mut client, "t", batch(&[(Some("a"), "3")])).await;
    assert_eq!(
        (landed.error, landed.base_offset),
        (0, 3),
        "the refusal stored nothing"
    );

    let reopen = Body::ReopenStream(pb::ReopenStreamRequest {
        topic: "t".into(),
        key: key("b"),
    });
    let (error, _, marks) = change(&mut client, reopen).await;
    assert_eq!(error, 0);
    assert!(!marks.unwrap().erased);
    let landed = produce(&mut client, "t", batch(&[(Some("b"), "5")])).await;
    assert_eq!((landed.error, landed.base_offset), (0, 4));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_erasure_takes_the_streams_snapshots_with_it_and_a_reopen_gives_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |config| config.cleaner.threads = 0).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    produce(&mut client, "t", batch(&[(Some("a"), "0"), (Some("a"), "1")])).await;
    assert_eq!(save(&mut client, "t", "a", 1).await.error, 0);
    assert_eq!(read_error(&mut client, "t.snapshots", "a").await, 0);

    let erase = Body::EraseStream(pb::EraseStreamRequest {
        topic: "t".into(),
        key: key("a"),
    });
    assert_eq!(change(&mut client, erase).await.0, 0);
    assert_eq!(
        read_error(&mut client, "t.snapshots", "a").await,
        ErrorCode::StreamErased as i32,
        "the snapshot is erased with its stream"
    );
    let companion = info(&mut client, "t.snapshots", "a").await;
    let marks = companion.marks.expect("the companion key is marked");
    assert!(marks.erased);
    assert_eq!(marks.erase_records_remaining, 1);

    let reopen = Body::ReopenStream(pb::ReopenStreamRequest {
        topic: "t".into(),
        key: key("a"),
    });
    assert_eq!(change(&mut client, reopen).await.0, 0);
    let landed = produce(&mut client, "t", batch(&[(Some("a"), "2")])).await;
    assert_eq!((landed.error, landed.base_offset), (0, 2));
    let saved = save(&mut client, "t", "a", 2).await;
    assert_eq!(
        saved.error, 0,
        "snapshots are saved again after the re-open: {saved:?}"
    );
    assert_eq!(read_error(&mut client, "t.snapshots", "a").await, 0);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_compacted_topic_refuses_keyless_records_and_a_delete_topic_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |_| {}).await;
    let mut client = RawClient::connect(&broker).await;
    let body = Body::CreateTopics(pb::CreateTopicsRequest {
        topics: vec![pb::create_topics_request::Topic {
            name: "compacted".into(),
            partitions: 1,
            config: Some(pb::TopicConfig {
                cleanup_policy: Some("compact".into()),
                ..Default::default()
            }),
        }],
    });
    match client.call_ok(body).await {
        response::Body::CreateTopics(created) => assert_eq!(created.topics[0].error, 0, "{created:?}"),
        other => panic!("unexpected {other:?}"),
    }
    client.create_topic("plain", 1).await;

    let records = || batch(&[(Some("k"), "1"), (None, "keyless")]);
    let refused = produce(&mut client, "compacted", records()).await;
    assert_eq!(refused.error, ErrorCode::InvalidRecord as i32, "{refused:?}");
    assert_eq!(
        refused.message,
        "Compacted topic cannot accept message without key in topic partition compacted-0."
    );
    let landed = produce(&mut client, "compacted", batch(&[(Some("k"), "1")])).await;
    assert_eq!(
        (landed.error, landed.base_offset),
        (0, 0),
        "nothing of the refusal was stored"
    );
    let landed = produce(&mut client, "plain", records()).await;
    assert_eq!((landed.error, landed.base_offset), (0, 0));
    broker.shutdown().await.unwrap();
}
