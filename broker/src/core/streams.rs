//! Reading event streams (issue 8 §4): one key's records in one topic, through the partition's
//! per-key index, never a scan. The core finds the key's partition (Kafka's murmur2 over the
//! topic's partition count, as every producer routes it), bounds the page (records, bytes,
//! charged to the connection's memory budget the way a fetch is), and long-polls a forward read
//! that is at the end of its stream: it waits on the partition's high-watermark watch (woken by
//! appends, never a polling loop) and reads again, until a record of the key is there, the wait
//! is over or the broker shuts down. Reads run on the blocking pool, not on the connection's
//! task as a fetch's preads do: a stream read is usually a few preads per segment, but a closed
//! segment whose key file is still being (re)built is answered by scanning it, which must not
//! stall an async worker.
//!
//! Per-key truncation and erasure (issue 9 §3) are here too: `truncate_stream`, `erase_stream`
//! (its deadline `cleaner.erase_deadline_ms` from now) and `reopen_stream` change the stream's
//! marks in its partition (durably, on the blocking pool), and `stream_info` reports them with
//! the erasure's progress.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tidelog_proto::partitioner::try_partition_for_key;
use tokio::time::Instant;
use tracing::Instrument;

use super::{blocking, partition_log, Core, CoreError, ErrorCode};
use crate::clock::now_ms;
use crate::net::budget::{ConnectionBudget, Reservation};
use crate::storage::{
    Direction, ErasureProgress, PartitionLog, StorageError, StreamInfo, StreamMarkState, StreamRead,
    StreamRecord,
};

/// Least memory a read waits for before it reads (or all it may take, if less).
const GRANT_BYTES_MIN: usize = 64 << 10;

/// What a record costs in memory and on the wire beyond its key, value and header bytes
/// (offset, timestamp, lengths, field tags): a bound, so a page of tiny records is charged
/// honestly.
const RECORD_OVERHEAD_BYTES: usize = 48;

/// One ReadStream request, in domain terms.
#[derive(Debug, Clone)]
pub(crate) struct StreamReadInput {
    pub topic: String,
    pub key: Bytes,
    /// Forward: the first offset wanted (below the log start reads from the first retained
    /// record). Backward: the offset to read down from, inclusive; -1 or past the end: from
    /// the stream's last record.
    pub from: i64,
    pub direction: Direction,
    /// 0: `limits.stream_read_records_max`; clamped to it.
    pub limit: usize,
    /// 0: `limits.stream_read_bytes_max` (at most `limits.fetch_bytes_max`); clamped to it.
    pub bytes_max: usize,
    /// Forward only: how long to wait for a record of the key when none is at or after `from`;
    /// clamped to `limits.stream_wait_ms_max`.
    pub max_wait: Duration,
}

/// A stream's marks after a truncate, erase or re-open: its partition, the marks, and how much
/// of an erasure the cleaner has left.
pub(crate) type MarksAnswer = (u32, StreamMarkState, ErasureProgress);

/// A stream's marks and the progress of its latest erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MarksOutput {
    pub state: StreamMarkState,
    pub progress: ErasureProgress,
}

/// What StreamInfo answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamDescription {
    pub partition: u32,
    /// An erased stream has none (`StreamInfo::NONE`); a truncated one counts from the point.
    pub info: StreamInfo,
    /// `None` when the stream was never truncated nor erased.
    pub marks: Option<MarksOutput>,
}

/// A page of a stream.
#[derive(Debug)]
pub(crate) struct StreamReadOutput {
    /// The partition the key lives in.
    pub partition: u32,
    pub read: StreamRead,
    /// Charged for the records: hold it until the response has been written.
    pub reservation: Option<Reservation>,
}

