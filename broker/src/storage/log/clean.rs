//! `PartitionLog::cleaner_stats` and `PartitionLog::clean`: the log's side of cleaning. The
//! work itself is in `storage/cleaner/`; here are the locks and the in-memory swap.
//!
//! Concurrency: one clean at a time per log (`CleanerState::cleaning`). Appends never wait for
//! a clean: the cleaner reads closed, sealed segments, which no writer touches, and writes
//! files aside. Only the swap takes the maintenance lock (so retention, trims and close do not
//! run beside it) and, for the list change itself, the writer lock. Readers holding the old
//! list keep reading the old segments: their data files are kept open (pinned, so the file
//! cache never reopens them by a path that now names the cleaned file), and their per-key
//! index answers by scanning them.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tidelog_proto::batch::{BatchHeader, RecordView};

use super::super::cleaner::plan::{self, Erasure};
use super::super::cleaner::rewrite::{self, RewriteContext, Written};
use super::super::cleaner::swap::{self, CommitError, Journal};
use super::super::cleaner::{
    checkpoint, key_map, CleanDue, CleanOptions, CleanOutcome, CleanerStats, IoThrottle,
};
use super::super::disk::Disk;
use super::super::error::StorageError;
use super::super::key_index;
use super::super::segment::{write_lock, Segment, SegmentPaths};
use super::{lock_ignoring_poison, Inner, PartitionLog, SealMode};

/// No checkpoint persisted.
const NO_CHECKPOINT: i64 = -1;

#[derive(Debug)]
pub(super) struct CleanerState {
    /// Held for the whole of a clean.
    cleaning: Mutex<()>,
    /// The persisted first dirty offset, `NO_CHECKPOINT` if none.
    checkpoint: AtomicI64,
}

impl CleanerState {
    /// At open, before recovery: completes or undoes an interrupted swap, reads the checkpoint.
    pub(super) fn open(disk: &dyn Disk, dir: &Path) -> Result<Self, StorageError> {
        disk.create_dir_all(dir)
            .map_err(StorageError::io("creating", dir))?;
        swap::recover_at_open(disk, dir)?;
        let checkpoint = checkpoint::read(disk, dir)?.unwrap_or(NO_CHECKPOINT);
        Ok(Self {
            cleaning: Mutex::new(()),
            checkpoint: AtomicI64::new(checkpoint),
        })
    }

    fn checkpoint(&self) -> Option<i64> {
        let offset = self.checkpoint.load(Ordering::Acquire);
        (offset != NO_CHECKPOINT).then_some(offset)
    }
}

/// What the marks say the cleaner must remove.
// Until the marks land (storage/stream_marks.rs, contract §4): nothing.
#[derive(Debug, Clone, Default)]
struct Marks;

impl Marks {
    fn removes(&self, _key: &[u8], _offset: i64) -> bool {
        false
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

    /// Does what is due: pending erasures first, then compaction if the policy compacts and
    /// it is due ([`cleaner_stats`](Self::cleaner_stats)). Never blocks appends or readers
    /// except for the in-memory swap.
    ///
    /// # Errors
    /// `CleanFailed` (the scheduler marks the partition uncleanable), `CleanCancelled` (the
    /// throttle said stop; what was written aside is removed), or the log's own errors. A
    /// failure that left the old segments in place never poisons the log; an I/O failure
    /// after a swap's commit point does (the next open completes the swap).
    pub fn clean(
        &self,
        now_ms: i64,
        options: &CleanOptions,
        throttle: &dyn IoThrottle,
    ) -> Result<CleanOutcome, StorageError> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let _cleaning = lock_ignoring_poison(&inner.cleaner.cleaning);
        let span = tracing::info_span!("clean", dir = %inner.dir.display());
        let _span = span.enter();
        let mut outcome = CleanOutcome::default();
        let config = inner.config();
        let stats = self.cleaner_stats(now_ms);
        let compaction_due = config.cleanup_policy.compacts()
            && (matches!(stats.due, Some(CleanDue::MaxLag | CleanDue::DirtyRatio))
                || (matches!(stats.due, Some(CleanDue::Erasure { .. })) && compaction_due(&stats, &config)));
        if compaction_due {
            self.compact(now_ms, options, throttle, &mut outcome)?;
        }
        let segments = inner.segments_snapshot();
        outcome.first_dirty_offset = plan::first_dirty_offset(&segments, inner.cleaner.checkpoint());
        Ok(outcome)
    }

