//! [`Producer`]: `send` appends a record to its partition's batch in the accumulator and
//! returns a [`DeliveryFuture`]; a sender task seals batches (full or lingered), groups them by
//! partition leader into produce requests, keeps several requests in flight per connection,
//! retries retriable failures with backoff and resolves the futures.
//!
//! Memory is bounded: every record reserves its size from a byte budget (`buffer_bytes`)
//! until its batch completes, and `send` waits while the budget is spent (backpressure).
//!
//! Idempotence (the default): the producer asks the broker for a producer id and epoch
//! (InitProducerId) before its first batch, and every batch carries them with a per-partition
//! sequence, stamped once when the batch is sealed. A retry resends the same bytes, so the
//! broker recognises a batch it already appended and answers with the original offsets. At
//! most five batches per partition are in flight, and while one waits out a retry backoff no
//! newer batch of its partition is sent; retries are requeued in sequence order, so records of
//! a partition land exactly once and in order. A batch that gets
//! OUT_OF_ORDER_SEQUENCE_NUMBER because an earlier one was not appended yet is resent after it.
//!
//! Without idempotence, batches of one partition are sent in order, but with several requests
//! in flight a retried batch can land after a later one (and twice, if its response was lost).

use std::borrow::Borrow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod sender;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tidelog_proto::batch::{Compression, BATCH_HEADER_BYTES};
use tokio::sync::{Notify, OnceCell, Semaphore};
use tokio::task::JoinHandle;

use sender::{init_producer_id, run_sender};

pub use crate::accumulator::DeliveryFuture;
use crate::accumulator::{Accumulator, Appended, BatchLimits, ProducerIdentity, ReadyBatch, Reserve, Track};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::types::{Acks, ErrorCode, Offset, PartitionId, ProducerRecord};
use crate::wall_clock::now_ms;

/// Per-record bytes reserved beyond key, value and headers: the record's framing in the
/// batch (length, attributes, deltas, lengths), rounded up.
const RECORD_OVERHEAD_BYTES: usize = 24;
/// Room left in a request for everything that is not a record batch.
const REQUEST_OVERHEAD_BYTES: usize = 4096;

/// Whether a producer stamps its batches so the broker can drop retried duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Idempotence {
    /// Every record is stored exactly once and in order per partition, across retries,
    /// lost connections and broker restarts (the default).
    #[default]
    Enabled,
    /// Batches carry no producer id: a retry after a lost response may store records twice.
    Disabled,
}

/// Producer settings. Build with [`ProducerConfig::default`] and the chained setters.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    acks: Acks,
    idempotence: Idempotence,
    linger: Duration,
    batch_size_bytes: usize,
    buffer_bytes: usize,
    max_request_bytes: usize,
    retries: u32,
    retry_backoff_initial: Duration,
    retry_backoff_max: Duration,
    request_timeout: Duration,
    delivery_timeout: Duration,
    compression: Compression,
}

impl ProducerConfig {
    pub const LINGER_DEFAULT: Duration = Duration::from_millis(5);
    /// Larger than Kafka's 16 KiB: our per-request cost favours fewer, larger batches.
    pub const BATCH_SIZE_BYTES_DEFAULT: usize = 1024 * 1024;
    pub const BUFFER_BYTES_DEFAULT: usize = 64 * 1024 * 1024;
    pub const MAX_REQUEST_BYTES_DEFAULT: usize = 16 * 1024 * 1024;
    pub const RETRIES_DEFAULT: u32 = 5;
    /// Kafka's `delivery.timeout.ms` default.
    pub const DELIVERY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(120);
    pub const RETRY_BACKOFF_INITIAL_DEFAULT: Duration = Duration::from_millis(100);
    pub const RETRY_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(1);
    pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// Idempotent delivery (on by default). Under `acks = none` there are no answers to
    /// retry on, so it changes nothing but the batch headers.
    pub fn idempotence(mut self, idempotence: Idempotence) -> Self {
        self.idempotence = idempotence;
        self
    }

