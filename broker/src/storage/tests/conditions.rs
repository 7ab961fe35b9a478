//! The condition check and the exact-retry match (`storage/conditions.rs`) against an
//! in-memory fake of the per-key lookup, and conditional appends on a real `PartitionLog`.

use bytes::Bytes;
use tidelog_proto::batch::{NewRecord, RecordBatch, RecordBatchBuilder, RecordHeader};

use super::super::conditions::{check, Verdict};
use super::super::key_index::{StreamLookup, StreamRecord};
use super::super::{
    AppendConditions, ConditionFailure, Expected, KeyCondition, StorageError, EVENT_ID_HEADER,
};

/// A log of keyed records in offset order, as the index would answer for it.
#[derive(Default)]
struct FakeLookup {
    records: Vec<StreamRecord>,
}

impl FakeLookup {
    /// Appends records `(key, event id)` at the next offsets (`gap` offsets skipped first,
    /// standing for other keys' records).
    fn push(&mut self, gap: i64, records: &[(&str, Option<&str>)]) {
        let start = self.end_offset() + gap;
        for (offset, (key, event_id)) in (start..).zip(records) {
            let headers = event_id
                .map(|id| vec![(EVENT_ID_HEADER.to_string(), Some(Bytes::from(id.to_string())))])
                .unwrap_or_default();
            self.records.push(StreamRecord {
                offset,
                timestamp: 0,
                key: Bytes::from(key.to_string()),
                value: None,
                headers,
            });
        }
    }

    fn end_offset(&self) -> i64 {
        self.records.last().map_or(0, |record| record.offset + 1)
    }
}

impl StreamLookup for FakeLookup {
    fn last_offset(&mut self, key: &[u8]) -> Result<Option<i64>, StorageError> {
        Ok(self
            .records
            .iter()
            .rev()
            .find(|record| &record.key[..] == key)
            .map(|record| record.offset))
    }

    fn records_after(
        &mut self,
        key: &[u8],
        after: i64,
        limit: usize,
    ) -> Result<Vec<StreamRecord>, StorageError> {
        Ok(self
            .records
            .iter()
            .filter(|record| &record.key[..] == key && record.offset > after)
            .take(limit)
            .cloned()
            .collect())
    }
}

/// One batch of records `(key, event id)`; a key of "" is a keyless record.
fn batch(records: &[(&str, Option<&str>)]) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new();
    for (key, event_id) in records {
        builder.push(&NewRecord {
            timestamp: 0,
            key: (!key.is_empty()).then(|| Bytes::from(key.to_string())),
            value: Some(Bytes::from_static(b"v")),
            headers: event_id
                .map(|id| {
                    vec![RecordHeader {
                        key: EVENT_ID_HEADER.to_string(),
                        value: Some(Bytes::from(id.to_string())),
                    }]
                })
                .unwrap_or_default(),
        });
    }
    let bytes = builder.build().expect("at least one record");
    let (batch, _) = RecordBatch::split_first(&bytes).expect("builder output parses");
    batch.validate().expect("builder output validates");
    batch
}

fn on(key: &str, expected: Expected) -> KeyCondition {
    KeyCondition {
        key: Bytes::from(key.to_string()),
        expected,
    }
}

fn keys(conditions: Vec<KeyCondition>) -> AppendConditions {
    AppendConditions {
        expected_end_offset: None,
        keys: conditions,
    }
}

fn run(
    conditions: &AppendConditions,
    batches: &[RecordBatch],
    lookup: &mut FakeLookup,
) -> Result<Verdict, StorageError> {
    let end_offset = lookup.end_offset();
    check(conditions, batches, end_offset, lookup)
}

fn failures(result: Result<Verdict, StorageError>) -> Vec<ConditionFailure> {
    match result {
        Err(StorageError::ConditionFailed { failures }) => failures,
        other => panic!("expected ConditionFailed, got {other:?}"),
    }
}

fn failure(key: &str, expected: Expected, actual: i64, record_index: Option<u32>) -> ConditionFailure {
    ConditionFailure {
        key: Some(Bytes::from(key.to_string())),
        expected,
        actual,
        record_index,
    }
}

