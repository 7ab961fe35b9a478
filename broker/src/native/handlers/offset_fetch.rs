//! OffsetFetch: a group's committed offsets (`Core::fetch_offsets`); -1 for a partition (or
//! group) with none.

use std::collections::BTreeMap;
use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::consumer_group_heartbeat::to_assignment;
use super::Outcome;
use crate::native::error::wire;
use crate::net::ListenerContext;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::OffsetFetchRequest) -> Outcome {
    let asked = to_assignment(request.topics);
    let fetched = match context.core.fetch_offsets(&request.group_id, &asked) {
        Ok(fetched) => fetched,
        Err(error) => {
            let (code, message) = wire(error);
            return Outcome::Reply(pb::response::Body::OffsetFetch(pb::OffsetFetchResponse {
                error: code as i32,
                message,
                topics: Vec::new(),
            }));
        }
    };
    let mut topics: BTreeMap<String, Vec<pb::offset_fetch_response::Partition>> = BTreeMap::new();
    for ((topic, partition), committed) in fetched {
        let (offset, metadata) = committed.map_or((-1, String::new()), |c| (c.offset, c.metadata));
        topics
            .entry(topic)
            .or_default()
            .push(pb::offset_fetch_response::Partition {
                partition,
                error: ErrorCode::None as i32,
                offset,
                metadata,
            });
    }
    Outcome::Reply(pb::response::Body::OffsetFetch(pb::OffsetFetchResponse {
        error: ErrorCode::None as i32,
        message: String::new(),
        topics: topics
            .into_iter()
            .map(|(name, partitions)| pb::offset_fetch_response::Topic { name, partitions })
            .collect(),
    }))
}