    /// How long a batch waits for more records before it is sent.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// A batch is sent once it reaches this size.
    pub fn batch_size_bytes(mut self, bytes: usize) -> Self {
        self.batch_size_bytes = bytes;
        self
    }

    /// Bytes of records buffered (unsent or unacknowledged) before `send` waits.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// Largest produce request; also bounds the largest record.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// Resends of a batch after a retriable error before its records fail.
    /// Longest a batch may take from being sealed to its final outcome, retries included;
    /// past it a retriable failure fails the batch (Kafka's `delivery.timeout.ms`).
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_backoff_initial = initial;
        self.retry_backoff_max = max;
        self
    }

    /// The codec a batch's records are compressed with when it is sent (none by default).
    /// A batch that does not shrink is sent uncompressed, as Kafka clients do.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The time the broker may take to append (sent in the request).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    fn validate(&self, max_frame_bytes: usize) -> Result<()> {
        if self.batch_size_bytes < BATCH_HEADER_BYTES + RECORD_OVERHEAD_BYTES {
            return Err(Error::Config(
                "batch_size_bytes is too small for one record".into(),
            ));
        }
        if self.max_request_bytes < self.batch_size_bytes + REQUEST_OVERHEAD_BYTES {
            return Err(Error::Config(format!(
                "max_request_bytes ({}) must exceed batch_size_bytes ({}) by at least {REQUEST_OVERHEAD_BYTES}",
                self.max_request_bytes, self.batch_size_bytes
            )));
        }
        if self.max_request_bytes > max_frame_bytes {
            return Err(Error::Config(format!(
                "max_request_bytes ({}) exceeds the client's max_frame_bytes ({max_frame_bytes})",
                self.max_request_bytes
            )));
        }
        if self.buffer_bytes < self.batch_size_bytes {
            return Err(Error::Config(
                "buffer_bytes must be at least batch_size_bytes".into(),
            ));
        }
        if u32::try_from(self.buffer_bytes).is_err() {
            return Err(Error::Config("buffer_bytes must be below 4 GiB".into()));
        }
        Ok(())
    }

    /// The largest record `send` accepts: one that fits a request and the buffer.
    fn max_record_bytes(&self) -> usize {
        (self.max_request_bytes - REQUEST_OVERHEAD_BYTES - BATCH_HEADER_BYTES).min(self.buffer_bytes)
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::Leader,
            idempotence: Idempotence::Enabled,
            linger: Self::LINGER_DEFAULT,
            batch_size_bytes: Self::BATCH_SIZE_BYTES_DEFAULT,
            buffer_bytes: Self::BUFFER_BYTES_DEFAULT,
            max_request_bytes: Self::MAX_REQUEST_BYTES_DEFAULT,
            retries: Self::RETRIES_DEFAULT,
            retry_backoff_initial: Self::RETRY_BACKOFF_INITIAL_DEFAULT,
            retry_backoff_max: Self::RETRY_BACKOFF_MAX_DEFAULT,
            request_timeout: Self::REQUEST_TIMEOUT_DEFAULT,
            delivery_timeout: Self::DELIVERY_TIMEOUT_DEFAULT,
            compression: Compression::None,
        }
    }
}

