//! cqrs-es's `PersistedEventRepository` over Tidelog's `EventStore`.
//!
//! Layout: one topic per aggregate type (`{topic_prefix}{A::TYPE}`), one stream per aggregate
//! instance (the aggregate id is the record key, so an aggregate's events sit in one partition,
//! in order). A record's value is the event's payload as JSON; its headers carry the event's
//! type, version, cqrs-es sequence number and metadata (JSON), and a random event id.
//!
//! Optimistic locking is the broker's: `persist` appends with `no_stream` for a new aggregate,
//! otherwise with `exact(offset of the event the aggregate was loaded at)`, checked under the
//! partition's writer lock. A conflict is cqrs-es's `OptimisticLockError`. A timed-out append is
//! retried with the same event ids, which the broker answers with the original offsets if the
//! first attempt landed (an exact idempotent retry), never a second copy.
//!
//! Snapshots (`PersistedEventStore::new_snapshot_store` or `new_aggregate_store`, with the
//! matching [`RepositoryConfig::snapshots`]) are Tidelog stream snapshots (`crate::snapshots`):
//! stored at the offset of the last event they cover in the compacted `<topic>.snapshots`,
//! and loaded with only the events after them. With the default [`Snapshots::Disabled`]
//! `get_snapshot` finds none and `persist` refuses a snapshot update.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayFeed, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use serde_json::Value;
use tidelog_client::event_store::{
    EventData, EventStore, EventStoreError, Expected, ReadDirection, StreamId, SubscriptionEvent,
};
use tidelog_client::snapshots::snapshot_topic_name;
use tidelog_client::{ErrorCode, NewTopic, Record};

use crate::snapshots::{Snapshots, StoredSnapshot};

/// Header with the event's type (`DomainEvent::event_type`).
pub const EVENT_TYPE_HEADER: &str = "cqrs-event-type";
/// Header with the event's version (`DomainEvent::event_version`).
pub const EVENT_VERSION_HEADER: &str = "cqrs-event-version";
/// Header with the event's cqrs-es sequence number (1 for an aggregate's first event), decimal.
pub const SEQUENCE_HEADER: &str = "cqrs-sequence";
/// Header with the event's metadata, a JSON object of strings.
pub const METADATA_HEADER: &str = "cqrs-metadata";

/// Settings of a [`TidelogEventRepository`].
#[derive(Debug, Clone)]
pub struct RepositoryConfig {
    topic_prefix: String,
    partitions: u32,
    page_records: usize,
    append_attempts_max: u32,
    replay_queue_events: usize,
    snapshots: Snapshots,
}

impl RepositoryConfig {
    pub const TOPIC_PREFIX_DEFAULT: &'static str = "cqrs.";
    pub const PARTITIONS_DEFAULT: u32 = 4;
    pub const PAGE_RECORDS_DEFAULT: usize = 500;
    pub const APPEND_ATTEMPTS_MAX_DEFAULT: u32 = 3;
    pub const REPLAY_QUEUE_EVENTS_DEFAULT: usize = 256;

    /// Topics are named `{prefix}{A::TYPE}`.
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    /// Partitions of a topic the repository creates (an existing topic is used as it is).
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Records asked for per read while loading an aggregate.
    pub fn page_records(mut self, records: usize) -> Self {
        self.page_records = records.max(1);
        self
    }

    /// Attempts of one append when it fails transiently (same event ids each time).
    pub fn append_attempts_max(mut self, attempts: u32) -> Self {
        self.append_attempts_max = attempts.max(1);
        self
    }

    /// Events a replay stream buffers ahead of its reader.
    pub fn replay_queue_events(mut self, events: usize) -> Self {
        self.replay_queue_events = events.max(1);
        self
    }

    /// Which `PersistedEventStore` the repository serves (its snapshots; see [`Snapshots`]).
    pub fn snapshots(mut self, snapshots: Snapshots) -> Self {
        self.snapshots = snapshots;
        self
    }
}

impl Default for RepositoryConfig {
    fn default() -> Self {
        Self {
            topic_prefix: Self::TOPIC_PREFIX_DEFAULT.to_owned(),
            partitions: Self::PARTITIONS_DEFAULT,
            page_records: Self::PAGE_RECORDS_DEFAULT,
            append_attempts_max: Self::APPEND_ATTEMPTS_MAX_DEFAULT,
            replay_queue_events: Self::REPLAY_QUEUE_EVENTS_DEFAULT,
            snapshots: Snapshots::Disabled,
        }
    }
}

