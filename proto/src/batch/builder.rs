//! Building a batch as a producer does (tests, tools, and the reference for the client's
//! `BatchWriter`).

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::varint::{varint_len, varlong_len, write_varint, write_varlong};
use crate::CompressionError;

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

/// Compresses the records of the uncompressed batch `batch` with `codec`: the same header with
/// the codec in its attributes, its length and CRC updated. Returns `batch` unchanged for
/// [`Compression::None`].
///
/// `batch` must be one whole uncompressed batch as [`RecordBatchBuilder`] or a producer
/// writes it; a shorter buffer is an error, not a panic.
pub fn compress_batch(batch: &[u8], codec: Compression) -> Result<Bytes, CompressionError> {
    let failed = |reason: &str| CompressionError {
        codec: codec.name(),
        reason: reason.into(),
    };
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(failed("not a whole batch"));
    }
    if codec == Compression::None {
        return Ok(Bytes::copy_from_slice(batch));
    }
    let attributes = i16_at(batch, ATTRIBUTES_OFFSET);
    if attributes & COMPRESSION_MASK != 0 {
        return Err(failed("the batch is compressed already"));
    }
    let records = crate::compression::compress(codec, &batch[BATCH_HEADER_BYTES..])?;
    let total = BATCH_HEADER_BYTES + records.len();
    let length = i32::try_from(total - LOG_OVERHEAD_BYTES).map_err(|_| failed("batch too large"))?;
    let mut out = BytesMut::with_capacity(total);
    out.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    out.extend_from_slice(&records);
    out[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    let attributes = attributes | i16::from(codec.id());
    out[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}