/// State shared by `send` callers, the sender task and completion tasks.
#[derive(Debug)]
struct Shared {
    client: Client,
    config: ProducerConfig,
    accumulator: Mutex<Accumulator>,
    /// Wakes the sender: a batch was sealed or opened, a retry was queued, or closing began.
    wake_sender: Notify,
    /// The byte budget; permits are bytes.
    buffer: Semaphore,
    /// Batches opened and not yet completed.
    outstanding: AtomicUsize,
    /// Notified (to all waiters) when `outstanding` drops to zero.
    idle: Notify,
    closing: AtomicBool,
    records_delivered: AtomicU64,
    records_failed: AtomicU64,
    /// The idempotent producer's id and epoch, fetched before the first batch opens.
    identity: OnceCell<ProducerIdentity>,
    /// `config.max_record_bytes()`, worked out once rather than per record.
    max_record_bytes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Accumulator> {
        // The accumulator's operations do not leave it torn on a panic (each moves whole
        // batches between maps and queues), so a poisoned lock is still usable.
        self.accumulator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends under the caller's lock. A batch the record opened counts as outstanding
    /// before the lock is released: the sender drains it under the same lock, so its
    /// completion can never find the count at zero (and a flush miss it). Inlined, so the
    /// accumulator's answer is read in place rather than moved (see `Producer::try_queue`).
    #[inline(always)]
    fn append(
        &self,
        accumulator: &mut Accumulator,
        record: &ProducerRecord,
        reserved: usize,
        timestamp_ms: i64,
        reserve: Reserve<'_>,
        track: Track,
    ) -> Appended {
        let appended = accumulator.append(record, reserved, timestamp_ms, Instant::now, reserve, track);
        if let Appended::Done { new_batch: true, .. } = appended {
            self.outstanding.fetch_add(1, Ordering::AcqRel);
        }
        appended
    }

    /// Takes `bytes` of the buffer budget if they are free now.
    fn try_take_buffer(&self, bytes: usize) -> bool {
        u32::try_from(bytes)
            .ok()
            .and_then(|permits| self.buffer.try_acquire_many(permits).ok())
            .map(|permit| permit.forget())
            .is_some()
    }

    /// Resolves a batch, releases its buffer bytes and, if it was the last, tells flushers.
    fn complete(&self, batch: ReadyBatch, outcome: std::result::Result<Option<Offset>, Arc<Error>>) {
        let counter = if outcome.is_ok() {
            &self.records_delivered
        } else {
            &self.records_failed
        };
        counter.fetch_add(batch.record_count as u64, Ordering::Relaxed);
        if let Err(error) = &outcome {
            // Only the batch holds its completion state: its records were sent detached (or
            // their futures dropped), so nothing but the metrics would tell of the loss.
            if Arc::strong_count(&batch.shared) == 1 {
                tracing::warn!(
                    topic = %batch.topic,
                    partition = %batch.partition,
                    records = batch.record_count,
                    %error,
                    "records not delivered, and no delivery future is waiting for them"
                );
            }
        }
        if batch.order.is_some() {
            // Frees an in-flight slot of its partition: held batches may go now.
            self.lock().finished(&batch);
            self.wake_sender.notify_one();
        }
        batch.complete(outcome);
        // reserved_bytes is what the batch took from a budget below 4 GiB (checked in
        // validate), so it fits.
        self.buffer.add_permits(batch.reserved_bytes);
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
            self.wake_sender.notify_one();
        }
    }

    /// Retries the batch after a backoff if the error allows and attempts remain; else fails it.
    fn fail_or_retry(self: &Arc<Self>, mut batch: ReadyBatch, error: Arc<Error>) {
        if matches!(
            *error,
            Error::UnknownTopicOrPartition { .. } | Error::ConnectionClosed { .. } | Error::Io { .. }
        ) || error.code() == Some(ErrorCode::UnknownTopicOrPartition)
        {
            // A moved leader or a dead connection: look the partition up again before retrying.
            self.client.invalidate_topic(batch.topic.as_str());
        }
        // An idempotent batch refused as out of order (or, for the partition's first batches
        // of this producer, as from an unknown producer) while an earlier batch of its
        // partition is unanswered: that one was not appended yet. Resend this after it,
        // uncounted. Otherwise either code fails the batch: resending it could only land it
        // across a gap.
        let waits_for_earlier = matches!(
            error.code(),
            Some(ErrorCode::OutOfOrderSequenceNumber | ErrorCode::UnknownProducerId)
        ) && self.lock().has_earlier_unacknowledged(&batch);
        let out_of_time = batch.sealed_at.elapsed() >= self.config.delivery_timeout;
        if out_of_time
            || (!waits_for_earlier && (!error.is_retriable() || batch.attempts >= self.config.retries))
        {
            self.complete(batch, Err(error));
            return;
        }
        self.lock().backing_off(&batch);
        let backoff = self
            .config
            .retry_backoff_initial
            .saturating_mul(1 << batch.attempts.min(16))
            .min(self.config.retry_backoff_max);
        tracing::debug!(
            topic = %batch.topic,
            partition = %batch.partition,
            records = batch.record_count,
            attempt = batch.attempts,
            %error,
            "retrying batch"
        );
        let shared = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            if !waits_for_earlier {
                batch.attempts += 1;
            }
            shared.lock().requeue(batch);
            shared.wake_sender.notify_one();
        });
    }
}

