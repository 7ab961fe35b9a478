//! The key table of one segment in memory: hash -> the distinct keys with that hash (their
//! bytes, so every answer is exact without I/O) -> their records (relative offset and batch
//! position), newest first through a chain. The active segment's table takes every keyed
//! append under the writer lock; at a roll it is frozen and kept until the segment's `.keys`
//! file is written. Storage is chunked so memory grows in small steps and never reallocates
//! (and so never briefly doubles); [`ActiveTable::bytes`] counts what is allocated.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::KeyHash;

/// Marks "none" in chains.
const NONE: u32 = u32::MAX;
const RECORD_CHUNK: usize = 2048;
const KEY_CHUNK: usize = 1024;
const ARENA_CHUNK_BYTES: usize = 16 << 10;
/// Bytes per hash map item: the (u64, u32) pair padded to 16, a control byte, and the 1/8 of
/// buckets hashbrown keeps free.
const MAP_ITEM_BYTES: usize = 20;

#[derive(Debug, Clone, Copy)]
struct RecordSlot {
    relative_offset: u32,
    position: u32,
    /// Where the record starts in its batch's records section (see `Place`).
    record_start: u32,
    /// The previous record of the same key, or NONE.
    previous: u32,
}

#[derive(Debug, Clone, Copy)]
struct KeySlot {
    hash: u64,
    chunk: u32,
    start: u32,
    len: u32,
    /// The next key with the same hash, or NONE.
    next: u32,
    last: u32,
    count: u32,
}

/// A vector stored in fixed chunks: pushes never move what is stored.
#[derive(Debug)]
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    chunk: usize,
    len: usize,
}

impl<T: Copy> Chunked<T> {
    fn new(chunk: usize) -> Self {
        Self {
            chunks: Vec::new(),
            chunk,
            len: 0,
        }
    }

    fn push(&mut self, value: T) -> u32 {
        if self.len.is_multiple_of(self.chunk) {
            self.chunks.push(Vec::with_capacity(self.chunk));
        }
        let index = self.len;
        // A chunk was pushed above whenever the last one is full.
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(value);
        }
        self.len += 1;
        u32::try_from(index).unwrap_or(NONE)
    }

    fn get(&self, index: u32) -> T {
        let index = index as usize;
        self.chunks[index / self.chunk][index % self.chunk]
    }

    fn get_mut(&mut self, index: u32) -> &mut T {
        let index = index as usize;
        &mut self.chunks[index / self.chunk][index % self.chunk]
    }

    fn bytes(&self) -> usize {
        self.chunks.len() * self.chunk * std::mem::size_of::<T>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<T>>()
    }

    /// Bytes after `more` pushes.
    fn bytes_after(&self, more: usize) -> usize {
        let chunks = (self.len + more).div_ceil(self.chunk);
        chunks.max(self.chunks.len())
            * (self.chunk * std::mem::size_of::<T>() + 2 * std::mem::size_of::<Vec<T>>())
    }
}

/// Hashes are already hashes: the map uses them as they are.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Where one record lies in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    /// Its offset minus the segment's base offset.
    pub relative_offset: u32,
    /// Where its batch starts in the data file.
    pub batch_position: u32,
    /// Where the record starts in its batch's records section: from the batch's first byte
    /// for an uncompressed batch (so a read can fetch just the record), in the decompressed
    /// records for a compressed one.
    pub record_start: u32,
}

/// One key of a table as a `.keys` file stores it: hash, key bytes, and its records oldest
/// first.
pub(crate) type SortedEntry<'a> = (u64, &'a [u8], Vec<Place>);

/// One segment's keys in memory.
#[derive(Debug)]
pub(crate) struct ActiveTable {
    hash: KeyHash,
    map: HashMap<u64, u32, BuildHasherDefault<Passthrough>>,
    keys: Chunked<KeySlot>,
    arena: Vec<Vec<u8>>,
    records: Chunked<RecordSlot>,
}

impl ActiveTable {
    pub fn new(hash: KeyHash) -> Self {
        Self {
            hash,
            map: HashMap::default(),
            keys: Chunked::new(KEY_CHUNK),
            arena: Vec::new(),
            records: Chunked::new(RECORD_CHUNK),
        }
    }

    pub fn hash_of(&self, key: &[u8]) -> u64 {
        (self.hash.function)(key)
    }

    pub fn distinct_keys(&self) -> usize {
        self.keys.len
    }

    pub fn records(&self) -> usize {
        self.records.len
    }

    /// Bytes allocated for the table now.
    pub fn bytes(&self) -> usize {
        self.map.capacity() * MAP_ITEM_BYTES
            + self.keys.bytes()
            + self.records.bytes()
            + self.arena.iter().map(Vec::capacity).sum::<usize>()
            + self.arena.capacity() * std::mem::size_of::<Vec<u8>>()
    }

