//! Fetch: the native request translated into `Core::fetch` (the long poll, the first-batch
//! rule, reading within the connection's memory budget) and the result back. The records stay
//! the stored bytes; `native::response` writes them with `writev`, and the reservation the
//! core returns is held until then.

use std::sync::Arc;
use std::time::Duration;

use tidelog_proto::pb::{self, fetch_response, ErrorCode};

use super::Outcome;
use crate::core::fetch::{FetchInput, FetchPartition, FetchTopic, FetchedPartition, Isolation};
use crate::native::error::error_code;
use crate::net::budget::ConnectionBudget;
use crate::net::ListenerContext;

pub(super) fn handle(
    context: &Arc<ListenerContext>,
    budget: &ConnectionBudget,
    request: pb::FetchRequest,
) -> Outcome {
    let input = FetchInput {
        max_wait: Duration::from_millis(u64::from(request.max_wait_ms)),
        min_bytes: request.min_bytes as usize,
        max_bytes: request.max_bytes as usize,
        isolation: Isolation::ReadUncommitted,
        topics: request
            .topics
            .into_iter()
            .map(|topic| FetchTopic {
                name: topic.name,
                partitions: topic
                    .partitions
                    .into_iter()
                    .map(|partition| FetchPartition {
                        partition: partition.partition,
                        offset: partition.fetch_offset,
                        max_bytes: partition.max_bytes as usize,
                    })
                    .collect(),
            })
            .collect(),
    };
    let fetching = context.core.fetch(budget, input);
    Outcome::DeferredHeld(Box::pin(async move {
        let output = fetching.await;
        let topics = output
            .topics
            .into_iter()
            .map(|topic| fetch_response::Topic {
                name: topic.name,
                partitions: topic.partitions.into_iter().map(partition).collect(),
            })
            .collect();
        Some((
            pb::response::Body::Fetch(pb::FetchResponse { topics }),
            output.reservation,
        ))
    }))
}

fn partition(fetched: FetchedPartition) -> fetch_response::Partition {
    let (error, message) = match fetched.error {
        None => (ErrorCode::None, String::new()),
        Some(error) => (error_code(error.code), error.message),
    };
    fetch_response::Partition {
        partition: fetched.partition,
        error: error as i32,
        message,
        high_watermark: fetched.high_watermark,
        log_start_offset: fetched.log_start_offset,
        records: fetched.records,
    }
}
