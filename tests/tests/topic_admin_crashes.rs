//! Topic creates and deletes survive a SIGKILL at any moment. A worker creates topics (some
//! with names near the length limit, some reusing names deleted before), produces to them and
//! deletes them, while the broker is SIGKILLed after a random number of acknowledged
//! operations. After each restart: every topic whose create was acknowledged (and whose delete
//! was not started) still has every acknowledged record; every acknowledged delete is gone and
//! its name can be created again; the one operation in flight at the kill either happened or
//! did not, wholly; and no staging directory is left behind. Randomised: the seed is printed
//! and `TIDELOG_TEST_SEED` reproduces a run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidelog_e2e::records::{batch_of, read_partition};
use tidelog_e2e::wait::test_seed;
use tidelog_e2e::{poll_until, BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb::{self, ErrorCode};

const ROUNDS: usize = 12;
/// Acknowledged operations before a kill: at least this many, and up to this many more.
const OPERATIONS_MIN: usize = 5;
const OPERATIONS_SPREAD: usize = 40;
/// Operations one worker runs at most in one round (it stops earlier at the kill).
const OPERATIONS_MAX: usize = 10_000;
const OPERATIONS_WAIT: Duration = Duration::from_secs(120);
const NAME_BYTES_MAX: usize = 249;

/// What the broker acknowledged, and the one operation it had not answered at the kill.
#[derive(Debug, Default)]
struct Model {
    /// Live topics: partition count and the values acknowledged on partition 0, in order.
    topics: BTreeMap<String, (u32, Vec<String>)>,
    /// Names whose delete was acknowledged and that were not created again since.
    deleted: Vec<String>,
    in_flight: Option<Operation>,
}

#[derive(Debug, Clone)]
enum Operation {
    Create { name: String, partitions: u32 },
    Produce { name: String, values: Vec<String> },
    Delete { name: String },
}

fn name_for(rng: &mut StdRng, number: usize) -> String {
    let base = format!("t{number}-");
    let length = if rng.random_bool(0.3) {
        rng.random_range(236..=NAME_BYTES_MAX)
    } else {
        base.len() + rng.random_range(0..20)
    };
    let mut name = base;
    while name.len() < length {
        name.push(['a', 'Z', '9', '.', '_', '-'][name.len() % 6]);
    }
    name
}

/// A call that reports a dead broker as `None` instead of panicking.
fn call(client: &mut RawClient, body: pb::request::Body) -> Option<pb::response::Body> {
    let response = client.call(body).ok()?;
    assert_eq!(response.error(), ErrorCode::None, "{response:?}");
    response.body
}

fn run_worker(
    addr: std::net::SocketAddr,
    model: Arc<Mutex<Model>>,
    acknowledged: Arc<AtomicUsize>,
    seed: u64,
    round: usize,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ round as u64);
    let Ok(mut client) = RawClient::connect(addr) else {
        return;
    };
    for step in 0..OPERATIONS_MAX {
        let operation = {
            let model = model.lock().unwrap();
            let live: Vec<&String> = model.topics.keys().collect();
            let choice = rng.random_range(0..10);
            if live.is_empty() || choice < 3 {
                let name = match model.deleted.first() {
                    Some(name) if rng.random_bool(0.5) => name.clone(),
                    _ => name_for(&mut rng, round * OPERATIONS_MAX + step),
                };
                Operation::Create {
                    name,
                    partitions: rng.random_range(1..=3),
                }
            } else if choice < 8 {
                let name = live[rng.random_range(0..live.len())].clone();
                let values = (0..rng.random_range(1..=5))
                    .map(|index| format!("r{round}-s{step}-{index}"))
                    .collect();
                Operation::Produce { name, values }
            } else {
                let name = live[rng.random_range(0..live.len())].clone();
                Operation::Delete { name }
            }
        };
        model.lock().unwrap().in_flight = Some(operation.clone());
        let answered = match &operation {
            Operation::Create { name, partitions } => {
                let body = pb::request::Body::CreateTopics(pb::CreateTopicsRequest {
                    topics: vec![pb::create_topics_request::Topic {
                        name: name.clone(),
                        partitions: *partitions,
                        config: None,
                    }],
                });
                call(&mut client, body).map(|body| match body {
                    pb::response::Body::CreateTopics(response) => {
                        assert_eq!(
                            response.topics[0].error(),
                            ErrorCode::None,
                            "create {name}: {response:?}"
                        );
                    }
                    other => panic!("unexpected response {other:?}"),
                })
            }
            Operation::Produce { name, values } => {
                let body = RawClient::produce_body(name, 0, batch_of(values), pb::Acks::Leader);
                call(&mut client, body).map(|body| match body {
                    pb::response::Body::Produce(response) => {
                        let result = &response.topics[0].partitions[0];
                        assert_eq!(result.error(), ErrorCode::None, "produce to {name}: {result:?}");
                        let model = model.lock().unwrap();
                        let expected = model.topics[name].1.len() as i64;
                        assert_eq!(result.base_offset, expected, "produce to {name}: offset");
                    }
                    other => panic!("unexpected response {other:?}"),
                })
            }
            Operation::Delete { name } => {
                let body = pb::request::Body::DeleteTopics(pb::DeleteTopicsRequest {
                    names: vec![name.clone()],
                });
                call(&mut client, body).map(|body| match body {
                    pb::response::Body::DeleteTopics(response) => {
                        assert_eq!(
                            response.topics[0].error(),
                            ErrorCode::None,
                            "delete {name}: {response:?}"
                        );
                    }
                    other => panic!("unexpected response {other:?}"),
                })
            }
        };
        if answered.is_none() {
            // The broker died with this operation unanswered; it stays in flight.
            return;
        }
        let mut model = model.lock().unwrap();
        model.in_flight = None;
        match operation {
            Operation::Create { name, partitions } => {
                model.deleted.retain(|deleted| deleted != &name);
                model.topics.insert(name, (partitions, Vec::new()));
            }
            Operation::Produce { name, values } => {
                if let Some(topic) = model.topics.get_mut(&name) {
                    topic.1.extend(values);
                }
            }
            Operation::Delete { name } => {
                model.topics.remove(&name);
                model.deleted.push(name);
            }
        }
        drop(model);
        acknowledged.fetch_add(1, Ordering::SeqCst);
    }
}

