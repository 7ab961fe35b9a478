//! The append path: the checks an append must pass under the writer lock (idempotent
//! producers, then the records' keys against stream erasures and a compacting policy, then
//! stream conditions), offset assignment, the one positional write, index
//! entries, and the roll by size or age. The only place offsets are decided.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tidelog_proto::batch::{set_base_offset, RecordBatch};

use super::{
    AppendOutcome, Inner, PartitionLog, Writer, APPEND_BUFFER_RETAINED_BYTES, PENDING_INDEX_ENTRIES_MAX,
};
use crate::storage::conditions::{self, AppendConditions, Verdict};
use crate::storage::config::{FlushPolicy, LogConfig};
use crate::storage::error::StorageError;
use crate::storage::key_index::{self, KeyedRecords};
use crate::storage::producer_state::{Check, ProducerLimits, ProducerStateMap, Refusal};
use crate::storage::stream_marks;

impl PartitionLog {
    /// Appends batches that the caller has already validated with `RecordBatch::validate()`.
    /// Assigns consecutive offsets (rewriting each base offset in a copy), writes all batches
    /// with one positional write to the active segment (rolling first if they would not fit or
    /// the segment is too old), and updates the indexes. Returns once the bytes are in the page
    /// cache; under [`FlushPolicy::Always`] they become visible only when
    /// [`wait_durable`](Self::wait_durable) or [`sync`](Self::sync) has synced them.
    ///
    /// Batches with a producer id (idempotent producers) are checked against the partition's
    /// producer state here, under the writer lock and before offsets are assigned: a retry of
    /// one of the producer's last [`PRODUCER_BATCHES_RETAINED`] batches is not written again
    /// (the outcome has `duplicate` set and the original offsets) if its sequence range and
    /// CRC match; a gap in the sequence, a new epoch or an unknown producer not starting at
    /// sequence 0, or a known range with other contents is refused; an older epoch is fenced.
    /// A failed append leaves the producer state as it was.
    ///
    /// # Errors
    /// `BatchTooLarge` if a batch or the whole call cannot fit a segment (nothing is written),
    /// `OutOfOrderSequence`, `InvalidProducerEpoch`, `DuplicateSequence`, `UnknownProducerId`,
    /// `SequenceConflict` (nothing is written),
    /// `Closed`, `Poisoned` after an earlier fsync failure, `Io` if the write fails.
    ///
    /// [`PRODUCER_BATCHES_RETAINED`]: crate::storage::PRODUCER_BATCHES_RETAINED
    pub fn append(&self, batches: &[RecordBatch], now_ms: i64) -> Result<AppendOutcome, StorageError> {
        self.append_conditional(batches, &AppendConditions::default(), now_ms)
    }

    /// [`append`](Self::append) if every one of `conditions` holds (issue 8 §1), checked here
    /// under the writer lock after the idempotent-producer check and before offsets are
    /// assigned, so it sees every earlier append, synced or not. An exact retry of an append
    /// already in the log (§2, `conditions::check`) gets `duplicate` and the original offsets,
    /// and nothing is written. A refused append changes nothing, producer state included.
    ///
    /// # Errors
    /// As [`append`](Self::append), and `ConditionFailed` with every failed check (nothing is
    /// written).
    pub fn append_conditional(
        &self,
        batches: &[RecordBatch],
        conditions: &AppendConditions,
        now_ms: i64,
    ) -> Result<AppendOutcome, StorageError> {
        match self.append_inner(batches, conditions, now_ms, true)? {
            Some(outcome) => Ok(outcome),
            // append_inner returns None only when rolling is not allowed.
            None => Err(StorageError::Poisoned {
                reason: "append needed a roll it was not allowed".to_string(),
            }),
        }
    }

    /// Like [`append`](Self::append), but never blocks on the filesystem beyond the write
    /// itself (a page-cache copy): if the append needs a segment roll (files created and
    /// fsynced), nothing is done and `Ok(None)` is returned, so the caller can run
    /// [`append`](Self::append) on a blocking thread. The async request path uses this.
    ///
    /// # Errors
    /// As [`append`](Self::append).
    pub fn append_without_roll(
        &self,
        batches: &[RecordBatch],
        now_ms: i64,
    ) -> Result<Option<AppendOutcome>, StorageError> {
        self.append_inner(batches, &AppendConditions::default(), now_ms, false)
    }

    /// [`append_conditional`](Self::append_conditional) that never rolls, as
    /// [`append_without_roll`](Self::append_without_roll); after `Ok(None)` the conditions are
    /// checked again by the rolling append.
    ///
    /// # Errors
    /// As [`append_conditional`](Self::append_conditional).
    pub fn append_conditional_without_roll(
        &self,
        batches: &[RecordBatch],
        conditions: &AppendConditions,
        now_ms: i64,
    ) -> Result<Option<AppendOutcome>, StorageError> {
        self.append_inner(batches, conditions, now_ms, false)
    }

