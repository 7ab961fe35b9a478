//! The producer's record accumulator: one open batch per partition, filled by `send` and
//! sealed when full or when its linger time is up; sealed batches wait in a ready queue for
//! the sender task. Also the per-batch completion state behind each [`DeliveryFuture`].
//!
//! Nothing here does I/O or reads the clock: callers pass `now`, so batching is tested with
//! exact times.

mod delivery;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use tidelog_proto::batch::{ProducerStamp, BATCH_HEADER_BYTES};

use crate::batch_writer::{BatchWriter, RecordParts};
use crate::partitioner::{next_sticky_partition, partition_for_key};
use crate::types::{PartitionId, ProducerRecord, TopicName};

use delivery::BatchOutcome;
pub(crate) use delivery::BatchShared;
pub use delivery::DeliveryFuture;

/// A new batch's buffer starts at least this large; later batches of the partition start at
/// the size the previous one reached, so a steady stream does not regrow its buffers.
const BATCH_CAPACITY_MIN_BYTES: usize = 16 * 1024;

/// An idempotent producer's identity, stamped into every batch it seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerIdentity {
    pub producer_id: i64,
    pub epoch: i16,
}

/// Batches of one partition an idempotent producer may have sent and not yet seen answered:
/// Kafka's limit, and the number of batches the broker remembers per producer for dedupe.
pub(crate) const IN_FLIGHT_BATCHES_PER_PARTITION_MAX: usize = 5;

/// Per partition of an idempotent producer: the next sequence and where its batches are.
#[derive(Debug, Default)]
struct PartitionSequence {
    next_sequence: i32,
    /// Seal order of the next batch; orders never wrap, unlike sequences.
    next_order: u64,
    /// Sealed and not completed, by seal order.
    unacknowledged: BTreeSet<u64>,
    /// Sent and not yet answered.
    in_flight: usize,
    /// Waiting out a retry backoff: no newer batch of the partition is sent meanwhile.
    backing_off: usize,
}

/// Kafka's sequence arithmetic: sequences wrap from `i32::MAX` to 0.
pub(crate) fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// A sealed batch on its way to the broker.
#[derive(Debug)]
pub(crate) struct ReadyBatch {
    pub topic: TopicName,
    pub partition: PartitionId,
    pub records: Bytes,
    pub record_count: usize,
    /// Buffer bytes reserved by its records; released when the batch completes.
    pub reserved_bytes: usize,
    /// Sends so far; a retry increments it.
    pub attempts: u32,
    /// When the batch was sealed: the delivery timeout counts from here.
    pub sealed_at: Instant,
    pub shared: Arc<BatchShared>,
    /// For an idempotent producer, the batch's seal order in its partition. Its bytes carry
    /// the sequence, so a retry resends exactly the same bytes.
    pub order: Option<u64>,
}

impl ReadyBatch {
    pub fn complete(&self, outcome: BatchOutcome) {
        self.shared.complete(outcome);
    }
}

#[derive(Debug)]
struct OpenBatch {
    writer: BatchWriter,
    shared: Arc<BatchShared>,
    created: Instant,
    /// Buffer bytes the batch holds: its records' reservations plus `reserved_ahead`. All of
    /// them are released when the batch completes.
    reserved_bytes: usize,
    /// Taken ahead for the batch's next records, not yet used by one.
    reserved_ahead: usize,
}

#[derive(Debug)]
struct TopicBatches {
    open: Vec<Option<OpenBatch>>,
    capacity_hint: Vec<usize>,
    /// Per partition, for idempotent producers.
    sequences: Vec<PartitionSequence>,
    /// The partition keyless records go to until its batch is sealed.
    sticky: Option<u32>,
    previous_sticky: Option<u32>,
}

/// The topics a producer has written to, found by name. A producer usually writes to one
/// topic, or a few in turn: the last one found is checked first (by pointer, then by
/// content), which saves hashing the name on every record.
#[derive(Debug, Default)]
struct Topics {
    list: Vec<(TopicName, TopicBatches)>,
    by_name: HashMap<TopicName, usize>,
    last: usize,
}

