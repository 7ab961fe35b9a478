//! Kafka RecordBatch v2, byte for byte: the unit records travel in, are stored in and are served
//! in. A later Kafka-protocol listener serves stored batches to Kafka clients unchanged.
//!
//! ```text
//! offset  size  field
//!      0     8  baseOffset            i64  assigned by the broker; not covered by the CRC
//!      8     4  batchLength           i32  bytes after this field
//!     12     4  partitionLeaderEpoch  i32  not covered by the CRC
//!     16     1  magic                 i8   = 2
//!     17     4  crc                   u32  CRC32C of attributes .. end of batch
//!     21     2  attributes            i16  bits 0-2 compression, 3 timestamp type,
//!                                          4 transactional, 5 control,
//!                                          6 delete horizon (KIP-534: the cleaner sets it;
//!                                          baseTimestamp then holds the horizon)
//!     23     4  lastOffsetDelta       i32
//!     27     8  baseTimestamp         i64
//!     35     8  maxTimestamp          i64
//!     43     8  producerId            i64
//!     51     2  producerEpoch         i16
//!     53     4  baseSequence          i32
//!     57     4  recordCount           i32
//!     61     -  records
//! ```
//! A record: `length` varint, `attributes` i8, `timestampDelta` varlong, `offsetDelta` varint,
//! `keyLength` varint (-1 = null), key, `valueLength` varint (-1 = null), value, `headerCount`
//! varint, then per header `keyLength` varint, key (UTF-8), `valueLength` varint, value.
//! All fixed-width integers are big-endian.
//!
//! A compressed batch (attribute bits 0-2 non-zero) has the same header; the records section
//! after it is the records above compressed as one stream (see [`crate::compression`]).

use bytes::Bytes;

pub use crate::compression::Compression;
use crate::BatchError;

mod builder;
pub mod filter;
mod records;
mod walk;

pub use builder::{compress_batch, NewRecord, ProducerStamp, RecordBatchBuilder};
pub use filter::{filter_batch, FilterOptions, FilterResult, Filtered, RecordView, ATTRIBUTE_DELETE_HORIZON};
pub use records::{Record, RecordHeader, RecordIter};

pub const BASE_OFFSET_OFFSET: usize = 0;
pub const BATCH_LENGTH_OFFSET: usize = BASE_OFFSET_OFFSET + 8;
pub const PARTITION_LEADER_EPOCH_OFFSET: usize = BATCH_LENGTH_OFFSET + 4;
pub const MAGIC_OFFSET: usize = PARTITION_LEADER_EPOCH_OFFSET + 4;
pub const CRC_OFFSET: usize = MAGIC_OFFSET + 1;
pub const ATTRIBUTES_OFFSET: usize = CRC_OFFSET + 4;
pub const LAST_OFFSET_DELTA_OFFSET: usize = ATTRIBUTES_OFFSET + 2;
pub const BASE_TIMESTAMP_OFFSET: usize = LAST_OFFSET_DELTA_OFFSET + 4;
pub const MAX_TIMESTAMP_OFFSET: usize = BASE_TIMESTAMP_OFFSET + 8;
pub const PRODUCER_ID_OFFSET: usize = MAX_TIMESTAMP_OFFSET + 8;
pub const PRODUCER_EPOCH_OFFSET: usize = PRODUCER_ID_OFFSET + 8;
pub const BASE_SEQUENCE_OFFSET: usize = PRODUCER_EPOCH_OFFSET + 2;
pub const RECORD_COUNT_OFFSET: usize = BASE_SEQUENCE_OFFSET + 4;
pub const RECORDS_OFFSET: usize = RECORD_COUNT_OFFSET + 4;

/// Size of the batch header, up to the first record.
pub const BATCH_HEADER_BYTES: usize = RECORDS_OFFSET;
/// baseOffset + batchLength: the bytes that precede what batchLength counts.
pub const LOG_OVERHEAD_BYTES: usize = BATCH_LENGTH_OFFSET + 4;
pub const MAGIC_V2: i8 = 2;

/// Smallest possible record: length, attributes, three one-byte varints, null key/value
/// lengths counted in those, header count.
const RECORD_BYTES_MIN: usize = 7;

pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

pub(crate) const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// The default bound on a compressed batch's records once decompressed: four times the
/// broker's default batch size limit. The broker's own bound is its
/// `limits.batch_decompressed_bytes_max`; the client's is its consumer setting.
pub const DECOMPRESSED_BYTES_MAX_DEFAULT: usize = 64 << 20;