/// The repository: give it to `PersistedEventStore::new_event_store`.
#[derive(Debug, Clone)]
pub struct TidelogEventRepository {
    store: EventStore,
    config: RepositoryConfig,
    /// Topics known to exist, so `persist` asks the broker once per aggregate type.
    topics: Arc<Mutex<HashSet<String>>>,
}

impl TidelogEventRepository {
    pub fn new(store: EventStore) -> Self {
        Self::with_config(store, RepositoryConfig::default())
    }

    pub fn with_config(store: EventStore, config: RepositoryConfig) -> Self {
        Self {
            store,
            config,
            topics: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// The topic holding aggregates of type `A`.
    pub fn topic<A: Aggregate>(&self) -> String {
        format!("{}{}", self.config.topic_prefix, A::TYPE)
    }

    /// The stream of one aggregate instance.
    pub fn stream<A: Aggregate>(&self, aggregate_id: &str) -> StreamId {
        StreamId::new(self.topic::<A>(), Bytes::copy_from_slice(aggregate_id.as_bytes()))
    }

    fn topic_known(&self, topic: &str) -> bool {
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(topic)
    }

    async fn ensure_topic(&self, topic: &str) -> Result<(), PersistenceError> {
        if self.topic_known(topic) {
            return Ok(());
        }
        let admin = self.store.client().admin();
        match admin
            .create_topic(NewTopic::new(topic, self.config.partitions))
            .await
        {
            Ok(()) => {}
            Err(error) if error.code() == Some(ErrorCode::TopicAlreadyExists) => {}
            Err(error) => return Err(connection_error(error.into())),
        }
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(topic.to_owned());
        Ok(())
    }

    /// The aggregate's events with a sequence above `after_sequence`, oldest first.
    async fn load<A: Aggregate>(
        &self,
        aggregate_id: &str,
        after_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let stream = self.stream::<A>(aggregate_id);
        let mut events = Vec::new();
        let mut from = 0;
        loop {
            let page = match self
                .store
                .read(&stream, from, ReadDirection::Forward, self.config.page_records)
                .await
            {
                Ok(page) => page,
                // No topic yet: no aggregate of this type was ever persisted.
                Err(error) if is_unknown_topic(&error) => return Ok(Vec::new()),
                Err(error) => return Err(connection_error(error)),
            };
            for record in &page.records {
                let event = record_event::<A>(record)?;
                if event.sequence > after_sequence {
                    events.push(event);
                }
            }
            // Bounded: every page moves `from` forward, or the loop ends.
            if page.end_of_stream || page.next_offset <= from {
                return Ok(events);
            }
            from = page.next_offset;
        }
    }

    /// The events after `last_sequence` by way of the stream's snapshot: one load of the
    /// snapshot and the events after it, when that snapshot is the one covering `last_sequence`
    /// (the one `get_snapshot` just returned); otherwise a read of the whole stream.
    async fn load_after_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let stream = self.stream::<A>(aggregate_id);
        let loaded = match self.store.load(&stream).await {
            Ok(loaded) => loaded,
            Err(error) if is_unknown_topic(&error) => return Ok(Vec::new()),
            Err(error) => return Err(connection_error(error)),
        };
        let covers = loaded
            .snapshot
            .as_ref()
            .and_then(|snapshot| serde_json::from_slice::<StoredSnapshot>(&snapshot.bytes).ok())
            .is_some_and(|stored| stored.current_sequence == last_sequence);
        if !covers {
            // A newer snapshot was saved meanwhile (or none is left): its events do not start
            // at `last_sequence`.
            return self.load::<A>(aggregate_id, last_sequence).await;
        }
        let mut events = Vec::with_capacity(loaded.events.len());
        for record in &loaded.events {
            let event = record_event::<A>(record)?;
            if event.sequence > last_sequence {
                events.push(event);
            }
        }
        Ok(events)
    }

    /// Stores the snapshot of a commit whose events landed at `offsets`: at the offset of the
    /// last event it covers. The events are the truth: a snapshot that cannot be stored is
    /// logged, and the next one replaces it.
    async fn save_snapshot(
        &self,
        stream: &StreamId,
        update: (Value, usize),
        first_sequence: usize,
        covered: usize,
        offsets: &[i64],
    ) {
        let (aggregate, current_snapshot) = update;
        let Some(at_offset) = covered.checked_sub(1).and_then(|last| offsets.get(last)) else {
            tracing::warn!(%stream, covered, landed = offsets.len(), "snapshot not stored: its events did not all land");
            return;
        };
        let stored = StoredSnapshot {
            aggregate,
            current_sequence: first_sequence - 1 + covered,
            current_snapshot,
        };
        let bytes = match serde_json::to_vec(&stored) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%stream, %error, "snapshot not stored: it does not serialize");
                return;
            }
        };
        if let Err(error) = self.store.save_snapshot(stream, *at_offset, bytes).await {
            tracing::warn!(%stream, %error, "snapshot not stored; loads replay the events instead");
        }
    }

    /// The expectation that makes the append fail if anyone wrote after the aggregate was
    /// loaded: none when it had no events, else exactly its last event's offset, which must
    /// carry the sequence before ours.
    async fn expectation<A: Aggregate>(
        &self,
        stream: &StreamId,
        first_sequence: usize,
    ) -> Result<Expected, PersistenceError> {
        if first_sequence <= 1 {
            return Ok(Expected::NoStream);
        }
        let last = self
            .store
            .read(stream, -1, ReadDirection::Backward, 1)
            .await
            .map_err(connection_error)?;
        let Some(record) = last.records.first() else {
            // Loaded with events, and now there are none: someone else's history, or retention.
            return Err(PersistenceError::OptimisticLockError);
        };
        let last_sequence = record_event::<A>(record)?.sequence;
        if last_sequence + 1 != first_sequence {
            return Err(PersistenceError::OptimisticLockError);
        }
        Ok(Expected::Exact(record.offset().get()))
    }
}

