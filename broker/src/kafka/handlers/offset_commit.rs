//! OffsetCommit 2-8: a classic member (checked by generation, Kafka's rules in
//! `groups::classic`), a KIP-848 member (the generation field is its epoch) or an admin
//! (generation -1, no member) commits offsets, made durable before the answer.

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::group_common::{core_of, error_code, later, partition_count, partition_index, text};
use super::{Core, Reply, Request};
use crate::clock::now_ms;
use crate::core::error::ErrorCode;
use crate::error::GroupError;
use crate::groups::classic::MemberRef;
use crate::groups::coordinator::CommitPartition;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: OffsetCommitRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = core_of(&request);
    later(version, answer(core, asked))
}

pub(crate) async fn answer(core: Arc<Core>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    // Partitions with a negative index never reach the coordinator: they name no partition.
    let partitions: Vec<CommitPartition> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().filter_map(|partition| {
                Some(CommitPartition {
                    topic: text(&topic.name.0),
                    partition: partition_index(partition.partition_index)?,
                    offset: partition.committed_offset,
                    metadata: partition
                        .committed_metadata
                        .as_ref()
                        .map(text)
                        .unwrap_or_default(),
                })
            })
        })
        .collect();
    let group_id = text(&request.group_id.0);
    let member = MemberRef {
        member_id: text(&request.member_id),
        instance_id: request.group_instance_id.as_ref().map(text),
    };
    let generation = request.generation_id_or_member_epoch;
    let writer = core.clone();
    let committed = tokio::task::spawn_blocking(move || {
        let counts = |topic: &str| partition_count(&writer, topic);
        writer
            .groups
            .commit_classic(&group_id, &member, generation, &partitions, &counts, now_ms())
    })
    .await
    .unwrap_or_else(|error| {
        Err(GroupError::InvalidRequest(format!(
            "the commit did not finish: {error}"
        )))
    });
    // One outcome per valid partition, in request order; a whole-request failure applies to
    // every partition.
    let (mut outcomes, whole) = match committed {
        Ok(checks) => (checks.into_iter(), None),
        Err(error) => (Vec::new().into_iter(), Some(error_code(&error))),
    };
    let mut response = OffsetCommitResponse::default();
    response.topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let mut out = OffsetCommitResponseTopic::default();
            out.partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let mut result = OffsetCommitResponsePartition::default();
                    result.partition_index = partition.partition_index;
                    result.error_code = if partition_index(partition.partition_index).is_none() {
                        ErrorCode::UnknownTopicOrPartition.code()
                    } else if let Some(code) = whole {
                        code
                    } else {
                        match outcomes.next() {
                            Some(Ok(())) => 0,
                            Some(Err(error)) => error_code(&error),
                            None => ErrorCode::UnknownServerError.code(),
                        }
                    };
                    result
                })
                .collect();
            out.name = topic.name;
            out
        })
        .collect();
    response
}
