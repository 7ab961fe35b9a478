//! Filtering a stored batch's records: what log compaction and per-key erasure do to one batch.
//! The caller (the broker's cleaner) decides per record; this module rebuilds the batch so that
//! what stays is exactly what a Kafka broker's cleaner would leave, byte-compatible with Kafka
//! clients.
//!
//! What Kafka does, read in apache/kafka (`MemoryRecords.filterTo`, `MemoryRecordsBuilder`,
//! `DefaultRecordBatch`), and what this module keeps of it:
//! - **Delete horizon (KIP-534).** Attribute bit 6 (`DELETE_HORIZON_FLAG_MASK = 0x40`) says the
//!   batch's `baseTimestamp` (firstTimestamp) field holds the delete horizon, not a record
//!   time; `deleteHorizonMs()` is that field when the bit is set. `filterTo` sets it (to
//!   `now + delete.retention.ms`) only when the batch keeps a tombstone (a null value) and has
//!   no horizon yet; a batch that already has one keeps it, even once its tombstones are gone.
//!   The builder then writes each record's timestamp delta against the horizon, so every
//!   record's absolute timestamp is unchanged.
//! - **Whole batches stand.** A batch that keeps every record and needs no horizon is written
//!   as it was stored (`writeOriginalBatch`): here [`Filtered::Unchanged`], and the caller
//!   copies the stored bytes.
//! - **Rebuilt batches keep the batch's identity.** The same base offset, and the original last
//!   offset (`overrideLastOffset`, so the producer's last sequence survives), producer id,
//!   epoch, base sequence, partition leader epoch, codec, timestamp type and transactional
//!   bit; records keep their offset deltas, keys, values and headers. maxTimestamp is the
//!   newest kept record's, except under LogAppendTime, where it is the append time and stays.
//! - **Empty batches.** When every record goes, Kafka writes a header-only batch
//!   (`writeEmptyHeader`, record count 0) if the batch must be retained for the producer
//!   state (`BatchRetention.RETAIN_EMPTY`), else drops it. Here the caller says which with
//!   [`FilterOptions::keep_empty`]. Kafka stamps the placeholder's both timestamps with
//!   maxTimestamp; we keep the stored firstTimestamp unless it was a horizon (then
//!   maxTimestamp), since a placeholder keeps no tombstone and so no horizon.
//!
//! Where we differ on purpose: control batches are never filtered (the contract: they come
//! back [`Filtered::Unchanged`]; Kafka removes old transaction markers, we have no
//! transactions yet); a rebuilt batch without a horizon takes the oldest kept record's time
//! as its firstTimestamp (Kafka: the first kept record's; the same for producers that stamp
//! in order, and the oldest keeps every delta non-negative); and the CRC is checked before
//! anything is rebuilt, so a damaged stored batch is an error, never laundered into a valid
//! one with a fresh CRC.
//!
//! Input batches may be ones this module rebuilt before (a cleaned segment is cleaned again):
//! record counts up to lastOffsetDelta + 1, offset deltas strictly increasing within
//! 0..=lastOffsetDelta, and count-0 placeholders are all accepted; [`validate_filtered`]
//! checks exactly that shape.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::varint::{read_varint, read_varlong, varint_len, varlong_len, write_varint, write_varlong};

/// KIP-534: attribute bit 6, set when the batch's base timestamp is its delete horizon.
pub const ATTRIBUTE_DELETE_HORIZON: i16 = 0x40;

