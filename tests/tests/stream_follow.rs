//! `tidelog stream read TOPIC KEY --follow` against the real binaries: the stream's history,
//! then its live records as they are appended (never another key's), until `--timeout-ms` of
//! silence or SIGTERM, both exiting 0.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use tidelog_e2e::cli::{run_cli_with_timeout, StreamingCli};
use tidelog_e2e::{BrokerProcess, TestDir};

const TOPIC: &str = "carts";
/// Generous: the suite runs many brokers on two cores.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

fn produce(broker: &BrokerProcess, lines: &[&str]) {
    let input = lines.join("\n") + "\n";
    run_cli_with_timeout(
        Some(broker.addr()),
        &["produce", TOPIC, "--key-separator", ":"],
        input.as_bytes(),
        CLI_TIMEOUT,
    )
    .assert_success();
}

fn next_line(cli: &StreamingCli) -> String {
    match cli.lines.recv_timeout(LINE_TIMEOUT) {
        Ok(line) => line,
        Err(RecvTimeoutError::Timeout) => {
            panic!("no line from `stream read --follow` within {LINE_TIMEOUT:?}")
        }
        Err(RecvTimeoutError::Disconnected) => panic!("`stream read --follow` closed its stdout"),
    }
}

fn start(test: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test);
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    run_cli_with_timeout(
        Some(broker.addr()),
        &["topic", "create", TOPIC, "--partitions", "2"],
        b"",
        CLI_TIMEOUT,
    )
    .assert_success();
    (dir, broker)
}

#[test]
fn follow_prints_history_then_live_records_and_exits_after_its_timeout() {
    let (_dir, broker) = start("stream-follow-timeout");
    produce(
        &broker,
        &["cart-1:added apples", "cart-2:other", "cart-1:added pears"],
    );
    let cli = StreamingCli::spawn(
        broker.addr(),
        &[
            "stream",
            "read",
            TOPIC,
            "cart-1",
            "--follow",
            "--timeout-ms",
            "4000",
        ],
    );
    assert_eq!(next_line(&cli), "added apples");
    assert_eq!(next_line(&cli), "added pears");
    produce(&broker, &["cart-2:elsewhere", "cart-1:checked out"]);
    assert_eq!(
        next_line(&cli),
        "checked out",
        "a live record, and not another key's"
    );
    let quiet_since = Instant::now();
    let (status, stderr) = cli.wait(CLI_TIMEOUT);
    assert!(
        status.success(),
        "exit 0 after the timeout: {status}, stderr {stderr:?}"
    );
    assert!(
        quiet_since.elapsed() >= Duration::from_millis(3000),
        "it waited for the silence before exiting"
    );
}

#[test]
fn follow_with_print_offset_from_an_offset_stops_cleanly_on_sigterm() {
    let (_dir, broker) = start("stream-follow-sigterm");
    produce(&broker, &["cart-9:one", "cart-9:two", "cart-9:three"]);
    let cli = StreamingCli::spawn(
        broker.addr(),
        &[
            "stream",
            "read",
            TOPIC,
            "cart-9",
            "--follow",
            "--from",
            "1",
            "--print-offset",
        ],
    );
    let first = next_line(&cli);
    let fields: Vec<&str> = first.split('\t').collect();
    assert_eq!(fields.len(), 3, "PARTITION<TAB>OFFSET<TAB>VALUE: {first:?}");
    assert_eq!((fields[1], fields[2]), ("1", "two"));
    assert!(next_line(&cli).ends_with("\t2\tthree"));
    produce(&broker, &["cart-9:four"]);
    assert!(next_line(&cli).ends_with("\t3\tfour"));
    kill(cli.pid(), Signal::SIGTERM).expect("signals the CLI");
    let (status, stderr) = cli.wait(CLI_TIMEOUT);
    assert!(status.success(), "exit 0 on SIGTERM: {status}, stderr {stderr:?}");
}

#[test]
fn follow_refuses_backward() {
    let (_dir, broker) = start("stream-follow-backward");
    let output = run_cli_with_timeout(
        Some(broker.addr()),
        &["stream", "read", TOPIC, "cart-1", "--follow", "--backward"],
        b"",
        CLI_TIMEOUT,
    );
    assert!(!output.status.success(), "--follow reads forward only");
}
