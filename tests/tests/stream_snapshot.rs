//! Snapshots of event-sourced aggregates (issue 9 §2) against the real `tidelogd` and `tidelog`
//! binaries: a snapshot saved at offset N loads with exactly the stream's records after N
//! (across page boundaries, through `Client::load_stream` and `EventStore::load`), a newer one
//! replaces it, one past the stream's end is refused on save and ignored on load, the companion
//! topic `<topic>.snapshots` is compacted, has the stream topic's partition count and is created
//! once under concurrent first saves, everything survives a restart, and the CLI's
//! `stream snapshot` and `stream read --with-snapshot` print exactly their contract.

use std::time::Duration;

use bytes::Bytes;
use tidelog_client::event_store::{EventData, EventStore, Expected, StreamId, StreamRecord};
use tidelog_client::partitioner::partition_for_key;
use tidelog_client::{Client, ClientConfig, Error, ErrorCode, NewTopic};
use tidelog_e2e::cli::run_cli;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::batch::{NewRecord, RecordBatchBuilder, RecordHeader};
use tidelog_proto::pb;

const TOPIC: &str = "orders";
const SNAPSHOTS: &str = "orders.snapshots";
const PARTITIONS: u32 = 3;
/// A small page, so a load crosses page boundaries with a few hundred records.
const PAGE_RECORDS: usize = 50;
/// Events of the stream under test (several pages), appended in batches of `APPEND_BATCH`.
const EVENTS: usize = 180;
const APPEND_BATCH: usize = 12;
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

/// A broker whose stream pages hold `PAGE_RECORDS` records.
fn start(test_name: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let config = dir.path().join("tidelogd.toml");
    std::fs::write(
        &config,
        format!("[limits]\nstream_read_records_max = {PAGE_RECORDS}\n"),
    )
    .expect("writes the config");
    let broker = BrokerProcess::start(
        &dir.data_dir(),
        &["--config", config.to_str().expect("utf-8 path")],
    );
    (dir, broker)
}

async fn connect(broker: &BrokerProcess) -> Client {
    within(
        "connect",
        Client::connect(ClientConfig::new([broker.addr().to_string()])),
    )
    .await
    .expect("connects")
}

/// Appends `count` events `<key>/<n>` (n from `first`) to the stream, in batches, and returns
/// their offsets.
async fn append_events(client: &Client, key: &str, first: usize, count: usize) -> Vec<i64> {
    let mut offsets = Vec::with_capacity(count);
    let numbers: Vec<usize> = (first..first + count).collect();
    for chunk in numbers.chunks(APPEND_BATCH) {
        let events = chunk
            .iter()
            .map(|n| EventData::new(format!("{key}/{n}")))
            .collect();
        let appended = within(
            "append",
            client.append_stream(
                TOPIC,
                Bytes::copy_from_slice(key.as_bytes()),
                Expected::Any,
                events,
            ),
        )
        .await
        .expect("appends");
        offsets.extend(appended.offsets);
    }
    offsets
}

fn offsets_of(records: &[StreamRecord]) -> Vec<i64> {
    records.iter().map(|record| record.offset().get()).collect()
}

fn values_of(records: &[StreamRecord]) -> Vec<String> {
    records
        .iter()
        .map(|record| String::from_utf8_lossy(record.value().expect("a value")).into_owned())
        .collect()
}

fn refused_as_invalid(result: tidelog_client::Result<tidelog_client::SavedSnapshot>, what: &str) {
    match result {
        Err(Error::Broker {
            code: ErrorCode::InvalidRequest,
            message,
        }) => assert!(!message.is_empty(), "{what}: the refusal says why"),
        other => panic!("{what}: expected INVALID_REQUEST, got {other:?}"),
    }
}

/// The companion topic's metadata, over the native protocol.
fn companion_metadata(broker: &BrokerProcess) -> pb::TopicMetadata {
    let mut raw = RawClient::connect_or_panic(broker.addr());
    let mut response = raw.metadata(&[SNAPSHOTS]);
    assert_eq!(response.topics.len(), 1, "{response:?}");
    let topic = response.topics.remove(0);
    assert_eq!(topic.error, pb::ErrorCode::None as i32, "{topic:?}");
    topic
}

