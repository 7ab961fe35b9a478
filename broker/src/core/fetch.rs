//! Fetch: read whole batches from many partitions; long-poll until `min_bytes` have
//! accumulated or `max_wait` has passed, woken by appends (each partition's high-watermark
//! watch), never by a polling loop. Records stay the stored bytes (`Bytes` from `pread`),
//! never decoded, so every front end writes them out unchanged.
//!
//! Memory: each pass takes what the connection's budget can grant up to `max_bytes`, reads
//! within it, and keeps charged exactly what the read returned (a first batch larger than the
//! grant included); the front end holds that reservation until the response is written. A
//! fetch that cannot get memory within `limits.memory_wait_ms_max` is answered with the
//! retriable REQUEST_TIMED_OUT on every partition, never with an empty success a consumer
//! would take for the end of the log.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{partition_log, Core, CoreError, ErrorCode};
use crate::net::budget::{BudgetError, ConnectionBudget, Reservation};
use crate::storage::{PartitionLog, StorageError};

/// Least memory a pass waits for before it reads (or all it asks for, if less): enough for
/// typical batches, so a starved fetch does not read one small batch per wake-up.
const GRANT_BYTES_MIN: usize = 64 << 10;

/// Which records a fetch may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    ReadUncommitted,
    #[allow(dead_code)] // Sent by Kafka clients (isolation_level 1).
    /// The same as `ReadUncommitted` until transactions exist (no batch is ever uncommitted).
    ReadCommitted,
}

/// One fetch request, in domain terms.
#[derive(Debug)]
pub(crate) struct FetchInput {
    /// Longest the long poll waits; clamped to `limits.fetch_wait_ms_max`.
    pub max_wait: Duration,
    /// 0 asks for an immediate answer, as in Kafka.
    pub min_bytes: usize,
    /// The response's byte budget (soft for its first batch); clamped to
    /// `limits.fetch_bytes_max`.
    pub max_bytes: usize,
    pub isolation: Isolation,
    pub topics: Vec<FetchTopic>,
}

#[derive(Debug)]
pub(crate) struct FetchTopic {
    pub name: String,
    pub partitions: Vec<FetchPartition>,
}

#[derive(Debug)]
pub(crate) struct FetchPartition {
    pub partition: u32,
    pub offset: i64,
    pub max_bytes: usize,
}

/// The answer, topics and partitions in request order.
#[derive(Debug)]
pub(crate) struct FetchOutput {
    pub topics: Vec<FetchedTopic>,
    /// Charged for the records: hold it until the response has been written.
    pub reservation: Option<Reservation>,
}

#[derive(Debug)]
pub(crate) struct FetchedTopic {
    pub name: String,
    pub partitions: Vec<FetchedPartition>,
}

#[derive(Debug)]
pub(crate) struct FetchedPartition {
    pub partition: u32,
    pub error: Option<CoreError>,
    /// Last offset + 1; -1 when the partition could not be resolved.
    pub high_watermark: i64,
    /// The high watermark until transactions exist.
    #[allow(dead_code)] // Kafka's Fetch reports it; the native one does not.
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// Whole stored batches; the first may start before the offset asked for.
    pub records: Bytes,
}

impl FetchedPartition {
    fn empty(partition: u32, high_watermark: i64, log_start_offset: i64) -> Self {
        FetchedPartition {
            partition,
            error: None,
            high_watermark,
            last_stable_offset: high_watermark,
            log_start_offset,
            records: Bytes::new(),
        }
    }

    fn failed(partition: u32, error: CoreError, high_watermark: i64, log_start_offset: i64) -> Self {
        FetchedPartition {
            error: Some(error),
            ..FetchedPartition::empty(partition, high_watermark, log_start_offset)
        }
    }
}

/// One partition asked for, resolved against the registry.
struct Wanted {
    topic: usize,
    partition: u32,
    log: Result<Arc<PartitionLog>, CoreError>,
    offset: i64,
    max_bytes: usize,
}

impl Core {
    /// Resolves the partitions now (on the caller's task) and returns the long poll, which
    /// reads within `budget`. The isolation level changes nothing until transactions exist.
    pub(crate) fn fetch(
        &self,
        budget: &ConnectionBudget,
        input: FetchInput,
    ) -> impl Future<Output = FetchOutput> + Send + 'static {
        // Until transactions exist no batch is uncommitted: both levels read up to the high
        // watermark.
        match input.isolation {
            Isolation::ReadUncommitted | Isolation::ReadCommitted => {}
        }
        let limits = &self.config.limits;
        let max_wait = input
            .max_wait
            .min(Duration::from_millis(limits.fetch_wait_ms_max));
        let min_bytes = input.min_bytes;
        let max_bytes = input.max_bytes.min(limits.fetch_bytes_max);
        let mut names = Vec::with_capacity(input.topics.len());
        let mut wanted = Vec::new();
        for (topic_index, topic) in input.topics.into_iter().enumerate() {
            let found = self.registry.get(&topic.name);
            for partition in topic.partitions {
                wanted.push(Wanted {
                    topic: topic_index,
                    partition: partition.partition,
                    log: partition_log(found.as_ref(), &topic.name, partition.partition),
                    offset: partition.offset,
                    max_bytes: partition.max_bytes.min(max_bytes),
                });
            }
            names.push(topic.name);
        }
        let mut shutdown = self.shutdown.clone();
        let budget = budget.clone();
        let memory_wait = Duration::from_millis(limits.memory_wait_ms_max);
        async move {
            let deadline = Instant::now() + max_wait;
            // Subscribe before the first read, so an append between the read and the wait
            // still wakes us.
            let mut watches: Vec<watch::Receiver<i64>> = wanted
                .iter()
                .filter_map(|want| want.log.as_ref().ok().map(|log| log.subscribe()))
                .collect();
            let (results, reservation) = loop {
                for watch in &mut watches {
                    watch.borrow_and_update();
                }
                // Memory for what this pass may read; given back below if the fetch waits on.
                let (results, total_bytes, any_error, reservation) =
                    match read_within_budget(&budget, &names, &wanted, max_bytes, memory_wait).await {
                        Ok(read) => read,
                        Err(error) => {
                            tracing::warn!(%error, max_bytes, "fetch got no memory from the broker budget");
                            break (starved(&names, &wanted, &error), None);
                        }
                    };
                let done = min_bytes == 0
                    || total_bytes >= min_bytes
                    || any_error
                    || watches.is_empty()
                    || Instant::now() >= deadline
                    || *shutdown.borrow();
                if done {
                    break (results, Some(reservation));
                }
                drop(reservation);
                let woken = select_all(watches.iter_mut().map(|watch| Box::pin(watch.changed())));
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = shutdown.changed() => {}
                }
            };
            let topics = names
                .into_iter()
                .zip(results)
                .map(|(name, partitions)| FetchedTopic { name, partitions })
                .collect();
            FetchOutput { topics, reservation }
        }
    }
}

