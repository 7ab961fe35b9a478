//! Preallocation of the active segment under `Always`: zeros are kept ahead of the data so
//! appends overwrite instead of growing the file; an idle or nearly empty partition keeps
//! files of exactly its data; reads, sizes, retention and the checkpoint use the data end,
//! never the file length; a sealed segment and a cleanly closed log end exactly at their data;
//! a crash with zeros past the data recovers every synced batch; and only small syncs extend
//! the zeros (a stream of large syncs would pay twice the bytes for nothing).

use std::sync::Arc;

use super::super::sim_disk::{CrashMode, SimDisk};
use super::super::{FlushPolicy, LogConfig, PartitionLog};
use super::{os_path, read_all, segment_name, sim_open, sim_path, simple_batch, stored};

const CHUNK_BYTES: u64 = 64 << 10;

fn preallocating(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        preallocate_bytes: CHUNK_BYTES,
        flush,
        ..LogConfig::default()
    }
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).expect("the file exists").len()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Appends `count` one-record batches of about 1 KiB, each awaited until durable; returns the
/// bytes the log must hold.
fn append_durably(log: &PartitionLog, runtime: &tokio::runtime::Runtime, count: usize) -> Vec<u8> {
    let mut expected = Vec::new();
    for index in 0..count {
        append_batch_durably(log, runtime, &simple_batch(1, index as i64, 1000), &mut expected);
    }
    expected
}

/// Appends one batch, awaits it until durable and adds the bytes the log must hold for it to
/// `expected`.
fn append_batch_durably(
    log: &PartitionLog,
    runtime: &tokio::runtime::Runtime,
    batch: &tidelog_proto::batch::RecordBatch,
    expected: &mut Vec<u8>,
) {
    let outcome = log.append(std::slice::from_ref(batch), 0).expect("append");
    runtime
        .block_on(log.wait_durable(outcome.last_offset + 1))
        .expect("durable");
    expected.extend_from_slice(&stored(batch, outcome.base_offset));
}

#[test]
fn an_idle_or_nearly_empty_partition_preallocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let log = PartitionLog::open(dir.path(), preallocating(FlushPolicy::Always)).unwrap();
    log.sync().unwrap();
    let data_file = os_path(dir.path(), 0, "log");
    assert_eq!(
        file_len(&data_file),
        32,
        "an empty partition's data file is its header"
    );
    // Under 4 KiB of data: still exactly the data.
    append_durably(&log, &runtime, 2);
    let end = log.segments_for_test()[0].end();
    assert_eq!(file_len(&data_file), end);
}

#[test]
fn appends_overwrite_zeros_ahead_and_everything_uses_the_data_end() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let log = PartitionLog::open(dir.path(), preallocating(FlushPolicy::Always)).unwrap();
    let expected = append_durably(&log, &runtime, 40);
    let data_file = os_path(dir.path(), 0, "log");
    let end = log.segments_for_test()[0].end();
    let on_disk = file_len(&data_file);
    assert!(
        on_disk > end,
        "no zeros ahead: file {on_disk} bytes, data ends at {end}"
    );
    assert!(
        on_disk <= end + CHUNK_BYTES.min(end),
        "preallocated {} bytes ahead of {end}",
        on_disk - end
    );
    let bytes = std::fs::read(&data_file).unwrap();
    assert!(
        bytes[end as usize..].iter().all(|byte| *byte == 0),
        "past the data: zeros only"
    );
    // Reads, sizes and the high watermark see the data only.
    assert_eq!(&read_all(&log, 1 << 20)[..], &expected[..]);
    assert_eq!(log.high_watermark(), 40);
    let (offset_index, time_index) = log.segments_for_test()[0].index_file_bytes();
    assert_eq!(log.size_bytes(), end + offset_index + time_index);
    // A clean close cuts the zeros, so the checkpoint (which records the file length) matches.
    log.close().unwrap();
    drop(log);
    assert_eq!(file_len(&data_file), end);
    let log = PartitionLog::open(dir.path(), preallocating(FlushPolicy::Always)).unwrap();
    let report = log.recovery_report();
    assert!(report.clean_shutdown, "{report:?}");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(&read_all(&log, 1 << 20)[..], &expected[..]);
}

