//! The compaction model's checks: what a reader may see of the log, against the model.

use std::collections::{BTreeMap, BTreeSet};

use tidelog_proto::batch::filter::validate_filtered;
use tidelog_proto::batch::{BatchIter, RecordBatch};

use super::super::super::sim_disk::{SimDisk, SplitMix};
use super::super::super::{Direction, LogConfig, PartitionLog, StorageError, StreamInfo, StreamRecord};
use super::super::sim_dir;
use super::*;

/// The model's verdict on a record missing from the log.
pub(super) fn may_be_absent(
    model: &Model,
    config: &LogConfig,
    record: &ModelRecord,
    high_watermark: i64,
) -> bool {
    if let Some(key) = &record.key {
        if model.marks_remove(key, record.offset) {
            return true;
        }
    }
    if !config.cleanup_policy.compacts() || model.clean_now_max == i64::MIN {
        return false;
    }
    let compaction = &config.compaction;
    if record.offset >= model.compaction_frontier
        || record.timestamp.saturating_add(compaction.min_compaction_lag_ms) > model.clean_now_max
    {
        return false;
    }
    // A keyless record from before the log was switched to compaction: Kafka's cleaner drops
    // those, keeping them is as good.
    let Some(key) = &record.key else {
        return true;
    };
    let superseded = model.records().any(|(_, later)| {
        later.key.as_ref() == Some(key) && later.offset > record.offset && later.offset < high_watermark
    });
    superseded
        || (record.value.is_none()
            && model.clean_now_max >= record.appended_ms.saturating_add(compaction.delete_retention_ms))
}

/// Every batch readable from the log start, read in pages of random sizes; each read starts at
/// the first batch whose last offset is at or above the offset asked for.
pub(super) fn read_everything(log: &PartitionLog, rng: &mut SplitMix, context: &str) -> Vec<RecordBatch> {
    let high_watermark = log.high_watermark();
    let mut offset = log.log_start_offset();
    let mut batches: Vec<RecordBatch> = Vec::new();
    for _ in 0..=(high_watermark - offset).max(0) {
        if offset >= high_watermark {
            break;
        }
        let max_bytes = [1, 300, 4096][rng.below(3) as usize];
        let outcome = log
            .read(offset, max_bytes)
            .unwrap_or_else(|error| panic!("{context}: read at {offset}: {error}"));
        assert!(
            !outcome.records.is_empty(),
            "{context}: empty read at {offset} below {high_watermark}"
        );
        for (index, batch) in BatchIter::new(outcome.records.clone()).enumerate() {
            let batch = batch.unwrap_or_else(|error| panic!("{context}: read at {offset}: {error}"));
            // The shape a cleaned segment may hold (gaps, short batches, placeholders); a
            // batch that kept every record is checked strictly below.
            validate_filtered(&batch, usize::MAX).unwrap_or_else(|error| {
                panic!("{context}: a stored batch at {offset} fails validation: {error}")
            });
            let header = *batch.header();
            if header.record_count == header.last_offset_delta + 1 {
                batch.validate().unwrap_or_else(|error| {
                    panic!("{context}: a stored batch at {offset} fails validation: {error}")
                });
            }
            if index == 0 {
                assert!(
                    header.last_offset() >= offset,
                    "{context}: a read at {offset} returned a batch ending at {}",
                    header.last_offset()
                );
            }
            assert!(
                batches
                    .last()
                    .is_none_or(|last| last.header().next_offset() <= header.base_offset),
                "{context}: batches out of order at {}",
                header.base_offset
            );
            offset = header.next_offset();
            batches.push(batch);
        }
    }
    assert_eq!(offset.max(high_watermark), offset, "{context}");
    batches
}

