//! `kafka-load produce`: N keyless records of one size, one partition's batch at a time (as
//! `tidelog perf produce` does, so batches leave full), through one `ThreadedProducer`.
//!
//! Threaded, not a `BaseProducer` polled from the sending loop: the crate's `poll` spins for
//! the last millisecond of every timeout (librdkafka takes whole milliseconds), and a sending
//! thread that spins while the queue is full takes a core from librdkafka's own I/O thread
//! and from the broker on a 2-core machine (measured: half the generator's CPU, throughput
//! a third). The crate's polling thread waits 100 ms at a time; the sending loop sleeps
//! when the queue is full.

use std::sync::atomic::Ordering;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::context::{Common, LoadContext};
use crate::report::{histogram, join_all, payload, summary};
use crate::Compression;

/// How long metadata, and the final flush, may take before the run fails.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the sending loop sleeps when librdkafka's queue is full: about the time one 1 MiB
/// batch takes to go out, so a few retries per batch.
const QUEUE_FULL_SLEEP: Duration = Duration::from_micros(500);

/// `acks` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Acks {
    /// `acks=0`: no response; a record counts once written to the socket.
    #[value(name = "0")]
    Zero,
    /// `acks=1`: the leader has appended the batch.
    #[value(name = "1")]
    One,
    /// `acks=all` (-1): on Tidelog, the leader, as there are no replicas yet.
    All,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to (it must exist).
    topic: String,
    /// Records to send.
    #[arg(long, value_name = "N")]
    records: u64,
    /// Value size of each record (keyless).
    #[arg(long, value_name = "BYTES")]
    record_size: usize,
    /// Spread records over the first N partitions (default: all).
    #[arg(long, value_name = "N")]
    partitions_used: Option<i32>,
    /// `acks`. The default, with idempotence, is what `tidelog perf produce` does by default.
    #[arg(long, value_enum, default_value_t = Acks::All)]
    acks: Acks,
    /// `enable.idempotence` (needs `--acks all`); `tidelog perf produce` is idempotent.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    idempotence: bool,
    /// `batch.size`, and `message.max.bytes` above it (1 MiB, as perf produce).
    #[arg(long, default_value_t = 1024 * 1024, value_name = "BYTES")]
    batch_size: usize,
    /// `linger.ms`. Not perf produce's 5 ms: librdkafka's broker thread busy-waits while the
    /// oldest record waiting to be sent is older than `linger.ms` and the partition has all
    /// five idempotent batches in flight (`rd_kafka_msgq_allow_wakeup_at` clamps its wake-up
    /// to "now"), which under full load is always: measured, 4.2x the generator's CPU per
    /// record (3.25 s against 0.77 s for 300,000 1 KiB records). Under full load batches
    /// close on `batch.size` long before any linger, and `flush` sends the tail at once, so
    /// the long linger changes no batch, only the broker thread's wake-ups.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    linger_ms: u64,
    /// `queue.buffering.max.kbytes` in bytes (64 MiB, as perf produce's buffer).
    #[arg(long, default_value_t = 64 * 1024 * 1024, value_name = "BYTES")]
    buffer_bytes: usize,
    /// `compression.codec`.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compression: Compression,
    /// Measure latency on one record in this many.
    #[arg(long, default_value_t = 64, value_name = "N")]
    latency_sample_every: u64,
    /// Producers (each its own librdkafka client, connection and threads) sending at once
    /// from threads of this process, each a share of --records: one librdkafka producer's
    /// application thread fills batches slower than a broker can take them at 100 B.
    #[arg(long, default_value_t = 1, value_name = "N")]
    instances: u64,
}

/// One producer, started and warmed up, waiting for the clock.
struct Ready {
    producer: ThreadedProducer<LoadContext>,
    used: i32,
    records: u64,
}

pub fn run(common: &Common, args: &ProduceArgs) -> anyhow::Result<String> {
    if args.latency_sample_every == 0 {
        bail!("--latency-sample-every must be at least 1");
    }
    if args.idempotence && args.acks != Acks::All {
        bail!("--idempotence true needs --acks all (librdkafka's rule); pass --idempotence false");
    }
    if args.instances == 0 || args.instances > args.records.max(1) {
        bail!("--instances must be between 1 and --records");
    }
    // Every producer is created and warmed up before any starts sending, and the clock runs
    // from the common start to the last producer's final flush: the rate is the aggregate.
    let shares = crate::report::shares(args.records, args.instances);
    let start_line = Barrier::new(shares.len());
    let results: Vec<anyhow::Result<(Duration, Histogram<u64>)>> = std::thread::scope(|scope| {
        let threads: Vec<_> = shares
            .iter()
            .map(|&records| {
                let start_line = &start_line;
                scope.spawn(move || {
                    // A failed start must still reach the start line, or the others wait
                    // forever; it reports its error after.
                    let ready = prepare(common, args, records);
                    start_line.wait();
                    let ready = ready?;
                    let start = Instant::now();
                    let latency = send_all(&ready, args)?;
                    Ok((start.elapsed(), latency))
                })
            })
            .collect();
        join_all(threads, "producer")
    });
    let mut elapsed = Duration::ZERO;
    let mut latency = histogram()?;
    for result in results {
        let (took, one) = result?;
        elapsed = elapsed.max(took);
        latency.add(&one).context("cannot merge the latency histograms")?;
    }
    Ok(summary(
        args.records,
        args.records * args.record_size as u64,
        elapsed,
        &latency,
    ))
}

