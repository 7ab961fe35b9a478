//! OffsetCommit: validate against the group (member, epoch, ownership), make the offsets
//! durable (sled batch + flush), then acknowledge.

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::{blocking, group_error, partition_count, Outcome};
use crate::clock::now_ms;
use crate::groups::coordinator::CommitPartition;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::OffsetCommitRequest) -> Outcome {
    let context = context.clone();
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
        let group_id = request.group_id;
        let member_id = request.member_id;
        let member_epoch = request.member_epoch;
        let outcome = blocking(move || {
            let counts = |topic: &str| partition_count(&context, topic);
            context.core.groups.commit(
                &group_id,
                &member_id,
                member_epoch,
                &partitions,
                &counts,
                now_ms(),
            )
        })
        .await?;
        // One outcome per partition, in request order; a whole-request failure applies to all.
        let mut outcomes: Box<dyn Iterator<Item = (ErrorCode, String)>> = match outcome {
            Ok(checks) => Box::new(checks.into_iter().map(|check| match check {
                Ok(()) => (ErrorCode::None, String::new()),
                Err(error) => group_error(&error),
            })),
            Err(error) => Box::new(std::iter::repeat(group_error(&error))),
        };
        let topics = topics
            .into_iter()
            .map(|topic| pb::offset_commit_response::Topic {
                name: topic.name,
                partitions: topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        let (code, message) = outcomes
                            .next()
                            .unwrap_or((ErrorCode::UnknownServerError, String::new()));
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