/// What the fast path of `send` did with a record.
enum FastPath {
    /// Queued, with its future under [`Track::Future`].
    Queued(Option<DeliveryFuture>),
    /// It has to wait (for buffer room, the producer id or metadata): `send_slow` takes over.
    Slow { reserved: usize },
}

/// Sends records in batches. Cheap to clone; all clones share one buffer and sender task.
///
/// Call [`close`](Producer::close) to deliver what is buffered before dropping the last clone;
/// a dropped producer still sends what it has, in the background.
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<ProducerInner>,
}

#[derive(Debug)]
struct ProducerInner {
    shared: Arc<Shared>,
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ProducerInner {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake_sender.notify_one();
    }
}

impl Producer {
    /// Records [`send_many`](Producer::send_many) queues under one hold of the accumulator's
    /// lock and one clock read: enough to spread their cost thin, few enough that the sender
    /// task never waits long for the lock and timestamps stay within microseconds of when
    /// the record was accepted.
    pub const SEND_MANY_CHUNK_RECORDS: usize = 256;

    /// Starts a producer on `client`.
    ///
    /// # Errors
    /// [`Error::Config`] for inconsistent limits.
    pub fn new(client: Client, config: ProducerConfig) -> Result<Producer> {
        config.validate(client.config().max_frame_bytes_value())?;
        // Calibrates the records' clock now (once per process, milliseconds), not on a send.
        now_ms();
        let limits = BatchLimits {
            batch_size_bytes: config.batch_size_bytes,
            linger: config.linger,
        };
        let shared = Arc::new(Shared {
            client,
            accumulator: Mutex::new(Accumulator::new(limits, StdRng::from_rng(&mut rand::rng()))),
            wake_sender: Notify::new(),
            buffer: Semaphore::new(config.buffer_bytes),
            outstanding: AtomicUsize::new(0),
            idle: Notify::new(),
            closing: AtomicBool::new(false),
            records_delivered: AtomicU64::new(0),
            records_failed: AtomicU64::new(0),
            identity: OnceCell::new(),
            max_record_bytes: config.max_record_bytes(),
            config,
        });
        let sender = tokio::spawn(run_sender(shared.clone()));
        Ok(Producer {
            inner: Arc::new(ProducerInner {
                shared,
                sender: Mutex::new(Some(sender)),
            }),
        })
    }

    /// Queues a record and returns the future of its delivery. Waits while the buffer is full.
    ///
    /// The record is copied into its batch here, so it may be passed by reference and sent
    /// again (`producer.send(&record)`): that saves the clones a fresh record costs.
    ///
    /// The common case (buffer room, the producer id and the topic's partitions known) takes
    /// the accumulator's lock once and never awaits; everything else goes the slow way.
    ///
    /// # Errors
    /// [`Error::RecordTooLarge`], [`Error::ProducerClosed`], [`Error::UnknownTopicOrPartition`]
    /// for a missing topic or partition, or the error loading the topic's metadata.
    pub async fn send<R: Borrow<ProducerRecord>>(&self, record: R) -> Result<DeliveryFuture> {
        let record = record.borrow();
        let delivery = match self.try_queue(record, Track::Future)? {
            FastPath::Queued(delivery) => delivery,
            FastPath::Slow { reserved } => Box::pin(self.send_slow(record, reserved, Track::Future)).await?,
        };
        match delivery {
            Some(delivery) => Ok(delivery),
            // Track::Future: the accumulator hands back a future for every record it queues.
            None => unreachable!("a tracked record has a delivery future"),
        }
    }

