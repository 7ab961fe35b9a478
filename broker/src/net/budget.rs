//! The broker's one memory budget: bytes of client data held in memory on behalf of a
//! connection, whatever their stage. Partially received frames are charged as their bytes
//! arrive (never from the length a client announces), a decoded request keeps its frame's
//! charge until it is answered, a produce is charged again for the copy the append makes, and
//! a response is charged for its framed bytes (a fetch for exactly what its read returned)
//! until the writer has sent it.
//!
//! The budget bounds the broker as a whole (`limits.memory_bytes_max`) and each connection
//! (`limits.connection_memory_bytes_max`). Within it, two more rules decide who waits when it
//! runs short, both against the connections holding the most:
//! * a grant is made only if, after it, the connection holds no more than what is still free,
//!   so the biggest holder is the first refused and can never take the last bytes;
//! * the last eighth of the budget goes only to connections holding less than a sixteenth of
//!   that eighth (4 MiB of the default 512 MiB), so however many connections fill the rest,
//!   a new client can still be read and answered.
//!
//! Past the budget the broker therefore stops reading from the connections holding the most,
//! while small requests still get through.
//!
//! Reservations release their bytes when dropped, and every release wakes the waiters, which
//! check again. A connection's task and its requests' tasks share one `ConnectionBudget`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a reservation was not made.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BudgetError {
    /// The deadline passed while other connections held the memory.
    #[error("the broker's memory budget stayed exhausted; retry later")]
    Exhausted,
    /// More than any one connection may ever hold: waiting could not help.
    #[error("{bytes} bytes exceed what one connection may hold ({max} bytes)")]
    TooLarge { bytes: usize, max: usize },
}

/// The broker-wide budget.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    /// Bytes reserved by every connection together. Every change to it and to any
    /// connection's `held` happens under this lock, so the fairness rule sees one state.
    used: Mutex<usize>,
    released: Notify,
    limit: usize,
    connection_limit: usize,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize, connection_limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: Mutex::new(0),
            released: Notify::new(),
            limit,
            connection_limit: connection_limit.min(limit),
        })
    }

    /// A new connection's share of this budget; it holds nothing yet.
    pub(crate) fn connection(self: &Arc<Self>) -> ConnectionBudget {
        ConnectionBudget {
            broker: self.clone(),
            held: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Bytes reserved by all connections.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        *self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // The lock guards plain counters updated without panicking code in between, so a
        // poisoned lock still holds consistent numbers.
        self.used.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The part of the budget kept for connections holding little.
    fn reserve(&self) -> usize {
        self.limit / 8
    }

    /// What a connection may hold and still draw on the reserve.
    fn small_holding(&self) -> usize {
        (self.reserve() / 16).min(self.connection_limit)
    }

    /// The most a connection holding `held` may be granted now: within the broker's and the
    /// connection's limits, leaving at least as much free as the connection then holds, and
    /// out of the reserve only for a connection holding little.
    fn grantable(&self, used: usize, held: usize) -> usize {
        let free = self.limit.saturating_sub(used);
        let fair = free.saturating_sub(held) / 2;
        let general = free
            .saturating_sub(self.reserve())
            .min(self.connection_limit.saturating_sub(held))
            .min(fair);
        let from_reserve = self.small_holding().saturating_sub(held).min(fair);
        general.max(from_reserve)
    }

    /// The largest request a connection holding nothing could ever be granted.
    fn ceiling(&self) -> usize {
        let general = self.limit.saturating_sub(self.reserve()).min(self.limit / 2);
        self.connection_limit.min(general.max(self.small_holding()))
    }

    fn release(&self, held: &AtomicUsize, bytes: usize) {
        if bytes == 0 {
            return;
        }
        {
            let mut used = self.lock();
            *used = used.saturating_sub(bytes);
            held.fetch_sub(bytes, Ordering::Relaxed);
        }
        self.released.notify_waiters();
    }
}

/// One connection's view of the broker budget. Clones share the connection's holdings.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionBudget {
    broker: Arc<MemoryBudget>,
    held: Arc<AtomicUsize>,
}

