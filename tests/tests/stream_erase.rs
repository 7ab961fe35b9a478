//! Per-key truncation and erasure (issue 9 §3) against the real `tidelogd` and `tidelog`
//! binaries: `tidelog stream truncate|erase|reopen` and their one-line outputs, `stream read`
//! and `stream info` (its mark lines) after each, appends to an erased stream refused (exit
//! status 5 from the CLI, INVALID_RECORD with the reason over Kafka) until it is re-opened, a
//! re-opened stream starting fresh (`--expect none` holds), and all of it across a clean
//! restart and a SIGKILL. Then the purge: with a cleaner that looks often, an erased stream's
//! bytes leave every segment and index file of the data directory within a bounded wait,
//! `stream info` follows the erasure to `status=complete`, and every other record keeps its
//! offset and value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tidelog_e2e::cli::{run_cli, CliOutput};
use tidelog_e2e::kafka_raw::KafkaRaw;
use tidelog_e2e::wait::poll_until;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::batch::{NewRecord, RecordBatchBuilder};

const TOPIC: &str = "orders";
/// Exit status of `stream append` to an erased stream.
const ERASED_EXIT_CODE: i32 = 5;
const INVALID_RECORD: i16 = 87;

/// `stream append TOPIC KEY [--expect E]` of `lines`: the offsets printed.
fn append(addr: SocketAddr, key: &str, expect: &str, lines: &[&str]) -> Vec<i64> {
    let input: String = lines.iter().map(|line| format!("{line}\n")).collect();
    let output = run_cli(
        Some(addr),
        &["stream", "append", TOPIC, key, "--expect", expect],
        input.as_bytes(),
    );
    output.assert_success();
    output
        .stdout_lines()
        .iter()
        .map(|line| {
            let (partition, offset) = line.split_once('\t').unwrap_or_else(|| panic!("{line:?}"));
            assert_eq!(partition, "0", "one partition");
            offset.parse().unwrap_or_else(|_| panic!("{line:?}"))
        })
        .collect()
}

fn cli(addr: SocketAddr, args: &[&str]) -> CliOutput {
    run_cli(Some(addr), args, b"")
}

/// The one line a successful command prints.
fn one_line(addr: SocketAddr, args: &[&str]) -> String {
    let output = cli(addr, args);
    output.assert_success();
    let lines = output.stdout_lines();
    assert_eq!(lines.len(), 1, "one line:\n{output}");
    lines[0].to_owned()
}

/// `stream read --print-offset`: (offset, value) of every record.
fn read(addr: SocketAddr, key: &str) -> Vec<(i64, String)> {
    let output = cli(addr, &["stream", "read", TOPIC, key, "--print-offset"]);
    output.assert_success();
    output
        .stdout_lines()
        .iter()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(3, '\t').collect();
            assert_eq!(fields.len(), 3, "{line:?}");
            (fields[1].parse().expect("an offset"), fields[2].to_owned())
        })
        .collect()
}

fn info(addr: SocketAddr, key: &str) -> Vec<String> {
    let output = cli(addr, &["stream", "info", TOPIC, key]);
    output.assert_success();
    output
        .stdout_lines()
        .iter()
        .map(|line| line.to_string())
        .collect()
}

/// The `key=value` fields of one `stream info` line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split(' ')
        .find_map(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

fn kafka_produce(key: &str, value: &str) -> ProduceRequest {
    let mut builder = RecordBatchBuilder::new();
    builder.push(&NewRecord {
        timestamp: 0,
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        headers: Vec::new(),
    });
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(TOPIC.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(builder.build().expect("one record")))])])
}

