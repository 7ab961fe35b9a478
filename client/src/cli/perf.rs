//! `tidelog perf produce|consume`: throughput and latency benchmarks. Progress goes to stderr;
//! the result is one line of key=value pairs on stdout:
//! `records=N records_per_s=X mb_per_s=Y p50_ms=A p99_ms=B p999_ms=C` (MB = 2^20 bytes, as in
//! Kafka's perf tools).

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tidelog_client::{
    Client, Consumer, ConsumerConfig, DeliveryFuture, GroupConfig, GroupConsumer, Offset, OffsetReset,
    PartitionId, Producer, ProducerConfig, ProducerRecord, Record, Seek, TopicName,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{AcksArg, CompressionArg, ConnectionArgs};

/// Sampled deliveries awaited behind the sending loop.
const LATENCY_QUEUE: usize = 64 * 1024;
/// Records between progress bar updates: updating per record would cost more than sending.
const PROGRESS_EVERY: u64 = 16 * 1024;
/// Latencies up to this many microseconds are recorded exactly (3 significant digits).
const LATENCY_MAX_US: u64 = 600 * 1_000_000;

#[derive(Debug, Args)]
pub struct PerfProduceArgs {
    /// Topic to write to (it must exist).
    topic: String,
    /// Records to send.
    #[arg(long, value_name = "N")]
    records: u64,
    /// Value size of each record (keyless unless --keys).
    #[arg(long, value_name = "BYTES")]
    record_size: usize,
    /// Spread records over the first N partitions (default: all).
    #[arg(long, value_name = "N")]
    partitions_used: Option<u32>,
    /// Key the records with N distinct keys, `key-0000000` to `key-{N-1}`, in turn (record i
    /// gets key i mod N, so every key gets as many values): a compacted topic's workload. Keyed
    /// records go to the partition of their key, as the partitioner picks it.
    #[arg(long, value_name = "N", conflicts_with = "partitions_used")]
    keys: Option<u32>,
    /// Acknowledgement to wait for. Latency is per record, from `send` to its acknowledgement
    /// (leader) or to its batch being written to the socket (none), sampled on every
    /// --latency-sample-every'th record.
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    acks: AcksArg,
    /// Batch size limit.
    #[arg(long, default_value_t = ProducerConfig::BATCH_SIZE_BYTES_DEFAULT, value_name = "BYTES")]
    batch_size: usize,
    /// How long a batch waits for more records.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    linger_ms: u64,
    /// Bytes of records buffered before `send` waits.
    #[arg(long, default_value_t = ProducerConfig::BUFFER_BYTES_DEFAULT, value_name = "BYTES")]
    buffer_bytes: usize,
    /// Largest produce request.
    #[arg(long, default_value_t = ProducerConfig::MAX_REQUEST_BYTES_DEFAULT, value_name = "BYTES")]
    max_request_bytes: usize,
    /// Measure latency on one record in this many.
    #[arg(long, default_value_t = 64, value_name = "N")]
    latency_sample_every: u64,
    /// Hand records to the producer N at a time with `send_many` (1: one `send` per record).
    /// Records of one call share the call's timestamp.
    #[arg(long, default_value_t = 1, value_name = "N")]
    records_per_send: usize,
    /// One record at a time: send the next only once the previous is acknowledged, and
    /// measure every record's latency (the durable single-record workload; use with
    /// `--linger-ms 0`).
    #[arg(long)]
    sync: bool,
    /// Compress each batch's records with this codec.
    #[arg(long, value_enum, default_value_t = CompressionArg::None, value_name = "CODEC")]
    compression: CompressionArg,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct PerfConsumeArgs {
    /// Topic to read (from the beginning of every partition).
    topic: String,
    /// Records to read.
    #[arg(long, value_name = "N")]
    records: u64,
    /// Give up when no record arrives for this long.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    timeout_ms: u64,
    /// Bytes one fetch response may carry.
    #[arg(long, default_value_t = ConsumerConfig::FETCH_MAX_BYTES_DEFAULT, value_name = "BYTES")]
    fetch_max_bytes: u32,
    /// Bytes one partition may contribute to a fetch response [default: 8 MiB split over the
    /// topic's partitions, between 1 MiB and 8 MiB each: responses of about 8 MiB measured
    /// fastest here, see docs/benchmarks.md]
    #[arg(long, value_name = "BYTES")]
    partition_fetch_max_bytes: Option<u32>,
    /// Records handed out per poll.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_poll_records: usize,
    /// Consume as a member of this group, with auto-commit (partitions without a committed
    /// offset start at the beginning); run several at once to measure a group.
    #[arg(long, value_name = "G")]
    group: Option<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

fn progress(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let template = format!(
        "{{elapsed_precise}} [{{bar:40}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}})"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn summary(records: u64, bytes: u64, elapsed: Duration, latency: &Histogram<u64>) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let ms = |quantile: f64| latency.value_at_quantile(quantile) as f64 / 1000.0;
    format!(
        "records={records} records_per_s={:.1} mb_per_s={:.2} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3}",
        records as f64 / seconds,
        bytes as f64 / (1024.0 * 1024.0) / seconds,
        ms(0.5),
        ms(0.99),
        ms(0.999),
    )
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).context("cannot create the latency histogram")
}

/// Filler for record values: not all one byte, so nothing along the way can shortcut it.
/// Every record shares these bytes, as Kafka's producer-perf-test shares one payload array:
/// a `'static` buffer, so a record's copy of the value is a pointer copy, not a reference
/// count updated twice per record. The producer still copies the bytes into each batch.
fn payload(size: usize) -> Bytes {
    let filler: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    // Leaked once per run (one record's size), for the life of the process.
    Bytes::from_static(filler.leak())
}

/// The records perf produce sends: one partition's batch full before moving to the next, so
/// batches leave full; counters rather than a division per record. One record per partition,
/// lent to `send` (which copies it into its batch), so a record costs no clones: an
/// application sending the same kind of record over and over can do the same.
struct NextRecord {
    records: Vec<ProducerRecord>,
    records_per_batch: u64,
    partition: usize,
    left_in_batch: u64,
    /// With `--keys`: the keys, taken in turn, and the record last built with one.
    keys: Vec<Bytes>,
    next_key: usize,
    keyed: Option<ProducerRecord>,
}

impl NextRecord {
    fn new(topic: &TopicName, value: &Bytes, used: u32, records_per_batch: u64) -> Self {
        let records = (0..used)
            .map(|partition| {
                ProducerRecord::new(topic.clone(), value.clone()).partition(PartitionId::new(partition))
            })
            .collect();
        Self {
            records,
            records_per_batch,
            partition: 0,
            left_in_batch: records_per_batch,
            keys: Vec::new(),
            next_key: 0,
            keyed: None,
        }
    }

    /// Records keyed with `keys` distinct keys in turn, partitioned by key.
    fn keyed(topic: &TopicName, value: &Bytes, keys: u32) -> Self {
        let mut next = Self::new(topic, value, 1, 1);
        next.records = vec![ProducerRecord::new(topic.clone(), value.clone())];
        next.keys = (0..keys)
            .map(|key| Bytes::from(format!("key-{key:07}")))
            .collect();
        next
    }

    /// The next key in turn (`keys` is not empty).
    fn take_key(&mut self) -> Bytes {
        let key = self.keys[self.next_key].clone();
        self.next_key = (self.next_key + 1) % self.keys.len();
        key
    }

    fn record(&mut self) -> &ProducerRecord {
        if !self.keys.is_empty() {
            let key = self.take_key();
            return self.keyed.insert(self.records[0].clone().key(key));
        }
        let partition = self.partition;
        self.left_in_batch -= 1;
        if self.left_in_batch == 0 {
            self.left_in_batch = self.records_per_batch;
            self.partition = if partition + 1 == self.records.len() {
                0
            } else {
                partition + 1
            };
        }
        &self.records[partition]
    }
}

pub async fn produce(client: Client, args: PerfProduceArgs) -> anyhow::Result<()> {
    let description = client
        .topic(&args.topic)
        .await
        .with_context(|| format!("cannot produce to topic {}", args.topic))?;
    let partitions = description.partition_count();
    let used = args.partitions_used.unwrap_or(partitions);
    if used == 0 || used > partitions {
        anyhow::bail!("--partitions-used must be between 1 and the topic's {partitions} partitions");
    }
    if args.latency_sample_every == 0 {
        anyhow::bail!("--latency-sample-every must be at least 1");
    }
    if args.records_per_send == 0 {
        anyhow::bail!("--records-per-send must be at least 1");
    }
    if args.keys == Some(0) {
        anyhow::bail!("--keys must be at least 1");
    }
    if args.keys.is_some() && args.sync {
        anyhow::bail!("--keys cannot be used with --sync");
    }
    let config = ProducerConfig::default()
        .acks(args.acks.into())
        .batch_size_bytes(args.batch_size)
        .linger(Duration::from_millis(args.linger_ms))
        .buffer_bytes(args.buffer_bytes)
        .max_request_bytes(args.max_request_bytes)
        .compression(args.compression.into());
    let producer = Producer::new(client, config)?;
    let topic = TopicName::new(&args.topic);
    let value = payload(args.record_size);
    // Fill one partition's batch before moving to the next, so batches leave full.
    let records_per_batch = (args.batch_size / (args.record_size + 16).max(1)).max(1) as u64;

    if args.sync {
        return produce_one_at_a_time(producer, topic, value, used, &args).await;
    }

    let (sample_tx, mut sample_rx) = mpsc::channel::<(Instant, DeliveryFuture)>(LATENCY_QUEUE);
    let collector = tokio::spawn(async move {
        let mut latency = histogram()?;
        while let Some((sent, delivery)) = sample_rx.recv().await {
            delivery.await.context("a record was not delivered")?;
            let micros = sent.elapsed().as_micros().min(u128::from(LATENCY_MAX_US)) as u64;
            latency.saturating_record(micros.max(1));
        }
        anyhow::Ok(latency)
    });

    let bar = progress(args.records, "records");
    let start = Instant::now();
    let mut next = match args.keys {
        Some(keys) => NextRecord::keyed(&topic, &value, keys),
        None => NextRecord::new(&topic, &value, used, records_per_batch),
    };
    let mut until_sample = 0u64;
    let mut sent_so_far = 0u64;
    let mut next_progress = 0u64;
    let mut chunk = Vec::new();
    let mut deliveries = Vec::new();
    'sending: while sent_so_far < args.records {
        if args.records_per_send == 1 {
            if until_sample == 0 {
                // The clock only for a sampled record: a read per record costs as much as a
                // quarter of `send`.
                let sent = Instant::now();
                let delivery = producer
                    .send(next.record())
                    .await
                    .context("cannot send a record")?;
                until_sample = args.latency_sample_every;
                if sample_tx.send((sent, delivery)).await.is_err() {
                    break 'sending; // the collector failed; its error is reported below
                }
            } else {
                // Other deliveries are checked in bulk through the producer's metrics after
                // the flush: no future per record.
                producer
                    .send_detached(next.record())
                    .await
                    .context("cannot send a record")?;
            }
            sent_so_far += 1;
            until_sample -= 1;
        } else {
            let sent = Instant::now();
            let count = (args.records - sent_so_far).min(args.records_per_send as u64);
            chunk.extend((0..count).map(|_| next.record().clone()));
            producer
                .send_many(chunk.drain(..), &mut deliveries)
                .await
                .context("cannot send a record")?;
            sent_so_far += count;
            for delivery in deliveries.drain(..) {
                if until_sample == 0 {
                    until_sample = args.latency_sample_every;
                    if sample_tx.send((sent, delivery)).await.is_err() {
                        break 'sending;
                    }
                }
                until_sample -= 1;
            }
        }
        if sent_so_far >= next_progress {
            bar.set_position(sent_so_far);
            next_progress = sent_so_far + PROGRESS_EVERY;
        }
    }
    producer.flush().await;
    let elapsed = start.elapsed();
    drop(sample_tx);
    bar.finish_and_clear();
    let latency = collector.await.context("the latency collector failed")??;
    let metrics = producer.metrics();
    producer.close().await;
    if metrics.records_failed() > 0 {
        anyhow::bail!(
            "{} of {} records were not delivered",
            metrics.records_failed(),
            args.records
        );
    }
    println!(
        "{}",
        summary(
            args.records,
            args.records * args.record_size as u64,
            elapsed,
            &latency
        )
    );
    Ok(())
}

/// `perf produce --sync`: each record waits for its acknowledgement before the next is sent,
/// round-robin over the partitions used; every record's latency is recorded.
///
/// The loop runs as a task on the runtime's workers, not on the thread that entered the
/// runtime: there, each acknowledgement would wake that thread from the worker that read it,
/// and each send would wake a worker back for the connection's writer, two cross-thread
/// wake-ups per record that a latency measurement should not count (an application awaiting
/// its sends in a task does not pay them either).
async fn produce_one_at_a_time(
    producer: Producer,
    topic: TopicName,
    value: Bytes,
    used: u32,
    args: &PerfProduceArgs,
) -> anyhow::Result<()> {
    let records = args.records;
    let record_size = args.record_size;
    let (latency, elapsed) = tokio::spawn(async move {
        let measured = sync_loop(&producer, topic, value, used, records).await;
        producer.close().await;
        measured
    })
    .await
    .context("the produce task failed")??;
    println!(
        "{}",
        summary(records, records * record_size as u64, elapsed, &latency)
    );
    Ok(())
}

async fn sync_loop(
    producer: &Producer,
    topic: TopicName,
    value: Bytes,
    used: u32,
    records: u64,
) -> anyhow::Result<(Histogram<u64>, Duration)> {
    let mut latency = histogram()?;
    let bar = progress(records, "records");
    let start = Instant::now();
    for i in 0..records {
        let partition = PartitionId::new((i % u64::from(used)) as u32);
        let record = ProducerRecord::new(topic.clone(), value.clone()).partition(partition);
        let sent = Instant::now();
        let delivery = producer.send(record).await.context("cannot send a record")?;
        delivery.await.context("a record was not delivered")?;
        let micros = sent.elapsed().as_micros().min(u128::from(LATENCY_MAX_US)) as u64;
        latency.saturating_record(micros.max(1));
        if i % PROGRESS_EVERY == 0 {
            bar.set_position(i);
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok((latency, elapsed))
}

/// Fetch responses of about this size consumed fastest on the 2-core machine we measure on:
/// larger ones mean large fresh buffers and less overlap between broker and consumer.
const FETCH_RESPONSE_BYTES_TARGET: u32 = 8 * 1024 * 1024;

pub async fn consume(client: Client, args: PerfConsumeArgs) -> anyhow::Result<()> {
    let description = client
        .topic(&args.topic)
        .await
        .with_context(|| format!("cannot consume topic {}", args.topic))?;
    let partition_fetch_max_bytes = args.partition_fetch_max_bytes.unwrap_or_else(|| {
        (FETCH_RESPONSE_BYTES_TARGET / description.partition_count().max(1)).clamp(
            ConsumerConfig::PARTITION_FETCH_MAX_BYTES_DEFAULT,
            FETCH_RESPONSE_BYTES_TARGET,
        )
    });
    let config = ConsumerConfig::default()
        .fetch_max_bytes(args.fetch_max_bytes)
        .partition_fetch_max_bytes(partition_fetch_max_bytes)
        .max_poll_records(args.max_poll_records);
    let mut source = match &args.group {
        Some(group) => {
            let config = GroupConfig::new(group)
                .consumer_config(config)
                .offset_reset(OffsetReset::Earliest);
            let consumer = GroupConsumer::subscribe(client, config, [args.topic.as_str()])
                .await
                .with_context(|| format!("cannot join group {group}"))?;
            Source::Group(Box::new(consumer))
        }
        None => {
            let mut consumer = Consumer::new(client, config)?;
            consumer.assign(args.topic.as_str(), &[]).await?;
            for partition in description.partitions() {
                consumer.seek(&args.topic, partition.partition(), Seek::Earliest)?;
            }
            Source::Assigned(consumer)
        }
    };
    let measured = measure_consume(&mut source, &args).await;
    if let Source::Group(mut consumer) = source {
        // The last poll may have handed out records past the count: rewind to the first of
        // them, so the group commits exactly what this member counted and a fellow member
        // reads the rest.
        if let Ok((_, uncounted)) = &measured {
            for (topic, partition, offset) in uncounted {
                consumer
                    .seek(topic, *partition, Seek::Offset(*offset))
                    .await
                    .context("cannot rewind to the first uncounted record")?;
            }
        }
        // Commits the consumed positions and leaves, so the group's partitions move on now.
        consumer.close().await.context("cannot leave the group")?;
    }
    println!("{}", measured?.0);
    Ok(())
}

/// Where `perf consume` reads from.
enum Source {
    Assigned(Consumer),
    // Boxed: a group consumer is several times larger than the plain one.
    Group(Box<GroupConsumer>),
}

impl Source {
    async fn poll(&mut self, timeout: Duration) -> tidelog_client::Result<Vec<Record>> {
        match self {
            Source::Assigned(consumer) => consumer.poll(timeout).await,
            Source::Group(consumer) => consumer.poll(timeout).await,
        }
    }
}

/// Reads `args.records` records; returns the summary line and, per partition, the first
/// record handed out by the last poll but not counted.
async fn measure_consume(
    consumer: &mut Source,
    args: &PerfConsumeArgs,
) -> anyhow::Result<(String, Vec<(String, PartitionId, Offset)>)> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut latency = histogram()?;
    let bar = progress(args.records, "records");
    let start = Instant::now();
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut last_record = Instant::now();
    while records < args.records {
        let polled = Instant::now();
        let batch = consumer.poll(timeout).await.context("cannot fetch records")?;
        if batch.is_empty() {
            if last_record.elapsed() >= timeout {
                anyhow::bail!(
                    "only {records} of {} records arrived; none for {} ms",
                    args.records,
                    args.timeout_ms
                );
            }
            continue;
        }
        // Latency here is the wait inside one poll() that returned records.
        latency.saturating_record((polled.elapsed().as_micros() as u64).max(1));
        last_record = Instant::now();
        let wanted = (args.records - records) as usize;
        for record in batch.iter().take(wanted) {
            records += 1;
            bytes += (record.key().map_or(0, |k| k.len()) + record.value().map_or(0, |v| v.len())) as u64;
        }
        bar.set_position(records);
        if records >= args.records {
            let mut uncounted: Vec<(String, PartitionId, Offset)> = Vec::new();
            for record in batch.iter().skip(wanted) {
                let seen = uncounted.iter().any(|(topic, partition, _)| {
                    topic == record.topic().as_str() && *partition == record.partition()
                });
                if !seen {
                    uncounted.push((
                        record.topic().as_str().to_owned(),
                        record.partition(),
                        record.offset(),
                    ));
                }
            }
            let elapsed = start.elapsed();
            bar.finish_and_clear();
            return Ok((summary(records, bytes, elapsed, &latency), uncounted));
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok((summary(records, bytes, elapsed, &latency), Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_records_take_the_keys_in_turn() {
        let mut next = NextRecord::keyed(&TopicName::new("t"), &Bytes::from_static(b"v"), 3);
        let keys: Vec<Bytes> = (0..7).map(|_| next.take_key()).collect();
        let expected = [0, 1, 2, 0, 1, 2, 0].map(|key| Bytes::from(format!("key-{key:07}")));
        assert_eq!(keys, expected);
    }
}
