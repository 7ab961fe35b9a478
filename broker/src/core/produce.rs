//! Produce: validate each partition's batches, append them in arrival order (on the caller's
//! task, which is the connection's), then wait for durability concurrently and report offsets.
//!
//! Validation happens before the partition's append path so a bad batch never reaches the
//! log, and so the CRC work runs on the connection's task rather than under the partition lock.
//! The split between `Core::produce` (in order) and `Appended::durable` (deferred) is what lets
//! every front end keep pipelined produces to one partition in send order while their syncs
//! overlap.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use tidelog_proto::batch::{BatchIter, RecordBatch};
use tidelog_proto::BatchError;

use super::{expectations, Core, CoreError, ErrorCode};
use crate::clock::now_ms;
use crate::config::Limits;
use crate::storage::{AppendConditions, AppendOutcome, FlushPolicy, PartitionLog, StorageError, SyncOn};

/// How much acknowledgement the producer waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acks {
    /// No response at all (Kafka acks = 0).
    None,
    /// The leader has appended and, under flush=always, synced (Kafka acks = 1).
    Leader,
    /// Every replica has: the leader, until replication exists (Kafka acks = -1).
    #[allow(dead_code)] // Sent by Kafka clients; the native protocol has no such level yet.
    All,
}

/// One produce request, in domain terms.
#[derive(Debug)]
pub(crate) struct ProduceInput {
    pub acks: Acks,
    /// How long the durability wait may take; clamped to `limits.produce_timeout_ms_max`.
    pub timeout: Duration,
    pub topics: Vec<ProduceTopic>,
}

#[derive(Debug)]
pub(crate) struct ProduceTopic {
    pub name: String,
    pub partitions: Vec<ProducePartition>,
}

#[derive(Debug)]
pub(crate) struct ProducePartition {
    pub partition: u32,
    /// RecordBatch v2 batches exactly as the client sent them.
    pub records: Bytes,
    /// Expectations the request carries as fields (native); those in record headers are
    /// merged in by `expectations::resolve`.
    pub conditions: AppendConditions,
}

/// The answer to a produce, topics and partitions in request order.
#[derive(Debug)]
pub(crate) struct ProduceOutput {
    pub topics: Vec<ProducedTopic>,
}

#[derive(Debug)]
pub(crate) struct ProducedTopic {
    pub name: String,
    pub partitions: Vec<ProducedPartition>,
}

#[derive(Debug)]
pub(crate) struct ProducedPartition {
    pub partition: u32,
    pub result: Result<Produced, CoreError>,
}

/// Where one partition's batches landed, once durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Produced {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    /// The broker's append time when the topic uses LogAppendTime; -1 (CreateTime) today.
    pub log_append_time: i64,
    /// A retry of records already appended: nothing was written, the offsets are theirs.
    pub duplicate: bool,
}

/// The in-order part of a produce, started.
pub(crate) enum ProduceStarted {
    /// Every append ran on the caller's task.
    Appended(Appended),
    /// A partition needs a segment roll, which runs on a blocking thread. The caller must
    /// await this before it starts the connection's next request, so order is kept.
    Rolling(Pin<Box<dyn Future<Output = Appended> + Send>>),
}

impl ProduceStarted {
    /// The appends, awaiting the roll if there is one.
    #[allow(dead_code)] // For front ends that await the roll inline (Kafka's).
    pub(crate) async fn appended(self) -> Appended {
        match self {
            ProduceStarted::Appended(appended) => appended,
            ProduceStarted::Rolling(rolling) => rolling.await,
        }
    }
}

/// Every partition's append done (or refused): what remains is the durability wait.
pub(crate) struct Appended {
    acks: Acks,
    timeout: Duration,
    topics: Vec<(String, Partitions)>,
}

/// One topic's partitions after their appends, in request order.
type Partitions = Vec<(u32, Result<Landed, CoreError>)>;

/// A partition whose batches were appended and now await durability.
struct Landed {
    log: Arc<PartitionLog>,
    base_offset: i64,
    last_offset: i64,
    duplicate: bool,
    /// The request's bytes for this partition.
    bytes: usize,
}

