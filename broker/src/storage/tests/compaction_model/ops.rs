//! The compaction model's operations: random batches and what each operation (produce,
//! idempotent retries, control batches, cleans, truncations, erasures, re-opens, reopening
//! after a crash) does to the log and to the model.

use bytes::Bytes;
use tidelog_proto::batch::{
    compress_batch, Compression, NewRecord, ProducerStamp, RecordBatch, RecordBatchBuilder, RecordHeader,
};

use super::super::super::sim_disk::{SimDisk, SplitMix};
use super::super::super::{CleanOptions, LogConfig, PartitionLog, StorageError, Unthrottled};
use super::super::stored;
use super::checks::{check_everything, read_everything};
use super::*;

pub(super) struct NewBatch {
    batch: RecordBatch,
    stamp: Option<ProducerStamp>,
}

/// One or two batches of 1-4 records: keys from a small space (now and then none), values
/// unique (now and then a tombstone), a header sometimes, compressed sometimes.
pub(super) fn random_batches(
    rng: &mut SplitMix,
    config: &LogConfig,
    now: i64,
    serial: &mut u64,
) -> (Vec<NewBatch>, Vec<Vec<NewRecord>>) {
    let count = 1 + rng.below(2) as usize;
    let mut batches = Vec::new();
    let mut all_records = Vec::new();
    for _ in 0..count {
        let records = random_records(rng, config, now, serial);
        batches.push(NewBatch {
            batch: build(&records, None, rng),
            stamp: None,
        });
        all_records.push(records);
    }
    (batches, all_records)
}

pub(super) fn random_records(
    rng: &mut SplitMix,
    config: &LogConfig,
    now: i64,
    serial: &mut u64,
) -> Vec<NewRecord> {
    let keyless_odds = if config.cleanup_policy.compacts() { 25 } else { 6 };
    (0..1 + rng.below(4))
        .map(|_| {
            *serial += 1;
            let key =
                (rng.below(keyless_odds) != 0).then(|| Bytes::from(key(rng.below(KEYS as u64) as usize)));
            let value = (rng.below(6) != 0).then(|| {
                let padding = "p".repeat(rng.below(60) as usize);
                Bytes::from(format!("erasable-value-{serial:06}-{padding}"))
            });
            let headers = match rng.below(4) {
                0 => vec![RecordHeader {
                    key: "h".to_string(),
                    value: Some(Bytes::from(format!("hv{serial}"))),
                }],
                1 => vec![RecordHeader {
                    key: "null".to_string(),
                    value: None,
                }],
                _ => Vec::new(),
            };
            NewRecord {
                timestamp: now - rng.below(50) as i64,
                key,
                value,
                headers,
            }
        })
        .collect()
}

pub(super) fn build(records: &[NewRecord], stamp: Option<ProducerStamp>, rng: &mut SplitMix) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new();
    if let Some(stamp) = stamp {
        builder.set_producer(stamp);
    }
    for record in records {
        builder.push(record);
    }
    let bytes = builder.build().expect("at least one record");
    let bytes = if rng.below(5) == 0 {
        let codec = Compression::ALL[1 + rng.below(4) as usize];
        compress_batch(&bytes, codec).expect("compresses")
    } else {
        bytes
    };
    let (batch, rest) = RecordBatch::split_first(&bytes).expect("builder output parses");
    assert!(rest.is_empty());
    batch.validate().expect("builder output validates");
    batch
}

