//! The `tidelog` CLI against a real broker: topic administration, produce with printed offsets,
//! consume in its output formats, keyed partitioning, and its error contract (non-zero exit and
//! one line on stderr).

use std::collections::{BTreeMap, HashMap};

use tidelog_e2e::cli::{dead_address, run_cli, CliOutput};
use tidelog_e2e::records::read_partition;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::ErrorCode;

fn start_broker(test_name: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    (dir, broker)
}

/// Parses `--print-offsets` output: one `PARTITION<TAB>OFFSET` line per input line.
fn parse_printed_offsets(output: &CliOutput, expected_lines: usize) -> Vec<(u32, i64)> {
    let lines = output.stdout_lines();
    assert_eq!(
        lines.len(),
        expected_lines,
        "produce --print-offsets should print one line per record:\n{output}"
    );
    lines
        .iter()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 2, "expected PARTITION<TAB>OFFSET, got {line:?}");
            let partition = fields[0]
                .parse()
                .unwrap_or_else(|_| panic!("bad partition in {line:?}"));
            let offset = fields[1]
                .parse()
                .unwrap_or_else(|_| panic!("bad offset in {line:?}"));
            (partition, offset)
        })
        .collect()
}

/// Asserts that, taken in input order, each partition's printed offsets run 0, 1, 2, ...
fn assert_consecutive_per_partition(printed: &[(u32, i64)]) {
    let mut next: HashMap<u32, i64> = HashMap::new();
    for (line, (partition, offset)) in printed.iter().enumerate() {
        let expected = next.entry(*partition).or_insert(0);
        assert_eq!(
            offset, expected,
            "input line {line}: partition {partition} got offset {offset}, expected {expected}: {printed:?}"
        );
        *expected += 1;
    }
}

/// One consumed line split into its fields: `--print-offset` adds partition and offset,
/// `--print-key` adds the key, and the value comes last.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Consumed {
    partition: u32,
    offset: i64,
    key: Option<String>,
    value: String,
}

fn parse_consumed(line: &str, with_key: bool) -> Consumed {
    let fields: Vec<&str> = line.splitn(if with_key { 4 } else { 3 }, '\t').collect();
    assert_eq!(
        fields.len(),
        if with_key { 4 } else { 3 },
        "unexpected consume line {line:?}"
    );
    Consumed {
        partition: fields[0]
            .parse()
            .unwrap_or_else(|_| panic!("bad partition in {line:?}")),
        offset: fields[1]
            .parse()
            .unwrap_or_else(|_| panic!("bad offset in {line:?}")),
        key: with_key.then(|| fields[2].to_owned()),
        value: fields[fields.len() - 1].to_owned(),
    }
}

#[test]
fn cli_creates_lists_describes_and_deletes_a_topic() {
    let (_dir, broker) = start_broker("cli-admin");
    let addr = Some(broker.addr());
    run_cli(addr, &["topic", "create", "orders", "--partitions", "3"], b"").assert_success();

    let mut client = RawClient::connect_or_panic(broker.addr());
    let metadata = client.metadata(&["orders"]);
    let topic = &metadata.topics[0];
    assert_eq!(topic.error(), ErrorCode::None, "{metadata:?}");
    let mut partitions: Vec<u32> = topic
        .partitions
        .iter()
        .map(|partition| partition.partition)
        .collect();
    partitions.sort_unstable();
    assert_eq!(
        partitions,
        vec![0, 1, 2],
        "topic create --partitions 3: {metadata:?}"
    );

    let list = run_cli(addr, &["topic", "list"], b"");
    list.assert_success();
    assert!(
        list.stdout
            .lines()
            .any(|line| line.split_whitespace().any(|word| word == "orders")),
        "topic list should name the topic:\n{list}"
    );
    let describe = run_cli(addr, &["topic", "describe", "orders"], b"");
    describe.assert_success();
    assert!(
        describe.stdout.contains("orders"),
        "describe should name the topic:\n{describe}"
    );

    let again = run_cli(addr, &["topic", "create", "orders", "--partitions", "3"], b"");
    again.assert_one_line_error();

    run_cli(addr, &["topic", "delete", "orders"], b"").assert_success();
    let metadata = client.metadata(&[]);
    assert!(
        metadata.topics.iter().all(|topic| topic.name != "orders"),
        "deleted topic still listed: {metadata:?}"
    );
    let list = run_cli(addr, &["topic", "list"], b"");
    list.assert_success();
    assert!(
        !list
            .stdout
            .lines()
            .any(|line| line.split_whitespace().any(|word| word == "orders")),
        "deleted topic still listed by the CLI:\n{list}"
    );
    run_cli(addr, &["topic", "describe", "orders"], b"").assert_one_line_error();
}

