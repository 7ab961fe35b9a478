//! End-to-end tests of consumer groups (GroupConsumer, group admin) against an in-process
//! broker whose heartbeat interval is short, so rebalances take milliseconds.

// Test code: a failed expectation is a failed test (STYLE.md allows unwrap/expect in tests).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestBroker;
use futures::StreamExt;
use tidelog_client::{
    AutoCommit, Client, Error, GroupConfig, GroupConsumer, GroupState, NewTopic, Offset, OffsetReset,
    OffsetsToCommit, PartitionId, Producer, ProducerConfig, ProducerRecord, RebalanceListener, Record, Seek,
    TopicName, TopicPartition,
};
use tokio::time::Instant;

/// Upper bound on waiting for anything that is known to happen.
const DEADLINE: Duration = Duration::from_secs(20);
/// One poll while driving several consumers in turn.
const SLICE: Duration = Duration::from_millis(20);

async fn broker() -> TestBroker {
    TestBroker::start_with(|config| config.groups.heartbeat_interval_ms = 50).await
}

async fn topic(client: &Client, name: &str, partitions: u32) {
    client
        .admin()
        .create_topic(NewTopic::new(name, partitions))
        .await
        .expect("create topic");
}

/// Sends `per_partition` records to each partition; values are "p<partition>-<i>".
async fn produce(client: &Client, name: &str, partitions: u32, per_partition: u32, tag: &str) {
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let mut deliveries = Vec::new();
    for p in 0..partitions {
        for i in 0..per_partition {
            let record = ProducerRecord::new(name, format!("{tag}p{p}-{i}")).partition(PartitionId::new(p));
            deliveries.push(producer.send(record).await.expect("send"));
        }
    }
    for delivery in deliveries {
        delivery.await.expect("delivered");
    }
    producer.close().await;
}

fn config(group: &str) -> GroupConfig {
    GroupConfig::new(group)
        .offset_reset(OffsetReset::Earliest)
        .session_timeout(Duration::from_secs(6))
}

async fn join(client: &Client, config: GroupConfig, name: &str) -> GroupConsumer {
    GroupConsumer::subscribe(client.clone(), config, [name])
        .await
        .expect("subscribe")
}

fn tp(name: &str, partition: u32) -> TopicPartition {
    (TopicName::new(name), PartitionId::new(partition))
}

fn key(record: &Record) -> (u32, i64) {
    (record.partition().get(), record.offset().get())
}

/// Polls every consumer in turn, collecting records, until `done` holds.
async fn drive(
    consumers: &mut [&mut GroupConsumer],
    seen: &mut Vec<Vec<Record>>,
    mut done: impl FnMut(&[&mut GroupConsumer], &[Vec<Record>]) -> bool,
) {
    // Grow only: records from consumers no longer driven still count.
    if seen.len() < consumers.len() {
        seen.resize(consumers.len(), Vec::new());
    }
    let deadline = Instant::now() + DEADLINE;
    while !done(consumers, seen) {
        assert!(
            Instant::now() < deadline,
            "condition not reached in {DEADLINE:?}: assignments {:?}, {} distinct records",
            consumers.iter().map(|c| c.assignment()).collect::<Vec<_>>(),
            distinct(seen).len()
        );
        for (index, consumer) in consumers.iter_mut().enumerate() {
            seen[index].extend(consumer.poll(SLICE).await.expect("poll"));
        }
    }
}

