//! The Tidelog broker: topics of partitioned, segmented logs served over the native protocol.
//!
//! `Broker::start(config)` runs a whole broker in-process and returns a handle; `tidelogd` is a
//! thin binary around it. See docs/ARCHITECTURE.md for the map of modules.

pub mod storage;
