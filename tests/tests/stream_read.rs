//! Reading event streams (issue 8 §4) against the real `tidelogd` and `tidelog` binaries:
//! `tidelog stream read` and `stream info` over many keys interleaved in one partition (forward,
//! backward, `--from`, `--limit`, after restarts, after a trim and retention moved the log
//! start), their exact
//! output formats, the long-poll read that returns when a record of its key arrives, and
//! `tidelog group wait`, woken by a commit from another process over either protocol and timing
//! out otherwise (native admin commits, a `consume --group` member's commit, Kafka commits).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tidelog_client::partitioner::partition_for_key;
use tidelog_e2e::cli::{run_cli, run_cli_with_timeout, CliOutput, StreamingCli};
use tidelog_e2e::groups::offset_commit;
use tidelog_e2e::kafka_raw::KafkaRaw;
use tidelog_e2e::wait::poll_until;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::{self, ErrorCode};

const TOPIC: &str = "accounts";
const PARTITIONS: u32 = 3;
/// Keys sharing one partition (so their records interleave), and how many records each gets.
const SHARED_KEYS: usize = 4;
const RECORDS_PER_KEY: usize = 12;
/// Bound on a CLI run or a condition the broker must reach.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// `SHARED_KEYS` keys that murmur2 sends to one partition, plus one that lives elsewhere.
fn keys() -> (Vec<String>, String, u32) {
    let candidates = (0..1_000).map(|n| format!("acct-{n}"));
    let home = partition_for_key(b"acct-0", PARTITIONS);
    let shared: Vec<String> = candidates
        .clone()
        .filter(|key| partition_for_key(key.as_bytes(), PARTITIONS) == home)
        .take(SHARED_KEYS)
        .collect();
    let elsewhere = candidates
        .into_iter()
        .find(|key| partition_for_key(key.as_bytes(), PARTITIONS) != home)
        .expect("some key lands in another partition");
    (shared, elsewhere, home)
}

/// Produces `RECORDS_PER_KEY` records per key, round-robin over the keys (so every stream is
/// interleaved with the others), through `tidelog produce --key-separator :` (the CLI routes
/// them with murmur2). Each value is `<key>/<n>`.
fn produce_interleaved(addr: SocketAddr, keys: &[String]) {
    let mut input = String::new();
    for n in 0..RECORDS_PER_KEY {
        for key in keys {
            input.push_str(&format!("{key}:{key}/{n}\n"));
        }
    }
    run_cli(
        Some(addr),
        &["produce", TOPIC, "--key-separator", ":"],
        input.as_bytes(),
    )
    .assert_success();
}

/// One `stream read --print-offset` line: (partition, offset, value).
fn parse_line(line: &str) -> (u32, i64, String) {
    let mut fields = line.splitn(3, '\t');
    let mut next = || {
        fields
            .next()
            .unwrap_or_else(|| panic!("not PARTITION\\tOFFSET\\tVALUE: {line:?}"))
    };
    let partition = next()
        .parse()
        .unwrap_or_else(|_| panic!("bad partition in {line:?}"));
    let offset = next()
        .parse()
        .unwrap_or_else(|_| panic!("bad offset in {line:?}"));
    (partition, offset, next().to_owned())
}

fn stream_read(addr: SocketAddr, key: &str, extra: &[&str]) -> CliOutput {
    let mut args = vec!["stream", "read", TOPIC, key];
    args.extend_from_slice(extra);
    let output = run_cli(Some(addr), &args, b"");
    output.assert_success();
    output
}

/// `stream read --print-offset EXTRA`, parsed.
fn read_offsets(addr: SocketAddr, key: &str, extra: &[&str]) -> Vec<(u32, i64, String)> {
    let mut args = vec!["--print-offset"];
    args.extend_from_slice(extra);
    stream_read(addr, key, &args)
        .stdout_lines()
        .iter()
        .map(|line| parse_line(line))
        .collect()
}