#[test]
fn every_expectation_kind_holds_or_fails_against_the_keys_version() {
    let mut lookup = FakeLookup::default();
    lookup.push(0, &[("a", None), ("b", None), ("a", None)]);
    let write_a = [batch(&[("a", None)])];
    let write_c = [batch(&[("c", None)])];
    let cases = [
        (&write_a, Expected::Any, "a", true, 2),
        (&write_a, Expected::Exists, "a", true, 2),
        (&write_a, Expected::Exact(2), "a", true, 2),
        (&write_a, Expected::NoStream, "a", false, 2),
        (&write_a, Expected::Exact(0), "a", false, 2),
        (&write_a, Expected::Exact(3), "a", false, 2),
        (&write_c, Expected::NoStream, "c", true, -1),
        (&write_c, Expected::Exact(-1), "c", true, -1),
        (&write_c, Expected::Exists, "c", false, -1),
        (&write_c, Expected::Exact(0), "c", false, -1),
        (&write_c, Expected::Any, "c", true, -1),
    ];
    for (batches, expected, key, holds, actual) in cases {
        let conditions = keys(vec![on(key, expected.clone())]);
        let result = run(&conditions, batches, &mut lookup);
        if holds {
            assert_eq!(result.unwrap(), Verdict::Append, "{key} {expected:?}");
        } else {
            assert_eq!(
                failures(result),
                vec![failure(key, expected.clone(), actual, Some(0))],
                "{key} {expected:?}"
            );
        }
    }
}

#[test]
fn a_multi_key_append_lists_every_failed_check_with_the_first_record_of_its_key() {
    let mut lookup = FakeLookup::default();
    lookup.push(0, &[("a", None), ("b", None), ("c", None)]);
    // Records: 0 = x (keyless), 1 = b, 2 = a, 3 = b, 4 = c: across two batches.
    let batches = [
        batch(&[("", None), ("b", None)]),
        batch(&[("a", None), ("b", None), ("c", None)]),
    ];
    let conditions = AppendConditions {
        expected_end_offset: Some(2),
        keys: vec![
            on("a", Expected::Exact(0)),
            on("b", Expected::Exact(0)),
            on("c", Expected::NoStream),
            on("d", Expected::Exists),
        ],
    };
    let found = failures(run(&conditions, &batches, &mut lookup));
    assert_eq!(
        found,
        vec![
            ConditionFailure {
                key: None,
                expected: Expected::Exact(2),
                actual: 3,
                record_index: None,
            },
            failure("b", Expected::Exact(0), 1, Some(1)),
            failure("c", Expected::NoStream, 2, Some(4)),
            // A check-only key: no record of the append writes it.
            failure("d", Expected::Exists, -1, None),
        ]
    );
    let message = StorageError::ConditionFailed { failures: found }.to_string();
    assert!(message.contains("key \"b\": expected 0, actual 1"), "{message}");
    assert!(message.contains("end offset: expected 2, actual 3"), "{message}");
    assert!(
        message.contains("key \"c\": expected none, actual 2"),
        "{message}"
    );
}

#[test]
fn check_only_keys_and_the_end_offset_are_checked_without_being_written() {
    let mut lookup = FakeLookup::default();
    lookup.push(0, &[("account", None), ("limit", None)]);
    let batches = [batch(&[("account", None)])];
    let conditions = AppendConditions {
        expected_end_offset: Some(2),
        keys: vec![on("account", Expected::Exact(0)), on("limit", Expected::Exact(1))],
    };
    assert_eq!(run(&conditions, &batches, &mut lookup).unwrap(), Verdict::Append);
    lookup.push(0, &[("limit", None)]);
    let conditions = AppendConditions {
        expected_end_offset: None,
        keys: vec![on("account", Expected::Exact(0)), on("limit", Expected::Exact(1))],
    };
    assert_eq!(
        failures(run(&conditions, &batches, &mut lookup)),
        vec![failure("limit", Expected::Exact(1), 2, None)]
    );
}

#[test]
fn two_conditions_on_one_key_are_refused() {
    let mut lookup = FakeLookup::default();
    let conditions = keys(vec![on("a", Expected::Any), on("a", Expected::NoStream)]);
    let result = run(&conditions, &[batch(&[("a", None)])], &mut lookup);
    assert!(
        matches!(result, Err(StorageError::InvalidConditions(_))),
        "{result:?}"
    );
}

#[test]
fn an_exact_retry_gets_the_original_offsets() {
    let mut lookup = FakeLookup::default();
    lookup.push(0, &[("a", Some("e0"))]);
    // The original append, expecting version 0, landed at 3..=4 (after other keys' records).
    lookup.push(2, &[("a", Some("e1")), ("a", Some("e2"))]);
    let retry = [batch(&[("a", Some("e1")), ("a", Some("e2"))])];
    let conditions = keys(vec![on("a", Expected::Exact(0))]);
    assert_eq!(
        run(&conditions, &retry, &mut lookup).unwrap(),
        Verdict::Retry {
            base_offset: 3,
            last_offset: 4
        }
    );
    // The same with `none` for a key's first events, and over two batches.
    let mut lookup = FakeLookup::default();
    lookup.push(5, &[("b", Some("x")), ("b", Some("y"))]);
    let retry = [batch(&[("b", Some("x"))]), batch(&[("b", Some("y"))])];
    let conditions = keys(vec![on("b", Expected::NoStream)]);
    assert_eq!(
        run(&conditions, &retry, &mut lookup).unwrap(),
        Verdict::Retry {
            base_offset: 5,
            last_offset: 6
        }
    );
}

