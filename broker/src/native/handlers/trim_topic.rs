//! TrimTopic: advance partitions' log starts (Kafka's DeleteRecords), reporting per partition.

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::Outcome;
use crate::core::blocking;
use crate::native::error::wire;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::TrimTopicRequest) -> Outcome {
    let context = context.clone();
    Outcome::Deferred(Box::pin(async move {
        let partitions = blocking(move || {
            request
                .partitions
                .into_iter()
                .map(|partition| {
                    match context
                        .core
                        .trim(&request.topic, partition.partition, partition.before)
                    {
                        Ok(log_start_offset) => pb::trim_topic_response::Partition {
                            partition: partition.partition,
                            error: ErrorCode::None as i32,
                            message: String::new(),
                            log_start_offset,
                        },
                        Err(error) => {
                            let (code, message) = wire(error);
                            pb::trim_topic_response::Partition {
                                partition: partition.partition,
                                error: code as i32,
                                message,
                                log_start_offset: -1,
                            }
                        }
                    }
                })
                .collect()
        })
        .await
        // Err: the blocking task failed (logged); the client's request times out.
        .ok()?;
        Some(pb::response::Body::TrimTopic(pb::TrimTopicResponse {
            partitions,
        }))
    }))
}
