//! Crash durability: under `--flush always`, every record the broker acknowledged survives a
//! SIGKILL at a random moment, exactly once, at its acknowledged offset; offsets stay dense; and
//! appends after the restart continue at the next offset. Randomised: the seed is printed and
//! `TIDELOG_TEST_SEED` reproduces a run.

use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidelog_e2e::cli::StreamingCli;
use tidelog_e2e::load::{Load, LoadConfig};
use tidelog_e2e::records::{assert_dense, batch_of, read_partition};
use tidelog_e2e::wait::test_seed;
use tidelog_e2e::{poll_until, small_segments_config, BrokerProcess, RawClient, TestDir};

const TOPIC: &str = "durable";
const PARTITIONS: u32 = 3;
const PRODUCERS: u64 = 3;
/// Small segments, so crashes also land around segment rolls.
const SEGMENT_BYTES: u64 = 64 << 10;
const CLI_SEGMENT_BYTES: u64 = 4 << 20;
const ROUNDS_MIN: usize = 4;
const ROUNDS_MAX: usize = 20;
/// No new round starts after this much time (debug builds on slow disks).
const TIME_BUDGET: Duration = Duration::from_secs(40);
const ACK_WAIT: Duration = Duration::from_secs(60);

/// What the test knows about the log across crashes.
#[derive(Debug, Default)]
struct Model {
    /// Per partition, the values at offsets 0, 1, ... as read back after the last restart.
    /// Once read back, a record must never change or vanish.
    log: Vec<Vec<String>>,
    /// Where each acknowledged value was acknowledged to be.
    acked: HashMap<String, (u32, i64)>,
    /// Values sent but never acknowledged: each may be in the log, at most once.
    unacked: HashSet<String>,
}

/// Reads every partition back and checks it against the model, then makes the read-back log
/// the model's log.
fn verify(model: &mut Model, addr: SocketAddr, context: &str) {
    let mut client = RawClient::connect_or_panic(addr);
    let mut seen: HashMap<String, (u32, i64)> = HashMap::new();
    for partition in 0..PARTITIONS {
        let (records, high_watermark) = read_partition(&mut client, TOPIC, partition, 0);
        let what = format!("{context}: partition {partition}");
        assert_dense(&records, 0, &what);
        assert_eq!(
            high_watermark,
            records.len() as i64,
            "{what}: high watermark {high_watermark} but {} records",
            records.len()
        );
        let values: Vec<String> = records.iter().map(|record| record.value_text()).collect();
        let known = &model.log[partition as usize];
        for (offset, value) in known.iter().enumerate() {
            assert_eq!(
                values.get(offset),
                Some(value),
                "{what}: offset {offset} was {value:.40?} before this crash; a record once read back must stay"
            );
        }
        for (offset, value) in values.iter().enumerate() {
            if let Some(earlier) = seen.insert(value.clone(), (partition, offset as i64)) {
                panic!("{what}: {value:.40?} is stored twice: at {earlier:?} and at offset {offset}");
            }
            assert!(
                model.acked.contains_key(value) || model.unacked.contains(value),
                "{what}: offset {offset} holds {value:.40?}, which no producer sent"
            );
        }
        model.log[partition as usize] = values;
    }
    for (value, place) in &model.acked {
        assert_eq!(
            seen.get(value),
            Some(place),
            "{context}: acknowledged record {value:.40?} at (partition, offset) {place:?} is missing or moved"
        );
    }
}

#[test]
fn acknowledged_records_survive_sigkill_exactly_once_at_their_offsets() {
    let name = "acknowledged_records_survive_sigkill_exactly_once_at_their_offsets";
    crash_rounds(name, "always", ROUNDS_MAX, TIME_BUDGET);
}

/// A process crash keeps the page cache, so whatever was written before the acknowledgement
/// survives SIGKILL whatever the flush policy; only power loss may take unsynced data.
#[test]
fn acknowledged_records_survive_sigkill_under_interval_flush() {
    let name = "acknowledged_records_survive_sigkill_under_interval_flush";
    crash_rounds(name, "interval:200", ROUNDS_MIN, TIME_BUDGET / 4);
}

