//! `tidelog stream read TOPIC KEY [--from OFFSET] [--backward] [--limit N] [--print-offset]`:
//! one line per record, `[PARTITION<TAB>OFFSET<TAB>]VALUE` as `tidelog consume` prints it,
//! paging through the stream with ReadStream; exits 0 at the end of the stream.
//!
//! With `--with-snapshot` the first line is the stream's latest snapshot,
//! `snapshot<TAB>AT_OFFSET<TAB>BYTES` (the bytes as a record's value is printed), or
//! `no snapshot`; the records after the snapshot's offset follow (all of them without one), the
//! first page fetched with the snapshot in one LoadStream request.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use tidelog_client::{Client, ReadDirection, ReadStreamOptions, Snapshot, StreamRecord};

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
    /// Print the stream's latest snapshot first (`snapshot<TAB>AT_OFFSET<TAB>BYTES`, or
    /// `no snapshot`), then only the records after it.
    #[arg(long, conflicts_with_all = ["backward", "follow", "from"])]
    with_snapshot: bool,
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
    if args.with_snapshot {
        let loaded = client
            .load_stream(&args.topic, args.key.as_bytes())
            .await
            .with_context(|| format!("cannot load stream {:?} of topic {}", args.key, args.topic))?;
        if let Written::Closed = written(write_snapshot(&mut out, loaded.snapshot.as_ref()))? {
            return Ok(());
        }
        if let Written::Closed = print_records(&mut out, &loaded.records, &mut remaining, args.print_offset)?
        {
            return Ok(());
        }
        if loaded.end_of_stream || loaded.next_offset < 0 {
            return finish(&mut out);
        }
        from = loaded.next_offset;
    }
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
        if let Written::Closed = print_records(&mut out, &page.records, &mut remaining, args.print_offset)? {
            return Ok(());
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
    finish(&mut out)
}

/// Up to `remaining` of `records`, one line each; counts them off `remaining`.
fn print_records(
    out: &mut impl Write,
    records: &[StreamRecord],
    remaining: &mut u64,
    print_offset: bool,
) -> anyhow::Result<Written> {
    for record in records
        .iter()
        .take(usize::try_from(*remaining).unwrap_or(usize::MAX))
    {
        if let Written::Closed = written(write_record(out, record, false, print_offset))? {
            return Ok(Written::Closed);
        }
        *remaining -= 1;
    }
    Ok(Written::Ok)
}

/// The snapshot line of `--with-snapshot`.
fn write_snapshot(out: &mut impl Write, snapshot: Option<&Snapshot>) -> std::io::Result<()> {
    match snapshot {
        Some(snapshot) => {
            write!(out, "snapshot\t{}\t", snapshot.at_offset)?;
            out.write_all(&snapshot.bytes)?;
            out.write_all(b"\n")
        }
        None => out.write_all(b"no snapshot\n"),
    }
}

fn finish(out: &mut impl Write) -> anyhow::Result<()> {
    // A reader gone away (`| head`) is a normal way to stop.
    written(out.flush()).map(drop)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn the_snapshot_line_is_the_contract() {
        let snapshot = Snapshot {
            at_offset: 41,
            bytes: Bytes::from("state"),
            timestamp: 7,
        };
        let mut out = Vec::new();
        write_snapshot(&mut out, Some(&snapshot)).unwrap();
        write_snapshot(&mut out, None).unwrap();
        assert_eq!(out, b"snapshot\t41\tstate\nno snapshot\n");
    }
}