/// Appends `batches`; checks the refusals the model predicts (keyless records on a compacting
/// log, records of an erased key, batches that cannot fit a segment) and records the rest.
pub(super) fn produce(
    log: &PartitionLog,
    model: &mut Model,
    batches: Vec<NewBatch>,
    records: Vec<Vec<NewRecord>>,
    now: i64,
    context: &str,
) -> bool {
    let config = log.config();
    let total: usize = batches.iter().map(|batch| batch.batch.len()).sum();
    let flat: Vec<&NewRecord> = records.iter().flatten().collect();
    let keyless = config.cleanup_policy.compacts() && flat.iter().any(|record| record.key.is_none());
    let erased = flat.iter().any(|record| {
        record
            .key
            .as_ref()
            .is_some_and(|key| model.marks.get(&key[..]).is_some_and(|marks| marks.erased))
    });
    let parsed: Vec<RecordBatch> = batches.iter().map(|batch| batch.batch.clone()).collect();
    let end_before = model.next_offset;
    let result = log.append(&parsed, now);
    if total + 32 > config.segment_bytes as usize {
        assert!(
            result.is_err(),
            "{context}: an append larger than a segment was taken"
        );
        return false;
    }
    if keyless || erased {
        // Either refusal may come first when both apply; nothing is appended.
        assert!(
            (keyless && matches!(result, Err(StorageError::KeylessRecord { .. })))
                || (erased && matches!(result, Err(StorageError::StreamErased { .. }))),
            "{context}: keyless {keyless}, erased key {erased}: {result:?}"
        );
        return false;
    }
    let outcome = result.unwrap_or_else(|error| panic!("{context}: append: {error}"));
    assert!(!outcome.duplicate, "{context}");
    assert_eq!(
        outcome.base_offset, end_before,
        "{context}: an offset reused or skipped"
    );
    let mut offset = end_before;
    for (batch, records) in batches.iter().zip(records) {
        let base_offset = offset;
        let model_records: Vec<ModelRecord> = records
            .into_iter()
            .map(|record| {
                let key = record.key.map(|key| key.to_vec());
                if let Some(key) = &key {
                    // A record acknowledged after an erasure or truncation must be readable:
                    // its offset must be above every mark of its key.
                    assert!(
                        !model.marks_remove(key, offset),
                        "{context}: a new record of {} at {offset} is below its key's mark {:?}",
                        String::from_utf8_lossy(key),
                        model.marks.get(key)
                    );
                }
                let model_record = ModelRecord {
                    offset,
                    key,
                    value: record.value.map(|value| value.to_vec()),
                    headers: record.headers,
                    timestamp: record.timestamp,
                    appended_ms: now,
                };
                offset += 1;
                model_record
            })
            .collect();
        model.batches.push(ModelBatch {
            base_offset,
            last_offset: offset - 1,
            bytes: stored(&batch.batch, base_offset),
            control: false,
            stamp: batch.stamp,
            records: model_records,
        });
    }
    model.next_offset = offset;
    assert_eq!(outcome.last_offset + 1, offset, "{context}");
    true
}

pub(super) fn produce_idempotent(
    log: &PartitionLog,
    model: &mut Model,
    rng: &mut SplitMix,
    now: i64,
    serial: &mut u64,
    context: &str,
) {
    if model.producers.is_empty() || rng.below(8) == 0 {
        model.producers.push(Producer {
            id: model.next_producer_id,
            next_sequence: 0,
            recent: Vec::new(),
        });
        model.next_producer_id += 1;
    }
    let index = rng.below(model.producers.len() as u64) as usize;
    let producer = model.producers[index].clone();
    let config = log.config();
    // Keyed only: a keyless record would be refused on a compacting log.
    let mut records = random_records(rng, &config, now, serial);
    for record in &mut records {
        if record.key.is_none() {
            record.key = Some(Bytes::from(key(0)));
        }
    }
    let stamp = ProducerStamp {
        producer_id: producer.id,
        producer_epoch: 0,
        base_sequence: producer.next_sequence,
    };
    let batch = build(&records, Some(stamp), rng);
    let count = records.len() as i32;
    let base_offset = model.next_offset;
    if produce(
        log,
        model,
        vec![NewBatch {
            batch: batch.clone(),
            stamp: Some(stamp),
        }],
        vec![records],
        now,
        context,
    ) {
        let producer = &mut model.producers[index];
        producer.next_sequence += count;
        producer.recent.push((batch, base_offset, model.next_offset - 1));
        if producer.recent.len() > 5 {
            producer.recent.remove(0);
        }
    }
}

