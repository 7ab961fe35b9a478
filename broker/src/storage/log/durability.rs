//! Durability: group commit (one fdatasync for every appender waiting, led by whoever finds
//! none in progress, on the blocking pool), preallocation of the active segment after a
//! commit, and publishing the durable offset and high watermark. A child of `log`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::config::FlushPolicy;
use super::super::error::StorageError;
use super::super::segment::Segment;
use super::{error_chain, Inner, PartitionLog};

impl PartitionLog {
    /// Under [`FlushPolicy::Always`], resolves once everything below `next_offset` is
    /// fdatasync'ed and visible. Concurrent waiters share one fdatasync (group commit), run on
    /// the blocking thread pool. Under `Interval` and `Never` it returns at once.
    ///
    /// # Errors
    /// `Poisoned` if an fsync failed, `Io` if this call's fsync failed.
    pub async fn wait_durable(&self, next_offset: i64) -> Result<(), StorageError> {
        if self.inner.config().flush != FlushPolicy::Always {
            return Ok(());
        }
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
    pub(super) fn sync_active(&self, indexes: bool) -> Result<(), StorageError> {
        let (active, target) = {
            let writer = self.lock_writer()?;
            if indexes {
                writer.active.flush_index_entries()?;
            }
            (Arc::clone(&writer.active), writer.active.next_offset())
        };
        if !indexes && self.durable_tx.borrow().offset >= target {
            return Ok(());
        }
        // If a roll happens meanwhile, it syncs this segment itself; syncing it again is
        // harmless and `target` lies within it.
        self.sync_segment(&active, indexes)?;
        self.publish_durable(target);
        Ok(())
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
        self.sync_active(false)?;
        self.extend_preallocation()
    }

    /// Keeps zeros ahead of the active segment's data (under `Always`), synced, so the next
    /// appends overwrite allocated blocks and their fdatasync commits no new file length. Runs
    /// in the group-commit leader's slot after its waiters were woken, so it never overlaps a
    /// data sync; zeros are written under the writer lock, so never over data.
    pub(super) fn extend_preallocation(&self) -> Result<(), StorageError> {
        if self.config().flush != FlushPolicy::Always || self.config().preallocate_bytes == 0 {
            return Ok(());
        }
        let active = {
            let writer = self.lock_writer()?;
            let active = Arc::clone(&writer.active);
            match active.preallocate(self.config().preallocate_bytes, self.config().segment_bytes) {
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
