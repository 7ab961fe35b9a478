//! `tidelog stream info TOPIC KEY`: one line of key=value pairs,
//! `partition=P first_offset=F last_offset=L records=N`, offsets -1 for no stream; then, for a
//! truncated stream, `truncated_before=T`, and for an erased one (re-opened or not)
//! `erasure=erased|reopened status=pending|complete erase_before=E requested_ms=R
//! deadline_ms=D completed_ms=C records_remaining=N segments_remaining=S` (the cleaner's
//! progress: records of the key below E still in segment files, and the segments holding them).

use anyhow::Context;
use clap::Args;
use tidelog_client::{Client, StreamInfo, StreamMarks};

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
    for line in lines(&info) {
        println!("{line}");
    }
    Ok(())
}

fn lines(info: &StreamInfo) -> Vec<String> {
    let mut lines = vec![format!(
        "partition={} first_offset={} last_offset={} records={}",
        info.partition, info.first_offset, info.last_offset, info.records
    )];
    if let Some(marks) = &info.marks {
        lines.extend(mark_lines(marks));
    }
    lines
}

fn mark_lines(marks: &StreamMarks) -> Vec<String> {
    let mut lines = Vec::new();
    if marks.truncated_before >= 0 {
        lines.push(format!("truncated_before={}", marks.truncated_before));
    }
    if marks.erase_before >= 0 {
        lines.push(format!(
            "erasure={} status={} erase_before={} requested_ms={} deadline_ms={} completed_ms={} \
             records_remaining={} segments_remaining={}",
            if marks.erased { "erased" } else { "reopened" },
            if marks.erasure_pending() {
                "pending"
            } else {
                "complete"
            },
            marks.erase_before,
            marks.erase_requested_ms,
            marks.erase_deadline_ms,
            marks.erase_completed_ms,
            marks.erase_records_remaining,
            marks.erase_segments_remaining,
        ));
    }
    lines
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
            marks: None,
        };
        assert_eq!(
            lines(&info),
            ["partition=2 first_offset=5 last_offset=41 records=7"]
        );
        let none = StreamInfo {
            partition: PartitionId::new(0),
            first_offset: -1,
            last_offset: -1,
            records: 0,
            marks: None,
        };
        assert_eq!(
            lines(&none),
            ["partition=0 first_offset=-1 last_offset=-1 records=0"]
        );
    }

    #[test]
    fn truncation_and_erasure_get_a_line_each() {
        let marks = StreamMarks {
            truncated_before: 3,
            erased: true,
            erase_before: 9,
            erase_requested_ms: 100,
            erase_deadline_ms: 200,
            erase_completed_ms: 0,
            erase_records_remaining: 4,
            erase_segments_remaining: 2,
        };
        let info = StreamInfo {
            partition: PartitionId::new(1),
            first_offset: -1,
            last_offset: -1,
            records: 0,
            marks: Some(marks),
        };
        assert_eq!(
            lines(&info),
            [
                "partition=1 first_offset=-1 last_offset=-1 records=0",
                "truncated_before=3",
                "erasure=erased status=pending erase_before=9 requested_ms=100 deadline_ms=200 \
                 completed_ms=0 records_remaining=4 segments_remaining=2",
            ]
        );
        let reopened = StreamMarks {
            truncated_before: -1,
            erased: false,
            erase_completed_ms: 150,
            erase_records_remaining: 0,
            erase_segments_remaining: 0,
            ..marks
        };
        assert_eq!(
            mark_lines(&reopened),
            [
                "erasure=reopened status=complete erase_before=9 requested_ms=100 deadline_ms=200 \
              completed_ms=150 records_remaining=0 segments_remaining=0"
            ]
        );
    }
}
