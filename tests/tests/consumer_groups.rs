//! Consumer groups with real processes: `tidelog consume --group` children sharing a topic
//! (graceful scale-out and scale-in while producing print every record exactly once),
//! one of them SIGKILLed (its partitions move after its session timeout and nothing is lost),
//! a zombie member's commit refused once its partitions moved, committed offsets surviving a
//! broker SIGKILL, and `--max-messages` committing exactly what was printed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::Rng;
use tidelog_e2e::cli::run_cli;
use tidelog_e2e::groups::{
    balanced, committed_offsets, describe_group, described_partitions, ownership, parse_offset_line,
    produce_values, ConsumedLine, GroupConsumer, RawMember,
};
use tidelog_e2e::{test_rng, BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::ErrorCode;

/// `--session-timeout-ms` of the CLI consumers in these tests: short, so expiry is quick.
const SESSION_TIMEOUT_MS: &str = "3000";
/// Bound on a rebalance: a session timeout plus generous room for a loaded debug build.
const REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on records showing up in a consumer's output.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on a consumer's graceful exit (commit and leave).
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

fn start_broker(test_name: &str) -> (TestDir, BrokerProcess) {
    let dir = TestDir::new(test_name);
    let broker = BrokerProcess::start(&dir.data_dir(), &[]);
    (dir, broker)
}

/// What was produced where: `(partition, offset)` → value.
type Produced = BTreeMap<(u32, i64), String>;

/// Produces values `r-<first>`..`r-<first+count-1>`; value `r-n` goes to partition
/// `n % partitions`, one batch per partition. Records them in `produced`.
fn produce_round(
    client: &mut RawClient,
    topic: &str,
    partitions: u32,
    first: usize,
    count: usize,
    produced: &mut Produced,
) {
    for partition in 0..partitions {
        let values: Vec<String> = (first..first + count)
            .filter(|n| *n as u32 % partitions == partition)
            .map(|n| format!("r-{n}"))
            .collect();
        if values.is_empty() {
            continue;
        }
        let base = produce_values(client, topic, partition, &values);
        for (index, value) in values.into_iter().enumerate() {
            produced.insert((partition, base + index as i64), value);
        }
    }
}

/// Asserts that every printed line is a record that was produced at that partition and offset.
fn assert_lines_match(produced: &Produced, consumer: &str, lines: &[ConsumedLine]) {
    for line in lines {
        assert_eq!(
            produced.get(&(line.partition, line.offset)),
            Some(&line.value),
            "consumer {consumer} printed {line:?}, which is not what was produced at {}/{}",
            line.partition,
            line.offset
        );
    }
}

fn consume_args<'a>(topic: &'a str, group: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "consume",
        topic,
        "--group",
        group,
        "--session-timeout-ms",
        SESSION_TIMEOUT_MS,
        "--print-offset",
    ];
    args.extend_from_slice(extra);
    args
}

fn covered(consumers: &[&GroupConsumer]) -> BTreeSet<(u32, i64)> {
    consumers
        .iter()
        .flat_map(|consumer| consumer.records())
        .map(|line| (line.partition, line.offset))
        .collect()
}

/// Waits until every produced record appears in some consumer's output.
fn wait_until_all_consumed(produced: &Produced, consumers: &[&GroupConsumer], what: &str) {
    let wanted: BTreeSet<(u32, i64)> = produced.keys().copied().collect();
    let done = tidelog_e2e::wait::try_poll_until(DELIVERY_TIMEOUT, || {
        covered(consumers).is_superset(&wanted).then_some(())
    });
    if done.is_none() {
        let seen = covered(consumers);
        let missing: Vec<_> = wanted.difference(&seen).take(20).collect();
        let outputs: Vec<String> = consumers
            .iter()
            .map(|consumer| {
                format!(
                    "{}: {} lines; stderr: {}",
                    consumer.name,
                    consumer.lines().len(),
                    consumer.stderr()
                )
            })
            .collect();
        panic!("{what}: records never consumed (first 20 missing): {missing:?}\n{outputs:#?}");
    }
}

/// The group as seen by DescribeGroups, for failure messages.
fn describe_text(addr: SocketAddr, group: &str) -> String {
    let mut client = RawClient::connect_or_panic(addr);
    format!("{:#?}", describe_group(&mut client, group))
}