impl Topics {
    fn find(&mut self, name: &TopicName) -> Option<&mut TopicBatches> {
        let last_matches = self
            .list
            .get(self.last)
            .is_some_and(|(last, _)| last.same_as(name));
        if !last_matches {
            self.last = *self.by_name.get(name.as_str())?;
        }
        self.list.get_mut(self.last).map(|(_, topic)| topic)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut TopicBatches> {
        let index = *self.by_name.get(name)?;
        self.list.get_mut(index).map(|(_, topic)| topic)
    }

    fn get_or_insert(&mut self, name: &TopicName) -> &mut TopicBatches {
        let index = match self.by_name.get(name.as_str()) {
            Some(index) => *index,
            None => {
                self.list.push((
                    name.clone(),
                    TopicBatches {
                        open: Vec::new(),
                        capacity_hint: Vec::new(),
                        sequences: Vec::new(),
                        sticky: None,
                        previous_sticky: None,
                    },
                ));
                self.by_name.insert(name.clone(), self.list.len() - 1);
                self.list.len() - 1
            }
        };
        // `index` comes from `by_name`, whose entries all point into `list` (never shrunk).
        &mut self.list[index].1
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&TopicName, &mut TopicBatches)> {
        self.list.iter_mut().map(|(name, topic)| (&*name, topic))
    }
}

/// Batching limits, from the producer config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub batch_size_bytes: usize,
    pub linger: Duration,
}

/// The result of [`Accumulator::append`].
#[derive(Debug)]
///
/// Sixteen bytes at most, so it comes back in two registers: a larger answer (a `Result` with
/// an [`Error`](crate::error::Error) in it) was written to memory field by field and copied whole, a
/// store-forwarding stall per record.
pub(crate) enum Appended {
    /// The record is in a batch, at `index`; `wake_sender` when a batch was sealed or a new
    /// one opened (the sender must send it, or time its linger). `batch` is the batch's
    /// completion state for the record's future, `None` under [`Track::Count`]
    /// ([`Appended::delivery`] makes the future).
    Done {
        batch: Option<Arc<BatchShared>>,
        index: u32,
        wake_sender: bool,
        new_batch: bool,
    },
    /// The topic's partition count is not known yet: load metadata and call again.
    NeedMetadata,
    /// [`Reserve::Take`] found no room in the buffer: wait for the record's bytes and call
    /// again with [`Reserve::Held`]. `wake_sender` as in `Done` (a full batch may have been
    /// sealed first, and its completion is what frees the buffer).
    NeedBuffer { wake_sender: bool },
    /// The record names a partition the topic does not have.
    NoSuchPartition(PartitionId),
}

impl Appended {
    /// The record's delivery future, for a record appended under [`Track::Future`].
    pub fn delivery(batch: Option<Arc<BatchShared>>, index: u32) -> Option<DeliveryFuture> {
        batch.map(|batch| DeliveryFuture { batch, index })
    }
}

/// Whether [`Accumulator::append`] hands back a [`DeliveryFuture`] for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Track {
    /// A future that resolves to where the record landed.
    Future,
    /// No future: the record's outcome only counts in its batch's completion (the producer's
    /// metrics and `flush`). Saves a reference count taken and dropped per record.
    Count,
}

/// How [`Accumulator::append`] gets a record's bytes from the producer's buffer budget.
pub(crate) enum Reserve<'a> {
    /// The caller took them already.
    Held,
    /// Take them with this function (true when it took the bytes asked for). An open batch
    /// takes a little ahead for its next records, so a stream of small records costs one
    /// take per many records rather than one per record.
    Take(&'a mut dyn FnMut(usize) -> bool),
}

/// The most buffer bytes an open batch takes ahead of its records. It also takes at most half
/// of what its records hold, so ahead-taken bytes never exceed a third of what open batches
/// hold and a batch of one small record takes no more than it needs.
pub(crate) const RESERVE_AHEAD_MAX_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Accumulator {
    limits: BatchLimits,
    /// Set once an idempotent producer has its id; every batch sealed after is stamped.
    producer: Option<ProducerIdentity>,
    topics: Topics,
    ready: VecDeque<ReadyBatch>,
    rng: StdRng,
}

impl Accumulator {
    pub fn new(limits: BatchLimits, rng: StdRng) -> Self {
        Self {
            limits,
            producer: None,
            topics: Topics::default(),
            ready: VecDeque::new(),
            rng,
        }
    }

