//! The partition log alone, no network: append throughput under flush=never and flush=always,
//! and sequential reads from the page cache.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tidelog_broker::storage::{FlushPolicy, LogConfig, PartitionLog};
use tidelog_proto::batch::RecordBatch;

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 20,
        flush,
        ..LogConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for record_bytes in [100usize, 1024] {
        let bytes = tidelog_benches::batch(1000, record_bytes);
        let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
        let batches = [batch];
        let mut group = c.benchmark_group(format!("append_1000x{record_bytes}B"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.sample_size(20);
        for flush in [FlushPolicy::Never, FlushPolicy::Always] {
            let dir = tempfile::tempdir().unwrap();
            let log = Arc::new(PartitionLog::open(dir.path(), config(flush)).unwrap());
            group.bench_function(flush.to_string(), |b| {
                b.iter(|| {
                    let outcome = log.append(&batches, 1_700_000_000_000).unwrap();
                    runtime
                        .block_on(log.wait_durable(outcome.last_offset + 1))
                        .unwrap();
                })
            });
        }
        group.finish();
    }
}

fn read(c: &mut Criterion) {
    let bytes = tidelog_benches::batch(1000, 1024);
    let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config(FlushPolicy::Never)).unwrap();
    for _ in 0..200 {
        log.append(std::slice::from_ref(&batch), 1_700_000_000_000)
            .unwrap();
    }
    let end = log.high_watermark();
    let mut group = c.benchmark_group("read_1MiB");
    group.throughput(Throughput::Bytes(1 << 20));
    group.bench_function("sequential", |b| {
        let mut offset = 0;
        b.iter(|| {
            let read = log.read(offset, 1 << 20).unwrap();
            offset += 1000;
            if offset >= end {
                offset = 0;
            }
            read.records.len()
        })
    });
    group.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
