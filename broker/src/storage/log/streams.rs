//! Reading streams (the records of one key) through the per-key index: `read_stream`,
//! `stream_info` and `stream_last_offset` for readers (below the high watermark), and the
//! writer's [`StreamLookup`] for the condition check (everything written, under the writer
//! lock). Every answer is exact: the index compares key bytes, and each decoded record's key
//! is checked again. Every one of them honours the key's stream marks (truncation and erasure,
//! rules in `storage/stream_marks.rs`): records below the read start are not seen, an erased
//! stream answers `StreamErased`, a truncated one keeps its version. A child of `log` so it
//! shares the log's private state.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::error::StorageError;
use super::super::key_index::{
    self, decode_stream_records, locate, Direction, Expect, IndexContext, KeysFile, Located, StreamInfo,
    StreamLookup, StreamRead, StreamRecord,
};
use super::super::segment::Segment;
use super::super::stream_marks::MarksSnapshot;
use super::{Inner, PartitionLog, SealMode, Writer};

/// Builds every segment's index state at open: the active segment's table by scanning it
/// (only what recovery kept), each closed segment's `.keys` file if it describes the segment
/// exactly; the others are left unindexed (answered by scanning) and rebuilt in the
/// background.
pub(super) fn open_key_index(
    dir: &Path,
    segments: &[Arc<Segment>],
    context: &IndexContext,
) -> Result<(), StorageError> {
    let Some((active, closed)) = segments.split_last() else {
        return Ok(());
    };
    let mut unindexed = 0usize;
    for segment in closed {
        let path = key_index::keys_path(dir, segment.base_offset);
        if segment.has_fences() {
            // Written before the damage was found, it may point into fenced bytes.
            tracing::warn!(path = %path.display(), "segment has fenced ranges: rebuilding its per-key index from the intact batches");
            unindexed += 1;
            continue;
        }
        let expect = Expect {
            base_offset: segment.base_offset,
            next_offset: segment.next_offset(),
            log_bytes: segment.end(),
            hash: context.hash,
        };
        match KeysFile::open(&*context.disk, &path, expect) {
            Ok(Some(file)) => segment.keys.set_file(file),
            Ok(None) => unindexed += 1,
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "per-key index file does not describe its segment; rebuilding it from the log");
                unindexed += 1;
            }
        }
    }
    let started = std::time::Instant::now();
    let (table, how) = match load_active_table(dir, active, context) {
        Some(table) => (table, "loaded from the file a clean close wrote"),
        None => (
            key_index::rebuild_table(active, context)?,
            "rebuilt by scanning the segment",
        ),
    };
    tracing::info!(
        dir = %dir.display(),
        records = table.records(),
        keys = table.distinct_keys(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        closed_segments_to_rebuild = unindexed,
        "per-key index of the active segment {how}"
    );
    active.keys.set_active(table);
    Ok(())
}

/// The active segment's table from the `.keys` file a clean close wrote, if it describes the
/// segment exactly as recovery left it (same next offset and length: appends after that open
/// make it stale, and a crash that keeps them makes it not match). `None`: scan instead.
fn load_active_table(dir: &Path, active: &Segment, context: &IndexContext) -> Option<key_index::ActiveTable> {
    if active.has_fences() || active.is_empty() {
        return None;
    }
    let path = key_index::keys_path(dir, active.base_offset);
    let file = context.disk.open_read_only(&path).ok()?;
    let length = usize::try_from(file.len().ok()?).ok()?;
    // A table file is at most a few times the table's bound; anything larger is not one.
    let config_bound = 1 << 30;
    if length > config_bound {
        return None;
    }
    let mut bytes = vec![0u8; length];
    super::super::disk::read_exact_at(&*file, &mut bytes, 0).ok()?;
    let expect = Expect {
        base_offset: active.base_offset,
        next_offset: active.next_offset(),
        log_bytes: active.end(),
        hash: context.hash,
    };
    match key_index::table_from_bytes(&bytes, expect) {
        Ok(table) => Some(table),
        Err(reason) => {
            tracing::info!(path = %path.display(), %reason, "the active segment's per-key index file is not current; scanning the segment");
            None
        }
    }
}

