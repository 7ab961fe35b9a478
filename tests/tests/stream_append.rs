//! `tidelog stream append` against the real broker (issue 8 §1, §2, §5): the lines of stdin
//! become one atomic batch of one key's stream, printed as `PARTITION<TAB>OFFSET` per line; a
//! failed expectation exits 3 with exactly one line `conflict: expected X, actual Y`; a retry of
//! the same command (same lines, same `--event-id`) after a broker restart, and a new client
//! retrying through the library, get the original offsets; a different batch conflicts.

use bytes::Bytes;
use tidelog_client::{Client, ClientConfig, Error, EventData, Expected};
use tidelog_e2e::cli::{run_cli, CliOutput};
use tidelog_e2e::records::read_partition;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::partitioner::partition_for_key;

const PARTITIONS: u32 = 3;

fn start(test_name: &str, topic: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut raw = RawClient::connect_or_panic(broker.addr());
    raw.create_topic(topic, PARTITIONS, None);
    (dir, broker)
}

fn append(broker: &BrokerProcess, topic: &str, key: &str, flags: &[&str], stdin: &str) -> CliOutput {
    let mut args = vec!["stream", "append", topic, key];
    args.extend_from_slice(flags);
    run_cli(Some(broker.addr()), &args, stdin.as_bytes())
}

/// The `PARTITION<TAB>OFFSET` lines of a successful append.
fn offsets(output: &CliOutput) -> Vec<(u32, i64)> {
    output.assert_success();
    output
        .stdout_lines()
        .iter()
        .map(|line| {
            let (partition, offset) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("expected PARTITION<TAB>OFFSET, got {line:?}\n{output}"));
            (
                partition.parse().unwrap_or_else(|_| panic!("{line:?}")),
                offset.parse().unwrap_or_else(|_| panic!("{line:?}")),
            )
        })
        .collect()
}

/// The one line of a failed expectation; the exit status must be 3 and stdout empty.
fn conflict(output: &CliOutput) -> String {
    let line = output.assert_one_line_error();
    assert_eq!(output.status.code(), Some(3), "a conflict exits 3:\n{output}");
    assert!(
        output.stdout.is_empty(),
        "a conflict prints no offsets:\n{output}"
    );
    line
}

fn values(broker: &BrokerProcess, topic: &str, partition: u32) -> Vec<String> {
    let mut raw = RawClient::connect_or_panic(broker.addr());
    let (records, _) = read_partition(&mut raw, topic, partition, 0);
    records.iter().map(|record| record.value_text()).collect()
}

#[test]
fn stream_append_prints_offsets_and_a_failed_expectation_exits_3_with_one_line() {
    let (_dir, broker) = start("stream-append-cli", "orders");
    let p = partition_for_key(b"order-7", PARTITIONS);

    let opened = append(
        &broker,
        "orders",
        "order-7",
        &["--expect", "none"],
        "created\npaid\n",
    );
    assert_eq!(offsets(&opened), [(p, 0), (p, 1)]);
    assert_eq!(
        conflict(&append(
            &broker,
            "orders",
            "order-7",
            &["--expect", "none"],
            "again\n"
        )),
        "conflict: expected none, actual 1"
    );
    assert_eq!(
        conflict(&append(
            &broker,
            "orders",
            "order-7",
            &["--expect", "0"],
            "late\n"
        )),
        "conflict: expected 0, actual 1"
    );
    let next = append(&broker, "orders", "order-7", &["--expect", "1"], "shipped\n");
    assert_eq!(offsets(&next), [(p, 2)]);
    let any = append(&broker, "orders", "order-7", &[], "noted\n");
    assert_eq!(offsets(&any), [(p, 3)]);
    assert_eq!(
        conflict(&append(
            &broker,
            "orders",
            "order-8",
            &["--expect", "exists"],
            "x\n"
        )),
        "conflict: expected exists, actual -1"
    );
    assert_eq!(
        values(&broker, "orders", p),
        ["created", "paid", "shipped", "noted"]
    );

    // Not a conflict: a bad flag and no input are ordinary errors (one line, status 1).
    let bad = append(&broker, "orders", "order-7", &["--expect", "soon"], "x\n");
    assert!(bad.assert_one_line_error().contains("soon"), "{bad}");
    assert_eq!(bad.status.code(), Some(1), "{bad}");
    let empty = append(&broker, "orders", "order-7", &[], "");
    empty.assert_one_line_error();
    assert_eq!(empty.status.code(), Some(1), "{empty}");
}