/// One partition's append: done, or validated and waiting to run on a blocking thread
/// because it needs a segment roll.
enum Step {
    Done(Result<Landed, CoreError>),
    Roll(Arc<PartitionLog>, Vec<RecordBatch>, AppendConditions),
}

/// A lone partition's produce of more bytes than this syncs on the blocking pool all the
/// same: its copy and sync dwarf the hand-off, and moving the worker to another thread for
/// it would spread large request buffers over more threads' allocator arenas (RSS; see
/// hostile_clients' `large_appends_to_many_partitions_leave_no_large_buffer_behind`).
const SYNC_IN_PLACE_BYTES_MAX: usize = 64 << 10;

/// The deferred part of a produce: the response once every partition is durable.
pub(crate) type Durable = Pin<Box<dyn Future<Output = ProduceOutput> + Send>>;

impl Core {
    /// Validates and appends every partition's batches. Call it on the connection's task, in
    /// request order: appends that need no roll are done when it returns.
    pub(crate) fn produce(&self, input: ProduceInput) -> ProduceStarted {
        let limits = &self.config.limits;
        let timeout = input
            .timeout
            .min(Duration::from_millis(limits.produce_timeout_ms_max));
        let now = now_ms();
        let mut topics: Vec<(String, Vec<(u32, Step)>)> = Vec::with_capacity(input.topics.len());
        let mut rolls = 0;
        for topic in input.topics {
            let found = self.registry.get(&topic.name);
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for partition in topic.partitions {
                let index = partition.partition;
                let step = match super::partition_log(found.as_ref(), &topic.name, index) {
                    Err(error) => Step::Done(Err(error)),
                    Ok(log) => append(
                        &log,
                        &topic.name,
                        index,
                        partition.records,
                        partition.conditions,
                        limits,
                        now,
                    ),
                };
                if matches!(step, Step::Roll(..)) {
                    rolls += 1;
                }
                partitions.push((index, step));
            }
            topics.push((topic.name, partitions));
        }
        let acks = input.acks;
        if rolls == 0 {
            return ProduceStarted::Appended(Appended {
                acks,
                timeout,
                topics: resolve_inline(topics),
            });
        }
        // A roll creates and fsyncs files: it runs on a blocking thread, and the connection
        // waits for it before starting its next request, so appends to a partition keep their
        // order.
        ProduceStarted::Rolling(Box::pin(async move {
            let mut resolved = Vec::with_capacity(topics.len());
            for (name, partitions) in topics {
                let mut done = Vec::with_capacity(partitions.len());
                for (index, step) in partitions {
                    let result = match step {
                        Step::Done(result) => result,
                        Step::Roll(log, batches, conditions) => {
                            append_blocking(log, &name, index, batches, conditions, now).await
                        }
                    };
                    log_failure(&name, index, &result);
                    done.push((index, result));
                }
                resolved.push((name, done));
            }
            Appended {
                acks,
                timeout,
                topics: resolved,
            }
        }))
    }
}

impl Appended {
    /// The deferred part. With acks = none there is no answer (`None`), but under
    /// flush=always the data becomes visible only once synced, so the group commit is started
    /// anyway. Otherwise a future that waits (within the timeout) for every partition to be
    /// durable and yields the answer.
    pub(crate) fn durable(self) -> Option<Durable> {
        if self.acks == Acks::None {
            for (_, partitions) in &self.topics {
                for landed in partitions.iter().filter_map(|(_, result)| result.as_ref().ok()) {
                    if landed.log.config().flush == FlushPolicy::Always {
                        let log = landed.log.clone();
                        let next_offset = landed.last_offset + 1;
                        tokio::spawn(async move {
                            if let Err(error) = log.wait_durable(next_offset).await {
                                tracing::error!(%error, "sync after an acks=none produce failed");
                            }
                        });
                    }
                }
            }
            return None;
        }
        let deadline = self.timeout;
        // A lone partition's sync may run on this task's own thread (the common case of one
        // producer waiting for each record: no hand-off to a pool thread and back). With
        // several, their syncs must overlap, so each runs on the blocking pool.
        let mut landed = self
            .topics
            .iter()
            .flat_map(|(_, partitions)| partitions)
            .filter_map(|(_, result)| result.as_ref().ok());
        let lone = landed.next().filter(|_| landed.next().is_none());
        let sync_on = if lone.is_some_and(|landed| landed.bytes <= SYNC_IN_PLACE_BYTES_MAX) {
            SyncOn::CallerThread
        } else {
            SyncOn::BlockingPool
        };
        Some(Box::pin(async move {
            let topics = join_all(self.topics.into_iter().map(|(name, partitions)| async move {
                let partitions = join_all(
                    partitions
                        .into_iter()
                        .map(|(index, result)| await_durable(&name, index, result, deadline, sync_on)),
                )
                .await;
                ProducedTopic { name, partitions }
            }))
            .await;
            ProduceOutput { topics }
        }))
    }
}

