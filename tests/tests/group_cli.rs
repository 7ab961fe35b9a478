//! `tidelog group list|describe|reset-offsets|delete` against a real broker: the describe table's
//! numbers, each reset target changing what the next `consume --group` prints, and the admin
//! errors (reset or delete of a group with a member, delete of an unknown group).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use tidelog_e2e::cli::{run_cli, CliOutput};
use tidelog_e2e::groups::{
    committed_offsets, describe_group, described_partitions, list_groups, lists_group, parse_offset_line,
    ConsumedLine, GroupConsumer,
};
use tidelog_e2e::records::{now_ms, timed_batch};
use tidelog_e2e::wait::try_poll_until;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::ErrorCode;

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 2;
/// Records per partition; the first half is stamped [`OLD_AGE_MS`] ago, the second half
/// [`NEW_AGE_MS`] ago, so a timestamp between them splits each partition in two.
const RECORDS_PER_PARTITION: i64 = 10;
const OLD_AGE_MS: i64 = 120_000;
const NEW_AGE_MS: i64 = 60_000;
/// Silence after which a `consume --group --timeout-ms` run ends.
const SILENCE_MS: &str = "1500";

fn start_broker(test_name: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    (dir, broker)
}

/// Creates the topic and fills each partition with `p<P>-<N>` values; returns the split
/// timestamp (after the old half, before the new half).
fn fill_topic(client: &mut RawClient) -> i64 {
    client.create_topic(TOPIC, PARTITIONS, None);
    let now = now_ms();
    let half = RECORDS_PER_PARTITION / 2;
    for partition in 0..PARTITIONS {
        let old: Vec<String> = (0..half).map(|n| format!("p{partition}-{n}")).collect();
        let new: Vec<String> = (half..RECORDS_PER_PARTITION)
            .map(|n| format!("p{partition}-{n}"))
            .collect();
        assert_eq!(
            client.produce_ok(TOPIC, partition, timed_batch(&old, now - OLD_AGE_MS)),
            0
        );
        assert_eq!(
            client.produce_ok(TOPIC, partition, timed_batch(&new, now - NEW_AGE_MS)),
            half
        );
    }
    now - (OLD_AGE_MS + NEW_AGE_MS) / 2
}

/// Runs `consume TOPIC --group GROUP --print-offset EXTRA...` to its end; returns what it
/// printed, parsed, after checking each line's value matches its partition and offset.
fn consume(addr: SocketAddr, group: &str, extra: &[&str]) -> (CliOutput, Vec<ConsumedLine>) {
    let mut args = vec!["consume", TOPIC, "--group", group, "--print-offset"];
    args.extend_from_slice(extra);
    let output = run_cli(Some(addr), &args, b"");
    output.assert_success();
    let lines: Vec<ConsumedLine> = output
        .stdout_lines()
        .iter()
        .map(|line| parse_offset_line(line))
        .collect();
    for line in &lines {
        assert_eq!(
            line.value,
            format!("p{}-{}", line.partition, line.offset),
            "consume printed a value that is not the record at its offset:\n{output}"
        );
    }
    (output, lines)
}

/// The offsets printed per partition.
fn offsets_by_partition(lines: &[ConsumedLine]) -> BTreeMap<u32, Vec<i64>> {
    let mut by_partition: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for line in lines {
        by_partition.entry(line.partition).or_default().push(line.offset);
    }
    by_partition
}

/// What a run should print after a reset to `from` (per partition): every record from there.
fn expected_from(from: &BTreeMap<u32, i64>) -> BTreeMap<u32, Vec<i64>> {
    from.iter()
        .filter(|(_, start)| **start < RECORDS_PER_PARTITION)
        .map(|(partition, start)| (*partition, (*start..RECORDS_PER_PARTITION).collect()))
        .collect()
}

fn reset(addr: SocketAddr, group: &str, target: &[&str]) -> CliOutput {
    let mut args = vec!["group", "reset-offsets", group, "--topic", TOPIC];
    args.extend_from_slice(target);
    run_cli(Some(addr), &args, b"")
}

