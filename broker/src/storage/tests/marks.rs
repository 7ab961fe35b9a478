//! Stream marks on a real `PartitionLog` (issue 9 §3): truncation and erasure as readers, the
//! condition check and the append path see them, their durability across restarts and crashes
//! (simulated disk), a damaged marks file, the bound, and the erasure progress the cleaner
//! works from. Also the refusal of keyless records on a compacting log.

use bytes::Bytes;
use tidelog_proto::batch::{NewRecord, ProducerStamp, RecordBatch, RecordBatchBuilder};

use super::super::sim_disk::{CrashMode, SimDisk};
use super::super::{
    AppendConditions, CleanupPolicy, Direction, ErasureProgress, Expected, FlushPolicy, KeyCondition,
    LogConfig, PartitionLog, StorageError, StreamMarkState,
};
use super::{config, sim_open, sim_path};

const MARKS_FILE: &str = "stream-marks";

/// One batch of `(key, value)` records; a `None` key is a keyless record.
fn batch(records: &[(Option<&str>, &str)]) -> RecordBatch {
    stamped(None, records)
}

fn stamped(producer: Option<(i64, i32)>, records: &[(Option<&str>, &str)]) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new();
    if let Some((producer_id, base_sequence)) = producer {
        builder = builder.with_producer(ProducerStamp {
            producer_id,
            producer_epoch: 0,
            base_sequence,
        });
    }
    for (key, value) in records {
        builder.push(&NewRecord {
            timestamp: 0,
            key: key.map(|key| Bytes::from(key.to_string())),
            value: Some(Bytes::from(value.to_string())),
            headers: Vec::new(),
        });
    }
    let bytes = builder.build().expect("at least one record");
    let (batch, _) = RecordBatch::split_first(&bytes).expect("parses");
    batch.validate().expect("validates");
    batch
}

/// Appends one record of `key` and returns its offset.
fn put(log: &PartitionLog, key: &str, value: &str) -> i64 {
    log.append(&[batch(&[(Some(key), value)])], 0)
        .expect("append")
        .base_offset
}

/// The offsets of `key`'s stream, read forward in pages of 2 from the start.
fn offsets(log: &PartitionLog, key: &str) -> Result<Vec<i64>, StorageError> {
    let mut out = Vec::new();
    let mut from = 0;
    // Bounded: every page moves `from` forward or ends the stream.
    for _ in 0..1_000 {
        let page = log.read_stream(key.as_bytes(), from, Direction::Forward, 2, usize::MAX)?;
        out.extend(page.records.iter().map(|record| record.offset));
        if page.end_of_stream {
            return Ok(out);
        }
        from = page.next_offset;
    }
    panic!("stream read did not end");
}

fn backward(log: &PartitionLog, key: &str) -> Vec<i64> {
    let page = log
        .read_stream(key.as_bytes(), -1, Direction::Backward, 100, usize::MAX)
        .expect("backward read");
    page.records.iter().map(|record| record.offset).collect()
}

fn expect(key: &str, expected: Expected) -> AppendConditions {
    AppendConditions {
        expected_end_offset: None,
        keys: vec![KeyCondition {
            key: Bytes::from(key.to_string()),
            expected,
        }],
    }
}

/// Appends a record of `key` if the stream meets `expected`: its offset, or the actual version
/// the conflict reported.
fn conditional(log: &PartitionLog, key: &str, expected: Expected) -> Result<i64, i64> {
    match log.append_conditional(&[batch(&[(Some(key), "c")])], &expect(key, expected), 0) {
        Ok(outcome) => Ok(outcome.base_offset),
        Err(StorageError::ConditionFailed { failures }) => Err(failures[0].actual),
        Err(other) => panic!("unexpected error {other}"),
    }
}

fn is_erased<T: std::fmt::Debug>(result: Result<T, StorageError>) -> bool {
    matches!(result, Err(StorageError::StreamErased { .. }))
}

/// `a` at 0, 2, 4, 6 and `b` at 1, 3, 5, 7.
fn interleaved(log: &PartitionLog) {
    for round in 0..4 {
        put(log, "a", &format!("a{round}"));
        put(log, "b", &format!("b{round}"));
    }
}

