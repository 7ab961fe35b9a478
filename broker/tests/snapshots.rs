//! SaveSnapshot and LoadStream (issue 9 §2, docs/protocol.md) against an in-process broker over
//! real TCP on 127.0.0.1: the errors answered in the body, the snapshot record as stored in the
//! companion topic, the snapshot's bytes counting against a load's byte bound, and a latest
//! companion record that is no snapshot (a tombstone, no offset header) loading without one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{start_broker, RawClient};

use bytes::Bytes;
use tidelog_proto::batch::{NewRecord, RecordBatchBuilder, RecordHeader};
use tidelog_proto::pb::{self, request::Body, response, ErrorCode};

/// One record to write: its value (None: a tombstone) and headers.
type Spec<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>);

/// Records of key `key` in one batch, with the given values and headers.
fn batch(key: &str, records: &[Spec<'_>]) -> Bytes {
    let mut builder = RecordBatchBuilder::new();
    for (value, headers) in records {
        builder.push(&NewRecord {
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: value.map(|value| Bytes::copy_from_slice(value.as_bytes())),
            headers: headers
                .iter()
                .map(|(name, value)| RecordHeader {
                    key: (*name).to_owned(),
                    value: Some(Bytes::copy_from_slice(value.as_bytes())),
                })
                .collect(),
        });
    }
    builder.build().unwrap()
}

async fn produce(client: &mut RawClient, topic: &str, records: Bytes) {
    let answer = common::produce_partition(client, topic, records).await;
    assert_eq!(answer.error, 0, "{answer:?}");
}

async fn save(
    client: &mut RawClient,
    topic: &str,
    key: &str,
    at_offset: i64,
    snapshot: &str,
) -> pb::SaveSnapshotResponse {
    let body = Body::SaveSnapshot(pb::SaveSnapshotRequest {
        topic: topic.into(),
        key: Bytes::copy_from_slice(key.as_bytes()),
        at_offset,
        snapshot: Bytes::copy_from_slice(snapshot.as_bytes()),
    });
    match client.call_ok(body).await {
        response::Body::SaveSnapshot(saved) => saved,
        other => panic!("unexpected {other:?}"),
    }
}

async fn load(client: &mut RawClient, topic: &str, key: &str, max_bytes: u32) -> pb::LoadStreamResponse {
    let body = Body::LoadStream(pb::LoadStreamRequest {
        topic: topic.into(),
        key: Bytes::copy_from_slice(key.as_bytes()),
        limit: 0,
        max_bytes,
    });
    match client.call_ok(body).await {
        response::Body::LoadStream(loaded) => loaded,
        other => panic!("unexpected {other:?}"),
    }
}

fn offsets(loaded: &pb::LoadStreamResponse) -> Vec<i64> {
    loaded.records.iter().map(|record| record.offset).collect()
}

#[tokio::test]
async fn bad_saves_and_loads_are_answered_in_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |config| config.limits.topic_name_bytes_max = 20).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    produce(
        &mut client,
        "t",
        batch("a", &[(Some("a0"), vec![]), (Some("a1"), vec![])]),
    )
    .await;

    let refused = |saved: pb::SaveSnapshotResponse, code: ErrorCode, what: &str| {
        assert_eq!(saved.error, code as i32, "{what}: {saved:?}");
        assert!(!saved.message.is_empty(), "{what}: says why");
        assert_eq!(saved.offset, -1, "{what}");
    };
    refused(
        save(&mut client, "t", "a", 2, "s").await,
        ErrorCode::InvalidRequest,
        "past the end",
    );
    refused(
        save(&mut client, "t", "a", -1, "s").await,
        ErrorCode::InvalidRequest,
        "negative",
    );
    refused(
        save(&mut client, "t", "b", 0, "s").await,
        ErrorCode::InvalidRequest,
        "no stream",
    );
    refused(
        save(&mut client, "t", "", 0, "s").await,
        ErrorCode::InvalidRequest,
        "empty key",
    );
    refused(
        save(&mut client, "nope", "a", 0, "s").await,
        ErrorCode::UnknownTopicOrPartition,
        "unknown topic",
    );
    // "long-topic-name" (15 bytes) fits the 20-byte bound; with ".snapshots" it does not.
    client.create_topic("long-topic-name", 1).await;
    produce(
        &mut client,
        "long-topic-name",
        batch("a", &[(Some("a0"), vec![])]),
    )
    .await;
    let saved = save(&mut client, "long-topic-name", "a", 0, "s").await;
    assert!(saved.message.contains("limits.topic_name_bytes_max"), "{saved:?}");
    refused(saved, ErrorCode::InvalidTopic, "companion name too long");

    let loaded = {
        let body = Body::LoadStream(pb::LoadStreamRequest {
            topic: "nope".into(),
            key: Bytes::from_static(b"a"),
            limit: 0,
            max_bytes: 0,
        });
        match client.call_ok(body).await {
            response::Body::LoadStream(loaded) => loaded,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        loaded.error,
        ErrorCode::UnknownTopicOrPartition as i32,
        "{loaded:?}"
    );
    // No companion topic yet, and nothing was created by the refused saves.
    let loaded = load(&mut client, "t", "a", 0).await;
    assert_eq!(loaded.error, 0, "{loaded:?}");
    assert!(loaded.snapshot.is_none());
    assert_eq!(offsets(&loaded), [0, 1]);
    assert!(loaded.end_of_stream);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_snapshot_is_one_keyed_record_with_its_offset_header_and_counts_against_the_byte_bound() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |_| {}).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    let value = "v".repeat(1_000);
    let events: Vec<Spec<'_>> = (0..6).map(|_| (Some(value.as_str()), vec![])).collect();
    produce(&mut client, "t", batch("a", &events)).await;

    let saved = save(&mut client, "t", "a", 1, &"s".repeat(2_000)).await;
    assert_eq!(saved.error, 0, "{saved:?}");
    assert_eq!(
        (saved.snapshot_topic.as_str(), saved.partition, saved.offset),
        ("t.snapshots", 0, 0)
    );
    // As stored: the stream key, the snapshot as the value, the offset header.
    let body = Body::ReadStream(pb::ReadStreamRequest {
        topic: "t.snapshots".into(),
        key: Bytes::from_static(b"a"),
        from_offset: 0,
        direction: pb::ReadDirection::Forward as i32,
        limit: 0,
        max_bytes: 0,
        max_wait_ms: 0,
    });
    let stored = match client.call_ok(body).await {
        response::Body::ReadStream(read) => read,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(stored.records.len(), 1, "{stored:?}");
    let record = &stored.records[0];
    assert_eq!(record.value.as_deref(), Some("s".repeat(2_000).as_bytes()));
    let headers: Vec<(&str, &[u8])> = record
        .headers
        .iter()
        .map(|header| (header.key.as_str(), header.value.as_deref().unwrap_or_default()))
        .collect();
    assert_eq!(headers.len(), 2, "{headers:?}");
    assert_eq!(headers[0], ("tidelog-snapshot-offset", &b"1"[..]));
    // The stream topic's id, so a topic created again under the name never gets these.
    assert_eq!(headers[1].0, "tidelog-snapshot-topic-id");
    assert!(uuid::Uuid::parse_str(std::str::from_utf8(headers[1].1).unwrap()).is_ok());

    // The whole stream after the snapshot fits the default bound.
    let loaded = load(&mut client, "t", "a", 0).await;
    let snapshot = loaded.snapshot.as_ref().expect("a snapshot");
    assert_eq!(snapshot.at_offset, 1);
    assert_eq!(snapshot.snapshot.len(), 2_000);
    assert_eq!(snapshot.timestamp, record.timestamp);
    assert_eq!(offsets(&loaded), [2, 3, 4, 5]);
    assert!(loaded.end_of_stream);
    // 4 000 bytes: the 2 000-byte snapshot leaves room for two 1 000-byte records at most.
    let loaded = load(&mut client, "t", "a", 4_000).await;
    assert!(loaded.snapshot.is_some());
    assert!(
        !loaded.records.is_empty() && loaded.records.len() <= 2,
        "the snapshot counts against the bound: {:?}",
        offsets(&loaded)
    );
    assert!(!loaded.end_of_stream);
    assert_eq!(loaded.next_offset, loaded.records.last().unwrap().offset + 1);
    // A bound the snapshot alone fills still brings one record, so a load always moves on.
    let loaded = load(&mut client, "t", "a", 100).await;
    assert_eq!(offsets(&loaded), [2]);
    assert_eq!(loaded.next_offset, 3);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_latest_companion_record_that_is_no_snapshot_loads_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |_| {}).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    produce(
        &mut client,
        "t",
        batch("a", &[(Some("a0"), vec![]), (Some("a1"), vec![])]),
    )
    .await;
    let saved = save(&mut client, "t", "a", 0, "state").await;
    assert_eq!(saved.error, 0, "{saved:?}");
    assert_eq!(
        load(&mut client, "t", "a", 0).await.snapshot.map(|s| s.at_offset),
        Some(0)
    );

    for (what, record) in [
        ("a record without the header", batch("a", &[(Some("x"), vec![])])),
        (
            "an unparsable header",
            batch("a", &[(Some("x"), vec![("tidelog-snapshot-offset", "zero")])]),
        ),
        // A tombstone: the way a Kafka client deletes a key of a compacted topic.
        (
            "a tombstone",
            batch("a", &[(None, vec![("tidelog-snapshot-offset", "0")])]),
        ),
    ] {
        produce(&mut client, "t.snapshots", record).await;
        let loaded = load(&mut client, "t", "a", 0).await;
        assert_eq!(loaded.error, 0, "{what}: {loaded:?}");
        assert!(loaded.snapshot.is_none(), "{what}: {loaded:?}");
        assert_eq!(offsets(&loaded), [0, 1], "{what}: the whole stream");
    }
    // A real snapshot again is found again.
    save(&mut client, "t", "a", 1, "state@1").await;
    let loaded = load(&mut client, "t", "a", 0).await;
    assert_eq!(
        loaded.snapshot.map(|s| s.snapshot),
        Some(Bytes::from_static(b"state@1"))
    );
    assert!(loaded.records.is_empty());
    assert!(loaded.end_of_stream);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_topic_created_again_under_the_name_does_not_get_the_old_topics_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |_| {}).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    produce(
        &mut client,
        "t",
        batch("a", &[(Some("old0"), vec![]), (Some("old1"), vec![])]),
    )
    .await;
    let saved = save(&mut client, "t", "a", 1, "old state").await;
    assert_eq!(saved.error, 0, "{saved:?}");

    let deleted = client
        .call_ok(Body::DeleteTopics(pb::DeleteTopicsRequest {
            names: vec!["t".into()],
        }))
        .await;
    assert!(matches!(deleted, response::Body::DeleteTopics(_)), "{deleted:?}");
    client.create_topic("t", 1).await;
    produce(
        &mut client,
        "t",
        batch("a", &[(Some("new0"), vec![]), (Some("new1"), vec![])]),
    )
    .await;
    // The companion topic still holds the old snapshot at offset 1, which the new stream has.
    let loaded = load(&mut client, "t", "a", 0).await;
    assert_eq!(loaded.error, 0, "{loaded:?}");
    assert!(loaded.snapshot.is_none(), "an old topic's snapshot: {loaded:?}");
    assert_eq!(offsets(&loaded), [0, 1]);
    // The new topic's own snapshots load.
    save(&mut client, "t", "a", 0, "new state").await;
    let loaded = load(&mut client, "t", "a", 0).await;
    assert_eq!(
        loaded.snapshot.as_ref().map(|s| s.snapshot.clone()),
        Some(Bytes::from_static(b"new state"))
    );
    assert_eq!(offsets(&loaded), [1]);
    broker.shutdown().await.unwrap();
}