/// One record as the retain decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    /// The record's timestamp as a consumer sees it: base timestamp + delta, or the batch's
    /// maxTimestamp (the append time) for a LogAppendTime batch.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    /// A tombstone: the value is null.
    pub is_tombstone: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterOptions {
    /// If the batch has no delete horizon and keeps at least one tombstone, set it to this
    /// (now + delete.retention.ms). None: never set one.
    pub delete_horizon_ms: Option<i64>,
    /// When every record goes: keep a header-only placeholder (record count 0, the same base
    /// offset, lastOffsetDelta, producer id/epoch/base sequence, partition leader epoch,
    /// timestamps, transactional/timestamp-type bits; no compression) instead of removing it.
    /// A stored placeholder given with `keep_empty` false is removed.
    pub keep_empty: bool,
    /// Bound on a compressed batch's decompressed records (limits.batch_decompressed_bytes_max).
    pub decompressed_bytes_max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filtered {
    /// Every record kept and no horizon set: the stored bytes stand as they are.
    Unchanged,
    /// Rewritten: kept records byte-identical in key, value and headers, the same offset
    /// deltas, timestamps preserved (deltas re-based when the base timestamp becomes the
    /// horizon), re-compressed with the batch's own codec, CRC recomputed; or a placeholder.
    Rewritten {
        bytes: Bytes,
        records_kept: u32,
        tombstones_kept: u32,
    },
    /// Every record dropped and `keep_empty` false.
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterResult {
    pub outcome: Filtered,
    pub records_removed: u32,
}

/// Filters `batch`'s records through `retain`, called once per record in offset order after
/// the whole batch has been checked (a malformed batch is an error before `retain` sees any
/// record). Control batches come back `Unchanged` whatever `retain` says (once checked). A
/// batch is accepted exactly when [`validate_filtered`] accepts it.
///
/// # Errors
/// The batch's CRC does not match, its records are malformed or not in the shape a stored
/// batch has (see [`validate_filtered`]), they decompress past `decompressed_bytes_max`, a
/// re-based timestamp delta overflows, or re-compression fails.
pub fn filter_batch(
    batch: &RecordBatch,
    options: &FilterOptions,
    mut retain: impl FnMut(&RecordView<'_>) -> bool,
) -> Result<FilterResult, BatchError> {
    let header = *batch.header();
    // Checked like any other first: a damaged control batch is an error, not copied on.
    let decoded = decode(batch, options.decompressed_bytes_max)?;
    if header.is_control() {
        return Ok(unchanged());
    }
    if decoded.records.is_empty() {
        // A placeholder left by an earlier clean: nothing to filter.
        let outcome = if options.keep_empty {
            Filtered::Unchanged
        } else {
            Filtered::Removed
        };
        return Ok(FilterResult {
            outcome,
            records_removed: 0,
        });
    }
    let section = &decoded.section[..];
    let log_append_time = header.is_log_append_time();
    let mut kept = Vec::with_capacity(decoded.records.len());
    let mut tombstones_kept = 0u32;
    for raw in &decoded.records {
        let view = RecordView {
            offset: header.base_offset.saturating_add(i64::from(raw.offset_delta)),
            timestamp: if log_append_time {
                header.max_timestamp
            } else {
                raw.timestamp
            },
            key: raw.key.map(|(start, end)| &section[start..end]),
            is_tombstone: raw.is_tombstone,
        };
        if retain(&view) {
            tombstones_kept += u32::from(raw.is_tombstone);
            kept.push(raw);
        }
    }
    // At most i32::MAX records: decode() checked the count against lastOffsetDelta.
    let records_removed = (decoded.records.len() - kept.len()) as u32;
    if kept.is_empty() {
        let outcome = if options.keep_empty {
            Filtered::Rewritten {
                bytes: placeholder(&header),
                records_kept: 0,
                tombstones_kept: 0,
            }
        } else {
            Filtered::Removed
        };
        return Ok(FilterResult {
            outcome,
            records_removed,
        });
    }
    let existing_horizon = header.delete_horizon_ms();
    let new_horizon = match (existing_horizon, options.delete_horizon_ms) {
        (None, Some(horizon)) if tombstones_kept > 0 => Some(horizon),
        _ => None,
    };
    if records_removed == 0 && new_horizon.is_none() {
        return Ok(unchanged());
    }
    let base_timestamp = match (new_horizon, existing_horizon) {
        (Some(horizon), _) | (None, Some(horizon)) => horizon,
        // kept is not empty.
        (None, None) => kept
            .iter()
            .map(|raw| raw.timestamp)
            .min()
            .unwrap_or(header.base_timestamp),
    };
    let max_timestamp = if log_append_time {
        header.max_timestamp
    } else {
        kept.iter()
            .map(|raw| raw.timestamp)
            .max()
            .unwrap_or(header.max_timestamp)
    };
    let mut records = Vec::with_capacity(section.len());
    for (index, raw) in kept.iter().enumerate() {
        encode_record(
            &mut records,
            section,
            raw,
            index,
            header.base_timestamp,
            base_timestamp,
        )?;
    }
    let codec = header.compression()?;
    let records = match codec {
        Compression::None => records,
        codec => crate::compression::compress(codec, &records)?,
    };
    let mut attributes = header.attributes;
    if new_horizon.is_some() {
        attributes |= ATTRIBUTE_DELETE_HORIZON;
    }
    let records_kept = kept.len() as u32;
    let bytes = write_batch(
        &BatchFields {
            attributes,
            base_timestamp,
            max_timestamp,
            record_count: records_kept as i32,
            ..BatchFields::of(&header)
        },
        &records,
    )?;
    Ok(FilterResult {
        outcome: Filtered::Rewritten {
            bytes,
            records_kept,
            tombstones_kept,
        },
        records_removed,
    })
}

/// Checks a batch as a cleaned segment may hold it: the CRC, a record count of at most
/// lastOffsetDelta + 1 (0 for a placeholder), offset deltas strictly increasing within
/// 0..=lastOffsetDelta, and records that fill the (decompressed) section exactly. Every batch
/// a producer writes passes too; [`RecordBatch::validate`] is the stricter check for those.
///
/// # Errors
/// The first problem found, as [`BatchError`].
pub fn validate_filtered(batch: &RecordBatch, decompressed_bytes_max: usize) -> Result<(), BatchError> {
    decode(batch, decompressed_bytes_max).map(|_| ())
}

fn unchanged() -> FilterResult {
    FilterResult {
        outcome: Filtered::Unchanged,
        records_removed: 0,
    }
}

/// One record's place in the records section.
#[derive(Debug)]
struct RawRecord {
    /// The record's bytes after its length varint: attributes, timestamp delta, ...
    body: (usize, usize),
    attributes: u8,
    timestamp: i64,
    offset_delta: i32,
    /// Where the key's length varint starts: key, value and headers run from here to the end.
    fields_start: usize,
    key: Option<(usize, usize)>,
    is_tombstone: bool,
}

struct Decoded {
    /// The records section, decompressed.
    section: Bytes,
    records: Vec<RawRecord>,
}

fn decode(batch: &RecordBatch, decompressed_bytes_max: usize) -> Result<Decoded, BatchError> {
    let header = batch.header();
    let bytes = batch.as_bytes();
    let computed = compute_crc(bytes);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            computed,
        });
    }
    let count = header.record_count;
    if count < 0 {
        return Err(BatchError::BadRecordCount(count));
    }
    if header.last_offset_delta < 0 || i64::from(count) > i64::from(header.last_offset_delta) + 1 {
        return Err(BatchError::BadLastOffsetDelta {
            last_offset_delta: header.last_offset_delta,
            record_count: count,
        });
    }
    let codec = header.compression()?;
    let stored = bytes.slice(BATCH_HEADER_BYTES..);
    let section = match codec {
        Compression::None => stored,
        codec => Bytes::from(crate::compression::decompress(
            codec,
            &stored,
            decompressed_bytes_max,
        )?),
    };
    // Every record takes at least RECORD_BYTES_MIN bytes: a count the section cannot hold is
    // refused before anything is allocated for it.
    let count = count as usize;
    if count.saturating_mul(RECORD_BYTES_MIN) > section.len() {
        return Err(BatchError::BadRecordCount(header.record_count));
    }
    let mut records = Vec::with_capacity(count);
    let mut position = 0;
    let mut previous_delta = -1i32;
    for index in 0..count {
        let (raw, end) = decode_record(&section, position, index, header.base_timestamp)?;
        if raw.offset_delta <= previous_delta || raw.offset_delta > header.last_offset_delta {
            return Err(BatchError::BadOffsetDelta {
                index,
                expected: previous_delta.saturating_add(1),
                found: raw.offset_delta,
            });
        }
        previous_delta = raw.offset_delta;
        position = end;
        records.push(raw);
    }
    if position != section.len() {
        return Err(BatchError::TrailingBytes {
            consumed: position,
            length: section.len(),
        });
    }
    Ok(Decoded { section, records })
}

