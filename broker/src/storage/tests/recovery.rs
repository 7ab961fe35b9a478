//! Recovery from damaged files on the simulated disk: each case must recover, say what it
//! did in the report, and keep appending at the right offset.

use tidelog_proto::batch::BatchIter;

use super::super::sim_disk::{CrashMode, SimDisk};
use super::super::{FlushPolicy, LogConfig, StorageError};
use super::{config, read_all, segment_name, sim_open, sim_path, simple_batch};

pub(super) const HEADER: usize = 32;

/// A log of `batches` synced batches on a fresh simulated disk; returns the disk, the stored
/// bytes (after the data file header) and the end offset of each batch.
pub(super) fn synced_log(config: LogConfig, batches: usize) -> (SimDisk, Vec<u8>, Vec<(usize, i64)>) {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config);
    let mut ends = Vec::new();
    let mut position = HEADER;
    for round in 0..batches {
        let batch = simple_batch(1 + round % 3, round as i64 * 100, 50);
        let outcome = log.append(std::slice::from_ref(&batch), 0).unwrap();
        position += batch.len();
        ends.push((position, outcome.last_offset + 1));
    }
    log.sync().unwrap();
    let bytes = read_all(&log, 1 << 20).to_vec();
    drop(log);
    (disk, bytes, ends)
}

pub(super) fn crash_and_mutate(disk: &SimDisk, name: &str, mutate: impl FnOnce(&mut Vec<u8>)) {
    disk.crash(CrashMode::ForgetUnsynced);
    let path = sim_path(name);
    let mut bytes = disk.read_file(&path).expect("file exists");
    mutate(&mut bytes);
    disk.write_file_durably(&path, &bytes);
}

#[test]
fn active_segment_cut_mid_batch_is_truncated_to_the_last_whole_batch() {
    let (disk, bytes, ends) = synced_log(config(FlushPolicy::Never), 5);
    let (cut_at, _) = ends[3];
    crash_and_mutate(&disk, &segment_name(0, "log"), |file| file.truncate(cut_at + 20));
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let report = log.recovery_report();
    assert!(!report.clean_shutdown);
    assert_eq!(report.truncations.len(), 1, "{report:?}");
    let truncation = &report.truncations[0];
    assert_eq!(
        (truncation.from_bytes, truncation.to_bytes),
        ((cut_at + 20) as u64, cut_at as u64)
    );
    assert_eq!(truncation.next_offset, ends[3].1);
    assert_eq!(log.high_watermark(), ends[3].1);
    assert_eq!(&read_all(&log, 1 << 20)[..], &bytes[..cut_at - HEADER]);
    assert_eq!(
        log.append(&[simple_batch(1, 0, 1)], 0).unwrap().base_offset,
        ends[3].1
    );
}

#[test]
fn flipped_byte_in_the_last_batch_fails_its_crc_and_is_truncated() {
    let (disk, bytes, ends) = synced_log(config(FlushPolicy::Never), 4);
    let (last_end, _) = ends[3];
    crash_and_mutate(&disk, &segment_name(0, "log"), |file| file[last_end - 3] ^= 0x20);
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let report = log.recovery_report();
    assert_eq!(report.truncations.len(), 1, "{report:?}");
    assert!(report.truncations[0].reason.contains("CRC"), "{report:?}");
    assert_eq!(log.high_watermark(), ends[2].1);
    assert_eq!(&read_all(&log, 1 << 20)[..], &bytes[..ends[2].0 - HEADER]);
    assert_eq!(
        log.append(&[simple_batch(2, 0, 1)], 0).unwrap().base_offset,
        ends[2].1
    );
}

#[test]
fn zero_filled_tail_is_the_clean_end_of_the_data_not_damage() {
    // A preallocated (or extended but never written) active segment ends in zeros.
    let (disk, bytes, ends) = synced_log(config(FlushPolicy::Never), 3);
    crash_and_mutate(&disk, &segment_name(0, "log"), |file| {
        file.extend_from_slice(&[0u8; 4096])
    });
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let report = log.recovery_report().clone();
    assert!(report.truncations.is_empty(), "{report:?}");
    assert!(report.fenced.is_empty(), "{report:?}");
    assert_eq!(log.high_watermark(), ends[2].1);
    assert_eq!(&read_all(&log, 1 << 20)[..], &bytes[..]);
    // Appends overwrite the zeros, and a crash after a sync keeps them.
    let appended = log.append(&[simple_batch(2, 0, 1)], 0).unwrap();
    assert_eq!(appended.base_offset, ends[2].1);
    log.sync().unwrap();
    drop(log);
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, config(FlushPolicy::Never));
    assert_eq!(log.high_watermark(), appended.last_offset + 1);
}

