//! Changes to a live topic survive a SIGKILL at any moment. A worker adds partitions, changes
//! the topic's retention, trims partitions and produces, while the broker is SIGKILLed after a
//! random number of acknowledged operations. After each restart: the partition count is the
//! acknowledged one, or one more if an add was in flight (never anything else, never fewer);
//! the configuration and every partition's log start are the acknowledged ones or the
//! in-flight one's; every acknowledged record at or above its partition's log start is there.
//! Randomised: the seed is printed and `TIDELOG_TEST_SEED` reproduces a run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidelog_e2e::records::{batch_of, read_partition};
use tidelog_e2e::wait::test_seed;
use tidelog_e2e::{poll_until, BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::{self, ErrorCode};

const ROUNDS: usize = 8;
const OPERATIONS_MIN: usize = 5;
const OPERATIONS_SPREAD: usize = 30;
const OPERATIONS_MAX: usize = 10_000;
const OPERATIONS_WAIT: Duration = Duration::from_secs(120);
const TOPIC: &str = "growing";
/// Far below `limits.partitions_per_topic_max`: the worker stops adding there.
const PARTITIONS_MAX: usize = 40;

/// What the broker acknowledged about the topic, and the one unanswered operation.
#[derive(Debug, Default, Clone)]
struct Model {
    /// Per partition: its log start and every value acknowledged, by offset.
    partitions: Vec<(i64, Vec<String>)>,
    retention_ms: Option<i64>,
    in_flight: Option<Operation>,
}

#[derive(Debug, Clone)]
enum Operation {
    AddPartition,
    Retention(i64),
    Trim { partition: u32, before: i64 },
    Produce { partition: u32, values: Vec<String> },
}

fn alter(partitions: Option<u32>, retention_ms: Option<i64>) -> pb::request::Body {
    pb::request::Body::AlterTopic(pb::AlterTopicRequest {
        name: TOPIC.into(),
        partitions,
        config: retention_ms
            .map(|ms| pb::ConfigChange {
                name: "retention.ms".into(),
                value: Some(ms.to_string()),
            })
            .into_iter()
            .collect(),
        validate_only: false,
    })
}

fn run_worker(
    addr: std::net::SocketAddr,
    model: Arc<Mutex<Model>>,
    acknowledged: Arc<AtomicUsize>,
    seed: u64,
    round: usize,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (round as u64).wrapping_mul(0x9e37_79b9));
    let Ok(mut client) = RawClient::connect(addr) else {
        return;
    };
    for step in 0..OPERATIONS_MAX {
        let operation = {
            let model = model.lock().unwrap();
            let count = model.partitions.len() as u32;
            match rng.random_range(0..10) {
                0 | 1 if model.partitions.len() < PARTITIONS_MAX => Operation::AddPartition,
                2 => Operation::Retention(rng.random_range(60_000..86_400_000)),
                3 => {
                    let partition = rng.random_range(0..count);
                    let (start, values) = &model.partitions[partition as usize];
                    let end = values.len() as i64;
                    Operation::Trim {
                        partition,
                        before: if end > *start {
                            rng.random_range(*start..=end)
                        } else {
                            end
                        },
                    }
                }
                _ => Operation::Produce {
                    partition: rng.random_range(0..count),
                    values: (0..rng.random_range(1..=4))
                        .map(|index| format!("r{round}-s{step}-{index}"))
                        .collect(),
                },
            }
        };
        model.lock().unwrap().in_flight = Some(operation.clone());
        let body = match &operation {
            Operation::AddPartition => alter(Some(model.lock().unwrap().partitions.len() as u32 + 1), None),
            Operation::Retention(ms) => alter(None, Some(*ms)),
            Operation::Trim { partition, before } => pb::request::Body::TrimTopic(pb::TrimTopicRequest {
                topic: TOPIC.into(),
                partitions: vec![pb::trim_topic_request::Partition {
                    partition: *partition,
                    before: *before,
                }],
            }),
            Operation::Produce { partition, values } => {
                RawClient::produce_body(TOPIC, *partition, batch_of(values), pb::Acks::Leader)
            }
        };
        let Ok(response) = client.call(body) else {
            // The broker died with this operation unanswered; it stays in flight.
            return;
        };
        assert_eq!(response.error(), ErrorCode::None, "{operation:?}: {response:?}");
        let mut model = model.lock().unwrap();
        match (operation, response.body) {
            (
                Operation::AddPartition | Operation::Retention(_),
                Some(pb::response::Body::AlterTopic(answer)),
            ) => {
                let result = answer.topic.expect("a topic result");
                assert_eq!(result.error(), ErrorCode::None, "{result:?}");
                match model.in_flight.take() {
                    Some(Operation::AddPartition) => model.partitions.push((0, Vec::new())),
                    Some(Operation::Retention(ms)) => model.retention_ms = Some(ms),
                    other => unreachable!("{other:?}"),
                }
            }
            (Operation::Trim { partition, .. }, Some(pb::response::Body::TrimTopic(answer))) => {
                let result = &answer.partitions[0];
                assert_eq!(result.error(), ErrorCode::None, "{result:?}");
                model.partitions[partition as usize].0 = result.log_start_offset;
                model.in_flight = None;
            }
            (Operation::Produce { partition, values }, Some(pb::response::Body::Produce(answer))) => {
                let result = &answer.topics[0].partitions[0];
                assert_eq!(result.error(), ErrorCode::None, "{result:?}");
                let stored = &mut model.partitions[partition as usize].1;
                assert_eq!(result.base_offset, stored.len() as i64, "dense offsets");
                stored.extend(values);
                model.in_flight = None;
            }
            (operation, body) => panic!("{operation:?} answered with {body:?}"),
        }
        drop(model);
        acknowledged.fetch_add(1, Ordering::SeqCst);
    }
}

