//! `tidelog stream append TOPIC KEY [--expect any|none|exists|OFFSET] [--event-id ID]`: the
//! lines of stdin become one atomic batch of the stream KEY, appended only if the stream meets
//! the expectation. Prints `PARTITION<TAB>OFFSET` per line; a failed expectation prints one
//! line, `conflict: expected X, actual Y`, and exits with status 3; an erased stream prints
//! `erased: stream "KEY" of topic TOPIC is erased; re-open it to append again` and exits with
//! status 5.

use std::io::{BufRead, Write};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use tidelog_client::{Client, Error, EventData, Expected};

use crate::cli::ExitWith;

/// Exit status of a failed expectation (the contract).
const CONFLICT_EXIT_CODE: u8 = 3;
/// Exit status of an append refused because the stream is erased.
const ERASED_EXIT_CODE: u8 = 5;

/// Bytes of stdin one append takes at most: the broker's default `limits.batch_bytes_max`
/// (16 MiB). One append is one batch, so it must fit one.
const STDIN_BYTES_MAX: usize = 16 << 20;

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// Topic of the stream.
    topic: String,
    /// The stream: the records' key (its partition is murmur2(key) % partitions).
    key: String,
    /// Append only if the stream has no record (`none`), has some (`exists`), or its last
    /// record is at OFFSET; `any` checks nothing.
    #[arg(long, default_value = "any", value_name = "any|none|exists|OFFSET")]
    expect: String,
    /// Event id of the first line; the next lines get ID-1, ID-2, ... So a retried command
    /// (same lines, same ID, same --expect) is recognised and answered with the original
    /// offsets instead of a conflict. Only with an expectation (`none` or OFFSET): `any`
    /// checks nothing, so a retry with it appends again.
    #[arg(long, value_name = "ID")]
    event_id: Option<String>,
}

/// The event id of line `index` (0-based) for `--event-id ID`.
fn event_id(id: &str, index: usize) -> String {
    if index == 0 {
        id.to_owned()
    } else {
        format!("{id}-{index}")
    }
}

/// Every line of stdin, without line endings, up to `STDIN_BYTES_MAX` bytes.
fn read_lines(input: impl BufRead) -> anyhow::Result<Vec<Bytes>> {
    let mut lines = Vec::new();
    let mut total = 0usize;
    for line in input.split(b'\n') {
        let mut line = line.context("reading stdin")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        total = total.saturating_add(line.len());
        if total > STDIN_BYTES_MAX {
            anyhow::bail!("stdin holds more than {STDIN_BYTES_MAX} bytes; one append must fit one batch");
        }
        lines.push(Bytes::from(line));
    }
    Ok(lines)
}

pub async fn run(client: &Client, args: AppendArgs) -> anyhow::Result<()> {
    let expected: Expected = args
        .expect
        .parse()
        .map_err(|error: String| anyhow::anyhow!("--expect {error}"))?;
    let lines = read_lines(std::io::stdin().lock())?;
    if lines.is_empty() {
        anyhow::bail!("no lines on stdin: nothing to append");
    }
    let events = lines
        .into_iter()
        .enumerate()
        .map(|(index, line)| {
            let event = EventData::new(line);
            match &args.event_id {
                Some(id) => event.event_id(event_id(id, index)),
                None => event,
            }
        })
        .collect();
    let key = Bytes::from(args.key.clone().into_bytes());
    match client.append_stream(&args.topic, key, expected, events).await {
        Ok(appended) => {
            let mut out = std::io::stdout().lock();
            for offset in &appended.offsets {
                writeln!(out, "{}\t{offset}", appended.partition)?;
            }
            out.flush()?;
            Ok(())
        }
        Err(Error::ExpectationFailed { failures }) => {
            let actual = failures.first().map_or(-1, |failure| failure.actual);
            Err(ExitWith {
                code: CONFLICT_EXIT_CODE,
                line: format!("conflict: expected {}, actual {actual}", args.expect),
            }
            .into())
        }
        Err(error @ Error::StreamErased { .. }) => Err(ExitWith {
            code: ERASED_EXIT_CODE,
            line: format!("erased: {error}"),
        }
        .into()),
        Err(error) => Err(anyhow::Error::new(error).context(format!(
            "appending to stream {:?} of topic {}",
            args.key, args.topic
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_number_the_lines_after_the_first() {
        let ids: Vec<String> = (0..3).map(|index| event_id("order-7", index)).collect();
        assert_eq!(ids, ["order-7", "order-7-1", "order-7-2"]);
    }

    #[test]
    fn lines_lose_their_endings_and_stdin_is_bounded() {
        let lines = read_lines(&b"a\r\nb\n\nc"[..]).unwrap();
        assert_eq!(
            lines,
            [Bytes::from("a"), Bytes::from("b"), Bytes::new(), Bytes::from("c")]
        );
        let huge = vec![b'x'; STDIN_BYTES_MAX + 1];
        assert!(read_lines(&huge[..]).is_err());
    }
}
