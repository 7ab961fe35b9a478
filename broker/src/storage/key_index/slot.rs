//! A segment's per-key index state and the lookups over it. The state moves one way: the
//! active segment's table (`Active`) is frozen at the roll (`Frozen`, still answered from
//! memory), replaced by its `.keys` file once written (`File`); a closed segment opened
//! without a usable `.keys` file is `Unindexed` (answered by scanning the segment, exactly,
//! until the rebuild lands); retention ends it (`Deleted`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use bytes::{Bytes, BytesMut};
use tidelog_proto::batch::{BatchHeader, Compression, BATCH_HEADER_BYTES};

use super::super::disk::read_exact_at;
use super::super::error::StorageError;
use super::super::segment::{read_lock, write_lock, Segment, SCAN_CHUNK_BYTES};
use super::extract::{decode_record_at, for_each_key};
use super::file::KeysFile;
use super::table::{ActiveTable, Place};
use super::worker::IndexContext;
use super::StreamRecord;

/// One segment's index state (see the module comment).
#[derive(Debug)]
pub(crate) enum KeyState {
    Active(ActiveTable),
    Frozen(Arc<ActiveTable>),
    File(Arc<KeysFile>),
    Unindexed,
    Deleted,
    /// The cleaner replaced the segment: readers that still hold it are answered by scanning
    /// its (still open) data file, and no `.keys` file is ever written for it again (the
    /// cleaned segment that took its name gets its own).
    Replaced,
}

/// The index state of one segment, beside its other files.
#[derive(Debug)]
pub(crate) struct SegmentKeys {
    state: RwLock<KeyState>,
    /// A job for this segment is in the worker's queue.
    queued: AtomicBool,
    /// Held while the file is written, so the worker and `close` never write it together.
    writing: Mutex<()>,
    /// The log was closed: no file may be written for it any more.
    closed: AtomicBool,
}

impl SegmentKeys {
    pub fn new(state: KeyState) -> Self {
        Self {
            state: RwLock::new(state),
            queued: AtomicBool::new(false),
            writing: Mutex::new(()),
            closed: AtomicBool::new(false),
        }
    }

    /// Whether a job may be queued (none is); the caller then queues one.
    pub fn claim_queued(&self) -> bool {
        !self.queued.swap(true, Ordering::AcqRel)
    }

    pub fn release_queued(&self) {
        self.queued.store(false, Ordering::Release);
    }

    pub fn lock_writing(&self) -> MutexGuard<'_, ()> {
        // The guarded unit holds no data a panic could break.
        self.writing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closed, frozen or unindexed, and its log still open: a `.keys` file is to be written.
    pub fn needs_file(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
            && matches!(*read_lock(&self.state), KeyState::Frozen(_) | KeyState::Unindexed)
    }

    /// The log closed: later jobs for this segment do nothing.
    pub fn set_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Installs a file loaded at open.
    pub fn set_file(&self, file: KeysFile) {
        *write_lock(&self.state) = KeyState::File(Arc::new(file));
    }

    /// Replaces the state with an active table (recovery's rebuild of the active segment).
    pub fn set_active(&self, table: ActiveTable) {
        *write_lock(&self.state) = KeyState::Active(table);
    }

    pub fn unindexed() -> Self {
        Self::new(KeyState::Unindexed)
    }

    /// Runs `change` on the active table (writer only). A segment that is not active has no
    /// table to change: nothing happens.
    pub fn with_active<R>(&self, change: impl FnOnce(&mut ActiveTable) -> R) -> Option<R> {
        match &mut *write_lock(&self.state) {
            KeyState::Active(table) => Some(change(table)),
            _ => None,
        }
    }

    /// Reads the active table (writer only, for the roll decision).
    pub fn read_active<R>(&self, read: impl FnOnce(&ActiveTable) -> R) -> Option<R> {
        match &*read_lock(&self.state) {
            KeyState::Active(table) => Some(read(table)),
            _ => None,
        }
    }

