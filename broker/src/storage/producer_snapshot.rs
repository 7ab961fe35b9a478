//! The checksummed producer state snapshot file (layout in `docs/storage-format.md`), written
//! at segment roll and clean close, and the rebuild of a partition's producer state at open:
//! the newest valid snapshot plus the headers of every batch after it.

use std::path::Path;
use std::sync::Arc;

use super::disk::{read_exact_at, Disk};
use super::error::StorageError;
use super::format::{i64_at, u16_at, u32_at, FILE_HEADER_BYTES, TEMP_SUFFIX};
use super::producer_state::{
    BatchRange, ProducerEntry, ProducerStateMap, CRC_UNKNOWN, PRODUCER_BATCHES_RETAINED,
};
use super::segment::{ScanStep, Segment, SCAN_CHUNK_BYTES};

pub const SNAPSHOT_MAGIC: &[u8; 8] = b"TDLGPST1";
/// Version 2 added the producer-id high-water mark, broker append times and batch CRCs.
pub const SNAPSHOT_VERSION: u16 = 2;
pub const SNAPSHOT_EXTENSION: &str = "snapshot";
pub const SNAPSHOT_MAGIC_OFFSET: usize = 0;
pub const SNAPSHOT_VERSION_OFFSET: usize = SNAPSHOT_MAGIC_OFFSET + 8;
pub const SNAPSHOT_RESERVED_OFFSET: usize = SNAPSHOT_VERSION_OFFSET + 2;
pub const SNAPSHOT_NEXT_OFFSET_OFFSET: usize = SNAPSHOT_RESERVED_OFFSET + 2;
pub const SNAPSHOT_PRODUCER_ID_MAX_OFFSET: usize = SNAPSHOT_NEXT_OFFSET_OFFSET + 8;
pub const SNAPSHOT_PRODUCER_COUNT_OFFSET: usize = SNAPSHOT_PRODUCER_ID_MAX_OFFSET + 8;
pub const SNAPSHOT_HEADER_BYTES: usize = SNAPSHOT_PRODUCER_COUNT_OFFSET + 4;
/// Producer entry: id i64, epoch i16, batch count u16, last append time i64, then batches.
pub const SNAPSHOT_PRODUCER_BYTES: usize = 8 + 2 + 2 + 8;
/// Batch entry: first sequence i32, last sequence i32, base offset i64, last offset i64,
/// batch CRC u32.
pub const SNAPSHOT_BATCH_BYTES: usize = 4 + 4 + 8 + 8 + 4;
pub const SNAPSHOT_CRC_BYTES: usize = 4;
/// Largest snapshot file we read: bounds the buffer allocated for a file of unknown size.
pub const SNAPSHOT_BYTES_MAX: u64 = 64 << 20;
/// Snapshot files kept: the newest is what open loads; the one before is its fallback. Older
/// ones are deleted at roll (and every one below the log start by retention).
pub const SNAPSHOTS_RETAINED: usize = 2;

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

