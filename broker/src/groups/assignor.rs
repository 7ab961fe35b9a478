//! The server-side assignor: a pure function from members, their subscriptions and the current
//! assignment to a balanced, sticky target assignment.
//!
//! Balanced: members with identical subscriptions end with partition counts that differ by at
//! most one; with different subscriptions a partition only ever goes to a subscriber and the
//! counts are balanced as far as the subscriptions allow. Sticky: a member keeps what it has
//! unless a move is needed for balance, because every moved partition costs a revocation
//! round trip. Deterministic: ordered maps only, ties broken by member id.

use std::collections::{BTreeMap, BTreeSet};

/// Partitions by topic. Ordered so that the assignment and everything derived from it is
/// deterministic.
pub type Assignment = BTreeMap<String, BTreeSet<u32>>;

/// Computes the target assignment.
///
/// `members` maps member id to subscribed topics; `partition_counts` gives the partitions of
/// every topic that exists (subscribed topics missing from it get nothing); `current` is the
/// previous target, whose placements are kept where balance allows.
pub fn assign(
    members: &BTreeMap<String, BTreeSet<String>>,
    partition_counts: &BTreeMap<String, u32>,
    current: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut state = State::new(members);
    // Subscribers of every topic that exists and someone subscribes to.
    let mut subscribers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (member, topics) in members {
        for topic in topics {
            if partition_counts.contains_key(topic) {
                subscribers
                    .entry(topic.as_str())
                    .or_default()
                    .push(member.as_str());
            }
        }
    }

    // 1. Keep every valid placement of the previous assignment. A partition listed for two
    //    members (impossible for a target we computed, but cheap to guard) goes to the first.
    let mut placed: BTreeSet<(&str, u32)> = BTreeSet::new();
    for (member, owned) in current {
        let Some(topics) = members.get(member) else {
            continue;
        };
        for (topic, partitions) in owned {
            let Some((topic, &count)) = partition_counts.get_key_value(topic) else {
                continue;
            };
            if !topics.contains(topic) {
                continue;
            }
            for &partition in partitions.range(..count) {
                if placed.insert((topic.as_str(), partition)) {
                    state.give(member, topic, partition, Origin::Kept);
                }
            }
        }
    }

    // 2. Place the rest on the least-loaded subscriber. Topics with the fewest subscribers go
    //    first: they have the least freedom, so the others can balance around them.
    let mut topics_by_freedom: Vec<(&str, &Vec<&str>)> = subscribers
        .iter()
        .map(|(topic, members)| (*topic, members))
        .collect();
    topics_by_freedom.sort_by_key(|(topic, members)| (members.len(), *topic));
    for (topic, topic_subscribers) in &topics_by_freedom {
        let count = partition_counts.get(*topic).copied().unwrap_or(0);
        for partition in 0..count {
            if placed.contains(&(*topic, partition)) {
                continue;
            }
            if let Some(member) = state.least_loaded(topic_subscribers) {
                state.give(member, topic, partition, Origin::New);
                placed.insert((topic, partition));
            }
        }
    }

    // 3. Balance: move single partitions from a fuller member to a subscriber with at least
    //    two fewer. Each move lowers the sum of squared counts by at least two, so this ends;
    //    the explicit bound is a backstop.
    let total: usize = state.counts.values().sum();
    let moves_max = total.saturating_mul(total).saturating_add(1);
    for _ in 0..moves_max {
        if !state.move_one(&subscribers) {
            break;
        }
    }
    state.into_assignment()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    /// Placed in this run: moving it costs nothing, so it moves first.
    New,
    /// Kept from the previous assignment.
    Kept,
}

struct State<'a> {
    /// Per member: (origin, topic, partition), ordered so that new placements come first.
    owned: BTreeMap<&'a str, BTreeSet<(Origin, &'a str, u32)>>,
    counts: BTreeMap<&'a str, usize>,
}