    /// Queues a record like [`send`](Producer::send), without a future of its own, for callers
    /// that check deliveries in bulk: its outcome counts in [`metrics`](Producer::metrics)
    /// once its batch completes, and [`flush`](Producer::flush) waits for it, as with Kafka's
    /// `send` without a callback. Cheaper per record than `send` (no reference count taken
    /// and dropped per record). A batch that fails for good while no future of it is left to
    /// report the error is logged at WARN.
    ///
    /// # Errors
    /// As [`send`](Producer::send): the record was not queued.
    pub async fn send_detached<R: Borrow<ProducerRecord>>(&self, record: R) -> Result<()> {
        let record = record.borrow();
        if let FastPath::Slow { reserved } = self.try_queue(record, Track::Count)? {
            Box::pin(self.send_slow(record, reserved, Track::Count)).await?;
        }
        Ok(())
    }

    /// The fast path of `send` and `send_detached`: no await. Inlined into both, so the
    /// outcome is read where it is written rather than moved through a nested future (moving
    /// the large `Result` cost a store-forwarding stall per record).
    #[inline(always)]
    fn try_queue(&self, record: &ProducerRecord, track: Track) -> Result<FastPath> {
        let shared = &self.inner.shared;
        if shared.closing.load(Ordering::Acquire) {
            return Err(Error::ProducerClosed);
        }
        let reserved = record_reservation(record);
        let max = shared.max_record_bytes;
        if reserved > max {
            return Err(Error::RecordTooLarge { size: reserved, max });
        }
        let identity_known =
            shared.config.idempotence == Idempotence::Disabled || shared.identity.initialized();
        if identity_known {
            let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
            let mut take = |bytes: usize| shared.try_take_buffer(bytes);
            let appended = shared.append(
                &mut shared.lock(),
                record,
                reserved,
                timestamp_ms,
                Reserve::Take(&mut take),
                track,
            );
            match appended {
                Appended::Done {
                    batch,
                    index,
                    wake_sender,
                    ..
                } => {
                    let delivery = Appended::delivery(batch, index);
                    return Ok(FastPath::Queued(self.appended(delivery, wake_sender)));
                }
                Appended::NoSuchPartition(partition) => return Err(no_such_partition(record, partition)),
                // The topic's partitions are not known yet: load them on the slow path.
                Appended::NeedMetadata => {}
                Appended::NeedBuffer { wake_sender } => {
                    if wake_sender {
                        shared.wake_sender.notify_one();
                    }
                }
            }
        }
        Ok(FastPath::Slow { reserved })
    }

    /// Queues `records` in order, as `send` would one by one, and pushes their delivery
    /// futures onto `deliveries` in the same order. Cheaper per record than `send`: the
    /// lock, the checks and the clock read are shared by up to
    /// [`SEND_MANY_CHUNK_RECORDS`](Producer::SEND_MANY_CHUNK_RECORDS) records, and a record without a timestamp gets the wall-clock time at which its chunk
    /// was accepted (read again after any wait for buffer room).
    ///
    /// # Errors
    /// As `send`, for the first record that cannot be queued: the records before it are
    /// queued (their futures are in `deliveries`), it and the rest are not.
    pub async fn send_many<I, R>(&self, records: I, deliveries: &mut Vec<DeliveryFuture>) -> Result<()>
    where
        I: IntoIterator<Item = R>,
        R: Borrow<ProducerRecord>,
    {
        let shared = &self.inner.shared;
        let max = shared.max_record_bytes;
        let mut records = records.into_iter();
        loop {
            if shared.closing.load(Ordering::Acquire) {
                return Err(Error::ProducerClosed);
            }
            let identity_known =
                shared.config.idempotence == Idempotence::Disabled || shared.identity.initialized();
            // A record the fast path could not queue, for `send` to wait on.
            let mut stalled = None;
            let mut exhausted = false;
            let mut wake_sender = false;
            if identity_known {
                let timestamp_ms = now_ms();
                let mut take = |bytes: usize| shared.try_take_buffer(bytes);
                let mut accumulator = shared.lock();
                for _ in 0..Self::SEND_MANY_CHUNK_RECORDS {
                    let Some(record) = records.next() else {
                        exhausted = true;
                        break;
                    };
                    let reserved = record_reservation(record.borrow());
                    if reserved > max {
                        drop(accumulator);
                        self.appended_many(wake_sender);
                        return Err(Error::RecordTooLarge { size: reserved, max });
                    }
                    let appended = shared.append(
                        &mut accumulator,
                        record.borrow(),
                        reserved,
                        record.borrow().timestamp_ms.unwrap_or(timestamp_ms),
                        Reserve::Take(&mut take),
                        Track::Future,
                    );
                    match appended {
                        Appended::Done {
                            batch,
                            index,
                            wake_sender: wake,
                            ..
                        } => {
                            wake_sender |= wake;
                            deliveries.extend(Appended::delivery(batch, index));
                        }
                        Appended::NeedMetadata => {
                            stalled = Some(record);
                            break;
                        }
                        Appended::NeedBuffer { wake_sender: wake } => {
                            wake_sender |= wake;
                            stalled = Some(record);
                            break;
                        }
                        Appended::NoSuchPartition(partition) => {
                            drop(accumulator);
                            self.appended_many(wake_sender);
                            return Err(no_such_partition(record.borrow(), partition));
                        }
                    }
                }
            } else {
                stalled = records.next();
                exhausted = stalled.is_none();
            }
            self.appended_many(wake_sender);
            if let Some(record) = stalled {
                // `send` waits for what the record needs, then the fast path goes on.
                deliveries.push(self.send(record).await?);
            } else if exhausted {
                return Ok(());
            }
        }
    }

