//! The storage side of log cleaning (issue 9 §1, and the physical purge of §3's erasures):
//! `PartitionLog::cleaner_stats` says what is due, `PartitionLog::clean` (in `log/clean.rs`)
//! does it. Pieces: `plan` chooses what may be cleaned and computes the stats; `key_map`
//! holds each key's last offset over the range; `rewrite` writes the cleaned segment aside
//! through `tidelog_proto::batch::filter`; `swap` replaces the old segments crash-safely and
//! rolls an interrupted swap forward at open; `checkpoint` persists the first dirty offset.
//!
//! Rules (docs/storage-format.md, "Cleaned segments"): only closed, sealed segments are
//! rewritten; offsets never change; a cleaned segment keeps the first replaced segment's base
//! offset and ends with the batch that held the last offset of the last one.

pub(crate) mod checkpoint;
pub(crate) mod key_map;
pub(crate) mod plan;
pub(crate) mod rewrite;
pub(crate) mod swap;

/// Paces cleaner I/O. The broker's cleaner service implements it (a token bucket over
/// `cleaner.io_bytes_per_sec_max`, false at shutdown).
pub trait IoThrottle: Send + Sync {
    /// Blocks until `bytes` more may be read or written; false: stop now (the clean abandons
    /// its work, removing what it wrote aside, and returns `StorageError::CleanCancelled`).
    fn acquire(&self, bytes: u64) -> bool;
}

/// No pacing at all: for tests and tools.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unthrottled;

impl IoThrottle for Unthrottled {
    fn acquire(&self, _bytes: u64) -> bool {
        true
    }
}

/// Why cleaning is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanDue {
    /// An erasure is pending; finish by this time (ms since the epoch).
    Erasure { deadline_ms: i64 },
    /// The oldest dirty record is older than max.compaction.lag.ms.
    MaxLag,
    /// dirty_ratio >= min.cleanable.dirty.ratio.
    DirtyRatio,
}

/// What the cleaner would find in a partition now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanerStats {
    /// Bytes of closed segments below the cleaner checkpoint (cleaned before) and above it
    /// (dirty), counting only what min.compaction.lag.ms lets be cleaned as dirty.
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    pub dirty_ratio: f64,
    /// The first offset not yet cleaned (the persisted cleaner checkpoint; log start if none).
    pub first_dirty_offset: i64,
    /// What is due now (compaction only for compacting policies; erasures for any); None:
    /// nothing to do.
    pub due: Option<CleanDue>,
    pub erasures_pending: u32,
}

/// Bounds of one clean.
#[derive(Debug, Clone, Copy)]
pub struct CleanOptions {
    /// cleaner.dedupe_buffer_bytes: bound on the key map (key bytes + offsets).
    pub dedupe_bytes_max: usize,
}

/// What one clean did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanOutcome {
    pub segments_read: usize,
    pub segments_written: usize,
    pub bytes_read: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub erasures_completed: usize,
    /// The new cleaner checkpoint.
    pub first_dirty_offset: i64,
}
