//! Idempotent producer state: duplicates, gaps and fencing checked inside `append`; the state
//! rebuilt from snapshots and batch headers after clean and crashed restarts; its bounds. The
//! model test at the end retries random recent batches through crashes and checks that no
//! batch is ever stored twice.

use std::collections::HashSet;

use bytes::Bytes;
use tidelog_proto::batch::{BatchIter, NewRecord, ProducerStamp, RecordBatch, RecordBatchBuilder};

use super::super::sim_disk::{CrashMode, Fault, FaultErrno, FaultOp, SimDisk, SplitMix};
use super::super::{FlushPolicy, LogConfig, PartitionLog, ProducerLimits, StorageError};
use super::{config, read_all, sim_open, sim_path};

const NOW: i64 = 1_000_000;

/// A validated batch of `count` records stamped with a producer.
fn producer_batch(producer_id: i64, epoch: i16, sequence: i32, count: usize, tag: u8) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new().with_producer(ProducerStamp {
        producer_id,
        producer_epoch: epoch,
        base_sequence: sequence,
    });
    for index in 0..count {
        builder.push(&NewRecord {
            timestamp: NOW + index as i64,
            key: None,
            value: Some(Bytes::from(vec![tag; 20])),
            headers: Vec::new(),
        });
    }
    let bytes = builder.build().expect("at least one record");
    let (batch, _) = RecordBatch::split_first(&bytes).expect("builder output parses");
    batch.validate().expect("builder output validates");
    batch
}

fn append(log: &PartitionLog, batch: &RecordBatch) -> Result<(i64, i64, bool), StorageError> {
    log.append(std::slice::from_ref(batch), NOW)
        .map(|outcome| (outcome.base_offset, outcome.last_offset, outcome.duplicate))
}

/// (producer id, epoch, base sequence) of every stored batch, in offset order.
fn stored_stamps(log: &PartitionLog) -> Vec<(i64, i16, i32)> {
    BatchIter::new(read_all(log, 1 << 20))
        .map(|batch| {
            let header = *batch.expect("whole batches").header();
            (header.producer_id, header.producer_epoch, header.base_sequence)
        })
        .collect()
}

fn small_segments(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 400,
        retention_ms: -1,
        ..config(flush)
    }
}

fn snapshot_names(disk: &SimDisk) -> Vec<String> {
    let mut names: Vec<String> = disk
        .file_names(&super::sim_dir())
        .into_iter()
        .filter(|name| name.ends_with(".snapshot"))
        .collect();
    names.sort();
    names
}

#[test]
fn retried_batch_gets_its_original_offsets_and_is_not_appended_again() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let first = producer_batch(7, 0, 0, 3, 1);
    let second = producer_batch(7, 0, 3, 2, 2);
    assert_eq!(append(&log, &first).unwrap(), (0, 2, false));
    assert_eq!(append(&log, &second).unwrap(), (3, 4, false));
    assert_eq!(append(&log, &first).unwrap(), (0, 2, true));
    assert_eq!(append(&log, &second).unwrap(), (3, 4, true));
    assert_eq!(log.high_watermark(), 5, "a duplicate appends nothing");
    assert_eq!(stored_stamps(&log), vec![(7, 0, 0), (7, 0, 3)]);
}

#[test]
fn sequence_gap_is_refused_as_out_of_order() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    append(&log, &producer_batch(7, 0, 0, 3, 1)).unwrap();
    let result = append(&log, &producer_batch(7, 0, 4, 1, 2));
    assert!(
        matches!(
            result,
            Err(StorageError::OutOfOrderSequence {
                producer_id: 7,
                expected: 3,
                found: 4
            })
        ),
        "{result:?}"
    );
    assert_eq!(log.high_watermark(), 3);
    assert_eq!(
        append(&log, &producer_batch(7, 0, 3, 1, 2)).unwrap(),
        (3, 3, false)
    );
}

#[test]
fn older_epoch_is_fenced_and_a_new_epoch_starts_at_sequence_zero() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    append(&log, &producer_batch(7, 0, 0, 2, 1)).unwrap();
    let result = append(&log, &producer_batch(7, 1, 2, 1, 2));
    assert!(
        matches!(result, Err(StorageError::OutOfOrderSequence { expected: 0, .. })),
        "{result:?}"
    );
    assert_eq!(
        append(&log, &producer_batch(7, 1, 0, 1, 3)).unwrap(),
        (2, 2, false)
    );
    let result = append(&log, &producer_batch(7, 0, 2, 1, 4));
    assert!(
        matches!(
            result,
            Err(StorageError::InvalidProducerEpoch {
                current: 1,
                found: 0,
                ..
            })
        ),
        "{result:?}"
    );
    // Even a retry of an old-epoch batch is fenced, not answered as a duplicate.
    assert!(append(&log, &producer_batch(7, 0, 0, 2, 1)).is_err());
    assert_eq!(log.high_watermark(), 3);
}