fn stream_info(addr: SocketAddr, key: &str) -> String {
    let output = run_cli(Some(addr), &["stream", "info", TOPIC, key], b"");
    output.assert_success();
    let lines = output.stdout_lines();
    assert_eq!(lines.len(), 1, "stream info prints one line:\n{output}");
    lines[0].to_owned()
}

/// Every record of the partition as `consume` sees it: offset -> (key, value).
fn partition_records(addr: SocketAddr, partition: u32) -> BTreeMap<i64, (String, String)> {
    let output = run_cli(
        Some(addr),
        &[
            "consume",
            TOPIC,
            "--partition",
            &partition.to_string(),
            "--from-beginning",
            "--print-key",
            "--print-offset",
            "--timeout-ms",
            "1500",
        ],
        b"",
    );
    output.assert_success();
    output
        .stdout_lines()
        .iter()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(4, '\t').collect();
            assert_eq!(fields.len(), 4, "consume line {line:?}");
            let offset = fields[1].parse().expect("an offset");
            (offset, (fields[2].to_owned(), fields[3].to_owned()))
        })
        .collect()
}

/// Checks a whole forward read of `key` against the partition's contents: exactly the key's
/// records, in offset order, from `start` on.
fn assert_stream_is(
    read: &[(u32, i64, String)],
    all: &BTreeMap<i64, (String, String)>,
    key: &str,
    partition: u32,
    start: i64,
) {
    let expected: Vec<(u32, i64, String)> = all
        .range(start..)
        .filter(|(_, (k, _))| k == key)
        .map(|(offset, (_, value))| (partition, *offset, value.clone()))
        .collect();
    assert!(!expected.is_empty(), "{key} has records from {start}");
    assert_eq!(read, expected, "stream read {key} from {start}");
}