    /// An upper bound of [`bytes`](Self::bytes) after `records` more records carrying
    /// `key_bytes` bytes of keys, as if every one were a new key.
    pub fn bytes_after(&self, records: usize, key_bytes: usize) -> usize {
        let items = self.map.len() + records;
        let map = if items > self.map.capacity() {
            // hashbrown doubles its buckets when it grows.
            (self.map.capacity() * 2).max(items)
        } else {
            self.map.capacity()
        };
        let arena: usize = self.arena.iter().map(Vec::capacity).sum();
        map * MAP_ITEM_BYTES
            + self.keys.bytes_after(records)
            + self.records.bytes_after(records)
            + arena
            + key_bytes
            + ARENA_CHUNK_BYTES
            + (self.arena.capacity() + 1) * std::mem::size_of::<Vec<u8>>() * 2
    }

    fn key_bytes(&self, slot: &KeySlot) -> &[u8] {
        let chunk = &self.arena[slot.chunk as usize];
        &chunk[slot.start as usize..(slot.start + slot.len) as usize]
    }

    fn find(&self, key: &[u8], hash: u64) -> Option<u32> {
        let mut id = *self.map.get(&hash)?;
        // Bounded: each key is in exactly one chain, and chains do not loop.
        while id != NONE {
            let slot = self.keys.get(id);
            if self.key_bytes(&slot) == key {
                return Some(id);
            }
            id = slot.next;
        }
        None
    }

    fn store_key(&mut self, key: &[u8]) -> (u32, u32) {
        let fits = self
            .arena
            .last()
            .is_some_and(|chunk| chunk.capacity() - chunk.len() >= key.len());
        if !fits {
            self.arena
                .push(Vec::with_capacity(ARENA_CHUNK_BYTES.max(key.len())));
        }
        let chunk_index = self.arena.len() - 1;
        let chunk = &mut self.arena[chunk_index];
        let start = chunk.len();
        chunk.extend_from_slice(key);
        (
            u32::try_from(chunk_index).unwrap_or(NONE),
            u32::try_from(start).unwrap_or(NONE),
        )
    }

    /// Adds a record of `key` (offsets must grow from call to call).
    pub fn insert(&mut self, key: &[u8], place: Place) {
        let hash = self.hash_of(key);
        self.insert_hashed(key, hash, place);
    }

    pub fn insert_hashed(&mut self, key: &[u8], hash: u64, place: Place) {
        let Place {
            relative_offset,
            batch_position: position,
            record_start,
        } = place;
        match self.find(key, hash) {
            Some(id) => {
                let previous = self.keys.get(id).last;
                let record = self.records.push(RecordSlot {
                    relative_offset,
                    position,
                    record_start,
                    previous,
                });
                let slot = self.keys.get_mut(id);
                slot.last = record;
                slot.count += 1;
            }
            None => {
                let record = self.records.push(RecordSlot {
                    relative_offset,
                    position,
                    record_start,
                    previous: NONE,
                });
                let (chunk, start) = self.store_key(key);
                let next = self.map.get(&hash).copied().unwrap_or(NONE);
                let id = self.keys.push(KeySlot {
                    hash,
                    chunk,
                    start,
                    len: u32::try_from(key.len()).unwrap_or(NONE),
                    next,
                    last: record,
                    count: 1,
                });
                self.map.insert(hash, id);
            }
        }
    }

    /// The records of `key`, newest first.
    pub fn newest_first(&self, key: &[u8]) -> impl Iterator<Item = Place> + '_ {
        let hash = self.hash_of(key);
        let mut record = self.find(key, hash).map_or(NONE, |id| self.keys.get(id).last);
        std::iter::from_fn(move || {
            if record == NONE {
                return None;
            }
            let slot = self.records.get(record);
            record = slot.previous;
            Some(Place {
                relative_offset: slot.relative_offset,
                batch_position: slot.position,
                record_start: slot.record_start,
            })
        })
    }

    /// Every key with its records oldest first, sorted by hash then key bytes: what a `.keys`
    /// file holds.
    pub fn sorted_entries(&self) -> Vec<SortedEntry<'_>> {
        let mut order: Vec<u32> = (0..u32::try_from(self.keys.len).unwrap_or(NONE)).collect();
        order.sort_by(|a, b| {
            let (a, b) = (self.keys.get(*a), self.keys.get(*b));
            a.hash
                .cmp(&b.hash)
                .then_with(|| self.key_bytes(&a).cmp(self.key_bytes(&b)))
        });
        order
            .into_iter()
            .map(|id| {
                let slot = self.keys.get(id);
                let mut records = Vec::with_capacity(slot.count as usize);
                let mut record = slot.last;
                while record != NONE {
                    let entry = self.records.get(record);
                    records.push(Place {
                        relative_offset: entry.relative_offset,
                        batch_position: entry.position,
                        record_start: entry.record_start,
                    });
                    record = entry.previous;
                }
                records.reverse();
                (slot.hash, self.key_bytes(&slot), records)
            })
            .collect()
    }
}
