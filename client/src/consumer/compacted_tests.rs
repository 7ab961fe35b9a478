//! What a compacted segment serves, through the consumer's decoding: batches whose records
//! skip offsets, and header-only placeholders (record count 0) whose lastOffsetDelta still
//! moves the position. Built with the broker's own filter, so they are the bytes a cleaned
//! segment holds.

use super::*;
use bytes::{Bytes, BytesMut};
use tidelog_proto::batch::filter::{filter_batch, FilterOptions, Filtered};
use tidelog_proto::batch::{set_base_offset, NewRecord, RecordBatch, RecordBatchBuilder};

/// A batch at `base_offset` of `values` (keyed by the value's first letter), filtered to the
/// records `keep` says; a placeholder when none is kept.
fn compacted(base_offset: i64, values: &[&str], keep: &[bool]) -> Bytes {
    let mut builder = RecordBatchBuilder::new();
    for value in values {
        builder.push(&NewRecord {
            timestamp: 1_000,
            key: Some(Bytes::copy_from_slice(&value.as_bytes()[..1])),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: vec![],
        });
    }
    let mut bytes = BytesMut::from(&builder.build().unwrap()[..]);
    set_base_offset(&mut bytes, base_offset);
    let (batch, _) = RecordBatch::split_first(&bytes.freeze()).unwrap();
    let options = FilterOptions {
        delete_horizon_ms: None,
        keep_empty: true,
        decompressed_bytes_max: 1 << 20,
    };
    let mut index = 0;
    let result = filter_batch(&batch, &options, |_| {
        index += 1;
        keep[index - 1]
    })
    .unwrap();
    match result.outcome {
        Filtered::Rewritten { bytes, .. } => bytes,
        Filtered::Unchanged => batch.into_bytes(),
        Filtered::Removed => unreachable!("keep_empty is set"),
    }
}

fn decode(fetch_offset: i64, wire: Bytes) -> (Offset, Vec<(i64, String)>) {
    let mut out = VecDeque::new();
    let topic = TopicName::new("t");
    let next = decode_records(
        &topic,
        PartitionId::new(0),
        Offset::new(fetch_offset),
        wire,
        &ConsumerConfig::default(),
        &mut out,
    )
    .unwrap();
    let records = out
        .into_iter()
        .map(|r| {
            (
                r.offset().get(),
                String::from_utf8(r.value().unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    (next, records)
}

#[test]
fn records_keep_their_offsets_across_gaps_and_the_position_is_the_batch_end() {
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&compacted(
        10,
        &["a1", "b1", "a2", "c1"],
        &[false, true, true, false],
    ));
    wire.extend_from_slice(&compacted(14, &["b2", "c2"], &[false, true]));
    let (next, records) = decode(10, wire.freeze());
    assert_eq!(
        records,
        vec![(11, "b1".into()), (12, "a2".into()), (15, "c2".into())]
    );
    // The first batch's last offset (13) was removed; the position is still its end.
    assert_eq!(next, Offset::new(16));
}

#[test]
fn a_placeholder_moves_the_position_without_records() {
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&compacted(20, &["a1", "a2"], &[false, true]));
    wire.extend_from_slice(&compacted(22, &["b1", "b2", "b3"], &[false, false, false]));
    let (next, records) = decode(20, wire.freeze());
    assert_eq!(records, vec![(21, "a2".into())]);
    assert_eq!(next, Offset::new(25));
    // A response holding only a placeholder moves the position too: no stall at its start.
    let (next, records) = decode(22, compacted(22, &["b1", "b2", "b3"], &[false; 3]));
    assert!(records.is_empty());
    assert_eq!(next, Offset::new(25));
}

#[test]
fn a_fetch_from_a_removed_offset_reads_the_next_remaining_record() {
    // The broker answers a fetch at 31 (removed) with the batch holding 30..=33.
    let wire = compacted(30, &["a1", "b1", "c1", "d1"], &[true, false, false, true]);
    let (next, records) = decode(31, wire);
    assert_eq!(records, vec![(33, "d1".into())]);
    assert_eq!(next, Offset::new(34));
}