fn resolve_inline(topics: Vec<(String, Vec<(u32, Step)>)>) -> Vec<(String, Partitions)> {
    topics
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, step)| {
                    let result = match step {
                        Step::Done(result) => result,
                        // resolve_inline is only called when no step needs a roll.
                        Step::Roll(..) => {
                            Err(CoreError::new(ErrorCode::UnknownServerError, "internal error"))
                        }
                    };
                    log_failure(&name, index, &result);
                    (index, result)
                })
                .collect();
            (name, partitions)
        })
        .collect()
}

fn log_failure(topic: &str, partition: u32, result: &Result<Landed, CoreError>) {
    if let Err(error) = result {
        if error.code == ErrorCode::KafkaStorageError {
            // A failed write or roll: an operator must know (the storage engine logged the
            // cause at ERROR).
            tracing::warn!(topic, partition, code = ?error.code, message = %error.message, "produce failed");
        } else {
            tracing::debug!(topic, partition, code = ?error.code, message = %error.message, "produce refused");
        }
    }
}

/// Validates and appends on the calling (async) thread unless the append needs a roll.
fn append(
    log: &Arc<PartitionLog>,
    topic: &str,
    partition: u32,
    records: Bytes,
    conditions: AppendConditions,
    limits: &Limits,
    now: i64,
) -> Step {
    let decompressed_bytes_max = limits.batch_decompressed_bytes_max;
    let bytes = records.len();
    let (batches, has_headers) =
        match validate_batches(records, limits.batch_bytes_max, decompressed_bytes_max) {
            Ok(validated) => validated,
            Err(error) => return Step::Done(Err(error)),
        };
    let conditions = match expectations::resolve(conditions, &batches, has_headers, decompressed_bytes_max) {
        Ok(conditions) => conditions,
        Err(error) => return Step::Done(Err(error.for_partition(topic, partition))),
    };
    // The unconditional path stays the one it always was.
    let appended = if conditions.is_empty() {
        log.append_without_roll(&batches, now)
    } else {
        log.append_conditional_without_roll(&batches, &conditions, now)
    };
    match appended {
        Ok(Some(outcome)) => Step::Done(Ok(landed(log, outcome, bytes))),
        Ok(None) => Step::Roll(log.clone(), batches, conditions),
        Err(error) => Step::Done(Err(append_error(topic, partition, error))),
    }
}

/// An append that rolls, on the blocking thread pool.
async fn append_blocking(
    log: Arc<PartitionLog>,
    topic: &str,
    partition: u32,
    batches: Vec<RecordBatch>,
    conditions: AppendConditions,
    now: i64,
) -> Result<Landed, CoreError> {
    let appending = Arc::clone(&log);
    let bytes = batches.iter().map(RecordBatch::len).sum();
    match tokio::task::spawn_blocking(move || appending.append_conditional(&batches, &conditions, now)).await
    {
        Ok(Ok(outcome)) => Ok(landed(&log, outcome, bytes)),
        Ok(Err(error)) => Err(append_error(topic, partition, error)),
        Err(join_error) => {
            tracing::error!(%join_error, "append task failed");
            Err(CoreError::new(ErrorCode::KafkaStorageError, "append failed"))
        }
    }
}

