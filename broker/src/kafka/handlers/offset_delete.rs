//! OffsetDelete 0: removes committed offsets of a group, except for topics its members
//! subscribe to (GROUP_SUBSCRIBED_TO_TOPIC), through `Core::delete_offsets`.

use std::sync::Arc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::group_common::{core_of, later, partition_index, text, PartitionCodes};
use super::{Core, Reply, Request};

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: OffsetDeleteRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = core_of(&request);
    later(version, answer(core, asked))
}

pub(crate) async fn answer(core: Arc<Core>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let partitions: Vec<(String, u32)> = request
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().filter_map(|partition| {
                Some((text(&topic.name.0), partition_index(partition.partition_index)?))
            })
        })
        .collect();
    let group_id = text(&request.group_id.0);
    let mut codes = PartitionCodes::new(core.delete_offsets(group_id, partitions).await);
    let mut response = OffsetDeleteResponse::default();
    if let Some(code) = codes.whole() {
        response.error_code = code;
        return response;
    }
    response.topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let mut out = OffsetDeleteResponseTopic::default();
            out.partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let mut result = OffsetDeleteResponsePartition::default();
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
