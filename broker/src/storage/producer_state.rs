//! Idempotent producer state of one partition: per producer id, its epoch and the sequence
//! ranges and offsets of its last few batches, so a retried batch is recognised and answered
//! with its original offsets instead of being appended twice. Also the checksummed snapshot
//! file the state is saved to at segment roll and clean close (layout in
//! `docs/storage-format.md`), and the rules that rebuild the state from batch headers.
//!
//! The state is checked and changed only by `PartitionLog::append`, under the writer lock
//! (`check` before offsets are assigned, `apply` after the write succeeded), and rebuilt at
//! open from the newest valid snapshot plus the headers of the batches after it. Both paths
//! go through [`ProducerStateMap::apply`], so a rebuilt state equals the live one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tidelog_proto::batch::BatchHeader;

use super::disk::{read_exact_at, Disk};
use super::error::StorageError;
use super::format::{i64_at, u16_at, u32_at, FILE_HEADER_BYTES, TEMP_SUFFIX};
use super::segment::{ScanStep, Segment, SCAN_CHUNK_BYTES};

/// Batches remembered per producer, as in Kafka: a producer keeps at most this many batches
/// in flight per partition, so a retry is always one of them.
pub const PRODUCER_BATCHES_RETAINED: usize = 5;
/// Default bound on producers remembered per partition; past it the least recently used one is
/// forgotten.
pub const PRODUCERS_PER_PARTITION_MAX_DEFAULT: usize = 1024;
/// Default idle time after which a producer's state is dropped (Kafka's
/// `producer.id.expiration.ms` is 1 day; we keep a week, like retention).
pub const PRODUCER_IDLE_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"TDLGPST1";
pub const SNAPSHOT_VERSION: u16 = 1;
pub const SNAPSHOT_EXTENSION: &str = "snapshot";
pub const SNAPSHOT_MAGIC_OFFSET: usize = 0;
pub const SNAPSHOT_VERSION_OFFSET: usize = SNAPSHOT_MAGIC_OFFSET + 8;
pub const SNAPSHOT_RESERVED_OFFSET: usize = SNAPSHOT_VERSION_OFFSET + 2;
pub const SNAPSHOT_NEXT_OFFSET_OFFSET: usize = SNAPSHOT_RESERVED_OFFSET + 2;
pub const SNAPSHOT_PRODUCER_COUNT_OFFSET: usize = SNAPSHOT_NEXT_OFFSET_OFFSET + 8;
pub const SNAPSHOT_HEADER_BYTES: usize = SNAPSHOT_PRODUCER_COUNT_OFFSET + 4;
/// Producer entry: id i64, epoch i16, batch count u16, last timestamp i64, then batches.
pub const SNAPSHOT_PRODUCER_BYTES: usize = 8 + 2 + 2 + 8;
/// Batch entry: first sequence i32, last sequence i32, base offset i64, last offset i64.
pub const SNAPSHOT_BATCH_BYTES: usize = 4 + 4 + 8 + 8;
pub const SNAPSHOT_CRC_BYTES: usize = 4;
/// Largest snapshot file we read: bounds the buffer allocated for a file of unknown size.
pub const SNAPSHOT_BYTES_MAX: u64 = 64 << 20;

/// Producer limits of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerLimits {
    /// Producers remembered; a new one past this evicts the least recently used.
    pub producers_max: usize,
    /// A producer whose newest batch timestamp is older than this is forgotten by maintenance.
    pub producer_idle_ms: i64,
}

impl Default for ProducerLimits {
    fn default() -> Self {
        Self {
            producers_max: PRODUCERS_PER_PARTITION_MAX_DEFAULT,
            producer_idle_ms: PRODUCER_IDLE_MS_DEFAULT,
        }
    }
}

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchRange {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most [`PRODUCER_BATCHES_RETAINED`].
    pub batches: Vec<BatchRange>,
    /// maxTimestamp of the newest batch (from the batch, so a rebuild gives the same value).
    pub last_timestamp: i64,
    /// Recency for LRU eviction: a counter bumped per producer batch, not a clock.
    last_used: u64,
}