/// Creates one producer for `records` of the records and sends its warm-up record.
fn prepare(common: &Common, args: &ProduceArgs, records: u64) -> anyhow::Result<Ready> {
    let acks = match args.acks {
        Acks::Zero => "0",
        Acks::One => "1",
        Acks::All => "all",
    };
    let mut config = common.config();
    config
        .set("acks", acks)
        .set("enable.idempotence", args.idempotence.to_string())
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_size.to_string())
        // Let the byte size close a batch, not librdkafka's default of 10,000 records.
        .set("batch.num.messages", "1000000")
        // A batch of batch.size plus its framing must fit in one request.
        .set("message.max.bytes", (args.batch_size + 64 * 1024).to_string())
        .set(
            "queue.buffering.max.kbytes",
            (args.buffer_bytes / 1024).max(1).to_string(),
        )
        // Bytes bound the queue, not librdkafka's default of 100,000 records.
        .set("queue.buffering.max.messages", "2147483647")
        // Five batches in flight per partition, as perf produce (and idempotence's limit).
        .set("max.in.flight.requests.per.connection", "5")
        .set("compression.codec", args.compression.librdkafka_name())
        // A record not acknowledged in a minute fails the run rather than stalling it for
        // librdkafka's default of five minutes.
        .set("message.timeout.ms", "60000");
    common.apply_properties(&mut config)?;
    let producer: ThreadedProducer<LoadContext> = config
        .create_with_context(LoadContext::new()?)
        .context("cannot create the librdkafka producer")?;

    let metadata = producer
        .client()
        .fetch_metadata(Some(&args.topic), METADATA_TIMEOUT)
        .context("cannot fetch the topic's metadata")?;
    let partitions = match metadata.topics().first() {
        Some(topic) if topic.error().is_none() => topic.partitions().len() as i32,
        Some(topic) => bail!("topic {}: {:?}", args.topic, topic.error()),
        None => bail!("topic {} not in the metadata", args.topic),
    };
    let used = args.partitions_used.unwrap_or(partitions);
    if used <= 0 || used > partitions {
        bail!("--partitions-used must be between 1 and the topic's {partitions} partitions");
    }

    let value = payload(args.record_size);
    // One warm-up record, acknowledged before the clock starts and not counted: librdkafka
    // takes about half a second to get its idempotent producer id (a timer in its idempotence
    // state machine), which is client start-up, not the listener's throughput. The topic so
    // holds one record more than --records per instance.
    producer
        .send(
            BaseRecord::<(), [u8], usize>::with_opaque_to(&args.topic, 0)
                .payload(&value[..])
                .partition(0),
        )
        .map_err(|(error, _)| anyhow::anyhow!("cannot send the warm-up record: {error}"))?;
    producer
        .flush(FLUSH_TIMEOUT)
        .context("the warm-up record was not acknowledged in time")?;
    let warm_up_failed = context_failed(&producer);
    if warm_up_failed > 0 {
        bail!("the warm-up record failed");
    }
    producer.context().delivered.store(0, Ordering::Relaxed);
    Ok(Ready {
        producer,
        used,
        records,
    })
}

/// Sends the producer's records, waits until every one is acknowledged, and returns the
/// sampled delivery latencies.
fn send_all(ready: &Ready, args: &ProduceArgs) -> anyhow::Result<Histogram<u64>> {
    let (producer, used) = (&ready.producer, ready.used);
    let value = payload(args.record_size);
    // Fill one partition's batch before moving to the next, so batches leave full.
    let records_per_batch = (args.batch_size / (args.record_size + 16).max(1)).max(1) as u64;
    let context = producer.context();
    let mut partition = 0i32;
    let mut left_in_batch = records_per_batch;
    let mut until_sample = 0u64;
    for sent in 0..ready.records {
        let stamp = if until_sample == 0 {
            until_sample = args.latency_sample_every;
            context.stamp()
        } else {
            0
        };
        until_sample -= 1;
        let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(&args.topic, stamp)
            .payload(&value[..])
            .partition(partition);
        // The queue is bounded by bytes: when full, wait for the polling thread to serve
        // delivery reports, which make room.
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(QUEUE_FULL_SLEEP);
                }
                Err((error, _)) => bail!("cannot send record {sent}: {error}"),
            }
        }
        left_in_batch -= 1;
        if left_in_batch == 0 {
            left_in_batch = records_per_batch;
            partition = if partition + 1 == used { 0 } else { partition + 1 };
        }
    }
    // Waits for every outstanding record; the polling thread serves their delivery reports.
    producer
        .flush(FLUSH_TIMEOUT)
        .context("not every record was acknowledged in time")?;

    let delivered = context.delivered.load(Ordering::Relaxed);
    let failed = context.failed.load(Ordering::Relaxed);
    if failed > 0 || delivered != ready.records {
        let first = context.first_failure.lock().ok().and_then(|first| first.clone());
        bail!(
            "{delivered} of {} records delivered, {failed} failed (first: {})",
            ready.records,
            first.as_deref().unwrap_or("none")
        );
    }
    let latency = context
        .latency_us
        .lock()
        .map_err(|_| anyhow::anyhow!("the latency histogram was poisoned"))?
        .clone();
    Ok(latency)
}

fn context_failed(producer: &ThreadedProducer<LoadContext>) -> u64 {
    producer.context().failed.load(Ordering::Relaxed)
}