#[test]
fn killed_member_partitions_move_to_the_others_and_no_record_is_lost() {
    const TOPIC: &str = "orders";
    const GROUP: &str = "billing";
    const PARTITIONS: u32 = 6;
    let mut rng = test_rng("killed_member_partitions_move");
    let (_dir, broker) = start_broker("group-kill-member");
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    client.create_topic(TOPIC, PARTITIONS, None);

    let per_round = rng.random_range(30..90);
    let args = consume_args(TOPIC, GROUP, &["--from-beginning"]);
    // Round 0, consumed and committed by one run before the three start: so the partitions
    // the SIGKILLed member gets have committed offsets past 0.
    let mut round_zero = Produced::new();
    produce_round(&mut client, TOPIC, PARTITIONS, 0, per_round, &mut round_zero);
    let mut first_run_args = args.clone();
    first_run_args.extend_from_slice(&["--timeout-ms", "1500"]);
    let first_run = run_cli(Some(addr), &first_run_args, b"");
    first_run.assert_success();
    assert_eq!(
        first_run.stdout_lines().len(),
        per_round,
        "one consumer of the group prints round 0:\n{first_run}"
    );

    let mut consumers: Vec<GroupConsumer> = (0..3)
        .map(|index| GroupConsumer::spawn(&format!("c{index}"), addr, &args))
        .collect();
    let owners = tidelog_e2e::wait::try_poll_until(REBALANCE_TIMEOUT, || {
        balanced(&mut client, GROUP, TOPIC, 3, PARTITIONS)
    })
    .unwrap_or_else(|| {
        panic!(
            "three consumers never owned two partitions each:\n{}",
            describe_text(addr, GROUP)
        )
    });
    let first_members: BTreeSet<String> = owners.keys().cloned().collect();

    let mut produced = Produced::new();
    produce_round(
        &mut client,
        TOPIC,
        PARTITIONS,
        per_round,
        per_round,
        &mut produced,
    );
    wait_until_all_consumed(&produced, &consumers.iter().collect::<Vec<_>>(), "round 1");
    for consumer in &consumers {
        let partitions: BTreeSet<u32> = consumer.records().iter().map(|line| line.partition).collect();
        assert_eq!(
            partitions.len(),
            2,
            "consumer {} should have printed records of exactly its two partitions, printed {partitions:?}",
            consumer.name
        );
    }

    // Kill one; it neither commits nor leaves.
    let victim_index = rng.random_range(0..3);
    let mut victim = consumers.remove(victim_index);
    victim.kill9();
    let killed_at = Instant::now();
    // A dead member keeps its place until its session times out: the coordinator does not
    // tie membership to a connection.
    let right_after = describe_group(&mut client, GROUP);
    if killed_at.elapsed() < Duration::from_millis(1_000) {
        assert_eq!(
            right_after.members.len(),
            3,
            "a SIGKILLed member must stay in the group until its session times out: {right_after:#?}"
        );
    }
    let victim_lines = victim.records();
    let victim_partitions: BTreeSet<u32> = victim_lines.iter().map(|line| line.partition).collect();
    // What the dead member had committed: nobody can change it until its partitions move.
    let victim_committed = committed_offsets(&mut client, GROUP, TOPIC, victim_partitions.iter().copied());
    eprintln!(
        "killed {} (partitions {victim_partitions:?}, committed {victim_committed:?}) after it printed {} records",
        victim.name,
        victim_lines.len()
    );
    produce_round(
        &mut client,
        TOPIC,
        PARTITIONS,
        2 * per_round,
        per_round,
        &mut produced,
    );

    let owners = tidelog_e2e::wait::try_poll_until(REBALANCE_TIMEOUT, || {
        balanced(&mut client, GROUP, TOPIC, 2, PARTITIONS)
    })
    .unwrap_or_else(|| {
        panic!(
            "after the SIGKILL the two survivors never owned three partitions each:\n{}",
            describe_text(addr, GROUP)
        )
    });
    // Its last heartbeat was at most one heartbeat interval (1 s: a third of the session)
    // before the kill, so its partitions cannot move much before 2 s after it.
    let moved_after = killed_at.elapsed();
    assert!(
        moved_after >= Duration::from_millis(1_500),
        "the killed member's partitions moved {moved_after:?} after the SIGKILL, before its 3 s session timed out"
    );
    eprintln!("partitions moved {moved_after:?} after the SIGKILL");
    let survivors: BTreeSet<String> = owners.keys().cloned().collect();
    assert!(
        survivors.is_subset(&first_members),
        "the survivors should keep their member ids: before {first_members:?}, after {survivors:?}"
    );
    let survivor_refs: Vec<&GroupConsumer> = consumers.iter().collect();
    wait_until_all_consumed(&produced, &survivor_refs, "after the SIGKILL, the survivors");
    for consumer in consumers.iter() {
        let partitions: BTreeSet<u32> = consumer.records().iter().map(|line| line.partition).collect();
        assert_eq!(
            partitions.len(),
            3,
            "survivor {} should have printed records of three partitions, printed {partitions:?}",
            consumer.name
        );
    }

    // Every line is a produced record; only the killed consumer's partitions may repeat, and
    // only records that it printed.
    let all_lines: Vec<(String, ConsumedLine)> = std::iter::once(&victim)
        .chain(consumers.iter())
        .flat_map(|consumer| {
            consumer
                .records()
                .into_iter()
                .map(|line| (consumer.name.clone(), line))
        })
        .collect();
    let mut seen: BTreeMap<(u32, i64), Vec<String>> = BTreeMap::new();
    for (name, line) in &all_lines {
        assert!(
            !round_zero.contains_key(&(line.partition, line.offset)),
            "consumer {name} printed {line:?}, a record of round 0 that the group had already committed"
        );
        assert_lines_match(&produced, name, std::slice::from_ref(line));
        seen.entry((line.partition, line.offset))
            .or_default()
            .push(name.clone());
    }
    let victim_printed: BTreeSet<(u32, i64)> = victim_lines
        .iter()
        .map(|line| (line.partition, line.offset))
        .collect();
    for (record, printers) in &seen {
        if printers.len() > 1 {
            assert!(
                printers.len() == 2 && victim_printed.contains(record) && printers.contains(&victim.name),
                "record {record:?} printed by {printers:?}: a duplicate is only allowed for a record the killed \
                 consumer {} printed and may not have committed",
                victim.name
            );
        }
    }
    // The new owner of each of the dead member's partitions starts exactly at its committed
    // offset (at the beginning where it had committed nothing: --from-beginning).
    for (partition, committed) in &victim_committed {
        let first_after = consumers
            .iter()
            .flat_map(|consumer| consumer.records())
            .filter(|line| line.partition == *partition)
            .map(|line| line.offset)
            .min();
        assert_eq!(
            first_after,
            Some((*committed).max(0)),
            "the survivor that took partition {partition} should start at the dead member's committed offset \
             {committed}"
        );
    }
    // A surviving consumer never prints a record twice itself.
    for consumer in &consumers {
        let records = consumer.records();
        let distinct: BTreeSet<(u32, i64)> =
            records.iter().map(|line| (line.partition, line.offset)).collect();
        assert_eq!(
            distinct.len(),
            records.len(),
            "survivor {} printed some record twice",
            consumer.name
        );
    }

    // Graceful stop: each survivor commits what it printed and leaves.
    for consumer in consumers.iter_mut() {
        let status = consumer.signal_and_wait(Signal::SIGTERM, EXIT_TIMEOUT);
        assert!(
            status.success(),
            "consumer {} should exit 0 on SIGTERM, got {status}; stderr:\n{}",
            consumer.name,
            consumer.stderr()
        );
    }
    let group = describe_group(&mut client, GROUP);
    assert!(
        group.members.is_empty(),
        "stopped consumers should have left the group: {group:#?}"
    );
    let committed = committed_offsets(&mut client, GROUP, TOPIC, 0..PARTITIONS);
    for partition in 0..PARTITIONS {
        let end = client.high_watermark(TOPIC, partition);
        assert_eq!(
            committed.get(&partition),
            Some(&end),
            "after every record was printed and the consumers stopped gracefully, partition {partition} should \
             be committed at its log end: {committed:?}"
        );
    }

    // A new consumer resumes right after the committed offsets: it prints the new records only.
    let mut fresh = Produced::new();
    produce_round(
        &mut client,
        TOPIC,
        PARTITIONS,
        3 * per_round,
        per_round,
        &mut fresh,
    );
    let mut newcomer = GroupConsumer::spawn("newcomer", addr, &args);
    wait_until_all_consumed(&fresh, &[&newcomer], "the consumer started after the commits");
    // SIGINT (Ctrl-C) ends it as gracefully as SIGTERM: commit, then leave.
    let status = newcomer.signal_and_wait(Signal::SIGINT, EXIT_TIMEOUT);
    assert!(
        status.success(),
        "newcomer exit on SIGINT: {status}; stderr:\n{}",
        newcomer.stderr()
    );
    let group = describe_group(&mut client, GROUP);
    assert!(
        group.members.is_empty(),
        "after SIGINT the consumer should have left: {group:#?}"
    );
    let committed = committed_offsets(&mut client, GROUP, TOPIC, 0..PARTITIONS);
    for partition in 0..PARTITIONS {
        assert_eq!(
            committed[&partition],
            client.high_watermark(TOPIC, partition),
            "after SIGINT the consumer should have committed what it printed: {committed:?}"
        );
    }
    let printed = newcomer.records();
    assert_lines_match(&fresh, "newcomer", &printed);
    assert_eq!(
        printed.len(),
        fresh.len(),
        "the newcomer should print exactly the records produced after the commits, once each"
    );
}

