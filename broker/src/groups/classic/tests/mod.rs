//! Classic group tests with a fake clock: time moves only when a test says so, and a
//! waiting JoinGroup or SyncGroup is observed with `try_recv`, never by sleeping.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{
    ClassicState, Effects, JoinRequest, JoinResponse, JoinResult, MemberRef, Protocol, SyncRequest,
    SyncResult,
};
use crate::config::GroupsConfig;
use crate::error::GroupError;
use crate::groups::coordinator::{CommitPartition, Coordinator, Heartbeat};
use crate::groups::group::GroupState;

const GROUP: &str = "g";
const SESSION_MS: u32 = 10_000;
const REBALANCE_MS: u32 = 30_000;

struct Harness {
    coordinator: Coordinator,
    now: Instant,
}

fn protocols(names: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|name| Protocol {
            name: (*name).to_owned(),
            metadata: format!("meta-{name}").into_bytes(),
        })
        .collect()
}

fn join_request(member_id: &str, instance_id: Option<&str>) -> JoinRequest {
    JoinRequest {
        group_id: GROUP.into(),
        member_id: member_id.into(),
        instance_id: instance_id.map(str::to_owned),
        protocol_type: "consumer".into(),
        protocols: protocols(&["range", "roundrobin"]),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        require_known_member: false,
        client_id: "test".into(),
        client_host: "127.0.0.1".into(),
    }
}

fn member(member_id: &str) -> MemberRef {
    MemberRef {
        member_id: member_id.into(),
        instance_id: None,
    }
}

/// A receiver's answer if it has one by now.
fn answered<T>(receiver: &mut oneshot::Receiver<Result<T, GroupError>>) -> Option<Result<T, GroupError>> {
    match receiver.try_recv() {
        Ok(result) => Some(result),
        Err(oneshot::error::TryRecvError::Empty) => None,
        Err(oneshot::error::TryRecvError::Closed) => {
            Some(Err(GroupError::RebalanceInProgress("dropped".into())))
        }
    }
}

mod initial_delay;

impl Harness {
    /// A coordinator whose new groups rebalance at once (no initial rebalance delay), so a
    /// first join is answered without moving the clock.
    fn new() -> Self {
        Self::with_initial_delay(0)
    }

