//! Structure-only validation of a records section: the checks the record decoder makes
//! (length varint and bounds, attributes, timestamp and offset deltas, key, value and header
//! lengths within the record, UTF-8 header keys), without building a `Record` or allocating.
//! The broker runs it on every produced batch, so it is on the hot path at small records:
//! most varints are one byte, and those take a branch, not a loop.
//!
//! The verdict and the error are those of decoding every record with
//! [`RecordIter`](super::RecordIter) and checking its offset delta; the tests hold it to that.

use crate::varint::{read_varint, read_varlong};
use crate::BatchError;

/// Checks that `section` holds exactly `count` well-formed records with offset deltas
/// 0, 1, 2, ... and nothing after them.
pub(super) fn check_records(section: &[u8], count: usize) -> Result<(), BatchError> {
    let mut position = 0;
    for index in 0..count {
        position = check_record(section, position, index)?;
    }
    if position != section.len() {
        return Err(BatchError::TrailingBytes {
            consumed: position,
            length: section.len(),
        });
    }
    Ok(())
}

/// Checks the record at `start` (the `index`th) and returns where the next one starts.
fn check_record(section: &[u8], start: usize, index: usize) -> Result<usize, BatchError> {
    let bad = |reason: &'static str| BatchError::BadRecord { index, reason };
    let (length, used) = varint(section, start, section.len()).ok_or_else(|| bad("bad length varint"))?;
    let body_start = start + used;
    let end = usize::try_from(length)
        .ok()
        .and_then(|length| body_start.checked_add(length))
        .filter(|end| *end <= section.len())
        .ok_or_else(|| bad("length runs past the batch"))?;
    let body = Body { section, end };
    // Attributes: one byte, unused in v2.
    if body_start >= end {
        return Err(bad("missing attributes"));
    }
    let mut at = body_start + 1;
    at += body.varlong_len(at).ok_or_else(|| bad("bad timestamp delta"))?;
    let (offset_delta, used) = varint(section, at, end).ok_or_else(|| bad("bad offset delta"))?;
    at += used;
    at = body.skip_nullable(at).ok_or_else(|| bad("bad key"))?.0;
    at = body.skip_nullable(at).ok_or_else(|| bad("bad value"))?.0;
    let (header_count, used) = varint(section, at, end).ok_or_else(|| bad("bad header count"))?;
    at += used;
    if header_count < 0 {
        return Err(bad("negative header count"));
    }
    // Each header takes at least two bytes, so this loop ends within the record's length.
    for _ in 0..header_count {
        let (after_key, key) = body.skip_nullable(at).ok_or_else(|| bad("bad header key"))?;
        let key = key.ok_or_else(|| bad("null header key"))?;
        std::str::from_utf8(key).map_err(|_| bad("header key is not UTF-8"))?;
        at = body
            .skip_nullable(after_key)
            .ok_or_else(|| bad("bad header value"))?
            .0;
    }
    if at != end {
        return Err(bad("length does not match its fields"));
    }
    let expected = i32::try_from(index).unwrap_or(i32::MAX);
    if offset_delta != expected {
        return Err(BatchError::BadOffsetDelta {
            index,
            expected,
            found: offset_delta,
        });
    }
    Ok(end)
}

/// One record's bytes: `section[..end]`, read from positions at or below `end`.
struct Body<'a> {
    section: &'a [u8],
    end: usize,
}

impl<'a> Body<'a> {
    fn varlong_len(&self, at: usize) -> Option<usize> {
        match self.section.get(at) {
            Some(&byte) if at < self.end && byte < 0x80 => Some(1),
            _ => read_varlong(self.section.get(at..self.end)?).map(|(_, used)| used),
        }
    }

    /// Skips a length-prefixed nullable field; returns the position after it and its bytes
    /// (`None` for a null). `None` overall: malformed.
    fn skip_nullable(&self, at: usize) -> Option<(usize, Option<&'a [u8]>)> {
        let (length, used) = varint(self.section, at, self.end)?;
        let start = at + used;
        if length == -1 {
            return Some((start, None));
        }
        let length = usize::try_from(length).ok()?;
        let stop = start.checked_add(length).filter(|stop| *stop <= self.end)?;
        Some((stop, Some(&self.section[start..stop])))
    }
}

/// The zig-zag varint at `buf[at..end]` and its length; one-byte varints take the fast path.
#[inline]
fn varint(buf: &[u8], at: usize, end: usize) -> Option<(i32, usize)> {
    match buf.get(at) {
        Some(&byte) if at < end && byte < 0x80 => {
            let raw = i32::from(byte);
            Some(((raw >> 1) ^ -(raw & 1), 1))
        }
        _ => read_varint(buf.get(at..end)?),
    }
}