    /// One compaction pass over the cleanable range.
    fn compact(
        &self,
        now_ms: i64,
        options: &CleanOptions,
        throttle: &dyn IoThrottle,
        outcome: &mut CleanOutcome,
    ) -> Result<(), StorageError> {
        let inner = &*self.inner;
        let config = inner.config();
        let segments = inner.segments_snapshot();
        let cleanable = plan::cleanable_prefix(&segments, &config, now_ms);
        let range = &segments[..cleanable];
        let first_dirty = plan::first_dirty_offset(&segments, inner.cleaner.checkpoint());
        let dirty_end = range.last().map_or(first_dirty, |segment| segment.next_offset());
        if dirty_end <= first_dirty {
            return Ok(());
        }
        let (map, covered) = key_map::build(
            range,
            first_dirty,
            options.dedupe_bytes_max,
            config.decompressed_bytes_max,
            throttle,
        )?;
        if covered <= first_dirty {
            return Err(StorageError::CleanFailed {
                reason: format!(
                    "the keys of the batch at offset {first_dirty} do not fit cleaner.dedupe_buffer_bytes ({} bytes)",
                    options.dedupe_bytes_max
                ),
                source: None,
            });
        }
        if covered < dirty_end {
            tracing::info!(
                first_dirty,
                covered,
                dirty_end,
                keys = map.len(),
                "the key map is full: cleaning the part of the dirty range it covers"
            );
        }
        let rewrite_count = range
            .iter()
            .take_while(|segment| segment.base_offset < covered)
            .count();
        let groups = plan::groups(&range[..rewrite_count], config.segment_bytes);
        let marks = Marks;
        let context = RewriteContext {
            disk: &*inner.disk,
            dir: &inner.dir,
            index_interval_bytes: config.index_interval_bytes,
            decompressed_bytes_max: config.decompressed_bytes_max,
            delete_horizon_ms: Some(now_ms.saturating_add(config.compaction.delete_retention_ms)),
            throttle,
        };
        let mut complete = true;
        for group in groups {
            let mut retain = |header: &BatchHeader, record: &RecordView<'_>| {
                let Some(key) = record.key else {
                    // Keyless records (appended before the policy compacted) are kept.
                    return true;
                };
                if marks.removes(key, record.offset) {
                    return false;
                }
                if map.latest(key).is_some_and(|latest| record.offset < latest) {
                    return false;
                }
                // A tombstone goes once its batch's delete horizon has passed.
                !(record.is_tombstone
                    && header
                        .delete_horizon_ms()
                        .is_some_and(|horizon| now_ms >= horizon))
            };
            outcome.segments_read += group.len();
            let Some(written) = rewrite::write_group(&context, group, &mut retain)? else {
                outcome.bytes_read += group.iter().map(|segment| segment.end()).sum::<u64>();
                continue;
            };
            outcome.bytes_read += written.bytes_read;
            let (before, after, removed) =
                (written.bytes_before, written.bytes_after, written.records_removed);
            if inner.swap_in(group, written)? {
                outcome.segments_written += 1;
                outcome.bytes_before += before;
                outcome.bytes_after += after;
                outcome.records_removed += removed;
            } else {
                complete = false;
            }
        }
        if complete {
            checkpoint::write(&*inner.disk, &inner.dir, covered)?;
            inner.cleaner.checkpoint.store(covered, Ordering::Release);
        }
        tracing::info!(
            segments_read = outcome.segments_read,
            segments_written = outcome.segments_written,
            bytes_before = outcome.bytes_before,
            bytes_after = outcome.bytes_after,
            records_removed = outcome.records_removed,
            first_dirty_offset = covered,
            "compacted"
        );
        Ok(())
    }
}

/// Whether compaction itself is due, whatever erasures say.
fn compaction_due(stats: &CleanerStats, config: &super::super::config::LogConfig) -> bool {
    stats.dirty_bytes > 0 && stats.dirty_ratio >= config.compaction.min_cleanable_dirty_ratio
}

impl Inner {
    /// Erasures the cleaner still has to carry out.
    // Until the marks land (storage/stream_marks.rs): no erasures.
    fn pending_erasures(&self) -> Vec<Erasure> {
        Vec::new()
    }