#[test]
fn a_retried_append_gets_the_original_offsets_after_a_restart_and_from_a_new_client() {
    let (_dir, mut broker) = start("stream-append-retry", "carts");
    let p = partition_for_key(b"cart-1", PARTITIONS);
    let flags = ["--expect", "none", "--event-id", "cart-1-open"];
    let first = append(&broker, "carts", "cart-1", &flags, "opened\nadded apple\n");
    assert_eq!(offsets(&first), [(p, 0), (p, 1)]);
    // Other streams of the same partition move its end on.
    let other = (0..100)
        .map(|n| format!("cart-x{n}"))
        .find(|key| partition_for_key(key.as_bytes(), PARTITIONS) == p)
        .expect("some key shares the partition");
    offsets(&append(&broker, "carts", &other, &[], "elsewhere\n"));

    broker.terminate_and_wait();
    broker.restart();
    let retried = append(&broker, "carts", "cart-1", &flags, "opened\nadded apple\n");
    assert_eq!(
        offsets(&retried),
        [(p, 0), (p, 1)],
        "the retry gets the original offsets"
    );
    // The same expectation with other events (other ids) is a conflict, not a retry.
    let different = append(
        &broker,
        "carts",
        "cart-1",
        &["--expect", "none", "--event-id", "cart-1-other"],
        "opened\nadded pear\n",
    );
    assert_eq!(conflict(&different), "conflict: expected none, actual 1");
    // A prefix of the batch is not the batch either.
    assert_eq!(
        conflict(&append(&broker, "carts", "cart-1", &flags, "opened\n")),
        "conflict: expected none, actual 1"
    );

    // A new client (new connection, no state) retrying through the library.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let addr = broker.addr().to_string();
    runtime.block_on(async move {
        let client = Client::connect(ClientConfig::new([addr]))
            .await
            .expect("client connects");
        let events = || {
            vec![
                EventData::new("opened").event_id("cart-1-open"),
                EventData::new("added apple").event_id("cart-1-open-1"),
            ]
        };
        let retry = client
            .append_stream("carts", Bytes::from("cart-1"), Expected::NoStream, events())
            .await
            .expect("an exact retry succeeds");
        assert_eq!(retry.partition, p);
        assert_eq!(retry.offsets, [0, 1]);
        assert!(retry.deduplicated);
        let next = client
            .append_stream(
                "carts",
                Bytes::from("cart-1"),
                Expected::Exact(1),
                vec![EventData::new("checked out").event_id("cart-1-checkout")],
            )
            .await
            .expect("appends on the version");
        assert!(!next.deduplicated);
        assert_eq!(next.offsets, [3]);
        match client
            .append_stream("carts", Bytes::from("cart-1"), Expected::Exact(1), events())
            .await
        {
            Err(Error::ExpectationFailed { failures }) => {
                assert_eq!(failures.len(), 1);
                assert_eq!(
                    (failures[0].expected, failures[0].actual),
                    (Expected::Exact(1), 3)
                );
                assert_eq!(failures[0].key.as_deref(), Some(&b"cart-1"[..]));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    });
    assert_eq!(
        values(&broker, "carts", p),
        ["opened", "added apple", "elsewhere", "checked out"],
        "retries and conflicts stored nothing"
    );
}
