//! Produce: validate each partition's batches, append them in arrival order (here, on the
//! connection's task), then wait for durability concurrently and report offsets.
//!
//! Validation happens before the partition's append path so a bad batch never reaches the
//! log, and so the CRC work runs on the connection's task rather than under the partition lock.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use tidelog_proto::batch::{BatchIter, RecordBatch};
use tidelog_proto::pb::{self, produce_response, ErrorCode};
use tidelog_proto::BatchError;

use super::{partition_log, partition_storage_error, Outcome};
use crate::clock::now_ms;
use crate::net::ListenerContext;
use crate::storage::{AppendOutcome, FlushPolicy, PartitionLog, StorageError};

/// A partition whose batches were appended and now await durability.
struct Appended {
    log: Arc<PartitionLog>,
    base_offset: i64,
    last_offset: i64,
}

/// One partition's append: done, or validated and waiting to run on a blocking thread
/// because it needs a segment roll.
enum Step {
    Done(Result<Appended, (ErrorCode, String)>),
    Roll(Arc<PartitionLog>, Vec<RecordBatch>),
}

type Partitions = Vec<(u32, Result<Appended, (ErrorCode, String)>)>;

pub(super) fn handle(context: &Arc<ListenerContext>, request: pb::ProduceRequest) -> Outcome {
    let acks = request.acks();
    let limits = &context.core.config.limits;
    let timeout_ms = u64::from(request.timeout_ms).min(limits.produce_timeout_ms_max);
    let now = now_ms();
    let mut topics: Vec<(String, Vec<(u32, Step)>)> = Vec::with_capacity(request.topics.len());
    let mut rolls = 0;
    for topic in request.topics {
        let found = context.core.registry.get(&topic.name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let index = partition.partition;
            let step = match partition_log(found.as_ref(), &topic.name, index) {
                Err(error) => Step::Done(Err(error)),
                Ok(log) => append(
                    &log,
                    &topic.name,
                    index,
                    partition.records,
                    limits.batch_bytes_max,
                    limits.batch_decompressed_bytes_max,
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
    if rolls == 0 {
        return finish(resolve_inline(topics), acks, timeout_ms);
    }
    // A roll creates and fsyncs files: it runs on a blocking thread, and the connection waits
    // for it before starting its next request, so appends to a partition keep their order.
    Outcome::Ordered(Box::pin(async move {
        let mut resolved = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let mut done = Vec::with_capacity(partitions.len());
            for (index, step) in partitions {
                let result = match step {
                    Step::Done(result) => result,
                    Step::Roll(log, batches) => append_blocking(log, &name, index, batches, now).await,
                };
                log_failure(&name, index, &result);
                done.push((index, result));
            }
            resolved.push((name, done));
        }
        finish(resolved, acks, timeout_ms)
    }))
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
                        Step::Roll(..) => Err((ErrorCode::UnknownServerError, "internal error".into())),
                    };
                    log_failure(&name, index, &result);
                    (index, result)
                })
                .collect();
            (name, partitions)
        })
        .collect()
}

fn log_failure(topic: &str, partition: u32, result: &Result<Appended, (ErrorCode, String)>) {
    if let Err((code, message)) = result {
        if *code == ErrorCode::KafkaStorageError {
            // A failed write or roll: an operator must know (the storage engine logged the
            // cause at ERROR).
            tracing::warn!(topic, partition, ?code, %message, "produce failed");
        } else {
            tracing::debug!(topic, partition, ?code, %message, "produce refused");
        }
    }
}

/// The part after every append: start or await the group commit, then answer.
fn finish(topics: Vec<(String, Partitions)>, acks: pb::Acks, timeout_ms: u64) -> Outcome {
    if acks == pb::Acks::None {
        // Nobody waits for an answer, but under flush=always the data becomes visible only
        // once synced: start the group commit anyway.
        for (_, partitions) in &topics {
            for appended in partitions.iter().filter_map(|(_, result)| result.as_ref().ok()) {
                if appended.log.config().flush == FlushPolicy::Always {
                    let log = appended.log.clone();
                    let next_offset = appended.last_offset + 1;
                    tokio::spawn(async move {
                        if let Err(error) = log.wait_durable(next_offset).await {
                            tracing::error!(%error, "sync after an acks=none produce failed");
                        }
                    });
                }
            }
        }
        return Outcome::Silent;
    }
    Outcome::Deferred(Box::pin(async move {
        let deadline = Duration::from_millis(timeout_ms);
        let topics = join_all(topics.into_iter().map(|(name, partitions)| async move {
            let partitions = join_all(
                partitions
                    .into_iter()
                    .map(|(index, result)| await_durable(&name, index, result, deadline)),
            )
            .await;
            produce_response::Topic { name, partitions }
        }))
        .await;
        Some(pb::response::Body::Produce(pb::ProduceResponse { topics }))
    }))
}