/// At a clean close: the active segment's table as its `.keys` file, so the next open loads
/// it instead of scanning the segment. A failure costs only that scan: logged, not returned.
pub(super) fn write_active_table(dir: &Path, active: &Segment, context: &IndexContext) {
    let expect = Expect {
        base_offset: active.base_offset,
        next_offset: active.next_offset(),
        log_bytes: active.end(),
        hash: context.hash,
    };
    let Some(bytes) = active.keys.read_active(|table| key_index::encode(table, expect)) else {
        return;
    };
    let path = key_index::keys_path(dir, active.base_offset);
    let written = key_index::write_aside(&*context.disk, &path, &bytes)
        .and_then(|temp| key_index::rename_into_place(&*context.disk, &temp, &path));
    if let Err(error) = written {
        tracing::warn!(path = %path.display(), %error, "could not write the active segment's per-key index at close; the next open scans the segment");
    }
}

/// Which records a lookup may see: offsets in `[start, end)` of these segments.
struct View<'a> {
    segments: &'a [Arc<Segment>],
    start: i64,
    end: i64,
    context: &'a IndexContext,
}

impl View<'_> {
    /// The records of `key` in `segment` within the view and `[from, to)`.
    fn locate_in(
        &self,
        segment: &Arc<Segment>,
        key: &[u8],
        from: i64,
        to: i64,
    ) -> Result<Vec<Located>, StorageError> {
        let from = from.max(self.start);
        let to = to.min(self.end);
        if to <= from || segment.next_offset() <= from || segment.base_offset >= to {
            return Ok(Vec::new());
        }
        locate(segment, key, from, to, segment.end(), self.context)
    }

    /// Decodes located records of one segment, rescanning once if a `.keys` file pointed
    /// wrong.
    fn decode(
        &self,
        segment: &Arc<Segment>,
        key: &[u8],
        located: &[Located],
        from: i64,
        to: i64,
    ) -> Result<Vec<StreamRecord>, StorageError> {
        if let Some(records) =
            decode_stream_records(segment, key, located, self.context.decompressed_bytes_max)?
        {
            return Ok(records);
        }
        if segment.keys.is_file() {
            tracing::error!(
                segment = %segment.paths.log.display(),
                "per-key index file points at records of another key; answering from the segment and rebuilding it"
            );
            segment.keys.mark_unindexed();
            if self.context.background {
                key_index::enqueue(segment, self.context);
            }
            let rescanned = self.locate_in(segment, key, from, to)?;
            let wanted: Vec<Located> = rescanned
                .into_iter()
                .filter(|found| located.first().is_some_and(|first| found.offset >= first.offset))
                .take(located.len())
                .collect();
            if let Some(records) =
                decode_stream_records(segment, key, &wanted, self.context.decompressed_bytes_max)?
            {
                return Ok(records);
            }
        }
        Err(StorageError::corrupt(
            &segment.paths.log,
            "the per-key index points at a record of another key",
        ))
    }

    fn last_offset(&self, key: &[u8]) -> Result<Option<i64>, StorageError> {
        for segment in self.segments.iter().rev() {
            if segment.base_offset >= self.end {
                continue;
            }
            if segment.next_offset() <= self.start {
                break;
            }
            if let Some(last) = self.locate_in(segment, key, self.start, self.end)?.last() {
                return Ok(Some(last.offset));
            }
        }
        Ok(None)
    }

    fn info(&self, key: &[u8]) -> Result<StreamInfo, StorageError> {
        let mut info = StreamInfo::NONE;
        for segment in self.segments.iter() {
            let located = self.locate_in(segment, key, self.start, self.end)?;
            if let (Some(first), Some(last)) = (located.first(), located.last()) {
                if info.first_offset < 0 {
                    info.first_offset = first.offset;
                }
                info.last_offset = last.offset;
                info.records += located.len() as u64;
            }
        }
        Ok(info)
    }

    /// Up to `limit` records at or after `from`, oldest first, about `bytes_max` bytes (at
    /// least one), and whether more follow below the view's end.
    fn forward(
        &self,
        key: &[u8],
        from: i64,
        limit: usize,
        bytes_max: usize,
    ) -> Result<(Vec<StreamRecord>, bool), StorageError> {
        let mut records: Vec<StreamRecord> = Vec::new();
        let mut bytes = 0usize;
        for segment in self.segments.iter() {
            if segment.next_offset() <= from.max(self.start) {
                continue;
            }
            if segment.base_offset >= self.end {
                break;
            }
            let located = self.locate_in(segment, key, from, self.end)?;
            if located.is_empty() {
                continue;
            }
            if records.len() >= limit || bytes >= bytes_max {
                return Ok((records, true));
            }
            let room = limit - records.len();
            let take = located.len().min(room);
            let decoded = self.decode(segment, key, &located[..take], from, self.end)?;
            let cut = extend_within(&mut records, decoded, &mut bytes, bytes_max);
            if cut || located.len() > take {
                return Ok((records, true));
            }
        }
        Ok((records, false))
    }

    /// Up to `limit` records at or below `from` (inclusive), newest first, and whether more
    /// lie below the last one returned.
    fn backward(
        &self,
        key: &[u8],
        from: i64,
        limit: usize,
        bytes_max: usize,
    ) -> Result<(Vec<StreamRecord>, bool), StorageError> {
        let upper = from.saturating_add(1).min(self.end);
        let mut records: Vec<StreamRecord> = Vec::new();
        let mut bytes = 0usize;
        for segment in self.segments.iter().rev() {
            if segment.base_offset >= upper {
                continue;
            }
            if segment.next_offset() <= self.start {
                break;
            }
            let located = self.locate_in(segment, key, self.start, upper)?;
            if located.is_empty() {
                continue;
            }
            if records.len() >= limit || bytes >= bytes_max {
                return Ok((records, true));
            }
            let room = limit - records.len();
            let take = located.len().min(room);
            let wanted = &located[located.len() - take..];
            let lowest = wanted.first().map_or(self.start, |first| first.offset);
            let mut decoded = self.decode(segment, key, wanted, lowest, upper)?;
            decoded.reverse();
            let cut = extend_within(&mut records, decoded, &mut bytes, bytes_max);
            if cut || located.len() > take {
                return Ok((records, true));
            }
        }
        Ok((records, false))
    }
}

