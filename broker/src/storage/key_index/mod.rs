//! The per-key index (issue 8 §3): for every keyed record, which segment and offset holds it, so
//! reading one key's stream or finding its last record costs in proportion to that key's
//! records plus a bounded number of lookups per segment, never a scan of the partition.
//!
//! Pieces: `extract` walks a batch's records for their keys; `table` is the in-memory table of
//! the active segment (exact: it keeps key bytes), bounded by `key_index_active_bytes_max`;
//! `file` is the `N.keys` file written for a sealed segment (checksummed blocks sorted by hash,
//! a resident bloom filter and block summary); `slot` is a segment's index state and its
//! lookups; `worker` writes and rebuilds `.keys` files off the append path. The index is
//! derived data: the log is the truth, every `.keys` file is checked against its segment
//! before it is used, and one that is missing, damaged or from another version is rebuilt.

mod bloom;
mod extract;
mod file;
mod slot;
mod table;
mod worker;

use bytes::Bytes;

pub(crate) use extract::{for_each_key, keyed_records};
// The keys of an append, record by record: the condition check (`conditions.rs`) reads them.
#[allow(unused_imports)]
pub(crate) use extract::{KeyRef, KeyedRecords};
pub use file::KEYS_FORMAT_VERSION;
pub(crate) use file::{
    encode, keys_path, rename_into_place, table_from_bytes, verify_bytes, write_aside, Expect, KeysFile,
};
pub(crate) use slot::{decode_stream_records, locate, Located, SegmentKeys};
pub(crate) use table::{ActiveTable, Place};
pub(crate) use worker::{enqueue, enqueue_write, rebuild_table, run_now, scrub, IndexContext};

use super::error::StorageError;

/// Default bound of the active segment's key table, in bytes: about 200,000 distinct keys of
/// 16 bytes. With the closed segments' resident summaries (about 1.3 bytes per key), 10 M
/// distinct keys in one partition stay well under 64 MiB.
pub const KEY_INDEX_ACTIVE_BYTES_MAX_DEFAULT: usize = 16 << 20;

/// The 64-bit key hash the index stores. Persisted in `.keys` files under `id`, so the
/// function of a given id must never change; files written under another id are rebuilt.
#[derive(Clone, Copy)]
pub struct KeyHash {
    pub id: u16,
    pub function: fn(&[u8]) -> u64,
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({})", self.id)
    }
}

impl PartialEq for KeyHash {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for KeyHash {}

impl KeyHash {
    /// Id 1: FNV-1a 64 over the key bytes, then MurmurHash3's 64-bit finalizer (fmix64) so
    /// every output bit depends on every input bit (the bloom filter and block search use the
    /// high and low bits alike).
    pub const DEFAULT: KeyHash = KeyHash {
        id: 1,
        function: fnv1a_fmix64,
    };
}

impl Default for KeyHash {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The default key hash (id 1), documented in docs/storage-format.md.
pub fn fnv1a_fmix64(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// Which way a stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// One record of a stream, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Bytes,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// One page of a stream read.
#[derive(Debug, Clone, Default)]
pub struct StreamRead {
    /// In the direction asked, all of the key, offsets >= log start and < high watermark.
    pub records: Vec<StreamRecord>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// Forward: the offset to ask for next (one past the last record returned, or, when the
    /// stream has nothing more below the high watermark, the high watermark itself).
    /// Backward: the offset to pass as `from` next (last returned - 1), or -1 at the start.
    pub next_offset: i64,
    /// Forward: true when no record of the key lies in [next_offset, high_watermark).
    pub end_of_stream: bool,
}

/// What a partition retains of one stream; `-1, -1, 0` when nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    pub records: u64,
}

impl StreamInfo {
    pub const NONE: StreamInfo = StreamInfo {
        first_offset: -1,
        last_offset: -1,
        records: 0,
    };
}

/// What the condition check uses, under the writer lock: sees every earlier append, also
/// unsynced ones. [`super::PartitionLog`] implements it over the writer's view (`log/streams.rs`).
// Implemented by `log/streams.rs::WriterLookup`; the condition check (`conditions.rs`) uses it.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) trait StreamLookup {
    /// The key's last record at or after log start, or None.
    fn last_offset(&mut self, key: &[u8]) -> Result<Option<i64>, StorageError>;
    /// The key's records with offset > `after` (oldest first), at most `limit` of them
    /// (`after` = -1: from the first retained).
    fn records_after(
        &mut self,
        key: &[u8],
        after: i64,
        limit: usize,
    ) -> Result<Vec<StreamRecord>, StorageError>;
}

#[cfg(test)]
pub(crate) mod tests;
