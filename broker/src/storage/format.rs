//! Byte layouts of every file the storage engine writes, with their encoders and checking
//! decoders. `docs/storage-format.md` describes the same layouts in prose; keep them in step.
//!
//! All integers are big-endian (as in Kafka's RecordBatch). Every file starts with a 32-byte
//! header carrying a magic, a format version and a CRC32 (crc32fast, IEEE polynomial); every
//! index entry carries its own CRC32 so a torn or zeroed tail is detected entry by entry.

/// Format version written by this build, for every file kind.
pub const FORMAT_VERSION: u16 = 1;

/// Largest single batch we accept: it bounds the buffer recovery allocates for one batch
/// whose length field may be garbage.
pub const BATCH_BYTES_MAX: usize = 64 << 20;

// Common file header.
pub const HEADER_MAGIC_OFFSET: usize = 0;
pub const HEADER_VERSION_OFFSET: usize = HEADER_MAGIC_OFFSET + 8;
pub const HEADER_FLAGS_OFFSET: usize = HEADER_VERSION_OFFSET + 2;
/// Data file flag: the segment was closed and every byte of it fdatasync'ed before this flag
/// was written, so recovery may trust it without a scan. The active segment never has it.
pub const LOG_FLAG_SEALED: u16 = 0x0001;
/// Data file flag: the cleaner wrote this segment (always together with `LOG_FLAG_SEALED`).
/// Only here may a batch start after the previous one's end (offsets the cleaner removed) and
/// hold fewer records than its offset range (`0 <= record_count <= lastOffsetDelta + 1`, 0 for
/// a header-only placeholder); everywhere else the strict checks stand.
pub const LOG_FLAG_CLEANED: u16 = 0x0002;
pub const HEADER_BASE_OFFSET_OFFSET: usize = HEADER_FLAGS_OFFSET + 2;
pub const HEADER_RESERVED_OFFSET: usize = HEADER_BASE_OFFSET_OFFSET + 8;
pub const HEADER_CRC_OFFSET: usize = HEADER_RESERVED_OFFSET + 8;
/// Size of the header at the front of every segment file; batches start right after it.
pub const FILE_HEADER_BYTES: usize = HEADER_CRC_OFFSET + 4;

/// Which of a segment's files a header belongs to; each has its own magic so a file renamed
/// to the wrong extension is caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Log,
    OffsetIndex,
    TimeIndex,
    /// The per-key index of a sealed segment (`key_index/file.rs`, its own header layout).
    KeyIndex,
}

impl FileKind {
    pub fn magic(self) -> &'static [u8; 8] {
        match self {
            FileKind::Log => b"TDLGLOG1",
            FileKind::OffsetIndex => b"TDLGOIX1",
            FileKind::TimeIndex => b"TDLGTIX1",
            FileKind::KeyIndex => b"TDLGKEY1",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            FileKind::Log => "log",
            FileKind::OffsetIndex => "index",
            FileKind::TimeIndex => "timeindex",
            FileKind::KeyIndex => "keys",
        }
    }
}

/// Why a header, entry or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not our data, or damaged: repair or rebuild.
    Invalid(String),
    /// Intact and ours, but from a newer format: refuse to touch it.
    UnsupportedVersion(u16),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Invalid(reason) => f.write_str(reason),
            DecodeError::UnsupportedVersion(version) => write!(f, "unsupported format version {version}"),
        }
    }
}

pub fn encode_file_header(kind: FileKind, base_offset: i64) -> [u8; FILE_HEADER_BYTES] {
    encode_file_header_with_flags(kind, base_offset, 0)
}