/// The record at `start` (the `index`th) and where the next one starts. The same checks as
/// the record decoder (`RecordIter`), so a batch this accepts decodes.
fn decode_record(
    section: &[u8],
    start: usize,
    index: usize,
    base_timestamp: i64,
) -> Result<(RawRecord, usize), BatchError> {
    let bad = |reason: &'static str| BatchError::BadRecord { index, reason };
    let (length, used) = read_varint(&section[start..]).ok_or_else(|| bad("bad length varint"))?;
    let body_start = start + used;
    let end = usize::try_from(length)
        .ok()
        .and_then(|length| body_start.checked_add(length))
        .filter(|end| *end <= section.len())
        .ok_or_else(|| bad("length runs past the batch"))?;
    let mut cursor = Cursor {
        section,
        at: body_start,
        end,
    };
    let attributes = *section
        .get(body_start)
        .filter(|_| body_start < end)
        .ok_or_else(|| bad("missing attributes"))?;
    cursor.at += 1;
    let timestamp_delta = cursor.varlong().ok_or_else(|| bad("bad timestamp delta"))?;
    let offset_delta = cursor.varint().ok_or_else(|| bad("bad offset delta"))?;
    let fields_start = cursor.at;
    let key = cursor.nullable().ok_or_else(|| bad("bad key"))?;
    let value = cursor.nullable().ok_or_else(|| bad("bad value"))?;
    let header_count = cursor.varint().ok_or_else(|| bad("bad header count"))?;
    if header_count < 0 {
        return Err(bad("negative header count"));
    }
    // Each header takes at least two bytes, so this loop ends within the record's length.
    for _ in 0..header_count {
        let key = cursor.nullable().ok_or_else(|| bad("bad header key"))?;
        let (key_start, key_end) = key.ok_or_else(|| bad("null header key"))?;
        std::str::from_utf8(&section[key_start..key_end]).map_err(|_| bad("header key is not UTF-8"))?;
        cursor.nullable().ok_or_else(|| bad("bad header value"))?;
    }
    if cursor.at != end {
        return Err(bad("length does not match its fields"));
    }
    let raw = RawRecord {
        body: (body_start, end),
        attributes,
        // As the record decoder computes it, so a view's timestamp is what a reader sees.
        timestamp: base_timestamp.saturating_add(timestamp_delta),
        offset_delta,
        fields_start,
        key,
        is_tombstone: value.is_none(),
    };
    Ok((raw, end))
}

