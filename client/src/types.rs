//! Domain types of the public API: identifiers as newtypes, records, error codes. Nothing here
//! knows prost; `wire.rs` converts at the edge.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// A partition number within a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(u32);

impl PartitionId {
    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u32> for PartitionId {
    fn from(id: u32) -> Self {
        Self(id)
    }
}

/// A broker's id in the cluster metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerId(u32);

impl BrokerId {
    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for BrokerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A record's position in a partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(i64);

impl Offset {
    pub const fn new(offset: i64) -> Self {
        Self(offset)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// The offset `delta` records later.
    pub const fn plus(self, delta: i64) -> Self {
        Self(self.0.saturating_add(delta))
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<i64> for Offset {
    fn from(offset: i64) -> Self {
        Self(offset)
    }
}

/// A topic name. Cheap to clone (shared), so a producer can tag millions of records with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName(Arc<str>);

impl TopicName {
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(Arc::from(name.as_ref()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Equality that first compares the shared pointer: clones of one name (the usual case
    /// on the producer's hot path) need no string comparison.
    pub(crate) fn same_as(&self, other: &TopicName) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TopicName {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for TopicName {
    fn from(name: String) -> Self {
        Self(Arc::from(name))
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Where to start reading, or which offset to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset: the oldest record still kept.
    Earliest,
    /// The high watermark: the offset the next record will get.
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the Unix epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    /// The wire encoding of ListOffsets: -1 latest, -2 earliest, else a timestamp.
    pub(crate) fn to_wire(self) -> i64 {
        match self {
            OffsetSpec::Latest => -1,
            OffsetSpec::Earliest => -2,
            OffsetSpec::Timestamp(ms) => ms,
        }
    }
}

/// How much acknowledgement a produce request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Fire and forget: the broker sends no response; records resolve once written to the
    /// socket, without an offset.
    None,
    /// The leader has appended the batch.
    #[default]
    Leader,
}

/// A record header: a UTF-8 key and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    key: String,
    value: Option<Bytes>,
}

impl Header {
    pub fn new(key: impl Into<String>, value: Option<Bytes>) -> Self {
        Self {
            key: key.into(),
            value,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn value(&self) -> Option<&Bytes> {
        self.value.as_ref()
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub(crate) topic: TopicName,
    pub(crate) partition: PartitionId,
    pub(crate) offset: Offset,
    pub(crate) timestamp_ms: i64,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Vec<Header>,
}

impl Record {
    /// A record as a consumer would return it; for tests and adapters.
    pub fn new(
        topic: TopicName,
        partition: PartitionId,
        offset: Offset,
        timestamp_ms: i64,
        key: Option<Bytes>,
        value: Option<Bytes>,
        headers: Vec<Header>,
    ) -> Self {
        Self {
            topic,
            partition,
            offset,
            timestamp_ms,
            key,
            value,
            headers,
        }
    }

    pub fn topic(&self) -> &TopicName {
        &self.topic
    }

    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    pub fn offset(&self) -> Offset {
        self.offset
    }

    /// Milliseconds since the Unix epoch, as the producer stamped it.
    pub fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }

    pub fn key(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }

    pub fn value(&self) -> Option<&Bytes> {
        self.value.as_ref()
    }

    pub fn headers(&self) -> &[Header] {
        &self.headers
    }
}

/// A record to send. Built with [`ProducerRecord::new`] and the chained setters.
#[derive(Debug, Clone)]
pub struct ProducerRecord {
    pub(crate) topic: TopicName,
    pub(crate) partition: Option<PartitionId>,
    pub(crate) key: Option<Bytes>,
    pub(crate) value: Option<Bytes>,
    pub(crate) headers: Vec<Header>,
    pub(crate) timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A keyless record with a value; the partitioner picks the partition.
    pub fn new(topic: impl Into<TopicName>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// A record with a null value (a tombstone, once compaction exists).
    pub fn tombstone(topic: impl Into<TopicName>, key: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: Some(key.into()),
            value: None,
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// Sets the key; keyed records without an explicit partition go to
    /// `murmur2(key) % partitions`, as in Kafka.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends to this partition, bypassing the partitioner.
    pub fn partition(mut self, partition: PartitionId) -> Self {
        self.partition = Some(partition);
        self
    }

    pub fn header(mut self, header: Header) -> Self {
        self.headers.push(header);
        self
    }

    /// Sets the timestamp in ms since the Unix epoch; by default the time of `send`.
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    pub fn topic(&self) -> &TopicName {
        &self.topic
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub(crate) partition: PartitionId,
    pub(crate) offset: Option<Offset>,
}

impl Delivery {
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// The record's offset; `None` under [`Acks::None`], where the broker does not answer.
    pub fn offset(&self) -> Option<Offset> {
        self.offset
    }
}

/// Declares [`ErrorCode`] from one table of (variant, number, schema name), so the three
/// mappings cannot drift apart.
macro_rules! error_codes {
    ($($variant:ident = $code:literal => $name:literal,)*) => {
        /// Broker error codes. The numbers are Kafka's, so they map one to one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($variant,)*
            /// A code this client does not know; kept so it can still be reported.
            Other(i32),
        }

        impl ErrorCode {
            /// `None` for code 0 (no error).
            pub fn from_code(code: i32) -> Option<Self> {
                match code {
                    0 => None,
                    $($code => Some(Self::$variant),)*
                    other => Some(Self::Other(other)),
                }
            }

            pub fn code(self) -> i32 {
                match self {
                    $(Self::$variant => $code,)*
                    Self::Other(code) => code,
                }
            }

            fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Other(_) => "UNKNOWN_CODE",
                }
            }
        }
    };
}

error_codes! {
    UnknownServerError = -1 => "UNKNOWN_SERVER_ERROR",
    OffsetOutOfRange = 1 => "OFFSET_OUT_OF_RANGE",
    CorruptMessage = 2 => "CORRUPT_MESSAGE",
    UnknownTopicOrPartition = 3 => "UNKNOWN_TOPIC_OR_PARTITION",
    RequestTimedOut = 7 => "REQUEST_TIMED_OUT",
    MessageTooLarge = 10 => "MESSAGE_TOO_LARGE",
    OffsetMetadataTooLarge = 12 => "OFFSET_METADATA_TOO_LARGE",
    CoordinatorNotAvailable = 15 => "COORDINATOR_NOT_AVAILABLE",
    InvalidTopic = 17 => "INVALID_TOPIC",
    RecordListTooLarge = 18 => "RECORD_LIST_TOO_LARGE",
    IllegalGeneration = 22 => "ILLEGAL_GENERATION",
    InconsistentGroupProtocol = 23 => "INCONSISTENT_GROUP_PROTOCOL",
    InvalidGroupId = 24 => "INVALID_GROUP_ID",
    UnknownMemberId = 25 => "UNKNOWN_MEMBER_ID",
    InvalidSessionTimeout = 26 => "INVALID_SESSION_TIMEOUT",
    RebalanceInProgress = 27 => "REBALANCE_IN_PROGRESS",
    UnsupportedVersion = 35 => "UNSUPPORTED_VERSION",
    TopicAlreadyExists = 36 => "TOPIC_ALREADY_EXISTS",
    InvalidPartitions = 37 => "INVALID_PARTITIONS",
    InvalidConfig = 40 => "INVALID_CONFIG",
    InvalidRequest = 42 => "INVALID_REQUEST",
    UnsupportedForMessageFormat = 43 => "UNSUPPORTED_FOR_MESSAGE_FORMAT",
    OutOfOrderSequenceNumber = 45 => "OUT_OF_ORDER_SEQUENCE_NUMBER",
    DuplicateSequenceNumber = 46 => "DUPLICATE_SEQUENCE_NUMBER",
    InvalidProducerEpoch = 47 => "INVALID_PRODUCER_EPOCH",
    StorageError = 56 => "KAFKA_STORAGE_ERROR",
    UnknownProducerId = 59 => "UNKNOWN_PRODUCER_ID",
    NonEmptyGroup = 68 => "NON_EMPTY_GROUP",
    GroupIdNotFound = 69 => "GROUP_ID_NOT_FOUND",
    UnsupportedCompressionType = 76 => "UNSUPPORTED_COMPRESSION_TYPE",
    InvalidRecord = 87 => "INVALID_RECORD",
    MemberIdRequired = 79 => "MEMBER_ID_REQUIRED",
    GroupMaxSizeReached = 81 => "GROUP_MAX_SIZE_REACHED",
    FencedInstanceId = 82 => "FENCED_INSTANCE_ID",
    ThrottlingQuotaExceeded = 89 => "THROTTLING_QUOTA_EXCEEDED",
    ProducerFenced = 90 => "PRODUCER_FENCED",
    FencedMemberEpoch = 110 => "FENCED_MEMBER_EPOCH",
    UnreleasedInstanceId = 111 => "UNRELEASED_INSTANCE_ID",
    StaleMemberEpoch = 113 => "STALE_MEMBER_EPOCH",
    BrokerShuttingDown = 1001 => "BROKER_SHUTTING_DOWN",
    TooManyConnections = 1002 => "TOO_MANY_CONNECTIONS",
    ExpectationFailed = 1003 => "EXPECTATION_FAILED",
    StreamErased = 1004 => "STREAM_ERASED",
}

impl ErrorCode {
    /// Kafka's retriable codes, plus a broker going away (another may take over).
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            Self::CorruptMessage
                | Self::UnknownTopicOrPartition
                | Self::RequestTimedOut
                | Self::CoordinatorNotAvailable
                | Self::StorageError
                | Self::BrokerShuttingDown
                | Self::TooManyConnections
                | Self::ThrottlingQuotaExceeded
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(code) => write!(f, "error code {code}"),
            known => f.write_str(known.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidelog_proto::pb;

    /// Every code in the schema maps to a named variant and back, so a new code in the .proto
    /// without a variant here fails this test.
    #[test]
    fn error_codes_round_trip_and_match_the_schema() {
        for code in -1..2000 {
            let Ok(schema) = pb::ErrorCode::try_from(code) else {
                if let Some(known) = ErrorCode::from_code(code) {
                    assert_eq!(known, ErrorCode::Other(code), "code {code} is not in the schema");
                }
                continue;
            };
            match ErrorCode::from_code(code) {
                None => assert_eq!(schema, pb::ErrorCode::None),
                Some(known) => {
                    assert!(
                        !matches!(known, ErrorCode::Other(_)),
                        "code {code} has no variant"
                    );
                    assert_eq!(known.code(), code);
                    assert_eq!(known.to_string(), schema.as_str_name());
                }
            }
        }
    }

    #[test]
    fn offset_spec_uses_kafka_sentinels() {
        assert_eq!(OffsetSpec::Latest.to_wire(), -1);
        assert_eq!(OffsetSpec::Earliest.to_wire(), -2);
        assert_eq!(OffsetSpec::Timestamp(1234).to_wire(), 1234);
    }
}
