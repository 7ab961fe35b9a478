//! One consumer group's state machine: members, epochs, the target assignment and each
//! member's reconciliation towards it (KIP-848, cooperative: only moved partitions are revoked).
//!
//! **Invariant:** a partition is owned (`assigned` or `revoking`) by at most one member at a
//! time. A partition leaves its owner only when the owner acknowledges the revocation, leaves,
//! or is removed; only then can the next owner be given it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::assignor::{assign, Assignment};
use super::classic::{ClassicGroup, ClassicState};
use super::consumer_protocol;
use crate::metadata::{GroupMemberRecord, GroupRecord, TopicPartitionsRecord};

/// A member's place in the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    /// The epoch before the last bump: a heartbeat carrying it is still accepted, because the
    /// response that carried the bump may have been lost.
    pub previous_epoch: i32,
    pub subscription: BTreeSet<String>,
    pub session_timeout_ms: u32,
    /// Partitions given to the member that it keeps.
    pub assigned: Assignment,
    /// Partitions the member was told to release; it still owns them until it acknowledges.
    pub revoking: Assignment,
    /// A static member that left with epoch -2: it keeps its place and partitions until its
    /// session ends, so the same instance can come back without a rebalance.
    pub left: bool,
    pub deadline: Instant,
    pub revoking_since: Option<Instant>,
}

impl Member {
    pub fn owns(&self, topic: &str, partition: u32) -> bool {
        contains(&self.assigned, topic, partition) || contains(&self.revoking, topic, partition)
    }

    fn session(&self) -> Duration {
        Duration::from_millis(u64::from(self.session_timeout_ms))
    }
}

/// A committed offset as held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub metadata: String,
    pub commit_ms: i64,
}

/// How a group looks from the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    Reconciling,
    Stable,
    /// Classic groups only: waiting for members to (re)join.
    PreparingRebalance,
    /// Classic groups only: waiting for the leader's assignment.
    CompletingRebalance,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Reconciling => "reconciling",
            Self::Stable => "stable",
            Self::PreparingRebalance => "preparing_rebalance",
            Self::CompletingRebalance => "completing_rebalance",
        }
    }
}

/// Which protocol a group's members speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProtocol {
    /// KIP-848: the coordinator assigns (native ConsumerGroupHeartbeat, Kafka's too).
    Consumer,
    /// JoinGroup/SyncGroup: the leader assigns, client side.
    Classic,
}

/// A member as a describe shows it, whichever protocol it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member epoch (consumer protocol) or the group's generation (classic).
    pub epoch: i32,
    pub subscription: BTreeSet<String>,
    /// For classic members, what their assignment decodes to as the standard consumer
    /// protocol (empty if it does not).
    pub assigned: Assignment,
}

/// What reconciling one member changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub assignment_changed: bool,
    pub epoch_changed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    /// Bumps on every change of membership, subscriptions or subscribed partition counts.
    pub epoch: i32,
    /// The group epoch the target assignment was computed at.
    pub assignment_epoch: i32,
    pub partition_counts: BTreeMap<String, u32>,
    pub members: BTreeMap<String, Member>,
    pub target: BTreeMap<String, Assignment>,
    pub offsets: BTreeMap<(String, u32), Committed>,
    /// The classic-protocol side, once a classic member joined (or it was persisted).
    pub classic: Option<ClassicGroup>,
}

impl Group {
    pub fn new(id: String) -> Self {
        Self {
            id,
            epoch: 0,
            assignment_epoch: 0,
            partition_counts: BTreeMap::new(),
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            offsets: BTreeMap::new(),
            classic: None,
        }
    }

    /// The classic side, if it has members.
    pub fn classic_in_use(&self) -> Option<&ClassicGroup> {
        self.classic
            .as_ref()
            .filter(|classic| !classic.members.is_empty())
    }

    /// The protocol in use; `None` while the group has no members.
    pub fn protocol(&self) -> Option<GroupProtocol> {
        if !self.members.is_empty() {
            Some(GroupProtocol::Consumer)
        } else if self.classic_in_use().is_some() {
            Some(GroupProtocol::Classic)
        } else {
            None
        }
    }

    /// Members of either protocol.
    pub fn has_members(&self) -> bool {
        self.protocol().is_some()
    }