#[test]
fn zombie_member_commit_is_refused_after_its_partitions_moved() {
    const TOPIC: &str = "payments";
    const GROUP: &str = "ledger";
    let (_dir, broker) = start_broker("group-zombie");
    let addr = broker.addr();
    let mut admin = RawClient::connect_or_panic(addr);
    admin.create_topic(TOPIC, 2, None);
    for partition in 0..2 {
        let values: Vec<String> = (0..10).map(|n| format!("p{partition}-{n}")).collect();
        produce_values(&mut admin, TOPIC, partition, &values);
    }
    let both: BTreeSet<u32> = [0, 1].into();

    let mut zombie = RawMember::join(addr, GROUP, TOPIC, 2_000);
    assert!(
        zombie.heartbeat_until_owning(&both, Duration::from_secs(10)),
        "a lone member should get both partitions: owns {:?}\n{}",
        zombie.owned,
        describe_text(addr, GROUP)
    );
    assert_eq!(
        zombie.commit(&[(0, 4), (1, 6)]),
        vec![ErrorCode::None, ErrorCode::None],
        "the owner's commit"
    );
    let zombie_id = zombie.member_id.clone();
    let zombie_epoch = zombie.epoch;

    // The zombie stops heartbeating; a second member joins and, once the zombie's session has
    // ended, gets both partitions.
    let mut survivor = RawMember::join(addr, GROUP, TOPIC, 10_000);
    assert!(
        survivor.heartbeat_until_owning(&both, REBALANCE_TIMEOUT),
        "after the zombie's 2 s session the other member should own both partitions: owns {:?}\n{}",
        survivor.owned,
        describe_text(addr, GROUP)
    );
    let group = describe_group(&mut admin, GROUP);
    assert_eq!(group.members.len(), 1, "the zombie should be gone: {group:#?}");

    let refused = offset_commit_as(
        &mut admin,
        GROUP,
        &zombie_id,
        zombie_epoch,
        TOPIC,
        &[(0, 9), (1, 9)],
    );
    for code in &refused {
        assert!(
            matches!(
                code,
                ErrorCode::UnknownMemberId | ErrorCode::StaleMemberEpoch | ErrorCode::FencedMemberEpoch
            ),
            "the zombie's commit should be refused with UNKNOWN_MEMBER_ID or a stale/fenced epoch, got {refused:?}"
        );
    }
    assert_eq!(
        committed_offsets(&mut admin, GROUP, TOPIC, 0..2),
        BTreeMap::from([(0, 4), (1, 6)]),
        "a refused commit must leave the committed offsets as they were"
    );

    // The zombie's heartbeat is refused too, so it learns it must rejoin.
    let response = zombie.heartbeat();
    assert!(
        matches!(
            response.error(),
            ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch
        ),
        "a removed member's heartbeat should be refused: {response:?}"
    );
    // The current owner commits fine.
    assert_eq!(survivor.commit(&[(0, 7)]), vec![ErrorCode::None]);
    assert_eq!(
        committed_offsets(&mut admin, GROUP, TOPIC, 0..2),
        BTreeMap::from([(0, 7), (1, 6)])
    );
}

