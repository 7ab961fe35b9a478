//! The per-batch completion state behind each [`DeliveryFuture`]: a sealed batch completes
//! once, and every record's future resolves from it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};
use crate::types::{Delivery, Offset, PartitionId, TopicName};

/// What a finished batch resolved to: the base offset (`None` under acks=none) or the error
/// every record of it shares.
pub(super) type BatchOutcome = std::result::Result<Option<Offset>, Arc<Error>>;

#[derive(Debug, Default)]
struct BatchState {
    outcome: Option<BatchOutcome>,
    wakers: Vec<Waker>,
}

/// Completion state of one batch, shared by the delivery futures of its records.
#[derive(Debug)]
pub(crate) struct BatchShared {
    topic: TopicName,
    partition: PartitionId,
    state: Mutex<BatchState>,
}

impl BatchShared {
    pub(super) fn new(topic: TopicName, partition: PartitionId) -> Self {
        Self {
            topic,
            partition,
            state: Mutex::new(BatchState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BatchState> {
        // The state is a single Option and a Vec of wakers: never torn by a panic.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the outcome and wakes every waiting future. Later calls are ignored: a batch
    /// completes once.
    pub fn complete(&self, outcome: BatchOutcome) {
        let wakers = {
            let mut state = self.lock();
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Resolves to where one sent record landed, once its batch is acknowledged (or written,
/// under acks=none), or to the error that failed its batch.
#[derive(Debug)]
#[must_use = "a delivery future reports whether the record was delivered"]
pub struct DeliveryFuture {
    pub(super) batch: Arc<BatchShared>,
    pub(super) index: u32,
}

impl DeliveryFuture {
    /// The partition the record was assigned to (known before delivery).
    pub fn partition(&self) -> PartitionId {
        self.batch.partition
    }
}

impl Future for DeliveryFuture {
    type Output = Result<Delivery>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.batch.lock();
        match &state.outcome {
            Some(Ok(base)) => Poll::Ready(Ok(Delivery {
                partition: self.batch.partition,
                offset: base.map(|base| base.plus(i64::from(self.index))),
            })),
            Some(Err(error)) => Poll::Ready(Err(Error::Delivery {
                topic: self.batch.topic.to_string(),
                partition: self.batch.partition,
                source: error.clone(),
            })),
            None => {
                if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}
