//! Request handlers, one module per API. Each turns a decoded request body into a response
//! body; none touches a socket. `dispatch` checks the header and routes.

mod create_topics;
mod delete_topics;
mod fetch;
mod list_offsets;
mod metadata;
mod produce;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tidelog_proto::pb::{self, request::Body, ErrorCode};
use tidelog_proto::PROTOCOL_VERSION;

use crate::broker::BrokerContext;
use crate::error::TopicError;
use crate::storage::StorageError;

pub(crate) type Pending = Pin<Box<dyn Future<Output = Option<pb::response::Body>> + Send>>;

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
}

pub(crate) fn dispatch(
    context: &Arc<BrokerContext>,
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
        Body::Fetch(request) => fetch::handle(context, request),
        Body::ListOffsets(request) => list_offsets::handle(context, request),
        Body::ConsumerGroupHeartbeat(_)
        | Body::OffsetCommit(_)
        | Body::OffsetFetch(_)
        | Body::ListGroups(_)
        | Body::DescribeGroups(_)
        | Body::DeleteGroups(_)
        | Body::InitProducerId(_) => Outcome::Failed(
            ErrorCode::UnsupportedVersion,
            format!("API {:?} is not served by this broker yet", header.api()),
        ),
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