    fn append_inner(
        &self,
        batches: &[RecordBatch],
        conditions: &AppendConditions,
        now_ms: i64,
        allow_roll: bool,
    ) -> Result<Option<AppendOutcome>, StorageError> {
        let inner = &self.inner;
        inner.check_writable()?;
        let config = inner.config();
        let batch_bytes_max = config.batch_bytes_max();
        let mut total_bytes = 0usize;
        let mut record_count = 0i64;
        for batch in batches {
            if batch.len() > batch_bytes_max {
                return Err(StorageError::BatchTooLarge {
                    size: batch.len(),
                    max: batch_bytes_max,
                });
            }
            let last_offset_delta = batch.header().last_offset_delta;
            if last_offset_delta < 0 {
                return Err(StorageError::corrupt(
                    &inner.dir,
                    format!("append of a batch with lastOffsetDelta {last_offset_delta}"),
                ));
            }
            total_bytes = total_bytes.saturating_add(batch.len());
            record_count = record_count.saturating_add(i64::from(last_offset_delta) + 1);
        }
        let append_bytes_max = config.append_bytes_max();
        if total_bytes > append_bytes_max {
            return Err(StorageError::BatchTooLarge {
                size: total_bytes,
                max: append_bytes_max,
            });
        }

        let mut writer = inner.lock_writer()?;
        // Checked again under the lock: close() may have finished while we waited for it.
        inner.check_writable()?;
        let base_offset = writer.active.next_offset();
        if batches.is_empty() {
            return Ok(Some(AppendOutcome {
                base_offset,
                last_offset: base_offset - 1,
                log_start_offset: inner.log_start_offset.load(Ordering::Acquire),
                duplicate: false,
            }));
        }
        let mut has_producer_batches = false;
        if let Some(duplicate) = check_producers(&writer.producers, batches, &mut has_producer_batches)? {
            return Ok(Some(AppendOutcome {
                base_offset: duplicate.0,
                last_offset: duplicate.1,
                log_start_offset: inner.log_start_offset.load(Ordering::Acquire),
                duplicate: true,
            }));
        }
        // The keys of the records, for the per-key index (nothing for keyless records but the
        // walk that finds their keys are null).
        let keyed = key_index::keyed_records(
            batches.iter().map(|batch| (batch.header(), batch.as_bytes())),
            config.decompressed_bytes_max,
        )
        .map_err(|source| StorageError::Corrupt {
            path: inner.dir.clone(),
            detail: "append of a batch whose records do not decode".to_string(),
            source: Some(source),
        })?;
        check_keys(&config, inner, batches, &keyed)?;
        if !conditions.is_empty() {
            if let Some(outcome) =
                inner.check_conditions(&mut writer, batches, conditions, base_offset, now_ms)?
            {
                return Ok(Some(outcome));
            }
        }
        let last_offset = base_offset
            .checked_add(record_count - 1)
            .ok_or(StorageError::OffsetOverflow)?;
        let active = &writer.active;
        // Like Kafka's roll on a full offset index: the key table's bound holds because a
        // segment whose table would pass it is closed first.
        let key_table_full = !keyed.is_empty()
            && active
                .keys
                .read_active(|table| {
                    table.bytes_after(keyed.entries.len(), keyed.key_bytes)
                        > config.key_index_active_bytes_max
                })
                .unwrap_or(false);
        let too_big = active.end() + total_bytes as u64 > config.segment_bytes;
        let too_old = now_ms.saturating_sub(active.first_batch_timestamp()) > config.segment_ms;
        let offsets_exhausted = last_offset - active.base_offset > i64::from(u32::MAX);
        if !active.is_empty() && (too_big || too_old || offsets_exhausted || key_table_full) {
            if !allow_roll {
                return Ok(None);
            }
            inner.roll(&mut writer)?;
        }

        writer.buffer_used = true;
        let Writer {
            active,
            buffer,
            entries,
            producers,
            producer_limits,
            ..
        } = &mut *writer;
        let active = Arc::clone(active);
        let start = active.end();
        let mut placer = active.index_placer(config.index_interval_bytes);
        buffer.clear();
        entries.clear();
        let mut next_offset = base_offset;
        let mut first_batch_timestamp = None;
        let mut last_batch = (start, base_offset);
        // (position, relative base offset) of each batch, for the key index; empty (and not
        // allocated) for keyless appends.
        let mut batch_places: Vec<(u32, u32)> = Vec::new();
        for batch in batches {
            let at = buffer.len();
            buffer.extend_from_slice(batch.as_bytes());
            set_base_offset(&mut buffer[at..], next_offset);
            let header = batch.header();
            let position = start + at as u64;
            // The roll check above keeps every offset of this append within u32 of the base.
            let relative_offset = u32::try_from(next_offset - active.base_offset).unwrap_or(u32::MAX);
            if !keyed.is_empty() {
                // Positions fit in u32: segments are capped at SEGMENT_BYTES_MAX.
                batch_places.push((u32::try_from(position).unwrap_or(u32::MAX), relative_offset));
            }
            if let Some(pair) = placer.on_batch(
                relative_offset,
                position,
                batch.len() as u64,
                header.max_timestamp,
            ) {
                entries.push(pair);
            }
            // The age-roll clock is the broker's append time, not the client's record
            // timestamp: a producer stamping ancient times must not roll a segment (three
            // open files) on every append.
            first_batch_timestamp.get_or_insert(now_ms);
            last_batch = (position, next_offset);
            next_offset += i64::from(header.last_offset_delta) + 1;
        }

        if let Err(error) = active.log.write_all_at(buffer, start) {
            // Cut off whatever part of the write landed, so the bytes a caller was told failed
            // cannot reappear as batches after a restart.
            match active.log.set_len(start) {
                Ok(()) => active.set_file_bytes(start),
                Err(truncate_error) => {
                    inner.poison(format!("could not undo a failed write: {truncate_error}"))
                }
            }
            return Err(StorageError::io("writing", &active.paths.log)(error));
        }
        if !keyed.is_empty() {
            // Before the new end is published, so the next append's checks (under this lock)
            // and any reader that sees the records see them in the index.
            active.keys.with_active(|table| {
                for (entry, key) in keyed.iter() {
                    let (batch_position, batch_relative) = batch_places[entry.batch as usize];
                    table.insert(
                        key,
                        key_index::Place {
                            relative_offset: batch_relative + entry.offset_delta,
                            batch_position,
                            record_start: entry.record_start,
                        },
                    );
                }
            });
        }
        if has_producer_batches {
            inner.apply_producers(producers, *producer_limits, batches, base_offset, now_ms);
        }
        active.record_append(
            start + buffer.len() as u64,
            next_offset,
            placer.max_timestamp,
            first_batch_timestamp.unwrap_or(placer.max_timestamp),
            last_batch,
            entries,
        );
        if buffer.capacity() > APPEND_BUFFER_RETAINED_BYTES {
            *buffer = Vec::new();
        }
        if active.pending_index_entries() >= PENDING_INDEX_ENTRIES_MAX {
            if let Err(error) = active.flush_index_entries() {
                // Not fatal: the entries stay in memory and are retried; after a crash the
                // active segment's index is rebuilt from the data anyway.
                tracing::warn!(%error, "could not write index entries");
            }
        }
        if config.flush != FlushPolicy::Always {
            inner.publish_visible(next_offset);
        }
        Ok(Some(AppendOutcome {
            base_offset,
            last_offset,
            log_start_offset: inner.log_start_offset.load(Ordering::Acquire),
            duplicate: false,
        }))
    }
}

