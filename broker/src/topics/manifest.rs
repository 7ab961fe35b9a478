//! The per-topic manifest: a small checksummed file beside a topic's partitions
//! (`topics/<name>/topic.manifest`), so the directory describes itself. When the metadata
//! store loses or damages a topic's record, the registry rebuilds the record from here instead
//! of losing the topic (and, worse, letting a create of the same name replace its data).
//!
//! Layout (docs/storage-format.md): `magic "TLTM" | version u16 BE | body length u32 BE |
//! crc32 u32 BE of the body | body`, the body being TOML text of the [`TopicRecord`]. Written
//! atomically: a temporary file is written and fdatasync'ed, renamed over the manifest, and the
//! topic directory fsynced, so a crash leaves the old manifest or the new one, never a torn one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::metadata::TopicRecord;

pub(crate) const MANIFEST_FILE_NAME: &str = "topic.manifest";
const MANIFEST_TEMP_FILE_NAME: &str = "topic.manifest.tmp";
const MANIFEST_MAGIC: &[u8; 4] = b"TLTM";
/// Version 2: the topic id is a random v4 UUID (`topics::id`). Version 1 bodies have the same
/// fields and still read; their ids are replaced at start.
const MANIFEST_VERSION: u16 = 2;
const MANIFEST_VERSION_OLDEST: u16 = 1;
const MAGIC_BYTES: usize = 4;
const VERSION_OFFSET: usize = MAGIC_BYTES;
const LENGTH_OFFSET: usize = VERSION_OFFSET + 2;
const CRC_OFFSET: usize = LENGTH_OFFSET + 4;
const HEADER_BYTES: usize = CRC_OFFSET + 4;
/// A manifest body is a few hundred bytes; anything far larger is not ours.
const BODY_BYTES_MAX: usize = 64 << 10;

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error("no manifest")]
    Missing,
    #[error("manifest is damaged: {0}")]
    Damaged(String),
    #[error("manifest {action}: {source}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn path(topic_dir: &Path) -> PathBuf {
    topic_dir.join(MANIFEST_FILE_NAME)
}

/// Encodes `record` in the manifest layout.
pub(crate) fn encode(record: &TopicRecord) -> Result<Vec<u8>, ManifestError> {
    let body = toml::to_string(record).map_err(|error| ManifestError::Damaged(error.to_string()))?;
    let length = u32::try_from(body.len())
        .ok()
        .filter(|length| (*length as usize) <= BODY_BYTES_MAX)
        .ok_or_else(|| ManifestError::Damaged(format!("body of {} bytes is too large", body.len())))?;
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(MANIFEST_MAGIC);
    out.extend_from_slice(&MANIFEST_VERSION.to_be_bytes());
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(body.as_bytes()).to_be_bytes());
    out.extend_from_slice(body.as_bytes());
    Ok(out)
}

/// Decodes a manifest, checking every field before the body is trusted.
pub(crate) fn decode(bytes: &[u8]) -> Result<TopicRecord, ManifestError> {
    let damaged = |reason: String| ManifestError::Damaged(reason);
    if bytes.len() < HEADER_BYTES {
        return Err(damaged(format!(
            "{} bytes is shorter than the header",
            bytes.len()
        )));
    }
    if &bytes[..MAGIC_BYTES] != MANIFEST_MAGIC {
        return Err(damaged("bad magic".into()));
    }
    let field = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    let version = u16::from_be_bytes([bytes[VERSION_OFFSET], bytes[VERSION_OFFSET + 1]]);
    if !(MANIFEST_VERSION_OLDEST..=MANIFEST_VERSION).contains(&version) {
        return Err(damaged(format!("unknown manifest version {version}")));
    }
    let length = u32::from_be_bytes(field(LENGTH_OFFSET)) as usize;
    if length > BODY_BYTES_MAX || HEADER_BYTES + length != bytes.len() {
        return Err(damaged(format!(
            "body length {length} does not match the file's {} bytes",
            bytes.len()
        )));
    }
    let body = &bytes[HEADER_BYTES..];
    if crc32fast::hash(body) != u32::from_be_bytes(field(CRC_OFFSET)) {
        return Err(damaged("checksum mismatch".into()));
    }
    let text = std::str::from_utf8(body).map_err(|error| damaged(error.to_string()))?;
    toml::from_str(text).map_err(|error| damaged(error.to_string()))
}

