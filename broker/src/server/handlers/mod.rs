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

use super::budget::{ConnectionBudget, Reservation};
use crate::broker::BrokerContext;
use crate::error::{GroupError, TopicError};
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
    context: &Arc<BrokerContext>,
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
    }
}

/// The wire code and message for a storage failure. Failures of the broker's own (disk,
/// corruption, a failed log) are logged here at WARN with the whole cause, paths included; the
/// client's message keeps file names at most, never a path of the data directory.
pub(crate) fn storage_error(error: &StorageError) -> (ErrorCode, String) {
    let code = match error {
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
        // Fenced at recovery: the consumer may skip the range deliberately.
        StorageError::CorruptRange { .. } => ErrorCode::CorruptMessage,
        _ => ErrorCode::KafkaStorageError,
    };
    match error {
        // Recovery logged the damage at ERROR once; its message names only offsets.
        StorageError::OffsetOutOfRange { .. }
        | StorageError::BatchTooLarge { .. }
        | StorageError::CorruptRange { .. } => (code, error.to_string()),
        _ => {
            let full = error_chain(error);
            tracing::warn!(error = %full, "storage operation failed; the client was told without paths");
            (code, without_paths(&full))
        }
    }
}

/// `storage_error` for one partition: the message names the topic and partition.
pub(crate) fn partition_storage_error(
    topic: &str,
    partition: u32,
    error: &StorageError,
) -> (ErrorCode, String) {
    let span = tracing::warn_span!("partition", %topic, partition);
    let (code, message) = span.in_scope(|| storage_error(error));
    (code, format!("topic {topic:?} partition {partition}: {message}"))
}

/// An error and its causes, one after the other.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // `#[error(transparent)]` wrappers repeat their cause's text.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `text` with every path cut to its last component, so a client learns a file name (a
/// segment's base offset) at most, never where the data directory is or how it is laid out.
/// Path-agnostic on purpose: it also covers messages of error variants added later.
pub(crate) fn without_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for token in text.split_inclusive(char::is_whitespace) {
        let Some(first_slash) = token.find('/') else {
            out.push_str(token);
            continue;
        };
        let body_end = token
            .trim_end_matches(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | ';' | ')' | '"' | '\''))
            .len()
            .max(first_slash + 1);
        let start = token[..first_slash]
            .rfind(['(', '"', '\''])
            .map_or(0, |quote| quote + 1);
        let path = &token[start..body_end];
        // A path is absolute, explicitly relative, or has several components; "I/O" is none.
        let looks_like_path =
            path.starts_with('/') || path.starts_with('.') || path.matches('/').count() >= 2;
        if !looks_like_path {
            out.push_str(token);
            continue;
        }
        let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        out.push_str(&token[..start]);
        out.push_str(if last.is_empty() { "<path>" } else { last });
        out.push_str(&token[body_end..]);
    }
    out
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
        TopicError::InvalidPartitions { .. }
        | TopicError::TooManyPartitions { .. }
        | TopicError::DescriptorBudget { .. } => ErrorCode::InvalidPartitions,
        TopicError::InvalidConfig(_) | TopicError::TooManyTopics(_) => ErrorCode::InvalidConfig,
        TopicError::Storage(error) => return storage_error(error),
        TopicError::Metadata(_) | TopicError::Io { .. } | TopicError::DataOnDisk { .. } => {
            let full = error_chain(error);
            tracing::warn!(error = %full, "topic operation failed");
            return (ErrorCode::KafkaStorageError, without_paths(&full));
        }
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
        GroupError::TooManyGroups(_) => ErrorCode::CoordinatorNotAvailable,
        GroupError::Metadata(_) => {
            let full = error_chain(error);
            tracing::warn!(error = %full, "group operation failed");
            return (ErrorCode::CoordinatorNotAvailable, without_paths(&full));
        }
        GroupError::UnknownPartition { .. } => ErrorCode::UnknownTopicOrPartition,
        GroupError::OffsetMetadataTooLarge { .. } => ErrorCode::OffsetMetadataTooLarge,
        GroupError::InvalidRequest(_) => ErrorCode::InvalidRequest,
        GroupError::MemberIdRequired { .. } => ErrorCode::MemberIdRequired,
        GroupError::RebalanceInProgress(_) => ErrorCode::RebalanceInProgress,
        GroupError::IllegalGeneration { .. } => ErrorCode::IllegalGeneration,
        GroupError::FencedInstanceId(_) => ErrorCode::FencedInstanceId,
        GroupError::InconsistentGroupProtocol(_) => ErrorCode::InconsistentGroupProtocol,
        // Not a native request's outcome (OffsetDelete is Kafka's only).
        GroupError::SubscribedToTopic { .. } => ErrorCode::InvalidRequest,
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

/// Resolves a partition for produce, fetch and list-offsets: its log, or the error to answer
/// (unknown, or offline because it could not be opened).
fn partition_log(
    found: Option<&Arc<Topic>>,
    topic: &str,
    partition: u32,
) -> Result<Arc<PartitionLog>, (ErrorCode, String)> {
    match found.and_then(|found| found.slot(partition)) {
        Some(PartitionSlot::Online(log)) => Ok(log.clone()),
        Some(PartitionSlot::Offline(reason)) => Err((
            ErrorCode::KafkaStorageError,
            offline_message(topic, partition as usize, reason),
        )),
        None => Err(unknown_partition(topic, partition)),
    }
}

fn offline_message(topic: &str, partition: usize, reason: &str) -> String {
    // The reason is the open error, which names files; the broker logged it whole at start.
    format!(
        "partition {partition} of topic {topic:?} is offline: {}",
        without_paths(reason)
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cut_to_their_file_name_and_other_text_is_kept() {
        assert_eq!(
            without_paths(
                "I/O error while writing /tmp/x y/data/topics/t-1/0/00000000000000000042.log: No space left"
            ),
            "I/O error while writing x 00000000000000000042.log: No space left"
        );
        assert_eq!(
            without_paths("corrupt data in \"/srv/data/topics/t/0/1.index\", at 7"),
            "corrupt data in \"1.index\", at 7"
        );
        assert_eq!(
            without_paths("offset 5 is out of range"),
            "offset 5 is out of range"
        );
        assert_eq!(without_paths("in (./tidelog-data/metadata/)"), "in (metadata)");
    }

    #[test]
    fn storage_failures_reach_clients_without_the_data_directory() {
        let error = StorageError::Io {
            operation: "writing",
            path: "/var/lib/tidelog/topics/orders-7f/3/00000000000000000000.log".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        let (code, message) = partition_storage_error("orders", 3, &error);
        assert_eq!(code, ErrorCode::KafkaStorageError);
        assert!(!message.contains("/var/lib"), "{message}");
        assert!(!message.contains("topics/"), "{message}");
        assert!(message.contains("\"orders\" partition 3"), "{message}");
        assert!(message.contains("00000000000000000000.log"), "{message}");
        assert!(message.contains("No space left on device"), "{message}");
    }
}