#[test]
fn cli_topic_create_applies_per_topic_config() {
    let (_dir, broker) = start_broker("cli-topic-config");
    let args = [
        "topic",
        "create",
        "configured",
        "--partitions",
        "2",
        "--retention-ms",
        "3600000",
        "--retention-bytes",
        "1048576",
        "--segment-bytes",
        "33554432",
    ];
    run_cli(Some(broker.addr()), &args, b"").assert_success();
    let metadata = RawClient::connect_or_panic(broker.addr()).metadata(&["configured"]);
    let topic = &metadata.topics[0];
    assert_eq!(topic.partitions.len(), 2, "{metadata:?}");
    let config = topic
        .config
        .as_ref()
        .expect("metadata carries the effective config");
    assert_eq!(config.retention_ms, Some(3_600_000), "{config:?}");
    assert_eq!(config.retention_bytes, Some(1_048_576), "{config:?}");
    assert_eq!(config.segment_bytes, Some(33_554_432), "{config:?}");
}

#[test]
fn cli_produce_prints_consecutive_offsets_and_consume_returns_exactly_the_records() {
    let (_dir, broker) = start_broker("cli-produce-consume");
    let addr = Some(broker.addr());
    run_cli(addr, &["topic", "create", "events", "--partitions", "3"], b"").assert_success();

    let values: Vec<String> = (0..60)
        .map(|index| format!("event number {index} with spaces"))
        .collect();
    let input = values.join("\n") + "\n";
    let produced = run_cli(addr, &["produce", "events", "--print-offsets"], input.as_bytes());
    produced.assert_success();
    let printed = parse_printed_offsets(&produced, values.len());
    assert_consecutive_per_partition(&printed);

    let consumed = run_cli(
        addr,
        &[
            "consume",
            "events",
            "--from-beginning",
            "--max-messages",
            "60",
            "--print-offset",
            "--timeout-ms",
            "10000",
        ],
        b"",
    );
    consumed.assert_success();
    let lines: Vec<Consumed> = consumed
        .stdout
        .lines()
        .map(|line| parse_consumed(line, false))
        .collect();
    assert_eq!(
        lines.len(),
        values.len(),
        "consume printed the wrong number of records:\n{consumed}"
    );
    // Within a partition, records come in offset order.
    let mut last_offset: HashMap<u32, i64> = HashMap::new();
    for line in &lines {
        if let Some(previous) = last_offset.insert(line.partition, line.offset) {
            assert!(
                line.offset > previous,
                "partition {} out of order:\n{consumed}",
                line.partition
            );
        }
    }
    let mut expected: Vec<Consumed> = printed
        .iter()
        .zip(&values)
        .map(|((partition, offset), value)| Consumed {
            partition: *partition,
            offset: *offset,
            key: None,
            value: value.clone(),
        })
        .collect();
    let mut got = lines;
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "consumed records differ from the produced ones");

    // Without --print-offset a line is the value alone.
    let plain = run_cli(
        addr,
        &[
            "consume",
            "events",
            "--from-beginning",
            "--max-messages",
            "60",
            "--timeout-ms",
            "10000",
        ],
        b"",
    );
    plain.assert_success();
    let mut plain_values: Vec<&str> = plain.stdout.lines().collect();
    let mut sorted_values: Vec<&str> = values.iter().map(String::as_str).collect();
    plain_values.sort_unstable();
    sorted_values.sort_unstable();
    assert_eq!(plain_values, sorted_values, "plain consume output:\n{plain}");
}