#[test]
fn unknown_producer_must_start_at_sequence_zero_then_is_held_to_its_sequence() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let result = append(&log, &producer_batch(9, 3, 500, 2, 1));
    assert!(
        matches!(
            result,
            Err(StorageError::UnknownProducerId {
                producer_id: 9,
                found: 500
            })
        ),
        "{result:?}"
    );
    assert_eq!(log.high_watermark(), 0, "nothing stored");
    assert_eq!(
        append(&log, &producer_batch(9, 3, 0, 2, 1)).unwrap(),
        (0, 1, false)
    );
    assert!(append(&log, &producer_batch(9, 3, 3, 1, 1)).is_err());
    assert_eq!(
        append(&log, &producer_batch(9, 3, 2, 1, 1)).unwrap(),
        (2, 2, false)
    );
}

/// Fails the next write (or, with `sticky`, every write until `clear_faults`) with `errno`.
fn fail_writes(disk: &SimDisk, errno: FaultErrno, sticky: bool) {
    disk.inject(Fault {
        op: FaultOp::Write,
        after: 0,
        errno,
        sticky,
    });
}

/// Seen on a full disk: a new producer's first batch (0..57) failed, its next one (58..99)
/// was stored, and the records of the first were gone for good with no error for the second.
#[test]
fn a_batch_is_never_appended_across_the_gap_its_own_failed_batch_left() {
    for errno in [FaultErrno::NoSpace, FaultErrno::Io] {
        let disk = SimDisk::new();
        let log = sim_open(&disk, config(FlushPolicy::Always));
        let first = producer_batch(11, 0, 0, 58, 1);
        let second = producer_batch(11, 0, 58, 42, 2);
        fail_writes(&disk, errno, true);
        let result = append(&log, &first);
        assert!(
            matches!(result, Err(StorageError::Io { .. })),
            "{errno:?}: {result:?}"
        );
        // The disk has room again, but the producer's second batch arrives first.
        disk.clear_faults();
        let result = append(&log, &second);
        assert!(
            matches!(
                result,
                Err(StorageError::UnknownProducerId {
                    producer_id: 11,
                    found: 58
                })
            ),
            "{errno:?}: {result:?}"
        );
        log.sync().unwrap();
        assert_eq!(log.high_watermark(), 0, "nothing written across the gap");
        // Resent in order, both land once.
        assert_eq!(append(&log, &first).unwrap(), (0, 57, false));
        assert_eq!(append(&log, &second).unwrap(), (58, 99, false));

        // The same for a producer the partition knows: a failed batch leaves its state as it
        // was.
        let third = producer_batch(11, 0, 100, 10, 3);
        let fourth = producer_batch(11, 0, 110, 10, 4);
        fail_writes(&disk, errno, false);
        assert!(matches!(append(&log, &third), Err(StorageError::Io { .. })));
        let result = append(&log, &fourth);
        assert!(
            matches!(
                result,
                Err(StorageError::OutOfOrderSequence {
                    expected: 100,
                    found: 110,
                    ..
                })
            ),
            "{errno:?}: {result:?}"
        );
        assert_eq!(append(&log, &third).unwrap(), (100, 109, false));
        assert_eq!(append(&log, &fourth).unwrap(), (110, 119, false));
        log.sync().unwrap();
        assert_eq!(
            stored_stamps(&log),
            vec![(11, 0, 0), (11, 0, 58), (11, 0, 100), (11, 0, 110)],
            "{errno:?}"
        );
    }
}

/// The same when the failure is the roll the append needed (the new segment cannot be made).
#[test]
fn a_failed_roll_leaves_the_producer_unknown_so_its_next_batch_is_refused() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, small_segments(FlushPolicy::Never));
    append(&log, &producer_batch(1, 0, 0, 3, 0)).unwrap();
    assert_eq!(log.segment_count(), 1);
    // Big enough that it cannot join the first segment: the append must roll first.
    let first = producer_batch(12, 0, 0, 8, 1);
    let second = producer_batch(12, 0, 8, 1, 2);
    fail_writes(&disk, FaultErrno::NoSpace, true);
    assert!(append(&log, &first).is_err());
    assert_eq!(log.segment_count(), 1, "the roll failed");
    disk.clear_faults();
    let result = append(&log, &second);
    assert!(
        matches!(
            result,
            Err(StorageError::UnknownProducerId { producer_id: 12, .. })
        ),
        "{result:?}"
    );
    assert_eq!(log.high_watermark(), 3);
    assert_eq!(append(&log, &first).unwrap(), (3, 10, false));
    assert_eq!(append(&log, &second).unwrap(), (11, 11, false));
}

