//! `tidelog stream info TOPIC KEY`: one line of key=value pairs,
//! `partition=P first_offset=F last_offset=L records=N`, offsets -1 for no stream.

use anyhow::Context;
use clap::Args;
use tidelog_client::{Client, StreamInfo};

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Topic of the stream.
    topic: String,
    /// The stream's key (its bytes, as given).
    key: String,
}

pub async fn run(client: &Client, args: InfoArgs) -> anyhow::Result<()> {
    let info = client
        .stream_info(&args.topic, args.key.as_bytes())
        .await
        .with_context(|| format!("cannot describe stream {:?} of topic {}", args.key, args.topic))?;
    println!("{}", line(&info));
    Ok(())
}

fn line(info: &StreamInfo) -> String {
    format!(
        "partition={} first_offset={} last_offset={} records={}",
        info.partition, info.first_offset, info.last_offset, info.records
    )
}

#[cfg(test)]
mod tests {
    use tidelog_client::PartitionId;

    use super::*;

    #[test]
    fn the_line_is_exactly_the_contract() {
        let info = StreamInfo {
            partition: PartitionId::new(2),
            first_offset: 5,
            last_offset: 41,
            records: 7,
        };
        assert_eq!(line(&info), "partition=2 first_offset=5 last_offset=41 records=7");
        let none = StreamInfo {
            partition: PartitionId::new(0),
            first_offset: -1,
            last_offset: -1,
            records: 0,
        };
        assert_eq!(
            line(&none),
            "partition=0 first_offset=-1 last_offset=-1 records=0"
        );
    }
}
