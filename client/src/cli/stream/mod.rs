//! `tidelog stream ...`: event streams, the records of one key in one topic (issue 8 §4, §5).
//! `read` and `info` are read-only, `append` and `snapshot` write, `truncate`, `erase` and
//! `reopen` change a stream's marks (issue 9 §3); each command lives in its own file.

mod append;
mod erase;
mod follow;
mod info;
mod read;
mod reopen;
mod snapshot;
mod truncate;

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
    /// when it has no record), then `truncated_before=T` for a truncated stream and one
    /// `erasure=...` line with the erasure's progress for an erased one.
    Info(info::InfoArgs),
    /// Make a stream's records before `--before OFFSET` unreadable (the broker removes them;
    /// the stream keeps its version). Prints `truncated TOPIC/KEY before N`.
    Truncate(truncate::TruncateArgs),
    /// Erase every record of a stream so far: the broker removes them from its segment files
    /// within its erase deadline, reads answer "erased", appends are refused (exit status 5)
    /// until `stream reopen`. Prints `erased TOPIC/KEY before N`.
    Erase(erase::EraseArgs),
    /// Accept appends to an erased stream again (its erased records stay erased). Prints
    /// `reopened TOPIC/KEY from N`.
    Reopen(reopen::ReopenArgs),
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
        StreamCommand::Truncate(args) => truncate::run(client, args).await,
        StreamCommand::Erase(args) => erase::run(client, args).await,
        StreamCommand::Reopen(args) => reopen::run(client, args).await,
        StreamCommand::Snapshot(args) => snapshot::run(client, args).await,
    }
}
