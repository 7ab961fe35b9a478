//! Consumer groups and committed offsets over the native protocol (docs/protocol.md, "Consumer
//! groups"), against an in-process broker on 127.0.0.1 with hand-built frames.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{start_broker, RawClient};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tidelog_broker::BrokerHandle;
use tidelog_proto::pb::{self, request::Body, response, ErrorCode};

/// Longest a test waits for the broker to reach a state (session expiry and the like).
const CONDITION_DEADLINE: Duration = Duration::from_secs(15);

impl RawClient {
    async fn heartbeat(
        &mut self,
        request: pb::ConsumerGroupHeartbeatRequest,
    ) -> pb::ConsumerGroupHeartbeatResponse {
        match self.call_ok(Body::ConsumerGroupHeartbeat(request)).await {
            response::Body::ConsumerGroupHeartbeat(response) => response,
            other => panic!("unexpected {other:?}"),
        }
    }

    async fn commit(
        &mut self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: &[(&str, u32, i64)],
    ) -> Vec<(String, u32, i32)> {
        let mut topics: BTreeMap<&str, Vec<pb::offset_commit_request::Partition>> = BTreeMap::new();
        for (topic, partition, offset) in offsets {
            topics
                .entry(topic)
                .or_default()
                .push(pb::offset_commit_request::Partition {
                    partition: *partition,
                    offset: *offset,
                    metadata: "meta".into(),
                });
        }
        let body = Body::OffsetCommit(pb::OffsetCommitRequest {
            group_id: group.into(),
            member_id: member_id.into(),
            member_epoch,
            topics: topics
                .into_iter()
                .map(|(name, partitions)| pb::offset_commit_request::Topic {
                    name: name.into(),
                    partitions,
                })
                .collect(),
        });
        let response::Body::OffsetCommit(committed) = self.call_ok(body).await else {
            panic!()
        };
        committed
            .topics
            .into_iter()
            .flat_map(|topic| {
                topic
                    .partitions
                    .into_iter()
                    .map(move |p| (topic.name.clone(), p.partition, p.error))
            })
            .collect()
    }

    /// (topic, partition) -> committed offset, for the partitions asked (all when empty).
    async fn fetch_offsets(&mut self, group: &str, asked: &[(&str, &[u32])]) -> BTreeMap<(String, u32), i64> {
        let body = Body::OffsetFetch(pb::OffsetFetchRequest {
            group_id: group.into(),
            topics: asked
                .iter()
                .map(|(topic, partitions)| pb::TopicPartitions {
                    topic: (*topic).into(),
                    partitions: partitions.to_vec(),
                })
                .collect(),
        });
        let response::Body::OffsetFetch(fetched) = self.call_ok(body).await else {
            panic!()
        };
        assert_eq!(fetched.error, 0, "{}", fetched.message);
        fetched
            .topics
            .into_iter()
            .flat_map(|topic| {
                topic
                    .partitions
                    .into_iter()
                    .map(move |p| ((topic.name.clone(), p.partition), p.offset))
            })
            .collect()
    }

    async fn describe(&mut self, group: &str) -> pb::describe_groups_response::Group {
        let body = Body::DescribeGroups(pb::DescribeGroupsRequest {
            group_ids: vec![group.into()],
        });
        let response::Body::DescribeGroups(mut described) = self.call_ok(body).await else {
            panic!()
        };
        described.groups.remove(0)
    }

    async fn list(&mut self) -> Vec<(String, String, u32)> {
        let response::Body::ListGroups(listed) =
            self.call_ok(Body::ListGroups(pb::ListGroupsRequest {})).await
        else {
            panic!()
        };
        listed
            .groups
            .into_iter()
            .map(|g| (g.group_id, g.state, g.members))
            .collect()
    }

    async fn delete(&mut self, group: &str) -> i32 {
        let body = Body::DeleteGroups(pb::DeleteGroupsRequest {
            group_ids: vec![group.into()],
        });
        let response::Body::DeleteGroups(deleted) = self.call_ok(body).await else {
            panic!()
        };
        deleted.results[0].error
    }
}

fn join(group: &str, topics: &[&str]) -> pb::ConsumerGroupHeartbeatRequest {
    pb::ConsumerGroupHeartbeatRequest {
        group_id: group.into(),
        member_id: String::new(),
        member_epoch: 0,
        has_subscription: true,
        subscribed_topics: topics.iter().map(|t| (*t).into()).collect(),
        ..pb::ConsumerGroupHeartbeatRequest::default()
    }
}

fn beat(group: &str, member: &Member) -> pb::ConsumerGroupHeartbeatRequest {
    pb::ConsumerGroupHeartbeatRequest {
        group_id: group.into(),
        member_id: member.id.clone(),
        member_epoch: member.epoch,
        has_owned_partitions: true,
        owned_partitions: member
            .owned
            .iter()
            .map(|(topic, partitions)| pb::TopicPartitions {
                topic: topic.clone(),
                partitions: partitions.iter().copied().collect(),
            })
            .collect(),
        ..pb::ConsumerGroupHeartbeatRequest::default()
    }
}

