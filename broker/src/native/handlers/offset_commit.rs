//! OffsetCommit: the native request translated into `Core::commit_offsets` (validated against
//! the group, durable before the answer).

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::Outcome;
use crate::core::CoreError;
use crate::groups::coordinator::CommitPartition;
use crate::native::error::wire;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::OffsetCommitRequest) -> Outcome {
    let core = context.core.clone();
    Outcome::Deferred(Box::pin(async move {
        let topics = request.topics;
        let partitions: Vec<CommitPartition> = topics
            .iter()
            .flat_map(|topic| {
                topic.partitions.iter().map(|partition| CommitPartition {
                    topic: topic.name.clone(),
                    partition: partition.partition,
                    offset: partition.offset,
                    metadata: partition.metadata.clone(),
                })
            })
            .collect();
        let outcome = core
            .commit_offsets(
                request.group_id,
                request.member_id,
                request.member_epoch,
                partitions,
            )
            .await;
        // One outcome per partition, in request order; a whole-request failure applies to all.
        let mut outcomes: Box<dyn Iterator<Item = (ErrorCode, String)>> = match outcome {
            Ok(checks) => Box::new(checks.into_iter().map(|check| match check {
                Ok(()) => (ErrorCode::None, String::new()),
                Err(error) => wire(error),
            })),
            Err(error) => Box::new(std::iter::repeat(wire(error))),
        };
        let topics = topics
            .into_iter()
            .map(|topic| pb::offset_commit_response::Topic {
                name: topic.name,
                partitions: topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        let (code, message) = outcomes.next().unwrap_or_else(|| {
                            wire(CoreError::new(crate::core::ErrorCode::UnknownServerError, ""))
                        });
                        pb::offset_commit_response::Partition {
                            partition: partition.partition,
                            error: code as i32,
                            message,
                        }
                    })
                    .collect(),
            })
            .collect();
        Some(pb::response::Body::OffsetCommit(pb::OffsetCommitResponse {
            topics,
        }))
    }))
}