/// Moves `decoded` onto the end of `records` while the page stays within `bytes_max`
/// (the page's first record always goes, so a read makes progress); `true` when it had to
/// stop before the end of `decoded`.
fn extend_within(
    records: &mut Vec<StreamRecord>,
    mut decoded: Vec<StreamRecord>,
    bytes: &mut usize,
    bytes_max: usize,
) -> bool {
    let mut cut = decoded.len();
    for (index, record) in decoded.iter().enumerate() {
        let size = record_bytes(record);
        if (!records.is_empty() || index > 0) && *bytes + size > bytes_max {
            cut = index;
            break;
        }
        *bytes += size;
    }
    let stopped = cut < decoded.len();
    decoded.truncate(cut);
    records.extend(decoded);
    stopped
}

/// What a record counts against `bytes_max`: its key, value and headers, and a little for the
/// fixed fields.
fn record_bytes(record: &StreamRecord) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.as_ref().map_or(0, |value| value.len()) + 4)
        .sum();
    record.key.len() + record.value.as_ref().map_or(0, |value| value.len()) + headers + 24
}

impl PartitionLog {
    /// Records of `key` from `from` (inclusive) in `direction` (Backward from `from` down;
    /// `from` = -1 or past the end means "from the last record"), at most `limit` records and
    /// about `bytes_max` bytes (always at least one record if there is one), never past the
    /// high watermark nor below the log start. Exact: keys compared byte for byte. Costs the
    /// key's records plus, per segment, a bloom probe (and a block read where it passes).
    ///
    /// # Errors
    /// `CorruptRange`/`Corrupt` if a record of the stream cannot be read; I/O errors.
    pub fn read_stream(
        &self,
        key: &[u8],
        from: i64,
        direction: Direction,
        limit: usize,
        bytes_max: usize,
    ) -> Result<StreamRead, StorageError> {
        let inner = &*self.inner;
        let (segments, start, end) = inner.reader_view();
        let (key_start, _) = inner.marks.snapshot().for_reading(key)?;
        let context = inner.index_context();
        let view = View {
            segments: &segments,
            start: start.max(key_start),
            end,
            context: &context,
        };
        let limit = limit.max(1);
        let mut read = StreamRead {
            high_watermark: end,
            log_start_offset: start,
            ..StreamRead::default()
        };
        match direction {
            Direction::Forward => {
                let from = from.max(view.start);
                let (records, more) = view.forward(key, from, limit, bytes_max)?;
                read.next_offset = match (more, records.last()) {
                    (true, Some(last)) => last.offset + 1,
                    _ => end.max(from.min(end)),
                };
                read.end_of_stream = !more;
                read.records = records;
            }
            Direction::Backward => {
                let from = if from < 0 || from >= end { end - 1 } else { from };
                let (records, more) = view.backward(key, from, limit, bytes_max)?;
                read.next_offset = match (more, records.last()) {
                    (true, Some(last)) => last.offset - 1,
                    _ => -1,
                };
                read.end_of_stream = !more;
                read.records = records;
            }
        }
        Ok(read)
    }