#[test]
fn a_sealed_segment_ends_exactly_at_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let config = LogConfig {
        segment_bytes: 32 << 10,
        ..preallocating(FlushPolicy::Always)
    };
    let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
    let expected = append_durably(&log, &runtime, 80);
    let segments = log.segments_for_test();
    assert!(segments.len() >= 2, "{} segments", segments.len());
    for closed in &segments[..segments.len() - 1] {
        assert!(closed.is_sealed());
        let path = os_path(dir.path(), closed.base_offset, "log");
        assert_eq!(
            file_len(&path),
            closed.end(),
            "sealed segment {}",
            closed.base_offset
        );
    }
    // A crash (the process dies; the files stay): sealed segments pass their tail check and
    // the active one's zeros are the end of its data, so every batch is still there.
    drop(segments);
    drop(log);
    let log = PartitionLog::open(dir.path(), config).unwrap();
    let report = log.recovery_report();
    assert!(report.fenced.is_empty(), "{report:?}");
    assert!(report.quarantined.is_empty(), "{report:?}");
    assert!(report.headers_repaired.is_empty(), "{report:?}");
    assert_eq!(log.high_watermark(), 80);
    assert_eq!(&read_all(&log, 1 << 20)[..], &expected[..]);
}

#[test]
fn power_loss_with_zeros_past_the_data_keeps_every_acknowledged_batch() {
    let disk = SimDisk::new();
    let runtime = runtime();
    let config = preallocating(FlushPolicy::Always);
    let log = sim_open(&disk, config.clone());
    let expected = append_durably(&log, &runtime, 30);
    let end = log.segments_for_test()[0].end();
    let current = disk
        .read_file(&sim_path(&segment_name(0, "log")))
        .expect("data file")
        .len() as u64;
    assert!(current > end, "the scenario needs zeros past the data");
    // Written but never synced: a power loss may take it.
    log.append(&[simple_batch(1, 99, 1000)], 0).unwrap();
    drop(log);
    disk.crash(CrashMode::ForgetUnsynced);
    let log = PartitionLog::open_with_disk(&super::sim_dir(), config, Arc::new(disk.clone())).unwrap();
    assert!(log.high_watermark() >= 30, "{:?}", log.recovery_report());
    assert_eq!(&read_all(&log, 1 << 20)[..expected.len()], &expected[..]);
    // Offsets continue right after what was recovered.
    let next = log.high_watermark();
    let outcome = log.append(&[simple_batch(1, 100, 10)], 0).unwrap();
    assert_eq!(outcome.base_offset, next);
}

#[test]
fn a_stream_of_large_syncs_writes_no_zeros_and_small_syncs_bring_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let config = LogConfig {
        preallocate_sync_bytes_max: 8 << 10,
        ..preallocating(FlushPolicy::Always)
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    let data_file = os_path(dir.path(), 0, "log");
    let mut expected = Vec::new();
    // Each sync writes out about 20 KiB, past the 8 KiB threshold: no zeros, ever.
    for index in 0..6 {
        append_batch_durably(&log, &runtime, &simple_batch(20, index * 20, 1000), &mut expected);
        let end = log.segments_for_test()[0].end();
        assert_eq!(
            file_len(&data_file),
            end,
            "sync {index} of about 20 KiB preallocated"
        );
    }
    // The stream turns to syncs of about 1 KiB: the zeros come back after the first.
    for index in 0..2 {
        append_batch_durably(
            &log,
            &runtime,
            &simple_batch(1, 1000 + index, 1000),
            &mut expected,
        );
    }
    let end = log.segments_for_test()[0].end();
    assert!(
        file_len(&data_file) > end,
        "no zeros ahead after small syncs: file {} bytes, data ends at {end}",
        file_len(&data_file)
    );
    assert_eq!(&read_all(&log, 1 << 20)[..], &expected[..]);
}
