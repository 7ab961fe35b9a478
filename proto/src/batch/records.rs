//! Decoding a batch's records into owned values: what a consumer reads. Keys and values share
//! the records buffer (the batch's own, or its decompressed copy).

use bytes::Bytes;

use crate::varint::{read_varint, read_varlong};
use crate::BatchError;

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

/// The records of one batch, decoded lazily. Stops after the first error.
#[derive(Debug, Clone)]
pub struct RecordIter {
    /// The records section starts at `position` and runs to the end of `bytes`.
    bytes: Bytes,
    #[cfg_attr(not(test), allow(dead_code))]
    start: usize,
    position: usize,
    index: usize,
    remaining: usize,
    base_offset: i64,
    base_timestamp: i64,
    failed: bool,
    /// An error found before the first record (the records could not be decompressed),
    /// handed out by the first `next`.
    pending: Option<BatchError>,
}

impl RecordIter {
    /// `count` records in `bytes[start..]`, numbered from the batch's base offset and timestamp.
    pub(super) fn new(
        bytes: Bytes,
        start: usize,
        count: usize,
        base_offset: i64,
        base_timestamp: i64,
    ) -> Self {
        Self {
            bytes,
            start,
            position: start,
            index: 0,
            remaining: count,
            base_offset,
            base_timestamp,
            failed: false,
            pending: None,
        }
    }

    /// Bytes of the records section decoded so far.
    #[cfg(test)]
    pub(crate) fn position_in_section(&self) -> usize {
        self.position - self.start
    }

    /// An iterator whose only item is `error`.
    pub(super) fn failed(error: BatchError) -> Self {
        let mut iter = Self::new(Bytes::new(), 0, 0, 0, 0);
        iter.pending = Some(error);
        iter
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.pending.take() {
            self.failed = true;
            return Some(Err(error));
        }
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
