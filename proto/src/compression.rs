//! The record-batch compression codecs, as Kafka clients write them: the records section of a
//! batch (everything after the 61-byte header) is compressed as one stream.
//!
//! - gzip (1): a gzip stream (members concatenated are read as one).
//! - snappy (2): xerial framing as Java's `SnappyOutputStream` writes it (16-byte header, then
//!   blocks of `i32` length + raw snappy), or one raw snappy block, which librdkafka and some
//!   other clients send.
//! - lz4 (3): the LZ4 frame format (independent or linked blocks).
//! - zstd (4): a zstd frame.
//!
//! Decompression is streaming and bounded: it stops as soon as the output would exceed the
//! caller's limit, so a small batch that expands to gigabytes (a decompression bomb) costs at
//! most the limit in memory and is refused.

use std::io::{self, Read, Write};
use std::str::FromStr;

use crate::error::CompressionError;
use crate::BatchError;

/// The compression codec named in a batch's attributes (bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 5] = [Self::None, Self::Gzip, Self::Snappy, Self::Lz4, Self::Zstd];

    /// The codec of attribute bits 0-2; 5-7 are refused (Kafka has none past zstd).
    pub fn from_id(id: u8) -> Result<Self, BatchError> {
        match id {
            0 => Ok(Self::None),
            1 => Ok(Self::Gzip),
            2 => Ok(Self::Snappy),
            3 => Ok(Self::Lz4),
            4 => Ok(Self::Zstd),
            other => Err(BatchError::UnsupportedCompression(other)),
        }
    }

    /// The value of attribute bits 0-2.
    pub fn id(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }

    /// The name Kafka's `compression.type` uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|codec| codec.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("unknown compression codec {name:?} (none, gzip, snappy, lz4, zstd)"))
    }
}

/// Decompresses `input` with `codec`, refusing output longer than `max_bytes`.
pub fn decompress(codec: Compression, input: &[u8], max_bytes: usize) -> Result<Vec<u8>, BatchError> {
    let failed = |error: io::Error| BatchError::Decompression {
        codec: codec.name(),
        reason: error.to_string(),
    };
    // Most record sections compress 2-10x; start there and grow to the bound.
    let hint = input.len().saturating_mul(4);
    match codec {
        Compression::None => {
            if input.len() > max_bytes {
                return Err(BatchError::DecompressedTooLarge { max: max_bytes });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(input), max_bytes, hint, codec),
        Compression::Snappy => snappy_decompress(input, max_bytes),
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(input), max_bytes, hint, codec),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(failed)?;
            // A window larger than the bound is never needed to produce output within it;
            // refusing such frames keeps the decoder's memory within the bound too.
            decoder
                .window_log_max(window_log_for(max_bytes))
                .map_err(failed)?;
            read_bounded(decoder, max_bytes, hint, codec)
        }
    }
}

/// Compresses `input` with `codec` the way Kafka's Java client does.
pub fn compress(codec: Compression, input: &[u8]) -> Result<Vec<u8>, CompressionError> {
    let failed = |error: io::Error| CompressionError {
        codec: codec.name(),
        reason: error.to_string(),
    };
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(input).map_err(failed)?;
            encoder.finish().map_err(failed)
        }
        Compression::Snappy => Ok(xerial_compress(input)),
        Compression::Lz4 => {
            // Kafka's KafkaLZ4BlockOutputStream: 64 KiB independent blocks, no checksums.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            encoder.write_all(input).map_err(failed)?;
            encoder.finish().map_err(|error| CompressionError {
                codec: codec.name(),
                reason: error.to_string(),
            })
        }
        Compression::Zstd => zstd::bulk::compress(input, ZSTD_LEVEL).map_err(failed),
    }
}

/// zstd's default level, which Kafka's Java client uses too.
const ZSTD_LEVEL: i32 = 3;

/// Smallest power of two at least `max_bytes`, as zstd's `windowLogMax`, within what zstd
/// accepts (10..=31; 27 is zstd's own default cap without long mode, kept as ours).
fn window_log_for(max_bytes: usize) -> u32 {
    let log = usize::BITS - max_bytes.saturating_sub(1).leading_zeros();
    log.clamp(10, 27)
}

/// Reads `reader` to its end into a buffer that never grows past `max_bytes + 1`: one byte
/// more than allowed is proof enough of a bomb.
fn read_bounded(
    mut reader: impl Read,
    max_bytes: usize,
    hint: usize,
    codec: Compression,
) -> Result<Vec<u8>, BatchError> {
    const GROW_BYTES_MIN: usize = 4096;
    let limit = max_bytes.saturating_add(1);
    let mut out = vec![0u8; hint.clamp(GROW_BYTES_MIN, limit.max(GROW_BYTES_MIN)).min(limit)];
    let mut filled = 0;
    loop {
        if filled == out.len() {
            if filled >= limit {
                return Err(BatchError::DecompressedTooLarge { max: max_bytes });
            }
            let grown = filled.saturating_mul(2).clamp(GROW_BYTES_MIN, limit);
            out.resize(grown, 0);
        }
        match reader.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(BatchError::Decompression {
                    codec: codec.name(),
                    reason: error.to_string(),
                })
            }
        }
    }
    out.truncate(filled);
    Ok(out)
}

