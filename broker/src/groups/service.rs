//! The coordinator as the broker runs it: behind one lock, loaded from and written to the
//! `MetadataStore`. In-memory decisions are quick and taken under the lock; sled writes are
//! blocking and happen outside it, serialised per group by a striped write lock.
//!
//! Why the write lock: every write for a group (its record, its offsets, its deletion) runs
//! under the group's stripe and reads the *latest* in-memory state when it runs, so a slow
//! write can never overwrite a newer one, and a commit validated against the old owner of a
//! partition is durable before the new owner's commit can be validated and written.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::classic::{Effects, JoinRequest, JoinResponse, MemberRef, Pending, SyncRequest, SyncResponse};
use super::coordinator::{CommitPartition, Coordinator, PartitionCounts};
use super::offset_waiters::OffsetWaiters;
use crate::config::GroupsConfig;
use crate::error::{GroupError, MetadataError};
use crate::metadata::{MetadataStore, OffsetRecord};

/// Write-lock stripes: enough that unrelated groups rarely wait on each other's sled flush.
const WRITE_LOCK_STRIPES: usize = 64;

#[derive(Debug)]
pub(crate) struct GroupService {
    coordinator: Mutex<Coordinator>,
    store: Arc<dyn MetadataStore>,
    write_locks: Vec<Mutex<()>>,
    /// Woken whenever a group's committed offsets change (after the change is durable).
    offset_waiters: Arc<OffsetWaiters>,
}

impl GroupService {
    /// Loads every group and committed offset. Blocking. A damaged record is skipped with an
    /// error in the log rather than refusing to start: the rest of the groups stay usable.
    pub fn open(
        config: GroupsConfig,
        store: Arc<dyn MetadataStore>,
        now: Instant,
    ) -> Result<Self, MetadataError> {
        let groups = store.groups()?.into_iter().filter_map(|record| {
            record
                .map_err(|error| tracing::error!(%error, "skipping a damaged consumer group record"))
                .ok()
        });
        let offsets = store.committed_offsets()?.into_iter().filter_map(|record| {
            record
                .map_err(|error| tracing::error!(%error, "skipping a damaged committed offset"))
                .ok()
        });
        let offset_waiters = Arc::new(OffsetWaiters::new(config.offset_waiters_max));
        let coordinator = Coordinator::load(
            config,
            groups.collect::<Vec<_>>(),
            offsets.collect::<Vec<_>>(),
            now,
        );
        tracing::info!(groups = coordinator.groups().count(), "consumer groups loaded");
        Ok(Self {
            coordinator: Mutex::new(coordinator),
            store,
            write_locks: (0..WRITE_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            offset_waiters,
        })
    }

    /// Runs `work` on the coordinator under its lock. Keep `work` free of I/O.
    pub fn with<T>(&self, work: impl FnOnce(&mut Coordinator) -> T) -> T {
        // A panic while holding the lock leaves the coordinator as the panicking call left
        // it; every method keeps the group invariants between statements that can panic
        // (none by design), so carrying on beats taking the whole broker down.
        let mut coordinator = self
            .coordinator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut coordinator)
    }

    /// The waiters `wait_for_group_offset` registers with.
    pub fn offset_waiters(&self) -> &Arc<OffsetWaiters> {
        &self.offset_waiters
    }

    fn write_lock(&self, group_id: &str) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        group_id.hash(&mut hasher);
        // The modulo keeps the index in range, and the list is never empty.
        let stripe = (hasher.finish() % WRITE_LOCK_STRIPES as u64) as usize;
        self.write_locks[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the group's current state durable, or deletes its record once the group is gone.
    /// Blocking.
    pub fn persist(&self, group_id: &str) -> Result<(), MetadataError> {
        let _write = self.write_lock(group_id);
        match self.with(|coordinator| coordinator.record(group_id)) {
            Some(record) => self.store.put_group(&record),
            None => self.store.delete_group(group_id).map(|_| ()),
        }
    }

    /// Validates and durably stores an offset commit; the offsets are visible to OffsetFetch
    /// only once flushed. Blocking. Returns the per-partition outcome, in request order.
    pub fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        partitions: &[CommitPartition],
        partition_count: PartitionCounts<'_>,
        now_ms: i64,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        self.commit_checked(group_id, partitions, now_ms, |coordinator| {
            coordinator.check_commit(group_id, member_id, member_epoch, partitions, partition_count)
        })
    }

    /// [`commit`](Self::commit) for a classic member (or an admin), checked by generation.
    pub fn commit_classic(
        &self,
        group_id: &str,
        member: &MemberRef,
        generation: i32,
        partitions: &[CommitPartition],
        partition_count: PartitionCounts<'_>,
        now_ms: i64,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        self.commit_checked(group_id, partitions, now_ms, |coordinator| {
            coordinator.check_commit_classic(group_id, member, generation, partitions, partition_count)
        })
    }

    fn commit_checked(
        &self,
        group_id: &str,
        partitions: &[CommitPartition],
        now_ms: i64,
        check: impl FnOnce(&mut Coordinator) -> Result<Vec<Result<(), GroupError>>, GroupError>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let _write = self.write_lock(group_id);
        let checks = self.with(check)?;
        let records: Vec<OffsetRecord> = partitions
            .iter()
            .zip(&checks)
            .filter(|(_, check)| check.is_ok())
            .map(|(partition, _)| OffsetRecord {
                group_id: group_id.to_owned(),
                topic: partition.topic.clone(),
                partition: partition.partition,
                offset: partition.offset,
                metadata: partition.metadata.clone(),
                commit_ms: now_ms,
            })
            .collect();
        if !records.is_empty() {
            self.store.put_offsets(&records)?;
            self.with(|coordinator| coordinator.apply_commit(&records));
            self.offset_waiters.notify(group_id);
        }
        Ok(checks)
    }