/// Rounds of: produce from several pipelining connections, SIGKILL after a random number of
/// acknowledgements, restart, check everything against the model, append a marker.
fn crash_rounds(test_name: &str, flush: &str, rounds_max: usize, time_budget: Duration) {
    let seed = test_seed(test_name);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TestDir::new("crash-durability");
    let config = small_segments_config(&dir, SEGMENT_BYTES);
    let config = config.to_str().unwrap();
    let mut broker = BrokerProcess::start(&dir.data_dir(), &["--flush", flush, "--config", config]);
    RawClient::connect_or_panic(broker.addr()).create_topic(TOPIC, PARTITIONS, None);
    let mut model = Model {
        log: vec![Vec::new(); PARTITIONS as usize],
        ..Model::default()
    };
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < rounds_max && (rounds < ROUNDS_MIN || started.elapsed() < time_budget) {
        let load = Load::start(
            broker.addr(),
            &LoadConfig {
                topic: TOPIC.into(),
                partitions: PARTITIONS,
                producers: PRODUCERS,
                in_flight_max: 4,
                records_per_batch_max: 16,
                padding_bytes_max: 200,
                label: format!("round-{rounds}"),
            },
            &mut rng,
        );
        // Kill after a random number of acknowledgements, while other batches are in flight.
        let target = rng.random_range(1..=60);
        poll_until(ACK_WAIT, "producers to get their batches acknowledged", || {
            broker.assert_alive("accepting produce requests");
            (load.acked_batches() >= target).then_some(())
        });
        broker.kill9();
        let outcome = load.stop_and_join();
        assert!(
            outcome.violations.is_empty(),
            "round {rounds}: protocol violations: {:?}",
            outcome.violations
        );
        for batch in outcome.acked {
            for (index, value) in batch.values.into_iter().enumerate() {
                model
                    .acked
                    .insert(value, (batch.partition, batch.base_offset + index as i64));
            }
        }
        for value in outcome.sent {
            if !model.acked.contains_key(&value) {
                model.unacked.insert(value);
            }
        }

        broker.restart();
        verify(
            &mut model,
            broker.addr(),
            &format!("after crash {rounds} (seed {seed})"),
        );

        // New appends continue right after the recovered log, in every partition.
        let mut client = RawClient::connect_or_panic(broker.addr());
        for partition in 0..PARTITIONS {
            let value = format!("marker-after-crash-{rounds}-partition-{partition}");
            let base_offset = client.produce_ok(TOPIC, partition, batch_of(&[&value]));
            let log = &mut model.log[partition as usize];
            assert_eq!(
                base_offset,
                log.len() as i64,
                "after crash {rounds} (seed {seed}): partition {partition} appended at {base_offset}, its log ends at {}",
                log.len()
            );
            model.acked.insert(value.clone(), (partition, base_offset));
            log.push(value);
        }
        rounds += 1;
    }
    let acked = model.acked.len();
    eprintln!("flush {flush}: {rounds} crashes survived; {acked} acknowledged records checked");
    assert!(
        acked > rounds * PARTITIONS as usize,
        "too few acknowledged records to mean anything"
    );
}

