//! The group coordinator: every group of this broker, the heartbeat protocol, commit
//! validation, and the committed-offset cache. Plain synchronous code over plain data: time is
//! a parameter (`now`) and topic metadata a callback, so tests drive it without sleeping.
//! `service` wraps it with a lock and persistence; nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use super::assignor::Assignment;
use super::group::{difference, intersection, pairs, strip_empty, Committed, Group, Member};
use crate::config::GroupsConfig;
use crate::error::GroupError;
use crate::metadata::{GroupRecord, OffsetRecord};

/// Member epoch of a join.
pub const JOIN_EPOCH: i32 = 0;
/// Member epoch of a leave.
pub const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member's temporary leave.
pub const STATIC_LEAVE_EPOCH: i32 = -2;
/// Length of a generated member id: 128 random bits in URL-safe base64, as Kafka's.
pub const MEMBER_ID_CHARS: usize = 22;
/// Attempts at a member id unused in the group before giving up (a collision of 128-bit ids
/// means the generator is broken).
const MEMBER_ID_ATTEMPTS_MAX: usize = 8;

/// Looks up a topic's partition count; `None` when the topic does not exist.
pub type PartitionCounts<'a> = &'a dyn Fn(&str) -> Option<u32>;

/// A heartbeat, as the coordinator sees it.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    /// `None`: unchanged since the last heartbeat.
    pub subscription: Option<Vec<String>>,
    pub session_timeout_ms: u32,
    /// `None`: not reported in this heartbeat.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// The coordinator's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: u32,
    /// The complete set the member should own, when it changed (or the member's report
    /// disagrees with it).
    pub assignment: Option<Assignment>,
    /// Whether persistent state changed, so the group must be written before replying.
    pub changed: bool,
}

/// One partition of an offset commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPartition {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub metadata: String,
}

#[derive(Debug)]
pub struct Coordinator {
    pub(super) config: GroupsConfig,
    pub(super) groups: BTreeMap<String, Group>,
}

impl Coordinator {
    pub fn new(config: GroupsConfig) -> Self {
        Self {
            config,
            groups: BTreeMap::new(),
        }
    }

    /// Rebuilds the coordinator from persisted records; session timers restart at `now`.
    pub fn load(
        config: GroupsConfig,
        groups: impl IntoIterator<Item = GroupRecord>,
        offsets: impl IntoIterator<Item = OffsetRecord>,
        now: Instant,
    ) -> Self {
        let mut coordinator = Self::new(config);
        for record in groups {
            let group = Group::from_record(record, now);
            coordinator.groups.insert(group.id.clone(), group);
        }
        for record in offsets {
            let group = coordinator
                .groups
                .entry(record.group_id.clone())
                .or_insert_with(|| Group::new(record.group_id.clone()));
            group.offsets.insert(
                (record.topic, record.partition),
                Committed {
                    offset: record.offset,
                    metadata: record.metadata,
                    commit_ms: record.commit_ms,
                },
            );
        }
        coordinator
    }

    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// The group's persistent form, or `None` when it no longer exists (and its record should
    /// be deleted).
    pub fn record(&self, group_id: &str) -> Option<GroupRecord> {
        self.groups.get(group_id).map(Group::to_record)
    }

    pub fn check_group_id(&self, group_id: &str) -> Result<(), GroupError> {
        let invalid = |reason: String| GroupError::InvalidGroupId {
            group_id: group_id.to_owned(),
            reason,
        };
        if group_id.is_empty() {
            return Err(invalid("empty".into()));
        }
        if group_id.len() > self.config.group_id_bytes_max {
            return Err(invalid(format!(
                "longer than {} bytes",
                self.config.group_id_bytes_max
            )));
        }
        Ok(())
    }

    pub(super) fn check_new_group(&self, group_id: &str) -> Result<(), GroupError> {
        if !self.groups.contains_key(group_id) && self.groups.len() >= self.config.groups_max {
            return Err(GroupError::TooManyGroups(self.config.groups_max));
        }
        Ok(())
    }

