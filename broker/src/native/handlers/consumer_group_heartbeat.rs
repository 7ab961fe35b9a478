//! ConsumerGroupHeartbeat: join, stay in, or leave a group (KIP-848). The coordinator decides
//! in memory; `Core::consumer_group_heartbeat` makes a change durable before the member hears
//! of it. This module translates.

use std::collections::BTreeSet;
use std::sync::Arc;

use tidelog_proto::pb::{self, ErrorCode};

use super::Outcome;
use crate::core::{CoreError, Decided};
use crate::groups::assignor::Assignment;
use crate::groups::coordinator::{Heartbeat, HeartbeatReply};
use crate::native::error::wire;
use crate::net::ListenerContext;

pub(super) fn handle(
    context: &Arc<ListenerContext>,
    client_id: &str,
    peer: std::net::SocketAddr,
    request: pb::ConsumerGroupHeartbeatRequest,
) -> Outcome {
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
    let answer = |answer: Result<HeartbeatReply, CoreError>| match answer {
        Ok(reply) => response(reply),
        Err(error) => {
            let (code, message) = wire(error);
            failed(code, message)
        }
    };
    match context.core.consumer_group_heartbeat(heartbeat) {
        Decided::Ready(ready) => Outcome::Reply(answer(ready)),
        Decided::Pending(pending) => Outcome::Deferred(Box::pin(async move { Some(answer(pending.await)) })),
    }
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
