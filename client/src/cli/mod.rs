//! Argument definitions of the `tidelog` CLI and dispatch to the command modules. The command
//! names and flags are a contract: add flags, never rename them.

mod consume;
mod group;
mod perf;
mod perf_stream;
mod produce;
mod stream;
mod topic;

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tidelog_client::{Acks, Client, ClientConfig, DEFAULT_BROKER};

#[derive(Debug, Parser)]
#[command(
    name = "tidelog",
    version,
    about = "Command-line client for the Tidelog broker"
)]
pub struct Cli {
    /// Broker address (host:port); several, comma-separated, are tried in order.
    #[arg(long, global = true, env = "TIDELOG_BROKER", default_value = DEFAULT_BROKER, value_name = "ADDR")]
    broker: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe and delete topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Send one record per line of stdin.
    Produce(produce::ProduceArgs),
    /// Print records to stdout, one per line.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset the offsets of, and delete consumer groups.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Event streams: append to, read the records of, and describe one key's stream.
    Stream {
        #[command(subcommand)]
        command: stream::StreamCommand,
    },
    /// Measure producer or consumer throughput and latency.
    Perf {
        #[command(subcommand)]
        command: PerfCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create(topic::CreateArgs),
    /// List all topics.
    List,
    /// Show a topic's partitions, offsets and configuration.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Add partitions or change configs (Kafka names) of a topic.
    Alter(topic::AlterArgs),
    /// Make a partition's offsets below a point unreadable (Kafka's DeleteRecords).
    Trim(topic::TrimArgs),
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List all consumer groups.
    List,
    /// Show a group's state, members, and per partition its committed offset and lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets on a topic (only while the group has no members).
    ResetOffsets(group::ResetOffsetsArgs),
    /// Delete a group and its committed offsets (only while it has no members).
    Delete {
        /// Group id.
        group: String,
    },
    /// Wait until a group has committed at or past an offset of a partition: exit 0 then, or
    /// on timeout one line on stderr and exit status 4.
    Wait(group::WaitArgs),
}

#[derive(Debug, Subcommand)]
enum PerfCommand {
    /// Produce N records as fast as possible.
    Produce(perf::PerfProduceArgs),
    /// Consume N records from the beginning of every partition.
    Consume(perf::PerfConsumeArgs),
    /// Conditional appends, one record each, by concurrent writers on distinct or hot keys.
    StreamAppend(perf_stream::PerfStreamAppendArgs),
}

/// `--acks` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// No response from the broker; a record counts as sent once written to the socket.
    None,
    /// The leader has appended the batch.
    Leader,
}

impl From<AcksArg> for Acks {
    fn from(acks: AcksArg) -> Acks {
        match acks {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
        }
    }
}