    fn with_initial_delay(initial_rebalance_delay_ms: u32) -> Self {
        Self {
            coordinator: Coordinator::new(GroupsConfig {
                initial_rebalance_delay_ms,
                ..GroupsConfig::default()
            }),
            now: Instant::now(),
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        let mut effects = Effects::default();
        self.coordinator.expire(self.now);
        self.coordinator.classic_expire(self.now, &mut effects);
        effects.deliver();
    }

    fn join(&mut self, request: JoinRequest) -> Result<oneshot::Receiver<JoinResult>, GroupError> {
        let mut effects = Effects::default();
        let receiver = self.coordinator.classic_join(self.now, request, &mut effects)?;
        effects.deliver();
        Ok(receiver)
    }

    /// Joins and expects an answer at once.
    fn join_now(&mut self, request: JoinRequest) -> JoinResponse {
        let mut receiver = self.join(request).expect("join accepted");
        answered(&mut receiver)
            .expect("answered at once")
            .expect("join succeeds")
    }

    fn sync(
        &mut self,
        member_id: &str,
        generation: i32,
        assignments: &[(&str, &[u8])],
    ) -> oneshot::Receiver<SyncResult> {
        let mut effects = Effects::default();
        let request = SyncRequest {
            group_id: GROUP.into(),
            member_id: member_id.into(),
            instance_id: None,
            generation,
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments: assignments
                .iter()
                .map(|(id, bytes)| ((*id).to_owned(), bytes.to_vec()))
                .collect(),
        };
        let receiver = self
            .coordinator
            .classic_sync(self.now, request, &mut effects)
            .expect("sync accepted");
        effects.deliver();
        receiver
    }

    fn heartbeat(&mut self, member_id: &str, generation: i32) -> Result<(), GroupError> {
        self.coordinator
            .classic_heartbeat(self.now, GROUP, &member(member_id), generation)
    }

    fn leave(&mut self, members: &[MemberRef]) -> Vec<Result<String, GroupError>> {
        let mut effects = Effects::default();
        let outcomes = self
            .coordinator
            .classic_leave(self.now, GROUP, members, &mut effects)
            .expect("leave accepted");
        effects.deliver();
        outcomes
    }

    fn state(&self) -> ClassicState {
        self.coordinator
            .group(GROUP)
            .and_then(|group| group.classic.as_ref())
            .map_or(ClassicState::Empty, |classic| classic.state)
    }

    /// One member alone forms a stable group; returns its id and generation.
    fn stable_single(&mut self) -> (String, i32) {
        let joined = self.join_now(join_request("", None));
        assert_eq!(joined.leader_id, joined.member_id);
        let mut synced = self.sync(
            &joined.member_id,
            joined.generation,
            &[(&joined.member_id, b"a1")],
        );
        let assignment = answered(&mut synced)
            .expect("answered")
            .expect("synced")
            .assignment;
        assert_eq!(assignment, b"a1");
        assert_eq!(self.state(), ClassicState::Stable);
        (joined.member_id, joined.generation)
    }

    /// A second member joins a stable group of one, both go through the rebalance; returns
    /// (first, second, generation).
    fn stable_pair(&mut self) -> (String, String, i32) {
        let (first, generation) = self.stable_single();
        let mut second = self.join(join_request("", None)).expect("join accepted");
        assert!(
            answered(&mut second).is_none(),
            "waits for the first member to rejoin"
        );
        assert_eq!(self.state(), ClassicState::PreparingRebalance);
        assert!(matches!(
            self.heartbeat(&first, generation),
            Err(GroupError::RebalanceInProgress(_))
        ));
        let rejoined = self.join_now(join_request(&first, None));
        let second = answered(&mut second).expect("answered").expect("joined");
        assert_eq!(rejoined.generation, generation + 1);
        assert_eq!(second.generation, generation + 1);
        assert_eq!(rejoined.leader_id, first, "the leader stays the leader");
        assert_eq!(
            rejoined.members.len(),
            2,
            "the leader gets every member's metadata"
        );
        assert!(second.members.is_empty(), "a follower gets none");
        assert_eq!(rejoined.protocol_name.as_deref(), Some("range"));
        let mut follower = self.sync(&second.member_id, second.generation, &[]);
        assert!(
            answered(&mut follower).is_none(),
            "a follower waits for the leader"
        );
        let mut leader = self.sync(
            &first,
            rejoined.generation,
            &[(&first, b"p0"), (&second.member_id, b"p1")],
        );
        assert_eq!(
            answered(&mut leader).expect("answered").expect("ok").assignment,
            b"p0"
        );
        assert_eq!(
            answered(&mut follower).expect("answered").expect("ok").assignment,
            b"p1"
        );
        assert_eq!(self.state(), ClassicState::Stable);
        (first, second.member_id, rejoined.generation)
    }
}

#[test]
fn two_members_join_sync_and_heartbeat() {
    let mut harness = Harness::new();
    let (first, second, generation) = harness.stable_pair();
    harness.heartbeat(&first, generation).expect("leader heartbeat");
    harness
        .heartbeat(&second, generation)
        .expect("follower heartbeat");
    assert!(matches!(
        harness.heartbeat(&second, generation - 1),
        Err(GroupError::IllegalGeneration { .. })
    ));
    assert!(matches!(
        harness.heartbeat("nobody", generation),
        Err(GroupError::UnknownMember { .. })
    ));
}

#[test]
fn first_join_without_member_id_is_told_its_id_from_v4() {
    let mut harness = Harness::new();
    let mut request = join_request("", None);
    request.require_known_member = true;
    let Err(GroupError::MemberIdRequired { member_id }) = harness.join(request.clone()) else {
        panic!("expected MEMBER_ID_REQUIRED");
    };
    request.member_id = member_id.clone();
    let joined = harness.join_now(request);
    assert_eq!(joined.member_id, member_id);
    assert_eq!(joined.generation, 1);
}

#[test]
fn handed_out_member_id_expires_and_stops_blocking_the_join() {
    let mut harness = Harness::new();
    let (first, _) = harness.stable_single();
    let mut request = join_request("", None);
    request.require_known_member = true;
    assert!(matches!(
        harness.join(request),
        Err(GroupError::MemberIdRequired { .. })
    ));
    // The leader rejoins (e.g. to reassign); the handed-out id is still expected.
    let mut rejoin = harness.join(join_request(&first, None)).expect("accepted");
    assert!(answered(&mut rejoin).is_none());
    harness.advance(u64::from(SESSION_MS));
    let joined = answered(&mut rejoin)
        .expect("answered once the id expired")
        .expect("ok");
    assert_eq!(joined.members.len(), 1);
}

#[test]
fn leader_leaving_elects_the_other_member() {
    let mut harness = Harness::new();
    let (first, second, generation) = harness.stable_pair();
    let outcomes = harness.leave(&[member(&first)]);
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].as_ref().expect("left"), &first);
    assert_eq!(harness.state(), ClassicState::PreparingRebalance);
    assert!(matches!(
        harness.heartbeat(&second, generation),
        Err(GroupError::RebalanceInProgress(_))
    ));
    let rejoined = harness.join_now(join_request(&second, None));
    assert_eq!(rejoined.leader_id, second, "the remaining member leads");
    assert_eq!(rejoined.generation, generation + 1);
    assert_eq!(rejoined.members.len(), 1);
}