/// A cursor over one record's bytes, `section[at..end]`.
struct Cursor<'a> {
    section: &'a [u8],
    at: usize,
    end: usize,
}

impl Cursor<'_> {
    fn varint(&mut self) -> Option<i32> {
        let (value, used) = read_varint(&self.section[self.at..self.end])?;
        self.at += used;
        Some(value)
    }

    fn varlong(&mut self) -> Option<i64> {
        let (value, used) = read_varlong(&self.section[self.at..self.end])?;
        self.at += used;
        Some(value)
    }

    /// A length-prefixed nullable field's range (`Some(None)` for a null); `None`: malformed.
    fn nullable(&mut self) -> Option<Option<(usize, usize)>> {
        let length = self.varint()?;
        if length == -1 {
            return Some(None);
        }
        let length = usize::try_from(length).ok()?;
        let start = self.at;
        let end = start.checked_add(length).filter(|end| *end <= self.end)?;
        self.at = end;
        Some(Some((start, end)))
    }
}

/// Appends `raw` to `out`: its stored bytes when the base timestamp stays, else re-encoded with
/// its timestamp delta against `new_base` (the rest of the record copied as it was).
fn encode_record(
    out: &mut Vec<u8>,
    section: &[u8],
    raw: &RawRecord,
    index: usize,
    old_base: i64,
    new_base: i64,
) -> Result<(), BatchError> {
    let (body_start, body_end) = raw.body;
    if old_base == new_base {
        let length = i32::try_from(body_end - body_start).unwrap_or(i32::MAX);
        write_varint(out, length);
        out.extend_from_slice(&section[body_start..body_end]);
        return Ok(());
    }
    let delta = raw.timestamp.checked_sub(new_base).ok_or(BatchError::BadRecord {
        index,
        reason: "timestamp delta out of range after re-basing",
    })?;
    let fields = &section[raw.fields_start..body_end];
    let body = 1 + varlong_len(delta) + varint_len(raw.offset_delta) + fields.len();
    // A record's body came from an i32 length; the new delta adds at most 10 bytes.
    let length = i32::try_from(body).map_err(|_| BatchError::TooLarge {
        length: body,
        max: i32::MAX as usize,
    })?;
    write_varint(out, length);
    out.push(raw.attributes);
    write_varlong(out, delta);
    write_varint(out, raw.offset_delta);
    out.extend_from_slice(fields);
    Ok(())
}