    /// `send` when it has to wait: for buffer room, the producer id or the topic's metadata.
    /// Boxed by its callers, so the rarely taken awaits do not make every `send` future larger.
    async fn send_slow(
        &self,
        record: &ProducerRecord,
        reserved: usize,
        track: Track,
    ) -> Result<Option<DeliveryFuture>> {
        let shared = &self.inner.shared;
        // Checked by `send`: reserved <= buffer_bytes < 4 GiB.
        shared
            .buffer
            .acquire_many(reserved as u32)
            .await
            .map_err(|_| Error::ProducerClosed)?
            .forget();
        // Read after any wait for buffer room: the record is created when it is accepted.
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let result = match self.ensure_identity().await {
            Ok(()) => self.append(record, reserved, timestamp_ms, track).await,
            Err(error) => Err(error),
        };
        if result.is_err() {
            shared.buffer.add_permits(reserved);
        }
        result
    }

    fn appended_many(&self, wake_sender: bool) {
        if wake_sender {
            self.inner.shared.wake_sender.notify_one();
        }
    }

    /// After a record went into a batch: wakes the sender if it has a batch to send or time.
    #[inline(always)]
    fn appended(&self, delivery: Option<DeliveryFuture>, wake_sender: bool) -> Option<DeliveryFuture> {
        if wake_sender {
            self.inner.shared.wake_sender.notify_one();
        }
        delivery
    }

    /// For an idempotent producer, gets its id and epoch from the broker once (the first
    /// send waits for it; retriable failures are retried like a batch).
    async fn ensure_identity(&self) -> Result<()> {
        let shared = &self.inner.shared;
        if shared.config.idempotence == Idempotence::Disabled || shared.identity.initialized() {
            return Ok(());
        }
        shared
            .identity
            .get_or_try_init(|| async {
                let identity = init_producer_id(shared).await?;
                tracing::debug!(
                    producer_id = identity.producer_id,
                    epoch = identity.epoch,
                    "idempotent producer initialised"
                );
                shared.lock().set_producer(identity);
                Ok::<_, Error>(identity)
            })
            .await?;
        Ok(())
    }

    /// The producer id and epoch stamped into this producer's batches, once known (`None`
    /// without idempotence or before the first send).
    pub fn producer_id_and_epoch(&self) -> Option<(i64, i16)> {
        self.inner
            .shared
            .lock()
            .producer()
            .map(|identity| (identity.producer_id, identity.epoch))
    }