    /// Freezes the active table at a roll; it answers from memory until its file is written.
    pub fn freeze(&self) -> Option<Arc<ActiveTable>> {
        let mut state = write_lock(&self.state);
        let KeyState::Active(table) = std::mem::replace(&mut *state, KeyState::Unindexed) else {
            return None;
        };
        let table = Arc::new(table);
        *state = KeyState::Frozen(Arc::clone(&table));
        Some(table)
    }

    /// Makes a closed segment that was frozen or unindexed use its (just written) file.
    /// `false` if the segment was deleted meanwhile (then the caller removes the file): the
    /// lock is held while `install` renames the file into place, so a retention pass that
    /// marks the segment deleted either sees the file or keeps it from appearing.
    pub fn install_file(
        &self,
        install: impl FnOnce() -> Result<Option<KeysFile>, StorageError>,
    ) -> Result<bool, StorageError> {
        let mut state = write_lock(&self.state);
        if self.closed.load(Ordering::Acquire)
            || matches!(
                *state,
                KeyState::Deleted | KeyState::Replaced | KeyState::Active(_)
            )
        {
            return Ok(false);
        }
        if let Some(file) = install()? {
            *state = KeyState::File(Arc::new(file));
        }
        Ok(true)
    }

    /// Retention: the segment is going; its `.keys` file is removed after this.
    pub fn mark_deleted(&self) {
        *write_lock(&self.state) = KeyState::Deleted;
    }

    /// The cleaner replaced the segment (see [`KeyState::Replaced`]). Waits for a `.keys`
    /// write in progress, so none lands after this returns.
    pub fn mark_replaced(&self) {
        let _writing = self.lock_writing();
        *write_lock(&self.state) = KeyState::Replaced;
    }

    /// A `.keys` file found inconsistent with its segment: answer by scanning from now on.
    pub fn mark_unindexed(&self) {
        let mut state = write_lock(&self.state);
        if matches!(*state, KeyState::File(_)) {
            *state = KeyState::Unindexed;
        }
    }

    pub fn is_file(&self) -> bool {
        matches!(*read_lock(&self.state), KeyState::File(_))
    }

    #[cfg(test)]
    pub fn is_unindexed(&self) -> bool {
        matches!(*read_lock(&self.state), KeyState::Unindexed)
    }

    /// The file in use, if any.
    pub fn file(&self) -> Option<Arc<KeysFile>> {
        match &*read_lock(&self.state) {
            KeyState::File(file) => Some(Arc::clone(file)),
            _ => None,
        }
    }

    pub fn frozen_table(&self) -> Option<Arc<ActiveTable>> {
        match &*read_lock(&self.state) {
            KeyState::Frozen(table) => Some(Arc::clone(table)),
            _ => None,
        }
    }

    /// Resident bytes of this segment's index (the table, or the file's summary).
    pub fn resident_bytes(&self) -> usize {
        match &*read_lock(&self.state) {
            KeyState::Active(table) => table.bytes(),
            KeyState::Frozen(table) => table.bytes(),
            KeyState::File(file) => file.resident_bytes(),
            KeyState::Unindexed | KeyState::Deleted | KeyState::Replaced => 0,
        }
    }

    /// Bytes of the `.keys` file, if one is in use.
    pub fn file_bytes(&self) -> u64 {
        match &*read_lock(&self.state) {
            KeyState::File(file) => file.file_bytes(),
            _ => 0,
        }
    }
}

/// Where a record of a stream lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Located {
    pub offset: i64,
    pub place: Place,
}

