//! Which partition a cleaner thread takes next: pending erasures by earliest deadline, then
//! logs past `max.compaction.lag.ms` (the dirtiest first), then the highest dirty ratio. A
//! pure function over what the stats walk found, so the order is tested without a broker.

use std::cmp::Ordering;

use crate::storage::CleanDue;

/// One partition with work due, as the stats walk saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    pub due: CleanDue,
    pub dirty_ratio: f64,
}

/// Lower ranks go first.
fn rank(due: CleanDue) -> (u8, i64) {
    match due {
        CleanDue::Erasure { deadline_ms } => (0, deadline_ms),
        CleanDue::MaxLag => (1, 0),
        CleanDue::DirtyRatio => (2, 0),
    }
}

/// Whether `a` should be cleaned before `b`.
fn before(a: &Candidate, b: &Candidate) -> bool {
    match rank(a.due).cmp(&rank(b.due)) {
        Ordering::Less => true,
        Ordering::Greater => false,
        // Same kind (and deadline): the dirtier first; a NaN ratio counts as 0.
        Ordering::Equal => a.dirty_ratio.max(0.0) > b.dirty_ratio.max(0.0),
    }
}

/// The index of the candidate to clean first; `None` when there is none. Ties keep the
/// earlier one (the walk's order), so a round is deterministic.
pub(crate) fn pick(candidates: &[Candidate]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (index, candidate) in candidates.iter().enumerate() {
        match best {
            Some(chosen) if !before(candidate, &candidates[chosen]) => {}
            _ => best = Some(index),
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(due: CleanDue, dirty_ratio: f64) -> Candidate {
        Candidate { due, dirty_ratio }
    }

    #[test]
    fn erasures_go_first_by_earliest_deadline_then_max_lag_then_the_dirtiest() {
        let dirty = candidate(CleanDue::DirtyRatio, 0.9);
        let lagging = candidate(CleanDue::MaxLag, 0.1);
        let late_erasure = candidate(CleanDue::Erasure { deadline_ms: 2_000 }, 0.0);
        let early_erasure = candidate(CleanDue::Erasure { deadline_ms: 1_000 }, 0.0);
        let mut left = vec![dirty, lagging, late_erasure, early_erasure];
        let mut order = Vec::new();
        // Bounded by the number of candidates.
        for _ in 0..4 {
            let Some(index) = pick(&left) else { break };
            order.push(left.remove(index));
        }
        assert_eq!(order, vec![early_erasure, late_erasure, lagging, dirty]);
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn among_equals_the_highest_dirty_ratio_wins_and_ties_keep_the_walk_order() {
        let candidates = [
            candidate(CleanDue::DirtyRatio, 0.6),
            candidate(CleanDue::DirtyRatio, 0.8),
            candidate(CleanDue::DirtyRatio, 0.8),
            candidate(CleanDue::DirtyRatio, f64::NAN),
        ];
        assert_eq!(pick(&candidates), Some(1));
        let lagging = [
            candidate(CleanDue::MaxLag, 0.2),
            candidate(CleanDue::MaxLag, 0.7),
            candidate(CleanDue::DirtyRatio, 1.0),
        ];
        assert_eq!(pick(&lagging), Some(1));
    }
}
