//! The per-key index is derived data (issue 8 §3): a stopped broker's `.keys` files are
//! damaged (a flipped byte, one deleted, one truncated, an orphan named like one); `tidelogd
//! verify` names the damaged ones and exits non-zero; the restarted broker rebuilds what it
//! cannot use in the background, moves the orphan to quarantine, never touches a data file,
//! serves every record as before, and its next clean stop leaves `.keys` files verify accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tidelog_e2e::binaries::binaries;
use tidelog_e2e::records::{now_ms, read_partition, timed_keyed_batch};
use tidelog_e2e::wait::try_poll_until;
use tidelog_e2e::{small_segments_config, BrokerProcess, RawClient, TestDir};

const TOPIC: &str = "streams";
const SEGMENT_BYTES: u64 = 64 << 10;
const BATCHES: usize = 300;
const RECORDS_PER_BATCH: usize = 10;
const TIMEOUT: Duration = Duration::from_secs(120);
const ORPHAN: &str = "00000000000009999999.keys";

fn verify(data_dir: &Path) -> Output {
    let mut child = Command::new(&binaries().broker)
        .args(["verify", "--data-dir", data_dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tidelogd verify");
    let finished = try_poll_until(TIMEOUT, || child.try_wait().expect("polling verify"));
    if finished.is_none() {
        let _ = child.kill();
        panic!("tidelogd verify did not finish within {TIMEOUT:?}");
    }
    child.wait_with_output().expect("verify output")
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(suffix))
        .collect();
    names.sort();
    names
}

fn data_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_ending(dir, ".log")
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

/// The `.keys` names a clean stop leaves: one per segment (the active one's too, which the
/// next open loads instead of scanning the segment).
fn expected_keys(dir: &Path) -> Vec<String> {
    files_ending(dir, ".log")
        .iter()
        .map(|name| name.replace(".log", ".keys"))
        .collect()
}

#[test]
fn damaged_keys_files_are_named_by_verify_and_rebuilt_without_touching_the_log() {
    let dir = TestDir::new("key-index-damage");
    let config = small_segments_config(&dir, SEGMENT_BYTES);
    let mut broker = BrokerProcess::start(
        &dir.data_dir(),
        &["--flush", "always", "--config", config.to_str().unwrap()],
    );
    let mut client = RawClient::connect_or_panic(broker.addr());
    client.create_topic(TOPIC, 1, None);
    let mut expected = BTreeMap::new();
    for batch in 0..BATCHES {
        let owned: Vec<(Vec<u8>, Vec<u8>)> = (0..RECORDS_PER_BATCH)
            .map(|record| {
                (
                    format!("entity-{}", (batch * RECORDS_PER_BATCH + record) % 13).into_bytes(),
                    format!("event-{batch}-{record}-{}", "x".repeat(100)).into_bytes(),
                )
            })
            .collect();
        let records: Vec<(Option<&[u8]>, &[u8])> = owned
            .iter()
            .map(|(key, value)| (Some(key.as_slice()), value.as_slice()))
            .collect();
        let base = client.produce_ok(TOPIC, 0, timed_keyed_batch(&records, now_ms()));
        for (index, (_, value)) in owned.into_iter().enumerate() {
            expected.insert(base + index as i64, value);
        }
    }
    drop(client);
    assert!(broker.terminate_and_wait().success(), "clean stop");
    let partition = dir.data_dir().join("topics").join(TOPIC).join("0");
    let keys = expected_keys(&partition);
    assert!(keys.len() >= 4, "several closed segments: {keys:?}");
    // A clean stop leaves every segment's `.keys`, and verify accepts them.
    assert_eq!(files_ending(&partition, ".keys"), keys);
    let clean = verify(&dir.data_dir());
    let report = String::from_utf8_lossy(&clean.stdout).into_owned();
    assert!(
        clean.status.success(),
        "verify of an undamaged directory: {report}"
    );

    let path = |name: &String| -> PathBuf { partition.join(name) };
    let mut flipped = std::fs::read(path(&keys[0])).unwrap();
    flipped[70] ^= 0x10;
    std::fs::write(path(&keys[0]), &flipped).unwrap();
    std::fs::remove_file(path(&keys[1])).unwrap();
    let whole = std::fs::read(path(&keys[2])).unwrap();
    std::fs::write(path(&keys[2]), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(partition.join(ORPHAN), &whole).unwrap();
    let logs_before = data_files(&partition);

    let damaged = verify(&dir.data_dir());
    let report = String::from_utf8_lossy(&damaged.stdout).into_owned();
    assert!(!damaged.status.success(), "verify must fail: {report}");
    for name in [&keys[0], &keys[2]] {
        assert!(
            report
                .lines()
                .any(|line| line.contains(name.as_str()) && line.contains("per-key index")),
            "verify names {name}: {report}"
        );
    }
    assert!(report.contains(ORPHAN), "verify names the orphan: {report}");

    broker.restart();
    // The rebuild runs in the background; every record is served meanwhile.
    let mut client = RawClient::connect_or_panic(broker.addr());
    let (records, _) = read_partition(&mut client, TOPIC, 0, 0);
    let served: BTreeMap<i64, Vec<u8>> = records
        .into_iter()
        .map(|record| (record.offset, record.value.unwrap_or_default().to_vec()))
        .collect();
    assert_eq!(served, expected, "every record served after the restart");
    let rebuilt = try_poll_until(TIMEOUT, || {
        let present = files_ending(&partition, ".keys");
        (present == keys).then_some(())
    });
    assert!(
        rebuilt.is_some(),
        "the broker rebuilt every .keys: {:?}, wanted {keys:?}",
        files_ending(&partition, ".keys")
    );
    assert!(
        partition.join("quarantine").join(ORPHAN).exists(),
        "the orphan .keys is in quarantine"
    );
    drop(client);
    assert!(broker.terminate_and_wait().success(), "clean stop");
    assert_eq!(data_files(&partition), logs_before, "no data file changed");
    let after = verify(&dir.data_dir());
    let report = String::from_utf8_lossy(&after.stdout).into_owned();
    assert!(
        !report.contains("per-key index unusable"),
        "rebuilt .keys files verify: {report}"
    );
    let logs = broker.logs();
    assert!(
        logs.contains("rebuilt the per-key index"),
        "the rebuild is logged"
    );
}
