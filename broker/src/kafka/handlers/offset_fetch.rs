//! OffsetFetch 1-8: committed offsets of a group (v8: of several), for the partitions asked
//! or (topics null, v2+) every committed one. Nothing committed reads as offset -1.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::group_common::{core_of, partition_index, str_bytes, text, wire_partition};
use super::{Core, Reply, Request};
use crate::core::error::ErrorCode;
use crate::groups::assignor::Assignment;
use crate::groups::group::Committed;

/// One partition's answer: offset, metadata, error code.
type Fetched = (i64, String, i16);

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: OffsetFetchRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = core_of(&request);
    Reply::encode(&answer(&core, version, &asked), version)
}

/// The topics of an answer, in either shape: v8's (per group) and v1-7's have the same fields
/// under other type names.
macro_rules! topics {
    ($topic:ident, $partition:ident, $fetched:expr) => {
        $fetched
            .into_iter()
            .map(|(name, partitions)| {
                let mut topic = $topic::default();
                topic.name = TopicName(str_bytes(name));
                topic.partitions = partitions
                    .into_iter()
                    .map(|(index, (offset, metadata, code))| {
                        let mut partition = $partition::default();
                        partition.partition_index = index;
                        partition.committed_offset = offset;
                        partition.committed_leader_epoch = -1;
                        partition.metadata = Some(str_bytes(metadata));
                        partition.error_code = code;
                        partition
                    })
                    .collect();
                topic
            })
            .collect()
    };
}

/// What a request asks for: topics with their partition indexes; `None` (v2+): every
/// committed partition.
type Asked = Option<Vec<(String, Vec<i32>)>>;

pub(crate) fn answer(core: &Core, version: i16, request: &OffsetFetchRequest) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        response.groups = request
            .groups
            .iter()
            .map(|group| {
                let asked: Asked = group.topics.as_ref().map(|topics| {
                    topics
                        .iter()
                        .map(|topic| (text(&topic.name.0), topic.partition_indexes.clone()))
                        .collect()
                });
                let mut out = OffsetFetchResponseGroup::default();
                out.group_id = group.group_id.clone();
                match fetch(core, group.group_id.0.as_str(), asked) {
                    Ok(fetched) => {
                        out.topics =
                            topics!(OffsetFetchResponseTopics, OffsetFetchResponsePartitions, fetched)
                    }
                    Err(code) => out.error_code = code,
                }
                out
            })
            .collect();
        return response;
    }
    let asked: Asked = request.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|topic| (text(&topic.name.0), topic.partition_indexes.clone()))
            .collect()
    });
    let fetched = match fetch(core, request.group_id.0.as_str(), asked.clone()) {
        Ok(fetched) => fetched,
        Err(code) if version >= 2 => {
            response.error_code = code;
            return response;
        }
        // v1 has no group-level error: every partition asked carries it.
        Err(code) => asked
            .unwrap_or_default()
            .into_iter()
            .map(|(name, indexes)| {
                let partitions = indexes
                    .into_iter()
                    .map(|index| (index, (-1, String::new(), code)))
                    .collect();
                (name, partitions)
            })
            .collect(),
    };
    response.topics = topics!(OffsetFetchResponseTopic, OffsetFetchResponsePartition, fetched);
    response
}

/// The committed offsets asked for, topic by topic in request order (every committed one,
/// by topic and partition, when `asked` is `None`), or the group-level error code.
#[allow(clippy::type_complexity)]
fn fetch(core: &Core, group_id: &str, asked: Asked) -> Result<Vec<(String, Vec<(i32, Fetched)>)>, i16> {
    let mut wanted = Assignment::new();
    for (topic, indexes) in asked.iter().flatten() {
        let entry = wanted.entry(topic.clone()).or_default();
        entry.extend(indexes.iter().copied().filter_map(partition_index));
    }
    let committed: BTreeMap<(String, u32), Option<Committed>> = match &asked {
        // Nothing asked for: nothing to look up (an empty set means "all" to the coordinator).
        Some(_) if wanted.values().all(|partitions| partitions.is_empty()) => BTreeMap::new(),
        _ => core
            .fetch_offsets(group_id, &wanted)
            .map_err(|error| error.code.code())?,
    };
    let answer = |topic: &str, partition: u32| -> Fetched {
        match committed.get(&(topic.to_owned(), partition)).cloned().flatten() {
            Some(found) => (found.offset, found.metadata, 0),
            None => (-1, String::new(), 0),
        }
    };
    Ok(match asked {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, indexes)| {
                let partitions = indexes
                    .into_iter()
                    .map(|index| match partition_index(index) {
                        Some(partition) => (index, answer(&topic, partition)),
                        None => (
                            index,
                            (-1, String::new(), ErrorCode::UnknownTopicOrPartition.code()),
                        ),
                    })
                    .collect();
                (topic, partitions)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<(i32, Fetched)>> = BTreeMap::new();
            for ((topic, partition), found) in committed {
                if let Some(found) = found {
                    by_topic
                        .entry(topic)
                        .or_default()
                        .push((wire_partition(partition), (found.offset, found.metadata, 0)));
                }
            }
            by_topic.into_iter().collect()
        }
    })
}
