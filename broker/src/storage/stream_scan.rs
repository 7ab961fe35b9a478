//! A [`StreamLookup`] that scans the partition: correct, and as slow as a partition is long.
//! It stands in for the per-key index until that lands, and stays as the tests' reference.

use std::sync::Arc;

use tidelog_proto::batch::BatchIter;

use super::conditions::{StreamLookup, StreamRecord};
use super::error::StorageError;
use super::segment::Segment;

/// Bytes read per step of the scan.
const SCAN_CHUNK_BYTES: usize = 1 << 20;

/// Scans `segments` from `log_start_offset` to `end_offset` (exclusive), unsynced bytes
/// included: used under the writer lock, where the page cache holds every earlier append.
pub(crate) struct ScanLookup<'a> {
    pub segments: &'a [Arc<Segment>],
    pub log_start_offset: i64,
    pub end_offset: i64,
}

impl ScanLookup<'_> {
    /// Every record of `key` with offset > `after`, oldest first, at most `limit`.
    fn scan(&self, key: &[u8], after: i64, limit: usize) -> Result<Vec<StreamRecord>, StorageError> {
        let mut found = Vec::new();
        let mut offset = self.log_start_offset.max(after.saturating_add(1));
        let first = self
            .segments
            .partition_point(|segment| segment.base_offset <= offset)
            .saturating_sub(1);
        for segment in &self.segments[first..] {
            // Each read returns at least one batch ending past `offset`, so the loop moves on
            // every round and ends at the segment's end.
            while offset < self.end_offset.min(segment.next_offset()) {
                let Some(bytes) = segment.read(offset, SCAN_CHUNK_BYTES, self.end_offset)? else {
                    break;
                };
                let mut moved = false;
                for batch in BatchIter::new(bytes) {
                    let batch = batch.map_err(|error| StorageError::Corrupt {
                        path: segment.paths.log.clone(),
                        detail: "a stored batch did not parse during a stream scan".to_string(),
                        source: Some(error),
                    })?;
                    for record in batch.records() {
                        let record = record.map_err(|error| StorageError::Corrupt {
                            path: segment.paths.log.clone(),
                            detail: "a stored record did not decode during a stream scan".to_string(),
                            source: Some(error),
                        })?;
                        if record.offset < offset || record.key.as_deref() != Some(key) {
                            continue;
                        }
                        if found.len() == limit {
                            return Ok(found);
                        }
                        found.push(StreamRecord {
                            offset: record.offset,
                            timestamp: record.timestamp,
                            key: record.key.unwrap_or_default(),
                            value: record.value,
                            headers: record
                                .headers
                                .into_iter()
                                .map(|header| (header.key, header.value))
                                .collect(),
                        });
                    }
                    let next = batch.header().next_offset();
                    if next > offset {
                        offset = next;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        Ok(found)
    }
}

impl StreamLookup for ScanLookup<'_> {
    fn last_offset(&mut self, key: &[u8]) -> Result<Option<i64>, StorageError> {
        Ok(self.scan(key, -1, usize::MAX)?.last().map(|record| record.offset))
    }

    fn records_after(
        &mut self,
        key: &[u8],
        after: i64,
        limit: usize,
    ) -> Result<Vec<StreamRecord>, StorageError> {
        self.scan(key, after, limit)
    }
}