type Pass = (Vec<Vec<FetchedPartition>>, usize, bool);

/// One pass, charged to the budget: reads within what the budget grants (up to `max_bytes`)
/// and returns the reservation shrunk to exactly what was read.
async fn read_within_budget(
    budget: &ConnectionBudget,
    names: &[String],
    wanted: &[Wanted],
    max_bytes: usize,
    memory_wait: Duration,
) -> Result<(Vec<Vec<FetchedPartition>>, usize, bool, Reservation), BudgetError> {
    let memory_deadline = Instant::now() + memory_wait;
    let min = GRANT_BYTES_MIN.min(max_bytes).max(1);
    let mut reservation = budget
        .reserve_between(min, max_bytes.max(1), Some(memory_deadline))
        .await?;
    let (mut results, mut total, mut any_error): Pass = read_all(names, wanted, reservation.bytes());
    if total > reservation.bytes() {
        // The first whole batch is larger than the grant. Charge what was read, or free it,
        // wait for room for it, and read again within that.
        let more = total - reservation.bytes();
        if !reservation.try_grow(more) {
            drop(results);
            reservation.grow(more, memory_deadline).await?;
            (results, total, any_error) = read_all(names, wanted, reservation.bytes());
            if total > reservation.bytes() {
                // The log changed under us (retention moved the start); charge what is here
                // now, it is bounded by one batch.
                let more = total - reservation.bytes();
                reservation.grow(more, memory_deadline).await?;
            }
        }
    }
    reservation.shrink_to(total);
    Ok((results, total, any_error, reservation))
}

/// Every partition answered with a retriable error: no memory could be had for the read.
fn starved(names: &[String], wanted: &[Wanted], error: &BudgetError) -> Vec<Vec<FetchedPartition>> {
    let mut results: Vec<Vec<FetchedPartition>> = names.iter().map(|_| Vec::new()).collect();
    for want in wanted {
        let (high_watermark, log_start) = want
            .log
            .as_ref()
            .map_or((-1, -1), |log| (log.high_watermark(), log.log_start_offset()));
        results[want.topic].push(FetchedPartition::failed(
            want.partition,
            CoreError::new(
                ErrorCode::RequestTimedOut,
                format!(
                    "topic {:?} partition {}: {error}",
                    names[want.topic], want.partition
                ),
            ),
            high_watermark,
            log_start,
        ));
    }
    results
}

/// One pass over every wanted partition. The response budget `max_bytes` is soft only for the
/// first batch returned, as in Kafka, so a batch larger than the budget still gets through.
fn read_all(names: &[String], wanted: &[Wanted], max_bytes: usize) -> Pass {
    let mut results: Vec<Vec<FetchedPartition>> = names.iter().map(|_| Vec::new()).collect();
    let mut total = 0usize;
    let mut any_error = false;
    for want in wanted {
        let remaining = max_bytes.saturating_sub(total);
        let partition = match &want.log {
            Err(error) => {
                any_error = true;
                FetchedPartition::failed(want.partition, error.clone(), -1, -1)
            }
            Ok(log) if remaining == 0 && total > 0 => {
                FetchedPartition::empty(want.partition, log.high_watermark(), log.log_start_offset())
            }
            Ok(log) => match log.read(want.offset, want.max_bytes.min(remaining.max(1))) {
                Ok(read) if total > 0 && read.records.len() > remaining => {
                    FetchedPartition::empty(want.partition, read.high_watermark, read.log_start_offset)
                }
                Ok(read) => {
                    total += read.records.len();
                    FetchedPartition {
                        records: read.records,
                        ..FetchedPartition::empty(want.partition, read.high_watermark, read.log_start_offset)
                    }
                }
                Err(error) => {
                    any_error = true;
                    let core_error = CoreError::partition_storage(&names[want.topic], want.partition, &error);
                    let (log_start, high_watermark) = match error {
                        StorageError::OffsetOutOfRange {
                            log_start_offset,
                            high_watermark,
                            ..
                        } => (log_start_offset, high_watermark),
                        _ => (log.log_start_offset(), log.high_watermark()),
                    };
                    FetchedPartition::failed(want.partition, core_error, high_watermark, log_start)
                }
            },
        };
        results[want.topic].push(partition);
    }
    (results, total, any_error)
}
