//! Durability: group commit (one fdatasync for every appender waiting, led by whoever finds
//! none in progress, on the blocking pool or, for a lone waiter, on its own thread once that
//! thread has handed its async work to another), preallocation of the active segment after a
//! commit, and publishing the durable offset and high watermark. A child of `log`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::config::FlushPolicy;
use super::super::error::StorageError;
use super::super::segment::Segment;
use super::{error_chain, Inner, PartitionLog};

/// Where a group commit's leader runs the fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOn {
    /// A task on the blocking pool, which the leader awaits: its caller's future (and any
    /// other future polled with it) goes on being polled meanwhile. Two cross-thread wake-ups
    /// per sync: the worker wakes a pool thread, which wakes a worker back.
    BlockingPool,
    /// The leader's own thread, through `tokio::task::block_in_place`: the worker's other
    /// tasks move to another thread before the sync starts, so no async work waits for it,
    /// and the thread that took the request goes straight from its append to the fdatasync
    /// (no wake-up of a pool thread). Only the leader's own task waits, so use it only where
    /// nothing else is polled with this future. A current-thread runtime cannot hand its
    /// tasks over; there the sync runs on the blocking pool.
    CallerThread,
}

impl PartitionLog {
    /// Under [`FlushPolicy::Always`], resolves once everything below `next_offset` is
    /// fdatasync'ed and visible. Concurrent waiters share one fdatasync (group commit), run on
    /// the blocking thread pool. Under `Interval` and `Never` it returns at once.
    ///
    /// # Errors
    /// `Poisoned` if an fsync failed, `Io` if this call's fsync failed.
    pub async fn wait_durable(&self, next_offset: i64) -> Result<(), StorageError> {
        self.wait_durable_on(next_offset, SyncOn::BlockingPool).await
    }

    /// [`wait_durable`](Self::wait_durable), with the group commit led (if this call leads
    /// it) where `sync_on` says. With [`SyncOn::CallerThread`] a timeout around this future
    /// cannot fire during a sync this call leads: it answers once that sync is done.
    ///
    /// # Errors
    /// As [`wait_durable`](Self::wait_durable).
    pub async fn wait_durable_on(&self, next_offset: i64, sync_on: SyncOn) -> Result<(), StorageError> {
        if self.inner.config().flush != FlushPolicy::Always {
            return Ok(());
        }
        let in_place = sync_on == SyncOn::CallerThread && can_block_in_place();
        // An offset past everything written can never become durable: wait for what exists.
        let target = next_offset.min(self.inner.written_next_offset());
        loop {
            let mut durable_rx = self.inner.durable_tx.subscribe();
            if durable_rx.borrow_and_update().offset >= target {
                return Ok(());
            }
            self.inner.check_failure()?;
            if !self.inner.sync_in_progress.swap(true, Ordering::AcqRel) {
                // Leader: sync for everyone written so far. The blocking task finishes and
                // wakes the others even if this future is dropped.
                if in_place {
                    // The worker's core (its queue and its other tasks) moves to another
                    // thread first, so this blocks no async work but the leader's own.
                    match tokio::task::block_in_place(|| self.inner.group_commit()) {
                        Ok(()) => continue,
                        Err(error) => return Err(error),
                    }
                }
                let inner = Arc::clone(&self.inner);
                match tokio::task::spawn_blocking(move || inner.group_commit()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(error)) => return Err(error),
                    Err(join_error) => {
                        return Err(StorageError::Poisoned {
                            reason: format!("group commit task failed: {join_error}"),
                        })
                    }
                }
            }
            // Follower: the sync in progress may not cover us; after it finishes, loop and
            // either find our offset durable or lead the next one.
            if durable_rx.changed().await.is_err() {
                return Err(StorageError::Closed);
            }
        }
    }
}

/// `block_in_place` panics on a current-thread runtime (its only worker cannot hand its tasks
/// to another thread) and outside any runtime; only a multi-thread runtime may block in place.
fn can_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

