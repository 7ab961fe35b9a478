//! The `N.keys` file of a sealed segment (layout in docs/storage-format.md, "Per-key index"):
//! a header bound to the segment it describes, blocks of entries sorted by key hash (each
//! block checksummed), and a checksummed summary (each block's first hash and end, a bloom
//! filter over the hashes) that stays resident. A lookup costs a bloom probe and, if it
//! passes, one read of the blocks that can hold the hash (one, unless a hash spans blocks).
//! Entries keep the key bytes, so a lookup is exact without reading the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::disk::{read_exact_at, Disk, SegmentFile};
use super::super::error::StorageError;
use super::super::format::{i64_at, u16_at, u32_at, u64_at, TEMP_SUFFIX};
use super::bloom::Bloom;
use super::table::{ActiveTable, Place};
use super::KeyHash;

/// Version of the `.keys` layout this build writes and reads; a file of another version is
/// rebuilt (it is derived data), never refused.
pub const KEYS_FORMAT_VERSION: u16 = 1;
pub(crate) const KEYS_MAGIC: &[u8; 8] = b"TDLGKEY1";

pub(crate) const KEYS_MAGIC_OFFSET: usize = 0;
pub(crate) const KEYS_VERSION_OFFSET: usize = KEYS_MAGIC_OFFSET + 8;
pub(crate) const KEYS_HASH_ID_OFFSET: usize = KEYS_VERSION_OFFSET + 2;
pub(crate) const KEYS_RESERVED_OFFSET: usize = KEYS_HASH_ID_OFFSET + 2;
pub(crate) const KEYS_BASE_OFFSET_OFFSET: usize = KEYS_RESERVED_OFFSET + 4;
pub(crate) const KEYS_NEXT_OFFSET_OFFSET: usize = KEYS_BASE_OFFSET_OFFSET + 8;
pub(crate) const KEYS_LOG_BYTES_OFFSET: usize = KEYS_NEXT_OFFSET_OFFSET + 8;
pub(crate) const KEYS_SUMMARY_POSITION_OFFSET: usize = KEYS_LOG_BYTES_OFFSET + 8;
pub(crate) const KEYS_SUMMARY_BYTES_OFFSET: usize = KEYS_SUMMARY_POSITION_OFFSET + 8;
pub(crate) const KEYS_SUMMARY_CRC_OFFSET: usize = KEYS_SUMMARY_BYTES_OFFSET + 4;
pub(crate) const KEYS_RESERVED2_OFFSET: usize = KEYS_SUMMARY_CRC_OFFSET + 4;
pub(crate) const KEYS_HEADER_CRC_OFFSET: usize = KEYS_RESERVED2_OFFSET + 4;
pub(crate) const KEYS_HEADER_BYTES: usize = KEYS_HEADER_CRC_OFFSET + 4;

// Summary: counts, then the block table, then the bloom filter words.
const SUMMARY_KEYS_OFFSET: usize = 0;
const SUMMARY_RECORDS_OFFSET: usize = SUMMARY_KEYS_OFFSET + 8;
const SUMMARY_BLOCKS_OFFSET: usize = SUMMARY_RECORDS_OFFSET + 8;
const SUMMARY_BLOOM_WORDS_OFFSET: usize = SUMMARY_BLOCKS_OFFSET + 4;
const SUMMARY_BLOOM_PROBES_OFFSET: usize = SUMMARY_BLOOM_WORDS_OFFSET + 4;
const SUMMARY_FIXED_BYTES: usize = SUMMARY_BLOOM_PROBES_OFFSET + 4;
const BLOCK_ENTRY_BYTES: usize = 16;

/// A block is closed once it holds this many bytes of entries (an entry is never split: one
/// larger than this makes a block of its own).
pub(crate) const BLOCK_TARGET_BYTES: usize = 4096;
/// Largest summary a file may claim: far above what any segment produces (a 2 GiB segment of
/// one-byte-key records), so a damaged length field cannot make an open allocate without end.
const SUMMARY_BYTES_MAX: u64 = 256 << 20;

