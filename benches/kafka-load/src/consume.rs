//! `kafka-load consume`: N records from the beginning of the topic's partitions (all, or those
//! named), through one `BaseConsumer` with a manual assignment: no group coordination in the
//! measurement, as `tidelog perf consume` without `--group`.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::context::{Common, LoadContext};
use crate::report::{histogram, join_all, summary};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// One poll waits at most this long, so the no-progress timeout is checked in time.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// Fetch responses of about this size consumed fastest on the machine we measure on; the same
/// per-partition sizing as `tidelog perf consume` (8 MiB over the partitions, 1 to 8 MiB each).
const FETCH_RESPONSE_BYTES_TARGET: u32 = 8 * 1024 * 1024;
const PARTITION_FETCH_BYTES_MIN: u32 = 1024 * 1024;
/// Time one poll in this many for the latency figures.
const LATENCY_SAMPLE_EVERY: u64 = 64;

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read (from the beginning of every partition read).
    topic: String,
    /// Records to read.
    #[arg(long, value_name = "N")]
    records: u64,
    /// Read only these partitions (comma-separated; default: all), e.g. to split a topic
    /// between two generators.
    #[arg(long, value_delimiter = ',', value_name = "P,..")]
    partitions: Vec<i32>,
    /// Give up when no record arrives for this long.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    timeout_ms: u64,
    /// `fetch.max.bytes` (50 MiB, as perf consume and librdkafka).
    #[arg(long, default_value_t = 50 * 1024 * 1024, value_name = "BYTES")]
    fetch_max_bytes: u32,
    /// `max.partition.fetch.bytes` [default: perf consume's: 8 MiB split over the partitions
    /// read, between 1 MiB and 8 MiB each]
    #[arg(long, value_name = "BYTES")]
    partition_fetch_max_bytes: Option<u32>,
    /// `check.crcs`: librdkafka's default is off; `tidelog perf consume` checks them.
    #[arg(long)]
    check_crcs: bool,
    /// Consumers (each its own librdkafka client, connection and threads) reading at once
    /// from threads of this process, each a share of --records from its own stretch of the
    /// partitions: consumer i starts at offset (the records of consumers before it) / (the
    /// partitions read) of every partition. One librdkafka consumer hands out one record per
    /// poll, which limits it at 100 B before a broker does.
    #[arg(long, default_value_t = 1, value_name = "N")]
    instances: u64,
}

/// What one consumer read, and when its first and last record arrived.
struct Read {
    records: u64,
    bytes: u64,
    first: Option<Instant>,
    last: Instant,
    latency: Histogram<u64>,
}