impl Core {
    /// Resolves the key's partition now (on the caller's task) and returns the read, which
    /// long-polls a forward read at the end of the stream.
    pub(crate) fn read_stream(
        &self,
        budget: &ConnectionBudget,
        input: StreamReadInput,
    ) -> impl Future<Output = Result<StreamReadOutput, CoreError>> + Send + 'static {
        let limits = &self.config.limits;
        let resolved = self.stream_partition(&input.topic, &input.key);
        let limit = clamp_to(input.limit, limits.stream_read_records_max);
        // fetch_bytes_max is what the config checks against the frame size; a page obeys both.
        let bytes_max = clamp_to(
            input.bytes_max,
            limits.stream_read_bytes_max.min(limits.fetch_bytes_max),
        );
        let max_wait = match input.direction {
            Direction::Forward => input
                .max_wait
                .min(Duration::from_millis(limits.stream_wait_ms_max)),
            // A backward read starts at the end: there is nothing to wait for.
            Direction::Backward => Duration::ZERO,
        };
        let from = match input.direction {
            Direction::Forward => input.from.max(0),
            Direction::Backward => input.from,
        };
        let memory_wait = Duration::from_millis(limits.memory_wait_ms_max);
        let mut shutdown = self.shutdown.clone();
        let budget = budget.clone();
        let span = match &resolved {
            Ok((partition, _)) => tracing::debug_span!("read_stream", topic = %input.topic, partition),
            Err(_) => tracing::debug_span!("read_stream", topic = %input.topic),
        };
        async move {
            let (partition, log) = resolved?;
            let deadline = Instant::now() + max_wait;
            // Subscribe before the first read, so an append between the read and the wait
            // still wakes us.
            let mut appended = log.subscribe();
            // Set when a channel's sender is gone (the log closed, the broker's handle dropped):
            // nothing will wake us any more, so the next pass answers instead of spinning.
            let mut ended = false;
            loop {
                appended.borrow_and_update();
                let (read, reservation) =
                    read_within_budget(&log, &budget, &input, from, limit, bytes_max, memory_wait)
                        .await
                        .map_err(|error| {
                            let error = error.in_partition(&input.topic, partition);
                            tracing::warn!(%error, "stream read failed");
                            error
                        })?;
                let done = !read.records.is_empty()
                    || max_wait.is_zero()
                    || ended
                    || Instant::now() >= deadline
                    || *shutdown.borrow();
                if done {
                    return Ok(StreamReadOutput {
                        partition,
                        read,
                        reservation: Some(reservation),
                    });
                }
                drop(reservation);
                tokio::select! {
                    changed = appended.changed() => ended = changed.is_err(),
                    () = tokio::time::sleep_until(deadline) => {}
                    changed = shutdown.changed() => ended = changed.is_err(),
                }
            }
        }
        .instrument(span)
    }

    /// What the partition holding `key` retains of its stream, and its truncation and erasure
    /// marks with the erasure's progress. An erased stream is described (no records, its marks)
    /// rather than refused, so an operator can follow the erasure. The partition is resolved
    /// now; the read runs on the blocking pool.
    pub(crate) fn stream_info(
        &self,
        topic: &str,
        key: Bytes,
    ) -> impl Future<Output = Result<StreamDescription, CoreError>> + Send + 'static {
        let resolved = self.stream_partition(topic, &key);
        let topic = topic.to_owned();
        let span = tracing::debug_span!("stream_info", %topic);
        async move {
            let (partition, log) = resolved?;
            let described = blocking(move || {
                let marks = log.stream_marks(&key);
                let info = match log.stream_info(&key) {
                    Err(StorageError::StreamErased { .. }) => StreamInfo::NONE,
                    other => other?,
                };
                let marks = if marks == StreamMarkState::NONE {
                    None
                } else {
                    Some(MarksOutput {
                        state: marks,
                        progress: log.erasure_progress(&key)?,
                    })
                };
                Ok::<_, StorageError>((info, marks))
            })
            .await?;
            let (info, marks) =
                described.map_err(|error| CoreError::partition_storage(&topic, partition, &error))?;
            Ok(StreamDescription {
                partition,
                info,
                marks,
            })
        }
        .instrument(span)
    }

    /// Truncates the stream `key` of `topic` before `before` (clamped to the high watermark):
    /// its records below become unreadable and the cleaner removes them.
    pub(crate) fn truncate_stream(
        &self,
        topic: &str,
        key: Bytes,
        before: i64,
    ) -> impl Future<Output = Result<MarksAnswer, CoreError>> + Send + 'static {
        self.change_marks(topic, key, "truncate_stream", move |log, key| {
            log.truncate_stream(key, before)
        })
    }

    /// Erases the stream `key` of `topic`: every record of it written so far goes, by
    /// `cleaner.erase_deadline_ms` from now, and its appends are refused until re-opened. Its
    /// snapshots (records of the same key in the companion topic `<topic>.snapshots`, state
    /// built from the erased records) are erased with it, by the same deadline.
    pub(crate) fn erase_stream(
        &self,
        topic: &str,
        key: Bytes,
    ) -> impl Future<Output = Result<MarksAnswer, CoreError>> + Send + 'static {
        let deadline_after = i64::try_from(self.config.cleaner.erase_deadline_ms).unwrap_or(i64::MAX);
        let companion = self.snapshot_partition(topic, &key);
        let cleaner = Arc::clone(&self.cleaner);
        self.change_marks(topic, key, "erase_stream", move |log, key| {
            let now = now_ms();
            let deadline = now.saturating_add(deadline_after);
            let state = log.erase_stream(key, now, deadline)?;
            if let Some(companion) = companion {
                // After the stream's own erasure: a failure here is answered as the erase's,
                // and erasing again (a no-op for the stream) finishes the job.
                companion.erase_stream(key, now, deadline)?;
            }
            // Idle cleaner threads look now, not at their next backoff round.
            cleaner.nudge();
            Ok(state)
        })
    }

    /// Lets appends to the erased stream `key` of `topic` in again (its erased records stay
    /// erased), and saving its snapshots: the companion topic's key is re-opened too.
    pub(crate) fn reopen_stream(
        &self,
        topic: &str,
        key: Bytes,
    ) -> impl Future<Output = Result<MarksAnswer, CoreError>> + Send + 'static {
        let companion = self.snapshot_partition(topic, &key);
        self.change_marks(topic, key, "reopen_stream", move |log, key| {
            let state = log.reopen_stream(key)?;
            if let Some(companion) = companion {
                companion.reopen_stream(key)?;
            }
            Ok(state)
        })
    }

    /// The partition of `<topic>.snapshots` holding the snapshots of stream `key`, when the
    /// companion topic exists and that partition is online.
    fn snapshot_partition(&self, topic: &str, key: &[u8]) -> Option<Arc<PartitionLog>> {
        let name = super::snapshots::snapshot_topic_name(topic);
        let found = self.registry.get(&name)?;
        let count = u32::try_from(found.partitions.len()).ok()?;
        let partition = try_partition_for_key(key, count)?;
        match partition_log(Some(&found), &name, partition) {
            Ok(log) => Some(log),
            Err(error) => {
                tracing::warn!(%error, "the stream's snapshot partition is not online: its snapshots keep their marks as they are");
                None
            }
        }
    }

    /// One change of a stream's marks, on the blocking pool (it fsyncs the marks file), and
    /// the marks and progress after it.
    fn change_marks(
        &self,
        topic: &str,
        key: Bytes,
        operation: &'static str,
        change: impl FnOnce(&PartitionLog, &[u8]) -> Result<StreamMarkState, StorageError> + Send + 'static,
    ) -> impl Future<Output = Result<MarksAnswer, CoreError>> + Send + 'static {
        let resolved = self.stream_partition(topic, &key);
        let topic = topic.to_owned();
        let span = tracing::info_span!("stream_marks", operation, %topic);
        async move {
            let (partition, log) = resolved?;
            let changed = blocking(move || {
                let state = change(&log, &key)?;
                let progress = log.erasure_progress(&key)?;
                Ok::<_, StorageError>((state, progress))
            })
            .await?;
            let (state, progress) = changed.map_err(|error| {
                let error = CoreError::partition_storage(&topic, partition, &error);
                tracing::warn!(%error, "stream mark change refused");
                error
            })?;
            Ok((partition, state, progress))
        }
        .instrument(span)
    }

    /// The partition a stream lives in: Kafka's default partitioner over the topic's partition
    /// count, the one every producer (ours, Kafka's) routes keyed records with.
    fn stream_partition(&self, topic: &str, key: &[u8]) -> Result<(u32, Arc<PartitionLog>), CoreError> {
        if key.is_empty() {
            return Err(CoreError::new(
                ErrorCode::InvalidRequest,
                "a stream key must not be empty",
            ));
        }
        let found = self.registry.get(topic);
        let count = found
            .as_ref()
            .map(|found| u32::try_from(found.partitions.len()).unwrap_or(u32::MAX))
            .ok_or_else(|| CoreError::unknown_topic(topic))?;
        let partition = try_partition_for_key(key, count).ok_or_else(|| CoreError::unknown_topic(topic))?;
        Ok((partition, partition_log(found.as_ref(), topic, partition)?))
    }
}

