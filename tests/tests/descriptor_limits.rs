//! File descriptors are a managed resource, on the real `tidelogd` under a real
//! `prlimit --nofile`: the soft limit is raised to the hard one at start, a topic whose
//! partitions cannot fit the descriptor budget is refused with a clear error while the existing
//! topics keep serving, and a partition with more closed segments than the file cache holds
//! reads every record from offset 0 (descriptors reopened on demand), also after a restart.

use std::path::{Path, PathBuf};

use tidelog_e2e::records::{assert_dense, batch_of, read_partition};
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::ErrorCode;

const SEGMENT_BYTES: u64 = 64 << 10;
/// The descriptor limit of the small broker, soft and hard.
const SMALL_LIMIT: u64 = 256;
/// Open files the small broker's cache may hold besides the active data files.
const CACHE_FILES: usize = 8;

/// A config for a broker that lives in a few hundred descriptors: few connections, a small
/// reserve and a small file cache, and small segments.
fn small_broker_config(dir: &TestDir) -> PathBuf {
    let path = dir.path().join("tidelogd.toml");
    let text = format!(
        "[log]\nsegment_bytes = {SEGMENT_BYTES}\n\n[limits]\nbatch_bytes_max = {}\nconnections_max = 16\n\
         descriptors_reserved = 64\nopen_segment_files_min = {CACHE_FILES}\nopen_segment_files_max = {CACHE_FILES}\n",
        SEGMENT_BYTES / 2
    );
    std::fs::write(&path, text).expect("writing the broker config");
    path
}

/// Descriptors the process has open now.
fn open_descriptors(broker: &BrokerProcess) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", broker.pid()))
        .expect("listing /proc/PID/fd")
        .count()
}

/// The soft and hard "Max open files" of the process.
fn descriptor_limits(broker: &BrokerProcess) -> (u64, u64) {
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", broker.pid())).expect("reading /proc/PID/limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|field| field.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

fn produce_values(client: &mut RawClient, topic: &str, partition: u32, batches: usize) -> Vec<String> {
    let mut sent = Vec::new();
    for batch in 0..batches {
        let values: Vec<String> = (0..10)
            .map(|record| format!("{topic}-{partition}-{batch}-{record}-{}", "v".repeat(1_000)))
            .collect();
        client.produce_ok(topic, partition, batch_of(&values));
        sent.extend(values);
    }
    sent
}

fn assert_reads_everything(client: &mut RawClient, topic: &str, partition: u32, sent: &[String]) {
    let (records, high_watermark) = read_partition(client, topic, partition, 0);
    assert_eq!(high_watermark, sent.len() as i64, "{topic}/{partition}");
    assert_dense(&records, 0, topic);
    let values: Vec<String> = records.iter().map(|record| record.value_text()).collect();
    assert!(
        values == sent,
        "{topic}/{partition}: the records read differ from those sent"
    );
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("listing a partition directory")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        })
        .count()
}

#[test]
fn a_topic_that_cannot_fit_the_descriptor_budget_is_refused_and_closed_segments_reopen_on_demand() {
    let dir = TestDir::new("descriptor-budget");
    let config = small_broker_config(&dir);
    let nofile = format!("--nofile={SMALL_LIMIT}:{SMALL_LIMIT}");
    let launcher = ["prlimit", nofile.as_str(), "--"];
    let mut broker = BrokerProcess::start_under(
        &launcher,
        &dir.data_dir(),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(descriptor_limits(&broker), (SMALL_LIMIT, SMALL_LIMIT));
    assert!(
        broker.log_text().contains("file descriptor budget"),
        "the budget is logged at start:\n{}",
        broker.log_text()
    );
    let mut client = RawClient::connect_or_panic(broker.addr());

    // 256 - 16 connections - 64 reserved = 176 for segment files; 8 of them the cache's
    // minimum: 168 partitions fit. Three files per segment would have needed 300 descriptors.
    client.create_topic("wide", 100, None);
    let refused = client.create_topic_result("too-wide", 100, None);
    assert_eq!(refused.error(), ErrorCode::InvalidPartitions, "{refused:?}");
    assert!(
        refused.message.contains("file descriptor budget") && refused.message.contains("RLIMIT_NOFILE 256"),
        "the refusal says why: {:?}",
        refused.message
    );
    assert!(client
        .metadata(&[])
        .topics
        .iter()
        .all(|topic| topic.name != "too-wide"));
    broker.assert_alive("a refused create");

    // One partition with many more closed segments than the cache holds files.
    client.create_topic("long", 1, None);
    let long = produce_values(&mut client, "long", 0, 150);
    let long_dir = dir.data_dir().join("topics/long/0");
    let segments = segment_files(&long_dir);
    assert!(segments > 3 * CACHE_FILES, "{segments} segments");
    // The existing topic keeps serving, on every partition asked.
    let mut wide = Vec::new();
    for partition in [0, 37, 99] {
        wide.push((partition, produce_values(&mut client, "wide", partition, 3)));
    }
    assert_reads_everything(&mut client, "long", 0, &long);
    for (partition, sent) in &wide {
        assert_reads_everything(&mut client, "wide", *partition, sent);
    }
    let open = open_descriptors(&broker);
    assert!(
        open < SMALL_LIMIT as usize - 32,
        "{open} descriptors open with 101 partitions and {segments} segments"
    );
    // A smaller topic that fits is still accepted.
    client.create_topic("narrow", 60, None);
    drop(client);

    // And all of it again after a restart under the same limit.
    broker.terminate_and_wait();
    broker.restart();
    let mut client = RawClient::connect_or_panic(broker.addr());
    assert_reads_everything(&mut client, "long", 0, &long);
    for (partition, sent) in &wide {
        assert_reads_everything(&mut client, "wide", *partition, sent);
    }
    let more = produce_values(&mut client, "long", 0, 1);
    let mut all = long;
    all.extend(more);
    assert_reads_everything(&mut client, "long", 0, &all);
    let refused = client.create_topic_result("another", 10, None);
    assert_eq!(refused.error(), ErrorCode::InvalidPartitions, "{refused:?}");
    broker.assert_alive("the restart");
}

#[test]
fn the_soft_descriptor_limit_is_raised_to_the_hard_limit_at_start() {
    let dir = TestDir::new("descriptor-raise");
    let config = dir.path().join("tidelogd.toml");
    std::fs::write(&config, "[limits]\nconnections_max = 64\n").unwrap();
    let launcher = ["prlimit", "--nofile=128:4096", "--"];
    let mut broker = BrokerProcess::start_under(
        &launcher,
        &dir.data_dir(),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(descriptor_limits(&broker), (4_096, 4_096));
    let log = broker.log_text();
    let line = log
        .lines()
        .find(|line| line.contains("file descriptor budget"))
        .unwrap_or_else(|| panic!("no budget line:\n{log}"));
    assert!(
        line.contains("limit=4096") && line.contains("raised_from=Some(128)"),
        "{line}"
    );
    // 300 partitions would not open under the 128 the broker was started with.
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("many", 300, None);
    client.produce_ok("many", 299, batch_of(&["last"]));
    broker.assert_alive("creating 300 partitions");
}
