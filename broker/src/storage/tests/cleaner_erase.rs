//! The physical purge of an erased stream (issue 9 §3): every record of the key below its
//! erase point leaves every segment file, the active one rolled first; other records keep
//! their offsets; the per-key index forgets the key; the erasure completes.

use tidelog_proto::batch::Compression;

use super::super::{CleanDue, FlushPolicy, LogConfig, PartitionLog, StorageError, Unthrottled};
use super::cleaner::{produce, visible, Produced, NOW, OPTIONS};
use super::config;

fn history(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        ..config(flush)
    }
}

/// Whether any data file of `dir` (old or cleaned) contains `needle`.
fn files_contain(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if !name.contains(".log") {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        if bytes.windows(needle.len()).any(|window| window == needle) {
            found.push(name);
        }
    }
    found
}

#[test]
fn an_erased_stream_leaves_every_segment_and_the_rest_keeps_its_offsets() {
    for flush in [FlushPolicy::Always, FlushPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let config = history(flush);
        let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        // Key 2's records are everywhere, the active segment included.
        let produced = produce(&log, 150, 5, 0, Compression::None);
        log.sync().unwrap();
        let key: &[u8] = b"key-2";
        assert!(!files_contain(dir.path(), b"value-2-").is_empty());
        let marks = log.erase_stream(key, NOW, NOW + 60_000).unwrap();
        assert!(marks.erased);
        assert_eq!(marks.erase_completed_ms, 0);
        let progress = log.erasure_progress(key).unwrap();
        assert!(
            progress.records_remaining > 0 && progress.segments_remaining > 0,
            "{progress:?}"
        );
        let stats = log.cleaner_stats(NOW);
        assert_eq!(
            stats.due,
            Some(CleanDue::Erasure {
                deadline_ms: NOW + 60_000
            })
        );
        assert_eq!(stats.erasures_pending, 1);

        let outcome = log.clean(NOW + 1, &OPTIONS, &Unthrottled).unwrap();
        assert_eq!(outcome.erasures_completed, 1, "{outcome:?}");
        assert_eq!(outcome.records_removed, 30);
        let marks = log.stream_marks(key);
        assert_eq!(marks.erase_completed_ms, NOW + 1);
        assert_eq!(log.erasure_progress(key).unwrap().records_remaining, 0);
        assert_eq!(log.cleaner_stats(NOW).due, None);
        // The bytes are gone from every file; every other record is where it was.
        let values: Vec<Vec<u8>> = produced
            .iter()
            .filter(|(_, k, _)| k == key)
            .map(|(_, _, value)| value.clone().unwrap())
            .collect();
        for value in &values {
            assert!(
                files_contain(dir.path(), value).is_empty(),
                "{flush:?}: {:?} still on disk",
                String::from_utf8_lossy(value)
            );
        }
        let expected: Vec<Produced> = produced.iter().filter(|(_, k, _)| k != key).cloned().collect();
        assert_eq!(visible(&log), expected, "{flush:?}");
        assert!(matches!(
            log.read_stream(key, 0, super::super::Direction::Forward, 10, 1 << 20),
            Err(StorageError::StreamErased { .. })
        ));
        // Appends of other keys go on at the old end; the erased key stays refused.
        let next = produce(&log, 1, 1, 0, Compression::None);
        assert_eq!(next[0].0, 150);
        log.close().unwrap();
        drop(log);
        let log = PartitionLog::open(dir.path(), config).unwrap();
        assert!(log.recovery_report().is_clean(), "{:?}", log.recovery_report());
        assert_eq!(log.stream_marks(key).erase_completed_ms, NOW + 1);
        let mut expected = expected;
        expected.extend(next);
        assert_eq!(visible(&log), expected);
        let verdict = super::super::verify_partition(dir.path(), "t/0".to_string());
        drop(log);
        assert!(verdict.problems.is_empty(), "{verdict:?}");
    }
}

#[test]
fn an_erasure_whose_records_are_only_in_the_active_segment_rolls_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(
        dir.path(),
        history(FlushPolicy::Interval(std::time::Duration::from_secs(3600))),
    )
    .unwrap();
    let produced = produce(&log, 8, 2, 0, Compression::None);
    assert_eq!(log.segment_count(), 1);
    log.erase_stream(b"key-1", NOW, NOW + 1_000).unwrap();
    let outcome = log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
    assert_eq!(outcome.erasures_completed, 1);
    assert_eq!(
        log.segment_count(),
        2,
        "rolled, then the old active segment cleaned"
    );
    let expected: Vec<Produced> = produced
        .iter()
        .filter(|(_, k, _)| k != b"key-1")
        .cloned()
        .collect();
    assert_eq!(visible(&log), expected);
    assert!(files_contain(dir.path(), b"value-1-").is_empty());
    // A key erased that holds nothing is complete at once; the cleaner has nothing to do.
    log.erase_stream(b"never-written", NOW, NOW + 1_000).unwrap();
    assert_eq!(log.cleaner_stats(NOW).erasures_pending, 0);
}

