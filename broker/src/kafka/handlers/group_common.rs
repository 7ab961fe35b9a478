//! What the group handlers share: the mapping of group errors to Kafka codes (the core's, in
//! one place), the per-partition codes of offsets requests, Kafka's names for group states,
//! and string conversions. Nothing here decides a group rule: those live in `groups` and
//! `core` (`core::classic_groups` persists a classic group before its members hear).

use std::future::Future;
use std::sync::Arc;

use kafka_protocol::protocol::{Encodable, StrBytes};

use super::find_coordinator::Node;
use super::{Core, Reply, Request};
use crate::core::error::ErrorCode;
use crate::error::GroupError;
use crate::groups::group::{Group, GroupProtocol, GroupState};

/// Who sent a request, as a group member records it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientInfo {
    pub client_id: String,
    pub host: String,
}

/// The core a request is served by.
pub(super) fn core_of(request: &Request<'_>) -> Arc<Core> {
    request.context.net.core.clone()
}

/// Who sent `request`: its client id and address.
pub(super) fn client_of(request: &Request<'_>) -> ClientInfo {
    ClientInfo {
        client_id: request.header.client_id.as_ref().map(text).unwrap_or_default(),
        host: request.peer.ip().to_string(),
    }
}

/// This broker as the Kafka listener advertises it.
pub(super) fn node_of(request: &Request<'_>) -> Node {
    Node {
        node_id: request.context.broker_id().0,
        host: request.context.advertised_host.clone(),
        port: i32::from(request.context.advertised_port),
    }
}

/// A reply that waits: `answer` runs in its own task (the connection reads on), and its
/// response still leaves in request order.
pub(super) fn later<M, F>(version: i16, answer: F) -> Reply
where
    M: Encodable + Send + 'static,
    F: Future<Output = M> + Send + 'static,
{
    Reply::Later(Box::pin(async move {
        match Reply::encode(&answer.await, version) {
            Reply::Now(response) => Some(response),
            // Encoding failed, which `encode` logged as the bug it is.
            _ => None,
        }
    }))
}

pub(super) fn error_code(error: &GroupError) -> i16 {
    crate::core::error::CoreError::from(error).code.code()
}

pub(super) fn text(value: &StrBytes) -> String {
    value.as_str().to_owned()
}

pub(super) fn str_bytes(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// The error code of each partition of an offsets request, in request order: a partition
/// with a negative index never reached the core (it names no partition) and gets
/// UNKNOWN_TOPIC_OR_PARTITION; the others take the core's outcomes in turn, or the whole
/// request's failure.
pub(super) struct PartitionCodes {
    outcomes: std::vec::IntoIter<Result<(), GroupError>>,
    whole: Option<i16>,
}

impl PartitionCodes {
    pub(super) fn new(outcome: Result<Vec<Result<(), GroupError>>, GroupError>) -> Self {
        match outcome {
            Ok(outcomes) => PartitionCodes {
                outcomes: outcomes.into_iter(),
                whole: None,
            },
            Err(error) => PartitionCodes {
                outcomes: Vec::new().into_iter(),
                whole: Some(error_code(&error)),
            },
        }
    }

    /// The whole request's failure, if it failed.
    pub(super) fn whole(&self) -> Option<i16> {
        self.whole
    }

    /// The code of the next partition of the request, whose wire index is `index`.
    pub(super) fn next(&mut self, index: i32) -> i16 {
        if partition_index(index).is_none() {
            return ErrorCode::UnknownTopicOrPartition.code();
        }
        if let Some(code) = self.whole {
            return code;
        }
        match self.outcomes.next() {
            Some(Ok(())) => 0,
            Some(Err(error)) => error_code(&error),
            // The core answers once per partition it was given; fewer is a bug of ours.
            None => ErrorCode::UnknownServerError.code(),
        }
    }
}

/// Kafka's name for a group's state (ListGroups, DescribeGroups).
pub(super) fn kafka_state(group: &Group) -> &'static str {
    match group.state() {
        GroupState::Empty => "Empty",
        GroupState::Reconciling => "Reconciling",
        GroupState::Stable => "Stable",
        GroupState::PreparingRebalance => "PreparingRebalance",
        GroupState::CompletingRebalance => "CompletingRebalance",
    }
}

/// The protocol type Kafka lists a group with: what classic members sent (normally
/// "consumer"), "consumer" for KIP-848 groups, and empty for a group with only offsets.
pub(super) fn protocol_type(group: &Group) -> String {
    match group.protocol() {
        Some(GroupProtocol::Consumer) => "consumer".into(),
        Some(GroupProtocol::Classic) => group
            .classic_in_use()
            .and_then(|classic| classic.protocol_type.clone())
            .unwrap_or_default(),
        None => String::new(),
    }
}

/// A partition index from the wire; a negative one names no partition.
pub(super) fn partition_index(index: i32) -> Option<u32> {
    u32::try_from(index).ok()
}

/// A partition number back to the wire (bounded by partitions_per_topic_max, an i32 in
/// Kafka's terms).
pub(super) fn wire_partition(partition: u32) -> i32 {
    i32::try_from(partition).unwrap_or(i32::MAX)
}
