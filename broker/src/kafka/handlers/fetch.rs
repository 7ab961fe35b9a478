//! Fetch (4-12): Kafka's request translated into the core's fetch (the long poll and the
//! first-whole-batch rule live there), and the stored batches written back byte for byte:
//! `fetch_wire` frames the fields around each record set, which stays the `Bytes` the log read
//! returned (no decode, no re-encode, no copy into an encode buffer). A fetch from inside a
//! batch returns that whole batch; clients skip the records before their offset.
//!
//! * Fetch sessions (KIP-227) are answered sessionless: session id 0 in every response, so
//!   clients keep sending full fetches; an incremental fetch (a session id other than 0) gets
//!   FETCH_SESSION_ID_NOT_FOUND, after which clients start over without one.
//! * `isolation_level` read_committed is served as read_uncommitted (no transactions exist);
//!   it gets an empty aborted-transaction list, read_uncommitted a null one, as in Kafka.
//! * A `current_leader_epoch` above 0 gets UNKNOWN_LEADER_EPOCH for that partition.

use std::time::Duration;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{fetch_wire, Reply, Request, Response};
use crate::core::fetch::{FetchInput, FetchOutput, FetchPartition, FetchTopic, Isolation};
use crate::core::ErrorCode;
use crate::kafka::error::kafka_code;

/// `isolation_level` read_committed.
const READ_COMMITTED: i8 = 1;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: FetchRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    if version >= 7 && asked.session_id != 0 {
        let response = FetchResponse::default()
            .with_error_code(ErrorCode::FetchSessionIdNotFound.code())
            .with_session_id(0);
        return encode(&response, version, None);
    }
    let read_committed = version >= 4 && asked.isolation_level == READ_COMMITTED;
    // Partitions the client believes have a newer leader epoch than ours (0): answered with
    // UNKNOWN_LEADER_EPOCH instead of being read.
    let fenced: Vec<Vec<bool>> = asked
        .topics
        .iter()
        .map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| version >= 9 && partition.current_leader_epoch > 0)
                .collect()
        })
        .collect();
    let input = FetchInput {
        max_wait: Duration::from_millis(u64::try_from(asked.max_wait_ms).unwrap_or(0)),
        min_bytes: usize::try_from(asked.min_bytes).unwrap_or(0),
        max_bytes: usize::try_from(asked.max_bytes).unwrap_or(0),
        isolation: if read_committed {
            Isolation::ReadCommitted
        } else {
            Isolation::ReadUncommitted
        },
        topics: asked
            .topics
            .iter()
            .zip(&fenced)
            .map(|(topic, fenced)| FetchTopic {
                name: topic.topic.0.to_string(),
                partitions: topic
                    .partitions
                    .iter()
                    .zip(fenced)
                    .map(|(partition, fenced)| FetchPartition {
                        // A negative index names no partition, nor does u32::MAX.
                        partition: u32::try_from(partition.partition).unwrap_or(u32::MAX),
                        offset: partition.fetch_offset,
                        // A fenced partition reads nothing.
                        max_bytes: if *fenced {
                            0
                        } else {
                            usize::try_from(partition.partition_max_bytes).unwrap_or(0)
                        },
                    })
                    .collect(),
            })
            .collect(),
    };
    let indexes: Vec<Vec<i32>> = asked
        .topics
        .iter()
        .map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| partition.partition)
                .collect()
        })
        .collect();
    let fetching = request.context.core().fetch(request.budget, input);
    Reply::Later(Box::pin(async move {
        let output = fetching.await;
        let (response, reservation) = response(output, &indexes, &fenced, read_committed);
        match encode(&response, version, reservation) {
            Reply::Now(response) => Some(response),
            _ => None,
        }
    }))
}

fn encode(response: &FetchResponse, version: i16, held: Option<crate::net::budget::Reservation>) -> Reply {
    match fetch_wire::encode(response, version) {
        Ok(chunks) => Reply::Now(Response { chunks, held }),
        Err(error) => {
            tracing::error!(%error, version, "Fetch response could not be encoded");
            Reply::Close(error.to_string())
        }
    }
}

fn response(
    output: FetchOutput,
    indexes: &[Vec<i32>],
    fenced: &[Vec<bool>],
    read_committed: bool,
) -> (FetchResponse, Option<crate::net::budget::Reservation>) {
    let responses = output
        .topics
        .into_iter()
        .zip(indexes.iter().zip(fenced))
        .map(|(topic, (indexes, fenced))| {
            let partitions = topic
                .partitions
                .into_iter()
                .zip(indexes.iter().zip(fenced))
                .map(|(partition, (index, fenced))| {
                    let error = if *fenced {
                        ErrorCode::UnknownLeaderEpoch.code()
                    } else {
                        partition.error.as_ref().map_or(0, |error| kafka_code(error.code))
                    };
                    let records = if *fenced {
                        bytes::Bytes::new()
                    } else {
                        partition.records
                    };
                    PartitionData::default()
                        .with_partition_index(*index)
                        .with_error_code(error)
                        .with_high_watermark(partition.high_watermark)
                        .with_last_stable_offset(partition.last_stable_offset)
                        .with_log_start_offset(partition.log_start_offset)
                        .with_aborted_transactions(read_committed.then(Vec::new))
                        .with_records(Some(records))
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(topic.name)))
                .with_partitions(partitions)
        })
        .collect();
    (
        FetchResponse::default()
            .with_session_id(0)
            .with_responses(responses),
        output.reservation,
    )
}