/// A request's bound: 0 asks for the broker's maximum, anything larger is clamped to it.
fn clamp_to(asked: usize, max: usize) -> usize {
    if asked == 0 {
        max
    } else {
        asked.min(max)
    }
}

/// A failure of one read, before it is given the partition's name.
enum ReadFailure {
    Storage(crate::storage::StorageError),
    /// Already a client's error: no memory, or the blocking task failed.
    Core(CoreError),
}

impl ReadFailure {
    fn in_partition(self, topic: &str, partition: u32) -> CoreError {
        match self {
            ReadFailure::Storage(error) => CoreError::partition_storage(topic, partition, &error),
            ReadFailure::Core(error) => error,
        }
    }
}

/// One read, charged to the budget: takes what the budget grants (up to `bytes_max`), reads
/// within it, and keeps exactly what the page costs charged (a first record larger than the
/// grant included).
async fn read_within_budget(
    log: &Arc<PartitionLog>,
    budget: &ConnectionBudget,
    input: &StreamReadInput,
    from: i64,
    limit: usize,
    bytes_max: usize,
    memory_wait: Duration,
) -> Result<(StreamRead, Reservation), ReadFailure> {
    let memory_deadline = Instant::now() + memory_wait;
    let starved = |error| {
        tracing::warn!(%error, bytes_max, "stream read got no memory from the broker budget");
        ReadFailure::Core(CoreError::new(
            ErrorCode::RequestTimedOut,
            format!("no memory for the read within the broker budget: {error}"),
        ))
    };
    let min = GRANT_BYTES_MIN.min(bytes_max).max(1);
    let mut reservation = budget
        .reserve_between(min, bytes_max.max(1), Some(memory_deadline))
        .await
        .map_err(starved)?;
    let (log, key, direction, grant) = (
        log.clone(),
        input.key.clone(),
        input.direction,
        reservation.bytes(),
    );
    let read = blocking(move || log.read_stream(&key, from, direction, limit, grant))
        .await
        .map_err(ReadFailure::Core)?
        .map_err(ReadFailure::Storage)?;
    let cost = page_bytes(&read.records);
    if cost > reservation.bytes() {
        // At least one record is always returned, however large: charge it (it is bounded
        // by one batch), waiting for room if the budget has none now.
        let more = cost - reservation.bytes();
        if !reservation.try_grow(more) {
            reservation.grow(more, memory_deadline).await.map_err(starved)?;
        }
    }
    reservation.shrink_to(cost);
    Ok((read, reservation))
}

