use super::*;
use proptest::prelude::*;

const BASE_OFFSET: i64 = 1_000;
const HORIZON: i64 = 1_800_000_000_000;
const LIMIT: usize = DECOMPRESSED_BYTES_MAX_DEFAULT;

fn options(delete_horizon_ms: Option<i64>, keep_empty: bool) -> FilterOptions {
    FilterOptions {
        delete_horizon_ms,
        keep_empty,
        decompressed_bytes_max: LIMIT,
    }
}

fn new_record(timestamp: i64, key: &str, value: Option<&str>, headers: &[(&str, Option<&str>)]) -> NewRecord {
    NewRecord {
        timestamp,
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: value.map(|value| Bytes::copy_from_slice(value.as_bytes())),
        headers: headers
            .iter()
            .map(|(key, value)| RecordHeader {
                key: (*key).to_owned(),
                value: value.map(|value| Bytes::copy_from_slice(value.as_bytes())),
            })
            .collect(),
    }
}

/// A stored batch as the broker holds it: built by a producer, compressed with `codec`, at
/// BASE_OFFSET, with `extra` attribute bits (the CRC fixed up) and leader epoch 7.
fn stored(records: &[NewRecord], codec: Compression, producer: ProducerStamp, extra: i16) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new().with_producer(producer);
    for record in records {
        builder.push(record);
    }
    let built = compress_batch(&builder.build().unwrap(), codec).unwrap();
    let mut bytes = BytesMut::from(&built[..]);
    set_base_offset(&mut bytes, BASE_OFFSET);
    set_partition_leader_epoch(&mut bytes, 7);
    if extra != 0 {
        let attributes = i16_at(&bytes, ATTRIBUTES_OFFSET) | extra;
        bytes[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
        let crc = compute_crc(&bytes);
        bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }
    parse(bytes.freeze())
}

fn parse(bytes: Bytes) -> RecordBatch {
    let (batch, rest) = RecordBatch::split_first(&bytes).unwrap();
    assert!(rest.is_empty());
    batch
}

fn sample() -> Vec<NewRecord> {
    vec![
        new_record(1_700_000_000_010, "a", Some("a1"), &[("h", Some("x"))]),
        new_record(1_700_000_000_000, "b", Some("b1"), &[]),
        new_record(1_700_000_000_030, "a", None, &[("trace", None)]),
        new_record(
            1_700_000_000_020,
            "c",
            Some("c1"),
            &[("h1", Some("1")), ("h2", Some(""))],
        ),
        new_record(1_700_000_000_040, "b", Some("b2"), &[]),
    ]
}

fn producer() -> ProducerStamp {
    ProducerStamp {
        producer_id: 42,
        producer_epoch: 3,
        base_sequence: 100,
    }
}

/// Filters `batch` keeping the records whose index `mask` says.
fn filter_mask(batch: &RecordBatch, options: &FilterOptions, mask: &[bool]) -> FilterResult {
    let mut index = 0;
    filter_batch(batch, options, |_| {
        index += 1;
        mask[index - 1]
    })
    .unwrap()
}

fn rewritten(result: &FilterResult) -> RecordBatch {
    match &result.outcome {
        Filtered::Rewritten { bytes, .. } => parse(bytes.clone()),
        other => panic!("expected a rewritten batch, got {other:?}"),
    }
}

fn records_of(batch: &RecordBatch) -> Vec<Record> {
    batch.records().collect::<Result<_, _>>().unwrap()
}

/// The header fields a filter must never change.
fn identity(header: &BatchHeader) -> (i64, i32, i32, i64, i16, i32, bool, bool) {
    (
        header.base_offset,
        header.partition_leader_epoch,
        header.last_offset_delta,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        header.is_transactional(),
        header.is_log_append_time(),
    )
}

