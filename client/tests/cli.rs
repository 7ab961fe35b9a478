//! End-to-end tests of the `tidelog` binary against an in-process broker.

// Test code: a failed expectation is a failed test (STYLE.md allows unwrap/expect in tests).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{cli, stderr, stdout, TestBroker};
use tidelog_client::partitioner::partition_for_key;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_round_trips_keys_values_and_offsets() {
    let broker = TestBroker::start().await;
    let addr = broker.addr.as_str();

    let created = cli(
        &["--broker", addr, "topic", "create", "orders", "--partitions", "3"],
        b"",
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));

    let input = b"alice:apple\nbob:banana\nalice:avocado\nno separator here\ncarol:\n";
    let produced = cli(
        &[
            "--broker",
            addr,
            "produce",
            "orders",
            "--key-separator",
            ":",
            "--print-offsets",
        ],
        input,
    )
    .await;
    assert!(produced.status.success(), "{}", stderr(&produced));
    let acknowledged: Vec<(u32, i64)> = stdout(&produced)
        .lines()
        .map(|line| {
            let (partition, offset) = line.split_once('\t').expect("PARTITION<TAB>OFFSET");
            (
                partition.parse().expect("partition"),
                offset.parse().expect("offset"),
            )
        })
        .collect();
    assert_eq!(acknowledged.len(), 5, "one line per input line");
    // Keyed lines land on Kafka's murmur2 partition, in input order.
    assert_eq!(acknowledged[0].0, partition_for_key(b"alice", 3));
    assert_eq!(acknowledged[1].0, partition_for_key(b"bob", 3));
    assert_eq!(acknowledged[2].0, acknowledged[0].0, "same key, same partition");
    assert!(acknowledged[2].1 > acknowledged[0].1, "later line, later offset");
    assert_eq!(acknowledged[4].0, partition_for_key(b"carol", 3));

    let consumed = cli(
        &[
            "--broker",
            addr,
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            "5",
            "--timeout-ms",
            "20000",
            "--print-key",
            "--print-offset",
        ],
        b"",
    )
    .await;
    assert!(consumed.status.success(), "{}", stderr(&consumed));
    let mut lines: Vec<String> = stdout(&consumed).lines().map(str::to_owned).collect();
    lines.sort();
    let mut expected = vec![
        format!("{}\t{}\talice\tapple", acknowledged[0].0, acknowledged[0].1),
        format!("{}\t{}\tbob\tbanana", acknowledged[1].0, acknowledged[1].1),
        format!("{}\t{}\talice\tavocado", acknowledged[2].0, acknowledged[2].1),
        format!(
            "{}\t{}\tnull\tno separator here",
            acknowledged[3].0, acknowledged[3].1
        ),
        format!("{}\t{}\tcarol\t", acknowledged[4].0, acknowledged[4].1),
    ];
    expected.sort();
    assert_eq!(lines, expected);

    // One partition, from an offset, values only; exits on the idle timeout.
    let alice = acknowledged[0].0.to_string();
    let from = acknowledged[2].1.to_string();
    let tail = cli(
        &[
            "--broker",
            addr,
            "consume",
            "orders",
            "--partition",
            &alice,
            "--offset",
            &from,
            "--timeout-ms",
            "500",
        ],
        b"",
    )
    .await;
    assert!(tail.status.success(), "{}", stderr(&tail));
    assert!(stdout(&tail).lines().any(|l| l == "avocado"), "{}", stdout(&tail));
    assert!(!stdout(&tail).contains("apple"));

    // Without --from-beginning the consumer starts at the end: nothing old is printed.
    let latest = cli(
        &["--broker", addr, "consume", "orders", "--timeout-ms", "300"],
        b"",
    )
    .await;
    assert!(latest.status.success(), "{}", stderr(&latest));
    assert_eq!(stdout(&latest), "");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_commands_show_tables_and_report_errors_on_one_line() {
    let broker = TestBroker::start().await;
    let addr = broker.addr.as_str();
    let created = cli(
        &[
            "--broker",
            addr,
            "topic",
            "create",
            "metrics",
            "--partitions",
            "2",
            "--retention-ms",
            "60000",
        ],
        b"",
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(stdout(&created).contains("metrics"));

    let produced = cli(
        &["--broker", addr, "produce", "metrics", "--partition", "1"],
        b"a\nb\nc\n",
    )
    .await;
    assert!(produced.status.success(), "{}", stderr(&produced));

    let listed = cli(&["--broker", addr, "topic", "list"], b"").await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains("metrics"), "{}", stdout(&listed));

    let described = cli(&["--broker", addr, "topic", "describe", "metrics"], b"").await;
    assert!(described.status.success(), "{}", stderr(&described));
    let text = stdout(&described);
    assert!(text.contains("retention.ms") && text.contains("60000"), "{text}");
    assert!(text.contains("Log end offset"), "{text}");
    let partition_one = text
        .lines()
        .find(|l| l.split(['│', '┆']).nth(1).map(str::trim) == Some("1"))
        .unwrap_or_else(|| panic!("no row for partition 1 in\n{text}"));
    let cells: Vec<&str> = partition_one.split(['│', '┆']).map(str::trim).collect();
    // Partition, leader, log start, log end, records.
    assert_eq!(&cells[3..6], ["0", "3", "3"], "{partition_one}");

    let duplicate = cli(&["--broker", addr, "topic", "create", "metrics"], b"").await;
    assert!(!duplicate.status.success());
    assert_eq!(
        stderr(&duplicate).trim_end().lines().count(),
        1,
        "{}",
        stderr(&duplicate)
    );
    assert!(
        stderr(&duplicate).contains("TOPIC_ALREADY_EXISTS"),
        "{}",
        stderr(&duplicate)
    );

    let unknown = cli(
        &["--broker", addr, "consume", "missing", "--timeout-ms", "100"],
        b"",
    )
    .await;
    assert!(!unknown.status.success());
    assert_eq!(
        stderr(&unknown).trim_end().lines().count(),
        1,
        "{}",
        stderr(&unknown)
    );
    assert!(stderr(&unknown).contains("unknown topic"), "{}", stderr(&unknown));

    let deleted = cli(&["--broker", addr, "topic", "delete", "metrics"], b"").await;
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let gone = cli(&["--broker", addr, "topic", "describe", "metrics"], b"").await;
    assert!(!gone.status.success());
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_and_bad_flags_fail_with_a_clear_message() {
    // A port that was just free: nothing listens there now (loopback only).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let down = cli(&["--broker", &addr, "topic", "list"], b"").await;
    assert!(!down.status.success());
    let message = stderr(&down);
    assert_eq!(message.trim_end().lines().count(), 1, "{message}");
    assert!(message.contains(&addr), "{message}");

    let bad = cli(&["topic", "create"], b"").await;
    assert!(!bad.status.success());
    let conflicting = cli(&["consume", "t", "--from-beginning", "--offset", "1"], b"").await;
    assert!(!conflicting.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_commands_print_one_summary_line() {
    let broker = TestBroker::start().await;
    let addr = broker.addr.as_str();
    let created = cli(
        &["--broker", addr, "topic", "create", "bench", "--partitions", "2"],
        b"",
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));
    let produced = cli(
        &[
            "--broker",
            addr,
            "perf",
            "produce",
            "bench",
            "--records",
            "5000",
            "--record-size",
            "100",
        ],
        b"",
    )
    .await;
    assert!(produced.status.success(), "{}", stderr(&produced));
    let consumed = cli(
        &["--broker", addr, "perf", "consume", "bench", "--records", "5000"],
        b"",
    )
    .await;
    assert!(consumed.status.success(), "{}", stderr(&consumed));
    for output in [&produced, &consumed] {
        let text = stdout(output);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let keys: Vec<&str> = lines[0]
            .split(' ')
            .map(|kv| kv.split_once('=').expect("key=value").0)
            .collect();
        assert_eq!(
            keys,
            [
                "records",
                "records_per_s",
                "mb_per_s",
                "p50_ms",
                "p99_ms",
                "p999_ms"
            ]
        );
        assert!(lines[0].starts_with("records=5000 "), "{text}");
    }
    let described = cli(&["--broker", addr, "topic", "describe", "bench"], b"").await;
    assert!(
        stdout(&described).contains("Records: 5000"),
        "{}",
        stdout(&described)
    );
    // Through send_many, with a count that does not divide into the calls.
    let produced = cli(
        &[
            "--broker",
            addr,
            "perf",
            "produce",
            "bench",
            "--records",
            "5001",
            "--record-size",
            "100",
            "--records-per-send",
            "1000",
        ],
        b"",
    )
    .await;
    assert!(produced.status.success(), "{}", stderr(&produced));
    assert!(
        stdout(&produced).starts_with("records=5001 "),
        "{}",
        stdout(&produced)
    );
    let described = cli(&["--broker", addr, "topic", "describe", "bench"], b"").await;
    assert!(
        stdout(&described).contains("Records: 10001"),
        "{}",
        stdout(&described)
    );
    broker.stop().await;
}
