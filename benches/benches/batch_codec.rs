//! Cost of the per-batch work on the produce path: building (client) and validating (broker).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tidelog_proto::batch::{NewRecord, RecordBatch, RecordBatchBuilder};

fn codec(c: &mut Criterion) {
    for record_bytes in [100usize, 1024] {
        let bytes = tidelog_benches::batch(1000, record_bytes);
        let mut group = c.benchmark_group(format!("batch_1000x{record_bytes}B"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("validate", |b| {
            b.iter(|| {
                let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
                batch.validate().unwrap();
            })
        });
        group.bench_function("decode_records", |b| {
            let (batch, _) = RecordBatch::split_first(&bytes).unwrap();
            b.iter(|| batch.records().filter(Result::is_ok).count())
        });
        let value = bytes::Bytes::from(vec![b'x'; record_bytes]);
        group.bench_function("build", |b| {
            b.iter_batched(
                RecordBatchBuilder::new,
                |mut builder| {
                    for i in 0..1000 {
                        builder.push(&NewRecord {
                            timestamp: i,
                            key: None,
                            value: Some(value.clone()),
                            headers: Vec::new(),
                        });
                    }
                    builder.build()
                },
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
