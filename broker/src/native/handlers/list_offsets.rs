//! ListOffsets: earliest (-2), latest (-1), or the first offset at or after a timestamp.

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::{partition_log, partition_storage_error, Outcome};
use crate::net::ListenerContext;

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::ListOffsetsRequest) -> Outcome {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let found = context.core.registry.get(&topic.name);
            let partitions = topic
                .partitions
                .into_iter()
                .map(|asked| {
                    let log = match partition_log(found.as_ref(), &topic.name, asked.partition) {
                        Ok(log) => log,
                        Err((code, message)) => return failed(asked.partition, code, message),
                    };
                    let answer = match asked.timestamp {
                        LATEST => Ok(Some((log.high_watermark(), -1))),
                        EARLIEST => Ok(Some((log.log_start_offset(), -1))),
                        timestamp if timestamp < 0 => {
                            return failed(
                                asked.partition,
                                ErrorCode::InvalidRequest,
                                format!("timestamp {timestamp} is neither -1, -2 nor a time"),
                            )
                        }
                        timestamp => log.offset_for_timestamp(timestamp),
                    };
                    match answer {
                        Ok(found) => {
                            let (offset, timestamp) = found.unwrap_or((-1, -1));
                            pb::list_offsets_response::Partition {
                                partition: asked.partition,
                                error: ErrorCode::None as i32,
                                message: String::new(),
                                offset,
                                timestamp,
                            }
                        }
                        Err(error) => {
                            let (code, message) =
                                partition_storage_error(&topic.name, asked.partition, &error);
                            failed(asked.partition, code, message)
                        }
                    }
                })
                .collect();
            pb::list_offsets_response::Topic {
                name: topic.name,
                partitions,
            }
        })
        .collect();
    Outcome::Reply(pb::response::Body::ListOffsets(pb::ListOffsetsResponse {
        topics,
    }))
}

fn failed(partition: u32, code: ErrorCode, message: String) -> pb::list_offsets_response::Partition {
    pb::list_offsets_response::Partition {
        partition,
        error: code as i32,
        message,
        offset: -1,
        timestamp: -1,
    }
}