    /// Learns (or updates) a topic's partition count. Open batches of partitions beyond a
    /// shrunken count stay until sealed.
    pub fn set_partition_count(&mut self, topic: &TopicName, partitions: u32) {
        let entry = self.topics.get_or_insert(topic);
        let partitions = partitions as usize;
        if entry.open.len() < partitions {
            entry.open.resize_with(partitions, || None);
            entry.capacity_hint.resize(partitions, BATCH_CAPACITY_MIN_BYTES);
            entry
                .sequences
                .resize_with(partitions, PartitionSequence::default);
        }
        if entry.sticky.is_some_and(|p| p as usize >= partitions) {
            entry.sticky = None;
        }
    }

    /// Adds a record to its partition's open batch, sealing a full batch first. `now` is only
    /// called when a batch is opened: reading the clock per record is measurable at millions
    /// of records per second. The record's `reserved_bytes` of buffer budget come with it
    /// (`Reserve::Held`) or are taken here, from what its batch took ahead if it can.
    pub fn append(
        &mut self,
        record: &ProducerRecord,
        reserved_bytes: usize,
        timestamp_ms: i64,
        now: impl FnOnce() -> Instant,
        reserve: Reserve<'_>,
        track: Track,
    ) -> Appended {
        let Some(topic) = self.topics.find(&record.topic) else {
            return Appended::NeedMetadata;
        };
        let partitions = topic.open.len() as u32;
        if partitions == 0 {
            return Appended::NeedMetadata;
        }
        let keyless = record.partition.is_none() && record.key.is_none();
        let mut partition = match (record.partition, &record.key) {
            (Some(partition), _) => {
                if partition.get() >= partitions {
                    return Appended::NoSuchPartition(partition);
                }
                partition.get()
            }
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => sticky(topic, partitions, &mut self.rng),
        };
        let parts = RecordParts {
            timestamp: timestamp_ms,
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &record.headers,
        };
        let mut wake_sender = false;
        // Seal a batch the record would overflow; a keyless record then moves to a new sticky
        // partition, as Kafka's sticky partitioner does when a batch completes. The record is
        // measured once against the batch it goes into.
        let mut measured = None;
        if let Some(open) = &topic.open[partition as usize] {
            let size = open.writer.measure(&parts);
            if open.writer.record_count() > 0
                && open.writer.size_bytes() + size.total > self.limits.batch_size_bytes
            {
                if let Some(open) = topic.open[partition as usize].take() {
                    let ready = seal(topic, &record.topic, partition, open, self.producer);
                    self.ready.push_back(ready);
                    wake_sender = true;
                }
                if keyless {
                    partition = sticky(topic, partitions, &mut self.rng);
                }
            } else {
                measured = Some(size);
            }
        }
        let slot = partition as usize;
        // Budget before any batch is opened, so a batch is never left empty. `added` is what
        // the batch takes from the buffer now, `ahead` what it then holds beyond its records.
        let (held, ahead_left) = topic.open[slot]
            .as_ref()
            .map_or((0, 0), |open| (open.reserved_bytes, open.reserved_ahead));
        let (added, ahead) = match reserve {
            Reserve::Held => (reserved_bytes, ahead_left),
            Reserve::Take(_) if ahead_left >= reserved_bytes => (0, ahead_left - reserved_bytes),
            Reserve::Take(take) => {
                let missing = reserved_bytes - ahead_left;
                let ahead = (held / 2).min(RESERVE_AHEAD_MAX_BYTES);
                if ahead > 0 && take(missing + ahead) {
                    (missing + ahead, ahead)
                } else if take(missing) {
                    (missing, 0)
                } else {
                    return Appended::NeedBuffer { wake_sender };
                }
            }
        };
        let mut new_batch = false;
        if topic.open[slot].is_none() {
            let record_bytes = BATCH_HEADER_BYTES + reserved_bytes;
            // Headroom over the last batch's size: a batch that ended up a few bytes larger
            // than the one before it (a longer varint here and there) regrew its whole buffer,
            // a copy of up to a MiB, once per batch or so.
            let hint = topic.capacity_hint[slot];
            let capacity = hint
                .saturating_add(hint / 8)
                .clamp(
                    BATCH_CAPACITY_MIN_BYTES,
                    self.limits.batch_size_bytes.max(BATCH_CAPACITY_MIN_BYTES),
                )
                .max(record_bytes);
            topic.open[slot] = Some(OpenBatch {
                writer: BatchWriter::with_capacity(capacity),
                shared: Arc::new(BatchShared::new(
                    record.topic.clone(),
                    PartitionId::new(partition),
                )),
                created: now(),
                reserved_bytes: 0,
                reserved_ahead: 0,
            });
            new_batch = true;
            wake_sender = true;
        }
        // Just ensured above that the slot holds an open batch.
        let Some(open) = topic.open[slot].as_mut() else {
            unreachable!("the open batch was created above")
        };
        let index = open.writer.record_count() as u32;
        // `measured` is only kept when the record goes into the batch it was measured against.
        let size = measured.unwrap_or_else(|| open.writer.measure(&parts));
        open.writer.push(&parts, size);
        open.reserved_bytes += added;
        open.reserved_ahead = ahead;
        let batch = (track == Track::Future).then(|| open.shared.clone());
        // A batch that reached its limit exactly is sealed now rather than on the next send.
        if open.writer.size_bytes() >= self.limits.batch_size_bytes {
            if let Some(open) = topic.open[slot].take() {
                let ready = seal(topic, &record.topic, partition, open, self.producer);
                self.ready.push_back(ready);
            }
        }
        Appended::Done {
            batch,
            index,
            wake_sender,
            new_batch,
        }
    }

