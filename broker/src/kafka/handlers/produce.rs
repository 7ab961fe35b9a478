//! Produce (3-11): Kafka's request translated into the core's produce, which validates and
//! appends in request order on the connection's task (the same path as native produces, so
//! the same batch rules, producer-state checks and durability wait), and the answer back.
//!
//! * acks 0 sends no response (the in-order rule still holds for the requests around it), 1
//!   and -1 wait for the leader's durability (-1 = 1 until replication exists); any other value
//!   gets INVALID_REQUIRED_ACKS on every partition.
//! * A `transactional_id` gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED on every partition, and
//!   nothing is appended: transactions do not exist yet.
//! * With `auto_create_topics` on, unknown topics are created first (off the async workers,
//!   still before the next request starts).
//! * The append copies the batches once more; that copy is charged to the memory budget while
//!   it runs, as on the native listener. Without memory within `limits.memory_wait_ms_max`,
//!   every partition gets the retriable REQUEST_TIMED_OUT.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::{Reply, Request};
use crate::core::produce::{
    Acks, ProduceInput, ProduceOutput, ProducePartition, ProduceStarted, ProduceTopic, Produced,
};
use crate::core::{blocking, Core, CoreError, ErrorCode};
use crate::kafka::error::kafka_code;
use crate::net::budget::{ConnectionBudget, Reservation};
use crate::storage::AppendConditions;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: ProduceRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let acks = match asked.acks {
        0 => Acks::None,
        1 => Acks::Leader,
        -1 => Acks::All,
        other => {
            let error = CoreError::new(
                ErrorCode::InvalidRequiredAcks,
                format!("acks {other} is none of 0, 1 and -1"),
            );
            return Reply::encode(&refused(&asked, &error), version);
        }
    };
    if asked.transactional_id.is_some() {
        let error = CoreError::new(
            ErrorCode::TransactionalIdAuthorizationFailed,
            "transactions are not supported by this broker; produce without transactional.id",
        );
        return if acks == Acks::None {
            Reply::Nothing
        } else {
            Reply::encode(&refused(&asked, &error), version)
        };
    }
    let core = request.context.net.core.clone();
    let copy_bytes: usize = asked
        .topic_data
        .iter()
        .flat_map(|topic| &topic.partition_data)
        .map(|partition| partition.records.as_ref().map_or(0, Bytes::len))
        .sum();
    let missing_topics = core.topics_to_auto_create(asked.topic_data.iter().map(|topic| topic.name.as_str()));
    // The fast path: memory for the append copy at once, and no topic to create.
    let mut copy = request.budget.empty();
    if missing_topics.is_empty() && copy.try_grow(copy_bytes) {
        return answer(&core, asked, acks, version, copy);
    }
    let budget = request.budget.clone();
    Reply::Ordered(Box::pin(async move {
        if !missing_topics.is_empty() {
            let creating = core.clone();
            // Failures are logged there, and the produce reports the topic as unknown.
            let _ = blocking(move || creating.auto_create_topics(&missing_topics)).await;
        }
        let copy = match reserve_copy(&core, &budget, copy_bytes).await {
            Ok(copy) => copy,
            Err(error) => {
                return if acks == Acks::None {
                    Reply::Nothing
                } else {
                    Reply::encode(&refused(&asked, &error), version)
                };
            }
        };
        answer(&core, asked, acks, version, copy)
    }))
}

/// Appends (in order, here or through the roll the core hands back) and answers: nothing for
/// acks 0, else the durability wait in its own task.
fn answer(core: &Arc<Core>, asked: ProduceRequest, acks: Acks, version: i16, copy: Reservation) -> Reply {
    let indexes: Vec<Vec<i32>> = asked
        .topic_data
        .iter()
        .map(|topic| {
            topic
                .partition_data
                .iter()
                .map(|partition| partition.index)
                .collect()
        })
        .collect();
    let input = ProduceInput {
        acks,
        timeout: Duration::from_millis(u64::try_from(asked.timeout_ms).unwrap_or(0)),
        topics: asked
            .topic_data
            .into_iter()
            .map(|topic| ProduceTopic {
                name: topic.name.0.to_string(),
                partitions: topic
                    .partition_data
                    .into_iter()
                    .map(|partition| ProducePartition {
                        // A negative index names no partition: u32::MAX is never one either
                        // (partitions are bounded by `limits.partitions_max`).
                        partition: u32::try_from(partition.index).unwrap_or(u32::MAX),
                        records: partition.records.unwrap_or_default(),
                        // Kafka clients carry expectations in record headers only.
                        conditions: AppendConditions::default(),
                    })
                    .collect(),
            })
            .collect(),
    };
    let finish = move |appended: crate::core::produce::Appended| {
        // The append copy is gone once the appends are done.
        drop(copy);
        match appended.durable() {
            None => Reply::Nothing,
            Some(durable) => Reply::Later(Box::pin(async move {
                let output = durable.await;
                super::encode_response(&response(output, &indexes, version), version)
            })),
        }
    };
    match core.produce(input) {
        ProduceStarted::Appended(appended) => finish(appended),
        ProduceStarted::Rolling(rolling) => Reply::Ordered(Box::pin(async move { finish(rolling.await) })),
    }
}

