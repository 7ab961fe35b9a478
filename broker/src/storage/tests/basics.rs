//! Behaviour on the real filesystem: appends, reads, rolls, timestamps, retention, close.

use std::sync::Arc;

use tidelog_proto::batch::BatchIter;

use super::super::{FlushPolicy, LogConfig, PartitionLog, StorageError};
use super::{batch, config, os_path, read_all, simple_batch, stored};

#[test]
fn appends_get_consecutive_offsets_and_read_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(FlushPolicy::Never)).unwrap();
    let first = simple_batch(3, 1000, 10);
    let second = simple_batch(2, 2000, 10);
    let outcome = log.append(&[first.clone(), second.clone()], 5000).unwrap();
    assert_eq!(
        (outcome.base_offset, outcome.last_offset, outcome.log_start_offset),
        (0, 4, 0)
    );
    let third = simple_batch(1, 3000, 10);
    let outcome = log.append(std::slice::from_ref(&third), 5000).unwrap();
    assert_eq!((outcome.base_offset, outcome.last_offset), (5, 5));
    assert_eq!(log.high_watermark(), 6);

    let read = log.read(0, 1 << 20).unwrap();
    let expected = [stored(&first, 0), stored(&second, 3), stored(&third, 5)].concat();
    assert_eq!(&read.records[..], &expected[..]);
    assert_eq!((read.high_watermark, read.log_start_offset), (6, 0));

    // An offset inside a batch returns that whole batch.
    let read = log.read(4, 1 << 20).unwrap();
    assert_eq!(
        &read.records[..],
        &[stored(&second, 3), stored(&third, 5)].concat()[..]
    );
}

#[test]
fn read_returns_at_least_one_whole_batch_and_respects_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(FlushPolicy::Never)).unwrap();
    let big = simple_batch(4, 0, 500);
    let small = simple_batch(1, 0, 5);
    log.append(&[big.clone(), small.clone(), small.clone()], 0)
        .unwrap();
    // max_bytes smaller than the first batch: still the whole first batch, nothing more.
    let read = log.read(0, 10).unwrap();
    assert_eq!(&read.records[..], &stored(&big, 0)[..]);
    // Room for the first two but not the third.
    let budget = big.len() + small.len() + small.len() - 1;
    let read = log.read(0, budget).unwrap();
    assert_eq!(
        &read.records[..],
        &[stored(&big, 0), stored(&small, 4)].concat()[..]
    );
}

#[test]
fn reading_at_the_high_watermark_is_empty_and_past_it_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(FlushPolicy::Never)).unwrap();
    assert!(log.read(0, 100).unwrap().records.is_empty());
    log.append(&[simple_batch(2, 0, 1)], 0).unwrap();
    assert!(log.read(2, 100).unwrap().records.is_empty());
    match log.read(3, 100) {
        Err(StorageError::OffsetOutOfRange {
            requested: 3,
            log_start_offset: 0,
            high_watermark: 2,
        }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert!(matches!(
        log.read(-1, 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn small_segments_roll_and_reads_cross_segment_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        ..config(FlushPolicy::Never)
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    let mut expected = Vec::new();
    let mut next = 0;
    for round in 0..40 {
        let batch = simple_batch(1 + round % 3, round as i64 * 10, 100);
        let outcome = log.append(std::slice::from_ref(&batch), 0).unwrap();
        assert_eq!(outcome.base_offset, next);
        expected.push(stored(&batch, next));
        next = outcome.last_offset + 1;
    }
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    assert!(os_path(dir.path(), 0, "log").exists());
    assert_eq!(&read_all(&log, 700)[..], &expected.concat()[..]);
    // Every offset reads back starting with the batch that contains it.
    for offset in 0..next {
        let read = log.read(offset, 1).unwrap();
        let first = BatchIter::new(read.records).next().unwrap().unwrap();
        assert!(first.header().base_offset <= offset && offset <= first.header().last_offset());
    }
}

#[test]
fn one_append_larger_than_a_segment_is_refused_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1024,
        ..config(FlushPolicy::Never)
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    let result = log.append(&[simple_batch(2, 0, 600)], 0);
    assert!(
        matches!(result, Err(StorageError::BatchTooLarge { .. })),
        "{result:?}"
    );
    assert_eq!(log.high_watermark(), 0);
    assert_eq!(log.append(&[simple_batch(1, 0, 10)], 0).unwrap().base_offset, 0);
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after_the_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 64,
        ..config(FlushPolicy::Never)
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    // Timestamps out of order inside batches, as producers may send them.
    let mut records = Vec::new(); // (offset, timestamp)
    let mut offset = 0;
    for round in 0..30i64 {
        let timestamps = [round * 100 + 50, round * 100 + 10, round * 100 + 90];
        log.append(&[batch(&timestamps, 40, round as u8)], 0).unwrap();
        for timestamp in timestamps {
            records.push((offset, timestamp));
            offset += 1;
        }
    }
    assert!(log.segment_count() > 3);
    for target in [-5, 0, 10, 11, 50, 51, 90, 91, 1234, 2950, 2990, 2991, 5000] {
        let expected = records
            .iter()
            .find(|(_, timestamp)| *timestamp >= target)
            .copied();
        assert_eq!(
            log.offset_for_timestamp(target).unwrap(),
            expected,
            "target {target}"
        );
    }
}

#[test]
fn subscribers_see_the_high_watermark_move() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(FlushPolicy::Never)).unwrap();
    let mut high_watermark = log.subscribe();
    assert_eq!(*high_watermark.borrow_and_update(), 0);
    log.append(&[simple_batch(3, 0, 1)], 0).unwrap();
    assert!(high_watermark.has_changed().unwrap());
    assert_eq!(*high_watermark.borrow_and_update(), 3);
}

#[tokio::test]
async fn under_always_data_is_visible_only_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(FlushPolicy::Always)).unwrap();
    let mut high_watermark = log.subscribe();
    high_watermark.borrow_and_update();
    let outcome = log.append(&[simple_batch(2, 0, 1)], 0).unwrap();
    assert_eq!(log.high_watermark(), 0, "unsynced data must not be visible");
    assert!(log.read(0, 100).unwrap().records.is_empty());
    assert!(!high_watermark.has_changed().unwrap());
    log.wait_durable(outcome.last_offset + 1).await.unwrap();
    assert_eq!(log.high_watermark(), 2);
    assert!(high_watermark.has_changed().unwrap());
    assert!(!log.read(0, 100).unwrap().records.is_empty());
    // Already durable: returns without another fsync.
    let syncs = log.log_sync_count();
    log.wait_durable(2).await.unwrap();
    assert_eq!(log.log_sync_count(), syncs);
}

