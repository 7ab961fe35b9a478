//! A background produce load: threads that each keep a few produce requests in flight on their
//! own connection, with unique values, and record which batches the broker acknowledged where.
//! It runs until the connection breaks (the broker was killed or stopped) or it is told to stop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidelog_proto::pb::{self, ErrorCode};

use crate::raw::RawClient;
use crate::records::batch_of;

/// The shape of a load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub topic: String,
    pub partitions: u32,
    pub producers: u64,
    /// Each producer keeps between 1 and this many requests in flight (chosen at random).
    pub in_flight_max: usize,
    pub records_per_batch_max: usize,
    /// Random padding added to each value, up to this many bytes.
    pub padding_bytes_max: usize,
    /// Prefix of every value, so loads of different rounds never share a value.
    pub label: String,
}

/// A batch the broker acknowledged.
#[derive(Debug, Clone)]
pub struct AckedBatch {
    pub partition: u32,
    pub base_offset: i64,
    pub values: Vec<String>,
}

/// What a finished load did.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    pub acked: Vec<AckedBatch>,
    /// Every value sent, acknowledged or not.
    pub sent: Vec<String>,
    /// Responses that break the protocol (say, an acknowledgement of the wrong record count).
    pub violations: Vec<String>,
}

#[derive(Debug, Default)]
struct Shared {
    outcome: Mutex<LoadOutcome>,
    acked_batches: AtomicUsize,
    /// Batches the broker answered with a partition error (not acknowledged).
    refused_batches: AtomicUsize,
    stop: AtomicBool,
}

/// A running load.
#[derive(Debug)]
pub struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `config.producers` threads against `addr`; their randomness derives from `rng`.
    pub fn start(addr: SocketAddr, config: &LoadConfig, rng: &mut StdRng) -> Self {
        let shared = Arc::new(Shared::default());
        let threads = (0..config.producers)
            .map(|producer| {
                let shared = shared.clone();
                let config = config.clone();
                let seed = rng.random::<u64>();
                std::thread::spawn(move || produce(addr, &config, producer, seed, &shared))
            })
            .collect();
        Self { shared, threads }
    }

    /// Batches acknowledged so far.
    pub fn acked_batches(&self) -> usize {
        self.shared.acked_batches.load(Ordering::Relaxed)
    }

    /// Batches refused so far with a partition-level error (a failed append, a sync timeout).
    pub fn refused_batches(&self) -> usize {
        self.shared.refused_batches.load(Ordering::Relaxed)
    }

    /// Tells the producers to send nothing more, waits for them to finish (they end at once when
    /// the broker is gone) and returns what they did.
    pub fn stop_and_join(self) -> LoadOutcome {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("producer thread panicked");
        }
        std::mem::take(&mut *self.shared.outcome.lock().expect("load lock"))
    }
}

fn produce(addr: SocketAddr, config: &LoadConfig, producer: u64, seed: u64, shared: &Shared) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Ok(mut client) = RawClient::connect(addr) else {
        return;
    };
    let in_flight_max = rng.random_range(1..=config.in_flight_max);
    let mut outstanding: HashMap<u64, (u32, Vec<String>)> = HashMap::new();
    let mut batch_number = 0u64;
    let violation = |text: String| shared.outcome.lock().expect("load lock").violations.push(text);
    // Bounded: tests stop or kill the broker long before this many responses.
    for _ in 0..1_000_000 {
        while outstanding.len() < in_flight_max && !shared.stop.load(Ordering::Relaxed) {
            batch_number += 1;
            let partition = rng.random_range(0..config.partitions);
            let count = rng.random_range(1..=config.records_per_batch_max);
            let values: Vec<String> = (0..count)
                .map(|index| {
                    let padding = "x".repeat(rng.random_range(0..=config.padding_bytes_max));
                    format!("{}-p{producer}-b{batch_number}-i{index}-{padding}", config.label)
                })
                .collect();
            shared
                .outcome
                .lock()
                .expect("load lock")
                .sent
                .extend(values.iter().cloned());
            let body = RawClient::produce_body(&config.topic, partition, batch_of(&values), pb::Acks::Leader);
            match client.send_body(body) {
                Ok(correlation_id) => {
                    outstanding.insert(correlation_id, (partition, values));
                }
                Err(_) => return,
            }
        }
        if outstanding.is_empty() {
            return;
        }
        let response = match client.read_response() {
            Ok(Some(response)) => response,
            _ => return,
        };
        let Some((partition, values)) = outstanding.remove(&response.correlation_id) else {
            violation(format!("response to a correlation id never sent: {response:?}"));
            return;
        };
        if response.error() != ErrorCode::None {
            // Refused as a whole: allowed only while the broker shuts down.
            if response.error() != ErrorCode::BrokerShuttingDown {
                violation(format!("produce refused as a whole: {response:?}"));
            }
            continue;
        }
        let Some(pb::response::Body::Produce(body)) = response.body else {
            violation(format!("produce answered with another body: {response:?}"));
            continue;
        };
        let Some(result) = body.topics.first().and_then(|topic| topic.partitions.first()) else {
            violation(format!("produce response without a partition: {body:?}"));
            continue;
        };
        if result.partition != partition {
            violation(format!(
                "asked for partition {partition}, answered for {result:?}"
            ));
        }
        if result.error() != ErrorCode::None {
            // Not acknowledged (a sync timeout, shutdown): the records may or may not be there.
            shared.refused_batches.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if result.last_offset - result.base_offset + 1 != values.len() as i64 {
            violation(format!("{} records acknowledged as {result:?}", values.len()));
        }
        shared.outcome.lock().expect("load lock").acked.push(AckedBatch {
            partition,
            base_offset: result.base_offset,
            values,
        });
        shared.acked_batches.fetch_add(1, Ordering::Relaxed);
    }
}
