//! The key map of one clean: every key of the dirty range and the offset of its last record,
//! exact (key bytes, not hashes, so two keys never collide into one), bounded in bytes by
//! `cleaner.dedupe_buffer_bytes`. A record is removed only if the map holds a later record of
//! its key, so a map that stops early (too many keys) is always safe: it covers a prefix of
//! the dirty range, and the clean's checkpoint stops where the map does.

use std::collections::HashMap;
use std::sync::Arc;

use tidelog_proto::batch::BatchHeader;

use super::super::error::StorageError;
use super::super::format::FILE_HEADER_BYTES;
use super::super::key_index::for_each_key;
use super::super::segment::{Segment, SCAN_CHUNK_BYTES};
use super::IoThrottle;

/// What one entry costs against the bound beyond its key bytes: the offset, and the hash
/// map's own slot and allocation overhead (an estimate; the bound is on the order of MiB).
const ENTRY_OVERHEAD_BYTES: usize = 48;

#[derive(Debug)]
pub(crate) struct KeyMap {
    latest: HashMap<Box<[u8]>, i64>,
    bytes: usize,
    bytes_max: usize,
}

impl KeyMap {
    pub fn new(bytes_max: usize) -> Self {
        Self {
            latest: HashMap::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// The offset of the last record of `key` the map saw.
    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Adds one batch's keyed records `(offset, key)` if its new keys fit in the bound;
    /// false (and nothing added) if they do not.
    fn add_batch(&mut self, records: &[(i64, Vec<u8>)]) -> bool {
        let mut new_bytes = 0usize;
        let mut new_keys: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
        for (_, key) in records {
            if !self.latest.contains_key(&key[..]) && new_keys.insert(&key[..]) {
                new_bytes = new_bytes.saturating_add(key.len() + ENTRY_OVERHEAD_BYTES);
            }
        }
        if self.bytes.saturating_add(new_bytes) > self.bytes_max {
            return false;
        }
        self.bytes += new_bytes;
        for (offset, key) in records {
            match self.latest.get_mut(&key[..]) {
                Some(latest) => *latest = (*latest).max(*offset),
                None => {
                    self.latest.insert(Box::from(&key[..]), *offset);
                }
            }
        }
        true
    }
}

/// The map over the dirty records of `segments` (offsets from `first_dirty` on), batch by
/// batch while the keys fit: the map and the offset after the last batch it covers (at most
/// the last segment's next offset). Control batches hold no keys of the log's own.
///
/// # Errors
/// `CleanCancelled` when the throttle says stop; the log's read errors.
pub(crate) fn build(
    segments: &[Arc<Segment>],
    first_dirty: i64,
    bytes_max: usize,
    decompressed_bytes_max: usize,
    throttle: &dyn IoThrottle,
) -> Result<(KeyMap, i64), StorageError> {
    let mut map = KeyMap::new(bytes_max);
    let mut covered = first_dirty;
    for segment in segments {
        if segment.next_offset() <= first_dirty {
            continue;
        }
        let start = if first_dirty > segment.base_offset {
            segment.position_for_offset(first_dirty)
        } else {
            FILE_HEADER_BYTES as u64
        };
        let mut scanner = segment.scanner(start, segment.end(), SCAN_CHUNK_BYTES);
        // Bounded: every step moves past one batch of a finite range.
        loop {
            let Some((_, header)) = segment.next_batch(&mut scanner)? else {
                break;
            };
            if header.next_offset() <= first_dirty {
                scanner.skip();
                continue;
            }
            let bytes = scanner
                .batch_bytes()
                .map_err(StorageError::io("reading", &segment.paths.log))?;
            if !throttle.acquire(bytes.len() as u64) {
                return Err(StorageError::CleanCancelled);
            }
            if !header.is_control() {
                let records = keyed_records_of(segment, &header, bytes, decompressed_bytes_max)?;
                if !map.add_batch(&records) {
                    return Ok((map, covered));
                }
            }
            covered = header.next_offset();
            scanner.skip();
        }
        covered = covered.max(segment.next_offset());
    }
    Ok((map, covered))
}

fn keyed_records_of(
    segment: &Segment,
    header: &BatchHeader,
    bytes: &[u8],
    decompressed_bytes_max: usize,
) -> Result<Vec<(i64, Vec<u8>)>, StorageError> {
    let mut records = Vec::new();
    for_each_key(header, bytes, decompressed_bytes_max, |offset_delta, _, key| {
        records.push((header.base_offset + i64::from(offset_delta), key.to_vec()));
    })
    .map_err(|source| StorageError::Corrupt {
        path: segment.paths.log.clone(),
        detail: format!("batch at offset {} does not decode", header.base_offset),
        source: Some(source),
    })?;
    Ok(records)
}