/// Small segments under `flush = always`, where every roll seals the old segment first.
pub(super) fn small_segments_always() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Always,
        ..small_segments()
    }
}

pub(super) fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 600,
        index_interval_bytes: 100,
        ..config(FlushPolicy::Never)
    }
}

/// Base offsets of the segments of a closed log on `disk`.
pub(super) fn segment_bases(disk: &SimDisk) -> Vec<i64> {
    let mut bases: Vec<i64> = disk
        .file_names(&super::sim_dir())
        .iter()
        .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
        .collect();
    bases.sort_unstable();
    bases
}

#[test]
fn deleted_or_corrupt_index_of_a_closed_segment_is_rebuilt_from_the_log() {
    let (disk, bytes, ends) = synced_log(small_segments(), 20);
    let bases = segment_bases(&disk);
    assert!(bases.len() >= 4, "{bases:?}");
    disk.crash(CrashMode::ForgetUnsynced);
    disk.remove_durably(&sim_path(&segment_name(bases[0], "index")));
    let time_index = sim_path(&segment_name(bases[1], "timeindex"));
    let mut damaged = disk.read_file(&time_index).unwrap();
    assert!(
        damaged.len() > HEADER,
        "closed segments have a closing time entry"
    );
    damaged[HEADER + 3] ^= 0x01;
    disk.write_file_durably(&time_index, &damaged);

    let log = sim_open(&disk, small_segments());
    let report = log.recovery_report().clone();
    let rebuilt: Vec<i64> = report
        .index_rebuilds
        .iter()
        .map(|rebuild| rebuild.segment_base_offset)
        .collect();
    assert!(
        rebuilt.contains(&bases[0]) && rebuilt.contains(&bases[1]),
        "{report:?}"
    );
    assert!(report.truncations.is_empty(), "{report:?}");
    assert_eq!(log.high_watermark(), ends.last().unwrap().1);
    assert_eq!(&read_all(&log, 300)[..], &bytes[..]);
    // The rebuilt time index serves lookups.
    assert_eq!(
        log.offset_for_timestamp(0).unwrap().map(|(offset, _)| offset),
        Some(0)
    );
    drop(log);
    // And was written back: the next open finds nothing to rebuild.
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, small_segments());
    assert!(
        log.recovery_report().index_rebuilds.is_empty(),
        "{:?}",
        log.recovery_report()
    );
}

#[test]
fn corrupt_checkpoint_is_rejected_and_the_active_segment_is_scanned() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    log.append(&[simple_batch(3, 0, 20), simple_batch(2, 0, 20)], 0)
        .unwrap();
    log.close().unwrap();
    drop(log);
    disk.crash(CrashMode::ForgetUnsynced);
    let checkpoint = sim_path("clean-shutdown.checkpoint");
    let mut bytes = disk.read_file(&checkpoint).expect("close writes a checkpoint");
    bytes[30] ^= 0xff;
    disk.write_file_durably(&checkpoint, &bytes);

    let log = sim_open(&disk, config(FlushPolicy::Never));
    let report = log.recovery_report();
    assert!(!report.clean_shutdown);
    assert!(
        report
            .checkpoint_rejected
            .as_deref()
            .unwrap_or("")
            .contains("CRC"),
        "{report:?}"
    );
    assert!(report.bytes_scanned > 0);
    assert_eq!(log.high_watermark(), 5);
    assert!(
        disk.read_file(&checkpoint).is_none(),
        "a rejected checkpoint is removed too"
    );
    assert_eq!(log.append(&[simple_batch(1, 0, 1)], 0).unwrap().base_offset, 5);
}

#[test]
fn checkpoint_that_does_not_match_the_files_is_not_trusted() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    log.append(&[simple_batch(3, 0, 20)], 0).unwrap();
    log.close().unwrap();
    drop(log);
    // Data appended behind the checkpoint's back (as if by a crashed later run).
    disk.crash(CrashMode::ForgetUnsynced);
    let path = sim_path(&segment_name(0, "log"));
    let mut bytes = disk.read_file(&path).unwrap();
    bytes.extend_from_slice(&[7u8; 10]);
    disk.write_file_durably(&path, &bytes);
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let report = log.recovery_report();
    assert!(!report.clean_shutdown);
    assert!(report.checkpoint_rejected.is_some());
    assert_eq!(report.truncations.len(), 1);
    assert_eq!(log.high_watermark(), 3);
}

