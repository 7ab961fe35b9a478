//! What the group handlers share: the mapping of group errors to Kafka codes (the core's, in
//! one place), the persist step classic calls finish with, the partition counts the
//! coordinator asks for, Kafka's names for group states, and string conversions. Nothing
//! here decides a group rule: those live in `groups`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::protocol::{Encodable, StrBytes};

use super::find_coordinator::Node;
use super::{Core, Reply, Request};
use crate::error::GroupError;
use crate::groups::classic::Pending;
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

pub(super) type PersistFuture = Pin<Box<dyn Future<Output = Result<(), GroupError>> + Send>>;

/// The blocking write of a group's state, run on the blocking pool, for
/// [`Pending::finish`](crate::groups::classic::Pending::finish).
fn persist(core: &Arc<Core>) -> impl FnOnce(String) -> PersistFuture {
    let core = core.clone();
    move |group_id: String| {
        Box::pin(async move {
            let written = tokio::task::spawn_blocking(move || core.groups.persist(&group_id)).await;
            match written {
                Ok(result) => result.map_err(GroupError::from),
                Err(error) => Err(GroupError::InvalidRequest(format!(
                    "the group write did not finish: {error}"
                ))),
            }
        }) as PersistFuture
    }
}

/// Finishes a classic call (persist, answer the waiters, wait for this member's answer),
/// unless the broker stops first: a join may wait up to its rebalance timeout, which must not
/// hold up a shutdown.
pub(super) async fn finish<T>(core: &Arc<Core>, pending: Pending<T>) -> Result<T, GroupError> {
    let mut shutdown = core.shutdown.clone();
    tokio::select! {
        finished = pending.finish(persist(core)) => finished,
        _ = shutdown.wait_for(|stopping| *stopping) => {
            Err(GroupError::Unavailable("the broker is shutting down".into()))
        }
    }
}

/// A topic's partition count, for the coordinator; `None` when it does not exist.
pub(super) fn partition_count(core: &Core, topic: &str) -> Option<u32> {
    // Bounded by partitions_per_topic_max, a u32.
    core.registry
        .get(topic)
        .map(|found| u32::try_from(found.partitions.len()).unwrap_or(u32::MAX))
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
