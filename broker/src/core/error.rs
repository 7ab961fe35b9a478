//! The core's one error type. `ErrorCode` carries Kafka's numbering (so the Kafka front end
//! writes `code()` as it is and the native one maps it once, in `native::error_code`);
//! `CoreError` pairs a code with the message a client is shown.
//!
//! The conversions from the storage, topic and group errors live here, once for every front
//! end: which code each failure gets, and which failures are the broker's own (logged at WARN
//! with the whole cause, and shown to clients without any path of the data directory).

use crate::error::{GroupError, TopicError};
use crate::storage::{ConditionFailure, StorageError};

/// Why an operation failed, numbered as Kafka numbers its error codes (codes above 1000 are
/// Tidelog's own and are never sent to a Kafka client as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
// Every code a front end may need; the native front end sends only some of them.
#[allow(dead_code)]
pub(crate) enum ErrorCode {
    None = 0,
    UnknownServerError = -1,
    OffsetOutOfRange = 1,
    CorruptMessage = 2,
    UnknownTopicOrPartition = 3,
    InvalidFetchSize = 4,
    LeaderNotAvailable = 5,
    NotLeaderOrFollower = 6,
    RequestTimedOut = 7,
    MessageTooLarge = 10,
    OffsetMetadataTooLarge = 12,
    NetworkException = 13,
    CoordinatorLoadInProgress = 14,
    CoordinatorNotAvailable = 15,
    NotCoordinator = 16,
    InvalidTopic = 17,
    RecordListTooLarge = 18,
    InvalidRequiredAcks = 21,
    IllegalGeneration = 22,
    InconsistentGroupProtocol = 23,
    InvalidGroupId = 24,
    UnknownMemberId = 25,
    InvalidSessionTimeout = 26,
    RebalanceInProgress = 27,
    InvalidCommitOffsetSize = 28,
    TopicAuthorizationFailed = 29,
    GroupAuthorizationFailed = 30,
    ClusterAuthorizationFailed = 31,
    InvalidTimestamp = 32,
    UnsupportedVersion = 35,
    TopicAlreadyExists = 36,
    InvalidPartitions = 37,
    InvalidReplicationFactor = 38,
    InvalidReplicaAssignment = 39,
    InvalidConfig = 40,
    NotController = 41,
    InvalidRequest = 42,
    UnsupportedForMessageFormat = 43,
    PolicyViolation = 44,
    OutOfOrderSequenceNumber = 45,
    DuplicateSequenceNumber = 46,
    InvalidProducerEpoch = 47,
    InvalidTxnState = 48,
    InvalidProducerIdMapping = 49,
    InvalidTransactionTimeout = 50,
    ConcurrentTransactions = 51,
    TransactionalIdAuthorizationFailed = 53,
    KafkaStorageError = 56,
    UnknownProducerId = 59,
    NonEmptyGroup = 68,
    GroupIdNotFound = 69,
    FetchSessionIdNotFound = 70,
    InvalidFetchSessionEpoch = 71,
    TopicDeletionDisabled = 73,
    FencedLeaderEpoch = 74,
    UnknownLeaderEpoch = 75,
    UnsupportedCompressionType = 76,
    OffsetNotAvailable = 78,
    MemberIdRequired = 79,
    GroupMaxSizeReached = 81,
    FencedInstanceId = 82,
    GroupSubscribedToTopic = 86,
    InvalidRecord = 87,
    UnstableOffsetCommit = 88,
    ThrottlingQuotaExceeded = 89,
    ProducerFenced = 90,
    UnknownTopicId = 100,
    InconsistentTopicId = 103,
    FencedMemberEpoch = 110,
    UnreleasedInstanceId = 111,
    UnsupportedAssignor = 112,
    StaleMemberEpoch = 113,
    /// Tidelog's own: the broker is stopping (a Kafka front end answers with a retriable code).
    BrokerShuttingDown = 1001,
    /// Tidelog's own: a connection past the broker's connection caps.
    TooManyConnections = 1002,
    /// Tidelog's own: a conditional append's expectations did not hold (`CoreError::failures`
    /// lists every failed check); nothing was appended. Kafka clients get INVALID_RECORD.
    ExpectationFailed = 1003,
    /// Tidelog's own: the stream was erased (issue 9 §3); reads answer it and appends are
    /// refused until it is re-opened. Kafka clients get INVALID_RECORD.
    StreamErased = 1004,
}