impl PersistedEventRepository for TidelogEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.load::<A>(aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        if self.config.snapshots == Snapshots::Disabled || last_sequence == 0 {
            return self.load::<A>(aggregate_id, last_sequence).await;
        }
        self.load_after_snapshot::<A>(aggregate_id, last_sequence).await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        if self.config.snapshots == Snapshots::Disabled {
            return Ok(None);
        }
        let stream = self.stream::<A>(aggregate_id);
        // The latest snapshot only: one backward lookup in the companion topic's key index.
        let snapshots = StreamId::new(snapshot_topic_name(&stream.topic), stream.key.clone());
        let page = match self.store.read(&snapshots, -1, ReadDirection::Backward, 1).await {
            Ok(page) => page,
            Err(error) if is_unknown_topic(&error) => return Ok(None),
            Err(error) => return Err(connection_error(error)),
        };
        let Some(value) = page.records.first().and_then(|record| record.value()) else {
            return Ok(None);
        };
        let stored: StoredSnapshot = serde_json::from_slice(value)?;
        Ok(Some(SerializedSnapshot {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: stored.aggregate,
            current_sequence: stored.current_sequence,
            current_snapshot: stored.current_snapshot,
        }))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        // Checked before anything is appended: a snapshot this repository would mislabel is
        // refused with the commit.
        let covered = self.config.snapshots.covered(first.sequence - 1, events.len());
        let snapshot_update = match snapshot_update {
            None => None,
            Some(_) if covered == 0 => {
                return Err(PersistenceError::UnknownError(
                    "a snapshot update the repository's RepositoryConfig::snapshots does not expect: give it the \
                     PersistedEventStore's snapshot setting"
                        .into(),
                ))
            }
            Some((_, aggregate, current_snapshot)) => Some((aggregate, current_snapshot)),
        };
        let topic = self.topic::<A>();
        self.ensure_topic(&topic).await?;
        let stream = self.stream::<A>(&first.aggregate_id);
        let expected = self.expectation::<A>(&stream, first.sequence).await?;
        let data = events.iter().map(event_data).collect::<Result<Vec<_>, _>>()?;
        let mut attempt = 1;
        loop {
            match self.store.append(&stream, expected, data.clone()).await {
                Ok(appended) => {
                    if let Some(update) = snapshot_update {
                        self.save_snapshot(&stream, update, first.sequence, covered, &appended.offsets)
                            .await;
                    }
                    return Ok(());
                }
                Err(EventStoreError::WrongExpectedVersion { .. }) => {
                    return Err(PersistenceError::OptimisticLockError)
                }
                // Same event ids: if the first attempt landed, the broker answers with it.
                Err(error) if error.is_retriable() && attempt < self.config.append_attempts_max => {
                    tracing::debug!(%error, attempt, %stream, "append failed transiently; retrying with the same event ids");
                    attempt += 1;
                }
                Err(error) => return Err(connection_error(error)),
            }
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let (mut feed, stream) = ReplayStream::new(self.config.replay_queue_events);
        let repository = self.clone();
        let aggregate_id = aggregate_id.to_owned();
        tokio::spawn(async move {
            match repository.load::<A>(&aggregate_id, 0).await {
                Ok(events) => {
                    for event in events {
                        if feed.push(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(error) => {
                    let _ = feed.push(Err(error)).await;
                }
            }
        });
        Ok(stream)
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        let (mut feed, stream) = ReplayStream::new(self.config.replay_queue_events);
        let topic = self.topic::<A>();
        let partitions = match self.store.client().topic(&topic).await {
            Ok(description) => description.partition_count(),
            Err(error) if error.code() == Some(ErrorCode::UnknownTopicOrPartition) => 0,
            Err(error) => return Err(connection_error(error.into())),
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = replay_topic::<A>(&store, &topic, partitions, &mut feed).await {
                let _ = feed.push(Err(error)).await;
            }
        });
        Ok(stream)
    }
}

/// Every event of every partition of `topic` up to the end each had when reached (partition
/// by partition: an aggregate's events are in one partition, in order).
async fn replay_topic<A: Aggregate>(
    store: &EventStore,
    topic: &str,
    partitions: u32,
    feed: &mut ReplayFeed,
) -> Result<(), PersistenceError> {
    for partition in 0..partitions {
        let mut subscription = store
            .subscribe_partition(topic, partition, 0)
            .await
            .map_err(connection_error)?;
        while let Some(event) = subscription.next().await {
            match event.map_err(connection_error)? {
                SubscriptionEvent::Record(record) => {
                    if feed.push(Ok(record_event::<A>(&record)?)).await.is_err() {
                        return Ok(());
                    }
                }
                SubscriptionEvent::CaughtUp => break,
                SubscriptionEvent::FellBehind => {}
            }
        }
    }
    Ok(())
}

fn event_data(event: &SerializedEvent) -> Result<EventData, PersistenceError> {
    let value = serde_json::to_vec(&event.payload)?;
    let metadata = serde_json::to_vec(&event.metadata)?;
    Ok(EventData {
        value: Bytes::from(value),
        headers: vec![
            (
                EVENT_TYPE_HEADER.to_owned(),
                Bytes::from(event.event_type.clone()),
            ),
            (
                EVENT_VERSION_HEADER.to_owned(),
                Bytes::from(event.event_version.clone()),
            ),
            (
                SEQUENCE_HEADER.to_owned(),
                Bytes::from(event.sequence.to_string()),
            ),
            (METADATA_HEADER.to_owned(), Bytes::from(metadata)),
        ],
        // Random per append, never derived from the sequence: two writers racing for the
        // same sequence must not look like one writer's retry.
        event_id: Some(Bytes::from(uuid::Uuid::new_v4().to_string())),
    })
}

/// One record of an aggregate's stream (stream reads and partition reads return the same
/// `Record`) as cqrs-es's serialized event.
fn record_event<A: Aggregate>(record: &Record) -> Result<SerializedEvent, PersistenceError> {
    let header = |name: &str| {
        record
            .headers()
            .iter()
            .find(|header| header.key() == name)
            .and_then(|header| header.value().cloned())
    };
    let key = record.key().cloned().unwrap_or_default();
    decode_event::<A>(&key, record.value(), header)
}

fn decode_event<A: Aggregate>(
    key: &[u8],
    value: Option<&Bytes>,
    header: impl Fn(&str) -> Option<Bytes>,
) -> Result<SerializedEvent, PersistenceError> {
    let text = |name: &str| -> Result<String, PersistenceError> {
        let bytes =
            header(name).ok_or_else(|| deserialization_error(format!("event without the {name} header")))?;
        String::from_utf8(bytes.to_vec())
            .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))
    };
    let sequence = text(SEQUENCE_HEADER)?
        .parse::<usize>()
        .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
    let payload = match value {
        Some(value) => serde_json::from_slice(value)?,
        None => return Err(deserialization_error("event without a value".into())),
    };
    let metadata = match header(METADATA_HEADER) {
        Some(metadata) => serde_json::from_slice(&metadata)?,
        None => Value::Object(serde_json::Map::new()),
    };
    let aggregate_id = String::from_utf8(key.to_vec())
        .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
    Ok(SerializedEvent {
        aggregate_id,
        sequence,
        aggregate_type: A::TYPE.to_owned(),
        event_type: text(EVENT_TYPE_HEADER)?,
        event_version: text(EVENT_VERSION_HEADER)?,
        payload,
        metadata,
    })
}

fn is_unknown_topic(error: &EventStoreError) -> bool {
    matches!(error, EventStoreError::Client(error) if error.code() == Some(ErrorCode::UnknownTopicOrPartition))
}

fn connection_error(error: EventStoreError) -> PersistenceError {
    PersistenceError::ConnectionError(Box::new(error))
}

fn deserialization_error(message: String) -> PersistenceError {
    PersistenceError::DeserializationError(message.into())
}
