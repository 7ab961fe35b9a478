//! Request handlers, one module per API. Each turns a decoded request body into a response
//! body; none touches a socket. `dispatch` checks the header and routes.

mod alter_topic;
mod consumer_group_heartbeat;
mod create_topics;
mod delete_groups;
mod delete_topics;
mod describe_groups;
mod fetch;
mod init_producer_id;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_fetch;
mod produce;
mod trim_topic;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tidelog_proto::pb::{self, request::Body, ErrorCode};
use tidelog_proto::PROTOCOL_VERSION;

pub(crate) use crate::core::error::without_paths;
use crate::core::CoreError;
use crate::error::{GroupError, TopicError};
use crate::native::error::wire;
use crate::net::budget::{ConnectionBudget, Reservation};
use crate::net::ListenerContext;
use crate::storage::{PartitionLog, StorageError};
use crate::topics::{PartitionSlot, Topic};

pub(crate) type Pending = Pin<Box<dyn Future<Output = Option<pb::response::Body>> + Send>>;
/// A deferred answer that holds fetched bytes: the reservation is released once it is written.
pub(crate) type PendingHeld =
    Pin<Box<dyn Future<Output = Option<(pb::response::Body, Option<Reservation>)>> + Send>>;

/// What a handler did with a request.
pub(crate) enum Outcome {
    /// Answered on the spot.
    Reply(pb::response::Body),
    /// The request as a whole failed.
    Failed(ErrorCode, String),
    /// No response is owed (produce with acks = none).
    Silent,
    /// The in-order part is done; the rest (a sync, a long poll) finishes in its own task.
    Deferred(Pending),
    /// Like `Deferred`, for a response holding fetched data from the memory budget.
    DeferredHeld(PendingHeld),
    /// Part of the in-order work must leave the async workers (a produce whose append rolls a
    /// segment runs on a blocking thread): the connection awaits this before it starts the
    /// next request, so order is kept, then handles the outcome it yields (never `Ordered`).
    Ordered(Ordered),
}

pub(crate) type Ordered = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Routes one decoded request. `peer` is the client's address, recorded for group members.
pub(crate) fn dispatch(
    context: &Arc<ListenerContext>,
    peer: std::net::SocketAddr,
    budget: &ConnectionBudget,
    header: &pb::RequestHeader,
    body: Option<Body>,
) -> Outcome {
    if header.version != PROTOCOL_VERSION {
        return Outcome::Failed(
            ErrorCode::UnsupportedVersion,
            format!(
                "version {} is not supported; this broker speaks {PROTOCOL_VERSION}",
                header.version
            ),
        );
    }
    let Some(body) = body else {
        return Outcome::Failed(ErrorCode::InvalidRequest, "request has no body".into());
    };
    if body.api_key() != header.api() {
        return Outcome::Failed(
            ErrorCode::InvalidRequest,
            format!("header names API {:?} but the body is another", header.api()),
        );
    }
    match body {
        Body::CreateTopics(request) => create_topics::handle(context, request),
        Body::DeleteTopics(request) => delete_topics::handle(context, request),
        Body::Metadata(request) => metadata::handle(context, request),
        Body::Produce(request) => produce::handle(context, request),
        Body::Fetch(request) => fetch::handle(context, budget, request),
        Body::ListOffsets(request) => list_offsets::handle(context, request),
        Body::ConsumerGroupHeartbeat(request) => {
            consumer_group_heartbeat::handle(context, &header.client_id, peer, request)
        }
        Body::OffsetCommit(request) => offset_commit::handle(context, request),
        Body::OffsetFetch(request) => offset_fetch::handle(context, request),
        Body::ListGroups(request) => list_groups::handle(context, request),
        Body::DescribeGroups(request) => describe_groups::handle(context, request),
        Body::DeleteGroups(request) => delete_groups::handle(context, request),
        Body::InitProducerId(request) => init_producer_id::handle(context, request),
        Body::AlterTopic(request) => alter_topic::handle(context, request),
        Body::TrimTopic(request) => trim_topic::handle(context, request),
    }
}

/// A storage failure of one partition: the message names the topic and partition.
pub(crate) fn partition_storage_error(
    topic: &str,
    partition: u32,
    error: &StorageError,
) -> (ErrorCode, String) {
    wire(CoreError::partition_storage(topic, partition, error))
}

/// One topic's line in a CreateTopics or DeleteTopics response.
fn topic_result<T>(name: String, result: &Result<T, TopicError>) -> pb::TopicResult {
    let (code, message) = match result {
        Ok(_) => (ErrorCode::None, String::new()),
        Err(error) => topic_error(error),
    };
    pb::TopicResult {
        name,
        error: code as i32,
        message,
    }
}

/// The wire code and message for a topic-level failure.
pub(crate) fn topic_error(error: &TopicError) -> (ErrorCode, String) {
    wire(CoreError::from(error))
}

/// The wire code and message for a consumer-group failure.
pub(crate) fn group_error(error: &GroupError) -> (ErrorCode, String) {
    wire(CoreError::from(error))
}

/// A topic's partition count, for the group coordinator; `None` when it does not exist.
fn partition_count(context: &ListenerContext, topic: &str) -> Option<u32> {
    // Bounded by partitions_per_topic_max, a u32.
    context
        .core
        .registry
        .get(topic)
        .map(|found| u32::try_from(found.partitions.len()).unwrap_or(u32::MAX))
}

/// Resolves a partition for produce, fetch and list-offsets: its log, or the error to answer
/// (unknown, or offline because it could not be opened).
fn partition_log(
    found: Option<&Arc<Topic>>,
    topic: &str,
    partition: u32,
) -> Result<Arc<PartitionLog>, (ErrorCode, String)> {
    match found.and_then(|found| found.slot(partition)) {
        Some(PartitionSlot::Online(log)) => Ok(log.clone()),
        Some(PartitionSlot::Offline(reason)) => Err(wire(CoreError::offline_partition(
            topic,
            partition as usize,
            reason,
        ))),
        None => Err(unknown_partition(topic, partition)),
    }
}

fn unknown_partition(topic: &str, partition: u32) -> (ErrorCode, String) {
    wire(CoreError::unknown_partition(topic, partition))
}

fn unknown_topic(topic: &str) -> (ErrorCode, String) {
    wire(CoreError::unknown_topic(topic))
}

/// Runs blocking admin work (file creation, sled writes) off the async workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(%error, "admin task panicked");
            None
        }
    }
}
