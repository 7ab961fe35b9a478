//! Graceful shutdown: SIGTERM (or SIGINT) while clients work makes `tidelogd` exit 0 after
//! draining, and the next start is clean (nothing to truncate or rebuild) with every
//! acknowledged record in place.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tidelog_e2e::load::{Load, LoadConfig};
use tidelog_e2e::raw::Reaction;
use tidelog_e2e::records::{assert_dense, batch_of, read_partition};
use tidelog_e2e::wait::test_seed;
use tidelog_e2e::{poll_until, small_segments_config, BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::ErrorCode;

const TOPIC: &str = "steady";
const PARTITIONS: u32 = 2;

/// Sizes of every segment data file under the data directory, by path.
fn log_file_sizes(data_dir: &Path) -> BTreeMap<String, u64> {
    let mut sizes = BTreeMap::new();
    let topics = data_dir.join("topics");
    let mut pending = vec![topics];
    // Bounded: topics/<topic>/<partition>/ is three levels deep.
    for _ in 0..10_000 {
        let Some(dir) = pending.pop() else { break };
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "log") {
                sizes.insert(path.display().to_string(), entry.metadata().unwrap().len());
            }
        }
    }
    sizes
}

/// Log lines at WARN or ERROR level.
fn warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect()
}

#[test]
fn sigterm_while_producing_exits_zero_and_restart_is_clean_with_every_acknowledged_record() {
    let seed =
        test_seed("sigterm_while_producing_exits_zero_and_restart_is_clean_with_every_acknowledged_record");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TestDir::new("graceful");
    let config = small_segments_config(&dir, 64 << 10);
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
            producers: 3,
            in_flight_max: 4,
            records_per_batch_max: 10,
            padding_bytes_max: 300,
            label: "graceful".into(),
        },
        &mut rng,
    );
    poll_until(Duration::from_secs(60), "60 acknowledged batches", || {
        broker.assert_alive("accepting produce requests");
        (load.acked_batches() >= 60).then_some(())
    });
    let status = broker.terminate_and_wait();
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0 (seed {seed})");
    let outcome = load.stop_and_join();
    assert!(
        outcome.violations.is_empty(),
        "protocol violations: {:?}",
        outcome.violations
    );
    let sizes_at_shutdown = log_file_sizes(&dir.data_dir());

    broker.restart();
    let startup_log = broker.log_text();
    assert!(
        warnings(&startup_log).is_empty(),
        "a start after a clean shutdown should have nothing to warn about:\n{}",
        warnings(&startup_log).join("\n")
    );
    assert_eq!(
        log_file_sizes(&dir.data_dir()),
        sizes_at_shutdown,
        "a start after a clean shutdown must not truncate or grow any segment"
    );

    let mut client = RawClient::connect_or_panic(broker.addr());
    let sent: HashSet<&String> = outcome.sent.iter().collect();
    let mut stored: HashMap<String, (u32, i64)> = HashMap::new();
    let mut high_watermarks = Vec::new();
    for partition in 0..PARTITIONS {
        let (records, high_watermark) = read_partition(&mut client, TOPIC, partition, 0);
        assert_dense(&records, 0, &format!("partition {partition}"));
        assert_eq!(records.len() as i64, high_watermark);
        for record in records {
            let value = record.value_text();
            assert!(sent.contains(&value), "{value:.40?} was never sent");
            if let Some(earlier) = stored.insert(value.clone(), (partition, record.offset)) {
                panic!(
                    "{value:.40?} stored twice: {earlier:?} and {partition}/{}",
                    record.offset
                );
            }
        }
        high_watermarks.push(high_watermark);
    }
    for batch in &outcome.acked {
        for (index, value) in batch.values.iter().enumerate() {
            let place = (batch.partition, batch.base_offset + index as i64);
            assert_eq!(
                stored.get(value),
                Some(&place),
                "acknowledged {value:.40?} missing or moved"
            );
        }
    }
    for partition in 0..PARTITIONS {
        let base = client.produce_ok(TOPIC, partition, batch_of(&["after restart"]));
        assert_eq!(
            base, high_watermarks[partition as usize],
            "append after a clean restart"
        );
    }
}

#[test]
fn sigint_exits_zero_and_keeps_the_data() {
    let dir = TestDir::new("sigint");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("interrupted", 1, None);
    client.produce_ok("interrupted", 0, batch_of(&["one", "two", "three"]));
    drop(client);
    let status = broker.signal_and_wait(Signal::SIGINT);
    assert_eq!(status.code(), Some(0), "SIGINT must exit 0");
    broker.restart();
    let mut client = RawClient::connect_or_panic(broker.addr());
    let (records, _) = read_partition(&mut client, "interrupted", 0, 0);
    let values: Vec<String> = records.iter().map(|record| record.value_text()).collect();
    assert_eq!(values, vec!["one", "two", "three"]);
}

#[test]
fn sigterm_does_not_wait_out_a_pending_long_poll() {
    let dir = TestDir::new("shutdown-long-poll");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &[]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("quiet", 1, None);
    let mut poller = RawClient::connect_or_panic(broker.addr());
    let fetch = RawClient::fetch_body("quiet", 0, 0, 50_000, 1);
    let correlation_id = poller.send_body(fetch).unwrap();
    // Nothing can satisfy min_bytes, so the fetch must still be waiting.
    let early = poller.reaction(Duration::from_millis(300), Duration::from_millis(300));
    assert!(
        matches!(early, Reaction::Silent),
        "a fetch with min_bytes 1 on an empty partition must wait, got {early:?}"
    );
    let started = Instant::now();
    let status = broker.terminate_and_wait();
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");
    assert!(
        took < Duration::from_secs(10),
        "shutdown took {took:?}: it waited for a 50 s long poll instead of ending it"
    );
    // The poller gets an answer (empty, or BROKER_SHUTTING_DOWN) or a closed connection.
    match poller.reaction(Duration::from_secs(5), Duration::from_secs(5)) {
        Reaction::Closed => {}
        Reaction::Silent => panic!("the long poll was neither answered nor closed after the broker exited"),
        Reaction::Responded(responses) | Reaction::RespondedThenClosed(responses) => {
            for response in responses {
                assert_eq!(response.correlation_id, correlation_id, "{response:?}");
                assert!(
                    matches!(response.error(), ErrorCode::None | ErrorCode::BrokerShuttingDown),
                    "{response:?}"
                );
            }
        }
    }
}
