//! Per-key truncation and erasure on an open log (issue 9 §3): the `PartitionLog` methods that
//! change and report stream marks, and what the cleaner asks of them (which segments hold an
//! erased key's records, and the erasure's completion). The rules the marks impose on readers
//! are in `storage/stream_marks.rs`; their effect on reads is in `log/streams.rs` and on
//! appends in `log/append.rs`. A child of `log` so it shares the log's private state.

use bytes::Bytes;

use super::super::error::StorageError;
use super::super::key_index::locate;
use super::super::stream_marks::{
    erased, ErasureProgress, Mark, MarksSnapshot, StreamMarkState, VERSION_TO_FIND,
};
use super::{Inner, PartitionLog};

/// Which segments hold records of a key below an offset (per the per-key index: exact).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SegmentsHolding {
    /// Base offsets of the closed segments holding some, oldest first.
    pub closed: Vec<i64>,
    /// The active segment holds some (the cleaner rolls it first).
    pub active: bool,
    pub records: u64,
}

impl PartitionLog {
    /// Makes the records of `key` below `before` unreadable (reads, stream info and the
    /// condition check start at `before`; the cleaner removes them). `before` is clamped to the
    /// high watermark; a point at or below the key's current read start changes nothing. The
    /// stream keeps its version (see `stream_marks`). Durable before it returns.
    ///
    /// # Errors
    /// `OffsetOutOfRange` for a negative `before`; `StreamErased` for an erased key (re-open
    /// it first); `TooManyStreamMarks` when a new mark would pass
    /// `stream_marks_per_partition_max`; `Closed`, I/O errors.
    pub fn truncate_stream(&self, key: &[u8], before: i64) -> Result<StreamMarkState, StorageError> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let (_, log_start, high_watermark) = inner.reader_view();
        if before < 0 {
            return Err(StorageError::OffsetOutOfRange {
                requested: before,
                log_start_offset: log_start,
                high_watermark,
            });
        }
        let change = inner.marks.lock_change();
        let snapshot = inner.marks.snapshot();
        let existing = snapshot.get(key).copied();
        let mut mark = existing.unwrap_or(Mark::NONE);
        if mark.state.erased {
            return Err(erased(key));
        }
        let before = before.min(high_watermark);
        if before <= mark.state.read_start().max(0) {
            return Ok(mark.state);
        }
        inner.check_mark_room(&snapshot, existing.is_some())?;
        // The version the stream keeps: its last record below the new point (records at or
        // after the old read start only: those below it are no longer the stream's).
        let from = mark.state.read_start().max(log_start);
        let last_below = inner.readable_last_offset(key, from, before)?.unwrap_or(-1);
        mark.truncated_version = mark.truncated_version.max(last_below);
        mark.state.truncated_before = before;
        let mut table = snapshot.table().clone();
        table.insert(Bytes::copy_from_slice(key), mark);
        inner.marks.persist(&*inner.disk, &change, &table)?;
        inner.marks.publish(&change, table);
        tracing::info!(dir = %inner.dir.display(), key = %printable(key), before, "stream truncated");
        Ok(mark.state)
    }

    /// Erases the stream `key`: under the writer lock, `erase_before` becomes the partition's
    /// next offset, so every record of the key written so far goes (the cleaner removes them
    /// from the segment files by `deadline_ms`) and later appends of the key are refused with
    /// `StreamErased` until [`reopen_stream`](Self::reopen_stream). Reads answer
    /// `StreamErased`. Durable before it returns. Erasing an erased key again changes nothing
    /// and answers the same state. A key with no record to remove is complete at once.
    ///
    /// # Errors
    /// `TooManyStreamMarks`, `Closed`, I/O errors (then nothing changed).
    pub fn erase_stream(
        &self,
        key: &[u8],
        now_ms: i64,
        deadline_ms: i64,
    ) -> Result<StreamMarkState, StorageError> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let change = inner.marks.lock_change();
        let previous = inner.marks.snapshot();
        let existing = previous.get(key).copied();
        let mut mark = existing.unwrap_or(Mark::NONE);
        if mark.state.erased {
            return Ok(mark.state);
        }
        inner.check_mark_room(&previous, existing.is_some())?;
        let mut table = previous.table().clone();
        let key_bytes = Bytes::copy_from_slice(key);
        {
            // Only the point is fixed under the writer lock, and the mark published in memory
            // before it is released: an append after it sees the key erased. The file is
            // written after, so appends of other keys never wait on its fsyncs.
            let writer = inner.lock_writer()?;
            inner.check_writable()?;
            mark.state = StreamMarkState {
                erased: true,
                erase_before: writer.active.next_offset(),
                erase_requested_ms: now_ms,
                erase_deadline_ms: deadline_ms,
                erase_completed_ms: 0,
                ..mark.state
            };
            // The stream's old version goes with its records: a re-opened stream starts fresh.
            mark.truncated_version = -1;
            table.insert(key_bytes.clone(), mark);
            inner.marks.publish(&change, table.clone());
        }
        let persisted = inner
            .segments_holding(key, mark.state.erase_before)
            .and_then(|holding| {
                if holding.records == 0 {
                    mark.state.erase_completed_ms = now_ms.max(1);
                    table.insert(key_bytes, mark);
                }
                inner.marks.persist(&*inner.disk, &change, &table)
            });
        if let Err(error) = persisted {
            // Not acknowledged: put the marks back as they were, so nothing stays erased that
            // a restart would not know of.
            inner.marks.restore(&change, previous);
            tracing::warn!(dir = %inner.dir.display(), key = %printable(key), %error, "stream erasure failed; nothing was erased");
            return Err(error);
        }
        inner.marks.publish(&change, table);
        tracing::info!(
            dir = %inner.dir.display(),
            key = %printable(key),
            erase_before = mark.state.erase_before,
            deadline_ms,
            complete = mark.state.erase_completed_ms != 0,
            "stream erased"
        );
        Ok(mark.state)
    }

    /// Lets appends of an erased key in again; reads start at its `erase_before`, so the
    /// erased records stay erased and the stream starts fresh. A key that is not erased is
    /// answered as it is. Durable before it returns.
    ///
    /// # Errors
    /// `Closed`, I/O errors.
    pub fn reopen_stream(&self, key: &[u8]) -> Result<StreamMarkState, StorageError> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let change = inner.marks.lock_change();
        let snapshot = inner.marks.snapshot();
        let Some(mut mark) = snapshot.get(key).copied().filter(|mark| mark.state.erased) else {
            return Ok(snapshot.state(key));
        };
        mark.state.erased = false;
        let mut table = snapshot.table().clone();
        table.insert(Bytes::copy_from_slice(key), mark);
        inner.marks.persist(&*inner.disk, &change, &table)?;
        inner.marks.publish(&change, table);
        tracing::info!(dir = %inner.dir.display(), key = %printable(key), "erased stream re-opened");
        Ok(mark.state)
    }

    /// The marks of `key` now (`StreamMarkState::NONE` without any).
    pub fn stream_marks(&self, key: &[u8]) -> StreamMarkState {
        self.inner.marks.snapshot().state(key)
    }

    /// Keys of this partition with marks.
    pub fn stream_mark_count(&self) -> usize {
        self.inner.marks.snapshot().table().len()
    }

    /// Erasures of this partition the cleaner has not finished.
    pub fn erasures_pending(&self) -> usize {
        self.inner.marks.snapshot().pending_erasures().len()
    }

    /// How much of the key's latest erasure is left: its records below `erase_before` still in
    /// segment files, per the per-key index. Zero when the key was never erased or the
    /// erasure is complete.
    ///
    /// # Errors
    /// I/O or corruption errors of the index lookups.
    pub fn erasure_progress(&self, key: &[u8]) -> Result<ErasureProgress, StorageError> {
        let state = self.stream_marks(key);
        if !state.erasure_pending() {
            return Ok(ErasureProgress::default());
        }
        let holding = self.inner.segments_holding(key, state.erase_before)?;
        Ok(ErasureProgress {
            records_remaining: holding.records,
            segments_remaining: u32::try_from(holding.closed.len() + usize::from(holding.active))
                .unwrap_or(u32::MAX),
        })
    }

    /// The marks now, for the cleaner (see [`Inner::marks_snapshot`]).
    #[cfg(test)]
    pub(crate) fn marks_snapshot(&self) -> MarksSnapshot {
        self.inner.marks_snapshot()
    }

    /// See [`Inner::segments_holding`].
    #[cfg(test)]
    pub(crate) fn segments_holding(&self, key: &[u8], before: i64) -> Result<SegmentsHolding, StorageError> {
        self.inner.segments_holding(key, before)
    }

    /// See [`Inner::erasure_done`].
    #[cfg(test)]
    pub(crate) fn erasure_done(
        &self,
        key: &[u8],
        erase_before: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.inner.erasure_done(key, erase_before, now_ms)
    }
}

