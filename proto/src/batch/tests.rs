use super::*;
use bytes::BytesMut;
use proptest::prelude::*;

fn record(timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> NewRecord {
    NewRecord {
        timestamp,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: Vec::new(),
    }
}

fn build(records: &[NewRecord]) -> Bytes {
    let mut builder = RecordBatchBuilder::new();
    for record in records {
        builder.push(record);
    }
    builder.build().unwrap()
}

#[test]
fn header_offsets_match_kafka_layout() {
    assert_eq!(CRC_OFFSET, 17);
    assert_eq!(ATTRIBUTES_OFFSET, 21);
    assert_eq!(PRODUCER_ID_OFFSET, 43);
    assert_eq!(RECORDS_OFFSET, 61);
}

/// A batch written by Kafka's Java client (one record, key "key", value "value",
/// timestamp 1700000000000), captured as bytes. Our decoder must read it and our builder
/// must produce the same bytes.
#[test]
fn builder_output_matches_a_kafka_client_batch() {
    let bytes = build(&[record(1_700_000_000_000, Some(b"key"), Some(b"value"))]);
    let expected_records: &[u8] = &[
        0x1c, // length 14, zig-zag
        0x00, // attributes
        0x00, // timestamp delta 0
        0x00, // offset delta 0
        0x06, b'k', b'e', b'y', // key length 3
        0x0a, b'v', b'a', b'l', b'u', b'e', // value length 5
        0x00, // no headers
    ];
    assert_eq!(&bytes[RECORDS_OFFSET..], expected_records);
    let (batch, rest) = RecordBatch::split_first(&bytes).unwrap();
    assert!(rest.is_empty());
    batch.validate().unwrap();
    let header = batch.header();
    assert_eq!(header.record_count, 1);
    assert_eq!(header.base_timestamp, 1_700_000_000_000);
    assert_eq!(header.max_timestamp, 1_700_000_000_000);
    assert_eq!(header.producer_id, -1);
    assert_eq!(header.base_sequence, -1);
    assert_eq!(header.batch_length as usize, bytes.len() - 12);
}

#[test]
fn setting_base_offset_keeps_the_crc_valid() {
    let mut bytes = BytesMut::from(&build(&[record(5, None, Some(b"v"))])[..]);
    set_base_offset(&mut bytes, 42);
    set_partition_leader_epoch(&mut bytes, 3);
    let bytes = bytes.freeze();
    let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
    batch.validate().unwrap();
    assert_eq!(batch.header().base_offset, 42);
    assert_eq!(batch.header().partition_leader_epoch, 3);
    assert_eq!(batch.records().next().unwrap().unwrap().offset, 42);
}

#[test]
fn flipped_byte_in_a_record_fails_the_crc() {
    let bytes = build(&[record(5, Some(b"k"), Some(b"value"))]);
    let mut corrupt = BytesMut::from(&bytes[..]);
    let last = corrupt.len() - 2;
    corrupt[last] ^= 0x40;
    let corrupt = corrupt.freeze();
    let (batch, _) = RecordBatch::split_first(&corrupt).unwrap();
    assert!(matches!(batch.validate(), Err(BatchError::CrcMismatch { .. })));
}

#[test]
fn truncated_batch_is_reported_not_panicked() {
    let bytes = build(&[record(5, Some(b"k"), Some(b"value"))]);
    for cut in 0..bytes.len() {
        let partial = bytes.slice(..cut);
        assert!(RecordBatch::split_first(&partial).is_err(), "cut at {cut}");
    }
}

#[test]
fn record_count_larger_than_the_records_is_rejected() {
    let bytes = build(&[record(5, None, Some(b"v"))]);
    let mut tampered = BytesMut::from(&bytes[..]);
    tampered[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&2i32.to_be_bytes());
    tampered[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4].copy_from_slice(&1i32.to_be_bytes());
    let crc = compute_crc(&tampered);
    tampered[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    let tampered = tampered.freeze();
    let (batch, _) = RecordBatch::split_first(&tampered).unwrap();
    assert!(batch.validate().is_err());
}

fn arbitrary_record() -> impl Strategy<Value = NewRecord> {
    (
        0i64..4_000_000_000_000,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::collection::vec(
            (
                "[a-z]{0,8}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            ),
            0..3,
        ),
    )
        .prop_map(|(timestamp, key, value, headers)| NewRecord {
            timestamp,
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

proptest! {
    #[test]
    fn built_batches_validate_and_decode_to_their_records(
        records in proptest::collection::vec(arbitrary_record(), 1..20),
        base_offset in 0i64..1 << 40,
    ) {
        let mut builder = RecordBatchBuilder::new();
        let mut expected_size = BATCH_HEADER_BYTES;
        for record in &records {
            expected_size += builder.record_size_bytes(record);
            builder.push(record);
        }
        prop_assert_eq!(builder.size_bytes(), expected_size);
        let mut bytes = BytesMut::from(&builder.build().unwrap()[..]);
        set_base_offset(&mut bytes, base_offset);
        let bytes = bytes.freeze();
        prop_assert_eq!(bytes.len(), expected_size);
        let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
        batch.validate().unwrap();
        prop_assert_eq!(batch.header().next_offset(), base_offset + records.len() as i64);
        let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap();
        prop_assert_eq!(batch.header().max_timestamp, max_timestamp);
        let decoded: Vec<Record> = batch.records().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(got.offset, base_offset + i as i64);
            prop_assert_eq!(got.timestamp, want.timestamp);
            prop_assert_eq!(&got.key, &want.key);
            prop_assert_eq!(&got.value, &want.value);
            prop_assert_eq!(&got.headers, &want.headers);
        }
    }

    #[test]
    fn batch_iter_walks_back_to_back_batches(
        batches in proptest::collection::vec(proptest::collection::vec(arbitrary_record(), 1..5), 1..6),
    ) {
        let mut wire = BytesMut::new();
        for records in &batches {
            wire.extend_from_slice(&build(records));
        }
        let decoded: Vec<RecordBatch> = BatchIter::new(wire.freeze()).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(decoded.len(), batches.len());
        for (batch, records) in decoded.iter().zip(&batches) {
            prop_assert_eq!(batch.header().record_count as usize, records.len());
        }
    }

    #[test]
    fn mutated_batches_never_panic_and_never_validate_with_a_wrong_crc(
        records in proptest::collection::vec(arbitrary_record(), 1..5),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let original = build(&records);
        let mut mutated = BytesMut::from(&original[..]);
        for (index, mask) in &flips {
            let at = index.index(mutated.len());
            mutated[at] ^= mask;
        }
        let mutated = mutated.freeze();
        if let Ok((batch, _)) = RecordBatch::split_first(&mutated) {
            let crc_region_changed = mutated[ATTRIBUTES_OFFSET..] != original[ATTRIBUTES_OFFSET..];
            let crc_field_changed = mutated[CRC_OFFSET..ATTRIBUTES_OFFSET] != original[CRC_OFFSET..ATTRIBUTES_OFFSET];
            if batch.validate().is_ok() {
                prop_assert!(!crc_region_changed && !crc_field_changed);
            }
            for record in batch.records() {
                let _ = record;
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
        for batch in BatchIter::new(Bytes::from(bytes)) {
            match batch {
                Ok(batch) => {
                    let _ = batch.validate();
                    for record in batch.records() {
                        let _ = record;
                    }
                }
                Err(_) => break,
            }
        }
    }
}

/// The validation the broker ran before the structure-only walk: decode every record and check
/// its offset delta. Kept here as the reference the walk must agree with.
fn reference_validate(batch: &RecordBatch) -> Result<(), BatchError> {
    let header = batch.header();
    let computed = compute_crc(batch.as_bytes());
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            expected: header.crc,
            computed,
        });
    }
    let count = header.record_count;
    if count < 1 {
        return Err(BatchError::BadRecordCount(count));
    }
    if header.last_offset_delta != count - 1 {
        return Err(BatchError::BadLastOffsetDelta {
            last_offset_delta: header.last_offset_delta,
            record_count: count,
        });
    }
    let codec = header.compression()?;
    let section = match codec {
        Compression::None => batch.as_bytes().len() - BATCH_HEADER_BYTES,
        other => crate::compression::decompress(
            other,
            &batch.as_bytes()[BATCH_HEADER_BYTES..],
            DECOMPRESSED_BYTES_MAX_DEFAULT,
        )?
        .len(),
    };
    if (count as usize).saturating_mul(RECORD_BYTES_MIN) > section {
        return Err(BatchError::BadRecordCount(count));
    }
    let mut records = batch.records();
    for index in 0..count as usize {
        let record = records.next().ok_or(BatchError::BadRecord {
            index,
            reason: "fewer records than the count says",
        })??;
        let expected = index as i32;
        if record.offset_delta != expected {
            return Err(BatchError::BadOffsetDelta {
                index,
                expected,
                found: record.offset_delta,
            });
        }
    }
    let consumed = records.position_in_section();
    if consumed != section {
        return Err(BatchError::TrailingBytes {
            consumed,
            length: section,
        });
    }
    Ok(())
}

/// `bytes` with its CRC recomputed, so a mutation reaches the record checks.
fn with_fixed_crc(bytes: &[u8]) -> Bytes {
    let mut fixed = BytesMut::from(bytes);
    if fixed.len() >= BATCH_HEADER_BYTES {
        let crc = compute_crc(&fixed);
        fixed[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    }
    fixed.freeze()
}

/// Small mutations that keep most of a batch readable: flipped bytes, bytes set to values
/// that are interesting as varints, bytes inserted or removed (the length field is then
/// adjusted so the batch still splits).
#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0x00u8),
        Just(0x01),
        Just(0x02),
        Just(0x7f),
        Just(0x80),
        Just(0xff),
        any::<u8>()
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        (any::<prop::sample::Index>(), interesting.clone()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        (any::<prop::sample::Index>(), interesting).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
    ]
}

/// Applies `mutations` to the records section (or, for `in_header`, anywhere) and fixes the
/// batch length and CRC, so the verdict depends on the records themselves.
fn mutate(original: &[u8], mutations: &[Mutation], in_header: bool) -> Bytes {
    let mut bytes = original.to_vec();
    let first = if in_header {
        ATTRIBUTES_OFFSET
    } else {
        BATCH_HEADER_BYTES
    };
    for mutation in mutations {
        let span = bytes.len() - first;
        if span == 0 {
            break;
        }
        match mutation {
            Mutation::Flip(at, mask) => bytes[first + at.index(span)] ^= mask,
            Mutation::Set(at, byte) => bytes[first + at.index(span)] = *byte,
            Mutation::Insert(at, byte) => bytes.insert(first + at.index(span + 1), *byte),
            Mutation::Remove(at) => {
                bytes.remove(first + at.index(span));
            }
        }
    }
    let length = (bytes.len() - LOG_OVERHEAD_BYTES) as i32;
    bytes[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    with_fixed_crc(&bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn walk_agrees_with_decoding_every_record_on_mutated_batches(
        records in proptest::collection::vec(arbitrary_record(), 1..8),
        mutations in proptest::collection::vec(mutation(), 1..4),
        in_header: bool,
    ) {
        let mutated = mutate(&build(&records), &mutations, in_header);
        if let Ok((batch, _)) = RecordBatch::split_first(&mutated) {
            prop_assert_eq!(batch.validate(), reference_validate(&batch));
        }
    }

    #[test]
    fn walk_agrees_with_decoding_every_record_on_mutated_compressed_batches(
        records in proptest::collection::vec(arbitrary_record(), 1..6),
        mutations in proptest::collection::vec(mutation(), 1..3),
        codec in prop::sample::select(vec![Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]),
    ) {
        // Mutate the records, then compress: the walk sees the mutation after decompression.
        let mutated = mutate(&build(&records), &mutations, false);
        let compressed = compress_batch(&mutated, codec).unwrap();
        let (batch, _) = RecordBatch::split_first(&compressed).unwrap();
        prop_assert_eq!(batch.validate(), reference_validate(&batch));
    }

    #[test]
    fn walk_accepts_every_valid_batch(records in proptest::collection::vec(arbitrary_record(), 1..30)) {
        let bytes = build(&records);
        let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
        prop_assert_eq!(batch.validate(), Ok(()));
        prop_assert_eq!(reference_validate(&batch), Ok(()));
    }

    #[test]
    fn compressed_batches_validate_and_decode_to_their_records(
        records in proptest::collection::vec(arbitrary_record(), 1..20),
        codec in prop::sample::select(Compression::ALL.to_vec()),
    ) {
        let plain = build(&records);
        let compressed = compress_batch(&plain, codec).unwrap();
        let (batch, _) = RecordBatch::split_first(&compressed).unwrap();
        prop_assert_eq!(batch.header().compression(), Ok(codec));
        batch.validate().unwrap();
        let (plain_batch, _) = RecordBatch::split_first(&plain).unwrap();
        let got: Vec<Record> = batch.records().collect::<Result<_, _>>().unwrap();
        let want: Vec<Record> = plain_batch.records().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header_never_panic(
        section: Vec<u8>,
        count in 1i32..40,
        codec in prop::sample::select(Compression::ALL.to_vec()),
    ) {
        let mut bytes = build(&[record(1, None, Some(b"v"))]).to_vec();
        bytes.truncate(BATCH_HEADER_BYTES);
        bytes.extend_from_slice(&section);
        let length = (bytes.len() - LOG_OVERHEAD_BYTES) as i32;
        bytes[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
        bytes[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&count.to_be_bytes());
        bytes[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4].copy_from_slice(&(count - 1).to_be_bytes());
        bytes[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&i16::from(codec.id()).to_be_bytes());
        let bytes = with_fixed_crc(&bytes);
        let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
        prop_assert_eq!(batch.validate(), reference_validate(&batch));
        for record in batch.records() {
            let _ = record;
        }
    }
}

/// Batches written by kafka-python 3.0.12's own batch builder, one per codec, plus one with a
/// raw snappy block as librdkafka sends it: see `proto/testdata/make_batches.py`.
const GOLDEN: [(&str, Compression, &[u8]); 5] = [
    (
        "gzip",
        Compression::Gzip,
        include_bytes!("../../testdata/kafka-python-gzip.batch"),
    ),
    (
        "snappy",
        Compression::Snappy,
        include_bytes!("../../testdata/kafka-python-snappy.batch"),
    ),
    (
        "lz4",
        Compression::Lz4,
        include_bytes!("../../testdata/kafka-python-lz4.batch"),
    ),
    (
        "zstd",
        Compression::Zstd,
        include_bytes!("../../testdata/kafka-python-zstd.batch"),
    ),
    (
        "raw snappy",
        Compression::Snappy,
        include_bytes!("../../testdata/raw-snappy.batch"),
    ),
];

#[test]
fn batches_compressed_by_a_kafka_client_validate_and_decode() {
    for (name, codec, bytes) in GOLDEN {
        let bytes = Bytes::from_static(bytes);
        let (batch, rest) = RecordBatch::split_first(&bytes).unwrap();
        assert!(rest.is_empty(), "{name}");
        assert_eq!(batch.header().compression(), Ok(codec), "{name}");
        batch.validate().unwrap_or_else(|error| panic!("{name}: {error}"));
        let records: Vec<Record> = batch.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 5, "{name}");
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.offset, i as i64, "{name}");
            assert_eq!(record.timestamp, 1_700_000_000_000 + i as i64, "{name}");
            assert_eq!(
                record.key.as_deref(),
                Some(format!("key-{i}").as_bytes()),
                "{name}"
            );
            let value = format!("value-{i} {}", "tidelog ".repeat(8));
            assert_eq!(record.value.as_deref(), Some(value.as_bytes()), "{name}");
            let headers: Vec<(String, Option<Bytes>)> = record
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect();
            if i % 2 == 0 {
                assert_eq!(
                    headers,
                    vec![("h".to_owned(), Some(Bytes::from(i.to_string())))],
                    "{name}"
                );
            } else {
                assert!(headers.is_empty(), "{name}");
            }
        }
    }
}

#[test]
fn a_kafka_client_batch_decompressing_past_the_bound_is_refused() {
    for (name, _, bytes) in GOLDEN {
        let bytes = Bytes::from_static(bytes);
        let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
        // The five records take well over 100 bytes uncompressed.
        assert_eq!(
            batch.validate_bounded(100),
            Err(BatchError::DecompressedTooLarge { max: 100 }),
            "{name}"
        );
    }
}

/// A batch header claiming `count` records over `section` compressed with `codec`.
fn compressed_batch(records_section: &[u8], count: i32, codec: Compression) -> Bytes {
    let mut plain = build(&[record(1, None, Some(b"v"))]).to_vec();
    plain.truncate(BATCH_HEADER_BYTES);
    plain.extend_from_slice(records_section);
    plain[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4].copy_from_slice(&count.to_be_bytes());
    plain[LAST_OFFSET_DELTA_OFFSET..LAST_OFFSET_DELTA_OFFSET + 4].copy_from_slice(&(count - 1).to_be_bytes());
    let length = (plain.len() - LOG_OVERHEAD_BYTES) as i32;
    plain[BATCH_LENGTH_OFFSET..BATCH_LENGTH_OFFSET + 4].copy_from_slice(&length.to_be_bytes());
    compress_batch(&with_fixed_crc(&plain), codec).unwrap()
}

#[test]
fn a_decompression_bomb_is_refused_at_the_bound_for_every_codec() {
    // 80 MiB of zeros compress to a few hundred KiB at most; the default bound is 64 MiB.
    let zeros = vec![0u8; 80 << 20];
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let bytes = compressed_batch(&zeros, 1, codec);
        assert!(bytes.len() < 4 << 20, "{codec}: {} bytes", bytes.len());
        let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
        assert_eq!(
            batch.validate(),
            Err(BatchError::DecompressedTooLarge {
                max: DECOMPRESSED_BYTES_MAX_DEFAULT
            }),
            "{codec}"
        );
    }
}

#[test]
fn a_compressed_batch_with_fewer_or_more_records_than_its_count_is_refused() {
    // Values long enough that a third record's minimum size fits: the walk, not the count
    // precheck, must find it missing.
    let plain = build(&[
        record(1, None, Some(&[b'a'; 20])),
        record(2, None, Some(&[b'b'; 20])),
    ]);
    let section = &plain[BATCH_HEADER_BYTES..];
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let (batch, _) = RecordBatch::split_first(&compressed_batch(section, 2, codec)).unwrap();
        assert_eq!(batch.validate(), Ok(()), "{codec}");
        let (batch, _) = RecordBatch::split_first(&compressed_batch(section, 1, codec)).unwrap();
        assert!(
            matches!(batch.validate(), Err(BatchError::TrailingBytes { .. })),
            "{codec}"
        );
        let (batch, _) = RecordBatch::split_first(&compressed_batch(section, 3, codec)).unwrap();
        assert!(
            matches!(batch.validate(), Err(BatchError::BadRecord { index: 2, .. })),
            "{codec}"
        );
    }
}

#[test]
fn codecs_past_zstd_are_unsupported() {
    let mut bytes = build(&[record(1, None, Some(b"v"))]).to_vec();
    for id in 5..=7i16 {
        bytes[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&id.to_be_bytes());
        let bytes = with_fixed_crc(&bytes);
        let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
        assert_eq!(
            batch.validate(),
            Err(BatchError::UnsupportedCompression(id as u8))
        );
    }
}

#[test]
fn compressing_keeps_the_header_and_marks_the_codec() {
    let plain = build(&[record(7, Some(b"k"), Some(&[b'x'; 500]))]);
    for codec in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let compressed = compress_batch(&plain, codec).unwrap();
        assert!(compressed.len() < plain.len(), "{codec}");
        let before = BatchHeader::parse(&plain).unwrap();
        let after = BatchHeader::parse(&compressed).unwrap();
        assert_eq!(after.compression(), Ok(codec));
        assert_eq!(after.attributes & !COMPRESSION_MASK, before.attributes);
        assert_eq!(after.batch_length as usize, compressed.len() - LOG_OVERHEAD_BYTES);
        assert_eq!(
            (after.record_count, after.base_timestamp, after.producer_id),
            (before.record_count, before.base_timestamp, before.producer_id)
        );
    }
    assert!(compress_batch(
        &compress_batch(&plain, Compression::Gzip).unwrap(),
        Compression::Lz4
    )
    .is_err());
    assert!(compress_batch(&plain[..10], Compression::Gzip).is_err());
}

#[test]
fn validation_tells_whether_any_record_carries_a_header() {
    let build = |headers: Vec<RecordHeader>| {
        let mut builder = RecordBatchBuilder::new();
        for index in 0..3 {
            builder.push(&NewRecord {
                timestamp: 0,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: if index == 2 { headers.clone() } else { Vec::new() },
            });
        }
        let bytes = builder.build().expect("three records");
        RecordBatch::split_first(&bytes).expect("parses").0
    };
    let plain = build(Vec::new());
    assert!(!plain.validate_bounded_headers(1 << 20).unwrap());
    let headed = build(vec![RecordHeader {
        key: "tidelog-expect".into(),
        value: Some(Bytes::from_static(b"none")),
    }]);
    assert!(headed.validate_bounded_headers(1 << 20).unwrap());
}
