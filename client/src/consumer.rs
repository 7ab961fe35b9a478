//! [`Consumer`]: reads assigned partitions. It keeps one fetch in flight per partition leader
//! (long-polling on the broker), issues the next fetch before handing out the records of the
//! last one (so fetching overlaps processing), skips the records of a returned batch that lie
//! before the fetch offset, and handles OFFSET_OUT_OF_RANGE by the configured reset policy.
//!
//! Memory is bounded by one buffered fetch response plus one in flight per leader, each at
//! most `fetch_max_bytes`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tidelog_proto::batch::{compute_crc, BatchIter, DECOMPRESSED_BYTES_MAX_DEFAULT};
use tidelog_proto::pb;
use tidelog_proto::BatchError;
use tokio::time::Instant;

use crate::admin::list_offsets;
use crate::client::Client;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::types::{ErrorCode, Header, Offset, OffsetSpec, PartitionId, Record, TopicName};
use crate::wire;

/// Response bytes allowed beyond `fetch_max_bytes` for framing and per-partition fields.
const FETCH_RESPONSE_OVERHEAD_BYTES: usize = 64 * 1024;

/// What to do when the position is outside the log (OFFSET_OUT_OF_RANGE), and where newly
/// assigned partitions start before any seek.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// Jump to the oldest record.
    Earliest,
    /// Jump to the end (new partitions start here too).
    #[default]
    Latest,
    /// Report [`Error::OffsetOutOfRange`] from `poll`; new partitions start at the end.
    Error,
}

/// Where to move a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    Offset(Offset),
    Earliest,
    Latest,
    /// The first record at or after this time (ms since the Unix epoch); the end when none.
    Timestamp(i64),
}

/// Consumer settings. Build with [`ConsumerConfig::default`] and the chained setters.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    fetch_max_wait: Duration,
    fetch_min_bytes: u32,
    fetch_max_bytes: u32,
    partition_fetch_max_bytes: u32,
    max_poll_records: usize,
    offset_reset: OffsetReset,
    check_crcs: bool,
    batch_decompressed_bytes_max: usize,
}

impl ConsumerConfig {
    pub const FETCH_MAX_WAIT_DEFAULT: Duration = Duration::from_millis(500);
    pub const FETCH_MIN_BYTES_DEFAULT: u32 = 1;
    pub const FETCH_MAX_BYTES_DEFAULT: u32 = 50 * 1024 * 1024;
    pub const PARTITION_FETCH_MAX_BYTES_DEFAULT: u32 = 1024 * 1024;
    pub const MAX_POLL_RECORDS_DEFAULT: usize = 1000;
    /// The broker's default `limits.batch_decompressed_bytes_max`.
    pub const BATCH_DECOMPRESSED_BYTES_MAX_DEFAULT: usize = DECOMPRESSED_BYTES_MAX_DEFAULT;

    /// How long the broker may hold a fetch waiting for `fetch_min_bytes`.
    pub fn fetch_max_wait(mut self, wait: Duration) -> Self {
        self.fetch_max_wait = wait;
        self
    }

    pub fn fetch_min_bytes(mut self, bytes: u32) -> Self {
        self.fetch_min_bytes = bytes;
        self
    }

    /// Bound on one fetch response (the first batch is returned even when larger).
    pub fn fetch_max_bytes(mut self, bytes: u32) -> Self {
        self.fetch_max_bytes = bytes;
        self
    }

    pub fn partition_fetch_max_bytes(mut self, bytes: u32) -> Self {
        self.partition_fetch_max_bytes = bytes;
        self
    }