/// A retry of one of a producer's recent batches: its last must come back a duplicate at its
/// original offsets; an older one may be refused, but is never appended again.
pub(super) fn retry_idempotent(
    log: &PartitionLog,
    model: &Model,
    rng: &mut SplitMix,
    now: i64,
    context: &str,
) {
    let candidates: Vec<&Producer> = model
        .producers
        .iter()
        .filter(|producer| !producer.recent.is_empty())
        .collect();
    if candidates.is_empty() {
        return;
    }
    let producer = candidates[rng.below(candidates.len() as u64) as usize];
    let last = rng.below(2) == 0;
    let (batch, base_offset, last_offset) = if last {
        producer.recent.last().expect("not empty")
    } else {
        &producer.recent[rng.below(producer.recent.len() as u64) as usize]
    };
    let result = log.append(std::slice::from_ref(batch), now);
    let end = log.high_watermark().max(model.next_offset);
    match result {
        Ok(outcome) => {
            assert!(
                outcome.duplicate && outcome.base_offset == *base_offset && outcome.last_offset == *last_offset,
                "{context}: a retry of producer {}'s batch at {base_offset}..={last_offset} was appended again: {outcome:?}",
                producer.id
            );
        }
        Err(error) => {
            assert!(
                !last,
                "{context}: the retry of producer {}'s last batch ({base_offset}..={last_offset}) was refused: {error}",
                producer.id
            );
            assert!(
                matches!(
                    error,
                    StorageError::DuplicateSequence { .. } | StorageError::OutOfOrderSequence { .. }
                ),
                "{context}: {error}"
            );
        }
    }
    assert_eq!(
        end,
        log.high_watermark().max(model.next_offset),
        "{context}: a retry moved the log end"
    );
}

/// A transaction marker (COMMIT) from the storage layer's point of view: kept byte for byte.
pub(super) fn produce_control(log: &PartitionLog, model: &mut Model, now: i64, context: &str) {
    let mut builder = RecordBatchBuilder::new();
    builder.push(&NewRecord {
        timestamp: now,
        key: Some(Bytes::from_static(&[0, 0, 0, 1])),
        value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
        headers: Vec::new(),
    });
    let bytes = builder.build().expect("one record");
    let mut bytes = bytes.to_vec();
    let attributes = i16::from_be_bytes([bytes[21], bytes[22]]) | ATTRIBUTE_TRANSACTIONAL | ATTRIBUTE_CONTROL;
    bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = tidelog_proto::batch::compute_crc(&bytes);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    let bytes = Bytes::from(bytes);
    let (batch, _) = RecordBatch::split_first(&bytes).expect("parses");
    batch.validate().expect("a control batch validates");
    let base_offset = model.next_offset;
    match log.append(std::slice::from_ref(&batch), now) {
        Ok(outcome) => {
            assert_eq!(outcome.base_offset, base_offset, "{context}");
            model.batches.push(ModelBatch {
                base_offset,
                last_offset: base_offset,
                bytes: stored(&batch, base_offset),
                control: true,
                stamp: None,
                records: Vec::new(),
            });
            model.next_offset += 1;
        }
        // The storage layer may refuse markers without a transaction: then nothing changed.
        Err(error) => {
            assert_eq!(
                log.high_watermark().max(base_offset),
                base_offset.max(log.high_watermark())
            );
            if verbose() {
                eprintln!("{context}: control batch refused: {error}");
            }
        }
    }
}

pub(super) fn clean(
    log: &PartitionLog,
    disk: &SimDisk,
    model: &mut Model,
    now: i64,
    dedupe_bytes_max: usize,
    context: &str,
) {
    let stats = log.cleaner_stats(now);
    let result = log.clean(now, &CleanOptions { dedupe_bytes_max }, &Unthrottled);
    if verbose() {
        eprintln!("{context}: clean at {now} (dedupe {dedupe_bytes_max}) with {stats:?}: {result:?}");
    }
    match result {
        Ok(outcome) => {
            model.cleans += 1;
            model.records_removed += outcome.records_removed;
            assert!(
                outcome.first_dirty_offset <= log.high_watermark().max(model.next_offset),
                "{context}: {outcome:?}"
            );
        }
        Err(StorageError::CleanFailed { reason, .. }) if dedupe_bytes_max < 1 << 10 => {
            if verbose() {
                eprintln!("{context}: clean failed with a {dedupe_bytes_max}-byte key map: {reason}");
            }
        }
        Err(error) => panic!("{context}: clean: {error} (stats {stats:?})"),
    }
    note_clean(log, model, now);
    // A failed or partial clean leaves a log that serves and takes appends as before.
    let mut rng = SplitMix(now as u64);
    check_everything(log, disk, model, &mut rng, &format!("{context} after a clean"));
}