#[test]
fn a_retry_that_is_not_exactly_the_stored_records_is_a_conflict() {
    let mut lookup = FakeLookup::default();
    lookup.push(0, &[("a", Some("e0")), ("a", Some("e1")), ("a", Some("e2"))]);
    let conditions = keys(vec![on("a", Expected::Exact(0))]);
    let cases: [(&str, Vec<RecordBatch>); 6] = [
        ("other ids", vec![batch(&[("a", Some("e1")), ("a", Some("zz"))])]),
        (
            "other order",
            vec![batch(&[("a", Some("e2")), ("a", Some("e1"))])],
        ),
        ("a prefix only", vec![batch(&[("a", Some("e1"))])]),
        (
            "one more",
            vec![batch(&[("a", Some("e1")), ("a", Some("e2")), ("a", Some("e3"))])],
        ),
        ("no ids", vec![batch(&[("a", None), ("a", None)])]),
        ("an id missing", vec![batch(&[("a", Some("e1")), ("a", None)])]),
    ];
    for (case, batches) in cases {
        assert_eq!(
            failures(run(&conditions, &batches, &mut lookup)),
            vec![failure("a", Expected::Exact(0), 2, Some(0))],
            "{case}"
        );
    }
    // A key behind what was expected cannot hold the retried records.
    let conditions = keys(vec![on("a", Expected::Exact(7))]);
    let batches = [batch(&[("a", Some("e1")), ("a", Some("e2"))])];
    assert_eq!(
        failures(run(&conditions, &batches, &mut lookup)),
        vec![failure("a", Expected::Exact(7), 2, Some(0))]
    );
}

#[test]
fn records_with_the_same_ids_from_separate_appends_are_not_one_retried_append() {
    let mut lookup = FakeLookup::default();
    lookup.push(0, &[("a", Some("e1"))]);
    lookup.push(1, &[("a", Some("e2"))]);
    let batches = [batch(&[("a", Some("e1")), ("a", Some("e2"))])];
    let conditions = keys(vec![on("a", Expected::NoStream)]);
    assert_eq!(
        failures(run(&conditions, &batches, &mut lookup)),
        vec![failure("a", Expected::NoStream, 2, Some(0))]
    );
}

#[test]
fn a_multi_key_retry_matches_only_when_every_key_written_matches() {
    // Original: a@10 (expect 0), b@11 (any), a@12, c@13 (expect none).
    let mut lookup = FakeLookup::default();
    lookup.push(0, &[("a", Some("old"))]);
    lookup.push(
        9,
        &[
            ("a", Some("1")),
            ("b", Some("2")),
            ("a", Some("3")),
            ("c", Some("4")),
        ],
    );
    let conditions = keys(vec![on("a", Expected::Exact(0)), on("c", Expected::NoStream)]);
    let retry = [
        batch(&[("a", Some("1")), ("b", Some("2"))]),
        batch(&[("a", Some("3")), ("c", Some("4"))]),
    ];
    assert_eq!(
        run(&conditions, &retry, &mut lookup).unwrap(),
        Verdict::Retry {
            base_offset: 10,
            last_offset: 13
        }
    );
    // b's record differs: not the same append.
    let partial = [
        batch(&[("a", Some("1")), ("b", Some("other"))]),
        batch(&[("a", Some("3")), ("c", Some("4"))]),
    ];
    assert_eq!(failures(run(&conditions, &partial, &mut lookup)).len(), 2);
    // A keyless record cannot be compared: a conflict.
    let keyless = [
        batch(&[("a", Some("1")), ("", Some("2"))]),
        batch(&[("a", Some("3")), ("c", Some("4"))]),
    ];
    assert_eq!(failures(run(&conditions, &keyless, &mut lookup)).len(), 2);
    // A written key whose check still holds was not written by the original.
    let conditions = keys(vec![on("a", Expected::Exact(0)), on("d", Expected::NoStream)]);
    let other_key = [
        batch(&[("a", Some("1")), ("d", Some("2"))]),
        batch(&[("a", Some("3"))]),
    ];
    assert_eq!(
        failures(run(&conditions, &other_key, &mut lookup)),
        vec![failure("a", Expected::Exact(0), 12, Some(0))]
    );
}

