//! Pure reconciliation of a member's owned partitions against the coordinator's target
//! assignment: what to give up and what to start. No I/O, so the rules are unit-tested here.

use std::collections::BTreeSet;

use crate::types::{PartitionId, TopicName};

/// A partition of a topic.
pub type TopicPartition = (TopicName, PartitionId);

/// The steps that take a member from what it owns to what the coordinator wants it to own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reconciliation {
    /// Owned but no longer assigned: commit, then stop fetching, then report the smaller set.
    pub revoke: Vec<TopicPartition>,
    /// Assigned but not owned yet: look up the committed offset and start fetching.
    pub add: Vec<TopicPartition>,
}

#[cfg(test)]
impl Reconciliation {
    pub fn is_empty(&self) -> bool {
        self.revoke.is_empty() && self.add.is_empty()
    }
}

/// Compares the owned set with the complete target set. `None` (no assignment received yet
/// since joining) changes nothing: a member keeps what it has until told otherwise.
pub(crate) fn reconcile(
    owned: &BTreeSet<TopicPartition>,
    target: Option<&BTreeSet<TopicPartition>>,
) -> Reconciliation {
    let Some(target) = target else {
        return Reconciliation::default();
    };
    Reconciliation {
        revoke: owned.difference(target).cloned().collect(),
        add: target.difference(owned).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, u32)]) -> BTreeSet<TopicPartition> {
        items
            .iter()
            .map(|(t, p)| (TopicName::new(t), PartitionId::new(*p)))
            .collect()
    }

    fn list(items: &[(&str, u32)]) -> Vec<TopicPartition> {
        set(items).into_iter().collect()
    }

    #[test]
    fn first_assignment_adds_everything() {
        let plan = reconcile(&set(&[]), Some(&set(&[("a", 0), ("a", 1)])));
        assert_eq!(plan.add, list(&[("a", 0), ("a", 1)]));
        assert!(plan.revoke.is_empty());
    }

    #[test]
    fn partitions_missing_from_the_target_are_revoked_and_new_ones_added() {
        let owned = set(&[("a", 0), ("a", 1), ("b", 0)]);
        let plan = reconcile(&owned, Some(&set(&[("a", 1), ("b", 0), ("b", 1)])));
        assert_eq!(plan.revoke, list(&[("a", 0)]));
        assert_eq!(plan.add, list(&[("b", 1)]));
    }

    #[test]
    fn an_empty_target_revokes_everything() {
        let owned = set(&[("a", 0), ("a", 3)]);
        let plan = reconcile(&owned, Some(&set(&[])));
        assert_eq!(plan.revoke, list(&[("a", 0), ("a", 3)]));
        assert!(plan.add.is_empty());
    }

    #[test]
    fn no_target_yet_changes_nothing() {
        assert!(reconcile(&set(&[("a", 0)]), None).is_empty());
    }

    #[test]
    fn same_set_changes_nothing() {
        let owned = set(&[("a", 0), ("b", 2)]);
        assert!(reconcile(&owned, Some(&owned.clone())).is_empty());
    }
}
