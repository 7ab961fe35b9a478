//! Record batches for tests: build them from values, decode them (checking every batch as the
//! broker should have), and read a whole partition back.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tidelog_proto::batch::{BatchIter, NewRecord, RecordBatchBuilder};
use tidelog_proto::pb::ErrorCode;

use crate::raw::RawClient;

/// A record as read back from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

impl StoredRecord {
    /// The value as text (lossy), for assertions and messages.
    pub fn value_text(&self) -> String {
        String::from_utf8_lossy(self.value.as_deref().unwrap_or_default()).into_owned()
    }

    pub fn key_text(&self) -> Option<String> {
        self.key
            .as_deref()
            .map(|key| String::from_utf8_lossy(key).into_owned())
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// One uncompressed batch of unkeyed records with these values.
pub fn batch_of<V: AsRef<[u8]>>(values: &[V]) -> Bytes {
    let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|value| (None, value.as_ref())).collect();
    keyed_batch(&records)
}

/// One uncompressed batch of `(key, value)` records, stamped now.
pub fn keyed_batch(records: &[(Option<&[u8]>, &[u8])]) -> Bytes {
    timed_keyed_batch(records, now_ms())
}

/// One uncompressed batch of unkeyed records, every one stamped `timestamp` (ms).
pub fn timed_batch<V: AsRef<[u8]>>(values: &[V], timestamp: i64) -> Bytes {
    let records: Vec<(Option<&[u8]>, &[u8])> = values.iter().map(|value| (None, value.as_ref())).collect();
    timed_keyed_batch(&records, timestamp)
}

/// One uncompressed batch of `(key, value)` records, every one stamped `timestamp` (ms).
pub fn timed_keyed_batch(records: &[(Option<&[u8]>, &[u8])], timestamp: i64) -> Bytes {
    assert!(!records.is_empty(), "a batch needs at least one record");
    let mut builder = RecordBatchBuilder::new();
    for (key, value) in records {
        builder.push(&NewRecord {
            timestamp,
            key: key.map(Bytes::copy_from_slice),
            value: Some(Bytes::copy_from_slice(value)),
            headers: Vec::new(),
        });
    }
    builder.build().expect("a batch with records")
}

/// Decodes back-to-back batches, validating each (CRC, counts, deltas) the way the broker does
/// on produce: whatever a fetch returns must pass. Panics on the first bad batch.
pub fn decode_records(records: Bytes) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    for batch in BatchIter::new(records) {
        let batch = batch.unwrap_or_else(|error| panic!("fetch returned a malformed batch: {error}"));
        batch
            .validate()
            .unwrap_or_else(|error| panic!("fetch returned a corrupt batch {:?}: {error}", batch.header()));
        for record in batch.records() {
            let record = record.unwrap_or_else(|error| panic!("fetch returned a corrupt record: {error}"));
            out.push(StoredRecord {
                offset: record.offset,
                key: record.key,
                value: record.value,
            });
        }
    }
    out
}

/// The base offsets of the batches in a fetch response's records.
pub fn batch_base_offsets(records: Bytes) -> Vec<i64> {
    BatchIter::new(records)
        .map(|batch| batch.expect("well-formed batch").header().base_offset)
        .collect()
}

/// Reads `topic/partition` from `from` up to the high watermark with non-waiting fetches.
/// Returns the records (offset >= `from`) and the high watermark. Panics if the broker reports
/// an error, skips or repeats an offset inside a batch, or does not make progress.
pub fn read_partition(
    client: &mut RawClient,
    topic: &str,
    partition: u32,
    from: i64,
) -> (Vec<StoredRecord>, i64) {
    let mut records: Vec<StoredRecord> = Vec::new();
    let mut next = from;
    // Each fetch returns at least one batch while below the high watermark; a partition in a
    // test holds far fewer batches than this.
    for _ in 0..1_000_000 {
        let result = client.fetch(topic, partition, next, 0, 0);
        assert_eq!(
            result.error(),
            ErrorCode::None,
            "fetching {topic}/{partition} at {next}: {result:?}"
        );
        let high_watermark = result.high_watermark;
        let batch = decode_records(result.records);
        let fresh: Vec<StoredRecord> = batch.into_iter().filter(|record| record.offset >= next).collect();
        if fresh.is_empty() {
            assert!(
                next >= high_watermark,
                "fetch of {topic}/{partition} at {next} returned nothing below the high watermark {high_watermark}"
            );
            return (records, high_watermark);
        }
        for record in fresh {
            assert!(
                record.offset >= next,
                "{topic}/{partition}: offset {} after {}",
                record.offset,
                next - 1
            );
            next = record.offset + 1;
            records.push(record);
        }
    }
    panic!("reading {topic}/{partition} did not reach the high watermark");
}

/// Asserts that `records` have the dense offsets `start, start+1, ...`.
pub fn assert_dense(records: &[StoredRecord], start: i64, what: &str) {
    for (index, record) in records.iter().enumerate() {
        let expected = start + index as i64;
        assert_eq!(
            record.offset, expected,
            "{what}: record {index} has offset {}, expected {expected} (offsets must be dense)",
            record.offset
        );
    }
}
