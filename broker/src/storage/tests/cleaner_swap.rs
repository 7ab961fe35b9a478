//! Cleaning beside readers, writers and crashes: a reader holding the old segment list across
//! a swap, appends and reads while cleans run, and a crash at every disk operation of a clean
//! on the simulated disk.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tidelog_proto::batch::{BatchIter, Compression};

use super::super::sim_disk::{CrashMode, Fault, FaultErrno, FaultOp, SimDisk};
use super::super::{CompactionConfig, PartitionLog, Unthrottled};
use super::cleaner::{closed_end, compacted, compacted_model, produce, visible, Produced, NOW, OPTIONS};
use super::{sim_open, simple_batch};

#[test]
fn a_reader_holding_the_old_segments_across_the_swap_reads_the_old_data() {
    use super::super::{FileCache, FileCacheLimits};
    let dir = tempfile::tempdir().unwrap();
    // Two open files at most: every closed segment's descriptor is evicted and reopened by
    // path, which after the swap names the cleaned file (or nothing).
    let cache = FileCache::new(
        Arc::new(super::super::OsDisk),
        FileCacheLimits::with_open_files(2),
    );
    let config = compacted(2048, CompactionConfig::default());
    let log = PartitionLog::open_with_disk(dir.path(), config, cache.disk()).unwrap();
    produce(&log, 200, 7, 0, Compression::None);
    log.sync().unwrap();
    let old = log.segments_for_test();
    let high_watermark = log.high_watermark();
    let old_bytes: Vec<Bytes> = old
        .iter()
        .map(|segment| {
            segment
                .read(segment.base_offset, 1 << 20, high_watermark)
                .unwrap()
                .unwrap_or_default()
        })
        .collect();
    let outcome = log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
    assert!(outcome.segments_written > 0);
    // Touch many other files so the old descriptors would be evicted.
    for _ in 0..3 {
        let _ = visible(&log);
    }
    for (segment, bytes) in old.iter().zip(&old_bytes) {
        let again = segment
            .read(segment.base_offset, 1 << 20, high_watermark)
            .unwrap()
            .unwrap_or_default();
        assert_eq!(
            &again, bytes,
            "old segment {} reads its old bytes",
            segment.base_offset
        );
        // Its per-key index answers by scanning the old data, exactly.
        let key = b"key-3";
        let found =
            super::super::key_index::locate(segment, key, 0, i64::MAX, segment.end(), &test_index_context())
                .unwrap();
        let expected = BatchIter::new(bytes.clone())
            .flat_map(|batch| {
                batch
                    .unwrap()
                    .records()
                    .map(|record| record.unwrap())
                    .collect::<Vec<_>>()
            })
            .filter(|record| record.key.as_deref() == Some(&key[..]))
            .count();
        assert_eq!(found.len(), expected);
    }
}

fn test_index_context() -> super::super::key_index::IndexContext {
    super::super::key_index::IndexContext {
        disk: Arc::new(super::super::OsDisk),
        hash: super::super::KeyHash::DEFAULT,
        decompressed_bytes_max: 1 << 26,
        background: false,
    }
}

#[test]
fn appends_and_reads_go_on_while_a_clean_runs() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let config = compacted(2048, CompactionConfig::default());
    let log = Arc::new(PartitionLog::open(dir.path(), config).unwrap());
    let mut produced = produce(&log, 300, 11, 0, Compression::None);
    log.sync().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let log = Arc::clone(&log);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut produced = Vec::new();
            // Bounded: stops when the cleans are done, or after 5,000 appends.
            for round in 0..5_000 {
                if done.load(Ordering::Acquire) && round > 50 {
                    break;
                }
                produced.extend(produce(&log, 1, 11, 0, Compression::None));
            }
            produced
        })
    };
    let reader = {
        let log = Arc::clone(&log);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut reads = 0;
            // Bounded like the writer.
            for _ in 0..2_000 {
                if done.load(Ordering::Acquire) && reads > 5 {
                    break;
                }
                // Every read from the start sees offsets only going up, and the last
                // record of every key below what it read.
                let seen = visible(&log);
                assert!(seen.windows(2).all(|pair| pair[0].0 < pair[1].0));
                reads += 1;
            }
            reads
        })
    };
    for round in 0..5 {
        log.sync().unwrap();
        log.clean(NOW + round, &OPTIONS, &Unthrottled).unwrap();
    }
    done.store(true, Ordering::Release);
    produced.extend(writer.join().unwrap());
    assert!(reader.join().unwrap() > 0);
    log.sync().unwrap();
    let seen = visible(&log);
    // Whatever was cleaned, the latest record of every key is there, with its value.
    let mut latest: HashMap<&[u8], &Produced> = HashMap::new();
    for record in &produced {
        latest.insert(&record.1, record);
    }
    for record in latest.values() {
        assert!(seen.contains(record), "{:?} missing", record.0);
    }
    // Every record seen is one that was produced at that offset.
    let by_offset: HashMap<i64, &Produced> = produced.iter().map(|record| (record.0, record)).collect();
    for record in &seen {
        assert_eq!(by_offset.get(&record.0), Some(&record), "offset {}", record.0);
    }
}