    /// Deletes some committed offsets of a group (Kafka's OffsetDelete): refused per
    /// partition whose topic a member subscribes to, as the member would commit it again.
    /// Blocking. Returns the per-partition outcome, in request order.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, u32)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let _write = self.write_lock(group_id);
        let checks: Vec<Result<(), GroupError>> = self.with(|coordinator| {
            coordinator.check_group_id(group_id)?;
            let group = coordinator
                .group(group_id)
                .ok_or_else(|| GroupError::GroupNotFound(group_id.to_owned()))?;
            let subscribed = group.all_subscribed_topics();
            Ok::<_, GroupError>(
                partitions
                    .iter()
                    .map(|(topic, _)| {
                        if subscribed.contains(topic) {
                            return Err(GroupError::SubscribedToTopic {
                                group_id: group_id.to_owned(),
                                topic: topic.clone(),
                            });
                        }
                        Ok(())
                    })
                    .collect(),
            )
        })?;
        let doomed: Vec<(String, u32)> = partitions
            .iter()
            .zip(&checks)
            .filter(|(_, check)| check.is_ok())
            .map(|(key, _)| key.clone())
            .collect();
        if !doomed.is_empty() {
            self.store.delete_offsets(group_id, &doomed)?;
            self.with(|coordinator| coordinator.forget_offsets(group_id, &doomed));
            self.offset_waiters.notify(group_id);
        }
        Ok(checks)
    }

    /// Deletes an empty group and its offsets. Blocking.
    pub fn delete(&self, group_id: &str) -> Result<(), GroupError> {
        let _write = self.write_lock(group_id);
        // Check and forget in one step, so no member can join in between; a join after this
        // starts a new group whose record is written after the deletion (same write lock).
        let removed = self.with(|coordinator| {
            coordinator.check_delete(group_id)?;
            Ok::<_, GroupError>(coordinator.take_group(group_id))
        })?;
        if let Err(error) = self.store.delete_group(group_id) {
            // Put it back (unless a new incarnation exists), so memory matches the store.
            if let Some(group) = removed {
                self.with(|coordinator| coordinator.restore_group(group));
            }
            return Err(error.into());
        }
        self.offset_waiters.notify(group_id);
        Ok(())
    }

    /// Removes expired members and enforces classic rebalance deadlines, in memory only;
    /// returns the groups that changed, which must then be [`persist`](Self::persist)ed.
    pub fn expire(&self, now: Instant) -> Vec<String> {
        let (mut changed, effects) = self.with(|coordinator| {
            let mut effects = Effects::default();
            let mut changed = coordinator.expire(now);
            changed.extend(coordinator.classic_expire(now, &mut effects));
            (changed, effects)
        });
        // What a deadline answers is a refusal or a JoinGroup result, neither of which waits
        // on durability (Kafka persists nothing before a JoinGroup answer either; a SyncGroup
        // completes only on the leader's request); the groups are persisted right after.
        effects.deliver();
        changed.sort();
        changed.dedup();
        changed
    }

    /// A classic JoinGroup, decided now; [`Pending::finish`] completes it.
    pub fn classic_join(
        &self,
        now: Instant,
        request: JoinRequest,
    ) -> Result<Pending<JoinResponse>, GroupError> {
        let group_id = request.group_id.clone();
        self.with(|coordinator| {
            let mut effects = Effects::default();
            let receiver = coordinator.classic_join(now, request, &mut effects)?;
            Ok(Pending::later(group_id, effects, receiver))
        })
    }

    /// A classic SyncGroup, decided now; [`Pending::finish`] completes it.
    pub fn classic_sync(
        &self,
        now: Instant,
        request: SyncRequest,
    ) -> Result<Pending<SyncResponse>, GroupError> {
        let group_id = request.group_id.clone();
        self.with(|coordinator| {
            let mut effects = Effects::default();
            let receiver = coordinator.classic_sync(now, request, &mut effects)?;
            Ok(Pending::later(group_id, effects, receiver))
        })
    }

    pub fn classic_heartbeat(
        &self,
        now: Instant,
        group_id: &str,
        member: &MemberRef,
        generation: i32,
    ) -> Result<(), GroupError> {
        self.with(|coordinator| coordinator.classic_heartbeat(now, group_id, member, generation))
    }

    /// A classic LeaveGroup: one outcome per member (the id removed), once
    /// [`Pending::finish`]ed.
    pub fn classic_leave(
        &self,
        now: Instant,
        group_id: &str,
        members: &[MemberRef],
    ) -> Result<Pending<Vec<Result<String, GroupError>>>, GroupError> {
        self.with(|coordinator| {
            let mut effects = Effects::default();
            let outcomes = coordinator.classic_leave(now, group_id, members, &mut effects)?;
            Ok(Pending::now(group_id.to_owned(), effects, outcomes))
        })
    }

    /// Persists each of the groups. Blocking.
    pub fn persist_all(&self, group_ids: &[String]) {
        for group_id in group_ids {
            if let Err(error) = self.persist(group_id) {
                tracing::error!(group = %group_id, %error, "could not persist a group after expiring members");
            }
        }
    }
}
