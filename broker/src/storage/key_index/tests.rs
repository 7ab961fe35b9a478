//! Per-key index tests on the storage engine: exact answers with a deliberately colliding
//! hash through rolls, restarts (rebuilds), retention and trims; the active table's bound;
//! damaged, deleted, stale and stray `.keys` files; the writer's lookup.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tidelog_proto::batch::{Compression, NewRecord, RecordBatch, RecordBatchBuilder};

use super::super::disk::OsDisk;
use super::super::log::SealMode;
use super::super::{FlushPolicy, LogConfig, PartitionLog, StorageError};
use super::file::{encode, Expect, KeysFile};
use super::table::{ActiveTable, Place};

fn place(relative_offset: u32, batch_position: u32) -> Place {
    Place {
        relative_offset,
        batch_position,
        record_start: 61 + relative_offset % 7,
    }
}
use super::{Direction, KeyHash, StreamInfo, StreamRecord};

/// Every key hashes to 7: only the key bytes tell streams apart.
pub(crate) const COLLIDING: KeyHash = KeyHash {
    id: 0xfff7,
    function: |_| 7,
};

/// A batch of records `(key, value)`; `None` keys are keyless records.
pub(crate) fn keyed_batch(records: &[(Option<&[u8]>, &[u8])], compression: Compression) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new();
    for (index, (key, value)) in records.iter().enumerate() {
        builder.push(&NewRecord {
            timestamp: 1_000 + index as i64,
            key: key.map(Bytes::copy_from_slice),
            value: Some(Bytes::copy_from_slice(value)),
            headers: vec![tidelog_proto::batch::RecordHeader {
                key: "h".to_string(),
                value: Some(Bytes::from_static(b"v")),
            }],
        });
    }
    let bytes = builder.build().expect("at least one record");
    let bytes = if compression == Compression::None {
        bytes
    } else {
        tidelog_proto::batch::compress_batch(&bytes, compression).expect("compresses")
    };
    let (batch, _) = RecordBatch::split_first(&bytes).expect("parses");
    batch.validate().expect("validates");
    batch
}

fn config(hash: KeyHash, segment_bytes: u64) -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Never,
        segment_bytes,
        index_interval_bytes: 256,
        key_hash: hash,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open_with_seal_mode(dir, config, Arc::new(OsDisk), SealMode::Deferred).expect("opens")
}

/// What every reader must see: per key, its records (offset, value) in offset order.
#[derive(Debug, Default)]
pub(crate) struct Reference {
    pub streams: BTreeMap<Vec<u8>, Vec<(i64, Vec<u8>)>>,
}

impl Reference {
    pub fn record(&mut self, base_offset: i64, records: &[(Option<&[u8]>, &[u8])]) {
        for (index, (key, value)) in records.iter().enumerate() {
            if let Some(key) = key {
                self.streams
                    .entry(key.to_vec())
                    .or_default()
                    .push((base_offset + index as i64, value.to_vec()));
            }
        }
    }

