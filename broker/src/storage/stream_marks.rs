//! Stream marks (issue 9 §3): what per-key truncations and erasures say about the keys of one
//! partition, held in memory as one immutable table behind an `Arc` (readers, the append path
//! and the cleaner take a snapshot without any lock beyond a pointer copy) and persisted whole
//! in the partition's `stream-marks` file.
//!
//! The rules every reader of a stream follows (`log/streams.rs`, the condition check, the
//! cleaner through [`MarksSnapshot::removes`]):
//! - A key's **read start** is the higher of its `truncated_before` and its `erase_before`:
//!   records of the key below it are gone for every reader (ReadStream, StreamInfo, the
//!   condition check's lookup), and every rewrite of a segment removes them, even the key's
//!   latest record (marks win over compaction). Other keys are untouched.
//! - An **erased** key (not re-opened) answers `StreamErased` to stream reads and to the
//!   condition check, and its appends are refused with `StreamErased` under the writer lock.
//!   `erase_before` is the partition's next offset when the erasure took the writer lock, so
//!   every record of the key written before it goes and none written after it exists.
//! - A key's **version** (the condition check's last offset, StreamInfo's `last_offset`) is its
//!   last record at or after the read start; when there is none, a truncated stream keeps the
//!   version it had (`truncated_version`: its last record below the truncation point, recorded
//!   at truncation, so it holds also once the cleaner has removed the records) as long as that
//!   offset is not below the partition's log start. An erasure resets it: an erased and
//!   re-opened stream starts fresh, with no version (`NoStream` holds) until its next append.
//! - Marks only move forward: a truncation never lowers `truncated_before`, and a re-open keeps
//!   `erase_before`, so records once removed never come back.
//!
//! Durability: every change is written to the file (aside, fdatasync, rename, directory fsync)
//! before it is acknowledged. A mark beyond the log end recovered at open (only a crash that
//! lost unsynced appends the mark was taken after can do that) is lowered to the end and
//! persisted before the log takes appends, so offsets reused after that crash are never hidden.
//! A damaged file is never guessed at: the partition refuses to open (forgetting an erasure
//! would resurrect erased data), with an error saying what to do.
//!
//! File layout (all integers big-endian):
//! `magic "TLSM" | version u16 (1) | reserved u16 (0) | count u32 | count entries | crc32 u32`,
//! an entry being `key length u32 | key | truncated_before i64 | truncated_version i64 |
//! flags u8 (bit 0: erased) | erase_before i64 | erase_requested_ms i64 | erase_deadline_ms i64
//! | erase_completed_ms i64`, and the CRC-32 (IEEE) covering every byte before it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use bytes::Bytes;

use super::conditions::printable_key;
use super::disk::Disk;
use super::error::StorageError;
use super::format::TEMP_SUFFIX;
use super::segment::{read_lock, write_lock};

/// The partition-directory file holding the marks.
pub(crate) const STREAM_MARKS_FILE_NAME: &str = "stream-marks";
/// Default of `limits.stream_marks_per_partition_max`.
pub const STREAM_MARKS_PER_PARTITION_MAX_DEFAULT: usize = 100_000;

const MAGIC: &[u8; 4] = b"TLSM";
const VERSION: u16 = 1;
const VERSION_OFFSET: usize = 4;
const RESERVED_OFFSET: usize = VERSION_OFFSET + 2;
const COUNT_OFFSET: usize = RESERVED_OFFSET + 2;
const HEADER_BYTES: usize = COUNT_OFFSET + 4;
const CRC_BYTES: usize = 4;
/// An entry's fixed fields after its key: two i64, the flags byte, four i64.
const ENTRY_FIXED_BYTES: usize = 8 + 8 + 1 + 8 * 4;
const FLAG_ERASED: u8 = 0x01;
/// In memory only, between `StreamMarks::open` and the log's open: a truncated version lost in
/// a crash, to be found again from the per-key index. Never written (the log's open replaces
/// every one before it returns; `encode` writes -1 for one left over).
pub(crate) const VERSION_TO_FIND: i64 = i64::MIN;

/// What truncations and erasures say about one key (the native StreamMarks, minus progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamMarkState {
    /// Reads start here; -1 none.
    pub truncated_before: i64,
    /// Erased and not re-opened.
    pub erased: bool,
    /// The latest erasure: records below erase_before go. -1 when never erased.
    pub erase_before: i64,
    pub erase_requested_ms: i64,
    pub erase_deadline_ms: i64,
    /// 0 while the cleaner still has records to remove.
    pub erase_completed_ms: i64,
}

