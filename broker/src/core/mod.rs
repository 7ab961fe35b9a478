//! The protocol-neutral broker core: every broker rule both front ends (native, Kafka) rely
//! on, as operations on domain types. It knows storage, topics, groups and producer ids; it
//! names no wire format (neither prost types nor Kafka codec types) and no listener. Front
//! ends translate their requests into these calls and the results back, and map
//! `error::ErrorCode` to their wire once.

pub(crate) mod classic_groups;
pub(crate) mod error;
pub(crate) mod expectations;
pub(crate) mod fetch;
pub(crate) mod group_wait;
pub(crate) mod groups;
pub(crate) mod offsets;
pub(crate) mod produce;
pub(crate) mod producer_ids;
pub(crate) mod snapshots;
pub(crate) mod streams;
pub(crate) mod topics;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::groups::GroupService;
use crate::metadata::ProducerIdAllocator;
use crate::storage::PartitionLog;
use crate::topics::{PartitionSlot, Topic, TopicRegistry};

pub(crate) use error::{CoreError, ErrorCode};

/// The broker's state shared by every listener: configuration, topics, groups and committed
/// offsets, producer ids, and the broker-wide shutdown signal (long polls end on it).
#[derive(Debug)]
pub(crate) struct Core {
    pub config: BrokerConfig,
    pub registry: TopicRegistry,
    /// Consumer groups and committed offsets.
    pub groups: GroupService,
    /// Idempotent producer ids (InitProducerId).
    pub producer_ids: ProducerIdAllocator,
    pub shutdown: watch::Receiver<bool>,
    /// The log cleaner's shared state: each partition's status for Metadata, and the nudge an
    /// erase request gives it.
    pub cleaner: Arc<crate::cleaner::Cleaner>,
}

impl Core {
    /// An online partition's log, or why it cannot be served: it does not exist, or it is
    /// offline because it could not be opened.
    pub(crate) fn partition(&self, topic: &str, partition: u32) -> Result<Arc<PartitionLog>, CoreError> {
        partition_log(self.registry.get(topic).as_ref(), topic, partition)
    }

    /// A topic's partition count; `None` when it does not exist.
    pub(crate) fn partition_count(&self, topic: &str) -> Option<u32> {
        // Bounded by partitions_per_topic_max, a u32.
        self.registry
            .get(topic)
            .map(|found| u32::try_from(found.partitions.len()).unwrap_or(u32::MAX))
    }
}

/// `Core::partition` for a topic already looked up (one registry lookup per topic, not per
/// partition).
pub(crate) fn partition_log(
    found: Option<&Arc<Topic>>,
    topic: &str,
    partition: u32,
) -> Result<Arc<PartitionLog>, CoreError> {
    match found.and_then(|found| found.slot(partition)) {
        Some(PartitionSlot::Online(log)) => Ok(log.clone()),
        Some(PartitionSlot::Offline(reason)) => {
            Err(CoreError::offline_partition(topic, partition as usize, reason))
        }
        None => Err(CoreError::unknown_partition(topic, partition)),
    }
}

/// An operation's answer: decided on the caller's task (`Ready`), or decided there but released
/// only once something durable completes (`Pending`, e.g. a sled write off the async workers).
/// Front ends answer `Ready` at once and await `Pending` outside the connection's in-order
/// path.
pub(crate) enum Decided<T> {
    Ready(Result<T, CoreError>),
    Pending(Pin<Box<dyn Future<Output = Result<T, CoreError>> + Send>>),
}

impl<T> Decided<T> {
    /// The answer, however it is decided.
    #[allow(dead_code)] // For front ends that answer everything from a task (Kafka's).
    pub(crate) async fn answer(self) -> Result<T, CoreError> {
        match self {
            Decided::Ready(answer) => answer,
            Decided::Pending(pending) => pending.await,
        }
    }
}

/// Runs blocking work (sled writes, file creation) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        tracing::error!(%error, "blocking broker task panicked");
        CoreError::new(ErrorCode::UnknownServerError, "internal error")
    })
}