impl Inner {
    pub(crate) fn marks_snapshot(&self) -> MarksSnapshot {
        self.marks.snapshot()
    }

    /// Which segments hold records of `key` below `before`, per the per-key index (exact),
    /// from the first segment file on (records below a trimmed log start are still on disk).
    pub(crate) fn segments_holding(&self, key: &[u8], before: i64) -> Result<SegmentsHolding, StorageError> {
        let segments = self.segments_snapshot();
        let context = self.index_context();
        let mut holding = SegmentsHolding::default();
        let last = segments.len().saturating_sub(1);
        for (index, segment) in segments.iter().enumerate() {
            if segment.base_offset >= before {
                break;
            }
            let found = locate(segment, key, segment.base_offset, before, segment.end(), &context)?;
            if found.is_empty() {
                continue;
            }
            holding.records += found.len() as u64;
            if index == last {
                holding.active = true;
            } else {
                holding.closed.push(segment.base_offset);
            }
        }
        Ok(holding)
    }

    /// The cleaner removed every record of the erasure of `key` at `erase_before`: persist
    /// erase_completed_ms = now. Stale calls (another erasure since, or already complete)
    /// change nothing.
    pub(crate) fn erasure_done(
        &self,
        key: &[u8],
        erase_before: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let change = self.marks.lock_change();
        let snapshot = self.marks.snapshot();
        let Some(mut mark) = snapshot.get(key).copied() else {
            return Ok(());
        };
        if mark.state.erase_before != erase_before || mark.state.erase_completed_ms != 0 {
            return Ok(());
        }
        mark.state.erase_completed_ms = now_ms.max(1);
        let mut table = snapshot.table().clone();
        table.insert(Bytes::copy_from_slice(key), mark);
        self.marks.persist(&*self.disk, &change, &table)?;
        self.marks.publish(&change, table);
        tracing::info!(dir = %self.dir.display(), key = %printable(key), erase_before, "stream erasure complete");
        Ok(())
    }