    /// Records returned by one `poll` at most.
    pub fn max_poll_records(mut self, records: usize) -> Self {
        self.max_poll_records = records;
        self
    }

    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }

    /// Verify each batch's CRC32C before handing out its records.
    pub fn check_crcs(mut self, check: bool) -> Self {
        self.check_crcs = check;
        self
    }

    /// Bound on a compressed batch's records once decompressed; a batch past it is reported
    /// as corrupt rather than held in memory (a decompression bomb).
    pub fn batch_decompressed_bytes_max(mut self, bytes: usize) -> Self {
        self.batch_decompressed_bytes_max = bytes;
        self
    }

    pub(crate) fn offset_reset_value(&self) -> OffsetReset {
        self.offset_reset
    }

    pub(crate) fn max_poll_records_value(&self) -> usize {
        self.max_poll_records
    }

    pub(crate) fn validate(&self, max_frame_bytes: usize) -> Result<()> {
        if self.max_poll_records == 0 {
            return Err(Error::Config("max_poll_records must be at least 1".into()));
        }
        if self.fetch_max_bytes == 0 || self.partition_fetch_max_bytes == 0 {
            return Err(Error::Config("fetch byte limits must be at least 1".into()));
        }
        if self.fetch_max_bytes as usize + FETCH_RESPONSE_OVERHEAD_BYTES > max_frame_bytes {
            return Err(Error::Config(format!(
                "fetch_max_bytes ({}) must leave {FETCH_RESPONSE_OVERHEAD_BYTES} bytes of room under the \
                 client's max_frame_bytes ({max_frame_bytes})",
                self.fetch_max_bytes
            )));
        }
        Ok(())
    }
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            fetch_max_wait: Self::FETCH_MAX_WAIT_DEFAULT,
            fetch_min_bytes: Self::FETCH_MIN_BYTES_DEFAULT,
            fetch_max_bytes: Self::FETCH_MAX_BYTES_DEFAULT,
            partition_fetch_max_bytes: Self::PARTITION_FETCH_MAX_BYTES_DEFAULT,
            max_poll_records: Self::MAX_POLL_RECORDS_DEFAULT,
            offset_reset: OffsetReset::default(),
            check_crcs: true,
            batch_decompressed_bytes_max: Self::BATCH_DECOMPRESSED_BYTES_MAX_DEFAULT,
        }
    }
}

type TopicPartition = (TopicName, PartitionId);
/// A partition to fetch: where from, and the seek epoch the fetch was sent under.
type FetchTarget = (TopicPartition, Offset, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    At(Offset),
    /// Must be looked up (ListOffsets) before fetching.
    Lookup(OffsetSpec),
}

#[derive(Debug)]
struct PartitionState {
    position: Position,
    /// Bumped by every seek, so a fetch sent before it is recognised and ignored.
    epoch: u64,
    /// As the last fetch answer for the partition reported it.
    high_watermark: Option<Offset>,
}

/// What a fetch asked for, to match the response against.
#[derive(Debug)]
struct FetchDone {
    addr: String,
    sent: HashMap<TopicPartition, (Offset, u64)>,
    result: Result<pb::response::Body>,
}

