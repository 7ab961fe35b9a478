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

pub(super) fn small_segments() -> LogConfig {
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

// ---------------------------------------------------------------------------------------
// Compaction.

use std::collections::HashMap;

use tidelog_proto::batch::{Compression, NewRecord, ProducerStamp, RecordBatch, RecordBatchBuilder};

use super::super::{CleanOptions, CleanupPolicy, CompactionConfig, Direction, StorageError, Unthrottled};

pub(super) const NOW: i64 = 100_000;
pub(super) const OPTIONS: CleanOptions = CleanOptions {
    dedupe_bytes_max: 1 << 20,
};

/// One produced record: (offset, key, value; `None` is a tombstone).
pub(super) type Produced = (i64, Vec<u8>, Option<Vec<u8>>);

pub(super) fn kv_batch(
    records: &[(&[u8], Option<&[u8]>)],
    timestamp: i64,
    compression: Compression,
) -> RecordBatch {
    stamped_batch(records, timestamp, compression, ProducerStamp::default())
}

pub(super) fn stamped_batch(
    records: &[(&[u8], Option<&[u8]>)],
    timestamp: i64,
    compression: Compression,
    producer: ProducerStamp,
) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new().with_producer(producer);
    for (index, (key, value)) in records.iter().enumerate() {
        builder.push(&NewRecord {
            timestamp: timestamp + index as i64,
            key: Some(Bytes::copy_from_slice(key)),
            value: value.map(Bytes::copy_from_slice),
            headers: Vec::new(),
        });
    }
    let bytes = builder.build().expect("at least one record");
    let bytes = if compression == Compression::None {
        bytes
    } else {
        tidelog_proto::batch::compress_batch(&bytes, compression).expect("compresses")
    };
    let (batch, _) = RecordBatch::split_first(&bytes).expect("parses");
    batch
}

pub(super) fn compacted(segment_bytes: u64, compaction: CompactionConfig) -> LogConfig {
    LogConfig {
        segment_bytes,
        cleanup_policy: CleanupPolicy::Compact,
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..compaction
        },
        ..config(FlushPolicy::Never)
    }
}

/// Appends `rounds` single-batch records cycling over `keys` keys, every `tombstone_every`-th
/// a tombstone (0: none); returns what was produced.
pub(super) fn produce(
    log: &PartitionLog,
    rounds: usize,
    keys: usize,
    tombstone_every: usize,
    compression: Compression,
) -> Vec<Produced> {
    let mut produced = Vec::new();
    for round in 0..rounds {
        let key = format!("key-{}", round % keys).into_bytes();
        let value = format!("value-{round}-{}", "x".repeat(40)).into_bytes();
        let tombstone = tombstone_every > 0 && round % tombstone_every == tombstone_every - 1;
        let value = (!tombstone).then_some(value);
        let batch = kv_batch(&[(&key, value.as_deref())], 1_000 + round as i64, compression);
        let outcome = log.append(&[batch], 0).unwrap();
        produced.push((outcome.base_offset, key, value));
    }
    produced
}

/// Every record a reader sees from the log start: (offset, key, value), checking that batch
/// offsets only go up and every read from an offset starts with the first batch whose last
/// offset is at or past it.
pub(super) fn visible(log: &PartitionLog) -> Vec<Produced> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let high_watermark = log.high_watermark();
    for _ in 0..=high_watermark {
        if offset >= high_watermark {
            break;
        }
        let read = log.read(offset, 1 << 16).unwrap();
        let mut any = false;
        for batch in BatchIter::new(read.records) {
            let batch = batch.unwrap();
            let header = *batch.header();
            assert!(
                header.last_offset() >= offset,
                "batch {header:?} read from {offset}"
            );
            tidelog_proto::batch::filter::validate_filtered(&batch, 1 << 26).unwrap();
            for record in batch.records() {
                let record = record.unwrap();
                assert!(record.offset >= offset);
                out.push((
                    record.offset,
                    record.key.map(|key| key.to_vec()).unwrap_or_default(),
                    record.value.map(|value| value.to_vec()),
                ));
            }
            offset = header.next_offset();
            any = true;
        }
        assert!(any, "empty read at {offset}");
    }
    // (Appends running beside the reads may have moved the high watermark on.)
    assert!(offset >= high_watermark);
    out
}

