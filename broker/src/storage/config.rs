//! Partition log configuration: when to roll a segment, what to retain, how often to flush.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::error::StorageError;
use super::format::{BATCH_BYTES_MAX, FILE_HEADER_BYTES};
use super::key_index::{KeyHash, KEY_INDEX_ACTIVE_BYTES_MAX_DEFAULT};
use super::producer_state::ProducerLimits;

/// When appended data is fdatasync'ed, and so when it becomes visible to readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every append is made durable (group commit) before it is visible or acknowledged.
    Always,
    /// A background task calls [`PartitionLog::sync`](super::PartitionLog::sync) this often;
    /// data is visible as soon as it is written.
    Interval(Duration),
    /// Only segment rolls and clean shutdown sync; data is visible as soon as it is written.
    Never,
}

impl FromStr for FlushPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "always" => Ok(FlushPolicy::Always),
            "never" => Ok(FlushPolicy::Never),
            other => {
                let Some(millis) = other.strip_prefix("interval:") else {
                    return Err(format!(
                        "unknown flush policy {other:?}: expected \"always\", \"interval:<ms>\" or \"never\""
                    ));
                };
                let millis: u64 = millis
                    .parse()
                    .map_err(|error| format!("bad flush interval {millis:?}: {error}"))?;
                if millis == 0 {
                    return Err("flush interval must be at least 1 ms".to_string());
                }
                Ok(FlushPolicy::Interval(Duration::from_millis(millis)))
            }
        }
    }
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlushPolicy::Always => f.write_str("always"),
            FlushPolicy::Interval(interval) => write!(f, "interval:{}", interval.as_millis()),
            FlushPolicy::Never => f.write_str("never"),
        }
    }
}

/// What happens to closed segments (Kafka's `cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleanupPolicy {
    /// Retention deletes whole closed segments (`retention.ms`, `retention.bytes`).
    #[default]
    Delete,
    /// The cleaner keeps the latest record of every key; retention deletes nothing.
    Compact,
    /// Both: compacted, and closed segments past retention are deleted.
    CompactDelete,
}

impl CleanupPolicy {
    /// Whether the cleaner compacts the log (and keyless records are refused).
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// Whether retention deletes closed segments.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
}

impl FromStr for CleanupPolicy {
    type Err = String;

    /// Kafka's list syntax: `delete`, `compact`, `compact,delete` (either order, spaces allowed).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut compact = false;
        let mut delete = false;
        for item in text.split(',').map(str::trim) {
            match item {
                "compact" => compact = true,
                "delete" => delete = true,
                other => {
                    return Err(format!(
                        "unknown cleanup.policy {other:?}: expected \"delete\", \"compact\" or \"compact,delete\""
                    ))
                }
            }
        }
        match (compact, delete) {
            (true, true) => Ok(CleanupPolicy::CompactDelete),
            (true, false) => Ok(CleanupPolicy::Compact),
            (false, true) => Ok(CleanupPolicy::Delete),
            (false, false) => Err("cleanup.policy must not be empty".to_string()),
        }
    }
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        })
    }
}

/// When a compacted log is cleaned and how long tombstones live (Kafka's topic configs of the
/// same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactionConfig {
    /// `min.cleanable.dirty.ratio`: clean once dirty bytes are at least this share of the
    /// closed segments' bytes (0.0..=1.0).
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long after it was
    /// written (by its segment's newest timestamp).
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log whose oldest dirty record is older than this is cleaned
    /// whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: a tombstone is kept this long after the cleaner first sees it
    /// (its batch's delete horizon, KIP-534).
    pub delete_retention_ms: i64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 60 * 60 * 1000,
        }
    }
}

impl CompactionConfig {
    /// Kafka's bounds on the four settings; the message names the offending one by its Kafka
    /// name.
    pub fn validate(&self) -> Result<(), String> {
        let ratio = self.min_cleanable_dirty_ratio;
        // NaN fails the range check too.
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!(
                "min.cleanable.dirty.ratio {ratio} must be between 0 and 1"
            ));
        }
        if self.min_compaction_lag_ms < 0 {
            return Err(format!(
                "min.compaction.lag.ms {} must be at least 0",
                self.min_compaction_lag_ms
            ));
        }
        if self.max_compaction_lag_ms <= 0 {
            return Err(format!(
                "max.compaction.lag.ms {} must be at least 1",
                self.max_compaction_lag_ms
            ));
        }
        if self.max_compaction_lag_ms < self.min_compaction_lag_ms {
            return Err(format!(
                "max.compaction.lag.ms {} must be at least min.compaction.lag.ms {}",
                self.max_compaction_lag_ms, self.min_compaction_lag_ms
            ));
        }
        if self.delete_retention_ms < 0 {
            return Err(format!(
                "delete.retention.ms {} must be at least 0",
                self.delete_retention_ms
            ));
        }
        Ok(())
    }
}