fn verify(broker: &BrokerProcess, model: &mut Model, context: &str) {
    let mut client = RawClient::connect_or_panic(broker.addr());
    let metadata = client.metadata(&[TOPIC]).topics.remove(0);
    let count = metadata.partitions.len();
    let retention_ms = metadata.config.as_ref().and_then(|config| config.retention_ms);
    match model.in_flight.take() {
        Some(Operation::AddPartition) if count == model.partitions.len() + 1 => {
            model.partitions.push((0, Vec::new()))
        }
        Some(Operation::Retention(ms)) if retention_ms == Some(ms) => model.retention_ms = Some(ms),
        Some(Operation::Trim { partition, before }) => {
            let start = metadata.partitions[partition as usize].log_start_offset;
            let known = model.partitions[partition as usize].0;
            assert!(start == known || start == before, "{context}: in-flight trim of {partition} to {before}: log start {start}, acknowledged {known}");
            model.partitions[partition as usize].0 = start;
        }
        Some(Operation::Produce { partition, values }) => {
            let (start, stored) = &model.partitions[partition as usize];
            let (records, _) = read_partition(&mut client, TOPIC, partition, *start);
            if records.len() as i64 + start > stored.len() as i64 {
                let extra: Vec<String> = records[(stored.len() as i64 - start) as usize..]
                    .iter()
                    .map(|record| record.value_text())
                    .collect();
                assert_eq!(extra, values, "{context}: in-flight produce to {partition}");
                model.partitions[partition as usize].1.extend(values);
            }
        }
        _ => {}
    }
    assert_eq!(count, model.partitions.len(), "{context}: partition count");
    if let Some(ms) = model.retention_ms {
        assert_eq!(retention_ms, Some(ms), "{context}: retention.ms");
    }
    for (partition, (start, values)) in model.partitions.iter().enumerate() {
        let served = &metadata.partitions[partition];
        assert_eq!(served.error(), ErrorCode::None, "{context}: {served:?}");
        assert_eq!(
            served.log_start_offset, *start,
            "{context}: log start of {partition}"
        );
        assert_eq!(
            served.high_watermark,
            values.len() as i64,
            "{context}: end of {partition}"
        );
        let (records, _) = read_partition(&mut client, TOPIC, partition as u32, *start);
        let read: Vec<String> = records.iter().map(|record| record.value_text()).collect();
        assert_eq!(
            read,
            values[*start as usize..],
            "{context}: records of {partition}"
        );
    }
}

#[test]
fn added_partitions_config_changes_and_trims_survive_sigkill_at_any_moment() {
    let seed = test_seed("added_partitions_config_changes_and_trims_survive_sigkill_at_any_moment");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TestDir::new("topic-alter-crashes");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &["--flush", "always"]);
    RawClient::connect_or_panic(broker.addr()).create_topic(TOPIC, 1, None);
    let mut model = Model {
        partitions: vec![(0, Vec::new())],
        ..Model::default()
    };
    for round in 0..ROUNDS {
        let shared = Arc::new(Mutex::new(std::mem::take(&mut model)));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let target = OPERATIONS_MIN + rng.random_range(0..OPERATIONS_SPREAD);
        let worker = {
            let (addr, shared, acknowledged) = (broker.addr(), shared.clone(), acknowledged.clone());
            std::thread::spawn(move || run_worker(addr, shared, acknowledged, seed, round))
        };
        poll_until(OPERATIONS_WAIT, "the worker's operations", || {
            (acknowledged.load(Ordering::SeqCst) >= target || worker.is_finished()).then_some(())
        });
        broker.kill9();
        worker.join().expect("worker thread");
        model = Arc::try_unwrap(shared)
            .expect("worker is done")
            .into_inner()
            .unwrap();
        broker.restart();
        verify(&broker, &mut model, &format!("round {round} (seed {seed})"));
    }
    // Over ~150 operations, a fifth of them adds: the run exercised what it is named for.
    assert!(
        model.partitions.len() > 2,
        "only {} partitions after the run (seed {seed})",
        model.partitions.len()
    );
    assert!(
        model.partitions.iter().any(|(start, _)| *start > 0),
        "no partition was trimmed (seed {seed})"
    );
    broker.terminate_and_wait();
}