#[test]
fn stream_read_and_info_serve_one_key_of_an_interleaved_partition() {
    let dir = TestDir::new("stream-read-interleaved");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic(TOPIC, PARTITIONS, None);
    let (shared, elsewhere, home) = keys();
    let mut all_keys = shared.clone();
    all_keys.push(elsewhere.clone());
    produce_interleaved(broker.addr(), &all_keys);
    let all = partition_records(broker.addr(), home);
    assert_eq!(
        all.len(),
        SHARED_KEYS * RECORDS_PER_KEY,
        "the shared partition's records"
    );

    let key = shared[1].as_str();
    let offsets: Vec<i64> = all
        .iter()
        .filter(|(_, (k, _))| k == key)
        .map(|(offset, _)| *offset)
        .collect();
    assert_eq!(offsets.len(), RECORDS_PER_KEY);
    let check = |addr: SocketAddr, when: &str| {
        // Forward, whole: the key's records and nothing else, in order.
        let forward = read_offsets(addr, key, &[]);
        assert_stream_is(&forward, &all, key, home, 0);
        // Without --print-offset: the values alone, as `consume` prints them.
        let plain = stream_read(addr, key, &[]);
        let values: Vec<String> = (0..RECORDS_PER_KEY).map(|n| format!("{key}/{n}")).collect();
        assert_eq!(plain.stdout_lines(), values, "{when}: plain stream read");
        // Backward: the exact reverse.
        let mut backward = read_offsets(addr, key, &["--backward"]);
        backward.reverse();
        assert_eq!(backward, forward, "{when}: backward is the reverse of forward");
        // --from (inclusive) and --limit.
        let from = offsets[4].to_string();
        assert_stream_is(
            &read_offsets(addr, key, &["--from", &from]),
            &all,
            key,
            home,
            offsets[4],
        );
        let between = (offsets[4] - 1).to_string();
        assert_eq!(
            read_offsets(addr, key, &["--from", &between, "--limit", "3"]),
            forward[4..7].to_vec(),
            "{when}: --from between records starts at the next one of the key"
        );
        assert_eq!(
            read_offsets(addr, key, &["--limit", "2"]),
            forward[..2].to_vec(),
            "{when}: --limit"
        );
        let mut down: Vec<_> = forward[3..=6].to_vec();
        down.reverse();
        let from_down = offsets[6].to_string();
        assert_eq!(
            read_offsets(addr, key, &["--backward", "--from", &from_down, "--limit", "4"]),
            down,
            "{when}: --backward --from --limit"
        );
        // Info: one line, exactly the contract's key=value pairs.
        assert_eq!(
            stream_info(addr, key),
            format!(
                "partition={home} first_offset={} last_offset={} records={RECORDS_PER_KEY}",
                offsets[0],
                offsets[RECORDS_PER_KEY - 1]
            ),
            "{when}: stream info"
        );
        // The key in another partition is found there.
        let other = read_offsets(addr, &elsewhere, &[]);
        let other_partition = partition_for_key(elsewhere.as_bytes(), PARTITIONS);
        assert_eq!(other.len(), RECORDS_PER_KEY, "{when}: {elsewhere}");
        assert!(other.iter().all(|(p, _, _)| *p == other_partition));
        // A key with no record: nothing printed, exit 0; info says -1, -1, 0.
        assert!(stream_read(addr, "no-such-key", &[]).stdout.is_empty());
        let absent = partition_for_key(b"no-such-key", PARTITIONS);
        assert_eq!(
            stream_info(addr, "no-such-key"),
            format!("partition={absent} first_offset=-1 last_offset=-1 records=0"),
            "{when}: info of an absent stream"
        );
    };
    check(broker.addr(), "before restart");

    broker.terminate_and_wait();
    broker.restart();
    check(broker.addr(), "after a clean restart");

    broker.kill9();
    broker.restart();
    check(broker.addr(), "after SIGKILL and restart");

    // An unknown topic is one error line and a failure.
    let unknown = run_cli(Some(broker.addr()), &["stream", "info", "nope", key], b"");
    unknown.assert_one_line_error();
    let unknown = run_cli(Some(broker.addr()), &["stream", "read", "nope", key], b"");
    unknown.assert_one_line_error();
}

#[test]
fn stream_read_starts_at_the_log_start_after_a_trim() {
    let dir = TestDir::new("stream-read-trim");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    client.create_topic(TOPIC, PARTITIONS, None);
    let (shared, _, home) = keys();
    produce_interleaved(addr, &shared);
    let all = partition_records(addr, home);
    let key = shared[0].as_str();
    let offsets: Vec<i64> = all
        .iter()
        .filter(|(_, (k, _))| k == key)
        .map(|(offset, _)| *offset)
        .collect();
    // Trim to just past the key's fifth record: the first four are gone.
    let before = offsets[4] - 1;
    run_cli(
        Some(addr),
        &[
            "topic",
            "trim",
            TOPIC,
            "--partition",
            &home.to_string(),
            "--before",
            &before.to_string(),
        ],
        b"",
    )
    .assert_success();
    let read = read_offsets(addr, key, &[]);
    assert_stream_is(&read, &all, key, home, before);
    assert_eq!(read.len(), RECORDS_PER_KEY - 4);
    // From an offset below the new log start, too.
    assert_eq!(read_offsets(addr, key, &["--from", "0"]), read);
    // Backward stops at the log start.
    let mut backward = read_offsets(addr, key, &["--backward"]);
    backward.reverse();
    assert_eq!(backward, read);
    assert_eq!(
        stream_info(addr, key),
        format!(
            "partition={home} first_offset={} last_offset={} records={}",
            offsets[4],
            offsets[RECORDS_PER_KEY - 1],
            RECORDS_PER_KEY - 4
        )
    );
}

