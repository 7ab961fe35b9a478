//! `tidelog consume`: prints "[PARTITION<TAB>OFFSET<TAB>][KEY<TAB>]VALUE" per record. A null key
//! or value prints as `null`, as Kafka's console consumer does.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tidelog_client::{
    AutoCommit, Client, Consumer, ConsumerConfig, GroupConfig, GroupConsumer, Offset, OffsetReset,
    OffsetsToCommit, PartitionId, RebalanceListener, Record, Seek, TopicPartition,
};
use tokio::time::Instant;

use super::ConnectionArgs;

/// Longest single poll while following the log without a timeout.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Start at the oldest record (default: the end of the log, like Kafka's console consumer).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Start at this offset (in every partition read).
    #[arg(long, value_name = "N")]
    offset: Option<i64>,
    /// Exit after this many records.
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Exit once no record has arrived for this long.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Print the key before the value.
    #[arg(long)]
    print_key: bool,
    /// Print partition and offset before the key and value.
    #[arg(long)]
    print_offset: bool,
    /// Bytes one fetch response may carry.
    #[arg(long, default_value_t = ConsumerConfig::FETCH_MAX_BYTES_DEFAULT, value_name = "BYTES")]
    fetch_max_bytes: u32,
    /// Consume as a member of this consumer group: the group assigns the partitions, and what
    /// was printed is committed (every --commit-interval-ms and on exit). Partitions without a
    /// committed offset start at the end, or at the beginning with --from-beginning.
    #[arg(long, value_name = "G")]
    group: Option<String>,
    /// With --group: how long the group waits for a heartbeat before it gives the partitions
    /// of this consumer to others.
    #[arg(long, value_name = "MS", default_value_t = GroupConfig::SESSION_TIMEOUT_DEFAULT.as_millis() as u64)]
    session_timeout_ms: u64,
    /// With --group: commit the printed positions this often while running.
    #[arg(long, value_name = "MS", default_value_t = GroupConfig::AUTO_COMMIT_INTERVAL_DEFAULT.as_millis() as u64)]
    commit_interval_ms: u64,
    /// With --group: static membership under this instance id.
    #[arg(long, value_name = "ID")]
    instance_id: Option<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Resolves on SIGINT, or SIGTERM on Unix.
pub(super) async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// How a write to stdout ended.
pub(super) enum Written {
    Ok,
    /// The reader went away (`| head`): a normal way to stop.
    Closed,
}

pub(super) fn written(result: std::io::Result<()>) -> anyhow::Result<Written> {
    match result {
        Ok(()) => Ok(Written::Ok),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(Written::Closed),
        Err(error) => Err(error).context("cannot write to stdout"),
    }
}

/// One record as `consume` prints it (also `stream read`, without the key).
pub(super) fn write_record(
    out: &mut impl Write,
    record: &Record,
    print_key: bool,
    print_offset: bool,
) -> std::io::Result<()> {
    if print_offset {
        write!(out, "{}\t{}\t", record.partition(), record.offset())?;
    }
    if print_key {
        out.write_all(record.key().map_or(&b"null"[..], |k| &k[..]))?;
        out.write_all(b"\t")?;
    }
    out.write_all(record.value().map_or(&b"null"[..], |v| &v[..]))?;
    out.write_all(b"\n")
}

