//! The broker's error types: what can go wrong starting, configuring and running a broker.
//! Storage errors live with the storage engine (`storage::StorageError`) and are wrapped here.

use std::net::SocketAddr;

use thiserror::Error;

use crate::storage::StorageError;

/// Errors of the metadata store (sled), kept apart so the store can be swapped.
#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("metadata store at {path}: {source}")]
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
    #[error("the broker already holds its maximum of {0} topics")]
    TooManyTopics(usize),
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
