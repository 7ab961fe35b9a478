//! Recovery never deletes acknowledged data: damage in trusted data (a sealed segment, any
//! segment followed by another, bytes a clean-shutdown checkpoint vouched for) is fenced and
//! reported, never cut; files that do not belong go to quarantine; offsets the directory shows
//! were assigned are never handed out again. Each case is followed by reads of everything,
//! more appends and a second open.

use bytes::Bytes;
use tidelog_proto::batch::{
    peek_batch_bytes, BatchHeader, BatchIter, BASE_OFFSET_OFFSET, BATCH_LENGTH_OFFSET,
};

use super::super::sim_disk::{CrashMode, SimDisk};
use super::super::{FlushPolicy, PartitionLog, RecoveryReport, StorageError};
use super::recovery::{
    crash_and_mutate, segment_bases, small_segments, small_segments_always, synced_log, HEADER,
};
use super::{config, read_all, segment_name, sim_open, sim_path, simple_batch};

/// A batch inside a data file: byte range and offsets.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    base_offset: i64,
    next_offset: i64,
}

fn spans(file: &[u8]) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut at = HEADER;
    while let Ok(Some(total)) = peek_batch_bytes(&file[at..]) {
        if at + total > file.len() {
            break;
        }
        let header = BatchHeader::parse(&file[at..]).unwrap();
        spans.push(Span {
            start: at,
            base_offset: header.base_offset,
            next_offset: header.next_offset(),
        });
        at += total;
    }
    spans
}

fn file_spans(disk: &SimDisk, base_offset: i64) -> Vec<Span> {
    spans(
        &disk
            .read_file(&sim_path(&segment_name(base_offset, "log")))
            .unwrap(),
    )
}

/// Checks what must hold after any damage: every batch outside the fenced ranges reads back
/// exactly as stored, each fenced range is refused with its range, a read before a fence stops
/// at its start, and the next append lands at `expected_next`.
fn check_after_damage(log: &PartitionLog, stored: &[u8], expected_next: i64) -> RecoveryReport {
    let report = log.recovery_report().clone();
    let fenced: Vec<(i64, i64)> = report
        .fenced
        .iter()
        .filter(|fence| fence.first_offset < fence.end_offset)
        .map(|fence| (fence.first_offset, fence.end_offset))
        .collect();
    let outside: Vec<u8> = BatchIter::new(Bytes::copy_from_slice(stored))
        .map(|batch| batch.unwrap())
        .filter(|batch| {
            let base = batch.header().base_offset;
            !fenced.iter().any(|(first, end)| (*first..*end).contains(&base))
        })
        .flat_map(|batch| batch.as_bytes().to_vec())
        .collect();
    assert_eq!(
        &read_all(log, 1 << 20)[..],
        &outside[..],
        "every batch outside the fences: {report:?}"
    );
    for (first, end) in &fenced {
        for offset in [*first, end - 1] {
            match log.read(offset, 1 << 20) {
                Err(StorageError::CorruptRange {
                    first_offset,
                    end_offset,
                }) => assert_eq!((first_offset, end_offset), (*first, *end)),
                other => panic!("read at fenced offset {offset}: {other:?} ({report:?})"),
            }
        }
        if *first > log.log_start_offset() {
            let before = log.read(first - 1, 1 << 30).unwrap();
            let last = BatchIter::new(before.records)
                .map(|batch| batch.unwrap().header().next_offset())
                .last()
                .unwrap();
            assert!(last <= *first, "a read before a fence stops at its start");
        }
    }
    assert_eq!(log.high_watermark(), expected_next, "{report:?}");
    let appended = log.append(&[simple_batch(2, 0, 5)], 0).unwrap();
    assert_eq!(appended.base_offset, expected_next, "{report:?}");
    log.sync().unwrap();
    assert_eq!(
        log.read(expected_next, 1 << 20).unwrap().records.len(),
        simple_batch(2, 0, 5).len()
    );
    report
}

/// Reopens after a crash and checks the same fences are found and nothing else changes.
fn reopen_is_stable(
    disk: &SimDisk,
    log: PartitionLog,
    report: &RecoveryReport,
    config: super::super::LogConfig,
) {
    let next = log.high_watermark();
    log.sync().unwrap();
    drop(log);
    disk.crash(CrashMode::ForgetUnsynced);
    let log = sim_open(disk, config);
    let again = log.recovery_report();
    let ranges = |report: &RecoveryReport| -> Vec<(i64, i64)> {
        report
            .fenced
            .iter()
            .map(|fence| (fence.first_offset, fence.end_offset))
            .collect()
    };
    assert_eq!(ranges(again), ranges(report), "{again:?}");
    assert!(again.quarantined.is_empty(), "{again:?}");
    assert!(again.truncations.is_empty(), "{again:?}");
    assert!(again.continued_at.is_none(), "{again:?}");
    assert_eq!(log.high_watermark(), next);
}