/// Starts a `consume --group` child and waits until the group lists it as a member.
fn active_member(addr: SocketAddr, group: &str) -> GroupConsumer {
    let consumer = GroupConsumer::spawn(
        "active",
        addr,
        &["consume", TOPIC, "--group", group, "--session-timeout-ms", "3000"],
    );
    let mut client = RawClient::connect_or_panic(addr);
    try_poll_until(Duration::from_secs(30), || {
        (describe_group(&mut client, group).members.len() == 1).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the consumer never joined {group}: {:#?}",
            describe_group(&mut client, group)
        )
    });
    consumer
}

#[test]
fn group_list_and_describe_show_committed_offsets_log_end_and_lag() {
    const GROUP: &str = "billing";
    let (_dir, broker) = start_broker("group-cli-describe");
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    fill_topic(&mut client);
    // More than one partition holds, so both partitions get a committed offset.
    let consumed = 13;
    let (output, lines) = consume(addr, GROUP, &["--from-beginning", "--max-messages", "13"]);
    assert_eq!(lines.len(), consumed, "--max-messages 13:\n{output}");

    let list = run_cli(Some(addr), &["group", "list"], b"");
    list.assert_success();
    assert!(
        lists_group(&list.stdout, GROUP),
        "group list should show {GROUP}:\n{list}"
    );

    let describe = run_cli(Some(addr), &["group", "describe", GROUP], b"");
    describe.assert_success();
    let rows = described_partitions(&describe.stdout, TOPIC);
    let printed = offsets_by_partition(&lines);
    let committed = committed_offsets(&mut client, GROUP, TOPIC, 0..PARTITIONS);
    let mut total_lag = 0;
    for partition in 0..PARTITIONS {
        let next = printed
            .get(&partition)
            .and_then(|offsets| offsets.last())
            .map(|last| last + 1);
        let Some(row) = rows.get(&partition) else {
            // A partition with no commit and no owner may be left out, as Kafka's tool does.
            assert!(
                next.is_none(),
                "group describe has no row for {TOPIC}/{partition}, committed at {next:?}:\n{describe}"
            );
            total_lag += RECORDS_PER_PARTITION;
            continue;
        };
        assert_eq!(
            row.log_end, RECORDS_PER_PARTITION,
            "log end of {partition}:\n{describe}"
        );
        assert_eq!(
            row.member, None,
            "no member owns anything after the consumer left:\n{describe}"
        );
        match next {
            Some(next) => {
                assert_eq!(
                    row.committed,
                    Some(next),
                    "committed offset of {partition}:\n{describe}"
                );
                assert_eq!(
                    row.lag,
                    Some(RECORDS_PER_PARTITION - next),
                    "lag of {partition}:\n{describe}"
                );
                assert_eq!(committed[&partition], next, "OffsetFetch agrees with describe");
                total_lag += RECORDS_PER_PARTITION - next;
            }
            None => {
                // Nothing printed from this partition: nothing (or offset 0) committed.
                assert!(
                    matches!(row.committed, None | Some(0)),
                    "partition {partition} printed nothing yet is committed at {:?}:\n{describe}",
                    row.committed
                );
                total_lag += RECORDS_PER_PARTITION;
            }
        }
    }
    assert_eq!(
        total_lag,
        PARTITIONS as i64 * RECORDS_PER_PARTITION - consumed as i64,
        "lag adds up to what is left:\n{describe}"
    );

    // The raw protocol agrees: the group is listed, empty, with these offsets.
    let groups = list_groups(&mut client);
    let listed = groups
        .iter()
        .find(|group| group.group_id == GROUP)
        .unwrap_or_else(|| panic!("ListGroups lacks {GROUP}: {groups:?}"));
    assert_eq!(
        (listed.state.as_str(), listed.members),
        ("empty", 0),
        "{groups:?}"
    );
}