impl Default for StreamMarkState {
    /// A key without marks.
    fn default() -> Self {
        Self::NONE
    }
}

impl StreamMarkState {
    /// A key that was never truncated nor erased.
    pub const NONE: StreamMarkState = StreamMarkState {
        truncated_before: -1,
        erased: false,
        erase_before: -1,
        erase_requested_ms: 0,
        erase_deadline_ms: 0,
        erase_completed_ms: 0,
    };

    /// Where reads of the key start (-1: anywhere).
    pub fn read_start(&self) -> i64 {
        self.truncated_before.max(self.erase_before)
    }

    /// An erasure that the cleaner has not finished.
    pub fn erasure_pending(&self) -> bool {
        self.erase_before >= 0 && self.erase_completed_ms == 0
    }
}

/// How far the cleaner is from finishing an erasure: records of the key below `erase_before`
/// still in segment files, and how many segments hold them (the active one included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErasureProgress {
    pub records_remaining: u64,
    pub segments_remaining: u32,
}

/// One key's persisted mark: its state and the version a truncation preserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub state: StreamMarkState,
    /// The key's last offset below `truncated_before` when it was truncated (-1: none, or
    /// reset by a later erasure): its version while no record at or after the read start
    /// exists.
    pub truncated_version: i64,
}

impl Mark {
    pub(crate) const NONE: Mark = Mark {
        state: StreamMarkState::NONE,
        truncated_version: -1,
    };
}

/// The marks of one partition at one moment. Never changed once published.
#[derive(Debug, Clone, Default)]
pub(crate) struct MarksTable {
    marks: HashMap<Bytes, Mark>,
}

impl MarksTable {
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Mark> {
        self.marks.get(key)
    }

    pub(crate) fn insert(&mut self, key: Bytes, mark: Mark) {
        self.marks.insert(key, mark);
    }

    pub(crate) fn len(&self) -> usize {
        self.marks.len()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&Bytes, &mut Mark)> {
        self.marks.iter_mut()
    }
}

/// A cheap snapshot of the marks (an `Arc`), for readers, the append path and the cleaner.
#[derive(Debug, Clone, Default)]
pub(crate) struct MarksSnapshot {
    table: Arc<MarksTable>,
    /// Keys erased and not re-opened: the append path looks keys up only when there are any.
    erased: usize,
}

/// An erasure the cleaner has still to finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingErasure {
    pub key: Vec<u8>,
    pub erase_before: i64,
    pub deadline_ms: i64,
}

impl MarksSnapshot {
    fn new(table: MarksTable) -> Self {
        let erased = table.marks.values().filter(|mark| mark.state.erased).count();
        Self {
            table: Arc::new(table),
            erased,
        }
    }

