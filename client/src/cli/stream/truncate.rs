//! `tidelog stream truncate TOPIC KEY --before OFFSET`: the stream's records before OFFSET
//! become unreadable (the broker's cleaner removes them; the stream keeps its version). Prints
//! one line, `truncated TOPIC/KEY before N` (N: the point in force, OFFSET clamped to the
//! partition's high watermark, never lower than an earlier truncation's).

use anyhow::Context;
use clap::Args;
use tidelog_client::Client;

#[derive(Debug, Args)]
pub struct TruncateArgs {
    /// Topic of the stream.
    topic: String,
    /// The stream's key (its bytes, as given).
    key: String,
    /// Records of the stream below this offset become unreadable.
    #[arg(long, value_name = "OFFSET", allow_negative_numbers = true)]
    before: i64,
}

pub async fn run(client: &Client, args: TruncateArgs) -> anyhow::Result<()> {
    let marks = client
        .truncate_stream(&args.topic, args.key.as_bytes(), args.before)
        .await
        .with_context(|| format!("cannot truncate stream {:?} of topic {}", args.key, args.topic))?;
    println!("{}", line(&args.topic, &args.key, marks.truncated_before));
    Ok(())
}

fn line(topic: &str, key: &str, before: i64) -> String {
    format!("truncated {topic}/{key} before {before}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_line_names_the_stream_and_the_point() {
        assert_eq!(super::line("orders", "o-1", 42), "truncated orders/o-1 before 42");
    }
}