pub(super) fn check_everything(
    log: &PartitionLog,
    disk: &SimDisk,
    model: &Model,
    rng: &mut SplitMix,
    context: &str,
) {
    let config = log.config();
    let high_watermark = log.high_watermark();
    let batches = read_everything(log, rng, context);
    let mut present: BTreeMap<i64, ModelRecord> = BTreeMap::new();
    let mut present_batches: BTreeSet<i64> = BTreeSet::new();
    // (offset, timestamp) of every record read, control records included.
    let mut timed: Vec<(i64, i64)> = Vec::new();
    for batch in &batches {
        let header = batch.header();
        let original = model
            .batches
            .iter()
            .find(|original| original.base_offset == header.base_offset)
            .unwrap_or_else(|| {
                panic!(
                    "{context}: a batch at {} that was never appended",
                    header.base_offset
                )
            });
        assert_eq!(
            header.last_offset(),
            original.last_offset,
            "{context}: the batch at {} changed its offset range",
            header.base_offset
        );
        present_batches.insert(header.base_offset);
        if original.control {
            assert_eq!(
                batch.as_bytes(),
                &original.bytes,
                "{context}: a control batch changed"
            );
            timed.push((header.base_offset, header.max_timestamp));
            continue;
        }
        let stamp = original.stamp.unwrap_or_default();
        assert_eq!(
            (header.producer_id, header.producer_epoch, header.base_sequence),
            (stamp.producer_id, stamp.producer_epoch, stamp.base_sequence),
            "{context}: the batch at {} changed its producer stamp",
            header.base_offset
        );
        for record in batch.records() {
            let record = record.unwrap_or_else(|error| panic!("{context}: {error}"));
            let expected = original
                .records
                .iter()
                .find(|expected| expected.offset == record.offset)
                .unwrap_or_else(|| panic!("{context}: offset {} was never appended", record.offset));
            let got = ModelRecord {
                offset: record.offset,
                key: record.key.map(|key| key.to_vec()),
                value: record.value.map(|value| value.to_vec()),
                headers: record.headers,
                timestamp: record.timestamp,
                appended_ms: expected.appended_ms,
            };
            assert_eq!(
                &got, expected,
                "{context}: the record at {} changed",
                record.offset
            );
            timed.push((record.offset, record.timestamp));
            assert!(
                present.insert(record.offset, got).is_none(),
                "{context}: offset {} twice",
                record.offset
            );
        }
    }
    // Nothing is missing that a reader is entitled to.
    for batch in model
        .batches
        .iter()
        .filter(|batch| batch.base_offset < high_watermark)
    {
        if batch.control {
            assert!(
                present_batches.contains(&batch.base_offset),
                "{context}: the control batch at {} is gone",
                batch.base_offset
            );
        }
        for record in &batch.records {
            if !present.contains_key(&record.offset) {
                assert!(
                    may_be_absent(model, &config, record, high_watermark),
                    "{context}: the record at {} (key {:?}, tombstone {}) is gone; frontier {}, last clean at {}, marks {:?}",
                    record.offset,
                    record.key.as_ref().map(|key| String::from_utf8_lossy(key).into_owned()),
                    record.value.is_none(),
                    model.compaction_frontier,
                    model.clean_now_max,
                    record.key.as_ref().and_then(|key| model.marks.get(key))
                );
            }
        }
    }
    // The time index after cleaning: the first remaining record at or after a timestamp.
    if let (Some(low), Some(high)) = (
        timed.iter().map(|(_, timestamp)| *timestamp).min(),
        timed.iter().map(|(_, timestamp)| *timestamp).max(),
    ) {
        let target = low + rng.below((high - low + 20) as u64) as i64 - 10;
        let expected = timed.iter().find(|(_, timestamp)| *timestamp >= target).copied();
        let found = log
            .offset_for_timestamp(target)
            .unwrap_or_else(|error| panic!("{context}: {error}"));
        assert_eq!(found, expected, "{context}: the offset for timestamp {target}");
    }
    check_marks_and_streams(log, model, &present, context);
    check_erasures(log, disk, model, &present, context);
    // A read from any offset (a removed one too) starts at the next remaining batch.
    if !batches.is_empty() {
        let start = log.log_start_offset();
        let offset = start + rng.below((high_watermark - start) as u64) as i64;
        let outcome = log
            .read(offset, 1)
            .unwrap_or_else(|error| panic!("{context}: read at {offset}: {error}"));
        let first = BatchIter::new(outcome.records)
            .next()
            .map(|batch| batch.expect("whole batches").header().base_offset);
        let expected = batches
            .iter()
            .find(|batch| batch.header().last_offset() >= offset)
            .map(|batch| batch.header().base_offset);
        assert_eq!(first, expected, "{context}: a read at {offset}");
    }
}

pub(super) fn check_marks_and_streams(
    log: &PartitionLog,
    model: &Model,
    present: &BTreeMap<i64, ModelRecord>,
    context: &str,
) {
    for index in 0..KEYS {
        let key = key(index);
        let marks = model_marks(model, &key);
        let state = log.stream_marks(&key);
        assert_eq!(
            (state.truncated_before, state.erased, state.erase_before),
            (marks.truncated_before, marks.erased, marks.erase_before),
            "{context}: the marks of {}",
            String::from_utf8_lossy(&key)
        );
        let Some(start) = model.stream_start(&key) else {
            let read = log.read_stream(&key, 0, Direction::Forward, 10, usize::MAX);
            assert!(
                matches!(read, Err(StorageError::StreamErased { .. })),
                "{context}: a read of erased {}: {read:?}",
                String::from_utf8_lossy(&key)
            );
            continue;
        };
        let records: Vec<(i64, Vec<u8>)> = present
            .values()
            .filter(|record| record.key.as_deref() == Some(&key[..]) && record.offset >= start)
            .map(|record| (record.offset, record.value.clone().unwrap_or_default()))
            .collect();
        let version = if model.version_unknown.contains(&key) {
            None
        } else if marks.truncated_version >= log.log_start_offset() {
            Some(marks.truncated_version)
        } else {
            Some(-1)
        };
        check_stream(
            log,
            &key,
            &records,
            version,
            3,
            &format!("{context}: the stream {}", String::from_utf8_lossy(&key)),
        );
    }
}