    /// Takes the sealed batches plus every open batch whose linger is up at `now`. Also
    /// returns when the next open batch's linger ends.
    pub fn drain(&mut self, now: Instant) -> (Vec<ReadyBatch>, Option<Instant>) {
        let linger = self.limits.linger;
        let mut next_deadline: Option<Instant> = None;
        for (name, topic) in self.topics.iter_mut() {
            for slot in 0..topic.open.len() {
                let Some(open) = &topic.open[slot] else { continue };
                let deadline = open.created + linger;
                if deadline <= now {
                    if let Some(open) = topic.open[slot].take() {
                        let ready = seal(topic, name, slot as u32, open, self.producer);
                        self.ready.push_back(ready);
                    }
                } else {
                    next_deadline = Some(next_deadline.map_or(deadline, |d| d.min(deadline)));
                }
            }
        }
        if self.producer.is_none() {
            return (self.ready.drain(..).collect(), next_deadline);
        }
        // Idempotent: per partition, in sequence order, at most
        // IN_FLIGHT_BATCHES_PER_PARTITION_MAX in flight and nothing newer while a batch waits
        // out a retry backoff. Held batches stay queued; a completion wakes the sender.
        let mut taken = Vec::with_capacity(self.ready.len());
        let mut held = VecDeque::new();
        for batch in self.ready.drain(..) {
            let state = self
                .topics
                .get_mut(batch.topic.as_str())
                .and_then(|topic| topic.sequences.get_mut(batch.partition.get() as usize));
            match (batch.order, state) {
                (Some(order), Some(state)) => {
                    // Counted from the oldest unanswered batch, not by requests in flight:
                    // responses can arrive out of order, and a batch whose answer was lost
                    // must still be among the broker's last five for this producer when it
                    // is resent, or its retry could not be recognised as a duplicate.
                    let oldest = state.unacknowledged.first().copied().unwrap_or(order);
                    let window_end = oldest + IN_FLIGHT_BATCHES_PER_PARTITION_MAX as u64;
                    if state.backing_off > 0
                        || state.in_flight >= IN_FLIGHT_BATCHES_PER_PARTITION_MAX
                        || order >= window_end
                    {
                        held.push_back(batch);
                    } else {
                        state.in_flight += 1;
                        taken.push(batch);
                    }
                }
                _ => taken.push(batch),
            }
        }
        self.ready = held;
        (taken, next_deadline)
    }

    /// Seals every open batch now (flush and close).
    pub fn seal_all(&mut self) {
        for (name, topic) in self.topics.iter_mut() {
            for slot in 0..topic.open.len() {
                if let Some(open) = topic.open[slot].take() {
                    let ready = seal(topic, name, slot as u32, open, self.producer);
                    self.ready.push_back(ready);
                }
            }
        }
    }

    /// Puts a batch back in the queue, for a retry: at the front, or for an idempotent
    /// producer just before the first queued batch of its partition sealed after it, so a
    /// partition's batches are always resent in sequence order.
    pub fn requeue(&mut self, batch: ReadyBatch) {
        let Some(order) = batch.order else {
            self.ready.push_front(batch);
            return;
        };
        if let Some(state) = self.sequence_state(&batch) {
            state.backing_off = state.backing_off.saturating_sub(1);
        }
        let later = self.ready.iter().position(|queued| {
            queued.partition == batch.partition
                && queued.topic == batch.topic
                && queued.order.is_some_and(|queued| queued > order)
        });
        match later {
            Some(index) => self.ready.insert(index, batch),
            None => self.ready.push_back(batch),
        }
    }