#[test]
fn stream_read_starts_at_the_log_start_after_retention_deleted_segments() {
    let dir = TestDir::new("stream-read-retention");
    // Small segments and a quick maintenance timer, so retention has closed segments to delete.
    let config = dir.path().join("tidelogd.toml");
    std::fs::write(
        &config,
        "maintenance_interval_ms = 100\n[log]\nsegment_bytes = 65536\n[limits]\nbatch_bytes_max = 32768\n",
    )
    .expect("writing the broker config");
    let broker = BrokerProcess::start(&dir.data_dir(), &["--config", config.to_str().unwrap()]);
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    client.create_topic(TOPIC, 1, None);
    // About 600 KB over three interleaved keys: ten segments.
    let keys = ["alpha", "beta", "gamma"];
    let mut input = String::new();
    for n in 0..600 {
        let key = keys[n % keys.len()];
        input.push_str(&format!("{key}:{key}/{n}/{}\n", "x".repeat(1_000)));
    }
    run_cli(
        Some(addr),
        &["produce", TOPIC, "--key-separator", ":", "--batch-size", "16384"],
        input.as_bytes(),
    )
    .assert_success();
    // Retention from now on: one maintenance pass deletes every segment past it at once.
    run_cli(
        Some(addr),
        &["topic", "alter", TOPIC, "--config", "retention.bytes=200000"],
        b"",
    )
    .assert_success();
    let log_start = poll_until(CALL_TIMEOUT, "retention to delete the oldest segments", || {
        let start = client.list_offset(TOPIC, 0, -2).offset;
        (start > 0).then_some(start)
    });
    let all = partition_records(addr, 0);
    assert_eq!(
        all.keys().next(),
        Some(&log_start),
        "consume starts at the log start"
    );
    for key in keys {
        let read = read_offsets(addr, key, &[]);
        assert_stream_is(&read, &all, key, 0, log_start);
        let mut backward = read_offsets(addr, key, &["--backward"]);
        backward.reverse();
        assert_eq!(backward, read, "{key}: backward stops at the log start");
        assert_eq!(
            stream_info(addr, key),
            format!(
                "partition=0 first_offset={} last_offset={} records={}",
                read[0].1,
                read[read.len() - 1].1,
                read.len()
            )
        );
    }
}

/// Runs the client library on a runtime of its own.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn a_long_poll_stream_read_returns_when_a_record_of_its_key_arrives() {
    let dir = TestDir::new("stream-read-long-poll");
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let addr = broker.addr();
    let mut raw = RawClient::connect_or_panic(addr);
    raw.create_topic(TOPIC, PARTITIONS, None);
    let (shared, _, home) = keys();
    let (key, neighbour) = (shared[0].clone(), shared[1].clone());
    produce_interleaved(addr, &shared);
    let runtime = runtime();
    let client = runtime
        .block_on(tidelog_client::Client::connect(
            tidelog_client::ClientConfig::new([addr.to_string()]),
        ))
        .expect("connecting the client");
    // Page to the end of the stream; the page there names where to wait from.
    let end = runtime
        .block_on(client.read_stream(TOPIC, &key, tidelog_client::ReadStreamOptions::forward(0)))
        .expect("reading the stream");
    assert!(end.end_of_stream, "one page holds the whole stream: {end:?}");
    assert_eq!(end.records.len(), RECORDS_PER_KEY);
    assert_eq!(
        end.next_offset, end.high_watermark,
        "at the end, next is the high watermark"
    );
    let wait = Duration::from_secs(45);
    let started = Instant::now();
    let reading = runtime.spawn({
        let client = client.clone();
        let key = key.clone();
        async move {
            client
                .read_stream(
                    TOPIC,
                    &key,
                    tidelog_client::ReadStreamOptions::forward(end.next_offset).max_wait(wait),
                )
                .await
        }
    });
    // A record of another key in the same partition moves the high watermark but must not
    // end the wait with an empty page; then a record of the key does end it.
    run_cli(
        Some(addr),
        &["produce", TOPIC, "--key-separator", ":"],
        format!("{neighbour}:not-mine\n").as_bytes(),
    )
    .assert_success();
    run_cli(
        Some(addr),
        &["produce", TOPIC, "--key-separator", ":"],
        format!("{key}:arrived\n").as_bytes(),
    )
    .assert_success();
    let page = runtime
        .block_on(async { tokio::time::timeout(CALL_TIMEOUT, reading).await })
        .expect("the long poll answers")
        .expect("the read task")
        .expect("the read");
    let elapsed = started.elapsed();
    let values: Vec<&[u8]> = page
        .records
        .iter()
        .filter_map(|r| r.value().map(|v| &v[..]))
        .collect();
    assert_eq!(
        values,
        vec![&b"arrived"[..]],
        "the page holds the new record of the key: {page:?}"
    );
    assert_eq!(page.partition.get(), home);
    assert!(
        elapsed < wait,
        "the read returned when the record arrived ({elapsed:?}), not at the end of its wait"
    );
    // A long poll with nothing arriving answers an empty page at the end of its wait.
    let quiet = Duration::from_millis(300);
    let started = Instant::now();
    let empty = runtime
        .block_on(client.read_stream(
            TOPIC,
            &key,
            tidelog_client::ReadStreamOptions::forward(page.next_offset).max_wait(quiet),
        ))
        .expect("the quiet read");
    assert!(empty.records.is_empty() && empty.end_of_stream, "{empty:?}");
    assert!(
        started.elapsed() >= quiet,
        "it waited its max_wait: {:?}",
        started.elapsed()
    );
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_owned())
}

