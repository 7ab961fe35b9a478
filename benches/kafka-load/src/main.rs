//! `kafka-load produce|consume`: a librdkafka-based load generator for a Kafka listener, the
//! counterpart of `tidelog perf produce|consume` for the native one (issue 7 §4). Options
//! mirror perf's, with librdkafka's names beside them; the result is the same one line of
//! key=value pairs on stdout, so `benches/kafka-vs-native.sh` reads both tools alike:
//! `records=N records_per_s=X mb_per_s=Y p50_ms=A p99_ms=B p999_ms=C` (MB = 2^20 bytes).
//!
//! Synchronous `BaseProducer`/`BaseConsumer` driven from the main thread: no async runtime
//! between the measurement and librdkafka.

mod consume;
mod context;
mod produce;
mod report;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "kafka-load", about = "librdkafka load generator for a Kafka listener")]
struct Cli {
    /// `bootstrap.servers`.
    #[arg(long, default_value = "127.0.0.1:9092", value_name = "HOST:PORT")]
    bootstrap: String,
    /// librdkafka `debug` contexts (e.g. `broker,protocol,fetch`), logged to stderr.
    #[arg(long, value_name = "CONTEXTS")]
    debug: Option<String>,
    /// Any other librdkafka property, applied last (repeatable), as kcat's and
    /// rdkafka_performance's `-X`: e.g. `-X check.crcs=true`.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    properties: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Produce N records as fast as possible (like `tidelog perf produce`).
    Produce(produce::ProduceArgs),
    /// Consume N records from the beginning of the partitions (like `tidelog perf consume`).
    Consume(consume::ConsumeArgs),
}

/// `compression.codec` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn librdkafka_name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let common = context::Common {
        bootstrap: cli.bootstrap,
        debug: cli.debug,
        properties: cli.properties,
    };
    let summary = match cli.command {
        Command::Produce(args) => produce::run(&common, &args)?,
        Command::Consume(args) => consume::run(&common, &args)?,
    };
    println!("{summary}");
    Ok(())
}