/// Checks the whole load of `key` (snapshot, events after it, version) against what was
/// appended.
async fn assert_loads(store: &EventStore, key: &str, snapshot: Option<(i64, &str)>, offsets: &[i64]) {
    let stream = StreamId::new(TOPIC, key.to_owned());
    let loaded = within("load", store.load(&stream)).await.expect("loads");
    let after = match snapshot {
        Some((at, bytes)) => {
            let got = loaded.snapshot.as_ref().expect("a snapshot");
            assert_eq!(got.at_offset, at, "the snapshot's offset");
            assert_eq!(&got.bytes[..], bytes.as_bytes(), "the snapshot's bytes");
            assert!(got.timestamp > 0, "the snapshot has its save time");
            offsets
                .iter()
                .position(|offset| *offset == at)
                .expect("at an event's offset")
                + 1
        }
        None => {
            assert!(loaded.snapshot.is_none(), "no snapshot: {:?}", loaded.snapshot);
            0
        }
    };
    assert_eq!(
        offsets_of(&loaded.events),
        offsets[after..],
        "exactly the events after the snapshot"
    );
    let expected_values: Vec<String> = (after..offsets.len()).map(|n| format!("{key}/{n}")).collect();
    assert_eq!(values_of(&loaded.events), expected_values);
    assert_eq!(
        loaded.version,
        *offsets.last().expect("events"),
        "the stream's version"
    );
}

#[test]
fn a_load_returns_the_latest_snapshot_and_exactly_the_records_after_it_across_pages_and_restarts() {
    let (_dir, mut broker) = start("stream-snapshot-load");
    runtime().block_on(async {
        let client = connect(&broker).await;
        within(
            "create",
            client.admin().create_topic(NewTopic::new(TOPIC, PARTITIONS)),
        )
        .await
        .expect("creates the topic");
        // Two streams of one partition, interleaved, so the stream's offsets have gaps.
        let other = (0..1_000)
            .map(|n| format!("order-{n}"))
            .find(|key| {
                key != "order-7"
                    && partition_for_key(key.as_bytes(), PARTITIONS)
                        == partition_for_key(b"order-7", PARTITIONS)
            })
            .expect("a key sharing the partition");
        let mut offsets = Vec::new();
        for round in 0..(EVENTS / 60) {
            offsets.extend(append_events(&client, "order-7", round * 60, 60).await);
            append_events(&client, &other, round * 5, 5).await;
        }
        assert_eq!(offsets.len(), EVENTS);
        let store = EventStore::new(client.clone());

        // No snapshot yet: the first page from the stream's start, then the rest by pages.
        let page = within("load_stream", client.load_stream(TOPIC, "order-7"))
            .await
            .expect("loads");
        assert!(page.snapshot.is_none());
        assert_eq!(offsets_of(&page.records), offsets[..PAGE_RECORDS]);
        assert!(!page.end_of_stream, "more pages follow");
        assert_eq!(page.next_offset, offsets[PAGE_RECORDS - 1] + 1);
        assert_eq!(page.partition.get(), partition_for_key(b"order-7", PARTITIONS));
        assert_loads(&store, "order-7", None, &offsets).await;

        // A snapshot at the 30th event: the events after it, over several pages.
        let stream = StreamId::new(TOPIC, "order-7");
        let saved = within("save", store.save_snapshot(&stream, offsets[29], "state@29"))
            .await
            .expect("saves");
        assert_eq!(saved.snapshot_topic, SNAPSHOTS);
        assert_eq!(saved.partition.get(), partition_for_key(b"order-7", PARTITIONS));
        let page = within("load_stream", client.load_stream(TOPIC, "order-7"))
            .await
            .expect("loads");
        assert_eq!(page.snapshot.as_ref().map(|s| s.at_offset), Some(offsets[29]));
        assert_eq!(offsets_of(&page.records), offsets[30..30 + PAGE_RECORDS]);
        assert_loads(&store, "order-7", Some((offsets[29], "state@29")), &offsets).await;

        // A newer snapshot replaces it; the rest fits one page.
        within("save", store.save_snapshot(&stream, offsets[159], "state@159"))
            .await
            .expect("saves");
        let page = within("load_stream", client.load_stream(TOPIC, "order-7"))
            .await
            .expect("loads");
        assert_eq!(offsets_of(&page.records), offsets[160..]);
        assert!(page.end_of_stream, "one page holds the rest");
        assert_loads(&store, "order-7", Some((offsets[159], "state@159")), &offsets).await;

        // A snapshot at the stream's last event: nothing follows, and the version is its offset.
        let last = *offsets.last().expect("events");
        within("save", store.save_snapshot(&stream, last, "state@last"))
            .await
            .expect("saves");
        let loaded = within("load", store.load(&stream)).await.expect("loads");
        assert!(loaded.events.is_empty());
        assert_eq!(loaded.version, last);

        // Past the stream's end, on an empty stream, below 0, on an unknown topic: refused.
        refused_as_invalid(
            client.save_snapshot(TOPIC, "order-7", last + 1, "x").await,
            "past the last event",
        );
        refused_as_invalid(
            client.save_snapshot(TOPIC, "nobody", 0, "x").await,
            "an empty stream",
        );
        refused_as_invalid(
            client.save_snapshot(TOPIC, "order-7", -1, "x").await,
            "a negative offset",
        );
        assert!(
            matches!(
                client.save_snapshot("no-such-topic", "k", 0, "x").await,
                Err(Error::UnknownTopicOrPartition { .. })
            ),
            "an unknown stream topic"
        );
        // Put back the snapshot at 159 for what follows.
        within("save", store.save_snapshot(&stream, offsets[159], "state@159"))
            .await
            .expect("saves");
    });

    // The companion topic: the stream topic's partition count, compacted.
    let metadata = companion_metadata(&broker);
    assert_eq!(metadata.partitions.len(), PARTITIONS as usize);
    let policy = metadata
        .config
        .as_ref()
        .and_then(|config| config.cleanup_policy.clone());
    assert_eq!(
        policy.as_deref(),
        Some("compact"),
        "the snapshot topic is compacted: {metadata:?}"
    );
    let described = run_cli(Some(broker.addr()), &["topic", "describe", SNAPSHOTS], b"");
    described.assert_success();
    assert!(
        described
            .stdout_lines()
            .iter()
            .any(|line| line.contains("cleanup.policy") && line.contains("compact")),
        "`tidelog topic describe` shows the policy:\n{described}"
    );

    // A restart keeps the snapshot and the events.
    broker.terminate_and_wait();
    broker.restart();
    runtime().block_on(async {
        let client = connect(&broker).await;
        let store = EventStore::new(client.clone());
        let stream = StreamId::new(TOPIC, "order-7");
        let loaded = within("load", store.load(&stream)).await.expect("loads");
        let snapshot = loaded.snapshot.expect("the snapshot survived the restart");
        assert_eq!(&snapshot.bytes[..], b"state@159");
        assert_eq!(loaded.events.len(), EVENTS - 160);
        let page = within("info", client.stream_info(TOPIC, "order-7"))
            .await
            .expect("info");
        assert_eq!(loaded.version, page.last_offset);
    });
}

