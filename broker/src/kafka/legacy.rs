//! Small hand codecs for the old, non-flexible versions kafka-protocol 0.18 lacks
//! (OffsetForLeaderEpoch 0-1, CreateTopics 0-1, DeleteTopics 0, DescribeConfigs 0): a reader
//! that never panics and refuses counts the bytes cannot hold, and a writer. Handlers decode
//! into, and encode from, the crate's own message structs, so each API keeps one translation.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Why a hand-decoded body was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed request body: {0}")]
pub(crate) struct LegacyError(pub &'static str);

/// Reads big-endian fields off a request body.
pub(crate) struct Reader {
    body: Bytes,
}

// `i8`, `bool` and the writer's `bool`/`nullable_string` are for the admin APIs' codecs.
#[allow(dead_code)]
impl Reader {
    pub(crate) fn new(body: Bytes) -> Self {
        Self { body }
    }

    pub(crate) fn i8(&mut self) -> Result<i8, LegacyError> {
        self.body.try_get_i8().map_err(|_| LegacyError("truncated int8"))
    }

    pub(crate) fn bool(&mut self) -> Result<bool, LegacyError> {
        Ok(self.i8()? != 0)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, LegacyError> {
        self.body
            .try_get_i16()
            .map_err(|_| LegacyError("truncated int16"))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, LegacyError> {
        self.body
            .try_get_i32()
            .map_err(|_| LegacyError("truncated int32"))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, LegacyError> {
        self.body
            .try_get_i64()
            .map_err(|_| LegacyError("truncated int64"))
    }

    /// A non-null string (int16 length, UTF-8).
    pub(crate) fn string(&mut self) -> Result<String, LegacyError> {
        self.nullable_string()?
            .ok_or(LegacyError("null where a string is required"))
    }

    /// A nullable string (length -1: null).
    pub(crate) fn nullable_string(&mut self) -> Result<Option<String>, LegacyError> {
        let length = self.i16()?;
        if length < 0 {
            return Ok(None);
        }
        let length = length as usize;
        if length > self.body.remaining() {
            return Err(LegacyError("string longer than the body"));
        }
        let bytes = self.body.split_to(length);
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| LegacyError("string is not UTF-8"))
    }

    /// An array's element count (int32; -1 null is refused where this is used). Each element
    /// takes at least `element_bytes_min` bytes, so a count the rest of the body cannot hold
    /// is refused before anything is allocated for it.
    pub(crate) fn count(&mut self, element_bytes_min: usize) -> Result<usize, LegacyError> {
        let count = self.i32()?;
        let count = usize::try_from(count).map_err(|_| LegacyError("negative array length"))?;
        if count.saturating_mul(element_bytes_min.max(1)) > self.body.remaining() {
            return Err(LegacyError("array longer than the body"));
        }
        Ok(count)
    }

    /// Refuses bytes left after the last field.
    pub(crate) fn finish(self) -> Result<(), LegacyError> {
        if self.body.has_remaining() {
            return Err(LegacyError("bytes after the last field"));
        }
        Ok(())
    }
}

/// Writes big-endian fields of a response body.
#[derive(Default)]
pub(crate) struct Writer {
    body: BytesMut,
}

#[allow(dead_code)]
impl Writer {
    pub(crate) fn i16(&mut self, value: i16) {
        self.body.put_i16(value);
    }

    pub(crate) fn i32(&mut self, value: i32) {
        self.body.put_i32(value);
    }

    pub(crate) fn i64(&mut self, value: i64) {
        self.body.put_i64(value);
    }

    pub(crate) fn bool(&mut self, value: bool) {
        self.body.put_u8(u8::from(value));
    }

    /// A string; one longer than an int16 length can say is cut at a character boundary
    /// (only messages can be that long, never names: names are bounded far below).
    pub(crate) fn string(&mut self, value: &str) {
        let mut end = value.len().min(i16::MAX as usize);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        // At most i16::MAX, just above.
        self.body.put_i16(end as i16);
        self.body.put_slice(&value.as_bytes()[..end]);
    }

    pub(crate) fn nullable_string(&mut self, value: Option<&str>) {
        match value {
            Some(value) => self.string(value),
            None => self.body.put_i16(-1),
        }
    }

    /// An array's element count.
    pub(crate) fn count(&mut self, count: usize) {
        self.body.put_i32(i32::try_from(count).unwrap_or(i32::MAX));
    }

    pub(crate) fn finish(self) -> Bytes {
        self.body.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_round_trip_and_impossible_counts_are_refused() {
        let mut writer = Writer::default();
        writer.count(1);
        writer.string("topic");
        writer.nullable_string(None);
        writer.i64(-7);
        let mut reader = Reader::new(writer.finish());
        assert_eq!(reader.count(2).unwrap(), 1);
        assert_eq!(reader.string().unwrap(), "topic");
        assert_eq!(reader.nullable_string().unwrap(), None);
        assert_eq!(reader.i64().unwrap(), -7);
        reader.finish().unwrap();

        let mut reader = Reader::new(Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0, 0]));
        assert!(reader.count(1).is_err());
        let mut reader = Reader::new(Bytes::from_static(&[0, 5, b'a']));
        assert!(reader.string().is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut reader = Reader::new(Bytes::from(bytes));
            let _ = reader.count(4);
            let _ = reader.nullable_string();
            let _ = reader.i64();
            let _ = reader.i8();
        }
    }
}