/// The records of `key` in `segment` with offsets in `[from, to)`, oldest first, with their
/// batch positions. Exact: tables compare key bytes, files their stored key bytes, and an
/// unindexed segment is scanned (only below `end`, the bytes the caller may see).
pub(crate) fn locate(
    segment: &Arc<Segment>,
    key: &[u8],
    from: i64,
    to: i64,
    end: u64,
    context: &IndexContext,
) -> Result<Vec<Located>, StorageError> {
    let base = segment.base_offset;
    if to <= base.max(from) {
        return Ok(Vec::new());
    }
    let in_range = |offset: i64| (from..to).contains(&offset);
    let file = {
        let state = read_lock(&segment.keys.state);
        match &*state {
            KeyState::Active(table) => {
                return Ok(from_table(table, key, base, &in_range));
            }
            KeyState::Frozen(table) => return Ok(from_table(table, key, base, &in_range)),
            KeyState::Deleted => return Ok(Vec::new()),
            KeyState::Unindexed | KeyState::Replaced => None,
            KeyState::File(file) => Some(Arc::clone(file)),
        }
    };
    if let Some(file) = file {
        match file.lookup(key) {
            Ok(found) => {
                return Ok(found
                    .into_iter()
                    .map(|place| Located {
                        offset: base + i64::from(place.relative_offset),
                        place,
                    })
                    .filter(|located| in_range(located.offset))
                    .collect())
            }
            Err(reason) => {
                tracing::error!(
                    path = %file.path().display(),
                    %reason,
                    "per-key index file is damaged; answering from the segment and rebuilding it"
                );
                segment.keys.mark_unindexed();
                if context.background {
                    super::worker::enqueue(segment, context);
                }
            }
        }
    }
    scan_segment(segment, key, from, to, end, context.decompressed_bytes_max)
}

fn from_table(table: &ActiveTable, key: &[u8], base: i64, in_range: &dyn Fn(i64) -> bool) -> Vec<Located> {
    let mut found: Vec<Located> = table
        .newest_first(key)
        .map(|place| Located {
            offset: base + i64::from(place.relative_offset),
            place,
        })
        .filter(|located| in_range(located.offset))
        .collect();
    found.reverse();
    found
}

/// The exact answer for a segment without a usable index: every batch below `end` walked,
/// its keys compared.
fn scan_segment(
    segment: &Segment,
    key: &[u8],
    from: i64,
    to: i64,
    end: u64,
    decompressed_bytes_max: usize,
) -> Result<Vec<Located>, StorageError> {
    let mut found = Vec::new();
    let start = segment.position_for_offset(from);
    let mut scanner = segment.scanner(start, end, SCAN_CHUNK_BYTES);
    let base = segment.base_offset;
    // Bounded: every step moves past one batch of a finite range.
    loop {
        let Some((position, header)) = segment.next_batch(&mut scanner)? else {
            break;
        };
        if header.base_offset >= to {
            break;
        }
        if header.next_offset() <= from {
            scanner.skip();
            continue;
        }
        let bytes = scanner
            .batch_bytes()
            .map_err(StorageError::io("reading", &segment.paths.log))?;
        let batch_position = u32::try_from(position).unwrap_or(u32::MAX);
        for_each_key(
            &header,
            bytes,
            decompressed_bytes_max,
            |offset_delta, record_start, record_key| {
                let offset = header.base_offset + i64::from(offset_delta);
                if record_key == key && (from..to).contains(&offset) {
                    found.push(Located {
                        offset,
                        place: Place {
                            relative_offset: u32::try_from(offset - base).unwrap_or(u32::MAX),
                            batch_position,
                            record_start,
                        },
                    });
                }
            },
        )
        .map_err(|source| StorageError::Corrupt {
            path: segment.paths.log.clone(),
            detail: format!("batch at offset {} does not decode", header.base_offset),
            source: Some(source),
        })?;
        scanner.skip();
    }
    Ok(found)
}

/// Bytes read to decode one record of an uncompressed batch (more if it is longer).
const RECORD_READ_BYTES: usize = 512;

fn read_at(segment: &Segment, length: usize, position: u64) -> Result<Bytes, StorageError> {
    let mut bytes = BytesMut::zeroed(length);
    read_exact_at(&*segment.log, &mut bytes, position)
        .map_err(StorageError::io("reading", &segment.paths.log))?;
    Ok(bytes.freeze())
}

