//! The cleaner checkpoint: `cleaner-checkpoint` in the partition directory, the first offset
//! the cleaner has not cleaned yet. Checksummed and replaced whole (written aside, synced,
//! renamed, directory synced). Missing or damaged means "everything is dirty", which is safe:
//! the next clean only does more work than it needed to.
//!
//! Layout (24 bytes, big-endian): magic `TDLGCCP1` (8), version u16, reserved u16 (0),
//! first dirty offset i64, CRC32 (IEEE) of the 20 bytes before it.

use std::io;
use std::path::Path;

use super::super::disk::{read_exact_at, Disk};
use super::super::error::StorageError;
use super::super::format::{i64_at, u16_at, u32_at, FORMAT_VERSION, TEMP_SUFFIX};

pub(crate) const CLEANER_CHECKPOINT_FILE_NAME: &str = "cleaner-checkpoint";
const MAGIC: &[u8; 8] = b"TDLGCCP1";
const VERSION_OFFSET: usize = 8;
const RESERVED_OFFSET: usize = VERSION_OFFSET + 2;
const FIRST_DIRTY_OFFSET: usize = RESERVED_OFFSET + 2;
const CRC_OFFSET: usize = FIRST_DIRTY_OFFSET + 8;
pub(crate) const CLEANER_CHECKPOINT_BYTES: usize = CRC_OFFSET + 4;

pub(crate) fn encode(first_dirty_offset: i64) -> [u8; CLEANER_CHECKPOINT_BYTES] {
    let mut out = [0u8; CLEANER_CHECKPOINT_BYTES];
    out[..VERSION_OFFSET].copy_from_slice(MAGIC);
    out[VERSION_OFFSET..RESERVED_OFFSET].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    out[FIRST_DIRTY_OFFSET..CRC_OFFSET].copy_from_slice(&first_dirty_offset.to_be_bytes());
    let crc = crc32fast::hash(&out[..CRC_OFFSET]);
    out[CRC_OFFSET..].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The first dirty offset, or why the bytes are not a checkpoint.
pub(crate) fn decode(bytes: &[u8]) -> Result<i64, String> {
    if bytes.len() != CLEANER_CHECKPOINT_BYTES {
        return Err(format!(
            "{} bytes, expected {CLEANER_CHECKPOINT_BYTES}",
            bytes.len()
        ));
    }
    if &bytes[..VERSION_OFFSET] != MAGIC {
        return Err("bad magic".to_string());
    }
    let stored = u32_at(bytes, CRC_OFFSET);
    let computed = crc32fast::hash(&bytes[..CRC_OFFSET]);
    if stored != computed {
        return Err(format!(
            "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let version = u16_at(bytes, VERSION_OFFSET);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported version {version}"));
    }
    Ok(i64_at(bytes, FIRST_DIRTY_OFFSET))
}

/// The persisted first dirty offset; `None` when absent or unusable (logged), which makes
/// everything dirty.
pub(crate) fn read(disk: &dyn Disk, dir: &Path) -> Result<Option<i64>, StorageError> {
    let path = dir.join(CLEANER_CHECKPOINT_FILE_NAME);
    let file = match disk.open_read_only(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io("opening", &path)(error)),
    };
    let length = file.len().map_err(StorageError::io("measuring", &path))?;
    if length != CLEANER_CHECKPOINT_BYTES as u64 {
        tracing::warn!(path = %path.display(), length, "ignoring a cleaner checkpoint of the wrong size; everything is dirty");
        return Ok(None);
    }
    let mut bytes = [0u8; CLEANER_CHECKPOINT_BYTES];
    read_exact_at(&*file, &mut bytes, 0).map_err(StorageError::io("reading", &path))?;
    match decode(&bytes) {
        Ok(offset) => Ok(Some(offset)),
        Err(reason) => {
            tracing::warn!(path = %path.display(), %reason, "ignoring a damaged cleaner checkpoint; everything is dirty");
            Ok(None)
        }
    }
}

/// Replaces the checkpoint durably: aside, fdatasync, rename, directory sync.
pub(crate) fn write(disk: &dyn Disk, dir: &Path, first_dirty_offset: i64) -> Result<(), StorageError> {
    let path = dir.join(CLEANER_CHECKPOINT_FILE_NAME);
    let temp = dir.join(format!("{CLEANER_CHECKPOINT_FILE_NAME}{TEMP_SUFFIX}"));
    let file = disk
        .open(&temp, true)
        .map_err(StorageError::io("creating", &temp))?;
    file.set_len(0).map_err(StorageError::io("truncating", &temp))?;
    file.write_all_at(&encode(first_dirty_offset), 0)
        .map_err(StorageError::io("writing", &temp))?;
    file.sync_data().map_err(StorageError::io("syncing", &temp))?;
    drop(file);
    disk.rename(&temp, &path)
        .map_err(StorageError::io("renaming", &temp))?;
    disk.sync_dir(dir)
        .map_err(StorageError::io("syncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_every_flipped_byte_is_refused() {
        let bytes = encode(123_456);
        assert_eq!(decode(&bytes), Ok(123_456));
        for at in 0..bytes.len() {
            let mut damaged = bytes;
            damaged[at] ^= 0x08;
            assert!(decode(&damaged).is_err(), "byte {at}");
        }
        assert!(decode(&bytes[..CLEANER_CHECKPOINT_BYTES - 1]).is_err());
    }

    #[test]
    fn a_missing_or_damaged_checkpoint_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let disk = super::super::super::disk::OsDisk;
        assert_eq!(read(&disk, dir.path()).unwrap(), None);
        write(&disk, dir.path(), 77).unwrap();
        assert_eq!(read(&disk, dir.path()).unwrap(), Some(77));
        let path = dir.path().join(CLEANER_CHECKPOINT_FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[FIRST_DIRTY_OFFSET] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(&disk, dir.path()).unwrap(), None);
    }
}