    /// The stream of `key` restricted to `[start, end)`.
    pub fn visible(&self, key: &[u8], start: i64, end: i64) -> Vec<(i64, Vec<u8>)> {
        self.streams
            .get(key)
            .map(|records| {
                records
                    .iter()
                    .filter(|(offset, _)| (start..end).contains(offset))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn pairs(records: &[StreamRecord]) -> Vec<(i64, Vec<u8>)> {
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
}

/// Checks every reader-facing answer for `key` against the reference, reading in pages of
/// `page` forward and backward.
pub(crate) fn check_key(log: &PartitionLog, reference: &Reference, key: &[u8], page: usize) {
    let start = log.log_start_offset();
    let end = log.high_watermark();
    let expected = reference.visible(key, start, end);
    let info = log.stream_info(key).expect("info");
    let want_info = match (expected.first(), expected.last()) {
        (Some(first), Some(last)) => StreamInfo {
            first_offset: first.0,
            last_offset: last.0,
            records: expected.len() as u64,
        },
        _ => StreamInfo::NONE,
    };
    assert_eq!(info, want_info, "stream_info of {key:?}");
    assert_eq!(
        log.stream_last_offset(key).expect("last"),
        expected.last().map(|(offset, _)| *offset),
        "stream_last_offset of {key:?}"
    );
    // Forward, page by page.
    let mut got = Vec::new();
    let mut from = 0;
    for _ in 0..=expected.len() {
        let read = log
            .read_stream(key, from, Direction::Forward, page, usize::MAX)
            .expect("forward read");
        assert!(read.records.len() <= page);
        assert!(read.records.iter().all(|record| record.key == key));
        got.extend(pairs(&read.records));
        from = read.next_offset;
        if read.end_of_stream {
            assert_eq!(read.next_offset, end, "next offset at the end of {key:?}");
            break;
        }
    }
    assert_eq!(got, expected, "forward read of {key:?}");
    // Backward, page by page.
    let mut got = Vec::new();
    let mut from = -1;
    for _ in 0..=expected.len() {
        let read = log
            .read_stream(key, from, Direction::Backward, page, usize::MAX)
            .expect("backward read");
        got.extend(pairs(&read.records));
        from = read.next_offset;
        if read.end_of_stream {
            assert_eq!(read.next_offset, -1);
            break;
        }
    }
    got.reverse();
    assert_eq!(got, expected, "backward read of {key:?}");
}

fn append(log: &PartitionLog, reference: &mut Reference, records: &[(Option<&[u8]>, &[u8])]) -> i64 {
    let batch = keyed_batch(records, Compression::None);
    let outcome = log.append(std::slice::from_ref(&batch), 0).expect("append");
    reference.record(outcome.base_offset, records);
    outcome.base_offset
}

const KEYS: [&[u8]; 5] = [b"alpha", b"beta", b"gamma", b"alph", b""];

/// Appends a deterministic mix of keys, keyless records and batch shapes.
fn fill(log: &PartitionLog, reference: &mut Reference, rounds: usize) {
    for round in 0..rounds {
        let value = format!("v{round}").into_bytes();
        let a = KEYS[round % KEYS.len()];
        let b = KEYS[(round * 3 + 1) % KEYS.len()];
        append(
            log,
            reference,
            &[
                (Some(a), &value),
                (None, b"keyless"),
                (Some(b), &value),
                (Some(a), b"again"),
            ],
        );
    }
}

fn check_all(log: &PartitionLog, reference: &Reference) {
    for key in KEYS.iter().chain([&b"absent"[..]].iter()) {
        for page in [1, 3, 100] {
            check_key(log, reference, key, page);
        }
    }
}

#[test]
fn colliding_keys_never_see_each_others_records_through_rolls_restarts_retention_and_trims() {
    let dir = tempfile::tempdir().unwrap();
    let mut reference = Reference::default();
    let log = open(dir.path(), config(COLLIDING, 1024));
    fill(&log, &mut reference, 60);
    assert!(log.segment_count() > 3, "small segments roll");
    check_all(&log, &reference);
    // Sealing writes the closed segments' `.keys` files; answers stay the same from them.
    log.sync().unwrap();
    let keys_files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".keys")
        })
        .count();
    assert_eq!(
        keys_files,
        log.segment_count() - 1,
        "one .keys per closed segment"
    );
    check_all(&log, &reference);
    log.close().unwrap();
    drop(log);

    // Clean restart: files loaded, active segment rebuilt by scanning.
    let log = open(dir.path(), config(COLLIDING, 1024));
    check_all(&log, &reference);
    fill(&log, &mut reference, 10);
    check_all(&log, &reference);

    // A trim: nothing below the new log start is returned.
    let trim_to = log.high_watermark() / 2 + 1;
    log.advance_log_start(trim_to, 0).unwrap();
    assert_eq!(log.log_start_offset(), trim_to);
    check_all(&log, &reference);
    // Retention by size deletes whole segments and their `.keys` files.
    let mut retained = (*log.config()).clone();
    retained.retention_bytes = 2048;
    log.alter_config(retained).unwrap();
    let outcome = log.run_maintenance(0).unwrap();
    assert!(outcome.segments_deleted > 0);
    check_all(&log, &reference);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".keys") {
            assert!(
                dir.path().join(format!("{stem}.log")).exists(),
                "{name} outlived its segment"
            );
        }
    }
    // Restart without a clean close: everything rebuilt or loaded, still exact.
    drop(log);
    let log = open(dir.path(), config(COLLIDING, 1024));
    check_all(&log, &reference);
}