/// Largest segment we allow. Index entries store file positions as `u32`, and like Kafka we
/// stay below `i32::MAX` so a position always fits a signed 32-bit field too.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

/// Default of [`LogConfig::preallocate_bytes`]: a chunk that a 1 KiB-record stream uses up
/// in about a thousand appends, so the zero-writing sync lands on far fewer than 1% of them.
pub const PREALLOCATE_BYTES_DEFAULT: u64 = 1 << 20;
/// Default of [`LogConfig::preallocate_sync_bytes_max`]. Measured on this project's disk:
/// the metadata commit an overwrite saves is about 50 us, while writing and syncing 1 MiB of
/// zeros costs about 1.4 ms (a chunk lasts `preallocate_bytes / 2` of data); at 64 KiB per
/// sync the chunk serves 8 syncs and saves about 0.4 ms, so past this it costs more than it
/// saves.
pub const PREALLOCATE_SYNC_BYTES_MAX_DEFAULT: u64 = 64 << 10;
/// Largest preallocation chunk: zeros are written under the partition's writer lock, so this
/// bounds how long one extension can hold appends up.
pub const PREALLOCATE_BYTES_MAX: u64 = 64 << 20;

/// Per-partition log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll when the active segment would exceed this many bytes (file header included).
    pub segment_bytes: u64,
    /// Roll when the active segment's first batch is older than this.
    pub segment_ms: i64,
    /// Delete closed segments whose newest record is older than this; -1 keeps them forever.
    pub retention_ms: i64,
    /// Delete the oldest closed segments while the partition is larger than this; -1 = unlimited.
    pub retention_bytes: i64,
    /// An offset index and time index entry at most every this many bytes of batches.
    pub index_interval_bytes: u32,
    pub flush: FlushPolicy,
    /// Under `Always`, zeros written ahead of the active segment's data (at most this many,
    /// and at most as many as the segment holds; none below 4 KiB of data), so appends
    /// overwrite allocated blocks and their fdatasync commits no new file length. Cut off when
    /// the segment is sealed or the log closed. 0 turns it off.
    pub preallocate_bytes: u64,
    /// Under `Always`, preallocation is extended only after a group commit that wrote out at
    /// most this many data bytes: past it the zeros' cost (as many bytes again, and their own
    /// fdatasync) outweighs the metadata commit they save each sync.
    pub preallocate_sync_bytes_max: u64,
    /// Bounds of the idempotent producer state (the broker's `limits.producers_per_partition_max`
    /// and `limits.producer_state_expiry_ms`).
    pub producer_limits: ProducerLimits,
    /// Bytes the active segment's per-key table may hold (`limits.key_index_active_bytes_max`);
    /// an append that would pass it rolls the segment first, as Kafka rolls when an offset
    /// index is full.
    pub key_index_active_bytes_max: usize,
    /// The hash the per-key index stores (persisted: fixed for a log once open).
    pub key_hash: KeyHash,
    /// Largest records section a compressed batch may decompress to when the per-key index
    /// reads its keys (`limits.batch_decompressed_bytes_max`: every appended batch was
    /// validated within it).
    pub decompressed_bytes_max: usize,
    /// `cleanup.policy`: retention, compaction or both.
    pub cleanup_policy: CleanupPolicy,
    /// When the cleaner compacts this log (used only when `cleanup_policy` compacts).
    pub compaction: CompactionConfig,
    /// Keys with stream marks (truncations, erasures) this partition may hold
    /// (`limits.stream_marks_per_partition_max`); a new mark past it is refused.
    pub stream_marks_per_partition_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        const DAY_MS: i64 = 24 * 60 * 60 * 1000;
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            retention_ms: 7 * DAY_MS,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            flush: FlushPolicy::Always,
            preallocate_bytes: PREALLOCATE_BYTES_DEFAULT,
            preallocate_sync_bytes_max: PREALLOCATE_SYNC_BYTES_MAX_DEFAULT,
            producer_limits: ProducerLimits::default(),
            key_index_active_bytes_max: KEY_INDEX_ACTIVE_BYTES_MAX_DEFAULT,
            key_hash: KeyHash::DEFAULT,
            decompressed_bytes_max: tidelog_proto::batch::DECOMPRESSED_BYTES_MAX_DEFAULT,
            cleanup_policy: CleanupPolicy::Delete,
            compaction: CompactionConfig::default(),
            stream_marks_per_partition_max: super::stream_marks::STREAM_MARKS_PER_PARTITION_MAX_DEFAULT,
        }
    }
}

