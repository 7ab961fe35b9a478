//! Tidelog client: a [`Client`] that connects and keeps cluster metadata, an [`Admin`] for
//! topics and offsets, a batching [`Producer`], a [`Consumer`] of assigned partitions and a
//! [`GroupConsumer`] whose partitions a consumer group's coordinator assigns; for event
//! sourcing, an [`EventStore`] (streams, expected versions, catch-up subscriptions) and, with
//! the `embedded` feature, a broker in-process (`embedded::EmbeddedBroker`).
//!
//! ```no_run
//! use tidelog_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord};
//! # async fn demo() -> tidelog_client::Result<()> {
//! let client = Client::connect(ClientConfig::new(["127.0.0.1:7171"])).await?;
//! let producer = Producer::new(client.clone(), ProducerConfig::default())?;
//! let delivery = producer.send(ProducerRecord::new("events", "hello").key("user-1")).await?;
//! let landed = delivery.await?;
//! println!("partition {} offset {:?}", landed.partition(), landed.offset());
//! producer.close().await;
//! # Ok(()) }
//! ```
//!
//! Architecture invariant: `wire.rs`, `connection.rs` and the request-building parts of
//! `client.rs`, `admin.rs`, `topic_config.rs`, `cleaner_status.rs`, `producer.rs`, `consumer.rs`,
//! `stream_read.rs`, `stream_marks.rs`, `snapshots.rs` and `group/` are the only places that
//! name protobuf types; nothing public does.

mod accumulator;
mod batch_writer;
mod connection;
mod wire;

pub mod admin;
mod cleaner_status;
mod client;
pub mod consumer;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod error;
pub mod event_store;
pub mod group;
pub mod partitioner;
pub mod producer;
pub mod snapshots;
pub mod stream_marks;
pub mod stream_read;
pub mod streams;
pub mod topic_changes;
mod topic_config;
pub mod types;
mod wall_clock;

pub use admin::{
    Admin, CleanerState, CleanerStatus, NewTopic, PartitionDescription, PartitionOffset, TopicConfig,
    TopicDescription, TOPIC_CONFIG_NAMES,
};
pub use client::{Client, ClientConfig, DEFAULT_BROKER};
pub use consumer::{Consumer, ConsumerConfig, OffsetReset, Seek};
pub use error::{Error, Result};
pub use event_store::{EventStore, EventStoreError, StreamId, Subscription, SubscriptionEvent};
pub use group::{
    AutoCommit, CommitHandle, GroupConfig, GroupConsumer, GroupDescription, GroupListing, GroupMember,
    GroupPartitionOffset, GroupState, OffsetsToCommit, RebalanceListener, TopicPartition,
};
pub use producer::{DeliveryFuture, Idempotence, Producer, ProducerConfig, ProducerMetrics};
pub use snapshots::{LoadedPage, SavedSnapshot, Snapshot};
pub use stream_marks::StreamMarks;
pub use stream_read::{ReadDirection, ReadStreamOptions, StreamInfo, StreamPage, StreamRecord, WaitResult};
pub use streams::{AppendConditions, AppendResult, EventData, ExpectationFailure, Expected};
/// Record-batch compression codecs, for [`ProducerConfig::compression`].
pub use tidelog_proto::batch::Compression;
pub use topic_changes::TopicChange;
pub use types::{
    Acks, BrokerId, Delivery, ErrorCode, Header, Offset, OffsetSpec, PartitionId, ProducerRecord, Record,
    TopicName,
};
