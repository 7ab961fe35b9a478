//! Idempotent producer state of one partition: per producer id, its epoch and the sequence
//! ranges, offsets and CRCs of its last few batches, so a retried batch is recognised and
//! answered with its original offsets instead of being appended twice. The snapshot file and
//! the rebuild at open are in `producer_snapshot`.
//!
//! The state is checked and changed only by `PartitionLog::append`, under the writer lock
//! (`check` before offsets are assigned, `apply` after the write succeeded, so a failed append
//! leaves it untouched), and rebuilt at open from the newest valid snapshot plus the headers
//! of the batches after it. Both paths go through [`ProducerStateMap::apply`].
//!
//! Rules that keep a producer's records from being lost or stored twice:
//! * A duplicate is a batch with exactly the sequence range **and** the CRC of one of the
//!   producer's remembered batches (a retry resends the same bytes, and the CRC does not cover
//!   the base offset the broker rewrites). Same range, other CRC is a conflict, refused: never
//!   a silent acknowledgement of records that were not stored.
//! * A producer the partition does not know must start at sequence 0. A higher first sequence
//!   means either an earlier batch of it never landed (a failed append: appending would store
//!   its records across the gap) or its state was dropped (expiry, eviction); both are refused
//!   with `UnknownProducerId` and nothing is written.
//! * Idle expiry runs on the broker's clock (the `now_ms` of each append), never on the
//!   client's record timestamps.

use std::collections::HashMap;

use tidelog_proto::batch::BatchHeader;

// Recovery recognises snapshot files by name through this path.
pub(crate) use super::producer_snapshot::parse_snapshot_file_name;

/// Batches remembered per producer, as in Kafka: a producer keeps at most this many batches
/// in flight per partition, so a retry is always one of them.
pub const PRODUCER_BATCHES_RETAINED: usize = 5;
/// Default bound on producers remembered per partition; past it the least recently used one is
/// forgotten.
pub const PRODUCERS_PER_PARTITION_MAX_DEFAULT: usize = 1024;
/// Default idle time (broker time since its last append) after which a producer's state is
/// dropped (Kafka's `producer.id.expiration.ms` is 1 day; we keep a week, like retention).
pub const PRODUCER_IDLE_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;

/// Producer limits of one partition.
/// A retained batch whose original CRC is not known (replayed from a cleaned segment): a
/// retry with the same sequences is a duplicate whatever its CRC. A real CRC of 0 only makes
/// one conflicting retry in 2^32 pass as a duplicate of a batch that was stored.
pub(crate) const CRC_UNKNOWN: u32 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerLimits {
    /// Producers remembered; a new one past this evicts the least recently used.
    pub producers_max: usize,
    /// A producer that has not appended for this long (broker time) is forgotten by
    /// maintenance.
    pub producer_idle_ms: i64,
}

impl Default for ProducerLimits {
    fn default() -> Self {
        Self {
            producers_max: PRODUCERS_PER_PARTITION_MAX_DEFAULT,
            producer_idle_ms: PRODUCER_IDLE_MS_DEFAULT,
        }
    }
}

/// Where one batch of a producer landed, and which batch it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchRange {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    /// The batch's own CRC-32C (header field): identifies the bytes of a retry.
    /// The batch's CRC, to tell a retry from a conflicting batch; [`CRC_UNKNOWN`] when
    /// replayed from a cleaned segment, where the stored batch may have been rewritten.
    pub crc: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first, at most [`PRODUCER_BATCHES_RETAINED`].
    pub batches: Vec<BatchRange>,
    /// Broker time of the producer's newest append (at rebuild from headers: the open time,
    /// since headers carry only client timestamps).
    pub last_append_ms: i64,
    /// Recency for LRU eviction: a counter bumped per producer batch, not a clock.
    pub(super) last_used: u64,
}

/// The verdict on one producer batch, before it is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// In sequence (or sequence 0 of a producer or epoch we do not know): append it.
    Append,
    /// Already appended: here is where.
    Duplicate(BatchRange),
}

/// Why a producer batch is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        found: i32,
    },
    StaleEpoch {
        producer_id: i64,
        current: i16,
        found: i16,
    },
    /// A producer this partition holds no state for, starting past sequence 0.
    UnknownProducer { producer_id: i64, found: i32 },
    /// The sequence range of a remembered batch with other contents.
    Conflict {
        producer_id: i64,
        first_sequence: i32,
        last_sequence: i32,
        stored: BatchRange,
        found_crc: u32,
    },
}