#[test]
fn a_truncation_is_applied_by_the_next_rewrite_of_its_segments() {
    use super::super::{CleanupPolicy, CompactionConfig};
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..CompactionConfig::default()
        },
        ..history(FlushPolicy::Never)
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    let produced = produce(&log, 100, 4, 0, Compression::None);
    // Key 1 truncated past everything it has in the closed segments: even its latest record
    // there goes (marks win over compaction).
    log.sync().unwrap();
    let segments = log.segments_for_test();
    let closed_end = segments[segments.len() - 2].next_offset();
    log.truncate_stream(b"key-1", closed_end).unwrap();
    log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
    let seen = visible(&log);
    assert!(
        !seen
            .iter()
            .any(|(offset, key, _)| key == b"key-1" && *offset < closed_end),
        "{:?}",
        seen.iter().map(|record| record.0).collect::<Vec<_>>()
    );
    // Key 0 keeps its latest record below the cleaned end.
    let latest_zero = produced
        .iter()
        .filter(|(offset, key, _)| key == b"key-0" && *offset < closed_end)
        .map(|(offset, ..)| *offset)
        .max()
        .unwrap();
    assert!(seen.iter().any(|(offset, ..)| *offset == latest_zero));
}

#[test]
fn a_read_inside_a_batch_whose_later_records_went_goes_on_to_a_record_at_or_after_it() {
    use super::super::{CleanupPolicy, CompactionConfig};
    use super::cleaner::kv_batch;
    use tidelog_proto::batch::BatchIter;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: 0.0,
            ..CompactionConfig::default()
        },
        ..history(FlushPolicy::Never)
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    // Each batch: a key of its own, then "hot" twice; every "hot" but the very last goes, so
    // each cleaned batch keeps only its first record.
    let value = [b'v'; 40];
    for round in 0..60 {
        let own = format!("own-{round}");
        let batch = kv_batch(
            &[
                (own.as_bytes(), Some(&value[..])),
                (b"hot", Some(&value[..])),
                (b"hot", Some(&value[..])),
            ],
            1_000 + round,
            Compression::None,
        );
        log.append(&[batch], 0).unwrap();
    }
    log.sync().unwrap();
    log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
    // From inside every cleaned batch, even one read batch at a time, a read holds a record
    // at or after the offset asked for.
    let segments = log.segments_for_test();
    let cleaned_end = segments[segments.len() - 2].next_offset();
    let mut checked = 0;
    for base in (0..cleaned_end - 3).step_by(3) {
        let from = base + 1;
        let read = log.read(from, 1).unwrap();
        let offsets: Vec<i64> = BatchIter::new(read.records)
            .flat_map(|batch| {
                batch
                    .unwrap()
                    .records()
                    .map(|record| record.unwrap().offset)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            offsets.iter().any(|offset| *offset >= from),
            "read from {from}: {offsets:?}"
        );
        assert!(offsets.windows(2).all(|pair| pair[0] < pair[1]));
        checked += 1;
    }
    assert!(checked > 10);
}

#[test]
fn one_clean_purges_an_erasure_and_then_compacts_when_both_are_due() {
    use super::super::{CleanupPolicy, CompactionConfig};
    use super::cleaner::compacted_model;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        compaction: CompactionConfig {
            // Due by max lag only, which an erasure's due must not hide.
            min_cleanable_dirty_ratio: 1.0,
            max_compaction_lag_ms: 1,
            ..CompactionConfig::default()
        },
        ..history(FlushPolicy::Never)
    };
    let log = PartitionLog::open(dir.path(), config).unwrap();
    let produced = produce(&log, 120, 4, 0, Compression::None);
    log.sync().unwrap();
    let segments = log.segments_for_test();
    let closed_end = segments[segments.len() - 2].next_offset();
    log.erase_stream(b"key-3", NOW, NOW + 1_000).unwrap();
    let outcome = log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
    assert_eq!(outcome.erasures_completed, 1);
    // key-3 gone everywhere; the active segment was rolled for it, so everything is closed
    // and compacted: the latest record of every other key.
    assert_eq!(log.segments_for_test().last().unwrap().base_offset, 120);
    let rest: Vec<Produced> = produced
        .iter()
        .filter(|(_, key, _)| key != b"key-3")
        .cloned()
        .collect();
    assert_eq!(visible(&log), compacted_model(&rest, 120));
    assert!(closed_end < 120);
}