#[test]
fn a_flipped_byte_anywhere_in_a_sealed_segment_fences_only_that_batch() {
    // Which batch of the second segment, and which byte of it: the offset field and the
    // length field (not covered by the CRC), the magic, the CRC, a header field and the payload.
    let probe = synced_log(small_segments(), 30);
    let bases = segment_bases(&probe.0);
    assert!(bases.len() >= 4, "{bases:?}");
    let count = file_spans(&probe.0, bases[1]).len();
    assert!(count >= 3, "need a first, middle and last batch");
    for which in [0, count / 2, count - 1] {
        for (field, at) in [
            ("base offset", BASE_OFFSET_OFFSET + 7),
            ("length", BATCH_LENGTH_OFFSET + 3),
            ("length high byte", BATCH_LENGTH_OFFSET),
            ("magic", 16),
            ("crc", 18),
            ("record count", 58),
            ("payload", 70),
        ] {
            let context = format!("batch {which} of {count}, {field}");
            let (disk, stored, ends) = synced_log(small_segments(), 30);
            let span = file_spans(&disk, bases[1])[which];
            crash_and_mutate(&disk, &segment_name(bases[1], "log"), |file| {
                file[span.start + at] ^= 0x5a;
            });
            let log = sim_open(&disk, small_segments());
            assert_eq!(segment_bases(&disk), bases, "{context}: no segment removed");
            let end = ends.last().unwrap().1;
            let report = check_after_damage(&log, &stored, end);
            assert!(report.truncations.is_empty(), "{context}: {report:?}");
            assert!(report.quarantined.is_empty(), "{context}: {report:?}");
            let fence = report
                .fenced
                .iter()
                .find(|fence| fence.first_offset <= span.base_offset && fence.end_offset > span.base_offset)
                .unwrap_or_else(|| panic!("{context}: damaged batch not fenced: {report:?}"));
            assert_eq!(fence.segment_base_offset, bases[1], "{context}");
            assert_eq!(fence.first_offset, span.base_offset, "{context}: {report:?}");
            assert_eq!(fence.end_offset, span.next_offset, "{context}: {report:?}");
            assert_eq!(fence.from_bytes, span.start as u64, "{context}");
            assert_eq!(report.fenced.len(), 1, "{context}: {report:?}");
            reopen_is_stable(&disk, log, &report, small_segments());
        }
    }
}

#[test]
fn a_middle_segment_truncated_to_zero_is_quarantined_and_its_offsets_fenced() {
    let (disk, stored, ends) = synced_log(small_segments(), 20);
    let bases = segment_bases(&disk);
    crash_and_mutate(&disk, &segment_name(bases[1], "log"), Vec::clear);
    let log = sim_open(&disk, small_segments());
    // Every other segment is still there.
    let mut expected: Vec<i64> = bases.clone();
    expected.remove(1);
    assert_eq!(segment_bases(&disk), expected);
    let report = check_after_damage(&log, &stored, ends.last().unwrap().1);
    assert_eq!(report.fenced.len(), 1, "{report:?}");
    assert_eq!(
        (report.fenced[0].first_offset, report.fenced[0].end_offset),
        (bases[1], bases[2])
    );
    assert!(report.truncations.is_empty(), "{report:?}");
    assert!(
        disk.read_file(&sim_path(&format!(
            "quarantine/{}",
            segment_name(bases[1], "log")
        )))
        .is_some(),
        "{report:?}"
    );
    reopen_is_stable(&disk, log, &report, small_segments());
}

#[test]
fn a_middle_segment_cut_mid_batch_is_fenced_not_truncated() {
    let (disk, stored, ends) = synced_log(small_segments(), 20);
    let bases = segment_bases(&disk);
    let spans = file_spans(&disk, bases[1]);
    let cut = spans[1].start + 30;
    crash_and_mutate(&disk, &segment_name(bases[1], "log"), |file| file.truncate(cut));
    let log = sim_open(&disk, small_segments());
    let report = check_after_damage(&log, &stored, ends.last().unwrap().1);
    assert!(report.truncations.is_empty(), "{report:?}");
    assert_eq!(report.fenced.len(), 1, "{report:?}");
    assert_eq!(
        (report.fenced[0].first_offset, report.fenced[0].end_offset),
        (spans[1].base_offset, bases[2])
    );
    assert_eq!(
        disk.read_file(&sim_path(&segment_name(bases[1], "log")))
            .unwrap()
            .len(),
        cut,
        "the damaged file is left as found"
    );
    reopen_is_stable(&disk, log, &report, small_segments());
}

