//! Catch-up subscriptions: a task per subscription drives the `catch_up` state machine over a
//! source (one stream's records, or a whole partition's) and delivers into a bounded channel
//! the subscriber drains. History reads wait for room (the subscriber paces them); live reads
//! push what fits and fall behind when it does not, so a slow subscriber never makes the task
//! buffer more than `buffer_events` events.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::catch_up::{CatchUp, Mode, Page, Positioned, ReadPlan, SubscriptionEvent};
use super::error::EventStoreError;

/// Bounds and timings of a catch-up subscription. Build with [`SubscriptionConfig::default`]
/// and the chained setters.
#[derive(Debug, Clone)]
pub struct SubscriptionConfig {
    buffer_events: usize,
    page_records: usize,
    live_wait: Duration,
    retry_attempts_max: u32,
    retry_backoff_max: Duration,
}

impl SubscriptionConfig {
    pub const BUFFER_EVENTS_DEFAULT: usize = 1024;
    pub const PAGE_RECORDS_DEFAULT: usize = 256;
    pub const LIVE_WAIT_DEFAULT: Duration = Duration::from_millis(500);
    pub const RETRY_ATTEMPTS_MAX_DEFAULT: u32 = 10;
    pub const RETRY_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(2);
    /// The first pause after a failed read; it doubles up to `retry_backoff_max`.
    const RETRY_BACKOFF_INITIAL: Duration = Duration::from_millis(50);

    /// Events (records and markers) delivered but not yet taken by the subscriber, at most.
    /// A live record that finds the buffer full makes the subscription fall behind. Must hold
    /// a page and its marker: at least `page_records + 1`.
    pub fn buffer_events(mut self, events: usize) -> Self {
        self.buffer_events = events;
        self
    }

    /// Records asked for by one read, history or live. A live read that does not reach the
    /// end (a full page: a backlog) makes the subscription fall behind.
    pub fn page_records(mut self, records: usize) -> Self {
        self.page_records = records;
        self
    }

    /// How long one live read waits at the end for a new record (the broker's long poll).
    pub fn live_wait(mut self, wait: Duration) -> Self {
        self.live_wait = wait;
        self
    }

    /// Consecutive failed reads (transient ones: the connection, a timeout) retried before
    /// the subscription ends with the error. Reads resume from the next undelivered record.
    pub fn retry_attempts_max(mut self, attempts: u32) -> Self {
        self.retry_attempts_max = attempts;
        self
    }

    /// The longest pause between retried reads.
    pub fn retry_backoff_max(mut self, backoff: Duration) -> Self {
        self.retry_backoff_max = backoff;
        self
    }

    pub(crate) fn page_records_value(&self) -> usize {
        self.page_records
    }

    pub(crate) fn live_wait_value(&self) -> Duration {
        self.live_wait
    }

    pub(crate) fn validate(&self) -> Result<(), EventStoreError> {
        if self.page_records == 0 {
            return Err(EventStoreError::Config("page_records must be at least 1".into()));
        }
        if self.live_wait.is_zero() {
            return Err(EventStoreError::Config(
                "live_wait must be above zero: live reads would spin at the end".into(),
            ));
        }
        if self.buffer_events <= self.page_records {
            return Err(EventStoreError::Config(format!(
                "buffer_events ({}) must exceed page_records ({}): a history page and its marker must fit",
                self.buffer_events, self.page_records
            )));
        }
        Ok(())
    }
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        Self {
            buffer_events: Self::BUFFER_EVENTS_DEFAULT,
            page_records: Self::PAGE_RECORDS_DEFAULT,
            live_wait: Self::LIVE_WAIT_DEFAULT,
            retry_attempts_max: Self::RETRY_ATTEMPTS_MAX_DEFAULT,
            retry_backoff_max: Self::RETRY_BACKOFF_MAX_DEFAULT,
        }
    }
}

/// Where a subscription reads its pages: one stream, or one whole partition.
pub(crate) trait Source: Send + 'static {
    type Record: Positioned + Send + 'static;

    /// Reads at most `plan.limit` records from `plan.from`; a live plan may long-poll.
    fn read(&mut self, plan: ReadPlan) -> BoxFuture<'_, Result<Page<Self::Record>, EventStoreError>>;
}

type Delivered<R> = Result<SubscriptionEvent<R>, EventStoreError>;