/// Kafka's sequence arithmetic: sequences wrap from `i32::MAX` to 0. Total for any input,
/// because headers read back from a damaged file reach it too: negative values count as 0.
pub(crate) fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    let sum = i64::from(sequence.max(0)) + i64::from(increment.max(0));
    // The remainder is below 2^31, so it fits in i32.
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

/// Per producer id, what the partition has appended from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerStateMap {
    pub(super) producers: HashMap<i64, ProducerEntry>,
    pub(super) clock: u64,
    /// The highest producer id this partition has ever appended a batch of (-1: none), kept
    /// even after its state expires: the broker's producer-id counter is recovered above it.
    pub(super) producer_id_max: i64,
}

impl Default for ProducerStateMap {
    fn default() -> Self {
        Self {
            producers: HashMap::new(),
            clock: 0,
            producer_id_max: -1,
        }
    }
}

impl ProducerStateMap {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn producer_id_max(&self) -> i64 {
        self.producer_id_max
    }

    #[cfg(test)]
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Decides what to do with a producer batch. `pending` holds the batches of the same
    /// append call already accepted (they must be seen as appended).
    pub fn check(&self, header: &BatchHeader, pending: &[BatchHeader]) -> Result<Check, Refusal> {
        let producer_id = header.producer_id;
        let base_sequence = header.base_sequence;
        let last_sequence = increment_sequence(base_sequence.max(0), header.last_offset_delta);
        // The producer's epoch and newest sequence, counting batches of this call.
        let mut current = self
            .producers
            .get(&producer_id)
            .map(|entry| (entry.epoch, entry.batches.last().map(|batch| batch.last_sequence)));
        for earlier in pending
            .iter()
            .filter(|earlier| earlier.producer_id == producer_id)
        {
            current = Some((
                earlier.producer_epoch,
                Some(increment_sequence(
                    earlier.base_sequence,
                    earlier.last_offset_delta,
                )),
            ));
        }
        let Some((epoch, newest)) = current else {
            // Unknown producer. Kafka since KIP-360 accepts any sequence here, which lets a
            // batch land across the gap its own failed predecessor left; only sequence 0 is
            // safe to append without history.
            return if base_sequence == 0 {
                Ok(Check::Append)
            } else {
                Err(Refusal::UnknownProducer {
                    producer_id,
                    found: base_sequence,
                })
            };
        };
        if header.producer_epoch < epoch {
            return Err(Refusal::StaleEpoch {
                producer_id,
                current: epoch,
                found: header.producer_epoch,
            });
        }
        if header.producer_epoch > epoch {
            // A new incarnation starts over at sequence 0.
            return if base_sequence == 0 {
                Ok(Check::Append)
            } else {
                Err(Refusal::OutOfOrder {
                    producer_id,
                    expected: 0,
                    found: base_sequence,
                })
            };
        }
        if let Some(entry) = self.producers.get(&producer_id) {
            if let Some(original) = entry
                .batches
                .iter()
                .find(|batch| batch.first_sequence == base_sequence && batch.last_sequence == last_sequence)
            {
                if original.crc != CRC_UNKNOWN && original.crc != header.crc {
                    return Err(Refusal::Conflict {
                        producer_id,
                        first_sequence: base_sequence,
                        last_sequence,
                        stored: *original,
                        found_crc: header.crc,
                    });
                }
                return Ok(Check::Duplicate(*original));
            }
        }
        let expected = newest.map_or(0, |newest| increment_sequence(newest, 1));
        if base_sequence == expected && base_sequence >= 0 {
            Ok(Check::Append)
        } else {
            Err(Refusal::OutOfOrder {
                producer_id,
                expected,
                found: base_sequence,
            })
        }
    }

