//! `tidelog topic create|list|describe|alter|trim|delete`.

use anyhow::Context;
use clap::Args;
use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, Table};
use tidelog_client::{Client, NewTopic, Offset, PartitionId, TopicChange, TopicDescription};

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Topic name.
    name: String,
    /// Number of partitions.
    #[arg(long, default_value_t = 1, value_name = "N")]
    partitions: u32,
    /// Keep records this long (ms); -1 keeps them forever. Default: the broker's.
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    retention_ms: Option<i64>,
    /// Keep at most this many bytes per partition; -1: no limit. Default: the broker's.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    retention_bytes: Option<i64>,
    /// Roll a new segment at this size. Default: the broker's.
    #[arg(long, value_name = "N")]
    segment_bytes: Option<u64>,
    /// Roll a new segment after this long (ms). Default: the broker's.
    #[arg(long, value_name = "MS")]
    segment_ms: Option<i64>,
    /// When to fsync: always, interval:<ms> or never. Default: the broker's.
    #[arg(long, value_name = "POLICY")]
    flush: Option<String>,
    /// Set a config by its Kafka name, e.g. cleanup.policy=compact (repeatable; applied after
    /// the flags above): retention.ms, retention.bytes, segment.bytes, segment.ms,
    /// index.interval.bytes, tidelog.flush.policy, cleanup.policy, min.cleanable.dirty.ratio,
    /// min.compaction.lag.ms, max.compaction.lag.ms, delete.retention.ms.
    #[arg(long = "config", value_name = "NAME=VALUE", value_parser = parse_config)]
    config: Vec<(String, String)>,
}

pub async fn create(client: &Client, args: CreateArgs) -> anyhow::Result<()> {
    let mut topic = NewTopic::new(&args.name, args.partitions);
    if let Some(ms) = args.retention_ms {
        topic = topic.retention_ms(ms);
    }
    if let Some(bytes) = args.retention_bytes {
        topic = topic.retention_bytes(bytes);
    }
    if let Some(bytes) = args.segment_bytes {
        topic = topic.segment_bytes(bytes);
    }
    if let Some(ms) = args.segment_ms {
        topic = topic.segment_ms(ms);
    }
    if let Some(flush) = args.flush {
        topic = topic.flush(flush);
    }
    for (name, value) in &args.config {
        topic = topic
            .config(name, value)
            .with_context(|| format!("cannot create topic {}", args.name))?;
    }
    client
        .admin()
        .create_topic(topic)
        .await
        .with_context(|| format!("cannot create topic {}", args.name))?;
    println!("Created topic {}.", args.name);
    Ok(())
}

pub async fn delete(client: &Client, name: &str) -> anyhow::Result<()> {
    client
        .admin()
        .delete_topic(name)
        .await
        .with_context(|| format!("cannot delete topic {name}"))?;
    println!("Deleted topic {name}.");
    Ok(())
}

fn records(topic: &TopicDescription) -> i64 {
    topic
        .partitions()
        .iter()
        .map(|p| p.high_watermark().get() - p.log_start_offset().get())
        .sum()
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header.to_vec());
    table
}

