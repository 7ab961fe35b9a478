//! Compaction model test (issue 9): random produces over a small key space (tombstones,
//! keyless records, compressed batches, control batches, idempotent producers and their
//! retries), cleans (whole and partial, with the clock moved past the compaction lag and the
//! tombstone retention), truncations, erasures and re-opens, clean restarts and crashes (also
//! with the power cut in the middle of a clean) on the simulated disk, checked against a model
//! of what every reader may see:
//!
//! * a record read back is the record appended at that offset (key, value, headers,
//!   timestamp) in a batch with its original offset range and producer stamp, reads are in
//!   offset order, and a read from a removed offset starts at the next remaining batch;
//! * a record may be missing only if compaction may remove it (a later record of its key is
//!   still in the log, or it is a tombstone past the earliest horizon it can have) and it was
//!   in a closed segment older than the compaction lag when a clean ran, or if a truncation or
//!   erasure covers it; control batches never go; so the latest value of every key stays;
//! * `read_stream`/`stream_info` of every key are the log's records of that key with the
//!   marks applied; an erased key answers `StreamErased`;
//! * once an erasure is complete, its records are in no read and their bytes in no file, also
//!   after crashes;
//! * no offset is reused after a crash, and a producer's retry is still deduplicated after
//!   compaction and restarts.
//!
//! Seeds are deterministic; a failure prints its seed. `TIDELOG_MODEL_SEED=<n>` runs one seed,
//! `TIDELOG_MODEL_SEEDS=<n>` runs seeds 0..n, `TIDELOG_MODEL_VERBOSE=1` narrates.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tidelog_proto::batch::{ProducerStamp, RecordBatch, RecordHeader};

use super::super::sim_disk::{CrashMode, SimDisk, SplitMix};
use super::super::{CleanOptions, CleanupPolicy, CompactionConfig, FlushPolicy, LogConfig, Unthrottled};
use super::sim_open;

mod checks;
mod ops;

use checks::check_everything;
use ops::*;

const SEEDS: u64 = 40;
const STEPS: usize = 220;
/// Keys are long and distinctive, so a scan of the files for their bytes finds nothing else.
const KEYS: usize = 6;
/// bugs.md (marks, 18:00): a truncated stream's version survives a crash past the recovered
/// end. Until that is fixed the model does not pin such a version down.
const TRUNCATED_VERSION_PAST_END_FIXED: bool = false;
const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
const ATTRIBUTE_CONTROL: i16 = 0x20;

fn key(index: usize) -> Vec<u8> {
    format!("erasable-key-{index:02}").into_bytes()
}

#[derive(Debug, Clone, PartialEq)]
struct ModelRecord {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<RecordHeader>,
    timestamp: i64,
    /// The model clock when it was appended (the earliest a cleaner can have seen it).
    appended_ms: i64,
}

#[derive(Debug, Clone)]
struct ModelBatch {
    base_offset: i64,
    last_offset: i64,
    /// The bytes as first stored, for control batches (kept byte for byte).
    bytes: Bytes,
    control: bool,
    stamp: Option<ProducerStamp>,
    records: Vec<ModelRecord>,
}

/// An idempotent producer the test drives.
#[derive(Debug, Clone)]
struct Producer {
    id: i64,
    next_sequence: i32,
    /// Its appended batches (the batch and the offsets it got), newest last, at most 5.
    recent: Vec<(RecordBatch, i64, i64)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Marks {
    truncated_before: i64,
    erased: bool,
    erase_before: i64,
    /// The version a truncation keeps: the key's last record below the truncation point.
    truncated_version: i64,
}

impl Marks {
    fn read_start(&self) -> i64 {
        self.truncated_before.max(self.erase_before)
    }
}

#[derive(Debug, Default)]
struct Model {
    batches: Vec<ModelBatch>,
    next_offset: i64,
    synced_offset: i64,
    marks: BTreeMap<Vec<u8>, Marks>,
    /// Erasures the log reported complete: (key, erase_before).
    erased_done: BTreeSet<(Vec<u8>, i64)>,
    /// Offsets at or above this were in the active segment at every clean so far.
    compaction_frontier: i64,
    /// The latest clock any clean ran with (i64::MIN: none yet).
    clean_now_max: i64,
    producers: Vec<Producer>,
    next_producer_id: i64,
    /// Keys whose kept version lay past the end a crash recovered (see
    /// `TRUNCATED_VERSION_PAST_END_FIXED`): the version is not known exactly.
    version_unknown: BTreeSet<Vec<u8>>,
    /// Statistics, for the verbose narration and the end-of-run sanity checks.
    cleans: u64,
    records_removed: u64,
    crashes_in_clean: u64,
}

impl Model {
    fn marks_remove(&self, key: &[u8], offset: i64) -> bool {
        self.marks
            .get(key)
            .is_some_and(|marks| offset < marks.truncated_before || offset < marks.erase_before)
    }

