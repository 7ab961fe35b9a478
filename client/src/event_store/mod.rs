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
mod load;
mod sources;
mod subscription;

use crate::client::{Client, ClientConfig};
use crate::error::Error;
use crate::stream_marks::StreamMarks;
use crate::stream_read::ReadStreamOptions;
use crate::types::{PartitionId, Record};

pub use crate::snapshots::{SavedSnapshot, Snapshot};
pub use crate::stream_read::{ReadDirection, StreamInfo, StreamPage, StreamRecord};
pub use crate::streams::{AppendResult, EventData, Expected};
pub use catch_up::{Positioned, SubscriptionEvent};
pub use error::EventStoreError;
pub use load::{LoadedStream, LOAD_PAGES_MAX};
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

    /// Appends `events` to `stream` as one atomic batch if the stream's version is what
    /// `expected` says (checked by the broker under the partition's writer lock): all land,
    /// in order, or none. Events with an event id are retried exactly: the same append again
    /// after it landed (a timeout, a crash, a new client) is answered with the original
    /// offsets and `deduplicated`, for as long as the records are retained. Nothing here
    /// retries on its own: without event ids a blind retry could append twice.
    ///
    /// # Errors
    /// [`EventStoreError::WrongExpectedVersion`] with the stream's actual version (-1: none)
    /// when the expectation failed; nothing was appended. Client errors otherwise.
    pub async fn append(
        &self,
        stream: &StreamId,
        expected: Expected,
        events: Vec<EventData>,
    ) -> Result<AppendResult, EventStoreError> {
        let appended = self
            .client
            .append_stream(&stream.topic, stream.key.clone(), expected, events)
            .await;
        match appended {
            Ok(result) => Ok(result),
            Err(Error::ExpectationFailed { failures }) => {
                // One stream, one check: its failure is the only one the broker can report.
                let failure = failures
                    .iter()
                    .find(|failure| failure.key.as_deref() == Some(&stream.key[..]))
                    .or(failures.first())
                    .cloned();
                match failure {
                    Some(failure) => Err(EventStoreError::WrongExpectedVersion {
                        expected: failure.expected,
                        actual: failure.actual,
                    }),
                    None => Err(Error::ExpectationFailed { failures }.into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// One page of `stream`: from `from` (inclusive; backward, -1 means from the last record)
    /// in `direction`, at most `limit` records (0: the broker's page size). Continue from the
    /// page's `next_offset` until `end_of_stream` (forward) or `next_offset` -1 (backward).
    ///
    /// # Errors
    /// An unknown topic; client errors.
    pub async fn read(
        &self,
        stream: &StreamId,
        from: i64,
        direction: ReadDirection,
        limit: usize,
    ) -> Result<StreamPage, EventStoreError> {
        let options = ReadStreamOptions {
            from,
            direction,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            max_wait: std::time::Duration::ZERO,
        };
        Ok(self
            .client
            .read_stream(&stream.topic, &stream.key, options)
            .await?)
    }

    /// The stream's partition, first and last retained offsets and record count (offsets
    /// -1 and count 0 when it has no record).
    ///
    /// # Errors
    /// An unknown topic; client errors.
    pub async fn info(&self, stream: &StreamId) -> Result<StreamInfo, EventStoreError> {
        Ok(self.client.stream_info(&stream.topic, &stream.key).await?)
    }

    /// Makes the records of `stream` before `before` unreadable (the broker removes them);
    /// the stream keeps its version. See [`Client::truncate_stream`].
    ///
    /// # Errors
    /// An erased stream ([`Error::StreamErased`]), an unknown topic; client errors.
    pub async fn truncate(&self, stream: &StreamId, before: i64) -> Result<StreamMarks, EventStoreError> {
        Ok(self
            .client
            .truncate_stream(&stream.topic, &stream.key, before)
            .await?)
    }

    /// Erases every event of `stream` so far: the broker removes them within its erase
    /// deadline, reads answer [`Error::StreamErased`] and appends are refused until
    /// [`reopen`](Self::reopen). See [`Client::erase_stream`].
    ///
    /// # Errors
    /// An unknown topic; client errors.
    pub async fn erase(&self, stream: &StreamId) -> Result<StreamMarks, EventStoreError> {
        Ok(self.client.erase_stream(&stream.topic, &stream.key).await?)
    }

    /// Accepts appends to the erased `stream` again; it starts fresh (no version), its erased
    /// events stay erased. See [`Client::reopen_stream`].
    ///
    /// # Errors
    /// An unknown topic; client errors.
    pub async fn reopen(&self, stream: &StreamId) -> Result<StreamMarks, EventStoreError> {
        Ok(self.client.reopen_stream(&stream.topic, &stream.key).await?)
    }

    /// Stores `bytes` as the aggregate's state as of `at_offset` (the stream's version the
    /// state was built from: the offset of the last event applied), in the companion topic
    /// `<topic>.snapshots` (compacted, created on first use). Durable when it returns.
    ///
    /// # Errors
    /// An unknown topic; the broker's `INVALID_REQUEST` for an offset past the stream's last
    /// event; client errors.
    pub async fn save_snapshot(
        &self,
        stream: &StreamId,
        at_offset: i64,
        bytes: impl Into<bytes::Bytes>,
    ) -> Result<SavedSnapshot, EventStoreError> {
        Ok(self
            .client
            .save_snapshot(&stream.topic, &stream.key, at_offset, bytes)
            .await?)
    }

    /// The aggregate as stored: its latest snapshot and every event after it (the snapshot
    /// and the first page in one request, then further pages), with the stream's version.
    /// A snapshot past the stream's last event (the stream was truncated since) is ignored.
    ///
    /// # Errors
    /// An unknown topic; [`EventStoreError::Config`] for a stream of more than
    /// [`LOAD_PAGES_MAX`] pages after its snapshot; client errors.
    pub async fn load(&self, stream: &StreamId) -> Result<LoadedStream, EventStoreError> {
        load::load(&self.client, stream).await
    }

    /// A catch-up subscription to `stream` from `from` (inclusive): its history, then
    /// [`SubscriptionEvent::CaughtUp`], then its live records (read with the broker's per-key
    /// index, long-polling at the end), and [`SubscriptionEvent::FellBehind`] when the
    /// subscriber falls behind, each record once, in order.
    ///
    /// # Errors
    /// An unknown topic, or the broker unreachable.
    pub async fn subscribe(
        &self,
        stream: &StreamId,
        from: i64,
    ) -> Result<Subscription<StreamRecord>, EventStoreError> {
        // Fail here, not in the subscription's first read, for a topic that does not exist.
        self.client.topic(&stream.topic).await?;
        let source = sources::StreamSource::new(self.client.clone(), stream.clone(), &self.subscriptions);
        Subscription::start(source, from, self.subscriptions.clone())
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
