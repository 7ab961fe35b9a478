//! A failed segment roll changes nothing, on the real binary: while producers run against
//! small segments, the broker's descriptor limit is lowered with `prlimit` to just above what
//! it holds open, so segment rolls fail at their first, second, third or fourth open (the data
//! file, the offset index, the time index, the directory sync). After the limit is restored,
//! appends must work again, and after a SIGKILL and restart every acknowledged record must be
//! at its acknowledged offset, exactly once, with dense offsets. (The original bug: the
//! roll left `N.log` behind and the old segment flagged sealed, and the next start deleted
//! every segment after `N`.)

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tidelog_e2e::load::{Load, LoadConfig};
use tidelog_e2e::records::{assert_dense, batch_of, read_partition};
use tidelog_e2e::wait::{test_seed, try_poll_until};
use tidelog_e2e::{poll_until, small_segments_config, BrokerProcess, RawClient, TestDir};

const TOPIC: &str = "rolls";
const PARTITIONS: u32 = 2;
/// Small segments: the load rolls one every few dozen batches.
const SEGMENT_BYTES: u64 = 32 << 10;
/// A soft limit for one round.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// Descriptors allowed above those open: 0 fails the data file, 1 the offset index, 2 the
    /// time index, 3 the directory sync (unless the broker's file cache frees descriptors by
    /// closing idle files, which it may: then the roll succeeds, also fine).
    Above(usize),
    /// Far below what the broker holds pinned (sockets, active data files, the metadata
    /// store): no eviction can make room, so every roll fails at its first open.
    Floor,
}
const FLOOR_NOFILE: u64 = 16;
const LIMITS: [Limit; 8] = [
    Limit::Above(0),
    Limit::Floor,
    Limit::Above(1),
    Limit::Above(2),
    Limit::Floor,
    Limit::Above(3),
    Limit::Above(1),
    Limit::Floor,
];
const ACK_WAIT: Duration = Duration::from_secs(60);
/// How long one lowered limit is kept at most while waiting for a roll to fail under it.
const FAULT_WAIT: Duration = Duration::from_secs(20);
/// More batches than fill one segment (batches average about 1.3 KiB).
const BATCHES_PER_ROLL_MAX: usize = 60;

fn open_descriptors(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or_else(|error| panic!("listing /proc/{pid}/fd: {error}"))
}

