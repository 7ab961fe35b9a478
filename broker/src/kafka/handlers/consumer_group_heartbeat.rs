//! ConsumerGroupHeartbeat 0-1 (KIP-848): the same coordinator as the native protocol's
//! heartbeat, translated: Kafka names topics by id in assignments, the native protocol by
//! name. The core persists a changed group before this answers.

use std::collections::BTreeSet;
use std::sync::Arc;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::group_common::{
    client_of, core_of, later, partition_index, str_bytes, text, wire_partition, ClientInfo,
};
use super::{Core, Reply, Request};
use crate::core::error::{CoreError, ErrorCode};
use crate::core::Decided;
use crate::groups::assignor;
use crate::groups::coordinator::{Heartbeat, HeartbeatReply};

/// Server-side assignors a member may ask for: the coordinator has one, a balanced sticky
/// assignor, which serves Kafka's default ("uniform") and "range" requests alike.
const ASSIGNORS: &[&str] = &["uniform", "range"];

pub(crate) fn handle(request: Request<'_>) -> Reply {
    let version = request.version();
    let asked: ConsumerGroupHeartbeatRequest = match request.decode() {
        Ok(asked) => asked,
        Err(reply) => return reply,
    };
    let core = core_of(&request);
    // Decided here, on the connection's task, so a member's heartbeats are decided in the
    // order it sent them; the wait for durability runs after.
    let decided = decide(&core, client_of(&request), asked);
    later(version, async move {
        match decided {
            Ok(decided) => match decided.answer().await {
                Ok(reply) => response(&core, reply),
                Err(error) => failed(error),
            },
            Err(error) => failed(error),
        }
    })
}

/// Translates the request (topic ids to names) and has the core decide it.
fn decide(
    core: &Arc<Core>,
    client: ClientInfo,
    request: ConsumerGroupHeartbeatRequest,
) -> Result<Decided<HeartbeatReply>, CoreError> {
    // v1 (KIP-1082: the member chooses its own id, which the coordinator already accepts) adds
    // regular-expression subscriptions, which the coordinator does not evaluate.
    if request
        .subscribed_topic_regex
        .as_ref()
        .is_some_and(|regex| !regex.is_empty())
    {
        return Err(CoreError::new(
            ErrorCode::InvalidRequest,
            "regular-expression subscriptions are not supported; subscribe by topic name".to_owned(),
        ));
    }
    if let Some(assignor) = &request.server_assignor {
        if !ASSIGNORS.contains(&assignor.as_str()) {
            return Err(CoreError::new(
                ErrorCode::UnsupportedAssignor,
                format!("assignor {:?} is not one of {ASSIGNORS:?}", assignor.as_str()),
            ));
        }
    }
    let owned = request.topic_partitions.as_ref().map(|topics| {
        let mut owned = assignor::Assignment::new();
        for topic in topics {
            // A topic id that names no topic (deleted meanwhile) owns nothing here.
            if let Some(found) = core.registry.get_by_id(topic.topic_id) {
                let partitions: BTreeSet<u32> = topic
                    .partitions
                    .iter()
                    .copied()
                    .filter_map(partition_index)
                    .collect();
                owned
                    .entry(found.record.name.clone())
                    .or_default()
                    .extend(partitions);
            }
        }
        owned
    });
    let heartbeat = Heartbeat {
        group_id: text(&request.group_id.0),
        member_id: text(&request.member_id),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(text),
        subscription: request
            .subscribed_topic_names
            .as_ref()
            .map(|topics| topics.iter().map(|topic| text(&topic.0)).collect()),
        // Kafka's members do not choose a session timeout: the broker's default applies.
        session_timeout_ms: 0,
        owned,
        client_id: client.client_id,
        client_host: client.host,
    };
    Ok(core.consumer_group_heartbeat(heartbeat))
}

fn response(core: &Core, reply: HeartbeatReply) -> ConsumerGroupHeartbeatResponse {
    let mut response = ConsumerGroupHeartbeatResponse::default();
    response.member_id = Some(str_bytes(reply.member_id));
    response.member_epoch = reply.member_epoch;
    response.heartbeat_interval_ms = i32::try_from(reply.heartbeat_interval_ms).unwrap_or(i32::MAX);
    response.assignment = reply.assignment.map(|assigned| {
        let mut assignment = Assignment::default();
        assignment.topic_partitions = assigned
            .iter()
            .filter_map(|(topic, partitions)| {
                let mut out = TopicPartitions::default();
                out.topic_id = core.registry.get(topic)?.id();
                out.partitions = partitions.iter().copied().map(wire_partition).collect();
                Some(out)
            })
            .collect();
        assignment
    });
    response
}

fn failed(error: CoreError) -> ConsumerGroupHeartbeatResponse {
    let mut response = ConsumerGroupHeartbeatResponse::default();
    response.error_code = error.code.code();
    response.error_message = Some(str_bytes(error.message));
    response
}