#[test]
fn the_default_hash_gives_the_same_answers_and_compressed_batches_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let mut reference = Reference::default();
    let log = open(dir.path(), config(KeyHash::DEFAULT, 2048));
    for round in 0..40 {
        let value = format!("value-{round}").into_bytes();
        let key = KEYS[round % 3];
        let records: [(Option<&[u8]>, &[u8]); 3] = [(Some(key), &value), (None, b"x"), (Some(b"zz"), &value)];
        let batch = keyed_batch(&records, Compression::ALL[round % Compression::ALL.len()]);
        let outcome = log.append(std::slice::from_ref(&batch), 0).unwrap();
        reference.record(outcome.base_offset, &records);
    }
    check_all(&log, &reference);
    check_key(&log, &reference, b"zz", 7);
    log.sync().unwrap();
    check_key(&log, &reference, b"zz", 7);
    check_all(&log, &reference);
}

#[test]
fn a_full_active_table_rolls_the_segment_and_its_bound_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(KeyHash::DEFAULT, 1 << 30);
    config.key_index_active_bytes_max = 512 << 10;
    let log = open(dir.path(), config.clone());
    let mut reference = Reference::default();
    for round in 0..600u32 {
        let keys: Vec<Vec<u8>> = (0..50)
            .map(|index| format!("key-{round}-{index}").into_bytes())
            .collect();
        let records: Vec<(Option<&[u8]>, &[u8])> =
            keys.iter().map(|key| (Some(key.as_slice()), &b"v"[..])).collect();
        append(&log, &mut reference, &records);
        let segments = log.segments_for_test();
        let active = segments.last().unwrap();
        let bytes = active.keys.resident_bytes();
        assert!(
            bytes <= config.key_index_active_bytes_max,
            "active table holds {bytes} bytes, bound {}",
            config.key_index_active_bytes_max
        );
    }
    assert!(
        log.segment_count() > 2,
        "the table filled and rolled: {}",
        log.segment_count()
    );
    for key in [&b"key-0-0"[..], b"key-599-49", b"key-200-7", b"key-x"] {
        check_key(&log, &reference, key, 10);
    }
}

fn keys_file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".keys"))
        .collect();
    names.sort();
    names
}