/// Validates and appends on the calling (async) thread unless the append needs a roll.
fn append(
    log: &Arc<PartitionLog>,
    topic: &str,
    partition: u32,
    records: Bytes,
    batch_bytes_max: usize,
    decompressed_bytes_max: usize,
    now: i64,
) -> Step {
    let batches = match validate_batches(records, batch_bytes_max, decompressed_bytes_max) {
        Ok(batches) => batches,
        Err(error) => return Step::Done(Err(error)),
    };
    match log.append_without_roll(&batches, now) {
        Ok(Some(outcome)) => Step::Done(Ok(appended(log, outcome))),
        Ok(None) => Step::Roll(log.clone(), batches),
        Err(error) => Step::Done(Err(append_error(topic, partition, &error))),
    }
}

/// An append that rolls, on the blocking thread pool.
async fn append_blocking(
    log: Arc<PartitionLog>,
    topic: &str,
    partition: u32,
    batches: Vec<RecordBatch>,
    now: i64,
) -> Result<Appended, (ErrorCode, String)> {
    let appending = Arc::clone(&log);
    match tokio::task::spawn_blocking(move || appending.append(&batches, now)).await {
        Ok(Ok(outcome)) => Ok(appended(&log, outcome)),
        Ok(Err(error)) => Err(append_error(topic, partition, &error)),
        Err(join_error) => {
            tracing::error!(%join_error, "append task failed");
            Err((ErrorCode::KafkaStorageError, "append failed".into()))
        }
    }
}

fn appended(log: &Arc<PartitionLog>, outcome: AppendOutcome) -> Appended {
    if outcome.duplicate {
        // A retry of batches already appended: answer with their original offsets (after
        // waiting, like any append, until they are durable).
        tracing::debug!(
            base_offset = outcome.base_offset,
            last_offset = outcome.last_offset,
            "duplicate producer batch answered with its original offsets"
        );
    }
    Appended {
        log: log.clone(),
        base_offset: outcome.base_offset,
        last_offset: outcome.last_offset,
    }
}

/// The wire code for a failed append: the idempotent producer's refusals get Kafka's codes.
/// Any other failure is the broker's own and is logged at WARN (by `partition_storage_error`).
fn append_error(topic: &str, partition: u32, error: &StorageError) -> (ErrorCode, String) {
    let code = match error {
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
        _ => return partition_storage_error(topic, partition, error),
    };
    (code, error.to_string())
}

/// Splits and fully validates a partition's records; any bad batch refuses them all, so a
/// request is appended whole or not at all.
fn validate_batches(
    records: Bytes,
    batch_bytes_max: usize,
    decompressed_bytes_max: usize,
) -> Result<Vec<RecordBatch>, (ErrorCode, String)> {
    if records.is_empty() {
        return Err((ErrorCode::InvalidRequest, "no record batches".into()));
    }
    let mut batches = Vec::new();
    for batch in BatchIter::new(records) {
        let batch = batch.map_err(|error| (ErrorCode::CorruptMessage, error.to_string()))?;
        if batch.len() > batch_bytes_max {
            return Err((
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
        batch
            .validate_bounded(decompressed_bytes_max)
            .map_err(|error| match error {
                BatchError::UnsupportedCompression(_) => {
                    (ErrorCode::UnsupportedCompressionType, error.to_string())
                }
                other => (ErrorCode::CorruptMessage, other.to_string()),
            })?;
        let header = batch.header();
        if header.is_transactional() || header.is_control() {
            return Err((
                ErrorCode::InvalidRequest,
                "transactional and control batches are not supported yet".into(),
            ));
        }
        if header.producer_id >= 0 && (header.producer_epoch < 0 || header.base_sequence < 0) {
            return Err((
                ErrorCode::InvalidRequest,
                format!(
                    "batch of producer {} has epoch {} and base sequence {}; both must be set",
                    header.producer_id, header.producer_epoch, header.base_sequence
                ),
            ));
        }
        batches.push(batch);
    }
    Ok(batches)
}

async fn await_durable(
    topic: &str,
    partition: u32,
    result: Result<Appended, (ErrorCode, String)>,
    deadline: Duration,
) -> produce_response::Partition {
    let failed = |(code, message): (ErrorCode, String)| produce_response::Partition {
        partition,
        error: code as i32,
        message,
        base_offset: -1,
        last_offset: -1,
        log_start_offset: -1,
    };
    let appended = match result {
        Ok(appended) => appended,
        Err(error) => return failed(error),
    };
    let durable = tokio::time::timeout(deadline, appended.log.wait_durable(appended.last_offset + 1)).await;
    match durable {
        Ok(Ok(())) => produce_response::Partition {
            partition,
            error: ErrorCode::None as i32,
            message: String::new(),
            base_offset: appended.base_offset,
            last_offset: appended.last_offset,
            log_start_offset: appended.log.log_start_offset(),
        },
        Ok(Err(error)) => failed(partition_storage_error(topic, partition, &error)),
        Err(_) => failed((
            ErrorCode::RequestTimedOut,
            format!(
                "appended at offset {} but not yet synced after {} ms",
                appended.base_offset,
                deadline.as_millis()
            ),
        )),
    }
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
                let result = match append(&log, "t", 0, records(1000), 1 << 20, 1 << 22, 0) {
                    Step::Done(result) => result,
                    Step::Roll(log, batches) => append_blocking(log, "t", 0, batches, 0).await,
                };
                let appended = result.unwrap_or_else(|(code, message)| panic!("{code:?}: {message}"));
                appended
                    .log
                    .wait_durable(appended.last_offset + 1)
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
}
