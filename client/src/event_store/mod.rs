//! An event store over Tidelog: streams (the records of one key in one topic), appends with an
//! expected version, typed [`EventStoreError::WrongExpectedVersion`] conflicts, reads by
//! stream, and catch-up subscriptions, over any broker (or the in-process one of the
//! `embedded` feature).
//!
//! A stream's **version** is the offset of its last record (-1 when it has none): the value an
//! append passes as [`Expected::Exact`] to be sure no one wrote in between.
//!
//! Architecture: `catch_up` is the subscription's state machine (no I/O), `subscription` its
//! task and bounded channel, `sources` what it reads (a stream, a partition), this module the
//! facade. Everything goes through [`Client`]; nothing here names a protobuf type.

mod catch_up;
mod error;
mod sources;
mod subscription;

use crate::client::{Client, ClientConfig};
use crate::types::{PartitionId, Record};

pub use catch_up::{Positioned, SubscriptionEvent};
pub use error::EventStoreError;
pub use subscription::{Subscription, SubscriptionConfig};

/// A stream: the records of one key in one topic. It lives in the partition Kafka's default
/// partitioner (murmur2) picks for the key, in offset order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamId {
    pub topic: String,
    pub key: bytes::Bytes,
}

impl StreamId {
    pub fn new(topic: impl Into<String>, key: impl Into<bytes::Bytes>) -> Self {
        Self {
            topic: topic.into(),
            key: key.into(),
        }
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, String::from_utf8_lossy(&self.key))
    }
}

/// The event store facade; cheap to clone (it shares the [`Client`]'s connections).
#[derive(Debug, Clone)]
pub struct EventStore {
    client: Client,
    subscriptions: SubscriptionConfig,
}

impl EventStore {
    /// Connects to the first reachable of `addresses` (`host:port`).
    ///
    /// # Errors
    /// [`EventStoreError::Client`] when no address can be reached.
    pub async fn connect<I, S>(addresses: I) -> Result<EventStore, EventStoreError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let client = Client::connect(ClientConfig::new(addresses)).await?;
        Ok(Self::new(client))
    }

    /// An event store over an existing client, with the default subscription settings.
    pub fn new(client: Client) -> EventStore {
        Self {
            client,
            subscriptions: SubscriptionConfig::default(),
        }
    }

    /// The same store with other subscription bounds for the subscriptions it starts.
    ///
    /// # Errors
    /// [`EventStoreError::Config`] for bounds that do not fit together.
    pub fn with_subscription_config(
        mut self,
        config: SubscriptionConfig,
    ) -> Result<EventStore, EventStoreError> {
        config.validate()?;
        self.subscriptions = config;
        Ok(self)
    }

    /// The client underneath (topics, producers, consumers).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A catch-up subscription to every record of one partition from `from` (inclusive; an
    /// offset below the log start begins at the oldest record kept): history, `CaughtUp`,
    /// live records, `FellBehind` when the subscriber falls behind.
    ///
    /// # Errors
    /// An unknown topic or partition, or the broker unreachable.
    pub async fn subscribe_partition(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
    ) -> Result<Subscription<Record>, EventStoreError> {
        let source = sources::PartitionSource::open(
            self.client.clone(),
            topic,
            PartitionId::new(partition),
            &self.subscriptions,
        )
        .await?;
        Subscription::start(source, from, self.subscriptions.clone())
    }
}
