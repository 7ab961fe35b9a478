//! Fetch: read whole batches from many partitions; long-poll until `min_bytes` have
//! accumulated or `max_wait_ms` has passed, woken by appends (each partition's high-watermark
//! watch), never by a polling loop.
//!
//! Memory: each pass takes what the budget can grant up to `max_bytes`, reads within it, and
//! keeps charged exactly what the read returned (a first batch larger than the grant included)
//! until the response is written. A fetch that cannot get memory within
//! `limits.memory_wait_ms_max` is answered with the retriable REQUEST_TIMED_OUT on every
//! partition, never with an empty success a consumer would take for the end of the log.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use tidelog_proto::pb::{self, fetch_response, ErrorCode};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{partition_log, partition_storage_error, Outcome};
use crate::net::budget::{BudgetError, ConnectionBudget, Reservation};
use crate::net::ListenerContext;
use crate::storage::{PartitionLog, StorageError};

/// Least memory a pass waits for before it reads (or all it asks for, if less): enough for
/// typical batches, so a starved fetch does not read one small batch per wake-up.
const GRANT_BYTES_MIN: usize = 64 << 10;

/// One partition asked for, resolved against the registry.
struct Wanted {
    topic: usize,
    partition: u32,
    log: Result<Arc<PartitionLog>, (ErrorCode, String)>,
    offset: i64,
    max_bytes: usize,
}

pub(super) fn handle(
    context: &Arc<ListenerContext>,
    budget: &ConnectionBudget,
    request: pb::FetchRequest,
) -> Outcome {
    let limits = &context.core.config.limits;
    let max_wait = Duration::from_millis(u64::from(request.max_wait_ms).min(limits.fetch_wait_ms_max));
    let min_bytes = request.min_bytes as usize;
    let max_bytes = (request.max_bytes as usize).min(limits.fetch_bytes_max);
    let mut names = Vec::with_capacity(request.topics.len());
    let mut wanted = Vec::new();
    for (topic_index, topic) in request.topics.into_iter().enumerate() {
        let found = context.core.registry.get(&topic.name);
        for partition in topic.partitions {
            wanted.push(Wanted {
                topic: topic_index,
                partition: partition.partition,
                log: partition_log(found.as_ref(), &topic.name, partition.partition),
                offset: partition.fetch_offset,
                max_bytes: (partition.max_bytes as usize).min(max_bytes),
            });
        }
        names.push(topic.name);
    }
    let mut shutdown = context.shutdown.clone();
    let budget = budget.clone();
    let memory_wait = Duration::from_millis(limits.memory_wait_ms_max);
    Outcome::DeferredHeld(Box::pin(async move {
        let deadline = Instant::now() + max_wait;
        // Subscribe before the first read, so an append between the read and the wait still
        // wakes us.
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
            // min_bytes 0 asks for an immediate answer, as in Kafka.
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
            .map(|(name, partitions)| fetch_response::Topic { name, partitions })
            .collect();
        Some((
            pb::response::Body::Fetch(pb::FetchResponse { topics }),
            reservation,
        ))
    }))
}

type Pass = (Vec<Vec<fetch_response::Partition>>, usize, bool);

/// One pass, charged to the budget: reads within what the budget grants (up to `max_bytes`)
/// and returns the reservation shrunk to exactly what was read.
async fn read_within_budget(
    budget: &ConnectionBudget,
    names: &[String],
    wanted: &[Wanted],
    max_bytes: usize,
    memory_wait: Duration,
) -> Result<(Vec<Vec<fetch_response::Partition>>, usize, bool, Reservation), BudgetError> {
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
fn starved(names: &[String], wanted: &[Wanted], error: &BudgetError) -> Vec<Vec<fetch_response::Partition>> {
    let mut results: Vec<Vec<fetch_response::Partition>> = names.iter().map(|_| Vec::new()).collect();
    for want in wanted {
        let (high_watermark, log_start) = want
            .log
            .as_ref()
            .map_or((-1, -1), |log| (log.high_watermark(), log.log_start_offset()));
        results[want.topic].push(failed(
            want.partition,
            ErrorCode::RequestTimedOut,
            format!(
                "topic {:?} partition {}: {error}",
                names[want.topic], want.partition
            ),
            high_watermark,
            log_start,
        ));
    }
    results
}

/// One pass over every wanted partition. The response budget `max_bytes` is soft only for the
/// first batch returned, as in Kafka, so a batch larger than the budget still gets through.
fn read_all(
    names: &[String],
    wanted: &[Wanted],
    max_bytes: usize,
) -> (Vec<Vec<fetch_response::Partition>>, usize, bool) {
    let mut results: Vec<Vec<fetch_response::Partition>> = names.iter().map(|_| Vec::new()).collect();
    let mut total = 0usize;
    let mut any_error = false;
    for want in wanted {
        let remaining = max_bytes.saturating_sub(total);
        let partition = match &want.log {
            Err((code, message)) => {
                any_error = true;
                failed(want.partition, *code, message.clone(), -1, -1)
            }
            Ok(log) if remaining == 0 && total > 0 => {
                empty(want.partition, log.high_watermark(), log.log_start_offset())
            }
            Ok(log) => match log.read(want.offset, want.max_bytes.min(remaining.max(1))) {
                Ok(read) if total > 0 && read.records.len() > remaining => {
                    empty(want.partition, read.high_watermark, read.log_start_offset)
                }
                Ok(read) => {
                    total += read.records.len();
                    fetch_response::Partition {
                        partition: want.partition,
                        error: ErrorCode::None as i32,
                        message: String::new(),
                        high_watermark: read.high_watermark,
                        log_start_offset: read.log_start_offset,
                        records: read.records,
                    }
                }
                Err(error) => {
                    any_error = true;
                    let (code, message) = partition_storage_error(&names[want.topic], want.partition, &error);
                    let (log_start, high_watermark) = match error {
                        StorageError::OffsetOutOfRange {
                            log_start_offset,
                            high_watermark,
                            ..
                        } => (log_start_offset, high_watermark),
                        _ => (log.log_start_offset(), log.high_watermark()),
                    };
                    failed(want.partition, code, message, high_watermark, log_start)
                }
            },
        };
        results[want.topic].push(partition);
    }
    (results, total, any_error)
}

fn empty(partition: u32, high_watermark: i64, log_start_offset: i64) -> fetch_response::Partition {
    fetch_response::Partition {
        partition,
        error: ErrorCode::None as i32,
        message: String::new(),
        high_watermark,
        log_start_offset,
        records: Bytes::new(),
    }
}

fn failed(
    partition: u32,
    code: ErrorCode,
    message: String,
    high_watermark: i64,
    log_start_offset: i64,
) -> fetch_response::Partition {
    fetch_response::Partition {
        partition,
        error: code as i32,
        message,
        high_watermark,
        log_start_offset,
        records: Bytes::new(),
    }
}
