//! Decoding errors of this crate: one enum per decoder.

use thiserror::Error;

/// A frame could not be cut from the byte stream. The connection cannot continue after any of
/// these: the stream is out of sync.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {length} bytes exceeds the limit of {max} bytes")]
    TooLarge { length: usize, max: usize },
    #[error("frame is empty")]
    Empty,
}

/// A record batch failed validation.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum BatchError {
    #[error("record batch truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("record batch length {0} is out of range")]
    BadLength(i32),
    #[error("unsupported record batch magic {0} (only v2 is supported)")]
    BadMagic(i8),
    #[error("record batch CRC mismatch: header says {expected:#010x}, data gives {computed:#010x}")]
    CrcMismatch { expected: u32, computed: u32 },
    #[error("record batch has a record count of {0}")]
    BadRecordCount(i32),
    #[error("record batch lastOffsetDelta {last_offset_delta} does not match {record_count} records")]
    BadLastOffsetDelta {
        last_offset_delta: i32,
        record_count: i32,
    },
    #[error("record {index} is malformed: {reason}")]
    BadRecord { index: usize, reason: &'static str },
    #[error("record {index} has offset delta {found}, expected {expected}")]
    BadOffsetDelta { index: usize, expected: i32, found: i32 },
    #[error("records end at byte {consumed} of a {length}-byte record section")]
    TrailingBytes { consumed: usize, length: usize },
    #[error("compression codec {0} is not supported (0-4 are: none, gzip, snappy, lz4, zstd)")]
    UnsupportedCompression(u8),
    #[error("{codec} records could not be decompressed: {reason}")]
    Decompression { codec: &'static str, reason: String },
    #[error("records decompress to more than the limit of {max} bytes")]
    DecompressedTooLarge { max: usize },
    #[error("record batch of {length} bytes exceeds the limit of {max} bytes")]
    TooLarge { length: usize, max: usize },
    /// Rebuilding a filtered batch (`batch::filter`) could not re-compress its records.
    #[error(transparent)]
    Compression(#[from] CompressionError),
}

/// Records could not be compressed (the codec library failed; not expected in practice).
#[derive(Debug, Error, PartialEq, Eq, Clone)]
#[error("{codec} compression failed: {reason}")]
pub struct CompressionError {
    pub codec: &'static str,
    pub reason: String,
}