/// Seen: a producer replaying events stamped years ago lost its state at the next
/// maintenance pass (expiry compared the broker clock with the batch's timestamps), so a
/// retry was stored twice.
#[test]
fn historical_record_timestamps_do_not_expire_the_producer_state() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let now = 1_800_000_000_000;
    let year_2000 = 946_684_800_000;
    let batch = stamped_at(21, 0, 4, year_2000);
    assert_eq!(
        log.append(std::slice::from_ref(&batch), now).unwrap().last_offset,
        3
    );
    log.run_maintenance(now + 10_000).unwrap();
    assert_eq!(log.producer_count().unwrap(), 1, "state kept");
    let retry = log.append(std::slice::from_ref(&batch), now + 20_000).unwrap();
    assert!(retry.duplicate, "the retry is recognised");
    assert_eq!(log.high_watermark(), 4, "stored once");
    // Records stamped in the future do not keep an idle producer alive either.
    let future = stamped_at(22, 0, 1, 4_000_000_000_000);
    log.append(std::slice::from_ref(&future), now).unwrap();
    let idle = ProducerLimits::default().producer_idle_ms;
    log.run_maintenance(now + 20_000 + idle + 1).unwrap();
    assert_eq!(log.producer_count().unwrap(), 0, "idle in broker time: forgotten");
}

/// The broker append time is persisted in the snapshot: a clean restart neither resets nor
/// forgets it.
#[test]
fn the_broker_append_time_survives_a_clean_restart() {
    let disk = SimDisk::new();
    let config = LogConfig {
        producer_limits: ProducerLimits {
            producer_idle_ms: 60_000,
            ..ProducerLimits::default()
        },
        ..config(FlushPolicy::Never)
    };
    let log = sim_open(&disk, config.clone());
    let now = 1_800_000_000_000;
    log.append(&[stamped_at(5, 0, 2, 946_684_800_000)], now).unwrap();
    log.close().unwrap();
    drop(log);
    let log = sim_open(&disk, config);
    assert_eq!(log.producer_state_recovery().snapshot_loaded, Some(2));
    log.run_maintenance(now + 59_000).unwrap();
    assert_eq!(log.producer_count().unwrap(), 1);
    log.run_maintenance(now + 60_001).unwrap();
    assert_eq!(log.producer_count().unwrap(), 0);
    assert_eq!(
        log.producer_id_max().unwrap(),
        5,
        "the highest id outlives the state"
    );
}

/// Seen: with the producer-id counter restarted at 0, a new producer got an id an old one had
/// used, and its different records were acknowledged as "duplicates" and never stored.
#[test]
fn a_batch_with_a_stored_sequence_range_but_other_records_is_refused_not_acknowledged() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let old = producer_batch(0, 0, 0, 10, 1);
    let reused = producer_batch(0, 0, 0, 10, 2);
    assert_ne!(old.header().crc, reused.header().crc);
    append(&log, &old).unwrap();
    let result = append(&log, &reused);
    assert!(
        matches!(
            result,
            Err(StorageError::SequenceConflict {
                producer_id: 0,
                first_sequence: 0,
                last_sequence: 9,
                base_offset: 0
            })
        ),
        "{result:?}"
    );
    assert_eq!(log.high_watermark(), 10);
    // After a restart (state from the snapshot) and after a crash (state from the headers).
    log.close().unwrap();
    drop(log);
    let log = sim_open(&disk, config(FlushPolicy::Never));
    assert!(matches!(
        append(&log, &reused),
        Err(StorageError::SequenceConflict { .. })
    ));
    assert_eq!(append(&log, &old).unwrap(), (0, 9, true));
    drop(log);
    for name in snapshot_names(&disk) {
        disk.remove_durably(&sim_path(&name));
    }
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, config(FlushPolicy::Never));
    assert_eq!(log.producer_state_recovery().snapshot_loaded, None);
    assert!(matches!(
        append(&log, &reused),
        Err(StorageError::SequenceConflict { .. })
    ));
    assert_eq!(append(&log, &old).unwrap(), (0, 9, true));
}

#[test]
fn producer_state_outlives_retention_of_its_batches() {
    let disk = SimDisk::new();
    let config = LogConfig {
        retention_bytes: 500,
        ..small_segments(FlushPolicy::Never)
    };
    let log = sim_open(&disk, config);
    for n in 0..6 {
        append(&log, &producer_batch(3, 0, n, 1, 0)).unwrap();
    }
    // Another producer fills segments until producer 3's batches are all deleted.
    for n in 0..30 {
        append(&log, &producer_batch(4, 0, n, 1, 0)).unwrap();
    }
    log.run_maintenance(NOW).unwrap();
    assert!(
        log.log_start_offset() > 6,
        "the test needs producer 3's batches deleted"
    );
    // Its next batch continues its sequence (no UNKNOWN_PRODUCER_ID for a live producer).
    let (base, _, duplicate) = append(&log, &producer_batch(3, 0, 6, 1, 0)).unwrap();
    assert!(!duplicate);
    assert_eq!(base, 36);
}

