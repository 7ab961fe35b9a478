//! OffsetDelete 0: removes committed offsets of a group, except for topics its members
//! subscribe to (GROUP_SUBSCRIBED_TO_TOPIC).

use std::sync::Arc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::group_common::{core_of, error_code, later, partition_index, text};
use super::{Core, Reply, Request};
use crate::core::error::ErrorCode;
use crate::error::GroupError;

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
    let writer = core.clone();
    let deleted = tokio::task::spawn_blocking(move || writer.groups.delete_offsets(&group_id, &partitions))
        .await
        .unwrap_or_else(|error| {
            Err(GroupError::InvalidRequest(format!(
                "the delete did not finish: {error}"
            )))
        });
    let mut response = OffsetDeleteResponse::default();
    let mut outcomes = match deleted {
        Ok(checks) => checks.into_iter(),
        Err(error) => {
            response.error_code = error_code(&error);
            return response;
        }
    };
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
                    result.error_code = match partition_index(partition.partition_index) {
                        None => ErrorCode::UnknownTopicOrPartition.code(),
                        Some(_) => match outcomes.next() {
                            Some(Ok(())) => 0,
                            Some(Err(error)) => error_code(&error),
                            None => ErrorCode::UnknownServerError.code(),
                        },
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
