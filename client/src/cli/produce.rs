//! `tidelog produce`: one record per line of stdin. With `--key-separator`, the text before the
//! first separator is the key (a line without it is sent without a key). With
//! `--print-offsets`, "PARTITION<TAB>OFFSET" is printed per line once acknowledged, in input
//! order.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use tidelog_client::{
    Client, DeliveryFuture, PartitionId, Producer, ProducerConfig, ProducerRecord, TopicName,
};
use tokio::sync::mpsc;

use super::{AcksArg, CompressionArg, ConnectionArgs};

/// Lines read ahead of the producer.
const LINE_QUEUE: usize = 1024;
/// Deliveries awaited (in order) behind the producer.
const DELIVERY_QUEUE: usize = 64 * 1024;

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    /// Send every record to this partition instead of partitioning by key.
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Split each line at the first SEP: the text before it is the key, after it the value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Print "PARTITION<TAB>OFFSET" for each line once it is acknowledged, in input order.
    #[arg(long)]
    print_offsets: bool,
    /// Acknowledgement to wait for (offsets can only be printed with `leader`).
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    acks: AcksArg,
    /// How long a batch waits for more lines before it is sent.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    linger_ms: u64,
    /// Largest batch sent to one partition; keep it at or below the broker's
    /// `limits.batch_bytes_max`.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    batch_size: usize,
    /// Give up on a record this long after it was batched, retries included (so a dead broker
    /// ends the command instead of stalling it).
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    delivery_timeout_ms: u64,
    /// Compress each batch's records with this codec (a batch that would not shrink is sent
    /// as it is).
    #[arg(long, value_enum, default_value_t = CompressionArg::None, value_name = "CODEC")]
    compression: CompressionArg,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

fn split_line(line: Vec<u8>, separator: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    let line = Bytes::from(line);
    let Some(separator) = separator.filter(|s| !s.is_empty()) else {
        return (None, line);
    };
    match line.windows(separator.len()).position(|w| w == separator) {
        Some(at) => (Some(line.slice(..at)), line.slice(at + separator.len()..)),
        None => (None, line),
    }
}

/// Reads stdin on a blocking thread, one line (without its line ending) per message.
fn spawn_stdin_reader() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(LINE_QUEUE);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = tx.blocking_send(Err(error));
                    return;
                }
            }
        }
    });
    rx
}

pub async fn run(client: Client, args: ProduceArgs) -> anyhow::Result<()> {
    if args.print_offsets && args.acks == AcksArg::None {
        anyhow::bail!("--print-offsets needs --acks leader: without acknowledgements there are no offsets");
    }
    let description = client
        .topic(&args.topic)
        .await
        .with_context(|| format!("cannot produce to topic {}", args.topic))?;
    let partition = match args.partition {
        Some(p) if p >= description.partition_count() => anyhow::bail!(
            "topic {} has no partition {p} (it has {})",
            args.topic,
            description.partition_count()
        ),
        other => other.map(PartitionId::new),
    };
    let config = ProducerConfig::default()
        .acks(args.acks.into())
        .linger(Duration::from_millis(args.linger_ms))
        .batch_size_bytes(args.batch_size)
        .delivery_timeout(Duration::from_millis(args.delivery_timeout_ms))
        .compression(args.compression.into());
    let producer = Producer::new(client, config)?;
    let topic = TopicName::new(&args.topic);
    let separator = args.key_separator.as_deref().map(str::as_bytes);

    // Deliveries are awaited in input order by a second task, so that sending never waits
    // for an acknowledgement and offsets still print in order.
    let (delivery_tx, mut delivery_rx) = mpsc::channel::<DeliveryFuture>(DELIVERY_QUEUE);
    let print_offsets = args.print_offsets;
    let printer = tokio::spawn(async move {
        // Not `stdout.lock()`: the guard is not Send, and this task moves between threads.
        let mut out = std::io::BufWriter::new(std::io::stdout());
        while let Some(delivery) = delivery_rx.recv().await {
            let delivery = match delivery.await {
                Ok(delivery) => delivery,
                Err(error) => {
                    // Offsets already acknowledged must reach stdout even though this one failed:
                    // a script relies on every printed line being durable, and on every durable
                    // line being printed.
                    out.flush()?;
                    return Err(error.into());
                }
            };
            if print_offsets {
                let offset = delivery.offset().map_or(-1, |o| o.get());
                writeln!(out, "{}\t{}", delivery.partition(), offset)?;
                // Flush when caught up, so an interactive user sees each offset promptly.
                if delivery_rx.is_empty() {
                    out.flush()?;
                }
            }
        }
        out.flush()?;
        anyhow::Ok(())
    });

    let mut lines = spawn_stdin_reader();
    let mut send_error = None;
    while let Some(line) = lines.recv().await {
        let line = line.context("cannot read stdin")?;
        let (key, value) = split_line(line, separator);
        let mut record = ProducerRecord::new(topic.clone(), value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        let delivery = match producer.send(record).await {
            Ok(delivery) => delivery,
            Err(error) => {
                send_error = Some(error);
                break;
            }
        };
        if delivery_tx.send(delivery).await.is_err() {
            // The printer stopped early: its error is reported below.
            break;
        }
    }
    drop(delivery_tx);
    // The printer ends once every delivery has resolved (linger sends the last batches), or at
    // the first failure. After a failure nothing later can be delivered in order, so the
    // command ends at once instead of waiting out every outstanding batch in close().
    let printed = printer.await.context("the offset printer task failed")?;
    if printed.is_ok() {
        producer.close().await;
    }
    if let Some(error) = send_error {
        return Err(error).context("cannot send a record");
    }
    match printed {
        Err(error) if is_broken_pipe(&error) => Ok(()),
        other => other.context("a record was not delivered"),
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_the_text_before_the_first_separator() {
        let (key, value) = split_line(b"k1::v::w".to_vec(), Some(b"::"));
        assert_eq!(key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(&value[..], b"v::w");
    }

    #[test]
    fn line_without_separator_has_no_key() {
        let (key, value) = split_line(b"just a value".to_vec(), Some(b":"));
        assert!(key.is_none());
        assert_eq!(&value[..], b"just a value");
        let (key, value) = split_line(b"a:b".to_vec(), None);
        assert!(key.is_none());
        assert_eq!(&value[..], b"a:b");
    }

    #[test]
    fn empty_key_and_empty_value_are_kept() {
        let (key, value) = split_line(b":".to_vec(), Some(b":"));
        assert_eq!(key.as_deref(), Some(&b""[..]));
        assert!(value.is_empty());
    }
}