#[test]
fn clean_close_lets_the_next_open_skip_the_scan_and_continue_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 128,
        ..config(FlushPolicy::Interval(std::time::Duration::from_millis(10)))
    };
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    for round in 0..20 {
        log.append(&[simple_batch(2, round, 200)], 0).unwrap();
    }
    let before = read_all(&log, 1000);
    log.close().unwrap();
    assert!(matches!(
        log.append(&[simple_batch(1, 0, 1)], 0),
        Err(StorageError::Closed)
    ));
    drop(log);

    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    let report = log.recovery_report().clone();
    assert!(report.clean_shutdown, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.next_offset, 40);
    assert!(
        !dir.path().join("clean-shutdown.checkpoint").exists(),
        "checkpoint must be consumed"
    );
    assert_eq!(read_all(&log, 1000), before);
    assert_eq!(log.append(&[simple_batch(1, 0, 1)], 0).unwrap().base_offset, 40);
    drop(log);

    // Dropped without close: the next open must not think it was clean.
    let log = PartitionLog::open(dir.path(), config).unwrap();
    assert!(!log.recovery_report().clean_shutdown);
    assert_eq!(log.high_watermark(), 41);
}

#[test]
fn time_retention_deletes_only_closed_segments_older_than_retention() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1024,
        retention_ms: 1000,
        ..config(FlushPolicy::Never)
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    // Segment timestamps: old ones around 0..., newest at 10_000.
    for round in 0..12i64 {
        log.append(&[simple_batch(2, round * 1000, 300)], 0).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments >= 4);
    let before = log.size_bytes();
    // now = 6500: segments whose newest record is older than 5500 go.
    let outcome = log.run_maintenance(6500).unwrap();
    assert!(outcome.segments_deleted > 0);
    assert!(outcome.bytes_deleted > 0);
    assert_eq!(log.size_bytes(), before - outcome.bytes_deleted);
    let start = log.log_start_offset();
    assert!(start > 0);
    let first_kept = log.read(start, 1).unwrap();
    let batch = BatchIter::new(first_kept.records).next().unwrap().unwrap();
    let newest_timestamp = batch
        .records()
        .map(|record| record.unwrap().timestamp)
        .max()
        .unwrap();
    assert!(
        newest_timestamp >= 5000,
        "kept segment with timestamps up to {newest_timestamp}"
    );
    assert!(matches!(
        log.read(start - 1, 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(!os_path(dir.path(), 0, "log").exists());
    assert!(!os_path(dir.path(), 0, "index").exists());

    // Far in the future everything closed goes, never the active segment.
    let outcome = log.run_maintenance(1_000_000).unwrap();
    assert_eq!(log.segment_count(), 1);
    // The active segment was older than segment_ms? No: default 7 days, so no roll.
    assert!(!outcome.rolled);
    assert!(!log.read(log.log_start_offset(), 100).unwrap().records.is_empty());
}

#[test]
fn size_retention_deletes_oldest_closed_segments_while_over_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1024,
        retention_bytes: 2500,
        retention_ms: -1,
        ..config(FlushPolicy::Never)
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    for round in 0..20i64 {
        log.append(&[simple_batch(1, round, 400)], 0).unwrap();
    }
    log.run_maintenance(0).unwrap();
    let segments = log.segment_count();
    let kept_bytes = read_all(&log, 1 << 20).len();
    assert!(
        kept_bytes <= 2500,
        "{kept_bytes} bytes kept in {segments} segments"
    );
    assert!(
        segments >= 2,
        "deleted more than needed: {segments} segments left"
    );
    assert!(log.log_start_offset() > 0);
    assert_eq!(log.high_watermark(), 20);
}

#[test]
fn age_roll_happens_in_maintenance_and_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1000,
        retention_ms: -1,
        ..config(FlushPolicy::Never)
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    log.append(&[simple_batch(1, 100, 1)], 100).unwrap();
    assert!(!log.run_maintenance(1000).unwrap().rolled);
    assert!(log.run_maintenance(1101).unwrap().rolled);
    assert_eq!(log.segment_count(), 2);
    // An empty active segment never rolls.
    assert!(!log.run_maintenance(100_000).unwrap().rolled);
    log.append(&[simple_batch(1, 5000, 1)], 5000).unwrap();
    log.append(&[simple_batch(1, 5001, 1)], 7000).unwrap();
    assert_eq!(log.segment_count(), 3);
    assert_eq!(log.high_watermark(), 3);
}

