//! Consumer groups: [`GroupConsumer`] (membership, assignment reconciliation, committed
//! offsets) and the group administration methods of [`Admin`](crate::Admin).
//!
//! Module map: `reconcile` (pure: owned vs target), `membership` (heartbeat state machine and
//! task), `offsets` (OffsetCommit/OffsetFetch and the committer task), `consumer`
//! ([`GroupConsumer`]), `admin` (list, describe, reset offsets, delete).

mod admin;
mod consumer;
mod membership;
mod offsets;
mod reconcile;

pub use admin::{GroupDescription, GroupListing, GroupMember, GroupPartitionOffset, GroupState};
pub use consumer::{AutoCommit, GroupConfig, GroupConsumer, OffsetsToCommit, RebalanceListener};
pub use offsets::CommitHandle;
pub use reconcile::TopicPartition;
