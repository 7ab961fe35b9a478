//! `tidelog stream ...`: event streams, the records of one key in one topic (issue 8 §4, §5).
//! `read` and `info` are read-only; each command lives in its own file.

mod follow;
mod info;
mod read;

use clap::Subcommand;
use tidelog_client::Client;

#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Print a stream's records, one line each (`[PARTITION<TAB>OFFSET<TAB>]VALUE`), paging
    /// through it; exits 0 at the end of the stream.
    Read(read::ReadArgs),
    /// Print `partition=P first_offset=F last_offset=L records=N` for a stream (offsets -1
    /// when it has no record).
    Info(info::InfoArgs),
}

pub async fn run(client: &Client, command: StreamCommand) -> anyhow::Result<()> {
    match command {
        StreamCommand::Read(args) => read::run(client, args).await,
        StreamCommand::Info(args) => info::run(client, args).await,
    }
}