/// Every reader-facing answer for `key` against `expected` (its records, offset order) and the
/// version a truncation kept (-1: none; None: not known), reading in pages of `page` forward
/// and backward.
pub(super) fn check_stream(
    log: &PartitionLog,
    key: &[u8],
    expected: &[(i64, Vec<u8>)],
    version: Option<i64>,
    page: usize,
    context: &str,
) {
    let end = log.high_watermark();
    let info = log
        .stream_info(key)
        .unwrap_or_else(|error| panic!("{context}: info: {error}"));
    let version_read = log
        .stream_last_offset(key)
        .unwrap_or_else(|error| panic!("{context}: {error}"));
    let records_last = expected.last().map_or(-1, |(offset, _)| *offset);
    let last = version.map_or(info.last_offset.max(records_last), |version| {
        records_last.max(version)
    });
    let want = StreamInfo {
        first_offset: expected.first().map_or(-1, |(offset, _)| *offset),
        last_offset: last,
        records: expected.len() as u64,
    };
    assert_eq!(info, want, "{context}: stream_info");
    if version.is_some() || TRUNCATED_VERSION_PAST_END_FIXED {
        assert_eq!(
            version_read,
            (last >= 0).then_some(last),
            "{context}: stream_last_offset"
        );
        assert!(
            info.last_offset < end,
            "{context}: a version {} at or past the end {end}",
            info.last_offset
        );
    }
    let pairs = |records: &[StreamRecord]| -> Vec<(i64, Vec<u8>)> {
        records
            .iter()
            .map(|record| {
                (
                    record.offset,
                    record
                        .value
                        .as_ref()
                        .map(|value| value.to_vec())
                        .unwrap_or_default(),
                )
            })
            .collect()
    };
    let mut got = Vec::new();
    let mut from = 0;
    for _ in 0..=expected.len() {
        let read = log
            .read_stream(key, from, Direction::Forward, page, usize::MAX)
            .unwrap_or_else(|error| panic!("{context}: forward read: {error}"));
        assert!(
            read.records.len() <= page && read.records.iter().all(|record| record.key == key),
            "{context}"
        );
        got.extend(pairs(&read.records));
        from = read.next_offset;
        if read.end_of_stream {
            assert_eq!(read.next_offset, end, "{context}: the next offset at the end");
            break;
        }
    }
    assert_eq!(got, expected, "{context}: forward read");
    let mut got = Vec::new();
    let mut from = -1;
    for _ in 0..=expected.len() {
        let read = log
            .read_stream(key, from, Direction::Backward, page, usize::MAX)
            .unwrap_or_else(|error| panic!("{context}: backward read: {error}"));
        got.extend(pairs(&read.records));
        from = read.next_offset;
        if read.end_of_stream {
            break;
        }
    }
    got.reverse();
    assert_eq!(got, expected, "{context}: backward read");
}

/// A completed erasure: its records are in no read, and neither their values nor (once no
/// record of the key is left) the key are in any segment file.
pub(super) fn check_erasures(
    log: &PartitionLog,
    disk: &SimDisk,
    model: &Model,
    present: &BTreeMap<i64, ModelRecord>,
    context: &str,
) {
    if model.erased_done.is_empty() {
        return;
    }
    let dir = sim_dir();
    let files: Vec<(String, Vec<u8>)> = disk
        .file_names(&dir)
        .into_iter()
        .filter_map(|name| {
            let bytes = disk.read_file(&dir.join(&name))?;
            Some((name, bytes))
        })
        .collect();
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|window| window == needle);
    for (key, before) in &model.erased_done {
        let key_text = String::from_utf8_lossy(key);
        for (_, record) in model.records() {
            if record.key.as_ref() != Some(key) || record.offset >= *before {
                continue;
            }
            assert!(
                !present.contains_key(&record.offset),
                "{context}: erased record {} of {key_text} is still served",
                record.offset
            );
            if let Some(value) = &record.value {
                for (name, bytes) in &files {
                    assert!(
                        !contains(bytes, value),
                        "{context}: the value of erased record {} of {key_text} is still in {name}",
                        record.offset
                    );
                }
            }
        }
        // Records of the key from after the erasure (re-opened) hold its bytes, visible yet
        // or not.
        let key_left = present.values().any(|record| record.key.as_ref() == Some(key))
            || model
                .records()
                .any(|(_, record)| record.key.as_ref() == Some(key) && record.offset >= *before);
        let latest = model
            .marks
            .get(key)
            .is_some_and(|marks| marks.erase_before == *before);
        if let (true, Ok(progress)) = (latest, log.erasure_progress(key)) {
            assert_eq!(
                progress.records_remaining, 0,
                "{context}: erasure of {key_text} complete, yet {progress:?}"
            );
        }
        if !key_left {
            for (name, bytes) in &files {
                let segment_file = [".log", ".index", ".timeindex", ".keys"]
                    .iter()
                    .any(|extension| name.ends_with(extension));
                assert!(
                    !segment_file || !contains(bytes, key),
                    "{context}: erased key {key_text} is still in {name}"
                );
            }
        }
    }
}