#[test]
fn the_highest_producer_id_is_rebuilt_from_batch_headers_without_snapshots() {
    let disk = SimDisk::new();
    let config = small_segments(FlushPolicy::Always);
    thirty_batches_then_stop(&disk, &config);
    let log = sim_open(&disk, config.clone());
    append(&log, &producer_batch(1_000_000, 0, 0, 1, 0)).unwrap();
    log.sync().unwrap();
    drop(log);
    for name in snapshot_names(&disk) {
        disk.remove_durably(&sim_path(&name));
    }
    let log = sim_open(&disk, config);
    assert_eq!(log.producer_state_recovery().snapshot_loaded, None);
    assert_eq!(log.producer_id_max().unwrap(), 1_000_000);
}

/// A one-record producer batch stamped with `timestamp` (its records' client time).
fn stamped_at(producer_id: i64, sequence: i32, count: usize, timestamp: i64) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new().with_producer(ProducerStamp {
        producer_id,
        producer_epoch: 0,
        base_sequence: sequence,
    });
    for index in 0..count {
        builder.push(&NewRecord {
            timestamp: timestamp + index as i64,
            key: None,
            value: Some(Bytes::from_static(b"replayed")),
            headers: Vec::new(),
        });
    }
    let bytes = builder.build().expect("at least one record");
    let (batch, _) = RecordBatch::split_first(&bytes).expect("builder output parses");
    batch.validate().expect("builder output validates");
    batch
}

#[test]
fn only_the_last_five_batches_are_recognised_as_duplicates() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let batches: Vec<RecordBatch> = (0..7).map(|n| producer_batch(1, 0, n, 1, n as u8)).collect();
    for batch in &batches {
        append(&log, batch).unwrap();
    }
    for (n, batch) in batches.iter().enumerate().skip(2) {
        assert_eq!(append(&log, batch).unwrap(), (n as i64, n as i64, true));
    }
    // Older than the window: not recognised, and refused rather than appended again.
    assert!(matches!(
        append(&log, &batches[1]),
        Err(StorageError::OutOfOrderSequence { .. })
    ));
    assert_eq!(log.high_watermark(), 7);
}

#[test]
fn an_append_mixing_duplicate_and_new_batches_is_refused_whole() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let first = producer_batch(1, 0, 0, 1, 1);
    let second = producer_batch(1, 0, 1, 1, 2);
    let third = producer_batch(1, 0, 2, 1, 3);
    let outcome = log.append(&[first.clone(), second.clone()], NOW).unwrap();
    assert_eq!(
        (outcome.base_offset, outcome.last_offset, outcome.duplicate),
        (0, 1, false)
    );
    let outcome = log.append(&[first.clone(), second.clone()], NOW).unwrap();
    assert_eq!(
        (outcome.base_offset, outcome.last_offset, outcome.duplicate),
        (0, 1, true)
    );
    let result = log.append(&[second, third.clone()], NOW);
    assert!(
        matches!(result, Err(StorageError::DuplicateSequence { .. })),
        "{result:?}"
    );
    assert_eq!(log.high_watermark(), 2);
    // Several batches of one producer in one call are checked against each other.
    let fourth = producer_batch(1, 0, 3, 1, 4);
    let outcome = log.append(&[third, fourth], NOW).unwrap();
    assert_eq!(
        (outcome.base_offset, outcome.last_offset, outcome.duplicate),
        (2, 3, false)
    );
}

#[test]
fn producer_state_survives_a_clean_restart_without_replaying_the_log() {
    let disk = SimDisk::new();
    let config = small_segments(FlushPolicy::Never);
    let log = sim_open(&disk, config.clone());
    let batches: Vec<RecordBatch> = (0..20).map(|n| producer_batch(4, 2, n, 1, n as u8)).collect();
    for batch in &batches {
        append(&log, batch).unwrap();
    }
    assert!(log.segment_count() > 2, "the test needs rolls");
    log.close().unwrap();
    drop(log);
    let log = sim_open(&disk, config);
    let recovery = log.producer_state_recovery();
    assert_eq!(recovery.snapshot_loaded, Some(20), "{recovery:?}");
    assert_eq!(recovery.batches_replayed, 0, "{recovery:?}");
    assert_eq!(append(&log, &batches[19]).unwrap(), (19, 19, true));
    assert_eq!(append(&log, &batches[15]).unwrap(), (15, 15, true));
    assert!(
        append(&log, &producer_batch(4, 1, 20, 1, 0)).is_err(),
        "older epoch still fenced"
    );
    assert_eq!(
        append(&log, &producer_batch(4, 2, 20, 1, 0)).unwrap(),
        (20, 20, false)
    );
}

