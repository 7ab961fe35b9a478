//! SIGKILL during compaction (issue 9 §1, "crash-safe"): a compacted topic with small segments
//! and a slow (throttled) cleaner that runs all the time, a producer writing keyed records under
//! `--flush always` and recording every acknowledged (offset, key, value), and SIGKILLs at
//! random moments, half of them the moment the cleaner's working files appear. After each
//! restart: every record read back is the one acknowledged (or sent) at that offset, every
//! key's latest acknowledged value is readable at its offset, no offset is reused, nothing is
//! quarantined; at the end `tidelogd verify` passes and the topic has really been compacted,
//! with kills that landed while a clean was under way.
//!
//! Randomised: the seed is printed, `TIDELOG_TEST_SEED` replays it,
//! `TIDELOG_COMPACTION_CRASH_ROUNDS=<n>` runs more rounds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidelog_e2e::binaries::binaries;
use tidelog_e2e::raw::produce_partition;
use tidelog_e2e::records::timed_keyed_batch;
use tidelog_e2e::wait::{test_seed, try_poll_until};
use tidelog_e2e::{poll_until, BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::{self, ErrorCode};

const TOPIC: &str = "compacted";
const KEYS: usize = 40;
const SEGMENT_BYTES: u64 = 8 << 10;
/// Slow enough that a clean of the partition takes a second or more.
const CLEANER_IO_BYTES_PER_SEC: u64 = 256 << 10;
const ROUNDS_DEFAULT: usize = 20;
const ROUNDS_MIN: usize = 6;
/// No new round starts after this much time (debug builds on a loaded machine).
const TIME_BUDGET: Duration = Duration::from_secs(150);
const ACK_WAIT: Duration = Duration::from_secs(60);
/// How long a round waits for the cleaner's working files before it kills anyway.
const CLEANING_WAIT: Duration = Duration::from_secs(8);
const VERIFY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a round waits for a clean to finish before it kills anyway.
const CLEAN_WAIT: Duration = Duration::from_secs(20);

fn broker_config(dir: &TestDir) -> PathBuf {
    let path = dir.path().join("tidelogd.toml");
    let text = format!(
        "[log]\nsegment_bytes = {SEGMENT_BYTES}\n\n[limits]\nbatch_bytes_max = {}\n\n\
         [cleaner]\nthreads = 1\nio_bytes_per_sec_max = {CLEANER_IO_BYTES_PER_SEC}\nbackoff_ms = 20\n",
        SEGMENT_BYTES / 2
    );
    std::fs::write(&path, text).expect("writing the broker config");
    path
}

/// Segments come from the broker's `[log]` default (small), below what a topic may ask for.
fn topic_config() -> pb::TopicConfig {
    pb::TopicConfig {
        cleanup_policy: Some("compact".to_string()),
        // Clean as soon as anything is dirty, so the cleaner is busy all the time.
        min_cleanable_dirty_ratio: Some(0.01),
        min_compaction_lag_ms: Some(0),
        ..pb::TopicConfig::default()
    }
}

/// Files of the partition directory that only exist while a clean is under way (the segment
/// written aside, the swap journal).
fn cleaning_files(partition_dir: &Path) -> Vec<String> {
    std::fs::read_dir(partition_dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter(|name| name.contains(".cleaned") || name.contains("swap"))
                .collect()
        })
        .unwrap_or_default()
}

/// When the cleaner last finished a clean of the partition that did something (0: never), as
/// Metadata says.
fn last_cleaned_ms(client: &mut RawClient) -> i64 {
    let metadata = client.metadata(&[TOPIC]);
    metadata
        .topics
        .first()
        .and_then(|topic| topic.partitions.first())
        .and_then(|partition| partition.cleaner.as_ref())
        .map_or(0, |cleaner| cleaner.last_cleaned_ms)
}

/// One acknowledged record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Acked {
    key: String,
    value: String,
}

/// What the producer thread saw.
#[derive(Debug, Default)]
struct Produced {
    acked: Vec<(i64, Acked)>,
    /// Values sent and never acknowledged: each may be in the log, at most once.
    unacked: Vec<String>,
    /// Answers that were neither an acknowledgement nor the connection dying.
    violations: Vec<String>,
}