/// What a clean (finished or not) tells the model: where the active segment was, the latest
/// clock a clean ran with, and which erasures the log now reports complete.
pub(super) fn note_clean(log: &PartitionLog, model: &mut Model, now: i64) {
    let active_base = log
        .segments_for_test()
        .last()
        .map_or(0, |segment| segment.base_offset);
    model.compaction_frontier = model.compaction_frontier.max(active_base);
    model.clean_now_max = model.clean_now_max.max(now);
    for (key, marks) in &model.marks {
        let state = log.stream_marks(key);
        if marks.erase_before >= 0
            && state.erase_completed_ms != 0
            && state.erase_before == marks.erase_before
        {
            model.erased_done.insert((key.clone(), marks.erase_before));
        }
    }
}

pub(super) fn random_key(rng: &mut SplitMix) -> Vec<u8> {
    key(rng.below(KEYS as u64) as usize)
}

pub(super) fn model_marks(model: &Model, key: &[u8]) -> Marks {
    model.marks.get(key).copied().unwrap_or(Marks {
        truncated_before: -1,
        erased: false,
        erase_before: -1,
        truncated_version: -1,
    })
}

pub(super) fn truncate(log: &PartitionLog, model: &mut Model, rng: &mut SplitMix, context: &str) {
    let key = random_key(rng);
    let before = rng.below(model.next_offset as u64 + 4) as i64;
    let high_watermark = log.high_watermark();
    let previous = model_marks(model, &key);
    let result = log.truncate_stream(&key, before);
    if previous.erased {
        assert!(
            matches!(result, Err(StorageError::StreamErased { .. })),
            "{context}: truncating an erased stream: {result:?}"
        );
        return;
    }
    let state = result.unwrap_or_else(|error| panic!("{context}: truncate: {error}"));
    let clamped = before.min(high_watermark);
    let mut marks = previous;
    if clamped > previous.read_start().max(0) {
        // The version kept: the key's last remaining record from the old read start up to
        // the new point.
        let from = previous.read_start().max(log.log_start_offset());
        let last_below = present_records(log, context)
            .into_iter()
            .filter(|(offset, record_key, _)| {
                record_key.as_deref() == Some(&key[..]) && (from..clamped).contains(offset)
            })
            .map(|(offset, _, _)| offset)
            .next_back()
            .unwrap_or(-1);
        marks.truncated_before = clamped;
        marks.truncated_version = previous.truncated_version.max(last_below);
        if model.version_unknown.contains(&key) {
            // max(unknown, last_below): only the log knows; take its answer after this.
            marks.truncated_version = -2;
        }
    }
    assert_eq!(
        (state.truncated_before, state.erased, state.erase_before),
        (marks.truncated_before, marks.erased, marks.erase_before),
        "{context}: truncate {} before {before} (high watermark {high_watermark}, was {previous:?})",
        String::from_utf8_lossy(&key)
    );
    if marks.truncated_version == -2 {
        marks.truncated_version = log.stream_info(&key).map_or(-1, |info| info.last_offset);
    }
    model.marks.insert(key, marks);
}

/// (offset, key, value) of a record as read.
pub(super) type ReadRecord = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// (offset, key, value) of every record the log serves, in offset order; no checks.
pub(super) fn present_records(log: &PartitionLog, context: &str) -> Vec<ReadRecord> {
    let mut rng = SplitMix(7);
    read_everything(log, &mut rng, context)
        .iter()
        .flat_map(|batch| batch.records().collect::<Vec<_>>())
        .map(|record| {
            let record = record.unwrap_or_else(|error| panic!("{context}: {error}"));
            (
                record.offset,
                record.key.map(|key| key.to_vec()),
                record.value.map(|value| value.to_vec()),
            )
        })
        .collect()
}

