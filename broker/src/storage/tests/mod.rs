//! Tests of the storage engine: behaviour on the real disk, recovery from damaged files, a
//! model test with crashes on the simulated disk, group commit and retention.

mod admin;
mod basics;
mod cleaner;
mod cleaner_erase;
mod cleaner_swap;
mod compaction_model;
mod conditions;
mod damage;
mod file_cache;
mod group_commit;
mod marks;
mod model;
mod preallocate;
mod producer;
mod recovery;
mod roll;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tidelog_proto::batch::{set_base_offset, BatchIter, NewRecord, RecordBatch, RecordBatchBuilder};

use super::log::SealMode;
use super::sim_disk::SimDisk;
use super::{FlushPolicy, LogConfig, PartitionLog};

/// A validated batch of `count` records with `value_bytes`-byte values and the given timestamps.
pub(super) fn batch(timestamps: &[i64], value_bytes: usize, tag: u8) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new();
    for (index, timestamp) in timestamps.iter().enumerate() {
        builder.push(&NewRecord {
            timestamp: *timestamp,
            key: Some(Bytes::from(vec![tag, index as u8])),
            value: Some(Bytes::from(vec![tag.wrapping_add(index as u8); value_bytes])),
            headers: Vec::new(),
        });
    }
    let bytes = builder.build().expect("at least one record");
    let (batch, rest) = RecordBatch::split_first(&bytes).expect("builder output parses");
    assert!(rest.is_empty());
    batch.validate().expect("builder output validates");
    batch
}

/// `count` records at `timestamp`, `timestamp + 1`, ...
pub(super) fn simple_batch(count: usize, timestamp: i64, value_bytes: usize) -> RecordBatch {
    let timestamps: Vec<i64> = (0..count as i64).map(|index| timestamp + index).collect();
    batch(&timestamps, value_bytes, count as u8)
}

/// The bytes the log should store for `batch` at `base_offset`.
pub(super) fn stored(batch: &RecordBatch, base_offset: i64) -> Bytes {
    let mut bytes = BytesMut::from(&batch.as_bytes()[..]);
    set_base_offset(&mut bytes, base_offset);
    bytes.freeze()
}

/// Every visible batch from the log start, read in chunks, as one buffer; each read's batches
/// must continue the offsets.
pub(super) fn read_all(log: &PartitionLog, max_bytes: usize) -> Bytes {
    let mut out = BytesMut::new();
    let mut offset = log.log_start_offset();
    let high_watermark = log.high_watermark();
    // Every successful read returns at least one batch and every fenced range at least one
    // offset, so this many reads always suffice.
    for _ in 0..=(high_watermark - offset).max(0) {
        if offset >= high_watermark {
            break;
        }
        let outcome = match log.read(offset, max_bytes) {
            // A fenced range: skip it, as a consumer would.
            Err(super::StorageError::CorruptRange { end_offset, .. }) => {
                assert!(end_offset > offset, "fence at {offset} ends at {end_offset}");
                offset = end_offset;
                continue;
            }
            result => result.expect("read below the high watermark"),
        };
        assert!(
            !outcome.records.is_empty(),
            "empty read at {offset} below hw {high_watermark}"
        );
        for batch in BatchIter::new(outcome.records.clone()) {
            let batch = batch.expect("whole batches");
            batch.validate().expect("stored batches validate");
            assert!(batch.header().base_offset <= offset.max(batch.header().base_offset));
            offset = batch.header().next_offset();
        }
        out.extend_from_slice(&outcome.records);
    }
    assert_eq!(offset, high_watermark.max(log.log_start_offset()));
    out.freeze()
}

pub(super) fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        flush,
        ..LogConfig::default()
    }
}

pub(super) fn sim_open(disk: &SimDisk, config: LogConfig) -> PartitionLog {
    PartitionLog::open_with_seal_mode(&sim_dir(), config, Arc::new(disk.clone()), SealMode::Deferred)
        .expect("open on the simulated disk")
}

pub(super) fn sim_dir() -> PathBuf {
    PathBuf::from("/sim/topic-0")
}

pub(super) fn sim_path(name: &str) -> PathBuf {
    sim_dir().join(name)
}

pub(super) fn segment_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

pub(super) fn os_path(dir: &Path, base_offset: i64, extension: &str) -> PathBuf {
    dir.join(segment_name(base_offset, extension))
}
