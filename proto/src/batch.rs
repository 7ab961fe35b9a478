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
//!                                          4 transactional, 5 control
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

use bytes::{BufMut, Bytes, BytesMut};

use crate::varint::{read_varint, read_varlong, varint_len, varlong_len, write_varint, write_varlong};
use crate::BatchError;

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

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// The compression codec named in a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn from_attributes(attributes: i16) -> Result<Self, BatchError> {
        match attributes & COMPRESSION_MASK {
            0 => Ok(Self::None),
            1 => Ok(Self::Gzip),
            2 => Ok(Self::Snappy),
            3 => Ok(Self::Lz4),
            4 => Ok(Self::Zstd),
            other => Err(BatchError::UnsupportedCompression(other as u8)),
        }
    }
}

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
        Compression::from_attributes(self.attributes)
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
    /// Compressed batches are checked up to the CRC; their records are not decoded yet.
    pub fn validate(&self) -> Result<(), BatchError> {
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
        match self.header.compression()? {
            Compression::None => {}
            other => return Err(BatchError::UnsupportedCompression(other as u8)),
        }
        // Every record takes at least RECORD_BYTES_MIN bytes: a count the length cannot hold
        // is refused before anything is decoded.
        let section = self.bytes.len() - BATCH_HEADER_BYTES;
        if (count as usize).saturating_mul(RECORD_BYTES_MIN) > section {
            return Err(BatchError::BadRecordCount(count));
        }
        let mut records = self.records();
        for index in 0..count as usize {
            let record = records.next().ok_or(BatchError::BadRecord {
                index,
                reason: "fewer records than the count says",
            })??;
            let expected = index as i32;
            if record.offset_delta != expected {
                return Err(BatchError::BadOffsetDelta {
                    index,
                    expected,
                    found: record.offset_delta,
                });
            }
        }
        if records.position != self.bytes.len() {
            return Err(BatchError::TrailingBytes {
                consumed: records.position - BATCH_HEADER_BYTES,
                length: section,
            });
        }
        Ok(())
    }

    /// The records of an uncompressed batch, decoded lazily. Keys and values share the batch's
    /// buffer. The iterator stops after the first error.
    pub fn records(&self) -> RecordIter {
        RecordIter {
            bytes: self.bytes.clone(),
            position: BATCH_HEADER_BYTES,
            index: 0,
            remaining: self.header.record_count.max(0) as usize,
            base_offset: self.header.base_offset,
            base_timestamp: self.header.base_timestamp,
            failed: false,
        }
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

/// A record header: a UTF-8 key and an optional value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<Bytes>,
}

/// A decoded record with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub offset_delta: i32,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

#[derive(Debug, Clone)]
pub struct RecordIter {
    bytes: Bytes,
    position: usize,
    index: usize,
    remaining: usize,
    base_offset: i64,
    base_timestamp: i64,
    failed: bool,
}

impl Iterator for RecordIter {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 || self.failed {
            return None;
        }
        let result = self.decode_one();
        match &result {
            Ok(_) => {
                self.remaining -= 1;
                self.index += 1;
            }
            Err(_) => self.failed = true,
        }
        Some(result)
    }
}

impl RecordIter {
    fn bad(&self, reason: &'static str) -> BatchError {
        BatchError::BadRecord {
            index: self.index,
            reason,
        }
    }

    fn decode_one(&mut self) -> Result<Record, BatchError> {
        let start = self.position;
        let (length, used) = read_varint(&self.bytes[start..]).ok_or(self.bad("bad length varint"))?;
        let body_start = start + used;
        let body_end = usize::try_from(length)
            .ok()
            .and_then(|length| body_start.checked_add(length))
            .filter(|end| *end <= self.bytes.len())
            .ok_or(self.bad("length runs past the batch"))?;
        let mut cursor = Cursor {
            bytes: &self.bytes,
            position: body_start,
            end: body_end,
        };
        let _attributes = cursor.byte().ok_or(self.bad("missing attributes"))?;
        let timestamp_delta = cursor.varlong().ok_or(self.bad("bad timestamp delta"))?;
        let offset_delta = cursor.varint().ok_or(self.bad("bad offset delta"))?;
        let key = cursor.nullable_bytes().ok_or(self.bad("bad key"))?;
        let value = cursor.nullable_bytes().ok_or(self.bad("bad value"))?;
        let header_count = cursor.varint().ok_or(self.bad("bad header count"))?;
        if header_count < 0 {
            return Err(self.bad("negative header count"));
        }
        let mut headers = Vec::new();
        for _ in 0..header_count {
            let key = cursor.nullable_bytes().ok_or(self.bad("bad header key"))?;
            let key = key.ok_or(self.bad("null header key"))?;
            let key = String::from_utf8(key.to_vec()).map_err(|_| self.bad("header key is not UTF-8"))?;
            let value = cursor.nullable_bytes().ok_or(self.bad("bad header value"))?;
            headers.push(RecordHeader { key, value });
        }
        if cursor.position != body_end {
            return Err(self.bad("length does not match its fields"));
        }
        self.position = body_end;
        Ok(Record {
            offset: self.base_offset.saturating_add(i64::from(offset_delta)),
            offset_delta,
            timestamp: self.base_timestamp.saturating_add(timestamp_delta),
            key,
            value,
            headers,
        })
    }
}