#[test]
fn a_truncated_stream_is_read_from_the_point_and_keeps_its_version() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    interleaved(&log);
    let state = log.truncate_stream(b"a", 3).unwrap();
    assert_eq!(state.truncated_before, 3);
    assert!(!state.erased);
    assert_eq!(offsets(&log, "a").unwrap(), vec![4, 6]);
    assert_eq!(backward(&log, "a"), vec![6, 4]);
    assert_eq!(
        offsets(&log, "b").unwrap(),
        vec![1, 3, 5, 7],
        "other keys untouched"
    );
    let info = log.stream_info(b"a").unwrap();
    assert_eq!((info.first_offset, info.last_offset, info.records), (4, 6, 2));
    assert_eq!(conditional(&log, "a", Expected::Exact(6)), Ok(8));

    // Truncating everything keeps the version: the next writer still expects 8.
    log.truncate_stream(b"a", 9).unwrap();
    assert_eq!(offsets(&log, "a").unwrap(), Vec::<i64>::new());
    let info = log.stream_info(b"a").unwrap();
    assert_eq!((info.first_offset, info.last_offset, info.records), (-1, 8, 0));
    assert_eq!(log.stream_last_offset(b"a").unwrap(), Some(8));
    assert_eq!(conditional(&log, "a", Expected::NoStream), Err(8));
    assert_eq!(conditional(&log, "a", Expected::Exact(8)), Ok(9));
    assert_eq!(offsets(&log, "a").unwrap(), vec![9]);
}

#[test]
fn a_truncation_is_clamped_to_the_high_watermark_and_never_moves_back() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    interleaved(&log);
    assert_eq!(log.truncate_stream(b"a", 1_000).unwrap().truncated_before, 8);
    assert_eq!(log.truncate_stream(b"a", 2).unwrap().truncated_before, 8);
    assert!(matches!(
        log.truncate_stream(b"a", -1),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    // A point at 0 truncates nothing and leaves no mark.
    assert_eq!(log.truncate_stream(b"b", 0).unwrap(), StreamMarkState::NONE);
    assert_eq!(log.stream_mark_count(), 1);
}

#[test]
fn an_erased_stream_answers_erased_and_refuses_appends_until_reopened() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    interleaved(&log);
    let state = log.erase_stream(b"a", 1_000, 61_000).unwrap();
    assert!(state.erased);
    assert_eq!(state.erase_before, 8);
    assert_eq!(
        (state.erase_requested_ms, state.erase_deadline_ms),
        (1_000, 61_000)
    );
    assert_eq!(state.erase_completed_ms, 0, "records remain for the cleaner");
    assert_eq!(
        log.erase_stream(b"a", 2_000, 62_000).unwrap(),
        state,
        "erasing again changes nothing"
    );

    assert!(is_erased(offsets(&log, "a")));
    assert!(is_erased(log.stream_info(b"a")));
    assert!(is_erased(log.stream_last_offset(b"a")));
    assert!(is_erased(log.append(&[batch(&[(Some("a"), "x")])], 0)));
    // One record of the erased key refuses the whole append.
    assert!(is_erased(
        log.append(&[batch(&[(Some("b"), "x")]), batch(&[(Some("a"), "x")])], 0)
    ));
    // So does a condition that only checks the erased key.
    assert!(is_erased(log.append_conditional(
        &[batch(&[(Some("b"), "x")])],
        &expect("a", Expected::NoStream),
        0
    )));
    assert_eq!(log.high_watermark(), 8, "refused appends wrote nothing");
    assert_eq!(offsets(&log, "b").unwrap(), vec![1, 3, 5, 7]);
    assert_eq!(put(&log, "b", "b4"), 8, "other keys append as before");

    // Re-opened: appends are in, and the stream starts fresh after its erasure point.
    let reopened = log.reopen_stream(b"a").unwrap();
    assert!(!reopened.erased);
    assert_eq!(reopened.erase_before, 8);
    assert_eq!(offsets(&log, "a").unwrap(), Vec::<i64>::new());
    assert_eq!(log.stream_info(b"a").unwrap().last_offset, -1);
    assert_eq!(conditional(&log, "a", Expected::NoStream), Ok(9));
    assert_eq!(offsets(&log, "a").unwrap(), vec![9]);
    assert_eq!(conditional(&log, "a", Expected::Exact(9)), Ok(10));
    assert_eq!(log.reopen_stream(b"b").unwrap(), StreamMarkState::NONE);
}

