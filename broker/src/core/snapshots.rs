//! Snapshots of event-sourced aggregates (issue 9 §2). A stream `KEY` of topic `T` keeps its
//! snapshots in the companion topic `T.snapshots`: compacted, created on first save with `T`'s
//! partition count, one record per snapshot keyed by the stream key, the snapshot as the value,
//! and the stream offset it covers in the `tidelog-snapshot-offset` header. Compaction keeps the
//! latest snapshot of every stream; the per-key index finds it in one backward lookup.
//!
//! A save goes through the same produce path as any record (validation, the append under the
//! writer lock, the durability wait), so it is durable before it is answered. A load is one
//! call: the latest snapshot, then one page of the stream's records after the offset it covers.
//! A snapshot past the stream's last record (the stream was truncated or erased since) is
//! ignored: the aggregate is rebuilt from the records that are there.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidelog_proto::batch::{NewRecord, RecordBatchBuilder, RecordHeader};
use tidelog_proto::partitioner::try_partition_for_key;
use tracing::Instrument;

use super::produce::{Acks, ProduceInput, ProducePartition, ProduceTopic};
use super::streams::StreamReadInput;
use super::{blocking, Core, CoreError, ErrorCode};
use crate::clock::now_ms;
use crate::error::TopicError;
use crate::metadata::TopicOverrides;
use crate::net::budget::{ConnectionBudget, Reservation};
use crate::storage::{AppendConditions, CleanupPolicy, Direction, StreamInfo, StreamRead, StreamRecord};
use crate::topics::{validate_topic_name, Topic, TopicSpec};

/// What a stream topic's companion topic is named after: `<topic>.snapshots`.
pub(crate) const SNAPSHOT_TOPIC_SUFFIX: &str = ".snapshots";

/// The header holding the stream offset a snapshot covers, in decimal.
pub(crate) const SNAPSHOT_OFFSET_HEADER: &str = "tidelog-snapshot-offset";

/// The header holding the stream topic's id (its UUID, hyphenated) when the snapshot was saved:
/// a topic deleted and created again under the same name has new streams, and the snapshots
/// the companion topic still holds of the old ones are not theirs.
pub(crate) const SNAPSHOT_TOPIC_ID_HEADER: &str = "tidelog-snapshot-topic-id";

/// The companion topic holding the snapshots of `topic`'s streams.
pub(crate) fn snapshot_topic_name(topic: &str) -> String {
    format!("{topic}{SNAPSHOT_TOPIC_SUFFIX}")
}

/// One SaveSnapshot request, in domain terms.
#[derive(Debug, Clone)]
pub(crate) struct SaveSnapshotInput {
    pub topic: String,
    pub key: Bytes,
    /// The last stream offset the snapshot covers (inclusive).
    pub at_offset: i64,
    pub snapshot: Bytes,
}

/// Where a snapshot was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SavedSnapshot {
    pub snapshot_topic: String,
    pub partition: u32,
    pub offset: i64,
}

/// One LoadStream request, in domain terms.
#[derive(Debug, Clone)]
pub(crate) struct LoadStreamInput {
    pub topic: String,
    pub key: Bytes,
    /// Records of the page: 0 asks for `limits.stream_read_records_max`, which also caps it.
    pub limit: usize,
    /// Bytes of the whole answer (snapshot and records): 0 asks for the broker's page bound
    /// (`limits.stream_read_bytes_max`, at most `limits.fetch_bytes_max`), which also caps it.
    pub bytes_max: usize,
}

/// A stream's latest snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub at_offset: i64,
    pub bytes: Bytes,
    /// When it was saved (the record's timestamp).
    pub timestamp: i64,
    /// The stream topic's id when it was saved; None for a record written without the header.
    pub topic_id: Option<Bytes>,
}

/// The answer to a load.
#[derive(Debug)]
pub(crate) struct LoadedStream {
    /// The stream's partition (in the stream topic).
    pub partition: u32,
    pub snapshot: Option<Snapshot>,
    /// The first page of the stream's records after the snapshot (from its start without one).
    pub read: StreamRead,
    /// Charged for the snapshot and the records: hold it until the response has been written.
    pub reservation: Option<Reservation>,
}

