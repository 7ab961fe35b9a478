//! ListOffsets: earliest (-2), latest (-1), or the first offset at or after a timestamp; the
//! sentinels and the lookup are the core's (`Core::list_offset`).

use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::Outcome;
use crate::native::error::error_code;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::ListOffsetsRequest) -> Outcome {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .into_iter()
                .map(|asked| {
                    match context
                        .core
                        .list_offset(&topic.name, asked.partition, asked.timestamp)
                    {
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
                        Err(error) => pb::list_offsets_response::Partition {
                            partition: asked.partition,
                            error: error_code(error.code) as i32,
                            message: error.message,
                            offset: -1,
                            timestamp: -1,
                        },
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
