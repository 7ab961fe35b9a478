//! cqrs-es snapshots on Tidelog's stream snapshots (issue 9 §2): a snapshot is stored with
//! `EventStore::save_snapshot` at the stream offset of the last event it covers, in the
//! compacted companion topic `<topic>.snapshots`; loading reads it and only the events after it
//! (`EventStore::load`).
//!
//! cqrs-es hands `persist` the new snapshot and its number but not the sequence it covers: with
//! `new_snapshot_store(repo, n)` a snapshot covers the commit's events up to the last multiple of
//! `n`, not necessarily all of them. So the repository is told which store it serves
//! ([`Snapshots`]) and counts the covered events the way cqrs-es does; labelling a snapshot with
//! the commit's last sequence instead would lose the events after the multiple on the next load.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which `PersistedEventStore` the repository serves, so it knows what a snapshot covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Snapshots {
    /// `PersistedEventStore::new_event_store`: no snapshots; a snapshot update is refused.
    #[default]
    Disabled,
    /// `PersistedEventStore::new_snapshot_store(repo, n)`: give the same `n`.
    Every(usize),
    /// `PersistedEventStore::new_aggregate_store`: every commit's snapshot covers all its events.
    AggregateStore,
}

impl Snapshots {
    /// How many of a commit's `events` (after `current_sequence`) its snapshot covers, as
    /// cqrs-es 0.5 decides it (`SourceOfTruth::commit_snapshot_with_addl_events`); 0: none.
    pub fn covered(self, current_sequence: usize, events: usize) -> usize {
        match self {
            Snapshots::Disabled => 0,
            Snapshots::AggregateStore => events,
            Snapshots::Every(size) => {
                let size = size.max(1);
                let next_at = size - (current_sequence % size);
                if events < next_at {
                    0
                } else {
                    let after = events - next_at;
                    next_at + (after - after % size)
                }
            }
        }
    }
}

/// A snapshot's bytes in the companion topic: the aggregate and cqrs-es's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub aggregate: Value,
    /// The sequence of the last event the snapshot covers.
    pub current_sequence: usize,
    /// cqrs-es's snapshot number.
    pub current_snapshot: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_covers_what_cqrs_es_applies_to_it() {
        // The cases of cqrs-es's own test of `commit_snapshot_with_addl_events`.
        assert_eq!(Snapshots::Disabled.covered(5, 3), 0);
        assert_eq!(Snapshots::AggregateStore.covered(5, 3), 3);
        assert_eq!(Snapshots::Every(5).covered(5, 3), 0);
        assert_eq!(Snapshots::Every(4).covered(5, 3), 3);
        assert_eq!(Snapshots::Every(4).covered(5, 4), 3);
        assert_eq!(Snapshots::Every(4).covered(5, 8), 7);
        // Up to the last multiple, not the commit's end: 4 + 1 event covered of 3.
        assert_eq!(Snapshots::Every(5).covered(4, 3), 1);
    }
}