    /// Join, stay, or leave (see `ConsumerGroupHeartbeatRequest` in the schema).
    pub fn heartbeat(
        &mut self,
        now: Instant,
        request: Heartbeat,
        partition_count: PartitionCounts<'_>,
    ) -> Result<HeartbeatReply, GroupError> {
        self.check_group_id(&request.group_id)?;
        self.check_request(&request)?;
        match request.member_epoch {
            JOIN_EPOCH => self.join(now, request, partition_count),
            LEAVE_EPOCH | STATIC_LEAVE_EPOCH => self.leave(now, request),
            epoch if epoch > 0 => self.stay(now, request, partition_count),
            epoch => Err(GroupError::InvalidRequest(format!(
                "member epoch {epoch} is not valid"
            ))),
        }
    }

    fn check_request(&self, request: &Heartbeat) -> Result<(), GroupError> {
        let config = &self.config;
        if request.member_id.len() > config.member_id_bytes_max {
            return Err(GroupError::InvalidRequest(format!(
                "member id longer than {} bytes",
                config.member_id_bytes_max
            )));
        }
        if let Some(instance_id) = &request.instance_id {
            if instance_id.is_empty() || instance_id.len() > config.instance_id_bytes_max {
                return Err(GroupError::InvalidRequest(format!(
                    "instance id must have 1 to {} bytes",
                    config.instance_id_bytes_max
                )));
            }
        }
        if let Some(topics) = &request.subscription {
            if topics.len() > config.subscribed_topics_per_member_max {
                return Err(GroupError::InvalidRequest(format!(
                    "subscription to more than {} topics",
                    config.subscribed_topics_per_member_max
                )));
            }
        }
        let timeout = request.session_timeout_ms;
        if timeout != 0 && !(config.session_timeout_ms_min..=config.session_timeout_ms_max).contains(&timeout)
        {
            return Err(GroupError::InvalidSessionTimeout {
                requested: timeout,
                min: config.session_timeout_ms_min,
                max: config.session_timeout_ms_max,
            });
        }
        Ok(())
    }

    fn join(
        &mut self,
        now: Instant,
        request: Heartbeat,
        partition_count: PartitionCounts<'_>,
    ) -> Result<HeartbeatReply, GroupError> {
        self.check_new_group(&request.group_id)?;
        if let Some(group) = self.groups.get(&request.group_id) {
            if group.classic_in_use().is_some() {
                return Err(GroupError::InconsistentGroupProtocol(format!(
                    "group {:?} is in use by classic (JoinGroup) members",
                    request.group_id
                )));
            }
        }
        let group_id = request.group_id.clone();
        let joined = self.join_group(now, request, partition_count);
        if joined.is_err() {
            // A refused join must not leave behind the empty group it created.
            self.drop_if_disposable(&group_id);
        }
        joined
    }

    fn join_group(
        &mut self,
        now: Instant,
        request: Heartbeat,
        partition_count: PartitionCounts<'_>,
    ) -> Result<HeartbeatReply, GroupError> {
        let session_timeout_ms = match request.session_timeout_ms {
            0 => self.config.session_timeout_ms,
            requested => requested,
        };
        let members_max = self.config.members_per_group_max;
        let heartbeat_interval_ms = self.config.heartbeat_interval_ms;
        let group_id = request.group_id.clone();
        let group = self
            .groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(group_id.clone()));
        let subscription: Option<BTreeSet<String>> =
            request.subscription.map(|topics| topics.into_iter().collect());