impl Inner {
    /// Records the producer batches of an append that starts at `base_offset` in the
    /// producer state. Only header fields: no per-record work on the append path. Expiry runs
    /// on this broker time, never on the batches' client timestamps.
    fn apply_producers(
        &self,
        producers: &mut ProducerStateMap,
        limits: ProducerLimits,
        batches: &[RecordBatch],
        base_offset: i64,
        now_ms: i64,
    ) {
        let mut offset = base_offset;
        for batch in batches {
            let header = batch.header();
            if header.producer_id >= 0 && producers.apply(header, offset, now_ms, limits.producers_max) {
                tracing::warn!(
                    dir = %self.dir.display(),
                    producers_max = limits.producers_max,
                    "producer limit reached: forgot the least recently used producer's state"
                );
            }
            offset += i64::from(header.last_offset_delta) + 1;
        }
    }

    /// The conditions of an append (see `append_conditional`), under the writer lock.
    /// `Some`: an exact retry, answered with the original offsets and nothing written.
    fn check_conditions(
        &self,
        writer: &mut Writer,
        batches: &[RecordBatch],
        conditions: &AppendConditions,
        end_offset: i64,
        now_ms: i64,
    ) -> Result<Option<AppendOutcome>, StorageError> {
        // The lookup reads through the writer guard; it is dropped before the writer changes.
        let verdict = {
            let mut lookup = self.stream_lookup(writer);
            conditions::check(conditions, batches, end_offset, &mut lookup)?
        };
        match verdict {
            Verdict::Append => Ok(None),
            Verdict::Retry {
                base_offset,
                last_offset,
            } => {
                // A producer that retried through a new producer id continues its sequence
                // after this batch: record it at the original offsets, as if it had written
                // them (it wrote the same events).
                let Writer {
                    producers,
                    producer_limits,
                    ..
                } = writer;
                self.apply_producers(producers, *producer_limits, batches, base_offset, now_ms);
                tracing::debug!(
                    dir = %self.dir.display(),
                    base_offset,
                    last_offset,
                    "conditional append is an exact retry; answered with the original offsets"
                );
                Ok(Some(AppendOutcome {
                    base_offset,
                    last_offset,
                    log_start_offset: self.log_start_offset.load(Ordering::Acquire),
                    duplicate: true,
                }))
            }
        }
    }
}