/// The append copy's memory, waiting at most `limits.memory_wait_ms_max` for it.
async fn reserve_copy(
    core: &Core,
    budget: &ConnectionBudget,
    bytes: usize,
) -> Result<Reservation, CoreError> {
    let wait = Duration::from_millis(core.config.limits.memory_wait_ms_max);
    budget
        .reserve_between(bytes, bytes, Some(Instant::now() + wait))
        .await
        .map_err(|error| {
            tracing::warn!(%error, bytes, "produce got no memory from the broker budget");
            CoreError::new(ErrorCode::RequestTimedOut, error.to_string())
        })
}

/// The response, partitions in request order with their request indexes.
fn response(output: ProduceOutput, indexes: &[Vec<i32>], version: i16) -> ProduceResponse {
    let responses = output
        .topics
        .into_iter()
        .zip(indexes)
        .map(|(topic, indexes)| {
            let partitions = topic
                .partitions
                .into_iter()
                .zip(indexes)
                .map(|(partition, index)| partition_response(*index, partition.result, version))
                .collect();
            TopicProduceResponse::default()
                .with_name(kafka_protocol::messages::TopicName(StrBytes::from_string(
                    topic.name,
                )))
                .with_partition_responses(partitions)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}

fn partition_response(
    index: i32,
    result: Result<Produced, CoreError>,
    version: i16,
) -> PartitionProduceResponse {
    let answer = PartitionProduceResponse::default().with_index(index);
    match result {
        Ok(produced) => answer
            .with_base_offset(produced.base_offset)
            .with_log_append_time_ms(produced.log_append_time)
            .with_log_start_offset(produced.log_start_offset),
        Err(error) if version >= RECORD_ERRORS_VERSION_MIN => {
            let record_errors = record_errors(&error);
            failed(answer, &error).with_record_errors(record_errors)
        }
        Err(error) => failed(answer, &error),
    }
}

/// Produce v8 added per-record errors (KIP-467); older versions get the code and nothing else.
const RECORD_ERRORS_VERSION_MIN: i16 = 8;

/// A failed expectation as Kafka's per-record errors: the index of the first record of the
/// key (0 for the end offset and check-only keys) and "expected 41, actual 57". A refusal of
/// one record (a keyless record on a compacted topic) names that record with the message.
fn record_errors(error: &CoreError) -> Vec<BatchIndexAndErrorMessage> {
    if error.failures.is_empty() {
        return error
            .record_index
            .and_then(|index| i32::try_from(index).ok())
            .map(|index| {
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(index)
                    .with_batch_index_error_message(Some(StrBytes::from_string(error.message.clone())))
            })
            .into_iter()
            .collect();
    }
    error
        .failures
        .iter()
        .map(|failure| {
            let index = failure
                .record_index
                .and_then(|index| i32::try_from(index).ok())
                .unwrap_or(0);
            BatchIndexAndErrorMessage::default()
                .with_batch_index(index)
                .with_batch_index_error_message(Some(StrBytes::from_string(format!(
                    "expected {}, actual {}",
                    failure.expected, failure.actual
                ))))
        })
        .collect()
}

fn failed(answer: PartitionProduceResponse, error: &CoreError) -> PartitionProduceResponse {
    answer
        .with_error_code(kafka_code(error.code))
        .with_error_message(Some(StrBytes::from_string(error.message.clone())))
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
}

/// Every partition of `asked` refused with `error`, nothing appended.
fn refused(asked: &ProduceRequest, error: &CoreError) -> ProduceResponse {
    let responses = asked
        .topic_data
        .iter()
        .map(|topic| {
            let partitions = topic
                .partition_data
                .iter()
                .map(|partition| {
                    failed(
                        PartitionProduceResponse::default().with_index(partition.index),
                        error,
                    )
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_partition_responses(partitions)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}
