//! Model test: random appends, reads, timestamp lookups, retention, syncs, clean restarts,
//! crashes, bit flips in sealed segments, stray files and failed creates on the simulated disk,
//! checked against an in-memory list of batches. After a crash or damage every synced batch
//! (under `Always`: everything whose `wait_durable` returned) must still be readable exactly as
//! appended or lie inside a range recovery reported as fenced; whatever else is readable must
//! be what was appended at those offsets; and no offset is ever handed out twice below
//! anything the log kept.
//!
//! The per-key index is checked the same way: every key's stream (`stream_last_offset`,
//! `stream_info`, `read_stream` both ways) must be exactly the keyed records of the readable
//! batches, through bit flips in, deletions of and stray `.keys` files too, with the default
//! hash or (half the seeds) one under which every key collides.
//!
//! Seeds are deterministic; a failure prints its seed. `TIDELOG_MODEL_SEED=<n>` runs one seed.

use bytes::Bytes;
use tidelog_proto::batch::{BatchIter, RecordBatch};

use super::super::key_index::tests::{check_key, Reference, COLLIDING};

use super::super::sim_disk::{CrashMode, SimDisk, SplitMix};
use super::super::{FlushPolicy, LogConfig, PartitionLog, StorageError};
use super::{batch, read_all, sim_open, stored};

const SEEDS: u64 = 48;
const STEPS: usize = 160;

#[derive(Debug, Clone)]
struct ModelBatch {
    base_offset: i64,
    timestamps: Vec<i64>,
    bytes: Bytes,
}

impl ModelBatch {
    fn next_offset(&self) -> i64 {
        self.base_offset + self.timestamps.len() as i64
    }
}

#[derive(Debug, Default)]
struct Model {
    /// Batches from the log start on, including appended-but-not-visible ones.
    batches: Vec<ModelBatch>,
    next_offset: i64,
    /// Everything below this is known to be synced.
    synced_offset: i64,
    /// Ranges the last open fenced: reads there must fail with `CorruptRange`.
    holes: Vec<(i64, i64)>,
}

impl Model {
    fn visible(&self, high_watermark: i64) -> impl Iterator<Item = &ModelBatch> {
        self.batches
            .iter()
            .take_while(move |batch| batch.base_offset < high_watermark)
    }

    fn in_hole(&self, offset: i64) -> bool {
        self.holes
            .iter()
            .any(|(first, end)| (*first..*end).contains(&offset))
    }

    fn visible_bytes(&self, high_watermark: i64) -> Vec<u8> {
        self.visible(high_watermark)
            .flat_map(|batch| batch.bytes.iter().copied())
            .collect()
    }
}

#[test]
fn log_matches_the_model_through_appends_retention_restarts_and_crashes() {
    let seeds: Vec<u64> = match std::env::var("TIDELOG_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("TIDELOG_MODEL_SEED is a number")],
        // TIDELOG_MODEL_SEEDS=<n> runs more seeds (a longer soak).
        Err(_) => {
            let count = std::env::var("TIDELOG_MODEL_SEEDS")
                .ok()
                .and_then(|count| count.parse().ok());
            (0..count.unwrap_or(SEEDS)).collect()
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for seed in seeds {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed, &runtime)));
        if let Err(panic) = result {
            eprintln!("model test failed with seed {seed}; rerun with TIDELOG_MODEL_SEED={seed}");
            std::panic::resume_unwind(panic);
        }
    }
}

fn random_config(rng: &mut SplitMix) -> LogConfig {
    let flush = match rng.below(3) {
        0 => FlushPolicy::Always,
        1 => FlushPolicy::Never,
        _ => FlushPolicy::Interval(std::time::Duration::from_millis(5)),
    };
    LogConfig {
        segment_bytes: 500 + rng.below(3000),
        segment_ms: 2000 + rng.below(20_000) as i64,
        retention_ms: if rng.below(2) == 0 {
            -1
        } else {
            3000 + rng.below(20_000) as i64
        },
        retention_bytes: if rng.below(2) == 0 {
            -1
        } else {
            2000 + rng.below(8000) as i64
        },
        index_interval_bytes: rng.below(500) as u32,
        flush,
        // Preallocation off, or small enough that segments of a few KiB exercise it.
        preallocate_bytes: rng.below(3) * 2048,
        key_hash: if rng.below(2) == 0 {
            COLLIDING
        } else {
            super::super::KeyHash::DEFAULT
        },
        ..LogConfig::default()
    }
}