struct Cursor<'a> {
    bytes: &'a Bytes,
    position: usize,
    end: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        if self.position >= self.end {
            return None;
        }
        let byte = self.bytes[self.position];
        self.position += 1;
        Some(byte)
    }

    fn varint(&mut self) -> Option<i32> {
        let (value, used) = read_varint(&self.bytes[self.position..self.end])?;
        self.position += used;
        Some(value)
    }

    fn varlong(&mut self) -> Option<i64> {
        let (value, used) = read_varlong(&self.bytes[self.position..self.end])?;
        self.position += used;
        Some(value)
    }

    /// `Some(None)` is a null (-1 length); `None` is malformed.
    fn nullable_bytes(&mut self) -> Option<Option<Bytes>> {
        let length = self.varint()?;
        if length == -1 {
            return Some(None);
        }
        let length = usize::try_from(length).ok()?;
        let end = self.position.checked_add(length).filter(|end| *end <= self.end)?;
        let slice = self.bytes.slice(self.position..end);
        self.position = end;
        Some(Some(slice))
    }
}

/// A record to be written by [`RecordBatchBuilder`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

impl NewRecord {
    fn body_bytes(&self, offset_delta: i32, timestamp_delta: i64) -> usize {
        let mut size = 1 + varlong_len(timestamp_delta) + varint_len(offset_delta);
        size += nullable_len(self.key.as_deref());
        size += nullable_len(self.value.as_deref());
        size += varint_len(self.headers.len() as i32);
        for header in &self.headers {
            size += nullable_len(Some(header.key.as_bytes()));
            size += nullable_len(header.value.as_deref());
        }
        size
    }
}

fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint_len(-1),
        Some(bytes) => varint_len(bytes.len() as i32) + bytes.len(),
    }
}

fn write_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => write_varint(out, -1),
        Some(bytes) => {
            write_varint(out, bytes.len() as i32);
            out.extend_from_slice(bytes);
        }
    }
}

/// Producer identity stamped into a batch header (idempotent producer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl Default for ProducerStamp {
    fn default() -> Self {
        Self {
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
        }
    }
}

/// Builds an uncompressed batch as a producer does: base offset 0 (the broker assigns the real
/// one), offset deltas 0..n, timestamps relative to the first record's.
#[derive(Debug, Default)]
pub struct RecordBatchBuilder {
    records: Vec<u8>,
    count: i32,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    producer: ProducerStamp,
}