async fn marks_call(client: &mut RawClient, body: Body) {
    let answer = client.call_ok(body).await;
    let error = match &answer {
        response::Body::EraseStream(erased) => erased.error,
        response::Body::ReopenStream(reopened) => reopened.error,
        response::Body::TruncateStream(truncated) => truncated.error,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(error, 0, "{answer:?}");
}

#[tokio::test]
async fn an_erased_stream_is_refused_and_its_old_snapshot_never_loads_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), |_| {}).await;
    let mut client = RawClient::connect(&broker).await;
    client.create_topic("t", 1).await;
    produce(
        &mut client,
        "t",
        batch("a", &[(Some("a0"), vec![]), (Some("a1"), vec![])]),
    )
    .await;
    assert_eq!(
        save(&mut client, "t", "a", 1, "state with personal data")
            .await
            .error,
        0
    );

    let key = Bytes::from_static(b"a");
    marks_call(
        &mut client,
        Body::EraseStream(pb::EraseStreamRequest {
            topic: "t".into(),
            key: key.clone(),
        }),
    )
    .await;
    let loaded = load(&mut client, "t", "a", 0).await;
    assert_eq!(loaded.error, ErrorCode::StreamErased as i32, "{loaded:?}");
    assert!(
        loaded.snapshot.is_none() && loaded.records.is_empty(),
        "{loaded:?}"
    );
    let saved = save(&mut client, "t", "a", 1, "s").await;
    assert_eq!(saved.error, ErrorCode::StreamErased as i32, "{saved:?}");

    // Re-opened, with new records: the snapshot from before the erasure covers erased records,
    // so it is neither loaded nor may one be saved there.
    marks_call(
        &mut client,
        Body::ReopenStream(pb::ReopenStreamRequest {
            topic: "t".into(),
            key: key.clone(),
        }),
    )
    .await;
    produce(
        &mut client,
        "t",
        batch("a", &[(Some("a2"), vec![]), (Some("a3"), vec![])]),
    )
    .await;
    let loaded = load(&mut client, "t", "a", 0).await;
    assert_eq!(loaded.error, 0, "{loaded:?}");
    assert!(
        loaded.snapshot.is_none(),
        "the erased stream's snapshot: {loaded:?}"
    );
    assert_eq!(offsets(&loaded), [2, 3]);
    let saved = save(&mut client, "t", "a", 1, "s").await;
    assert_eq!(saved.error, ErrorCode::InvalidRequest as i32, "{saved:?}");
    assert!(saved.message.contains("erased"), "{saved:?}");
    assert_eq!(save(&mut client, "t", "a", 2, "fresh").await.error, 0);
    let loaded = load(&mut client, "t", "a", 0).await;
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.at_offset), Some(2));
    assert_eq!(offsets(&loaded), [3]);

    // A truncation keeps the stream's version: a snapshot below the truncation point still
    // loads (the state the truncated records led to), with the records from the truncation on.
    produce(
        &mut client,
        "t",
        batch("a", &[(Some("a4"), vec![]), (Some("a5"), vec![])]),
    )
    .await;
    marks_call(
        &mut client,
        Body::TruncateStream(pb::TruncateStreamRequest {
            topic: "t".into(),
            key,
            before_offset: 5,
        }),
    )
    .await;
    let loaded = load(&mut client, "t", "a", 0).await;
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.at_offset), Some(2));
    assert_eq!(offsets(&loaded), [5]);
    broker.shutdown().await.unwrap();
}
