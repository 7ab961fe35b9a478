//! Changes an operator or admin client makes to an open partition: a new configuration applied
//! without a restart, and advancing the log start (Kafka's DeleteRecords).
//!
//! The advanced log start lives in the partition's `log-start` file (docs/storage-format.md):
//! `magic "TLLS" | version u16 BE | reserved u16 | log start i64 BE | crc32 u32 BE of the 16
//! bytes before it`, written aside, fdatasync'ed, renamed into place and the directory synced
//! before the trim is acknowledged, so a restart keeps it. Segments wholly below it are deleted
//! by retention's pass; records below it inside a kept segment are only unreadable.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::config::LogConfig;
use super::super::disk::Disk;
use super::super::error::StorageError;
use super::super::format::TEMP_SUFFIX;
use super::super::segment::write_lock;
use super::{lock_ignoring_poison, PartitionLog};

pub(crate) const LOG_START_FILE_NAME: &str = "log-start";
const LOG_START_MAGIC: &[u8; 4] = b"TLLS";
const LOG_START_VERSION: u16 = 1;
const LOG_START_VERSION_OFFSET: usize = 4;
const LOG_START_RESERVED_OFFSET: usize = LOG_START_VERSION_OFFSET + 2;
const LOG_START_VALUE_OFFSET: usize = LOG_START_RESERVED_OFFSET + 2;
const LOG_START_CRC_OFFSET: usize = LOG_START_VALUE_OFFSET + 8;
const LOG_START_BYTES: usize = LOG_START_CRC_OFFSET + 4;

/// `-1` as the target of [`PartitionLog::advance_log_start`]: the high watermark (Kafka's
/// DeleteRecords sentinel).
pub const LOG_START_HIGH_WATERMARK: i64 = -1;

impl PartitionLog {
    /// Applies a new configuration to the open log: later appends roll and index by it, the
    /// next maintenance pass retains by it.
    ///
    /// # Errors
    /// `InvalidConfig` if it fails the checks of an open, or changes what only an open can
    /// set (the flush policy, preallocation).
    pub fn alter_config(&self, config: LogConfig) -> Result<(), StorageError> {
        config.validate()?;
        let inner = &self.inner;
        let current = inner.config();
        if config.flush != current.flush
            || config.preallocate_bytes != current.preallocate_bytes
            || config.preallocate_sync_bytes_max != current.preallocate_sync_bytes_max
            || config.key_hash != current.key_hash
        {
            return Err(StorageError::InvalidConfig(
                "the flush policy of an open partition cannot change (it is set when the partition opens)"
                    .into(),
            ));
        }
        // Under the writer lock, so an append reads one configuration from start to end.
        let _writer = inner.lock_writer()?;
        *write_lock(&inner.config) = Arc::new(config);
        Ok(())
    }

    /// Makes every offset below `offset` unreadable (`OffsetOutOfRange`); `-1` means the high
    /// watermark. Never moves the log start back (a lower target is a no-op) and never past
    /// the high watermark. Syncs the log first, so the new start never lies beyond what a
    /// restart recovers, and persists it before returning; then deletes the segments wholly
    /// below it. Returns the log start now in force. Blocking.
    ///
    /// # Errors
    /// `OffsetOutOfRange` for a target above the high watermark or below -1; I/O errors.
    pub fn advance_log_start(&self, offset: i64, now_ms: i64) -> Result<i64, StorageError> {
        let inner = &self.inner;
        inner.check_writable()?;
        {
            // Serialised with retention and close, which also move or describe the log start.
            let _maintenance = lock_ignoring_poison(&inner.maintenance);
            self.sync()?;
            let high_watermark = inner.high_watermark.load(Ordering::Acquire);
            let current = self.log_start_offset();
            let target = if offset == LOG_START_HIGH_WATERMARK {
                high_watermark
            } else {
                offset
            };
            if !(0..=high_watermark).contains(&target) {
                return Err(StorageError::OffsetOutOfRange {
                    requested: offset,
                    log_start_offset: current,
                    high_watermark,
                });
            }
            if target <= current {
                return Ok(current);
            }
            write_log_start_floor(&*inner.disk, &inner.dir, target)?;
            inner.log_start_floor.store(target, Ordering::Release);
            inner.log_start_offset.fetch_max(target, Ordering::AcqRel);
            tracing::info!(dir = %inner.dir.display(), log_start_offset = target, "log start advanced");
        }
        self.run_maintenance(now_ms)?;
        Ok(self.log_start_offset())
    }
}