#[test]
fn stray_files_named_like_segments_are_quarantined_and_decide_nothing() {
    let (probe, _, _) = synced_log(small_segments(), 20);
    let bases = segment_bases(&probe);
    let inside = bases[1] + 1;
    let garbage: Vec<u8> = (0..700u32).map(|index| (index * 37 % 251) as u8).collect();
    let valid_copy = probe
        .read_file(&sim_path(&segment_name(bases[2], "log")))
        .unwrap();
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        ("empty inside a range", segment_name(inside, "log"), Vec::new()),
        (
            "garbage inside a range",
            segment_name(inside, "log"),
            garbage.clone(),
        ),
        (
            "a valid segment copied inside a range",
            segment_name(inside, "log"),
            valid_copy,
        ),
        (
            "an index inside a range",
            segment_name(inside, "index"),
            garbage.clone(),
        ),
        (
            "a time index inside a range",
            segment_name(inside, "timeindex"),
            Vec::new(),
        ),
        ("an unparseable name", "1000.log".to_string(), garbage.clone()),
    ];
    for (what, name, content) in cases {
        let (disk, stored, ends) = synced_log(small_segments(), 20);
        disk.crash(CrashMode::ForgetUnsynced);
        disk.write_file_durably(&sim_path(&name), &content);
        let log = sim_open(&disk, small_segments());
        assert_eq!(segment_bases(&disk), bases, "{what}");
        let report = check_after_damage(&log, &stored, ends.last().unwrap().1);
        assert!(report.fenced.is_empty(), "{what}: {report:?}");
        assert!(report.truncations.is_empty(), "{what}: {report:?}");
        assert_eq!(report.quarantined.len(), 1, "{what}: {report:?}");
        assert_eq!(
            disk.read_file(&sim_path(&format!("quarantine/{name}"))),
            Some(content),
            "{what}: moved intact"
        );
        reopen_is_stable(&disk, log, &report, small_segments());
    }
}

#[test]
fn a_stray_file_past_the_end_is_quarantined_and_its_offsets_never_reused() {
    // Under `always` every roll seals first, so nothing explains a file past the end.
    for content in [Vec::new(), vec![0x42u8; 300]] {
        let (disk, stored, ends) = synced_log(small_segments_always(), 20);
        let end = ends.last().unwrap().1;
        let stray = end + 1000;
        disk.crash(CrashMode::ForgetUnsynced);
        disk.write_file_durably(&sim_path(&segment_name(stray, "log")), &content);
        let log = sim_open(&disk, small_segments_always());
        let report = check_after_damage(&log, &stored, stray);
        assert_eq!(report.quarantined.len(), 1, "{report:?}");
        assert_eq!(report.continued_at, Some(stray), "{report:?}");
        assert!(report.truncations.is_empty(), "{report:?}");
        reopen_is_stable(&disk, log, &report, small_segments_always());
    }
}

#[test]
fn an_empty_last_segment_left_by_a_crashed_roll_is_the_active_segment() {
    let (disk, stored, ends) = synced_log(small_segments(), 20);
    let end = ends.last().unwrap().1;
    disk.crash(CrashMode::ForgetUnsynced);
    // Created, never written: not even its header.
    disk.write_file_durably(&sim_path(&segment_name(end, "log")), &[]);
    let log = sim_open(&disk, small_segments());
    let report = check_after_damage(&log, &stored, end);
    assert!(report.quarantined.is_empty(), "{report:?}");
    assert!(report.fenced.is_empty(), "{report:?}");
    assert_eq!(report.headers_repaired, vec![end], "{report:?}");
}

#[test]
fn damage_in_the_middle_of_the_active_segment_is_fenced_and_the_batches_after_it_kept() {
    let (disk, stored, ends) = synced_log(config(FlushPolicy::Never), 6);
    let (second_end, second_next) = ends[1];
    let (_, first_next) = ends[0];
    crash_and_mutate(&disk, &segment_name(0, "log"), |file| {
        file[second_end - 5] ^= 0x10
    });
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let report = check_after_damage(&log, &stored, ends.last().unwrap().1);
    assert!(report.truncations.is_empty(), "{report:?}");
    assert_eq!(report.fenced.len(), 1, "{report:?}");
    assert_eq!(
        (report.fenced[0].first_offset, report.fenced[0].end_offset),
        (first_next, second_next)
    );
}

#[test]
fn an_index_of_a_newer_version_is_rebuilt_from_the_log() {
    let (disk, stored, ends) = synced_log(small_segments(), 20);
    let bases = segment_bases(&disk);
    crash_and_mutate(&disk, &segment_name(bases[1], "index"), |file| {
        file[8..10].copy_from_slice(&7u16.to_be_bytes());
        let crc = crc32fast::hash(&file[..28]);
        file[28..32].copy_from_slice(&crc.to_be_bytes());
    });
    let log = sim_open(&disk, small_segments());
    let report = check_after_damage(&log, &stored, ends.last().unwrap().1);
    assert!(
        report
            .index_rebuilds
            .iter()
            .any(|rebuild| rebuild.segment_base_offset == bases[1]),
        "{report:?}"
    );
    assert!(report.fenced.is_empty(), "{report:?}");
}