/// What the records' keys must pass, under the writer lock and before anything changes (a
/// refused append changes nothing, producer state included): no record of an erased stream
/// (the erasure fixed its point under this lock, so the check and the erasure are ordered),
/// and on a compacting log no record without a key (Kafka refuses them the same way). A
/// keyless append to a log that does not compact costs nothing here.
fn check_keys(
    config: &LogConfig,
    inner: &Inner,
    batches: &[RecordBatch],
    keyed: &KeyedRecords,
) -> Result<(), StorageError> {
    if !keyed.is_empty() {
        let marks = inner.marks.snapshot();
        if marks.has_erased() {
            if let Some((_, key)) = keyed.iter().find(|(_, key)| marks.is_erased(key)) {
                return Err(stream_marks::erased(key));
            }
        }
    }
    if config.cleanup_policy.compacts() {
        let records: usize = batches
            .iter()
            .map(|batch| usize::try_from(batch.header().record_count).unwrap_or(0))
            .sum();
        if keyed.entries.len() < records {
            // Entries are in record order: the first whose index is not its position follows
            // a keyless record (or, none such, the keyless records are at the end).
            let record_index = keyed
                .entries
                .iter()
                .enumerate()
                .find(|(position, entry)| entry.record_index as usize != *position)
                .map_or(keyed.entries.len(), |(position, _)| position);
            return Err(StorageError::KeylessRecord { record_index });
        }
    }
    Ok(())
}

/// Checks every producer batch of an append against the state (and against the batches of
/// the same call before it). `Some((base, last))`: every batch is a duplicate, with the
/// offsets they were first appended at.
fn check_producers(
    producers: &ProducerStateMap,
    batches: &[RecordBatch],
    has_producer_batches: &mut bool,
) -> Result<Option<(i64, i64)>, StorageError> {
    let mut accepted = Vec::new();
    let mut duplicates: Option<(i64, i64, i64)> = None;
    let mut duplicate_count = 0;
    for (index, batch) in batches.iter().enumerate() {
        let header = batch.header();
        if header.producer_id < 0 {
            continue;
        }
        *has_producer_batches = true;
        match producers.check(header, &accepted) {
            Ok(Check::Append) => {
                if index + 1 < batches.len() {
                    accepted.push(*header);
                }
            }
            Ok(Check::Duplicate(original)) => {
                duplicate_count += 1;
                let first = duplicates.map_or(original.base_offset, |(first, _, _)| first);
                duplicates = Some((first, original.last_offset, header.producer_id));
            }
            Err(Refusal::OutOfOrder {
                producer_id,
                expected,
                found,
            }) => {
                return Err(StorageError::OutOfOrderSequence {
                    producer_id,
                    expected,
                    found,
                })
            }
            Err(Refusal::StaleEpoch {
                producer_id,
                current,
                found,
            }) => {
                return Err(StorageError::InvalidProducerEpoch {
                    producer_id,
                    current,
                    found,
                })
            }
            Err(Refusal::UnknownProducer { producer_id, found }) => {
                return Err(StorageError::UnknownProducerId { producer_id, found })
            }
            Err(Refusal::Conflict {
                producer_id,
                first_sequence,
                last_sequence,
                stored,
                found_crc,
            }) => {
                // Two different batches under one producer id and sequence range: the id was
                // handed out twice, or a client rebuilt a batch. Never acknowledged as stored.
                tracing::warn!(
                    producer_id,
                    first_sequence,
                    last_sequence,
                    stored_base_offset = stored.base_offset,
                    stored_crc = stored.crc,
                    found_crc,
                    "refused a producer batch that reuses the sequences of a different stored batch"
                );
                return Err(StorageError::SequenceConflict {
                    producer_id,
                    first_sequence,
                    last_sequence,
                    base_offset: stored.base_offset,
                });
            }
        }
    }
    match duplicates {
        None => Ok(None),
        Some((first, last, _)) if duplicate_count == batches.len() => Ok(Some((first, last))),
        Some((_, _, producer_id)) => Err(StorageError::DuplicateSequence { producer_id }),
    }
}