#[test]
fn an_end_offset_retry_matches_the_records_at_the_expected_end() {
    let mut lookup = FakeLookup::default();
    lookup.push(0, &[("z", None)]);
    lookup.push(0, &[("a", Some("1")), ("b", Some("2"))]);
    lookup.push(0, &[("z", None)]);
    let retry = [batch(&[("a", Some("1")), ("b", Some("2"))])];
    let conditions = AppendConditions {
        expected_end_offset: Some(1),
        keys: Vec::new(),
    };
    assert_eq!(
        run(&conditions, &retry, &mut lookup).unwrap(),
        Verdict::Retry {
            base_offset: 1,
            last_offset: 2
        }
    );
    // Expecting another end than where they landed: a conflict.
    let conditions = AppendConditions {
        expected_end_offset: Some(0),
        keys: Vec::new(),
    };
    assert_eq!(failures(run(&conditions, &retry, &mut lookup)).len(), 1);
}

mod on_a_partition_log {
    use std::sync::{Arc, Barrier};

    use bytes::Bytes;
    use tidelog_proto::batch::{NewRecord, ProducerStamp, RecordBatch, RecordBatchBuilder, RecordHeader};

    use super::super::super::sim_disk::{CrashMode, SimDisk};
    use super::super::super::{
        AppendConditions, Expected, FlushPolicy, KeyCondition, PartitionLog, StorageError, EVENT_ID_HEADER,
    };
    use super::super::{config, sim_open};
    use super::batch;

    fn expect(key: &str, expected: Expected) -> AppendConditions {
        AppendConditions {
            expected_end_offset: None,
            keys: vec![KeyCondition {
                key: Bytes::from(key.to_string()),
                expected,
            }],
        }
    }