/// The fixed-size header of a batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the front of `buf`. Checks only that the header is all there and
    /// the length and magic are sane; [`RecordBatch::validate`] checks the rest.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: buf.len(),
            });
        }
        let header = Self {
            base_offset: i64_at(buf, BASE_OFFSET_OFFSET),
            batch_length: i32_at(buf, BATCH_LENGTH_OFFSET),
            partition_leader_epoch: i32_at(buf, PARTITION_LEADER_EPOCH_OFFSET),
            magic: buf[MAGIC_OFFSET] as i8,
            crc: i32_at(buf, CRC_OFFSET) as u32,
            attributes: i16_at(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: i32_at(buf, LAST_OFFSET_DELTA_OFFSET),
            base_timestamp: i64_at(buf, BASE_TIMESTAMP_OFFSET),
            max_timestamp: i64_at(buf, MAX_TIMESTAMP_OFFSET),
            producer_id: i64_at(buf, PRODUCER_ID_OFFSET),
            producer_epoch: i16_at(buf, PRODUCER_EPOCH_OFFSET),
            base_sequence: i32_at(buf, BASE_SEQUENCE_OFFSET),
            record_count: i32_at(buf, RECORD_COUNT_OFFSET),
        };
        if header.magic != MAGIC_V2 {
            return Err(BatchError::BadMagic(header.magic));
        }
        if header.total_bytes().is_none() {
            return Err(BatchError::BadLength(header.batch_length));
        }
        Ok(header)
    }

    /// Bytes of the whole batch including baseOffset and batchLength, or `None` when the
    /// length field cannot describe a well-formed batch.
    pub fn total_bytes(&self) -> Option<usize> {
        let counted = usize::try_from(self.batch_length).ok()?;
        let total = counted.checked_add(LOG_OVERHEAD_BYTES)?;
        (total >= BATCH_HEADER_BYTES).then_some(total)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.last_offset_delta))
    }

    /// The offset after this batch's last record.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    pub fn compression(&self) -> Result<Compression, BatchError> {
        Compression::from_id((self.attributes & COMPRESSION_MASK) as u8)
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// KIP-534: the time after which the cleaner may drop this batch's tombstones, when the
    /// cleaner has set one (attribute bit 6; the base timestamp field holds it).
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & ATTRIBUTE_DELETE_HORIZON != 0).then_some(self.base_timestamp)
    }
}

/// Reads the total size of the batch at the front of `buf` from its first 12 bytes.
/// `Ok(None)`: fewer than 12 bytes. Used to walk a segment or a fetch response batch by batch.
pub fn peek_batch_bytes(buf: &[u8]) -> Result<Option<usize>, BatchError> {
    if buf.len() < LOG_OVERHEAD_BYTES {
        return Ok(None);
    }
    let batch_length = i32_at(buf, BATCH_LENGTH_OFFSET);
    let counted = usize::try_from(batch_length).map_err(|_| BatchError::BadLength(batch_length))?;
    let total = counted
        .checked_add(LOG_OVERHEAD_BYTES)
        .filter(|total| *total >= BATCH_HEADER_BYTES)
        .ok_or(BatchError::BadLength(batch_length))?;
    Ok(Some(total))
}