    /// The stream's first and last retained offsets below the high watermark and its record
    /// count; `-1, -1, 0` when it has none. A truncated stream counts only its records from
    /// the truncation point, and its `last_offset` is its version (the last offset it had,
    /// when nothing after the truncation point exists: see `stream_marks`).
    ///
    /// # Errors
    /// `StreamErased` for an erased stream; index I/O errors.
    pub fn stream_info(&self, key: &[u8]) -> Result<StreamInfo, StorageError> {
        let inner = &*self.inner;
        let (segments, start, end) = inner.reader_view();
        let (key_start, kept_version) = inner.marks.snapshot().for_reading(key)?;
        let context = inner.index_context();
        let mut info = View {
            segments: &segments,
            start: start.max(key_start),
            end,
            context: &context,
        }
        .info(key)?;
        info.last_offset = info.last_offset.max(version_kept(kept_version, start));
        Ok(info)
    }

    /// The stream's version visible to readers: its last record below the high watermark (or
    /// the version a truncation kept).
    ///
    /// # Errors
    /// As [`stream_info`](Self::stream_info).
    pub fn stream_last_offset(&self, key: &[u8]) -> Result<Option<i64>, StorageError> {
        let inner = &*self.inner;
        let (segments, start, end) = inner.reader_view();
        let (key_start, kept_version) = inner.marks.snapshot().for_reading(key)?;
        let context = inner.index_context();
        let last = View {
            segments: &segments,
            start: start.max(key_start),
            end,
            context: &context,
        }
        .last_offset(key)?;
        Ok(last.or_else(|| Some(version_kept(kept_version, start)).filter(|version| *version >= 0)))
    }

    /// Memory the per-key index holds now (tables and resident summaries), and bytes of
    /// `.keys` files in use.
    pub fn key_index_bytes(&self) -> (usize, u64) {
        let segments = self.inner.segments_snapshot();
        let resident = segments.iter().map(|segment| segment.keys.resident_bytes()).sum();
        let disk = segments.iter().map(|segment| segment.keys.file_bytes()).sum();
        (resident, disk)
    }

    /// Writes every pending `.keys` file now (frozen tables and rebuilds), in the caller:
    /// benchmarks and tests use it to reach a settled state without waiting on the worker.
    pub fn flush_key_index(&self) -> Result<(), StorageError> {
        self.inner.key_index_now(false)
    }
}

/// The writer's view for the condition check: every record written (synced or not), from the
/// log start. Made under the writer lock by [`Inner::stream_lookup`].
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct WriterLookup<'a> {
    segments: Arc<Vec<Arc<Segment>>>,
    start: i64,
    end: i64,
    context: IndexContext,
    /// The marks as the writer lock fixes them (only an erasure, under that lock, changes
    /// what an append may do).
    marks: MarksSnapshot,
    _writer: std::marker::PhantomData<&'a Writer>,
}

#[cfg_attr(not(test), allow(dead_code))]
impl WriterLookup<'_> {
    /// The view of `key`'s stream: from its read start; with the version a truncation kept.
    fn view(&self, key: &[u8]) -> Result<(View<'_>, i64), StorageError> {
        let (key_start, kept_version) = self.marks.for_reading(key)?;
        let view = View {
            segments: &self.segments,
            start: self.start.max(key_start),
            end: self.end,
            context: &self.context,
        };
        Ok((view, version_kept(kept_version, self.start)))
    }
}

impl StreamLookup for WriterLookup<'_> {
    /// An erased stream answers `StreamErased`; a truncated one its version.
    fn last_offset(&mut self, key: &[u8]) -> Result<Option<i64>, StorageError> {
        let (view, kept_version) = self.view(key)?;
        Ok(view
            .last_offset(key)?
            .or_else(|| Some(kept_version).filter(|version| *version >= 0)))
    }

    fn records_after(
        &mut self,
        key: &[u8],
        after: i64,
        limit: usize,
    ) -> Result<Vec<StreamRecord>, StorageError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (view, _) = self.view(key)?;
        let from = after.saturating_add(1).max(view.start);
        Ok(view.forward(key, from, limit, usize::MAX)?.0)
    }
}

