//! Consumer-group operations every front end calls: the KIP-848 heartbeat (a change is made
//! durable before the member hears of it), offset commits and fetches, listing, describing
//! (with each partition's lag) and deleting groups. The coordinator (`groups`) decides; this
//! module adds what a request needs around it: topic checks, persistence, log ends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use super::error::without_paths;
use super::{blocking, Core, CoreError, Decided, ErrorCode};
use crate::clock::now_ms;
use crate::error::GroupError;
use crate::groups::assignor::Assignment;
use crate::groups::coordinator::{CommitPartition, Heartbeat, HeartbeatReply};
use crate::groups::group::{Committed, Group};
use crate::topics::validate_topic_name;

/// One group in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupListing {
    pub group_id: String,
    pub state: &'static str,
    pub members: u32,
}

/// A group as DescribeGroups shows it: its state and members, and per partition of its
/// subscribed and committed topics the committed offset, log end, lag and owner.
#[derive(Debug, Clone)]
pub(crate) struct GroupDescription {
    pub group: Group,
    pub offsets: Vec<PartitionLag>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// -1: nothing committed.
    pub committed_offset: i64,
    /// -1: unknown (no such partition, or offline).
    pub log_end_offset: i64,
    /// -1 when either side is unknown.
    pub lag: i64,
    /// The member the partition is assigned to, if any.
    pub owner: Option<String>,
}

impl Core {
    /// A KIP-848 heartbeat: join, stay in, or leave. The coordinator decides now, on the
    /// caller's task (so a connection's heartbeats are decided in the order sent); a change to
    /// the group is persisted before the reply is released, so a member never acts on an
    /// assignment a restart would forget.
    pub(crate) fn consumer_group_heartbeat(
        self: &Arc<Self>,
        heartbeat: Heartbeat,
    ) -> Decided<HeartbeatReply> {
        // Subscriptions are stored per member and persisted: every name must be a topic name.
        let name_bytes_max = self.config.limits.topic_name_bytes_max;
        if let Some(error) = heartbeat
            .subscription
            .iter()
            .flatten()
            .find_map(|topic| validate_topic_name(topic, name_bytes_max).err())
        {
            return Decided::Ready(Err(CoreError::from(&error)));
        }
        let group_id = heartbeat.group_id.clone();
        let counts = |topic: &str| self.partition_count(topic);
        let replied = self
            .groups
            .with(|coordinator| coordinator.heartbeat(Instant::now(), heartbeat, &counts));
        let reply = match replied {
            Ok(reply) if reply.changed => reply,
            other => return Decided::Ready(other.map_err(CoreError::from)),
        };
        let core = self.clone();
        Decided::Pending(Box::pin(async move {
            match blocking(move || core.groups.persist(&group_id)).await? {
                Ok(()) => Ok(reply),
                Err(error) => {
                    tracing::error!(%error, "could not persist a consumer group");
                    Err(CoreError::new(
                        ErrorCode::CoordinatorNotAvailable,
                        format!(
                            "group state could not be made durable: {}",
                            without_paths(&error.to_string())
                        ),
                    ))
                }
            }
        }))
    }

    /// Validates a commit against the group (member, epoch, ownership) and makes the offsets
    /// durable before returning. One outcome per partition, in request order; `Err` when the
    /// whole request fails.
    pub(crate) async fn commit_offsets(
        self: &Arc<Self>,
        group_id: String,
        member_id: String,
        member_epoch: i32,
        partitions: Vec<CommitPartition>,
    ) -> Result<Vec<Result<(), CoreError>>, CoreError> {
        let core = self.clone();
        let checks = blocking(move || {
            let counts = |topic: &str| core.partition_count(topic);
            core.groups.commit(
                &group_id,
                &member_id,
                member_epoch,
                &partitions,
                &counts,
                now_ms(),
            )
        })
        .await??;
        Ok(checks
            .into_iter()
            .map(|check| check.map_err(CoreError::from))
            .collect())
    }

    /// Deletes committed offsets of a group (Kafka's OffsetDelete), except for topics its
    /// members subscribe to (refused per partition: a member would commit them again). One
    /// outcome per partition, in request order; `Err` when the whole request fails.
    pub(crate) async fn delete_offsets(
        self: &Arc<Self>,
        group_id: String,
        partitions: Vec<(String, u32)>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let core = self.clone();
        blocking(move || core.groups.delete_offsets(&group_id, &partitions))
            .await
            .unwrap_or_else(|error| {
                Err(GroupError::InvalidRequest(format!(
                    "the delete did not finish: {}",
                    error.message
                )))
            })
    }