/// Overwrites the base offset of the batch at the front of `buf`. The CRC does not cover it,
/// so the batch stays valid.
pub fn set_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[BASE_OFFSET_OFFSET..BASE_OFFSET_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Overwrites the partition leader epoch (the Raft term, once we replicate). Not CRC-covered.
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// CRC32C of the batch's CRC-covered range (attributes to the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// One whole record batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Cuts the first batch off `buf` after checking its header; returns it and the bytes
    /// after it. Does not check the CRC or the records: call [`validate`](Self::validate).
    pub fn split_first(buf: &Bytes) -> Result<(Self, Bytes), BatchError> {
        let header = BatchHeader::parse(buf)?;
        // parse() verified total_bytes() is Some.
        let total = header.total_bytes().unwrap_or(usize::MAX);
        if buf.len() < total {
            return Err(BatchError::Truncated {
                needed: total,
                available: buf.len(),
            });
        }
        Ok((
            Self {
                header,
                bytes: buf.slice(..total),
            },
            buf.slice(total..),
        ))
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Full validation, as the broker does before appending: CRC, record count, offset deltas
    /// (0, 1, 2, ... as a producer writes them), and that the records fill the batch exactly.
    /// A compressed batch's records are decompressed (up to
    /// [`DECOMPRESSED_BYTES_MAX_DEFAULT`]) and checked the same way.
    pub fn validate(&self) -> Result<(), BatchError> {
        self.validate_bounded(DECOMPRESSED_BYTES_MAX_DEFAULT)
    }

    /// [`validate`](Self::validate) with the records of a compressed batch refused once they
    /// decompress to more than `decompressed_bytes_max`.
    ///
    /// The records are walked, not decoded: no `Record` is built and nothing is allocated
    /// for an uncompressed batch (see `walk`).
    pub fn validate_bounded(&self, decompressed_bytes_max: usize) -> Result<(), BatchError> {
        self.validate_bounded_headers(decompressed_bytes_max).map(|_| ())
    }

    /// [`validate_bounded`](Self::validate_bounded), also telling whether any record carries
    /// a header: the broker decodes records for expectation headers only when one does, so a
    /// batch without headers costs no more than the validation walk.
    pub fn validate_bounded_headers(&self, decompressed_bytes_max: usize) -> Result<bool, BatchError> {
        let computed = compute_crc(&self.bytes);
        if computed != self.header.crc {
            return Err(BatchError::CrcMismatch {
                expected: self.header.crc,
                computed,
            });
        }
        let count = self.header.record_count;
        if count < 1 {
            return Err(BatchError::BadRecordCount(count));
        }
        if self.header.last_offset_delta != count - 1 {
            return Err(BatchError::BadLastOffsetDelta {
                last_offset_delta: self.header.last_offset_delta,
                record_count: count,
            });
        }
        let codec = self.header.compression()?;
        let stored = &self.bytes[BATCH_HEADER_BYTES..];
        let decompressed;
        let section = match codec {
            Compression::None => stored,
            _ => {
                decompressed = crate::compression::decompress(codec, stored, decompressed_bytes_max)?;
                &decompressed[..]
            }
        };
        // Every record takes at least RECORD_BYTES_MIN bytes: a count the length cannot hold
        // is refused before anything is walked.
        if (count as usize).saturating_mul(RECORD_BYTES_MIN) > section.len() {
            return Err(BatchError::BadRecordCount(count));
        }
        walk::check_records(section, count as usize)
    }

    /// The records, decoded lazily; those of a compressed batch are decompressed first (up to
    /// [`DECOMPRESSED_BYTES_MAX_DEFAULT`]), and a failure to is the iterator's first item.
    /// Keys and values share the batch's buffer (or the decompressed one).
    pub fn records(&self) -> RecordIter {
        self.records_bounded(DECOMPRESSED_BYTES_MAX_DEFAULT)
    }

    /// [`records`](Self::records) with a compressed batch's records bounded by
    /// `decompressed_bytes_max`.
    pub fn records_bounded(&self, decompressed_bytes_max: usize) -> RecordIter {
        let header = &self.header;
        let count = header.record_count.max(0) as usize;
        let (bytes, start) = match header.compression() {
            Ok(Compression::None) => (self.bytes.clone(), BATCH_HEADER_BYTES),
            Ok(codec) => {
                let stored = &self.bytes[BATCH_HEADER_BYTES..];
                match crate::compression::decompress(codec, stored, decompressed_bytes_max) {
                    Ok(records) => (Bytes::from(records), 0),
                    Err(error) => return RecordIter::failed(error),
                }
            }
            Err(error) => return RecordIter::failed(error),
        };
        RecordIter::new(bytes, start, count, header.base_offset, header.base_timestamp)
    }
}

/// Walks a buffer of back-to-back batches (a produce request's or fetch response's records).
/// A truncated trailing batch ends the walk with an error.
#[derive(Debug, Clone)]
pub struct BatchIter {
    rest: Bytes,
    failed: bool,
}

impl BatchIter {
    pub fn new(buf: Bytes) -> Self {
        Self {
            rest: buf,
            failed: false,
        }
    }
}

impl Iterator for BatchIter {
    type Item = Result<RecordBatch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        match RecordBatch::split_first(&self.rest) {
            Ok((batch, rest)) => {
                self.rest = rest;
                Some(Ok(batch))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}
pub(crate) fn i64_at(buf: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(raw)
}

pub(crate) fn i32_at(buf: &[u8], at: usize) -> i32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(raw)
}

pub(crate) fn i16_at(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

#[cfg(test)]
mod tests;
