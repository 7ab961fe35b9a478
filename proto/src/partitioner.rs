//! Kafka's default partitioner for keyed records: murmur2 over the key bytes, so a key lands on
//! the partition Kafka's Java client and librdkafka pick. Shared by the client (which routes
//! records) and the broker (which finds a key's stream partition). Pure functions, no I/O.

/// Kafka's `Utils.murmur2`: MurmurHash2, seed `0x9747b28c`, little-endian 4-byte blocks.
/// Computed in wrapping `i32` arithmetic, with logical shifts done on the `u32` view, exactly
/// as Java's `>>>` does.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java takes `length` as an int; keys longer than i32::MAX cannot exist there either,
    // and the truncation only affects the seed mix.
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    // Java's switch falls through from case 3 to 1.
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(n: i32) -> u32 {
    (n & 0x7fff_ffff) as u32
}

/// The partition Kafka's default partitioner picks for a keyed record:
/// `toPositive(murmur2(key)) % partitions`.
///
/// # Panics
/// When `partitions` is 0; a topic always has at least one partition, and callers check.
/// [`try_partition_for_key`] is the non-panicking form.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    to_positive(murmur2(key)) % partitions
}

/// [`partition_for_key`], or `None` when `partitions` is 0 (for code that must not panic on
/// a malformed topic description).
pub fn try_partition_for_key(key: &[u8], partitions: u32) -> Option<u32> {
    to_positive(murmur2(key)).checked_rem(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// From Kafka's own `UtilsTest.testMurmur2` (clients/src/test/java/.../utils/UtilsTest.java).
    #[test]
    fn murmur2_matches_kafka_utils_test_vectors() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107), // Kafka writes this one as new byte[]{'a', 'b', 'c'}
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), *expected, "key {:?}", String::from_utf8_lossy(key));
        }
    }

    /// librdkafka's `rdmurmur2.c` unit test vectors for its Java-compatible murmur2; they cover
    /// every tail length (0..=3) and the empty key.
    #[test]
    fn murmur2_matches_librdkafka_vectors() {
        let cases: &[(&str, u32)] = &[
            ("kafka", 0xd067_cf64),
            ("giberish123456789", 0x8f55_2b0c),
            ("1234", 0x9fc9_7b14),
            ("234", 0xe7c0_09ca),
            ("34", 0x8739_30da),
            ("4", 0x5a4b_5ca1),
            ("PreAmbleWillBeRemoved,ThePrePartThatIs", 0x7842_4f1c),
            ("reAmbleWillBeRemoved,ThePrePartThatIs", 0x4a62_b377),
            ("eAmbleWillBeRemoved,ThePrePartThatIs", 0xe0e4_e09e),
            ("AmbleWillBeRemoved,ThePrePartThatIs", 0x62b8_b43f),
            ("", 0x106e_08d9),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()) as u32, *expected, "key {key:?}");
        }
    }

    #[test]
    fn to_positive_clears_only_the_sign_bit() {
        assert_eq!(to_positive(-1), 0x7fff_ffff);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(5), 5);
        // "foobar" hashes negative: Kafka sends it to toPositive(-790332482) % n.
        assert_eq!(
            partition_for_key(b"foobar", 1_000_000_007),
            (-790_332_482i32 & 0x7fff_ffff) as u32 % 1_000_000_007
        );
    }

    proptest! {
        #[test]
        fn keyed_partition_is_stable_and_in_range(key: Vec<u8>, partitions in 1u32..1000) {
            let first = partition_for_key(&key, partitions);
            prop_assert!(first < partitions);
            prop_assert_eq!(first, partition_for_key(&key, partitions));
            prop_assert_eq!(Some(first), try_partition_for_key(&key, partitions));
        }
    }

    #[test]
    fn no_partitions_is_none_not_a_panic() {
        assert_eq!(try_partition_for_key(b"k", 0), None);
    }
}
