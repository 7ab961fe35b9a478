//! The broker's error types: what can go wrong starting, configuring and running a broker.
//! Storage errors live with the storage engine (`storage::StorageError`) and are wrapped here.

use std::net::SocketAddr;

use thiserror::Error;

use crate::storage::StorageError;

/// Errors of the metadata store (sled), kept apart so the store can be swapped.
#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("cannot open the metadata store at {path}")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("metadata store: {0}")]
    Sled(#[from] sled::Error),
    #[error("metadata record {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("metadata record {key:?} could not be encoded: {reason}")]
    Encode { key: String, reason: String },
}

/// Why a topic operation was refused or failed.
#[derive(Debug, Error)]
pub enum TopicError {
    #[error("topic {0:?} already exists")]
    AlreadyExists(String),
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid partition count {count}: must be between 1 and {max}")]
    InvalidPartitions { count: u32, max: u32 },
    #[error("invalid topic config: {0}")]
    InvalidConfig(String),
    /// A partition count change the topic refuses (fewer partitions, the same count, a topic
    /// with offline partitions); Kafka's INVALID_PARTITIONS.
    #[error("{0}")]
    InvalidPartitionChange(String),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("partition {partition} of topic {topic:?} is offline: {reason}")]
    PartitionOffline {
        topic: String,
        partition: u32,
        reason: String,
    },
    #[error("the broker already holds its maximum of {0} topics")]
    TooManyTopics(usize),
    #[error("cannot create {requested} partitions: the broker has {existing} and its maximum is {max} (limits.partitions_max)")]
    TooManyPartitions {
        requested: usize,
        existing: usize,
        max: usize,
    },
    #[error(
        "cannot create {requested} partitions: the broker has {existing} and its file descriptor budget \
         fits {fit} (RLIMIT_NOFILE {limit}, less connections, reserves and the file cache's minimum)"
    )]
    DescriptorBudget {
        requested: usize,
        existing: usize,
        fit: usize,
        limit: u64,
    },
    /// Data of that name is on disk but cannot be served; it is never moved aside by a create.
    #[error("topic {name:?} has data on disk that the broker could not recover ({reason}); delete the topic or repair its directory to reuse the name")]
    DataOnDisk { name: String, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a consumer-group request was refused. Each maps to one Kafka error code.
#[derive(Debug, Error)]
pub enum GroupError {
    #[error("invalid group id {group_id:?}: {reason}")]
    InvalidGroupId { group_id: String, reason: String },
    #[error("group {0:?} does not exist")]
    GroupNotFound(String),
    #[error("group {0:?} still has members")]
    NonEmptyGroup(String),
    #[error("member {member_id:?} is not a member of group {group_id:?}")]
    UnknownMember { group_id: String, member_id: String },
    /// The member's epoch is ahead of, or (for a heartbeat) otherwise different from, the
    /// coordinator's: it must rejoin with epoch 0.
    #[error("member {member_id:?} is fenced: epoch {received} but the coordinator has {current}")]
    FencedMemberEpoch {
        member_id: String,
        received: i32,
        current: i32,
    },
    /// A commit from an older epoch, or for a partition the member no longer owns.
    #[error("member {member_id:?}: {reason}")]
    StaleMemberEpoch { member_id: String, reason: String },
    #[error("static instance {0:?} is held by another member that has not left")]
    UnreleasedInstanceId(String),
    #[error("session timeout {requested} ms is outside {min}..={max} ms")]
    InvalidSessionTimeout { requested: u32, min: u32, max: u32 },
    #[error("group {group_id:?} already has its maximum of {max} members")]
    GroupFull { group_id: String, max: usize },
    #[error("the broker already holds its maximum of {0} groups")]
    TooManyGroups(usize),
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("offset metadata of {bytes} bytes exceeds the maximum of {max}")]
    OffsetMetadataTooLarge { bytes: usize, max: usize },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A classic join without a member id (JoinGroup v4+): the member must join again with
    /// the id given here.
    #[error("a member id is required: join again with {member_id:?}")]
    MemberIdRequired { member_id: String },
    /// The classic group is rebalancing: the member must (re)join.
    #[error("group {0:?} is rebalancing")]
    RebalanceInProgress(String),
    #[error("generation {received} is not the group's current generation {current}")]
    IllegalGeneration { received: i32, current: i32 },
    /// Another member now holds this static instance id.
    #[error("static instance {0:?} is held by a newer member")]
    FencedInstanceId(String),
    /// The group is in use by the other group protocol (classic vs KIP-848), or the
    /// member's protocol type or protocols do not match the group's.
    #[error("inconsistent group protocol: {0}")]
    InconsistentGroupProtocol(String),
    /// The coordinator cannot answer now (the broker is stopping): ask again, elsewhere.
    #[error("the group coordinator is not available: {0}")]
    Unavailable(String),
    /// OffsetDelete of a partition whose topic a member of the group subscribes to.
    #[error("group {group_id:?} is subscribed to topic {topic:?}")]
    SubscribedToTopic { group_id: String, topic: String },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Errors starting or stopping a broker.
#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Topic(#[from] TopicError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("broker task failed: {0}")]
    Task(String),
}