pub async fn run(client: Client, args: ConsumeArgs) -> anyhow::Result<()> {
    if let Some(group) = args.group.clone() {
        return run_group(client, args, group).await;
    }
    let description = client
        .topic(&args.topic)
        .await
        .with_context(|| format!("cannot consume topic {}", args.topic))?;
    let partitions: Vec<PartitionId> = match args.partition {
        Some(p) if p >= description.partition_count() => anyhow::bail!(
            "topic {} has no partition {p} (it has {})",
            args.topic,
            description.partition_count()
        ),
        Some(p) => vec![PartitionId::new(p)],
        None => description.partitions().iter().map(|p| p.partition()).collect(),
    };
    let config = ConsumerConfig::default().fetch_max_bytes(args.fetch_max_bytes);
    let mut consumer = Consumer::new(client, config)?;
    consumer.assign(args.topic.as_str(), &partitions).await?;
    let start = match (args.from_beginning, args.offset) {
        (true, _) => Seek::Earliest,
        (false, Some(offset)) => Seek::Offset(Offset::new(offset)),
        (false, None) => Seek::Latest,
    };
    for partition in &partitions {
        consumer.seek(&args.topic, *partition, start)?;
    }

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let timeout = args.timeout_ms.map(Duration::from_millis);
    let mut remaining = args.max_messages;
    let mut last_record = Instant::now();
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    while remaining != Some(0) {
        let wait = match timeout {
            Some(timeout) => {
                let deadline = last_record + timeout;
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                deadline - now
            }
            None => FOLLOW_POLL,
        };
        let records = tokio::select! {
            records = consumer.poll(wait) => records.context("cannot fetch records")?,
            _ = &mut interrupted => break,
        };
        if records.is_empty() {
            continue;
        }
        last_record = Instant::now();
        for record in &records {
            if remaining == Some(0) {
                break;
            }
            let written = write_record(&mut out, record, args.print_key, args.print_offset);
            if let Err(error) = written {
                // A closed pipe (`| head`) is a normal way to stop reading.
                if error.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(error).context("cannot write to stdout");
            }
            remaining = remaining.map(|n| n - 1);
        }
        if let Err(error) = out.flush() {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(error).context("cannot write to stdout");
        }
    }
    match out.flush() {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(error).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// The next offset after the last printed record, per partition this member owns. Shared
/// with the rebalance listener, which commits a partition's entry before it is given up.
type Printed = Arc<Mutex<BTreeMap<TopicPartition, Offset>>>;

fn lock(printed: &Printed) -> std::sync::MutexGuard<'_, BTreeMap<TopicPartition, Offset>> {
    // Entries are single inserts and removes; a panic cannot leave one half-written.
    printed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug)]
struct CommitPrinted(Printed);

impl RebalanceListener for CommitPrinted {
    fn on_partitions_revoked(&mut self, partitions: &[TopicPartition], commit: &mut OffsetsToCommit) {
        let mut printed = lock(&self.0);
        for key in partitions {
            if let Some(offset) = printed.remove(key) {
                commit.insert(key.0.clone(), key.1, offset);
            }
        }
    }

    fn on_partitions_lost(&mut self, partitions: &[TopicPartition]) {
        let mut printed = lock(&self.0);
        for key in partitions {
            printed.remove(key);
        }
    }
}

/// Raises the entry of each partition something was printed from to the group consumer's
/// position (the offset after the last record handed out, past any offsets that hold no
/// record). Partitions nothing was printed from keep having nothing to commit.
fn advance_to_positions(consumer: &GroupConsumer, printed: &Printed) {
    let mut printed = lock(printed);
    for (key, entry) in printed.iter_mut() {
        if let Some(position) = consumer.position(key.0.as_str(), key.1) {
            *entry = (*entry).max(position);
        }
    }
}

fn printed_offsets(printed: &Printed) -> Vec<(tidelog_client::TopicName, PartitionId, Offset)> {
    lock(printed)
        .iter()
        .map(|((topic, partition), offset)| (topic.clone(), *partition, *offset))
        .collect()
}