#[test]
fn reset_offsets_changes_what_the_next_group_consumer_prints() {
    const GROUP: &str = "replay";
    let (_dir, broker) = start_broker("group-cli-reset");
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    let split_ms = fill_topic(&mut client);
    let all: BTreeMap<u32, i64> = (0..PARTITIONS).map(|partition| (partition, 0)).collect();

    // Consume everything once: the group is committed at the end.
    let (_, lines) = consume(addr, GROUP, &["--from-beginning", "--timeout-ms", SILENCE_MS]);
    assert_eq!(offsets_by_partition(&lines), expected_from(&all));

    reset(addr, GROUP, &["--to-earliest"]).assert_success();
    assert_eq!(committed_offsets(&mut client, GROUP, TOPIC, 0..PARTITIONS), all);
    let (output, lines) = consume(addr, GROUP, &["--timeout-ms", SILENCE_MS]);
    assert_eq!(
        offsets_by_partition(&lines),
        expected_from(&all),
        "after --to-earliest the group re-reads everything:\n{output}"
    );

    let offset = 7;
    reset(addr, GROUP, &["--to-offset", &offset.to_string()]).assert_success();
    let from: BTreeMap<u32, i64> = (0..PARTITIONS).map(|partition| (partition, offset)).collect();
    assert_eq!(committed_offsets(&mut client, GROUP, TOPIC, 0..PARTITIONS), from);
    let (output, lines) = consume(addr, GROUP, &["--timeout-ms", SILENCE_MS]);
    assert_eq!(
        offsets_by_partition(&lines),
        expected_from(&from),
        "after --to-offset {offset}:\n{output}"
    );

    reset(addr, GROUP, &["--to-timestamp", &split_ms.to_string()]).assert_success();
    let half: BTreeMap<u32, i64> = (0..PARTITIONS)
        .map(|partition| (partition, RECORDS_PER_PARTITION / 2))
        .collect();
    assert_eq!(committed_offsets(&mut client, GROUP, TOPIC, 0..PARTITIONS), half);
    let (output, lines) = consume(addr, GROUP, &["--timeout-ms", SILENCE_MS]);
    assert_eq!(
        offsets_by_partition(&lines),
        expected_from(&half),
        "after --to-timestamp between the old and the new records:\n{output}"
    );

    reset(addr, GROUP, &["--to-earliest"]).assert_success();
    reset(addr, GROUP, &["--to-latest"]).assert_success();
    let end: BTreeMap<u32, i64> = (0..PARTITIONS)
        .map(|partition| (partition, RECORDS_PER_PARTITION))
        .collect();
    assert_eq!(committed_offsets(&mut client, GROUP, TOPIC, 0..PARTITIONS), end);
    let (output, lines) = consume(addr, GROUP, &["--from-beginning", "--timeout-ms", SILENCE_MS]);
    assert!(
        lines.is_empty(),
        "after --to-latest there is nothing to print (--from-beginning does not apply to a committed group):\n{output}"
    );

    // While a member is in the group, a reset is refused and changes nothing.
    reset(addr, GROUP, &["--to-earliest"]).assert_success();
    let mut member = active_member(addr, GROUP);
    let refused = reset(addr, GROUP, &["--to-latest"]);
    let message = refused.assert_one_line_error();
    eprintln!("reset with an active member: {message}");
    let status = member.signal_and_wait(Signal::SIGTERM, Duration::from_secs(20));
    assert!(
        status.success(),
        "consumer exit on SIGTERM: {status}\n{}",
        member.stderr()
    );
    // The member consumed (and committed) what it read; the refused reset did not move the
    // offsets to the end before that.
    let printed = member.lines().len();
    let committed = committed_offsets(&mut client, GROUP, TOPIC, 0..PARTITIONS);
    let committed_total: i64 = committed.values().map(|offset| offset.max(&0)).sum();
    assert_eq!(
        committed_total, printed as i64,
        "after a refused --to-latest and a member that printed {printed} records, the group is committed at {committed:?}"
    );
}