impl RecordBatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_producer(mut self, producer: ProducerStamp) -> Self {
        self.producer = producer;
        self
    }

    pub fn set_producer(&mut self, producer: ProducerStamp) {
        self.producer = producer;
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the batch would take if built now.
    pub fn size_bytes(&self) -> usize {
        BATCH_HEADER_BYTES + self.records.len()
    }

    /// Bytes `record` would add to the batch.
    pub fn record_size_bytes(&self, record: &NewRecord) -> usize {
        let timestamp_delta = record.timestamp - self.base_timestamp.unwrap_or(record.timestamp);
        let body = record.body_bytes(self.count, timestamp_delta);
        varint_len(body as i32) + body
    }

    pub fn push(&mut self, record: &NewRecord) {
        let base_timestamp = *self.base_timestamp.get_or_insert(record.timestamp);
        if self.count == 0 || record.timestamp > self.max_timestamp {
            self.max_timestamp = record.timestamp;
        }
        let timestamp_delta = record.timestamp - base_timestamp;
        let body = record.body_bytes(self.count, timestamp_delta);
        let out = &mut self.records;
        write_varint(out, body as i32);
        out.push(0); // record attributes: unused in v2
        write_varlong(out, timestamp_delta);
        write_varint(out, self.count);
        write_nullable(out, record.key.as_deref());
        write_nullable(out, record.value.as_deref());
        write_varint(out, record.headers.len() as i32);
        for header in &record.headers {
            write_nullable(out, Some(header.key.as_bytes()));
            write_nullable(out, header.value.as_deref());
        }
        self.count += 1;
    }

    /// Encodes the batch. Returns `None` when no record was pushed.
    pub fn build(&self) -> Option<Bytes> {
        if self.count == 0 {
            return None;
        }
        let total = self.size_bytes();
        let mut out = BytesMut::with_capacity(total);
        out.put_i64(0);
        out.put_i32((total - LOG_OVERHEAD_BYTES) as i32);
        out.put_i32(NO_PARTITION_LEADER_EPOCH);
        out.put_i8(MAGIC_V2);
        out.put_u32(0); // CRC, filled in below
        out.put_i16(0); // attributes: no compression, create time
        out.put_i32(self.count - 1);
        out.put_i64(self.base_timestamp.unwrap_or(0));
        out.put_i64(self.max_timestamp);
        out.put_i64(self.producer.producer_id);
        out.put_i16(self.producer.producer_epoch);
        out.put_i32(self.producer.base_sequence);
        out.put_i32(self.count);
        out.extend_from_slice(&self.records);
        let crc = compute_crc(&out);
        out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        Some(out.freeze())
    }
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(raw)
}

fn i32_at(buf: &[u8], at: usize) -> i32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(raw)
}