/// The header fields a rebuilt batch is written with.
struct BatchFields {
    base_offset: i64,
    partition_leader_epoch: i32,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    record_count: i32,
}

impl BatchFields {
    fn of(header: &BatchHeader) -> Self {
        Self {
            base_offset: header.base_offset,
            partition_leader_epoch: header.partition_leader_epoch,
            attributes: header.attributes,
            last_offset_delta: header.last_offset_delta,
            base_timestamp: header.base_timestamp,
            max_timestamp: header.max_timestamp,
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
            record_count: header.record_count,
        }
    }
}

/// The header-only batch that stands for `header`'s batch once all its records are gone.
fn placeholder(header: &BatchHeader) -> Bytes {
    let horizon = header.delete_horizon_ms().is_some();
    let fields = BatchFields {
        attributes: header.attributes & (TIMESTAMP_TYPE_BIT | TRANSACTIONAL_BIT),
        // A horizon is no record's time, and the placeholder has no tombstone left to need it.
        base_timestamp: if horizon {
            header.max_timestamp
        } else {
            header.base_timestamp
        },
        record_count: 0,
        ..BatchFields::of(header)
    };
    // An empty records section always fits.
    write_batch(&fields, &[]).unwrap_or_default()
}

fn write_batch(fields: &BatchFields, records: &[u8]) -> Result<Bytes, BatchError> {
    let total = BATCH_HEADER_BYTES + records.len();
    let length = i32::try_from(total - LOG_OVERHEAD_BYTES).map_err(|_| BatchError::TooLarge {
        length: total,
        max: i32::MAX as usize,
    })?;
    let mut out = BytesMut::with_capacity(total);
    out.put_i64(fields.base_offset);
    out.put_i32(length);
    out.put_i32(fields.partition_leader_epoch);
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // CRC, filled in below
    out.put_i16(fields.attributes);
    out.put_i32(fields.last_offset_delta);
    out.put_i64(fields.base_timestamp);
    out.put_i64(fields.max_timestamp);
    out.put_i64(fields.producer_id);
    out.put_i16(fields.producer_epoch);
    out.put_i32(fields.base_sequence);
    out.put_i32(fields.record_count);
    out.extend_from_slice(records);
    let crc = compute_crc(&out);
    out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests;
