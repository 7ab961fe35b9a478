//! `tidelog stream ...`: event streams, the records of one key in one topic (issue 8 §4, §5).
//! `read` and `info` are read-only, `append` and `snapshot` write; each command lives in its own file.

mod append;
mod follow;
mod info;
mod read;
mod snapshot;

use clap::Subcommand;
use tidelog_client::Client;

#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Append the lines of stdin to a stream as one atomic batch, if the stream meets
    /// `--expect`; prints `PARTITION<TAB>OFFSET` per line. A failed expectation prints one line,
    /// `conflict: expected X, actual Y`, and exits with status 3. With `--event-id ID` the lines
    /// get ids ID, ID-1, ID-2, ..., so a retried command gets the original offsets.
    Append(append::AppendArgs),
    /// Print a stream's records, one line each (`[PARTITION<TAB>OFFSET<TAB>]VALUE`), paging
    /// through it; exits 0 at the end of the stream.
    Read(read::ReadArgs),
    /// Print `partition=P first_offset=F last_offset=L records=N` for a stream (offsets -1
    /// when it has no record).
    Info(info::InfoArgs),
    /// Store stdin as the stream's snapshot as of `--at OFFSET` (in the compacted companion
    /// topic TOPIC.snapshots, created on first use); prints `snapshot of TOPIC/KEY at OFFSET
    /// stored in TOPIC.snapshots partition P offset O`.
    Snapshot(snapshot::SnapshotArgs),
}

pub async fn run(client: &Client, command: StreamCommand) -> anyhow::Result<()> {
    match command {
        StreamCommand::Append(args) => append::run(client, args).await,
        StreamCommand::Read(args) => read::run(client, args).await,
        StreamCommand::Info(args) => info::run(client, args).await,
        StreamCommand::Snapshot(args) => snapshot::run(client, args).await,
    }
}
