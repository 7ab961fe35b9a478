//! A failed segment roll changes nothing: at every step of a roll (creating each of the three
//! files, writing their headers, syncing them, syncing the directory, writing index entries,
//! sealing the old segment) an injected EMFILE, ENOSPC or EIO leaves the partition exactly as
//! it was (same files, the old segment active, writable and not sealed, on disk or in memory),
//! the append gets a retriable `RollFailed`, later appends work once the fault clears, and a
//! crash that forgets everything unsynced keeps every acknowledged batch at its offset.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::super::sim_disk::{CrashMode, Fault, FaultErrno, FaultOp, SimDisk};
use super::super::{FlushPolicy, LogConfig, PartitionLog, StorageError};
use super::{read_all, segment_name, sim_dir, sim_open, sim_path, simple_batch, stored};

/// Small segments: three big batches fill one, so the fourth must roll.
const SEGMENT_BYTES: u64 = 4096;
const BIG_VALUE_BYTES: usize = 1000;
const ROLLING_VALUE_BYTES: usize = 1500;
const SMALL_VALUE_BYTES: usize = 50;
/// More than the operations of any one kind a roll performs, so every step is reached.
const STEPS_MAX: u64 = 16;

const OPS: [FaultOp; 6] = [
    FaultOp::Open,
    FaultOp::Write,
    FaultOp::SetLen,
    FaultOp::Sync,
    FaultOp::SyncDir,
    FaultOp::Remove,
];
const ERRNOS: [FaultErrno; 3] = [FaultErrno::TooManyOpenFiles, FaultErrno::NoSpace, FaultErrno::Io];

fn roll_config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        index_interval_bytes: 512,
        flush,
        ..LogConfig::default()
    }
}

/// What the test knows: every batch appended, in offset order, and which are acknowledged.
#[derive(Debug, Default)]
struct Appended {
    batches: Vec<(i64, Bytes)>,
    acked_below: i64,
}

impl Appended {
    fn append(&mut self, log: &PartitionLog, value_bytes: usize, tag: i64) -> Result<i64, StorageError> {
        let batch = simple_batch(1, tag, value_bytes);
        let outcome = log.append(std::slice::from_ref(&batch), 0)?;
        self.batches
            .push((outcome.base_offset, stored(&batch, outcome.base_offset)));
        Ok(outcome.last_offset + 1)
    }

    fn ack(&mut self, runtime: &tokio::runtime::Runtime, log: &PartitionLog, next_offset: i64) -> bool {
        // Under `Interval` an acknowledgement promises nothing; what counts is a sync.
        let durable = if log.config().flush == FlushPolicy::Always {
            runtime.block_on(log.wait_durable(next_offset)).is_ok()
        } else {
            log.sync().is_ok()
        };
        if durable {
            self.acked_below = self.acked_below.max(next_offset);
        }
        durable
    }
}

fn header_flags(disk: &SimDisk, base_offset: i64) -> u16 {
    let file = disk
        .read_file(&sim_path(&segment_name(base_offset, "log")))
        .expect("the active segment's data file exists");
    u16::from_be_bytes([file[10], file[11]])
}

fn names(disk: &SimDisk) -> BTreeSet<String> {
    disk.file_names(&sim_dir()).into_iter().collect()
}

fn is_poisoned(log: &PartitionLog) -> bool {
    matches!(log.append(&[], 0), Err(StorageError::Poisoned { .. }))
}