fn offset_commit_as(
    client: &mut RawClient,
    group: &str,
    member_id: &str,
    epoch: i32,
    topic: &str,
    offsets: &[(u32, i64)],
) -> Vec<ErrorCode> {
    tidelog_e2e::groups::offset_commit(client, group, member_id, epoch, topic, offsets)
}

#[test]
fn committed_offsets_survive_a_broker_sigkill() {
    const TOPIC: &str = "events";
    const GROUP: &str = "audit";
    const PARTITIONS: u32 = 3;
    let (_dir, mut broker) = start_broker("group-offsets-crash");
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic(TOPIC, PARTITIONS, None);
    let mut produced = Produced::new();
    produce_round(&mut client, TOPIC, PARTITIONS, 0, 30, &mut produced);

    // A member commits some offsets through the group protocol ...
    let mut member = RawMember::join(broker.addr(), GROUP, TOPIC, 2_000);
    let all: BTreeSet<u32> = (0..PARTITIONS).collect();
    assert!(
        member.heartbeat_until_owning(&all, Duration::from_secs(10)),
        "a lone member should own every partition"
    );
    assert_eq!(member.commit(&[(0, 3), (1, 5), (2, 7)]), vec![ErrorCode::None; 3]);
    let response = member.leave();
    assert_eq!(response.error(), ErrorCode::None, "leave: {response:?}");
    let before = committed_offsets(&mut client, GROUP, TOPIC, 0..PARTITIONS);
    assert_eq!(before, BTreeMap::from([(0, 3), (1, 5), (2, 7)]));

    broker.kill9();
    broker.restart();
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    assert_eq!(
        committed_offsets(&mut client, GROUP, TOPIC, 0..PARTITIONS),
        before,
        "acknowledged commits must survive a SIGKILL of the broker"
    );
    let describe = run_cli(Some(addr), &["group", "describe", GROUP], b"");
    describe.assert_success();
    let rows = described_partitions(&describe.stdout, TOPIC);
    for (partition, offset) in &before {
        assert_eq!(
            rows.get(partition).and_then(|row| row.committed),
            Some(*offset),
            "group describe should show {TOPIC} partition {partition} committed at {offset}:\n{describe}"
        );
    }

    // A consumer of the group resumes after them (--from-beginning does not apply: the group
    // has committed offsets).
    let output = run_cli(
        Some(addr),
        &consume_args(TOPIC, GROUP, &["--from-beginning", "--timeout-ms", "2000"]),
        b"",
    );
    output.assert_success();
    let printed: Vec<ConsumedLine> = output
        .stdout_lines()
        .iter()
        .map(|line| parse_offset_line(line))
        .collect();
    assert_lines_match(&produced, "consumer after restart", &printed);
    let printed_keys: BTreeSet<(u32, i64)> =
        printed.iter().map(|line| (line.partition, line.offset)).collect();
    let expected: BTreeSet<(u32, i64)> = produced
        .keys()
        .filter(|(partition, offset)| *offset >= before[partition])
        .copied()
        .collect();
    assert_eq!(
        printed_keys, expected,
        "after the restart the group's consumer should print exactly the records after the committed offsets"
    );
    assert_eq!(
        printed.len(),
        expected.len(),
        "no record printed twice:\n{output}"
    );
}

