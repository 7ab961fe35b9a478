//! A bloom filter over 64-bit key hashes: a closed segment's `.keys` summary, so a lookup of a
//! key the segment does not hold usually reads nothing. The bit count is a power of two (bit
//! `i` of probe `j` is `(h1 + j * h2) mod bits`, with `h1`/`h2` the low and high halves of the
//! key hash), which also lets a filter be folded to half its size.

/// Bits per distinct key: with 7 probes, about 1% false positives.
pub(crate) const BITS_PER_KEY: usize = 10;
pub(crate) const PROBES: u32 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bloom {
    words: Vec<u64>,
    probes: u32,
}

impl Bloom {
    /// An empty filter sized for `keys` distinct keys.
    pub fn with_keys(keys: usize) -> Self {
        let bits = keys.saturating_mul(BITS_PER_KEY).max(64).next_power_of_two();
        Self {
            words: vec![0; bits / 64],
            probes: PROBES,
        }
    }

    /// A filter as stored; `None` if the word count is not a power of two or no probes.
    pub fn from_parts(words: Vec<u64>, probes: u32) -> Option<Self> {
        (words.len().is_power_of_two() && (1..=32).contains(&probes)).then_some(Self { words, probes })
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }

    pub fn probes(&self) -> u32 {
        self.probes
    }

    fn bit_indexes(&self, hash: u64) -> impl Iterator<Item = usize> {
        let mask = (self.words.len() as u64 * 64) - 1;
        let first = hash & 0xffff_ffff;
        let step = (hash >> 32) | 1;
        (0..u64::from(self.probes))
            .map(move |probe| (first.wrapping_add(probe.wrapping_mul(step)) & mask) as usize)
    }

    pub fn insert(&mut self, hash: u64) {
        let indexes: Vec<usize> = self.bit_indexes(hash).collect();
        for index in indexes {
            self.words[index / 64] |= 1 << (index % 64);
        }
    }

    pub fn may_contain(&self, hash: u64) -> bool {
        self.bit_indexes(hash)
            .all(|index| self.words[index / 64] & (1 << (index % 64)) != 0)
    }

    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_hashes_are_always_found_and_absent_ones_rarely() {
        let mut bloom = Bloom::with_keys(10_000);
        for value in 0..10_000u64 {
            bloom.insert(super::super::fnv1a_fmix64(&value.to_be_bytes()));
        }
        for value in 0..10_000u64 {
            assert!(bloom.may_contain(super::super::fnv1a_fmix64(&value.to_be_bytes())));
        }
        let false_positives = (10_000..110_000u64)
            .filter(|value| bloom.may_contain(super::super::fnv1a_fmix64(&value.to_be_bytes())))
            .count();
        assert!(
            false_positives < 2_000,
            "{false_positives} false positives in 100000"
        );
    }
}