/// The snapshot file bytes for a state that covers every batch below `next_offset`.
/// Producers are written least recently used first, so a load restores the LRU order.
pub(crate) fn encode_snapshot(map: &ProducerStateMap, next_offset: i64) -> Vec<u8> {
    let mut producers: Vec<(&i64, &ProducerEntry)> = map.producers.iter().collect();
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
    out.extend_from_slice(&map.producer_id_max.to_be_bytes());
    // The map is bounded by producers_max, far below u32::MAX.
    out.extend_from_slice(&(producers.len() as u32).to_be_bytes());
    for (id, entry) in producers {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&entry.epoch.to_be_bytes());
        // At most PRODUCER_BATCHES_RETAINED.
        out.extend_from_slice(&(entry.batches.len() as u16).to_be_bytes());
        out.extend_from_slice(&entry.last_append_ms.to_be_bytes());
        for batch in &entry.batches {
            out.extend_from_slice(&batch.first_sequence.to_be_bytes());
            out.extend_from_slice(&batch.last_sequence.to_be_bytes());
            out.extend_from_slice(&batch.base_offset.to_be_bytes());
            out.extend_from_slice(&batch.last_offset.to_be_bytes());
            out.extend_from_slice(&batch.crc.to_be_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Checks and decodes a snapshot file. Returns the state and the offset it covers up to.
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<(ProducerStateMap, i64), SnapshotError> {
    let invalid = |reason: String| Err(SnapshotError::Invalid(reason));
    if bytes.len() < SNAPSHOT_VERSION_OFFSET + 2 + SNAPSHOT_CRC_BYTES {
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
    if version == 1 {
        // Version 1 holds client timestamps instead of broker append times and no batch CRCs:
        // the headers in the log have everything, so open rebuilds from them instead.
        return invalid("version 1 is superseded; rebuilding from batch headers".to_string());
    }
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    if bytes.len() < SNAPSHOT_HEADER_BYTES + SNAPSHOT_CRC_BYTES {
        return invalid(format!("snapshot is only {} bytes", bytes.len()));
    }
    let next_offset = i64_at(bytes, SNAPSHOT_NEXT_OFFSET_OFFSET);
    let producer_id_max = i64_at(bytes, SNAPSHOT_PRODUCER_ID_MAX_OFFSET);
    let count = u32_at(bytes, SNAPSHOT_PRODUCER_COUNT_OFFSET) as usize;
    let mut map = ProducerStateMap {
        producer_id_max: producer_id_max.max(-1),
        ..ProducerStateMap::default()
    };
    let mut at = SNAPSHOT_HEADER_BYTES;
    for _ in 0..count {
        if at + SNAPSHOT_PRODUCER_BYTES > body_end {
            return invalid("producer entry runs past the end".to_string());
        }
        let id = i64_at(bytes, at);
        let epoch = u16_at(bytes, at + 8) as i16;
        let batch_count = usize::from(u16_at(bytes, at + 10));
        let last_append_ms = i64_at(bytes, at + 12);
        at += SNAPSHOT_PRODUCER_BYTES;
        if !(1..=PRODUCER_BATCHES_RETAINED).contains(&batch_count) || id < 0 || id > map.producer_id_max {
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
                crc: u32_at(bytes, at + 24),
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
            last_append_ms,
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
    /// The highest producer id the partition has seen (-1: none).
    pub producer_id_max: i64,
}

/// Rebuilds the producer state of a recovered log: loads the newest valid snapshot at or below
/// the log's end and replays the headers of every batch after it (with `now_ms`, the open
/// time, as their append time: headers carry only client timestamps, and a rebuilt producer
/// must not look idle). Deletes snapshots that lie past the recovered end (the log lost what
/// they describe) or below the log start, and damaged ones, then syncs the directory so none
/// of them can come back after the log grows past them again. Returns the state and the
/// snapshot offsets kept, oldest first.
pub(crate) fn rebuild(
    disk: &dyn Disk,
    dir: &Path,
    segments: &[Arc<Segment>],
    producers_max: usize,
    now_ms: i64,
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
    let mut evicted = 0u64;
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
            // (A cleaned segment's batches may hold fewer records than their range, down to
            // a header-only placeholder: the cleaner keeps every producer's last batch so
            // that this replay rebuilds the same sequences.)
            let plausible = super::scan::record_count_ok(&header, segment.is_cleaned())
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
            // A batch the cleaner rewrote has a new CRC, so a client's retry of it (sent with
            // the original bytes) cannot be told from a conflict by CRC: its CRC is recorded
            // as unknown (0), and a retry matching its sequences is answered as a duplicate.
            let mut header = header;
            if segment.is_cleaned() {
                header.crc = CRC_UNKNOWN;
            }
            if map.apply(&header, header.base_offset, now_ms, producers_max) {
                evicted += 1;
            }
            recovery.batches_replayed += 1;
        }
    }
    if evicted > 0 {
        tracing::warn!(
            dir = %dir.display(),
            evicted,
            producers_max,
            "more producers in the log than the per-partition limit: the least recently used were forgotten"
        );
    }
    recovery.producers = map.len();
    recovery.producer_id_max = map.producer_id_max();
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
    Ok(decode_snapshot(&bytes))
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
    file.write_all_at(&encode_snapshot(map, next_offset), 0)
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

    // The same fixture headers as the producer-state tests.
    use crate::storage::producer_state::tests::header;

    #[test]
    fn layout_constants_match_the_documented_offsets() {
        assert_eq!(SNAPSHOT_HEADER_BYTES, 32);
        assert_eq!(SNAPSHOT_PRODUCER_BYTES, 20);
        assert_eq!(SNAPSHOT_BATCH_BYTES, 28);
    }

    #[test]
    fn snapshot_round_trips_and_every_flipped_byte_is_detected() {
        let mut map = ProducerStateMap::default();
        for (index, id) in [7i64, 3, 9].into_iter().enumerate() {
            for n in 0..7 {
                map.apply(
                    &header(id, 2, n * 10, 10),
                    (index as i64) * 1000 + i64::from(n) * 10,
                    5_000 + index as i64,
                    8,
                );
            }
        }
        let bytes = encode_snapshot(&map, 10_000);
        let (decoded, next_offset) = decode_snapshot(&bytes).unwrap();
        assert_eq!(next_offset, 10_000);
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded.producer_id_max(), 9);
        for id in [7, 3, 9] {
            assert_eq!(decoded.get(id).unwrap().batches, map.get(id).unwrap().batches);
            assert_eq!(
                decoded.get(id).unwrap().last_append_ms,
                map.get(id).unwrap().last_append_ms
            );
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(decode_snapshot(&damaged).is_err(), "flip at {at}");
        }
        assert!(decode_snapshot(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn version_one_snapshot_is_rejected_so_the_state_is_rebuilt_not_refused() {
        let mut bytes = encode_snapshot(&ProducerStateMap::default(), 0);
        bytes[SNAPSHOT_VERSION_OFFSET..SNAPSHOT_VERSION_OFFSET + 2].copy_from_slice(&1u16.to_be_bytes());
        let body_end = bytes.len() - SNAPSHOT_CRC_BYTES;
        let crc = crc32fast::hash(&bytes[..body_end]);
        bytes[body_end..].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(decode_snapshot(&bytes), Err(SnapshotError::Invalid(_))));
        bytes[SNAPSHOT_VERSION_OFFSET..SNAPSHOT_VERSION_OFFSET + 2].copy_from_slice(&3u16.to_be_bytes());
        let crc = crc32fast::hash(&bytes[..body_end]);
        bytes[body_end..].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            decode_snapshot(&bytes),
            Err(SnapshotError::UnsupportedVersion(3))
        ));
    }

    /// Bytes that pass the CRC but are garbage inside (a buggy writer, or a CRC collision)
    /// must be refused by the structural checks, never panic or allocate without bound.
    #[test]
    fn garbage_with_a_valid_crc_is_refused_without_panicking() {
        let mut rng = crate::storage::sim_disk::SplitMix(0x5EED);
        let mut map = ProducerStateMap::default();
        for id in 0..4 {
            map.apply(&header(id, 0, 0, 3), id * 10, 5, 8);
        }
        let valid = encode_snapshot(&map, 100);
        for round in 0..5_000 {
            let mut bytes = valid.clone();
            let body_end = bytes.len() - SNAPSHOT_CRC_BYTES;
            // Keep the magic and version so the structural checks are reached.
            for _ in 0..1 + rng.below(4) {
                let at = SNAPSHOT_NEXT_OFFSET_OFFSET
                    + rng.below((body_end - SNAPSHOT_NEXT_OFFSET_OFFSET) as u64) as usize;
                bytes[at] = rng.next() as u8;
            }
            if round % 3 == 0 {
                let cut = SNAPSHOT_NEXT_OFFSET_OFFSET
                    + rng.below((body_end - SNAPSHOT_NEXT_OFFSET_OFFSET) as u64) as usize;
                bytes.truncate(cut);
                bytes.extend_from_slice(&[0; SNAPSHOT_CRC_BYTES]);
            }
            let body_end = bytes.len() - SNAPSHOT_CRC_BYTES;
            let crc = crc32fast::hash(&bytes[..body_end]);
            bytes[body_end..].copy_from_slice(&crc.to_be_bytes());
            if let Ok((decoded, next_offset)) = decode_snapshot(&bytes) {
                for entry in decoded.producers.values() {
                    assert!((1..=PRODUCER_BATCHES_RETAINED).contains(&entry.batches.len()));
                    assert!(entry.batches.iter().all(|batch| batch.last_offset < next_offset));
                }
            }
        }
    }

    #[test]
    fn snapshot_file_names_round_trip() {
        assert_eq!(parse_snapshot_file_name(&snapshot_file_name(1234)), Some(1234));
        assert_eq!(parse_snapshot_file_name("00000000000000001234.log"), None);
        assert_eq!(parse_snapshot_file_name("1234.snapshot"), None);
    }
}
