//! Produce: the native request translated into `Core::produce` (which validates, appends in
//! order and waits for durability) and the outcome back into the native response.

use std::sync::Arc;
use std::time::Duration;

use tidelog_proto::pb::key_expectation::Expected as Kind;
use tidelog_proto::pb::{self, produce_request, produce_response, ErrorCode};

use super::Outcome;
use crate::core::produce::{
    Acks, Appended, ProduceInput, ProduceOutput, ProducePartition, ProduceStarted, ProduceTopic,
};
use crate::native::error::error_code;
use crate::net::ListenerContext;
use crate::storage::{printable_key, AppendConditions, ConditionFailure, Expected, KeyCondition};

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::ProduceRequest) -> Outcome {
    let acks = match request.acks() {
        pb::Acks::None => Acks::None,
        pb::Acks::Leader => Acks::Leader,
    };
    let mut refusal = None;
    let input = ProduceInput {
        acks,
        timeout: Duration::from_millis(u64::from(request.timeout_ms)),
        topics: request
            .topics
            .into_iter()
            .map(|topic| ProduceTopic {
                name: topic.name,
                partitions: topic
                    .partitions
                    .into_iter()
                    .filter_map(|partition| match conditions(&partition) {
                        Ok(conditions) => Some(ProducePartition {
                            partition: partition.partition,
                            records: partition.records,
                            conditions,
                        }),
                        Err(message) => {
                            refusal.get_or_insert(message);
                            None
                        }
                    })
                    .collect(),
            })
            .collect(),
    };
    if let Some(message) = refusal {
        // A request with a malformed expectation is refused whole, before anything is appended.
        if acks == Acks::None {
            return Outcome::Silent;
        }
        return Outcome::Failed(ErrorCode::InvalidRequest, message);
    }
    match context.core.produce(input) {
        ProduceStarted::Appended(appended) => finish(appended),
        // The connection awaits the roll before its next request, then handles `finish`.
        ProduceStarted::Rolling(rolling) => Outcome::Ordered(Box::pin(async move { finish(rolling.await) })),
    }
}

/// The native fields' expectations in domain terms; an expectation without a kind is a
/// malformed request.
fn conditions(partition: &produce_request::Partition) -> Result<AppendConditions, String> {
    let mut keys = Vec::with_capacity(partition.expectations.len());
    for expectation in &partition.expectations {
        let expected = match expectation.expected {
            Some(Kind::Any(_)) => Expected::Any,
            Some(Kind::NoStream(_)) => Expected::NoStream,
            Some(Kind::Exists(_)) => Expected::Exists,
            Some(Kind::Exact(version)) => Expected::Exact(version),
            None => {
                return Err(format!(
                    "partition {}: the expectation on key {} names no kind",
                    partition.partition,
                    printable_key(&expectation.key)
                ))
            }
        };
        keys.push(KeyCondition {
            key: expectation.key.clone(),
            expected,
        });
    }
    Ok(AppendConditions {
        expected_end_offset: partition.expected_end_offset,
        keys,
    })
}

/// The part after every append: no answer for acks = none, else the durability wait.
fn finish(appended: Appended) -> Outcome {
    match appended.durable() {
        None => Outcome::Silent,
        Some(durable) => Outcome::Deferred(Box::pin(async move {
            Some(pb::response::Body::Produce(response(durable.await)))
        })),
    }
}

fn response(output: ProduceOutput) -> pb::ProduceResponse {
    let topics = output
        .topics
        .into_iter()
        .map(|topic| produce_response::Topic {
            name: topic.name,
            partitions: topic
                .partitions
                .into_iter()
                .map(|partition| match partition.result {
                    Ok(produced) => produce_response::Partition {
                        partition: partition.partition,
                        error: ErrorCode::None as i32,
                        message: String::new(),
                        base_offset: produced.base_offset,
                        last_offset: produced.last_offset,
                        log_start_offset: produced.log_start_offset,
                        failures: Vec::new(),
                        duplicate: produced.duplicate,
                    },
                    Err(error) => produce_response::Partition {
                        partition: partition.partition,
                        error: error_code(error.code) as i32,
                        message: error.message,
                        base_offset: -1,
                        last_offset: -1,
                        log_start_offset: -1,
                        failures: error.failures.into_iter().map(failure).collect(),
                        duplicate: false,
                    },
                })
                .collect(),
        })
        .collect();
    pb::ProduceResponse { topics }
}

fn failure(failure: ConditionFailure) -> pb::ExpectationFailure {
    pb::ExpectationFailure {
        end_offset: failure.key.is_none(),
        key: failure.key.unwrap_or_default(),
        expected: failure.expected.to_string(),
        actual: failure.actual,
        record_index: failure
            .record_index
            .and_then(|index| i32::try_from(index).ok())
            .unwrap_or(-1),
    }
}
