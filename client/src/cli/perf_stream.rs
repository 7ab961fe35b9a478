//! `tidelog perf stream-append`: conditional appends (issue 8 §6). WRITERS tasks, each on its
//! own connection, append one record at a time (each waits for its answer) to streams:
//! distinct keys (`--keys distinct`: every append opens a new stream, `--expect none`) or a few
//! hot keys shared by the writers (`--keys N --expect exact`: each writer appends on the version
//! it last saw, and on a conflict retries on the actual one). `--expect off` sends the same
//! records with no condition, the baseline. The result is one line on stdout:
//! `appends=N records_per_s=X attempts=A conflicts=C conflict_rate=R p50_ms=.. p99_ms=..`
//! (latency of the successful appends, conflicts' retries included).

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::Rng;
use tidelog_client::{AppendConditions, Client, Error, EventData, Expected};
use tokio::time::Instant;

use super::ConnectionArgs;

/// Latencies up to this many microseconds are recorded exactly (3 significant digits).
const LATENCY_MAX_US: u64 = 600 * 1_000_000;

/// `--expect`: what each append expects of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExpectArg {
    /// No condition at all (the baseline).
    Off,
    /// The stream has no record (for distinct keys).
    None,
    /// The stream's last record is the one this writer last saw (for hot keys).
    Exact,
}

#[derive(Debug, Args)]
pub struct PerfStreamAppendArgs {
    /// Topic to append to (it must exist).
    topic: String,
    /// Successful appends in all, split evenly over the writers.
    #[arg(long, value_name = "N")]
    appends: u64,
    /// Concurrent writers, each with its own connection.
    #[arg(long, default_value_t = 1, value_name = "N")]
    writers: u64,
    /// `distinct` (a new key per append) or the number of hot keys the writers share (writer
    /// w appends to key w % N).
    #[arg(long, default_value = "distinct", value_name = "distinct|N")]
    keys: String,
    #[arg(long, value_enum, default_value_t = ExpectArg::None)]
    expect: ExpectArg,
    /// Value size of each record.
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    record_size: usize,
    /// Give up after this long.
    #[arg(long, default_value_t = 600, value_name = "S")]
    timeout_s: u64,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// What one writer did.
struct Tally {
    appends: u64,
    attempts: u64,
    conflicts: u64,
    latency: Histogram<u64>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).context("cannot create the latency histogram")
}

pub async fn run(broker: &str, args: PerfStreamAppendArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.writers > 0, "--writers must be at least 1");
    let hot_keys: Option<u64> = match args.keys.as_str() {
        "distinct" => None,
        number => Some(
            number
                .parse()
                .ok()
                .filter(|keys| *keys > 0)
                .with_context(|| format!("--keys {number:?} is neither distinct nor a positive count"))?,
        ),
    };
    // A fresh key space per run, so runs on one topic do not see each other's streams.
    let run: u32 = rand::rng().random();
    let mut clients = Vec::new();
    for _ in 0..args.writers {
        clients.push(super::connect(broker, &args.connection).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let value = Bytes::from(vec![b'x'; args.record_size]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (writer, client) in clients.into_iter().enumerate() {
        let writer = writer as u64;
        let share = args.appends / args.writers + u64::from(writer < args.appends % args.writers);
        let topic = args.topic.clone();
        let value = value.clone();
        let expect = args.expect;
        tasks.push(tokio::spawn(async move {
            write(
                client, topic, writer, share, hot_keys, expect, value, run, deadline,
            )
            .await
        }));
    }
    let mut total = Tally {
        appends: 0,
        attempts: 0,
        conflicts: 0,
        latency: histogram()?,
    };
    for task in tasks {
        let tally = task.await.context("a writer task failed")??;
        total.appends += tally.appends;
        total.attempts += tally.attempts;
        total.conflicts += tally.conflicts;
        total.latency.add(&tally.latency).context("merging latencies")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |quantile: f64| total.latency.value_at_quantile(quantile) as f64 / 1000.0;
    println!(
        "appends={} records_per_s={:.0} attempts={} conflicts={} conflict_rate={:.3} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3}",
        total.appends,
        total.appends as f64 / elapsed.max(f64::EPSILON),
        total.attempts,
        total.conflicts,
        total.conflicts as f64 / (total.attempts.max(1)) as f64,
        ms(0.5),
        ms(0.99),
        ms(0.999),
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)] // One writer's whole setup, spawned once per writer.
async fn write(
    client: Client,
    topic: String,
    writer: u64,
    share: u64,
    hot_keys: Option<u64>,
    expect: ExpectArg,
    value: Bytes,
    run: u32,
    deadline: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally {
        appends: 0,
        attempts: 0,
        conflicts: 0,
        latency: histogram()?,
    };
    let hot_key = hot_keys.map(|keys| Bytes::from(format!("hot-{run:08x}-{}", writer % keys)));
    let mut version = -1i64;
    while tally.appends < share {
        let key = match &hot_key {
            Some(key) => key.clone(),
            None => Bytes::from(format!("key-{run:08x}-{writer}-{}", tally.appends)),
        };
        let began = Instant::now();
        // Bounded by the deadline: a conflict means another writer won, so time moves on.
        loop {
            anyhow::ensure!(Instant::now() < deadline, "writer {writer} ran past --timeout-s");
            tally.attempts += 1;
            let conditions = match expect {
                ExpectArg::Off => AppendConditions::default(),
                ExpectArg::None => AppendConditions {
                    expected_end_offset: None,
                    keys: vec![(key.clone(), Expected::NoStream)],
                },
                ExpectArg::Exact => AppendConditions {
                    expected_end_offset: None,
                    keys: vec![(
                        key.clone(),
                        if version < 0 {
                            Expected::NoStream
                        } else {
                            Expected::Exact(version)
                        },
                    )],
                },
            };
            let partitions = client.topic(&topic).await?.partition_count();
            let partition = tidelog_client::partitioner::partition_for_key(&key, partitions);
            let records = vec![(key.clone(), EventData::new(value.clone()))];
            match client
                .append_conditional(&topic, partition, records, conditions)
                .await
            {
                Ok(appended) => {
                    version = appended.offsets.last().copied().unwrap_or(version);
                    break;
                }
                Err(Error::ExpectationFailed { failures }) if expect == ExpectArg::Exact => {
                    tally.conflicts += 1;
                    version = failures.first().map_or(version, |failure| failure.actual);
                }
                Err(error) => return Err(error).context(format!("writer {writer}: append failed")),
            }
        }
        let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally.latency.saturating_record(micros.max(1));
        tally.appends += 1;
    }
    Ok(tally)
}