/// A log closed cleanly (so a checkpoint vouches for its active segment), then damaged.
fn closed_cleanly() -> (SimDisk, Vec<u8>, i64) {
    let disk = SimDisk::new();
    let log = sim_open(&disk, config(FlushPolicy::Never));
    for round in 0..4 {
        log.append(&[simple_batch(3, round, 40)], 0).unwrap();
    }
    let stored = read_all(&log, 1 << 20).to_vec();
    let end = log.high_watermark();
    log.close().unwrap();
    drop(log);
    (disk, stored, end)
}

#[test]
fn a_flipped_byte_in_data_a_clean_shutdown_vouched_for_is_fenced_not_cut() {
    let (disk, stored, end) = closed_cleanly();
    crash_and_mutate(&disk, &segment_name(0, "log"), |file| {
        let last = file.len() - 4;
        file[last] ^= 0x01;
    });
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let report = check_after_damage(&log, &stored, end);
    assert!(report.truncations.is_empty(), "{report:?}");
    assert_eq!(report.fenced.len(), 1, "{report:?}");
    assert_eq!(report.fenced[0].end_offset, end, "{report:?}");
    assert_eq!(report.continued_at, Some(end), "{report:?}");
}

#[test]
fn a_cut_after_a_clean_shutdown_does_not_reuse_the_lost_offsets() {
    let (disk, stored, end) = closed_cleanly();
    crash_and_mutate(&disk, &segment_name(0, "log"), |file| {
        let cut = file.len() - 10;
        file.truncate(cut);
    });
    let log = sim_open(&disk, config(FlushPolicy::Never));
    let report = check_after_damage(&log, &stored, end);
    assert!(report.truncations.is_empty(), "{report:?}");
    assert_eq!(report.continued_at, Some(end), "{report:?}");
}

#[test]
fn a_roll_that_crashed_before_sealing_the_old_segment_cuts_only_its_unsynced_tail() {
    // Under `always` a roll creates the new segment, then seals the old one. A crash between
    // the two leaves the old segment unsealed (maybe with an unacknowledged torn tail) and the
    // new one empty: the roll never happened.
    let (disk, stored, ends) = synced_log(small_segments_always(), 20);
    let end = ends.last().unwrap().1;
    let active = *segment_bases(&disk).last().unwrap();
    crash_and_mutate(&disk, &segment_name(active, "log"), |file| {
        file.extend_from_slice(&simple_batch(3, 0, 30).as_bytes()[..40]);
    });
    let header = super::super::format::encode_file_header(super::super::format::FileKind::Log, end + 3);
    disk.write_file_durably(&sim_path(&segment_name(end + 3, "log")), &header);
    let log = sim_open(&disk, small_segments_always());
    let report = check_after_damage(&log, &stored, end);
    assert_eq!(report.truncations.len(), 1, "{report:?}");
    assert!(report.fenced.is_empty(), "{report:?}");
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    assert!(report.continued_at.is_none(), "{report:?}");
}

#[test]
fn the_first_segment_truncated_to_zero_keeps_the_log_start_and_fences_its_offsets() {
    let (disk, stored, ends) = synced_log(small_segments(), 20);
    let bases = segment_bases(&disk);
    crash_and_mutate(&disk, &segment_name(bases[0], "log"), Vec::clear);
    let log = sim_open(&disk, small_segments());
    assert_eq!(
        log.log_start_offset(),
        0,
        "the log start does not move past the damage"
    );
    let report = check_after_damage(&log, &stored, ends.last().unwrap().1);
    assert_eq!(report.fenced.len(), 1, "{report:?}");
    assert_eq!(
        (report.fenced[0].first_offset, report.fenced[0].end_offset),
        (0, bases[1])
    );
    assert!(report.quarantined.is_empty(), "{report:?}");
    reopen_is_stable(&disk, log, &report, small_segments());
}

#[test]
fn a_damaged_header_of_a_sealed_segment_is_rewritten_and_its_batches_kept() {
    let (disk, stored, ends) = synced_log(small_segments(), 20);
    let bases = segment_bases(&disk);
    crash_and_mutate(&disk, &segment_name(bases[1], "log"), |file| file[20] ^= 0x08);
    let log = sim_open(&disk, small_segments());
    let report = check_after_damage(&log, &stored, ends.last().unwrap().1);
    assert_eq!(report.headers_repaired, vec![bases[1]], "{report:?}");
    assert!(report.fenced.is_empty(), "{report:?}");
    assert!(report.truncations.is_empty(), "{report:?}");
    reopen_is_stable(&disk, log, &report, small_segments());
}
