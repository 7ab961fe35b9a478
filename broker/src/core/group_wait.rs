//! Read-your-writes for read models (issue 8 §4): `wait_for_group_offset` resolves once a
//! group has committed at or past an offset of a partition, or its timeout passes. It is woken
//! by the commit itself (`groups::offset_waiters`, bumped once the commit is durable), for
//! commits from either protocol (native OffsetCommit, Kafka OffsetCommit from KIP-848 or
//! classic members, admin resets: all go through `GroupService`), never by a polling loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use super::{Core, CoreError, ErrorCode};

/// The answer to a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaitOutcome {
    /// The group's committed offset for the partition when answered; -1: none.
    pub committed: i64,
    /// `committed >= offset`; false: the timeout passed first.
    pub reached: bool,
}

impl Core {
    /// Waits until `group_id` has committed `offset` or more for `topic`/`partition`, at most
    /// `timeout` (clamped to `groups.offset_wait_ms_max`). A group or commit that does not
    /// exist yet is waited for: the commit that creates it wakes the wait.
    ///
    /// # Errors
    /// INVALID_GROUP_ID, UNKNOWN_TOPIC_OR_PARTITION, THROTTLING_QUOTA_EXCEEDED past
    /// `groups.offset_waiters_max` waiters, BROKER_SHUTTING_DOWN when the broker stops first.
    pub(crate) async fn wait_for_group_offset(
        self: &Arc<Self>,
        group_id: String,
        topic: String,
        partition: u32,
        offset: i64,
        timeout: Duration,
    ) -> Result<WaitOutcome, CoreError> {
        let span =
            tracing::debug_span!("wait_for_group_offset", group = %group_id, %topic, partition, offset);
        self.wait_for_group_offset_inner(&group_id, &topic, partition, offset, timeout)
            .instrument(span)
            .await
    }

    async fn wait_for_group_offset_inner(
        self: &Arc<Self>,
        group_id: &str,
        topic: &str,
        partition: u32,
        offset: i64,
        timeout: Duration,
    ) -> Result<WaitOutcome, CoreError> {
        self.groups
            .with(|coordinator| coordinator.check_group_id(group_id))
            .map_err(CoreError::from)?;
        match self.partition_count(topic) {
            None => return Err(CoreError::unknown_topic(topic)),
            Some(count) if partition >= count => return Err(CoreError::unknown_partition(topic, partition)),
            Some(_) => {}
        }
        let timeout = timeout.min(Duration::from_millis(self.config.groups.offset_wait_ms_max));
        let deadline = Instant::now() + timeout;
        let outcome = self.committed_against(group_id, topic, partition, offset);
        if outcome.reached || timeout.is_zero() {
            return Ok(outcome);
        }
        // Register, then read again: a commit applied in between is seen by the read or wakes
        // the waiter, never lost.
        let mut waiter = self.groups.offset_waiters().register(group_id).map_err(|error| {
            tracing::warn!(%error, "a wait for a group offset was refused");
            CoreError::new(ErrorCode::ThrottlingQuotaExceeded, error.to_string())
        })?;
        let mut shutdown = self.shutdown.clone();
        let mut shutdown_gone = false;
        loop {
            let outcome = self.committed_against(group_id, topic, partition, offset);
            if outcome.reached || Instant::now() >= deadline {
                return Ok(outcome);
            }
            // A dropped sender (the broker's handle gone) counts as shutdown: nothing else
            // would end the wait before its deadline without spinning.
            if *shutdown.borrow() || shutdown_gone {
                return Err(CoreError::new(
                    ErrorCode::BrokerShuttingDown,
                    "the broker is shutting down",
                ));
            }
            tokio::select! {
                () = waiter.changed() => {}
                () = tokio::time::sleep_until(deadline) => {}
                changed = shutdown.changed() => shutdown_gone = changed.is_err(),
            }
        }
    }

    /// The group's committed offset for the partition now, against the one waited for.
    fn committed_against(&self, group_id: &str, topic: &str, partition: u32, offset: i64) -> WaitOutcome {
        let committed = self.groups.with(|coordinator| {
            coordinator
                .group(group_id)
                .and_then(|group| group.offsets.get(&(topic.to_owned(), partition)))
                .map_or(-1, |committed| committed.offset)
        });
        WaitOutcome {
            committed,
            reached: committed >= 0 && committed >= offset,
        }
    }
}
