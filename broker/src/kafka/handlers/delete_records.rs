//! DeleteRecords (0-2): advance each partition's log start (`Core::trim`) (offset -1:
//! the high watermark); the answer is the new low watermark (log start) per partition.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::topic_admin::{answer_blocking, core_error, refused};
use super::{Reply, Request};
use crate::core::error::ErrorCode;
use crate::core::Core;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    answer_blocking(request, delete_records)
}

fn delete_records(core: &Core, asked: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let topics = asked
        .topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.as_str().to_owned();
            let partitions = topic
                .partitions
                .into_iter()
                .map(|partition| {
                    let mut result = DeleteRecordsPartitionResult::default();
                    result.partition_index = partition.partition_index;
                    let outcome = match u32::try_from(partition.partition_index) {
                        Err(_) => Err(refused(ErrorCode::UnknownTopicOrPartition, "negative partition")),
                        Ok(index) => core.trim(&name, index, partition.offset).map_err(core_error),
                    };
                    match outcome {
                        Ok(log_start) => result.low_watermark = log_start,
                        Err((code, message)) => {
                            tracing::debug!(topic = %name, partition = partition.partition_index, code, ?message, "DeleteRecords refused");
                            result.low_watermark = -1;
                            result.error_code = code;
                        }
                    }
                    result
                })
                .collect();
            let mut result = DeleteRecordsTopicResult::default();
            result.name = topic.name;
            result.partitions = partitions;
            result
        })
        .collect();
    let mut response = DeleteRecordsResponse::default();
    response.topics = topics;
    response
}
