//! Changing a topic on the real broker through the `tidelog` CLI: added partitions serve at
//! once and survive a restart, a config change reaches the open partitions (a smaller
//! segment.bytes makes the next appends roll), and a trim makes the offsets below it
//! unreadable, so a consumer from the beginning starts at the new log start, before and after a
//! restart. Also the topic id that `topic describe` shows, stable across restarts.

use std::path::Path;

use tidelog_e2e::cli::run_cli;
use tidelog_e2e::records::{batch_of, read_partition};
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::ErrorCode;

/// Limits low enough that a test fills segments in a few hundred KiB.
const CONFIG: &str = "[limits]\nbatch_bytes_max = 65536\nsegment_bytes_min = 65536\n";

fn start(dir: &TestDir) -> BrokerProcess {
    let config = dir.path().join("tidelogd.toml");
    std::fs::write(&config, CONFIG).unwrap();
    BrokerProcess::start(&dir.data_dir(), &["--config", config.to_str().unwrap()])
}

fn cli(broker: &BrokerProcess, args: &[&str]) -> String {
    run_cli(Some(broker.addr()), args, b"")
        .assert_success()
        .stdout
        .clone()
}

fn segment_files(data_dir: &Path, topic: &str, partition: u32) -> usize {
    let dir = data_dir.join("topics").join(topic).join(partition.to_string());
    std::fs::read_dir(&dir)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count()
}

fn topic_id(describe: &str) -> String {
    describe
        .lines()
        .find_map(|line| line.strip_prefix("Topic id: "))
        .unwrap_or_else(|| panic!("no topic id in:\n{describe}"))
        .trim()
        .to_owned()
}

/// Produces `batches` batches of ten 1000-byte values to one partition.
fn fill(client: &mut RawClient, topic: &str, partition: u32, batches: usize) {
    let value = "v".repeat(1000);
    for _ in 0..batches {
        client.produce_ok(topic, partition, batch_of(&[value.as_str(); 10]));
    }
}

#[test]
fn added_partitions_and_a_changed_segment_size_take_effect_at_once_and_persist() {
    let dir = TestDir::new("topic-alter");
    let mut broker = start(&dir);
    cli(&broker, &["topic", "create", "orders", "--partitions", "1"]);
    let id = topic_id(&cli(&broker, &["topic", "describe", "orders"]));
    assert_eq!(id.len(), 36, "a hyphenated UUID: {id}");

    cli(&broker, &["topic", "alter", "orders", "--partitions", "3"]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    assert_eq!(client.metadata(&["orders"]).topics[0].partitions.len(), 3);
    assert_eq!(
        client.produce_ok("orders", 2, batch_of(&["to the new partition"])),
        0
    );
    let refused = run_cli(
        Some(broker.addr()),
        &["topic", "alter", "orders", "--partitions", "2"],
        b"",
    );
    let line = refused.assert_one_line_error();
    assert!(line.contains("only grow"), "{line}");
    let validated = cli(
        &broker,
        &["topic", "alter", "orders", "--partitions", "9", "--validate-only"],
    );
    assert!(validated.contains("valid"), "{validated}");
    assert_eq!(client.metadata(&["orders"]).topics[0].partitions.len(), 3);

    // The default segment size holds everything in one segment; 64 KiB rolls every ~6 batches.
    fill(&mut client, "orders", 0, 10);
    assert_eq!(segment_files(&dir.data_dir(), "orders", 0), 1);
    cli(
        &broker,
        &[
            "topic",
            "alter",
            "orders",
            "--config",
            "segment.bytes=65536",
            "--config",
            "retention.ms=86400000",
        ],
    );
    fill(&mut client, "orders", 0, 30);
    let segments = segment_files(&dir.data_dir(), "orders", 0);
    assert!(segments >= 4, "{segments} segments after the change");
    let describe = cli(&broker, &["topic", "describe", "orders"]);
    assert!(describe.contains("65536"), "{describe}");
    let bad = run_cli(
        Some(broker.addr()),
        &["topic", "alter", "orders", "--config", "segment.bytes=1024"],
        b"",
    );
    let line = bad.assert_one_line_error();
    assert!(line.contains("segment"), "{line}");
    // Both or neither: a refused config change adds no partitions either.
    let mixed = run_cli(
        Some(broker.addr()),
        &[
            "topic",
            "alter",
            "orders",
            "--partitions",
            "5",
            "--config",
            "retention.ms=0",
        ],
        b"",
    );
    mixed.assert_one_line_error();
    assert_eq!(client.metadata(&["orders"]).topics[0].partitions.len(), 3);
    drop(client);

    broker.terminate_and_wait();
    broker.restart();
    let mut client = RawClient::connect_or_panic(broker.addr());
    let metadata = client.metadata(&["orders"]).topics.remove(0);
    assert_eq!(metadata.partitions.len(), 3);
    assert_eq!(metadata.config.unwrap().segment_bytes, Some(65536));
    assert_eq!(metadata.topic_id, id, "the topic id survives a restart");
    let (records, _) = read_partition(&mut client, "orders", 2, 0);
    assert_eq!(records.len(), 1);
    // Still rolling at 64 KiB after the restart.
    fill(&mut client, "orders", 0, 12);
    assert!(segment_files(&dir.data_dir(), "orders", 0) > segments);
}

#[test]
fn a_trimmed_partition_is_consumed_from_its_new_log_start_before_and_after_a_restart() {
    let dir = TestDir::new("topic-trim");
    let mut broker = start(&dir);
    cli(&broker, &["topic", "create", "events", "--partitions", "2"]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    for batch in 0..10 {
        let values: Vec<String> = (0..10)
            .map(|index| format!("record-{}", batch * 10 + index))
            .collect();
        client.produce_ok("events", 1, batch_of(&values));
    }
    let trimmed = cli(
        &broker,
        &["topic", "trim", "events", "--partition", "1", "--before", "50"],
    );
    assert!(trimmed.contains("now 50"), "{trimmed}");
    let past = run_cli(
        Some(broker.addr()),
        &["topic", "trim", "events", "--partition", "1", "--before", "101"],
        b"",
    );
    past.assert_one_line_error();

    let check = |broker: &BrokerProcess, when: &str| {
        let consumed = cli(
            broker,
            &[
                "consume",
                "events",
                "--partition",
                "1",
                "--from-beginning",
                "--print-offset",
                "--timeout-ms",
                "1000",
            ],
        );
        let first = consumed
            .lines()
            .next()
            .unwrap_or_else(|| panic!("{when}: nothing consumed"));
        assert!(first.contains("record-50"), "{when}: first line {first:?}");
        assert_eq!(consumed.lines().count(), 50, "{when}:\n{consumed}");
        let mut client = RawClient::connect_or_panic(broker.addr());
        let below = client.fetch("events", 1, 49, 0, 0);
        assert_eq!(below.error(), ErrorCode::OffsetOutOfRange, "{when}: {below:?}");
        assert_eq!(below.log_start_offset, 50, "{when}");
        assert_eq!(client.list_offset("events", 1, -2).offset, 50, "{when}: earliest");
    };
    check(&broker, "after the trim");
    // -1: everything, on the other partition (empty: the start stays 0).
    let all = cli(
        &broker,
        &["topic", "trim", "events", "--partition", "0", "--before", "-1"],
    );
    assert!(all.contains("now 0"), "{all}");
    drop(client);
    broker.kill9();
    broker.restart();
    check(&broker, "after a crash and restart");
}