#[test]
fn every_codec_keeps_exactly_the_retained_records() {
    let mask = [true, false, true, false, true];
    for codec in Compression::ALL {
        let batch = stored(&sample(), codec, producer(), 0);
        let original = records_of(&batch);
        let result = filter_mask(&batch, &options(None, true), &mask);
        assert_eq!(result.records_removed, 2, "{codec}");
        let Filtered::Rewritten {
            records_kept,
            tombstones_kept,
            ..
        } = result.outcome
        else {
            panic!("{codec}: not rewritten");
        };
        assert_eq!((records_kept, tombstones_kept), (3, 1), "{codec}");
        let filtered = rewritten(&result);
        assert_eq!(filtered.header().compression().unwrap(), codec);
        assert_eq!(filtered.header().record_count, 3);
        assert_eq!(identity(filtered.header()), identity(batch.header()), "{codec}");
        validate_filtered(&filtered, LIMIT).unwrap();
        let expected: Vec<Record> = original
            .iter()
            .zip(mask)
            .filter(|(_, keep)| *keep)
            .map(|(record, _)| record.clone())
            .collect();
        assert_eq!(records_of(&filtered), expected, "{codec}");
    }
}

#[test]
fn a_batch_keeping_every_record_without_a_horizon_to_set_is_unchanged() {
    let batch = stored(&sample(), Compression::Lz4, producer(), 0);
    let result = filter_mask(&batch, &options(None, true), &[true; 5]);
    assert_eq!(result.outcome, Filtered::Unchanged);
    assert_eq!(result.records_removed, 0);
    // No tombstone kept: a horizon option changes nothing.
    let result = filter_mask(
        &batch,
        &options(Some(HORIZON), true),
        &[true, true, false, true, true],
    );
    let filtered = rewritten(&result);
    assert_eq!(filtered.header().delete_horizon_ms(), None);
}

#[test]
fn a_kept_tombstone_sets_the_delete_horizon_and_record_timestamps_stay() {
    for codec in Compression::ALL {
        let batch = stored(&sample(), codec, producer(), 0);
        let original = records_of(&batch);
        let result = filter_mask(&batch, &options(Some(HORIZON), true), &[true; 5]);
        assert_eq!(result.records_removed, 0);
        let filtered = rewritten(&result);
        let header = filtered.header();
        assert_eq!(header.delete_horizon_ms(), Some(HORIZON), "{codec}");
        assert_eq!(
            header.attributes & ATTRIBUTE_DELETE_HORIZON,
            ATTRIBUTE_DELETE_HORIZON
        );
        assert_eq!(header.base_timestamp, HORIZON);
        assert_eq!(header.max_timestamp, 1_700_000_000_040);
        assert_eq!(header.compression().unwrap(), codec);
        assert_eq!(identity(header), identity(batch.header()));
        // Timestamps, offsets, keys, values and headers as they were, deltas re-based.
        assert_eq!(records_of(&filtered), original, "{codec}");
        validate_filtered(&filtered, LIMIT).unwrap();
    }
}

#[test]
fn a_delete_horizon_once_set_is_kept_by_later_filters() {
    let batch = stored(&sample(), Compression::None, producer(), 0);
    let once = rewritten(&filter_mask(&batch, &options(Some(HORIZON), true), &[true; 5]));
    // Again with a later horizon and everything kept: the stored batch stands.
    let again = filter_mask(&once, &options(Some(HORIZON + 5), true), &[true; 5]);
    assert_eq!(again.outcome, Filtered::Unchanged);
    // Dropping the tombstone too keeps the horizon (Kafka does the same) and the timestamps.
    let later = rewritten(&filter_mask(
        &once,
        &options(Some(HORIZON + 5), true),
        &[false, true, false, true, true],
    ));
    assert_eq!(later.header().delete_horizon_ms(), Some(HORIZON));
    let expected: Vec<Record> = [1, 3, 4]
        .iter()
        .map(|index| records_of(&batch)[*index].clone())
        .collect();
    assert_eq!(records_of(&later), expected);
}