#[test]
fn producer_state_after_a_crash_matches_the_recovered_log() {
    let disk = SimDisk::new();
    let config = small_segments(FlushPolicy::Never);
    let log = sim_open(&disk, config.clone());
    let batches: Vec<RecordBatch> = (0..12).map(|n| producer_batch(4, 0, n, 1, n as u8)).collect();
    for batch in &batches[..8] {
        append(&log, batch).unwrap();
    }
    log.sync().unwrap();
    for batch in &batches[8..] {
        append(&log, batch).unwrap();
    }
    drop(log);
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, config);
    assert_eq!(log.high_watermark(), 8, "unsynced batches are lost");
    // The lost batches are not remembered: their retries are appended, once.
    assert_eq!(append(&log, &batches[7]).unwrap(), (7, 7, true));
    for (n, batch) in batches.iter().enumerate().skip(8) {
        assert_eq!(append(&log, batch).unwrap(), (n as i64, n as i64, false));
        assert_eq!(append(&log, batch).unwrap(), (n as i64, n as i64, true));
    }
    let sequences: Vec<i32> = stored_stamps(&log).iter().map(|stamp| stamp.2).collect();
    assert_eq!(sequences, (0..12).collect::<Vec<i32>>());
}

/// Appends 30 one-record batches of producer 4 with small segments and closes uncleanly
/// (a sync, no close), so the next open needs a snapshot or a scan.
fn thirty_batches_then_stop(disk: &SimDisk, config: &LogConfig) -> Vec<RecordBatch> {
    let log = sim_open(disk, config.clone());
    let batches: Vec<RecordBatch> = (0..30).map(|n| producer_batch(4, 0, n, 1, n as u8)).collect();
    for batch in &batches {
        append(&log, batch).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    batches
}

#[test]
fn damaged_newest_snapshot_falls_back_to_the_older_one() {
    let disk = SimDisk::new();
    let config = small_segments(FlushPolicy::Always);
    let batches = thirty_batches_then_stop(&disk, &config);
    let names = snapshot_names(&disk);
    assert_eq!(names.len(), 2, "two snapshots are kept: {names:?}");
    let newest = sim_path(&names[1]);
    let mut bytes = disk.read_file(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    disk.write_file_durably(&newest, &bytes);
    let log = sim_open(&disk, config);
    let recovery = log.producer_state_recovery().clone();
    let older: i64 = names[0].trim_end_matches(".snapshot").parse().unwrap();
    assert_eq!(recovery.snapshot_loaded, Some(older), "{recovery:?}");
    assert_eq!(recovery.snapshots_rejected.len(), 1, "{recovery:?}");
    assert!(recovery.batches_replayed > 0);
    for (n, batch) in batches.iter().enumerate().skip(25) {
        assert_eq!(append(&log, batch).unwrap(), (n as i64, n as i64, true));
    }
    assert!(
        !snapshot_names(&disk).contains(&names[1]),
        "the damaged snapshot is deleted"
    );
}

#[test]
fn without_a_usable_snapshot_the_state_is_rebuilt_from_every_batch_header() {
    let disk = SimDisk::new();
    let config = small_segments(FlushPolicy::Always);
    let batches = thirty_batches_then_stop(&disk, &config);
    for name in snapshot_names(&disk) {
        disk.write_file_durably(&sim_path(&name), b"TDLGPST1 not really");
    }
    let log = sim_open(&disk, config);
    let recovery = log.producer_state_recovery().clone();
    assert_eq!(recovery.snapshot_loaded, None, "{recovery:?}");
    assert_eq!(recovery.batches_replayed, 30, "{recovery:?}");
    for (n, batch) in batches.iter().enumerate().skip(25) {
        assert_eq!(append(&log, batch).unwrap(), (n as i64, n as i64, true));
    }
}

#[test]
fn snapshot_past_the_recovered_end_is_discarded() {
    let disk = SimDisk::new();
    let config = small_segments(FlushPolicy::Never);
    let log = sim_open(&disk, config.clone());
    let batches: Vec<RecordBatch> = (0..30).map(|n| producer_batch(4, 0, n, 1, n as u8)).collect();
    for batch in &batches[..3] {
        append(&log, batch).unwrap();
    }
    log.sync().unwrap();
    for batch in &batches[3..] {
        append(&log, batch).unwrap();
    }
    // Make the roll snapshots durable while the log data is not.
    let names = snapshot_names(&disk);
    assert!(!names.is_empty());
    for name in &names {
        let bytes = disk.read_file(&sim_path(name)).unwrap();
        disk.write_file_durably(&sim_path(name), &bytes);
    }
    drop(log);
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, config);
    let recovered = log.high_watermark();
    assert!(recovered < 30);
    let recovery = log.producer_state_recovery();
    assert!(
        recovery.snapshot_loaded.is_none_or(|offset| offset <= recovered),
        "{recovery:?}"
    );
    // A batch the crash took back is appended again, not mistaken for a duplicate.
    let n = recovered as usize;
    assert_eq!(append(&log, &batches[n]).unwrap(), (recovered, recovered, false));
}

#[test]
fn producers_beyond_the_limit_evict_the_least_recently_used() {
    let disk = SimDisk::new();
    let config = config(FlushPolicy::Never);
    let log = sim_open(&disk, config.clone());
    log.set_producer_limits(ProducerLimits {
        producers_max: 3,
        ..ProducerLimits::default()
    })
    .unwrap();
    for id in 0..3 {
        append(&log, &producer_batch(id, 0, 0, 1, 0)).unwrap();
    }
    // Producer 0 is used again, so 1 is now the least recently used.
    append(&log, &producer_batch(0, 0, 1, 1, 0)).unwrap();
    append(&log, &producer_batch(3, 0, 0, 1, 0)).unwrap();
    assert_eq!(log.producer_count().unwrap(), 3);
    assert!(append(&log, &producer_batch(0, 0, 1, 1, 0)).unwrap().2);
    assert!(append(&log, &producer_batch(2, 0, 0, 1, 0)).unwrap().2);
    // Producer 1 was forgotten: its next batch is refused, not appended across what it
    // forgot; a retry of its first batch is appended again (documented weakness).
    assert!(matches!(
        append(&log, &producer_batch(1, 0, 1, 1, 0)),
        Err(StorageError::UnknownProducerId { .. })
    ));
    assert!(!append(&log, &producer_batch(1, 0, 0, 1, 0)).unwrap().2);
    assert_eq!(log.producer_count().unwrap(), 3);
}

#[test]
fn idle_producers_expire_in_maintenance() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    log.set_producer_limits(ProducerLimits {
        producer_idle_ms: 1000,
        ..ProducerLimits::default()
    })
    .unwrap();
    append(&log, &producer_batch(1, 0, 0, 1, 0)).unwrap();
    log.run_maintenance(NOW + 500).unwrap();
    assert_eq!(log.producer_count().unwrap(), 1);
    log.run_maintenance(NOW + 5000).unwrap();
    assert_eq!(log.producer_count().unwrap(), 0);
}