        // Which member this join is about, and whether membership changed.
        let previous_static = request
            .instance_id
            .as_deref()
            .and_then(|instance| group.member_by_instance(instance))
            .map(|member| (member.id.clone(), member.left));
        let mut membership_changed = false;
        let member_id = match previous_static.clone() {
            Some((old_id, _)) if old_id == request.member_id => {
                // The same static member rejoining (after being fenced): handled as a rejoin.
                old_id
            }
            Some((old_id, true)) => {
                // A static member that left temporarily comes back (as a new process): it takes
                // the old place, epoch and partitions, without a rebalance. Revocations the old
                // process never acknowledged are void: it stopped consuming when it left.
                let new_id = choose_member_id(group, &request.member_id)?;
                let Some(mut member) = group.members.remove(&old_id) else {
                    return Err(GroupError::UnknownMember {
                        group_id,
                        member_id: old_id,
                    });
                };
                member.id = new_id.clone();
                member.left = false;
                member.revoking = Assignment::new();
                member.revoking_since = None;
                if let Some(target) = group.target.remove(&old_id) {
                    group.target.insert(new_id.clone(), target);
                }
                group.members.insert(new_id.clone(), member);
                new_id
            }
            Some((_, false)) => {
                return Err(GroupError::UnreleasedInstanceId(
                    request.instance_id.unwrap_or_default(),
                ))
            }
            None if !request.member_id.is_empty() && group.members.contains_key(&request.member_id) => {
                request.member_id.clone()
            }
            None => {
                let Some(topics) = &subscription else {
                    return Err(GroupError::InvalidRequest(
                        "a joining member must send its subscription".into(),
                    ));
                };
                if group.members.len() >= members_max {
                    return Err(GroupError::GroupFull {
                        group_id: group_id.clone(),
                        max: members_max,
                    });
                }
                let new_id = choose_member_id(group, &request.member_id)?;
                group.members.insert(
                    new_id.clone(),
                    Member {
                        id: new_id.clone(),
                        instance_id: request.instance_id.clone(),
                        client_id: String::new(),
                        client_host: String::new(),
                        epoch: 0,
                        previous_epoch: 0,
                        subscription: topics.clone(),
                        session_timeout_ms,
                        assigned: Assignment::new(),
                        revoking: Assignment::new(),
                        left: false,
                        deadline: now,
                        revoking_since: None,
                    },
                );
                membership_changed = true;
                new_id
            }
        };

