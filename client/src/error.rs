//! The client's one error type. Every failure a caller can see is a variant of [`Error`]; the
//! cause is kept with `#[source]`, so `{:#}`-style reporters print the whole chain.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::types::{ErrorCode, Offset, PartitionId};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to Tidelog.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The address could not be resolved to a socket address.
    #[error("cannot resolve broker address {addr}")]
    Resolve {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// No TCP connection could be made, after every retry.
    #[error("cannot connect to broker at {addr} (after {attempts} attempts)")]
    Connect {
        addr: String,
        attempts: u32,
        #[source]
        source: io::Error,
    },
    /// Reading from or writing to an established connection failed.
    #[error("connection to {addr} failed")]
    Io {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// The connection was closed (by the peer, by an earlier error, or by us) while a request
    /// was outstanding or about to be sent.
    #[error("connection to {addr} is closed")]
    ConnectionClosed { addr: String },
    /// The byte stream from the broker could not be cut into frames.
    #[error("bad frame from {addr}")]
    Frame {
        addr: String,
        #[source]
        source: tidelog_proto::FrameError,
    },
    /// A request would not fit in one frame.
    #[error("request of {length} bytes exceeds the frame limit of {max} bytes")]
    RequestTooLarge { length: usize, max: usize },
    /// A frame from the broker did not decode as a response.
    #[error("cannot decode a response from {addr}")]
    Decode {
        addr: String,
        // Boxed so that no prost type appears in the public API.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The broker answered something the protocol does not allow here.
    #[error("protocol violation by {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    /// No response arrived in time.
    #[error("request to {addr} timed out after {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// The broker refused the request with an error code.
    #[error("broker error {code}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Broker { code: ErrorCode, message: String },
    /// The topic does not exist (or has no such partition).
    #[error("unknown topic or partition: {topic}{}", partition.map(|p| format!("/{p}")).unwrap_or_default())]
    UnknownTopicOrPartition {
        topic: String,
        partition: Option<PartitionId>,
    },
    /// A fetch asked for an offset outside the partition's log and the reset policy is
    /// [`OffsetReset::Error`](crate::consumer::OffsetReset::Error).
    #[error(
        "offset {offset} is out of range for {topic}/{partition} \
         (log start {log_start_offset}, high watermark {high_watermark})"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: PartitionId,
        offset: Offset,
        log_start_offset: Offset,
        high_watermark: Offset,
    },
    /// A record batch from the broker failed validation.
    #[error("corrupt record batch from {topic}/{partition}")]
    CorruptBatch {
        topic: String,
        partition: PartitionId,
        #[source]
        source: tidelog_proto::BatchError,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A single record is larger than a batch may be.
    #[error("record of {size} bytes exceeds the batch limit of {max} bytes")]
    RecordTooLarge { size: usize, max: usize },
    /// The producer was closed before the record could be sent.
    #[error("the producer is closed")]
    ProducerClosed,
    /// A record could not be delivered. The cause is shared by every record of its batch.
    #[error("delivery to {topic}/{partition} failed")]
    Delivery {
        topic: String,
        partition: PartitionId,
        #[source]
        source: Arc<Error>,
    },
    /// The partition is not assigned to this consumer.
    #[error("{topic}/{partition} is not assigned to this consumer")]
    NotAssigned { topic: String, partition: PartitionId },
    /// A group consumer was assigned a partition that has no committed offset, and the reset
    /// policy is [`OffsetReset::Error`](crate::consumer::OffsetReset::Error).
    #[error("group {group} has no committed offset for {topic}/{partition} and the reset policy is error")]
    NoCommittedOffset {
        group: String,
        topic: String,
        partition: PartitionId,
    },
    /// The group has members, so the operation (an offset reset, a delete) is refused.
    #[error("group {group} has active members; stop its consumers first")]
    GroupNotEmpty { group: String },
    /// No such consumer group.
    #[error("group {group} does not exist")]
    GroupNotFound { group: String },
    /// The consumer's group membership failed for good (the coordinator refused the member).
    #[error("membership of group {group} failed")]
    GroupMembership {
        group: String,
        #[source]
        source: Arc<Error>,
    },
    /// The group consumer was closed, or its heartbeat task has stopped.
    #[error("the consumer of group {group} is closed")]
    ConsumerClosed { group: String },
    /// A conditional append's expectations did not hold: nothing was appended. Every failed
    /// check is listed with the expected and the actual version.
    #[error("expectation failed: {}", describe_failures(failures))]
    ExpectationFailed {
        failures: Vec<crate::streams::ExpectationFailure>,
    },
    /// The stream was erased: its reads answer this, and its appends are refused until it is
    /// re-opened ([`Client::reopen_stream`](crate::Client::reopen_stream)). `key` is the
    /// stream's key as text (lossy UTF-8); `message` is the broker's.
    #[error("stream {key:?} of topic {topic} is erased; re-open it to append again")]
    StreamErased {
        topic: String,
        key: String,
        message: String,
    },
}

fn describe_failures(failures: &[crate::streams::ExpectationFailure]) -> String {
    let described: Vec<String> = failures.iter().map(ToString::to_string).collect();
    described.join("; ")
}

impl Error {
    /// Whether retrying the same operation later may succeed: transient network failures,
    /// timeouts and the broker codes Kafka marks retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Io { .. }
            | Error::ConnectionClosed { .. }
            | Error::Timeout { .. } => true,
            Error::Broker { code, .. } => code.is_retriable(),
            Error::Delivery { source, .. } => source.is_retriable(),
            _ => false,
        }
    }

    /// The broker error code, when the broker refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            Error::UnknownTopicOrPartition { .. } => Some(ErrorCode::UnknownTopicOrPartition),
            Error::OffsetOutOfRange { .. } => Some(ErrorCode::OffsetOutOfRange),
            Error::Delivery { source, .. } => source.code(),
            Error::GroupNotEmpty { .. } => Some(ErrorCode::NonEmptyGroup),
            Error::GroupNotFound { .. } => Some(ErrorCode::GroupIdNotFound),
            Error::GroupMembership { source, .. } => source.code(),
            Error::ExpectationFailed { .. } => Some(ErrorCode::ExpectationFailed),
            Error::StreamErased { .. } => Some(ErrorCode::StreamErased),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_and_static() {
        assert_send_sync::<Error>();
    }

    #[test]
    fn delivery_error_keeps_its_cause() {
        let cause = Arc::new(Error::Broker {
            code: ErrorCode::RequestTimedOut,
            message: "slow disk".into(),
        });
        let error = Error::Delivery {
            topic: "t".into(),
            partition: PartitionId::new(3),
            source: cause,
        };
        assert!(error.is_retriable());
        assert_eq!(error.code(), Some(ErrorCode::RequestTimedOut));
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some("broker error REQUEST_TIMED_OUT: slow disk")
        );
    }
}
