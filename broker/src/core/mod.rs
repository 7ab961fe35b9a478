//! The protocol-neutral broker core: every broker rule both front ends (native, Kafka) rely
//! on, as operations on domain types. It knows storage, topics, groups and producer ids; it
//! names no wire format (neither prost types nor Kafka codec types) and no listener. Front
//! ends translate their requests into these calls and the results back, and map
//! `error::ErrorCode` to their wire once.

pub(crate) mod error;

use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::groups::GroupService;
use crate::metadata::ProducerIdAllocator;
use crate::topics::TopicRegistry;

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
}
