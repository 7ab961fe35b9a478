//! The librdkafka client context: base configuration, errors and logs to stderr (the default
//! context sends them to the `log` crate, which nothing here would print), and the producer's
//! delivery accounting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;

/// Options every mode takes.
#[derive(Debug)]
pub struct Common {
    pub bootstrap: String,
    pub debug: Option<String>,
    /// `KEY=VALUE` librdkafka properties applied over the mode's own.
    pub properties: Vec<String>,
}

impl Common {
    /// Sets the `-X` properties over `config`, last, so they win over the mode's settings.
    pub fn apply_properties(&self, config: &mut ClientConfig) -> anyhow::Result<()> {
        for property in &self.properties {
            let Some((key, value)) = property.split_once('=') else {
                anyhow::bail!("-X {property}: expected KEY=VALUE");
            };
            config.set(key, value);
        }
        Ok(())
    }

    pub fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", "kafka-load")
            // A broker that goes away should fail the run, not stall it.
            .set("socket.timeout.ms", "30000");
        // librdkafka filters by this level before calling `log`: warnings and worse, or
        // everything when debug contexts are asked for.
        config.set_log_level(RDKafkaLogLevel::Warning);
        if let Some(debug) = &self.debug {
            config.set("debug", debug);
            config.set_log_level(RDKafkaLogLevel::Debug);
        }
        config
    }
}

/// Counts of what librdkafka reported; delivery latencies of the sampled records.
#[derive(Debug)]
pub struct LoadContext {
    start: Instant,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub errors: AtomicU64,
    /// Microseconds from `send` to the delivery report. Only the thread polling the producer
    /// records here (delivery callbacks run inside its `poll`), so the lock is uncontended.
    pub latency_us: Mutex<Histogram<u64>>,
    /// The first delivery error, to explain a failed run.
    pub first_failure: Mutex<Option<String>>,
}

/// Latencies up to this many microseconds are recorded exactly (3 significant digits).
pub const LATENCY_MAX_US: u64 = 600 * 1_000_000;

impl LoadContext {
    pub fn new() -> anyhow::Result<LoadContext> {
        Ok(LoadContext {
            start: Instant::now(),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency_us: Mutex::new(crate::report::histogram()?),
            first_failure: Mutex::new(None),
        })
    }

    /// The delivery opaque of a sampled record sent now: nanoseconds since the context was
    /// made, plus one (0 marks an unsampled record). A `usize` needs no allocation per record.
    pub fn stamp(&self) -> usize {
        (self.start.elapsed().as_nanos() as usize).saturating_add(1)
    }
}

impl ClientContext for LoadContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        eprintln!("{ms:10.3} ms librdkafka {level:?} {facility}: {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("librdkafka error: {error}: {reason}");
    }
}

impl ConsumerContext for LoadContext {}

impl ProducerContext for LoadContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: usize) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if sent != 0 {
                    let now = self.start.elapsed().as_nanos() as usize;
                    let micros = (now.saturating_sub(sent - 1) / 1000) as u64;
                    if let Ok(mut latency) = self.latency_us.lock() {
                        latency.saturating_record(micros.clamp(1, LATENCY_MAX_US));
                    }
                }
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_failure.lock() {
                    first.get_or_insert_with(|| error.to_string());
                }
            }
        }
    }
}