        let mut subscription_changed = false;
        if let Some(member) = group.members.get_mut(&member_id) {
            if !membership_changed && previous_static.is_none_or(|(old, _)| old == member_id) {
                // A rejoin of a known member (after being fenced, or a lost join response):
                // the client dropped everything it owned, so the coordinator does too.
                member.epoch = 0;
                member.previous_epoch = 0;
                member.assigned = Assignment::new();
                member.revoking = Assignment::new();
                member.revoking_since = None;
            }
            member.left = false;
            member.client_id = request.client_id;
            member.client_host = request.client_host;
            member.session_timeout_ms = session_timeout_ms;
            member.instance_id = request.instance_id.or(member.instance_id.take());
            if let Some(topics) = subscription {
                if topics != member.subscription {
                    member.subscription = topics;
                    subscription_changed = true;
                }
            }
            Group::touch(member, now);
        }
        if !group.refresh_topics(partition_count) && (membership_changed || subscription_changed) {
            group.bump();
        }
        group.reconcile(&member_id, now);
        let member = group
            .members
            .get(&member_id)
            .ok_or_else(|| GroupError::UnknownMember {
                group_id: group_id.clone(),
                member_id: member_id.clone(),
            })?;
        Ok(HeartbeatReply {
            member_id: member_id.clone(),
            member_epoch: member.epoch,
            heartbeat_interval_ms: interval_for(heartbeat_interval_ms, session_timeout_ms),
            assignment: Some(strip_empty(&member.assigned)),
            changed: true,
        })
    }

    fn leave(&mut self, now: Instant, request: Heartbeat) -> Result<HeartbeatReply, GroupError> {
        let heartbeat_interval_ms = self.config.heartbeat_interval_ms;
        let unknown = || GroupError::UnknownMember {
            group_id: request.group_id.clone(),
            member_id: request.member_id.clone(),
        };
        let group = self.groups.get_mut(&request.group_id).ok_or_else(unknown)?;
        let member = group.members.get_mut(&request.member_id).ok_or_else(unknown)?;
        let interval = member.session_timeout_ms;
        if request.member_epoch == STATIC_LEAVE_EPOCH {
            if member.instance_id.is_none() {
                return Err(GroupError::InvalidRequest(
                    "epoch -2 is a static member's leave; this member has no instance id".into(),
                ));
            }
            // Keeps its place and partitions until its session ends from now.
            member.left = true;
            Group::touch(member, now);
        } else {
            group.remove_member(&request.member_id);
            self.drop_if_disposable(&request.group_id);
        }
        Ok(HeartbeatReply {
            member_id: request.member_id,
            member_epoch: request.member_epoch,
            heartbeat_interval_ms: interval_for(heartbeat_interval_ms, interval),
            assignment: None,
            changed: true,
        })
    }

    fn stay(
        &mut self,
        now: Instant,
        request: Heartbeat,
        partition_count: PartitionCounts<'_>,
    ) -> Result<HeartbeatReply, GroupError> {
        let heartbeat_interval_ms = self.config.heartbeat_interval_ms;
        let unknown = || GroupError::UnknownMember {
            group_id: request.group_id.clone(),
            member_id: request.member_id.clone(),
        };
        let group = self.groups.get_mut(&request.group_id).ok_or_else(unknown)?;
        let member = group.members.get_mut(&request.member_id).ok_or_else(unknown)?;
        let fenced = || GroupError::FencedMemberEpoch {
            member_id: request.member_id.clone(),
            received: request.member_epoch,
            current: member.epoch,
        };
        if member.left {
            return Err(fenced());
        }
        // The response that bumped the epoch may have been lost: accept the previous epoch
        // from a member that owns nothing it was not given.
        let lost_response = request.member_epoch == member.previous_epoch
            && request.owned.as_ref().is_none_or(|owned| {
                difference(&difference(owned, &member.assigned), &member.revoking).is_empty()
            });
        if request.member_epoch != member.epoch && !lost_response {
            return Err(fenced());
        }
        Group::touch(member, now);
        let mut changed = false;
        if let Some(owned) = &request.owned {
            // The member acknowledges a revocation by reporting it no longer owns those.
            if !member.revoking.is_empty() && intersection(owned, &member.revoking).is_empty() {
                member.revoking = Assignment::new();
                member.revoking_since = None;
                changed = true;
            }
        }
        let mut subscription_changed = false;
        if let Some(topics) = request.subscription {
            let topics: BTreeSet<String> = topics.into_iter().collect();
            if topics != member.subscription {
                member.subscription = topics;
                subscription_changed = true;
            }
        }
        let interval = interval_for(heartbeat_interval_ms, member.session_timeout_ms);
        let group_epoch_before = group.epoch;
        if !group.refresh_topics(partition_count) && subscription_changed {
            group.bump();
        }
        let reconciled = group.reconcile(&request.member_id, now);
        let member = group.members.get(&request.member_id).ok_or_else(unknown)?;
        let disagrees = request
            .owned
            .as_ref()
            .is_some_and(|owned| strip_empty(owned) != strip_empty(&member.assigned));
        Ok(HeartbeatReply {
            member_id: request.member_id.clone(),
            member_epoch: member.epoch,
            heartbeat_interval_ms: interval,
            assignment: (reconciled.assignment_changed || disagrees).then(|| strip_empty(&member.assigned)),
            changed: changed
                || group.epoch != group_epoch_before
                || reconciled.assignment_changed
                || reconciled.epoch_changed,
        })
    }

    /// Removes members whose session ended (or who held a revocation too long). Returns the
    /// groups that changed.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let revocation_timeout = Duration::from_millis(self.config.revocation_timeout_ms);
        let mut changed = Vec::new();
        for group in self.groups.values_mut() {
            let expired = group.expired(now, revocation_timeout);
            if expired.is_empty() {
                continue;
            }
            for member_id in &expired {
                tracing::info!(group = %group.id, member = %member_id, "member removed: session or revocation timeout");
                group.remove_member(member_id);
            }
            changed.push(group.id.clone());
        }
        for group_id in &changed {
            self.drop_if_disposable(group_id);
        }
        changed
    }

    pub(super) fn drop_if_disposable(&mut self, group_id: &str) {
        if self.groups.get(group_id).is_some_and(Group::is_disposable) {
            self.groups.remove(group_id);
        }
    }

    /// Checks an offset commit: the whole request (`Err`), then each partition. An admin
    /// commit (member epoch < 0) is accepted only while the group has no members; a member's
    /// commit must carry its current epoch and name only partitions it owns.
    pub fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        partitions: &[CommitPartition],
        partition_count: PartitionCounts<'_>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        self.check_group_id(group_id)?;
        let group = self.groups.get(group_id);
        let member = if member_epoch < 0 {
            if group.is_some_and(Group::has_members) {
                return Err(GroupError::NonEmptyGroup(group_id.to_owned()));
            }
            self.check_new_group(group_id)?;
            None
        } else {
            let group = group.ok_or_else(|| GroupError::GroupNotFound(group_id.to_owned()))?;
            let member = group
                .members
                .get(member_id)
                .ok_or_else(|| GroupError::UnknownMember {
                    group_id: group_id.to_owned(),
                    member_id: member_id.to_owned(),
                })?;
            if member.left || member_epoch > member.epoch {
                return Err(GroupError::FencedMemberEpoch {
                    member_id: member_id.to_owned(),
                    received: member_epoch,
                    current: member.epoch,
                });
            }
            if member_epoch < member.epoch {
                return Err(GroupError::StaleMemberEpoch {
                    member_id: member_id.to_owned(),
                    reason: format!("epoch {member_epoch} is older than the current {}", member.epoch),
                });
            }
            Some(member)
        };
        self.check_partitions(
            group_id,
            partitions,
            partition_count,
            member.map(|m| (member_id, member_epoch, m)),
        )
    }

    /// The per-partition checks of a commit, shared by both protocols: the group's bound on
    /// committed partitions (whole request), then each partition's topic, offset and
    /// metadata, and (consumer protocol) that the member owns it.
    pub(super) fn check_partitions(
        &self,
        group_id: &str,
        partitions: &[CommitPartition],
        partition_count: PartitionCounts<'_>,
        member: Option<(&str, i32, &Member)>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let group = self.groups.get(group_id);
        // Distinct partitions the group would hold after this commit.
        let held = group.map_or(0, |group| group.offsets.len());
        let fresh: BTreeSet<(&str, u32)> = partitions
            .iter()
            .filter(|p| {
                group.is_none_or(|group| !group.offsets.contains_key(&(p.topic.clone(), p.partition)))
            })
            .map(|p| (p.topic.as_str(), p.partition))
            .collect();
        if held.saturating_add(fresh.len()) > self.config.committed_partitions_per_group_max {
            return Err(GroupError::InvalidRequest(format!(
                "group {group_id:?} would hold offsets for more than {} partitions",
                self.config.committed_partitions_per_group_max
            )));
        }
        Ok(partitions
            .iter()
            .map(|p| {
                if partition_count(&p.topic).is_none_or(|count| p.partition >= count) {
                    return Err(GroupError::UnknownPartition {
                        topic: p.topic.clone(),
                        partition: p.partition,
                    });
                }
                if p.offset < 0 {
                    return Err(GroupError::InvalidRequest(format!(
                        "offset {} is negative",
                        p.offset
                    )));
                }
                if p.metadata.len() > self.config.offset_metadata_bytes_max {
                    return Err(GroupError::OffsetMetadataTooLarge {
                        bytes: p.metadata.len(),
                        max: self.config.offset_metadata_bytes_max,
                    });
                }
                if let Some((member_id, member_epoch, member)) = member {
                    if !member.owns(&p.topic, p.partition) {
                        return Err(GroupError::StaleMemberEpoch {
                            member_id: member_id.to_owned(),
                            reason: format!(
                                "does not own {}-{} at epoch {member_epoch}",
                                p.topic, p.partition
                            ),
                        });
                    }
                }
                Ok(())
            })
            .collect())
    }

    /// Records offsets already made durable.
    pub fn apply_commit(&mut self, records: &[OffsetRecord]) {
        for record in records {
            let group = self
                .groups
                .entry(record.group_id.clone())
                .or_insert_with(|| Group::new(record.group_id.clone()));
            group.offsets.insert(
                (record.topic.clone(), record.partition),
                Committed {
                    offset: record.offset,
                    metadata: record.metadata.clone(),
                    commit_ms: record.commit_ms,
                },
            );
        }
    }

    /// Committed offset of each partition asked for (`None`: nothing committed); every
    /// committed partition when `asked` is empty. An unknown group has none.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        asked: &Assignment,
    ) -> Result<BTreeMap<(String, u32), Option<Committed>>, GroupError> {
        self.check_group_id(group_id)?;
        let group = self.groups.get(group_id);
        if asked.is_empty() {
            return Ok(group
                .map(|group| {
                    group
                        .offsets
                        .iter()
                        .map(|(key, committed)| (key.clone(), Some(committed.clone())))
                        .collect()
                })
                .unwrap_or_default());
        }
        Ok(pairs(asked)
            .map(|key| {
                let committed = group.and_then(|group| group.offsets.get(&key).cloned());
                (key, committed)
            })
            .collect())
    }

    /// Forgets offsets already deleted from the store.
    pub fn forget_offsets(&mut self, group_id: &str, partitions: &[(String, u32)]) {
        if let Some(group) = self.groups.get_mut(group_id) {
            for key in partitions {
                group.offsets.remove(key);
            }
        }
    }

    /// Checks that a group may be deleted: it exists and has no members.
    pub fn check_delete(&self, group_id: &str) -> Result<(), GroupError> {
        self.check_group_id(group_id)?;
        let group = self
            .groups
            .get(group_id)
            .ok_or_else(|| GroupError::GroupNotFound(group_id.to_owned()))?;
        if group.has_members() {
            return Err(GroupError::NonEmptyGroup(group_id.to_owned()));
        }
        Ok(())
    }

    /// Forgets a group, returning it.
    pub fn take_group(&mut self, group_id: &str) -> Option<Group> {
        self.groups.remove(group_id)
    }

    /// Puts back a group taken by [`take_group`](Self::take_group), unless a new group of
    /// that id exists by now.
    pub fn restore_group(&mut self, group: Group) {
        self.groups.entry(group.id.clone()).or_insert(group);
    }
}

