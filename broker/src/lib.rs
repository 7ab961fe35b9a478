//! The Tidelog broker: topics of partitioned, segmented logs served over the native protocol.
//!
//! `Broker::start(config)` runs a whole broker in-process and returns a handle; `tidelogd` is a
//! thin binary around it. See docs/ARCHITECTURE.md for the map of modules.

mod broker;
mod cleaner;
mod clock;
pub mod config;
mod core;
pub mod error;
mod groups;
pub mod kafka;
mod maintenance;
pub mod metadata;
mod native;
mod net;
pub mod resources;
pub mod storage;
pub mod topics;

pub use broker::{Broker, BrokerHandle};
pub use config::BrokerConfig;
pub use error::BrokerError;
pub use storage::FlushPolicy;
