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
/// 0, 1, 2, ... and nothing after them. Returns whether any record carries a header (the
/// broker looks for expectation headers only then).
pub(super) fn check_records(section: &[u8], count: usize) -> Result<bool, BatchError> {
    let mut position = 0;
    let mut has_headers = false;
    for index in 0..count {
        let (end, headers) = check_record(section, position, index)?;
        position = end;
        has_headers |= headers;
    }
    if position != section.len() {
        return Err(BatchError::TrailingBytes {
            consumed: position,
            length: section.len(),
        });
    }
    Ok(has_headers)
}

/// Checks the record at `start` (the `index`th) and returns where the next one starts, and
/// whether the record has headers.
fn check_record(section: &[u8], start: usize, index: usize) -> Result<(usize, bool), BatchError> {
    let bad = |reason: &'static str| BatchError::BadRecord { index, reason };
    let (length, used) = varint(section, start, section.len()).ok_or_else(|| bad("bad length varint"))?;
    let body_start = start + used;
    let end = usize::try_from(length)
        .ok()
        .and_then(|length| body_start.checked_add(length))
        .filter(|end| *end <= section.len())
        .ok_or_else(|| bad("length runs past the batch"))?;
    // Every read below is within the record's own bytes.
    let mut fields = Fields {
        body: &section[body_start..end],
        at: 0,
    };
    // Attributes: one byte, unused in v2.
    if fields.body.is_empty() {
        return Err(bad("missing attributes"));
    }
    fields.at = 1;
    fields.skip_varlong().ok_or_else(|| bad("bad timestamp delta"))?;
    let offset_delta = fields.varint().ok_or_else(|| bad("bad offset delta"))?;
    fields.nullable().ok_or_else(|| bad("bad key"))?;
    fields.nullable().ok_or_else(|| bad("bad value"))?;
    let header_count = fields.varint().ok_or_else(|| bad("bad header count"))?;
    if header_count < 0 {
        return Err(bad("negative header count"));
    }
    // Each header takes at least two bytes, so this loop ends within the record's length.
    for _ in 0..header_count {
        let key = fields.nullable().ok_or_else(|| bad("bad header key"))?;
        let key = key.ok_or_else(|| bad("null header key"))?;
        std::str::from_utf8(key).map_err(|_| bad("header key is not UTF-8"))?;
        fields.nullable().ok_or_else(|| bad("bad header value"))?;
    }
    if fields.at != fields.body.len() {
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
    Ok((end, header_count > 0))
}

/// A cursor over one record's bytes (after its length).
struct Fields<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    #[inline(always)]
    fn varint(&mut self) -> Option<i32> {
        let (value, used) = varint(self.body, self.at, self.body.len())?;
        self.at += used;
        Some(value)
    }

    #[inline(always)]
    fn skip_varlong(&mut self) -> Option<()> {
        let used = match short_varint(self.body, self.at, self.body.len()) {
            Some((_, used)) => used,
            None => read_varlong(self.body.get(self.at..)?)?.1,
        };
        self.at += used;
        Some(())
    }

    /// A length-prefixed nullable field's bytes (`None` for a null); `None` overall:
    /// malformed.
    #[inline(always)]
    fn nullable(&mut self) -> Option<Option<&'a [u8]>> {
        let length = self.varint()?;
        if length == -1 {
            return Some(None);
        }
        let length = usize::try_from(length).ok()?;
        let field = self.body.get(self.at..)?.get(..length)?;
        self.at += length;
        Some(Some(field))
    }
}

/// The zig-zag varint at `buf[at..end]` and its length. One- and two-byte varints (nearly all
/// of them at small records: lengths below 8 KiB, deltas below 8192) take a branch each;
/// longer ones the general decoder, whose bounds (5 bytes, 32 bits) are the same.
#[inline(always)]
fn varint(buf: &[u8], at: usize, end: usize) -> Option<(i32, usize)> {
    let (raw, used) = match short_varint(buf, at, end) {
        Some(short) => short,
        None => read_varint(buf.get(at..end)?).map(|(value, used)| (zigzag_encode(value), used))?,
    };
    Some((((raw >> 1) as i32) ^ -((raw & 1) as i32), used))
}

/// The unsigned value and length of a one- or two-byte varint at `buf[at..end]`; `None` for
/// anything else (longer, truncated, or out of bounds), which the caller decodes the slow way.
#[inline(always)]
fn short_varint(buf: &[u8], at: usize, end: usize) -> Option<(u32, usize)> {
    let end = end.min(buf.len());
    if at >= end {
        return None;
    }
    let first = buf[at];
    if first < 0x80 {
        return Some((u32::from(first), 1));
    }
    if at + 1 < end && buf[at + 1] < 0x80 {
        return Some((u32::from(first & 0x7f) | u32::from(buf[at + 1]) << 7, 2));
    }
    None
}

/// Back to the unsigned form, so both paths share one zig-zag decode.
fn zigzag_encode(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fast_varint_agrees_with_the_general_decoder(bytes: Vec<u8>, at in 0usize..8, cut in 0usize..12) {
            let end = (at + cut).min(bytes.len());
            let general = bytes.get(at..end).and_then(read_varint);
            prop_assert_eq!(varint(&bytes, at, end), general);
        }
    }

    #[test]
    fn every_two_byte_varint_agrees_with_the_general_decoder() {
        for first in 0..=255u8 {
            for second in 0..=255u8 {
                let bytes = [first, second, 0x01];
                for end in 0..=3 {
                    assert_eq!(
                        varint(&bytes, 0, end),
                        read_varint(&bytes[..end]),
                        "{bytes:?} to {end}"
                    );
                }
            }
        }
    }
}