fn right_align(table: &mut Table, columns: std::ops::Range<usize>) {
    for index in columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

pub async fn list(client: &Client) -> anyhow::Result<()> {
    let topics = client.admin().list_topics().await.context("cannot list topics")?;
    let mut table = table(&["Topic", "Partitions", "Records"]);
    for topic in &topics {
        table.add_row(vec![
            topic.name().to_owned(),
            topic.partition_count().to_string(),
            records(topic).to_string(),
        ]);
    }
    right_align(&mut table, 1..3);
    println!("{table}");
    Ok(())
}

pub async fn describe(client: &Client, name: &str) -> anyhow::Result<()> {
    let topic = client
        .admin()
        .describe_topic(name)
        .await
        .with_context(|| format!("cannot describe topic {name}"))?;
    println!(
        "Topic: {}  Partitions: {}  Records: {}",
        topic.name(),
        topic.partition_count(),
        records(&topic)
    );
    println!("Topic id: {}", topic.topic_id());
    // The cleaner column only where the cleaner has something to say: compacted topics, and
    // partitions with erasures pending or marked uncleanable.
    let show_cleaner = topic
        .partitions()
        .iter()
        .any(|partition| partition.cleaner().is_some());
    let mut header = vec![
        "Partition",
        "Leader",
        "Log start offset",
        "Log end offset",
        "Records",
        "Error",
    ];
    if show_cleaner {
        header.push("Cleaner");
    }
    let mut partitions = table(&header);
    for partition in topic.partitions() {
        let mut row = vec![
            partition.partition().to_string(),
            partition.leader().to_string(),
            partition.log_start_offset().to_string(),
            partition.high_watermark().to_string(),
            (partition.high_watermark().get() - partition.log_start_offset().get()).to_string(),
            partition.error().map(|e| e.to_string()).unwrap_or_default(),
        ];
        if show_cleaner {
            row.push(
                partition
                    .cleaner()
                    .map(|status| status.to_string())
                    .unwrap_or_default(),
            );
        }
        partitions.add_row(row);
    }
    right_align(&mut partitions, 0..5);
    println!("{partitions}");
    let mut config = table(&["Config", "Value"]);
    for (key, value) in topic.config().entries() {
        config.add_row(vec![key.to_owned(), value]);
    }
    println!("{config}");
    Ok(())
}

#[derive(Debug, Args)]
pub struct AlterArgs {
    /// Topic name.
    name: String,
    /// Grow the topic to this many partitions (a topic never shrinks).
    #[arg(long, value_name = "N")]
    partitions: Option<u32>,
    /// Set a config by its Kafka name, e.g. retention.ms=3600000 (repeatable): retention.ms,
    /// retention.bytes, segment.bytes, segment.ms, index.interval.bytes, cleanup.policy
    /// (delete, compact or compact,delete), min.cleanable.dirty.ratio, min.compaction.lag.ms,
    /// max.compaction.lag.ms, delete.retention.ms.
    #[arg(long = "config", value_name = "NAME=VALUE", value_parser = parse_config)]
    config: Vec<(String, String)>,
    /// Drop the topic's own value of a config, so the broker default applies (repeatable).
    #[arg(long = "delete-config", value_name = "NAME")]
    delete_config: Vec<String>,
    /// Check the change with the broker, apply nothing.
    #[arg(long)]
    validate_only: bool,
}

fn parse_config(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

pub async fn alter(client: &Client, args: AlterArgs) -> anyhow::Result<()> {
    if args.partitions.is_none() && args.config.is_empty() && args.delete_config.is_empty() {
        anyhow::bail!("nothing to change: give --partitions, --config or --delete-config");
    }
    let mut change = TopicChange::new();
    if let Some(count) = args.partitions {
        change = change.partitions(count);
    }
    for (name, value) in args.config {
        change = change.set_config(name, value);
    }
    for name in args.delete_config {
        change = change.delete_config(name);
    }
    if args.validate_only {
        change = change.validate_only();
    }
    client
        .admin()
        .alter_topic(&args.name, change)
        .await
        .with_context(|| format!("cannot alter topic {}", args.name))?;
    if args.validate_only {
        println!("Topic {}: the change is valid (nothing applied).", args.name);
    } else {
        println!("Altered topic {}.", args.name);
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct TrimArgs {
    /// Topic name.
    name: String,
    /// The partition to trim.
    #[arg(long, value_name = "P")]
    partition: u32,
    /// Offsets below this become unreadable; -1: everything up to the log end.
    #[arg(long, value_name = "OFFSET", allow_negative_numbers = true)]
    before: i64,
}

pub async fn trim(client: &Client, args: TrimArgs) -> anyhow::Result<()> {
    let before = match args.before {
        -1 => None,
        offset if offset >= 0 => Some(Offset::new(offset)),
        other => anyhow::bail!("--before must be an offset or -1, not {other}"),
    };
    let log_start = client
        .admin()
        .trim_topic(&args.name, PartitionId::new(args.partition), before)
        .await
        .with_context(|| format!("cannot trim topic {} partition {}", args.name, args.partition))?;
    println!(
        "Topic {} partition {}: log start offset is now {}.",
        args.name, args.partition, log_start
    );
    Ok(())
}
