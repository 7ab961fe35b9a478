//! Produce: the native request translated into `Core::produce` (which validates, appends in
//! order and waits for durability) and the outcome back into the native response.

use std::sync::Arc;
use std::time::Duration;

use tidelog_proto::pb::{self, produce_response, ErrorCode};

use super::Outcome;
use crate::core::produce::{
    Acks, Appended, ProduceInput, ProduceOutput, ProducePartition, ProduceStarted, ProduceTopic,
};
use crate::native::error::error_code;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::ProduceRequest) -> Outcome {
    let acks = match request.acks() {
        pb::Acks::None => Acks::None,
        pb::Acks::Leader => Acks::Leader,
    };
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
                    .map(|partition| ProducePartition {
                        partition: partition.partition,
                        records: partition.records,
                    })
                    .collect(),
            })
            .collect(),
    };
    match context.core.produce(input) {
        ProduceStarted::Appended(appended) => finish(appended),
        // The connection awaits the roll before its next request, then handles `finish`.
        ProduceStarted::Rolling(rolling) => Outcome::Ordered(Box::pin(async move { finish(rolling.await) })),
    }
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
                    },
                    Err(error) => produce_response::Partition {
                        partition: partition.partition,
                        error: error_code(error.code) as i32,
                        message: error.message,
                        base_offset: -1,
                        last_offset: -1,
                        log_start_offset: -1,
                    },
                })
                .collect(),
        })
        .collect();
    pb::ProduceResponse { topics }
}