struct Producer {
    stop: Arc<AtomicBool>,
    acked_records: Arc<AtomicUsize>,
    handle: JoinHandle<Produced>,
}

impl Producer {
    fn start(addr: SocketAddr, round: usize, seed: u64) -> Producer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked_records = Arc::new(AtomicUsize::new(0));
        let (thread_stop, thread_acked) = (Arc::clone(&stop), Arc::clone(&acked_records));
        let handle = std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed ^ round as u64);
            let mut produced = Produced::default();
            let Ok(mut client) = RawClient::connect(addr) else {
                produced.violations.push("could not connect".to_string());
                return produced;
            };
            // Bounded: the main thread kills the broker well before this many batches.
            for serial in 0..1_000_000u64 {
                if thread_stop.load(Ordering::Relaxed) {
                    break;
                }
                let records: Vec<Acked> = (0..rng.random_range(1..=4))
                    .map(|index| Acked {
                        key: format!("key-{:03}", rng.random_range(0..KEYS)),
                        value: format!(
                            "r{round}-b{serial}-{index}-{}",
                            "v".repeat(rng.random_range(20..200))
                        ),
                    })
                    .collect();
                let pairs: Vec<(Option<&[u8]>, &[u8])> = records
                    .iter()
                    .map(|record| (Some(record.key.as_bytes()), record.value.as_bytes()))
                    .collect();
                let batch = timed_keyed_batch(&pairs, tidelog_e2e::records::now_ms());
                drop(pairs);
                let body = RawClient::produce_body(TOPIC, 0, batch, pb::Acks::Leader);
                produced
                    .unacked
                    .extend(records.iter().map(|record| record.value.clone()));
                let response = match client.call(body) {
                    Ok(response) => response,
                    // The broker was killed.
                    Err(_) => break,
                };
                if response.error() != ErrorCode::None {
                    produced.violations.push(format!("produce refused: {response:?}"));
                    break;
                }
                let result = produce_partition(response);
                if result.error() != ErrorCode::None {
                    produced.violations.push(format!("produce refused: {result:?}"));
                    break;
                }
                for _ in 0..records.len() {
                    produced.unacked.pop();
                }
                let count = records.len();
                for (index, record) in records.into_iter().enumerate() {
                    produced.acked.push((result.base_offset + index as i64, record));
                }
                thread_acked.fetch_add(count, Ordering::Relaxed);
            }
            produced
        });
        Producer {
            stop,
            acked_records,
            handle,
        }
    }

    fn stop_and_join(self) -> Produced {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("the producer thread does not panic")
    }
}

/// A record as a fetch returns it.
#[derive(Debug, Clone)]
struct ReadRecord {
    offset: i64,
    key: Option<String>,
    value: Option<String>,
}

/// Every record of the partition from offset 0, read the way a consumer of a compacted topic
/// must (the harness's `read_compacted`: past gaps and placeholders, by whole batches).
fn read_compacted(client: &mut RawClient, context: &str) -> (Vec<ReadRecord>, i64) {
    let read = tidelog_e2e::compacted::read_compacted(client, TOPIC, 0, 0);
    let text = |bytes: &Option<Bytes>| {
        bytes
            .as_ref()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    };
    let records: Vec<ReadRecord> = read
        .records
        .iter()
        .map(|record| ReadRecord {
            offset: record.offset,
            key: text(&record.key),
            value: text(&record.value),
        })
        .collect();
    for pair in records.windows(2) {
        assert!(
            pair[0].offset < pair[1].offset,
            "{context}: offsets out of order at {}",
            pair[1].offset
        );
    }
    (records, read.high_watermark)
}

/// What the test knows across crashes.
#[derive(Debug, Default)]
struct Model {
    /// Every record known to be in the log: acknowledged, or read back after a restart.
    known: BTreeMap<i64, Acked>,
    /// Values sent but never acknowledged nor seen.
    unacked: HashSet<String>,
    produced_records: usize,
}

impl Model {
    /// The latest known record of every key.
    fn latest(&self) -> HashMap<&str, (i64, &str)> {
        let mut latest = HashMap::new();
        for (offset, record) in &self.known {
            latest.insert(record.key.as_str(), (*offset, record.value.as_str()));
        }
        latest
    }
}