/// The 8-byte magic of xerial's snappy framing, followed by two big-endian `i32`s: version
/// and minimum compatible version (both 1 as Java writes them).
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_BYTES: usize = XERIAL_MAGIC.len() + 8;
const XERIAL_VERSION: i32 = 1;
/// Java's `SnappyOutputStream` default block size.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

fn snappy_decompress(input: &[u8], max_bytes: usize) -> Result<Vec<u8>, BatchError> {
    let bad = |reason: String| BatchError::Decompression {
        codec: Compression::Snappy.name(),
        reason,
    };
    let mut decoder = snap::raw::Decoder::new();
    // Each raw block states its decompressed length up front: check it against what is left
    // of the bound before decompressing anything.
    let mut block = |out: &mut Vec<u8>, block: &[u8]| -> Result<(), BatchError> {
        let length = snap::raw::decompress_len(block).map_err(|error| bad(error.to_string()))?;
        if length > max_bytes - out.len() {
            return Err(BatchError::DecompressedTooLarge { max: max_bytes });
        }
        let start = out.len();
        out.resize(start + length, 0);
        let written = decoder
            .decompress(block, &mut out[start..])
            .map_err(|error| bad(error.to_string()))?;
        out.truncate(start + written);
        Ok(())
    };
    let mut out = Vec::new();
    if !input.starts_with(&XERIAL_MAGIC) {
        block(&mut out, input)?;
        return Ok(out);
    }
    if input.len() < XERIAL_HEADER_BYTES {
        return Err(bad("xerial header truncated".into()));
    }
    let mut rest = &input[XERIAL_HEADER_BYTES..];
    while !rest.is_empty() {
        let Some((length, after)) = rest.split_first_chunk::<4>() else {
            return Err(bad("xerial block length truncated".into()));
        };
        let length = usize::try_from(i32::from_be_bytes(*length))
            .map_err(|_| bad("negative xerial block length".into()))?;
        if length > after.len() {
            return Err(bad(format!(
                "xerial block of {length} bytes runs past the {} left",
                after.len()
            )));
        }
        block(&mut out, &after[..length])?;
        rest = &after[length..];
    }
    Ok(out)
}

fn xerial_compress(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(XERIAL_HEADER_BYTES + input.len() / 2);
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for chunk in input.chunks(XERIAL_BLOCK_BYTES) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.resize(start + 4 + snap::raw::max_compress_len(chunk.len()), 0);
        // A 32 KiB chunk is far below snappy's input limit, and the output has room for
        // max_compress_len bytes: neither of compress's errors can occur.
        let written = encoder.compress(chunk, &mut out[start + 4..]).unwrap_or(0);
        out.truncate(start + 4 + written);
        out[start..start + 4].copy_from_slice(&(written as i32).to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ (i / 7) as u8).collect()
    }

    #[test]
    fn every_codec_round_trips() {
        for codec in Compression::ALL {
            for len in [0, 1, 100, 70_000, 300_000] {
                let input = sample(len);
                let packed = compress(codec, &input).unwrap();
                let unpacked = decompress(codec, &packed, len.max(1)).unwrap();
                assert_eq!(unpacked, input, "{codec} at {len} bytes");
            }
        }
    }

    #[test]
    fn output_one_byte_over_the_bound_is_refused() {
        for codec in Compression::ALL {
            let input = vec![7u8; 100_000];
            let packed = compress(codec, &input).unwrap();
            assert_eq!(decompress(codec, &packed, 100_000).unwrap().len(), 100_000);
            assert_eq!(
                decompress(codec, &packed, 99_999),
                Err(BatchError::DecompressedTooLarge { max: 99_999 }),
                "{codec}"
            );
        }
    }

    #[test]
    fn raw_snappy_blocks_are_accepted_too() {
        let input = sample(50_000);
        let raw = snap::raw::Encoder::new().compress_vec(&input).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw, 50_000).unwrap(), input);
    }

    #[test]
    fn garbage_is_an_error_for_every_codec() {
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let result = decompress(codec, b"definitely not compressed data", 1 << 20);
            assert!(
                matches!(result, Err(BatchError::Decompression { .. })),
                "{codec}: {result:?}"
            );
        }
    }

    #[test]
    fn names_parse_back() {
        for codec in Compression::ALL {
            assert_eq!(codec.name().parse::<Compression>(), Ok(codec));
            assert_eq!(Compression::from_id(codec.id()), Ok(codec));
        }
        assert!("brotli".parse::<Compression>().is_err());
        assert_eq!(
            Compression::from_id(5),
            Err(BatchError::UnsupportedCompression(5))
        );
    }

    #[test]
    fn window_log_covers_the_bound() {
        assert_eq!(window_log_for(64 << 20), 26);
        assert_eq!(window_log_for((64 << 20) + 1), 27);
        assert_eq!(window_log_for(1), 10);
        assert_eq!(window_log_for(usize::MAX), 27);
    }
}