#[test]
fn max_messages_commits_exactly_what_was_printed() {
    const TOPIC: &str = "clicks";
    const GROUP: &str = "sessions";
    const PARTITIONS: u32 = 3;
    let mut rng = test_rng("max_messages_commits_exactly_what_was_printed");
    let (_dir, broker) = start_broker("group-max-messages");
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    client.create_topic(TOPIC, PARTITIONS, None);
    let mut produced = Produced::new();
    let total = rng.random_range(30..60);
    produce_round(&mut client, TOPIC, PARTITIONS, 0, total, &mut produced);

    let mut printed_so_far: BTreeSet<(u32, i64)> = BTreeSet::new();
    let mut remaining = total;
    for run in 0..20 {
        if remaining == 0 {
            break;
        }
        let batch = rng.random_range(1..=remaining.min(15));
        let max = batch.to_string();
        let output = run_cli(
            Some(addr),
            &consume_args(TOPIC, GROUP, &["--from-beginning", "--max-messages", &max]),
            b"",
        );
        output.assert_success();
        let printed: Vec<ConsumedLine> = output
            .stdout_lines()
            .iter()
            .map(|line| parse_offset_line(line))
            .collect();
        assert_eq!(
            printed.len(),
            batch,
            "run {run}: --max-messages {batch} prints {batch} lines:\n{output}"
        );
        assert_lines_match(&produced, &format!("run {run}"), &printed);
        let committed_before: BTreeMap<u32, i64> = (0..PARTITIONS)
            .map(|partition| {
                let next = printed_so_far
                    .iter()
                    .filter(|(p, _)| *p == partition)
                    .map(|(_, offset)| offset + 1)
                    .max()
                    .unwrap_or(0);
                (partition, next)
            })
            .collect();
        for line in &printed {
            assert!(
                printed_so_far.insert((line.partition, line.offset)),
                "run {run} printed {line:?} again: the previous run committed it"
            );
        }
        // Per partition, the run continues exactly where the last commit left off.
        for partition in 0..PARTITIONS {
            let offsets: Vec<i64> = printed
                .iter()
                .filter(|line| line.partition == partition)
                .map(|line| line.offset)
                .collect();
            let expected: Vec<i64> = (committed_before[&partition]..).take(offsets.len()).collect();
            assert_eq!(
                offsets, expected,
                "run {run}, partition {partition}: should continue at the committed offset without a gap"
            );
        }
        // And it committed exactly what it printed.
        let committed = committed_offsets(&mut client, GROUP, TOPIC, 0..PARTITIONS);
        for partition in 0..PARTITIONS {
            let next = printed_so_far
                .iter()
                .filter(|(p, _)| *p == partition)
                .map(|(_, offset)| offset + 1)
                .max();
            let got = committed[&partition];
            match next {
                Some(next) => assert_eq!(
                    got, next,
                    "run {run}: partition {partition} should be committed right after the last printed record"
                ),
                None => assert!(
                    got == -1 || got == 0,
                    "run {run}: nothing printed from partition {partition}, yet it is committed at {got}"
                ),
            }
        }
        remaining -= batch;
    }
    assert_eq!(remaining, 0, "bounded loop ended early");
    assert_eq!(
        printed_so_far,
        produced.keys().copied().collect::<BTreeSet<_>>(),
        "the runs together print every record exactly once"
    );
    // Nothing left: a run with a silence timeout prints nothing and exits 0.
    let output = run_cli(
        Some(addr),
        &consume_args(TOPIC, GROUP, &["--from-beginning", "--timeout-ms", "1000"]),
        b"",
    );
    output.assert_success();
    assert!(
        output.stdout.is_empty(),
        "everything was committed, yet:\n{output}"
    );
}

