//! Choosing a partition: Kafka's murmur2 for keyed records (so a key lands on the same
//! partition as with Kafka's Java client) and sticky partitioning for keyless ones. The keyed
//! functions live in `tidelog_proto::partitioner`, shared with the broker (which finds a key's
//! stream partition the same way); they are re-exported here unchanged.

use rand::Rng;

pub use tidelog_proto::partitioner::{murmur2, partition_for_key, to_positive, try_partition_for_key};

/// Picks the partition for keyless records when the current sticky partition's batch was
/// sent: a random one, different from the previous when there is a choice, as Kafka's
/// `StickyPartitionCache` does.
pub(crate) fn next_sticky_partition(previous: Option<u32>, partitions: u32, rng: &mut impl Rng) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    match previous {
        // Draw from the other partitions-1 and skip over the previous one.
        Some(previous) if previous < partitions => {
            let pick = rng.random_range(0..partitions - 1);
            if pick >= previous {
                pick + 1
            } else {
                pick
            }
        }
        _ => rng.random_range(0..partitions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    proptest! {
        #[test]
        fn sticky_partition_changes_when_it_can(seed: u64, previous in 0u32..64, partitions in 1u32..64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let next = next_sticky_partition(Some(previous), partitions, &mut rng);
            prop_assert!(next < partitions);
            if partitions > 1 && previous < partitions {
                prop_assert_ne!(next, previous);
            }
        }
    }
}
