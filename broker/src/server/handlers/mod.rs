//! Request handlers, one module per API. Each turns a decoded request body into a response
//! body; none touches a socket. `dispatch` checks the header and routes.

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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tidelog_proto::pb::{self, request::Body, ErrorCode};
use tidelog_proto::PROTOCOL_VERSION;

use super::budget::{FetchBudget, FetchReservation};
use crate::broker::BrokerContext;
use crate::error::{GroupError, TopicError};
use crate::storage::StorageError;

pub(crate) type Pending = Pin<Box<dyn Future<Output = Option<pb::response::Body>> + Send>>;
/// A deferred answer that holds fetched bytes: the reservation is released once it is written.
pub(crate) type PendingHeld =
    Pin<Box<dyn Future<Output = Option<(pb::response::Body, Option<FetchReservation>)>> + Send>>;

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
    /// Like `Deferred`, for a response holding fetched data from the connection's budget.
    DeferredHeld(PendingHeld),
    /// Part of the in-order work must leave the async workers (a produce whose append rolls a
    /// segment runs on a blocking thread): the connection awaits this before it starts the
    /// next request, so order is kept, then handles the outcome it yields (never `Ordered`).
    Ordered(Ordered),
}

pub(crate) type Ordered = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Routes one decoded request. `peer` is the client's address, recorded for group members.
pub(crate) fn dispatch(
    context: &Arc<BrokerContext>,
    peer: std::net::SocketAddr,
    fetch_budget: &FetchBudget,
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
        Body::Fetch(request) => fetch::handle(context, fetch_budget, request),
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
    }
}

/// The wire code and message for a storage failure.
pub(crate) fn storage_error(error: &StorageError) -> (ErrorCode, String) {
    let code = match error {
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
        _ => ErrorCode::KafkaStorageError,
    };
    (code, error.to_string())
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
    let code = match error {
        TopicError::AlreadyExists(_) => ErrorCode::TopicAlreadyExists,
        TopicError::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
        TopicError::InvalidName { .. } => ErrorCode::InvalidTopic,
        TopicError::InvalidPartitions { .. } => ErrorCode::InvalidPartitions,
        TopicError::InvalidConfig(_) | TopicError::TooManyTopics(_) => ErrorCode::InvalidConfig,
        TopicError::Storage(error) => return storage_error(error),
        TopicError::Metadata(_) | TopicError::Io { .. } => ErrorCode::KafkaStorageError,
    };
    (code, error.to_string())
}

/// The wire code and message for a consumer-group failure.
pub(crate) fn group_error(error: &GroupError) -> (ErrorCode, String) {
    let code = match error {
        GroupError::InvalidGroupId { .. } => ErrorCode::InvalidGroupId,
        GroupError::GroupNotFound(_) => ErrorCode::GroupIdNotFound,
        GroupError::NonEmptyGroup(_) => ErrorCode::NonEmptyGroup,
        GroupError::UnknownMember { .. } => ErrorCode::UnknownMemberId,
        GroupError::FencedMemberEpoch { .. } => ErrorCode::FencedMemberEpoch,
        GroupError::StaleMemberEpoch { .. } => ErrorCode::StaleMemberEpoch,
        GroupError::UnreleasedInstanceId(_) => ErrorCode::UnreleasedInstanceId,
        GroupError::InvalidSessionTimeout { .. } => ErrorCode::InvalidSessionTimeout,
        GroupError::GroupFull { .. } => ErrorCode::GroupMaxSizeReached,
        GroupError::TooManyGroups(_) | GroupError::Metadata(_) => ErrorCode::CoordinatorNotAvailable,
        GroupError::UnknownPartition { .. } => ErrorCode::UnknownTopicOrPartition,
        GroupError::OffsetMetadataTooLarge { .. } => ErrorCode::OffsetMetadataTooLarge,
        GroupError::InvalidRequest(_) => ErrorCode::InvalidRequest,
    };
    (code, error.to_string())
}

/// A topic's partition count, for the group coordinator; `None` when it does not exist.
fn partition_count(context: &BrokerContext, topic: &str) -> Option<u32> {
    // Bounded by partitions_per_topic_max, a u32.
    context
        .registry
        .get(topic)
        .map(|found| u32::try_from(found.partitions.len()).unwrap_or(u32::MAX))
}

fn unknown_partition(topic: &str, partition: u32) -> (ErrorCode, String) {
    (
        ErrorCode::UnknownTopicOrPartition,
        format!("topic {topic:?} has no partition {partition}"),
    )
}

fn unknown_topic(topic: &str) -> (ErrorCode, String) {
    (
        ErrorCode::UnknownTopicOrPartition,
        format!("topic {topic:?} does not exist"),
    )
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