#[test]
fn session_timeout_removes_a_silent_member_and_rebalances() {
    let mut harness = Harness::new();
    let (first, second, generation) = harness.stable_pair();
    for _ in 0..4 {
        harness.advance(u64::from(SESSION_MS / 4));
        harness.heartbeat(&first, generation).ok();
    }
    assert_eq!(harness.state(), ClassicState::PreparingRebalance);
    assert!(matches!(
        harness.heartbeat(&second, generation),
        Err(GroupError::UnknownMember { .. })
    ));
    let rejoined = harness.join_now(join_request(&first, None));
    assert_eq!(rejoined.members.len(), 1);
}

#[test]
fn rebalance_timeout_completes_the_join_without_the_missing_member() {
    let mut harness = Harness::new();
    let (first, second, generation) = harness.stable_pair();
    let mut rejoin = harness.join(join_request(&first, None)).expect("accepted");
    assert!(answered(&mut rejoin).is_none());
    // The second member heartbeats (keeps its session) but never rejoins.
    for _ in 0..(REBALANCE_MS / 1_000) {
        assert!(answered(&mut rejoin).is_none());
        assert!(matches!(
            harness.heartbeat(&second, generation),
            Err(GroupError::RebalanceInProgress(_))
        ));
        harness.advance(1_000);
    }
    let joined = answered(&mut rejoin)
        .expect("answered at the deadline")
        .expect("ok");
    assert_eq!(joined.members.len(), 1);
    assert_eq!(harness.state(), ClassicState::CompletingRebalance);
}

#[test]
fn leader_that_never_syncs_is_removed_and_followers_rejoin() {
    let mut harness = Harness::new();
    let (first, second, _) = harness.stable_pair();
    let mut leader_join = harness.join(join_request(&first, None)).expect("accepted");
    let follower = harness.join_now(join_request(&second, None));
    answered(&mut leader_join).expect("answered").expect("ok");
    let mut follower_sync = harness.sync(&second, follower.generation, &[]);
    harness.advance(u64::from(REBALANCE_MS));
    assert!(matches!(
        answered(&mut follower_sync),
        Some(Err(GroupError::RebalanceInProgress(_)))
    ));
    assert!(harness
        .coordinator
        .group(GROUP)
        .and_then(|group| group.classic.as_ref())
        .is_some_and(|classic| !classic.members.contains_key(&first)));
}