/// The directory's visible records after a crash at every disk operation of a clean: always
/// the old log or the cleaned one, never a mix and never less; the next clean works.
#[test]
fn a_crash_at_any_step_of_a_clean_leaves_the_old_log_or_the_new_one() {
    let config = compacted(2048, CompactionConfig::default());
    let build = || {
        let disk = SimDisk::new();
        let log = sim_open(&disk, config.clone());
        let produced = produce(&log, 120, 5, 7, Compression::None);
        log.sync().unwrap();
        let cleaned_end = closed_end(&log);
        log.close().unwrap();
        (disk, produced, cleaned_end)
    };
    let (disk, produced, cleaned_end) = build();
    // Each group of segments is swapped on its own: a crash between two swaps leaves the
    // groups before it cleaned and the rest as they were. Here every group is one segment.
    let bases: Vec<i64> = {
        let log = sim_open(&disk, config.clone());
        let segments = log.segments_for_test();
        segments
            .iter()
            .map(|segment| segment.base_offset)
            .filter(|base| *base < cleaned_end)
            .collect()
    };
    let old = produced.clone();
    let new = compacted_model(&produced, cleaned_end);
    let states: Vec<Vec<Produced>> = bases
        .iter()
        .skip(1)
        .chain([&cleaned_end])
        .map(|end| {
            let cleaned = compacted_model(&produced, cleaned_end);
            let mut state: Vec<Produced> = cleaned.into_iter().filter(|(offset, ..)| offset < end).collect();
            state.extend(produced.iter().filter(|(offset, ..)| offset >= end).cloned());
            state
        })
        .collect();
    assert_eq!(states.last(), Some(&new));
    assert_ne!(old, new);
    let mut saw_new = false;
    let mut saw_old = false;
    // Bounded: a clean makes far fewer disk operations than this; the loop ends once a run
    // completes without reaching its fault.
    for after in 0..5_000 {
        let (disk, _, _) = build();
        let log = sim_open(&disk, config.clone());
        disk.inject(Fault {
            op: FaultOp::Any,
            after,
            errno: FaultErrno::Io,
            sticky: true,
        });
        let result = log.clean(NOW, &OPTIONS, &Unthrottled);
        let fired = disk.faults_fired() > 0;
        drop(log);
        disk.clear_faults();
        // Every other round a torn crash: some unsynced appends and names survive, at random.
        disk.crash(if after % 2 == 0 {
            CrashMode::ForgetUnsynced
        } else {
            CrashMode::TornAppends(after)
        });
        let log = sim_open(&disk, config.clone());
        let seen = visible(&log);
        if seen == new {
            saw_new = true;
        } else if seen == old {
            saw_old = true;
        } else {
            assert!(
                states.contains(&seen),
                "after a crash at operation {after} ({result:?}): neither old nor new for some group: {:?}",
                seen.iter().map(|record| record.0).collect::<Vec<_>>()
            );
        }
        let names = disk.file_names(&super::sim_dir());
        assert!(
            !names
                .iter()
                .any(|name| name.ends_with(".cleaned") || name.starts_with("cleaner-swap")),
            "operation {after}: {names:?}"
        );
        assert!(
            log.recovery_report().fenced.is_empty(),
            "{:?}",
            log.recovery_report()
        );
        assert!(
            log.recovery_report().quarantined.is_empty(),
            "{:?}",
            log.recovery_report()
        );
        // The log goes on: appends at the old end, and a clean (again) gives the new log.
        assert_eq!(
            log.append(&[simple_batch(1, 9_000, 10)], 0).unwrap().base_offset,
            120
        );
        log.clean(NOW, &OPTIONS, &Unthrottled).unwrap();
        assert_eq!(&visible(&log)[..new.len()], &new[..], "operation {after}");
        if !fired {
            assert!(result.is_ok(), "{result:?}");
            break;
        }
    }
    assert!(saw_old && saw_new);
}
