//! `PartitionLog::read`: whole batches from an offset, through the segment list a reader
//! snapshots (see the concurrency notes in `log.rs`). A child of `log` so it shares the
//! log's private state.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::super::error::StorageError;
use super::{PartitionLog, ReadOutcome};

impl PartitionLog {
    /// Whole batches starting with the batch that contains `offset`, up to `max_bytes` (at
    /// least one whole batch if any exists at `offset`), never at or past the high watermark.
    /// `offset == high_watermark` gives empty records.
    ///
    /// # Errors
    /// `OffsetOutOfRange` if `offset` is below the log start or above the high watermark;
    /// `Corrupt` if the data file does not hold batches where the index says.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadOutcome, StorageError> {
        let inner = &*self.inner;
        let high_watermark = inner.high_watermark.load(Ordering::Acquire);
        let segments = inner.segments_snapshot();
        let log_start_offset = segments
            .first()
            .map_or(high_watermark, |segment| segment.base_offset)
            .max(inner.log_start_floor.load(Ordering::Acquire));
        // Retention or a trim may have moved past a high watermark loaded just before; log
        // start never passes the true one.
        let high_watermark = high_watermark.max(log_start_offset);
        if offset < log_start_offset || offset > high_watermark {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start_offset,
                high_watermark,
            });
        }
        let mut outcome = ReadOutcome {
            records: Bytes::new(),
            high_watermark,
            log_start_offset,
        };
        if offset == high_watermark {
            return Ok(outcome);
        }
        let first = segments
            .partition_point(|segment| segment.base_offset <= offset)
            .saturating_sub(1);
        // Usually one segment read answers. In a cleaned segment, what it returns may hold no
        // record at or after `offset` (placeholders, or a rewritten batch whose later records
        // went): then the read goes on after the last batch returned, in the same segment or
        // the next, so that every read lets a client that ignores lastOffsetDelta (kafkajs)
        // make progress. Offsets stay in order and nothing is skipped.
        let mut gathered: Option<bytes::BytesMut> = None;
        let mut from = offset;
        let mut index = first;
        // Bounded: every step moves past at least one batch or one segment.
        for _ in 0..super::clean::READ_STEPS_MAX {
            let Some(segment) = segments.get(index) else {
                break;
            };
            if segment.base_offset >= high_watermark || from >= high_watermark {
                break;
            }
            let budget = gathered
                .as_ref()
                .map_or(max_bytes, |so_far| max_bytes.saturating_sub(so_far.len()));
            let records = match segment.read(from.max(segment.base_offset), budget, high_watermark)? {
                Some(records) if !records.is_empty() => records,
                _ => {
                    index += 1;
                    continue;
                }
            };
            // Outside a cleaned segment every batch holds records for its whole range: what a
            // read returns always holds one at or after `offset` (no walk on the hot path).
            let (progress, next) = if segment.is_cleaned() {
                super::clean::progress_in(&records, offset, true)
            } else {
                (true, from)
            };
            if gathered.is_none() && progress {
                outcome.records = records;
                break;
            }
            let so_far = gathered.get_or_insert_with(bytes::BytesMut::new);
            so_far.extend_from_slice(&records);
            if progress {
                break;
            }
            // (A `next` that did not move would mean batches that did not parse: go on to the
            // next segment rather than read them again.)
            if next <= from || next >= segment.next_offset() {
                index += 1;
            }
            from = from.max(next);
        }
        if let Some(records) = gathered {
            outcome.records = records.freeze();
        }
        Ok(outcome)
    }
}