    pub(crate) fn table(&self) -> &MarksTable {
        &self.table
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Mark> {
        self.table.get(key)
    }

    /// The key's state (`NONE` without marks).
    pub(crate) fn state(&self, key: &[u8]) -> StreamMarkState {
        self.get(key).map_or(StreamMarkState::NONE, |mark| mark.state)
    }

    /// Whether a record of `key` at `offset` must go (below its truncation or erasure point).
    pub(crate) fn removes(&self, key: &[u8], offset: i64) -> bool {
        self.get(key).is_some_and(|mark| offset < mark.state.read_start())
    }

    /// Whether any key is erased (and not re-opened) now.
    pub(crate) fn has_erased(&self) -> bool {
        self.erased > 0
    }

    /// Whether appends of `key` are refused.
    pub(crate) fn is_erased(&self, key: &[u8]) -> bool {
        self.erased > 0 && self.get(key).is_some_and(|mark| mark.state.erased)
    }

    /// Erasures whose erase_completed_ms is 0, the earliest deadline first.
    pub(crate) fn pending_erasures(&self) -> Vec<PendingErasure> {
        let mut pending: Vec<PendingErasure> = self
            .table
            .marks
            .iter()
            .filter(|(_, mark)| mark.state.erasure_pending())
            .map(|(key, mark)| PendingErasure {
                key: key.to_vec(),
                erase_before: mark.state.erase_before,
                deadline_ms: mark.state.erase_deadline_ms,
            })
            .collect();
        pending.sort_by(|a, b| a.deadline_ms.cmp(&b.deadline_ms).then_with(|| a.key.cmp(&b.key)));
        pending
    }

    /// How reads of `key` are shaped: `(read start, version kept by a truncation)`, both -1
    /// when the key has no marks.
    ///
    /// # Errors
    /// `StreamErased` while the key is erased and not re-opened.
    pub(crate) fn for_reading(&self, key: &[u8]) -> Result<(i64, i64), StorageError> {
        match self.get(key) {
            None => Ok((-1, -1)),
            Some(mark) if mark.state.erased => Err(erased(key)),
            Some(mark) => Ok((mark.state.read_start(), mark.truncated_version)),
        }
    }
}

/// The error for reads and appends of an erased key.
pub(crate) fn erased(key: &[u8]) -> StorageError {
    StorageError::StreamErased {
        key: String::from_utf8_lossy(key).into_owned(),
    }
}

/// One partition's marks: the published snapshot and the file behind it.
#[derive(Debug)]
pub(crate) struct StreamMarks {
    dir: PathBuf,
    current: RwLock<MarksSnapshot>,
    /// Serialises changes (each writes the whole file), so no change is lost to another.
    change: Mutex<()>,
}

impl StreamMarks {
    /// Loads the partition's marks (none without a file), lowering any mark beyond
    /// `next_offset` (the recovered log end) to it. `true` with them: the log's open must
    /// settle them (find lost versions again, persist) before it takes appends.
    ///
    /// # Errors
    /// `Corrupt` when the file is damaged (the partition must not open: see the module
    /// comment); I/O errors.
    pub(crate) fn open(
        disk: &dyn Disk,
        dir: &Path,
        next_offset: i64,
    ) -> Result<(StreamMarks, bool), StorageError> {
        let path = dir.join(STREAM_MARKS_FILE_NAME);
        let mut table = match read_file(disk, &path)? {
            None => MarksTable::default(),
            Some(bytes) => decode(&bytes).map_err(|reason| {
                tracing::error!(file = %path.display(), %reason, "stream marks file is damaged; refusing to open the partition");
                StorageError::corrupt(
                    &path,
                    format!(
                        "the stream marks file (truncations and erasures of this partition's streams) is damaged: \
                         {reason}. The partition stays offline so that no erased or truncated record becomes \
                         readable again. Restore the file from a backup, or move it out of the partition \
                         directory to drop every truncation and erasure of this partition (erased streams \
                         then become readable until they are erased again), and restart"
                    ),
                )
            })?,
        };
        let mut lowered = 0usize;
        for mark in table.marks.values_mut() {
            let state = &mut mark.state;
            if state.truncated_before > next_offset || state.erase_before > next_offset {
                state.truncated_before = state.truncated_before.min(next_offset);
                state.erase_before = state.erase_before.min(next_offset);
                lowered += 1;
            }
            if mark.truncated_version >= next_offset {
                // Its record was lost with the rest: the log's open finds the version again
                // from the index (`PartitionLog::open`, `log/marks.rs`), which is not up yet.
                mark.truncated_version = VERSION_TO_FIND;
                lowered += 1;
            }
        }
        if lowered > 0 {
            tracing::error!(
                dir = %dir.display(),
                lowered,
                next_offset,
                "stream marks lay beyond the recovered log end (a crash lost unsynced appends); lowering them to it"
            );
        }
        if !table.marks.is_empty() {
            let erased = table.marks.values().filter(|mark| mark.state.erased).count();
            tracing::info!(dir = %dir.display(), marks = table.marks.len(), erased, "stream marks loaded");
        }
        let marks = StreamMarks {
            dir: dir.to_path_buf(),
            current: RwLock::new(MarksSnapshot::new(table)),
            change: Mutex::new(()),
        };
        Ok((marks, lowered > 0))
    }

    pub(crate) fn snapshot(&self) -> MarksSnapshot {
        read_lock(&self.current).clone()
    }

    /// Held for the whole of one change: read, decide, persist, publish.
    pub(crate) fn lock_change(&self) -> MutexGuard<'_, ()> {
        // The guarded unit holds no data a panic could break.
        self.change.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes `table` in memory (readers and appends see it from now on).
    pub(crate) fn publish(&self, _change: &MutexGuard<'_, ()>, table: MarksTable) -> MarksSnapshot {
        let snapshot = MarksSnapshot::new(table);
        *write_lock(&self.current) = snapshot.clone();
        snapshot
    }