/// What compaction of everything below `cleaned_end` leaves: the last record of each key in
/// that range and everything at or after it. Tombstones stay (their horizon is in the future).
pub(super) fn compacted_model(produced: &[Produced], cleaned_end: i64) -> Vec<Produced> {
    let mut latest: HashMap<&[u8], i64> = HashMap::new();
    for (offset, key, _) in produced.iter().filter(|(offset, ..)| *offset < cleaned_end) {
        latest.insert(key, *offset);
    }
    produced
        .iter()
        .filter(|(offset, key, _)| *offset >= cleaned_end || latest.get(&key[..]) == Some(offset))
        .cloned()
        .collect()
}

pub(super) fn closed_end(log: &PartitionLog) -> i64 {
    let segments = log.segments_for_test();
    segments[segments.len() - 2].next_offset()
}

#[test]
fn compaction_keeps_the_latest_record_of_every_key_in_order_and_offsets_unchanged() {
    for compression in [Compression::None, Compression::Lz4] {
        let dir = tempfile::tempdir().unwrap();
        let config = compacted(2048, CompactionConfig::default());
        let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        let produced = produce(&log, 200, 7, 0, compression);
        log.sync().unwrap();
        let cleaned_end = closed_end(&log);
        let segments_before = log.segment_count();
        let size_before = log.size_bytes();
        let outcome = log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
        assert!(outcome.segments_written > 0, "{outcome:?}");
        assert!(outcome.records_removed > 0, "{outcome:?}");
        assert_eq!(outcome.first_dirty_offset, cleaned_end);
        assert!(log.segment_count() <= segments_before);
        assert!(log.size_bytes() < size_before);
        let expected = compacted_model(&produced, cleaned_end);
        assert_eq!(visible(&log), expected, "{compression:?}");
        assert_eq!(log.high_watermark(), 200);
        // A read from a removed offset returns the next remaining batch.
        let removed = produced
            .iter()
            .map(|(offset, ..)| *offset)
            .find(|offset| !expected.iter().any(|(kept, ..)| kept == offset))
            .unwrap();
        // Even where it is a placeholder (holding no record) at a segment's end, the read
        // goes on to the next record, so a client that ignores lastOffsetDelta (kafkajs)
        // always makes progress.
        let next_kept = expected
            .iter()
            .map(|(offset, ..)| *offset)
            .find(|offset| *offset > removed);
        let read = log.read(removed, 1 << 20).unwrap();
        let batches: Vec<RecordBatch> = BatchIter::new(read.records).map(|batch| batch.unwrap()).collect();
        assert!(batches[0].header().last_offset() >= removed);
        assert!(batches
            .windows(2)
            .all(|pair| pair[0].header().next_offset() <= pair[1].header().base_offset));
        let first_record = batches
            .iter()
            .flat_map(|batch| batch.records())
            .map(|record| record.unwrap().offset)
            .find(|offset| *offset >= removed);
        assert_eq!(first_record, next_kept);
        // Appends go on at the old end; a restart finds the same log, with nothing to repair.
        assert_eq!(
            log.append(&[simple_batch(1, 5_000, 10)], 0).unwrap().base_offset,
            200
        );
        log.close().unwrap();
        drop(log);
        let verdict = verify_partition(dir.path(), "t/0".to_string());
        assert!(verdict.is_clean(), "{verdict:?}");
        let log = PartitionLog::open(dir.path(), config).unwrap();
        assert!(log.recovery_report().is_clean(), "{:?}", log.recovery_report());
        assert!(log.recovery_report().clean_shutdown);
        let again = visible(&log);
        assert_eq!(&again[..expected.len()], &expected[..]);
        // Cleaning again with nothing new changes nothing.
        let outcome = log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
        assert_eq!(outcome.segments_written, 0, "{outcome:?}");
        // More of the same keys: the next clean also merges the small cleaned segments.
        let more = produce(&log, 100, 7, 0, compression);
        log.sync().unwrap();
        let before = log.segment_count();
        let cleaned_end = closed_end(&log);
        log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
        assert!(
            log.segment_count() < before,
            "{} -> {}",
            before,
            log.segment_count()
        );
        let seen = visible(&log);
        let latest_keys: Vec<&Produced> = seen.iter().filter(|(offset, ..)| *offset < cleaned_end).collect();
        let mut keys: Vec<&Vec<u8>> = latest_keys.iter().map(|(_, key, _)| key).collect();
        keys.sort();
        let count = keys.len();
        keys.dedup();
        // At most one record per key below the cleaned end, besides the record appended
        // above with simple_batch (its own key).
        assert!(count - keys.len() <= 1, "{seen:?}");
        assert_eq!(
            seen.last().map(|(offset, ..)| *offset),
            more.last().map(|(offset, ..)| *offset)
        );
    }
}