    /// Replaces `group` (consecutive closed segments of the list) by the cleaned segment
    /// written aside, on disk and in memory. `Ok(false)`: the list changed meanwhile
    /// (retention, a trim or close ran) and the cleaned files were dropped, nothing swapped.
    fn swap_in(&self, group: &[Arc<Segment>], written: Written) -> Result<bool, StorageError> {
        let base_offset = written.base_offset;
        let aside = swap::aside_paths(&self.dir, base_offset);
        let _maintenance = lock_ignoring_poison(&self.maintenance);
        let abandon = |reason: &str| {
            tracing::info!(base_offset, reason, "abandoning a cleaned segment");
            rewrite::remove_aside(&*self.disk, &aside);
        };
        if self.closed.load(Ordering::Acquire) {
            abandon("the log closed");
            return Err(StorageError::CleanCancelled);
        }
        let segments = self.segments_snapshot();
        if position_of(&segments, group).is_none() {
            abandon("the segments changed while it was written");
            return Ok(false);
        };
        // Readers with the old list keep reading the old files through these descriptors.
        for segment in group {
            if let Err(error) = segment.log.keep_open(true) {
                for segment in group {
                    let _ = segment.log.keep_open(false);
                }
                abandon("an old segment's file could not be kept open");
                return Err(StorageError::io("keeping open", &segment.paths.log)(error));
            }
        }
        let journal = Journal {
            new_base: base_offset,
            replaced: group.iter().map(|segment| segment.base_offset).collect(),
        };
        match swap::commit(&*self.disk, &self.dir, &journal) {
            Ok(()) => {}
            Err(CommitError::Before(error)) => {
                for segment in group {
                    let _ = segment.log.keep_open(false);
                }
                abandon("the swap journal could not be written");
                return Err(error);
            }
            Err(CommitError::Unknown(error)) => {
                self.poison(format!(
                    "the cleaner's swap at {base_offset} may or may not have committed: {error}"
                ));
                return Err(error);
            }
        }
        // Committed: from here every failure poisons, and the next open rolls forward.
        for segment in group {
            segment.keys.mark_replaced();
        }
        let installed = (|| {
            swap::roll_forward(&*self.disk, &self.dir, &journal)?;
            let paths = SegmentPaths::new(&self.dir, base_offset);
            let open = |path: &Path| {
                self.disk
                    .open(path, false)
                    .map_err(StorageError::io("opening", path))
            };
            let log = open(&paths.log)?;
            let offset_index = open(&paths.offset_index)?;
            let time_index = open(&paths.time_index)?;
            Ok::<_, StorageError>(Arc::new(Segment::from_parts(
                base_offset,
                paths,
                log,
                offset_index,
                time_index,
                written.state,
            )))
        })();
        let segment = match installed {
            Ok(segment) => segment,
            Err(error) => {
                self.poison(format!(
                    "the cleaner's swap at {base_offset} failed after its commit: {error}"
                ));
                return Err(error);
            }
        };
        {
            let _writer = self.lock_writer()?;
            let current = self.segments_snapshot();
            let Some(start) = position_of(&current, group) else {
                // Only retention, trims and close remove segments, and they wait for the
                // maintenance lock we hold.
                self.poison(format!(
                    "the segment list changed under the cleaner's swap at {base_offset}"
                ));
                return Err(StorageError::CleanFailed {
                    reason: "the segment list changed during a swap".to_string(),
                    source: None,
                });
            };
            let mut list = current.to_vec();
            list.splice(start..start + group.len(), [Arc::clone(&segment)]);
            *write_lock(&self.segments) = Arc::new(list);
        }
        if let Err(error) = swap::finish(&*self.disk, &self.dir) {
            // Harmless: the next open repeats the (completed) roll forward.
            tracing::warn!(%error, "could not remove the cleaner's swap journal");
        }
        if self.seal_mode == SealMode::Background {
            key_index::enqueue(&segment, &self.index_context());
        }
        tracing::info!(
            base_offset,
            replaced = group.len(),
            bytes = segment.end(),
            "swapped in a cleaned segment"
        );
        Ok(true)
    }
}

/// Where `group` sits in `segments` (by identity, consecutive, not the active segment).
fn position_of(segments: &[Arc<Segment>], group: &[Arc<Segment>]) -> Option<usize> {
    let first = group.first()?;
    let start = segments.iter().position(|segment| Arc::ptr_eq(segment, first))?;
    let end = start + group.len();
    let same = end < segments.len()
        && segments[start..end]
            .iter()
            .zip(group)
            .all(|(a, b)| Arc::ptr_eq(a, b));
    same.then_some(start)
}

/// Whether the whole batches in `records` hold a record at or after `offset`. Outside a
/// cleaned segment every batch holds records for its whole range, so any non-empty batch
/// does; in a cleaned one a placeholder holds none, and only the batch that straddles
/// `offset` can hold records below it alone (its records are decoded to tell).
pub(super) fn holds_record_from(records: &bytes::Bytes, offset: i64, cleaned: bool) -> bool {
    for batch in tidelog_proto::batch::BatchIter::new(records.clone()) {
        let Ok(batch) = batch else {
            // Segment::read returned whole, checked batches; a surprise here is not progress.
            return false;
        };
        let header = batch.header();
        if header.record_count == 0 {
            continue;
        }
        if !cleaned || header.base_offset >= offset {
            return true;
        }
        let has_later = batch
            .records()
            .any(|record| record.is_ok_and(|record| record.offset >= offset));
        if has_later {
            return true;
        }
    }
    false
}