#[test]
fn group_membership_survives_a_broker_sigkill() {
    const TOPIC: &str = "metrics";
    const GROUP: &str = "rollup";
    let (_dir, mut broker) = start_broker("group-members-crash");
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic(TOPIC, 2, None);
    // A long session, so the member is still within it after the restart.
    let mut member = RawMember::join(broker.addr(), GROUP, TOPIC, 60_000);
    let both: BTreeSet<u32> = [0, 1].into();
    assert!(
        member.heartbeat_until_owning(&both, Duration::from_secs(10)),
        "a lone member should own both partitions"
    );
    let before = describe_group(&mut client, GROUP);

    broker.kill9();
    broker.restart();
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    let after = describe_group(&mut client, GROUP);
    assert_eq!(after.error(), ErrorCode::None, "{after:#?}");
    assert_eq!(
        ownership(&after, TOPIC),
        ownership(&before, TOPIC),
        "members and assignments acknowledged before the SIGKILL must survive it"
    );

    // The member carries on over a new connection with its id and epoch, keeping its
    // partitions, and its commits are accepted.
    member.client = RawClient::connect_or_panic(addr);
    let response = member.heartbeat();
    assert_eq!(
        response.error(),
        ErrorCode::None,
        "a member within its session should be accepted after the broker restarts: {response:?}"
    );
    assert_eq!(member.owned, both);
    assert_eq!(member.commit(&[(0, 0), (1, 0)]), vec![ErrorCode::None; 2]);
    let response = member.leave();
    assert_eq!(response.error(), ErrorCode::None, "leave: {response:?}");
    assert!(describe_group(&mut client, GROUP).members.is_empty());
}