#[test]
fn the_per_key_index_and_the_time_index_stay_exact_after_cleaning() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 128,
        ..compacted(2048, CompactionConfig::default())
    };
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    let produced = produce(&log, 150, 5, 0, Compression::None);
    log.sync().unwrap();
    let cleaned_end = closed_end(&log);
    log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
    let expected = compacted_model(&produced, cleaned_end);
    let check = |log: &PartitionLog, round: &str| {
        for key in 0..5 {
            let key = format!("key-{key}").into_bytes();
            let stream = log
                .read_stream(&key, 0, Direction::Forward, 1_000, 1 << 20)
                .unwrap();
            let offsets: Vec<i64> = stream.records.iter().map(|record| record.offset).collect();
            let want: Vec<i64> = expected
                .iter()
                .filter(|(_, k, _)| *k == key)
                .map(|(offset, ..)| *offset)
                .collect();
            assert_eq!(offsets, want, "{round}");
            let backward = log
                .read_stream(&key, i64::MAX, Direction::Backward, 1_000, 1 << 20)
                .unwrap();
            let mut back: Vec<i64> = backward.records.iter().map(|record| record.offset).collect();
            back.reverse();
            assert_eq!(back, want, "{round} backward");
        }
        // Timestamps are 1000 + offset: the first kept record at or after each time.
        for target in [0, 1_000, 1_003, 1_050, 1_100, 1_149, 1_150, 9_999] {
            let want = expected
                .iter()
                .map(|(offset, ..)| (*offset, 1_000 + *offset))
                .find(|(_, timestamp)| *timestamp >= target);
            assert_eq!(
                log.offset_for_timestamp(target).unwrap(),
                want,
                "{round} target {target}"
            );
        }
    };
    check(&log, "after the clean");
    log.close().unwrap();
    drop(log);
    let log = PartitionLog::open(dir.path(), config).unwrap();
    check(&log, "after a restart");
}

#[test]
fn a_tombstone_gets_a_delete_horizon_that_survives_a_restart_and_goes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let retention = 50_000;
    let config = compacted(
        2048,
        CompactionConfig {
            delete_retention_ms: retention,
            ..CompactionConfig::default()
        },
    );
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    // Every 4th record a tombstone: key-3 is deleted again and again, last at offset 119;
    // then key-0 only, so that tombstone lies in the closed, cleanable range.
    let mut produced = produce(&log, 120, 4, 4, Compression::None);
    produced.extend(produce(&log, 60, 1, 0, Compression::None));
    log.sync().unwrap();
    let tombstone = 119;
    assert!(closed_end(&log) > tombstone);
    let cleaned_end = closed_end(&log);
    log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
    assert_eq!(visible(&log), compacted_model(&produced, cleaned_end));
    let horizon_at = |log: &PartitionLog| {
        let read = log.read(tombstone, 1).unwrap();
        let batch = BatchIter::new(read.records).next().unwrap().unwrap();
        assert_eq!(batch.header().base_offset, tombstone);
        assert_eq!(batch.records().next().unwrap().unwrap().value, None);
        batch.header().delete_horizon_ms()
    };
    // Its batch carries the horizon (KIP-534): now + delete.retention.ms.
    assert_eq!(horizon_at(&log), Some(NOW + retention));
    log.close().unwrap();
    drop(log);
    // After a restart, more data; a clean before the horizon keeps the tombstone and the
    // horizon it had.
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    produce(&log, 60, 1, 0, Compression::None);
    log.sync().unwrap();
    let outcome = log.clean(NOW + retention - 1, &OPTIONS, &Unthrottled).unwrap();
    assert!(outcome.segments_written > 0, "{outcome:?}");
    assert_eq!(horizon_at(&log), Some(NOW + retention));
    // More again (something dirty), and a clean at the horizon removes it.
    produce(&log, 60, 1, 0, Compression::None);
    log.sync().unwrap();
    log.clean(NOW + retention, &OPTIONS, &Unthrottled).unwrap();
    let seen = visible(&log);
    assert!(!seen.iter().any(|(offset, ..)| *offset == tombstone), "{seen:?}");
    assert!(!seen.iter().any(|(_, key, _)| key == b"key-3"), "{seen:?}");
    // Other keys' latest records stay.
    for key in 1..3 {
        let key = format!("key-{key}").into_bytes();
        assert_eq!(seen.iter().filter(|(_, k, _)| *k == key).count(), 1, "{key:?}");
    }
}

