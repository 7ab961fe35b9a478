//! Event stream reads and group-offset waits (issue 8 §4, docs/protocol.md "Event streams")
//! against an in-process broker over real TCP on 127.0.0.1: page bounds (records, bytes, the
//! broker's maxima), the errors answered in the body, the headers and null values a page
//! carries, the waiter bound and the end of waits and long polls at shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{start_broker, RawClient};

use std::time::Duration;

use bytes::Bytes;
use tidelog_proto::batch::{NewRecord, RecordBatchBuilder, RecordHeader};
use tidelog_proto::pb::{self, request::Body, response, ErrorCode};

/// `(key, value)` records in one batch; a `None` value is a tombstone.
fn keyed_batch(records: &[(&str, Option<&str>)]) -> Bytes {
    let mut builder = RecordBatchBuilder::new();
    for (key, value) in records {
        builder.push(&NewRecord {
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|value| Bytes::copy_from_slice(value.as_bytes())),
            headers: vec![RecordHeader {
                key: "source".into(),
                value: Some(Bytes::from_static(b"test")),
            }],
        });
    }
    builder.build().unwrap()
}

async fn produce(client: &mut RawClient, topic: &str, records: Bytes) {
    let answer = common::produce_partition(client, topic, records).await;
    assert_eq!(answer.error, 0, "{answer:?}");
}

fn read_body(
    topic: &str,
    key: &str,
    from: i64,
    backward: bool,
    limit: u32,
    max_bytes: u32,
    wait_ms: u32,
) -> Body {
    Body::ReadStream(pb::ReadStreamRequest {
        topic: topic.into(),
        key: Bytes::copy_from_slice(key.as_bytes()),
        from_offset: from,
        direction: if backward {
            pb::ReadDirection::Backward
        } else {
            pb::ReadDirection::Forward
        } as i32,
        limit,
        max_bytes,
        max_wait_ms: wait_ms,
    })
}

async fn read(client: &mut RawClient, body: Body) -> pb::ReadStreamResponse {
    match client.call_ok(body).await {
        response::Body::ReadStream(page) => page,
        other => panic!("unexpected {other:?}"),
    }
}

fn offsets(page: &pb::ReadStreamResponse) -> Vec<i64> {
    page.records.iter().map(|record| record.offset).collect()
}

fn wait_body(group: &str, offset: i64, timeout_ms: u32) -> Body {
    Body::WaitGroupOffset(pb::WaitGroupOffsetRequest {
        group_id: group.into(),
        topic: "t".into(),
        partition: 0,
        offset,
        timeout_ms,
    })
}

fn wait_answer(response: pb::Response) -> pb::WaitGroupOffsetResponse {
    match response.body {
        Some(response::Body::WaitGroupOffset(answer)) => answer,
        other => panic!("unexpected {other:?} ({})", response.error_message),
    }
}

