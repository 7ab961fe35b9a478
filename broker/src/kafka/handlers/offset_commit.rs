//! OffsetCommit 2-8: a classic member (checked by generation, Kafka's rules in
//! `groups::classic`), a KIP-848 member (the generation field is its epoch) or an admin
//! (generation -1, no member) commits offsets, made durable before the answer
//! (`Core::commit_offsets_classic`).

use std::sync::Arc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::group_common::{core_of, later, partition_index, text, PartitionCodes};
use super::{Core, Reply, Request};
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
    let committed = core
        .commit_offsets_classic(
            group_id,
            member,
            request.generation_id_or_member_epoch,
            partitions,
        )
        .await;
    // A whole-request failure applies to every partition.
    let mut codes = PartitionCodes::new(committed);
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
                    result.error_code = codes.next(partition.partition_index);
                    result
                })
                .collect();
            out.name = topic.name;
            out
        })
        .collect();
    response
}