    /// Puts back a snapshot published by this change when its persisting failed.
    pub(crate) fn restore(&self, _change: &MutexGuard<'_, ()>, snapshot: MarksSnapshot) {
        *write_lock(&self.current) = snapshot;
    }

    /// Writes `table` to the file, durably.
    pub(crate) fn persist(
        &self,
        disk: &dyn Disk,
        _change: &MutexGuard<'_, ()>,
        table: &MarksTable,
    ) -> Result<(), StorageError> {
        write_file(disk, &self.dir, &encode(table))
    }
}

fn read_file(disk: &dyn Disk, path: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    let file = match disk.open_read_only(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io("opening", path)(error)),
    };
    let length = file.len().map_err(StorageError::io("reading", path))?;
    let length = usize::try_from(length)
        .map_err(|_| StorageError::corrupt(path, format!("stream marks file of {length} bytes")))?;
    let mut bytes = vec![0u8; length];
    super::disk::read_exact_at(&*file, &mut bytes, 0).map_err(StorageError::io("reading", path))?;
    Ok(Some(bytes))
}

/// Written aside, fdatasync'ed, renamed into place, directory synced: whole or absent.
fn write_file(disk: &dyn Disk, dir: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let path = dir.join(STREAM_MARKS_FILE_NAME);
    let temp = dir.join(format!("{STREAM_MARKS_FILE_NAME}{TEMP_SUFFIX}"));
    let file = disk
        .open(&temp, true)
        .map_err(StorageError::io("creating", &temp))?;
    file.set_len(0).map_err(StorageError::io("truncating", &temp))?;
    file.write_all_at(bytes, 0)
        .map_err(StorageError::io("writing", &temp))?;
    file.sync_data().map_err(StorageError::io("syncing", &temp))?;
    drop(file);
    disk.rename(&temp, &path)
        .map_err(StorageError::io("renaming", &temp))?;
    disk.sync_dir(dir).map_err(StorageError::io("syncing", dir))
}

