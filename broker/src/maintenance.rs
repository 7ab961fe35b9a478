//! Background work that no request triggers: retention and age-based rolls on a timer, the
//! periodic sync of partitions whose flush policy is `interval:<ms>`, and the expiry of
//! consumer-group members whose session ended.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::broker::BrokerContext;
use crate::clock::now_ms;
use crate::storage::FlushPolicy;

/// Shortest period the interval flusher wakes at, whatever a topic asks for.
const FLUSH_TICK_MIN: Duration = Duration::from_millis(5);
/// Period of the interval flusher when no topic uses an interval policy.
const FLUSH_TICK_IDLE: Duration = Duration::from_millis(500);

pub(crate) fn spawn(context: Arc<BrokerContext>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(run_retention(context.clone())),
        tokio::spawn(run_interval_flush(context.clone())),
        tokio::spawn(run_group_expiry(context)),
    ]
}

/// Ticks the group coordinator's session timers: one pass over the groups per tick, so
/// expiry costs the same however many heartbeats arrive.
async fn run_group_expiry(context: Arc<BrokerContext>) {
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

async fn run_retention(context: Arc<BrokerContext>) {
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

async fn run_interval_flush(context: Arc<BrokerContext>) {
    let mut shutdown = context.shutdown.clone();
    let mut last_synced: HashMap<(String, usize), Instant> = HashMap::new();
    loop {
        let tick = context
            .registry
            .list()
            .iter()
            .filter_map(|topic| match topic.log_config.flush {
                FlushPolicy::Interval(every) => Some(every.max(FLUSH_TICK_MIN)),
                _ => None,
            })
            .min()
            .unwrap_or(FLUSH_TICK_IDLE);
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        let mut due = Vec::new();
        let now = Instant::now();
        for topic in context.registry.list() {
            let FlushPolicy::Interval(every) = topic.log_config.flush else {
                continue;
            };
            for (index, partition) in topic.online_partitions() {
                let key = (topic.record.name.clone(), index);
                let last = last_synced.entry(key).or_insert(now);
                if now.duration_since(*last) >= every {
                    *last = now;
                    due.push((topic.record.name.clone(), index, partition.clone()));
                }
            }
        }
        if due.is_empty() {
            continue;
        }
        let pass = tokio::task::spawn_blocking(move || {
            for (topic, index, partition) in due {
                if let Err(error) = partition.sync() {
                    tracing::error!(%topic, partition = index, %error, "interval flush failed");
                }
            }
        });
        if let Err(error) = pass.await {
            tracing::error!(%error, "interval flush panicked");
        }
    }
}