#[test]
fn an_append_refused_for_an_erased_key_leaves_the_producer_state_as_it_was() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    put(&log, "a", "a0");
    log.erase_stream(b"a", 0, 0).unwrap();
    assert!(is_erased(
        log.append(&[stamped(Some((7, 0)), &[(Some("a"), "x")])], 0)
    ));
    // Sequence 0 of producer 7 was not taken: it appends now, as a new batch.
    let outcome = log
        .append(&[stamped(Some((7, 0)), &[(Some("b"), "x")])], 0)
        .unwrap();
    assert_eq!((outcome.base_offset, outcome.duplicate), (1, false));
}

#[test]
fn a_truncation_of_an_erased_stream_is_refused_and_one_after_reopening_is_fresh() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    interleaved(&log);
    log.erase_stream(b"a", 0, 0).unwrap();
    assert!(is_erased(log.truncate_stream(b"a", 5)));
    log.reopen_stream(b"a").unwrap();
    let at = put(&log, "a", "new");
    put(&log, "a", "newer");
    let state = log.truncate_stream(b"a", at + 1).unwrap();
    assert_eq!(state.truncated_before, at + 1);
    assert_eq!(offsets(&log, "a").unwrap(), vec![at + 1]);
    log.truncate_stream(b"a", at + 2).unwrap();
    assert_eq!(log.stream_info(b"a").unwrap().last_offset, at + 1);
}

#[test]
fn marks_survive_a_clean_restart_and_a_crash() {
    let disk = SimDisk::new();
    {
        let log = sim_open(&disk, config(FlushPolicy::Always));
        interleaved(&log);
        log.sync().unwrap();
        log.truncate_stream(b"b", 4).unwrap();
        log.erase_stream(b"a", 5, 10).unwrap();
        log.close().unwrap();
    }
    {
        let log = sim_open(&disk, config(FlushPolicy::Always));
        assert!(is_erased(offsets(&log, "a")));
        assert_eq!(offsets(&log, "b").unwrap(), vec![5, 7]);
        log.reopen_stream(b"a").unwrap();
        put(&log, "a", "after");
        log.sync().unwrap();
        // No close: the crash loses nothing that was acknowledged.
    }
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, config(FlushPolicy::Always));
    let state = log.stream_marks(b"a");
    assert!(!state.erased);
    assert_eq!(
        (
            state.erase_before,
            state.erase_requested_ms,
            state.erase_deadline_ms
        ),
        (8, 5, 10)
    );
    assert_eq!(offsets(&log, "a").unwrap(), vec![8]);
    assert_eq!(offsets(&log, "b").unwrap(), vec![5, 7]);
}

#[test]
fn a_mark_beyond_what_a_crash_kept_is_lowered_so_reused_offsets_stay_readable() {
    let disk = SimDisk::new();
    {
        let log = sim_open(&disk, config(FlushPolicy::Never));
        put(&log, "a", "synced");
        log.sync().unwrap();
        // Never synced: the crash takes these, and their offsets are assigned again.
        put(&log, "a", "lost");
        put(&log, "a", "lost");
        log.erase_stream(b"a", 0, 0).unwrap();
        assert_eq!(log.stream_marks(b"a").erase_before, 3);
        log.reopen_stream(b"a").unwrap();
    }
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, config(FlushPolicy::Never));
    assert_eq!(log.high_watermark(), 1);
    assert_eq!(
        log.stream_marks(b"a").erase_before,
        1,
        "lowered to the recovered end"
    );
    assert_eq!(put(&log, "a", "again"), 1);
    assert_eq!(
        offsets(&log, "a").unwrap(),
        vec![1],
        "the record at a reused offset is read"
    );
    // The lowered mark was persisted: a second restart does not hide the new record.
    log.sync().unwrap();
    drop(log);
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, config(FlushPolicy::Never));
    assert_eq!(offsets(&log, "a").unwrap(), vec![1]);
}