pub(crate) fn encode(table: &MarksTable) -> Vec<u8> {
    // Sorted, so the same marks always give the same bytes.
    let mut entries: Vec<(&Bytes, &Mark)> = table.marks.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let body: usize = entries
        .iter()
        .map(|(key, _)| 4 + key.len() + ENTRY_FIXED_BYTES)
        .sum();
    let mut bytes = Vec::with_capacity(HEADER_BYTES + body + CRC_BYTES);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_be_bytes());
    bytes.extend_from_slice(&0u16.to_be_bytes());
    // Bounded by limits.stream_marks_per_partition_max, far below u32::MAX.
    bytes.extend_from_slice(&u32::try_from(entries.len()).unwrap_or(u32::MAX).to_be_bytes());
    for (key, mark) in entries {
        // A key is part of one record batch, far below 4 GiB.
        bytes.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
        bytes.extend_from_slice(key);
        let state = &mark.state;
        bytes.extend_from_slice(&state.truncated_before.to_be_bytes());
        bytes.extend_from_slice(&mark.truncated_version.max(-1).to_be_bytes());
        bytes.push(if state.erased { FLAG_ERASED } else { 0 });
        for value in [
            state.erase_before,
            state.erase_requested_ms,
            state.erase_deadline_ms,
            state.erase_completed_ms,
        ] {
            bytes.extend_from_slice(&value.to_be_bytes());
        }
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

pub(crate) fn decode(bytes: &[u8]) -> Result<MarksTable, String> {
    if bytes.len() < HEADER_BYTES + CRC_BYTES {
        return Err(format!("{} bytes, shorter than a header", bytes.len()));
    }
    if &bytes[..VERSION_OFFSET] != MAGIC {
        return Err("bad magic".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
    let crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc != crc32fast::hash(body) {
        return Err("checksum mismatch".into());
    }
    let version = u16::from_be_bytes([body[VERSION_OFFSET], body[VERSION_OFFSET + 1]]);
    if version != VERSION {
        return Err(format!("unknown version {version} (this build reads {VERSION})"));
    }
    let count = u32::from_be_bytes([
        body[COUNT_OFFSET],
        body[COUNT_OFFSET + 1],
        body[COUNT_OFFSET + 2],
        body[COUNT_OFFSET + 3],
    ]);
    let mut reader = Reader {
        bytes: body,
        at: HEADER_BYTES,
    };
    let mut table = MarksTable::default();
    // Bounded: every entry consumes at least ENTRY_FIXED_BYTES of a finite buffer.
    for index in 0..count {
        let entry = |what: &str| format!("entry {index}: {what}");
        let key_length = reader.u32().ok_or_else(|| entry("truncated key length"))?;
        let key = reader
            .take(key_length as usize)
            .ok_or_else(|| entry("key runs past the end"))?;
        let truncated_before = reader.i64().ok_or_else(|| entry("truncated"))?;
        let truncated_version = reader.i64().ok_or_else(|| entry("truncated"))?;
        let flags = reader.take(1).ok_or_else(|| entry("truncated"))?[0];
        if flags & !FLAG_ERASED != 0 {
            return Err(entry(&format!("unknown flags {flags:#04x}")));
        }
        let mut values = [0i64; 4];
        for value in &mut values {
            *value = reader.i64().ok_or_else(|| entry("truncated"))?;
        }
        let [erase_before, erase_requested_ms, erase_deadline_ms, erase_completed_ms] = values;
        if truncated_before < -1 || erase_before < -1 || truncated_version < -1 {
            return Err(entry("negative offsets"));
        }
        let mark = Mark {
            state: StreamMarkState {
                truncated_before,
                erased: flags & FLAG_ERASED != 0,
                erase_before,
                erase_requested_ms,
                erase_deadline_ms,
                erase_completed_ms,
            },
            truncated_version,
        };
        if table.marks.insert(Bytes::copy_from_slice(key), mark).is_some() {
            return Err(entry(&format!("key {} twice", printable_key(key))));
        }
    }
    if reader.at != body.len() {
        return Err(format!("{} bytes after the last entry", body.len() - reader.at));
    }
    Ok(table)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        let end = self
            .at
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Some(taken)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|bytes| u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn i64(&mut self) -> Option<i64> {
        let bytes = self.take(8)?;
        let mut value = [0u8; 8];
        value.copy_from_slice(bytes);
        Some(i64::from_be_bytes(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MarksTable {
        let mut table = MarksTable::default();
        table.insert(
            Bytes::from_static(b"order-1"),
            Mark {
                state: StreamMarkState {
                    truncated_before: 42,
                    ..StreamMarkState::NONE
                },
                truncated_version: 40,
            },
        );
        table.insert(
            Bytes::from_static(b"\x00\xffbinary"),
            Mark {
                state: StreamMarkState {
                    truncated_before: -1,
                    erased: true,
                    erase_before: 100,
                    erase_requested_ms: 1_700_000_000_000,
                    erase_deadline_ms: 1_700_000_600_000,
                    erase_completed_ms: 0,
                },
                truncated_version: -1,
            },
        );
        table
    }

    #[test]
    fn the_marks_file_round_trips_and_every_flipped_bit_is_detected() {
        let table = sample();
        let encoded = encode(&table);
        let decoded = decode(&encoded).expect("decodes");
        assert_eq!(decoded.marks, table.marks);
        assert_eq!(decode(&encode(&MarksTable::default())).unwrap().len(), 0);
        for at in 0..encoded.len() {
            for bit in 0..8 {
                let mut damaged = encoded.clone();
                damaged[at] ^= 1 << bit;
                assert!(decode(&damaged).is_err(), "flip of bit {bit} at byte {at}");
            }
        }
        for length in 0..encoded.len() {
            assert!(decode(&encoded[..length]).is_err(), "cut at {length}");
        }
    }

    #[test]
    fn removes_follows_the_read_start_and_erased_keys_refuse_reading() {
        let snapshot = MarksSnapshot::new(sample());
        assert!(snapshot.removes(b"order-1", 41));
        assert!(!snapshot.removes(b"order-1", 42));
        assert!(!snapshot.removes(b"order-2", 0));
        assert!(snapshot.removes(b"\x00\xffbinary", 99));
        assert!(!snapshot.removes(b"\x00\xffbinary", 100));
        assert!(snapshot.is_erased(b"\x00\xffbinary"));
        assert!(!snapshot.is_erased(b"order-1"));
        assert_eq!(snapshot.for_reading(b"order-1").unwrap(), (42, 40));
        assert_eq!(snapshot.for_reading(b"other").unwrap(), (-1, -1));
        assert!(matches!(
            snapshot.for_reading(b"\x00\xffbinary"),
            Err(StorageError::StreamErased { .. })
        ));
        let pending = snapshot.pending_erasures();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].erase_before, 100);
    }
}