#[test]
fn retention_deletes_snapshots_below_the_log_start() {
    let disk = SimDisk::new();
    let config = LogConfig {
        retention_bytes: 900,
        ..small_segments(FlushPolicy::Never)
    };
    let log = sim_open(&disk, config);
    for n in 0..30 {
        append(&log, &producer_batch(1, 0, n, 1, 0)).unwrap();
    }
    log.run_maintenance(NOW).unwrap();
    let start = log.log_start_offset();
    assert!(start > 0);
    for name in snapshot_names(&disk) {
        let offset: i64 = name.trim_end_matches(".snapshot").parse().unwrap();
        assert!(offset >= start, "{name} is below the log start {start}");
    }
}

/// A batch a model producer sent, with where it landed (if it is in the log).
#[derive(Debug, Clone)]
struct Sent {
    batch: RecordBatch,
    offsets: Option<(i64, i64)>,
}

#[derive(Debug)]
struct ModelProducer {
    id: i64,
    epoch: i16,
    next_sequence: i32,
    /// Every batch sent, oldest first. Retries pick from the last five of the current epoch,
    /// like a real producer's in-flight set.
    history: Vec<Sent>,
}

impl ModelProducer {
    fn retriable(&self) -> Vec<&Sent> {
        self.history
            .iter()
            .rev()
            .filter(|sent| sent.batch.header().producer_epoch == self.epoch)
            .take(5)
            .collect()
    }
}