/// Everything the marks say, as the CLI shows it, on a broker that may have restarted.
fn assert_marked(addr: SocketAddr, when: &str) {
    let o1: Vec<i64> = read(addr, "o-1").iter().map(|(offset, _)| *offset).collect();
    assert_eq!(o1, [2, 3, 6, 7, 8], "{when}: o-1 from its truncation point");
    let o1_info = info(addr, "o-1");
    assert_eq!(
        o1_info,
        [
            "partition=0 first_offset=2 last_offset=8 records=5",
            "truncated_before=2"
        ],
        "{when}"
    );
    assert_eq!(
        read(addr, "o-3")[0],
        (9, "z".to_string()),
        "{when}: other streams untouched"
    );

    let refused = cli(addr, &["stream", "read", TOPIC, "o-2"]);
    let line = refused.assert_one_line_error();
    assert!(line.contains("erased"), "{when}: {line}");
    let o2_info = info(addr, "o-2");
    assert_eq!(o2_info.len(), 2, "{when}: {o2_info:?}");
    assert_eq!(
        o2_info[0], "partition=0 first_offset=-1 last_offset=-1 records=0",
        "{when}"
    );
    let erasure = &o2_info[1];
    assert_eq!(field(erasure, "erasure"), "erased", "{when}: {erasure}");
    assert_eq!(field(erasure, "status"), "pending", "{when}: {erasure}");
    assert_eq!(field(erasure, "erase_before"), "8", "{when}: {erasure}");
    assert_eq!(field(erasure, "completed_ms"), "0", "{when}: {erasure}");
    assert_eq!(field(erasure, "records_remaining"), "2", "{when}: {erasure}");
    assert_eq!(field(erasure, "segments_remaining"), "1", "{when}: {erasure}");
    let requested: i64 = field(erasure, "requested_ms").parse().expect("ms");
    let deadline: i64 = field(erasure, "deadline_ms").parse().expect("ms");
    assert_eq!(
        deadline - requested,
        3_600_000,
        "{when}: the default erase deadline"
    );

    let input = b"late\n";
    let output = run_cli(Some(addr), &["stream", "append", TOPIC, "o-2"], input);
    let line = output.assert_one_line_error();
    assert_eq!(output.status.code(), Some(ERASED_EXIT_CODE), "{when}:\n{output}");
    assert!(line.starts_with("erased: "), "{when}: {line}");
    assert!(line.contains("\"o-2\""), "{when}: {line}");
}

#[test]
fn truncation_and_erasure_hold_for_every_reader_and_writer_across_restarts() {
    let dir = TestDir::new("stream-erase-marks");
    // No cleaner: the erasure stays pending, so its progress is exact to assert.
    let config = dir.path().join("tidelogd.toml");
    std::fs::write(&config, "[cleaner]\nthreads = 0\n").expect("config");
    let mut broker =
        BrokerProcess::start_with_kafka(&dir.data_dir(), &["--config", config.to_str().unwrap()]);
    RawClient::connect_or_panic(broker.addr()).create_topic(TOPIC, 1, None);
    let addr = broker.addr();
    assert_eq!(append(addr, "o-1", "none", &["a", "b", "c", "d"]), [0, 1, 2, 3]);
    assert_eq!(append(addr, "o-2", "none", &["x", "y"]), [4, 5]);
    assert_eq!(append(addr, "o-1", "3", &["e", "f"]), [6, 7]);

    assert_eq!(
        one_line(addr, &["stream", "truncate", TOPIC, "o-1", "--before", "2"]),
        "truncated orders/o-1 before 2"
    );
    // A truncation never moves back: a lower point leaves the one in force.
    assert_eq!(
        one_line(addr, &["stream", "truncate", TOPIC, "o-1", "--before", "1"]),
        "truncated orders/o-1 before 2"
    );
    assert_eq!(
        one_line(addr, &["stream", "erase", TOPIC, "o-2"]),
        "erased orders/o-2 before 8"
    );
    assert_eq!(
        one_line(addr, &["stream", "erase", TOPIC, "o-2"]),
        "erased orders/o-2 before 8",
        "erasing again changes nothing"
    );
    // The truncated stream keeps its version: the next writer expects 7.
    assert_eq!(append(addr, "o-1", "7", &["g"]), [8]);
    assert_eq!(append(addr, "o-3", "none", &["z"]), [9]);
    assert_marked(addr, "before any restart");

    // Over Kafka the erased stream's records are refused as invalid records, with the reason.
    let mut kafka = KafkaRaw::connect(broker.kafka_addr());
    let refused = kafka.call(&kafka_produce("o-2", "kafka"), 9);
    let answer = &refused.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, INVALID_RECORD, "{answer:?}");
    let message = answer.error_message.as_deref().unwrap_or_default();
    assert!(message.contains("erased"), "{message}");
    let accepted = kafka.call(&kafka_produce("o-3", "kafka"), 9);
    let answer = &accepted.responses[0].partition_responses[0];
    assert_eq!((answer.error_code, answer.base_offset), (0, 10), "{answer:?}");
    drop(kafka);

    broker.terminate_and_wait();
    broker.restart();
    assert_marked(broker.addr(), "after a clean restart");
    broker.kill9();
    broker.restart();
    let addr = broker.addr();
    assert_marked(addr, "after a SIGKILL");

    // Re-opened: appends are in again, the stream starts fresh after its erasure point.
    assert_eq!(
        one_line(addr, &["stream", "reopen", TOPIC, "o-2"]),
        "reopened orders/o-2 from 8"
    );
    assert_eq!(read(addr, "o-2"), Vec::<(i64, String)>::new());
    assert_eq!(append(addr, "o-2", "none", &["fresh"]), [11]);
    assert_eq!(read(addr, "o-2"), [(11, "fresh".to_string())]);
    let o2_info = info(addr, "o-2");
    assert_eq!(o2_info[0], "partition=0 first_offset=11 last_offset=11 records=1");
    assert_eq!(field(&o2_info[1], "erasure"), "reopened");
    // A truncation of the re-opened stream needs an offset; one below zero is refused.
    let output = cli(addr, &["stream", "truncate", TOPIC, "o-2", "--before", "-1"]);
    output.assert_one_line_error();
    broker.kill9();
    broker.restart();
    assert_eq!(read(broker.addr(), "o-2"), [(11, "fresh".to_string())]);
}