#[test]
fn static_member_rejoining_unchanged_keeps_its_assignment_without_a_rebalance() {
    let mut harness = Harness::new();
    let joined = harness.join_now(join_request("", Some("instance-a")));
    let mut synced = harness.sync(
        &joined.member_id,
        joined.generation,
        &[(&joined.member_id, b"mine")],
    );
    answered(&mut synced).expect("answered").expect("ok");
    // The process restarts: no member id, same instance id and protocols.
    let replaced = harness.join_now(join_request("", Some("instance-a")));
    assert_ne!(replaced.member_id, joined.member_id);
    assert_eq!(replaced.generation, joined.generation, "no rebalance");
    assert!(replaced.skip_assignment, "the leader's assignment stands");
    assert_eq!(harness.state(), ClassicState::Stable);
    let mut again = harness.sync(&replaced.member_id, replaced.generation, &[]);
    assert_eq!(
        answered(&mut again).expect("answered").expect("ok").assignment,
        b"mine"
    );
    // The old id is fenced.
    let stale = MemberRef {
        member_id: joined.member_id.clone(),
        instance_id: Some("instance-a".into()),
    };
    assert!(matches!(
        harness
            .coordinator
            .classic_heartbeat(harness.now, GROUP, &stale, joined.generation),
        Err(GroupError::FencedInstanceId(_))
    ));
}

#[test]
fn static_member_rejoining_with_new_protocols_rebalances() {
    let mut harness = Harness::new();
    let joined = harness.join_now(join_request("", Some("instance-a")));
    let mut synced = harness.sync(&joined.member_id, joined.generation, &[]);
    answered(&mut synced).expect("answered").expect("ok");
    let mut request = join_request("", Some("instance-a"));
    request.protocols = protocols(&["roundrobin"]);
    let replaced = harness.join_now(request);
    assert_eq!(replaced.generation, joined.generation + 1);
    assert_eq!(replaced.protocol_name.as_deref(), Some("roundrobin"));
}

#[test]
fn protocol_is_chosen_by_votes_among_the_common_ones() {
    let mut harness = Harness::new();
    let mut first = join_request("", None);
    first.protocols = protocols(&["cooperative-sticky", "range"]);
    let leader = harness.join_now(first.clone());
    let mut synced = harness.sync(&leader.member_id, leader.generation, &[]);
    answered(&mut synced).expect("answered").expect("ok");
    let mut second = join_request("", None);
    second.protocols = protocols(&["range"]);
    let mut waiting = harness.join(second).expect("accepted");
    first.member_id = leader.member_id.clone();
    let rejoined = harness.join_now(first);
    answered(&mut waiting).expect("answered").expect("ok");
    assert_eq!(
        rejoined.protocol_name.as_deref(),
        Some("range"),
        "the only common one"
    );
    let mut third = join_request("", None);
    third.protocols = protocols(&["roundrobin"]);
    assert!(matches!(
        harness.join(third),
        Err(GroupError::InconsistentGroupProtocol(_))
    ));
}

#[test]
fn a_group_speaks_one_protocol_at_a_time() {
    let mut harness = Harness::new();
    harness.stable_single();
    let native = Heartbeat {
        group_id: GROUP.into(),
        member_epoch: 0,
        subscription: Some(vec!["t".into()]),
        session_timeout_ms: SESSION_MS,
        ..Heartbeat::default()
    };
    let counts = |_: &str| Some(1);
    assert!(matches!(
        harness
            .coordinator
            .heartbeat(harness.now, native.clone(), &counts),
        Err(GroupError::InconsistentGroupProtocol(_))
    ));
    let mut native_group = native;
    native_group.group_id = "native".into();
    harness
        .coordinator
        .heartbeat(harness.now, native_group, &counts)
        .expect("native join");
    let mut classic = join_request("", None);
    classic.group_id = "native".into();
    assert!(matches!(
        harness.join(classic),
        Err(GroupError::InconsistentGroupProtocol(_))
    ));
}

