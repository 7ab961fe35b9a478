//! The log cleaner service: `cleaner.threads` OS threads (cleaning blocks on disk I/O, so not
//! tokio tasks) that find the partitions with cleaning due (`PartitionLog::cleaner_stats`,
//! no I/O), take the most urgent one ([`pick`]), clean it (`PartitionLog::clean`), paced by
//! one shared token bucket ([`throttle`]); a failing or panicking clean marks that partition
//! uncleanable for `cleaner.uncleanable_retry_ms` (logged at ERROR, shown in Metadata and
//! `tidelog topic describe`) and the threads keep cleaning the others. Knows storage and
//! topics, not the core or any wire format: the broker hands it the topic list and the core
//! reads each partition's [`CleanerStatus`] from it.

mod pick;
mod throttle;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::CleanerConfig;
use crate::storage::{IoThrottle, PartitionLog};
use crate::topics::Topic;

use throttle::TokenBucket;

/// What the cleaner is doing with one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CleanerState {
    Idle,
    Cleaning,
    /// The last clean failed; skipped until `cleaner.uncleanable_retry_ms` has passed.
    Uncleanable,
}

/// One partition's cleaner status, as Metadata reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CleanerStatus {
    pub state: CleanerState,
    /// Why it is uncleanable: the failed clean's error, one line.
    pub error: Option<String>,
    pub dirty_bytes: u64,
    pub dirty_ratio: f64,
    /// When the last clean finished (ms since the epoch); 0: never since the broker started.
    pub last_cleaned_ms: i64,
    pub erasures_pending: u32,
}

/// A partition by its topic's persistent id (a re-created topic is another partition).
type PartitionKey = (uuid::Uuid, u32);

/// What the service remembers of one partition.
#[derive(Debug, Default)]
struct PartitionRecord {
    /// A thread is cleaning it now.
    cleaning: bool,
    /// The last clean's error and when it failed.
    failure: Option<(String, Instant)>,
    last_cleaned_ms: i64,
    /// Skipped until then: its last clean had nothing to do although its stats said so.
    not_before: Option<Instant>,
}

impl PartitionRecord {
    fn eligible(&self, now: Instant, retry: Duration) -> bool {
        !self.cleaning
            && self.not_before.is_none_or(|at| now >= at)
            && self
                .failure
                .as_ref()
                .is_none_or(|(_, failed)| now.saturating_duration_since(*failed) >= retry)
    }
}

#[derive(Debug, Default)]
struct State {
    partitions: HashMap<PartitionKey, PartitionRecord>,
    stopping: bool,
    /// Bumped by every nudge, so a thread about to sleep sees a nudge that came meanwhile.
    wakeups: u64,
    /// Threads still running.
    running: usize,
}

/// The service's shared state: statuses, the wake-up and stop signals, the token bucket.
/// Threads, the core (status, nudges) and the broker (start, stop) share one.
#[derive(Debug)]
pub(crate) struct Cleaner {
    config: CleanerConfig,
    state: Mutex<State>,
    /// Signalled on a nudge, at stop, and when a thread ends.
    changed: Condvar,
    bucket: Mutex<TokenBucket>,
    /// The bucket's time origin.
    origin: Instant,
}

/// The topics to look through, fresh on every round (the registry's list).
pub(crate) type TopicSource = Arc<dyn Fn() -> Vec<Arc<Topic>> + Send + Sync>;

/// Longest a throttled thread sleeps before it looks at the stop flag again.
const THROTTLE_WAIT_MAX: Duration = Duration::from_millis(100);