fn check_after_restart(
    model: &mut Model,
    client: &mut RawClient,
    partition_dir: &Path,
    context: &str,
) -> i64 {
    let (records, high_watermark) = read_compacted(client, context);
    let end_known = model.known.keys().next_back().map_or(0, |last| last + 1);
    assert!(
        high_watermark >= end_known,
        "{context}: the high watermark {high_watermark} is below acknowledged offset {}",
        end_known - 1
    );
    let mut seen_values = HashSet::new();
    let mut by_offset: HashMap<i64, &ReadRecord> = HashMap::new();
    for record in &records {
        let value = record.value.clone().unwrap_or_default();
        assert!(
            seen_values.insert(value.clone()),
            "{context}: {value:.40?} is stored twice"
        );
        match model.known.get(&record.offset) {
            Some(known) => assert_eq!(
                (record.key.as_deref(), record.value.as_deref()),
                (Some(known.key.as_str()), Some(known.value.as_str())),
                "{context}: offset {} changed",
                record.offset
            ),
            None => assert!(
                model.unacked.contains(&value),
                "{context}: offset {} holds {value:.40?}, which was never sent (or was acknowledged elsewhere)",
                record.offset
            ),
        }
        by_offset.insert(record.offset, record);
    }
    // Every key's latest value is readable where it was acknowledged.
    for (key, (offset, value)) in model.latest() {
        let superseded_by_unacked = records
            .iter()
            .any(|record| record.key.as_deref() == Some(key) && record.offset > offset);
        if superseded_by_unacked {
            continue;
        }
        assert_eq!(
            by_offset.get(&offset).and_then(|record| record.value.as_deref()),
            Some(value),
            "{context}: the latest value of {key} (offset {offset}) is not readable"
        );
    }
    // What was sent and came back is in the log now: known from here on.
    for record in &records {
        if !model.known.contains_key(&record.offset) {
            let value = record.value.clone().unwrap_or_default();
            model.unacked.remove(&value);
            model.known.insert(
                record.offset,
                Acked {
                    key: record.key.clone().unwrap_or_default(),
                    value,
                },
            );
        }
    }
    assert!(
        !partition_dir.join("quarantine").exists(),
        "{context}: the partition has a quarantine/ directory: {:?}",
        std::fs::read_dir(partition_dir.join("quarantine")).map(|entries| entries
            .filter_map(|entry| entry.ok().map(|entry| entry.file_name()))
            .collect::<Vec<_>>())
    );
    high_watermark
}