/// Produces one record to every partition per step, paced, until told to stop (or a bounded
/// number of steps); returns what it produced.
fn spawn_steady_producer(
    addr: SocketAddr,
    topic: &'static str,
    partitions: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Produced> {
    const STEPS_MAX: usize = 5_000;
    const PACE: Duration = Duration::from_millis(20);
    std::thread::spawn(move || {
        let mut client = RawClient::connect_or_panic(addr);
        let mut produced = Produced::new();
        for step in 0..STEPS_MAX {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let first = step * partitions as usize;
            produce_round(
                &mut client,
                topic,
                partitions,
                first,
                partitions as usize,
                &mut produced,
            );
            // Pacing, not synchronisation: records keep arriving while the group rebalances.
            std::thread::sleep(PACE);
        }
        produced
    })
}

#[test]
fn graceful_rebalances_while_producing_print_every_record_exactly_once() {
    const TOPIC: &str = "ticks";
    const GROUP: &str = "charts";
    const PARTITIONS: u32 = 6;
    let (_dir, broker) = start_broker("group-graceful-rebalance");
    let addr = broker.addr();
    let mut client = RawClient::connect_or_panic(addr);
    client.create_topic(TOPIC, PARTITIONS, None);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_steady_producer(addr, TOPIC, PARTITIONS, stop.clone());

    let args = consume_args(TOPIC, GROUP, &["--from-beginning"]);
    let mut consumers = vec![GroupConsumer::spawn("c0", addr, &args)];
    tidelog_e2e::wait::try_poll_until(DELIVERY_TIMEOUT, || {
        (!consumers[0].lines().is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("the first consumer printed nothing: {}", consumers[0].stderr()));
    // Scale out to three, one at a time: each join moves partitions away from running members,
    // which commit what they printed before they release them.
    for count in 2..=3 {
        consumers.push(GroupConsumer::spawn(&format!("c{}", count - 1), addr, &args));
        tidelog_e2e::wait::try_poll_until(REBALANCE_TIMEOUT, || {
            balanced(&mut client, GROUP, TOPIC, count, PARTITIONS)
        })
        .unwrap_or_else(|| {
            panic!(
                "{count} consumers never balanced:\n{}",
                describe_text(addr, GROUP)
            )
        });
    }
    // Scale in: the first one leaves gracefully and its partitions move on.
    let status = consumers[0].signal_and_wait(Signal::SIGTERM, EXIT_TIMEOUT);
    assert!(
        status.success(),
        "c0 exit on SIGTERM: {status}\n{}",
        consumers[0].stderr()
    );
    tidelog_e2e::wait::try_poll_until(REBALANCE_TIMEOUT, || {
        balanced(&mut client, GROUP, TOPIC, 2, PARTITIONS)
    })
    .unwrap_or_else(|| panic!("two consumers never balanced:\n{}", describe_text(addr, GROUP)));

    stop.store(true, Ordering::Relaxed);
    let produced = producer.join().expect("producer thread");
    let refs: Vec<&GroupConsumer> = consumers.iter().collect();
    wait_until_all_consumed(&produced, &refs, "after the rebalances");
    let mut printers: BTreeMap<(u32, i64), Vec<String>> = BTreeMap::new();
    for consumer in &consumers {
        let lines = consumer.records();
        assert_lines_match(&produced, &consumer.name, &lines);
        for line in lines {
            printers
                .entry((line.partition, line.offset))
                .or_default()
                .push(consumer.name.clone());
        }
    }
    let repeated: Vec<_> = printers
        .iter()
        .filter(|(_, names)| names.len() > 1)
        .take(20)
        .collect();
    assert!(
        repeated.is_empty(),
        "graceful rebalances commit before releasing, so no record should be printed twice; \
         {} of {} records were (first 20): {repeated:?}",
        printers.values().filter(|names| names.len() > 1).count(),
        produced.len()
    );
    eprintln!(
        "{} records over {} partitions, each printed once through 3 rebalances",
        produced.len(),
        PARTITIONS
    );
}