#[test]
fn no_horizon_is_set_when_the_options_say_none() {
    let batch = stored(&sample(), Compression::Zstd, producer(), 0);
    let result = filter_mask(&batch, &options(None, true), &[false, true, true, true, true]);
    let filtered = rewritten(&result);
    assert_eq!(filtered.header().delete_horizon_ms(), None);
    // firstTimestamp is the oldest kept record's, maxTimestamp the newest's.
    assert_eq!(filtered.header().base_timestamp, 1_700_000_000_000);
    assert_eq!(filtered.header().max_timestamp, 1_700_000_000_040);
    let dropped_newest = rewritten(&filter_mask(
        &batch,
        &options(None, true),
        &[true, true, true, true, false],
    ));
    assert_eq!(dropped_newest.header().max_timestamp, 1_700_000_000_030);
}

#[test]
fn removing_every_record_leaves_a_placeholder_or_nothing() {
    for codec in Compression::ALL {
        let batch = stored(&sample(), codec, producer(), TRANSACTIONAL_BIT);
        let result = filter_mask(&batch, &options(Some(HORIZON), true), &[false; 5]);
        assert_eq!(result.records_removed, 5);
        let Filtered::Rewritten {
            records_kept: 0,
            tombstones_kept: 0,
            ..
        } = result.outcome
        else {
            panic!("{codec}: expected a placeholder");
        };
        let placeholder = rewritten(&result);
        let header = placeholder.header();
        assert_eq!(placeholder.len(), BATCH_HEADER_BYTES);
        assert_eq!(
            header.batch_length as usize,
            BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES
        );
        assert_eq!(header.record_count, 0);
        assert_eq!(header.compression().unwrap(), Compression::None);
        assert_eq!(header.delete_horizon_ms(), None);
        assert_eq!(identity(header), identity(batch.header()));
        assert!(header.is_transactional());
        assert_eq!(header.base_timestamp, batch.header().base_timestamp);
        assert_eq!(header.max_timestamp, batch.header().max_timestamp);
        assert_eq!(header.next_offset(), BASE_OFFSET + 5);
        validate_filtered(&placeholder, LIMIT).unwrap();
        assert_eq!(placeholder.records().count(), 0);

        let result = filter_mask(&batch, &options(Some(HORIZON), false), &[false; 5]);
        assert_eq!(result.outcome, Filtered::Removed);
        assert_eq!(result.records_removed, 5);
    }
}

#[test]
fn a_stored_placeholder_is_kept_or_removed_as_asked() {
    let batch = stored(&sample(), Compression::None, producer(), 0);
    let placeholder = rewritten(&filter_mask(&batch, &options(None, true), &[false; 5]));
    let mut called = false;
    let result = filter_batch(&placeholder, &options(None, true), |_| {
        called = true;
        true
    })
    .unwrap();
    assert_eq!(result.outcome, Filtered::Unchanged);
    let result = filter_batch(&placeholder, &options(None, false), |_| true).unwrap();
    assert_eq!(result.outcome, Filtered::Removed);
    assert_eq!(result.records_removed, 0);
    assert!(!called);
}

#[test]
fn a_placeholder_of_a_batch_with_a_horizon_takes_its_max_timestamp() {
    let batch = stored(&sample(), Compression::None, producer(), 0);
    let with_horizon = rewritten(&filter_mask(&batch, &options(Some(HORIZON), true), &[true; 5]));
    let placeholder = rewritten(&filter_mask(&with_horizon, &options(None, true), &[false; 5]));
    assert_eq!(placeholder.header().delete_horizon_ms(), None);
    assert_eq!(placeholder.header().base_timestamp, 1_700_000_000_040);
}