fn producer(producer_id: i64, base_sequence: i32) -> ProducerStamp {
    ProducerStamp {
        producer_id,
        producer_epoch: 0,
        base_sequence,
    }
}

#[test]
fn producer_state_still_deduplicates_after_compaction_and_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let config = compacted(2048, CompactionConfig::default());
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    // Producer 7 writes key-a over and over: every batch but its last is superseded.
    let mut sent = Vec::new();
    for sequence in 0..60 {
        let value = format!("value-{sequence}-{}", "y".repeat(40));
        let batch = stamped_batch(
            &[(b"key-a", Some(value.as_bytes()))],
            1_000 + i64::from(sequence),
            Compression::None,
            producer(7, sequence),
        );
        log.append(std::slice::from_ref(&batch), NOW).unwrap();
        sent.push(batch);
    }
    // Then another producer's records fill a segment, so producer 7's last batch is closed
    // and cleanable too.
    for round in 0..40 {
        let batch = kv_batch(
            &[(b"key-b", Some(&[7u8; 60][..]))],
            2_000 + round,
            Compression::None,
        );
        log.append(&[batch], NOW).unwrap();
    }
    log.sync().unwrap();
    log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
    let last = sent.last().unwrap().clone();
    let retry = log.append(std::slice::from_ref(&last), NOW).unwrap();
    assert!(retry.duplicate, "{retry:?}");
    assert_eq!(retry.base_offset, 59);
    log.close().unwrap();
    drop(log);
    // A full replay of the headers: no snapshot to start from.
    for name in std::fs::read_dir(dir.path()).unwrap() {
        let name = name.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".snapshot") || name == "clean-shutdown.checkpoint" {
            std::fs::remove_file(dir.path().join(&name)).unwrap();
        }
    }
    let log = PartitionLog::open(dir.path(), config).unwrap();
    assert_eq!(log.producer_state_recovery().snapshot_loaded, None);
    let retry = log.append(std::slice::from_ref(&last), NOW).unwrap();
    assert!(
        retry.duplicate,
        "a retry of the last batch after compaction and a replay: {retry:?}"
    );
    assert_eq!(retry.base_offset, 59);
    // And the sequence continues.
    let next = stamped_batch(
        &[(b"key-a", Some(b"next"))],
        5_000,
        Compression::None,
        producer(7, 60),
    );
    let appended = log.append(&[next], NOW).unwrap();
    assert!(!appended.duplicate);
    assert_eq!(appended.base_offset, 100);
    let skipped = stamped_batch(
        &[(b"key-a", Some(b"gap"))],
        5_001,
        Compression::None,
        producer(7, 62),
    );
    assert!(
        log.append(&[skipped], NOW).is_err(),
        "out of order is still refused"
    );
}

#[test]
fn control_batches_are_kept_as_they_are() {
    use tidelog_proto::batch::{ATTRIBUTES_OFFSET as ATTRIBUTES_AT, CRC_OFFSET as CRC_AT};
    let dir = tempfile::tempdir().unwrap();
    let config = compacted(2048, CompactionConfig::default());
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    produce(&log, 10, 2, 0, Compression::None);
    // A control batch (a transaction marker), keyed like a Kafka marker.
    let marker = kv_batch(
        &[(b"\x00\x00\x00\x01", Some(b"\x00\x00\x00\x00\x00\x00"))],
        1_500,
        Compression::None,
    );
    let mut bytes = BytesMut::from(&marker.as_bytes()[..]);
    let attributes = i16::from_be_bytes([bytes[ATTRIBUTES_AT], bytes[ATTRIBUTES_AT + 1]]) | 0x20 | 0x10;
    bytes[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&bytes);
    bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    let (control, _) = RecordBatch::split_first(&bytes.freeze()).unwrap();
    let outcome = log.append(std::slice::from_ref(&control), 0).unwrap();
    produce(&log, 80, 2, 0, Compression::None);
    log.sync().unwrap();
    log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
    let read = log.read(outcome.base_offset, 1).unwrap();
    let first = BatchIter::new(read.records).next().unwrap().unwrap();
    assert_eq!(first.header().base_offset, outcome.base_offset);
    assert!(first.header().is_control());
    assert_eq!(
        first.as_bytes(),
        &super::stored(&control, outcome.base_offset),
        "byte for byte"
    );
    // The records around it were compacted (the marker's "key" is no key of the log's).
    assert!(visible(&log).len() < 91);
}