    async fn append(
        &self,
        record: &ProducerRecord,
        reserved: usize,
        timestamp_ms: i64,
        track: Track,
    ) -> Result<Option<DeliveryFuture>> {
        let shared = &self.inner.shared;
        // Two rounds at most: the second runs after loading the topic's metadata.
        for _ in 0..2 {
            let appended = shared.append(
                &mut shared.lock(),
                record,
                reserved,
                timestamp_ms,
                Reserve::Held,
                track,
            );
            match appended {
                Appended::Done {
                    batch,
                    index,
                    wake_sender,
                    ..
                } => return Ok(self.appended(Appended::delivery(batch, index), wake_sender)),
                Appended::NoSuchPartition(partition) => return Err(no_such_partition(record, partition)),
                // Not asked for: the bytes are held.
                Appended::NeedBuffer { .. } => unreachable!("append with Reserve::Held never needs buffer"),
                Appended::NeedMetadata => {
                    let description = shared.client.topic(record.topic.as_str()).await?;
                    shared
                        .lock()
                        .set_partition_count(&record.topic, description.partition_count());
                }
            }
        }
        Err(Error::UnknownTopicOrPartition {
            topic: record.topic.to_string(),
            partition: None,
        })
    }

    /// Sends every buffered record now and waits until all of them (and any sent
    /// concurrently with the flush) are acknowledged or failed.
    pub async fn flush(&self) {
        let shared = &self.inner.shared;
        shared.lock().seal_all();
        shared.wake_sender.notify_one();
        loop {
            let idle = shared.idle.notified();
            tokio::pin!(idle);
            // Register before checking, so a completion between the check and the await is
            // not missed.
            idle.as_mut().enable();
            if shared.outstanding.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Counts of records whose batches completed so far.
    pub fn metrics(&self) -> ProducerMetrics {
        let shared = &self.inner.shared;
        ProducerMetrics {
            records_delivered: shared.records_delivered.load(Ordering::Relaxed),
            records_failed: shared.records_failed.load(Ordering::Relaxed),
        }
    }

    /// Flushes, then stops the sender task. Later sends fail with [`Error::ProducerClosed`].
    pub async fn close(&self) {
        let shared = &self.inner.shared;
        shared.closing.store(true, Ordering::SeqCst);
        self.flush().await;
        shared.buffer.close();
        shared.wake_sender.notify_one();
        let sender = self.inner.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(sender) = sender {
            if let Err(error) = sender.await {
                tracing::warn!(%error, "producer sender task ended abnormally");
            }
        }
    }
}

/// Delivery counters of a [`Producer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProducerMetrics {
    records_delivered: u64,
    records_failed: u64,
}

impl ProducerMetrics {
    /// Records acknowledged (or, under acks=none, written).
    pub fn records_delivered(&self) -> u64 {
        self.records_delivered
    }

    /// Records whose batch failed for good.
    pub fn records_failed(&self) -> u64 {
        self.records_failed
    }
}

/// The error for a record that names a partition its topic does not have.
fn no_such_partition(record: &ProducerRecord, partition: PartitionId) -> Error {
    Error::UnknownTopicOrPartition {
        topic: record.topic.to_string(),
        partition: Some(partition),
    }
}

fn record_reservation(record: &ProducerRecord) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|h| h.key().len() + h.value().map_or(0, |v| v.len()) + 10)
        .sum();
    record.key.as_ref().map_or(0, |k| k.len())
        + record.value.as_ref().map_or(0, |v| v.len())
        + headers
        + RECORD_OVERHEAD_BYTES
}

/// The partition a record without an explicit partition would go to, for callers that want
/// to know ahead (keyed records only; keyless ones depend on the producer's sticky state).
pub fn partition_for(key: &[u8], partitions: u32) -> PartitionId {
    PartitionId::new(crate::partitioner::partition_for_key(key, partitions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_consistent() {
        ProducerConfig::default()
            .validate(crate::client::ClientConfig::MAX_FRAME_BYTES_DEFAULT)
            .unwrap();
    }

    #[test]
    fn request_larger_than_a_frame_is_a_config_error() {
        let config = ProducerConfig::default().max_request_bytes(128 << 20);
        assert!(matches!(config.validate(64 << 20), Err(Error::Config(_))));
    }
}