#[test]
fn retried_batches_are_never_stored_twice_through_crashes_and_restarts() {
    let seeds: Vec<u64> = match std::env::var("TIDELOG_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("TIDELOG_MODEL_SEED is a number")],
        Err(_) => (0..24).collect(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for seed in seeds {
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| producer_model(seed, &runtime)));
        if let Err(panic) = result {
            eprintln!("producer model test failed with seed {seed}; rerun with TIDELOG_MODEL_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

fn producer_model(seed: u64, runtime: &tokio::runtime::Runtime) {
    let mut rng = SplitMix(seed.wrapping_mul(0x9E37_79B9) ^ 0x51DE);
    let flush = match rng.below(3) {
        0 => FlushPolicy::Always,
        1 => FlushPolicy::Never,
        _ => FlushPolicy::Interval(std::time::Duration::from_millis(5)),
    };
    let config = LogConfig {
        segment_bytes: 300 + rng.below(1500),
        retention_ms: -1,
        index_interval_bytes: rng.below(300) as u32,
        ..config(flush)
    };
    let disk = SimDisk::new();
    let mut log = sim_open(&disk, config.clone());
    let mut producers: Vec<ModelProducer> = (0..3)
        .map(|id| ModelProducer {
            id: 100 + id,
            epoch: 0,
            // Sequence 0: a producer unknown to the partition must start there.
            next_sequence: 0,
            history: Vec::new(),
        })
        .collect();
    // Every batch in the log, in offset order: (producer, epoch, base sequence).
    let mut stored: Vec<(i64, i16, i32, i64)> = Vec::new();
    let mut next_offset = 0i64;
    let mut synced = 0i64;
    let mut tag = 0u8;
    for step in 0..200 {
        let context = format!("seed {seed} step {step} config {config:?}");
        let which = rng.below(producers.len() as u64) as usize;
        match rng.below(100) {
            0..=49 => {
                let producer = &mut producers[which];
                let count = 1 + rng.below(4) as usize;
                tag = tag.wrapping_add(1);
                let batch = producer_batch(producer.id, producer.epoch, producer.next_sequence, count, tag);
                let (base, last, duplicate) =
                    append(&log, &batch).unwrap_or_else(|error| panic!("{context}: {error}"));
                assert!(!duplicate, "{context}");
                assert_eq!(base, next_offset, "{context}");
                next_offset = last + 1;
                stored.push((producer.id, producer.epoch, producer.next_sequence, base));
                producer.next_sequence =
                    super::super::producer_state::increment_sequence(producer.next_sequence, count as i32);
                producer.history.push(Sent {
                    batch,
                    offsets: Some((base, last)),
                });
                if flush == FlushPolicy::Always && rng.below(2) == 0 {
                    runtime.block_on(log.wait_durable(next_offset)).unwrap();
                    synced = next_offset;
                }
            }
            50..=69 => {
                // A retry of one of the producer's recent batches: its original offsets.
                let candidates = producers[which].retriable();
                if candidates.is_empty() {
                    continue;
                }
                let sent = candidates[rng.below(candidates.len() as u64) as usize];
                let (base, last, duplicate) =
                    append(&log, &sent.batch).unwrap_or_else(|error| panic!("{context}: {error}"));
                assert!(duplicate, "{context}: a retry was appended again");
                assert_eq!(Some((base, last)), sent.offsets, "{context}");
            }
            70..=73 => {
                // A gap is refused.
                let producer = &producers[which];
                if producer.retriable().is_empty() {
                    continue;
                }
                let gap = super::super::producer_state::increment_sequence(producer.next_sequence, 1);
                let result = append(&log, &producer_batch(producer.id, producer.epoch, gap, 1, 0));
                assert!(
                    matches!(result, Err(StorageError::OutOfOrderSequence { .. })),
                    "{context}: {result:?}"
                );
            }
            74..=76 => {
                // A new incarnation: the next epoch starts at 0; the old one is fenced once
                // the new one has written.
                let producer = &mut producers[which];
                producer.epoch += 1;
                producer.next_sequence = 0;
            }
            77..=82 => {
                log.sync().unwrap();
                synced = next_offset;
            }
            83..=88 => {
                log.close().unwrap();
                drop(log);
                log = sim_open(&disk, config.clone());
                assert_eq!(log.high_watermark(), next_offset, "{context}");
                assert_eq!(
                    log.producer_state_recovery().batches_replayed,
                    0,
                    "{context}: a clean restart replays nothing"
                );
                synced = next_offset;
            }
            89..=92 => {
                // A full or failing disk fails the producer's next batch; its batch after that
                // arrives first and must be refused, never stored across the gap. Then the
                // producer resends in order.
                let producer = &mut producers[which];
                let count = 1 + rng.below(4) as usize;
                tag = tag.wrapping_add(1);
                let failed = producer_batch(producer.id, producer.epoch, producer.next_sequence, count, tag);
                let errno = if rng.below(2) == 0 {
                    FaultErrno::NoSpace
                } else {
                    FaultErrno::Io
                };
                fail_writes(&disk, errno, false);
                let result = append(&log, &failed);
                disk.clear_faults();
                assert!(
                    result.is_err(),
                    "{context}: the injected {errno:?} did not fail the append"
                );
                let after_gap =
                    super::super::producer_state::increment_sequence(producer.next_sequence, count as i32);
                let following = producer_batch(producer.id, producer.epoch, after_gap, 1, tag);
                let result = append(&log, &following);
                assert!(
                    matches!(
                        result,
                        Err(StorageError::OutOfOrderSequence { .. } | StorageError::UnknownProducerId { .. })
                    ),
                    "{context}: a batch was accepted across the gap: {result:?}"
                );
                let (base, last, duplicate) =
                    append(&log, &failed).unwrap_or_else(|error| panic!("{context}: resend: {error}"));
                assert!(!duplicate, "{context}: a failed batch was remembered");
                assert_eq!(base, next_offset, "{context}");
                next_offset = last + 1;
                stored.push((producer.id, producer.epoch, producer.next_sequence, base));
                producer.next_sequence = after_gap;
                producer.history.push(Sent {
                    batch: failed,
                    offsets: Some((base, last)),
                });
            }
            _ => {
                drop(log);
                let mode = if rng.below(2) == 0 {
                    CrashMode::ForgetUnsynced
                } else {
                    CrashMode::TornAppends(rng.next())
                };
                disk.crash(mode);
                log = sim_open(&disk, config.clone());
                let recovered = log.high_watermark();
                assert!(recovered >= synced, "{context}: lost synced data");
                stored.retain(|entry| entry.3 < recovered);
                next_offset = recovered;
                synced = recovered;
                // Each producer resends, in order, what the crash took back: it must be
                // appended afresh, since the rebuilt state must not remember lost batches.
                for producer in &mut producers {
                    for sent in &mut producer.history {
                        let Some((base, _)) = sent.offsets else { continue };
                        if base < recovered {
                            continue;
                        }
                        let (base, last, duplicate) = append(&log, &sent.batch)
                            .unwrap_or_else(|error| panic!("{context}: resend after crash: {error}"));
                        assert!(
                            !duplicate,
                            "{context}: state remembers a batch the crash took back"
                        );
                        assert_eq!(base, next_offset, "{context}");
                        let header = sent.batch.header();
                        stored.push((
                            header.producer_id,
                            header.producer_epoch,
                            header.base_sequence,
                            base,
                        ));
                        sent.offsets = Some((base, last));
                        next_offset = last + 1;
                    }
                }
            }
        }
    }
    if flush == FlushPolicy::Always {
        log.sync().unwrap();
    }
    let stamps = stored_stamps(&log);
    let expected: Vec<(i64, i16, i32)> = stored.iter().map(|entry| (entry.0, entry.1, entry.2)).collect();
    assert_eq!(stamps, expected, "seed {seed}: the log differs from the model");
    let unique: HashSet<&(i64, i16, i32)> = stamps.iter().collect();
    assert_eq!(unique.len(), stamps.len(), "seed {seed}: a batch is stored twice");
}

/// With every snapshot gone, a damaged batch header (here a negative lastOffsetDelta) in a
/// sealed segment must never panic the open: recovery fences it, and the rebuild skips it.
#[test]
fn a_damaged_header_in_a_sealed_segment_is_skipped_when_rebuilding_without_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 400,
        retention_ms: -1,
        index_interval_bytes: 1,
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    };
    let now = 1_700_000_000_000;
    {
        let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        for i in 0..6 {
            log.append(&[damage_test_batch(7, i * 3, now)], now).unwrap();
        }
        assert!(log.segment_count() > 1, "the test needs a sealed segment");
        log.close().unwrap();
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "snapshot") {
            std::fs::remove_file(path).unwrap();
        }
    }
    // The first batch of the first segment starts after the 32-byte file header.
    let path = dir.path().join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[32 + tidelog_proto::batch::LAST_OFFSET_DELTA_OFFSET] ^= 0x80;
    std::fs::write(&path, &bytes).unwrap();

    let log = PartitionLog::open(dir.path(), config).unwrap();
    // Recovery checks every batch (CRC included) and fences the damaged one, so the rebuild
    // never even sees its header.
    assert_eq!(
        log.recovery_report().fenced.len(),
        1,
        "{:?}",
        log.recovery_report()
    );
    assert_eq!(log.producer_state_recovery().headers_skipped, 0);
}

fn damage_test_batch(producer_id: i64, sequence: i32, timestamp: i64) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new().with_producer(ProducerStamp {
        producer_id,
        producer_epoch: 0,
        base_sequence: sequence,
    });
    for index in 0..3 {
        builder.push(&NewRecord {
            timestamp: timestamp + index,
            key: None,
            value: Some(Bytes::from(vec![1u8; 20])),
            headers: Vec::new(),
        });
    }
    let bytes = builder.build().unwrap();
    RecordBatch::split_first(&bytes).unwrap().0
}