    /// The idempotent producer identity, once known.
    pub fn producer(&self) -> Option<ProducerIdentity> {
        self.producer
    }

    pub fn set_producer(&mut self, producer: ProducerIdentity) {
        self.producer = Some(producer);
    }

    fn sequence_state(&mut self, batch: &ReadyBatch) -> Option<&mut PartitionSequence> {
        self.topics
            .get_mut(batch.topic.as_str())?
            .sequences
            .get_mut(batch.partition.get() as usize)
    }

    /// A sent batch was answered for good (delivered or failed): it no longer holds a slot.
    pub fn finished(&mut self, batch: &ReadyBatch) {
        let Some(order) = batch.order else { return };
        if let Some(state) = self.sequence_state(batch) {
            state.in_flight = state.in_flight.saturating_sub(1);
            state.unacknowledged.remove(&order);
        }
    }

    /// A sent batch failed and will be resent after a backoff.
    pub fn backing_off(&mut self, batch: &ReadyBatch) {
        if batch.order.is_none() {
            return;
        }
        if let Some(state) = self.sequence_state(batch) {
            state.in_flight = state.in_flight.saturating_sub(1);
            state.backing_off += 1;
        }
    }

    /// Whether a batch of the same partition sealed before this one is still unanswered: an
    /// OUT_OF_ORDER_SEQUENCE_NUMBER for this one is then expected (the earlier one was not
    /// appended yet) and its retry is not counted against the limit.
    pub fn has_earlier_unacknowledged(&mut self, batch: &ReadyBatch) -> bool {
        let Some(order) = batch.order else { return false };
        self.sequence_state(batch)
            .and_then(|state| state.unacknowledged.first().copied())
            .is_some_and(|first| first < order)
    }

    #[cfg(test)]
    pub fn has_open_or_ready(&self) -> bool {
        !self.ready.is_empty()
            || self
                .topics
                .list
                .iter()
                .any(|(_, t)| t.open.iter().any(Option::is_some))
    }
}

fn sticky(topic: &mut TopicBatches, partitions: u32, rng: &mut StdRng) -> u32 {
    if let Some(partition) = topic.sticky {
        return partition;
    }
    let partition = next_sticky_partition(topic.previous_sticky, partitions, rng);
    topic.sticky = Some(partition);
    partition
}

/// Seals an open batch: the one place a batch gets its header, and for an idempotent producer
/// its producer id, epoch and base sequence (per batch, not per record).
fn seal(
    topic: &mut TopicBatches,
    name: &TopicName,
    partition: u32,
    open: OpenBatch,
    producer: Option<ProducerIdentity>,
) -> ReadyBatch {
    if topic.sticky == Some(partition) {
        topic.previous_sticky = topic.sticky.take();
    }
    if let Some(hint) = topic.capacity_hint.get_mut(partition as usize) {
        *hint = open.writer.size_bytes();
    }
    let record_count = open.writer.record_count();
    let sequence = producer.and_then(|_| topic.sequences.get_mut(partition as usize));
    let (stamp, order) = match (producer, sequence) {
        (Some(producer), Some(sequence)) => {
            let stamp = ProducerStamp {
                producer_id: producer.producer_id,
                producer_epoch: producer.epoch,
                base_sequence: sequence.next_sequence,
            };
            // A batch holds at most i32::MAX records (its count is an i32).
            let count = i32::try_from(record_count).unwrap_or(i32::MAX);
            sequence.next_sequence = increment_sequence(sequence.next_sequence, count);
            let order = sequence.next_order;
            sequence.next_order += 1;
            sequence.unacknowledged.insert(order);
            (stamp, Some(order))
        }
        _ => (ProducerStamp::default(), None),
    };
    ReadyBatch {
        topic: name.clone(),
        partition: PartitionId::new(partition),
        records: open.writer.finish(stamp),
        record_count,
        reserved_bytes: open.reserved_bytes,
        attempts: 0,
        sealed_at: Instant::now(),
        shared: open.shared,
        order,
    }
}

#[cfg(test)]
mod tests;
