//! The log cleaner service on the real broker: a compacted topic is cleaned with no request
//! (its closed segments shrink, the latest record of every key stays readable, and Metadata
//! reports the partition idle with a last clean time), while a partition the cleaner cannot
//! clean (a directory where its cleaned segment must be written) is marked uncleanable, logged
//! at ERROR and shown in `tidelog topic describe`, without stopping the cleaning of the other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tidelog_e2e::broker::strip_ansi;
use tidelog_e2e::cli::run_cli;
use tidelog_e2e::compacted::read_compacted;
use tidelog_e2e::records::keyed_batch;
use tidelog_e2e::wait::poll_until;
use tidelog_e2e::{BrokerProcess, RawClient, TestDir};
use tidelog_proto::pb;

const KEYS: usize = 10;
const BATCHES: usize = 40;
const WAIT: Duration = Duration::from_secs(120);

fn config(dir: &TestDir) -> PathBuf {
    let path = dir.path().join("tidelogd.toml");
    // Small segments so a few hundred records close several; a short backoff so the test's
    // wait is the cleaner's work, not its idle sleep.
    std::fs::write(
        &path,
        "[log]\nsegment_bytes = 16384\n\n[limits]\nbatch_bytes_max = 8192\n\n[cleaner]\nbackoff_ms = 100\n",
    )
    .unwrap();
    path
}

fn compacted() -> Option<pb::TopicConfig> {
    Some(pb::TopicConfig {
        cleanup_policy: Some("compact".into()),
        ..pb::TopicConfig::default()
    })
}

fn partition_dir(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join("topics").join(topic).join("0")
}

/// Bytes of the partition's segment data files.
fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum()
}

/// `BATCHES` batches of `KEYS` keyed records each, every key updated once per batch; returns
/// each key's last value and the bytes of the batches (what the log holds uncleaned).
fn produce_updates(client: &mut RawClient, topic: &str) -> (BTreeMap<String, String>, u64) {
    let mut latest = BTreeMap::new();
    let mut bytes = 0;
    for round in 0..BATCHES {
        let records: Vec<(String, String)> = (0..KEYS)
            .map(|key| (format!("key-{key}"), format!("{key}-{round}-{}", "x".repeat(100))))
            .collect();
        let batch: Vec<(Option<&[u8]>, &[u8])> = records
            .iter()
            .map(|(key, value)| (Some(key.as_bytes()), value.as_bytes()))
            .collect();
        let batch = keyed_batch(&batch);
        bytes += batch.len() as u64;
        client.produce_ok(topic, 0, batch);
        latest.extend(records);
    }
    (latest, bytes)
}

fn cleaner_status(client: &mut RawClient, topic: &str) -> Option<pb::CleanerStatus> {
    let mut metadata = client.metadata(&[topic]);
    let mut topic = metadata.topics.remove(0);
    topic.partitions.remove(0).cleaner
}

#[test]
fn compacted_topics_are_cleaned_unasked_and_an_uncleanable_partition_stops_only_itself() {
    let dir = TestDir::new("cleaner-service");
    let config = config(&dir);
    let broker = BrokerProcess::start(&dir.data_dir(), &["--config", config.to_str().unwrap()]);
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic("changelog", 1, compacted());
    client.create_topic("broken", 1, compacted());
    // A plain topic has nothing for the cleaner to say.
    client.create_topic("plain", 1, None);

    // The cleaned segment of "broken" must be written aside at `<first segment>.cleaned`: a
    // directory there is a fault no clean gets past.
    let broken_dir = partition_dir(&dir.data_dir(), "broken");
    let first_log = std::fs::read_dir(&broken_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .find(|name| name.ends_with(".log"))
        .expect("the new partition's first segment");
    std::fs::create_dir(broken_dir.join(format!("{first_log}.cleaned"))).unwrap();

    // The cleaner may start while these are produced: what was written is the measure.
    let (latest, before) = produce_updates(&mut client, "changelog");
    produce_updates(&mut client, "broken");
    let changelog_dir = partition_dir(&dir.data_dir(), "changelog");
    let segments = std::fs::read_dir(&changelog_dir)
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert!(segments >= 2, "{segments} segments: the test needs closed ones");

    // Cleaned with no request: idle again, with a last clean time, and smaller on disk.
    let status = poll_until(WAIT, "changelog cleaned", || {
        cleaner_status(&mut client, "changelog")
            .filter(|status| status.state == "idle" && status.last_cleaned_ms > 0)
    });
    assert!(status.error.is_empty(), "{status:?}");
    let after = log_bytes(&changelog_dir);
    assert!(
        after < before / 2,
        "{before} bytes before cleaning, {after} after\n{}",
        broker.logs()
    );
    // The latest record of every key is still there, at its own offset, and fewer remain.
    let read = read_compacted(&mut client, "changelog", 0, 0);
    let (records, high_watermark) = (read.records, read.high_watermark);
    assert_eq!(high_watermark, (KEYS * BATCHES) as i64);
    assert!(records.len() < KEYS * BATCHES, "{} records remain", records.len());
    let mut read_latest = BTreeMap::new();
    for record in &records {
        read_latest.insert(record.key_text().unwrap(), record.value_text());
    }
    assert_eq!(read_latest, latest);
    assert_eq!(records.last().unwrap().offset, high_watermark - 1);

    // The broken partition: uncleanable with its error, logged at ERROR, in `topic describe`.
    let status = poll_until(WAIT, "broken marked uncleanable", || {
        cleaner_status(&mut client, "broken").filter(|status| status.state == "uncleanable")
    });
    assert!(!status.error.is_empty(), "{status:?}");
    assert!(status.dirty_ratio > 0.0, "{status:?}");
    let logs = strip_ansi(&broker.logs());
    assert!(
        logs.lines()
            .any(|line| line.contains(" ERROR ") && line.contains("uncleanable") && line.contains("broken")),
        "the failure must be logged at ERROR with its topic:\n{logs}"
    );
    let describe = run_cli(Some(broker.addr()), &["topic", "describe", "broken"], b"");
    describe.assert_success();
    assert!(describe.stdout.contains("Cleaner"), "{describe}");
    assert!(describe.stdout.contains("uncleanable: "), "{describe}");
    let describe = run_cli(Some(broker.addr()), &["topic", "describe", "changelog"], b"");
    describe.assert_success();
    assert!(describe.stdout.contains("idle (dirty "), "{describe}");
    let describe = run_cli(Some(broker.addr()), &["topic", "describe", "plain"], b"");
    describe.assert_success();
    assert!(!describe.stdout.contains("Cleaner"), "{describe}");
    assert_eq!(cleaner_status(&mut client, "plain"), None);

    // The cleaner is alive after the failure: new updates to "changelog" are cleaned too.
    let cleaned_at = cleaner_status(&mut client, "changelog").unwrap().last_cleaned_ms;
    let (latest, _) = produce_updates(&mut client, "changelog");
    poll_until(WAIT, "changelog cleaned again", || {
        cleaner_status(&mut client, "changelog").filter(|status| status.last_cleaned_ms > cleaned_at)
    });
    let records = read_compacted(&mut client, "changelog", 0, 0).records;
    let mut read_latest = BTreeMap::new();
    for record in &records {
        read_latest.insert(record.key_text().unwrap(), record.value_text());
    }
    assert_eq!(read_latest, latest);
    // Still uncleanable (retried only after cleaner.uncleanable_retry_ms, 10 minutes).
    assert_eq!(
        cleaner_status(&mut client, "broken").unwrap().state,
        "uncleanable"
    );
}
