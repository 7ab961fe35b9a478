//! The keys of a batch's records, found by walking the records section (decompressed if the
//! batch is compressed, bounded like the append path's validation). Only the fields before
//! the key are read; the rest of each record is stepped over by its length.

use bytes::Bytes;
use tidelog_proto::batch::{BatchHeader, Compression, BATCH_HEADER_BYTES};
use tidelog_proto::BatchError;

/// One keyed record of an append or a scanned batch: where its key lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyRef {
    /// Index of the batch in the append (or 0 for a single batch).
    pub batch: u32,
    /// The record's offset delta within its batch.
    pub offset_delta: u32,
    /// Index of the record within the whole append, counting records across batches.
    pub record_index: u32,
    /// Where the record starts in its batch's records section (see `table::Place`).
    pub record_start: u32,
    start: u32,
    len: u32,
}

/// The keyed records of one append, in record order, with the buffers their keys lie in.
#[derive(Debug, Default)]
pub(crate) struct KeyedRecords {
    /// Per batch: its records section (the batch itself, or its decompressed records).
    sections: Vec<Bytes>,
    pub entries: Vec<KeyRef>,
    /// Sum of the keys' lengths.
    pub key_bytes: usize,
}

impl KeyedRecords {
    pub fn key(&self, entry: &KeyRef) -> &[u8] {
        let section = &self.sections[entry.batch as usize];
        &section[entry.start as usize..(entry.start + entry.len) as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keyed records with their keys, in record order.
    pub fn iter(&self) -> impl Iterator<Item = (&KeyRef, &[u8])> {
        self.entries.iter().map(move |entry| (entry, self.key(entry)))
    }
}

/// The keyed records of `batches` (already validated by the append path).
///
/// # Errors
/// A batch whose records do not decode (or decompress within `decompressed_bytes_max`).
pub(crate) fn keyed_records<'a>(
    batches: impl IntoIterator<Item = (&'a BatchHeader, &'a Bytes)>,
    decompressed_bytes_max: usize,
) -> Result<KeyedRecords, BatchError> {
    let mut out = KeyedRecords::default();
    let mut record_index: u32 = 0;
    for (index, (header, bytes)) in batches.into_iter().enumerate() {
        let batch = u32::try_from(index).unwrap_or(u32::MAX);
        let (section, start) = records_section(header, bytes, decompressed_bytes_max)?;
        let count = usize::try_from(header.record_count.max(0)).unwrap_or(0);
        walk_keys(
            &section,
            start,
            count,
            |offset_delta, record_start, key_start, key_len| {
                out.key_bytes += key_len as usize;
                out.entries.push(KeyRef {
                    batch,
                    offset_delta,
                    record_index: record_index.saturating_add(offset_delta),
                    record_start,
                    start: key_start,
                    len: key_len,
                });
            },
        )?;
        out.sections.push(section);
        record_index = record_index.saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
    }
    Ok(out)
}

/// Calls `each(offset_delta, record_start, key)` for every keyed record of one whole batch
/// (`bytes` from its first byte; not copied unless the batch is compressed).
///
/// # Errors
/// As [`keyed_records`].
pub(crate) fn for_each_key(
    header: &BatchHeader,
    bytes: &[u8],
    decompressed_bytes_max: usize,
    mut each: impl FnMut(u32, u32, &[u8]),
) -> Result<(), BatchError> {
    let count = usize::try_from(header.record_count.max(0)).unwrap_or(0);
    let decompressed;
    let (section, start) = match header.compression()? {
        Compression::None => (bytes, BATCH_HEADER_BYTES),
        codec => {
            let stored = bytes.get(BATCH_HEADER_BYTES..).ok_or(BatchError::BadRecord {
                index: 0,
                reason: "batch shorter than its header",
            })?;
            decompressed = tidelog_proto::compression::decompress(codec, stored, decompressed_bytes_max)?;
            (&decompressed[..], 0)
        }
    };
    walk_keys(
        section,
        start,
        count,
        |offset_delta, record_start, key_start, key_len| {
            each(
                offset_delta,
                record_start,
                &section[key_start as usize..(key_start + key_len) as usize],
            );
        },
    )
}

/// One record decoded from a records section at `start`.
#[derive(Debug)]
pub(crate) struct DecodedRecord {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Decodes the record starting at `start` of `section` (keys and values share its buffer).
///
/// # Errors
/// The bytes there are not a whole record.
pub(crate) fn decode_record_at(section: &Bytes, start: usize) -> Result<DecodedRecord, BatchError> {
    let bad = |reason: &'static str| BatchError::BadRecord { index: 0, reason };
    let (length, used) = varint(section, start).ok_or(bad("bad length varint"))?;
    let body = start + used;
    let end = usize::try_from(length)
        .ok()
        .and_then(|length| body.checked_add(length))
        .filter(|end| *end <= section.len())
        .ok_or(bad("length runs past the batch"))?;
    let record = &section[..end];
    let mut at = body + 1;
    if at > end {
        return Err(bad("missing attributes"));
    }
    let (timestamp_delta, used) = varlong(record, at).ok_or(bad("bad timestamp delta"))?;
    at += used;
    let (offset_delta, used) = varint(record, at).ok_or(bad("bad offset delta"))?;
    at += used;
    let nullable = |at: &mut usize| -> Result<Option<Bytes>, BatchError> {
        let (length, used) = varint(record, *at).ok_or(bad("bad length"))?;
        *at += used;
        if length < 0 {
            return Ok(None);
        }
        let field_end = at
            .checked_add(length as usize)
            .filter(|field_end| *field_end <= end)
            .ok_or(bad("field runs past the record"))?;
        let field = section.slice(*at..field_end);
        *at = field_end;
        Ok(Some(field))
    };
    let key = nullable(&mut at)?;
    let value = nullable(&mut at)?;
    let (header_count, used) = varint(record, at).ok_or(bad("bad header count"))?;
    at += used;
    if header_count < 0 {
        return Err(bad("negative header count"));
    }
    let mut headers = Vec::new();
    // Each header takes at least two bytes, so this ends within the record's length.
    for _ in 0..header_count {
        let name = nullable(&mut at)?.ok_or(bad("null header key"))?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| bad("header key is not UTF-8"))?;
        let header_value = nullable(&mut at)?;
        headers.push((name, header_value));
    }
    if at != end {
        return Err(bad("length does not match its fields"));
    }
    Ok(DecodedRecord {
        offset_delta,
        timestamp_delta,
        key,
        value,
        headers,
    })
}

/// The records section of a batch and where in it the first record starts.
fn records_section(
    header: &BatchHeader,
    bytes: &Bytes,
    decompressed_bytes_max: usize,
) -> Result<(Bytes, usize), BatchError> {
    match header.compression()? {
        Compression::None => Ok((bytes.clone(), BATCH_HEADER_BYTES)),
        codec => {
            let stored = bytes.get(BATCH_HEADER_BYTES..).ok_or(BatchError::BadRecord {
                index: 0,
                reason: "batch shorter than its header",
            })?;
            let records = tidelog_proto::compression::decompress(codec, stored, decompressed_bytes_max)?;
            Ok((Bytes::from(records), 0))
        }
    }
}

/// Walks `count` records from `start`, calling `each(offset_delta, record_start, key_start,
/// key_len)` for each non-null key. Positions fit in u32: a section is at most `BATCH_BYTES_MAX` (or the
/// decompression bound), both far below 4 GiB.
fn walk_keys(
    section: &[u8],
    start: usize,
    count: usize,
    mut each: impl FnMut(u32, u32, u32, u32),
) -> Result<(), BatchError> {
    let mut position = start;
    for index in 0..count {
        let bad = |reason: &'static str| BatchError::BadRecord { index, reason };
        let (length, used) = varint(section, position).ok_or(bad("bad length varint"))?;
        let body = position + used;
        let end = usize::try_from(length)
            .ok()
            .and_then(|length| body.checked_add(length))
            .filter(|end| *end <= section.len())
            .ok_or(bad("length runs past the batch"))?;
        // Attributes (one byte), timestamp delta, offset delta, key length.
        let mut at = body + 1;
        if at > end {
            return Err(bad("missing attributes"));
        }
        let (_, used) = varlong(&section[..end], at).ok_or(bad("bad timestamp delta"))?;
        at += used;
        let (offset_delta, used) = varint(&section[..end], at).ok_or(bad("bad offset delta"))?;
        at += used;
        let (key_length, used) = varint(&section[..end], at).ok_or(bad("bad key"))?;
        at += used;
        if key_length >= 0 {
            let key_end = at
                .checked_add(key_length as usize)
                .filter(|key_end| *key_end <= end)
                .ok_or(bad("bad key"))?;
            let offset_delta = u32::try_from(offset_delta).map_err(|_| bad("bad offset delta"))?;
            each(
                offset_delta,
                u32::try_from(position).unwrap_or(u32::MAX),
                u32::try_from(at).unwrap_or(u32::MAX),
                u32::try_from(key_end - at).unwrap_or(u32::MAX),
            );
        }
        position = end;
    }
    Ok(())
}

fn unsigned(bytes: &[u8], at: usize, max_bytes: usize) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (index, byte) in bytes.get(at..)?.iter().take(max_bytes).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

/// A zig-zag varint (Kafka's record fields), at most 5 bytes.
fn varint(bytes: &[u8], at: usize) -> Option<(i32, usize)> {
    // Fast path: most fields of small records are one byte.
    if let Some(byte) = bytes.get(at) {
        if byte & 0x80 == 0 {
            let raw = i32::from(*byte);
            return Some(((raw >> 1) ^ -(raw & 1), 1));
        }
    }
    let (raw, used) = unsigned(bytes, at, 5)?;
    let raw = u32::try_from(raw).ok()?;
    Some((((raw >> 1) as i32) ^ -((raw & 1) as i32), used))
}

fn varlong(bytes: &[u8], at: usize) -> Option<(i64, usize)> {
    let (raw, used) = unsigned(bytes, at, 10)?;
    Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), used))
}
