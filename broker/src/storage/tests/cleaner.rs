//! Log cleaning: cleaned segments (gaps, placeholders) read, recover and verify; compaction
//! keeps the latest record of every key, order and offsets; the swap is crash-safe.

use bytes::{Bytes, BytesMut};
use tidelog_proto::batch::{
    compute_crc, peek_batch_bytes, BatchHeader, BatchIter, ATTRIBUTES_OFFSET, BATCH_HEADER_BYTES,
    BATCH_LENGTH_OFFSET, CRC_OFFSET, LOG_OVERHEAD_BYTES, RECORD_COUNT_OFFSET,
};

use super::super::format::{
    encode_file_header_with_flags, FileKind, FILE_HEADER_BYTES, LOG_FLAG_CLEANED, LOG_FLAG_SEALED,
};
use super::super::{verify_partition, FlushPolicy, LogConfig, PartitionLog};
use super::{config, os_path, simple_batch};

/// The batches of a data file: (start, bytes).
pub(super) fn file_batches(file: &[u8]) -> Vec<(usize, Bytes)> {
    let mut out = Vec::new();
    let mut at = FILE_HEADER_BYTES;
    while let Ok(Some(total)) = peek_batch_bytes(&file[at..]) {
        if at + total > file.len() {
            break;
        }
        out.push((at, Bytes::copy_from_slice(&file[at..at + total])));
        at += total;
    }
    out
}

/// A header-only placeholder of `batch`: same offsets, producer fields and timestamps, no
/// records, no compression, CRC recomputed (what the batch filter writes when every record
/// goes and the batch must stay).
pub(super) fn placeholder(batch: &[u8]) -> Bytes {
    let mut out = BytesMut::from(&batch[..BATCH_HEADER_BYTES]);
    let length = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
    out[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    out[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&0i32.to_be_bytes());
    let attributes = i16::from_be_bytes([out[ATTRIBUTES_OFFSET], out[ATTRIBUTES_OFFSET + 1]]) & !0x07;
    out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        ..config(FlushPolicy::Never)
    }
}

/// Writes segment 0 as the cleaner would: its first batch kept, its second removed (a gap),
/// its third a placeholder, the rest kept; header flags `flags`; indexes and `.keys` removed
/// (recovery rebuilds them). Returns (removed batch's base offset, placeholder's base offset).
fn hand_clean_first_segment(dir: &std::path::Path, flags: u16) -> (i64, i64) {
    let path = os_path(dir, 0, "log");
    let file = std::fs::read(&path).unwrap();
    let batches = file_batches(&file);
    assert!(batches.len() >= 4, "{} batches", batches.len());
    let mut out = encode_file_header_with_flags(FileKind::Log, 0, flags).to_vec();
    out.extend_from_slice(&batches[0].1);
    out.extend_from_slice(&placeholder(&batches[2].1));
    for (_, batch) in &batches[3..] {
        out.extend_from_slice(batch);
    }
    std::fs::write(&path, &out).unwrap();
    for extension in ["index", "timeindex", "keys"] {
        let _ = std::fs::remove_file(os_path(dir, 0, extension));
    }
    let base = |index: usize| BatchHeader::parse(&batches[index].1).unwrap().base_offset;
    (base(1), base(2))
}

fn filled_log(dir: &std::path::Path) -> PartitionLog {
    let log = PartitionLog::open(dir, small_segments()).unwrap();
    for round in 0..20 {
        log.append(&[simple_batch(1, round, 100)], 0).unwrap();
    }
    assert!(log.segment_count() >= 3);
    log.close().unwrap();
    log
}

#[test]
fn a_cleaned_segment_with_gaps_and_placeholders_recovers_reads_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    drop(filled_log(dir.path()));
    let (removed, placeholder_at) = hand_clean_first_segment(dir.path(), LOG_FLAG_SEALED | LOG_FLAG_CLEANED);
    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    let report = log.recovery_report();
    assert!(report.fenced.is_empty(), "{report:?}");
    assert!(report.quarantined.is_empty(), "{report:?}");
    assert_eq!(log.high_watermark(), 20);
    // A read from the removed offset returns the next remaining batch: the placeholder.
    let read = log.read(removed, 1 << 20).unwrap();
    let first = BatchIter::new(read.records).next().unwrap().unwrap();
    assert_eq!(first.header().base_offset, placeholder_at);
    assert_eq!(first.header().record_count, 0);
    // Every offset from the start reads: the batches run on, skipping the gap.
    let mut offset = 0;
    let mut seen = Vec::new();
    for _ in 0..40 {
        if offset >= log.high_watermark() {
            break;
        }
        let read = log.read(offset, 1 << 20).unwrap();
        for batch in BatchIter::new(read.records) {
            let batch = batch.unwrap();
            seen.push(batch.header().base_offset);
            offset = batch.header().next_offset();
        }
    }
    assert_eq!(offset, 20);
    assert!(!seen.contains(&removed), "{seen:?}");
    assert!(seen.contains(&placeholder_at), "{seen:?}");
    // Appends continue after the old end.
    assert_eq!(log.append(&[simple_batch(1, 99, 10)], 0).unwrap().base_offset, 20);
    log.close().unwrap();
    drop(log);
    let verdict = verify_partition(dir.path(), "t/0".to_string());
    assert!(verdict.is_clean(), "{verdict:?}");
}

