//! The summary line, in `tidelog perf`'s format, and the shared payload.

use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;

use crate::context::LATENCY_MAX_US;

pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).context("cannot create the latency histogram")
}

/// `records=N records_per_s=X mb_per_s=Y p50_ms=A p99_ms=B p999_ms=C`, as `tidelog perf`
/// prints it (MB = 2^20 bytes).
pub fn summary(records: u64, bytes: u64, elapsed: Duration, latency: &Histogram<u64>) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let ms = |quantile: f64| latency.value_at_quantile(quantile) as f64 / 1000.0;
    format!(
        "records={records} records_per_s={:.1} mb_per_s={:.2} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3}",
        records as f64 / seconds,
        bytes as f64 / (1024.0 * 1024.0) / seconds,
        ms(0.5),
        ms(0.99),
        ms(0.999),
    )
}

/// The same filler `tidelog perf produce` sends: not all one byte, so nothing along the way
/// can shortcut it. librdkafka copies it into each record (`RD_KAFKA_MSG_F_COPY`).
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// `total` split into `parts` shares differing by at most one, the larger first.
pub fn shares(total: u64, parts: u64) -> Vec<u64> {
    let parts = parts.max(1);
    (0..parts)
        .map(|part| total / parts + u64::from(part < total % parts))
        .collect()
}

/// Joins scoped threads in order, a panicked one counting as that instance's error.
pub fn join_all<T>(
    threads: Vec<std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>>,
    what: &str,
) -> Vec<anyhow::Result<T>> {
    threads
        .into_iter()
        .map(|thread| {
            thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a {what} thread panicked")))
        })
        .collect()
}