fn run(seed: u64, runtime: &tokio::runtime::Runtime) {
    let mut rng = SplitMix(seed);
    let config = random_config(&mut rng);
    let always = config.flush == FlushPolicy::Always;
    let disk = SimDisk::new();
    let mut log = sim_open(&disk, config.clone());
    let mut model = Model::default();
    let mut now: i64 = 10_000;
    for step in 0..STEPS {
        now += rng.below(300) as i64;
        let context = format!("seed {seed} step {step} config {config:?}");
        match rng.below(100) {
            0..=44 => {
                let count = 1 + rng.below(3) as usize;
                let batches: Vec<_> = (0..count)
                    .map(|_| {
                        let records = 1 + rng.below(5) as usize;
                        let timestamps: Vec<i64> =
                            (0..records).map(|_| now - 500 + rng.below(1000) as i64).collect();
                        // Few tags, so keys (tag, index) repeat and streams grow.
                        batch(&timestamps, rng.below(120) as usize, rng.below(6) as u8)
                    })
                    .collect();
                let total: usize = batches.iter().map(|batch| batch.len()).sum();
                if total + 32 > config.segment_bytes as usize {
                    let result = log.append(&batches, now);
                    assert!(
                        matches!(result, Err(StorageError::BatchTooLarge { .. })),
                        "{context}: {result:?}"
                    );
                    continue;
                }
                let outcome = log
                    .append(&batches, now)
                    .unwrap_or_else(|error| panic!("{context}: {error}"));
                assert_eq!(outcome.base_offset, model.next_offset, "{context}");
                record_append(&mut model, &batches);
                assert_eq!(outcome.last_offset + 1, model.next_offset, "{context}");
                if always {
                    if rng.below(3) != 0 {
                        runtime.block_on(log.wait_durable(model.next_offset)).unwrap();
                        model.synced_offset = model.next_offset;
                        assert_eq!(log.high_watermark(), model.next_offset, "{context}");
                    }
                } else {
                    assert_eq!(log.high_watermark(), model.next_offset, "{context}");
                }
            }
            45..=58 => check_read(&log, &model, &mut rng, &context),
            59..=62 => check_streams(&log, &model, &context),
            63..=67 => check_timestamp_lookup(&log, &model, &mut rng, &context),
            68..=74 => {
                let before = log.log_start_offset();
                log.run_maintenance(now)
                    .unwrap_or_else(|error| panic!("{context}: {error}"));
                let start = log.log_start_offset();
                assert!(start >= before, "{context}");
                assert!(
                    !model
                        .batches
                        .iter()
                        .any(|batch| batch.base_offset < start && batch.next_offset() > start),
                    "{context}: log start {start} is inside a batch"
                );
                model.batches.retain(|batch| batch.base_offset >= start);
                model.holes.retain(|(_, end)| *end > start);
            }
            75..=79 => {
                log.sync().unwrap();
                model.synced_offset = model.next_offset;
                assert_eq!(log.high_watermark(), model.next_offset, "{context}");
            }
            80..=85 => {
                log.close().unwrap();
                drop(log);
                log = sim_open(&disk, config.clone());
                let report = log.recovery_report();
                assert!(report.clean_shutdown, "{context}: {report:?}");
                assert!(
                    report.truncations.is_empty()
                        && report.quarantined.is_empty()
                        && report.continued_at.is_none(),
                    "{context}: {report:?}"
                );
                assert_eq!(fenced_ranges(&log), model.holes, "{context}: {report:?}");
                assert_eq!(log.high_watermark(), model.next_offset, "{context}");
                model.synced_offset = model.next_offset;
                check_everything(&log, &model, &context);
            }
            86..=89 => {
                // Damage on a synced log: a flipped byte in a sealed segment, a stray file.
                log.sync().unwrap();
                model.synced_offset = model.next_offset;
                let start_before = log.log_start_offset();
                drop(log);
                disk.crash(CrashMode::ForgetUnsynced);
                let what = damage(&disk, &model, start_before, &mut rng);
                if std::env::var_os("TIDELOG_MODEL_VERBOSE").is_some() {
                    eprintln!("seed {seed} step {step}: damage: {what}");
                }
                log = sim_open(&disk, config.clone());
                let context = format!("{context} after {what}");
                after_reopen(&log, &mut model, start_before, true, &context);
            }
            90..=92 => {
                // A failed write or create (a roll may be under way): the append fails, then
                // the machine crashes. Nothing of the failed append may come back.
                disk.fail_writes_after(rng.below(4));
                let timestamps: Vec<i64> = (0..3).map(|index| now + index).collect();
                let big = batch(&timestamps, (config.segment_bytes as usize / 3).min(600), 7);
                let mut failed = false;
                for _ in 0..3 {
                    if big.len() + 32 > config.segment_bytes as usize {
                        break;
                    }
                    match log.append(std::slice::from_ref(&big), now) {
                        Ok(outcome) => {
                            assert_eq!(outcome.base_offset, model.next_offset, "{context}");
                            record_append(&mut model, std::slice::from_ref(&big));
                        }
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                let start_before = log.log_start_offset();
                drop(log);
                disk.crash(CrashMode::ForgetUnsynced);
                log = sim_open(&disk, config.clone());
                let context = format!("{context} after a failed write (failed: {failed})");
                after_reopen(&log, &mut model, start_before, false, &context);
            }
            _ => {
                let start_before = log.log_start_offset();
                drop(log);
                let mode = if rng.below(2) == 0 {
                    CrashMode::ForgetUnsynced
                } else {
                    CrashMode::TornAppends(rng.next())
                };
                disk.crash(mode);
                log = sim_open(&disk, config.clone());
                if std::env::var_os("TIDELOG_MODEL_VERBOSE").is_some() {
                    let report = log.recovery_report();
                    eprintln!(
                        "seed {seed} step {step}: crash {mode:?} kept {} of {} (synced {}), {} truncations, {} fences",
                        log.high_watermark(),
                        model.next_offset,
                        model.synced_offset,
                        report.truncations.len(),
                        report.fenced.len()
                    );
                }
                after_reopen(
                    &log,
                    &mut model,
                    start_before,
                    false,
                    &format!("{context} ({mode:?})"),
                );
            }
        }
        let high_watermark = log.high_watermark();
        assert!(high_watermark <= model.next_offset, "{context}");
        assert!(high_watermark >= model.synced_offset, "{context}");
        assert!(log.log_start_offset() <= high_watermark, "{context}");
    }
    check_everything(&log, &model, &format!("seed {seed} end"));
}

fn record_append(model: &mut Model, batches: &[tidelog_proto::batch::RecordBatch]) {
    for appended in batches {
        let model_batch = ModelBatch {
            base_offset: model.next_offset,
            timestamps: appended
                .records()
                .map(|record| record.unwrap().timestamp)
                .collect(),
            bytes: stored(appended, model.next_offset),
        };
        model.next_offset = model_batch.next_offset();
        model.batches.push(model_batch);
    }
}

/// The non-empty offset ranges the log's last open fenced, at or after its log start.
fn fenced_ranges(log: &PartitionLog) -> Vec<(i64, i64)> {
    let start = log.log_start_offset();
    log.recovery_report()
        .fenced
        .iter()
        .filter(|fence| fence.first_offset < fence.end_offset && fence.end_offset > start)
        .map(|fence| (fence.first_offset, fence.end_offset))
        .collect()
}

/// Damages a synced, closed log on `disk`; says what it did.
fn damage(disk: &SimDisk, model: &Model, log_start: i64, rng: &mut SplitMix) -> String {
    let dir = super::sim_dir();
    let mut bases: Vec<i64> = disk
        .file_names(&dir)
        .iter()
        .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
        .collect();
    bases.sort_unstable();
    let end = model.next_offset;
    let mut keys_files: Vec<String> = disk
        .file_names(&dir)
        .into_iter()
        .filter(|name| name.ends_with(".keys"))
        .collect();
    keys_files.sort();
    match rng.below(6) {
        3 if !keys_files.is_empty() => {
            let name = &keys_files[rng.below(keys_files.len() as u64) as usize];
            let path = super::sim_path(name);
            let mut bytes = disk.read_file(&path).unwrap();
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
            disk.write_file_durably(&path, &bytes);
            format!("a bit flip at byte {at} of {name}")
        }
        4 if !keys_files.is_empty() => {
            let name = &keys_files[rng.below(keys_files.len() as u64) as usize];
            disk.remove_durably(&super::sim_path(name));
            format!("{name} deleted")
        }
        5 if end > log_start + 1 => {
            // A stray `.keys`: a copy of another segment's, or garbage, under any base.
            let at = log_start + rng.below((end - log_start) as u64 + 5) as i64;
            let content = match keys_files.first() {
                Some(name) if rng.below(2) == 0 => disk.read_file(&super::sim_path(name)).unwrap(),
                _ => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
            };
            let name = super::segment_name(at, "keys");
            if keys_files.contains(&name) {
                return "nothing (the stray would replace a .keys file)".to_string();
            }
            disk.write_file_durably(&super::sim_path(&name), &content);
            format!("a stray {name} of {} bytes", content.len())
        }
        0 if bases.len() >= 2 => {
            // Any byte of a batch of a sealed (not the last) segment.
            let base = bases[rng.below(bases.len() as u64 - 1) as usize];
            let path = super::sim_path(&super::segment_name(base, "log"));
            let mut bytes = disk.read_file(&path).unwrap();
            if bytes.len() <= 32 {
                return "nothing (the chosen segment is empty)".to_string();
            }
            let at = 32 + rng.below(bytes.len() as u64 - 32) as usize;
            bytes[at] ^= 1 << rng.below(8);
            disk.write_file_durably(&path, &bytes);
            format!("a bit flip at byte {at} of segment {base}")
        }
        1 if end > log_start + 1 => {
            let at = log_start + 1 + rng.below((end - log_start - 1) as u64) as i64;
            if bases.contains(&at) {
                return "nothing (the stray would replace a segment)".to_string();
            }
            let extension = ["log", "index", "timeindex"][rng.below(3) as usize];
            let content: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            disk.write_file_durably(&super::sim_path(&super::segment_name(at, extension)), &content);
            format!("a stray {extension} file at {at} of {} bytes", content.len())
        }
        _ => "nothing".to_string(),
    }
}

/// After a crash (or damage and a crash): every synced batch is readable as appended (or,
/// after damage, inside a fence); whatever is readable is what was appended there; the model
/// becomes what the log now holds.
fn after_reopen(log: &PartitionLog, model: &mut Model, start_before: i64, damaged: bool, context: &str) {
    let recovered = log.high_watermark();
    let report = log.recovery_report().clone();
    assert!(
        recovered >= model.synced_offset,
        "{context}: offsets went back: recovered up to {recovered}, synced {} {report:?}",
        model.synced_offset
    );
    assert!(recovered <= model.next_offset, "{context}: {report:?}");
    assert_eq!(log.log_start_offset(), start_before, "{context}: {report:?}");
    model.holes = fenced_ranges(log);
    let readable: Vec<(i64, Bytes)> = BatchIter::new(read_all(log, 700))
        .map(|batch| {
            let batch = batch.unwrap();
            (batch.header().base_offset, batch.as_bytes().clone())
        })
        .collect();
    let mut kept = Vec::new();
    for (base_offset, bytes) in &readable {
        let original = model
            .batches
            .iter()
            .find(|batch| batch.base_offset == *base_offset)
            .unwrap_or_else(|| {
                panic!("{context}: a batch at {base_offset} that was never appended: {report:?}")
            });
        // The partition leader epoch (bytes 12..16) is covered by neither the batch CRC nor
        // any check we can make (it is the producer's), so a flip there goes undetected.
        let mask = |bytes: &Bytes| {
            let mut bytes = bytes.to_vec();
            bytes[12..16].fill(0);
            bytes
        };
        assert_eq!(
            mask(&original.bytes),
            mask(bytes),
            "{context}: batch at {base_offset} changed"
        );
        kept.push(ModelBatch {
            bytes: bytes.clone(),
            ..original.clone()
        });
    }
    for batch in &model.batches {
        if batch.next_offset() > model.synced_offset {
            continue;
        }
        let present = readable.iter().any(|(base, _)| *base == batch.base_offset);
        let fenced = (batch.base_offset..batch.next_offset()).all(|offset| model.in_hole(offset));
        assert!(
            present || (damaged && fenced),
            "{context}: synced batch at {} lost (fenced: {fenced}) {report:?}",
            batch.base_offset
        );
    }
    model.batches = kept;
    model.next_offset = recovered;
    model.synced_offset = recovered;
    check_everything(log, model, context);
}

/// Every key's stream, as the readable batches hold it.
fn check_streams(log: &PartitionLog, model: &Model, context: &str) {
    let high_watermark = log.high_watermark();
    let mut reference = Reference::default();
    for batch in model.visible(high_watermark) {
        let (parsed, _) = RecordBatch::split_first(&batch.bytes).unwrap();
        for record in parsed.records() {
            let record = record.unwrap();
            if let Some(key) = record.key {
                reference.streams.entry(key.to_vec()).or_default().push((
                    record.offset,
                    record.value.map(|value| value.to_vec()).unwrap_or_default(),
                ));
            }
        }
    }
    let keys: Vec<Vec<u8>> = reference.streams.keys().cloned().chain([vec![9, 9]]).collect();
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for key in &keys {
            check_key(log, &reference, key, 2);
        }
    }));
    if let Err(panic) = checked {
        eprintln!("{context}: stream check failed");
        std::panic::resume_unwind(panic);
    }
}

