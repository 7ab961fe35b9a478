//! `tidelog stream snapshot TOPIC KEY --at OFFSET < file`: stores stdin, whole, as the stream's
//! snapshot as of OFFSET in the companion topic `TOPIC.snapshots` (created on first use) and
//! prints `snapshot of TOPIC/KEY at OFFSET stored in TOPIC.snapshots partition P offset O`.

use std::io::Read;

use anyhow::Context;
use clap::Args;
use tidelog_client::{Client, SavedSnapshot};

/// Bytes of stdin a snapshot takes at most: the broker's default `limits.batch_bytes_max`
/// (16 MiB) less room for the batch's framing, the key and the offset header. A snapshot is one
/// record of one batch, so it must fit one.
const STDIN_BYTES_MAX: usize = (16 << 20) - (64 << 10);

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Topic of the stream.
    topic: String,
    /// The stream's key (its bytes, as given).
    key: String,
    /// The last stream offset the snapshot covers (at or below the stream's last record).
    #[arg(long, value_name = "OFFSET", allow_negative_numbers = true)]
    at: i64,
}

/// All of `input`, up to `STDIN_BYTES_MAX` bytes.
fn read_bounded(input: impl Read) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    // One byte past the bound tells a stdin that is too large from one that fits exactly.
    input
        .take(STDIN_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .context("reading stdin")?;
    if bytes.len() > STDIN_BYTES_MAX {
        anyhow::bail!("stdin holds more than {STDIN_BYTES_MAX} bytes; a snapshot must fit one record batch");
    }
    Ok(bytes)
}

pub async fn run(client: &Client, args: SnapshotArgs) -> anyhow::Result<()> {
    let bytes = read_bounded(std::io::stdin().lock())?;
    let saved = client
        .save_snapshot(&args.topic, args.key.as_bytes(), args.at, bytes)
        .await
        .with_context(|| {
            format!(
                "cannot store a snapshot of stream {:?} of topic {}",
                args.key, args.topic
            )
        })?;
    println!("{}", line(&args, &saved));
    Ok(())
}

fn line(args: &SnapshotArgs, saved: &SavedSnapshot) -> String {
    format!(
        "snapshot of {}/{} at {} stored in {} partition {} offset {}",
        args.topic, args.key, args.at, saved.snapshot_topic, saved.partition, saved.offset
    )
}

#[cfg(test)]
mod tests {
    use tidelog_client::PartitionId;

    use super::*;

    #[test]
    fn the_line_is_exactly_the_contract() {
        let args = SnapshotArgs {
            topic: "orders".into(),
            key: "order-7".into(),
            at: 41,
        };
        let saved = SavedSnapshot {
            snapshot_topic: "orders.snapshots".into(),
            partition: PartitionId::new(2),
            offset: 5,
        };
        assert_eq!(
            line(&args, &saved),
            "snapshot of orders/order-7 at 41 stored in orders.snapshots partition 2 offset 5"
        );
    }

    #[test]
    fn stdin_is_taken_whole_and_bounded() {
        assert_eq!(read_bounded(&b"a\nb\n"[..]).unwrap(), b"a\nb\n");
        let exactly = vec![b'x'; STDIN_BYTES_MAX];
        assert_eq!(read_bounded(&exactly[..]).unwrap().len(), STDIN_BYTES_MAX);
        let huge = vec![b'x'; STDIN_BYTES_MAX + 1];
        assert!(read_bounded(&huge[..]).is_err());
    }
}
