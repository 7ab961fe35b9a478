//! `tidelog stream read TOPIC KEY [--from OFFSET] [--backward] [--limit N] [--print-offset]`:
//! one line per record, `[PARTITION<TAB>OFFSET<TAB>]VALUE` as `tidelog consume` prints it,
//! paging through the stream with ReadStream; exits 0 at the end of the stream.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use tidelog_client::{Client, ReadDirection, ReadStreamOptions};

use crate::cli::consume::{write_record, written, Written};

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Topic of the stream.
    topic: String,
    /// The stream's key (its bytes, as given).
    key: String,
    /// Start here (inclusive): forward, the first offset wanted (default: the oldest retained
    /// record); with --backward, the offset to read down from (default: the last record).
    #[arg(long, value_name = "OFFSET", allow_negative_numbers = true)]
    from: Option<i64>,
    /// Newest first.
    #[arg(long)]
    backward: bool,
    /// Print at most this many records.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Print partition and offset before the value.
    #[arg(long)]
    print_offset: bool,
    /// After the history, keep printing the stream's live records (a catch-up subscription)
    /// until SIGINT or SIGTERM, `--limit` records or `--timeout-ms` of silence.
    #[arg(long, conflicts_with = "backward")]
    follow: bool,
    /// With --follow: exit 0 after this many milliseconds without a new record.
    #[arg(long, value_name = "MS", requires = "follow")]
    timeout_ms: Option<u64>,
}

pub async fn run(client: &Client, args: ReadArgs) -> anyhow::Result<()> {
    if args.follow {
        let follow = super::follow::Follow {
            topic: &args.topic,
            key: &args.key,
            from: args.from.unwrap_or(0),
            limit: args.limit,
            print_offset: args.print_offset,
            timeout: args.timeout_ms.map(std::time::Duration::from_millis),
        };
        return super::follow::run(client, follow).await;
    }
    let direction = if args.backward {
        ReadDirection::Backward
    } else {
        ReadDirection::Forward
    };
    let mut from = args.from.unwrap_or(match direction {
        ReadDirection::Forward => 0,
        ReadDirection::Backward => -1,
    });
    let mut remaining = args.limit.unwrap_or(u64::MAX);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    // Every page returns at least one record or ends the loop, and `from` moves strictly on in
    // the direction read, so the loop is bounded by the stream's length.
    while remaining > 0 {
        let options = ReadStreamOptions {
            from,
            direction,
            // 0 asks for the broker's page size.
            limit: u32::try_from(remaining).unwrap_or(0),
            max_wait: std::time::Duration::ZERO,
        };
        let page = client
            .read_stream(&args.topic, args.key.as_bytes(), options)
            .await
            .with_context(|| format!("cannot read stream {:?} of topic {}", args.key, args.topic))?;
        for record in page
            .records
            .iter()
            .take(usize::try_from(remaining).unwrap_or(usize::MAX))
        {
            if let Written::Closed = written(write_record(&mut out, record, false, args.print_offset))? {
                return Ok(());
            }
            remaining -= 1;
        }
        let moved = match direction {
            ReadDirection::Forward => page.next_offset > from,
            ReadDirection::Backward => page.next_offset < from || from < 0,
        };
        if page.records.is_empty() || page.end_of_stream || page.next_offset < 0 || !moved {
            break;
        }
        from = page.next_offset;
    }
    if let Written::Closed = written(out.flush())? {
        return Ok(());
    }
    Ok(())
}