pub(super) fn erase(log: &PartitionLog, model: &mut Model, rng: &mut SplitMix, now: i64, context: &str) {
    let key = random_key(rng);
    let previous = model_marks(model, &key);
    let state = log
        .erase_stream(&key, now, now + 5_000)
        .unwrap_or_else(|error| panic!("{context}: erase: {error}"));
    assert!(state.erased, "{context}: {state:?}");
    let expected_before = if previous.erased {
        previous.erase_before
    } else {
        model.next_offset
    };
    assert_eq!(
        state.erase_before,
        expected_before,
        "{context}: erase {} (was {previous:?}, log end {})",
        String::from_utf8_lossy(&key),
        model.next_offset
    );
    assert_eq!(state.truncated_before, previous.truncated_before, "{context}");
    model.marks.insert(
        key.clone(),
        Marks {
            erased: true,
            erase_before: state.erase_before,
            // The stream's old version goes with its records.
            truncated_version: if previous.erased {
                previous.truncated_version
            } else {
                -1
            },
            ..previous
        },
    );
    if verbose() {
        eprintln!("{context}: erase {}: {state:?}", String::from_utf8_lossy(&key));
    }
    if !previous.erased {
        model.version_unknown.remove(&key);
    }
    // A key with nothing left to remove is complete at once.
    if state.erase_completed_ms != 0 {
        model.erased_done.insert((key, state.erase_before));
    }
}

pub(super) fn reopen(log: &PartitionLog, model: &mut Model, rng: &mut SplitMix, context: &str) {
    let erased: Vec<Vec<u8>> = model
        .marks
        .iter()
        .filter(|(_, marks)| marks.erased)
        .map(|(key, _)| key.clone())
        .collect();
    if erased.is_empty() {
        return;
    }
    let key = erased[rng.below(erased.len() as u64) as usize].clone();
    let previous = model_marks(model, &key);
    let state = log
        .reopen_stream(&key)
        .unwrap_or_else(|error| panic!("{context}: reopen: {error}"));
    assert!(!state.erased, "{context}: {state:?}");
    assert_eq!(
        state.erase_before, previous.erase_before,
        "{context}: a re-open moved the erase point"
    );
    model.marks.insert(
        key,
        Marks {
            erased: false,
            ..previous
        },
    );
}

/// After a crash: nothing synced is lost, nothing is fenced or quarantined, and the model
/// becomes what the log kept.
pub(super) fn after_reopen(
    log: &PartitionLog,
    disk: &SimDisk,
    model: &mut Model,
    start_before: i64,
    context: &str,
) {
    let recovered = log.high_watermark();
    let report = log.recovery_report().clone();
    assert!(
        recovered >= model.synced_offset,
        "{context}: offsets went back: recovered up to {recovered}, synced {} {report:?}",
        model.synced_offset
    );
    assert!(recovered <= model.next_offset, "{context}: {report:?}");
    assert_eq!(log.log_start_offset(), start_before, "{context}: {report:?}");
    // Without damage a crash fences nothing, and sets aside only segments past the end it
    // took back (never a cleaned segment inside the log).
    let set_aside_inside = report.quarantined.iter().any(|quarantined| {
        let base: Option<i64> = quarantined.file.get(..20).and_then(|digits| digits.parse().ok());
        base.is_none_or(|base| base < recovered)
    });
    assert!(
        report.fenced.is_empty() && !set_aside_inside,
        "{context}: a crash (no damage) left fences or quarantined files inside the log: {report:?}"
    );
    assert!(
        !model
            .batches
            .iter()
            .any(|batch| batch.base_offset < recovered && batch.last_offset >= recovered),
        "{context}: recovered to {recovered}, inside a batch"
    );
    model.batches.retain(|batch| batch.base_offset < recovered);
    model.next_offset = recovered;
    model.synced_offset = recovered;
    // Marks past the recovered end are lowered to it, so offsets reused after the crash are
    // never hidden.
    for (key, marks) in model.marks.iter_mut() {
        marks.truncated_before = marks.truncated_before.min(recovered);
        marks.erase_before = marks.erase_before.min(recovered);
        if marks.truncated_version >= recovered {
            model.version_unknown.insert(key.clone());
        }
    }
    model.erased_done = std::mem::take(&mut model.erased_done)
        .into_iter()
        .map(|(key, before)| (key, before.min(recovered)))
        .collect();
    // Records appended from here on were in the active segment at every clean so far.
    model.compaction_frontier = model.compaction_frontier.min(recovered);
    // A producer whose batches were lost starts over under a new id.
    model
        .producers
        .retain(|producer| producer.recent.iter().all(|(_, _, last)| *last < recovered));
    let mut rng = SplitMix(recovered as u64 ^ 0xabc);
    check_everything(log, disk, model, &mut rng, context);
}
