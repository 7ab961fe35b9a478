//! Model test: random appends, reads, timestamp lookups, retention, syncs, clean restarts and
//! crashes on the simulated disk, checked against an in-memory list of batches. After a crash
//! the log must be exactly a prefix of what was appended that includes everything synced
//! (under `Always`: everything whose `wait_durable` returned).
//!
//! Seeds are deterministic; a failure prints its seed. `TIDELOG_MODEL_SEED=<n>` runs one seed.

use bytes::Bytes;
use tidelog_proto::batch::BatchIter;

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
}

impl Model {
    fn visible(&self, high_watermark: i64) -> impl Iterator<Item = &ModelBatch> {
        self.batches
            .iter()
            .take_while(move |batch| batch.base_offset < high_watermark)
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
                        batch(&timestamps, rng.below(120) as usize, rng.next() as u8)
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
                for appended in &batches {
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
            45..=64 => check_read(&log, &model, &mut rng, &context),
            65..=69 => check_timestamp_lookup(&log, &model, &mut rng, &context),
            70..=76 => {
                let before = log.log_start_offset();
                log.run_maintenance(now)
                    .unwrap_or_else(|error| panic!("{context}: {error}"));
                let start = log.log_start_offset();
                assert!(start >= before, "{context}");
                model.batches.retain(|batch| batch.base_offset >= start);
                let first = model
                    .batches
                    .first()
                    .map_or(model.next_offset, |batch| batch.base_offset);
                assert_eq!(first, start, "{context}: log start is not a batch boundary");
            }
            77..=81 => {
                log.sync().unwrap();
                model.synced_offset = model.next_offset;
                assert_eq!(log.high_watermark(), model.next_offset, "{context}");
            }
            82..=88 => {
                log.close().unwrap();
                drop(log);
                log = sim_open(&disk, config.clone());
                let report = log.recovery_report();
                assert!(report.clean_shutdown, "{context}: {report:?}");
                assert!(report.is_clean(), "{context}: {report:?}");
                assert_eq!(log.high_watermark(), model.next_offset, "{context}");
                model.synced_offset = model.next_offset;
                check_everything(&log, &model, &context);
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
                let recovered = log.high_watermark();
                let report = log.recovery_report();
                if std::env::var_os("TIDELOG_MODEL_VERBOSE").is_some() {
                    eprintln!(
                        "seed {seed} step {step}: crash {mode:?} kept {recovered} of {} (synced {}), {} truncations, {} index rebuilds",
                        model.next_offset,
                        model.synced_offset,
                        report.truncations.len(),
                        report.index_rebuilds.len()
                    );
                }
                assert!(
                    recovered >= model.synced_offset,
                    "{context}: lost synced data: recovered up to {recovered}, synced {} ({mode:?}) {report:?}",
                    model.synced_offset
                );
                assert!(recovered <= model.next_offset, "{context}: {report:?}");
                assert_eq!(log.log_start_offset(), start_before, "{context}: {report:?}");
                model.batches.retain(|batch| batch.base_offset < recovered);
                let end = model.batches.last().map_or(start_before, ModelBatch::next_offset);
                assert_eq!(end, recovered, "{context}: recovered end is not a batch boundary");
                model.next_offset = recovered;
                model.synced_offset = recovered;
                check_everything(&log, &model, &context);
            }
        }
        let high_watermark = log.high_watermark();
        assert!(high_watermark <= model.next_offset, "{context}");
        assert!(high_watermark >= model.synced_offset, "{context}");
        assert!(log.log_start_offset() <= high_watermark, "{context}");
    }
    check_everything(&log, &model, &format!("seed {seed} end"));
}

fn check_everything(log: &PartitionLog, model: &Model, context: &str) {
    let high_watermark = log.high_watermark();
    assert_eq!(
        &read_all(log, 700)[..],
        &model.visible_bytes(high_watermark)[..],
        "{context}"
    );
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
