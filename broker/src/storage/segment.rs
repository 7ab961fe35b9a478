//! One segment: a data file of back-to-back Kafka batches plus its sparse offset and time
//! indexes, kept both in memory (for lookups) and on disk (for fast restart). Also the batch
//! scanner that recovery, reads and timestamp lookups use to walk a data file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::{Bytes, BytesMut};
use tidelog_proto::batch::{peek_batch_bytes, BatchHeader, RecordBatch, BATCH_HEADER_BYTES};

use super::disk::{read_exact_at, Disk, SegmentFile};
use super::error::StorageError;
use super::format::{
    encode_file_header, encode_file_header_with_flags, segment_file_name, FileKind, OffsetEntry, TimeEntry,
    FILE_HEADER_BYTES, LOG_FLAG_CLEANED, LOG_FLAG_SEALED, OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES,
};
use super::inspect::Fence;
use super::key_index::SegmentKeys;
// Walks of a data file: other modules take them from here, beside the segment they walk.
pub(crate) use super::scan::{BatchScanner, ScanStep};

/// Marks "no timestamp yet" in an empty segment's running maximum.
pub(crate) const NO_TIMESTAMP: i64 = i64::MIN;

/// Bytes the scanner reads at a time when walking batch headers.
pub(crate) const SCAN_CHUNK_BYTES: usize = 256 << 10;
/// Bytes a read reads at a time while looking for the batch containing an offset: the sparse
/// index leaves it at most about one index interval away.
const LOCATE_CHUNK_BYTES: usize = 16 << 10;

#[derive(Debug, Clone)]
pub(crate) struct SegmentPaths {
    pub log: PathBuf,
    pub offset_index: PathBuf,
    pub time_index: PathBuf,
}

impl SegmentPaths {
    pub fn new(dir: &Path, base_offset: i64) -> Self {
        Self {
            log: dir.join(segment_file_name(base_offset, FileKind::Log)),
            offset_index: dir.join(segment_file_name(base_offset, FileKind::OffsetIndex)),
            time_index: dir.join(segment_file_name(base_offset, FileKind::TimeIndex)),
        }
    }
}

/// Where index entries go: every `interval` bytes of batches, at a batch boundary. Append and
/// recovery both place entries with this one rule so a rebuilt index equals the original.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexPlacer {
    pub interval: u64,
    /// Bytes of batches since the batch of the last entry started (or since the header).
    pub since_entry: u64,
    /// Running maximum timestamp of the segment.
    pub max_timestamp: i64,
}

impl IndexPlacer {
    /// Accounts for a batch; returns the entries to add for it, if any.
    pub fn on_batch(
        &mut self,
        relative_offset: u32,
        position: u64,
        length: u64,
        batch_max_timestamp: i64,
    ) -> Option<(OffsetEntry, TimeEntry)> {
        self.max_timestamp = self.max_timestamp.max(batch_max_timestamp);
        let mut entries = None;
        if self.since_entry >= self.interval {
            // Positions fit in u32: segments are capped at SEGMENT_BYTES_MAX < u32::MAX.
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            entries = Some((
                OffsetEntry {
                    relative_offset,
                    position,
                },
                TimeEntry {
                    timestamp: self.max_timestamp,
                    relative_offset,
                    position,
                },
            ));
            self.since_entry = 0;
        }
        self.since_entry += length;
        entries
    }
}

