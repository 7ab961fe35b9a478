//! Wake-ups for `wait_for_group_offset` (issue 8 §4, read-your-writes for read models): one
//! watch channel per group that has waiters, created when its first waiter arrives and removed
//! with its last, bumped by every change to the group's committed offsets once it is durable
//! and applied in memory. A waiter subscribes *before* it reads the committed offset, so a
//! commit applied between its read and its wait still wakes it: no polling loop, no lost
//! wake-up. The number of waiters broker-wide is bounded (`groups.offset_waiters_max`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// Every group's waiters, behind one short lock (taken only to register, leave and notify).
#[derive(Debug)]
pub(crate) struct OffsetWaiters {
    waiters_max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Waiters registered over all groups.
    count: usize,
    groups: HashMap<String, GroupWaiters>,
}

#[derive(Debug)]
struct GroupWaiters {
    /// Counts the group's offset changes; waiters only care that it moved.
    changes: watch::Sender<u64>,
    waiters: usize,
}

/// A registration would pass `groups.offset_waiters_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{max} waits for group offsets are under way, the most the broker allows (groups.offset_waiters_max)"
)]
pub(crate) struct TooManyWaiters {
    pub max: usize,
}

/// One registered waiter: `changed` resolves after the group's next offset change. Dropping
/// it (answered, timed out or cancelled with its connection) unregisters it.
#[derive(Debug)]
pub(crate) struct OffsetWaiter {
    waiters: Arc<OffsetWaiters>,
    group_id: String,
    changes: watch::Receiver<u64>,
}

impl OffsetWaiters {
    pub(crate) fn new(waiters_max: usize) -> Self {
        Self {
            waiters_max,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below completes without panicking points in between, so a poisoned
        // lock still holds consistent counts.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a waiter on `group_id`; changes from now on wake it.
    pub(crate) fn register(self: &Arc<Self>, group_id: &str) -> Result<OffsetWaiter, TooManyWaiters> {
        let mut inner = self.lock();
        if inner.count >= self.waiters_max {
            return Err(TooManyWaiters {
                max: self.waiters_max,
            });
        }
        inner.count += 1;
        let entry = inner
            .groups
            .entry(group_id.to_owned())
            .or_insert_with(|| GroupWaiters {
                changes: watch::Sender::new(0),
                waiters: 0,
            });
        entry.waiters += 1;
        let changes = entry.changes.subscribe();
        Ok(OffsetWaiter {
            waiters: self.clone(),
            group_id: group_id.to_owned(),
            changes,
        })
    }

    /// Wakes the group's waiters: its committed offsets changed (and are durable). Costs one
    /// map lookup when nobody waits.
    pub(crate) fn notify(&self, group_id: &str) {
        if let Some(entry) = self.lock().groups.get(group_id) {
            entry
                .changes
                .send_modify(|changes| *changes = changes.wrapping_add(1));
        }
    }

    /// Waiters registered now, over all groups.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.lock().count
    }

    /// Groups with a channel now.
    #[cfg(test)]
    pub(crate) fn groups(&self) -> usize {
        self.lock().groups.len()
    }

    fn leave(&self, group_id: &str) {
        let mut inner = self.lock();
        inner.count = inner.count.saturating_sub(1);
        if let Some(entry) = inner.groups.get_mut(group_id) {
            entry.waiters = entry.waiters.saturating_sub(1);
            if entry.waiters == 0 {
                inner.groups.remove(group_id);
            }
        }
    }
}

impl OffsetWaiter {
    /// Resolves once the group's offsets changed since registration or the last `changed`.
    pub(crate) async fn changed(&mut self) {
        // The sender lives as long as this receiver's entry, which our registration holds;
        // should it ever be gone, pend until the caller's deadline rather than spin.
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for OffsetWaiter {
    fn drop(&mut self) {
        self.waiters.leave(&self.group_id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_notification_after_registration_wakes_the_waiter() {
        let waiters = Arc::new(OffsetWaiters::new(8));
        let mut waiter = waiters.register("g").unwrap();
        waiters.notify("other");
        let woken = tokio::time::timeout(Duration::from_millis(50), waiter.changed()).await;
        assert!(woken.is_err(), "another group's commit must not wake it");
        waiters.notify("g");
        tokio::time::timeout(Duration::from_secs(5), waiter.changed())
            .await
            .expect("the group's commit wakes it");
    }

    #[tokio::test]
    async fn a_notification_between_registration_and_wait_is_not_lost() {
        let waiters = Arc::new(OffsetWaiters::new(8));
        let mut waiter = waiters.register("g").unwrap();
        // The commit lands after the waiter read the offset but before it awaits.
        waiters.notify("g");
        tokio::time::timeout(Duration::from_secs(5), waiter.changed())
            .await
            .expect("the earlier notification is seen");
    }

    #[test]
    fn waiters_are_bounded_and_dropping_one_frees_its_slot_and_channel() {
        let waiters = Arc::new(OffsetWaiters::new(2));
        let first = waiters.register("g").unwrap();
        let second = waiters.register("h").unwrap();
        assert_eq!(waiters.register("g").unwrap_err(), TooManyWaiters { max: 2 });
        assert_eq!((waiters.count(), waiters.groups()), (2, 2));
        drop(second);
        assert_eq!((waiters.count(), waiters.groups()), (1, 1));
        let third = waiters.register("g").unwrap();
        assert_eq!((waiters.count(), waiters.groups()), (2, 1));
        drop(first);
        drop(third);
        assert_eq!((waiters.count(), waiters.groups()), (0, 0));
        // Notifying a group nobody waits on is a no-op.
        waiters.notify("g");
        assert_eq!(waiters.groups(), 0);
    }
}