#[test]
fn offsets_printed_by_the_cli_producer_survive_sigkill() {
    let seed = test_seed("offsets_printed_by_the_cli_producer_survive_sigkill");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TestDir::new("crash-cli");
    // Room for the CLI's batches (up to 1 MiB by default), yet still several segments.
    let config = small_segments_config(&dir, CLI_SEGMENT_BYTES);
    let mut broker = BrokerProcess::start(
        &dir.data_dir(),
        &["--flush", "always", "--config", config.to_str().unwrap()],
    );
    let topic = "cli-durable";
    RawClient::connect_or_panic(broker.addr()).create_topic(topic, 2, None);

    let mut cli = StreamingCli::spawn(broker.addr(), &["produce", topic, "--print-offsets"]);
    let stdin = cli.take_stdin().expect("the CLI's stdin");
    let lines_total = 20_000;
    let writer = std::thread::spawn(move || {
        let mut stdin = BufWriter::with_capacity(4096, stdin);
        for index in 0..lines_total {
            if writeln!(stdin, "cli-line-{index}-{}", "y".repeat(index % 97)).is_err() {
                return;
            }
        }
        let _ = stdin.flush();
    });
    let target = rng.random_range(20..=2_000);
    let mut printed: Vec<(u32, i64)> = Vec::new();
    let deadline = Instant::now() + ACK_WAIT;
    while printed.len() < target && Instant::now() < deadline {
        match cli.lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => printed.push(parse_offset_line(&line)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let printed_before_kill = printed.len();
    broker.kill9();
    // The CLI must notice and exit; collect what it printed until then.
    let collect_deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < collect_deadline {
        match cli.lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => printed.push(parse_offset_line(&line)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let (status, stderr) = cli.wait(Duration::from_secs(30));
    let _ = writer.join();
    eprintln!(
        "the CLI had printed {printed_before_kill} offsets at the crash, {} in all; it exited {status}: {stderr}",
        printed.len()
    );
    assert!(
        !printed.is_empty(),
        "the CLI printed no offsets within {ACK_WAIT:?}"
    );

    broker.restart();
    let mut client = RawClient::connect_or_panic(broker.addr());
    let mut logs = Vec::new();
    let mut seen = HashSet::new();
    for partition in 0..2 {
        let (records, _) = read_partition(&mut client, topic, partition, 0);
        assert_dense(&records, 0, &format!("partition {partition} after the crash"));
        for record in &records {
            assert!(
                seen.insert(record.value_text()),
                "{:?} stored twice",
                record.value_text()
            );
        }
        logs.push(records);
    }
    for (line, (partition, offset)) in printed.iter().enumerate() {
        let expected = format!("cli-line-{line}-{}", "y".repeat(line % 97));
        let stored = logs
            .get(*partition as usize)
            .and_then(|records| records.get(*offset as usize))
            .map(|record| record.value_text());
        assert_eq!(
            stored.as_deref(),
            Some(expected.as_str()),
            "input line {line} was acknowledged at {partition}/{offset} (seed {seed})"
        );
    }
}

fn parse_offset_line(line: &str) -> (u32, i64) {
    let (partition, offset) = line
        .split_once('\t')
        .unwrap_or_else(|| panic!("expected PARTITION<TAB>OFFSET, got {line:?}"));
    (
        partition
            .parse()
            .unwrap_or_else(|_| panic!("bad partition in {line:?}")),
        offset
            .parse()
            .unwrap_or_else(|_| panic!("bad offset in {line:?}")),
    )
}

#[test]
fn acknowledged_topic_creates_and_deletes_survive_sigkill() {
    let dir = TestDir::new("crash-metadata");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &["--flush", "always"]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("doomed", 2, None);
    client.produce_ok("doomed", 1, batch_of(&["old data"]));
    client.create_topic("kept", 3, None);
    let result = client.call_ok(tidelog_proto::pb::request::Body::DeleteTopics(
        tidelog_proto::pb::DeleteTopicsRequest {
            names: vec!["doomed".into()],
        },
    ));
    let tidelog_proto::pb::response::Body::DeleteTopics(deleted) = result else {
        panic!("unexpected DeleteTopics response: {result:?}");
    };
    assert_eq!(deleted.topics.len(), 1);
    assert_eq!(
        deleted.topics[0].error(),
        tidelog_proto::pb::ErrorCode::None,
        "{deleted:?}"
    );
    client.create_topic("fresh", 1, None);
    drop(client);
    // Crash right after the last acknowledged metadata change.
    broker.kill9();
    broker.restart();

    let mut client = RawClient::connect_or_panic(broker.addr());
    let metadata = client.metadata(&[]);
    let mut topics: Vec<(String, usize)> = metadata
        .topics
        .iter()
        .map(|topic| (topic.name.clone(), topic.partitions.len()))
        .collect();
    topics.sort();
    assert_eq!(
        topics,
        vec![("fresh".to_string(), 1), ("kept".to_string(), 3)],
        "acknowledged creates and deletes must survive a crash"
    );
    // A topic created again under a deleted name starts empty.
    client.create_topic("doomed", 2, None);
    assert_eq!(
        client.high_watermark("doomed", 1),
        0,
        "the deleted topic's data must be gone"
    );
}