/// What is known about a segment's contents, from a scan or from the writer.
#[derive(Debug, Clone)]
pub(crate) struct SegmentState {
    /// Bytes of the data file in use, header included.
    pub end: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    /// The clock for age-based rolls: when the first batch was appended (broker time); after
    /// a restart, the first batch's max timestamp.
    pub first_batch_timestamp: i64,
    /// Position and base offset of the last batch.
    pub last_batch: Option<(u64, i64)>,
    pub offset_entries: Vec<OffsetEntry>,
    pub time_entries: Vec<TimeEntry>,
    /// How many of the entries are already in the index files.
    pub offset_entries_on_disk: usize,
    pub time_entries_on_disk: usize,
    /// The data file header carries the sealed flag.
    pub sealed: bool,
    /// The cleaner wrote it (`LOG_FLAG_CLEANED`): offset gaps and short batches are legal.
    pub cleaned: bool,
    /// Ranges recovery found damaged or missing, offset order: skipped by every walk and
    /// refused to readers.
    pub fences: Vec<Fence>,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub paths: SegmentPaths,
    pub log: Arc<dyn SegmentFile>,
    pub offset_index_file: Arc<dyn SegmentFile>,
    pub time_index_file: Arc<dyn SegmentFile>,
    /// Written bytes of the data file. Published with Release after the bytes are written, so
    /// a reader that loads it with Acquire may read everything before it.
    end: AtomicU64,
    next_offset: AtomicI64,
    max_timestamp: AtomicI64,
    first_batch_timestamp: AtomicI64,
    /// Only the writer (under the writer lock) touches the fields below and the index writes.
    last_batch_position: AtomicU64,
    last_batch_base_offset: AtomicI64,
    offset_entries: RwLock<Vec<OffsetEntry>>,
    time_entries: RwLock<Vec<TimeEntry>>,
    offset_entries_on_disk: AtomicUsize,
    time_entries_on_disk: AtomicUsize,
    sealed: AtomicBool,
    /// Written by the cleaner (`LOG_FLAG_CLEANED`); set at creation, never changed.
    cleaned: bool,
    /// Length of the data file as the writer left it: at least `end`, more while zeros are
    /// preallocated past it (writer and sync leader only, under the writer lock).
    file_bytes: AtomicU64,
    /// Data end the last fdatasync of this file covered (the sync leader's record; recovered
    /// data counts as synced), so a group commit knows how many bytes it wrote out.
    synced_end: AtomicU64,
    /// Set at open, never changed: see `SegmentState::fences`.
    fences: Vec<Fence>,
    /// The per-key index of this segment (`key_index`): its table or `.keys` file.
    pub keys: SegmentKeys,
}

/// Zeros written per call while preallocating.
const ZERO_CHUNK_BYTES: usize = 64 << 10;
static ZEROS: [u8; ZERO_CHUNK_BYTES] = [0; ZERO_CHUNK_BYTES];
/// A segment preallocates only once it holds this much data (an idle or nearly empty
/// partition keeps files of exactly its data), and then at most as much again as it holds.
pub(crate) const PREALLOCATE_AFTER_BYTES: u64 = 4096;

impl Segment {
    /// Creates a new empty segment's three files and syncs them. The caller syncs the directory.
    ///
    /// All or nothing: if any step fails (a descriptor limit, a full disk, an I/O error), the
    /// files this call created are removed again before it returns, so no stray segment file
    /// can later be taken for part of the log. The error says whether that cleanup worked.
    pub fn create(disk: &dyn Disk, dir: &Path, base_offset: i64) -> Result<Segment, CreateError> {
        let paths = SegmentPaths::new(dir, base_offset);
        let mut created: Vec<&Path> = Vec::with_capacity(3);
        let files = (|| {
            let log = create_with_header(disk, &paths.log, FileKind::Log, base_offset, &mut created)?;
            let offset_index = create_with_header(
                disk,
                &paths.offset_index,
                FileKind::OffsetIndex,
                base_offset,
                &mut created,
            )?;
            let time_index = create_with_header(
                disk,
                &paths.time_index,
                FileKind::TimeIndex,
                base_offset,
                &mut created,
            )?;
            Ok((log, offset_index, time_index))
        })();
        let (log, offset_index, time_index) = match files {
            Ok(files) => files,
            Err(error) => {
                let mut leftovers = Vec::new();
                for path in created {
                    if let Err(remove_error) = disk.remove(path) {
                        if remove_error.kind() != std::io::ErrorKind::NotFound {
                            leftovers.push((path.to_path_buf(), remove_error));
                        }
                    }
                }
                return Err(CreateError { error, leftovers });
            }
        };
        let state = SegmentState {
            end: FILE_HEADER_BYTES as u64,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            first_batch_timestamp: NO_TIMESTAMP,
            last_batch: None,
            offset_entries: Vec::new(),
            time_entries: Vec::new(),
            offset_entries_on_disk: 0,
            time_entries_on_disk: 0,
            sealed: false,
            cleaned: false,
            fences: Vec::new(),
        };
        Ok(Segment::from_parts(
            base_offset,
            paths,
            log,
            offset_index,
            time_index,
            state,
        ))
    }