async fn admin_commit(client: &mut RawClient, group: &str, offset: i64) {
    let body = Body::OffsetCommit(pb::OffsetCommitRequest {
        group_id: group.into(),
        member_id: String::new(),
        member_epoch: -1,
        topics: vec![pb::offset_commit_request::Topic {
            name: "t".into(),
            partitions: vec![pb::offset_commit_request::Partition {
                partition: 0,
                offset,
                metadata: String::new(),
            }],
        }],
    });
    match client.call_ok(body).await {
        response::Body::OffsetCommit(answer) => {
            assert_eq!(answer.topics[0].partitions[0].error, 0, "{answer:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn stream_pages_are_bounded_by_limit_bytes_and_the_broker_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |config| config.limits.stream_read_records_max = 3).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    // a: offsets 0, 2, 4, 6, 8 (the last a tombstone); b in between.
    let value = "v".repeat(1_000);
    produce(
        &mut client,
        "t",
        keyed_batch(&[
            ("a", Some(&value)),
            ("b", Some("b0")),
            ("a", Some(&value)),
            ("b", Some("b1")),
            ("a", Some(&value)),
            ("b", Some("b2")),
            ("a", Some(&value)),
            ("b", Some("b3")),
            ("a", None),
        ]),
    )
    .await;

    // 0 asks for the broker's maximum (3 here), and more is clamped to it.
    for limit in [0, 50] {
        let page = read(&mut client, read_body("t", "a", 0, false, limit, 0, 0)).await;
        assert_eq!(offsets(&page), [0, 2, 4], "limit {limit}");
        assert_eq!((page.next_offset, page.end_of_stream), (5, false));
        assert_eq!(
            (page.high_watermark, page.log_start_offset, page.partition),
            (9, 0, 0)
        );
    }
    // A byte budget smaller than one record still returns one record per page; paging with
    // next_offset walks the whole stream exactly once.
    let mut from = 0;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = read(&mut client, read_body("t", "a", from, false, 0, 10, 0)).await;
        assert!(page.records.len() <= 1, "one record per tiny page: {page:?}");
        seen.extend(offsets(&page));
        if page.end_of_stream {
            assert_eq!(page.next_offset, page.high_watermark);
            break;
        }
        from = page.next_offset;
    }
    assert_eq!(seen, [0, 2, 4, 6, 8]);
    // Headers and a null value come through.
    let last = read(&mut client, read_body("t", "a", -1, true, 1, 0, 0)).await;
    assert_eq!(offsets(&last), [8]);
    assert_eq!(last.records[0].value, None, "a tombstone has no value");
    assert_eq!(last.records[0].key, Bytes::from_static(b"a"));
    assert_eq!(
        last.records[0].headers,
        [pb::Header {
            key: "source".into(),
            value: Some(Bytes::from_static(b"test")),
        }]
    );
    assert_eq!(
        (last.next_offset, last.end_of_stream),
        (7, false),
        "one below the last returned"
    );
    // Backward from the first record: the start of the stream.
    let first = read(&mut client, read_body("t", "a", 0, true, 0, 0, 0)).await;
    assert_eq!(offsets(&first), [0]);
    assert_eq!((first.next_offset, first.end_of_stream), (-1, true));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_stream_requests_are_answered_in_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |_| {}).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 2).await;
    let empty_key = read(&mut client, read_body("t", "", 0, false, 0, 0, 0)).await;
    assert_eq!(empty_key.error(), ErrorCode::InvalidRequest, "{empty_key:?}");
    let unknown = read(&mut client, read_body("nope", "k", 0, false, 0, 0, 0)).await;
    assert_eq!(unknown.error(), ErrorCode::UnknownTopicOrPartition, "{unknown:?}");
    let info = match client
        .call_ok(Body::StreamInfo(pb::StreamInfoRequest {
            topic: "nope".into(),
            key: Bytes::from_static(b"k"),
        }))
        .await
    {
        response::Body::StreamInfo(info) => info,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        (info.error(), info.first_offset, info.last_offset, info.records),
        (ErrorCode::UnknownTopicOrPartition, -1, -1, 0)
    );
    let wait = wait_answer(client.call(wait_body("", 1, 0)).await);
    assert_eq!(wait.error(), ErrorCode::InvalidGroupId);
    let wait = wait_answer(
        client
            .call(Body::WaitGroupOffset(pb::WaitGroupOffsetRequest {
                group_id: "g".into(),
                topic: "t".into(),
                partition: 2,
                offset: 1,
                timeout_ms: 10,
            }))
            .await,
    );
    assert_eq!(wait.error(), ErrorCode::UnknownTopicOrPartition);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn waits_past_the_waiter_bound_are_throttled_and_shutdown_ends_waits_and_long_polls() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |config| config.groups.offset_waiters_max = 1).await;
    let mut client = RawClient::connect(&broker).await;
    let mut other = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;

    // One long wait holds the only slot; a second wait is refused, retriably, once the first
    // has registered (short probes until then, each giving its slot back within 1 ms).
    let (held, request) = client.request(wait_body("g", 5, 60_000));
    client.send(&request).await;
    let mut throttled = None;
    for _ in 0..1_000 {
        let probe = wait_answer(other.call(wait_body("h", 1, 1)).await);
        if probe.error() == ErrorCode::ThrottlingQuotaExceeded {
            throttled = Some(probe);
            break;
        }
        assert_eq!(
            (probe.error(), probe.reached),
            (ErrorCode::None, false),
            "{probe:?}"
        );
    }
    let throttled = throttled.expect("the second wait is refused while the first holds the slot");
    assert!(throttled.message.contains("offset_waiters_max"), "{throttled:?}");
    // An answer that needs no wait does not take a slot.
    admin_commit(&mut other, "h", 3).await;
    let at_once = wait_answer(other.call(wait_body("h", 3, 60_000)).await);
    assert_eq!(
        (at_once.error(), at_once.committed, at_once.reached),
        (ErrorCode::None, 3, true)
    );
    // The commit wakes the held wait.
    admin_commit(&mut other, "g", 5).await;
    let woken = wait_answer(client.response_to(held).await);
    assert_eq!(
        (woken.error(), woken.committed, woken.reached),
        (ErrorCode::None, 5, true)
    );

    // A wait and a long-poll read under way when the broker stops are answered, not dropped.
    let (waiting, request) = client.request(wait_body("g", 99, 60_000));
    client.send(&request).await;
    let (polling, request) = other.request(read_body("t", "k", 0, false, 0, 0, 60_000));
    other.send(&request).await;
    // Both have been started once a later request on each connection is answered (requests
    // start in arrival order).
    let probe = read(&mut other, read_body("t", "k", 0, true, 0, 0, 0)).await;
    assert!(probe.records.is_empty());
    let probe = read(&mut client, read_body("t", "k", 0, true, 0, 0, 0)).await;
    assert!(probe.records.is_empty());
    let shutdown = tokio::spawn(broker.shutdown());
    let stopped = wait_answer(client.response_to(waiting).await);
    assert_eq!(stopped.error(), ErrorCode::BrokerShuttingDown, "{stopped:?}");
    let page = match other.response_to(polling).await.body {
        Some(response::Body::ReadStream(page)) => page,
        other => panic!("unexpected {other:?}"),
    };
    assert!(page.records.is_empty() && page.end_of_stream, "{page:?}");
    tokio::time::timeout(Duration::from_secs(30), shutdown)
        .await
        .expect("shutdown completes")
        .unwrap()
        .unwrap();
}