/// An admin commit (no member, generation -1) over the Kafka protocol, as a Kafka tool or a
/// simple consumer commits.
fn kafka_commit(conn: &mut KafkaRaw, group: &str, partition: i32, offset: i64) {
    let mut request = OffsetCommitRequest::default();
    request.group_id = GroupId(text(group));
    request.generation_id_or_member_epoch = -1;
    request.member_id = text("");
    let mut topic = OffsetCommitRequestTopic::default();
    topic.name = TopicName(text(TOPIC));
    let mut committed = OffsetCommitRequestPartition::default();
    committed.partition_index = partition;
    committed.committed_offset = offset;
    committed.committed_metadata = Some(text(""));
    topic.partitions = vec![committed];
    request.topics = vec![topic];
    let response = conn.call(&request, 8);
    assert_eq!(response.topics[0].partitions[0].error_code, 0, "the Kafka commit");
}

/// Starts `tidelog group wait GROUP TOPIC PARTITION OFFSET --timeout-ms MS` in the background.
fn spawn_wait(addr: SocketAddr, group: &str, partition: u32, offset: i64, timeout_ms: u64) -> StreamingCli {
    StreamingCli::spawn(
        addr,
        &[
            "group",
            "wait",
            group,
            TOPIC,
            &partition.to_string(),
            &offset.to_string(),
            "--timeout-ms",
            &timeout_ms.to_string(),
        ],
    )
}