impl Core {
    /// Stores `input.snapshot` as the state of the stream as of `input.at_offset`: checks the
    /// stream topic exists and the offset is at or below the stream's last record, creates the
    /// companion topic on first use, and appends the snapshot through the produce path; the
    /// answer comes once the record is durable.
    pub(crate) async fn save_snapshot(
        self: &Arc<Self>,
        input: SaveSnapshotInput,
    ) -> Result<SavedSnapshot, CoreError> {
        let span = tracing::debug_span!("save_snapshot", topic = %input.topic, at_offset = input.at_offset);
        self.save_snapshot_in_span(input).instrument(span).await
    }

    async fn save_snapshot_in_span(
        self: &Arc<Self>,
        input: SaveSnapshotInput,
    ) -> Result<SavedSnapshot, CoreError> {
        let name = self.companion_name(&input.topic)?;
        if input.at_offset < 0 {
            return Err(CoreError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "a snapshot covers an offset of the stream; {} is none",
                    input.at_offset
                ),
            ));
        }
        let Extent {
            info, erased_before, ..
        } = self.snapshot_extent(&input.topic, &input.key).await?;
        if input.at_offset < erased_before {
            return Err(CoreError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "a snapshot at offset {} of stream {:?} in topic {:?} would cover records erased before {erased_before}",
                    input.at_offset,
                    String::from_utf8_lossy(&input.key),
                    input.topic
                ),
            ));
        }
        if input.at_offset > info.last_offset {
            let last = match info.last_offset {
                -1 => "the stream has no record".to_owned(),
                last => format!("the stream's last record is at {last}"),
            };
            return Err(CoreError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "a snapshot at offset {} of stream {:?} in topic {:?} is past its end: {last}",
                    input.at_offset,
                    String::from_utf8_lossy(&input.key),
                    input.topic
                ),
            ));
        }
        let topic_id = self
            .registry
            .get(&input.topic)
            .ok_or_else(|| CoreError::unknown_topic(&input.topic))?
            .id();
        let companion = self.companion_topic(&input.topic, &name).await?;
        // Bounded by partitions_per_topic_max, a u32.
        let count = u32::try_from(companion.partitions.len()).unwrap_or(u32::MAX);
        let partition =
            try_partition_for_key(&input.key, count).ok_or_else(|| CoreError::unknown_topic(&name))?;
        let records = snapshot_record(&input.key, input.at_offset, topic_id, input.snapshot, now_ms())?;
        let produce = ProduceInput {
            acks: Acks::Leader,
            timeout: Duration::from_millis(self.config.limits.produce_timeout_ms_max),
            topics: vec![ProduceTopic {
                name: name.clone(),
                partitions: vec![ProducePartition {
                    partition,
                    records,
                    conditions: AppendConditions::default(),
                }],
            }],
        };
        let appended = self.produce(produce).appended().await;
        let durable = appended.durable().ok_or_else(|| {
            CoreError::new(ErrorCode::UnknownServerError, "internal error: no produce answer")
        })?;
        let landed = durable
            .await
            .topics
            .into_iter()
            .flat_map(|topic| topic.partitions)
            .find(|landed| landed.partition == partition)
            .ok_or_else(|| {
                CoreError::new(ErrorCode::UnknownServerError, "internal error: no produce answer")
            })?;
        let produced = landed.result?;
        tracing::debug!(snapshot_topic = %name, partition, offset = produced.base_offset, "snapshot saved");
        Ok(SavedSnapshot {
            snapshot_topic: name,
            partition,
            offset: produced.base_offset,
        })
    }

    /// The stream's latest snapshot (ignored when past the stream's last record) and one page
    /// of its records after the offset it covers, within `input`'s bounds and the connection's
    /// memory budget.
    pub(crate) async fn load_stream(
        self: &Arc<Self>,
        budget: &ConnectionBudget,
        input: LoadStreamInput,
    ) -> Result<LoadedStream, CoreError> {
        let span = tracing::debug_span!("load_stream", topic = %input.topic);
        self.load_stream_in_span(budget, input).instrument(span).await
    }

    async fn load_stream_in_span(
        self: &Arc<Self>,
        budget: &ConnectionBudget,
        input: LoadStreamInput,
    ) -> Result<LoadedStream, CoreError> {
        let name = self.companion_name(&input.topic)?;
        // The stream's extent first: an erased stream or unknown topic answers here, and a
        // snapshot past the stream's last record is recognised.
        // A stream erased and re-opened since: a snapshot from before the erasure holds what
        // was erased, and is never served.
        let Extent {
            partition,
            info,
            erased_before,
        } = self.snapshot_extent(&input.topic, &input.key).await?;
        let topic_id = self
            .registry
            .get(&input.topic)
            .map(|topic| topic.id().to_string());
        let limits = &self.config.limits;
        let page_bound = match input.bytes_max {
            0 => limits.stream_read_bytes_max,
            asked => asked.min(limits.stream_read_bytes_max),
        }
        .min(limits.fetch_bytes_max);
        let (snapshot, mut reservation) = self.latest_snapshot(budget, &name, &input.key).await?;
        let snapshot = snapshot.filter(|snapshot| {
            let same_topic = match (&snapshot.topic_id, &topic_id) {
                (Some(saved), Some(current)) => saved.as_ref() == current.as_bytes(),
                _ => true,
            };
            let usable = same_topic && usable(snapshot.at_offset, info.last_offset, erased_before);
            if !usable {
                tracing::debug!(
                    topic = %input.topic,
                    at_offset = snapshot.at_offset,
                    last_offset = info.last_offset,
                    erased_before,
                    same_topic,
                    "snapshot of an earlier topic of this name, past the stream's last record, or covering erased records, ignored"
                );
            }
            usable
        });
        if snapshot.is_none() {
            reservation = None;
        }
        let snapshot_bytes = snapshot.as_ref().map_or(0, |snapshot| snapshot.bytes.len());
        let from = snapshot.as_ref().map_or(0, |snapshot| snapshot.at_offset + 1);
        // The snapshot counts against the page bound; the records get the rest (at least one
        // record always comes back, as with any stream read).
        let read = StreamReadInput {
            topic: input.topic.clone(),
            key: input.key,
            from,
            direction: Direction::Forward,
            limit: input.limit,
            bytes_max: page_bound.saturating_sub(snapshot_bytes).max(1),
            max_wait: Duration::ZERO,
        };
        let output = self.read_stream(budget, read).await?;
        let reservation = match (reservation, output.reservation) {
            (Some(mut held), Some(more)) => {
                held.merge(more);
                Some(held)
            }
            (held, more) => held.or(more),
        };
        Ok(LoadedStream {
            partition,
            snapshot,
            read: output.read,
            reservation,
        })
    }

    /// The stream's partition, its extent as readers see it (truncations honoured) and where
    /// its latest erasure ended, read on the blocking pool.
    ///
    /// # Errors
    /// The stream read's: an unknown topic, an empty key, `STREAM_ERASED` for an erased stream
    /// (not re-opened), an offline partition.
    async fn snapshot_extent(&self, topic: &str, key: &Bytes) -> Result<Extent, CoreError> {
        if key.is_empty() {
            return Err(CoreError::new(
                ErrorCode::InvalidRequest,
                "a stream key must not be empty",
            ));
        }
        let count = self
            .partition_count(topic)
            .ok_or_else(|| CoreError::unknown_topic(topic))?;
        let partition = try_partition_for_key(key, count).ok_or_else(|| CoreError::unknown_topic(topic))?;
        let log = self.partition(topic, partition)?;
        let key = key.clone();
        let read = blocking(move || {
            let erased_before = log.stream_marks(&key).erase_before;
            log.stream_info(&key).map(|info| (info, erased_before))
        })
        .await?;
        let (info, erased_before) =
            read.map_err(|error| CoreError::partition_storage(topic, partition, &error))?;
        Ok(Extent {
            partition,
            info,
            erased_before,
        })
    }

    /// The companion topic's name, if it is a valid topic name.
    fn companion_name(&self, topic: &str) -> Result<String, CoreError> {
        let name = snapshot_topic_name(topic);
        let name_bytes_max = self.config.limits.topic_name_bytes_max;
        if validate_topic_name(topic, name_bytes_max).is_ok()
            && validate_topic_name(&name, name_bytes_max).is_err()
        {
            return Err(CoreError::new(
                ErrorCode::InvalidTopic,
                format!(
                    "topic {topic:?} cannot have snapshots: its companion topic {name:?} would be longer than \
                     limits.topic_name_bytes_max ({name_bytes_max} bytes)"
                ),
            ));
        }
        Ok(name)
    }

    /// The companion topic, created (compacted, with the stream topic's partition count) if it
    /// does not exist yet. Concurrent first saves all succeed: one creates it, the others find
    /// it.
    async fn companion_topic(self: &Arc<Self>, topic: &str, name: &str) -> Result<Arc<Topic>, CoreError> {
        if let Some(found) = self.registry.get(name) {
            return Ok(found);
        }
        let partitions = self
            .partition_count(topic)
            .ok_or_else(|| CoreError::unknown_topic(topic))?;
        let spec = TopicSpec {
            name: name.to_owned(),
            partitions: Some(partitions),
            overrides: compacted(),
        };
        let core = self.clone();
        let name = name.to_owned();
        blocking(move || match core.registry.create(spec, now_ms()) {
            Ok(created) => {
                tracing::info!(topic = %name, partitions = created.partitions.len(), "snapshot topic created on first save");
                Ok(created)
            }
            // Another save created it meanwhile (creates are serialised by the registry).
            Err(TopicError::AlreadyExists(_)) => core.registry.get(&name).ok_or_else(|| CoreError::unknown_topic(&name)),
            Err(error) => {
                tracing::warn!(topic = %name, %error, "could not create the snapshot topic");
                Err(CoreError::from(error))
            }
        })
        .await?
    }

    /// The latest record of `key` in the companion topic as a snapshot, and what reading it
    /// cost the budget. None: the topic does not exist, the key has no snapshot, or its latest
    /// record is not one (a tombstone, or a record without a valid offset header).
    async fn latest_snapshot(
        self: &Arc<Self>,
        budget: &ConnectionBudget,
        name: &str,
        key: &Bytes,
    ) -> Result<(Option<Snapshot>, Option<Reservation>), CoreError> {
        if self.registry.get(name).is_none() {
            return Ok((None, None));
        }
        let read = StreamReadInput {
            topic: name.to_owned(),
            key: key.clone(),
            from: -1,
            direction: Direction::Backward,
            limit: 1,
            bytes_max: 0,
            max_wait: Duration::ZERO,
        };
        let output = self.read_stream(budget, read).await?;
        let reservation = output.reservation;
        let snapshot = output.read.records.into_iter().next().and_then(|record| {
            let snapshot = as_snapshot(&record);
            if snapshot.is_none() {
                tracing::warn!(
                    topic = %name,
                    offset = record.offset,
                    "the latest record of a stream in its snapshot topic is no snapshot (a tombstone, or no valid {SNAPSHOT_OFFSET_HEADER} header): loading without one"
                );
            }
            snapshot
        });
        Ok((snapshot, reservation))
    }
}

