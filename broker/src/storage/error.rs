//! The one error type of the storage engine: what can go wrong opening, appending to, reading
//! from and maintaining a partition log.

use std::path::PathBuf;

use thiserror::Error;
use tidelog_proto::BatchError;

/// An error from the storage engine. Causes are kept as `#[source]` so callers can log the
/// whole chain.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The operating system refused an I/O operation. `operation` says what we were doing.
    #[error("I/O error while {operation} {path}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A fetch or lookup asked for an offset outside `[log_start_offset, high_watermark]`.
    #[error("offset {requested} is out of range: log starts at {log_start_offset}, high watermark is {high_watermark}")]
    OffsetOutOfRange {
        requested: i64,
        log_start_offset: i64,
        high_watermark: i64,
    },

    /// Bytes on disk do not describe what they should. Recovery repairs what it can at open;
    /// this is returned when corruption is found later (a read of a damaged closed segment).
    #[error("corrupt data in {path}: {detail}")]
    Corrupt {
        path: PathBuf,
        detail: String,
        #[source]
        source: Option<BatchError>,
    },

    /// The requested offset lies in a range recovery found damaged (or missing) on disk and
    /// fenced. The message names only offsets, so a consumer can decide to skip the range by
    /// fetching from `end_offset`.
    #[error("offsets {first_offset}..{end_offset} are damaged on disk and cannot be served; fetch from {end_offset} to skip them")]
    CorruptRange { first_offset: i64, end_offset: i64 },

    /// One append call (all its batches together) cannot fit in a segment.
    #[error("append of {size} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },

    /// The log was closed; it accepts no more writes.
    #[error("partition log is closed")]
    Closed,

    /// An earlier write or fsync failed. After a failed fsync the page cache may have dropped
    /// data we can no longer tell apart from durable data, so the log refuses all further writes
    /// until it is reopened (and recovered) from disk.
    #[error("partition log is failed after an earlier I/O error: {reason}")]
    Poisoned { reason: String },

    /// A file was written by a newer version of Tidelog.
    #[error("{path} has format version {found}; this build reads version {supported}")]
    UnsupportedVersion {
        path: PathBuf,
        found: u16,
        supported: u16,
    },

    /// The configuration cannot be used.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),

    /// Offsets would pass `i64::MAX`.
    #[error("offset space exhausted")]
    OffsetOverflow,

    /// An idempotent producer's batch does not continue its sequence (a gap, a sequence this
    /// partition no longer remembers, or a new epoch not starting at 0). Nothing was appended.
    #[error("producer {producer_id}: sequence {found} is out of order, expected {expected}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        found: i32,
    },

    /// A batch from an older epoch of a producer that has since written with a newer one: an
    /// older incarnation is fenced. Nothing was appended.
    #[error("producer {producer_id}: epoch {found} is older than its current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        found: i16,
    },

    /// A batch of a producer this partition holds no state for, not starting at sequence 0:
    /// an earlier batch of it never landed (storing this one would leave a gap), or its state
    /// expired. Nothing was appended.
    #[error(
        "producer {producer_id}: unknown to this partition, and its batch starts at sequence {found}, not 0"
    )]
    UnknownProducerId { producer_id: i64, found: i32 },

    /// A batch with the producer id and sequence range of a stored batch but other contents
    /// (its CRC differs): not a retry. Nothing was appended.
    #[error(
        "producer {producer_id}: sequences {first_sequence}..={last_sequence} were already stored at \
         offset {base_offset} with different contents"
    )]
    SequenceConflict {
        producer_id: i64,
        first_sequence: i32,
        last_sequence: i32,
        base_offset: i64,
    },

    /// One append call mixes batches already appended with new ones. Nothing was appended.
    #[error("producer {producer_id}: some batches of this append are duplicates and some are new")]
    DuplicateSequence { producer_id: i64 },

    /// The append needed a new segment and the roll failed (descriptors, disk space, an I/O
    /// error). Nothing was appended and the partition is as it was before: retrying is safe.
    /// The message names offsets only; the cause (with paths) is in `source` and the log.
    #[error("could not start a new segment at offset {base_offset}; nothing was appended")]
    RollFailed {
        base_offset: i64,
        #[source]
        source: Box<StorageError>,
    },

    /// A conditional append's expectations did not hold (and it was not an exact retry of an
    /// append already in the log). Nothing was appended.
    #[error("{}", describe_failures(failures))]
    ConditionFailed {
        failures: Vec<super::conditions::ConditionFailure>,
    },

    /// A conditional append's conditions contradict themselves (two on one key). Nothing was
    /// appended.
    #[error("invalid append conditions: {0}")]
    InvalidConditions(String),

    /// A compacted log keeps the latest record per key, so a record without a key has no
    /// place in it (Kafka refuses it the same way). Nothing was appended.
    #[error("record {record_index} has no key, and a compacted topic refuses records without a key")]
    KeylessRecord { record_index: usize },

    /// The stream was erased: reads answer this, and appends are refused until it is re-opened.
    /// `key` is the key as text (lossy UTF-8), for the message.
    #[error("stream {key:?} is erased; re-open it to append again")]
    StreamErased { key: String },

    /// A per-partition bound on stream marks (truncations and erasures) would be passed.
    #[error("this partition already holds {max} stream marks (limits.stream_marks_per_partition_max)")]
    TooManyStreamMarks { max: usize },

    /// The log cleaner could not clean this partition; the partition keeps serving and the
    /// cleaner marks it uncleanable. `reason` is the one-line cause.
    #[error("cleaning failed: {reason}")]
    CleanFailed {
        reason: String,
        #[source]
        source: Option<Box<StorageError>>,
    },

    /// A clean stopped because the broker is shutting down (or the log closed); nothing changed.
    #[error("cleaning cancelled")]
    CleanCancelled,
}

/// "expectation failed: key \"a\": expected 41, actual 57; ..." for every failed check.
fn describe_failures(failures: &[super::conditions::ConditionFailure]) -> String {
    let mut text = String::from("expectation failed: ");
    for (index, failure) in failures.iter().enumerate() {
        if index > 0 {
            text.push_str("; ");
        }
        text.push_str(&failure.to_string());
    }
    text
}

impl StorageError {
    /// Returns a closure that wraps an `io::Error` with what we were doing and to which path.
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io {
            operation,
            path,
            source,
        }
    }

    /// An I/O error from reopening a file the descriptor cache had closed: nothing reached the
    /// disk or failed on it, so it is retriable and never a reason to poison a log.
    pub(crate) fn is_reopen_failure(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if super::file_cache::is_reopen_failure(source))
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: path.into(),
            detail: detail.into(),
            source: None,
        }
    }
}
