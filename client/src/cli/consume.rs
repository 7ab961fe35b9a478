//! `tidelog consume`: prints "[PARTITION<TAB>OFFSET<TAB>][KEY<TAB>]VALUE" per record. A null key
//! or value prints as `null`, as Kafka's console consumer does.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tidelog_client::{Client, Consumer, ConsumerConfig, Offset, PartitionId, Record, Seek};
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
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

fn write_record(
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
    let interrupted = tokio::signal::ctrl_c();
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
