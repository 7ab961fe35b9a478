//! Consumer groups and committed offsets, broker side, after Kafka's new consumer protocol
//! (KIP-848): members heartbeat their subscriptions, the coordinator computes the assignment
//! and hands it out incrementally and cooperatively.
//!
//! * `assignor`: the pure, sticky, balanced assignment function.
//! * `group`: one group's state machine (epochs, reconciliation, revocation).
//! * `coordinator`: all groups, the heartbeat protocol, commit validation; time is a
//!   parameter, so tests drive it with a fake clock.
//! * `classic`: classic groups (JoinGroup/SyncGroup, client-side assignment) for Kafka
//!   clients, on the same groups and offsets; a group speaks one protocol at a time.
//! * `consumer_protocol`: reads the standard consumer payloads classic members exchange,
//!   only to describe a group.
//! * `service`: the coordinator behind a lock, with its state persisted through
//!   `MetadataStore`.
//! * `offset_waiters`: wake-ups for callers waiting until a group commits past an offset.
//!
//! The handlers in `native::handlers` convert protocol messages to the types here; the
//! session-expiry timer lives in `maintenance`.

pub mod assignor;
pub mod classic;
pub mod consumer_protocol;
pub mod coordinator;
pub mod group;
pub(crate) mod offset_waiters;
mod service;

#[cfg(test)]
mod tests;

pub(crate) use service::GroupService;