/// The verdict on one producer batch, before it is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// In sequence (or a producer we do not know): append it.
    Append,
    /// Already appended: here is where.
    Duplicate(BatchRange),
}

/// Why a producer batch is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        found: i32,
    },
    StaleEpoch {
        producer_id: i64,
        current: i16,
        found: i16,
    },
}

/// Kafka's sequence arithmetic: sequences wrap from `i32::MAX` to 0. Total for any input,
/// because headers read back from a damaged file reach it too: negative values count as 0.
pub(crate) fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    let sum = i64::from(sequence.max(0)) + i64::from(increment.max(0));
    // The remainder is below 2^31, so it fits in i32.
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

/// Per producer id, what the partition has appended from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerStateMap {
    producers: HashMap<i64, ProducerEntry>,
    clock: u64,
}

impl ProducerStateMap {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    #[cfg(test)]
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Decides what to do with a producer batch. `pending` holds the batches of the same
    /// append call already accepted (they must be seen as appended).
    pub fn check(&self, header: &BatchHeader, pending: &[BatchHeader]) -> Result<Check, Refusal> {
        let producer_id = header.producer_id;
        let base_sequence = header.base_sequence;
        let last_sequence = increment_sequence(base_sequence.max(0), header.last_offset_delta);
        // The producer's epoch and newest sequence, counting batches of this call.
        let mut current = self
            .producers
            .get(&producer_id)
            .map(|entry| (entry.epoch, entry.batches.last().map(|batch| batch.last_sequence)));
        for earlier in pending
            .iter()
            .filter(|earlier| earlier.producer_id == producer_id)
        {
            current = Some((
                earlier.producer_epoch,
                Some(increment_sequence(
                    earlier.base_sequence,
                    earlier.last_offset_delta,
                )),
            ));
        }
        let Some((epoch, newest)) = current else {
            // Unknown producer: Kafka (KIP-360) accepts any sequence, since its state may have
            // been dropped with old segments or by expiry.
            return if base_sequence < 0 {
                Err(Refusal::OutOfOrder {
                    producer_id,
                    expected: 0,
                    found: base_sequence,
                })
            } else {
                Ok(Check::Append)
            };
        };
        if header.producer_epoch < epoch {
            return Err(Refusal::StaleEpoch {
                producer_id,
                current: epoch,
                found: header.producer_epoch,
            });
        }
        if header.producer_epoch > epoch {
            // A new incarnation starts over at sequence 0.
            return if base_sequence == 0 {
                Ok(Check::Append)
            } else {
                Err(Refusal::OutOfOrder {
                    producer_id,
                    expected: 0,
                    found: base_sequence,
                })
            };
        }
        if let Some(entry) = self.producers.get(&producer_id) {
            if let Some(original) = entry
                .batches
                .iter()
                .find(|batch| batch.first_sequence == base_sequence && batch.last_sequence == last_sequence)
            {
                return Ok(Check::Duplicate(*original));
            }
        }
        let expected = newest.map_or(base_sequence, |newest| increment_sequence(newest, 1));
        if base_sequence == expected && base_sequence >= 0 {
            Ok(Check::Append)
        } else {
            Err(Refusal::OutOfOrder {
                producer_id,
                expected,
                found: base_sequence,
            })
        }
    }