/// Reads and checks the manifest in `topic_dir`.
pub(crate) fn read(topic_dir: &Path) -> Result<TopicRecord, ManifestError> {
    match fs::read(path(topic_dir)) {
        Ok(bytes) => decode(&bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(ManifestError::Missing),
        Err(source) => Err(ManifestError::Io {
            action: "reading",
            source,
        }),
    }
}

/// Replaces the manifest in `topic_dir` atomically and durably (temp file, fdatasync, rename,
/// directory fsync).
pub(crate) fn write(topic_dir: &Path, record: &TopicRecord) -> Result<(), ManifestError> {
    let bytes = encode(record)?;
    let temp = topic_dir.join(MANIFEST_TEMP_FILE_NAME);
    let io = |action| move |source| ManifestError::Io { action, source };
    let mut file = fs::File::create(&temp).map_err(io("creating"))?;
    file.write_all(&bytes).map_err(io("writing"))?;
    file.sync_data().map_err(io("syncing"))?;
    drop(file);
    fs::rename(&temp, path(topic_dir)).map_err(io("renaming into place"))?;
    fs::File::open(topic_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io("syncing its directory"))
}

/// Removes a temporary manifest an interrupted write left behind.
pub(crate) fn remove_leftover_temp(topic_dir: &Path) {
    let temp = topic_dir.join(MANIFEST_TEMP_FILE_NAME);
    match fs::remove_file(&temp) {
        Ok(()) => tracing::info!(file = %temp.display(), "removed an interrupted manifest write"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(file = %temp.display(), %error, "could not remove an interrupted manifest write")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::TopicOverrides;

    fn record() -> TopicRecord {
        TopicRecord {
            name: "orders".into(),
            topic_id: "0011223344554677a899aabbccddeeff".into(),
            partitions: 12,
            created_ms: 1_700_000_000_000,
            overrides: TopicOverrides {
                retention_ms: Some(60_000),
                flush: Some("never".into()),
                ..TopicOverrides::default()
            },
        }
    }

    #[test]
    fn manifest_round_trips_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read(dir.path()), Err(ManifestError::Missing)));
        write(dir.path(), &record()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), record());
        let mut changed = record();
        changed.overrides.segment_bytes = Some(1 << 20);
        write(dir.path(), &changed).unwrap();
        assert_eq!(read(dir.path()).unwrap(), changed);
        assert!(!dir.path().join(MANIFEST_TEMP_FILE_NAME).exists());
    }

    proptest::proptest! {
        /// The decoder is fed files from disk: any bytes give a record or an error, never a
        /// panic; and whatever a record holds comes back unchanged.
        #[test]
        fn decode_never_panics_and_records_round_trip(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            partitions in 1u32..=10_000,
            retention_ms in proptest::option::of(-1i64..i64::MAX),
            name in "[a-zA-Z0-9._-]{1,249}",
        ) {
            let _ = decode(&bytes);
            let mut header_then_bytes = MANIFEST_MAGIC.to_vec();
            header_then_bytes.extend_from_slice(&bytes);
            let _ = decode(&header_then_bytes);
            let mut sample = record();
            sample.name = name;
            sample.partitions = partitions;
            sample.overrides.retention_ms = retention_ms;
            proptest::prop_assert_eq!(decode(&encode(&sample).unwrap()).unwrap(), sample);
        }
    }

    #[test]
    fn a_version_1_manifest_still_reads() {
        let mut bytes = encode(&record()).unwrap();
        bytes[VERSION_OFFSET..LENGTH_OFFSET].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(decode(&bytes).unwrap(), record());
        bytes[VERSION_OFFSET..LENGTH_OFFSET].copy_from_slice(&3u16.to_be_bytes());
        assert!(matches!(decode(&bytes), Err(ManifestError::Damaged(_))));
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_detected() {
        let encoded = encode(&record()).unwrap();
        for at in 0..encoded.len() {
            for bit in 0..8 {
                let mut damaged = encoded.clone();
                damaged[at] ^= 1 << bit;
                assert!(
                    matches!(decode(&damaged), Err(ManifestError::Damaged(_))),
                    "flip of bit {bit} at byte {at} went unnoticed"
                );
            }
        }
        for length in 0..encoded.len() {
            assert!(
                decode(&encoded[..length]).is_err(),
                "truncation to {length} bytes"
            );
        }
    }
}