fn run_verify(data_dir: &Path) -> std::process::Output {
    let mut child = Command::new(&binaries().broker)
        .args(["verify", "--data-dir", data_dir.to_str().expect("a UTF-8 path")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tidelogd verify");
    let finished = try_poll_until(VERIFY_TIMEOUT, || child.try_wait().expect("polling verify"));
    if finished.is_none() {
        let _ = child.kill();
        panic!("tidelogd verify did not finish within {VERIFY_TIMEOUT:?}");
    }
    child.wait_with_output().expect("verify output")
}

#[test]
fn sigkill_during_compaction_loses_no_acknowledged_latest_value() {
    let seed = test_seed("sigkill_during_compaction_loses_no_acknowledged_latest_value");
    let mut rng = StdRng::seed_from_u64(seed);
    let rounds_max: usize = std::env::var("TIDELOG_COMPACTION_CRASH_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT);
    let time_budget = if rounds_max > ROUNDS_DEFAULT {
        TIME_BUDGET * (rounds_max / ROUNDS_DEFAULT + 1) as u32
    } else {
        TIME_BUDGET
    };
    let dir = TestDir::new("compaction-crash");
    let config = broker_config(&dir);
    let mut broker = BrokerProcess::start(
        &dir.data_dir(),
        &[
            "--flush",
            "always",
            "--config",
            config.to_str().expect("a UTF-8 path"),
        ],
    );
    RawClient::connect_or_panic(broker.addr()).create_topic(TOPIC, 1, Some(topic_config()));
    let partition_dir = dir.data_dir().join("topics").join(TOPIC).join("0");
    let mut model = Model::default();
    let started = Instant::now();
    let mut rounds = 0;
    let mut kills_while_cleaning = 0;
    while rounds < rounds_max && (rounds < ROUNDS_MIN || started.elapsed() < time_budget) {
        let context = format!("round {rounds} (seed {seed})");
        let producer = Producer::start(broker.addr(), rounds, seed);
        let target = rng.random_range(20..400);
        poll_until(ACK_WAIT, "the producer to get records acknowledged", || {
            broker.assert_alive("accepting produce requests");
            (producer.acked_records.load(Ordering::Relaxed) >= target).then_some(())
        });
        let mode = rng.random_range(0..10);
        let mut producer = Some(producer);
        let mut produced_early: Option<Produced> = None;
        if mode < 3 {
            // Kill the moment a clean is writing aside or swapping.
            let _ = try_poll_until(CLEANING_WAIT, || {
                (!cleaning_files(&partition_dir).is_empty()).then_some(())
            });
        } else if mode < 6 {
            // Let a clean finish first (producing stops, so one can): kills must not always
            // come before any swap.
            let stopped = producer.take().expect("still running").stop_and_join();
            let mut client = RawClient::connect_or_panic(broker.addr());
            let before = last_cleaned_ms(&mut client);
            let _ = try_poll_until(CLEAN_WAIT, || {
                (last_cleaned_ms(&mut client) > before).then_some(())
            });
            produced_early = Some(stopped);
        }
        broker.kill9();
        let left = cleaning_files(&partition_dir);
        if !left.is_empty() {
            kills_while_cleaning += 1;
        }
        let produced = match (producer, produced_early) {
            (Some(producer), _) => producer.stop_and_join(),
            (None, Some(produced)) => produced,
            (None, None) => unreachable!("the producer was stopped and its output kept"),
        };
        assert!(
            produced.violations.is_empty(),
            "{context}: {:?}",
            produced.violations
        );
        model.produced_records += produced.acked.len();
        for (offset, record) in produced.acked {
            if let Some(earlier) = model.known.insert(offset, record.clone()) {
                panic!("{context}: offset {offset} acknowledged twice: {earlier:?} and {record:?}");
            }
        }
        model.unacked.extend(produced.unacked);

        broker.restart();
        let mut client = RawClient::connect_or_panic(broker.addr());
        let context = format!("{context}, killed with {left:?} in the partition directory");
        let high_watermark = check_after_restart(&mut model, &mut client, &partition_dir, &context);
        // New appends land above everything acknowledged.
        let marker = Acked {
            key: format!("key-{:03}", rng.random_range(0..KEYS)),
            value: format!("marker-after-round-{rounds}"),
        };
        let batch = timed_keyed_batch(
            &[(Some(marker.key.as_bytes()), marker.value.as_bytes())],
            tidelog_e2e::records::now_ms(),
        );
        let offset = client.produce_ok(TOPIC, 0, batch);
        assert_eq!(
            offset, high_watermark,
            "{context}: the marker did not land at the log end"
        );
        model.known.insert(offset, marker);
        model.produced_records += 1;
        if rounds % 5 == 4 {
            // The offline verifier on what recovery made of the crash, after a clean stop:
            // no damage, nothing fenced, whatever the kill interrupted.
            drop(client);
            broker.terminate_and_wait();
            let output = run_verify(&dir.data_dir());
            assert_eq!(
                output.status.code(),
                Some(0),
                "{context}: tidelogd verify after recovering from the kill: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            broker.restart();
        }
        rounds += 1;
    }
    // A last check after a clean stop, then the offline verifier.
    let mut client = RawClient::connect_or_panic(broker.addr());
    let (records, _) = read_compacted(&mut client, "at the end");
    drop(client);
    broker.terminate_and_wait();
    let output = run_verify(&dir.data_dir());
    assert_eq!(
        output.status.code(),
        Some(0),
        "tidelogd verify after {rounds} crashes: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "{rounds} crashes, {kills_while_cleaning} while a clean was under way; {} records produced, {} left (seed {seed})",
        model.produced_records,
        records.len()
    );
    assert!(
        records.len() < model.produced_records,
        "the topic was never compacted: {} records of {} produced",
        records.len(),
        model.produced_records
    );
    assert!(
        kills_while_cleaning >= 1,
        "no kill landed while a clean was under way in {rounds} rounds: the test proved nothing about the swap"
    );
}