impl ConnectionBudget {
    /// Bytes this connection holds now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// A reservation of nothing, to grow or merge into.
    pub(crate) fn empty(&self) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Grants between `min` and `max` bytes (as many as the rules allow) without waiting.
    #[cfg(test)]
    pub(crate) fn try_reserve_between(&self, min: usize, max: usize) -> Option<Reservation> {
        let bytes = self.take_between(min, max)?;
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    /// Waits until between `min` and `max` bytes can be granted, and grants as many as the
    /// rules allow. `deadline` `None` waits as long as it takes (a connection's reader: its
    /// own timeouts bound it).
    pub(crate) async fn reserve_between(
        &self,
        min: usize,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<Reservation, BudgetError> {
        let bytes = self.wait_for(min, max, deadline).await?;
        Ok(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    /// Charges `bytes` that already exist (an encoded response), whatever the budget's state:
    /// refusing would not free them. The overshoot makes every later grant wait until enough
    /// has been released.
    pub(crate) fn charge(&self, bytes: usize) -> Reservation {
        if bytes > 0 {
            let mut used = self.broker.lock();
            *used = used.saturating_add(bytes);
            self.held.fetch_add(bytes, Ordering::Relaxed);
        }
        Reservation {
            budget: self.clone(),
            bytes,
        }
    }

    fn take_between(&self, min: usize, max: usize) -> Option<usize> {
        let mut used = self.broker.lock();
        let held = self.held.load(Ordering::Relaxed);
        let bytes = self.broker.grantable(*used, held).min(max);
        if bytes < min || (bytes == 0 && max > 0) {
            return None;
        }
        *used += bytes;
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Some(bytes)
    }

    async fn wait_for(
        &self,
        min: usize,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<usize, BudgetError> {
        let ceiling = self.broker.ceiling();
        if min > ceiling {
            return Err(BudgetError::TooLarge {
                bytes: min,
                max: ceiling,
            });
        }
        loop {
            // Register for the next release before checking, so a release between the check
            // and the wait still wakes us.
            let released = self.broker.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(bytes) = self.take_between(min, max) {
                return Ok(bytes);
            }
            match deadline {
                None => released.await,
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return Err(BudgetError::Exhausted);
                    }
                }
            }
        }
    }
}

/// Bytes held from the budget; released when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: ConnectionBudget,
    bytes: usize,
}

impl Reservation {
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back everything above `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget.broker.release(&self.budget.held, self.bytes - bytes);
            self.bytes = bytes;
        }
    }

    /// Grows by `more` bytes if the rules allow it now.
    pub(crate) fn try_grow(&mut self, more: usize) -> bool {
        match self.budget.take_between(more, more) {
            Some(bytes) => {
                self.bytes += bytes;
                true
            }
            None => more == 0,
        }
    }

    /// Grows by `more` bytes, waiting until `deadline` for them.
    pub(crate) async fn grow(&mut self, more: usize, deadline: Instant) -> Result<(), BudgetError> {
        if more == 0 {
            return Ok(());
        }
        let bytes = self.budget.wait_for(more, more, Some(deadline)).await?;
        self.bytes += bytes;
        Ok(())
    }

    /// Moves `bytes` of this reservation (or all it has, if less) into a new one, for data
    /// that leaves with a request.
    pub(crate) fn split(&mut self, bytes: usize) -> Reservation {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Reservation {
            budget: self.budget.clone(),
            bytes,
        }
    }

    /// Takes over `other`'s bytes (both must be the same connection's).
    pub(crate) fn merge(&mut self, mut other: Reservation) {
        debug_assert!(Arc::ptr_eq(&self.budget.held, &other.budget.held));
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.broker.release(&self.budget.held, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn a_connection_past_its_own_limit_waits_until_it_releases() {
        let broker = MemoryBudget::new(1000, 100);
        let connection = broker.connection();
        let first = connection.reserve_between(60, 60, None).await.unwrap();
        let second = connection.reserve_between(60, 60, Some(soon())).await;
        assert_eq!(second.unwrap_err(), BudgetError::Exhausted);
        assert_eq!(broker.used(), 60);
        let waiting = tokio::spawn({
            let connection = connection.clone();
            async move { connection.reserve_between(60, 60, Some(later())).await }
        });
        drop(first);
        let second = waiting.await.unwrap().unwrap();
        assert_eq!(second.bytes(), 60);
        assert_eq!(connection.held(), 60);
    }

    #[tokio::test]
    async fn the_biggest_holder_cannot_take_the_last_bytes_from_a_small_one() {
        let broker = MemoryBudget::new(1000, 1000);
        let greedy = broker.connection();
        // The greedy connection grows chunk by chunk until the fairness rule stops it.
        let mut held = greedy.empty();
        while let Some(more) = greedy.try_reserve_between(10, 10) {
            held.merge(more);
        }
        assert!(
            held.bytes() <= 500,
            "one connection took {} of 1000",
            held.bytes()
        );
        assert!(broker.used() < 1000);
        // A connection holding nothing still gets memory, at least as much as stays free.
        let modest = broker.connection();
        let grant = modest
            .try_reserve_between(10, 100)
            .expect("a small holder is served");
        assert!(grant.bytes() >= 10);
        // And the greedy one still cannot grow.
        assert!(greedy.try_reserve_between(10, 10).is_none());
    }

    #[tokio::test]
    async fn connections_growing_in_turn_stop_short_of_the_reserve_and_a_newcomer_is_served() {
        let broker = MemoryBudget::new(10_000, 10_000);
        let connections: Vec<_> = (0..50).map(|_| broker.connection()).collect();
        let mut held: Vec<_> = connections.iter().map(ConnectionBudget::empty).collect();
        // Round-robin growth, like trickling connections taking turns, until none can grow.
        for _ in 0..10_000 {
            let grew = held
                .iter_mut()
                .filter_map(|held| held.try_grow(16).then_some(()))
                .count();
            if grew == 0 {
                break;
            }
        }
        assert!(broker.used() <= 10_000 - 10_000 / 8, "used {}", broker.used());
        assert!(held.iter_mut().all(|held| !held.try_grow(16)));
        let newcomer = broker.connection();
        assert!(newcomer.try_reserve_between(16, 64).is_some());
    }

    #[tokio::test]
    async fn a_request_larger_than_any_connection_may_hold_fails_at_once() {
        let broker = MemoryBudget::new(1000, 300);
        let connection = broker.connection();
        assert_eq!(
            connection.reserve_between(301, 301, None).await.unwrap_err(),
            BudgetError::TooLarge { bytes: 301, max: 300 }
        );
    }

    #[tokio::test]
    async fn shrink_split_merge_and_drop_keep_the_accounting_exact() {
        let broker = MemoryBudget::new(1000, 500);
        let connection = broker.connection();
        let mut reservation = connection.reserve_between(10, 200, None).await.unwrap();
        assert_eq!(reservation.bytes(), 200);
        reservation.shrink_to(120);
        assert_eq!(broker.used(), 120);
        let part = reservation.split(20);
        assert_eq!((reservation.bytes(), part.bytes()), (100, 20));
        assert_eq!(broker.used(), 120);
        reservation.merge(part);
        assert_eq!(reservation.bytes(), 120);
        assert!(reservation.try_grow(30));
        assert_eq!(broker.used(), 150);
        let charged = connection.charge(40);
        assert_eq!(connection.held(), 190);
        drop(charged);
        drop(reservation);
        assert_eq!(broker.used(), 0);
        assert_eq!(connection.held(), 0);
    }

    #[tokio::test]
    async fn a_charge_past_the_budget_makes_later_grants_wait_until_released() {
        let broker = MemoryBudget::new(100, 100);
        let one = broker.connection();
        let other = broker.connection();
        let charged = one.charge(150);
        assert!(other.try_reserve_between(1, 10).is_none());
        let waiting = tokio::spawn(async move { other.reserve_between(1, 10, Some(later())).await });
        drop(charged);
        assert!(waiting.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn growing_waits_for_a_release_until_its_deadline() {
        let broker = MemoryBudget::new(100, 100);
        let one = broker.connection();
        let other = broker.connection();
        let held = other.reserve_between(40, 40, None).await.unwrap();
        let mut reservation = one.reserve_between(10, 10, None).await.unwrap();
        assert_eq!(
            reservation.grow(30, soon()).await.unwrap_err(),
            BudgetError::Exhausted
        );
        let released = tokio::spawn(async move {
            drop(held);
        });
        released.await.unwrap();
        reservation.grow(30, later()).await.unwrap();
        assert_eq!(reservation.bytes(), 40);
    }
}
