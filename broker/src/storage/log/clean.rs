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
use super::super::cleaner::{checkpoint, key_map, CleanOptions, CleanOutcome, CleanerStats, IoThrottle};
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
        if !inner.marks_snapshot().pending_erasures().is_empty() {
            self.purge_erasures(now_ms, throttle, &mut outcome)?;
        }
        let config = inner.config();
        let segments = inner.segments_snapshot();
        let compaction_due = plan::compaction_due(&segments, inner.cleaner.checkpoint(), &config, now_ms);
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
        // Marks win over compaction: what a truncation or erasure removes goes, even the
        // latest record of its key.
        let marks = inner.marks_snapshot();
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
            match inner.rewrite_and_swap(&context, group, &mut retain, outcome)? {
                None => outcome.bytes_read += group.iter().map(|segment| segment.end()).sum::<u64>(),
                Some(true) => {}
                Some(false) => complete = false,
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

impl PartitionLog {
    /// The physical purge of pending erasures (issue 9 §3): every segment holding a record
    /// of an erased key below its erase point is rewritten alone (the active one is rolled
    /// first, and sealed), applying every mark; an erasure whose key no segment holds any
    /// more is complete.
    fn purge_erasures(
        &self,
        now_ms: i64,
        throttle: &dyn IoThrottle,
        outcome: &mut CleanOutcome,
    ) -> Result<(), StorageError> {
        let inner = &self.inner;
        let marks = inner.marks_snapshot();
        let pending = marks.pending_erasures();
        let mut holding = Vec::with_capacity(pending.len());
        for erasure in &pending {
            holding.push(inner.segments_holding(&erasure.key, erasure.erase_before)?);
        }
        if holding.iter().any(|holding| holding.active) {
            {
                let mut writer = inner.lock_writer()?;
                if !writer.active.is_empty() {
                    inner.roll(&mut writer)?;
                }
            }
            tracing::info!("rolled the active segment to purge an erased stream");
            holding.clear();
            for erasure in &pending {
                holding.push(inner.segments_holding(&erasure.key, erasure.erase_before)?);
            }
        }
        // Under `interval` and `never` the rolled segment is sealed here, not by the sealer
        // thread: only sealed segments are rewritten.
        inner.seal_pending()?;
        let mut bases: Vec<i64> = holding
            .iter()
            .flat_map(|holding| holding.closed.iter().copied())
            .collect();
        bases.sort_unstable();
        bases.dedup();
        let config = inner.config();
        let context = RewriteContext {
            disk: &*inner.disk,
            dir: &inner.dir,
            index_interval_bytes: config.index_interval_bytes,
            decompressed_bytes_max: config.decompressed_bytes_max,
            // A purge only removes: tombstone horizons are compaction's business.
            delete_horizon_ms: None,
            throttle,
        };
        for base in bases {
            let segments = inner.segments_snapshot();
            let closed = &segments[..segments.len().saturating_sub(1)];
            let Some(segment) = closed.iter().find(|segment| segment.base_offset == base) else {
                // Retention or a trim took it meanwhile: its records are gone anyway.
                continue;
            };
            if segment.has_fences() || !segment.is_sealed() {
                return Err(StorageError::CleanFailed {
                    reason: format!(
                        "segment {base} holds records of an erased stream but is damaged (fenced) or unsealed; the erasure cannot complete"
                    ),
                    source: None,
                });
            }
            let group = std::slice::from_ref(segment);
            let mut retain = |_: &BatchHeader, record: &RecordView<'_>| {
                record.key.is_none_or(|key| !marks.removes(key, record.offset))
            };
            outcome.segments_read += 1;
            inner.rewrite_and_swap(&context, group, &mut retain, outcome)?;
        }
        for erasure in &pending {
            let left = inner.segments_holding(&erasure.key, erasure.erase_before)?;
            if left.records == 0 {
                inner.erasure_done(&erasure.key, erasure.erase_before, now_ms)?;
                outcome.erasures_completed += 1;
            } else {
                tracing::warn!(
                    records = left.records,
                    segments = left.closed.len(),
                    "an erasure is not complete yet; the next clean goes on"
                );
            }
        }
        Ok(())
    }
}