    /// Records an appended producer batch (the live path after a successful write, and the
    /// rebuild path for every producer batch header after the snapshot). Evicts the least
    /// recently used producer if a new one would pass `producers_max`.
    pub fn apply(&mut self, header: &BatchHeader, base_offset: i64, producers_max: usize) {
        if header.producer_id < 0 {
            return;
        }
        self.clock += 1;
        let range = BatchRange {
            first_sequence: header.base_sequence,
            last_sequence: increment_sequence(header.base_sequence.max(0), header.last_offset_delta),
            base_offset,
            last_offset: base_offset.saturating_add(i64::from(header.last_offset_delta)),
        };
        if !self.producers.contains_key(&header.producer_id) && self.producers.len() >= producers_max.max(1) {
            self.evict_least_recently_used();
        }
        let clock = self.clock;
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: Vec::with_capacity(PRODUCER_BATCHES_RETAINED),
                last_timestamp: header.max_timestamp,
                last_used: clock,
            });
        if entry.epoch != header.producer_epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() >= PRODUCER_BATCHES_RETAINED {
            entry.batches.remove(0);
        }
        entry.batches.push(range);
        entry.last_timestamp = header.max_timestamp;
        entry.last_used = clock;
    }

    fn evict_least_recently_used(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, entry)| entry.last_used)
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            tracing::debug!(producer_id = id, "evicting least recently used producer state");
            self.producers.remove(&id);
        }
    }

    /// Forgets producers idle for longer than `idle_ms` and those whose every remembered batch
    /// lies below the log start (deleted by retention). Returns how many were removed.
    pub fn expire(&mut self, now_ms: i64, idle_ms: i64, log_start_offset: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| {
            let idle = now_ms.saturating_sub(entry.last_timestamp) > idle_ms;
            let deleted = entry
                .batches
                .last()
                .is_none_or(|batch| batch.last_offset < log_start_offset);
            !(idle || deleted)
        });
        before - self.producers.len()
    }

    /// Forgets producers whose batches all lie below the log start (after retention).
    pub fn remove_below(&mut self, log_start_offset: i64) {
        self.expire(i64::MIN, i64::MAX, log_start_offset);
    }

    /// The snapshot file bytes for a state that covers every batch below `next_offset`.
    /// Producers are written least recently used first, so a load restores the LRU order.
    pub fn encode_snapshot(&self, next_offset: i64) -> Vec<u8> {
        let mut producers: Vec<(&i64, &ProducerEntry)> = self.producers.iter().collect();
        producers.sort_by_key(|(_, entry)| entry.last_used);
        let batches: usize = producers.iter().map(|(_, entry)| entry.batches.len()).sum();
        let mut out = Vec::with_capacity(
            SNAPSHOT_HEADER_BYTES
                + producers.len() * SNAPSHOT_PRODUCER_BYTES
                + batches * SNAPSHOT_BATCH_BYTES
                + SNAPSHOT_CRC_BYTES,
        );
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&next_offset.to_be_bytes());
        // The map is bounded by producers_max, far below u32::MAX.
        out.extend_from_slice(&(producers.len() as u32).to_be_bytes());
        for (id, entry) in producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&entry.epoch.to_be_bytes());
            // At most PRODUCER_BATCHES_RETAINED.
            out.extend_from_slice(&(entry.batches.len() as u16).to_be_bytes());
            out.extend_from_slice(&entry.last_timestamp.to_be_bytes());
            for batch in &entry.batches {
                out.extend_from_slice(&batch.first_sequence.to_be_bytes());
                out.extend_from_slice(&batch.last_sequence.to_be_bytes());
                out.extend_from_slice(&batch.base_offset.to_be_bytes());
                out.extend_from_slice(&batch.last_offset.to_be_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Checks and decodes a snapshot file. Returns the state and the offset it covers up to.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(ProducerStateMap, i64), SnapshotError> {
        let invalid = |reason: String| Err(SnapshotError::Invalid(reason));
        if bytes.len() < SNAPSHOT_HEADER_BYTES + SNAPSHOT_CRC_BYTES {
            return invalid(format!("snapshot is only {} bytes", bytes.len()));
        }
        if &bytes[SNAPSHOT_MAGIC_OFFSET..SNAPSHOT_VERSION_OFFSET] != SNAPSHOT_MAGIC {
            return invalid("bad magic".to_string());
        }
        let body_end = bytes.len() - SNAPSHOT_CRC_BYTES;
        let stored = u32_at(bytes, body_end);
        let computed = crc32fast::hash(&bytes[..body_end]);
        if stored != computed {
            return invalid(format!(
                "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let version = u16_at(bytes, SNAPSHOT_VERSION_OFFSET);
        if version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let next_offset = i64_at(bytes, SNAPSHOT_NEXT_OFFSET_OFFSET);
        let count = u32_at(bytes, SNAPSHOT_PRODUCER_COUNT_OFFSET) as usize;
        let mut map = ProducerStateMap::default();
        let mut at = SNAPSHOT_HEADER_BYTES;
        for _ in 0..count {
            if at + SNAPSHOT_PRODUCER_BYTES > body_end {
                return invalid("producer entry runs past the end".to_string());
            }
            let id = i64_at(bytes, at);
            let epoch = u16_at(bytes, at + 8) as i16;
            let batch_count = usize::from(u16_at(bytes, at + 10));
            let last_timestamp = i64_at(bytes, at + 12);
            at += SNAPSHOT_PRODUCER_BYTES;
            if !(1..=PRODUCER_BATCHES_RETAINED).contains(&batch_count) || id < 0 {
                return invalid(format!("producer {id} has {batch_count} batches"));
            }
            if at + batch_count * SNAPSHOT_BATCH_BYTES > body_end {
                return invalid("batch entries run past the end".to_string());
            }
            let mut batches = Vec::with_capacity(PRODUCER_BATCHES_RETAINED);
            for _ in 0..batch_count {
                let batch = BatchRange {
                    first_sequence: u32_at(bytes, at) as i32,
                    last_sequence: u32_at(bytes, at + 4) as i32,
                    base_offset: i64_at(bytes, at + 8),
                    last_offset: i64_at(bytes, at + 16),
                };
                if batch.last_offset < batch.base_offset || batch.last_offset >= next_offset {
                    return invalid(format!("producer {id} has a batch at bad offsets {batch:?}"));
                }
                batches.push(batch);
                at += SNAPSHOT_BATCH_BYTES;
            }
            map.clock += 1;
            let entry = ProducerEntry {
                epoch,
                batches,
                last_timestamp,
                last_used: map.clock,
            };
            if map.producers.insert(id, entry).is_some() {
                return invalid(format!("producer {id} appears twice"));
            }
        }
        if at != body_end {
            return invalid(format!("{} bytes after the last producer", body_end - at));
        }
        Ok((map, next_offset))
    }
}

/// Why a snapshot file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SnapshotError {
    Invalid(String),
    UnsupportedVersion(u16),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Invalid(reason) => f.write_str(reason),
            SnapshotError::UnsupportedVersion(version) => write!(f, "unsupported snapshot version {version}"),
        }
    }
}

/// `<20-digit offset>.snapshot`.
pub(crate) fn snapshot_file_name(next_offset: i64) -> String {
    format!("{next_offset:020}.{SNAPSHOT_EXTENSION}")
}

pub(crate) fn parse_snapshot_file_name(name: &str) -> Option<i64> {
    let (stem, extension) = name.split_once('.')?;
    if extension != SNAPSHOT_EXTENSION || stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Snapshot files kept: the newest is what open loads; the one before is its fallback. Older
/// ones are deleted at roll (and every one below the log start by retention).
pub const SNAPSHOTS_RETAINED: usize = 2;

/// What open did to rebuild the producer state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateRecovery {
    /// Offset of the snapshot loaded; `None`: rebuilt from the log start.
    pub snapshot_loaded: Option<i64>,
    /// Snapshots not used (and deleted), with why.
    pub snapshots_rejected: Vec<(i64, String)>,
    /// Batch headers read after the snapshot.
    pub batches_replayed: u64,
    /// Damaged batch headers (impossible counts or sequences) passed over, not applied.
    pub headers_skipped: u64,
    pub producers: usize,
}

/// Rebuilds the producer state of a recovered log: loads the newest valid snapshot at or below
/// the log's end and replays the headers of every batch after it. Deletes snapshots that lie
/// past the recovered end (the log lost what they describe) or below the log start, and
/// damaged ones, then syncs the directory so none of them can come back after the log grows
/// past them again. Returns the state and the snapshot offsets kept, oldest first.
pub(crate) fn rebuild(
    disk: &dyn Disk,
    dir: &Path,
    segments: &[Arc<Segment>],
    producers_max: usize,
) -> Result<(ProducerStateMap, Vec<i64>, ProducerStateRecovery), StorageError> {
    let mut recovery = ProducerStateRecovery::default();
    let log_start_offset = segments.first().map_or(0, |segment| segment.base_offset);
    let next_offset = segments.last().map_or(0, |segment| segment.next_offset());
    let names = disk.list(dir).map_err(StorageError::io("listing", dir))?;
    let mut offsets: Vec<i64> = names
        .iter()
        .filter_map(|name| parse_snapshot_file_name(name))
        .collect();
    offsets.sort_unstable();
    let mut removed = false;
    let mut kept = Vec::new();
    let mut loaded: Option<(ProducerStateMap, i64)> = None;
    for &offset in offsets.iter().rev() {
        let reason = if offset > next_offset {
            Some(format!("past the end of the recovered log ({next_offset})"))
        } else if offset < log_start_offset {
            Some(format!("below the log start ({log_start_offset})"))
        } else if loaded.is_some() {
            None
        } else {
            match read_snapshot(disk, &dir.join(snapshot_file_name(offset)))? {
                Ok((map, covered)) if covered == offset => {
                    loaded = Some((map, offset));
                    None
                }
                Ok((_, covered)) => Some(format!("file name says offset {offset}, contents say {covered}")),
                Err(SnapshotError::UnsupportedVersion(version)) => {
                    return Err(StorageError::UnsupportedVersion {
                        path: dir.join(snapshot_file_name(offset)),
                        found: version,
                        supported: SNAPSHOT_VERSION,
                    })
                }
                Err(error) => Some(error.to_string()),
            }
        };
        match reason {
            Some(reason) => {
                tracing::warn!(dir = %dir.display(), offset, %reason, "discarding producer state snapshot");
                remove_file(disk, &dir.join(snapshot_file_name(offset)))?;
                recovery.snapshots_rejected.push((offset, reason));
                removed = true;
            }
            None => kept.push(offset),
        }
    }
    kept.reverse();
    if removed {
        disk.sync_dir(dir)
            .map_err(StorageError::io("syncing directory", dir))?;
    }
    let (mut map, from) = match loaded {
        Some((map, offset)) => {
            recovery.snapshot_loaded = Some(offset);
            (map, offset)
        }
        None => (ProducerStateMap::default(), log_start_offset),
    };
    for segment in segments {
        if segment.next_offset() <= from {
            continue;
        }
        let start = if from > segment.base_offset {
            segment.position_for_offset(from)
        } else {
            FILE_HEADER_BYTES as u64
        };
        // Steps over ranges recovery fenced as damaged.
        let mut scanner = segment.scanner(start, segment.end(), SCAN_CHUNK_BYTES);
        loop {
            let header = match scanner
                .next_header()
                .map_err(StorageError::io("reading", &segment.paths.log))?
            {
                ScanStep::End => break,
                ScanStep::Batch(_, header) => header,
                ScanStep::Invalid(reason) => {
                    // Recovery checked these bytes moments ago; anything else is corruption.
                    return Err(StorageError::corrupt(&segment.paths.log, reason));
                }
            };
            scanner.skip();
            if header.base_offset < from {
                continue;
            }
            // Sealed segments are trusted without a CRC scan, so a header can be damaged:
            // one that no producer could have written is skipped, never applied.
            let plausible = header.last_offset_delta >= 0
                && header.record_count == header.last_offset_delta.saturating_add(1)
                && (header.producer_id < 0 || (header.producer_epoch >= 0 && header.base_sequence >= 0));
            if !plausible {
                tracing::warn!(
                    log = %segment.paths.log.display(),
                    base_offset = header.base_offset,
                    "skipping a damaged batch header while rebuilding producer state"
                );
                recovery.headers_skipped += 1;
                continue;
            }
            map.apply(&header, header.base_offset, producers_max);
            recovery.batches_replayed += 1;
        }
    }
    map.remove_below(log_start_offset);
    recovery.producers = map.len();
    Ok((map, kept, recovery))
}

fn read_snapshot(
    disk: &dyn Disk,
    path: &Path,
) -> Result<Result<(ProducerStateMap, i64), SnapshotError>, StorageError> {
    let file = disk
        .open(path, false)
        .map_err(StorageError::io("opening", path))?;
    let length = file.len().map_err(StorageError::io("measuring", path))?;
    if length > SNAPSHOT_BYTES_MAX {
        return Ok(Err(SnapshotError::Invalid(format!(
            "{length} bytes is too large"
        ))));
    }
    let mut bytes = vec![0u8; length as usize];
    read_exact_at(&*file, &mut bytes, 0).map_err(StorageError::io("reading", path))?;
    Ok(ProducerStateMap::decode_snapshot(&bytes))
}

/// Writes a snapshot aside and renames it into place, so it is whole or absent. With `sync`
/// it is also fdatasync'ed (and the directory synced); at roll it is not: a snapshot lost or
/// torn by a crash fails its CRC or is missing, and open falls back to an older one.
pub(crate) fn write_snapshot(
    disk: &dyn Disk,
    dir: &Path,
    map: &ProducerStateMap,
    next_offset: i64,
    sync: bool,
) -> Result<(), StorageError> {
    let path = dir.join(snapshot_file_name(next_offset));
    let temp = dir.join(format!("{}{TEMP_SUFFIX}", snapshot_file_name(next_offset)));
    let file = disk
        .open(&temp, true)
        .map_err(StorageError::io("creating", &temp))?;
    file.set_len(0).map_err(StorageError::io("truncating", &temp))?;
    file.write_all_at(&map.encode_snapshot(next_offset), 0)
        .map_err(StorageError::io("writing", &temp))?;
    if sync {
        file.sync_data().map_err(StorageError::io("syncing", &temp))?;
    }
    disk.rename(&temp, &path)
        .map_err(StorageError::io("renaming", &temp))?;
    if sync {
        disk.sync_dir(dir)
            .map_err(StorageError::io("syncing directory", dir))?;
    }
    Ok(())
}

pub(crate) fn remove_snapshot(disk: &dyn Disk, dir: &Path, offset: i64) -> Result<(), StorageError> {
    remove_file(disk, &dir.join(snapshot_file_name(offset)))
}

fn remove_file(disk: &dyn Disk, path: &Path) -> Result<(), StorageError> {
    match disk.remove(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StorageError::io("removing", path)(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 1_000,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: records,
        }
    }

    #[test]
    fn layout_constants_match_the_documented_offsets() {
        assert_eq!(SNAPSHOT_HEADER_BYTES, 24);
        assert_eq!(SNAPSHOT_PRODUCER_BYTES, 20);
        assert_eq!(SNAPSHOT_BATCH_BYTES, 24);
    }

    #[test]
    fn sequences_wrap_at_i32_max_like_kafka() {
        assert_eq!(increment_sequence(5, 1), 6);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn wrapped_sequence_continues_in_order() {
        let mut map = ProducerStateMap::default();
        map.apply(&header(1, 0, i32::MAX - 1, 2), 0, 8);
        assert_eq!(map.check(&header(1, 0, 0, 1), &[]), Ok(Check::Append));
        assert!(map.check(&header(1, 0, 1, 1), &[]).is_err());
    }

    #[test]
    fn snapshot_round_trips_and_every_flipped_byte_is_detected() {
        let mut map = ProducerStateMap::default();
        for (index, id) in [7i64, 3, 9].into_iter().enumerate() {
            for n in 0..7 {
                map.apply(
                    &header(id, 2, n * 10, 10),
                    (index as i64) * 1000 + i64::from(n) * 10,
                    8,
                );
            }
        }
        let bytes = map.encode_snapshot(10_000);
        let (decoded, next_offset) = ProducerStateMap::decode_snapshot(&bytes).unwrap();
        assert_eq!(next_offset, 10_000);
        assert_eq!(decoded.len(), 3);
        for id in [7, 3, 9] {
            assert_eq!(decoded.get(id).unwrap().batches, map.get(id).unwrap().batches);
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(
                ProducerStateMap::decode_snapshot(&damaged).is_err(),
                "flip at {at}"
            );
        }
        assert!(ProducerStateMap::decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn snapshot_file_names_round_trip() {
        assert_eq!(parse_snapshot_file_name(&snapshot_file_name(1234)), Some(1234));
        assert_eq!(parse_snapshot_file_name("00000000000000001234.log"), None);
        assert_eq!(parse_snapshot_file_name("1234.snapshot"), None);
    }
}