    pub fn from_parts(
        base_offset: i64,
        paths: SegmentPaths,
        log: Arc<dyn SegmentFile>,
        offset_index_file: Arc<dyn SegmentFile>,
        time_index_file: Arc<dyn SegmentFile>,
        state: SegmentState,
    ) -> Segment {
        Segment {
            base_offset,
            paths,
            log,
            offset_index_file,
            time_index_file,
            end: AtomicU64::new(state.end),
            next_offset: AtomicI64::new(state.next_offset),
            max_timestamp: AtomicI64::new(state.max_timestamp),
            first_batch_timestamp: AtomicI64::new(state.first_batch_timestamp),
            last_batch_position: AtomicU64::new(state.last_batch.map_or(0, |(position, _)| position)),
            last_batch_base_offset: AtomicI64::new(
                state.last_batch.map_or(base_offset, |(_, offset)| offset),
            ),
            offset_entries: RwLock::new(state.offset_entries),
            time_entries: RwLock::new(state.time_entries),
            offset_entries_on_disk: AtomicUsize::new(state.offset_entries_on_disk),
            time_entries_on_disk: AtomicUsize::new(state.time_entries_on_disk),
            sealed: AtomicBool::new(state.sealed),
            cleaned: state.cleaned,
            file_bytes: AtomicU64::new(state.end),
            synced_end: AtomicU64::new(state.end),
            fences: state.fences,
            keys: SegmentKeys::unindexed(),
        }
    }