/// The header of the batch at `position`, and its total length.
fn read_header_at(segment: &Segment, position: u32) -> Result<(BatchHeader, usize), StorageError> {
    let path = &segment.paths.log;
    let pointed = || format!("no batch at byte {position}, where the per-key index points");
    let bytes = read_at(segment, BATCH_HEADER_BYTES, u64::from(position))?;
    let header = BatchHeader::parse(&bytes).map_err(|source| StorageError::Corrupt {
        path: path.clone(),
        detail: pointed(),
        source: Some(source),
    })?;
    match header.total_bytes() {
        Some(total)
            if total <= super::super::BATCH_BYTES_MAX && header.base_offset >= segment.base_offset =>
        {
            Ok((header, total))
        }
        _ => Err(StorageError::corrupt(path, pointed())),
    }
}

/// Decodes the records `located` (oldest first, all in `segment`) and checks each one's key
/// against `key`. An uncompressed batch's records are read one by one (the batch header and
/// the record, never the whole batch); a compressed batch is read and decompressed once for
/// all its records asked for. `Ok(None)`: a record's key or offset differs, so the index is
/// wrong (the caller rescans).
pub(crate) fn decode_stream_records(
    segment: &Segment,
    key: &[u8],
    located: &[Located],
    decompressed_bytes_max: usize,
) -> Result<Option<Vec<StreamRecord>>, StorageError> {
    let path = &segment.paths.log;
    let corrupt = |detail: String, source: tidelog_proto::BatchError| StorageError::Corrupt {
        path: path.clone(),
        detail,
        source: Some(source),
    };
    let mut out = Vec::with_capacity(located.len());
    let mut index = 0;
    // Bounded: every pass consumes at least one located record.
    while index < located.len() {
        let batch_position = located[index].place.batch_position;
        let (header, total) = read_header_at(segment, batch_position)?;
        let codec = header
            .compression()
            .map_err(|source| corrupt(format!("batch at byte {batch_position}"), source))?;
        let section = if codec == Compression::None {
            None
        } else {
            let bytes = read_at(segment, total, u64::from(batch_position))?;
            let records = tidelog_proto::compression::decompress(
                codec,
                &bytes[BATCH_HEADER_BYTES..],
                decompressed_bytes_max,
            )
            .map_err(|source| {
                corrupt(
                    format!("batch at offset {} does not decompress", header.base_offset),
                    source,
                )
            })?;
            Some(Bytes::from(records))
        };
        while index < located.len() && located[index].place.batch_position == batch_position {
            let Located { offset, place } = located[index];
            let start = place.record_start as usize;
            let decoded = match &section {
                Some(section) => decode_record_at(section, start),
                None => {
                    if start < BATCH_HEADER_BYTES || start >= total {
                        return Ok(None);
                    }
                    let at = u64::from(batch_position) + start as u64;
                    let mut bytes = read_at(segment, RECORD_READ_BYTES.min(total - start), at)?;
                    if let Some(length) = record_length(&bytes) {
                        if length > bytes.len() && length <= total - start {
                            bytes = read_at(segment, length, at)?;
                        }
                    }
                    decode_record_at(&bytes, 0)
                }
            };
            let Ok(record) = decoded else {
                return Ok(None);
            };
            if header.base_offset + i64::from(record.offset_delta) != offset {
                return Ok(None);
            }
            let Some(record_key) = record.key.filter(|record_key| record_key[..] == *key) else {
                return Ok(None);
            };
            out.push(StreamRecord {
                offset,
                // Every record of a log-append-time batch carries the batch's timestamp.
                timestamp: if header.is_log_append_time() {
                    header.max_timestamp
                } else {
                    header.base_timestamp.saturating_add(record.timestamp_delta)
                },
                key: record_key,
                value: record.value,
                headers: record.headers,
            });
            index += 1;
        }
    }
    Ok(Some(out))
}

/// The whole length (its length varint included) of the record at the start of `bytes`.
fn record_length(bytes: &[u8]) -> Option<usize> {
    let mut value: u64 = 0;
    for (index, byte) in bytes.iter().take(5).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            let raw = u32::try_from(value).ok()?;
            let length = ((raw >> 1) as i32) ^ -((raw & 1) as i32);
            return usize::try_from(length).ok().map(|length| length + index + 1);
        }
    }
    None
}
