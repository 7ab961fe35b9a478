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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tidelog_proto::batch::BATCH_HEADER_BYTES;
use tidelog_proto::pb;
use tokio::sync::{Notify, OnceCell, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;

pub use crate::accumulator::DeliveryFuture;
use crate::accumulator::{Accumulator, Appended, BatchLimits, ProducerIdentity, ReadyBatch};
use crate::client::Client;
use crate::connection::{Connection, InFlight};
use crate::error::{Error, Result};
use crate::types::{Acks, ErrorCode, Offset, PartitionId, ProducerRecord};
use crate::wire::{self, ProducePartition, ProduceTopic};

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
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Accumulator> {
        // The accumulator's operations do not leave it torn on a panic (each moves whole
        // batches between maps and queues), so a poisoned lock is still usable.
        self.accumulator
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Resolves a batch, releases its buffer bytes and, if it was the last, tells flushers.
    fn complete(&self, batch: ReadyBatch, outcome: std::result::Result<Option<Offset>, Arc<Error>>) {
        let counter = if outcome.is_ok() {
            &self.records_delivered
        } else {
            &self.records_failed
        };
        counter.fetch_add(batch.record_count as u64, Ordering::Relaxed);
        if batch.order.is_some() {
            // Frees an in-flight slot of its partition: held batches may go now.
            self.lock().finished(&batch);
            self.wake_sender.notify_one();
        }
        batch.complete(outcome);
        // reserved_bytes is a sum of per-record reservations that were each acquired as u32
        // permits from a budget below 4 GiB (checked in validate), so it fits.
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
    /// Starts a producer on `client`.
    ///
    /// # Errors
    /// [`Error::Config`] for inconsistent limits.
    pub fn new(client: Client, config: ProducerConfig) -> Result<Producer> {
        config.validate(client.config().max_frame_bytes_value())?;
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
    /// # Errors
    /// [`Error::RecordTooLarge`], [`Error::ProducerClosed`], [`Error::UnknownTopicOrPartition`]
    /// for a missing topic or partition, or the error loading the topic's metadata.
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let shared = &self.inner.shared;
        if shared.closing.load(Ordering::Acquire) {
            return Err(Error::ProducerClosed);
        }
        let reserved = record_reservation(&record);
        let max = shared.config.max_record_bytes();
        if reserved > max {
            return Err(Error::RecordTooLarge { size: reserved, max });
        }
        // Checked just above: reserved <= buffer_bytes < 4 GiB.
        let permits = reserved as u32;
        match shared.buffer.try_acquire_many(permits) {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => shared
                .buffer
                .acquire_many(permits)
                .await
                .map_err(|_| Error::ProducerClosed)?
                .forget(),
            Err(TryAcquireError::Closed) => return Err(Error::ProducerClosed),
        }
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        let result = match self.ensure_identity().await {
            Ok(()) => self.append(&record, reserved, timestamp_ms).await,
            Err(error) => Err(error),
        };
        if result.is_err() {
            shared.buffer.add_permits(reserved);
        }
        result
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
    ) -> Result<DeliveryFuture> {
        let shared = &self.inner.shared;
        // Two rounds at most: the second runs after loading the topic's metadata.
        for _ in 0..2 {
            let appended = shared
                .lock()
                .append(record, reserved, timestamp_ms, Instant::now)?;
            match appended {
                Appended::Done {
                    delivery,
                    wake_sender,
                    new_batch,
                } => {
                    if new_batch {
                        shared.outstanding.fetch_add(1, Ordering::AcqRel);
                    }
                    if wake_sender {
                        shared.wake_sender.notify_one();
                    }
                    return Ok(delivery);
                }
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Asks any broker for a new producer id, retrying retriable failures with backoff.
async fn init_producer_id(shared: &Shared) -> Result<ProducerIdentity> {
    let mut attempt = 0u32;
    loop {
        let request = pb::request::Body::InitProducerId(pb::InitProducerIdRequest {
            producer_id: -1,
            producer_epoch: -1,
        });
        let result = match shared.client.request_any(request).await {
            Ok(pb::response::Body::InitProducerId(response)) => match wire::error_code(response.error) {
                None => match i16::try_from(response.producer_epoch) {
                    Ok(epoch) if response.producer_id >= 0 && epoch >= 0 => Ok(ProducerIdentity {
                        producer_id: response.producer_id,
                        epoch,
                    }),
                    _ => Err(Error::Protocol {
                        addr: String::new(),
                        reason: format!(
                            "InitProducerId gave producer id {} epoch {}",
                            response.producer_id, response.producer_epoch
                        ),
                    }),
                },
                Some(code) => Err(Error::Broker {
                    code,
                    message: response.message,
                }),
            },
            Ok(_) => Err(Error::Protocol {
                addr: String::new(),
                reason: "InitProducerId answered with another body".into(),
            }),
            Err(error) => Err(error),
        };
        match result {
            Ok(identity) => return Ok(identity),
            Err(error) if error.is_retriable() && attempt < shared.config.retries => {
                let backoff = shared
                    .config
                    .retry_backoff_initial
                    .saturating_mul(1 << attempt.min(16))
                    .min(shared.config.retry_backoff_max);
                tracing::debug!(%error, attempt, "retrying InitProducerId");
                tokio::time::sleep(backoff).await;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn run_sender(shared: Arc<Shared>) {
    loop {
        let (batches, next_deadline) = {
            let mut accumulator = shared.lock();
            if shared.closing.load(Ordering::Acquire) {
                accumulator.seal_all();
            }
            accumulator.drain(Instant::now())
        };
        if batches.is_empty() {
            if shared.closing.load(Ordering::Acquire) && shared.outstanding.load(Ordering::Acquire) == 0 {
                return;
            }
            match next_deadline {
                Some(deadline) => {
                    tokio::select! {
                        () = shared.wake_sender.notified() => {}
                        () = tokio::time::sleep_until(deadline.into()) => {}
                    }
                }
                None => shared.wake_sender.notified().await,
            }
            continue;
        }
        send_batches(&shared, batches).await;
    }
}

/// Groups batches by leader and sends them as requests of at most `max_request_bytes`, with at
/// most one batch per partition in a request (the response has one result per partition).
async fn send_batches(shared: &Arc<Shared>, batches: Vec<ReadyBatch>) {
    let mut by_leader: HashMap<String, (Connection, Vec<ReadyBatch>)> = HashMap::new();
    for batch in batches {
        match shared
            .client
            .leader_connection(batch.topic.as_str(), batch.partition)
            .await
        {
            Ok(connection) => {
                by_leader
                    .entry(connection.addr().to_owned())
                    .or_insert_with(|| (connection, Vec::new()))
                    .1
                    .push(batch);
            }
            Err(error) => shared.fail_or_retry(batch, Arc::new(error)),
        }
    }
    for (connection, batches) in by_leader.into_values() {
        for request in split_into_requests(batches, shared.config.max_request_bytes - REQUEST_OVERHEAD_BYTES)
        {
            send_request(shared, &connection, request).await;
        }
    }
}

fn split_into_requests(batches: Vec<ReadyBatch>, max_bytes: usize) -> Vec<Vec<ReadyBatch>> {
    let mut requests: Vec<(usize, Vec<ReadyBatch>)> = Vec::new();
    for batch in batches {
        let size = batch.records.len();
        let fits = |(bytes, request): &(usize, Vec<ReadyBatch>)| {
            bytes + size <= max_bytes
                && !request
                    .iter()
                    .any(|b| b.partition == batch.partition && b.topic == batch.topic)
        };
        match requests.iter_mut().find(|r| fits(r)) {
            Some((bytes, request)) => {
                *bytes += size;
                request.push(batch);
            }
            None => requests.push((size, vec![batch])),
        }
    }
    requests.into_iter().map(|(_, request)| request).collect()
}

async fn send_request(shared: &Arc<Shared>, connection: &Connection, batches: Vec<ReadyBatch>) {
    let mut topics: Vec<ProduceTopic<'_>> = Vec::new();
    for batch in &batches {
        let partition = ProducePartition {
            partition: batch.partition.get(),
            records: batch.records.clone(),
        };
        match topics.iter_mut().find(|t| t.name == batch.topic.as_str()) {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(ProduceTopic {
                name: batch.topic.as_str(),
                partitions: vec![partition],
            }),
        }
    }
    let timeout_ms = u32::try_from(shared.config.request_timeout.as_millis()).unwrap_or(u32::MAX);
    let started = connection
        .start_produce(shared.config.acks, timeout_ms, &topics)
        .await;
    drop(topics);
    match started {
        Ok(in_flight) => {
            let shared = shared.clone();
            tokio::spawn(async move { complete_request(&shared, in_flight, batches).await });
        }
        Err(error) => {
            let error = Arc::new(error);
            for batch in batches {
                shared.fail_or_retry(batch, error.clone());
            }
        }
    }
}

async fn complete_request(shared: &Arc<Shared>, in_flight: InFlight, batches: Vec<ReadyBatch>) {
    let response = match in_flight.wait().await {
        Ok(None) => {
            for batch in batches {
                shared.complete(batch, Ok(None));
            }
            return;
        }
        Ok(Some(response)) => response,
        Err(error) => {
            let error = Arc::new(error);
            for batch in batches {
                shared.fail_or_retry(batch, error.clone());
            }
            return;
        }
    };
    if let Some(code) = wire::error_code(response.error) {
        let error = Arc::new(Error::Broker {
            code,
            message: response.error_message,
        });
        for batch in batches {
            shared.fail_or_retry(batch, error.clone());
        }
        return;
    }
    let Some(pb::response::Body::Produce(body)) = response.body else {
        let error = Arc::new(Error::Protocol {
            addr: String::new(),
            reason: "produce request answered without a produce body".into(),
        });
        for batch in batches {
            shared.complete(batch, Err(error.clone()));
        }
        return;
    };
    let mut results: HashMap<(&str, u32), &pb::produce_response::Partition> = HashMap::new();
    for topic in &body.topics {
        for partition in &topic.partitions {
            results.insert((topic.name.as_str(), partition.partition), partition);
        }
    }
    for batch in batches {
        let Some(result) = results.get(&(batch.topic.as_str(), batch.partition.get())) else {
            let error = Error::Protocol {
                addr: String::new(),
                reason: format!("no produce result for {}/{}", batch.topic, batch.partition),
            };
            shared.complete(batch, Err(Arc::new(error)));
            continue;
        };
        match wire::error_code(result.error) {
            None => {
                let base = Offset::new(result.base_offset);
                shared.complete(batch, Ok(Some(base)));
            }
            Some(ErrorCode::UnknownTopicOrPartition) => {
                let error = Error::UnknownTopicOrPartition {
                    topic: batch.topic.to_string(),
                    partition: Some(batch.partition),
                };
                shared.fail_or_retry(batch, Arc::new(error));
            }
            Some(code) => {
                let error = Error::Broker {
                    code,
                    message: result.message.clone(),
                };
                shared.fail_or_retry(batch, Arc::new(error));
            }
        }
    }
}

/// The partition a record without an explicit partition would go to, for callers that want
/// to know ahead (keyed records only; keyless ones depend on the producer's sticky state).
pub fn partition_for(key: &[u8], partitions: u32) -> PartitionId {
    PartitionId::new(crate::partitioner::partition_for_key(key, partitions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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

    #[test]
    fn requests_hold_one_batch_per_partition_and_respect_the_size_limit() {
        use crate::accumulator::{Accumulator, BatchLimits};
        use crate::types::TopicName;
        let mut accumulator = Accumulator::new(
            BatchLimits {
                batch_size_bytes: 1000,
                linger: Duration::ZERO,
            },
            StdRng::seed_from_u64(1),
        );
        let topic = TopicName::new("t");
        accumulator.set_partition_count(&topic, 2);
        for i in 0..30u32 {
            let record = ProducerRecord::new(topic.clone(), Bytes::from(vec![0u8; 200]))
                .partition(PartitionId::new(i % 2));
            let _ = accumulator.append(&record, 224, 0, Instant::now).unwrap();
        }
        let (batches, _) = accumulator.drain(Instant::now());
        let count = batches.len();
        let requests = split_into_requests(batches, 2500);
        assert_eq!(requests.iter().map(Vec::len).sum::<usize>(), count);
        for request in &requests {
            let bytes: usize = request.iter().map(|b| b.records.len()).sum();
            assert!(bytes <= 2500);
            let mut partitions: Vec<u32> = request.iter().map(|b| b.partition.get()).collect();
            partitions.sort_unstable();
            partitions.dedup();
            assert_eq!(
                partitions.len(),
                request.len(),
                "two batches of one partition in a request"
            );
        }
    }
}