impl Inner {
    /// fdatasyncs a segment's data file (and indexes if asked). A failed fsync poisons the
    /// log: the kernel may have dropped the dirty pages, and retrying would report success.
    pub(super) fn sync_segment(&self, segment: &Segment, indexes: bool) -> Result<(), StorageError> {
        let result = segment
            .sync_log()
            .and_then(|()| if indexes { segment.sync_indexes() } else { Ok(()) });
        self.log_syncs.fetch_add(1, Ordering::Relaxed);
        match &result {
            // No fsync ran: the file could not be reopened (descriptors exhausted). The data
            // is still in the page cache, so a retry is sound.
            Err(error) if error.is_reopen_failure() => {
                tracing::warn!(dir = %self.dir.display(), %error, "sync postponed: a segment file could not be reopened");
            }
            Err(error) => self.poison(format!("fsync failed: {error}")),
            Ok(()) => {}
        }
        result
    }

    /// Syncs the active segment up to what is written now and publishes it as durable.
    /// Returns the data bytes this sync wrote out that no earlier sync of the segment had.
    pub(super) fn sync_active(&self, indexes: bool) -> Result<u64, StorageError> {
        let (active, target, end) = {
            let writer = self.lock_writer()?;
            if indexes {
                writer.active.flush_index_entries()?;
            }
            (
                Arc::clone(&writer.active),
                writer.active.next_offset(),
                writer.active.end(),
            )
        };
        if !indexes && self.durable_tx.borrow().offset >= target {
            return Ok(0);
        }
        // If a roll happens meanwhile, it syncs this segment itself; syncing it again is
        // harmless and `target` lies within it.
        self.sync_segment(&active, indexes)?;
        self.publish_durable(target);
        Ok(active.mark_synced(end))
    }

    /// One group commit, on a blocking thread. Always clears the in-progress flag and wakes
    /// the waiters, even on error.
    pub(super) fn group_commit(&self) -> Result<(), StorageError> {
        struct Finish<'a>(&'a Inner);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                self.0.sync_in_progress.store(false, Ordering::Release);
                self.0.durable_tx.send_modify(|durable| durable.generation += 1);
            }
        }
        let _finish = Finish(self);
        self.check_failure()?;
        let synced_bytes = self.sync_active(false)?;
        self.extend_preallocation(synced_bytes)
    }

    /// Keeps zeros ahead of the active segment's data (under `Always`), synced, so the next
    /// appends overwrite allocated blocks and their fdatasync commits no new file length. Runs
    /// in the group-commit leader's slot after its waiters were woken, so it never overlaps a
    /// data sync; zeros are written under the writer lock, so never over data.
    ///
    /// Only after a small commit (`synced_bytes` at most `preallocate_sync_bytes_max`): the
    /// zeros save each later sync one metadata commit, tens of microseconds, which matters to
    /// a sync of a few KiB; a stream whose syncs carry hundreds of KiB would pay for them with
    /// twice the bytes written and a second fdatasync per chunk, and gain nothing it can see.
    pub(super) fn extend_preallocation(&self, synced_bytes: u64) -> Result<(), StorageError> {
        let config = self.config();
        if config.flush != FlushPolicy::Always
            || config.preallocate_bytes == 0
            || synced_bytes > config.preallocate_sync_bytes_max
        {
            return Ok(());
        }
        let active = {
            let writer = self.lock_writer()?;
            let active = Arc::clone(&writer.active);
            match active.preallocate(config.preallocate_bytes, config.segment_bytes) {
                Ok(true) => active,
                Ok(false) => return Ok(()),
                Err(error) => {
                    // Not fatal: appends grow the file as they would without preallocation.
                    tracing::warn!(dir = %self.dir.display(), error = %error_chain(&error), "could not preallocate the active segment");
                    return Ok(());
                }
            }
        };
        self.sync_segment(&active, false)
    }

    pub(super) fn publish_durable(&self, offset: i64) {
        // Visible first: a waiter woken by the durable offset must find its data readable.
        if self.config().flush == FlushPolicy::Always {
            self.publish_visible(offset);
        }
        self.durable_tx.send_if_modified(|durable| {
            if offset > durable.offset {
                durable.offset = offset;
                true
            } else {
                false
            }
        });
    }

    pub(super) fn publish_visible(&self, offset: i64) {
        // The watch channel's lock orders concurrent publishers, so the atomic only moves up.
        self.high_watermark_tx.send_if_modified(|high_watermark| {
            if offset > *high_watermark {
                *high_watermark = offset;
                self.high_watermark.store(offset, Ordering::Release);
                true
            } else {
                false
            }
        });
    }
}