fn check_everything(log: &PartitionLog, model: &Model, context: &str) {
    check_streams(log, model, context);
    let high_watermark = log.high_watermark();
    assert_eq!(
        &read_all(log, 700)[..],
        &model.visible_bytes(high_watermark)[..],
        "{context}"
    );
    for (first, end) in &model.holes {
        assert!(
            matches!(log.read(*first, 100), Err(StorageError::CorruptRange { .. })),
            "{context}: fenced offset {first} is served"
        );
        assert!(*end <= high_watermark, "{context}: fence past the end");
    }
}

fn check_read(log: &PartitionLog, model: &Model, rng: &mut SplitMix, context: &str) {
    let high_watermark = log.high_watermark();
    let start = log.log_start_offset();
    let offset = start + rng.below((high_watermark - start + 2) as u64) as i64 - (rng.below(8) == 0) as i64;
    let max_bytes = rng.below(1500) as usize;
    let result = log.read(offset, max_bytes);
    if offset < start || offset > high_watermark {
        assert!(
            matches!(result, Err(StorageError::OffsetOutOfRange { .. })),
            "{context}: {result:?}"
        );
        return;
    }
    if model.in_hole(offset) {
        assert!(
            matches!(result, Err(StorageError::CorruptRange { .. })),
            "{context}: read in a fenced range: {result:?}"
        );
        return;
    }
    let outcome = result.unwrap_or_else(|error| panic!("{context}: read {offset}: {error}"));
    assert_eq!(outcome.high_watermark, high_watermark, "{context}");
    if offset == high_watermark {
        assert!(outcome.records.is_empty(), "{context}");
        return;
    }
    let first = model
        .batches
        .iter()
        .position(|batch| batch.next_offset() > offset)
        .unwrap_or_else(|| panic!("{context}: model has no batch at {offset}"));
    let returned: Vec<_> = BatchIter::new(outcome.records.clone())
        .map(|batch| batch.unwrap())
        .collect();
    assert!(
        !returned.is_empty(),
        "{context}: empty read at {offset} below {high_watermark}"
    );
    for pair in returned.windows(2) {
        assert_eq!(
            pair[0].header().next_offset(),
            pair[1].header().base_offset,
            "{context}: a read crossed a gap"
        );
    }
    for (index, got) in returned.iter().enumerate() {
        let expected = &model.batches[first + index];
        assert_eq!(
            got.as_bytes(),
            &expected.bytes,
            "{context}: batch {index} of read at {offset}"
        );
        assert!(
            expected.base_offset < high_watermark,
            "{context}: read past the high watermark"
        );
    }
    if returned.len() > 1 {
        assert!(
            outcome.records.len() <= max_bytes,
            "{context}: read exceeds max_bytes"
        );
    }
}

fn check_timestamp_lookup(log: &PartitionLog, model: &Model, rng: &mut SplitMix, context: &str) {
    let high_watermark = log.high_watermark();
    let visible: Vec<(i64, i64)> = model
        .visible(high_watermark)
        .flat_map(|batch| {
            batch
                .timestamps
                .iter()
                .enumerate()
                .map(move |(index, timestamp)| (batch.base_offset + index as i64, *timestamp))
        })
        .collect();
    let low = visible.iter().map(|(_, timestamp)| *timestamp).min().unwrap_or(0);
    let high = visible.iter().map(|(_, timestamp)| *timestamp).max().unwrap_or(0);
    let target = low + rng.below((high - low + 20) as u64) as i64 - 10;
    let expected = visible
        .iter()
        .find(|(_, timestamp)| *timestamp >= target)
        .copied();
    let found = log
        .offset_for_timestamp(target)
        .unwrap_or_else(|error| panic!("{context}: {error}"));
    assert_eq!(found, expected, "{context}: timestamp {target}");
}
