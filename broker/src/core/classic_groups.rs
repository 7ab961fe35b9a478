//! Classic consumer groups (Kafka's JoinGroup, SyncGroup, Heartbeat, LeaveGroup, and commits
//! checked by generation) as every front end calls them. The coordinator
//! (`groups::classic`) decides; this module adds what a request needs around it: a change to
//! the group is made durable (off the async workers) before any member hears of it, a wait
//! for the rest of the group ends when the broker stops, and commits are checked against the
//! topics' partition counts.
//!
//! Errors stay `GroupError`: the front end needs their fields (a JoinGroup refused with
//! MEMBER_ID_REQUIRED hands the client the id it must use), and maps them with
//! `CoreError::from` once.

use std::sync::Arc;
use std::time::Instant;

use super::{blocking, Core};
use crate::clock::now_ms;
use crate::error::GroupError;
use crate::groups::classic::{JoinRequest, JoinResponse, MemberRef, Pending, SyncRequest, SyncResponse};
use crate::groups::coordinator::CommitPartition;

impl Core {
    /// A classic JoinGroup; the answer may wait for the rest of the group (bounded by the
    /// rebalance timeout).
    pub(crate) async fn classic_join(
        self: &Arc<Self>,
        request: JoinRequest,
    ) -> Result<JoinResponse, GroupError> {
        let pending = self.groups.classic_join(Instant::now(), request)?;
        self.finish_classic(pending).await
    }

    /// A classic SyncGroup; a follower's answer waits for the leader's assignment.
    pub(crate) async fn classic_sync(
        self: &Arc<Self>,
        request: SyncRequest,
    ) -> Result<SyncResponse, GroupError> {
        let pending = self.groups.classic_sync(Instant::now(), request)?;
        self.finish_classic(pending).await
    }

    /// A classic Heartbeat: decided now, nothing to persist.
    pub(crate) fn classic_heartbeat(
        &self,
        group_id: &str,
        member: &MemberRef,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.groups
            .classic_heartbeat(Instant::now(), group_id, member, generation)
    }

    /// A classic LeaveGroup: one outcome per member (the id removed), in order.
    pub(crate) async fn classic_leave(
        self: &Arc<Self>,
        group_id: &str,
        members: &[MemberRef],
    ) -> Result<Vec<Result<String, GroupError>>, GroupError> {
        let pending = self.groups.classic_leave(Instant::now(), group_id, members)?;
        self.finish_classic(pending).await
    }

    /// An offset commit by a classic member (checked by generation; Kafka's rules in
    /// `groups::classic`), a KIP-848 member (the generation is its epoch) or an admin
    /// (generation -1, no member), durable before it returns. One outcome per partition, in
    /// request order; `Err` when the whole request fails.
    pub(crate) async fn commit_offsets_classic(
        self: &Arc<Self>,
        group_id: String,
        member: MemberRef,
        generation: i32,
        partitions: Vec<CommitPartition>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let core = self.clone();
        blocking(move || {
            let counts = |topic: &str| core.partition_count(topic);
            core.groups
                .commit_classic(&group_id, &member, generation, &partitions, &counts, now_ms())
        })
        .await
        .unwrap_or_else(|error| {
            Err(GroupError::InvalidRequest(format!(
                "the commit did not finish: {}",
                error.message
            )))
        })
    }

    /// Finishes a classic call: persist the group if it changed, answer the members waiting
    /// on it, then wait for this member's answer, unless the broker stops first (a join may
    /// wait up to its rebalance timeout, which must not hold up a shutdown).
    async fn finish_classic<T>(self: &Arc<Self>, pending: Pending<T>) -> Result<T, GroupError> {
        let mut shutdown = self.shutdown.clone();
        let core = self.clone();
        let persist = move |group_id: String| async move {
            blocking(move || core.groups.persist(&group_id))
                .await
                .map_err(|error| {
                    GroupError::InvalidRequest(format!("the group write did not finish: {}", error.message))
                })?
                .map_err(GroupError::from)
        };
        tokio::select! {
            finished = pending.finish(persist) => finished,
            _ = shutdown.wait_for(|stopping| *stopping) => {
                Err(GroupError::Unavailable("the broker is shutting down".into()))
            }
        }
    }
}
