//! Background work that no request triggers: retention and age-based rolls on a timer (which
//! also frees idle partitions' append buffers), the periodic sync of partitions whose flush
//! policy is `interval:<ms>`, and the expiry of consumer-group members whose session ended.
//! Every timer is one task for the whole broker, never one per partition, so an idle broker's
//! cost does not grow with its partition count beyond a cheap pass every few seconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::core::Core;
use crate::storage::FlushPolicy;

/// Shortest period the interval flusher wakes at, whatever a topic asks for.
const FLUSH_TICK_MIN: Duration = Duration::from_millis(5);
/// Period of the interval flusher when no topic uses an interval policy.
const FLUSH_TICK_IDLE: Duration = Duration::from_millis(500);

pub(crate) fn spawn(context: Arc<Core>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(run_retention(context.clone())),
        tokio::spawn(run_interval_flush(context.clone())),
        tokio::spawn(run_group_expiry(context)),
    ]
}

/// Ticks the group coordinator's session timers: one pass over the groups per tick, so
/// expiry costs the same however many heartbeats arrive.
async fn run_group_expiry(context: Arc<Core>) {
    let mut shutdown = context.shutdown.clone();
    let mut ticker = tokio::time::interval(Duration::from_millis(context.config.groups.expiry_tick_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let changed = context.groups.expire(Instant::now());
        if changed.is_empty() {
            continue;
        }
        let context = context.clone();
        // Blocking: the groups that changed are written to the metadata store.
        let pass = tokio::task::spawn_blocking(move || context.groups.persist_all(&changed));
        if let Err(error) = pass.await {
            tracing::error!(%error, "group expiry pass panicked");
        }
    }
}

async fn run_retention(context: Arc<Core>) {
    let mut shutdown = context.shutdown.clone();
    let mut ticker = tokio::time::interval(context.config.maintenance_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let context = context.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            for topic in context.registry.list() {
                for (index, partition) in topic.online_partitions() {
                    // A partition not appended to since the last pass gives its append buffer
                    // back: idle partitions hold no buffers, however many there are.
                    partition.release_idle_buffers();
                    match partition.run_maintenance(now) {
                        Ok(outcome) if outcome.segments_deleted > 0 => tracing::info!(
                            topic = %topic.record.name,
                            partition = index,
                            segments = outcome.segments_deleted,
                            bytes = outcome.bytes_deleted,
                            "retention deleted segments"
                        ),
                        Ok(_) => {}
                        Err(error) => tracing::error!(
                            topic = %topic.record.name, partition = index, %error, "retention pass failed"
                        ),
                    }
                }
            }
        });
        if let Err(error) = pass.await {
            tracing::error!(%error, "retention pass panicked");
        }
    }
}

/// Syncs the partitions of `interval:<ms>` topics, each topic on its own period. Keyed by
/// topic, not partition, so a tick costs one map lookup per topic however many partitions
/// there are; partitions with nothing unsynced are skipped, so idle ones cost no fsync.
async fn run_interval_flush(context: Arc<Core>) {
    let mut shutdown = context.shutdown.clone();
    let mut last_synced: HashMap<String, Instant> = HashMap::new();
    loop {
        let topics = context.registry.list();
        let tick = topics
            .iter()
            .filter_map(|topic| match topic.log_config.flush {
                FlushPolicy::Interval(every) => Some(every.max(FLUSH_TICK_MIN)),
                _ => None,
            })
            .min()
            .unwrap_or(FLUSH_TICK_IDLE);
        drop(topics);
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        let mut due = Vec::new();
        let now = Instant::now();
        let topics = context.registry.list();
        for topic in &topics {
            let FlushPolicy::Interval(every) = topic.log_config.flush else {
                continue;
            };
            match last_synced.get_mut(&topic.record.name) {
                Some(last) if now.duration_since(*last) >= every => {
                    *last = now;
                    due.push(Arc::clone(topic));
                }
                Some(_) => {}
                None => {
                    last_synced.insert(topic.record.name.clone(), now);
                }
            }
        }
        // Forget deleted topics, so the map stays as small as the registry.
        if last_synced.len() > topics.len() {
            last_synced.retain(|name, _| topics.iter().any(|topic| &topic.record.name == name));
        }
        drop(topics);
        if due.is_empty() {
            continue;
        }
        let pass = tokio::task::spawn_blocking(move || {
            for topic in due {
                for (index, partition) in topic.online_partitions() {
                    if !partition.has_unsynced_data() {
                        continue;
                    }
                    if let Err(error) = partition.sync() {
                        tracing::error!(topic = %topic.record.name, partition = index, %error, "interval flush failed");
                    }
                }
            }
        });
        if let Err(error) = pass.await {
            tracing::error!(%error, "interval flush panicked");
        }
    }
}
