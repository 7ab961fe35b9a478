//! The classic protocol at the coordinator: finds or creates the group, keeps one protocol
//! per group (a group in use by consumer-protocol members refuses a classic join, and the
//! other way round), validates classic offset commits; and [`Pending`], how a front end
//! finishes a classic call (persist, then answer the waiters, then wait for its own answer).

use std::future::Future;
use std::time::Instant;

use tokio::sync::oneshot;

use super::{ClassicGroup, Effects, JoinRequest, JoinResult, MemberRef, SyncRequest, SyncResult};
use crate::error::GroupError;
use crate::groups::coordinator::{CommitPartition, Coordinator, PartitionCounts};
use crate::groups::group::Group;

impl Coordinator {
    pub fn classic_join(
        &mut self,
        now: Instant,
        request: JoinRequest,
        effects: &mut Effects,
    ) -> Result<oneshot::Receiver<JoinResult>, GroupError> {
        self.check_group_id(&request.group_id)?;
        self.check_new_group(&request.group_id)?;
        let group_id = request.group_id.clone();
        let Coordinator { config, groups } = self;
        let group = groups
            .entry(group_id.clone())
            .or_insert_with(|| Group::new(group_id.clone()));
        let joined = if group.members.is_empty() {
            group
                .classic
                .get_or_insert_with(|| ClassicGroup::new(group_id.clone()))
                .join(config, now, request, effects)
        } else {
            Err(GroupError::InconsistentGroupProtocol(format!(
                "group {group_id:?} is in use by consumer-protocol (KIP-848) members"
            )))
        };
        if joined.is_err() {
            // A refused first join must not leave behind the empty group it created.
            self.drop_if_disposable(&group_id);
        }
        joined
    }

    pub fn classic_sync(
        &mut self,
        now: Instant,
        request: SyncRequest,
        effects: &mut Effects,
    ) -> Result<oneshot::Receiver<SyncResult>, GroupError> {
        let config = self.config.clone();
        self.classic_mut(&request.group_id, &request.member_id)?
            .sync(&config, now, request, effects)
    }

    pub fn classic_heartbeat(
        &mut self,
        now: Instant,
        group_id: &str,
        member: &MemberRef,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.classic_mut(group_id, &member.member_id)?
            .heartbeat(now, member, generation)
    }

    /// One outcome per member named, with the id of the member removed.
    pub fn classic_leave(
        &mut self,
        now: Instant,
        group_id: &str,
        members: &[MemberRef],
        effects: &mut Effects,
    ) -> Result<Vec<Result<String, GroupError>>, GroupError> {
        let first = members
            .first()
            .map(|member| member.member_id.as_str())
            .unwrap_or_default();
        let outcomes = self.classic_mut(group_id, first)?.leave(now, members, effects);
        self.drop_if_disposable(group_id);
        Ok(outcomes)
    }

    /// Enforces every classic group's deadlines; returns the groups that changed.
    pub fn classic_expire(&mut self, now: Instant, effects: &mut Effects) -> Vec<String> {
        let changed: Vec<String> = self
            .groups
            .values_mut()
            .filter_map(|group| {
                let classic = group.classic.as_mut()?;
                classic.expire(now, effects).then(|| group.id.clone())
            })
            .collect();
        for group_id in &changed {
            self.drop_if_disposable(group_id);
        }
        changed
    }

    /// Checks a classic offset commit (generation and member, Kafka's rules; see
    /// [`ClassicGroup::check_commit`]), then each partition as for any commit. A group in use
    /// by consumer-protocol members reads the generation as the member epoch, as Kafka does.
    pub fn check_commit_classic(
        &self,
        group_id: &str,
        member: &MemberRef,
        generation: i32,
        partitions: &[CommitPartition],
        partition_count: PartitionCounts<'_>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        self.check_group_id(group_id)?;
        match self.groups.get(group_id) {
            Some(group) if !group.members.is_empty() => {
                return self.check_commit(
                    group_id,
                    &member.member_id,
                    generation,
                    partitions,
                    partition_count,
                );
            }
            Some(Group {
                classic: Some(classic),
                ..
            }) => classic.check_commit(member, generation)?,
            found => {
                // No classic side: it behaves as an empty classic group.
                if found.is_none() {
                    self.check_new_group(group_id)?;
                }
                ClassicGroup::new(group_id.to_owned()).check_commit(member, generation)?;
            }
        }
        self.check_partitions(group_id, partitions, partition_count, None)
    }

    fn classic_mut(&mut self, group_id: &str, member_id: &str) -> Result<&mut ClassicGroup, GroupError> {
        self.check_group_id(group_id)?;
        self.groups
            .get_mut(group_id)
            .and_then(|group| group.classic.as_mut())
            .ok_or_else(|| GroupError::UnknownMember {
                group_id: group_id.to_owned(),
                member_id: member_id.to_owned(),
            })
    }
}

enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<Result<T, GroupError>>),
}

/// A classic call decided under the coordinator's lock, to be finished outside it.
#[must_use = "the call's effects are only applied by `finish`"]
pub struct Pending<T> {
    group_id: String,
    effects: Effects,
    reply: Reply<T>,
}

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("group_id", &self.group_id)
            .field("effects", &self.effects)
            .finish_non_exhaustive()
    }
}

impl<T> Pending<T> {
    pub(in crate::groups) fn now(group_id: String, effects: Effects, value: T) -> Self {
        Self {
            group_id,
            effects,
            reply: Reply::Now(value),
        }
    }

    pub(in crate::groups) fn later(
        group_id: String,
        effects: Effects,
        receiver: oneshot::Receiver<Result<T, GroupError>>,
    ) -> Self {
        Self {
            group_id,
            effects,
            reply: Reply::Later(receiver),
        }
    }

    /// Makes the group durable if the call changed it (`persist` runs the blocking write on
    /// the caller's blocking pool), then hands out the answers the call completed, then
    /// waits for this member's own answer. The wait is bounded: every waiting member is
    /// answered by its rebalance deadline, which the expiry timer enforces. If the write
    /// fails, nobody hears of the state it would have made durable: the other waiters'
    /// senders are dropped, which tells them to rejoin.
    pub async fn finish<F, Fut>(self, persist: F) -> Result<T, GroupError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<(), GroupError>>,
    {
        if self.effects.persist {
            persist(self.group_id.clone()).await?;
        }
        self.effects.deliver();
        match self.reply {
            Reply::Now(value) => Ok(value),
            Reply::Later(receiver) => receiver
                .await
                .unwrap_or(Err(GroupError::RebalanceInProgress(self.group_id))),
        }
    }
}
