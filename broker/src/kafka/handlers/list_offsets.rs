//! ListOffsets (1-8): earliest (-2), latest (-1), the newest timestamp (-3, v7+) or the first
//! offset at or after a time, through the core's `list_offset` (the sentinels are its rule).
//! No record that new: offset -1 and timestamp -1, as Kafka answers. Leader epoch 0 (v4+); a
//! `current_leader_epoch` above 0 gets UNKNOWN_LEADER_EPOCH.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{Reply, Request};
use crate::core::offsets::OffsetQuery;
use crate::core::{CoreError, ErrorCode};
use crate::kafka::error::kafka_code;

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: ListOffsetsRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = request.context.core();
    let topics = asked
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|asked| {
                    let answer = ListOffsetsPartitionResponse::default()
                        .with_partition_index(asked.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    let found = if version >= 4 && asked.current_leader_epoch > 0 {
                        Err(CoreError::new(ErrorCode::UnknownLeaderEpoch, "leader epoch is 0"))
                    } else if version < 7 && asked.timestamp == OffsetQuery::MAX_TIMESTAMP {
                        Err(CoreError::new(
                            ErrorCode::UnsupportedVersion,
                            "max timestamp (-3) needs ListOffsets v7",
                        ))
                    } else {
                        let partition = u32::try_from(asked.partition_index).unwrap_or(u32::MAX);
                        core.list_offset(topic.name.as_str(), partition, asked.timestamp)
                    };
                    match found {
                        // The leader epoch field exists from v4 on.
                        Ok(Some((offset, timestamp))) => answer
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
                        Ok(None) => answer,
                        Err(error) => answer.with_error_code(kafka_code(error.code)),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    Reply::encode(&ListOffsetsResponse::default().with_topics(topics), version)
}