    pub fn state(&self) -> GroupState {
        if let Some(classic) = self.classic_in_use() {
            return match classic.state {
                ClassicState::Empty => GroupState::Empty,
                ClassicState::PreparingRebalance => GroupState::PreparingRebalance,
                ClassicState::CompletingRebalance => GroupState::CompletingRebalance,
                ClassicState::Stable => GroupState::Stable,
            };
        }
        if self.members.is_empty() {
            return GroupState::Empty;
        }
        let converged = self.members.values().all(|member| {
            member.revoking.is_empty()
                && member.epoch == self.assignment_epoch
                && self
                    .target
                    .get(&member.id)
                    .map_or(member.assigned.is_empty(), |target| {
                        strip_empty(target) == strip_empty(&member.assigned)
                    })
        });
        if converged {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    /// Nothing worth keeping: no members and no committed offsets.
    pub fn is_disposable(&self) -> bool {
        self.members.is_empty()
            && self.offsets.is_empty()
            && self.classic.as_ref().is_none_or(ClassicGroup::is_idle)
    }

    /// Every member of either protocol, for a describe.
    pub fn member_views(&self) -> Vec<MemberView> {
        let native = self.members.values().map(|member| MemberView {
            id: member.id.clone(),
            instance_id: member.instance_id.clone(),
            client_id: member.client_id.clone(),
            client_host: member.client_host.clone(),
            epoch: member.epoch,
            subscription: member.subscription.clone(),
            assigned: member.assigned.clone(),
        });
        let classic = self.classic_in_use().into_iter().flat_map(|classic| {
            classic.members.values().map(|member| MemberView {
                id: member.id.clone(),
                instance_id: member.instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                epoch: classic.generation,
                subscription: classic
                    .chosen_metadata(member)
                    .and_then(consumer_protocol::subscription_topics)
                    .unwrap_or_default(),
                assigned: consumer_protocol::assignment_partitions(&member.assignment).unwrap_or_default(),
            })
        });
        native.chain(classic).collect()
    }

    /// Topics any member of either protocol subscribes to (classic ones as far as their
    /// metadata decodes as the standard consumer protocol).
    pub fn all_subscribed_topics(&self) -> BTreeSet<String> {
        self.member_views()
            .into_iter()
            .flat_map(|member| member.subscription)
            .collect()
    }

    /// The id of the member of either protocol owning a partition now, if any.
    pub fn owner_id(&self, topic: &str, partition: u32) -> Option<String> {
        if let Some(member) = self.owner(topic, partition) {
            return Some(member.id.clone());
        }
        self.member_views()
            .into_iter()
            .find(|member| contains(&member.assigned, topic, partition))
            .map(|member| member.id)
    }

    pub fn member_by_instance(&self, instance_id: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|member| member.instance_id.as_deref() == Some(instance_id))
    }

    /// The member owning a partition now, if any.
    pub fn owner(&self, topic: &str, partition: u32) -> Option<&Member> {
        self.members.values().find(|member| member.owns(topic, partition))
    }

    /// Every subscribed topic of every member (static members that left included: they keep
    /// their place).
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|member| member.subscription.iter().cloned())
            .collect()
    }

    /// Re-reads the partition counts of the subscribed topics; a difference bumps the epoch.
    /// Returns whether it did.
    pub fn refresh_topics(&mut self, partition_count: &dyn Fn(&str) -> Option<u32>) -> bool {
        let counts: BTreeMap<String, u32> = self
            .subscribed_topics()
            .into_iter()
            .filter_map(|topic| partition_count(&topic).map(|count| (topic, count)))
            .collect();
        if counts == self.partition_counts {
            return false;
        }
        self.partition_counts = counts;
        self.bump();
        true
    }

    /// Membership or subscriptions changed: a new group epoch and a new target assignment.
    pub fn bump(&mut self) {
        // Two billion rebalances of one group is not a case to plan for; saturating keeps the
        // arithmetic panic-free.
        self.epoch = self.epoch.saturating_add(1);
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|member| (member.id.clone(), member.subscription.clone()))
            .collect();
        self.target = assign(&subscriptions, &self.partition_counts, &self.target);
        self.assignment_epoch = self.epoch;
    }

    /// Moves one member towards its target: first revoke what it must give up (its epoch
    /// stays, so it can still commit those partitions), and once it has acknowledged, take the
    /// target epoch and every target partition no other member owns any more.
    pub fn reconcile(&mut self, member_id: &str, now: Instant) -> Reconciled {
        let mut outcome = Reconciled::default();
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let taken_by_others: BTreeSet<(String, u32)> = self
            .members
            .values()
            .filter(|member| member.id != member_id)
            .flat_map(|member| pairs(&member.assigned).chain(pairs(&member.revoking)))
            .collect();
        let assignment_epoch = self.assignment_epoch;
        let Some(member) = self.members.get_mut(member_id) else {
            return outcome;
        };
        if member.left || !member.revoking.is_empty() {
            return outcome;
        }
        let to_revoke = difference(&member.assigned, &target);
        if !to_revoke.is_empty() {
            member.assigned = intersection(&member.assigned, &target);
            member.revoking = to_revoke;
            member.revoking_since = Some(now);
            outcome.assignment_changed = true;
            return outcome;
        }
        if member.epoch != assignment_epoch {
            member.previous_epoch = member.epoch;
            member.epoch = assignment_epoch;
            outcome.epoch_changed = true;
        }
        for (topic, partition) in pairs(&target) {
            if !contains(&member.assigned, &topic, partition)
                && !taken_by_others.contains(&(topic.clone(), partition))
            {
                member.assigned.entry(topic).or_default().insert(partition);
                outcome.assignment_changed = true;
            }
        }
        outcome
    }

    /// Removes a member, releasing everything it owns, and rebalances the rest.
    pub fn remove_member(&mut self, member_id: &str) -> bool {
        if self.members.remove(member_id).is_none() {
            return false;
        }
        self.target.remove(member_id);
        self.bump();
        true
    }

    /// Members whose session ended or who sat on a revocation too long, by id.
    pub fn expired(&self, now: Instant, revocation_timeout: Duration) -> Vec<String> {
        self.members
            .values()
            .filter(|member| {
                member.deadline <= now
                    || member
                        .revoking_since
                        .is_some_and(|since| now.saturating_duration_since(since) >= revocation_timeout)
            })
            .map(|member| member.id.clone())
            .collect()
    }

    pub fn touch(member: &mut Member, now: Instant) {
        member.deadline = now + member.session();
    }

    /// The persistent form (offsets are stored separately, one key each).
    pub fn to_record(&self) -> GroupRecord {
        GroupRecord {
            group_id: self.id.clone(),
            group_epoch: self.epoch,
            assignment_epoch: self.assignment_epoch,
            partition_counts: self.partition_counts.clone(),
            members: self
                .members
                .values()
                .map(|member| GroupMemberRecord {
                    member_id: member.id.clone(),
                    instance_id: member.instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    member_epoch: member.epoch,
                    previous_epoch: member.previous_epoch,
                    session_timeout_ms: member.session_timeout_ms,
                    left: member.left,
                    subscription: member.subscription.iter().cloned().collect(),
                    assigned: to_records(&member.assigned),
                    revoking: to_records(&member.revoking),
                    target: to_records(self.target.get(&member.id).unwrap_or(&Assignment::new())),
                })
                .collect(),
            classic: self.classic.as_ref().map(ClassicGroup::to_record),
        }
    }

    /// Rebuilds a group after a restart. Session timers start again from `now`: a member
    /// gets a full session to reach the restarted broker.
    pub fn from_record(record: GroupRecord, now: Instant) -> Self {
        let mut group = Self::new(record.group_id);
        group.classic = record
            .classic
            .map(|classic| ClassicGroup::from_record(classic, &group.id, now));
        group.epoch = record.group_epoch;
        group.assignment_epoch = record.assignment_epoch;
        group.partition_counts = record.partition_counts;
        for member in record.members {
            group
                .target
                .insert(member.member_id.clone(), from_records(&member.target));
            let revoking = from_records(&member.revoking);
            let mut restored = Member {
                id: member.member_id,
                instance_id: member.instance_id,
                client_id: member.client_id,
                client_host: member.client_host,
                epoch: member.member_epoch,
                previous_epoch: member.previous_epoch,
                subscription: member.subscription.into_iter().collect(),
                session_timeout_ms: member.session_timeout_ms,
                assigned: from_records(&member.assigned),
                revoking_since: (!revoking.is_empty()).then_some(now),
                revoking,
                left: member.left,
                deadline: now,
            };
            Self::touch(&mut restored, now);
            group.members.insert(restored.id.clone(), restored);
        }
        group
    }
}