    /// Bytes of the data file including preallocated zeros past the data.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes.load(Ordering::Acquire).max(self.end())
    }

    /// Records the data file's length after a write or truncation by the writer.
    pub fn set_file_bytes(&self, bytes: u64) {
        self.file_bytes.store(bytes, Ordering::Release);
    }

    /// Writes real zeros past the data (writer lock held, so no append overlaps them), so
    /// that later appends overwrite allocated blocks instead of growing the file: their
    /// fdatasync then needs no metadata commit. Aims for `min(chunk, data held)` bytes ahead,
    /// never past `limit` (the segment size), and only once the segment holds
    /// [`PREALLOCATE_AFTER_BYTES`]. Returns whether it wrote anything; the caller syncs.
    pub fn preallocate(&self, chunk_bytes: u64, limit: u64) -> Result<bool, StorageError> {
        let end = self.end();
        let held = end.saturating_sub(FILE_HEADER_BYTES as u64);
        if chunk_bytes == 0 || held < PREALLOCATE_AFTER_BYTES {
            return Ok(false);
        }
        let ahead = chunk_bytes.min(held);
        let file_bytes = self.file_bytes();
        // Extend once less than half the target lies ahead, so this runs once per ahead/2.
        if file_bytes.saturating_sub(end) >= ahead / 2 {
            return Ok(false);
        }
        let target = (end + ahead).min(limit);
        let mut at = file_bytes;
        // Bounded: (target - at) / ZERO_CHUNK_BYTES + 1 iterations.
        while at < target {
            let length = usize::try_from(target - at)
                .unwrap_or(ZERO_CHUNK_BYTES)
                .min(ZERO_CHUNK_BYTES);
            if let Err(error) = self.log.write_all_at(&ZEROS[..length], at) {
                // Part of the chunk may have landed: count all of it, so the trim at seal or
                // close cuts whatever did.
                self.set_file_bytes(target);
                return Err(StorageError::io("preallocating", &self.paths.log)(error));
            }
            at += length as u64;
            self.set_file_bytes(at);
        }
        Ok(target > file_bytes)
    }

    /// Records that an fdatasync covered the data up to `end` and returns how many data bytes
    /// it wrote out that no earlier sync of this file had (0 if a later sync already passed).
    pub fn mark_synced(&self, end: u64) -> u64 {
        end.saturating_sub(self.synced_end.fetch_max(end, Ordering::AcqRel))
    }

    /// Cuts preallocated zeros off the data file (before it is sealed or checkpointed, so a
    /// trusted segment's file ends exactly at its data).
    pub fn trim_preallocation(&self) -> Result<(), StorageError> {
        let end = self.end();
        if self.file_bytes.load(Ordering::Acquire) > end {
            self.log
                .set_len(end)
                .map_err(StorageError::io("truncating", &self.paths.log))?;
            self.set_file_bytes(end);
        }
        Ok(())
    }

    /// A scanner over `[start, end)` of the data file (`end` at most [`Self::end`], loaded by
    /// the caller) that steps over fenced bytes, for every walk of a recovered segment (reads,
    /// lookups, producer state replay).
    pub fn scanner(&self, start: u64, end: u64, chunk_bytes: usize) -> BatchScanner<'_> {
        let skips = self
            .fences
            .iter()
            .filter(|fence| fence.from_bytes < fence.to_bytes)
            .map(|fence| (fence.from_bytes, fence.to_bytes))
            .collect();
        BatchScanner::new(&*self.log, start, end, chunk_bytes).skipping(skips)
    }

    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Whether recovery fenced any range of this segment.
    pub fn has_fences(&self) -> bool {
        !self.fences.is_empty()
    }

    /// Marks this segment the active one (its data file keeps its descriptor: every append
    /// writes it, every group commit syncs it) or a closed one (its files are opened on demand
    /// through the broker's file cache, so closed segments pin no descriptors).
    pub fn set_active(&self, active: bool) -> Result<(), StorageError> {
        self.log
            .keep_open(active)
            .map_err(StorageError::io("opening", &self.paths.log))
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    pub fn first_batch_timestamp(&self) -> i64 {
        self.first_batch_timestamp.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.end() <= FILE_HEADER_BYTES as u64
    }

    /// Total bytes of this segment's files on disk (data and indexes).
    pub fn size_bytes(&self) -> u64 {
        let (offset_index, time_index) = self.index_file_bytes();
        self.end() + offset_index + time_index
    }

    /// Sizes of the index files as written so far (header plus flushed entries).
    pub fn index_file_bytes(&self) -> (u64, u64) {
        let header = FILE_HEADER_BYTES as u64;
        (
            header + (self.offset_entries_on_disk.load(Ordering::Acquire) * OFFSET_ENTRY_BYTES) as u64,
            header + (self.time_entries_on_disk.load(Ordering::Acquire) * TIME_ENTRY_BYTES) as u64,
        )
    }

    /// The writer's placement state for the next batch.
    pub fn index_placer(&self, interval: u32) -> IndexPlacer {
        let last_entry_position = read_lock(&self.offset_entries)
            .last()
            .map(|entry| u64::from(entry.position))
            .unwrap_or(FILE_HEADER_BYTES as u64);
        IndexPlacer {
            interval: u64::from(interval),
            since_entry: self.end().saturating_sub(last_entry_position),
            max_timestamp: self.max_timestamp(),
        }
    }

    /// Records that batches were written (writer only, after the bytes are in the file):
    /// index entries first, then the new end, so a reader that sees the end sees the entries.
    pub fn record_append(
        &self,
        new_end: u64,
        next_offset: i64,
        max_timestamp: i64,
        first_batch_timestamp: i64,
        last_batch: (u64, i64),
        entries: &[(OffsetEntry, TimeEntry)],
    ) {
        if !entries.is_empty() {
            write_lock(&self.offset_entries).extend(entries.iter().map(|(offset, _)| *offset));
            write_lock(&self.time_entries).extend(entries.iter().map(|(_, time)| *time));
        }
        if self.first_batch_timestamp.load(Ordering::Relaxed) == NO_TIMESTAMP {
            self.first_batch_timestamp
                .store(first_batch_timestamp, Ordering::Release);
        }
        self.last_batch_position.store(last_batch.0, Ordering::Relaxed);
        self.last_batch_base_offset.store(last_batch.1, Ordering::Relaxed);
        self.max_timestamp.store(max_timestamp, Ordering::Release);
        self.next_offset.store(next_offset, Ordering::Release);
        self.file_bytes.fetch_max(new_end, Ordering::AcqRel);
        self.end.store(new_end, Ordering::Release);
    }

    /// Adds the closing time index entry (writer only, at roll): the segment's maximum
    /// timestamp at its last batch, so a closed segment's newest timestamp is its last entry.
    pub fn add_final_time_entry(&self) {
        if self.is_empty() {
            return;
        }
        let position = self.last_batch_position.load(Ordering::Relaxed);
        let mut entries = write_lock(&self.time_entries);
        if entries
            .last()
            .is_some_and(|entry| u64::from(entry.position) == position)
        {
            return;
        }
        // The last batch lies inside the segment, so both fit: see IndexPlacer::on_batch.
        let position = u32::try_from(position).unwrap_or(u32::MAX);
        let relative_offset = self.last_batch_base_offset.load(Ordering::Relaxed) - self.base_offset;
        let relative_offset = u32::try_from(relative_offset).unwrap_or(u32::MAX);
        entries.push(TimeEntry {
            timestamp: self.max_timestamp(),
            relative_offset,
            position,
        });
    }

    /// Writes index entries not yet in the index files (writer only).
    pub fn flush_index_entries(&self) -> Result<(), StorageError> {
        let mut out = Vec::new();
        {
            let entries = read_lock(&self.offset_entries);
            let on_disk = self.offset_entries_on_disk.load(Ordering::Acquire);
            if entries.len() > on_disk {
                for entry in &entries[on_disk..] {
                    entry.encode_into(&mut out);
                }
                let position = (FILE_HEADER_BYTES + on_disk * OFFSET_ENTRY_BYTES) as u64;
                self.offset_index_file
                    .write_all_at(&out, position)
                    .map_err(StorageError::io("writing", &self.paths.offset_index))?;
                self.offset_entries_on_disk
                    .store(entries.len(), Ordering::Release);
            }
        }
        out.clear();
        let entries = read_lock(&self.time_entries);
        let on_disk = self.time_entries_on_disk.load(Ordering::Acquire);
        if entries.len() > on_disk {
            for entry in &entries[on_disk..] {
                entry.encode_into(&mut out);
            }
            let position = (FILE_HEADER_BYTES + on_disk * TIME_ENTRY_BYTES) as u64;
            self.time_index_file
                .write_all_at(&out, position)
                .map_err(StorageError::io("writing", &self.paths.time_index))?;
            self.time_entries_on_disk.store(entries.len(), Ordering::Release);
        }
        Ok(())
    }

    /// Index entries not yet written to the index files.
    pub fn pending_index_entries(&self) -> usize {
        read_lock(&self.offset_entries).len() - self.offset_entries_on_disk.load(Ordering::Acquire)
    }

    /// Written by the cleaner: batches may leave offset gaps and hold fewer records than
    /// their range (docs/storage-format.md, "Cleaned segments").
    pub fn is_cleaned(&self) -> bool {
        self.cleaned
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Seals a closed segment whose index entries are all written: syncs the data and index
    /// files, then sets the sealed flag in the data file header and syncs again. The flag can
    /// only reach the disk after the data did, so a sealed segment is trusted at recovery.
    /// Returns the number of data-file fdatasyncs made.
    pub fn seal(&self) -> Result<u64, StorageError> {
        if self.is_sealed() {
            return Ok(0);
        }
        self.sync_log()?;
        self.sync_indexes()?;
        self.write_flags(LOG_FLAG_SEALED)?;
        self.sync_log()?;
        self.sealed.store(true, Ordering::Release);
        Ok(2)
    }

    /// Writes the sealed flag into the data file header (not synced, and not yet marked sealed
    /// in memory). Only for a segment whose data and indexes were just synced: the roll syncs,
    /// calls this, syncs again, then [`set_sealed`](Self::set_sealed).
    pub fn write_sealed_flag(&self) -> Result<(), StorageError> {
        self.write_flags(LOG_FLAG_SEALED)
    }

    /// Records in memory that the sealed flag is durable.
    pub fn set_sealed(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    /// Clears the sealed flag (durably) of a segment that becomes the active one again.
    pub fn unseal(&self) -> Result<(), StorageError> {
        self.write_flags(0)?;
        self.sync_log()?;
        self.sealed.store(false, Ordering::Release);
        Ok(())
    }

    fn write_flags(&self, flags: u16) -> Result<(), StorageError> {
        // The cleaned flag is a fact about the batches, not a state: it is never dropped.
        let flags = if self.cleaned {
            flags | LOG_FLAG_CLEANED
        } else {
            flags
        };
        let header = encode_file_header_with_flags(FileKind::Log, self.base_offset, flags);
        self.log
            .write_all_at(&header, 0)
            .map_err(StorageError::io("writing", &self.paths.log))
    }

    pub fn sync_log(&self) -> Result<(), StorageError> {
        self.log
            .sync_data()
            .map_err(StorageError::io("syncing", &self.paths.log))
    }

    pub fn sync_indexes(&self) -> Result<(), StorageError> {
        self.offset_index_file
            .sync_data()
            .map_err(StorageError::io("syncing", &self.paths.offset_index))?;
        self.time_index_file
            .sync_data()
            .map_err(StorageError::io("syncing", &self.paths.time_index))
    }

    /// Position of the batch to start from when looking for `offset`: the last indexed batch
    /// whose base offset is <= `offset`, else the first batch.
    pub fn position_for_offset(&self, offset: i64) -> u64 {
        let relative = offset.saturating_sub(self.base_offset);
        let entries = read_lock(&self.offset_entries);
        let count = entries.partition_point(|entry| i64::from(entry.relative_offset) <= relative);
        match count.checked_sub(1).and_then(|index| entries.get(index)) {
            Some(entry) => u64::from(entry.position),
            None => FILE_HEADER_BYTES as u64,
        }
    }

    /// Position to start from when looking for the first record with a timestamp >= `timestamp`:
    /// every batch before the last entry whose running maximum is below it can be skipped.
    pub fn position_for_timestamp(&self, timestamp: i64) -> u64 {
        let entries = read_lock(&self.time_entries);
        let count = entries.partition_point(|entry| entry.timestamp < timestamp);
        match count.checked_sub(1).and_then(|index| entries.get(index)) {
            Some(entry) => u64::from(entry.position),
            None => FILE_HEADER_BYTES as u64,
        }
    }

    /// Whole batches starting with the one that contains `offset`, up to `max_bytes` (at least
    /// one batch), none at or past `high_watermark`. `None`: no batch here at or after `offset`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        high_watermark: i64,
    ) -> Result<Option<Bytes>, StorageError> {
        if let Some(fence) = self.fences.iter().find(|fence| fence.contains_offset(offset)) {
            return Err(StorageError::CorruptRange {
                first_offset: fence.first_offset,
                end_offset: fence.end_offset,
            });
        }
        let end = self.end();
        let start = self.position_for_offset(offset);
        let mut scanner = self.scanner(start, end, LOCATE_CHUNK_BYTES);
        let (position, first) = loop {
            let Some((position, header)) = self.next_batch(&mut scanner)? else {
                return Ok(None);
            };
            if header.base_offset >= high_watermark {
                return Ok(None);
            }
            if header.next_offset() > offset {
                break (position, header);
            }
            scanner.skip();
        };
        // parse() checked the length, so total_bytes() is Some.
        let first_bytes = first.total_bytes().unwrap_or(BATCH_HEADER_BYTES);
        // A read stops where fenced bytes start: what follows is served by a read past them.
        let stop = self
            .fences
            .iter()
            .map(|fence| fence.from_bytes)
            .filter(|from| *from > position)
            .fold(end, u64::min);
        let available = usize::try_from(stop - position).unwrap_or(usize::MAX);
        let length = max_bytes.min(available).max(first_bytes);
        let mut buffer = BytesMut::zeroed(length);
        read_exact_at(&*self.log, &mut buffer, position)
            .map_err(StorageError::io("reading", &self.paths.log))?;
        let cut = whole_batches_below(&buffer, first.base_offset, high_watermark, self.cleaned).map_err(
            |detail| StorageError::corrupt(&self.paths.log, format!("at byte {position}+: {detail}")),
        )?;
        buffer.truncate(cut);
        Ok(Some(buffer.freeze()))
    }

    /// The first record at or after this segment's start with a timestamp >= `timestamp`, below
    /// `high_watermark`: `(offset, timestamp)`.
    pub fn find_timestamp(
        &self,
        timestamp: i64,
        high_watermark: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let start = self.position_for_timestamp(timestamp);
        let mut scanner = self.scanner(start, self.end(), LOCATE_CHUNK_BYTES);
        loop {
            let Some((_, header)) = self.next_batch(&mut scanner)? else {
                return Ok(None);
            };
            if header.base_offset >= high_watermark {
                return Ok(None);
            }
            // A placeholder the cleaner left (no records) holds no timestamp to find.
            if header.max_timestamp < timestamp || header.record_count == 0 {
                scanner.skip();
                continue;
            }
            if header.is_log_append_time() {
                // Every record of a log-append-time batch carries the batch's timestamp.
                return Ok(Some((header.base_offset, header.max_timestamp)));
            }
            let bytes = scanner
                .batch_bytes()
                .map_err(StorageError::io("reading", &self.paths.log))?;
            let bytes = Bytes::copy_from_slice(bytes);
            let found =
                first_record_at_or_after(&bytes, timestamp).map_err(|source| StorageError::Corrupt {
                    path: self.paths.log.clone(),
                    detail: format!("batch at offset {} does not decode", header.base_offset),
                    source: Some(source),
                })?;
            if found.is_some() {
                return Ok(found);
            }
            scanner.skip();
        }
    }

    /// The scanner's next batch (position and header) for a reader, `None` at the end; bytes
    /// that are not a whole batch are corruption here, since readers only scan below the end
    /// recovery verified.
    pub(crate) fn next_batch(
        &self,
        scanner: &mut BatchScanner<'_>,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        match scanner
            .next_header()
            .map_err(StorageError::io("reading", &self.paths.log))?
        {
            ScanStep::End => Ok(None),
            ScanStep::Invalid(reason) => Err(StorageError::corrupt(
                &self.paths.log,
                format!("at byte {}: {reason}", scanner.position()),
            )),
            ScanStep::Batch(position, header) => Ok(Some((position, header))),
        }
    }
}

fn first_record_at_or_after(
    bytes: &Bytes,
    timestamp: i64,
) -> Result<Option<(i64, i64)>, tidelog_proto::BatchError> {
    let (batch, _) = RecordBatch::split_first(bytes)?;
    for record in batch.records() {
        let record = record?;
        if record.timestamp >= timestamp {
            return Ok(Some((record.offset, record.timestamp)));
        }
    }
    Ok(None)
}

/// Length of the prefix of `buffer` made of whole batches with base offsets below
/// `high_watermark`, checking each header and that offsets run on from `first_base_offset`
/// (in a cleaned segment, `cleaned`, never go back: the cleaner leaves gaps).
fn whole_batches_below(
    buffer: &[u8],
    first_base_offset: i64,
    high_watermark: i64,
    cleaned: bool,
) -> Result<usize, String> {
    let mut cut = 0usize;
    let mut expected = first_base_offset;
    while cut < buffer.len() {
        let rest = &buffer[cut..];
        let total = match peek_batch_bytes(rest) {
            Ok(Some(total)) => total,
            Ok(None) => break,
            Err(error) => return Err(error.to_string()),
        };
        if total > rest.len() {
            break;
        }
        let header = BatchHeader::parse(rest).map_err(|error| error.to_string())?;
        if header.base_offset != expected && !(cleaned && header.base_offset > expected) {
            return Err(format!(
                "batch has base offset {}, expected {expected}",
                header.base_offset
            ));
        }
        if header.base_offset >= high_watermark {
            break;
        }
        expected = header.next_offset();
        cut += total;
    }
    Ok(cut)
}

/// A segment that could not be created, and any of its files that could not be removed again.
#[derive(Debug)]
pub(crate) struct CreateError {
    pub error: StorageError,
    /// Files created and left behind: the directory no longer describes the log alone.
    pub leftovers: Vec<(PathBuf, std::io::Error)>,
}

impl From<CreateError> for StorageError {
    fn from(failed: CreateError) -> Self {
        failed.error
    }
}

fn create_with_header<'a>(
    disk: &dyn Disk,
    path: &'a Path,
    kind: FileKind,
    base_offset: i64,
    created: &mut Vec<&'a Path>,
) -> Result<Arc<dyn SegmentFile>, StorageError> {
    // Counted as created before the open: an open that fails after the kernel made the name
    // (rare, but possible) must still be cleaned up; removing a name that is absent is fine.
    created.push(path);
    let file = disk
        .open(path, true)
        .map_err(StorageError::io("creating", path))?;
    file.set_len(0).map_err(StorageError::io("truncating", path))?;
    file.write_all_at(&encode_file_header(kind, base_offset), 0)
        .map_err(StorageError::io("writing", path))?;
    file.sync_data().map_err(StorageError::io("syncing", path))?;
    Ok(file)
}

pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // The guarded values (index vectors) are only ever pushed to; a panic mid-push leaves a
    // valid vector, so a poisoned lock is still safe to use.
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