#[test]
fn damaged_deleted_and_stale_keys_files_are_rebuilt_and_answers_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut reference = Reference::default();
    let log = open(dir.path(), config(COLLIDING, 1024));
    fill(&log, &mut reference, 40);
    log.close().unwrap();
    drop(log);
    let names = keys_file_names(dir.path());
    assert!(names.len() >= 3);
    let log_bytes_before: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum();
    // One flipped bit in a block, one in the summary, one file deleted, one truncated, one
    // copied over another segment's (stale: it describes other offsets).
    let path = |name: &String| dir.path().join(name);
    let mut bytes = std::fs::read(path(&names[0])).unwrap();
    bytes[100] ^= 0x04;
    std::fs::write(path(&names[0]), &bytes).unwrap();
    let mut bytes = std::fs::read(path(&names[1])).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x80;
    std::fs::write(path(&names[1]), &bytes).unwrap();
    std::fs::remove_file(path(&names[2])).unwrap();
    if names.len() > 4 {
        let bytes = std::fs::read(path(&names[3])).unwrap();
        std::fs::write(path(&names[3]), &bytes[..bytes.len() / 2]).unwrap();
        std::fs::copy(path(&names[0]), path(&names[4])).unwrap();
    }
    let log = open(dir.path(), config(COLLIDING, 1024));
    // Before the rebuild: unusable files are not used, the segments are scanned.
    check_all(&log, &reference);
    log.flush_key_index().unwrap();
    check_all(&log, &reference);
    assert_eq!(keys_file_names(dir.path()), names, "every .keys rebuilt");
    log.close().unwrap();
    drop(log);
    let log = open(dir.path(), config(COLLIDING, 1024));
    let segments = log.segments_for_test();
    for segment in &segments[..segments.len() - 1] {
        assert!(
            segment.keys.is_file(),
            "segment {} loads its rebuilt file",
            segment.base_offset
        );
    }
    check_all(&log, &reference);
    let log_bytes_after: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum();
    assert_eq!(log_bytes_before, log_bytes_after, "no log data touched");
}

#[test]
fn a_keys_file_written_with_another_hash_or_version_is_rebuilt_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut reference = Reference::default();
    let log = open(dir.path(), config(COLLIDING, 1024));
    fill(&log, &mut reference, 20);
    log.close().unwrap();
    drop(log);
    // Another hash: every file mismatches and is rebuilt.
    let log = open(dir.path(), config(KeyHash::DEFAULT, 1024));
    let segments = log.segments_for_test();
    assert!(segments[..segments.len() - 1]
        .iter()
        .all(|segment| segment.keys.is_unindexed()));
    check_all(&log, &reference);
    log.close().unwrap();
    drop(log);
    // A newer version number.
    let name = keys_file_names(dir.path())[0].clone();
    let path = dir.path().join(name);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[super::file::KEYS_VERSION_OFFSET + 1] = 9;
    let crc = crc32fast::hash(&bytes[..super::file::KEYS_HEADER_CRC_OFFSET]);
    bytes[super::file::KEYS_HEADER_CRC_OFFSET..super::file::KEYS_HEADER_BYTES]
        .copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let log = open(dir.path(), config(KeyHash::DEFAULT, 1024));
    assert!(log.segments_for_test()[0].keys.is_unindexed());
    check_all(&log, &reference);
}

#[test]
fn an_orphan_keys_file_goes_to_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let mut reference = Reference::default();
    let log = open(dir.path(), config(KeyHash::DEFAULT, 1024));
    fill(&log, &mut reference, 20);
    log.close().unwrap();
    drop(log);
    let name = keys_file_names(dir.path())[0].clone();
    let orphan = "00000000000000999999.keys";
    std::fs::copy(dir.path().join(&name), dir.path().join(orphan)).unwrap();
    let log = open(dir.path(), config(KeyHash::DEFAULT, 1024));
    assert!(dir.path().join("quarantine").join(orphan).exists());
    assert!(!dir.path().join(orphan).exists());
    assert!(log
        .recovery_report()
        .quarantined
        .iter()
        .any(|item| item.file == orphan));
    check_all(&log, &reference);
}

#[test]
fn the_writer_lookup_sees_unsynced_appends_that_readers_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(COLLIDING, 1024);
    config.flush = FlushPolicy::Always;
    let log = open(dir.path(), config);
    let mut reference = Reference::default();
    append(
        &log,
        &mut reference,
        &[(Some(b"k1"), b"one"), (Some(b"k2"), b"two")],
    );
    assert_eq!(log.high_watermark(), 0, "nothing synced yet");
    assert_eq!(log.stream_last_offset(b"k1").unwrap(), None);
    let found = log
        .with_stream_lookup_for_test(|lookup| {
            Ok((
                lookup.last_offset(b"k1")?,
                lookup.last_offset(b"k2")?,
                lookup.last_offset(b"k3")?,
                lookup.records_after(b"k2", -1, 10)?,
            ))
        })
        .unwrap();
    assert_eq!((found.0, found.1, found.2), (Some(0), Some(1), None));
    assert_eq!(pairs(&found.3), vec![(1, b"two".to_vec())]);
    log.sync().unwrap();
    assert_eq!(log.stream_last_offset(b"k2").unwrap(), Some(1));
}