#[test]
fn a_snapshot_past_the_streams_end_is_ignored_by_a_load() {
    let (_dir, broker) = start("stream-snapshot-past-end");
    let runtime = runtime();
    let (offsets, partition) = runtime.block_on(async {
        let client = connect(&broker).await;
        within(
            "create",
            client.admin().create_topic(NewTopic::new(TOPIC, PARTITIONS)),
        )
        .await
        .expect("creates the topic");
        let offsets = append_events(&client, "order-7", 0, 5).await;
        let saved = within(
            "save",
            client.save_snapshot(TOPIC, "order-7", offsets[2], "state@2"),
        )
        .await
        .expect("saves");
        (offsets, saved.partition.get())
    });
    // What a truncated or erased stream leaves: a snapshot whose offset is past the stream's
    // last record. Written straight to the companion topic, as only the broker's own check
    // stops a client from doing.
    let mut raw = RawClient::connect_or_panic(broker.addr());
    let mut builder = RecordBatchBuilder::new();
    builder.push(&NewRecord {
        timestamp: 1,
        key: Some(Bytes::from_static(b"order-7")),
        value: Some(Bytes::from_static(b"from the future")),
        headers: vec![RecordHeader {
            key: "tidelog-snapshot-offset".into(),
            value: Some(Bytes::from((offsets[4] + 1_000).to_string())),
        }],
    });
    raw.produce_ok(SNAPSHOTS, partition, builder.build().expect("one record"));
    runtime.block_on(async {
        let client = connect(&broker).await;
        let loaded = within(
            "load",
            EventStore::new(client).load(&StreamId::new(TOPIC, "order-7")),
        )
        .await
        .expect("loads");
        assert!(loaded.snapshot.is_none(), "ignored: {:?}", loaded.snapshot);
        assert_eq!(offsets_of(&loaded.events), offsets, "the whole stream instead");
        assert_eq!(loaded.version, offsets[4]);
    });
}