#[test]
fn group_wait_is_woken_by_commits_from_either_protocol_and_times_out_otherwise() {
    let dir = TestDir::new("stream-read-group-wait");
    let broker = BrokerProcess::start_with_kafka(&dir.data_dir(), &[]);
    let addr = broker.addr();
    let mut raw = RawClient::connect_or_panic(addr);
    raw.create_topic(TOPIC, PARTITIONS, None);
    let long_ms = 50_000;

    // Native commit from this process, the waiter being another (the CLI). A commit below the
    // offset does not end the wait; one at it does, well before the timeout.
    let waiter = spawn_wait(addr, "read-model", 1, 10, long_ms);
    let started = Instant::now();
    assert_eq!(
        offset_commit(&mut raw, "read-model", "", -1, TOPIC, &[(1, 4)]),
        vec![ErrorCode::None]
    );
    assert_eq!(
        offset_commit(&mut raw, "read-model", "", -1, TOPIC, &[(1, 10)]),
        vec![ErrorCode::None]
    );
    let (status, stderr) = waiter.wait(CALL_TIMEOUT);
    assert!(
        status.success(),
        "group wait should exit 0 once committed: {status} {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(long_ms),
        "woken by the commit"
    );

    // Kafka-protocol commit (generation -1, as Kafka admin tools commit).
    let waiter = spawn_wait(addr, "kafka-model", 2, 7, long_ms);
    let started = Instant::now();
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    kafka_commit(&mut kafka, "kafka-model", 2, 8);
    let (status, stderr) = waiter.wait(CALL_TIMEOUT);
    assert!(
        status.success(),
        "group wait after a Kafka commit: {status} {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(long_ms),
        "woken by the Kafka commit"
    );

    // A real group member in another process: `tidelog consume --group` commits what it
    // printed when it exits.
    let lines: String = (0..6).map(|n| format!("event-{n}\n")).collect();
    run_cli(
        Some(addr),
        &["produce", TOPIC, "--partition", "0"],
        lines.as_bytes(),
    )
    .assert_success();
    let waiter = spawn_wait(addr, "projection", 0, 6, long_ms);
    let started = Instant::now();
    let consumed = run_cli(
        Some(addr),
        &[
            "consume",
            TOPIC,
            "--group",
            "projection",
            "--from-beginning",
            "--max-messages",
            "6",
        ],
        b"",
    );
    consumed.assert_success();
    assert_eq!(consumed.stdout_lines().len(), 6, "{consumed}");
    let (status, stderr) = waiter.wait(CALL_TIMEOUT);
    assert!(
        status.success(),
        "group wait after a group consumer's commit: {status} {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(long_ms),
        "woken by the member's commit"
    );

    // Already committed past: answered at once.
    let output = run_cli(Some(addr), &["group", "wait", "read-model", TOPIC, "1", "3"], b"");
    output.assert_success();
    assert!(output.stdout.is_empty() && output.stderr.is_empty(), "{output}");

    // Nothing committed far enough: exit 4 after the timeout, with one line saying so.
    let started = Instant::now();
    let output = run_cli_with_timeout(
        Some(addr),
        &[
            "group",
            "wait",
            "read-model",
            TOPIC,
            "1",
            "11",
            "--timeout-ms",
            "400",
        ],
        b"",
        CALL_TIMEOUT,
    );
    let line = output.assert_one_line_error();
    assert_eq!(output.status.code(), Some(4), "{output}");
    assert_eq!(
        line,
        "timeout: group read-model committed 10 on accounts/1 after 400 ms, waited for 11"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    // A group that never committed says so.
    let output = run_cli(
        Some(addr),
        &["group", "wait", "nobody", TOPIC, "0", "1", "--timeout-ms", "100"],
        b"",
    );
    assert_eq!(output.status.code(), Some(4), "{output}");
    assert!(
        output.assert_one_line_error().contains("committed nothing"),
        "{output}"
    );
    // An unknown partition is an error, not a wait.
    let output = run_cli(Some(addr), &["group", "wait", "g", TOPIC, "9", "1"], b"");
    assert_eq!(output.status.code(), Some(1), "{output}");
    output.assert_one_line_error();

    // The native API directly: the answer carries the committed offset and whether it was
    // reached.
    let response = raw
        .call(pb::request::Body::WaitGroupOffset(pb::WaitGroupOffsetRequest {
            group_id: "read-model".into(),
            topic: TOPIC.into(),
            partition: 1,
            offset: 12,
            timeout_ms: 50,
        }))
        .expect("WaitGroupOffset");
    let Some(pb::response::Body::WaitGroupOffset(answer)) = response.body else {
        panic!("unexpected answer {response:?}");
    };
    assert_eq!(
        (answer.error(), answer.committed, answer.reached),
        (ErrorCode::None, 10, false)
    );
}