fn landed(log: &Arc<PartitionLog>, outcome: AppendOutcome, bytes: usize) -> Landed {
    if outcome.duplicate {
        // A retry of batches already appended: answer with their original offsets (after
        // waiting, like any append, until they are durable).
        tracing::debug!(
            base_offset = outcome.base_offset,
            last_offset = outcome.last_offset,
            "duplicate producer batch answered with its original offsets"
        );
    }
    Landed {
        log: log.clone(),
        base_offset: outcome.base_offset,
        last_offset: outcome.last_offset,
        duplicate: outcome.duplicate,
        bytes,
    }
}

/// The code for a failed append: the idempotent producer's refusals get Kafka's codes. Any
/// other failure is the broker's own and is logged at WARN (by `CoreError::partition_storage`).
fn append_error(topic: &str, partition: u32, error: StorageError) -> CoreError {
    let code = match &error {
        StorageError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
        // Kafka answers a produce from a fenced (older) epoch with INVALID_PRODUCER_EPOCH;
        // PRODUCER_FENCED is for transactional coordinators.
        StorageError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
        StorageError::DuplicateSequence { .. } => ErrorCode::DuplicateSequenceNumber,
        // Kafka's answer to a producer the partition has no state for (KIP-360); our client
        // waits for its earlier batches or fails the batch, never appends across a gap.
        StorageError::UnknownProducerId { .. } => ErrorCode::UnknownProducerId,
        // Not a retry of the stored batch: fatal for the producer, like a sequence gap.
        StorageError::SequenceConflict { .. } => ErrorCode::OutOfOrderSequenceNumber,
        StorageError::InvalidConditions(_) => ErrorCode::InvalidRequest,
        StorageError::ConditionFailed { .. } => {
            let message = error.to_string();
            let StorageError::ConditionFailed { failures } = error else {
                return CoreError::new(ErrorCode::UnknownServerError, message);
            };
            return CoreError::expectation_failed(message, failures).for_partition(topic, partition);
        }
        // Kafka's words, so clients and operators searching for them find the cause.
        StorageError::KeylessRecord { record_index } => {
            return CoreError::new(
                ErrorCode::InvalidRecord,
                format!(
                "Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
            ),
            )
            .at_record(*record_index)
        }
        _ => return CoreError::partition_storage(topic, partition, &error),
    };
    CoreError::new(code, error.to_string())
}

/// Splits and fully validates a partition's records; any bad batch refuses them all, so a
/// request is appended whole or not at all.
/// Also says whether any record carries a header (only then are expectation headers looked for).
fn validate_batches(
    records: Bytes,
    batch_bytes_max: usize,
    decompressed_bytes_max: usize,
) -> Result<(Vec<RecordBatch>, bool), CoreError> {
    if records.is_empty() {
        return Err(CoreError::new(ErrorCode::InvalidRequest, "no record batches"));
    }
    let mut batches = Vec::new();
    let mut has_headers = false;
    for batch in BatchIter::new(records) {
        let batch = batch.map_err(|error| CoreError::new(ErrorCode::CorruptMessage, error.to_string()))?;
        if batch.len() > batch_bytes_max {
            return Err(CoreError::new(
                ErrorCode::MessageTooLarge,
                BatchError::TooLarge {
                    length: batch.len(),
                    max: batch_bytes_max,
                }
                .to_string(),
            ));
        }
        // Compressed batches are decompressed (bounded) and walked like plain ones, then stored
        // as sent.
        has_headers |=
            batch
                .validate_bounded_headers(decompressed_bytes_max)
                .map_err(|error| match error {
                    BatchError::UnsupportedCompression(_) => {
                        CoreError::new(ErrorCode::UnsupportedCompressionType, error.to_string())
                    }
                    other => CoreError::new(ErrorCode::CorruptMessage, other.to_string()),
                })?;
        let header = batch.header();
        if header.is_transactional() || header.is_control() {
            return Err(CoreError::new(
                ErrorCode::InvalidRequest,
                "transactional and control batches are not supported yet",
            ));
        }
        if header.producer_id >= 0 && (header.producer_epoch < 0 || header.base_sequence < 0) {
            return Err(CoreError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "batch of producer {} has epoch {} and base sequence {}; both must be set",
                    header.producer_id, header.producer_epoch, header.base_sequence
                ),
            ));
        }
        batches.push(batch);
    }
    Ok((batches, has_headers))
}