    /// At open, after `StreamMarks::open` lowered marks past the recovered end: a truncated
    /// version whose record the crash took is found again (the key's last record below its
    /// lowered point, since its erasure if any, or none), and the marks are persisted.
    pub(super) fn settle_marks(&self) -> Result<(), StorageError> {
        let change = self.marks.lock_change();
        let mut table = self.marks.snapshot().table().clone();
        let (_, log_start, _) = self.reader_view();
        for (key, mark) in table.iter_mut() {
            if mark.truncated_version != VERSION_TO_FIND {
                continue;
            }
            let from = log_start.max(mark.state.erase_before);
            mark.truncated_version = self
                .readable_last_offset(key, from, mark.state.truncated_before)?
                .unwrap_or(-1);
            tracing::error!(
                dir = %self.dir.display(),
                key = %printable(key),
                version = mark.truncated_version,
                "a truncated stream's version was lost with unsynced appends; found it again from the index"
            );
        }
        self.marks.persist(&*self.disk, &change, &table)?;
        self.marks.publish(&change, table);
        Ok(())
    }

    /// A new mark must fit `stream_marks_per_partition_max`.
    fn check_mark_room(&self, snapshot: &MarksSnapshot, exists: bool) -> Result<(), StorageError> {
        let max = self.config().stream_marks_per_partition_max;
        if !exists && snapshot.table().len() >= max {
            tracing::warn!(dir = %self.dir.display(), max, "stream mark refused: the partition holds the most it may");
            return Err(StorageError::TooManyStreamMarks { max });
        }
        Ok(())
    }
}

fn printable(key: &[u8]) -> String {
    super::super::conditions::printable_key(key)
}