/// A stream as a save or a load checks it.
struct Extent {
    partition: u32,
    info: StreamInfo,
    /// The latest erasure's `erase_before` (-1: never erased).
    erased_before: i64,
}

/// Whether a snapshot at `at_offset` may be loaded with the stream: not past its version
/// (`last_offset`: the stream was truncated or erased after the snapshot, or it is not one of
/// this stream's snapshots) and not covering records of an erasure (`erased_before`, -1: none).
/// A truncation keeps the stream's version, so a snapshot older than the truncation point still
/// loads: it is the state the records the truncation removed led to.
fn usable(at_offset: i64, last_offset: i64, erased_before: i64) -> bool {
    at_offset <= last_offset && at_offset >= erased_before
}

/// A companion topic's settings: compacted, so the latest snapshot of every stream is kept.
/// Only the policy is set: the rest follows the broker's `[log]` defaults, as for any topic.
fn compacted() -> TopicOverrides {
    TopicOverrides {
        cleanup_policy: Some(CleanupPolicy::Compact.to_string()),
        ..TopicOverrides::default()
    }
}

/// One record batch holding the snapshot record.
fn snapshot_record(
    key: &Bytes,
    at_offset: i64,
    topic_id: uuid::Uuid,
    snapshot: Bytes,
    now_ms: i64,
) -> Result<Bytes, CoreError> {
    let mut builder = RecordBatchBuilder::new();
    builder.push(&NewRecord {
        timestamp: now_ms,
        key: Some(key.clone()),
        value: Some(snapshot),
        headers: vec![
            RecordHeader {
                key: SNAPSHOT_OFFSET_HEADER.to_owned(),
                value: Some(Bytes::from(at_offset.to_string())),
            },
            RecordHeader {
                key: SNAPSHOT_TOPIC_ID_HEADER.to_owned(),
                value: Some(Bytes::from(topic_id.to_string())),
            },
        ],
    });
    builder.build().ok_or_else(|| {
        CoreError::new(
            ErrorCode::UnknownServerError,
            "internal error: empty snapshot batch",
        )
    })
}