/// What the file must describe to be used: the segment as recovery left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expect {
    pub base_offset: i64,
    pub next_offset: i64,
    pub log_bytes: u64,
    pub hash: KeyHash,
}

/// An open `.keys` file: its resident summary, and the file for block reads.
#[derive(Debug)]
pub(crate) struct KeysFile {
    path: PathBuf,
    file: Arc<dyn SegmentFile>,
    hash: KeyHash,
    first_hashes: Vec<u64>,
    /// End position of each block (its start is the previous end, or the header's end).
    block_ends: Vec<u64>,
    bloom: Bloom,
    file_bytes: u64,
    expect: Expect,
}

/// Encodes `table` as the `.keys` file of the segment it indexes.
pub(crate) fn encode(table: &ActiveTable, expect: Expect) -> Vec<u8> {
    let entries = table.sorted_entries();
    let mut out = vec![0u8; KEYS_HEADER_BYTES];
    let mut first_hashes = Vec::new();
    let mut block_ends = Vec::new();
    let mut bloom = Bloom::with_keys(entries.len());
    let mut block_start = out.len();
    let mut records = 0u64;
    for (hash, key, located) in &entries {
        if out.len() == block_start {
            first_hashes.push(*hash);
        }
        bloom.insert(*hash);
        out.extend_from_slice(&hash.to_be_bytes());
        put_unsigned(&mut out, key.len() as u64);
        out.extend_from_slice(key);
        put_unsigned(&mut out, located.len() as u64);
        let (mut previous_offset, mut previous_position) = (0u32, 0u32);
        for place in located {
            put_unsigned(&mut out, u64::from(place.relative_offset - previous_offset));
            put_unsigned(&mut out, u64::from(place.batch_position - previous_position));
            put_unsigned(&mut out, u64::from(place.record_start));
            (previous_offset, previous_position) = (place.relative_offset, place.batch_position);
        }
        records += located.len() as u64;
        if out.len() - block_start >= BLOCK_TARGET_BYTES {
            close_block(&mut out, block_start, &mut block_ends);
            block_start = out.len();
        }
    }
    if out.len() > block_start {
        close_block(&mut out, block_start, &mut block_ends);
    }
    let summary_position = out.len() as u64;
    let mut summary =
        Vec::with_capacity(SUMMARY_FIXED_BYTES + first_hashes.len() * BLOCK_ENTRY_BYTES + bloom.bytes());
    summary.extend_from_slice(&(entries.len() as u64).to_be_bytes());
    summary.extend_from_slice(&records.to_be_bytes());
    summary.extend_from_slice(
        &u32::try_from(first_hashes.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    summary.extend_from_slice(
        &u32::try_from(bloom.words().len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    summary.extend_from_slice(&bloom.probes().to_be_bytes());
    for (first, end) in first_hashes.iter().zip(&block_ends) {
        summary.extend_from_slice(&first.to_be_bytes());
        summary.extend_from_slice(&end.to_be_bytes());
    }
    for word in bloom.words() {
        summary.extend_from_slice(&word.to_be_bytes());
    }
    let summary_crc = crc32fast::hash(&summary);
    out.extend_from_slice(&summary);
    let header = &mut out[..KEYS_HEADER_BYTES];
    header[KEYS_MAGIC_OFFSET..KEYS_VERSION_OFFSET].copy_from_slice(KEYS_MAGIC);
    header[KEYS_VERSION_OFFSET..KEYS_HASH_ID_OFFSET].copy_from_slice(&KEYS_FORMAT_VERSION.to_be_bytes());
    header[KEYS_HASH_ID_OFFSET..KEYS_RESERVED_OFFSET].copy_from_slice(&expect.hash.id.to_be_bytes());
    header[KEYS_BASE_OFFSET_OFFSET..KEYS_NEXT_OFFSET_OFFSET]
        .copy_from_slice(&expect.base_offset.to_be_bytes());
    header[KEYS_NEXT_OFFSET_OFFSET..KEYS_LOG_BYTES_OFFSET].copy_from_slice(&expect.next_offset.to_be_bytes());
    header[KEYS_LOG_BYTES_OFFSET..KEYS_SUMMARY_POSITION_OFFSET]
        .copy_from_slice(&expect.log_bytes.to_be_bytes());
    header[KEYS_SUMMARY_POSITION_OFFSET..KEYS_SUMMARY_BYTES_OFFSET]
        .copy_from_slice(&summary_position.to_be_bytes());
    header[KEYS_SUMMARY_BYTES_OFFSET..KEYS_SUMMARY_CRC_OFFSET]
        .copy_from_slice(&u32::try_from(summary.len()).unwrap_or(u32::MAX).to_be_bytes());
    header[KEYS_SUMMARY_CRC_OFFSET..KEYS_RESERVED2_OFFSET].copy_from_slice(&summary_crc.to_be_bytes());
    let header_crc = crc32fast::hash(&header[..KEYS_HEADER_CRC_OFFSET]);
    header[KEYS_HEADER_CRC_OFFSET..].copy_from_slice(&header_crc.to_be_bytes());
    out
}

fn close_block(out: &mut Vec<u8>, block_start: usize, block_ends: &mut Vec<u64>) {
    let crc = crc32fast::hash(&out[block_start..]);
    out.extend_from_slice(&crc.to_be_bytes());
    block_ends.push(out.len() as u64);
}

fn put_unsigned(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn get_unsigned(bytes: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut value: u64 = 0;
    for index in 0..10 {
        let byte = *bytes.get(*at).ok_or("entry runs past its block")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("bad varint".to_string())
}

/// The path of a segment's `.keys` file.
pub(crate) fn keys_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(super::super::format::segment_file_name(
        base_offset,
        super::super::format::FileKind::KeyIndex,
    ))
}

/// Writes `bytes` to `<path>.tmp` and fdatasyncs it. The caller renames it into place
/// ([`rename_into_place`]) once it knows the segment still exists.
pub(crate) fn write_aside(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> Result<PathBuf, StorageError> {
    let temp = temp_path(path);
    let file = disk
        .open(&temp, true)
        .map_err(StorageError::io("creating", &temp))?;
    file.set_len(0).map_err(StorageError::io("truncating", &temp))?;
    file.write_all_at(bytes, 0)
        .map_err(StorageError::io("writing", &temp))?;
    file.sync_data().map_err(StorageError::io("syncing", &temp))?;
    Ok(temp)
}

pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

/// Renames a file written aside into place and syncs the directory.
pub(crate) fn rename_into_place(disk: &dyn Disk, temp: &Path, path: &Path) -> Result<(), StorageError> {
    disk.rename(temp, path)
        .map_err(StorageError::io("renaming", temp))?;
    if let Some(dir) = path.parent() {
        disk.sync_dir(dir)
            .map_err(StorageError::io("syncing directory", dir))?;
    }
    Ok(())
}

/// Checks a header against what the file must describe; returns the summary's position,
/// length and CRC.
fn check_header(header: &[u8], expect: &Expect) -> Result<(u64, u64, u32), String> {
    if header.len() < KEYS_HEADER_BYTES {
        return Err(format!("{} bytes, shorter than the header", header.len()));
    }
    if &header[KEYS_MAGIC_OFFSET..KEYS_VERSION_OFFSET] != KEYS_MAGIC {
        return Err("bad magic".to_string());
    }
    let stored = u32_at(header, KEYS_HEADER_CRC_OFFSET);
    if stored != crc32fast::hash(&header[..KEYS_HEADER_CRC_OFFSET]) {
        return Err("header CRC mismatch".to_string());
    }
    let version = u16_at(header, KEYS_VERSION_OFFSET);
    if version != KEYS_FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build reads {KEYS_FORMAT_VERSION}"
        ));
    }
    let hash_id = u16_at(header, KEYS_HASH_ID_OFFSET);
    if hash_id != expect.hash.id {
        return Err(format!(
            "written with key hash {hash_id}, the log uses {}",
            expect.hash.id
        ));
    }
    let described = (
        i64_at(header, KEYS_BASE_OFFSET_OFFSET),
        i64_at(header, KEYS_NEXT_OFFSET_OFFSET),
        u64_at(header, KEYS_LOG_BYTES_OFFSET),
    );
    if described != (expect.base_offset, expect.next_offset, expect.log_bytes) {
        return Err(format!(
            "describes offsets {}..{} in {} bytes; the segment holds {}..{} in {} bytes",
            described.0, described.1, described.2, expect.base_offset, expect.next_offset, expect.log_bytes
        ));
    }
    Ok((
        u64_at(header, KEYS_SUMMARY_POSITION_OFFSET),
        u64::from(u32_at(header, KEYS_SUMMARY_BYTES_OFFSET)),
        u32_at(header, KEYS_SUMMARY_CRC_OFFSET),
    ))
}

/// The parts of a decoded summary.
struct Summary {
    distinct_keys: u64,
    records: u64,
    first_hashes: Vec<u64>,
    block_ends: Vec<u64>,
    bloom: Bloom,
}

fn decode_summary(summary: &[u8], summary_position: u64) -> Result<Summary, String> {
    if summary.len() < SUMMARY_FIXED_BYTES {
        return Err("summary shorter than its fixed part".to_string());
    }
    let blocks = u32_at(summary, SUMMARY_BLOCKS_OFFSET) as usize;
    let words = u32_at(summary, SUMMARY_BLOOM_WORDS_OFFSET) as usize;
    let probes = u32_at(summary, SUMMARY_BLOOM_PROBES_OFFSET);
    let expected = blocks
        .checked_mul(BLOCK_ENTRY_BYTES)
        .and_then(|table| words.checked_mul(8).and_then(|bloom| table.checked_add(bloom)))
        .and_then(|rest| rest.checked_add(SUMMARY_FIXED_BYTES));
    if expected != Some(summary.len()) {
        return Err("summary length does not match its counts".to_string());
    }
    let mut first_hashes = Vec::with_capacity(blocks);
    let mut block_ends = Vec::with_capacity(blocks);
    let mut previous_end = KEYS_HEADER_BYTES as u64;
    for index in 0..blocks {
        let at = SUMMARY_FIXED_BYTES + index * BLOCK_ENTRY_BYTES;
        let first = u64_at(summary, at);
        let end = u64_at(summary, at + 8);
        if end <= previous_end + 4 || end > summary_position {
            return Err(format!("block {index} ends at {end}, outside the blocks"));
        }
        if first_hashes.last().is_some_and(|last| *last > first) {
            return Err(format!("block {index} is out of hash order"));
        }
        first_hashes.push(first);
        block_ends.push(end);
        previous_end = end;
    }
    if previous_end != summary_position {
        return Err("blocks do not end where the summary starts".to_string());
    }
    let bloom_start = SUMMARY_FIXED_BYTES + blocks * BLOCK_ENTRY_BYTES;
    let bloom_words = (0..words)
        .map(|index| u64_at(summary, bloom_start + index * 8))
        .collect();
    let bloom = Bloom::from_parts(bloom_words, probes).ok_or("bad bloom filter shape")?;
    Ok(Summary {
        distinct_keys: u64_at(summary, SUMMARY_KEYS_OFFSET),
        records: u64_at(summary, SUMMARY_RECORDS_OFFSET),
        first_hashes,
        block_ends,
        bloom,
    })
}

impl KeysFile {
    /// Opens `path` and checks it describes the segment `expect` names. `Ok(None)`: there is
    /// no file. `Err(reason)`: there is one, but it cannot be used (it is rebuilt).
    pub fn open(disk: &dyn Disk, path: &Path, expect: Expect) -> Result<Option<KeysFile>, String> {
        let file = match disk.open(path, false) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("cannot open: {error}")),
        };
        let file_bytes = file.len().map_err(|error| format!("cannot measure: {error}"))?;
        let mut header = [0u8; KEYS_HEADER_BYTES];
        if file_bytes < KEYS_HEADER_BYTES as u64 {
            return Err(format!("{file_bytes} bytes, shorter than the header"));
        }
        read_exact_at(&*file, &mut header, 0).map_err(|error| format!("cannot read: {error}"))?;
        let (summary_position, summary_bytes, summary_crc) = check_header(&header, &expect)?;
        if summary_bytes > SUMMARY_BYTES_MAX
            || summary_position < KEYS_HEADER_BYTES as u64
            || summary_position.checked_add(summary_bytes) != Some(file_bytes)
        {
            return Err(format!(
                "summary at {summary_position} of {summary_bytes} bytes does not end the {file_bytes}-byte file"
            ));
        }
        let mut summary = vec![0u8; usize::try_from(summary_bytes).unwrap_or(0)];
        read_exact_at(&*file, &mut summary, summary_position)
            .map_err(|error| format!("cannot read: {error}"))?;
        if crc32fast::hash(&summary) != summary_crc {
            return Err("summary CRC mismatch".to_string());
        }
        let summary = decode_summary(&summary, summary_position)?;
        Ok(Some(KeysFile {
            path: path.to_path_buf(),
            file,
            hash: expect.hash,
            first_hashes: summary.first_hashes,
            block_ends: summary.block_ends,
            bloom: summary.bloom,
            file_bytes,
            expect,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole file and checks every block (the open checked only the header and the
    /// summary): the background scrub after an open, so damage at rest is found and rebuilt
    /// without waiting for a lookup to trip over it.
    pub fn scrub(&self) -> Result<(), String> {
        let mut bytes = vec![0u8; usize::try_from(self.file_bytes).map_err(|_| "file too large")?];
        read_exact_at(&*self.file, &mut bytes, 0).map_err(|error| format!("cannot read: {error}"))?;
        verify_bytes(&bytes, self.expect, &|_, _| true).map(|_| ())
    }

    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    pub fn resident_bytes(&self) -> usize {
        self.bloom.bytes() + (self.first_hashes.capacity() + self.block_ends.capacity()) * 8
    }

    /// The records of `key` in this segment, oldest first. `Err(reason)`: the blocks read are
    /// damaged.
    pub fn lookup(&self, key: &[u8]) -> Result<Vec<Place>, String> {
        let hash = (self.hash.function)(key);
        if !self.bloom.may_contain(hash) {
            return Ok(Vec::new());
        }
        // Blocks that can hold the hash: the last one starting below it (it may end with the
        // hash) and every one starting with it.
        let below = self.first_hashes.partition_point(|first| *first < hash);
        let through = self.first_hashes.partition_point(|first| *first <= hash);
        let first_block = below.saturating_sub(1);
        if through == 0 || first_block >= through {
            return Ok(Vec::new());
        }
        let start = if first_block == 0 {
            KEYS_HEADER_BYTES as u64
        } else {
            self.block_ends[first_block - 1]
        };
        let end = self.block_ends[through - 1];
        let mut bytes = vec![0u8; usize::try_from(end - start).map_err(|_| "block too large")?];
        read_exact_at(&*self.file, &mut bytes, start)
            .map_err(|error| format!("cannot read blocks: {error}"))?;
        let mut block_start = start;
        for block in first_block..through {
            let block_end = self.block_ends[block];
            let from = usize::try_from(block_start - start).unwrap_or(usize::MAX);
            let to = usize::try_from(block_end - start).unwrap_or(usize::MAX);
            let block_bytes = &bytes[from..to];
            if let Some(found) = find_in_block(block_bytes, hash, key)
                .map_err(|reason| format!("block {block} (bytes {block_start}..{block_end}): {reason}"))?
            {
                return Ok(found);
            }
            block_start = block_end;
        }
        Ok(Vec::new())
    }
}

/// Checks a block's CRC and looks for `key` in it. `Ok(None)`: not in this block.
fn find_in_block(block: &[u8], hash: u64, key: &[u8]) -> Result<Option<Vec<Place>>, String> {
    let entries = check_block(block)?;
    let mut at = 0;
    // Bounded: every entry consumes at least nine bytes.
    while at < entries.len() {
        let entry = decode_entry(entries, &mut at)?;
        if entry.hash > hash {
            return Ok(None);
        }
        if entry.hash == hash && entry.key == key {
            return Ok(Some(entry.records));
        }
    }
    Ok(None)
}

fn check_block(block: &[u8]) -> Result<&[u8], String> {
    if block.len() < 4 {
        return Err("block shorter than its CRC".to_string());
    }
    let (entries, crc) = block.split_at(block.len() - 4);
    if u32_at(crc, 0) != crc32fast::hash(entries) {
        return Err("block CRC mismatch".to_string());
    }
    Ok(entries)
}

pub(crate) struct Entry<'a> {
    pub hash: u64,
    pub key: &'a [u8],
    pub records: Vec<Place>,
}

fn decode_entry<'a>(entries: &'a [u8], at: &mut usize) -> Result<Entry<'a>, String> {
    let hash_bytes = entries.get(*at..*at + 8).ok_or("entry runs past its block")?;
    let hash = u64_at(hash_bytes, 0);
    *at += 8;
    let key_len = usize::try_from(get_unsigned(entries, at)?).map_err(|_| "bad key length")?;
    let key_end = at
        .checked_add(key_len)
        .filter(|end| *end <= entries.len())
        .ok_or("key runs past its block")?;
    let key = &entries[*at..key_end];
    *at = key_end;
    let count = get_unsigned(entries, at)?;
    // Each record takes at least three bytes: a count the block cannot hold is damage.
    if count == 0 || count > (entries.len() - *at) as u64 / 3 {
        return Err(format!("record count {count} does not fit the block"));
    }
    let mut records = Vec::with_capacity(count as usize);
    let (mut offset, mut position) = (0u64, 0u64);
    for index in 0..count {
        let offset_delta = get_unsigned(entries, at)?;
        let position_delta = get_unsigned(entries, at)?;
        let record_start =
            u32::try_from(get_unsigned(entries, at)?).map_err(|_| "record start out of range")?;
        if index > 0 && offset_delta == 0 {
            return Err("offsets do not increase".to_string());
        }
        offset += offset_delta;
        position += position_delta;
        let (Ok(relative_offset), Ok(batch_position)) = (u32::try_from(offset), u32::try_from(position))
        else {
            return Err("offset or position out of range".to_string());
        };
        records.push(Place {
            relative_offset,
            batch_position,
            record_start,
        });
    }
    Ok(Entry { hash, key, records })
}

/// Checks a whole `.keys` file against its segment without using it (`tidelogd verify`):
/// header, summary, every block's CRC, entry order, and every record inside the segment's
/// offsets and bytes. Returns the number of records it indexes.
pub(crate) fn verify_bytes(
    bytes: &[u8],
    expect: Expect,
    batch_holds: &dyn Fn(u32, u32) -> bool,
) -> Result<u64, String> {
    let header = bytes.get(..KEYS_HEADER_BYTES).ok_or("shorter than the header")?;
    let (summary_position, summary_bytes, summary_crc) = check_header(header, &expect)?;
    if summary_position.checked_add(summary_bytes) != Some(bytes.len() as u64) {
        return Err("the summary does not end the file".to_string());
    }
    let summary_start = usize::try_from(summary_position).map_err(|_| "bad summary position")?;
    let summary = &bytes[summary_start..];
    if crc32fast::hash(summary) != summary_crc {
        return Err("summary CRC mismatch".to_string());
    }
    let summary = decode_summary(summary, summary_position)?;
    let mut block_start = KEYS_HEADER_BYTES;
    let mut previous: Option<(u64, Vec<u8>)> = None;
    let mut records = 0u64;
    let mut keys = 0u64;
    let span = expect.next_offset - expect.base_offset;
    for (index, end) in summary.block_ends.iter().enumerate() {
        let end = usize::try_from(*end).map_err(|_| "bad block end")?;
        let entries =
            check_block(&bytes[block_start..end]).map_err(|reason| format!("block {index}: {reason}"))?;
        let mut at = 0;
        let mut first = true;
        while at < entries.len() {
            let entry =
                decode_entry(entries, &mut at).map_err(|reason| format!("block {index}: {reason}"))?;
            if first && entry.hash != summary.first_hashes[index] {
                return Err(format!(
                    "block {index} does not start with the hash its summary says"
                ));
            }
            first = false;
            if previous
                .as_ref()
                .is_some_and(|(hash, key)| (*hash, key.as_slice()) >= (entry.hash, entry.key))
            {
                return Err(format!("block {index}: entries out of order"));
            }
            if entry.hash != (expect.hash.function)(entry.key) {
                return Err(format!("block {index}: an entry's hash is not its key's"));
            }
            for place in &entry.records {
                let position = place.batch_position;
                if i64::from(place.relative_offset) >= span || u64::from(position) >= expect.log_bytes {
                    return Err(format!("block {index}: a record lies outside the segment"));
                }
                if !batch_holds(place.relative_offset, position) {
                    return Err(format!(
                        "block {index}: offset {} is not in the batch at byte {position}",
                        expect.base_offset + i64::from(place.relative_offset)
                    ));
                }
            }
            if !summary.bloom.may_contain(entry.hash) {
                return Err(format!("block {index}: the bloom filter misses a key"));
            }
            records += entry.records.len() as u64;
            keys += 1;
            previous = Some((entry.hash, entry.key.to_vec()));
        }
        block_start = end;
    }
    if keys != summary.distinct_keys {
        return Err(format!(
            "summary counts {} keys, blocks hold {keys}",
            summary.distinct_keys
        ));
    }
    if records != summary.records {
        return Err(format!(
            "summary counts {} records, blocks hold {records}",
            summary.records
        ));
    }
    Ok(records)
}

/// Reads a whole `.keys` file back into a table (the active segment's, written at a clean
/// close), after checking it as [`verify_bytes`] does.
pub(crate) fn table_from_bytes(bytes: &[u8], expect: Expect) -> Result<ActiveTable, String> {
    verify_bytes(bytes, expect, &|_, _| true)?;
    let header = &bytes[..KEYS_HEADER_BYTES];
    let (summary_position, _, _) = check_header(header, &expect)?;
    let summary_start = usize::try_from(summary_position).map_err(|_| "bad summary position")?;
    let summary = decode_summary(&bytes[summary_start..], summary_position)?;
    let mut table = ActiveTable::new(expect.hash);
    // Entries are sorted by hash, records by offset within each: the table wants every key's
    // records in offset order, which inserting key by key gives (chains are per key).
    let mut block_start = KEYS_HEADER_BYTES;
    for end in &summary.block_ends {
        let end = usize::try_from(*end).map_err(|_| "bad block end")?;
        let entries = check_block(&bytes[block_start..end])?;
        let mut at = 0;
        while at < entries.len() {
            let entry = decode_entry(entries, &mut at)?;
            for place in &entry.records {
                table.insert_hashed(entry.key, entry.hash, *place);
            }
        }
        block_start = end;
    }
    Ok(table)
}