#[test]
fn control_batches_are_never_filtered() {
    let batch = stored(
        &sample(),
        Compression::None,
        producer(),
        CONTROL_BIT | TRANSACTIONAL_BIT,
    );
    let mut called = false;
    let result = filter_batch(&batch, &options(Some(HORIZON), false), |_| {
        called = true;
        false
    })
    .unwrap();
    assert_eq!(result.outcome, Filtered::Unchanged);
    assert!(!called);
}

/// Found by the batch_filter fuzz target: a control batch used to come back `Unchanged`
/// unchecked, so a damaged one would have been copied into a cleaned segment.
#[test]
fn a_damaged_control_batch_is_an_error() {
    let batch = stored(&sample(), Compression::None, producer(), CONTROL_BIT);
    let mut bytes = BytesMut::from(&batch.as_bytes()[..]);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let result = filter_batch(&parse(bytes.freeze()), &options(None, true), |_| true);
    assert!(
        matches!(result, Err(BatchError::CrcMismatch { .. })),
        "{result:?}"
    );
}

/// The fuzz target's input itself (the batch part, CRC fixed up as the target does): a
/// forged control batch the filter must refuse exactly as the stored-batch check does.
#[test]
fn the_fuzzed_control_batch_is_refused_like_the_stored_batch_check_does() {
    let hex = [
        "0000000000000000000000970002020202fefdfdfdfdfdf4070202020202ffffffffffffffffffff00ffffffffffff02",
        "02020202020202000000ff000000000000000000000000000000079700020202020202020202020c020202020202ffff",
        "ffffffffffffffffffffffffffff020202020202020200000000005c021b969696969696969696969696969696969696",
        "969696969696960a0a0a0a96969696969696969696969696969696969696969696969696969696969696969696",
    ]
    .concat();
    let raw: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
        .collect();
    let (batch, _) = RecordBatch::split_first(&Bytes::from(raw)).unwrap();
    let mut fixed = BytesMut::from(&batch.as_bytes()[..]);
    let crc = compute_crc(&fixed);
    fixed[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    let fixed = parse(fixed.freeze());
    assert!(fixed.header().is_control());
    for batch in [&batch, &fixed] {
        let filtered = filter_batch(batch, &options(Some(HORIZON), true), |_| true);
        assert_eq!(
            filtered.is_ok(),
            validate_filtered(batch, LIMIT).is_ok(),
            "{filtered:?}"
        );
        assert!(filtered.is_err());
    }
}

#[test]
fn idempotent_producer_fields_and_the_last_offset_survive() {
    let batch = stored(&sample(), Compression::Snappy, producer(), 0);
    // Drop the last record: lastOffsetDelta must still say 4, so the producer's last sequence
    // (base sequence + 4) is what a replay of the headers finds.
    let filtered = rewritten(&filter_mask(
        &batch,
        &options(None, true),
        &[true, false, false, true, false],
    ));
    let header = filtered.header();
    assert_eq!(header.producer_id, 42);
    assert_eq!(header.producer_epoch, 3);
    assert_eq!(header.base_sequence, 100);
    assert_eq!(header.partition_leader_epoch, 7);
    assert_eq!(header.last_offset_delta, 4);
    assert_eq!(header.next_offset(), BASE_OFFSET + 5);
    assert_eq!(header.record_count, 2);
    let offsets: Vec<i64> = records_of(&filtered).iter().map(|record| record.offset).collect();
    assert_eq!(offsets, [BASE_OFFSET, BASE_OFFSET + 3]);
    // The strict producer check refuses the gap; the stored-batch check accepts it.
    assert!(filtered.validate().is_err());
    validate_filtered(&filtered, LIMIT).unwrap();
}

#[test]
fn the_view_shows_offsets_keys_tombstones_and_timestamps() {
    let batch = stored(&sample(), Compression::Gzip, producer(), 0);
    let mut seen = Vec::new();
    filter_batch(&batch, &options(None, true), |view| {
        seen.push((
            view.offset,
            view.timestamp,
            view.key.map(<[u8]>::to_vec),
            view.is_tombstone,
        ));
        true
    })
    .unwrap();
    let expected: Vec<_> = records_of(&batch)
        .iter()
        .map(|record| {
            (
                record.offset,
                record.timestamp,
                record.key.as_ref().map(|key| key.to_vec()),
                record.value.is_none(),
            )
        })
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn log_append_time_batches_keep_their_append_time() {
    let batch = stored(&sample(), Compression::None, producer(), TIMESTAMP_TYPE_BIT);
    let append_time = batch.header().max_timestamp;
    let mut timestamps = Vec::new();
    let result = filter_batch(&batch, &options(None, true), |view| {
        timestamps.push(view.timestamp);
        view.offset != BASE_OFFSET + 4
    })
    .unwrap();
    assert_eq!(timestamps, [append_time; 5]);
    let filtered = rewritten(&result);
    assert!(filtered.header().is_log_append_time());
    assert_eq!(filtered.header().max_timestamp, append_time);
}

#[test]
fn a_damaged_batch_is_an_error_and_retain_never_runs() {
    let batch = stored(&sample(), Compression::None, producer(), 0);
    let mut bytes = BytesMut::from(&batch.as_bytes()[..]);
    let last = bytes.len() - 2;
    bytes[last] ^= 0x55;
    let damaged = parse(bytes.freeze());
    let mut called = false;
    let result = filter_batch(&damaged, &options(None, true), |_| {
        called = true;
        true
    });
    assert!(matches!(result, Err(BatchError::CrcMismatch { .. })));
    assert!(!called);
}

#[test]
fn a_record_count_past_the_last_offset_delta_is_refused() {
    let batch = stored(&sample(), Compression::None, producer(), 0);
    let mut bytes = BytesMut::from(&batch.as_bytes()[..]);
    bytes[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4].copy_from_slice(&3i32.to_be_bytes());
    let crc = compute_crc(&bytes);
    bytes[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    let result = filter_batch(&parse(bytes.freeze()), &options(None, true), |_| true);
    assert!(
        matches!(result, Err(BatchError::BadLastOffsetDelta { .. })),
        "{result:?}"
    );
}

#[test]
fn records_past_the_decompression_bound_are_refused() {
    let records: Vec<NewRecord> = (0..50)
        .map(|index| new_record(index, "k", Some(&"v".repeat(100)), &[]))
        .collect();
    let batch = stored(&records, Compression::Gzip, producer(), 0);
    let bounded = FilterOptions {
        decompressed_bytes_max: 1_000,
        ..options(None, true)
    };
    let result = filter_batch(&batch, &bounded, |_| true);
    assert!(
        matches!(result, Err(BatchError::DecompressedTooLarge { max: 1_000 })),
        "{result:?}"
    );
}

#[test]
fn filtering_a_filtered_batch_again_keeps_its_gaps() {
    let batch = stored(&sample(), Compression::Lz4, producer(), 0);
    let once = rewritten(&filter_mask(
        &batch,
        &options(None, true),
        &[true, false, true, true, true],
    ));
    let twice = rewritten(&filter_mask(
        &once,
        &options(None, true),
        &[false, true, false, true],
    ));
    let offsets: Vec<i64> = records_of(&twice).iter().map(|record| record.offset).collect();
    assert_eq!(offsets, [BASE_OFFSET + 2, BASE_OFFSET + 4]);
    assert_eq!(twice.header().last_offset_delta, 4);
}

fn arb_record() -> impl Strategy<Value = NewRecord> {
    (
        -5_000i64..5_000,
        prop::option::of(prop::collection::vec(any::<u8>(), 0..12)),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        prop::collection::vec(
            (
                "[a-z]{0,6}",
                prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
            ),
            0..3,
        ),
    )
        .prop_map(|(delta, key, value, headers)| NewRecord {
            timestamp: 1_700_000_000_000 + delta,
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers: headers
                .into_iter()
                .map(|(key, value)| RecordHeader {
                    key,
                    value: value.map(Bytes::from),
                })
                .collect(),
        })
}

fn arb_codec() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random batches under random masks: the kept records are exactly the retained subset
    /// (offsets, timestamps, keys, values, headers), the CRC is valid, the identity fields
    /// stay, and an all-kept batch with nothing to set is left alone.
    #[test]
    fn kept_records_are_exactly_the_retained_subset(
        records in prop::collection::vec(arb_record(), 1..20),
        mask_seed in prop::collection::vec(any::<bool>(), 20),
        codec in arb_codec(),
        horizon in prop::option::of(1_600_000_000_000i64..1_900_000_000_000),
        keep_empty: bool,
        append_time: bool,
    ) {
        let extra = if append_time { TIMESTAMP_TYPE_BIT } else { 0 };
        let batch = stored(&records, codec, producer(), extra);
        let original = records_of(&batch);
        let mask = &mask_seed[..records.len()];
        let result = filter_mask(&batch, &options(horizon, keep_empty), mask);
        let expected: Vec<Record> = original
            .iter()
            .zip(mask)
            .filter(|(_, keep)| **keep)
            .map(|(record, _)| record.clone())
            .collect();
        prop_assert_eq!(result.records_removed as usize, records.len() - expected.len());
        let tombstones = expected.iter().filter(|record| record.value.is_none()).count();
        match &result.outcome {
            Filtered::Unchanged => {
                prop_assert_eq!(expected.len(), records.len());
                prop_assert!(horizon.is_none() || tombstones == 0);
            }
            Filtered::Removed => {
                prop_assert!(expected.is_empty());
                prop_assert!(!keep_empty);
            }
            Filtered::Rewritten { bytes, records_kept, tombstones_kept } => {
                prop_assert_eq!(*records_kept as usize, expected.len());
                prop_assert_eq!(*tombstones_kept as usize, tombstones);
                let filtered = parse(bytes.clone());
                let header = filtered.header();
                prop_assert_eq!(compute_crc(filtered.as_bytes()), header.crc);
                prop_assert_eq!(identity(header), identity(batch.header()));
                validate_filtered(&filtered, LIMIT).unwrap();
                prop_assert_eq!(records_of(&filtered), expected.clone());
                if expected.is_empty() {
                    prop_assert!(keep_empty);
                    prop_assert_eq!(header.record_count, 0);
                    prop_assert_eq!(header.compression().unwrap(), Compression::None);
                } else {
                    prop_assert_eq!(header.compression().unwrap(), codec);
                    let want_horizon = horizon.filter(|_| tombstones > 0);
                    prop_assert_eq!(header.delete_horizon_ms(), want_horizon);
                    if append_time {
                        prop_assert_eq!(header.max_timestamp, batch.header().max_timestamp);
                    } else {
                        let newest = expected.iter().map(|record| record.timestamp).max();
                        prop_assert_eq!(Some(header.max_timestamp), newest);
                    }
                    if want_horizon.is_none() {
                        let oldest = expected.iter().map(|record| record.timestamp).min();
                        prop_assert_eq!(Some(header.base_timestamp), oldest);
                    }
                }
            }
        }
    }

    /// Arbitrary bytes as a stored batch, arbitrary masks: an error or a batch that passes
    /// the stored-batch check, never a panic (the fuzz target runs the same longer).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), mask: u64) {
        let bytes = Bytes::from(bytes);
        if let Ok((batch, _)) = RecordBatch::split_first(&bytes) {
            let mut index = 0u32;
            let result = filter_batch(&batch, &options(Some(HORIZON), mask & 1 == 0), |_| {
                index += 1;
                mask >> (index % 64) & 1 == 1
            });
            if let Ok(FilterResult { outcome: Filtered::Rewritten { bytes, .. }, .. }) = result {
                validate_filtered(&parse(bytes), LIMIT).unwrap();
            }
        }
    }
}
