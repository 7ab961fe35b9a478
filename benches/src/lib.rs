//! Shared fixtures for the benchmarks: record batches shaped like the perf commands' traffic.
//! End-to-end load generation is `tidelog perf produce|consume`; results are in
//! docs/benchmarks.md.

use bytes::Bytes;
use tidelog_proto::batch::{NewRecord, RecordBatchBuilder};

/// One batch of `records` keyless records of `record_bytes` each, as a producer builds it.
pub fn batch(records: usize, record_bytes: usize) -> Bytes {
    let value = Bytes::from(vec![b'x'; record_bytes]);
    let mut builder = RecordBatchBuilder::new();
    for i in 0..records {
        builder.push(&NewRecord {
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(value.clone()),
            headers: Vec::new(),
        });
    }
    // `records` is at least 1 in every benchmark, so build() returns a batch.
    builder.build().unwrap_or_default()
}