#[test]
fn a_damaged_marks_file_keeps_the_partition_closed() {
    let disk = SimDisk::new();
    {
        let log = sim_open(&disk, config(FlushPolicy::Never));
        interleaved(&log);
        log.erase_stream(b"a", 0, 0).unwrap();
        log.close().unwrap();
    }
    let path = sim_path(MARKS_FILE);
    let mut bytes = disk.read_file(&path).expect("the marks file exists");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    disk.write_file_durably(&path, &bytes);
    let opened = PartitionLog::open_with_seal_mode(
        &super::sim_dir(),
        config(FlushPolicy::Never),
        std::sync::Arc::new(disk.clone()),
        super::super::log::SealMode::Deferred,
    );
    let Err(StorageError::Corrupt { detail, .. }) = opened else {
        panic!("a damaged marks file must refuse the open, got {opened:?}");
    };
    assert!(detail.contains("stream marks file"), "{detail}");
    assert!(detail.contains("Restore the file"), "{detail}");
    // Cut short, the same.
    disk.write_file_durably(&path, &bytes[..7]);
    assert!(PartitionLog::open_with_seal_mode(
        &super::sim_dir(),
        config(FlushPolicy::Never),
        std::sync::Arc::new(disk.clone()),
        super::super::log::SealMode::Deferred,
    )
    .is_err());
}

#[test]
fn new_marks_past_the_bound_are_refused() {
    let disk = SimDisk::new();
    let log = sim_open(
        &disk,
        LogConfig {
            stream_marks_per_partition_max: 2,
            ..config(FlushPolicy::Never)
        },
    );
    interleaved(&log);
    put(&log, "c", "c0");
    log.truncate_stream(b"a", 2).unwrap();
    log.erase_stream(b"b", 0, 0).unwrap();
    assert!(matches!(
        log.truncate_stream(b"c", 9),
        Err(StorageError::TooManyStreamMarks { max: 2 })
    ));
    assert!(matches!(
        log.erase_stream(b"c", 0, 0),
        Err(StorageError::TooManyStreamMarks { max: 2 })
    ));
    // Keys already marked change freely.
    log.truncate_stream(b"a", 4).unwrap();
    log.reopen_stream(b"b").unwrap();
    log.erase_stream(b"a", 0, 0).unwrap();
    assert_eq!(log.stream_mark_count(), 2);
}

#[test]
fn a_compacting_log_refuses_keyless_records_and_a_deleting_one_takes_them() {
    let disk = SimDisk::new();
    let compacted = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        ..config(FlushPolicy::Never)
    };
    let log = sim_open(&disk, compacted.clone());
    let refused = log.append(
        &[
            batch(&[(Some("a"), "1"), (Some("b"), "2")]),
            batch(&[(Some("c"), "3"), (None, "keyless"), (Some("d"), "4")]),
        ],
        0,
    );
    assert!(
        matches!(refused, Err(StorageError::KeylessRecord { record_index: 3 })),
        "{refused:?}"
    );
    let refused = log.append(&[batch(&[(Some("a"), "1"), (None, "last")])], 0);
    assert!(matches!(
        refused,
        Err(StorageError::KeylessRecord { record_index: 1 })
    ));
    assert_eq!(log.high_watermark(), 0, "nothing was written");
    assert_eq!(
        log.append(&[batch(&[(Some("a"), "1")])], 0).unwrap().base_offset,
        0
    );
    // A policy changed at run time applies to the next append.
    log.alter_config(config(FlushPolicy::Never)).unwrap();
    assert_eq!(
        log.append(&[batch(&[(None, "keyless")])], 0).unwrap().base_offset,
        1
    );
    log.alter_config(LogConfig {
        cleanup_policy: CleanupPolicy::CompactDelete,
        ..config(FlushPolicy::Never)
    })
    .unwrap();
    assert!(matches!(
        log.append(&[batch(&[(None, "keyless")])], 0),
        Err(StorageError::KeylessRecord { record_index: 0 })
    ));
}