/// A companion topic's record as a snapshot: a value, and a header holding a non-negative
/// decimal offset.
fn as_snapshot(record: &StreamRecord) -> Option<Snapshot> {
    let bytes = record.value.clone()?;
    let header = |wanted: &str| {
        record
            .headers
            .iter()
            .rev()
            .find(|(name, _)| name == wanted)
            .and_then(|(_, value)| value.clone())
    };
    let at_offset = header(SNAPSHOT_OFFSET_HEADER)
        .as_ref()
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|text| text.parse::<i64>().ok())
        .filter(|offset| *offset >= 0)?;
    Some(Snapshot {
        at_offset,
        bytes,
        timestamp: record.timestamp,
        topic_id: header(SNAPSHOT_TOPIC_ID_HEADER),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidelog_proto::batch::RecordBatch;

    #[test]
    fn the_companion_topic_is_named_by_convention() {
        assert_eq!(snapshot_topic_name("orders"), "orders.snapshots");
    }

    #[test]
    fn a_snapshot_record_carries_the_key_the_bytes_and_the_offset_header() {
        let id = uuid::Uuid::new_v4();
        let batch = snapshot_record(&Bytes::from("order-7"), 41, id, Bytes::from("state"), 1_000).unwrap();
        let (batch, rest) = RecordBatch::split_first(&batch).unwrap();
        assert!(rest.is_empty());
        let records: Vec<_> = batch.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.key.as_deref(), Some(&b"order-7"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"state"[..]));
        assert_eq!(record.headers.len(), 2);
        assert_eq!(record.headers[0].key, SNAPSHOT_OFFSET_HEADER);
        assert_eq!(record.headers[0].value.as_deref(), Some(&b"41"[..]));
        assert_eq!(record.headers[1].key, SNAPSHOT_TOPIC_ID_HEADER);
        assert_eq!(
            record.headers[1].value.as_deref(),
            Some(id.to_string().as_bytes())
        );
    }

    fn stored(value: Option<&'static str>, headers: Vec<(&str, Option<&'static str>)>) -> StreamRecord {
        StreamRecord {
            offset: 3,
            timestamp: 99,
            key: Bytes::from("k"),
            value: value.map(Bytes::from),
            headers: headers
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value.map(Bytes::from)))
                .collect(),
        }
    }

    #[test]
    fn a_stored_snapshot_is_read_back_with_its_offset_and_time() {
        let record = stored(
            Some("state"),
            vec![("other", Some("x")), (SNAPSHOT_OFFSET_HEADER, Some("17"))],
        );
        assert_eq!(
            as_snapshot(&record),
            Some(Snapshot {
                at_offset: 17,
                bytes: Bytes::from("state"),
                timestamp: 99,
                topic_id: None,
            })
        );
        let record = stored(
            Some("state"),
            vec![
                (SNAPSHOT_OFFSET_HEADER, Some("17")),
                (SNAPSHOT_TOPIC_ID_HEADER, Some("id-1")),
            ],
        );
        assert_eq!(
            as_snapshot(&record).and_then(|snapshot| snapshot.topic_id),
            Some(Bytes::from("id-1"))
        );
    }

    #[test]
    fn a_snapshot_loads_unless_past_the_streams_version_or_covering_an_erasure() {
        assert!(usable(5, 9, -1));
        assert!(usable(9, 9, -1), "at the stream's last record");
        assert!(!usable(10, 9, -1), "past it");
        assert!(!usable(0, -1, -1), "a stream with no record");
        assert!(usable(20, 30, 20), "after a re-opened erasure");
        assert!(!usable(19, 30, 20), "covering the erased records");
    }

    #[test]
    fn tombstones_and_records_without_a_valid_offset_are_no_snapshot() {
        let header = |value| vec![(SNAPSHOT_OFFSET_HEADER, value)];
        assert_eq!(as_snapshot(&stored(None, header(Some("17")))), None);
        assert_eq!(as_snapshot(&stored(Some("s"), Vec::new())), None);
        assert_eq!(as_snapshot(&stored(Some("s"), header(None))), None);
        assert_eq!(as_snapshot(&stored(Some("s"), header(Some("seventeen")))), None);
        assert_eq!(as_snapshot(&stored(Some("s"), header(Some("-1")))), None);
    }
}