#[test]
fn a_keys_file_answers_exactly_and_every_damaged_byte_is_caught_or_harmless() {
    let mut table = ActiveTable::new(COLLIDING);
    let keys: Vec<Vec<u8>> = (0..300).map(|index| format!("k{index}").into_bytes()).collect();
    for (index, key) in keys.iter().enumerate() {
        table.insert(key, place(index as u32 * 2, 32 + index as u32 * 10));
        table.insert(key, place(index as u32 * 2 + 1, 32 + index as u32 * 10));
    }
    let expect = Expect {
        base_offset: 100,
        next_offset: 700,
        log_bytes: 4000,
        hash: COLLIDING,
    };
    let bytes = encode(&table, expect);
    assert_eq!(super::file::verify_bytes(&bytes, expect, &|_, _| true), Ok(600));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000000000000100.keys");
    std::fs::write(&path, &bytes).unwrap();
    let file = KeysFile::open(&OsDisk, &path, expect).unwrap().unwrap();
    for (index, key) in keys.iter().enumerate() {
        let index = index as u32;
        assert_eq!(
            file.lookup(key).unwrap(),
            vec![
                place(index * 2, 32 + index * 10),
                place(index * 2 + 1, 32 + index * 10)
            ]
        );
    }
    assert_eq!(file.lookup(b"k300").unwrap(), Vec::new());
    // Every flipped byte: the open refuses, or lookups fail, or they are still exact.
    for at in (0..bytes.len()).step_by(7) {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x21;
        std::fs::write(&path, &damaged).unwrap();
        assert!(
            super::file::verify_bytes(&damaged, expect, &|_, _| true).is_err(),
            "verify misses byte {at}"
        );
        let Ok(Some(file)) = KeysFile::open(&OsDisk, &path, expect) else {
            continue;
        };
        for (index, key) in keys.iter().enumerate().step_by(13) {
            let index = index as u32;
            if let Ok(found) = file.lookup(key) {
                assert_eq!(
                    found,
                    vec![
                        place(index * 2, 32 + index * 10),
                        place(index * 2 + 1, 32 + index * 10)
                    ],
                    "byte {at}"
                );
            }
        }
    }
    let _ = StorageError::Closed;
}

#[test]
fn a_clean_close_writes_the_active_table_and_the_next_open_uses_it_only_while_current() {
    let dir = tempfile::tempdir().unwrap();
    let mut reference = Reference::default();
    let log = open(dir.path(), config(COLLIDING, 1 << 20));
    fill(&log, &mut reference, 30);
    assert_eq!(log.segment_count(), 1);
    log.close().unwrap();
    drop(log);
    assert_eq!(
        keys_file_names(dir.path()),
        vec!["00000000000000000000.keys".to_string()]
    );
    // Loaded, not scanned: the same answers.
    let log = open(dir.path(), config(COLLIDING, 1 << 20));
    check_all(&log, &reference);
    // Appends after it make the file stale; a restart without a close must not use it.
    fill(&log, &mut reference, 5);
    log.sync().unwrap();
    drop(log);
    let log = open(dir.path(), config(COLLIDING, 1 << 20));
    check_all(&log, &reference);
    // A damaged one is not used either.
    log.close().unwrap();
    drop(log);
    let path = dir.path().join("00000000000000000000.keys");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();
    let log = open(dir.path(), config(COLLIDING, 1 << 20));
    check_all(&log, &reference);
}
