//! `PartitionLog::cleaner_stats` and `PartitionLog::clean`: the log's side of cleaning. The
//! work itself is in `storage/cleaner/`; here are the locks and the in-memory swap.
//!
//! Concurrency: one clean at a time per log (`CleanerState::cleaning`). Appends never wait for
//! a clean: the cleaner reads closed, sealed segments, which no writer touches, and writes
//! files aside. Only the swap takes the maintenance lock (so retention, trims and close do not
//! run beside it) and, for the list change itself, the writer lock.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

use super::super::cleaner::plan::{self, Erasure};
use super::super::cleaner::{checkpoint, CleanerStats};
use super::super::disk::Disk;
use super::super::error::StorageError;
use super::{Inner, PartitionLog};

/// No checkpoint persisted.
const NO_CHECKPOINT: i64 = -1;

#[derive(Debug)]
pub(super) struct CleanerState {
    /// The persisted first dirty offset, `NO_CHECKPOINT` if none.
    checkpoint: AtomicI64,
}

impl CleanerState {
    /// Reads the cleaner's files at open.
    pub(super) fn open(disk: &dyn Disk, dir: &Path) -> Result<Self, StorageError> {
        disk.create_dir_all(dir)
            .map_err(StorageError::io("creating", dir))?;
        let checkpoint = checkpoint::read(disk, dir)?.unwrap_or(NO_CHECKPOINT);
        Ok(Self {
            checkpoint: AtomicI64::new(checkpoint),
        })
    }

    fn checkpoint(&self) -> Option<i64> {
        let offset = self.checkpoint.load(Ordering::Acquire);
        (offset != NO_CHECKPOINT).then_some(offset)
    }
}

impl PartitionLog {
    /// What the cleaner would find now. Cheap (no I/O): from segment metadata, the
    /// checkpoint and the marks.
    pub fn cleaner_stats(&self, now_ms: i64) -> CleanerStats {
        let inner = &*self.inner;
        let segments = inner.segments_snapshot();
        let config = inner.config();
        plan::stats(
            &segments,
            inner.cleaner.checkpoint(),
            &config,
            &inner.pending_erasures(),
            now_ms,
        )
    }
}

impl Inner {
    /// Erasures the cleaner still has to carry out.
    // Until the marks land (storage/stream_marks.rs): no erasures.
    fn pending_erasures(&self) -> Vec<Erasure> {
        Vec::new()
    }
}