pub fn encode_file_header_with_flags(
    kind: FileKind,
    base_offset: i64,
    flags: u16,
) -> [u8; FILE_HEADER_BYTES] {
    let mut out = [0u8; FILE_HEADER_BYTES];
    out[HEADER_MAGIC_OFFSET..HEADER_VERSION_OFFSET].copy_from_slice(kind.magic());
    out[HEADER_VERSION_OFFSET..HEADER_FLAGS_OFFSET].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    out[HEADER_FLAGS_OFFSET..HEADER_BASE_OFFSET_OFFSET].copy_from_slice(&flags.to_be_bytes());
    out[HEADER_BASE_OFFSET_OFFSET..HEADER_RESERVED_OFFSET].copy_from_slice(&base_offset.to_be_bytes());
    let crc = crc32fast::hash(&out[..HEADER_CRC_OFFSET]);
    out[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Checks a file header and returns the base offset it names.
pub fn decode_file_header(kind: FileKind, bytes: &[u8]) -> Result<i64, DecodeError> {
    decode_file_header_with_flags(kind, bytes).map(|(base_offset, _)| base_offset)
}

/// Checks a file header and returns the base offset and flags it holds.
pub fn decode_file_header_with_flags(kind: FileKind, bytes: &[u8]) -> Result<(i64, u16), DecodeError> {
    if bytes.len() < FILE_HEADER_BYTES {
        return Err(DecodeError::Invalid(format!(
            "header is {} bytes, expected {FILE_HEADER_BYTES}",
            bytes.len()
        )));
    }
    if &bytes[HEADER_MAGIC_OFFSET..HEADER_VERSION_OFFSET] != kind.magic() {
        return Err(DecodeError::Invalid("bad magic".to_string()));
    }
    let stored = u32_at(bytes, HEADER_CRC_OFFSET);
    let computed = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
    if stored != computed {
        return Err(DecodeError::Invalid(format!(
            "header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )));
    }
    let version = u16_at(bytes, HEADER_VERSION_OFFSET);
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    Ok((
        i64_at(bytes, HEADER_BASE_OFFSET_OFFSET),
        u16_at(bytes, HEADER_FLAGS_OFFSET),
    ))
}

// Offset index entry.
pub const OFFSET_ENTRY_RELATIVE_OFFSET_OFFSET: usize = 0;
pub const OFFSET_ENTRY_POSITION_OFFSET: usize = OFFSET_ENTRY_RELATIVE_OFFSET_OFFSET + 4;
pub const OFFSET_ENTRY_CRC_OFFSET: usize = OFFSET_ENTRY_POSITION_OFFSET + 4;
pub const OFFSET_ENTRY_BYTES: usize = OFFSET_ENTRY_CRC_OFFSET + 4;

/// "The batch whose base offset is `base + relative_offset` starts at byte `position`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl OffsetEntry {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    /// `bytes` is exactly one entry.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_entry_crc(bytes, OFFSET_ENTRY_BYTES, OFFSET_ENTRY_CRC_OFFSET)?;
        Ok(Self {
            relative_offset: u32_at(bytes, OFFSET_ENTRY_RELATIVE_OFFSET_OFFSET),
            position: u32_at(bytes, OFFSET_ENTRY_POSITION_OFFSET),
        })
    }
}

// Time index entry.
pub const TIME_ENTRY_TIMESTAMP_OFFSET: usize = 0;
pub const TIME_ENTRY_RELATIVE_OFFSET_OFFSET: usize = TIME_ENTRY_TIMESTAMP_OFFSET + 8;
pub const TIME_ENTRY_POSITION_OFFSET: usize = TIME_ENTRY_RELATIVE_OFFSET_OFFSET + 4;
pub const TIME_ENTRY_CRC_OFFSET: usize = TIME_ENTRY_POSITION_OFFSET + 4;
pub const TIME_ENTRY_BYTES: usize = TIME_ENTRY_CRC_OFFSET + 4;

/// "Every record in the batches before and including the batch at `position` (base offset
/// `base + relative_offset`) has a timestamp <= `timestamp`." Timestamps never decrease along
/// the index: each is the running maximum of the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
    pub position: u32,
}

impl TimeEntry {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        check_entry_crc(bytes, TIME_ENTRY_BYTES, TIME_ENTRY_CRC_OFFSET)?;
        Ok(Self {
            timestamp: i64_at(bytes, TIME_ENTRY_TIMESTAMP_OFFSET),
            relative_offset: u32_at(bytes, TIME_ENTRY_RELATIVE_OFFSET_OFFSET),
            position: u32_at(bytes, TIME_ENTRY_POSITION_OFFSET),
        })
    }
}

fn check_entry_crc(bytes: &[u8], size: usize, crc_at: usize) -> Result<(), DecodeError> {
    if bytes.len() != size {
        return Err(DecodeError::Invalid(format!(
            "entry is {} bytes, expected {size}",
            bytes.len()
        )));
    }
    let stored = u32_at(bytes, crc_at);
    let computed = crc32fast::hash(&bytes[..crc_at]);
    if stored != computed {
        return Err(DecodeError::Invalid(format!(
            "entry CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
        )));
    }
    Ok(())
}

/// Decodes a whole offset index file (header and entries) without checking it against the
/// log; `index::verify_*` does that.
pub fn decode_offset_index(bytes: &[u8], base_offset: i64) -> Result<Vec<OffsetEntry>, DecodeError> {
    let body = check_index_header(FileKind::OffsetIndex, bytes, base_offset, OFFSET_ENTRY_BYTES)?;
    body.chunks_exact(OFFSET_ENTRY_BYTES)
        .enumerate()
        .map(|(index, chunk)| {
            OffsetEntry::decode(chunk)
                .map_err(|error| DecodeError::Invalid(format!("entry {index}: {error}")))
        })
        .collect()
}

pub fn decode_time_index(bytes: &[u8], base_offset: i64) -> Result<Vec<TimeEntry>, DecodeError> {
    let body = check_index_header(FileKind::TimeIndex, bytes, base_offset, TIME_ENTRY_BYTES)?;
    body.chunks_exact(TIME_ENTRY_BYTES)
        .enumerate()
        .map(|(index, chunk)| {
            TimeEntry::decode(chunk).map_err(|error| DecodeError::Invalid(format!("entry {index}: {error}")))
        })
        .collect()
}

fn check_index_header(
    kind: FileKind,
    bytes: &[u8],
    base_offset: i64,
    entry_bytes: usize,
) -> Result<&[u8], DecodeError> {
    let found = decode_file_header(kind, bytes)?;
    if found != base_offset {
        return Err(DecodeError::Invalid(format!(
            "header names base offset {found}, file name says {base_offset}"
        )));
    }
    let body = &bytes[FILE_HEADER_BYTES..];
    if !body.chunks_exact(entry_bytes).remainder().is_empty() {
        return Err(DecodeError::Invalid(format!(
            "{} bytes of entries is not a whole number of {entry_bytes}-byte entries (torn write)",
            body.len()
        )));
    }
    Ok(body)
}

// Clean-shutdown checkpoint.
pub const CHECKPOINT_MAGIC: &[u8; 8] = b"TDLGCLN1";
pub const CHECKPOINT_MAGIC_OFFSET: usize = 0;
pub const CHECKPOINT_VERSION_OFFSET: usize = CHECKPOINT_MAGIC_OFFSET + 8;
pub const CHECKPOINT_RESERVED_OFFSET: usize = CHECKPOINT_VERSION_OFFSET + 2;
pub const CHECKPOINT_SEGMENT_COUNT_OFFSET: usize = CHECKPOINT_RESERVED_OFFSET + 2;
pub const CHECKPOINT_LOG_START_OFFSET: usize = CHECKPOINT_SEGMENT_COUNT_OFFSET + 4;
pub const CHECKPOINT_ACTIVE_BASE_OFFSET: usize = CHECKPOINT_LOG_START_OFFSET + 8;
pub const CHECKPOINT_NEXT_OFFSET: usize = CHECKPOINT_ACTIVE_BASE_OFFSET + 8;
pub const CHECKPOINT_LOG_BYTES_OFFSET: usize = CHECKPOINT_NEXT_OFFSET + 8;
pub const CHECKPOINT_OFFSET_INDEX_BYTES_OFFSET: usize = CHECKPOINT_LOG_BYTES_OFFSET + 8;
pub const CHECKPOINT_TIME_INDEX_BYTES_OFFSET: usize = CHECKPOINT_OFFSET_INDEX_BYTES_OFFSET + 8;
pub const CHECKPOINT_CRC_OFFSET: usize = CHECKPOINT_TIME_INDEX_BYTES_OFFSET + 8;
pub const CHECKPOINT_BYTES: usize = CHECKPOINT_CRC_OFFSET + 4;

/// Written on clean shutdown after everything is synced: what the partition directory looked
/// like, so the next open can trust the active segment without scanning it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub segment_count: u32,
    pub log_start_offset: i64,
    pub active_base_offset: i64,
    pub next_offset: i64,
    pub log_bytes: u64,
    pub offset_index_bytes: u64,
    pub time_index_bytes: u64,
}