#[test]
fn corrupt_last_batch_of_a_sealed_segment_is_fenced_and_later_segments_kept() {
    let (disk, bytes, ends) = synced_log(small_segments(), 20);
    let bases = segment_bases(&disk);
    assert!(bases.len() >= 4, "{bases:?}");
    // Damage the last batch of the second segment: the segment is sealed and followed by
    // others, so this is corruption, never a crash tail.
    let name = segment_name(bases[1], "log");
    crash_and_mutate(&disk, &name, |file| {
        let last = file.len() - 2;
        file[last] ^= 0x55;
    });
    let log = sim_open(&disk, small_segments());
    let report = log.recovery_report().clone();
    assert!(report.truncations.is_empty(), "{report:?}");
    assert_eq!(report.fenced.len(), 1, "{report:?}");
    let fence = &report.fenced[0];
    assert_eq!(fence.segment_base_offset, bases[1]);
    assert_eq!(
        fence.end_offset, bases[2],
        "the damaged batch ran up to the next segment"
    );
    assert!(fence.first_offset < fence.end_offset);
    let end = ends.last().unwrap().1;
    assert_eq!(log.high_watermark(), end, "nothing after the damage is lost");
    assert_eq!(log.segment_count(), bases.len());
    assert!(matches!(
        log.read(fence.first_offset, 1 << 20),
        Err(StorageError::CorruptRange { first_offset, end_offset })
            if (first_offset, end_offset) == (fence.first_offset, fence.end_offset)
    ));
    // Everything else reads back intact: the stored bytes minus the damaged batch.
    let kept = read_all(&log, 1 << 20);
    let damaged: Vec<u8> = bytes_of_offsets(&bytes, fence.first_offset, fence.end_offset);
    assert_eq!(kept.len() + damaged.len(), bytes.len());
    assert_eq!(log.append(&[simple_batch(1, 0, 1)], 0).unwrap().base_offset, end);
    assert_eq!(segment_bases(&disk), bases, "no segment file was removed");
}

/// The stored bytes of the batches whose offsets lie in `first..end`.
pub(super) fn bytes_of_offsets(bytes: &[u8], first: i64, end: i64) -> Vec<u8> {
    BatchIter::new(bytes::Bytes::copy_from_slice(bytes))
        .map(|batch| batch.unwrap())
        .filter(|batch| batch.header().base_offset >= first && batch.header().base_offset < end)
        .flat_map(|batch| batch.as_bytes().to_vec())
        .collect()
}

#[test]
fn gap_left_by_an_interrupted_deletion_is_fenced_and_nothing_is_dropped() {
    let (disk, bytes, ends) = synced_log(small_segments(), 20);
    let bases = segment_bases(&disk);
    disk.crash(CrashMode::ForgetUnsynced);
    for extension in ["log", "index", "timeindex"] {
        disk.remove_durably(&sim_path(&segment_name(bases[1], extension)));
    }
    let log = sim_open(&disk, small_segments());
    let report = log.recovery_report().clone();
    assert_eq!(report.fenced.len(), 1, "{report:?}");
    assert_eq!(
        (report.fenced[0].first_offset, report.fenced[0].end_offset),
        (bases[1], bases[2])
    );
    assert_eq!(log.log_start_offset(), bases[0]);
    assert_eq!(log.high_watermark(), ends.last().unwrap().1);
    assert!(matches!(
        log.read(bases[1], 100),
        Err(StorageError::CorruptRange { .. })
    ));
    let kept = read_all(&log, 1 << 20);
    let missing = bytes_of_offsets(&bytes, bases[1], bases[2]);
    assert_eq!(kept.len() + missing.len(), bytes.len());
}

#[test]
fn orphaned_index_files_are_quarantined_and_temp_files_removed() {
    let disk = SimDisk::new();
    drop(sim_open(&disk, config(FlushPolicy::Never)));
    disk.write_file_durably(&sim_path(&segment_name(500, "index")), b"junk");
    disk.write_file_durably(&sim_path("clean-shutdown.checkpoint.tmp"), b"junk");
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let report = log.recovery_report().clone();
    assert_eq!(
        report.files_removed,
        vec!["clean-shutdown.checkpoint.tmp".to_string()]
    );
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    assert_eq!(
        disk.read_file(&sim_path(&format!("quarantine/{}", segment_name(500, "index")))),
        Some(b"junk".to_vec()),
        "moved, not deleted"
    );
    // No record was ever in an index: its name decides nothing.
    assert_eq!(log.append(&[simple_batch(1, 0, 1)], 0).unwrap().base_offset, 0);
}