fn distinct(seen: &[Vec<Record>]) -> BTreeSet<(u32, i64)> {
    seen.iter().flatten().map(key).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Assigned(&'static str, Vec<TopicPartition>),
    Revoked(&'static str, Vec<TopicPartition>),
    Lost(&'static str, Vec<TopicPartition>),
}

/// Appends events to one log shared by several members, so their order is global.
#[derive(Debug, Clone)]
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<Event>>>,
}

impl RebalanceListener for Recorder {
    fn on_partitions_assigned(&mut self, partitions: &[TopicPartition]) {
        self.log
            .lock()
            .unwrap()
            .push(Event::Assigned(self.name, partitions.to_vec()));
    }

    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition], _commit: &mut OffsetsToCommit) {
        self.log
            .lock()
            .unwrap()
            .push(Event::Revoked(self.name, partitions.to_vec()));
    }

    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        self.log
            .lock()
            .unwrap()
            .push(Event::Lost(self.name, partitions.to_vec()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_the_partitions_and_the_survivor_continues_without_loss() {
    let broker = broker().await;
    let client = broker.client().await;
    topic(&client, "orders", 4).await;
    produce(&client, "orders", 4, 10, "a").await;

    let mut first = join(&client, config("split"), "orders").await;
    let mut second = join(&client, config("split"), "orders").await;
    let mut seen = Vec::new();
    drive(&mut [&mut first, &mut second], &mut seen, |members, seen| {
        members.iter().all(|m| m.assignment().len() == 2) && distinct(seen).len() == 40
    })
    .await;
    let one: BTreeSet<_> = first.assignment().into_iter().collect();
    let two: BTreeSet<_> = second.assignment().into_iter().collect();
    assert!(one.is_disjoint(&two), "{one:?} and {two:?} overlap");
    assert_eq!(one.len() + two.len(), 4);

    // The first member leaves (committing what it was handed); the second takes everything
    // and continues from the committed offsets.
    first.close().await.expect("close");
    produce(&client, "orders", 4, 10, "b").await;
    drive(&mut [&mut second], &mut seen, |members, seen| {
        members[0].assignment().len() == 4 && distinct(seen).len() == 80
    })
    .await;
    let expected: BTreeSet<(u32, i64)> = (0..4).flat_map(|p| (0..20).map(move |o| (p, o))).collect();
    assert_eq!(distinct(&seen), expected, "every produced record was consumed");
    second.close().await.expect("close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_reported_before_the_partitions_are_assigned_elsewhere() {
    let broker = broker().await;
    let client = broker.client().await;
    topic(&client, "events", 4).await;
    let log = Arc::new(Mutex::new(Vec::new()));

    let mut first = join(&client, config("listen"), "events").await;
    first.set_rebalance_listener(Recorder {
        name: "first",
        log: log.clone(),
    });
    let mut seen = Vec::new();
    drive(&mut [&mut first], &mut seen, |members, _| {
        members[0].assignment().len() == 4
    })
    .await;

    let mut second = join(&client, config("listen"), "events").await;
    second.set_rebalance_listener(Recorder {
        name: "second",
        log: log.clone(),
    });
    drive(&mut [&mut first, &mut second], &mut seen, |members, _| {
        members.iter().all(|m| m.assignment().len() == 2)
    })
    .await;

    let events = log.lock().unwrap().clone();
    let all: Vec<TopicPartition> = (0..4).map(|p| tp("events", p)).collect();
    assert_eq!(events[0], Event::Assigned("first", all));
    let revoked = events
        .iter()
        .position(|e| matches!(e, Event::Revoked("first", _)))
        .expect("first revoked some");
    let assigned = events
        .iter()
        .position(|e| matches!(e, Event::Assigned("second", _)))
        .expect("second got some");
    assert!(
        revoked < assigned,
        "revoked before assigned elsewhere: {events:?}"
    );
    let (Event::Revoked(_, given_up), Event::Assigned(_, taken)) = (&events[revoked], &events[assigned])
    else {
        unreachable!()
    };
    assert_eq!(given_up, taken);
    assert_eq!(*taken, second.assignment());
    assert!(!events.iter().any(|e| matches!(e, Event::Lost(..))), "{events:?}");

    // Closing reports the revocation of everything the member owns.
    second.close().await.expect("close");
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&Event::Revoked("second", taken.clone()))
    );
    first.close().await.expect("close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_and_auto_commits_persist_and_a_new_member_resumes_after_them() {
    let broker = broker().await;
    let client = broker.client().await;
    topic(&client, "log", 1).await;
    produce(&client, "log", 1, 10, "").await;
    let admin = client.admin();

    // Manual: consume all ten, commit up to offset 6, close without auto-commit.
    let mut manual = join(&client, config("resume").auto_commit(AutoCommit::Off), "log").await;
    let mut seen = Vec::new();
    drive(&mut [&mut manual], &mut seen, |_, seen| {
        distinct(seen).len() == 10
    })
    .await;
    manual
        .commit_offsets([("log", PartitionId::new(0), Offset::new(6))])
        .await
        .expect("commit");
    manual.close().await.expect("close");
    assert_eq!(
        admin.committed_offsets("resume").await.unwrap(),
        vec![(tp("log", 0), Offset::new(6))]
    );

    // A new member starts right after the commit, through the stream; commit_sync commits what
    // the stream handed out.
    let mut resumed = join(&client, config("resume").auto_commit(AutoCommit::Off), "log").await;
    let first = tokio::time::timeout(DEADLINE, resumed.stream().next())
        .await
        .expect("a record in time")
        .expect("stream goes on")
        .expect("record");
    assert_eq!(first.offset(), Offset::new(6));
    resumed.commit_sync().await.expect("commit");
    assert_eq!(
        resumed.committed(&[tp("log", 0)]).await.unwrap(),
        BTreeMap::from([(tp("log", 0), Some(Offset::new(7)))])
    );
    resumed.close().await.expect("close");

    // Auto-commit on an interval commits handed-out positions without close.
    let auto = config("resume").auto_commit(AutoCommit::Interval(Duration::from_millis(50)));
    let mut auto = join(&client, auto, "log").await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        seen.extend(auto.poll(SLICE).await.expect("poll"));
        if admin.committed_offsets("resume").await.unwrap() == vec![(tp("log", 0), Offset::new(10))] {
            break;
        }
        assert!(Instant::now() < deadline, "auto-commit never reached offset 10");
    }
    assert_eq!(seen.first().map(Record::offset), Some(Offset::new(7)));

    // And close commits under auto-commit.
    produce(&client, "log", 1, 5, "more").await;
    let mut more = Vec::new();
    drive(&mut [&mut auto], &mut more, |_, seen| distinct(seen).len() == 5).await;
    auto.close().await.expect("close");
    assert_eq!(
        admin.committed_offsets("resume").await.unwrap(),
        vec![(tp("log", 0), Offset::new(15))]
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_policy_error_reports_a_partition_without_a_committed_offset() {
    let broker = broker().await;
    let client = broker.client().await;
    topic(&client, "strict", 1).await;
    produce(&client, "strict", 1, 3, "").await;

    let mut consumer = join(
        &client,
        config("strict").offset_reset(OffsetReset::Error),
        "strict",
    )
    .await;
    let deadline = Instant::now() + DEADLINE;
    let error = loop {
        match consumer.poll(SLICE).await {
            Err(error) => break error,
            Ok(records) => assert!(records.is_empty(), "records without a position"),
        }
        assert!(Instant::now() < deadline, "no error in time");
    };
    match &error {
        Error::NoCommittedOffset {
            group,
            topic,
            partition,
        } => {
            assert_eq!(
                (group.as_str(), topic.as_str(), partition.get()),
                ("strict", "strict", 0)
            );
        }
        other => panic!("expected NoCommittedOffset, got {other:?}"),
    }
    // Seeking gives it a position; then records flow.
    consumer
        .seek("strict", PartitionId::new(0), Seek::Earliest)
        .await
        .expect("seek");
    let mut seen = Vec::new();
    drive(&mut [&mut consumer], &mut seen, |_, seen| {
        distinct(seen).len() == 3
    })
    .await;
    consumer.close().await.expect("close");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_describes_resets_and_deletes_groups() {
    let broker = broker().await;
    let client = broker.client().await;
    let admin = client.admin();
    topic(&client, "admin", 2).await;
    produce(&client, "admin", 2, 5, "").await;

    let mut member = join(&client, config("ops").auto_commit(AutoCommit::Off), "admin").await;
    let mut seen = Vec::new();
    drive(&mut [&mut member], &mut seen, |members, seen| {
        members[0].assignment().len() == 2 && distinct(seen).len() == 10
    })
    .await;
    member
        .commit_offsets([("admin", PartitionId::new(0), Offset::new(3))])
        .await
        .expect("commit");

    let listed = admin.list_groups().await.unwrap();
    let ops = listed.iter().find(|g| g.group_id() == "ops").expect("listed");
    assert_eq!(ops.members(), 1);

    let described = admin.describe_group("ops").await.unwrap();
    assert_eq!(described.members().len(), 1);
    let member_id = member.member_id().expect("joined");
    assert_eq!(described.members()[0].member_id(), member_id);
    let offsets: Vec<_> = described
        .offsets()
        .iter()
        .map(|o| {
            (
                o.partition().get(),
                o.committed(),
                o.log_end_offset(),
                o.lag(),
                o.member_id(),
            )
        })
        .collect();
    assert_eq!(
        offsets,
        vec![
            (
                0,
                Some(Offset::new(3)),
                Offset::new(5),
                Some(2),
                Some(member_id.as_str())
            ),
            (1, None, Offset::new(5), None, Some(member_id.as_str())),
        ]
    );

    // With a member in the group, resets and deletes are refused.
    let refused = admin
        .reset_offsets("ops", "admin", Seek::Earliest)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::GroupNotEmpty { .. }), "{refused:?}");
    let refused = admin.delete_group("ops").await.unwrap_err();
    assert!(matches!(refused, Error::GroupNotEmpty { .. }), "{refused:?}");
    member.close().await.expect("close");

    let described = admin.describe_group("ops").await.unwrap();
    assert_eq!(*described.state(), GroupState::Empty);
    assert!(described.members().is_empty());

    let p = |n| PartitionId::new(n);
    let o = Offset::new;
    assert_eq!(
        admin.reset_offsets("ops", "admin", Seek::Latest).await.unwrap(),
        vec![(p(0), o(5)), (p(1), o(5))]
    );
    assert_eq!(
        admin
            .reset_offsets("ops", "admin", Seek::Offset(o(2)))
            .await
            .unwrap(),
        vec![(p(0), o(2)), (p(1), o(2))]
    );
    // Clamped into the log.
    assert_eq!(
        admin
            .reset_offsets("ops", "admin", Seek::Offset(o(99)))
            .await
            .unwrap(),
        vec![(p(0), o(5)), (p(1), o(5))]
    );
    // Records were stamped at send time: a timestamp before them finds the first.
    assert_eq!(
        admin
            .reset_offsets("ops", "admin", Seek::Timestamp(0))
            .await
            .unwrap(),
        vec![(p(0), o(0)), (p(1), o(0))]
    );
    assert_eq!(
        admin.committed_offsets("ops").await.unwrap(),
        vec![(tp("admin", 0), o(0)), (tp("admin", 1), o(0))]
    );
    let missing_topic = admin
        .reset_offsets("ops", "nope", Seek::Earliest)
        .await
        .unwrap_err();
    assert!(
        matches!(missing_topic, Error::UnknownTopicOrPartition { .. }),
        "{missing_topic:?}"
    );

    admin.delete_group("ops").await.expect("delete");
    let gone = admin.describe_group("ops").await.unwrap_err();
    assert!(matches!(gone, Error::GroupNotFound { .. }), "{gone:?}");
    let gone = admin.delete_group("ops").await.unwrap_err();
    assert!(matches!(gone, Error::GroupNotFound { .. }), "{gone:?}");
    assert!(!admin
        .list_groups()
        .await
        .unwrap()
        .iter()
        .any(|g| g.group_id() == "ops"));
    broker.stop().await;
}
