//! Changes to an open partition: a new configuration takes effect without a reopen, and an
//! advanced log start hides the records below it, deletes the segments wholly below it,
//! survives a crash and a restart, and never passes the high watermark.

use super::super::sim_disk::{CrashMode, SimDisk};
use super::super::{CleanupPolicy, FlushPolicy, LogConfig, StorageError, LOG_START_HIGH_WATERMARK};
use super::{sim_open, simple_batch};

fn small_segments(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        retention_ms: -1,
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    }
}

/// Appends `batches` batches of 10 records of 100-byte values, one append each.
fn fill(log: &super::super::PartitionLog, batches: usize) {
    for index in 0..batches {
        log.append(&[simple_batch(10, index as i64, 100)], 0).unwrap();
    }
    log.sync().unwrap();
}

#[test]
fn a_smaller_segment_size_makes_later_appends_roll_without_a_reopen() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, small_segments(1 << 20));
    fill(&log, 10);
    assert_eq!(log.segment_count(), 1);
    log.alter_config(small_segments(4096)).unwrap();
    assert_eq!(log.config().segment_bytes, 4096);
    fill(&log, 10);
    assert!(log.segment_count() > 2, "{} segments", log.segment_count());
}

#[test]
fn a_retention_change_applies_at_the_next_maintenance_pass() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, small_segments(4096));
    fill(&log, 20);
    let before = log.segment_count();
    assert!(before > 2);
    assert_eq!(log.run_maintenance(1_000).unwrap().segments_deleted, 0);
    log.alter_config(LogConfig {
        retention_bytes: 1,
        ..small_segments(4096)
    })
    .unwrap();
    let outcome = log.run_maintenance(1_000).unwrap();
    assert_eq!(outcome.segments_deleted, before - 1);
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn retention_deletes_nothing_under_compact_alone_but_a_trim_still_removes_segments() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, small_segments(4096));
    fill(&log, 20);
    let before = log.segment_count();
    assert!(before > 3);
    let compact_only = LogConfig {
        retention_bytes: 1,
        retention_ms: 1,
        cleanup_policy: CleanupPolicy::Compact,
        ..small_segments(4096)
    };
    log.alter_config(compact_only.clone()).unwrap();
    let outcome = log.run_maintenance(1_000_000).unwrap();
    assert_eq!(
        outcome.segments_deleted, 0,
        "compact alone never retains by time or size"
    );
    assert_eq!(log.segment_count(), before);
    assert_eq!(log.log_start_offset(), 0);

    // A trim (DeleteRecords) removes whole segments below it in every policy.
    log.advance_log_start(55, 0).unwrap();
    log.run_maintenance(1_000_000).unwrap();
    let after_trim = log.segment_count();
    assert!(after_trim < before, "{after_trim} of {before} segments");
    assert_eq!(log.log_start_offset(), 55);

    // compact,delete retains as delete does.
    log.alter_config(LogConfig {
        cleanup_policy: CleanupPolicy::CompactDelete,
        ..compact_only
    })
    .unwrap();
    let outcome = log.run_maintenance(1_000_000).unwrap();
    assert_eq!(outcome.segments_deleted, after_trim - 1);
    assert_eq!(log.segment_count(), 1);
}

#[test]
fn the_flush_policy_of_an_open_log_cannot_change() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, small_segments(4096));
    let refused = log.alter_config(LogConfig {
        flush: FlushPolicy::Never,
        ..small_segments(4096)
    });
    assert!(
        matches!(refused, Err(StorageError::InvalidConfig(_))),
        "{refused:?}"
    );
    assert!(log
        .alter_config(LogConfig {
            segment_bytes: 10,
            ..small_segments(4096)
        })
        .is_err());
    assert_eq!(log.config().flush, FlushPolicy::Always);
}

#[test]
fn an_advanced_log_start_hides_earlier_records_deletes_whole_segments_and_survives_a_crash() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, small_segments(4096));
    fill(&log, 30);
    let high_watermark = log.high_watermark();
    assert_eq!(high_watermark, 300);
    let segments = log.segment_count();
    // Inside a batch and a middle segment.
    let start = log.advance_log_start(155, 0).unwrap();
    assert_eq!(start, 155);
    assert_eq!(log.log_start_offset(), 155);
    assert!(
        log.segment_count() < segments,
        "segments wholly below 155 are deleted"
    );
    assert!(matches!(
        log.read(154, 1 << 20),
        Err(StorageError::OffsetOutOfRange {
            log_start_offset: 155,
            ..
        })
    ));
    // A read at the log start returns the batch holding it, as Kafka does.
    let read = log.read(155, 1 << 20).unwrap();
    assert_eq!(read.log_start_offset, 155);
    let first = tidelog_proto::batch::BatchIter::new(read.records)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first.header().base_offset, 150);
    // Never backwards, never past the high watermark.
    assert_eq!(log.advance_log_start(100, 0).unwrap(), 155);
    assert!(matches!(
        log.advance_log_start(high_watermark + 1, 0),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        log.advance_log_start(-2, 0),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        log.offset_for_timestamp(0).unwrap().map(|(offset, _)| offset),
        Some(155)
    );
    drop(log);

    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, small_segments(4096));
    assert_eq!(log.log_start_offset(), 155);
    assert_eq!(log.high_watermark(), high_watermark);
    assert!(log.read(154, 1 << 20).is_err());
    // -1: up to the high watermark; appends carry on after it.
    assert_eq!(
        log.advance_log_start(LOG_START_HIGH_WATERMARK, 0).unwrap(),
        high_watermark
    );
    let next = log.append(&[simple_batch(1, 0, 10)], 0).unwrap();
    assert_eq!(next.base_offset, high_watermark);
    assert_eq!(next.log_start_offset, high_watermark);
    log.close().unwrap();
    drop(log);
    let log = sim_open(&disk, small_segments(4096));
    assert_eq!(log.log_start_offset(), high_watermark);
    assert_eq!(log.high_watermark(), high_watermark + 1);
}