/// The version a truncation kept, if it still counts: not below the log start (retention
/// ends a version the same way for every stream). -1 when none.
fn version_kept(kept_version: i64, log_start: i64) -> i64 {
    if kept_version >= log_start {
        kept_version
    } else {
        -1
    }
}

#[cfg(test)]
impl PartitionLog {
    /// Runs `check` with the writer's lookup, under the writer lock, as the condition check does.
    pub(crate) fn with_stream_lookup_for_test<R>(
        &self,
        check: impl FnOnce(&mut dyn StreamLookup) -> Result<R, StorageError>,
    ) -> Result<R, StorageError> {
        let writer = self.inner.lock_writer()?;
        let mut lookup = self.inner.stream_lookup(&writer);
        check(&mut lookup)
    }
}

impl Inner {
    pub(super) fn index_context(&self) -> IndexContext {
        let config = self.config();
        IndexContext {
            disk: Arc::clone(&self.disk),
            hash: config.key_hash,
            decompressed_bytes_max: config.decompressed_bytes_max,
            background: self.seal_mode == SealMode::Background,
        }
    }

    /// Segments, log start and high watermark as a reader sees them (the order `read` uses).
    pub(super) fn reader_view(&self) -> (Arc<Vec<Arc<Segment>>>, i64, i64) {
        let high_watermark = self.high_watermark.load(Ordering::Acquire);
        let segments = self.segments_snapshot();
        let start = segments
            .first()
            .map_or(high_watermark, |segment| segment.base_offset)
            .max(self.log_start_floor.load(Ordering::Acquire));
        (segments, start, high_watermark.max(start))
    }

    /// The condition check's lookup: holding `writer` proves the caller has the writer lock,
    /// so the segment list and the active table stay as they are while it is used.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn stream_lookup<'a>(&self, writer: &'a Writer) -> WriterLookup<'a> {
        let segments = self.segments_snapshot();
        let start = segments
            .first()
            .map_or(0, |segment| segment.base_offset)
            .max(self.log_start_floor.load(Ordering::Acquire));
        WriterLookup {
            segments,
            start,
            end: writer.active.next_offset(),
            context: self.index_context(),
            marks: self.marks.snapshot(),
            _writer: std::marker::PhantomData,
        }
    }

    /// The last record of `key` readers may see in `[from, to)` (below the high watermark),
    /// marks aside: what a truncation at `to` keeps as the stream's version.
    pub(super) fn readable_last_offset(
        &self,
        key: &[u8],
        from: i64,
        to: i64,
    ) -> Result<Option<i64>, StorageError> {
        let (segments, start, end) = self.reader_view();
        let context = self.index_context();
        View {
            segments: &segments,
            start: start.max(from),
            end: end.min(to),
            context: &context,
        }
        .last_offset(key)
    }

    /// Queues, for every closed segment, the rebuild of an index left unindexed at open, or
    /// the scrub of the file it loaded (the open checked its header and summary, not its
    /// blocks). Background mode only; one thread does them in turn.
    pub(super) fn kick_key_index(&self) {
        if self.seal_mode != SealMode::Background {
            return;
        }
        let context = self.index_context();
        let segments = self.segments_snapshot();
        for segment in &segments[..segments.len().saturating_sub(1)] {
            key_index::enqueue(segment, &context);
        }
    }

    /// Writes pending `.keys` files of sealed closed segments here and now: only frozen tables
    /// if `frozen_only`, rebuilds of unindexed segments too otherwise.
    pub(super) fn key_index_now(&self, frozen_only: bool) -> Result<(), StorageError> {
        let context = self.index_context();
        let segments = self.segments_snapshot();
        for segment in &segments[..segments.len().saturating_sub(1)] {
            if !segment.is_sealed() || (frozen_only && segment.keys.frozen_table().is_none()) {
                continue;
            }
            if !frozen_only {
                key_index::scrub(segment);
            }
            key_index::run_now(segment, &context)?;
        }
        Ok(())
    }
}