impl<'a> State<'a> {
    fn new(members: &'a BTreeMap<String, BTreeSet<String>>) -> Self {
        Self {
            owned: members
                .keys()
                .map(|member| (member.as_str(), BTreeSet::new()))
                .collect(),
            counts: members.keys().map(|member| (member.as_str(), 0)).collect(),
        }
    }

    fn give(&mut self, member: &'a str, topic: &'a str, partition: u32, origin: Origin) {
        if let Some(owned) = self.owned.get_mut(member) {
            if owned.insert((origin, topic, partition)) {
                *self.counts.entry(member).or_default() += 1;
            }
        }
    }

    fn take(&mut self, member: &'a str, entry: (Origin, &'a str, u32)) {
        if let Some(owned) = self.owned.get_mut(member) {
            if owned.remove(&entry) {
                if let Some(count) = self.counts.get_mut(member) {
                    *count = count.saturating_sub(1);
                }
            }
        }
    }

    fn count(&self, member: &str) -> usize {
        self.counts.get(member).copied().unwrap_or(0)
    }

    /// The candidate with the fewest partitions; ties go to the smallest member id.
    fn least_loaded(&self, candidates: &[&'a str]) -> Option<&'a str> {
        candidates
            .iter()
            .copied()
            .min_by_key(|member| (self.count(member), *member))
    }

    /// Moves one partition towards balance; false when no move helps.
    fn move_one(&mut self, subscribers: &BTreeMap<&'a str, Vec<&'a str>>) -> bool {
        // Fullest members first; ties by id, so the outcome is deterministic.
        let mut by_load: Vec<(&'a str, usize)> = self.counts.iter().map(|(m, c)| (*m, *c)).collect();
        by_load.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (giver, giver_count) in by_load {
            if giver_count < 2 {
                return false;
            }
            let Some(owned) = self.owned.get(giver) else {
                continue;
            };
            let mut best: Option<((Origin, &'a str, u32), &'a str)> = None;
            let mut receivers: BTreeMap<&str, Option<&'a str>> = BTreeMap::new();
            for &entry in owned {
                let (_, topic, _) = entry;
                let receiver = *receivers.entry(topic).or_insert_with(|| {
                    subscribers
                        .get(topic)
                        .and_then(|candidates| self.least_loaded(candidates))
                        .filter(|receiver| self.count(receiver) + 2 <= giver_count)
                });
                if let Some(receiver) = receiver {
                    // Within the giver's cheapest origin class, prefer the emptiest receiver.
                    let better = match best {
                        None => true,
                        Some(((origin, _, _), current)) => {
                            origin == entry.0 && self.count(receiver) < self.count(current)
                        }
                    };
                    if better {
                        best = Some((entry, receiver));
                    }
                }
            }
            if let Some((entry, receiver)) = best {
                self.take(giver, entry);
                let (_, topic, partition) = entry;
                self.give(receiver, topic, partition, Origin::New);
                return true;
            }
        }
        false
    }

    fn into_assignment(self) -> BTreeMap<String, Assignment> {
        self.owned
            .into_iter()
            .map(|(member, owned)| {
                let mut assignment = Assignment::new();
                for (_, topic, partition) in owned {
                    assignment.entry(topic.to_owned()).or_default().insert(partition);
                }
                (member.to_owned(), assignment)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn subscriptions(members: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        members
            .iter()
            .map(|(member, topics)| {
                (
                    (*member).to_owned(),
                    topics.iter().map(|topic| (*topic).to_owned()).collect(),
                )
            })
            .collect()
    }

    fn counts(topics: &[(&str, u32)]) -> BTreeMap<String, u32> {
        topics
            .iter()
            .map(|(topic, count)| ((*topic).to_owned(), *count))
            .collect()
    }

    fn sizes(target: &BTreeMap<String, Assignment>) -> BTreeMap<String, usize> {
        target
            .iter()
            .map(|(member, assignment)| (member.clone(), assignment.values().map(BTreeSet::len).sum()))
            .collect()
    }

    /// (topic, partition) -> owners.
    fn owners(target: &BTreeMap<String, Assignment>) -> BTreeMap<(String, u32), Vec<String>> {
        let mut owners: BTreeMap<(String, u32), Vec<String>> = BTreeMap::new();
        for (member, assignment) in target {
            for (topic, partitions) in assignment {
                for partition in partitions {
                    owners
                        .entry((topic.clone(), *partition))
                        .or_default()
                        .push(member.clone());
                }
            }
        }
        owners
    }

    #[test]
    fn three_members_on_six_partitions_get_two_each() {
        let members = subscriptions(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let target = assign(&members, &counts(&[("t", 6)]), &BTreeMap::new());
        assert!(sizes(&target).values().all(|size| *size == 2), "{target:?}");
    }

    #[test]
    fn a_new_member_takes_only_what_balance_needs() {
        let members = subscriptions(&[("a", &["t"]), ("b", &["t"])]);
        let partitions = counts(&[("t", 6)]);
        let before = assign(&members, &partitions, &BTreeMap::new());
        let members = subscriptions(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]);
        let after = assign(&members, &partitions, &before);
        assert_eq!(sizes(&after).values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        for survivor in ["a", "b"] {
            let kept = after[survivor]["t"].intersection(&before[survivor]["t"]).count();
            assert_eq!(kept, 2, "{survivor} should keep two of its three partitions");
        }
    }

    #[test]
    fn partitions_of_missing_topics_and_unsubscribed_topics_are_not_assigned() {
        let members = subscriptions(&[("a", &["t", "missing"]), ("b", &["u"])]);
        let target = assign(
            &members,
            &counts(&[("t", 2), ("u", 1), ("other", 4)]),
            &BTreeMap::new(),
        );
        assert_eq!(target["a"].keys().collect::<Vec<_>>(), vec!["t"]);
        assert_eq!(target["b"].keys().collect::<Vec<_>>(), vec!["u"]);
    }

    prop_compose! {
        /// Up to 8 members, each subscribing to a non-empty subset of up to 4 topics (or all of
        /// them when `homogeneous`), with a previous assignment from a random earlier run.
        fn scenario(homogeneous: bool)
            (topic_counts in prop::collection::vec(0u32..12, 1..5),
             member_count in 1usize..9,
             masks in prop::collection::vec(1u8..16, 8),
             previous_members in prop::collection::vec(any::<bool>(), 8))
            -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, u32>, BTreeMap<String, Assignment>)
        {
            let topics: Vec<String> = (0..topic_counts.len()).map(|index| format!("t{index}")).collect();
            let partitions: BTreeMap<String, u32> =
                topics.iter().cloned().zip(topic_counts.iter().copied()).collect();
            let members: BTreeMap<String, BTreeSet<String>> = (0..member_count)
                .map(|index| {
                    let subscribed = topics
                        .iter()
                        .enumerate()
                        .filter(|(bit, _)| homogeneous || masks[index] & (1 << bit) != 0)
                        .map(|(_, topic)| topic.clone())
                        .collect::<BTreeSet<_>>();
                    let subscribed = if subscribed.is_empty() { topics.iter().cloned().collect() } else { subscribed };
                    (format!("m{index}"), subscribed)
                })
                .collect();
            // An earlier assignment over a random subset of the members, some of them gone now.
            let earlier: BTreeMap<String, BTreeSet<String>> = members
                .iter()
                .filter(|(member, _)| {
                    let index: usize = member[1..].parse().unwrap_or(0);
                    previous_members[index]
                })
                .map(|(member, topics)| (member.clone(), topics.clone()))
                .chain(std::iter::once(("gone".to_owned(), topics.iter().cloned().collect())))
                .collect();
            let previous = assign(&earlier, &partitions, &BTreeMap::new());
            (members, partitions, previous)
        }
    }

    fn check_complete_and_exclusive(
        members: &BTreeMap<String, BTreeSet<String>>,
        partitions: &BTreeMap<String, u32>,
        target: &BTreeMap<String, Assignment>,
    ) {
        let owners = owners(target);
        for (topic, count) in partitions {
            let subscribed = members.values().any(|topics| topics.contains(topic));
            for partition in 0..*count {
                let found = owners.get(&(topic.clone(), partition)).map_or(0, Vec::len);
                assert_eq!(
                    found,
                    usize::from(subscribed),
                    "{topic}-{partition} owners: {owners:?}"
                );
            }
        }
        for ((topic, partition), members_owning) in &owners {
            assert!(*partition < partitions[topic]);
            for member in members_owning {
                assert!(
                    members[member].contains(topic),
                    "{member} got {topic} unsubscribed"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn every_subscribed_partition_goes_to_exactly_one_subscriber(
            (members, partitions, previous) in scenario(false)
        ) {
            let target = assign(&members, &partitions, &previous);
            check_complete_and_exclusive(&members, &partitions, &target);
            prop_assert_eq!(target.keys().collect::<Vec<_>>(), members.keys().collect::<Vec<_>>());
        }

        #[test]
        fn identical_subscriptions_differ_by_at_most_one_partition(
            (members, partitions, previous) in scenario(true)
        ) {
            let target = assign(&members, &partitions, &previous);
            check_complete_and_exclusive(&members, &partitions, &target);
            let sizes = sizes(&target);
            let max = sizes.values().max().copied().unwrap_or(0);
            let min = sizes.values().min().copied().unwrap_or(0);
            prop_assert!(max - min <= 1, "sizes {:?}", sizes);
        }

        #[test]
        fn assignment_is_deterministic(
            (members, partitions, previous) in scenario(false)
        ) {
            prop_assert_eq!(
                assign(&members, &partitions, &previous),
                assign(&members, &partitions, &previous)
            );
        }

        #[test]
        fn an_assignment_that_is_already_balanced_is_kept(
            (members, partitions, _previous) in scenario(false)
        ) {
            let first = assign(&members, &partitions, &BTreeMap::new());
            prop_assert_eq!(assign(&members, &partitions, &first), first);
        }

        /// Adding or removing one member moves only what balance requires: a surviving member
        /// gives up partitions only down to its new fair share, and never gains while losing.
        #[test]
        fn membership_change_moves_the_minimum_for_homogeneous_subscriptions(
            (members, partitions, _previous) in scenario(true),
            add in any::<bool>(),
        ) {
            let before = assign(&members, &partitions, &BTreeMap::new());
            let mut changed = members.clone();
            if add {
                let topics = members.values().next().cloned().unwrap_or_default();
                changed.insert("zz-new".to_owned(), topics);
            } else if members.len() > 1 {
                let last = members.keys().last().cloned().unwrap_or_default();
                changed.remove(&last);
            }
            let after = assign(&changed, &partitions, &before);
            let total: usize = sizes(&after).values().sum();
            let ceil = total.div_ceil(changed.len().max(1));
            let floor = total / changed.len().max(1);
            for (member, assignment) in &after {
                let Some(old) = before.get(member) else { continue };
                let old_size: usize = old.values().map(BTreeSet::len).sum();
                let kept: usize = assignment
                    .iter()
                    .map(|(topic, parts)| old.get(topic).map_or(0, |o| o.intersection(parts).count()))
                    .sum();
                let new_size: usize = assignment.values().map(BTreeSet::len).sum();
                // A survivor keeps everything it had up to its new share...
                prop_assert!(kept >= old_size.min(floor), "{} kept {} of {}", member, kept, old_size);
                // ...and if it lost anything it gained nothing.
                if kept < old_size {
                    prop_assert_eq!(kept, new_size);
                }
                prop_assert!(new_size <= ceil);
            }
        }
    }
}