/// A catch-up subscription: history, then [`SubscriptionEvent::CaughtUp`], then live records;
/// [`SubscriptionEvent::FellBehind`] when the subscriber did not keep up, then history again
/// from the next record it has not seen. Each record is delivered once, in offset order.
///
/// Read it with [`next`](Self::next) or as a [`Stream`]. It ends (`None`) after delivering an
/// error it could not retry. Dropping it stops its task.
#[derive(Debug)]
pub struct Subscription<R> {
    events: mpsc::Receiver<Delivered<R>>,
    task: JoinHandle<()>,
}

impl<R: Positioned + Send + 'static> Subscription<R> {
    /// Starts the subscription's task on the current tokio runtime.
    pub(crate) fn start<S>(source: S, from: i64, config: SubscriptionConfig) -> Result<Self, EventStoreError>
    where
        S: Source<Record = R>,
    {
        config.validate()?;
        let (sender, events) = mpsc::channel(config.buffer_events);
        let machine = CatchUp::new(from, config.page_records);
        let task = tokio::spawn(drive(source, machine, sender, config));
        Ok(Self { events, task })
    }
}

impl<R> Subscription<R> {
    /// The next event; `None` once the subscription has ended (after an error).
    pub async fn next(&mut self) -> Option<Result<SubscriptionEvent<R>, EventStoreError>> {
        self.events.recv().await
    }
}

impl<R> Stream for Subscription<R> {
    type Item = Result<SubscriptionEvent<R>, EventStoreError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(context)
    }
}

