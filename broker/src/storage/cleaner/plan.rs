//! What may be cleaned and what is due: from segment metadata only (no I/O), so
//! `cleaner_stats` is cheap enough for every Metadata request and scheduler pass.

use std::sync::Arc;

use super::super::config::LogConfig;
use super::super::segment::{Segment, NO_TIMESTAMP};
use super::{CleanDue, CleanerStats};

/// An erasure the cleaner still has to carry out (from the marks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Erasure {
    pub key: Vec<u8>,
    pub erase_before: i64,
    pub deadline_ms: i64,
}

/// How many of the oldest segments compaction may rewrite now: closed, sealed, and each
/// older than min.compaction.lag.ms (its newest record at least that old). Stops at the first
/// that is not: the cleanable range is always a prefix of the log, never the active segment.
pub(crate) fn cleanable_prefix(segments: &[Arc<Segment>], config: &LogConfig, now_ms: i64) -> usize {
    let closed = &segments[..segments.len().saturating_sub(1)];
    closed
        .iter()
        .take_while(|segment| {
            // A segment with fenced damage is never rewritten: its fenced offsets must keep
            // answering CORRUPT_MESSAGE, and its bytes stay for an operator.
            segment.is_sealed() && !segment.has_fences() && {
                let newest = segment.max_timestamp();
                newest == NO_TIMESTAMP
                    || now_ms.saturating_sub(newest) >= config.compaction.min_compaction_lag_ms
            }
        })
        .count()
}

/// The first dirty offset: the checkpoint, never below the log's first segment.
pub(crate) fn first_dirty_offset(segments: &[Arc<Segment>], checkpoint: Option<i64>) -> i64 {
    let start = segments.first().map_or(0, |segment| segment.base_offset);
    checkpoint.unwrap_or(start).max(start)
}

/// Whether compaction is due, whatever erasures say: `stats` without them.
pub(crate) fn compaction_due(
    segments: &[Arc<Segment>],
    checkpoint: Option<i64>,
    config: &LogConfig,
    now_ms: i64,
) -> bool {
    stats(segments, checkpoint, config, &[], now_ms).due.is_some()
}

/// The cleaner's view of one partition (see [`CleanerStats`]).
pub(crate) fn stats(
    segments: &[Arc<Segment>],
    checkpoint: Option<i64>,
    config: &LogConfig,
    erasures: &[Erasure],
    now_ms: i64,
) -> CleanerStats {
    let first_dirty = first_dirty_offset(segments, checkpoint);
    let closed = &segments[..segments.len().saturating_sub(1)];
    let cleanable = cleanable_prefix(segments, config, now_ms);
    let mut clean_bytes = 0u64;
    let mut dirty_bytes = 0u64;
    let mut oldest_dirty: Option<i64> = None;
    for (index, segment) in closed.iter().enumerate() {
        if segment.next_offset() <= first_dirty {
            clean_bytes += segment.end();
        } else if index < cleanable {
            dirty_bytes += segment.end();
            if oldest_dirty.is_none() && segment.max_timestamp() != NO_TIMESTAMP {
                oldest_dirty = Some(segment.max_timestamp());
            }
        }
    }
    let total = clean_bytes + dirty_bytes;
    let dirty_ratio = if total == 0 {
        0.0
    } else {
        dirty_bytes as f64 / total as f64
    };
    let compaction = &config.compaction;
    let compaction_due = if !config.cleanup_policy.compacts() || dirty_bytes == 0 {
        None
    } else if oldest_dirty
        .is_some_and(|newest| now_ms.saturating_sub(newest) > compaction.max_compaction_lag_ms)
    {
        Some(CleanDue::MaxLag)
    } else if dirty_ratio >= compaction.min_cleanable_dirty_ratio {
        Some(CleanDue::DirtyRatio)
    } else {
        None
    };
    // Erasures first: they have a deadline.
    let due = erasures
        .iter()
        .map(|erasure| erasure.deadline_ms)
        .min()
        .map(|deadline_ms| CleanDue::Erasure { deadline_ms })
        .or(compaction_due);
    CleanerStats {
        clean_bytes,
        dirty_bytes,
        dirty_ratio,
        first_dirty_offset: first_dirty,
        due,
        erasures_pending: u32::try_from(erasures.len()).unwrap_or(u32::MAX),
    }
}

/// Consecutive groups of `segments`, each to become one cleaned segment: as many as fit
/// `segment_bytes` of data together (as Kafka groups them) with offsets that fit one
/// segment's relative (u32) range. Every segment is in exactly one group, in order.
pub(crate) fn groups(segments: &[Arc<Segment>], segment_bytes: u64) -> Vec<&[Arc<Segment>]> {
    let header = super::super::format::FILE_HEADER_BYTES as u64;
    let mut groups = Vec::new();
    let mut start = 0;
    while start < segments.len() {
        let base = segments[start].base_offset;
        let mut bytes = segments[start].end();
        let mut end = start + 1;
        while let Some(next) = segments.get(end) {
            let grown = bytes + next.end().saturating_sub(header);
            let span_fits = u32::try_from(next.next_offset() - 1 - base).is_ok();
            if grown > segment_bytes || !span_fits {
                break;
            }
            bytes = grown;
            end += 1;
        }
        groups.push(&segments[start..end]);
        start = end;
    }
    groups
}