async fn await_durable(
    topic: &str,
    partition: u32,
    result: Result<Landed, CoreError>,
    deadline: Duration,
    sync_on: SyncOn,
) -> ProducedPartition {
    let landed = match result {
        Ok(landed) => landed,
        Err(error) => {
            return ProducedPartition {
                partition,
                result: Err(error),
            }
        }
    };
    // In place, a sync this wait leads ends before the deadline is looked at: the answer is
    // then its outcome, never a timeout over data already durable.
    let waiting = landed.log.wait_durable_on(landed.last_offset + 1, sync_on);
    let durable = tokio::time::timeout(deadline, waiting).await;
    let result = match durable {
        Ok(Ok(())) => Ok(Produced {
            base_offset: landed.base_offset,
            last_offset: landed.last_offset,
            log_start_offset: landed.log.log_start_offset(),
            log_append_time: -1,
            duplicate: landed.duplicate,
        }),
        Ok(Err(error)) => Err(CoreError::partition_storage(topic, partition, &error)),
        Err(_) => Err(CoreError::new(
            ErrorCode::RequestTimedOut,
            format!(
                "appended at offset {} but not yet synced after {} ms",
                landed.base_offset,
                deadline.as_millis()
            ),
        )),
    };
    ProducedPartition { partition, result }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::Bytes;
    use tidelog_proto::batch::{NewRecord, RecordBatchBuilder};

    use super::*;
    use crate::storage::sim_disk::SimDisk;
    use crate::storage::LogConfig;

    fn records(value_bytes: usize) -> Bytes {
        let mut builder = RecordBatchBuilder::new();
        builder.push(&NewRecord {
            timestamp: 0,
            key: None,
            value: Some(Bytes::from(vec![7u8; value_bytes])),
            headers: Vec::new(),
        });
        builder.build().expect("one record")
    }

    /// On a current-thread runtime the test's own thread is the only async worker: every
    /// open, fsync, directory sync or truncation made by produce appends that roll segments,
    /// and by their group commits, must run on some other (blocking) thread.
    #[test]
    fn rolls_and_group_commits_never_block_the_async_worker() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let disk = SimDisk::new();
        let config = LogConfig {
            segment_bytes: 4096,
            flush: FlushPolicy::Always,
            ..LogConfig::default()
        };
        let log = Arc::new(
            PartitionLog::open_with_disk(Path::new("/sim/produce-0"), config, Arc::new(disk.clone()))
                .expect("open"),
        );
        let worker = std::thread::current().id();
        disk.record_blocking_threads();
        runtime.block_on(async {
            for _ in 0..20 {
                let result = match append(
                    &log,
                    "t",
                    0,
                    records(1000),
                    AppendConditions::default(),
                    &Limits::default(),
                    0,
                ) {
                    Step::Done(result) => result,
                    Step::Roll(log, batches, conditions) => {
                        append_blocking(log, "t", 0, batches, conditions, 0).await
                    }
                };
                let landed = result.unwrap_or_else(|error| panic!("{error}"));
                landed
                    .log
                    .wait_durable(landed.last_offset + 1)
                    .await
                    .expect("durable");
            }
        });
        assert!(log.segment_count() >= 4, "{} segments", log.segment_count());
        assert_eq!(log.high_watermark(), 20);
        let threads = disk.blocking_threads();
        assert!(!threads.is_empty(), "nothing was recorded");
        let on_worker = threads.iter().filter(|thread| **thread == worker).count();
        assert_eq!(
            on_worker,
            0,
            "{on_worker} of {} blocking disk operations ran on the async worker",
            threads.len()
        );
    }

    #[test]
    fn a_bad_batch_refuses_the_partition_before_anything_is_appended() {
        let mut bytes = records(10).to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let error = validate_batches(Bytes::from(bytes), 1 << 20, 1 << 22).expect_err("crc mismatch");
        assert_eq!(error.code, ErrorCode::CorruptMessage);
        let error = validate_batches(Bytes::new(), 1 << 20, 1 << 22).expect_err("empty");
        assert_eq!(error.code, ErrorCode::InvalidRequest);
        let error = validate_batches(records(100), 64, 1 << 22).expect_err("too large");
        assert_eq!(error.code, ErrorCode::MessageTooLarge);
    }
}