    fn actual_of(result: Result<impl std::fmt::Debug, StorageError>) -> i64 {
        match result {
            Err(StorageError::ConditionFailed { failures }) => {
                assert_eq!(failures.len(), 1, "{failures:?}");
                failures[0].actual
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    fn producer_batch(producer_id: i64, base_sequence: i32, key: &str, event_id: &str) -> RecordBatch {
        let mut builder = RecordBatchBuilder::new().with_producer(ProducerStamp {
            producer_id,
            producer_epoch: 0,
            base_sequence,
        });
        builder.push(&NewRecord {
            timestamp: 0,
            key: Some(Bytes::from(key.to_string())),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![RecordHeader {
                key: EVENT_ID_HEADER.to_string(),
                value: Some(Bytes::from(event_id.to_string())),
            }],
        });
        let bytes = builder.build().expect("one record");
        RecordBatch::split_first(&bytes).expect("parses").0
    }

    #[test]
    fn a_refused_append_writes_nothing_and_the_next_expectation_sees_every_earlier_append() {
        let disk = SimDisk::new();
        // Under `always` nothing is visible until synced: the check must still see it.
        let log = sim_open(&disk, config(FlushPolicy::Always));
        let first = log
            .append_conditional(&[batch(&[("a", Some("1"))])], &expect("a", Expected::NoStream), 0)
            .unwrap();
        assert_eq!((first.base_offset, first.duplicate), (0, false));
        log.append(&[batch(&[("b", None)])], 0).unwrap();
        assert_eq!(
            actual_of(log.append_conditional(
                &[batch(&[("a", Some("x"))])],
                &expect("a", Expected::NoStream),
                0
            )),
            0
        );
        let second = log
            .append_conditional(&[batch(&[("a", Some("2"))])], &expect("a", Expected::Exact(0)), 0)
            .unwrap();
        assert_eq!(second.base_offset, 2);
        assert_eq!(
            actual_of(log.append_conditional(
                &[batch(&[("a", Some("y"))])],
                &expect("a", Expected::Exact(0)),
                0
            )),
            2
        );
        assert_eq!(log.high_watermark(), 0, "nothing synced yet");
        log.sync().unwrap();
        assert_eq!(log.high_watermark(), 3, "the refused appends wrote nothing");
    }

    #[test]
    fn an_exact_retry_gets_the_original_offsets_after_a_crash_and_a_restart() {
        let disk = SimDisk::new();
        let retried = [batch(&[("order-7", Some("created")), ("order-7", Some("paid"))])];
        {
            let log = sim_open(&disk, config(FlushPolicy::Always));
            log.append(&[batch(&[("other", None)])], 0).unwrap();
            let first = log
                .append_conditional(&retried, &expect("order-7", Expected::NoStream), 0)
                .unwrap();
            assert_eq!((first.base_offset, first.last_offset), (1, 2));
            log.append(&[batch(&[("other", None)])], 0).unwrap();
            log.sync().unwrap();
        }
        disk.crash(CrashMode::ForgetUnsynced);
        let log = sim_open(&disk, config(FlushPolicy::Always));
        let retry = log
            .append_conditional(&retried, &expect("order-7", Expected::NoStream), 0)
            .unwrap();
        assert_eq!(
            (retry.base_offset, retry.last_offset, retry.duplicate),
            (1, 2, true)
        );
        log.close().unwrap();
        let log = sim_open(&disk, config(FlushPolicy::Always));
        let retry = log
            .append_conditional(&retried, &expect("order-7", Expected::NoStream), 0)
            .unwrap();
        assert_eq!(
            (retry.base_offset, retry.last_offset, retry.duplicate),
            (1, 2, true)
        );
        let other = [batch(&[
            ("order-7", Some("created")),
            ("order-7", Some("cancelled")),
        ])];
        assert_eq!(
            actual_of(log.append_conditional(&other, &expect("order-7", Expected::NoStream), 0)),
            2
        );
        assert_eq!(
            log.high_watermark(),
            4,
            "neither the retry nor the conflict wrote"
        );
    }

    #[test]
    fn a_refused_append_does_not_advance_the_producer_state() {
        let disk = SimDisk::new();
        let log = sim_open(&disk, config(FlushPolicy::Never));
        log.append(&[batch(&[("a", None)])], 0).unwrap();
        let refused = log.append_conditional(
            &[producer_batch(9, 0, "a", "x")],
            &expect("a", Expected::NoStream),
            0,
        );
        assert_eq!(actual_of(refused), 0);
        // The producer's sequence 0 was not taken: the same sequence appends now.
        let outcome = log
            .append_conditional(
                &[producer_batch(9, 0, "a", "x")],
                &expect("a", Expected::Exact(0)),
                0,
            )
            .unwrap();
        assert_eq!((outcome.base_offset, outcome.duplicate), (1, false));
        // A retry by the same producer is its duplicate, whatever the conditions say now.
        let retry = log.append(&[producer_batch(9, 0, "a", "x")], 0).unwrap();
        assert_eq!((retry.base_offset, retry.duplicate), (1, true));
        // A new producer retrying the events gets the offsets, and its next sequence follows.
        let retry = log
            .append_conditional(
                &[producer_batch(10, 0, "a", "x")],
                &expect("a", Expected::Exact(0)),
                0,
            )
            .unwrap();
        assert_eq!((retry.base_offset, retry.duplicate), (1, true));
        let next = log.append(&[producer_batch(10, 1, "a", "y")], 0).unwrap();
        assert_eq!((next.base_offset, next.duplicate), (2, false));
    }

    #[test]
    fn writers_racing_on_one_key_win_each_version_once() {
        const WRITERS: usize = 8;
        const ROUNDS: usize = 30;
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(PartitionLog::open(dir.path(), config(FlushPolicy::Never)).unwrap());
        let start = Arc::new(Barrier::new(WRITERS));
        let handles: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let log = Arc::clone(&log);
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    let mut version = -1;
                    let mut won = Vec::new();
                    for round in 0..ROUNDS {
                        // Bounded: every attempt either wins or learns a newer version.
                        for _ in 0..WRITERS * ROUNDS + 1 {
                            let id = format!("{writer}-{round}");
                            let expected = if version < 0 {
                                Expected::NoStream
                            } else {
                                Expected::Exact(version)
                            };
                            match log.append_conditional(
                                &[batch(&[("k", Some(&id))])],
                                &expect("k", expected),
                                0,
                            ) {
                                Ok(outcome) => {
                                    assert!(!outcome.duplicate);
                                    won.push((outcome.base_offset, version));
                                    version = outcome.base_offset;
                                    break;
                                }
                                Err(StorageError::ConditionFailed { failures }) => {
                                    assert!(failures[0].actual > version, "{failures:?} after {version}");
                                    version = failures[0].actual;
                                }
                                Err(other) => panic!("{other}"),
                            }
                        }
                    }
                    won
                })
            })
            .collect();
        let mut wins: Vec<(i64, i64)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        wins.sort();
        assert_eq!(wins.len(), WRITERS * ROUNDS);
        // Offsets 0, 1, 2, ...: no gap; each won over the one before it: no fork.
        for (index, (offset, expected)) in wins.iter().enumerate() {
            assert_eq!(*offset, index as i64);
            assert_eq!(*expected, index as i64 - 1);
        }
    }
}