/// Every file under `dir`, recursively (bounded by the directory tree, which the test keeps
/// small).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// The files under `dir` holding `needle` anywhere in their bytes.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| {
            std::fs::read(path)
                .map(|bytes| bytes.windows(needle.len()).any(|window| window == needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Bound on the erasure's completion: the test's `erase_deadline_ms` and then some.
const PURGE_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn an_erased_streams_bytes_leave_every_segment_file_and_other_records_keep_their_offsets() {
    let dir = TestDir::new("stream-erase-purge");
    let config = dir.path().join("tidelogd.toml");
    std::fs::write(
        &config,
        "[cleaner]\nbackoff_ms = 100\nerase_deadline_ms = 60000\n",
    )
    .expect("config");
    let broker = BrokerProcess::start(&dir.data_dir(), &["--config", config.to_str().unwrap()]);
    RawClient::connect_or_panic(broker.addr()).create_topic(TOPIC, 1, None);
    let addr = broker.addr();
    // The erased stream's values are unique in the data directory; the others are kept.
    let secret = "gdpr-secret-5d1c";
    for round in 0..5 {
        append(addr, "erase-me", "any", &[&format!("{secret}-{round}")]);
        append(
            addr,
            "keep",
            "any",
            &[&format!("kept-{round}"), &format!("kept-{round}b")],
        );
    }
    let kept = read(addr, "keep");
    assert_eq!(kept.len(), 10);
    assert!(
        !files_holding(&dir.data_dir(), secret.as_bytes()).is_empty(),
        "written to disk"
    );

    assert_eq!(
        one_line(addr, &["stream", "erase", TOPIC, "erase-me"]),
        "erased orders/erase-me before 15"
    );
    let erasure = poll_until(PURGE_TIMEOUT, "the erasure to complete", || {
        let lines = info(addr, "erase-me");
        let erasure = lines.get(1)?.clone();
        (field(&erasure, "status") == "complete").then_some(erasure)
    });
    assert_eq!(field(&erasure, "erasure"), "erased", "{erasure}");
    assert_eq!(field(&erasure, "records_remaining"), "0", "{erasure}");
    assert_eq!(field(&erasure, "segments_remaining"), "0", "{erasure}");
    let completed: i64 = field(&erasure, "completed_ms").parse().expect("ms");
    let deadline: i64 = field(&erasure, "deadline_ms").parse().expect("ms");
    assert!(completed > 0 && completed <= deadline, "{erasure}");

    // Gone from every segment, index and cleaner file: only the marks file names the key.
    let holding = poll_until(PURGE_TIMEOUT, "the replaced segment files to go", || {
        let holding = files_holding(&dir.data_dir(), secret.as_bytes());
        holding.is_empty().then_some(holding)
    });
    assert!(holding.is_empty());
    let naming_the_key: Vec<PathBuf> = files_holding(&dir.data_dir(), b"erase-me")
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|name| name != "stream-marks"))
        .collect();
    assert!(
        naming_the_key.is_empty(),
        "files still naming the erased key: {naming_the_key:?}"
    );

    // Every other record keeps its offset and value, for stream reads and plain consumers.
    assert_eq!(read(addr, "keep"), kept);
    let consumed = run_cli(
        Some(addr),
        &[
            "consume",
            TOPIC,
            "--from-beginning",
            "--print-offset",
            "--timeout-ms",
            "1500",
        ],
        b"",
    );
    consumed.assert_success();
    assert!(!consumed.stdout.contains(secret), "{consumed}");
    let offsets: Vec<i64> = consumed
        .stdout_lines()
        .iter()
        .map(|line| {
            line.split('\t')
                .nth(1)
                .expect("an offset")
                .parse()
                .expect("a number")
        })
        .collect();
    let kept_offsets: Vec<i64> = kept.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(
        offsets, kept_offsets,
        "a consumer sees exactly the other records, at their offsets"
    );
    // Still erased: appends are refused until a re-open.
    let output = run_cli(Some(addr), &["stream", "append", TOPIC, "erase-me"], b"again\n");
    assert_eq!(output.status.code(), Some(ERASED_EXIT_CODE), "{output}");
}