/// A well-behaved member as a test drives it: applies every assignment at once.
#[derive(Debug, Default, Clone)]
struct Member {
    id: String,
    epoch: i32,
    owned: BTreeMap<String, BTreeSet<u32>>,
}

impl Member {
    fn apply(&mut self, response: &pb::ConsumerGroupHeartbeatResponse) {
        assert_eq!(response.error, 0, "{}", response.message);
        self.id.clone_from(&response.member_id);
        self.epoch = response.member_epoch;
        if response.has_assignment {
            self.owned = response
                .assignment
                .iter()
                .map(|tp| (tp.topic.clone(), tp.partitions.iter().copied().collect()))
                .collect();
            self.owned.retain(|_, partitions| !partitions.is_empty());
        }
    }

    fn count(&self) -> usize {
        self.owned.values().map(BTreeSet::len).sum()
    }
}

async fn start(dir: &std::path::Path) -> BrokerHandle {
    start_broker(dir, |config| {
        config.groups.session_timeout_ms_min = 300;
        config.groups.expiry_tick_ms = 20;
    })
    .await
}

#[tokio::test]
async fn members_join_commit_and_fetch_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut client = RawClient::connect(&broker).await;
    assert_eq!(client.create_topic("events", 4).await.error, 0);

    let mut first = Member::default();
    first.apply(&client.heartbeat(join("g", &["events"])).await);
    assert_eq!(first.id.len(), 22, "generated member id");
    assert!(first.epoch > 0);
    assert_eq!(first.count(), 4, "the only member gets every partition");

    let committed = client
        .commit(
            "g",
            &first.id,
            first.epoch,
            &[("events", 0, 10), ("events", 3, 7)],
        )
        .await;
    assert!(committed.iter().all(|(_, _, error)| *error == 0), "{committed:?}");
    // Committing the same offset again is harmless.
    let again = client
        .commit("g", &first.id, first.epoch, &[("events", 0, 10)])
        .await;
    assert_eq!(again[0].2, 0);

    let offsets = client.fetch_offsets("g", &[("events", &[0, 1, 3])]).await;
    assert_eq!(offsets[&("events".to_string(), 0)], 10);
    assert_eq!(offsets[&("events".to_string(), 1)], -1, "nothing committed");
    assert_eq!(offsets[&("events".to_string(), 3)], 7);
    assert_eq!(
        client.fetch_offsets("g", &[]).await.len(),
        2,
        "all committed partitions"
    );
    let unknown = client.fetch_offsets("nobody", &[("events", &[0])]).await;
    assert_eq!(
        unknown[&("events".to_string(), 0)],
        -1,
        "unknown group: -1, no error"
    );

    // A second member: the first is told to give up two partitions, and only after it
    // acknowledges does the second get them.
    let mut second = Member::default();
    second.apply(&client.heartbeat(join("g", &["events"])).await);
    assert_eq!(second.count(), 0, "nothing is free yet");
    first.apply(&client.heartbeat(beat("g", &first)).await);
    assert_eq!(first.count(), 2, "revocation: keeps only its target");
    second.apply(&client.heartbeat(beat("g", &second)).await);
    assert_eq!(second.count(), 0, "not released yet");
    first.apply(&client.heartbeat(beat("g", &first)).await);
    second.apply(&client.heartbeat(beat("g", &second)).await);
    assert_eq!(second.count(), 2);
    for (topic, partitions) in &first.owned {
        assert!(second
            .owned
            .get(topic)
            .is_none_or(|other| other.is_disjoint(partitions)));
    }

    // The first member can no longer commit a partition it gave away.
    let (moved_topic, moved) = second
        .owned
        .iter()
        .next()
        .map(|(t, p)| (t.clone(), *p.first().unwrap()))
        .unwrap();
    let zombie = client
        .commit("g", &first.id, first.epoch, &[(&moved_topic, moved, 99)])
        .await;
    assert_eq!(zombie[0].2, ErrorCode::StaleMemberEpoch as i32);

    let described = client.describe("g").await;
    assert_eq!(described.state, "stable");
    assert_eq!(described.members.len(), 2);
    assert_eq!(described.members[0].client_id, "broker-test");
    assert_eq!(described.members[0].client_host, "127.0.0.1");
    let p0 = described
        .offsets
        .iter()
        .find(|o| o.topic == "events" && o.partition == 0)
        .unwrap();
    assert_eq!((p0.committed_offset, p0.log_end_offset, p0.lag), (10, 0, 0));
    assert_eq!(
        described.offsets.len(),
        4,
        "every subscribed partition is described"
    );
    assert!(described.offsets.iter().all(|o| !o.member_id.is_empty()));
    assert_eq!(
        client.list().await,
        vec![("g".to_string(), "stable".to_string(), 2)]
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn group_errors_use_kafka_codes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut client = RawClient::connect(&broker).await;
    assert_eq!(client.create_topic("t", 2).await.error, 0);

    let bad = client.heartbeat(join("", &["t"])).await;
    assert_eq!(bad.error, ErrorCode::InvalidGroupId as i32);
    let bad = client
        .heartbeat(pb::ConsumerGroupHeartbeatRequest {
            session_timeout_ms: 1,
            ..join("g", &["t"])
        })
        .await;
    assert_eq!(bad.error, ErrorCode::InvalidSessionTimeout as i32);

    let mut member = Member::default();
    member.apply(&client.heartbeat(join("g", &["t"])).await);
    let unknown = client
        .heartbeat(beat(
            "g",
            &Member {
                id: "nobody".into(),
                ..member.clone()
            },
        ))
        .await;
    assert_eq!(unknown.error, ErrorCode::UnknownMemberId as i32);
    let fenced = client
        .heartbeat(beat(
            "g",
            &Member {
                epoch: member.epoch + 5,
                ..member.clone()
            },
        ))
        .await;
    assert_eq!(fenced.error, ErrorCode::FencedMemberEpoch as i32);

    let admin = client.commit("g", "", -1, &[("t", 0, 1)]).await;
    assert_eq!(
        admin[0].2,
        ErrorCode::NonEmptyGroup as i32,
        "admin commits need an empty group"
    );
    let ahead = client
        .commit("g", &member.id, member.epoch + 1, &[("t", 0, 1)])
        .await;
    assert_eq!(ahead[0].2, ErrorCode::FencedMemberEpoch as i32);
    let no_partition = client.commit("g", &member.id, member.epoch, &[("t", 9, 1)]).await;
    assert_eq!(no_partition[0].2, ErrorCode::UnknownTopicOrPartition as i32);
    assert_eq!(client.delete("g").await, ErrorCode::NonEmptyGroup as i32);
    assert_eq!(client.delete("nobody").await, ErrorCode::GroupIdNotFound as i32);
    assert_eq!(
        client.describe("nobody").await.error,
        ErrorCode::GroupIdNotFound as i32
    );

    // Leave, then the group can be reset by an admin and deleted with its offsets.
    let left = client
        .heartbeat(pb::ConsumerGroupHeartbeatRequest {
            member_epoch: -1,
            ..beat("g", &member)
        })
        .await;
    assert_eq!((left.error, left.member_epoch), (0, -1));
    let admin = client.commit("g", "", -1, &[("t", 0, 5)]).await;
    assert_eq!(admin[0].2, 0);
    assert_eq!(
        client.list().await,
        vec![("g".to_string(), "empty".to_string(), 0)]
    );
    assert_eq!(client.delete("g").await, 0);
    assert_eq!(
        client.fetch_offsets("g", &[("t", &[0])]).await[&("t".to_string(), 0)],
        -1
    );
    assert!(client.list().await.is_empty());
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_silent_member_expires_and_its_partitions_move() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut client = RawClient::connect(&broker).await;
    assert_eq!(client.create_topic("t", 4).await.error, 0);
    let mut quiet = Member::default();
    quiet.apply(
        &client
            .heartbeat(pb::ConsumerGroupHeartbeatRequest {
                session_timeout_ms: 300,
                ..join("g", &["t"])
            })
            .await,
    );
    let mut busy = Member::default();
    busy.apply(&client.heartbeat(join("g", &["t"])).await);
    // `quiet` never heartbeats again; `busy` keeps going until it owns everything.
    let deadline = tokio::time::Instant::now() + CONDITION_DEADLINE;
    while busy.count() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions never moved: {busy:?}"
        );
        busy.apply(&client.heartbeat(beat("g", &busy)).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let described = client.describe("g").await;
    assert_eq!(described.members.len(), 1);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn committed_offsets_and_group_state_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (member, epoch_before) = {
        let broker = start(dir.path()).await;
        let mut client = RawClient::connect(&broker).await;
        assert_eq!(client.create_topic("t", 3).await.error, 0);
        let mut member = Member::default();
        member.apply(&client.heartbeat(join("g", &["t"])).await);
        let committed = client
            .commit("g", &member.id, member.epoch, &[("t", 1, 42)])
            .await;
        assert_eq!(committed[0].2, 0);
        client.commit("offsets-only", "", -1, &[("t", 2, 7)]).await;
        let epoch = client.describe("g").await.group_epoch;
        broker.shutdown().await.unwrap();
        (member, epoch)
    };
    let broker = start(dir.path()).await;
    let mut client = RawClient::connect(&broker).await;
    assert_eq!(client.fetch_offsets("g", &[]).await[&("t".to_string(), 1)], 42);
    assert_eq!(
        client.fetch_offsets("offsets-only", &[]).await[&("t".to_string(), 2)],
        7
    );
    let described = client.describe("g").await;
    assert_eq!(described.group_epoch, epoch_before);
    assert_eq!(described.members[0].member_id, member.id);
    // The member carries on with its epoch and partitions as if nothing happened.
    let mut carried = member.clone();
    carried.apply(&client.heartbeat(beat("g", &member)).await);
    assert_eq!((carried.epoch, carried.count()), (member.epoch, 3));
    assert_eq!(
        client
            .commit("g", &member.id, member.epoch, &[("t", 1, 43)])
            .await[0]
            .2,
        0
    );
    broker.shutdown().await.unwrap();
}