#[test]
fn group_delete_removes_the_group_and_refuses_active_or_unknown_groups() {
    const GROUP: &str = "cleanup";
    let (_dir, broker) = start_broker("group-cli-delete");
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    fill_topic(&mut client);
    let (_, lines) = consume(addr, GROUP, &["--from-beginning", "--max-messages", "5"]);
    assert_eq!(lines.len(), 5);

    // A group with a member cannot be deleted.
    let mut member = active_member(addr, GROUP);
    let message = run_cli(Some(addr), &["group", "delete", GROUP], b"").assert_one_line_error();
    eprintln!("delete with an active member: {message}");
    let group = describe_group(&mut client, GROUP);
    assert_eq!(group.members.len(), 1, "{group:#?}");
    // `group describe` names the member that owns each partition (once it has them).
    let member_id = group.members[0].member_id.clone();
    let described = try_poll_until(Duration::from_secs(30), || {
        let describe = run_cli(Some(addr), &["group", "describe", GROUP], b"");
        describe.assert_success();
        let rows = described_partitions(&describe.stdout, TOPIC);
        (rows.len() == PARTITIONS as usize
            && rows
                .values()
                .all(|row| row.member.as_deref() == Some(member_id.as_str())))
        .then_some(())
    });
    assert!(
        described.is_some(),
        "group describe should show {member_id} owning every partition:\n{}",
        run_cli(Some(addr), &["group", "describe", GROUP], b"")
    );
    let status = member.signal_and_wait(Signal::SIGTERM, Duration::from_secs(20));
    assert!(
        status.success(),
        "consumer exit on SIGTERM: {status}\n{}",
        member.stderr()
    );
    let list = run_cli(Some(addr), &["group", "list"], b"");
    assert!(lists_group(&list.stdout, GROUP), "{list}");

    run_cli(Some(addr), &["group", "delete", GROUP], b"").assert_success();
    let list = run_cli(Some(addr), &["group", "list"], b"");
    list.assert_success();
    assert!(
        !lists_group(&list.stdout, GROUP),
        "deleted group still listed:\n{list}"
    );
    assert!(
        list_groups(&mut client)
            .iter()
            .all(|group| group.group_id != GROUP),
        "ListGroups still has the deleted group"
    );
    let none: BTreeMap<u32, i64> = (0..PARTITIONS).map(|partition| (partition, -1)).collect();
    assert_eq!(
        committed_offsets(&mut client, GROUP, TOPIC, 0..PARTITIONS),
        none,
        "a deleted group has no committed offsets"
    );

    // Without committed offsets a consumer starts per its reset policy again: at the beginning
    // with --from-beginning (not after the 5 records committed before the delete) ...
    let (output, lines) = consume(addr, GROUP, &["--from-beginning", "--max-messages", "3"]);
    let starts: Vec<i64> = offsets_by_partition(&lines)
        .values()
        .map(|offsets| offsets[0])
        .collect();
    assert!(
        lines.len() == 3 && starts.iter().all(|start| *start == 0),
        "after delete, --from-beginning starts at offset 0 of each partition:\n{output}"
    );
    // ... and at the end without it.
    run_cli(Some(addr), &["group", "delete", GROUP], b"").assert_success();
    let (output, lines) = consume(addr, GROUP, &["--timeout-ms", SILENCE_MS]);
    assert!(
        lines.is_empty(),
        "a fresh group starts at the latest offset:\n{output}"
    );

    let message = run_cli(Some(addr), &["group", "delete", "no-such-group"], b"").assert_one_line_error();
    assert!(
        message.contains("no-such-group"),
        "the error should name the group: {message}"
    );
    let mut raw = RawClient::connect_or_panic(addr);
    assert_eq!(
        tidelog_e2e::groups::delete_group(&mut raw, "no-such-group"),
        ErrorCode::GroupIdNotFound
    );
}

#[test]
fn consume_with_a_group_refuses_unknown_topics_and_manual_partitions() {
    const GROUP: &str = "strict";
    let (_dir, broker) = start_broker("group-cli-consume-errors");
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    fill_topic(&mut client);
    let message = run_cli(
        Some(addr),
        &[
            "consume",
            "no-such-topic",
            "--group",
            GROUP,
            "--timeout-ms",
            "1000",
        ],
        b"",
    )
    .assert_one_line_error();
    assert!(
        message.contains("no-such-topic"),
        "the error should name the topic: {message}"
    );
    run_cli(
        Some(addr),
        &[
            "consume",
            TOPIC,
            "--group",
            GROUP,
            "--partition",
            "0",
            "--timeout-ms",
            "1000",
        ],
        b"",
    )
    .assert_one_line_error();
    // Neither left a member or offsets behind.
    let group = describe_group(&mut client, GROUP);
    assert!(group.members.is_empty(), "{group:#?}");
    assert!(
        list_groups(&mut client)
            .iter()
            .all(|group| group.group_id != GROUP),
        "a refused consume should not create the group"
    );
}
