//! Byte budgets for fetched data held in memory: read from a segment but not yet written to
//! the client's socket. A fetch reserves its `max_bytes` from its connection's budget and then
//! from the broker's before it reads, and the reservation travels with the response until the
//! writer has sent it. A client that pipelines fetches and never reads its socket therefore
//! waits for its own budget instead of growing the broker's memory.
//!
//! The two semaphores are always acquired in the same order (connection, then broker), so two
//! fetches can never wait on each other's permits.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Where a connection's fetches take their memory from.
#[derive(Debug, Clone)]
pub(crate) struct FetchBudget {
    connection: Arc<Semaphore>,
    broker: Arc<Semaphore>,
}

/// Bytes reserved by one fetch; released when dropped (after its response is written).
#[derive(Debug)]
pub(crate) struct FetchReservation {
    _connection: OwnedSemaphorePermit,
    _broker: OwnedSemaphorePermit,
}

impl FetchBudget {
    pub(crate) fn new(connection_bytes: usize, broker: Arc<Semaphore>) -> Self {
        Self {
            connection: Arc::new(Semaphore::new(connection_bytes)),
            broker,
        }
    }

    /// Waits until `bytes` are free in both budgets. `None` only if a budget was closed, which
    /// this broker never does; the caller then answers without data.
    ///
    /// `bytes` must not exceed either budget's size (config validation guarantees it for
    /// `limits.fetch_bytes_max`), or this would wait forever.
    pub(crate) async fn reserve(&self, bytes: usize) -> Option<FetchReservation> {
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        let connection = self.connection.clone().acquire_many_owned(permits).await.ok()?;
        let broker = self.broker.clone().acquire_many_owned(permits).await.ok()?;
        Some(FetchReservation {
            _connection: connection,
            _broker: broker,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_connection_past_its_budget_waits_until_a_response_is_written() {
        let broker = Arc::new(Semaphore::new(100));
        let budget = FetchBudget::new(10, broker.clone());
        let first = budget.reserve(6).await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(50), budget.reserve(6)).await;
        assert!(second.is_err(), "the second reservation must wait");
        assert_eq!(broker.available_permits(), 94);
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), budget.reserve(6)).await;
        assert!(second.is_ok_and(|reservation| reservation.is_some()));
    }

    #[tokio::test]
    async fn connections_share_the_broker_budget() {
        let broker = Arc::new(Semaphore::new(10));
        let one = FetchBudget::new(10, broker.clone());
        let other = FetchBudget::new(10, broker);
        let _held = one.reserve(8).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), other.reserve(8)).await;
        assert!(
            waiting.is_err(),
            "the broker-wide budget must bound both connections"
        );
    }
}