impl LogConfig {
    pub(crate) fn validate(&self) -> Result<(), StorageError> {
        // A segment must hold its header and at least one smallest possible batch.
        let segment_bytes_min = (FILE_HEADER_BYTES + tidelog_proto::batch::BATCH_HEADER_BYTES) as u64;
        if !(segment_bytes_min..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(StorageError::InvalidConfig(format!(
                "segment_bytes {} is outside {segment_bytes_min}..={SEGMENT_BYTES_MAX}",
                self.segment_bytes
            )));
        }
        if self.segment_ms <= 0 {
            return Err(StorageError::InvalidConfig(format!(
                "segment_ms {} must be positive",
                self.segment_ms
            )));
        }
        if self.retention_ms < -1 {
            return Err(StorageError::InvalidConfig(format!(
                "retention_ms {} must be -1 (forever) or at least 0",
                self.retention_ms
            )));
        }
        if self.preallocate_bytes > PREALLOCATE_BYTES_MAX {
            return Err(StorageError::InvalidConfig(format!(
                "preallocate_bytes {} exceeds {PREALLOCATE_BYTES_MAX}",
                self.preallocate_bytes
            )));
        }
        if self.retention_bytes < -1 {
            return Err(StorageError::InvalidConfig(format!(
                "retention_bytes {} must be -1 (unlimited) or at least 0",
                self.retention_bytes
            )));
        }
        self.compaction.validate().map_err(StorageError::InvalidConfig)?;
        Ok(())
    }

    /// Largest total size of one append call: it must fit in an empty segment, and no batch
    /// may be larger than [`BATCH_BYTES_MAX`].
    pub(crate) fn append_bytes_max(&self) -> usize {
        let room = self.segment_bytes.saturating_sub(FILE_HEADER_BYTES as u64);
        usize::try_from(room).unwrap_or(usize::MAX)
    }

    pub(crate) fn batch_bytes_max(&self) -> usize {
        self.append_bytes_max().min(BATCH_BYTES_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_policy_parses_and_prints_the_same_strings() {
        for text in ["always", "never", "interval:250"] {
            let policy: FlushPolicy = text.parse().unwrap();
            assert_eq!(policy.to_string(), text);
        }
        assert_eq!(
            "interval:1000".parse::<FlushPolicy>().unwrap(),
            FlushPolicy::Interval(Duration::from_secs(1))
        );
    }

    #[test]
    fn flush_policy_rejects_unknown_and_zero_intervals() {
        assert!("sometimes".parse::<FlushPolicy>().is_err());
        assert!("interval:".parse::<FlushPolicy>().is_err());
        assert!("interval:0".parse::<FlushPolicy>().is_err());
        assert!("interval:-5".parse::<FlushPolicy>().is_err());
    }

    #[test]
    fn compaction_settings_outside_kafkas_bounds_are_refused() {
        CompactionConfig::default().validate().unwrap();
        let with = |change: fn(&mut CompactionConfig)| {
            let mut config = CompactionConfig::default();
            change(&mut config);
            config.validate()
        };
        assert!(with(|c| c.min_cleanable_dirty_ratio = 0.0).is_ok());
        assert!(with(|c| c.min_cleanable_dirty_ratio = 1.0).is_ok());
        assert!(with(|c| c.min_cleanable_dirty_ratio = 1.01).is_err());
        assert!(with(|c| c.min_cleanable_dirty_ratio = -0.1).is_err());
        assert!(with(|c| c.min_cleanable_dirty_ratio = f64::NAN).is_err());
        assert!(with(|c| c.min_compaction_lag_ms = -1).is_err());
        assert!(with(|c| c.max_compaction_lag_ms = 0).is_err());
        assert!(with(|c| {
            c.min_compaction_lag_ms = 10;
            c.max_compaction_lag_ms = 9;
        })
        .is_err());
        assert!(with(|c| c.delete_retention_ms = -1).is_err());
        assert!(with(|c| c.delete_retention_ms = 0).is_ok());
        let log = LogConfig {
            compaction: CompactionConfig {
                min_cleanable_dirty_ratio: 2.0,
                ..CompactionConfig::default()
            },
            ..LogConfig::default()
        };
        assert!(log.validate().is_err());
    }

    #[test]
    fn default_config_is_valid() {
        LogConfig::default().validate().unwrap();
    }

    #[test]
    fn tiny_or_huge_segments_are_rejected() {
        let config = LogConfig {
            segment_bytes: 10,
            ..LogConfig::default()
        };
        assert!(config.validate().is_err());
        let config = LogConfig {
            segment_bytes: 1 << 40,
            ..LogConfig::default()
        };
        assert!(config.validate().is_err());
    }
}