#[test]
fn gaps_and_placeholders_without_the_cleaned_flag_are_still_damage() {
    let dir = tempfile::tempdir().unwrap();
    drop(filled_log(dir.path()));
    let (removed, _) = hand_clean_first_segment(dir.path(), LOG_FLAG_SEALED);
    let verdict = verify_partition(dir.path(), "t/0".to_string());
    assert!(!verdict.is_clean(), "{verdict:?}");
    let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
    let report = log.recovery_report();
    assert!(
        report.fenced.iter().any(|fence| fence.first_offset <= removed),
        "{report:?}"
    );
    assert_eq!(log.high_watermark(), 20, "nothing cut");
}

#[test]
fn a_cleaned_segment_whose_header_is_damaged_keeps_its_flag_when_repaired() {
    let dir = tempfile::tempdir().unwrap();
    drop(filled_log(dir.path()));
    let (removed, placeholder_at) = hand_clean_first_segment(dir.path(), LOG_FLAG_SEALED | LOG_FLAG_CLEANED);
    let path = os_path(dir.path(), 0, "log");
    let mut file = std::fs::read(&path).unwrap();
    file[3] ^= 0xff;
    std::fs::write(&path, &file).unwrap();
    for round in 0..2 {
        let log = PartitionLog::open(dir.path(), small_segments()).unwrap();
        let report = log.recovery_report();
        assert!(report.fenced.is_empty(), "round {round}: {report:?}");
        let read = log.read(removed, 1).unwrap();
        let first = BatchIter::new(read.records).next().unwrap().unwrap();
        assert_eq!(first.header().base_offset, placeholder_at);
        log.close().unwrap();
    }
    let verdict = verify_partition(dir.path(), "t/0".to_string());
    assert!(verdict.is_clean(), "{verdict:?}");
}

#[test]
fn cleaner_stats_count_closed_cleanable_bytes_as_dirty_and_say_what_is_due() {
    use super::super::{CleanDue, CleanupPolicy, CompactionConfig};
    let dir = tempfile::tempdir().unwrap();
    let compacted = |compaction: CompactionConfig| LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        compaction,
        ..small_segments()
    };
    let log = PartitionLog::open(dir.path(), compacted(CompactionConfig::default())).unwrap();
    for round in 0..20 {
        log.append(&[simple_batch(1, 1_000 + round, 100)], 0).unwrap();
    }
    log.sync().unwrap();
    let segments = log.segments_for_test();
    let closed_bytes: u64 = segments[..segments.len() - 1]
        .iter()
        .map(|segment| segment.end())
        .sum();
    let stats = log.cleaner_stats(10_000);
    assert_eq!(stats.clean_bytes, 0);
    assert_eq!(stats.dirty_bytes, closed_bytes);
    assert_eq!(stats.dirty_ratio, 1.0);
    assert_eq!(stats.first_dirty_offset, 0);
    assert_eq!(stats.due, Some(CleanDue::DirtyRatio));
    assert_eq!(stats.erasures_pending, 0);
    // min.compaction.lag.ms keeps every segment: nothing is dirty yet.
    let lagging = CompactionConfig {
        min_compaction_lag_ms: 1_000_000,
        ..CompactionConfig::default()
    };
    log.alter_config(compacted(lagging)).unwrap();
    let stats = log.cleaner_stats(10_000);
    assert_eq!((stats.dirty_bytes, stats.due), (0, None));
    // max.compaction.lag.ms passed: due whatever the ratio.
    let overdue = CompactionConfig {
        min_cleanable_dirty_ratio: 1.0,
        max_compaction_lag_ms: 100,
        ..CompactionConfig::default()
    };
    log.alter_config(compacted(overdue)).unwrap();
    assert_eq!(log.cleaner_stats(10_000).due, Some(CleanDue::MaxLag));
    // The delete policy never compacts.
    log.alter_config(small_segments()).unwrap();
    let stats = log.cleaner_stats(10_000);
    assert_eq!(stats.dirty_bytes, closed_bytes);
    assert_eq!(stats.due, None);
}