#[test]
fn a_key_map_too_small_for_the_range_cleans_a_prefix_and_the_next_clean_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = compacted(2048, CompactionConfig::default());
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    // 300 records over 100 keys: far more keys than the map below holds.
    let produced = produce(&log, 300, 100, 0, Compression::None);
    log.sync().unwrap();
    let dirty_end = closed_end(&log);
    let small = CleanOptions {
        dedupe_bytes_max: 20 * (6 + 48),
    };
    let outcome = log.clean(NOW, &small, &Unthrottled).unwrap();
    let covered = outcome.first_dirty_offset;
    assert!(
        covered > 0 && covered < dirty_end,
        "{outcome:?} (dirty end {dirty_end})"
    );
    assert_eq!(log.cleaner_stats(NOW).first_dirty_offset, covered);
    // Only records superseded inside the covered prefix went.
    assert_eq!(visible(&log), compacted_model(&produced, covered));
    // The checkpoint is persisted; the next clean continues from it.
    log.close().unwrap();
    drop(log);
    let log = PartitionLog::open(dir.path(), config).unwrap();
    assert_eq!(log.cleaner_stats(NOW).first_dirty_offset, covered);
    let outcome = log.clean(NOW, &small, &Unthrottled).unwrap();
    assert!(outcome.first_dirty_offset > covered, "{outcome:?}");
    // A map too small for even one batch's keys fails the clean and changes nothing.
    let before = visible(&log);
    let tiny = CleanOptions { dedupe_bytes_max: 10 };
    produce(&log, 40, 40, 0, Compression::None);
    log.sync().unwrap();
    let before_len = before.len();
    let result = log.clean(NOW, &tiny, &Unthrottled);
    assert!(
        matches!(result, Err(StorageError::CleanFailed { .. })),
        "{result:?}"
    );
    assert_eq!(&visible(&log)[..before_len], &before[..]);
    log.append(&[simple_batch(1, 9_000, 10)], 0).unwrap();
}

#[test]
fn a_cancelled_clean_leaves_the_old_segments_and_no_file_behind() {
    struct StopAfter(std::sync::atomic::AtomicU64);
    impl super::super::IoThrottle for StopAfter {
        fn acquire(&self, bytes: u64) -> bool {
            self.0
                .fetch_update(
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                    |left| left.checked_sub(bytes),
                )
                .is_ok()
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = compacted(2048, CompactionConfig::default());
    let log = PartitionLog::open(dir.path(), config).unwrap();
    let produced = produce(&log, 200, 7, 0, Compression::None);
    log.sync().unwrap();
    let throttle = StopAfter(std::sync::atomic::AtomicU64::new(6_000));
    let result = log.clean(NOW, &OPTIONS, &throttle);
    assert!(matches!(result, Err(StorageError::CleanCancelled)), "{result:?}");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names
            .iter()
            .any(|name| name.ends_with(".cleaned") || name == "cleaner-swap"),
        "{names:?}"
    );
    // Possibly some groups were swapped before the stop; never anything a reader may not see.
    let seen = visible(&log);
    for (offset, key, _) in &produced {
        let latest = produced
            .iter()
            .filter(|(_, k, _)| k == key)
            .map(|(o, ..)| *o)
            .max()
            .unwrap();
        if *offset == latest {
            assert!(
                seen.iter().any(|(o, ..)| o == offset),
                "the latest of {key:?} at {offset} is gone"
            );
        }
    }
    assert!(
        log.append(&[simple_batch(1, 9_000, 10)], 0).is_ok(),
        "not poisoned"
    );
}