impl ErrorCode {
    /// The number on the wire (Kafka's, or Tidelog's own above 1000).
    pub(crate) fn code(self) -> i16 {
        self as i16
    }
}

/// A failed operation: the code a front end sends and the message a client is shown (which
/// never holds a path of the data directory).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub(crate) struct CoreError {
    pub code: ErrorCode,
    pub message: String,
    /// With `ExpectationFailed`: every failed check, expected and actual (empty otherwise).
    pub failures: Vec<ConditionFailure>,
    /// The record of the request the refusal is about (within its partition's records,
    /// counting across batches), when it is one record's: Kafka's per-record error index.
    pub record_index: Option<u32>,
}

impl CoreError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CoreError {
            code,
            message: message.into(),
            failures: Vec::new(),
            record_index: None,
        }
    }

    /// The same error, about one record of the request.
    pub(crate) fn at_record(mut self, index: usize) -> Self {
        self.record_index = u32::try_from(index).ok();
        self
    }

    /// A conditional append refused because `failures` did not hold.
    pub(crate) fn expectation_failed(message: impl Into<String>, failures: Vec<ConditionFailure>) -> Self {
        CoreError {
            code: ErrorCode::ExpectationFailed,
            message: message.into(),
            failures,
            record_index: None,
        }
    }

    /// The same error, its message naming the topic and partition.
    pub(crate) fn for_partition(mut self, topic: &str, partition: u32) -> Self {
        self.message = format!("topic {topic:?} partition {partition}: {}", self.message);
        self
    }

    /// A storage failure of one partition: the message names the topic and partition.
    pub(crate) fn partition_storage(topic: &str, partition: u32, error: &StorageError) -> Self {
        let span = tracing::warn_span!("partition", %topic, partition);
        let error = span.in_scope(|| CoreError::from(error));
        error.for_partition(topic, partition)
    }

    /// A partition that does not exist.
    pub(crate) fn unknown_partition(topic: &str, partition: u32) -> Self {
        CoreError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic {topic:?} has no partition {partition}"),
        )
    }

    /// A topic that does not exist.
    pub(crate) fn unknown_topic(topic: &str) -> Self {
        CoreError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic {topic:?} does not exist"),
        )
    }

    /// A partition that exists but could not be opened at start.
    pub(crate) fn offline_partition(topic: &str, partition: usize, reason: &str) -> Self {
        CoreError::new(
            ErrorCode::KafkaStorageError,
            offline_message(topic, partition, reason),
        )
    }
}

/// Failures of the broker's own (disk, corruption, a failed log) are logged here at WARN with
/// the whole cause, paths included; the client's message keeps file names at most.
impl From<&StorageError> for CoreError {
    fn from(error: &StorageError) -> Self {
        let code = match error {
            StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
            // Fenced at recovery: the consumer may skip the range deliberately.
            StorageError::CorruptRange { .. } => ErrorCode::CorruptMessage,
            // Issue 9: what a client asked of a stream, or sent to a compacted topic.
            StorageError::StreamErased { .. } => ErrorCode::StreamErased,
            StorageError::KeylessRecord { .. } => ErrorCode::InvalidRecord,
            // A bound the operator sets (limits.stream_marks_per_partition_max): the message names it.
            StorageError::TooManyStreamMarks { .. } => ErrorCode::InvalidRequest,
            _ => ErrorCode::KafkaStorageError,
        };
        match error {
            // Recovery logged the damage at ERROR once; its message names only offsets.
            StorageError::OffsetOutOfRange { .. }
            | StorageError::BatchTooLarge { .. }
            | StorageError::CorruptRange { .. }
            | StorageError::StreamErased { .. }
            | StorageError::TooManyStreamMarks { .. } => CoreError::new(code, error.to_string()),
            StorageError::KeylessRecord { record_index } => {
                CoreError::new(code, error.to_string()).at_record(*record_index)
            }
            _ => {
                let full = error_chain(error);
                tracing::warn!(error = %full, "storage operation failed; the client was told without paths");
                CoreError::new(code, without_paths(&full))
            }
        }
    }
}