/// Heartbeat interval for a member: the configured one, at most a third of its session, so a
/// member always has room for a few heartbeats before it expires.
fn interval_for(heartbeat_interval_ms: u32, session_timeout_ms: u32) -> u32 {
    heartbeat_interval_ms.min(session_timeout_ms / 3).max(1)
}

/// The requested member id if given and unused, otherwise a fresh random one.
fn choose_member_id(group: &Group, requested: &str) -> Result<String, GroupError> {
    if !requested.is_empty() {
        if group.members.contains_key(requested) {
            return Err(GroupError::InvalidRequest(format!(
                "member id {requested:?} is taken by another member"
            )));
        }
        return Ok(requested.to_owned());
    }
    for _ in 0..MEMBER_ID_ATTEMPTS_MAX {
        let id = random_member_id();
        if !group.members.contains_key(&id) {
            return Ok(id);
        }
    }
    Err(GroupError::InvalidRequest(
        "could not generate an unused member id".into(),
    ))
}

/// 128 random bits as 22 URL-safe base64 characters. The bits come from std's randomly keyed
/// SipHash (a fresh key per `RandomState`), which is random enough for ids that must only be
/// unique, not secret.
pub fn random_member_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits: u128 = 0;
    for half in 0..2u64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(half);
        hasher.write_u128(Instant::now().elapsed().as_nanos());
        bits = (bits << 64) | u128::from(hasher.finish());
    }
    (0..MEMBER_ID_CHARS)
        .map(|index| {
            // 6 bits per character; the mask keeps the index below 64.
            let sextet = ((bits >> (index * 6)) & 0x3f) as usize;
            char::from(ALPHABET[sextet])
        })
        .collect()
}