impl Cleaner {
    pub(crate) fn new(config: CleanerConfig) -> Self {
        let origin = Instant::now();
        Self {
            bucket: Mutex::new(TokenBucket::new(config.io_bytes_per_sec_max, Duration::ZERO)),
            config,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            origin,
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent under a panic (every update is a single assignment).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes idle threads to look for work now (a stream erasure was requested).
    pub(crate) fn nudge(&self) {
        self.lock_state().wakeups += 1;
        self.changed.notify_all();
    }

    /// The cleaner status of partition `partition` of `topic`; `None` when the cleaner has
    /// nothing to say (a topic that does not compact, no erasure pending, never failed).
    /// Cheap: the storage stats need no I/O.
    pub(crate) fn status(
        &self,
        topic: &Topic,
        partition: u32,
        log: &PartitionLog,
        now_ms: i64,
    ) -> Option<CleanerStatus> {
        let (cleaning, error, last_cleaned_ms) = {
            let state = self.lock_state();
            match state.partitions.get(&(topic.id(), partition)) {
                Some(record) => (
                    record.cleaning,
                    record.failure.as_ref().map(|(error, _)| error.clone()),
                    record.last_cleaned_ms,
                ),
                None => (false, None, 0),
            }
        };
        if !log.config().cleanup_policy.compacts() && log.erasures_pending() == 0 && error.is_none() {
            return None;
        }
        let stats = log.cleaner_stats(now_ms);
        let state = if cleaning {
            CleanerState::Cleaning
        } else if error.is_some() {
            CleanerState::Uncleanable
        } else {
            CleanerState::Idle
        };
        Some(CleanerStatus {
            state,
            error,
            dirty_bytes: stats.dirty_bytes,
            dirty_ratio: stats.dirty_ratio,
            last_cleaned_ms,
            erasures_pending: stats.erasures_pending,
        })
    }

    /// Sleeps up to `cleaner.backoff_ms`, or until a nudge after `seen` or the stop.
    fn idle_wait(&self, seen: u64) {
        let state = self.lock_state();
        if state.stopping || state.wakeups != seen {
            return;
        }
        let backoff = Duration::from_millis(self.config.backoff_ms);
        // A spurious wake-up only costs one more stats walk.
        let _ = self
            .changed
            .wait_timeout(state, backoff)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
}

impl IoThrottle for Cleaner {
    /// Waits for the token bucket; false once the service is stopping, so a clean under way
    /// abandons its work at the next read or write.
    fn acquire(&self, bytes: u64) -> bool {
        // Bounded: every turn either takes the bytes, sees the stop, or waits for tokens that
        // the passing time adds.
        loop {
            let wait = {
                let mut bucket = self
                    .bucket
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                bucket.take(bytes, self.origin.elapsed())
            };
            let state = self.lock_state();
            if state.stopping {
                return false;
            }
            let Err(wait) = wait else { return true };
            let _ = self
                .changed
                .wait_timeout(state, wait.min(THROTTLE_WAIT_MAX))
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// The running threads, stopped by [`stop`](Self::stop).
#[derive(Debug)]
pub(crate) struct CleanerThreads {
    cleaner: Arc<Cleaner>,
    handles: Vec<JoinHandle<()>>,
}

/// Starts `cleaner.threads` threads over the topics `topics` lists. A thread that cannot be
/// spawned is logged at ERROR; the others run.
pub(crate) fn start(cleaner: Arc<Cleaner>, topics: TopicSource) -> CleanerThreads {
    let mut handles = Vec::with_capacity(cleaner.config.threads);
    for index in 0..cleaner.config.threads {
        cleaner.lock_state().running += 1;
        let thread_cleaner = Arc::clone(&cleaner);
        let thread_topics = Arc::clone(&topics);
        let spawned = std::thread::Builder::new()
            .name(format!("tidelog-cleaner-{index}"))
            .spawn(move || worker::run(&thread_cleaner, &thread_topics));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                cleaner.lock_state().running -= 1;
                tracing::error!(thread = index, %error, "cannot start a cleaner thread; compaction and erasures run on the others (if any)");
            }
        }
    }
    if !handles.is_empty() {
        tracing::info!(
            threads = handles.len(),
            io_bytes_per_sec_max = cleaner.config.io_bytes_per_sec_max,
            "log cleaner started"
        );
    }
    CleanerThreads { cleaner, handles }
}

impl CleanerThreads {
    /// Stops the threads: a clean under way is abandoned at its next throttled read or write
    /// (its work aside removed), idle threads wake. Waits at most `bound`; a thread still
    /// running then is logged at ERROR and left (the process is stopping). Blocking.
    pub(crate) fn stop(self, bound: Duration) {
        self.cleaner.lock_state().stopping = true;
        self.cleaner.changed.notify_all();
        let deadline = Instant::now() + bound;
        let mut state = self.cleaner.lock_state();
        // Bounded by the deadline.
        while state.running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::error!(
                    running = state.running,
                    "cleaner threads did not stop in time; shutting down without them"
                );
                return;
            }
            state = self
                .cleaner
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        drop(state);
        for handle in self.handles {
            // Finished already (running is 0): the join returns at once.
            if handle.join().is_err() {
                tracing::error!("a cleaner thread ended with a panic");
            }
        }
    }
}