#[test]
fn commits_follow_kafkas_generation_rules() {
    let mut harness = Harness::new();
    let partitions = vec![CommitPartition {
        topic: "t".into(),
        partition: 0,
        offset: 5,
        metadata: String::new(),
    }];
    let counts = |_: &str| Some(1);
    let commit = |harness: &Harness, member_ref: &MemberRef, generation: i32| {
        harness
            .coordinator
            .check_commit_classic(GROUP, member_ref, generation, &partitions, &counts)
            .and_then(|checks| checks.into_iter().collect::<Result<Vec<()>, _>>())
    };
    // An admin (or a consumer without group management) commits to an empty group.
    commit(&harness, &MemberRef::default(), -1).expect("simple commit accepted");
    let (first, second, generation) = harness.stable_pair();
    assert!(matches!(
        commit(&harness, &MemberRef::default(), -1),
        Err(GroupError::UnknownMember { .. })
    ));
    commit(&harness, &member(&first), generation).expect("current generation");
    assert!(matches!(
        commit(&harness, &member(&first), generation - 1),
        Err(GroupError::IllegalGeneration { .. })
    ));
    // Preparing a rebalance: members may still commit for the current generation.
    let mut rejoin = harness.join(join_request(&first, None)).expect("accepted");
    assert_eq!(harness.state(), ClassicState::PreparingRebalance);
    commit(&harness, &member(&second), generation).expect("accepted while preparing");
    harness.join_now(join_request(&second, None));
    answered(&mut rejoin).expect("answered").expect("ok");
    // Completing: the new generation must finish syncing first.
    assert!(matches!(
        commit(&harness, &member(&second), generation + 1),
        Err(GroupError::RebalanceInProgress(_))
    ));
}

#[test]
fn last_member_leaving_empties_the_group_and_a_batch_leave_reports_each() {
    let mut harness = Harness::new();
    let (first, second, generation) = harness.stable_pair();
    let outcomes = harness.leave(&[member(&first), member("nobody"), member(&second)]);
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok());
    assert!(matches!(outcomes[1], Err(GroupError::UnknownMember { .. })));
    assert_eq!(harness.state(), ClassicState::Empty);
    let group = harness.coordinator.group(GROUP);
    assert!(group.is_none_or(|group| group.state() == GroupState::Empty));
    // The group was dropped (no offsets); a new join starts afresh and is not confused
    // by the old generation.
    let joined = harness.join_now(join_request("", None));
    assert!(joined.generation >= 1);
    let _ = generation;
}

#[test]
fn group_record_round_trips_through_a_restart() {
    let mut harness = Harness::new();
    let (first, second, generation) = harness.stable_pair();
    let record = harness.coordinator.record(GROUP).expect("recorded");
    let text = toml::to_string(&record).expect("serialises");
    let back: crate::metadata::GroupRecord = toml::from_str(&text).expect("parses");
    assert_eq!(back, record);
    let restarted = Coordinator::load(GroupsConfig::default(), [back], [], harness.now);
    let classic = restarted
        .group(GROUP)
        .and_then(|group| group.classic.clone())
        .expect("classic side restored");
    assert_eq!(classic.state, ClassicState::Stable);
    assert_eq!(classic.generation, generation);
    assert_eq!(classic.leader.as_deref(), Some(first.as_str()));
    assert_eq!(classic.members[&second].assignment, b"p1");
}

#[test]
fn group_member_bound_counts_handed_out_ids() {
    let mut harness = Harness::new();
    harness.coordinator = Coordinator::new(GroupsConfig {
        members_per_group_max: 1,
        ..GroupsConfig::default()
    });
    let mut request = join_request("", None);
    request.require_known_member = true;
    assert!(matches!(
        harness.join(request.clone()),
        Err(GroupError::MemberIdRequired { .. })
    ));
    assert!(matches!(harness.join(request), Err(GroupError::GroupFull { .. })));
}

#[test]
fn protocol_metadata_and_assignments_are_bounded() {
    let mut harness = Harness::new();
    harness.coordinator = Coordinator::new(GroupsConfig {
        classic_member_bytes_max: 64,
        initial_rebalance_delay_ms: 0,
        ..GroupsConfig::default()
    });
    let mut request = join_request("", None);
    request.protocols[0].metadata = vec![0; 65];
    assert!(matches!(
        harness.join(request),
        Err(GroupError::InvalidRequest(_))
    ));
    let joined = harness.join_now(join_request("", None));
    let mut effects = Effects::default();
    let oversized = SyncRequest {
        group_id: GROUP.into(),
        member_id: joined.member_id.clone(),
        instance_id: None,
        generation: joined.generation,
        protocol_type: None,
        protocol_name: None,
        assignments: vec![(joined.member_id.clone(), vec![0; 65])],
    };
    assert!(matches!(
        harness
            .coordinator
            .classic_sync(harness.now, oversized, &mut effects),
        Err(GroupError::InvalidRequest(_))
    ));
    assert_eq!(harness.state(), ClassicState::CompletingRebalance);
}