impl<R> Drop for Subscription<R> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The subscription's task: plan, wait for room, read, deliver; until the subscriber goes away
/// or a read fails for good.
async fn drive<S: Source>(
    mut source: S,
    mut machine: CatchUp,
    sender: mpsc::Sender<Delivered<S::Record>>,
    config: SubscriptionConfig,
) {
    let mut failures = 0u32;
    let mut backoff = SubscriptionConfig::RETRY_BACKOFF_INITIAL;
    loop {
        let plan = machine.plan();
        // History waits here for a page's worth of room: the subscriber paces the reads.
        let Ok(permits) = sender.reserve_many(plan.reserve).await else {
            return;
        };
        let read = tokio::select! {
            read = source.read(plan) => read,
            () = sender.closed() => return,
        };
        let page = match read {
            Ok(page) => {
                failures = 0;
                backoff = SubscriptionConfig::RETRY_BACKOFF_INITIAL;
                page
            }
            Err(error) if error.is_retriable() && failures < config.retry_attempts_max => {
                failures += 1;
                tracing::debug!(%error, failures, mode = ?plan.mode, from = plan.from, "subscription read failed; retrying");
                drop(permits);
                // A pause between attempts at a failing broker, not synchronisation.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.retry_backoff_max);
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, from = plan.from, "subscription ends: a read failed");
                drop(permits);
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        // This task is the only sender, so the room counted now cannot shrink before the
        // events below are sent.
        let room = permits.len() + sender.capacity();
        let mut events = machine.accept(page, room).into_iter();
        for permit in permits {
            match events.next() {
                Some(event) => {
                    permit.send(Ok(event));
                }
                None => break,
            }
        }
        for event in events {
            if sender.try_send(Ok(event)).is_err() {
                // Closed: the subscriber is gone (full cannot happen, see above).
                return;
            }
        }
        if plan.mode == Mode::Live && machine.mode() == Mode::History {
            tracing::debug!(
                next = machine.next_offset(),
                "subscriber fell behind; reading history again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Numbered(i64);

    impl Positioned for Numbered {
        fn offset(&self) -> i64 {
            self.0
        }
    }

    /// A log every record of which is ours; `fail_next` makes reads fail with a retriable
    /// error that many times.
    #[derive(Debug, Default)]
    struct Shared {
        log: Vec<i64>,
        fail_next: u32,
    }

    struct FakeSource(Arc<Mutex<Shared>>);

    impl Source for FakeSource {
        type Record = Numbered;

        fn read(&mut self, plan: ReadPlan) -> BoxFuture<'_, Result<Page<Numbered>, EventStoreError>> {
            let shared = self.0.clone();
            Box::pin(async move {
                let page = {
                    let mut shared = shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    if shared.fail_next > 0 {
                        shared.fail_next -= 1;
                        return Err(EventStoreError::Client(crate::Error::ConnectionClosed {
                            addr: "fake".into(),
                        }));
                    }
                    let records: Vec<Numbered> = shared
                        .log
                        .iter()
                        .filter(|offset| **offset >= plan.from)
                        .take(plan.limit)
                        .map(|offset| Numbered(*offset))
                        .collect();
                    let end = shared.log.len() as i64;
                    let next_offset = records.last().map_or(end, |last| last.0 + 1);
                    Some(Page {
                        at_end: next_offset >= end,
                        next_offset,
                        records,
                    })
                };
                match page {
                    Some(page) if !page.records.is_empty() || plan.mode == Mode::History => Ok(page),
                    // Live at the end: a short long poll, so the test's appends are seen.
                    _ => {
                        tokio::task::yield_now().await;
                        Ok(Page {
                            records: Vec::new(),
                            next_offset: plan.from,
                            at_end: true,
                        })
                    }
                }
            })
        }
    }

    async fn next_event(subscription: &mut Subscription<Numbered>) -> SubscriptionEvent<Numbered> {
        match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
            Ok(Some(Ok(event))) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn history_then_caught_up_then_live_records() {
        let shared = Arc::new(Mutex::new(Shared {
            log: (0..5).collect(),
            fail_next: 0,
        }));
        let config = SubscriptionConfig::default().buffer_events(8).page_records(2);
        let mut subscription =
            Subscription::start(FakeSource(shared.clone()), 1, config).expect("valid config");
        for offset in 1..5 {
            assert_eq!(
                next_event(&mut subscription).await,
                SubscriptionEvent::Record(Numbered(offset))
            );
        }
        assert_eq!(next_event(&mut subscription).await, SubscriptionEvent::CaughtUp);
        shared.lock().expect("not poisoned").log.extend(5..7);
        assert_eq!(
            next_event(&mut subscription).await,
            SubscriptionEvent::Record(Numbered(5))
        );
        assert_eq!(
            next_event(&mut subscription).await,
            SubscriptionEvent::Record(Numbered(6))
        );
    }

    #[tokio::test]
    async fn transient_read_failures_are_retried_without_a_gap() {
        let shared = Arc::new(Mutex::new(Shared {
            log: (0..3).collect(),
            fail_next: 2,
        }));
        let config = SubscriptionConfig::default()
            .buffer_events(4)
            .page_records(1)
            .retry_backoff_max(Duration::from_millis(5));
        let mut subscription = Subscription::start(FakeSource(shared), 0, config).expect("valid config");
        for offset in 0..3 {
            assert_eq!(
                next_event(&mut subscription).await,
                SubscriptionEvent::Record(Numbered(offset))
            );
        }
        assert_eq!(next_event(&mut subscription).await, SubscriptionEvent::CaughtUp);
    }

    #[tokio::test]
    async fn a_read_failing_past_the_retry_limit_ends_the_subscription_with_its_error() {
        let shared = Arc::new(Mutex::new(Shared {
            log: Vec::new(),
            fail_next: 3,
        }));
        let config = SubscriptionConfig::default()
            .retry_attempts_max(2)
            .retry_backoff_max(Duration::from_millis(5));
        let mut subscription = Subscription::start(FakeSource(shared), 0, config).expect("valid config");
        let ended = tokio::time::timeout(Duration::from_secs(10), subscription.next()).await;
        assert!(
            matches!(
                ended,
                Ok(Some(Err(EventStoreError::Client(
                    crate::Error::ConnectionClosed { .. }
                ))))
            ),
            "{ended:?}"
        );
        let after = tokio::time::timeout(Duration::from_secs(10), subscription.next()).await;
        assert!(matches!(after, Ok(None)), "{after:?}");
    }

    #[test]
    fn a_buffer_that_cannot_hold_a_page_and_its_marker_is_refused() {
        let config = SubscriptionConfig::default().buffer_events(4).page_records(4);
        assert!(matches!(config.validate(), Err(EventStoreError::Config(_))));
        assert!(SubscriptionConfig::default().page_records(0).validate().is_err());
        assert!(SubscriptionConfig::default()
            .live_wait(Duration::ZERO)
            .validate()
            .is_err());
        assert!(SubscriptionConfig::default().validate().is_ok());
    }
}
