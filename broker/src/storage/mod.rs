//! The broker's storage engine: each topic partition is a directory of segments holding Kafka
//! RecordBatch v2 bytes as they will be served, with sparse offset and time indexes, crash
//! recovery, group-committed fsyncs and retention. File layouts: `docs/storage-format.md`.

mod cleaner;
mod conditions;
mod config;
mod disk;
mod error;
mod file_cache;
mod format;
mod inspect;
mod key_index;
mod log;
mod producer_snapshot;
mod producer_state;
mod recovery;
mod scan;
mod segment;
mod stream_marks;
mod verify;

#[cfg(test)]
pub(crate) mod sim_disk;
#[cfg(test)]
mod tests;

pub use cleaner::{CleanDue, CleanOptions, CleanOutcome, CleanerStats, IoThrottle, Unthrottled};
pub use conditions::{
    printable_key, AppendConditions, ConditionFailure, Expected, KeyCondition, EVENT_ID_HEADER,
};
pub use config::{CleanupPolicy, CompactionConfig, FlushPolicy, LogConfig, SEGMENT_BYTES_MAX};
pub use disk::{Disk, OsDisk, SegmentFile};
pub use error::StorageError;
pub use file_cache::{FileCache, FileCacheLimits, FileCacheStats};
pub use format::{BATCH_BYTES_MAX, FORMAT_VERSION};
#[allow(unused_imports)] // the condition check (`conditions.rs`) uses it
pub(crate) use key_index::StreamLookup;
pub use key_index::{
    fnv1a_fmix64, Direction, KeyHash, StreamInfo, StreamRead, StreamRecord, KEYS_FORMAT_VERSION,
    KEY_INDEX_ACTIVE_BYTES_MAX_DEFAULT,
};
pub use log::{
    AppendOutcome, MaintenanceOutcome, PartitionLog, ReadOutcome, SyncOn, LOG_START_HIGH_WATERMARK,
};
pub use producer_snapshot::ProducerStateRecovery;
pub use producer_state::{
    ProducerLimits, PRODUCERS_PER_PARTITION_MAX_DEFAULT, PRODUCER_BATCHES_RETAINED, PRODUCER_IDLE_MS_DEFAULT,
};
pub use recovery::{Fence, IndexRebuild, Quarantined, RecoveryReport, Truncation};
pub use stream_marks::{ErasureProgress, StreamMarkState, STREAM_MARKS_PER_PARTITION_MAX_DEFAULT};
pub use verify::{verify_data_dir, verify_partition, PartitionVerdict};