#[test]
fn damaged_data_file_header_is_rewritten_and_the_batches_kept() {
    let (disk, bytes, ends) = synced_log(config(FlushPolicy::Never), 3);
    crash_and_mutate(&disk, &segment_name(0, "log"), |file| file[2] ^= 0xff);
    let log = sim_open(&disk, config(FlushPolicy::Never));
    assert_eq!(log.recovery_report().headers_repaired, vec![0]);
    assert_eq!(log.high_watermark(), ends[2].1);
    assert_eq!(&read_all(&log, 1 << 20)[..], &bytes[..]);
}

#[test]
fn newer_format_version_is_refused_rather_than_repaired() {
    let (disk, _, _) = synced_log(config(FlushPolicy::Never), 1);
    crash_and_mutate(&disk, &segment_name(0, "log"), |file| {
        file[8..10].copy_from_slice(&9u16.to_be_bytes());
        let crc = crc32fast::hash(&file[..28]);
        file[28..32].copy_from_slice(&crc.to_be_bytes());
    });
    let result = super::super::PartitionLog::open_with_disk(
        &super::sim_dir(),
        config(FlushPolicy::Never),
        std::sync::Arc::new(disk.clone()),
    );
    assert!(
        matches!(result, Err(StorageError::UnsupportedVersion { found: 9, .. })),
        "{result:?}"
    );
}

#[test]
fn failed_write_leaves_no_phantom_batch_after_restart() {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    log.append(&[simple_batch(2, 0, 10)], 0).unwrap();
    log.sync().unwrap();
    disk.fail_writes_after(0);
    let result = log.append(&[simple_batch(3, 0, 10)], 0);
    assert!(matches!(result, Err(StorageError::Io { .. })), "{result:?}");
    assert_eq!(log.high_watermark(), 2);
    drop(log);
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, config(FlushPolicy::Never));
    assert_eq!(log.high_watermark(), 2);
    let records = log.read(0, 1 << 20).unwrap().records;
    assert_eq!(BatchIter::new(records).count(), 1);
}

#[test]
fn closed_segments_not_yet_sealed_lose_their_unsynced_tail_and_the_unsynced_segments_after_it() {
    // Under `never` a roll does not wait for the disk: after a crash the log ends at the first
    // byte lost, and the unsynced segments written after it go to quarantine (never deleted).
    let disk = SimDisk::new();
    let log = sim_open(&disk, small_segments());
    let mut next = 0;
    for round in 0..10 {
        next = log.append(&[simple_batch(2, round, 60)], 0).unwrap().last_offset + 1;
    }
    log.sync().unwrap();
    let synced = next;
    let synced_bytes = read_all(&log, 1 << 20);
    let segments_at_sync = log.segment_count();
    for round in 0..20 {
        log.append(&[simple_batch(2, round, 60)], 0).unwrap();
    }
    assert!(
        log.segment_count() > segments_at_sync + 2,
        "rolls happened without syncing"
    );
    drop(log);
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, small_segments());
    let report = log.recovery_report().clone();
    assert_eq!(log.high_watermark(), synced, "{report:?}");
    assert_eq!(read_all(&log, 1 << 20), synced_bytes);
    assert!(!report.quarantined.is_empty(), "{report:?}");
    assert!(report.fenced.is_empty(), "{report:?}");
    assert_eq!(
        log.append(&[simple_batch(1, 0, 1)], 0).unwrap().base_offset,
        synced
    );
    drop(log);
    // What recovery kept is sealed or active now: a second crash loses nothing more.
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(&disk, small_segments());
    assert_eq!(log.high_watermark(), synced);
    assert!(
        log.recovery_report().quarantined.is_empty(),
        "{:?}",
        log.recovery_report()
    );
}

#[test]
fn background_sealer_seals_rolled_segments_on_the_real_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = super::super::PartitionLog::open(dir.path(), small_segments()).unwrap();
    for round in 0..30 {
        log.append(&[simple_batch(2, round, 60)], 0).unwrap();
    }
    // sync() seals whatever the sealer has not reached yet, so afterwards all closed segments
    // carry the flag whether or not the thread got there first.
    log.sync().unwrap();
    let segments = log.segments_for_test();
    assert!(segments.len() > 3);
    for segment in &segments[..segments.len() - 1] {
        assert!(segment.is_sealed(), "segment {} not sealed", segment.base_offset);
        let header = std::fs::read(&segment.paths.log).unwrap();
        assert_eq!(
            u16::from_be_bytes([header[10], header[11]]),
            1,
            "sealed flag on disk"
        );
    }
    assert!(!segments[segments.len() - 1].is_sealed());
    drop(log);
    let log = super::super::PartitionLog::open(dir.path(), small_segments()).unwrap();
    assert_eq!(log.high_watermark(), 60);
    assert!(log.recovery_report().is_clean(), "{:?}", log.recovery_report());
}