#[test]
fn concurrent_first_saves_all_succeed_and_create_the_companion_topic_once() {
    const SAVERS: usize = 8;
    let (_dir, broker) = start("stream-snapshot-concurrent");
    runtime().block_on(async {
        let client = connect(&broker).await;
        within(
            "create",
            client.admin().create_topic(NewTopic::new(TOPIC, PARTITIONS)),
        )
        .await
        .expect("creates the topic");
        let mut appended = Vec::new();
        for n in 0..SAVERS {
            let key = format!("order-{n}");
            appended.push((key.clone(), append_events(&client, &key, 0, 3).await));
        }
        // Each saver on its own connection, all at once.
        let mut savers = Vec::new();
        for (key, offsets) in appended.clone() {
            let addr = broker.addr().to_string();
            savers.push(tokio::spawn(async move {
                let client = Client::connect(ClientConfig::new([addr]))
                    .await
                    .expect("connects");
                client
                    .save_snapshot(TOPIC, &key, offsets[1], format!("{key}@1"))
                    .await
            }));
        }
        for saver in savers {
            let saved = within("save", saver).await.expect("the saver ran");
            assert_eq!(
                saved.expect("every first save succeeds").snapshot_topic,
                SNAPSHOTS
            );
        }
        for (key, offsets) in appended {
            let page = within("load_stream", client.load_stream(TOPIC, &key))
                .await
                .expect("loads");
            let snapshot = page.snapshot.expect("each saver's snapshot is there");
            assert_eq!(
                (snapshot.at_offset, &snapshot.bytes[..]),
                (offsets[1], format!("{key}@1").as_bytes())
            );
            assert_eq!(offsets_of(&page.records), offsets[2..]);
        }
    });
    assert_eq!(companion_metadata(&broker).partitions.len(), PARTITIONS as usize);
    let created = broker
        .log_text()
        .matches("snapshot topic created on first save")
        .count();
    assert_eq!(created, 1, "created once:\n{}", broker.log_text());
}

#[test]
fn the_cli_stores_a_snapshot_and_reads_it_back_before_the_records_after_it() {
    let (_dir, broker) = start("stream-snapshot-cli");
    let addr = Some(broker.addr());
    run_cli(addr, &["topic", "create", TOPIC, "--partitions", "3"], b"").assert_success();
    let lines: String = (0..8).map(|n| format!("e{n}\n")).collect();
    let appended = run_cli(addr, &["stream", "append", TOPIC, "order-7"], lines.as_bytes());
    appended.assert_success();
    let offsets: Vec<i64> = appended
        .stdout_lines()
        .iter()
        .map(|line| {
            line.split_once('\t')
                .expect("PARTITION<TAB>OFFSET")
                .1
                .parse()
                .expect("an offset")
        })
        .collect();
    let partition = partition_for_key(b"order-7", PARTITIONS);

    // Without a snapshot: says so, then the whole stream.
    let read = run_cli(
        addr,
        &["stream", "read", TOPIC, "order-7", "--with-snapshot"],
        b"",
    );
    read.assert_success();
    let mut expected = vec!["no snapshot".to_owned()];
    expected.extend((0..8).map(|n| format!("e{n}")));
    assert_eq!(read.stdout_lines(), expected, "{read}");

    // Snapshot at the 5th record: stdin is the snapshot, the exact line printed.
    let at = offsets[4].to_string();
    let saved = run_cli(
        addr,
        &["stream", "snapshot", TOPIC, "order-7", "--at", &at],
        b"total=4",
    );
    saved.assert_success();
    let line = saved.stdout_lines();
    assert_eq!(line.len(), 1, "{saved}");
    let prefix =
        format!("snapshot of {TOPIC}/order-7 at {at} stored in {SNAPSHOTS} partition {partition} offset ");
    let stored_at = line[0]
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}..., got {:?}", line[0]));
    assert!(stored_at.parse::<i64>().is_ok(), "{saved}");

    // With it: the snapshot line, then only the records after its offset.
    let read = run_cli(
        addr,
        &[
            "stream",
            "read",
            TOPIC,
            "order-7",
            "--with-snapshot",
            "--print-offset",
        ],
        b"",
    );
    read.assert_success();
    let mut expected = vec![format!("snapshot\t{at}\ttotal=4")];
    expected.extend((5..8).map(|n| format!("{partition}\t{}\te{n}", offsets[n])));
    assert_eq!(read.stdout_lines(), expected, "{read}");
    let limited = run_cli(
        addr,
        &[
            "stream",
            "read",
            TOPIC,
            "order-7",
            "--with-snapshot",
            "--limit",
            "1",
        ],
        b"",
    );
    assert_eq!(
        limited.assert_success().stdout_lines(),
        [format!("snapshot\t{at}\ttotal=4"), "e5".to_owned()]
    );

    // Past the end: one error line, non-zero exit, nothing stored.
    let past = (offsets[7] + 1).to_string();
    let refused = run_cli(
        addr,
        &["stream", "snapshot", TOPIC, "order-7", "--at", &past],
        b"x",
    );
    let error = refused.assert_one_line_error();
    assert!(error.contains("past its end"), "{refused}");
    let read = run_cli(
        addr,
        &["stream", "read", TOPIC, "order-7", "--with-snapshot"],
        b"",
    );
    assert_eq!(
        read.assert_success().stdout_lines()[0],
        format!("snapshot\t{at}\ttotal=4")
    );
}