pub fn contains(assignment: &Assignment, topic: &str, partition: u32) -> bool {
    assignment
        .get(topic)
        .is_some_and(|partitions| partitions.contains(&partition))
}

pub fn pairs(assignment: &Assignment) -> impl Iterator<Item = (String, u32)> + '_ {
    assignment.iter().flat_map(|(topic, partitions)| {
        partitions
            .iter()
            .map(move |partition| (topic.clone(), *partition))
    })
}

pub fn difference(left: &Assignment, right: &Assignment) -> Assignment {
    filter(left, |topic, partition| !contains(right, topic, partition))
}

pub fn intersection(left: &Assignment, right: &Assignment) -> Assignment {
    filter(left, |topic, partition| contains(right, topic, partition))
}

/// Drops topics with no partitions, so two assignments compare by content.
pub fn strip_empty(assignment: &Assignment) -> Assignment {
    filter(assignment, |_, _| true)
}

fn filter(assignment: &Assignment, keep: impl Fn(&str, u32) -> bool) -> Assignment {
    let mut out = Assignment::new();
    for (topic, partitions) in assignment {
        let kept: BTreeSet<u32> = partitions
            .iter()
            .copied()
            .filter(|partition| keep(topic, *partition))
            .collect();
        if !kept.is_empty() {
            out.insert(topic.clone(), kept);
        }
    }
    out
}

fn to_records(assignment: &Assignment) -> Vec<TopicPartitionsRecord> {
    strip_empty(assignment)
        .into_iter()
        .map(|(topic, partitions)| TopicPartitionsRecord {
            topic,
            partitions: partitions.into_iter().collect(),
        })
        .collect()
}

fn from_records(records: &[TopicPartitionsRecord]) -> Assignment {
    let mut out = Assignment::new();
    for record in records {
        out.entry(record.topic.clone())
            .or_default()
            .extend(record.partitions.iter().copied());
    }
    strip_empty(&out)
}
