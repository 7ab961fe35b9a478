//! One cleaner thread's loop: walk the stats, take the most urgent eligible partition, clean
//! it (a panic caught and turned into "uncleanable"), record the outcome; sleep
//! `cleaner.backoff_ms` when nothing is due.

use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pick::{pick, Candidate};
use super::{Cleaner, PartitionKey, TopicSource};
use crate::clock::now_ms;
use crate::storage::{CleanDue, CleanOptions, CleanOutcome, PartitionLog, StorageError};

/// A partition a thread has claimed.
struct Job {
    key: PartitionKey,
    topic: String,
    partition: u32,
    log: Arc<PartitionLog>,
    due: CleanDue,
}

/// Decrements the running count however the thread ends.
struct Running<'a>(&'a Cleaner);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.lock_state().running -= 1;
        self.0.changed.notify_all();
    }
}

pub(super) fn run(cleaner: &Cleaner, topics: &TopicSource) {
    let _running = Running(cleaner);
    // Ends at the stop; each turn either cleans one partition or sleeps.
    loop {
        let seen = {
            let state = cleaner.lock_state();
            if state.stopping {
                return;
            }
            state.wakeups
        };
        match choose(cleaner, topics) {
            Some(job) => clean(cleaner, job),
            None => cleaner.idle_wait(seen),
        }
    }
}

/// Walks every partition that compacts or has erasures pending (cheap stats, no I/O), and
/// claims the most urgent one no other thread holds and no failure or fruitless clean bars.
fn choose(cleaner: &Cleaner, topics: &TopicSource) -> Option<Job> {
    let now_ms = now_ms();
    let mut seen = HashSet::new();
    let mut jobs = Vec::new();
    let mut candidates = Vec::new();
    for topic in topics() {
        for (index, log) in topic.online_partitions() {
            // Bounded by partitions_per_topic_max, a u32.
            let partition = u32::try_from(index).unwrap_or(u32::MAX);
            if !log.config().cleanup_policy.compacts() && log.erasures_pending() == 0 {
                continue;
            }
            let key = (topic.id(), partition);
            seen.insert(key);
            let stats = log.cleaner_stats(now_ms);
            let Some(due) = stats.due else { continue };
            candidates.push(Candidate {
                due,
                dirty_ratio: stats.dirty_ratio,
            });
            jobs.push(Job {
                key,
                topic: topic.record.name.clone(),
                partition,
                log: Arc::clone(log),
                due,
            });
        }
    }
    let now = Instant::now();
    let retry = Duration::from_millis(cleaner.config.uncleanable_retry_ms);
    let mut state = cleaner.lock_state();
    // Partitions gone (deleted topics) or no longer compacting are forgotten.
    state
        .partitions
        .retain(|key, record| record.cleaning || seen.contains(key));
    let eligible: Vec<usize> = (0..jobs.len())
        .filter(|&index| {
            state
                .partitions
                .get(&jobs[index].key)
                .is_none_or(|record| record.eligible(now, retry))
        })
        .collect();
    let eligible_candidates: Vec<Candidate> = eligible.iter().map(|&index| candidates[index]).collect();
    let chosen = eligible[pick(&eligible_candidates)?];
    let job = jobs.swap_remove(chosen);
    state.partitions.entry(job.key).or_default().cleaning = true;
    Some(job)
}

/// Cleans one claimed partition and records how it went.
fn clean(cleaner: &Cleaner, job: Job) {
    let span = tracing::info_span!("cleaner", topic = %job.topic, partition = job.partition, due = ?job.due);
    let _span = span.enter();
    let options = CleanOptions {
        dedupe_bytes_max: cleaner.config.dedupe_buffer_bytes,
    };
    let started = Instant::now();
    let now_ms = now_ms();
    // A panic in the storage code must not end the thread silently (Kafka's dead cleaner
    // thread): it marks this partition uncleanable and the thread goes on. The log is not
    // touched again until the retry, and a clean never leaves a half-swapped segment set in
    // memory (the swap is one assignment).
    let result = panic::catch_unwind(AssertUnwindSafe(|| job.log.clean(now_ms, &options, cleaner)));
    let elapsed = started.elapsed();
    let result = match result {
        Ok(Ok(outcome)) => Ok(Some(outcome)),
        Ok(Err(StorageError::CleanCancelled)) => Ok(None),
        Ok(Err(error)) => Err(one_line(&error)),
        Err(panic) => Err(format!("the cleaner panicked: {}", panic_message(panic.as_ref()))),
    };
    let mut state = cleaner.lock_state();
    let record = state.partitions.entry(job.key).or_default();
    record.cleaning = false;
    match result {
        Ok(Some(outcome)) => {
            record.failure = None;
            if made_progress(&outcome) {
                record.last_cleaned_ms = now_ms;
                record.not_before = None;
            } else {
                // Due by its stats but nothing to clean (say, everything within
                // min.compaction.lag.ms): not again before a backoff, or the thread spins.
                record.not_before = Some(Instant::now() + Duration::from_millis(cleaner.config.backoff_ms));
            }
            drop(state);
            log_outcome(&outcome, elapsed);
        }
        Ok(None) => {
            drop(state);
            tracing::info!("clean cancelled: the broker is stopping");
        }
        Err(error) => {
            record.failure = Some((error.clone(), Instant::now()));
            drop(state);
            tracing::error!(
                topic = %job.topic,
                partition = job.partition,
                %error,
                retry_ms = cleaner.config.uncleanable_retry_ms,
                "partition is uncleanable: cleaning failed; the cleaner skips it until the retry and keeps cleaning the others"
            );
        }
    }
}

fn made_progress(outcome: &CleanOutcome) -> bool {
    outcome.segments_written > 0 || outcome.records_removed > 0 || outcome.erasures_completed > 0
}

fn log_outcome(outcome: &CleanOutcome, elapsed: Duration) {
    if !made_progress(outcome) {
        tracing::debug!("clean found nothing to do");
        return;
    }
    let seconds = elapsed.as_secs_f64().max(1e-6);
    tracing::info!(
        segments_read = outcome.segments_read,
        segments_written = outcome.segments_written,
        bytes_before = outcome.bytes_before,
        bytes_after = outcome.bytes_after,
        records_removed = outcome.records_removed,
        erasures_completed = outcome.erasures_completed,
        first_dirty_offset = outcome.first_dirty_offset,
        elapsed_ms = elapsed.as_millis() as u64,
        mb_per_sec = format!("{:.1}", outcome.bytes_read as f64 / seconds / 1e6),
        "partition cleaned"
    );
}

/// The error and its causes on one line.
fn one_line(error: &StorageError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    // Bounded by the error's cause chain.
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.replace(['\n', '\r'], " ")
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}
