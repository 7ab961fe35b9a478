//! `tidelog stream erase TOPIC KEY`: every record of the stream so far is erased (the broker's
//! cleaner removes them from its segment files by the erase deadline; other records keep their
//! offsets), its reads answer "erased" and its appends are refused until `stream reopen`.
//! Prints one line, `erased TOPIC/KEY before N` (N: the erasure point), followed by
//! `(complete)` when the stream had nothing to remove. Progress: `tidelog stream info`.

use anyhow::Context;
use clap::Args;
use tidelog_client::{Client, StreamMarks};

#[derive(Debug, Args)]
pub struct EraseArgs {
    /// Topic of the stream.
    topic: String,
    /// The stream's key (its bytes, as given).
    key: String,
}

pub async fn run(client: &Client, args: EraseArgs) -> anyhow::Result<()> {
    let marks = client
        .erase_stream(&args.topic, args.key.as_bytes())
        .await
        .with_context(|| format!("cannot erase stream {:?} of topic {}", args.key, args.topic))?;
    println!("{}", line(&args.topic, &args.key, &marks));
    Ok(())
}

fn line(topic: &str, key: &str, marks: &StreamMarks) -> String {
    let complete = if marks.erasure_pending() {
        ""
    } else {
        " (complete)"
    };
    format!("erased {topic}/{key} before {}{complete}", marks.erase_before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_stream_the_point_and_a_finished_erasure() {
        let mut marks = StreamMarks {
            truncated_before: -1,
            erased: true,
            erase_before: 57,
            erase_requested_ms: 1,
            erase_deadline_ms: 2,
            erase_completed_ms: 0,
            erase_records_remaining: 4,
            erase_segments_remaining: 1,
        };
        assert_eq!(line("orders", "o-1", &marks), "erased orders/o-1 before 57");
        marks.erase_completed_ms = 3;
        assert_eq!(
            line("orders", "o-1", &marks),
            "erased orders/o-1 before 57 (complete)"
        );
    }
}