#[test]
fn a_reader_holding_a_deleted_segment_keeps_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1024,
        retention_bytes: 0,
        retention_ms: -1,
        ..config(FlushPolicy::Never)
    };
    let log = Arc::new(PartitionLog::open(dir.path(), config).unwrap());
    let first = simple_batch(1, 0, 600);
    log.append(std::slice::from_ref(&first), 0).unwrap();
    log.append(&[simple_batch(1, 0, 600)], 0).unwrap();
    let snapshot = log.segments_for_test();
    let outcome = log.run_maintenance(0).unwrap();
    assert_eq!(outcome.segments_deleted, 1);
    assert!(!os_path(dir.path(), 0, "log").exists());
    // The old snapshot's file handle still reads the unlinked file.
    let old = snapshot[0].read(0, 1 << 20, 2).unwrap().unwrap();
    assert_eq!(&old[..], &stored(&first, 0)[..]);
    assert!(matches!(
        log.read(0, 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn concurrent_reads_racing_retention_see_whole_batches_or_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 2048,
        retention_bytes: 4096,
        retention_ms: -1,
        ..config(FlushPolicy::Never)
    };
    let log = Arc::new(PartitionLog::open(dir.path(), config).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let log = Arc::clone(&log);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut out_of_range = 0u64;
            // Bounded: the writer stops after a fixed number of appends.
            while !stop.load(std::sync::atomic::Ordering::Acquire) && reads < 1_000_000 {
                let start = log.log_start_offset();
                match log.read(start, 4096) {
                    Ok(outcome) => {
                        for batch in BatchIter::new(outcome.records) {
                            batch.unwrap().validate().unwrap();
                        }
                        reads += 1;
                    }
                    Err(StorageError::OffsetOutOfRange { .. }) => out_of_range += 1,
                    Err(other) => panic!("read failed: {other}"),
                }
            }
            (reads, out_of_range)
        })
    };
    for round in 0..400i64 {
        log.append(&[simple_batch(2, round, 150)], 0).unwrap();
        if round % 10 == 0 {
            log.run_maintenance(0).unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (reads, _) = reader.join().unwrap();
    assert!(reads > 0);
    assert!(log.log_start_offset() > 0);
}

#[test]
fn partition_log_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<PartitionLog>();
    shareable::<StorageError>();
}

#[test]
fn ancient_record_timestamps_do_not_roll_a_segment_per_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(FlushPolicy::Never)).unwrap();
    let now = 1_700_000_000_000;
    for _ in 0..50 {
        // Records stamped at the epoch, appended now: the segment's age is the broker's.
        log.append(&[simple_batch(1, 0, 10)], now).unwrap();
    }
    assert_eq!(log.segment_count(), 1);
}