fn soft_nofile(pid: i32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("reading its limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    line.split_whitespace()
        .nth(3)
        .and_then(|soft| soft.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"))
}

/// Sets the soft RLIMIT_NOFILE of a running process with the real `prlimit` tool.
fn set_soft_nofile(pid: i32, soft: u64) {
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={soft}:"))
        .status()
        .expect("running prlimit (util-linux)");
    assert!(status.success(), "prlimit --nofile={soft}: failed: {status}");
}

fn segment_files(data_dir: &Path) -> usize {
    let mut total = 0;
    let topics = data_dir.join("topics");
    for topic in std::fs::read_dir(&topics).into_iter().flatten().flatten() {
        for partition in std::fs::read_dir(topic.path()).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(partition.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if file.file_name().to_string_lossy().ends_with(".log") {
                    total += 1;
                }
            }
        }
    }
    total
}

#[test]
fn rolls_failing_for_want_of_descriptors_lose_no_acknowledged_record() {
    let seed = test_seed("rolls_failing_for_want_of_descriptors_lose_no_acknowledged_record");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TestDir::new("roll-emfile");
    let config = small_segments_config(&dir, SEGMENT_BYTES);
    let mut broker = BrokerProcess::start(
        &dir.data_dir(),
        &["--flush", "always", "--config", config.to_str().unwrap()],
    );
    RawClient::connect_or_panic(broker.addr()).create_topic(TOPIC, PARTITIONS, None);
    let load = Load::start(
        broker.addr(),
        &LoadConfig {
            topic: TOPIC.into(),
            partitions: PARTITIONS,
            producers: 2,
            in_flight_max: 4,
            records_per_batch_max: 16,
            padding_bytes_max: 200,
            label: "emfile".into(),
        },
        &mut rng,
    );
    poll_until(ACK_WAIT, "the first acknowledgements", || {
        broker.assert_alive("producing");
        (load.acked_batches() >= 20).then_some(())
    });

    let pid = broker.pid().as_raw();
    let original = soft_nofile(pid);
    let mut failures_seen = 0;
    let mut floors_failed = 0;
    for round in LIMITS {
        let refused_before = load.refused_batches();
        let acked_before = load.acked_batches();
        let limit = match round {
            Limit::Above(headroom) => (open_descriptors(pid) + headroom) as u64,
            Limit::Floor => FLOOR_NOFILE,
        };
        set_soft_nofile(pid, limit);
        // Hold the limit (bounded) until an append was refused under it, or until enough
        // batches were acknowledged that every partition must have rolled at least once.
        try_poll_until(FAULT_WAIT, || {
            broker.assert_alive("with a lowered descriptor limit");
            (load.refused_batches() > refused_before
                || load.acked_batches() > acked_before + BATCHES_PER_ROLL_MAX * PARTITIONS as usize)
                .then_some(())
        });
        set_soft_nofile(pid, original);
        if load.refused_batches() > refused_before {
            failures_seen += 1;
            if matches!(round, Limit::Floor) {
                floors_failed += 1;
            }
        }
        // Appends and rolls work again once descriptors are available.
        let acked = load.acked_batches();
        poll_until(ACK_WAIT, "acknowledgements after the limit was restored", || {
            broker.assert_alive("after the limit was restored");
            (load.acked_batches() >= acked + 30).then_some(())
        });
    }
    let logs = broker.log_text();
    let floors = LIMITS
        .iter()
        .filter(|round| matches!(round, Limit::Floor))
        .count();
    assert_eq!(
        floors_failed, floors,
        "a limit of {FLOOR_NOFILE} descriptors did not make appends fail; the test did not test:\n{logs}"
    );
    assert!(
        !logs.contains("could not be undone"),
        "a failed roll was not undone:\n{logs}"
    );
    assert!(
        segment_files(&dir.data_dir()) > PARTITIONS as usize,
        "no roll ever succeeded"
    );

    broker.kill9();
    let outcome = load.stop_and_join();
    assert!(outcome.violations.is_empty(), "{:?}", outcome.violations);
    broker.restart();

    let mut acked: HashMap<String, (u32, i64)> = HashMap::new();
    for batch in &outcome.acked {
        for (index, value) in batch.values.iter().enumerate() {
            acked.insert(value.clone(), (batch.partition, batch.base_offset + index as i64));
        }
    }
    let mut client = RawClient::connect_or_panic(broker.addr());
    let mut stored: HashMap<String, (u32, i64)> = HashMap::new();
    let mut ends = Vec::new();
    for partition in 0..PARTITIONS {
        let (records, high_watermark) = read_partition(&mut client, TOPIC, partition, 0);
        assert_dense(&records, 0, &format!("partition {partition} after the restart"));
        assert_eq!(high_watermark, records.len() as i64);
        for record in records {
            let place = (partition, record.offset);
            if let Some(earlier) = stored.insert(record.value_text(), place) {
                panic!(
                    "{:.40?} stored twice: {earlier:?} and {place:?}",
                    record.value_text()
                );
            }
        }
        ends.push(high_watermark);
    }
    let missing: Vec<_> = acked
        .iter()
        .filter(|(value, place)| stored.get(*value) != Some(place))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records are missing or moved (seed {seed}), e.g. {missing:?}\n{}",
        acked
            .iter()
            .filter(|(value, place)| stored.get(*value) != Some(place))
            .count(),
        broker.logs()
    );
    // Offsets are never reused: a new append lands right after the recovered end.
    for partition in 0..PARTITIONS {
        let base_offset = client.produce_ok(TOPIC, partition, batch_of(&["after-restart"]));
        assert_eq!(base_offset, ends[partition as usize]);
    }
    eprintln!(
        "{failures_seen} of {} lowered limits failed appends; {} acknowledged records checked",
        LIMITS.len(),
        acked.len()
    );
}