/// Reads records from explicitly assigned partitions.
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    buffer: VecDeque<Record>,
    fetches: FuturesUnordered<BoxFuture<'static, FetchDone>>,
    /// Leader addresses with a fetch in flight: at most one each.
    fetching: HashSet<String>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("partitions", &self.partitions)
            .field("buffered_records", &self.buffer.len())
            .field("fetching", &self.fetching)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// # Errors
    /// [`Error::Config`] for inconsistent limits.
    pub fn new(client: Client, config: ConsumerConfig) -> Result<Consumer> {
        config.validate(client.config().max_frame_bytes_value())?;
        Ok(Consumer {
            client,
            config,
            partitions: BTreeMap::new(),
            buffer: VecDeque::new(),
            fetches: FuturesUnordered::new(),
            fetching: HashSet::new(),
        })
    }

    /// Adds partitions of `topic` to the assignment (every partition when `partitions` is
    /// empty). They start where the reset policy points until [`seek`](Self::seek) moves them.
    ///
    /// # Errors
    /// [`Error::UnknownTopicOrPartition`] for a missing topic or partition.
    pub async fn assign(&mut self, topic: impl Into<TopicName>, partitions: &[PartitionId]) -> Result<()> {
        let topic = topic.into();
        let description = self.client.topic(topic.as_str()).await?;
        let wanted: Vec<PartitionId> = if partitions.is_empty() {
            description.partitions().iter().map(|p| p.partition()).collect()
        } else {
            partitions.to_vec()
        };
        for partition in &wanted {
            if description.partition(*partition).is_none() {
                return Err(Error::UnknownTopicOrPartition {
                    topic: topic.to_string(),
                    partition: Some(*partition),
                });
            }
        }
        let start = match self.config.offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest | OffsetReset::Error => OffsetSpec::Latest,
        };
        for partition in wanted {
            self.partitions
                .entry((topic.clone(), partition))
                .or_insert(PartitionState {
                    position: Position::Lookup(start),
                    epoch: 0,
                    high_watermark: None,
                });
        }
        Ok(())
    }

    /// Removes partitions from the assignment and drops their buffered records; a fetch in
    /// flight for them is ignored when it returns. Partitions not assigned are skipped.
    pub fn unassign(&mut self, partitions: &[(TopicName, PartitionId)]) {
        for key in partitions {
            self.partitions.remove(key);
        }
        self.buffer
            .retain(|r| !partitions.iter().any(|(t, p)| *t == r.topic && *p == r.partition));
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(TopicName, PartitionId)> {
        self.partitions.keys().cloned().collect()
    }

    /// Moves a partition's position; records buffered for it are dropped.
    ///
    /// # Errors
    /// [`Error::NotAssigned`] when the partition is not assigned.
    pub fn seek(&mut self, topic: &str, partition: PartitionId, to: Seek) -> Result<()> {
        let key = (TopicName::new(topic), partition);
        let state = self.partitions.get_mut(&key).ok_or_else(|| Error::NotAssigned {
            topic: topic.to_owned(),
            partition,
        })?;
        state.epoch += 1;
        state.position = match to {
            Seek::Offset(offset) => Position::At(offset),
            Seek::Earliest => Position::Lookup(OffsetSpec::Earliest),
            Seek::Latest => Position::Lookup(OffsetSpec::Latest),
            Seek::Timestamp(ms) => Position::Lookup(OffsetSpec::Timestamp(ms)),
        };
        self.buffer
            .retain(|r| !(r.topic.as_str() == topic && r.partition == partition));
        Ok(())
    }

    /// The offset of the next record `poll` will return for the partition, once known.
    pub fn position(&self, topic: &str, partition: PartitionId) -> Option<Offset> {
        if let Some(record) = self
            .buffer
            .iter()
            .find(|r| r.topic.as_str() == topic && r.partition == partition)
        {
            return Some(record.offset);
        }
        match self.partitions.get(&(TopicName::new(topic), partition))?.position {
            Position::At(offset) => Some(offset),
            Position::Lookup(_) => None,
        }
    }

    /// The partition's high watermark (the offset after its last readable record) as the
    /// latest fetch answer reported it; `None` before the first answer. Catch-up subscriptions
    /// compare it with [`position`](Self::position) to know they reached the end.
    pub fn high_watermark(&self, topic: &str, partition: PartitionId) -> Option<Offset> {
        self.partitions
            .get(&(TopicName::new(topic), partition))?
            .high_watermark
    }

    /// Waits up to `timeout` for records and returns at most `max_poll_records` of them; an
    /// empty `Vec` when none arrived in time.
    ///
    /// # Errors
    /// Connection failures, [`Error::OffsetOutOfRange`] under [`OffsetReset::Error`],
    /// [`Error::CorruptBatch`], broker errors. The consumer stays usable: the next poll
    /// reconnects and retries.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<Record>> {
        let deadline = deadline_after(timeout);
        loop {
            self.resolve_positions().await?;
            self.start_fetches().await?;
            if !self.buffer.is_empty() {
                let take = self.buffer.len().min(self.config.max_poll_records);
                return Ok(self.buffer.drain(..take).collect());
            }
            if self.fetches.is_empty() {
                return Ok(Vec::new());
            }
            match tokio::time::timeout_at(deadline, self.fetches.next()).await {
                Err(_) => return Ok(Vec::new()),
                Ok(None) => continue,
                Ok(Some(done)) => self.handle_fetch(done)?,
            }
        }
    }

    /// Looks up the offsets of partitions waiting for one (after assign, seek or a reset).
    async fn resolve_positions(&mut self) -> Result<()> {
        let mut lookups: BTreeMap<(TopicName, SpecKey), Vec<PartitionId>> = BTreeMap::new();
        for ((topic, partition), state) in &self.partitions {
            if let Position::Lookup(spec) = state.position {
                lookups
                    .entry((topic.clone(), SpecKey(spec)))
                    .or_default()
                    .push(*partition);
            }
        }
        for ((topic, SpecKey(spec)), partitions) in lookups {
            let mut found = list_offsets(&self.client, topic.as_str(), &partitions, spec).await?;
            let missing: Vec<PartitionId> = found
                .iter()
                .filter(|f| f.offset().is_none())
                .map(|f| f.partition())
                .collect();
            if !missing.is_empty() {
                // No record at or after the timestamp: start at the end, as Kafka consumers do.
                found.extend(list_offsets(&self.client, topic.as_str(), &missing, OffsetSpec::Latest).await?);
            }
            for answer in found {
                let Some(offset) = answer.offset() else { continue };
                if let Some(state) = self.partitions.get_mut(&(topic.clone(), answer.partition())) {
                    if state.position == Position::Lookup(spec) {
                        state.position = Position::At(offset);
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a fetch to every leader that has fetchable partitions and none in flight.
    async fn start_fetches(&mut self) -> Result<()> {
        let mut by_leader: BTreeMap<String, (Connection, Vec<FetchTarget>)> = BTreeMap::new();
        for ((topic, partition), state) in &self.partitions {
            let Position::At(offset) = state.position else {
                continue;
            };
            let connection = self.client.leader_connection(topic.as_str(), *partition).await?;
            if self.fetching.contains(connection.addr()) {
                continue;
            }
            by_leader
                .entry(connection.addr().to_owned())
                .or_insert_with(|| (connection, Vec::new()))
                .1
                .push(((topic.clone(), *partition), offset, state.epoch));
        }
        for (addr, (connection, partitions)) in by_leader {
            let mut topics: Vec<pb::fetch_request::Topic> = Vec::new();
            for ((topic, partition), offset, _) in &partitions {
                let entry = pb::fetch_request::Partition {
                    partition: partition.get(),
                    fetch_offset: offset.get(),
                    max_bytes: self.config.partition_fetch_max_bytes,
                };
                match topics.iter_mut().find(|t| t.name == topic.as_str()) {
                    Some(existing) => existing.partitions.push(entry),
                    None => topics.push(pb::fetch_request::Topic {
                        name: topic.to_string(),
                        partitions: vec![entry],
                    }),
                }
            }
            let request = pb::FetchRequest {
                max_wait_ms: u32::try_from(self.config.fetch_max_wait.as_millis()).unwrap_or(u32::MAX),
                min_bytes: self.config.fetch_min_bytes,
                max_bytes: self.config.fetch_max_bytes,
                topics,
            };
            let sent = partitions
                .into_iter()
                .map(|(key, offset, epoch)| (key, (offset, epoch)))
                .collect();
            self.fetching.insert(addr.clone());
            self.fetches.push(
                async move {
                    let result = connection.request(pb::request::Body::Fetch(request)).await;
                    FetchDone { addr, sent, result }
                }
                .boxed(),
            );
        }
        Ok(())
    }

    fn handle_fetch(&mut self, done: FetchDone) -> Result<()> {
        self.fetching.remove(&done.addr);
        let body = match done.result {
            Ok(body) => body,
            Err(error) => {
                for (topic, _) in done.sent.keys() {
                    self.client.invalidate_topic(topic.as_str());
                }
                return Err(error);
            }
        };
        let pb::response::Body::Fetch(response) = body else {
            return Err(Error::Protocol {
                addr: done.addr,
                reason: "fetch request answered with another body".into(),
            });
        };
        let mut first_error = None;
        for topic in response.topics {
            let name = TopicName::new(&topic.name);
            for partition in topic.partitions {
                let key = (name.clone(), PartitionId::new(partition.partition));
                if let Err(error) = self.handle_partition(&key, &done.sent, partition) {
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn handle_partition(
        &mut self,
        key: &TopicPartition,
        sent: &HashMap<TopicPartition, (Offset, u64)>,
        answer: pb::fetch_response::Partition,
    ) -> Result<()> {
        let Some(&(fetch_offset, epoch)) = sent.get(key) else {
            return Ok(());
        };
        let Some(state) = self.partitions.get_mut(key) else {
            return Ok(());
        };
        // Seeked (or reset) since this fetch left: its answer is stale.
        if state.epoch != epoch || state.position != Position::At(fetch_offset) {
            return Ok(());
        }
        let (topic, partition) = key;
        match wire::error_code(answer.error) {
            None => state.high_watermark = Some(Offset::new(answer.high_watermark)),
            Some(ErrorCode::OffsetOutOfRange) => {
                let spec = match self.config.offset_reset {
                    OffsetReset::Earliest => OffsetSpec::Earliest,
                    OffsetReset::Latest => OffsetSpec::Latest,
                    OffsetReset::Error => {
                        return Err(Error::OffsetOutOfRange {
                            topic: topic.to_string(),
                            partition: *partition,
                            offset: fetch_offset,
                            log_start_offset: Offset::new(answer.log_start_offset),
                            high_watermark: Offset::new(answer.high_watermark),
                        })
                    }
                };
                tracing::info!(%topic, %partition, offset = %fetch_offset, ?spec, "offset out of range; resetting");
                state.position = Position::Lookup(spec);
                return Ok(());
            }
            Some(ErrorCode::UnknownTopicOrPartition) => {
                self.client.invalidate_topic(topic.as_str());
                return Err(Error::UnknownTopicOrPartition {
                    topic: topic.to_string(),
                    partition: Some(*partition),
                });
            }
            // The broker had no memory for this read (or timed out otherwise): the position
            // stays and the next poll fetches again.
            Some(ErrorCode::RequestTimedOut) => {
                tracing::debug!(%topic, %partition, message = %answer.message, "fetch timed out on the broker; retrying");
                return Ok(());
            }
            Some(code) => {
                return Err(Error::Broker {
                    code,
                    message: answer.message,
                })
            }
        }
        let next = decode_records(
            topic,
            *partition,
            fetch_offset,
            answer.records,
            &self.config,
            &mut self.buffer,
        )?;
        state.position = Position::At(next);
        Ok(())
    }
}

/// Orders offset specs so lookups can be grouped in a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpecKey(OffsetSpec);

impl SpecKey {
    fn rank(&self) -> (u8, i64) {
        match self.0 {
            OffsetSpec::Earliest => (0, 0),
            OffsetSpec::Latest => (1, 0),
            OffsetSpec::Timestamp(ms) => (2, ms),
        }
    }
}

impl PartialOrd for SpecKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SpecKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// Appends the records at or after `fetch_offset` to `out`; returns the next fetch offset.
fn decode_records(
    topic: &TopicName,
    partition: PartitionId,
    fetch_offset: Offset,
    records: bytes::Bytes,
    config: &ConsumerConfig,
    out: &mut VecDeque<Record>,
) -> Result<Offset> {
    let corrupt = |source: BatchError| Error::CorruptBatch {
        topic: topic.to_string(),
        partition,
        source,
    };
    let mut next = fetch_offset;
    for (decoded_batches, batch) in BatchIter::new(records).enumerate() {
        let batch = match batch {
            Ok(batch) => batch,
            // A partial batch at the end of a size-limited response is not corruption; the
            // next fetch starts at it. Only a response with no whole batch at all is an error.
            Err(BatchError::Truncated { .. }) if decoded_batches > 0 => break,
            Err(error) => return Err(corrupt(error)),
        };
        let header = *batch.header();
        if header.next_offset() <= next.get() {
            continue;
        }
        if config.check_crcs {
            let computed = compute_crc(batch.as_bytes());
            if computed != header.crc {
                return Err(corrupt(BatchError::CrcMismatch {
                    expected: header.crc,
                    computed,
                }));
            }
        }
        if header.is_control() {
            next = Offset::new(header.next_offset());
            continue;
        }
        // A compressed batch is decompressed here, bounded; its records share that buffer.
        for record in batch.records_bounded(config.batch_decompressed_bytes_max) {
            let record = record.map_err(corrupt)?;
            if record.offset < next.get() {
                continue;
            }
            out.push_back(Record {
                topic: topic.clone(),
                partition,
                offset: Offset::new(record.offset),
                timestamp_ms: record.timestamp,
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|h| Header::new(h.key, h.value))
                    .collect(),
            });
        }
        next = Offset::new(header.next_offset());
    }
    Ok(next)
}

/// `now + timeout`, saturating: a caller may pass `Duration::MAX` to mean "wait as long as it
/// takes", which plain addition would turn into a panic.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    // A year is beyond any wait this client makes and cannot overflow an Instant.
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 60 * 60))
}

#[cfg(test)]
mod compacted_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use tidelog_proto::batch::{set_base_offset, NewRecord, RecordBatchBuilder};

    fn batch(base_offset: i64, values: &[&str]) -> Bytes {
        let mut builder = RecordBatchBuilder::new();
        for value in values {
            builder.push(&NewRecord {
                timestamp: 1000,
                key: None,
                value: Some(Bytes::copy_from_slice(value.as_bytes())),
                headers: vec![],
            });
        }
        let mut bytes = BytesMut::from(&builder.build().unwrap()[..]);
        set_base_offset(&mut bytes, base_offset);
        bytes.freeze()
    }

    fn decode(fetch_offset: i64, wire: Bytes) -> (Result<Offset>, Vec<(i64, String)>) {
        let mut out = VecDeque::new();
        let topic = TopicName::new("t");
        let next = decode_records(
            &topic,
            PartitionId::new(0),
            Offset::new(fetch_offset),
            wire,
            &ConsumerConfig::default(),
            &mut out,
        );
        let records = out
            .into_iter()
            .map(|r| {
                (
                    r.offset().get(),
                    String::from_utf8(r.value().unwrap().to_vec()).unwrap(),
                )
            })
            .collect();
        (next, records)
    }

    #[test]
    fn records_before_the_fetch_offset_are_skipped() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&batch(10, &["a", "b", "c"]));
        wire.extend_from_slice(&batch(13, &["d", "e"]));
        let (next, records) = decode(12, wire.freeze());
        assert_eq!(next.unwrap(), Offset::new(15));
        assert_eq!(
            records,
            vec![(12, "c".into()), (13, "d".into()), (14, "e".into())]
        );
    }

    #[test]
    fn a_truncated_last_batch_ends_the_response_without_error() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&batch(0, &["a"]));
        let second = batch(1, &["b", "c"]);
        wire.extend_from_slice(&second[..second.len() - 3]);
        let (next, records) = decode(0, wire.freeze());
        assert_eq!(next.unwrap(), Offset::new(1));
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn a_corrupt_batch_is_reported() {
        let mut wire = BytesMut::from(&batch(0, &["hello"])[..]);
        let last = wire.len() - 2;
        wire[last] ^= 0x55;
        let (next, _) = decode(0, wire.freeze());
        assert!(matches!(next, Err(Error::CorruptBatch { .. })), "{next:?}");
    }

    #[test]
    fn compressed_batches_are_decompressed_and_bounded() {
        use tidelog_proto::batch::{compress_batch, Compression};
        let long = "a value long enough to shrink ".repeat(4);
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut wire = BytesMut::new();
            wire.extend_from_slice(&compress_batch(&batch(0, &[&long, "b"]), codec).unwrap());
            wire.extend_from_slice(&compress_batch(&batch(2, &[&long]), codec).unwrap());
            let wire = wire.freeze();
            let (next, records) = decode(1, wire.clone());
            assert_eq!(next.unwrap(), Offset::new(3), "{codec}");
            assert_eq!(records, vec![(1, "b".into()), (2, long.clone())], "{codec}");

            let mut out = VecDeque::new();
            let tight = ConsumerConfig::default().batch_decompressed_bytes_max(50);
            let result = decode_records(
                &TopicName::new("t"),
                PartitionId::new(0),
                Offset::new(0),
                wire,
                &tight,
                &mut out,
            );
            assert!(
                matches!(
                    result,
                    Err(Error::CorruptBatch {
                        source: BatchError::DecompressedTooLarge { max: 50 },
                        ..
                    })
                ),
                "{codec}: {result:?}"
            );
        }
    }

    #[test]
    fn an_empty_response_keeps_the_position() {
        let (next, records) = decode(7, Bytes::new());
        assert_eq!(next.unwrap(), Offset::new(7));
        assert!(records.is_empty());
    }
}
