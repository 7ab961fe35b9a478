//! Harness for Tidelog's end-to-end tests: it runs the real `tidelogd` and `tidelog` binaries
//! as child processes and talks to them over TCP on 127.0.0.1 and through their files.
//!
//! * [`binaries`] finds (and builds, once per test process) the two binaries.
//! * [`broker`] starts, kills (SIGKILL), stops (SIGTERM) and restarts a broker process.
//! * [`cli`] runs the `tidelog` CLI with a bounded timeout.
//! * [`kafka_clients`] installs the real Kafka clients (kafkajs, confluent-kafka,
//!   kafka-python, kcat) once per test process and runs their driver scripts.
//! * [`kafka_scenario`] is what every Kafka client is put through, step by step.
//! * [`kafka_raw`] is a small blocking Kafka-protocol client (kafka-protocol's codecs).
//! * [`load`] keeps produce requests in flight and records what was acknowledged where.
//! * [`producers`] stamps batches for idempotent producers and asks for producer ids.
//! * [`raw`] is a small blocking protocol client that can also send malformed bytes.
//! * [`records`] builds record batches and reads whole partitions back.
//! * [`wait`] polls a condition until a deadline, and the seed of randomised tests.
//!
//! Run with `cargo test -p tidelog-e2e`. A randomised test prints its seed; set
//! `TIDELOG_TEST_SEED` to replay it. A failing test keeps its temporary directory (the broker's
//! data) and prints its path and the tail of the broker's log.

pub mod binaries;
pub mod broker;
pub mod cli;
pub mod compacted;
pub mod groups;
pub mod kafka_clients;
pub mod kafka_raw;
pub mod kafka_scenario;
pub mod load;
pub mod producers;
pub mod proxy;
pub mod raw;
pub mod records;
pub mod wait;

use std::path::{Path, PathBuf};

pub use broker::BrokerProcess;
pub use raw::RawClient;
pub use wait::{poll_until, test_rng};

/// A temporary directory that is deleted when the test passes and kept (its path printed) when
/// the test panics, so a failed crash test leaves its data directory to inspect.
#[derive(Debug)]
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new(test_name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tidelog-e2e-{test_name}-"))
            .tempdir()
            .expect("creating a temporary directory");
        Self { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("directory is present until drop").path()
    }

    /// `<dir>/data`: the broker's data directory (the config file sits next to it).
    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("test failed: keeping its directory {}", kept.display());
            }
        }
    }
}

/// Writes a broker TOML config with `segment_bytes` as the default segment size (and the batch
/// limit lowered to fit, since the broker requires `limits.batch_bytes_max <= segment_bytes`);
/// returns its path, for `--config`.
pub fn small_segments_config(dir: &TestDir, segment_bytes: u64) -> PathBuf {
    let path = dir.path().join("tidelogd.toml");
    let text = format!(
        "[log]\nsegment_bytes = {segment_bytes}\n\n[limits]\nbatch_bytes_max = {}\n",
        segment_bytes / 2
    );
    std::fs::write(&path, text).expect("writing the broker config");
    path
}