/// `consume --group`: like the plain consume, but the group assigns partitions, and the
/// positions of printed records (flushed first) are committed while running and on exit.
async fn run_group(client: Client, args: ConsumeArgs, group: String) -> anyhow::Result<()> {
    if args.partition.is_some() {
        anyhow::bail!("--partition cannot be used with --group: the group assigns the partitions");
    }
    if args.offset.is_some() {
        anyhow::bail!(
            "--offset cannot be used with --group: use `tidelog group reset-offsets` to move a group"
        );
    }
    client
        .topic(&args.topic)
        .await
        .with_context(|| format!("cannot consume topic {}", args.topic))?;
    let reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    let mut config = GroupConfig::new(&group)
        .consumer_config(ConsumerConfig::default().fetch_max_bytes(args.fetch_max_bytes))
        .offset_reset(reset)
        .session_timeout(Duration::from_millis(args.session_timeout_ms))
        // Commits are of printed records only, made here and by the listener.
        .auto_commit(AutoCommit::Off);
    if let Some(instance_id) = &args.instance_id {
        config = config.instance_id(instance_id);
    }
    let mut consumer = GroupConsumer::subscribe(client, config, [args.topic.as_str()])
        .await
        .with_context(|| format!("cannot join group {group}"))?;
    let printed: Printed = Arc::default();
    consumer.set_rebalance_listener(CommitPrinted(printed.clone()));

    let consumed = consume_group(&mut consumer, &args, &printed).await;
    // Whatever ended the loop, commit what was printed (it was flushed) and leave.
    let committed = consumer
        .commit_offsets(printed_offsets(&printed))
        .await
        .with_context(|| format!("cannot commit the offsets of group {group}"));
    let left = consumer
        .close()
        .await
        .with_context(|| format!("cannot leave group {group}"));
    consumed?;
    committed?;
    left
}

async fn consume_group(
    consumer: &mut GroupConsumer,
    args: &ConsumeArgs,
    printed: &Printed,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let timeout = args.timeout_ms.map(Duration::from_millis);
    let commit_interval = Duration::from_millis(args.commit_interval_ms.max(1));
    let mut next_commit = Instant::now() + commit_interval;
    let mut remaining = args.max_messages;
    let mut last_record = Instant::now();
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    while remaining != Some(0) {
        let now = Instant::now();
        let mut wait = next_commit.saturating_duration_since(now).min(FOLLOW_POLL);
        if let Some(timeout) = timeout {
            let deadline = last_record + timeout;
            if now >= deadline {
                break;
            }
            wait = wait.min(deadline - now);
        }
        let records = tokio::select! {
            records = consumer.poll(wait) => records.context("cannot fetch records")?,
            _ = &mut interrupted => break,
        };
        if !records.is_empty() {
            last_record = Instant::now();
        }
        let mut printed_all = 0;
        for record in &records {
            if remaining == Some(0) {
                break;
            }
            if let Written::Closed =
                written(write_record(&mut out, record, args.print_key, args.print_offset))?
            {
                return Ok(());
            }
            remaining = remaining.map(|n| n - 1);
            lock(printed).insert(
                (record.topic().clone(), record.partition()),
                record.offset().plus(1),
            );
            printed_all += 1;
        }
        if printed_all == records.len() {
            // Every record handed out is printed, so the consumer's positions may be committed:
            // on a compacted topic they run past offsets that hold no record (removed records,
            // header-only batches), which the last printed offset + 1 never would.
            advance_to_positions(consumer, printed);
        }
        if let Written::Closed = written(out.flush())? {
            return Ok(());
        }
        if Instant::now() >= next_commit {
            next_commit = Instant::now() + commit_interval;
            // Flushed above, so every offset committed here is of a record on stdout. The
            // outcome is not awaited: a failure is retried by the next commit.
            drop(consumer.commit_offsets_async(printed_offsets(printed)).await?);
        }
    }
    written(out.flush()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_appear_only_when_asked() {
        let record = sample();
        let render = |key, offset| {
            let mut out = Vec::new();
            write_record(&mut out, &record, key, offset).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(render(false, false), "v\n");
        assert_eq!(render(true, false), "null\tv\n");
        assert_eq!(render(false, true), "2\t9\tv\n");
        assert_eq!(render(true, true), "2\t9\tnull\tv\n");
    }

    fn sample() -> Record {
        Record::new(
            "t".into(),
            PartitionId::new(2),
            Offset::new(9),
            0,
            None,
            Some(bytes::Bytes::from_static(b"v")),
            Vec::new(),
        )
    }
}