impl Inner {
    /// Erasures the cleaner still has to carry out.
    fn pending_erasures(&self) -> Vec<Erasure> {
        self.marks_snapshot()
            .pending_erasures()
            .into_iter()
            .map(|pending| Erasure {
                key: pending.key,
                erase_before: pending.erase_before,
                deadline_ms: pending.deadline_ms,
            })
            .collect()
    }

    /// Rewrites `group` through `retain` and swaps the result in, counting what it did in
    /// `outcome`. `None`: the group needed no rewrite; `Some(false)`: the list changed
    /// meanwhile and nothing was swapped (see [`Self::swap_in`]).
    fn rewrite_and_swap(
        &self,
        context: &RewriteContext<'_>,
        group: &[Arc<Segment>],
        retain: &mut rewrite::Retain<'_>,
        outcome: &mut CleanOutcome,
    ) -> Result<Option<bool>, StorageError> {
        let Some(written) = rewrite::write_group(context, group, retain)? else {
            return Ok(None);
        };
        outcome.bytes_read += written.bytes_read;
        let (before, after, removed) = (written.bytes_before, written.bytes_after, written.records_removed);
        let swapped = self.swap_in(group, written)?;
        if swapped {
            outcome.segments_written += 1;
            outcome.bytes_before += before;
            outcome.bytes_after += after;
            outcome.records_removed += removed;
        }
        Ok(Some(swapped))
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
        // Committed: from here every failure poisons, and the next open rolls forward. A
        // panic too: the guard poisons the log while it unwinds (a stale journal must never
        // meet a later swap's aside files, and the list may no longer match the directory).
        let guard = PoisonOnUnwind {
            inner: self,
            base_offset,
            armed: true,
        };
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
            // The swap itself is complete, and the next open repeats its (idempotent) roll
            // forward. But a journal left behind must never meet a later swap's aside files
            // (a crash then would roll those forward, committed or not): no more cleaning, or
            // writing, in this process.
            self.poison(format!(
                "could not remove the cleaner's swap journal after the swap at {base_offset}: {error}"
            ));
            return Err(error);
        }
        guard.disarm();
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

/// Steps one read may take through batches that hold no record at or after the offset read
/// from (see `PartitionLog::read`); past it the read returns what it gathered.
pub(super) const READ_STEPS_MAX: usize = 1 << 20;

/// Whether the whole batches in `records` hold a record at or after `offset`, and the offset
/// after the last of them. Outside a cleaned segment every batch holds records for its whole
/// range, so any batch does; in a cleaned one a placeholder holds none, and only a batch that
/// straddles `offset` can hold records below it alone (its records are decoded to tell).
pub(super) fn progress_in(records: &bytes::Bytes, offset: i64, cleaned: bool) -> (bool, i64) {
    let mut next = offset;
    let mut progress = false;
    for batch in tidelog_proto::batch::BatchIter::new(records.clone()) {
        let Ok(batch) = batch else {
            // Segment::read returned whole, checked batches; a surprise here is no progress.
            break;
        };
        let header = batch.header();
        next = next.max(header.next_offset());
        if progress || header.record_count == 0 {
            continue;
        }
        progress = !cleaned
            || header.base_offset >= offset
            || batch
                .records()
                .any(|record| record.is_ok_and(|record| record.offset >= offset));
    }
    (progress, next)
}

/// Poisons the log if dropped while armed: a panic between a swap's commit and its end.
struct PoisonOnUnwind<'a> {
    inner: &'a Inner,
    base_offset: i64,
    armed: bool,
}

impl PoisonOnUnwind<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PoisonOnUnwind<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.poison(format!(
                "the cleaner's swap at {} was interrupted after its commit",
                self.base_offset
            ));
        }
    }
}