/// What a page costs: its records' bytes plus a bound on each record's framing.
pub(crate) fn page_bytes(records: &[StreamRecord]) -> usize {
    records.iter().map(record_bytes).fold(0, usize::saturating_add)
}

fn record_bytes(record: &StreamRecord) -> usize {
    let headers = record
        .headers
        .iter()
        .map(|(key, value)| key.len() + value.as_ref().map_or(0, Bytes::len) + 8)
        .fold(0, usize::saturating_add);
    RECORD_OVERHEAD_BYTES
        .saturating_add(record.key.len())
        .saturating_add(record.value.as_ref().map_or(0, Bytes::len))
        .saturating_add(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_asks_for_the_maximum_and_larger_is_clamped() {
        assert_eq!(clamp_to(0, 100), 100);
        assert_eq!(clamp_to(7, 100), 7);
        assert_eq!(clamp_to(1_000, 100), 100);
    }

    #[test]
    fn a_page_costs_its_bytes_and_a_bound_per_record() {
        let record = StreamRecord {
            offset: 1,
            timestamp: 2,
            key: Bytes::from_static(b"key"),
            value: Some(Bytes::from_static(b"value")),
            headers: vec![("h".into(), Some(Bytes::from_static(b"v"))), ("n".into(), None)],
        };
        let one = RECORD_OVERHEAD_BYTES + 3 + 5 + (1 + 1 + 8) + (1 + 8);
        assert_eq!(page_bytes(std::slice::from_ref(&record)), one);
        assert_eq!(page_bytes(&[record.clone(), record]), 2 * one);
        assert_eq!(page_bytes(&[]), 0);
    }
}