impl Checkpoint {
    pub fn encode(&self) -> [u8; CHECKPOINT_BYTES] {
        let mut out = [0u8; CHECKPOINT_BYTES];
        out[CHECKPOINT_MAGIC_OFFSET..CHECKPOINT_VERSION_OFFSET].copy_from_slice(CHECKPOINT_MAGIC);
        out[CHECKPOINT_VERSION_OFFSET..CHECKPOINT_RESERVED_OFFSET]
            .copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        out[CHECKPOINT_SEGMENT_COUNT_OFFSET..CHECKPOINT_LOG_START_OFFSET]
            .copy_from_slice(&self.segment_count.to_be_bytes());
        out[CHECKPOINT_LOG_START_OFFSET..CHECKPOINT_ACTIVE_BASE_OFFSET]
            .copy_from_slice(&self.log_start_offset.to_be_bytes());
        out[CHECKPOINT_ACTIVE_BASE_OFFSET..CHECKPOINT_NEXT_OFFSET]
            .copy_from_slice(&self.active_base_offset.to_be_bytes());
        out[CHECKPOINT_NEXT_OFFSET..CHECKPOINT_LOG_BYTES_OFFSET]
            .copy_from_slice(&self.next_offset.to_be_bytes());
        out[CHECKPOINT_LOG_BYTES_OFFSET..CHECKPOINT_OFFSET_INDEX_BYTES_OFFSET]
            .copy_from_slice(&self.log_bytes.to_be_bytes());
        out[CHECKPOINT_OFFSET_INDEX_BYTES_OFFSET..CHECKPOINT_TIME_INDEX_BYTES_OFFSET]
            .copy_from_slice(&self.offset_index_bytes.to_be_bytes());
        out[CHECKPOINT_TIME_INDEX_BYTES_OFFSET..CHECKPOINT_CRC_OFFSET]
            .copy_from_slice(&self.time_index_bytes.to_be_bytes());
        let crc = crc32fast::hash(&out[..CHECKPOINT_CRC_OFFSET]);
        out[CHECKPOINT_CRC_OFFSET..].copy_from_slice(&crc.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != CHECKPOINT_BYTES {
            return Err(DecodeError::Invalid(format!(
                "checkpoint is {} bytes, expected {CHECKPOINT_BYTES}",
                bytes.len()
            )));
        }
        if &bytes[CHECKPOINT_MAGIC_OFFSET..CHECKPOINT_VERSION_OFFSET] != CHECKPOINT_MAGIC {
            return Err(DecodeError::Invalid("bad checkpoint magic".to_string()));
        }
        let stored = u32_at(bytes, CHECKPOINT_CRC_OFFSET);
        let computed = crc32fast::hash(&bytes[..CHECKPOINT_CRC_OFFSET]);
        if stored != computed {
            return Err(DecodeError::Invalid(format!(
                "checkpoint CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            )));
        }
        let version = u16_at(bytes, CHECKPOINT_VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        Ok(Self {
            segment_count: u32_at(bytes, CHECKPOINT_SEGMENT_COUNT_OFFSET),
            log_start_offset: i64_at(bytes, CHECKPOINT_LOG_START_OFFSET),
            active_base_offset: i64_at(bytes, CHECKPOINT_ACTIVE_BASE_OFFSET),
            next_offset: i64_at(bytes, CHECKPOINT_NEXT_OFFSET),
            log_bytes: u64_at(bytes, CHECKPOINT_LOG_BYTES_OFFSET),
            offset_index_bytes: u64_at(bytes, CHECKPOINT_OFFSET_INDEX_BYTES_OFFSET),
            time_index_bytes: u64_at(bytes, CHECKPOINT_TIME_INDEX_BYTES_OFFSET),
        })
    }
}

/// Name of the clean-shutdown checkpoint in a partition directory.
pub const CHECKPOINT_FILE_NAME: &str = "clean-shutdown.checkpoint";
/// Suffix of files being written before an atomic rename; leftovers are deleted at open.
pub const TEMP_SUFFIX: &str = ".tmp";

/// `00000000000000000042.log` and friends: the base offset, zero-padded to 20 digits so names
/// sort in offset order.
pub fn segment_file_name(base_offset: i64, kind: FileKind) -> String {
    format!("{base_offset:020}.{}", kind.extension())
}

/// The base offset and kind a segment file name denotes, or `None` for other names.
pub fn parse_segment_file_name(name: &str) -> Option<(i64, FileKind)> {
    let (stem, extension) = name.split_once('.')?;
    let kind = [
        FileKind::Log,
        FileKind::OffsetIndex,
        FileKind::TimeIndex,
        FileKind::KeyIndex,
    ]
    .into_iter()
    .find(|kind| kind.extension() == extension)?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let base_offset: i64 = stem.parse().ok()?;
    // No real log comes near this; refusing larger bases keeps `base + relative offset`
    // (a u32) from overflowing for any file a damaged or hostile directory could hold.
    if base_offset > SEGMENT_BASE_OFFSET_MAX {
        return None;
    }
    Some((base_offset, kind))
}

/// The largest segment base offset a file name may carry.
pub const SEGMENT_BASE_OFFSET_MAX: i64 = i64::MAX - (1 << 33);

pub(crate) fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(raw)
}

pub(crate) fn i64_at(bytes: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(raw)
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_constants_match_the_documented_offsets() {
        assert_eq!(FILE_HEADER_BYTES, 32);
        assert_eq!(OFFSET_ENTRY_BYTES, 12);
        assert_eq!(TIME_ENTRY_BYTES, 20);
        assert_eq!(CHECKPOINT_BYTES, 68);
    }

    #[test]
    fn file_header_round_trips_and_every_flipped_byte_is_detected() {
        for kind in [FileKind::Log, FileKind::OffsetIndex, FileKind::TimeIndex] {
            let header = encode_file_header(kind, 1234);
            assert_eq!(decode_file_header(kind, &header), Ok(1234));
            for at in 0..FILE_HEADER_BYTES {
                let mut corrupt = header;
                corrupt[at] ^= 0x10;
                assert!(decode_file_header(kind, &corrupt).is_err(), "{kind:?} byte {at}");
            }
        }
    }

    #[test]
    fn sealed_flag_round_trips() {
        let header = encode_file_header_with_flags(FileKind::Log, 9, LOG_FLAG_SEALED);
        assert_eq!(
            decode_file_header_with_flags(FileKind::Log, &header),
            Ok((9, LOG_FLAG_SEALED))
        );
        let header = encode_file_header(FileKind::Log, 9);
        assert_eq!(decode_file_header_with_flags(FileKind::Log, &header), Ok((9, 0)));
    }

    #[test]
    fn file_header_of_another_kind_is_refused() {
        let header = encode_file_header(FileKind::OffsetIndex, 0);
        assert!(decode_file_header(FileKind::Log, &header).is_err());
    }

    #[test]
    fn newer_file_version_is_reported_as_unsupported_not_corrupt() {
        let mut header = encode_file_header(FileKind::Log, 7);
        header[HEADER_VERSION_OFFSET..HEADER_FLAGS_OFFSET].copy_from_slice(&2u16.to_be_bytes());
        let crc = crc32fast::hash(&header[..HEADER_CRC_OFFSET]);
        header[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            decode_file_header(FileKind::Log, &header),
            Err(DecodeError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn index_entries_round_trip_and_flipped_bytes_are_detected() {
        let entry = OffsetEntry {
            relative_offset: 17,
            position: 4096,
        };
        let mut bytes = Vec::new();
        entry.encode_into(&mut bytes);
        assert_eq!(OffsetEntry::decode(&bytes), Ok(entry));
        for at in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[at] ^= 0x01;
            assert!(OffsetEntry::decode(&corrupt).is_err());
        }
        let entry = TimeEntry {
            timestamp: 1_700_000_000_000,
            relative_offset: 3,
            position: 99,
        };
        let mut bytes = Vec::new();
        entry.encode_into(&mut bytes);
        assert_eq!(TimeEntry::decode(&bytes), Ok(entry));
        for at in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[at] ^= 0x80;
            assert!(TimeEntry::decode(&corrupt).is_err());
        }
    }

    #[test]
    fn zero_filled_entries_are_refused() {
        assert!(OffsetEntry::decode(&[0u8; OFFSET_ENTRY_BYTES]).is_err());
        assert!(TimeEntry::decode(&[0u8; TIME_ENTRY_BYTES]).is_err());
    }

    #[test]
    fn index_file_with_a_torn_entry_or_wrong_base_is_refused() {
        let mut file = encode_file_header(FileKind::OffsetIndex, 100).to_vec();
        OffsetEntry {
            relative_offset: 1,
            position: 40,
        }
        .encode_into(&mut file);
        assert_eq!(decode_offset_index(&file, 100).unwrap().len(), 1);
        assert!(decode_offset_index(&file, 101).is_err());
        assert!(decode_offset_index(&file[..file.len() - 1], 100).is_err());
        let mut time = encode_file_header(FileKind::TimeIndex, 100).to_vec();
        TimeEntry {
            timestamp: 5,
            relative_offset: 1,
            position: 40,
        }
        .encode_into(&mut time);
        assert_eq!(decode_time_index(&time, 100).unwrap().len(), 1);
        time[FILE_HEADER_BYTES] ^= 1;
        assert!(decode_time_index(&time, 100).is_err());
    }

    #[test]
    fn checkpoint_round_trips_and_every_flipped_byte_is_detected() {
        let checkpoint = Checkpoint {
            segment_count: 3,
            log_start_offset: 10,
            active_base_offset: 500,
            next_offset: 777,
            log_bytes: 123_456,
            offset_index_bytes: 92,
            time_index_bytes: 112,
        };
        let bytes = checkpoint.encode();
        assert_eq!(Checkpoint::decode(&bytes), Ok(checkpoint));
        for at in 0..bytes.len() {
            let mut corrupt = bytes;
            corrupt[at] ^= 0x04;
            assert!(Checkpoint::decode(&corrupt).is_err(), "byte {at}");
        }
        assert!(Checkpoint::decode(&bytes[..CHECKPOINT_BYTES - 1]).is_err());
    }

    #[test]
    fn segment_file_names_sort_by_offset_and_parse_back() {
        assert_eq!(segment_file_name(42, FileKind::Log), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.timeindex"),
            Some((42, FileKind::TimeIndex))
        );
        assert_eq!(parse_segment_file_name("00000000000000000042.log.tmp"), None);
        assert_eq!(parse_segment_file_name("42.log"), None);
        assert_eq!(parse_segment_file_name("clean-shutdown.checkpoint"), None);
        assert_eq!(parse_segment_file_name("9999999999999999999x.log"), None);
    }
}