    /// Committed offsets of the partitions asked for (`None`: nothing committed), or of every
    /// committed partition when `asked` is empty. Served from memory, which holds only offsets
    /// already flushed.
    pub(crate) fn fetch_offsets(
        &self,
        group_id: &str,
        asked: &Assignment,
    ) -> Result<BTreeMap<(String, u32), Option<Committed>>, CoreError> {
        Ok(self
            .groups
            .with(|coordinator| coordinator.fetch_offsets(group_id, asked))?)
    }

    /// Every group this broker coordinates (with members or committed offsets).
    pub(crate) fn list_groups(&self) -> Vec<GroupListing> {
        self.groups.with(|coordinator| {
            coordinator
                .groups()
                .map(|group| GroupListing {
                    group_id: group.id.clone(),
                    state: group.state().as_str(),
                    // Bounded by members_per_group_max, far below u32::MAX.
                    members: u32::try_from(group.member_views().len()).unwrap_or(u32::MAX),
                })
                .collect()
        })
    }

    /// One group with its lag; GROUP_ID_NOT_FOUND when it does not exist.
    pub(crate) fn describe_group(&self, group_id: &str) -> Result<GroupDescription, CoreError> {
        // Copy what is needed under the lock; log offsets are read after it is released.
        let group = self.groups.with(|coordinator| {
            coordinator.check_group_id(group_id)?;
            coordinator
                .group(group_id)
                .cloned()
                .ok_or_else(|| GroupError::GroupNotFound(group_id.to_owned()))
        })?;
        let offsets = self.lag(&group);
        Ok(GroupDescription { group, offsets })
    }

    /// Deletes empty groups with their committed offsets; one outcome per group, in order.
    pub(crate) async fn delete_groups(
        self: &Arc<Self>,
        group_ids: Vec<String>,
    ) -> Result<Vec<(String, Result<(), CoreError>)>, CoreError> {
        let core = self.clone();
        blocking(move || {
            group_ids
                .into_iter()
                .map(|group_id| {
                    let deleted = core.groups.delete(&group_id);
                    if deleted.is_ok() {
                        tracing::info!(group = %group_id, "consumer group deleted");
                    }
                    (group_id, deleted.map_err(CoreError::from))
                })
                .collect()
        })
        .await
    }

    /// Every partition of every subscribed topic, plus every committed partition, with lag.
    fn lag(&self, group: &Group) -> Vec<PartitionLag> {
        let mut partitions: BTreeSet<(String, u32)> = group.offsets.keys().cloned().collect();
        // Either protocol's subscriptions (classic ones as far as they decode).
        let subscribed = group.all_subscribed_topics();
        let mut log_ends: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for topic in subscribed
            .iter()
            .cloned()
            .chain(group.offsets.keys().map(|(t, _)| t.clone()))
        {
            if log_ends.contains_key(&topic) {
                continue;
            }
            let ends: Vec<i64> = self
                .registry
                .get(&topic)
                .map(|found| {
                    // -1 (unknown) for an offline partition, as for one without a log end.
                    found
                        .partitions
                        .iter()
                        .map(|slot| slot.log().map_or(-1, |log| log.high_watermark()))
                        .collect()
                })
                .unwrap_or_default();
            if subscribed.contains(&topic) {
                for partition in 0..ends.len() {
                    // Partition counts are bounded by partitions_per_topic_max, a u32.
                    partitions.insert((topic.clone(), u32::try_from(partition).unwrap_or(u32::MAX)));
                }
            }
            log_ends.insert(topic, ends);
        }
        partitions
            .into_iter()
            .map(|(topic, partition)| {
                let committed = group
                    .offsets
                    .get(&(topic.clone(), partition))
                    .map_or(-1, |committed| committed.offset);
                let log_end = log_ends
                    .get(&topic)
                    .and_then(|ends| ends.get(partition as usize))
                    .copied()
                    .unwrap_or(-1);
                let lag = if committed >= 0 && log_end >= 0 {
                    (log_end - committed).max(0)
                } else {
                    -1
                };
                PartitionLag {
                    owner: group.owner_id(&topic, partition),
                    topic,
                    partition,
                    committed_offset: committed,
                    log_end_offset: log_end,
                    lag,
                }
            })
            .collect()
    }
}