    /// Where reads of `key` start (the marks' view); None: the key is erased.
    fn stream_start(&self, key: &[u8]) -> Option<i64> {
        match self.marks.get(key) {
            Some(marks) if marks.erased => None,
            Some(marks) => Some(marks.read_start().max(0)),
            None => Some(0),
        }
    }

    fn records(&self) -> impl Iterator<Item = (&ModelBatch, &ModelRecord)> {
        self.batches
            .iter()
            .flat_map(|batch| batch.records.iter().map(move |record| (batch, record)))
    }
}

#[test]
fn compacted_log_matches_the_model_through_cleans_marks_restarts_and_crashes() {
    let seeds: Vec<u64> = match std::env::var("TIDELOG_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("TIDELOG_MODEL_SEED is a number")],
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
        .expect("a current-thread runtime builds");
    let mut totals = (0, 0, 0);
    for seed in seeds {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(seed, &runtime)));
        match result {
            Ok(model) => {
                totals.0 += model.cleans;
                totals.1 += model.records_removed;
                totals.2 += model.crashes_in_clean;
            }
            Err(panic) => {
                eprintln!(
                    "compaction model test failed with seed {seed}; rerun with TIDELOG_MODEL_SEED={seed}"
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "compaction model: {} cleans removed {} records; {} crashes during a clean",
        totals.0, totals.1, totals.2
    );
}

fn random_config(rng: &mut SplitMix) -> LogConfig {
    let flush = match rng.below(3) {
        0 => FlushPolicy::Always,
        1 => FlushPolicy::Never,
        _ => FlushPolicy::Interval(std::time::Duration::from_millis(5)),
    };
    // Mostly compacted logs; a quarter keep history (erasures are their only rewrite).
    let cleanup_policy = if rng.below(4) == 0 {
        CleanupPolicy::Delete
    } else {
        CleanupPolicy::Compact
    };
    LogConfig {
        segment_bytes: 700 + rng.below(2500),
        segment_ms: 60_000 + rng.below(60_000) as i64,
        retention_ms: -1,
        retention_bytes: -1,
        index_interval_bytes: rng.below(400) as u32,
        flush,
        preallocate_bytes: rng.below(2) * 2048,
        cleanup_policy,
        compaction: CompactionConfig {
            min_cleanable_dirty_ratio: [0.0, 0.2, 0.5][rng.below(3) as usize],
            min_compaction_lag_ms: [0, 0, 3_000][rng.below(3) as usize],
            max_compaction_lag_ms: if rng.below(2) == 0 { i64::MAX } else { 20_000 },
            delete_retention_ms: [0, 2_000, 10_000][rng.below(3) as usize],
        },
        ..LogConfig::default()
    }
}

fn verbose() -> bool {
    std::env::var_os("TIDELOG_MODEL_VERBOSE").is_some()
}

fn run(seed: u64, runtime: &tokio::runtime::Runtime) -> Model {
    let mut rng = SplitMix(seed.wrapping_mul(0x5851_f42d_4c95_7f2d) ^ 0xc1ea);
    let mut config = random_config(&mut rng);
    let always = config.flush == FlushPolicy::Always;
    let disk = SimDisk::new();
    let mut log = sim_open(&disk, config.clone());
    let mut model = Model {
        clean_now_max: i64::MIN,
        next_producer_id: 1000,
        ..Model::default()
    };
    let mut now: i64 = 1_000_000;
    let mut value_serial = 0u64;
    for step in 0..STEPS {
        now += rng.below(200) as i64;
        let context = format!("seed {seed} step {step} config {config:?}");
        let op = rng.below(100);
        match op {
            0..=39 => {
                let (batches, records) = random_batches(&mut rng, &config, now, &mut value_serial);
                produce(&log, &mut model, batches, records, now, &context);
                if always && rng.below(3) != 0 {
                    runtime
                        .block_on(log.wait_durable(model.next_offset))
                        .unwrap_or_else(|error| panic!("{context}: {error}"));
                    model.synced_offset = model.next_offset;
                }
            }
            40..=46 => produce_idempotent(&log, &mut model, &mut rng, now, &mut value_serial, &context),
            47..=50 => retry_idempotent(&log, &model, &mut rng, now, &context),
            51..=52 => produce_control(&log, &mut model, now, &context),
            53..=60 => {
                // Sometimes past the compaction lag or a tombstone's retention first.
                match rng.below(4) {
                    0 => now += config.compaction.min_compaction_lag_ms + 1,
                    1 => now += config.compaction.delete_retention_ms + 1,
                    _ => {}
                }
                let dedupe = [64, 300, 1 << 20][rng.below(3) as usize];
                clean(&log, &disk, &mut model, now, dedupe, &context);
            }
            61..=63 => {
                // The power is cut after a random number of changes inside a clean.
                let changes = rng.below(40);
                log.sync().unwrap_or_else(|error| panic!("{context}: {error}"));
                model.synced_offset = model.next_offset;
                disk.freeze_after(changes);
                let result = log.clean(
                    now,
                    &CleanOptions {
                        dedupe_bytes_max: 1 << 20,
                    },
                    &Unthrottled,
                );
                let frozen = disk.is_frozen();
                if verbose() {
                    eprintln!("{context}: clean with a power cut after {changes} changes: frozen {frozen}, {result:?}");
                }
                model.crashes_in_clean += u64::from(frozen);
                note_clean(&log, &mut model, now);
                let start_before = log.log_start_offset();
                drop(log);
                disk.crash(crash_mode(&mut rng));
                log = sim_open(&disk, config.clone());
                after_reopen(
                    &log,
                    &disk,
                    &mut model,
                    start_before,
                    &format!("{context} after a power cut in a clean"),
                );
            }
            64..=67 => truncate(&log, &mut model, &mut rng, &context),
            68..=70 => erase(&log, &mut model, &mut rng, now, &context),
            71..=72 => reopen(&log, &mut model, &mut rng, &context),
            73 if !config.cleanup_policy.compacts() && rng.below(3) == 0 => {
                // A history topic switched to compaction at run time (AlterConfigs): the
                // keyless records it holds stay in its segments.
                config.cleanup_policy = CleanupPolicy::Compact;
                log.alter_config(config.clone())
                    .unwrap_or_else(|error| panic!("{context}: alter_config: {error}"));
                if verbose() {
                    eprintln!("{context}: switched to cleanup.policy=compact");
                }
            }
            73..=80 => check_everything(&log, &disk, &model, &mut rng, &context),
            81..=83 => {
                log.sync().unwrap_or_else(|error| panic!("{context}: {error}"));
                model.synced_offset = model.next_offset;
            }
            84..=90 => {
                log.close().unwrap_or_else(|error| panic!("{context}: {error}"));
                drop(log);
                log = sim_open(&disk, config.clone());
                let report = log.recovery_report();
                assert!(report.clean_shutdown, "{context}: {report:?}");
                assert!(
                    report.truncations.is_empty()
                        && report.quarantined.is_empty()
                        && report.fenced.is_empty(),
                    "{context}: a clean restart after cleaning found damage: {report:?}"
                );
                assert_eq!(
                    log.high_watermark(),
                    model.next_offset,
                    "{context}: the log end moved"
                );
                model.synced_offset = model.next_offset;
                check_everything(
                    &log,
                    &disk,
                    &model,
                    &mut rng,
                    &format!("{context} after a restart"),
                );
            }
            _ => {
                let start_before = log.log_start_offset();
                drop(log);
                let mode = crash_mode(&mut rng);
                disk.crash(mode);
                log = sim_open(&disk, config.clone());
                after_reopen(
                    &log,
                    &disk,
                    &mut model,
                    start_before,
                    &format!("{context} after a crash ({mode:?})"),
                );
            }
        }
        let high_watermark = log.high_watermark();
        assert!(high_watermark <= model.next_offset, "{context}");
        assert!(
            high_watermark >= model.synced_offset,
            "{context}: offsets went back"
        );
    }
    check_everything(&log, &disk, &model, &mut rng, &format!("seed {seed} end"));
    if verbose() {
        eprintln!(
            "seed {seed}: {} cleans removed {} records, {} crashes in a clean, {} erasures completed",
            model.cleans,
            model.records_removed,
            model.crashes_in_clean,
            model.erased_done.len()
        );
    }
    model
}

fn crash_mode(rng: &mut SplitMix) -> CrashMode {
    if rng.below(2) == 0 {
        CrashMode::ForgetUnsynced
    } else {
        CrashMode::TornAppends(rng.next())
    }
}