/// `--compression`: the codec a producer compresses its batches' records with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<CompressionArg> for tidelog_client::Compression {
    fn from(codec: CompressionArg) -> Self {
        use tidelog_client::Compression;
        match codec {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// Connection tuning shared by the commands that stream data.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Requests pipelined on one broker connection.
    #[arg(long, default_value_t = ClientConfig::MAX_IN_FLIGHT_REQUESTS_DEFAULT, value_name = "N")]
    max_in_flight: usize,
    /// Largest frame accepted from or sent to the broker.
    #[arg(long, default_value_t = ClientConfig::MAX_FRAME_BYTES_DEFAULT, value_name = "BYTES")]
    max_frame_bytes: usize,
}

impl Default for ConnectionArgs {
    fn default() -> Self {
        Self {
            max_in_flight: ClientConfig::MAX_IN_FLIGHT_REQUESTS_DEFAULT,
            max_frame_bytes: ClientConfig::MAX_FRAME_BYTES_DEFAULT,
        }
    }
}

/// A command's outcome that is not a success and not an error report: `line` goes to stderr
/// as it is and the process exits with `code` (e.g. `group wait` timing out: 4).
#[derive(Debug)]
pub struct ExitWith {
    pub code: u8,
    pub line: String,
}

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

impl std::error::Error for ExitWith {}

/// Connects to the broker(s) named by `--broker`.
async fn connect(broker: &str, tuning: &ConnectionArgs) -> anyhow::Result<Client> {
    let addresses: Vec<String> = broker
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let config = ClientConfig::new(addresses)
        .client_id("tidelog-cli")
        .max_in_flight_requests_per_connection(tuning.max_in_flight)
        .max_frame_bytes(tuning.max_frame_bytes)
        .connect_timeout(Duration::from_secs(5));
    Client::connect(config)
        .await
        .with_context(|| format!("cannot reach the broker at {broker}"))
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Topic { command } => {
            let client = connect(&cli.broker, &ConnectionArgs::default()).await?;
            match command {
                TopicCommand::Create(args) => topic::create(&client, args).await,
                TopicCommand::List => topic::list(&client).await,
                TopicCommand::Describe { name } => topic::describe(&client, &name).await,
                TopicCommand::Alter(args) => topic::alter(&client, args).await,
                TopicCommand::Trim(args) => topic::trim(&client, args).await,
                TopicCommand::Delete { name } => topic::delete(&client, &name).await,
            }
        }
        Command::Produce(args) => {
            let client = connect(&cli.broker, &args.connection).await?;
            produce::run(client, args).await
        }
        Command::Consume(args) => {
            let client = connect(&cli.broker, &args.connection).await?;
            consume::run(client, args).await
        }
        Command::Group { command } => {
            let client = connect(&cli.broker, &ConnectionArgs::default()).await?;
            match command {
                GroupCommand::List => group::list(&client).await,
                GroupCommand::Describe { group } => group::describe(&client, &group).await,
                GroupCommand::ResetOffsets(args) => group::reset_offsets(&client, args).await,
                GroupCommand::Delete { group } => group::delete(&client, &group).await,
                GroupCommand::Wait(args) => group::wait(&client, args).await,
            }
        }
        Command::Stream { command } => {
            let client = connect(&cli.broker, &ConnectionArgs::default()).await?;
            stream::run(&client, command).await
        }
        Command::Perf { command } => match command {
            PerfCommand::Produce(args) => {
                let client = connect(&cli.broker, &args.connection).await?;
                perf::produce(client, args).await
            }
            PerfCommand::Consume(args) => {
                let client = connect(&cli.broker, &args.connection).await?;
                perf::consume(client, args).await
            }
            PerfCommand::StreamAppend(args) => perf_stream::run(&cli.broker, args).await,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn contract_command_lines_parse() {
        for line in [
            "tidelog --broker 127.0.0.1:1 topic create t --partitions 3 --retention-ms 10 --retention-bytes 20 --segment-bytes 30",
            "tidelog topic create c --config cleanup.policy=compact --config min.cleanable.dirty.ratio=0.1 --config delete.retention.ms=0",
            "tidelog topic list",
            "tidelog topic describe t",
            "tidelog topic delete t",
            "tidelog topic alter t --partitions 6",
            "tidelog topic alter t --config retention.ms=1000 --config segment.bytes=1048576 --delete-config retention.bytes",
            "tidelog topic alter t --partitions 2 --validate-only",
            "tidelog topic trim t --partition 0 --before 100",
            "tidelog topic trim t --partition 1 --before -1",
            "tidelog produce t --partition 1 --key-separator : --print-offsets",
            "tidelog consume t --partition 0 --from-beginning --max-messages 5 --timeout-ms 100 --print-key --print-offset",
            "tidelog consume t --offset 7",
            "tidelog perf produce t --records 10 --record-size 100 --partitions-used 2 --acks none",
            "tidelog perf consume t --records 10",
            "tidelog perf stream-append t --appends 100 --writers 4 --keys distinct --expect none",
            "tidelog perf stream-append t --appends 100 --writers 100 --keys 10 --expect exact",
            "tidelog topic list --broker 127.0.0.1:2",
            "tidelog consume t --group g --session-timeout-ms 6000 --max-messages 3 --timeout-ms 100 --print-key --print-offset --from-beginning",
            "tidelog group list",
            "tidelog group describe g",
            "tidelog group reset-offsets g --topic t --to-earliest",
            "tidelog group reset-offsets g --topic t --to-latest",
            "tidelog group reset-offsets g --topic t --to-offset 5",
            "tidelog group reset-offsets g --topic t --to-timestamp 1700000000000",
            "tidelog group delete g",
            "tidelog perf consume t --records 10 --group g",
            "tidelog stream append t k",
            "tidelog stream append t k --expect none --event-id order-7",
            "tidelog stream append t k --expect 41",
            "tidelog stream append t k --expect exists",
            "tidelog stream info t k",
            "tidelog stream read t k",
            "tidelog stream read t k --from 5 --limit 3 --print-offset",
            "tidelog stream read t k --backward --from -1 --limit 2",
            "tidelog group wait g t 0 42",
            "tidelog group wait g t 1 7 --timeout-ms 500",
        ] {
            let args: Vec<&str> = line.split_whitespace().collect();
            if let Err(error) = Cli::try_parse_from(&args) {
                panic!("{line}: {error}");
            }
        }
    }

    #[test]
    fn reset_offsets_needs_exactly_one_target() {
        for line in [
            "tidelog group reset-offsets g --topic t",
            "tidelog group reset-offsets g --topic t --to-earliest --to-latest",
            "tidelog group reset-offsets g --to-earliest",
        ] {
            let args: Vec<&str> = line.split_whitespace().collect();
            assert!(Cli::try_parse_from(&args).is_err(), "{line}");
        }
    }

    #[test]
    fn from_beginning_and_offset_conflict() {
        let args = ["tidelog", "consume", "t", "--from-beginning", "--offset", "3"];
        assert!(Cli::try_parse_from(args).is_err());
    }
}