fn i16_at(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> NewRecord {
        NewRecord {
            timestamp,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers: Vec::new(),
        }
    }

    fn build(records: &[NewRecord]) -> Bytes {
        let mut builder = RecordBatchBuilder::new();
        for record in records {
            builder.push(record);
        }
        builder.build().unwrap()
    }

    #[test]
    fn header_offsets_match_kafka_layout() {
        assert_eq!(CRC_OFFSET, 17);
        assert_eq!(ATTRIBUTES_OFFSET, 21);
        assert_eq!(PRODUCER_ID_OFFSET, 43);
        assert_eq!(RECORDS_OFFSET, 61);
    }

    /// A batch written by Kafka's Java client (one record, key "key", value "value",
    /// timestamp 1700000000000), captured as bytes. Our decoder must read it and our builder
    /// must produce the same bytes.
    #[test]
    fn builder_output_matches_a_kafka_client_batch() {
        let bytes = build(&[record(1_700_000_000_000, Some(b"key"), Some(b"value"))]);
        let expected_records: &[u8] = &[
            0x1c, // length 14, zig-zag
            0x00, // attributes
            0x00, // timestamp delta 0
            0x00, // offset delta 0
            0x06, b'k', b'e', b'y', // key length 3
            0x0a, b'v', b'a', b'l', b'u', b'e', // value length 5
            0x00, // no headers
        ];
        assert_eq!(&bytes[RECORDS_OFFSET..], expected_records);
        let (batch, rest) = RecordBatch::split_first(&bytes).unwrap();
        assert!(rest.is_empty());
        batch.validate().unwrap();
        let header = batch.header();
        assert_eq!(header.record_count, 1);
        assert_eq!(header.base_timestamp, 1_700_000_000_000);
        assert_eq!(header.max_timestamp, 1_700_000_000_000);
        assert_eq!(header.producer_id, -1);
        assert_eq!(header.base_sequence, -1);
        assert_eq!(header.batch_length as usize, bytes.len() - 12);
    }

    #[test]
    fn setting_base_offset_keeps_the_crc_valid() {
        let mut bytes = BytesMut::from(&build(&[record(5, None, Some(b"v"))])[..]);
        set_base_offset(&mut bytes, 42);
        set_partition_leader_epoch(&mut bytes, 3);
        let bytes = bytes.freeze();
        let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
        batch.validate().unwrap();
        assert_eq!(batch.header().base_offset, 42);
        assert_eq!(batch.header().partition_leader_epoch, 3);
        assert_eq!(batch.records().next().unwrap().unwrap().offset, 42);
    }

    #[test]
    fn flipped_byte_in_a_record_fails_the_crc() {
        let bytes = build(&[record(5, Some(b"k"), Some(b"value"))]);
        let mut corrupt = BytesMut::from(&bytes[..]);
        let last = corrupt.len() - 2;
        corrupt[last] ^= 0x40;
        let corrupt = corrupt.freeze();
        let (batch, _) = RecordBatch::split_first(&corrupt).unwrap();
        assert!(matches!(batch.validate(), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn truncated_batch_is_reported_not_panicked() {
        let bytes = build(&[record(5, Some(b"k"), Some(b"value"))]);
        for cut in 0..bytes.len() {
            let partial = bytes.slice(..cut);
            assert!(RecordBatch::split_first(&partial).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn record_count_larger_than_the_records_is_rejected() {
        let bytes = build(&[record(5, None, Some(b"v"))]);
        let mut tampered = BytesMut::from(&bytes[..]);
        tampered[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&2i32.to_be_bytes());
        tampered[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4].copy_from_slice(&1i32.to_be_bytes());
        let crc = compute_crc(&tampered);
        tampered[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        let tampered = tampered.freeze();
        let (batch, _) = RecordBatch::split_first(&tampered).unwrap();
        assert!(batch.validate().is_err());
    }

    fn arbitrary_record() -> impl Strategy<Value = NewRecord> {
        (
            0i64..4_000_000_000_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            proptest::collection::vec(
                (
                    "[a-z]{0,8}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
                ),
                0..3,
            ),
        )
            .prop_map(|(timestamp, key, value, headers)| NewRecord {
                timestamp,
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                headers: headers
                    .into_iter()
                    .map(|(key, value)| RecordHeader {
                        key,
                        value: value.map(Bytes::from),
                    })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn built_batches_validate_and_decode_to_their_records(
            records in proptest::collection::vec(arbitrary_record(), 1..20),
            base_offset in 0i64..1 << 40,
        ) {
            let mut builder = RecordBatchBuilder::new();
            let mut expected_size = BATCH_HEADER_BYTES;
            for record in &records {
                expected_size += builder.record_size_bytes(record);
                builder.push(record);
            }
            prop_assert_eq!(builder.size_bytes(), expected_size);
            let mut bytes = BytesMut::from(&builder.build().unwrap()[..]);
            set_base_offset(&mut bytes, base_offset);
            let bytes = bytes.freeze();
            prop_assert_eq!(bytes.len(), expected_size);
            let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
            batch.validate().unwrap();
            prop_assert_eq!(batch.header().next_offset(), base_offset + records.len() as i64);
            let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap();
            prop_assert_eq!(batch.header().max_timestamp, max_timestamp);
            let decoded: Vec<Record> = batch.records().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(decoded.len(), records.len());
            for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(got.offset, base_offset + i as i64);
                prop_assert_eq!(got.timestamp, want.timestamp);
                prop_assert_eq!(&got.key, &want.key);
                prop_assert_eq!(&got.value, &want.value);
                prop_assert_eq!(&got.headers, &want.headers);
            }
        }

        #[test]
        fn batch_iter_walks_back_to_back_batches(
            batches in proptest::collection::vec(proptest::collection::vec(arbitrary_record(), 1..5), 1..6),
        ) {
            let mut wire = BytesMut::new();
            for records in &batches {
                wire.extend_from_slice(&build(records));
            }
            let decoded: Vec<RecordBatch> = BatchIter::new(wire.freeze()).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(decoded.len(), batches.len());
            for (batch, records) in decoded.iter().zip(&batches) {
                prop_assert_eq!(batch.header().record_count as usize, records.len());
            }
        }

        #[test]
        fn mutated_batches_never_panic_and_never_validate_with_a_wrong_crc(
            records in proptest::collection::vec(arbitrary_record(), 1..5),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        ) {
            let original = build(&records);
            let mut mutated = BytesMut::from(&original[..]);
            for (index, mask) in &flips {
                let at = index.index(mutated.len());
                mutated[at] ^= mask;
            }
            let mutated = mutated.freeze();
            if let Ok((batch, _)) = RecordBatch::split_first(&mutated) {
                let crc_region_changed = mutated[ATTRIBUTES_OFFSET..] != original[ATTRIBUTES_OFFSET..];
                let crc_field_changed = mutated[CRC_OFFSET..ATTRIBUTES_OFFSET] != original[CRC_OFFSET..ATTRIBUTES_OFFSET];
                if batch.validate().is_ok() {
                    prop_assert!(!crc_region_changed && !crc_field_changed);
                }
                for record in batch.records() {
                    let _ = record;
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            for batch in BatchIter::new(Bytes::from(bytes)) {
                match batch {
                    Ok(batch) => {
                        let _ = batch.validate();
                        for record in batch.records() {
                            let _ = record;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
