//! ConsumerGroupHeartbeat: join, stay in, or leave a group (KIP-848). The coordinator decides
//! in memory; a change is made durable before the member hears of it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use tidelog_proto::pb::{self, ErrorCode};

use super::{blocking, group_error, partition_count, topic_error, without_paths, Outcome};
use crate::groups::assignor::Assignment;
use crate::groups::coordinator::{Heartbeat, HeartbeatReply};
use crate::net::ListenerContext;
use crate::topics::validate_topic_name;

pub(super) fn handle(
    context: &Arc<ListenerContext>,
    client_id: &str,
    peer: std::net::SocketAddr,
    request: pb::ConsumerGroupHeartbeatRequest,
) -> Outcome {
    // Subscriptions are stored per member and persisted: every name must be a topic name.
    let name_bytes_max = context.core.config.limits.topic_name_bytes_max;
    if let Some(error) = request
        .subscribed_topics
        .iter()
        .find_map(|topic| validate_topic_name(topic, name_bytes_max).err())
    {
        let (code, message) = topic_error(&error);
        return Outcome::Reply(failed(code, message));
    }
    let heartbeat = Heartbeat {
        group_id: request.group_id,
        member_id: request.member_id,
        member_epoch: request.member_epoch,
        instance_id: request.instance_id,
        subscription: request.has_subscription.then_some(request.subscribed_topics),
        session_timeout_ms: request.session_timeout_ms,
        owned: request
            .has_owned_partitions
            .then(|| to_assignment(request.owned_partitions)),
        client_id: client_id.to_owned(),
        client_host: peer.ip().to_string(),
    };
    let group_id = heartbeat.group_id.clone();
    let counts = |topic: &str| partition_count(context, topic);
    let replied = context
        .core
        .groups
        .with(|coordinator| coordinator.heartbeat(Instant::now(), heartbeat, &counts));
    let reply = match replied {
        Ok(reply) => reply,
        Err(error) => {
            let (code, message) = group_error(&error);
            return Outcome::Reply(failed(code, message));
        }
    };
    if !reply.changed {
        return Outcome::Reply(response(reply));
    }
    let context = context.clone();
    Outcome::Deferred(Box::pin(async move {
        let persisted = blocking(move || context.core.groups.persist(&group_id)).await?;
        Some(match persisted {
            Ok(()) => response(reply),
            Err(error) => {
                tracing::error!(%error, "could not persist a consumer group");
                failed(
                    ErrorCode::CoordinatorNotAvailable,
                    format!(
                        "group state could not be made durable: {}",
                        without_paths(&error.to_string())
                    ),
                )
            }
        })
    }))
}

pub(super) fn to_assignment(topics: Vec<pb::TopicPartitions>) -> Assignment {
    let mut assignment = Assignment::new();
    for topic in topics {
        let partitions: BTreeSet<u32> = topic.partitions.into_iter().collect();
        if !partitions.is_empty() {
            assignment.entry(topic.topic).or_default().extend(partitions);
        }
    }
    assignment
}

pub(super) fn from_assignment(assignment: &Assignment) -> Vec<pb::TopicPartitions> {
    assignment
        .iter()
        .filter(|(_, partitions)| !partitions.is_empty())
        .map(|(topic, partitions)| pb::TopicPartitions {
            topic: topic.clone(),
            partitions: partitions.iter().copied().collect(),
        })
        .collect()
}

fn response(reply: HeartbeatReply) -> pb::response::Body {
    pb::response::Body::ConsumerGroupHeartbeat(pb::ConsumerGroupHeartbeatResponse {
        error: ErrorCode::None as i32,
        message: String::new(),
        member_id: reply.member_id,
        member_epoch: reply.member_epoch,
        heartbeat_interval_ms: reply.heartbeat_interval_ms,
        has_assignment: reply.assignment.is_some(),
        assignment: reply.assignment.as_ref().map(from_assignment).unwrap_or_default(),
    })
}

fn failed(code: ErrorCode, message: String) -> pb::response::Body {
    pb::response::Body::ConsumerGroupHeartbeat(pb::ConsumerGroupHeartbeatResponse {
        error: code as i32,
        message,
        ..pb::ConsumerGroupHeartbeatResponse::default()
    })
}