#[test]
fn erasure_progress_counts_the_records_and_segments_the_cleaner_must_rewrite() {
    let disk = SimDisk::new();
    // Small segments: a few records each.
    let log = sim_open(
        &disk,
        LogConfig {
            segment_bytes: 300,
            ..config(FlushPolicy::Never)
        },
    );
    for round in 0..12 {
        put(&log, "a", &format!("a{round:02}"));
        put(&log, "b", &format!("b{round:02}"));
    }
    assert!(log.segment_count() > 3, "{} segments", log.segment_count());
    assert_eq!(log.erasure_progress(b"a").unwrap(), ErasureProgress::default());
    let state = log.erase_stream(b"a", 10, 20).unwrap();
    let progress = log.erasure_progress(b"a").unwrap();
    assert_eq!(progress.records_remaining, 12);
    let holding = log.segments_holding(b"a", state.erase_before).unwrap();
    assert_eq!(holding.records, 12);
    assert_eq!(
        progress.segments_remaining as usize,
        holding.closed.len() + usize::from(holding.active)
    );
    // `a` is at the even offsets: every segment with an even offset holds one of its records.
    let segments = log.segments_for_test();
    let with_a: Vec<i64> = segments
        .iter()
        .filter(|segment| (segment.base_offset..segment.next_offset()).any(|offset| offset % 2 == 0))
        .map(|segment| segment.base_offset)
        .collect();
    let active = segments.last().expect("an active segment").base_offset;
    let mut reported = holding.closed.clone();
    if holding.active {
        reported.push(active);
    }
    assert_eq!(reported, with_a);
    let snapshot = log.marks_snapshot();
    assert!(snapshot.removes(b"a", state.erase_before - 1));
    assert!(!snapshot.removes(b"b", 0));
    let pending = snapshot.pending_erasures();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].erase_before, pending[0].deadline_ms), (24, 20));
    assert_eq!(log.erasures_pending(), 1);

    // A stale completion (another erase point) changes nothing; the right one completes it.
    log.erasure_done(b"a", 3, 30).unwrap();
    assert_eq!(log.stream_marks(b"a").erase_completed_ms, 0);
    log.erasure_done(b"a", state.erase_before, 30).unwrap();
    assert_eq!(log.stream_marks(b"a").erase_completed_ms, 30);
    assert_eq!(log.erasure_progress(b"a").unwrap(), ErasureProgress::default());
    assert!(log.marks_snapshot().pending_erasures().is_empty());
    assert!(is_erased(offsets(&log, "a")), "complete and still erased");

    // A key with nothing to remove completes at once.
    let state = log.erase_stream(b"nobody", 40, 50).unwrap();
    assert_eq!(state.erase_completed_ms, 40);
    assert_eq!(log.erasures_pending(), 0);
}

#[test]
fn a_truncated_version_lost_in_a_crash_is_found_again_from_the_log() {
    let disk = SimDisk::new();
    {
        let log = sim_open(&disk, config(FlushPolicy::Never));
        put(&log, "a", "synced");
        put(&log, "b", "synced");
        log.sync().unwrap();
        put(&log, "a", "lost");
        put(&log, "a", "lost");
        let state = log.truncate_stream(b"a", 4).unwrap();
        assert_eq!(state.truncated_before, 4);
        assert_eq!(log.stream_last_offset(b"a").unwrap(), Some(3));
    }
    disk.crash(CrashMode::ForgetUnsynced);
    for round in 0..2 {
        let log = sim_open(&disk, config(FlushPolicy::Never));
        assert_eq!(log.high_watermark(), 2, "round {round}");
        assert_eq!(log.stream_marks(b"a").truncated_before, 2, "round {round}");
        // The version is the record the crash kept, never an offset past the log's end.
        assert_eq!(log.stream_last_offset(b"a").unwrap(), Some(0), "round {round}");
        let info = log.stream_info(b"a").unwrap();
        assert_eq!((info.first_offset, info.last_offset, info.records), (-1, 0, 0));
        log.close().unwrap();
    }
    let log = sim_open(&disk, config(FlushPolicy::Never));
    assert_eq!(conditional(&log, "a", Expected::Exact(0)), Ok(2));
    assert_eq!(offsets(&log, "a").unwrap(), vec![2]);
}