#[test]
fn cli_keyed_records_with_the_same_key_land_in_the_same_partition() {
    let (_dir, broker) = start_broker("cli-keyed");
    let addr = Some(broker.addr());
    run_cli(addr, &["topic", "create", "keyed", "--partitions", "3"], b"").assert_success();

    let keys = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"];
    let records: Vec<(String, String)> = (0..70)
        .map(|index| (keys[index % keys.len()].to_owned(), format!("payload-{index}")))
        .collect();
    let input: String = records
        .iter()
        .map(|(key, value)| format!("{key}:{value}\n"))
        .collect();
    let produced = run_cli(
        addr,
        &["produce", "keyed", "--key-separator", ":", "--print-offsets"],
        input.as_bytes(),
    );
    produced.assert_success();
    let printed = parse_printed_offsets(&produced, records.len());
    assert_consecutive_per_partition(&printed);

    let mut partition_of_key: HashMap<&str, u32> = HashMap::new();
    for ((key, _), (partition, _)) in records.iter().zip(&printed) {
        let first = *partition_of_key.entry(key.as_str()).or_insert(*partition);
        assert_eq!(
            first, *partition,
            "key {key} went to partitions {first} and {partition}"
        );
    }

    let consumed = run_cli(
        addr,
        &[
            "consume",
            "keyed",
            "--from-beginning",
            "--max-messages",
            "70",
            "--print-key",
            "--print-offset",
            "--timeout-ms",
            "10000",
        ],
        b"",
    );
    consumed.assert_success();
    let mut got: Vec<Consumed> = consumed
        .stdout
        .lines()
        .map(|line| parse_consumed(line, true))
        .collect();
    let mut expected: Vec<Consumed> = records
        .iter()
        .zip(&printed)
        .map(|((key, value), (partition, offset))| Consumed {
            partition: *partition,
            offset: *offset,
            key: Some(key.clone()),
            value: value.clone(),
        })
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "consumed keyed records differ:\n{consumed}");

    // The broker stored the key as the record key, not as part of the value.
    let mut client = RawClient::connect_or_panic(broker.addr());
    let partition = partition_of_key["alice"];
    let (stored, _) = read_partition(&mut client, "keyed", partition, 0);
    let alice = stored
        .iter()
        .find(|record| record.key_text().as_deref() == Some("alice"))
        .expect("a record keyed alice");
    assert!(alice.value_text().starts_with("payload-"), "{alice:?}");
}

#[test]
fn cli_consume_from_an_offset_of_one_partition() {
    let (_dir, broker) = start_broker("cli-offset");
    let addr = Some(broker.addr());
    run_cli(addr, &["topic", "create", "offsets", "--partitions", "2"], b"").assert_success();
    let input: String = (0..20).map(|index| format!("v{index}\n")).collect();
    let produced = run_cli(
        addr,
        &["produce", "offsets", "--partition", "1", "--print-offsets"],
        input.as_bytes(),
    );
    produced.assert_success();
    let printed = parse_printed_offsets(&produced, 20);
    let expected: Vec<(u32, i64)> = (0..20).map(|offset| (1, offset)).collect();
    assert_eq!(
        printed, expected,
        "--partition 1 should put every record in partition 1"
    );

    let consumed = run_cli(
        addr,
        &[
            "consume",
            "offsets",
            "--partition",
            "1",
            "--offset",
            "15",
            "--max-messages",
            "5",
            "--print-offset",
            "--timeout-ms",
            "10000",
        ],
        b"",
    );
    consumed.assert_success();
    let expected: Vec<String> = (15..20).map(|offset| format!("1\t{offset}\tv{offset}")).collect();
    assert_eq!(
        consumed.stdout_lines(),
        expected,
        "consume --offset 15:\n{consumed}"
    );

    // Without --max-messages, consume ends once nothing arrives for --timeout-ms.
    let idle = run_cli(
        addr,
        &[
            "consume",
            "offsets",
            "--partition",
            "1",
            "--offset",
            "18",
            "--timeout-ms",
            "1000",
        ],
        b"",
    );
    idle.assert_success();
    assert_eq!(
        idle.stdout_lines(),
        vec!["v18", "v19"],
        "consume until idle:\n{idle}"
    );

    let empty = run_cli(
        addr,
        &[
            "consume",
            "offsets",
            "--partition",
            "0",
            "--from-beginning",
            "--timeout-ms",
            "500",
        ],
        b"",
    );
    empty.assert_success();
    assert!(empty.stdout.is_empty(), "partition 0 is empty:\n{empty}");
}

#[test]
fn cli_reports_an_unknown_topic_with_one_line_and_a_nonzero_exit() {
    let (_dir, broker) = start_broker("cli-unknown-topic");
    let addr = Some(broker.addr());
    run_cli(addr, &["produce", "no-such-topic"], b"hello\n").assert_one_line_error();
    run_cli(
        addr,
        &[
            "consume",
            "no-such-topic",
            "--from-beginning",
            "--timeout-ms",
            "1000",
        ],
        b"",
    )
    .assert_one_line_error();
    run_cli(addr, &["topic", "describe", "no-such-topic"], b"").assert_one_line_error();
    run_cli(addr, &["topic", "delete", "no-such-topic"], b"").assert_one_line_error();
    // A partition the topic does not have.
    run_cli(addr, &["topic", "create", "small", "--partitions", "1"], b"").assert_success();
    run_cli(addr, &["produce", "small", "--partition", "7"], b"x\n").assert_one_line_error();
}