impl From<&TopicError> for CoreError {
    fn from(error: &TopicError) -> Self {
        let code = match error {
            TopicError::AlreadyExists(_) => ErrorCode::TopicAlreadyExists,
            TopicError::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
            TopicError::InvalidName { .. } => ErrorCode::InvalidTopic,
            TopicError::InvalidPartitions { .. }
            | TopicError::TooManyPartitions { .. }
            | TopicError::DescriptorBudget { .. }
            | TopicError::InvalidPartitionChange(_) => ErrorCode::InvalidPartitions,
            TopicError::UnknownPartition { .. } => ErrorCode::UnknownTopicOrPartition,
            TopicError::PartitionOffline { .. } => ErrorCode::KafkaStorageError,
            TopicError::InvalidConfig(_) | TopicError::TooManyTopics(_) => ErrorCode::InvalidConfig,
            TopicError::Storage(error) => return CoreError::from(error),
            TopicError::Metadata(_) | TopicError::Io { .. } | TopicError::DataOnDisk { .. } => {
                let full = error_chain(error);
                tracing::warn!(error = %full, "topic operation failed");
                return CoreError::new(ErrorCode::KafkaStorageError, without_paths(&full));
            }
        };
        CoreError::new(code, error.to_string())
    }
}

impl From<&GroupError> for CoreError {
    fn from(error: &GroupError) -> Self {
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
                return CoreError::new(ErrorCode::CoordinatorNotAvailable, without_paths(&full));
            }
            GroupError::UnknownPartition { .. } => ErrorCode::UnknownTopicOrPartition,
            GroupError::OffsetMetadataTooLarge { .. } => ErrorCode::OffsetMetadataTooLarge,
            GroupError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            GroupError::MemberIdRequired { .. } => ErrorCode::MemberIdRequired,
            GroupError::RebalanceInProgress(_) => ErrorCode::RebalanceInProgress,
            GroupError::IllegalGeneration { .. } => ErrorCode::IllegalGeneration,
            GroupError::FencedInstanceId(_) => ErrorCode::FencedInstanceId,
            GroupError::InconsistentGroupProtocol(_) => ErrorCode::InconsistentGroupProtocol,
            GroupError::SubscribedToTopic { .. } => ErrorCode::GroupSubscribedToTopic,
            GroupError::Unavailable(_) => ErrorCode::CoordinatorNotAvailable,
        };
        CoreError::new(code, error.to_string())
    }
}

impl From<StorageError> for CoreError {
    fn from(error: StorageError) -> Self {
        CoreError::from(&error)
    }
}

impl From<TopicError> for CoreError {
    fn from(error: TopicError) -> Self {
        CoreError::from(&error)
    }
}

impl From<GroupError> for CoreError {
    fn from(error: GroupError) -> Self {
        CoreError::from(&error)
    }
}

pub(crate) fn offline_message(topic: &str, partition: usize, reason: &str) -> String {
    // The reason is the open error, which names files; the broker logged it whole at start.
    format!(
        "partition {partition} of topic {topic:?} is offline: {}",
        without_paths(reason)
    )
}

/// An error and its causes, one after the other.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
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
        let error = CoreError::partition_storage("orders", 3, &error);
        assert_eq!(error.code, ErrorCode::KafkaStorageError);
        let message = error.message;
        assert!(!message.contains("/var/lib"), "{message}");
        assert!(!message.contains("topics/"), "{message}");
        assert!(message.contains("\"orders\" partition 3"), "{message}");
        assert!(message.contains("00000000000000000000.log"), "{message}");
        assert!(message.contains("No space left on device"), "{message}");
    }

    #[test]
    fn codes_carry_kafkas_numbering() {
        assert_eq!(ErrorCode::None.code(), 0);
        assert_eq!(ErrorCode::UnknownServerError.code(), -1);
        assert_eq!(ErrorCode::NotLeaderOrFollower.code(), 6);
        assert_eq!(ErrorCode::NotCoordinator.code(), 16);
        assert_eq!(ErrorCode::InconsistentGroupProtocol.code(), 23);
        assert_eq!(ErrorCode::UnsupportedVersion.code(), 35);
        assert_eq!(ErrorCode::PolicyViolation.code(), 44);
        assert_eq!(ErrorCode::TransactionalIdAuthorizationFailed.code(), 53);
        assert_eq!(ErrorCode::KafkaStorageError.code(), 56);
        assert_eq!(ErrorCode::GroupIdNotFound.code(), 69);
        assert_eq!(ErrorCode::InvalidRecord.code(), 87);
        assert_eq!(ErrorCode::ThrottlingQuotaExceeded.code(), 89);
        assert_eq!(ErrorCode::UnknownTopicId.code(), 100);
        assert_eq!(ErrorCode::StaleMemberEpoch.code(), 113);
    }
}