/// One scenario: fill a segment, fail the `after`-th `op` of the rolling append, check nothing
/// changed, recover from the fault, crash, and check every acknowledged batch survived.
/// Returns whether the fault fired at all (false once `after` is past the roll's operations).
fn scenario(flush: FlushPolicy, fault: Fault, runtime: &tokio::runtime::Runtime) -> bool {
    let context = format!("{flush:?} {fault:?}");
    let config = roll_config(flush);
    let disk = SimDisk::new();
    let mut log = sim_open(&disk, config.clone());
    let mut appended = Appended::default();
    let mut next = 0;
    for tag in 0..3 {
        next = appended
            .append(&log, BIG_VALUE_BYTES, tag)
            .expect("filling the first segment");
    }
    assert!(appended.ack(runtime, &log, next), "{context}");
    log.sync().expect("syncing before the fault");
    let names_before = names(&disk);
    let active_before = log.segments_for_test().last().expect("a segment").base_offset;
    let bytes_before = read_all(&log, 1 << 20);

    disk.inject(fault);
    let rolled = appended.append(&log, ROLLING_VALUE_BYTES, 10);
    let fired = disk.faults_fired() > 0;
    match rolled {
        Ok(next_offset) => {
            // The fault hit something after the roll (or nothing): the roll completed.
            assert_eq!(log.segment_count(), 2, "{context}");
            appended.ack(runtime, &log, next_offset);
        }
        Err(error) if log.segment_count() == 2 => {
            // The roll completed; the fault hit the data write after it.
            assert!(fired, "{context}: append failed without a fault: {error}");
        }
        Err(error) => {
            assert!(fired, "{context}: append failed without a fault: {error}");
            assert!(
                matches!(error, StorageError::RollFailed { .. }),
                "{context}: a failed roll must say so (retriable), got {error:?}"
            );
            if !is_poisoned(&log) {
                // Exactly as before: same files, same active segment, not sealed anywhere.
                assert_eq!(names(&disk), names_before, "{context}: files changed");
                let segments = log.segments_for_test();
                assert_eq!(segments.len(), 1, "{context}");
                let active = segments.last().expect("a segment");
                assert_eq!(active.base_offset, active_before, "{context}");
                assert!(
                    !active.is_sealed(),
                    "{context}: active segment marked sealed in memory"
                );
                assert_eq!(
                    header_flags(&disk, active_before),
                    0,
                    "{context}: active segment marked sealed on disk"
                );
                assert_eq!(read_all(&log, 1 << 20), bytes_before, "{context}");
            }
        }
    }
    disk.clear_faults();
    if is_poisoned(&log) {
        // Only after an fsync failed or an undo failed: reopening recovers.
        drop(log);
        disk.crash(CrashMode::ForgetUnsynced);
        log = sim_open(&disk, config.clone());
        appended.batches.retain(|(base, _)| *base < log.high_watermark());
    }
    // Once the fault clears: an append that fits the old segment, then one that rolls; both
    // acknowledged only once synced, however the old segment was left.
    let small = appended
        .append(&log, SMALL_VALUE_BYTES, 20)
        .unwrap_or_else(|error| panic!("{context}: append after the fault cleared: {error}"));
    let rolled = appended
        .append(&log, ROLLING_VALUE_BYTES, 21)
        .unwrap_or_else(|error| panic!("{context}: roll after the fault cleared: {error}"));
    assert!(appended.ack(runtime, &log, small), "{context}");
    assert!(appended.ack(runtime, &log, rolled), "{context}");
    let tail = appended
        .append(&log, BIG_VALUE_BYTES, 22)
        .unwrap_or_else(|error| panic!("{context}: {error}"));
    appended.ack(runtime, &log, tail);

    // Power loss: only synced bytes and names survive.
    drop(log);
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, config);
    let report = log.recovery_report().clone();
    assert!(
        log.high_watermark() >= appended.acked_below,
        "{context}: recovered to {} but {} was acknowledged; {report:?}",
        log.high_watermark(),
        appended.acked_below
    );
    let expected: Vec<u8> = appended
        .batches
        .iter()
        .take_while(|(base, _)| *base < log.high_watermark())
        .flat_map(|(_, bytes)| bytes.iter().copied())
        .collect();
    assert_eq!(
        &read_all(&log, 1 << 20)[..],
        &expected[..],
        "{context}: the recovered log is not what was appended; {report:?}"
    );
    // Offsets are never reused: the next append continues after everything recovered.
    let next_offset = log.high_watermark();
    let outcome = log
        .append(&[simple_batch(1, 30, SMALL_VALUE_BYTES)], 0)
        .unwrap_or_else(|error| panic!("{context}: {error}"));
    assert_eq!(outcome.base_offset, next_offset, "{context}");
    fired
}

fn every_step(flush: FlushPolicy) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut fired_total = 0;
    for op in OPS {
        for errno in ERRNOS {
            for sticky in [false, true] {
                for after in 0..STEPS_MAX {
                    let fault = Fault {
                        op,
                        after,
                        errno,
                        sticky,
                    };
                    if !scenario(flush, fault, &runtime) {
                        break;
                    }
                    fired_total += 1;
                }
            }
        }
    }
    // Every kind of operation of a roll was hit at least once per errno and stickiness.
    assert!(fired_total >= OPS.len() * ERRNOS.len() * 2, "{fired_total}");
}

#[test]
fn a_failed_roll_changes_nothing_at_any_step_under_always() {
    every_step(FlushPolicy::Always);
}

#[test]
fn a_failed_roll_changes_nothing_at_any_step_under_interval() {
    every_step(FlushPolicy::Interval(std::time::Duration::from_secs(3600)));
}

#[test]
fn a_roll_that_fails_on_the_offset_index_leaves_no_data_file_behind() {
    // The original report: under descriptor exhaustion N.log was created, N.index failed, and
    // N.log stayed behind while the old segment was flagged sealed.
    let disk = SimDisk::new();
    let config = roll_config(FlushPolicy::Always);
    let log = sim_open(&disk, config);
    let mut appended = Appended::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut next = 0;
    for tag in 0..3 {
        next = appended.append(&log, BIG_VALUE_BYTES, tag).expect("filling");
    }
    assert!(appended.ack(&runtime, &log, next));
    // The second open of the roll is N.index.
    disk.inject(Fault {
        op: FaultOp::Open,
        after: 1,
        errno: FaultErrno::TooManyOpenFiles,
        sticky: true,
    });
    let result = log.append(&[simple_batch(1, 5, ROLLING_VALUE_BYTES)], 0);
    assert!(
        matches!(result, Err(StorageError::RollFailed { base_offset, .. }) if base_offset == next),
        "{result:?}"
    );
    let stray = segment_name(next, "log");
    assert!(
        !names(&disk).contains(&stray),
        "{stray} was left behind: {:?}",
        names(&disk)
    );
    assert!(!log.segments_for_test()[0].is_sealed());
    assert_eq!(header_flags(&disk, 0), 0);
    // A small append still goes into the old segment, and is synced before its ack.
    let small = appended
        .append(&log, SMALL_VALUE_BYTES, 6)
        .expect("a small append fits");
    assert!(appended.ack(&runtime, &log, small));
    drop(log);
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, roll_config(FlushPolicy::Always));
    assert_eq!(log.high_watermark(), small);
}