pub fn run(common: &Common, args: &ConsumeArgs) -> anyhow::Result<String> {
    if args.instances == 0 || args.instances > args.records.max(1) {
        bail!("--instances must be between 1 and --records");
    }
    // A group id is needed for an assignment; nothing is committed and no group is joined.
    let mut config = common.config();
    config
        .set("group.id", format!("kafka-load-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", args.fetch_max_bytes.to_string())
        // librdkafka requires room for a whole fetch response plus framing.
        .set(
            "receive.message.max.bytes",
            (u64::from(args.fetch_max_bytes) + 1024 * 1024).to_string(),
        )
        .set("check.crcs", args.check_crcs.to_string())
        // librdkafka stops prefetching a partition once 100,000 records or 64 MiB wait in its
        // queue, and then backs off for fetch.queue.backoff.ms (1 s by default) before the
        // next fetch: at 100 B that was a pause after every other 8 MiB fetch, and 131,000
        // records/s. A deep queue and a short backoff keep one fetch always in flight.
        .set("queued.min.messages", "10000000")
        .set("queued.max.messages.kbytes", "262144")
        .set("fetch.queue.backoff.ms", "1");
    common.apply_properties(&mut config)?;
    let probe: BaseConsumer<LoadContext> = config
        .create_with_context(LoadContext::new()?)
        .context("cannot create the librdkafka consumer")?;
    let metadata = probe
        .fetch_metadata(Some(&args.topic), METADATA_TIMEOUT)
        .context("cannot fetch the topic's metadata")?;
    let all: Vec<i32> = match metadata.topics().first() {
        Some(topic) if topic.error().is_none() => topic.partitions().iter().map(|p| p.id()).collect(),
        Some(topic) => bail!("topic {}: {:?}", args.topic, topic.error()),
        None => bail!("topic {} not in the metadata", args.topic),
    };
    drop(probe);
    let read: Vec<i32> = if args.partitions.is_empty() {
        all
    } else {
        if let Some(missing) = args.partitions.iter().find(|p| !all.contains(p)) {
            bail!("topic {} has no partition {missing}", args.topic);
        }
        args.partitions.clone()
    };
    let partition_fetch_max_bytes = args.partition_fetch_max_bytes.unwrap_or_else(|| {
        (FETCH_RESPONSE_BYTES_TARGET / (read.len() as u32).max(1))
            .clamp(PARTITION_FETCH_BYTES_MIN, FETCH_RESPONSE_BYTES_TARGET)
    });
    config.set("max.partition.fetch.bytes", partition_fetch_max_bytes.to_string());
    common.apply_properties(&mut config)?;

    // Every consumer is created before any is assigned (assigning starts its fetches); the
    // clock runs from the first record any of them got to the last record of the last one.
    let shares = crate::report::shares(args.records, args.instances);
    let start_line = Barrier::new(shares.len());
    let (config, read, start_line) = (&config, &read, &start_line);
    let results: Vec<anyhow::Result<Read>> = std::thread::scope(|scope| {
        let threads: Vec<_> = shares
            .iter()
            .scan(0u64, |before, &records| {
                let first_offset = *before / read.len() as u64;
                *before += records;
                Some((first_offset, records))
            })
            .map(|(first_offset, records)| {
                scope.spawn(move || {
                    // A failed start must still reach the start line, or the others wait.
                    let consumer = start(config, args, read, first_offset);
                    start_line.wait();
                    read_records(&consumer?, args, records)
                })
            })
            .collect();
        join_all(threads, "consumer")
    });
    let mut total = Read {
        records: 0,
        bytes: 0,
        first: None,
        last: Instant::now(),
        latency: histogram()?,
    };
    let mut last = None::<Instant>;
    for result in results {
        let one = result?;
        total.records += one.records;
        total.bytes += one.bytes;
        total.first = match (total.first, one.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last = Some(last.map_or(one.last, |last| last.max(one.last)));
        total
            .latency
            .add(&one.latency)
            .context("cannot merge the latency histograms")?;
    }
    let elapsed = match (total.first, last) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    Ok(summary(total.records, total.bytes, elapsed, &total.latency))
}

/// One consumer assigned `read` from `first_offset` of each partition (0: the beginning).
fn start(
    config: &ClientConfig,
    args: &ConsumeArgs,
    read: &[i32],
    first_offset: u64,
) -> anyhow::Result<BaseConsumer<LoadContext>> {
    let consumer: BaseConsumer<LoadContext> = config
        .create_with_context(LoadContext::new()?)
        .context("cannot create the librdkafka consumer")?;
    let offset = if first_offset == 0 {
        Offset::Beginning
    } else {
        Offset::Offset(i64::try_from(first_offset).context("offset out of range")?)
    };
    let mut assignment = TopicPartitionList::new();
    for partition in read {
        assignment
            .add_partition_offset(&args.topic, *partition, offset)
            .context("cannot build the assignment")?;
    }
    consumer
        .assign(&assignment)
        .context("cannot assign the partitions")?;
    Ok(consumer)
}

/// Polls `wanted` records out of `consumer`.
fn read_records(
    consumer: &BaseConsumer<LoadContext>,
    args: &ConsumeArgs,
    wanted: u64,
) -> anyhow::Result<Read> {
    // Polls without a record allowed in a row before giving up (each waits POLL_WAIT): no
    // clock is read per record.
    let idle_polls_max = args.timeout_ms.div_ceil(POLL_WAIT.as_millis() as u64).max(1);
    let mut idle_polls = 0u64;
    let mut latency = histogram()?;
    let mut records = 0u64;
    let mut bytes = 0u64;
    // The clock starts at the first record: librdkafka spends about half a second starting
    // (connections, the offset lookup) before its first fetch, which is not the listener's
    // throughput; `tidelog perf consume` starts in a few milliseconds.
    let mut start = None;
    let mut until_sample = 0u64;
    while records < wanted {
        // One poll in LATENCY_SAMPLE_EVERY is timed: two clock reads per record were a tenth
        // of the generator's CPU at 1 KiB.
        let timed = if until_sample == 0 {
            until_sample = LATENCY_SAMPLE_EVERY;
            Some(Instant::now())
        } else {
            None
        };
        until_sample -= 1;
        match consumer.poll(POLL_WAIT) {
            Some(Ok(message)) => {
                // The wait inside one poll() that returned a record (librdkafka hands out one
                // record per poll, from its prefetch queue, so this is mostly near zero).
                if let Some(polled) = timed {
                    latency.saturating_record((polled.elapsed().as_micros() as u64).max(1));
                }
                start.get_or_insert_with(Instant::now);
                records += 1;
                bytes +=
                    (message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len)) as u64;
                idle_polls = 0;
            }
            Some(Err(error)) => bail!("after {records} records: {error}"),
            None => {
                idle_polls += 1;
                if idle_polls >= idle_polls_max {
                    bail!(
                        "only {records} of {wanted} records arrived; none for {} ms",
                        args.timeout_ms
                    );
                }
            }
        }
    }
    Ok(Read {
        records,
        bytes,
        first: start,
        last: Instant::now(),
        latency,
    })
}