    /// Records an appended producer batch (the live path after a successful write, with the
    /// append's broker time, and the rebuild path for every producer batch header after the
    /// snapshot, with the open time). Evicts the least recently used producer if a new one
    /// would pass `producers_max`; returns whether it did.
    pub fn apply(
        &mut self,
        header: &BatchHeader,
        base_offset: i64,
        now_ms: i64,
        producers_max: usize,
    ) -> bool {
        if header.producer_id < 0 {
            return false;
        }
        self.clock += 1;
        self.producer_id_max = self.producer_id_max.max(header.producer_id);
        let range = BatchRange {
            first_sequence: header.base_sequence,
            last_sequence: increment_sequence(header.base_sequence.max(0), header.last_offset_delta),
            base_offset,
            last_offset: base_offset.saturating_add(i64::from(header.last_offset_delta)),
            crc: header.crc,
        };
        let mut evicted = false;
        if !self.producers.contains_key(&header.producer_id) && self.producers.len() >= producers_max.max(1) {
            evicted = self.evict_least_recently_used();
        }
        let clock = self.clock;
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: header.producer_epoch,
                batches: Vec::with_capacity(PRODUCER_BATCHES_RETAINED),
                last_append_ms: now_ms,
                last_used: clock,
            });
        if entry.epoch != header.producer_epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() >= PRODUCER_BATCHES_RETAINED {
            entry.batches.remove(0);
        }
        entry.batches.push(range);
        // Never backwards: a broker clock stepped back must not make a producer look idle.
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        entry.last_used = clock;
        evicted
    }

    fn evict_least_recently_used(&mut self) -> bool {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, entry)| entry.last_used)
            .map(|(id, _)| *id);
        match oldest {
            Some(id) => {
                tracing::debug!(producer_id = id, "evicting least recently used producer state");
                self.producers.remove(&id);
                true
            }
            None => false,
        }
    }

    /// Forgets producers that have not appended for longer than `idle_ms` of broker time.
    /// Producers whose batches retention deleted are kept until then (as Kafka does since
    /// 2.4): a live producer's next batch must still find its sequence. Returns how many
    /// were removed.
    pub fn expire(&mut self, now_ms: i64, idle_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, entry| now_ms.saturating_sub(entry.last_append_ms) <= idle_ms);
        before - self.producers.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: -1,
            magic: 2,
            crc: 0xC0FFEE ^ (base_sequence as u32),
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 1_000,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: records,
        }
    }

    #[test]
    fn sequences_wrap_at_i32_max_like_kafka() {
        assert_eq!(increment_sequence(5, 1), 6);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn wrapped_sequence_continues_in_order() {
        let mut map = ProducerStateMap::default();
        map.apply(&header(1, 0, i32::MAX - 1, 2), 0, 0, 8);
        assert_eq!(map.check(&header(1, 0, 0, 1), &[]), Ok(Check::Append));
        assert!(map.check(&header(1, 0, 1, 1), &[]).is_err());
    }

    #[test]
    fn unknown_producer_must_start_at_sequence_zero() {
        let map = ProducerStateMap::default();
        assert_eq!(map.check(&header(1, 0, 0, 3), &[]), Ok(Check::Append));
        assert_eq!(
            map.check(&header(1, 0, 58, 3), &[]),
            Err(Refusal::UnknownProducer {
                producer_id: 1,
                found: 58
            })
        );
        // Within one append call the earlier batch counts as known.
        let first = header(1, 0, 0, 58);
        assert_eq!(map.check(&header(1, 0, 58, 42), &[first]), Ok(Check::Append));
    }

    #[test]
    fn same_sequence_range_with_other_contents_is_a_conflict_not_a_duplicate() {
        let mut map = ProducerStateMap::default();
        let stored = header(1, 0, 0, 10);
        map.apply(&stored, 100, 0, 8);
        assert!(matches!(map.check(&stored, &[]), Ok(Check::Duplicate(range)) if range.base_offset == 100));
        let other = BatchHeader {
            crc: stored.crc ^ 1,
            ..stored
        };
        assert!(matches!(
            map.check(&other, &[]),
            Err(Refusal::Conflict {
                first_sequence: 0,
                last_sequence: 9,
                ..
            })
        ));
    }

    #[test]
    fn expiry_uses_the_broker_append_time_not_the_batch_timestamps() {
        let mut map = ProducerStateMap::default();
        let ancient = BatchHeader {
            max_timestamp: 946_684_800_000, // 2000-01-01
            base_timestamp: 946_684_800_000,
            ..header(1, 0, 0, 1)
        };
        let now = 1_800_000_000_000;
        map.apply(&ancient, 0, now, 8);
        assert_eq!(map.expire(now + 1_000, 60_000), 0);
        assert_eq!(map.len(), 1);
        assert_eq!(map.expire(now + 60_001, 60_000), 1);
        assert_eq!(map.producer_id_max(), 1, "the highest id outlives the state");
    }
}