fn encode(log_start: i64) -> [u8; LOG_START_BYTES] {
    let mut bytes = [0u8; LOG_START_BYTES];
    bytes[..LOG_START_VERSION_OFFSET].copy_from_slice(LOG_START_MAGIC);
    bytes[LOG_START_VERSION_OFFSET..LOG_START_RESERVED_OFFSET]
        .copy_from_slice(&LOG_START_VERSION.to_be_bytes());
    bytes[LOG_START_VALUE_OFFSET..LOG_START_CRC_OFFSET].copy_from_slice(&log_start.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..LOG_START_CRC_OFFSET]);
    bytes[LOG_START_CRC_OFFSET..].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Result<i64, String> {
    if bytes.len() != LOG_START_BYTES {
        return Err(format!("{} bytes, expected {LOG_START_BYTES}", bytes.len()));
    }
    if &bytes[..LOG_START_VERSION_OFFSET] != LOG_START_MAGIC {
        return Err("bad magic".into());
    }
    let crc = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if crc != crc32fast::hash(&bytes[..LOG_START_CRC_OFFSET]) {
        return Err("checksum mismatch".into());
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != LOG_START_VERSION {
        return Err(format!("unknown version {version}"));
    }
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[LOG_START_VALUE_OFFSET..LOG_START_CRC_OFFSET]);
    let log_start = i64::from_be_bytes(value);
    if log_start < 0 {
        return Err(format!("negative log start {log_start}"));
    }
    Ok(log_start)
}

fn write_log_start_floor(disk: &dyn Disk, dir: &Path, log_start: i64) -> Result<(), StorageError> {
    let path = dir.join(LOG_START_FILE_NAME);
    let temp = dir.join(format!("{LOG_START_FILE_NAME}{TEMP_SUFFIX}"));
    let file = disk
        .open(&temp, true)
        .map_err(StorageError::io("creating", &temp))?;
    file.set_len(0).map_err(StorageError::io("truncating", &temp))?;
    file.write_all_at(&encode(log_start), 0)
        .map_err(StorageError::io("writing", &temp))?;
    file.sync_data().map_err(StorageError::io("syncing", &temp))?;
    drop(file);
    disk.rename(&temp, &path)
        .map_err(StorageError::io("renaming", &temp))?;
    disk.sync_dir(dir).map_err(StorageError::io("syncing", dir))
}

/// The persisted log start of the partition in `dir` (0 without one). A damaged file is
/// logged at ERROR and read as 0: the trimmed records become readable again, which loses
/// nothing. One beyond the recovered log end (only damage can do that: a trim syncs first) is
/// lowered to it, also at ERROR.
pub(crate) fn read_log_start_floor(
    disk: &dyn Disk,
    dir: &Path,
    next_offset: i64,
) -> Result<i64, StorageError> {
    let path = dir.join(LOG_START_FILE_NAME);
    let file = match disk.open_read_only(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(StorageError::io("opening", &path)(error)),
    };
    let length = file.len().map_err(StorageError::io("reading", &path))?;
    let mut bytes = vec![
        0u8;
        usize::try_from(length)
            .unwrap_or(usize::MAX)
            .min(LOG_START_BYTES + 1)
    ];
    let read = file
        .read_at(&mut bytes, 0)
        .map_err(StorageError::io("reading", &path))?;
    bytes.truncate(read);
    match decode(&bytes) {
        Ok(log_start) if log_start > next_offset => {
            tracing::error!(file = %path.display(), log_start, next_offset, "persisted log start is beyond the log's end; using the log's end");
            Ok(next_offset)
        }
        Ok(log_start) => Ok(log_start),
        Err(reason) => {
            tracing::error!(file = %path.display(), %reason, "log-start file is damaged; ignoring it (records below the trimmed start become readable again)");
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_start_file_round_trips_and_every_flipped_bit_is_detected() {
        for value in [0, 1, 4_096, i64::MAX] {
            assert_eq!(decode(&encode(value)), Ok(value));
        }
        let encoded = encode(123_456);
        for at in 0..encoded.len() {
            for bit in 0..8 {
                let mut damaged = encoded;
                damaged[at] ^= 1 << bit;
                assert!(decode(&damaged).is_err(), "flip of bit {bit} at byte {at}");
            }
        }
        for length in 0..encoded.len() {
            assert!(decode(&encoded[..length]).is_err());
        }
    }
}
