//! End-to-end tests of the `tidelog` group commands and `consume --group`.

// Test code: a failed expectation is a failed test (STYLE.md allows unwrap/expect in tests).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{cli, stderr, stdout, TestBroker};
use tidelog_client::{GroupConfig, GroupConsumer, OffsetReset};

async fn broker() -> TestBroker {
    TestBroker::start_with(|config| config.groups.heartbeat_interval_ms = 50).await
}

fn lines(output: &std::process::Output) -> Vec<String> {
    stdout(output).lines().map(str::to_owned).collect()
}

/// Asserts a failed run with exactly one line on stderr containing `needle`.
fn assert_one_line_error(output: &std::process::Output, needle: &str) {
    assert!(
        !output.status.success(),
        "expected failure; stdout: {}",
        stdout(output)
    );
    let err = stderr(output);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_a_group_commits_what_it_printed_and_the_next_run_continues() {
    let broker = broker().await;
    let addr = broker.addr.as_str();
    let created = cli(
        &["--broker", addr, "topic", "create", "feed", "--partitions", "2"],
        b"",
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));
    let input: String = (0..10).map(|i| format!("line-{i}\n")).collect();
    let produced = cli(&["--broker", addr, "produce", "feed"], input.as_bytes()).await;
    assert!(produced.status.success(), "{}", stderr(&produced));

    let consume = |max: &'static str| async move {
        cli(
            &[
                "--broker",
                addr,
                "consume",
                "feed",
                "--group",
                "readers",
                "--from-beginning",
                "--max-messages",
                max,
                "--timeout-ms",
                "2000",
            ],
            b"",
        )
        .await
    };
    // The first run stops after 4 of the 10 records; a poll may have fetched more, but only
    // what was printed is committed.
    let first = consume("4").await;
    assert!(first.status.success(), "{}", stderr(&first));
    let second = consume("100").await;
    assert!(second.status.success(), "{}", stderr(&second));
    let (first, second) = (lines(&first), lines(&second));
    assert_eq!(first.len(), 4, "{first:?}");
    assert_eq!(second.len(), 6, "the rest, once each: {second:?}");
    let all: BTreeSet<String> = first.iter().chain(&second).cloned().collect();
    let expected: BTreeSet<String> = (0..10).map(|i| format!("line-{i}")).collect();
    assert_eq!(all, expected);

    // Nothing left: a third run prints nothing and exits on the idle timeout.
    let third = cli(
        &[
            "--broker",
            addr,
            "consume",
            "feed",
            "--group",
            "readers",
            "--timeout-ms",
            "500",
        ],
        b"",
    )
    .await;
    assert!(third.status.success(), "{}", stderr(&third));
    assert_eq!(stdout(&third), "");

    // list and describe show the group, empty now, with its committed offsets and no lag.
    let listed = cli(&["--broker", addr, "group", "list"], b"").await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    let row = stdout(&listed)
        .lines()
        .find(|l| l.contains("readers"))
        .map(str::to_owned);
    let row = row.expect("group listed");
    assert!(row.contains("empty") && row.contains(" 0 "), "{row}");

    let described = cli(&["--broker", addr, "group", "describe", "readers"], b"").await;
    assert!(described.status.success(), "{}", stderr(&described));
    let text = stdout(&described);
    assert!(
        text.starts_with("Group: readers  State: empty  Members: 0"),
        "{text}"
    );
    for header in [
        "Topic",
        "Partition",
        "Committed offset",
        "Log end offset",
        "Lag",
        "Member",
    ] {
        assert!(text.contains(header), "{header} missing: {text}");
    }
    let partition_rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.contains("feed"))
        .map(|l| {
            l.split(['│', '┆'])
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    // Only partitions with a commit are listed; the keyless lines may all sit in one.
    assert!(!partition_rows.is_empty(), "{text}");
    for row in &partition_rows {
        // topic, partition, committed, log end, lag, member
        assert_eq!(row[2], row[3], "committed up to the end: {row:?}");
        assert_eq!(row[4], "0");
        assert_eq!(row[5], "-");
    }

    // Reset to the beginning: the next run prints everything again.
    let reset = cli(
        &[
            "--broker",
            addr,
            "group",
            "reset-offsets",
            "readers",
            "--topic",
            "feed",
            "--to-earliest",
        ],
        b"",
    )
    .await;
    assert!(reset.status.success(), "{}", stderr(&reset));
    assert!(stdout(&reset).contains("New offset"), "{}", stdout(&reset));
    let again = cli(
        &[
            "--broker",
            addr,
            "consume",
            "feed",
            "--group",
            "readers",
            "--max-messages",
            "10",
            "--timeout-ms",
            "5000",
        ],
        b"",
    )
    .await;
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(lines(&again).into_iter().collect::<BTreeSet<_>>(), expected);

    let deleted = cli(&["--broker", addr, "group", "delete", "readers"], b"").await;
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert_eq!(stdout(&deleted), "Deleted group readers.\n");
    let gone = cli(&["--broker", addr, "group", "describe", "readers"], b"").await;
    assert_one_line_error(&gone, "group readers does not exist");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commands_refuse_clearly() {
    let broker = broker().await;
    let addr = broker.addr.as_str();
    let created = cli(
        &["--broker", addr, "topic", "create", "busy", "--partitions", "1"],
        b"",
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));

    let partition = cli(
        &[
            "--broker",
            addr,
            "consume",
            "busy",
            "--group",
            "g",
            "--partition",
            "0",
        ],
        b"",
    )
    .await;
    assert_one_line_error(&partition, "--partition cannot be used with --group");
    let offset = cli(
        &[
            "--broker", addr, "consume", "busy", "--group", "g", "--offset", "3",
        ],
        b"",
    )
    .await;
    assert_one_line_error(&offset, "--offset cannot be used with --group");
    let missing = cli(
        &[
            "--broker",
            addr,
            "consume",
            "nope",
            "--group",
            "g",
            "--timeout-ms",
            "100",
        ],
        b"",
    )
    .await;
    assert_one_line_error(&missing, "nope");

    // A live member makes resets and deletes fail with one clear line.
    let client = broker.client().await;
    let member = GroupConsumer::subscribe(
        client,
        GroupConfig::new("live")
            .offset_reset(OffsetReset::Earliest)
            .session_timeout(Duration::from_secs(6)),
        ["busy"],
    )
    .await
    .expect("subscribe");
    let reset = cli(
        &[
            "--broker",
            addr,
            "group",
            "reset-offsets",
            "live",
            "--topic",
            "busy",
            "--to-latest",
        ],
        b"",
    )
    .await;
    assert_one_line_error(&reset, "group live has active members");
    let delete = cli(&["--broker", addr, "group", "delete", "live"], b"").await;
    assert_one_line_error(&delete, "group live has active members");
    member.close().await.expect("close");

    let unknown = cli(&["--broker", addr, "group", "delete", "never"], b"").await;
    assert_one_line_error(&unknown, "group never does not exist");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_consume_through_a_group_prints_the_summary_line_and_commits() {
    let broker = broker().await;
    let addr = broker.addr.as_str();
    let created = cli(
        &["--broker", addr, "topic", "create", "bench", "--partitions", "4"],
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
            "2000",
            "--record-size",
            "100",
        ],
        b"",
    )
    .await;
    assert!(produced.status.success(), "{}", stderr(&produced));
    let consumed = cli(
        &[
            "--broker",
            addr,
            "perf",
            "consume",
            "bench",
            "--records",
            "2000",
            "--group",
            "bench-group",
        ],
        b"",
    )
    .await;
    assert!(consumed.status.success(), "{}", stderr(&consumed));
    let line = stdout(&consumed);
    let keys: Vec<&str> = line
        .split_whitespace()
        .map(|kv| kv.split('=').next().unwrap())
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
        ],
        "{line}"
    );
    assert!(line.starts_with("records=2000 "), "{line}");

    let client = broker.client().await;
    let committed: i64 = client
        .admin()
        .committed_offsets("bench-group")
        .await
        .unwrap()
        .iter()
        .map(|(_, offset)| offset.get())
        .sum();
    assert_eq!(committed, 2000, "close committed every consumed position");
    broker.stop().await;
}