#[test]
fn cli_reports_a_broker_that_is_down_with_one_line_and_a_nonzero_exit() {
    let addr = Some(dead_address());
    run_cli(addr, &["topic", "list"], b"").assert_one_line_error();
    run_cli(addr, &["topic", "create", "t", "--partitions", "1"], b"").assert_one_line_error();
    run_cli(addr, &["produce", "t"], b"hello\n").assert_one_line_error();
    run_cli(
        addr,
        &["consume", "t", "--from-beginning", "--timeout-ms", "1000"],
        b"",
    )
    .assert_one_line_error();
}

#[test]
fn cli_rejects_an_unknown_flag() {
    let output = run_cli(Some(dead_address()), &["consume", "t", "--no-such-flag"], b"");
    assert!(!output.status.success(), "an unknown flag must fail:\n{output}");
    assert!(
        output.stderr.contains("--no-such-flag"),
        "the error should name the flag:\n{output}"
    );
}

#[test]
fn cli_perf_produce_writes_the_records_and_perf_consume_reports_them() {
    let (_dir, broker) = start_broker("cli-perf");
    let addr = Some(broker.addr());
    run_cli(addr, &["topic", "create", "perf", "--partitions", "2"], b"").assert_success();
    run_cli(
        addr,
        &[
            "perf",
            "produce",
            "perf",
            "--records",
            "2000",
            "--record-size",
            "100",
            "--partitions-used",
            "2",
            "--acks",
            "leader",
        ],
        b"",
    )
    .assert_success();
    let mut client = RawClient::connect_or_panic(broker.addr());
    let mut total = 0;
    for partition in 0..2 {
        let (records, high_watermark) = read_partition(&mut client, "perf", partition, 0);
        assert_eq!(records.len() as i64, high_watermark);
        for record in &records {
            assert_eq!(
                record.value.as_ref().map(|value| value.len()),
                Some(100),
                "{record:?}"
            );
        }
        total += records.len();
    }
    assert_eq!(
        total, 2000,
        "perf produce --records 2000 should write 2000 records"
    );

    let consumed = run_cli(addr, &["perf", "consume", "perf", "--records", "2000"], b"");
    consumed.assert_success();
    let last = consumed.stdout.lines().last().unwrap_or_default();
    let fields: BTreeMap<&str, &str> = last
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .collect();
    let keys: Vec<&str> = fields.keys().copied().collect();
    assert_eq!(
        keys,
        vec![
            "mb_per_s",
            "p50_ms",
            "p999_ms",
            "p99_ms",
            "records",
            "records_per_s"
        ],
        "perf consume summary line: {last:?}"
    );
    assert_eq!(fields["records"], "2000", "perf consume summary line: {last:?}");
    for key in ["mb_per_s", "p50_ms", "p999_ms", "p99_ms", "records_per_s"] {
        let value: f64 = fields[key]
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number in {last:?}"));
        assert!(value.is_finite() && value >= 0.0, "{key}={value} in {last:?}");
    }
}

#[test]
fn cli_perf_produce_sync_writes_every_record_round_robin_and_reports_each_latency() {
    let (_dir, broker) = start_broker("cli-perf-sync");
    let addr = Some(broker.addr());
    run_cli(addr, &["topic", "create", "sync", "--partitions", "2"], b"").assert_success();
    let produced = run_cli(
        addr,
        &[
            "perf",
            "produce",
            "sync",
            "--records",
            "300",
            "--record-size",
            "64",
            "--acks",
            "leader",
            "--linger-ms",
            "0",
            "--sync",
        ],
        b"",
    );
    produced.assert_success();
    let mut client = RawClient::connect_or_panic(broker.addr());
    for partition in 0..2 {
        let (records, high_watermark) = read_partition(&mut client, "sync", partition, 0);
        assert_eq!(high_watermark, 150, "partition {partition}: one record in two");
        assert_eq!(records.len(), 150, "partition {partition}");
    }
    let last = produced.stdout.lines().last().unwrap_or_default();
    let fields: BTreeMap<&str, &str> = last
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .collect();
    assert_eq!(fields.get("records"), Some(&"300"), "summary line: {last:?}");
    let p50: f64 = fields["p50_ms"].parse().expect("p50_ms is a number");
    let p99: f64 = fields["p99_ms"].parse().expect("p99_ms is a number");
    assert!(p50 > 0.0 && p50 <= p99, "summary line: {last:?}");
}