/// Every call a member removed from the group could still make is refused with
/// UNKNOWN_MEMBER_ID, the answer that makes a client rejoin: heartbeat, SyncGroup, JoinGroup
/// under its old id, an offset commit and LeaveGroup.
fn assert_unknown_everywhere(harness: &mut Harness, member_id: &str, generation: i32, label: &str) {
    let unknown = |result: Result<(), GroupError>, call: &str| {
        assert!(
            matches!(result, Err(GroupError::UnknownMember { .. })),
            "{label}: {call} of a removed member answered {result:?}"
        );
    };
    unknown(harness.heartbeat(member_id, generation), "heartbeat");
    let mut effects = Effects::default();
    let sync = SyncRequest {
        group_id: GROUP.into(),
        member_id: member_id.into(),
        instance_id: None,
        generation,
        protocol_type: Some("consumer".into()),
        protocol_name: None,
        assignments: Vec::new(),
    };
    let synced = harness.coordinator.classic_sync(harness.now, sync, &mut effects);
    unknown(synced.map(drop), "SyncGroup");
    let joined = harness
        .coordinator
        .classic_join(harness.now, join_request(member_id, None), &mut effects);
    unknown(joined.map(drop), "JoinGroup");
    assert!(
        effects.deliveries.is_empty() && !effects.persist,
        "{label}: refusals change nothing"
    );
    let partitions = vec![CommitPartition {
        topic: "t".into(),
        partition: 0,
        offset: 5,
        metadata: String::new(),
    }];
    let committed = harness
        .coordinator
        .check_commit_classic(GROUP, &member(member_id), generation, &partitions, &|_: &str| {
            Some(1)
        })
        .and_then(|checks| checks.into_iter().collect::<Result<Vec<()>, _>>());
    unknown(committed.map(drop), "OffsetCommit");
    let left = harness
        .coordinator
        .classic_leave(harness.now, GROUP, &[member(member_id)], &mut effects)
        .and_then(|mut outcomes| outcomes.remove(0));
    unknown(left.map(drop), "LeaveGroup");
}

/// The kafka-python failure's shape: the leader of a stable pair falls silent (its client
/// lost the answer to a rebalance). Its session expires and the other member carries on
/// alone. In every state the group then passes through, including after it is gone, the
/// silent member is told it is unknown, so the client rejoins on its next request.
#[test]
fn a_member_expired_for_its_session_is_unknown_in_every_later_state() {
    let mut harness = Harness::new();
    let (leader, follower, generation) = harness.stable_pair();
    for _ in 0..4 {
        harness.advance(u64::from(SESSION_MS / 4));
        let beat = harness.heartbeat(&follower, generation);
        assert!(
            matches!(beat, Ok(()) | Err(GroupError::RebalanceInProgress(_))),
            "the follower stays: {beat:?}"
        );
    }
    assert_eq!(harness.state(), ClassicState::PreparingRebalance);
    assert_unknown_everywhere(&mut harness, &leader, generation, "preparing");
    let rejoined = harness.join_now(join_request(&follower, None));
    assert_eq!(rejoined.leader_id, follower, "the remaining member leads");
    assert_eq!(rejoined.members.len(), 1);
    assert_eq!(harness.state(), ClassicState::CompletingRebalance);
    assert_unknown_everywhere(&mut harness, &leader, generation, "completing");
    let mut synced = harness.sync(&follower, rejoined.generation, &[(&follower, b"all")]);
    assert_eq!(
        answered(&mut synced).expect("answered").expect("ok").assignment,
        b"all"
    );
    assert_eq!(harness.state(), ClassicState::Stable);
    assert_unknown_everywhere(&mut harness, &leader, generation, "stable");
    assert!(harness.leave(&[member(&follower)])[0].is_ok());
    assert_eq!(harness.state(), ClassicState::Empty);
    assert_unknown_everywhere(&mut harness, &leader, generation, "emptied");
}
