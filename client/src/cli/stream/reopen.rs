//! `tidelog stream reopen TOPIC KEY`: appends to the erased stream are accepted again; its
//! erased records stay erased and it starts with no version. Prints one line,
//! `reopened TOPIC/KEY from N` (N: where its reads start now).

use anyhow::Context;
use clap::Args;
use tidelog_client::Client;

#[derive(Debug, Args)]
pub struct ReopenArgs {
    /// Topic of the stream.
    topic: String,
    /// The stream's key (its bytes, as given).
    key: String,
}

pub async fn run(client: &Client, args: ReopenArgs) -> anyhow::Result<()> {
    let marks = client
        .reopen_stream(&args.topic, args.key.as_bytes())
        .await
        .with_context(|| format!("cannot re-open stream {:?} of topic {}", args.key, args.topic))?;
    let from = marks.truncated_before.max(marks.erase_before).max(0);
    println!("{}", line(&args.topic, &args.key, from));
    Ok(())
}

fn line(topic: &str, key: &str, from: i64) -> String {
    format!("reopened {topic}/{key} from {from}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_line_names_the_stream_and_where_reads_start() {
        assert_eq!(super::line("orders", "o-1", 57), "reopened orders/o-1 from 57");
    }
}