/// Checks the restarted broker against the model and folds the in-flight operation's outcome
/// into it.
fn verify(broker: &BrokerProcess, model: &mut Model, context: &str) {
    let mut client = RawClient::connect_or_panic(broker.addr());
    let listed: BTreeMap<String, u32> = client
        .metadata(&[])
        .topics
        .into_iter()
        .map(|topic| {
            for partition in &topic.partitions {
                assert_eq!(
                    partition.error(),
                    ErrorCode::None,
                    "{context}: {} {partition:?}",
                    topic.name
                );
            }
            (topic.name, topic.partitions.len() as u32)
        })
        .collect();
    let read = |client: &mut RawClient, name: &str| -> Vec<String> {
        let (records, _) = read_partition(client, name, 0, 0);
        records.iter().map(|record| record.value_text()).collect()
    };
    match model.in_flight.take() {
        Some(Operation::Create { name, partitions }) => {
            if let Some(count) = listed.get(&name) {
                assert_eq!(*count, partitions, "{context}: in-flight create of {name}");
                assert!(
                    read(&mut client, &name).is_empty(),
                    "{context}: new topic {name} has records"
                );
                model.deleted.retain(|deleted| deleted != &name);
                model.topics.insert(name, (partitions, Vec::new()));
            }
        }
        Some(Operation::Produce { name, values }) => {
            let stored = read(&mut client, &name);
            let topic = model.topics.get_mut(&name).expect("produced to a live topic");
            if stored.len() > topic.1.len() {
                // Stored though unacknowledged: then all of the batch, right after the rest.
                assert_eq!(
                    stored[topic.1.len()..],
                    values[..],
                    "{context}: in-flight produce to {name}"
                );
                topic.1.extend(values);
            }
        }
        Some(Operation::Delete { name }) if !listed.contains_key(&name) => {
            model.topics.remove(&name);
            model.deleted.push(name);
        }
        Some(Operation::Delete { .. }) | None => {}
    }
    let expected: BTreeMap<String, u32> = model
        .topics
        .iter()
        .map(|(name, (partitions, _))| (name.clone(), *partitions))
        .collect();
    assert_eq!(listed, expected, "{context}: the topics served");
    for (name, (_, values)) in &model.topics {
        assert_eq!(&read(&mut client, name), values, "{context}: records of {name}");
    }
    for tree in ["creating", "deleting"] {
        let left = std::fs::read_dir(broker.data_dir().join(tree)).unwrap().count();
        assert_eq!(left, 0, "{context}: {tree}/ holds {left} entries after the start");
    }
}

#[test]
fn topic_creates_and_deletes_survive_sigkill_at_any_moment() {
    let seed = test_seed("topic_creates_and_deletes_survive_sigkill_at_any_moment");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TestDir::new("topic-admin-crashes");
    let mut broker = BrokerProcess::start(&dir.data_dir(), &["--flush", "always"]);
    let mut model = Model::default();
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
    broker.terminate_and_wait();
}
