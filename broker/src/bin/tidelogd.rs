//! `tidelogd`: the Tidelog broker daemon. Merges configuration (flags over `TIDELOG_*`
//! environment variables over an optional TOML file over defaults), starts the broker and
//! shuts it down gracefully on SIGINT or SIGTERM. `tidelogd verify --data-dir DIR` checks a
//! data directory read-only instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tidelog_broker::config::KafkaListenerConfig;
use tidelog_broker::{Broker, BrokerConfig, FlushPolicy};
use tokio::signal::unix::{signal, SignalKind};

/// jemalloc, not the system allocator: glibc hands a freed 1 MiB request buffer back to the
/// kernel, so every produce request faulted its frame and its append copy into fresh pages
/// (1.8 page faults per 4 KiB stored, 17 to 20% of the broker's CPU, more on a VM whose
/// freed pages go back to the host); jemalloc keeps freed extents for reuse and returns
/// them only after they sit idle (its decay, 10 s by default).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The Tidelog broker daemon.
#[derive(Debug, Parser)]
#[command(name = "tidelogd", version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Data directory: segments, indexes and metadata [default: ./tidelog-data]
    #[arg(long, env = "TIDELOG_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7171]
    #[arg(long, env = "TIDELOG_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// TOML configuration file; flags and environment variables override it
    #[arg(long, env = "TIDELOG_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Flush policy: always (acknowledge after fdatasync), interval:MS, or never [default: always]
    #[arg(long, env = "TIDELOG_FLUSH", value_name = "POLICY")]
    flush: Option<FlushPolicy>,
    /// This broker's id in metadata responses [default: 0]
    #[arg(long, env = "TIDELOG_BROKER_ID")]
    broker_id: Option<u32>,
    /// Default segment size for new topics, in bytes [default: 1073741824]
    #[arg(long, env = "TIDELOG_SEGMENT_BYTES")]
    segment_bytes: Option<u64>,
    /// Default retention for new topics, in ms (-1: forever) [default: 604800000]
    #[arg(long, env = "TIDELOG_RETENTION_MS", allow_hyphen_values = true)]
    retention_ms: Option<i64>,
    /// Default per-partition retention for new topics, in bytes (-1: unlimited) [default: -1]
    #[arg(long, env = "TIDELOG_RETENTION_BYTES", allow_hyphen_values = true)]
    retention_bytes: Option<i64>,
    /// Default partition count for topics created without one [default: 1]
    #[arg(long, env = "TIDELOG_DEFAULT_PARTITIONS")]
    default_partitions: Option<u32>,
    /// Address of the Kafka-protocol listener, or `none` to turn it off [default: 127.0.0.1:9092]
    #[arg(long, env = "TIDELOG_KAFKA_LISTEN", value_name = "ADDR|none")]
    kafka_listen: Option<String>,
    /// HOST:PORT that Kafka clients are told to connect to [default: the listen address]
    #[arg(long, env = "TIDELOG_KAFKA_ADVERTISED", value_name = "HOST:PORT")]
    kafka_advertised: Option<String>,
}

/// Without a subcommand, `tidelogd` runs the broker.
#[derive(Debug, Subcommand)]
enum Command {
    /// Check every batch (offsets, CRC) and every index entry of every partition, read-only,
    /// and report per partition. Exit status 0 only when everything is clean, 1 when damage
    /// was found, 2 when the check could not run.
    Verify {
        /// Data directory to check
        #[arg(long, env = "TIDELOG_DATA_DIR", value_name = "DIR")]
        data_dir: PathBuf,
    },
}

/// Exit status of `verify` when it found damage (2 is a failure to run at all).
const VERIFY_DAMAGE_EXIT: u8 = 1;
const VERIFY_ERROR_EXIT: u8 = 2;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal; log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut args = Args::parse();
    if let Some(Command::Verify { data_dir }) = args.command.take() {
        return match verify(&data_dir) {
            Ok(code) => code,
            Err(error) => {
                eprintln!("tidelogd verify: {error:#}");
                ExitCode::from(VERIFY_ERROR_EXIT)
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tidelogd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints one verdict per partition (and each problem indented under it) to stdout.
fn verify(data_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    if !data_dir.join("topics").is_dir() {
        anyhow::bail!(
            "{} is not a Tidelog data directory (no topics/ in it)",
            data_dir.display()
        );
    }
    let verdicts = tidelog_broker::storage::verify_data_dir(data_dir)
        .with_context(|| format!("checking {}", data_dir.display()))?;
    let mut damaged = 0;
    for verdict in &verdicts {
        let range = format!(
            "{} segment(s), offsets {}..{}, {} bytes of batches checked",
            verdict.segments, verdict.log_start_offset, verdict.next_offset, verdict.bytes_checked
        );
        if verdict.is_clean() {
            println!("{}: clean: {range}", verdict.name);
        } else {
            damaged += 1;
            println!("{}: DAMAGED: {range}", verdict.name);
            for problem in &verdict.problems {
                println!("  {problem}");
            }
        }
        for note in &verdict.notes {
            println!("  note: {note}");
        }
    }
    println!("{} partition(s) checked, {damaged} damaged", verdicts.len());
    Ok(if damaged == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(VERIFY_DAMAGE_EXIT)
    })
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = merge(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidelogd")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let broker = Broker::start(config).await?;
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down: draining connections and syncing partitions"
        );
        broker.shutdown().await?;
        Ok(())
    })
}

fn merge(args: Args) -> anyhow::Result<BrokerConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading configuration file {}", path.display()))?;
            BrokerConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => BrokerConfig::default(),
    };
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(flush) = args.flush {
        config.flush = flush;
    }
    if let Some(broker_id) = args.broker_id {
        config.broker_id = broker_id;
    }
    if let Some(segment_bytes) = args.segment_bytes {
        config.log.segment_bytes = segment_bytes;
    }
    if let Some(retention_ms) = args.retention_ms {
        config.log.retention_ms = retention_ms;
    }
    if let Some(retention_bytes) = args.retention_bytes {
        config.log.retention_bytes = retention_bytes;
    }
    if let Some(partitions) = args.default_partitions {
        config.log.partitions = partitions;
    }
    if let Some(kafka_listen) = args.kafka_listen {
        config.kafka.listen = KafkaListenerConfig::parse_listen(&kafka_listen)
            .map_err(|message| anyhow::anyhow!("--kafka-listen: {message}"))?;
    }
    if let Some(advertised) = args.kafka_advertised {
        config.kafka.advertised = Some(advertised);
    }
    config.validate()?;
    Ok(config)
}
