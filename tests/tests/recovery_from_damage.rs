//! Recovery never deletes acknowledged data. A broker under `--flush always` acknowledges
//! records in several segments and is SIGKILLed; the files are then damaged the way an
//! operator's bad day would (a flipped byte in a sealed segment, a middle segment truncated to
//! nothing, a stray empty file named like a segment inside another's range). The restarted
//! broker must serve every acknowledged record outside the damaged batch, answer a fetch inside
//! it with CORRUPT_MESSAGE naming the offsets (so a consumer can skip it), append only above
//! the old end, and keep every file it does not use in `quarantine/`. `tidelogd verify` must
//! name the damage and exit non-zero, and exit 0 on an undamaged directory without changing it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tidelog_e2e::binaries::binaries;
use tidelog_e2e::records::{decode_records, now_ms, timed_batch, StoredRecord};
use tidelog_e2e::wait::try_poll_until;
use tidelog_e2e::{small_segments_config, BrokerProcess, RawClient, TestDir};
use tidelog_proto::batch::{BatchHeader, MAGIC_OFFSET};
use tidelog_proto::pb::ErrorCode;

const TOPIC: &str = "damaged";
const SEGMENT_BYTES: u64 = 64 << 10;
const BATCHES: usize = 160;
const RECORDS_PER_BATCH: i64 = 10;
const VERIFY_TIMEOUT: Duration = Duration::from_secs(120);

/// A SIGKILLed broker whose partition holds [`BATCHES`] acknowledged batches in several segments.
struct Acked {
    dir: TestDir,
    broker: BrokerProcess,
    /// Acknowledged value of every offset.
    values: BTreeMap<i64, String>,
    /// Bytes of each acknowledged batch as sent, by base offset.
    sent: BTreeMap<i64, Bytes>,
    end: i64,
}

impl Acked {
    fn new(test_name: &str) -> Self {
        let dir = TestDir::new(test_name);
        let config = small_segments_config(&dir, SEGMENT_BYTES);
        let mut broker = BrokerProcess::start(
            &dir.data_dir(),
            &["--flush", "always", "--config", config.to_str().unwrap()],
        );
        let mut client = RawClient::connect_or_panic(broker.addr());
        client.create_topic(TOPIC, 1, None);
        let mut values = BTreeMap::new();
        let mut sent = BTreeMap::new();
        let mut end = 0;
        let timestamp = now_ms() - 60_000;
        for batch in 0..BATCHES {
            let texts: Vec<String> = (0..RECORDS_PER_BATCH)
                .map(|record| format!("acked-{batch}-{record}-{}", "v".repeat(150)))
                .collect();
            let bytes = timed_batch(&texts, timestamp + batch as i64);
            let base = client.produce_ok(TOPIC, 0, bytes.clone());
            assert_eq!(base, end, "batch {batch}");
            for (index, text) in texts.into_iter().enumerate() {
                values.insert(base + index as i64, text);
            }
            sent.insert(base, bytes);
            end += RECORDS_PER_BATCH;
        }
        drop(client);
        broker.kill9();
        let acked = Self {
            dir,
            broker,
            values,
            sent,
            end,
        };
        assert!(acked.segments().len() >= 4, "{:?}", acked.segments());
        acked
    }

    fn partition_dir(&self) -> PathBuf {
        self.dir.data_dir().join("topics").join(TOPIC).join("0")
    }

    fn segments(&self) -> Vec<(i64, PathBuf)> {
        segment_files(&self.partition_dir())
    }

    /// Byte position of the batch at `base` in `file`, found by its CRC-covered bytes.
    fn position_of(&self, file: &Path, base: i64) -> usize {
        let data = std::fs::read(file).unwrap();
        let needle = &self.sent[&base][MAGIC_OFFSET..];
        let found = data
            .windows(needle.len())
            .position(|window| window == needle)
            .unwrap_or_else(|| panic!("batch {base} not in {file:?}"));
        found - MAGIC_OFFSET
    }

    /// Restarts, produces three more batches, reads everything, and checks: every acked
    /// record outside `damaged` is served intact, a fetch in `damaged` gets CORRUPT_MESSAGE
    /// naming exactly that range, and the new records land at or above the old end.
    fn restart_and_check(&mut self, damaged: Option<(i64, i64)>) {
        self.broker.restart();
        let mut client = RawClient::connect_or_panic(self.broker.addr());
        let mut new_offsets = Vec::new();
        for round in 0..3 {
            let bytes = timed_batch(&[format!("after-{round}")], now_ms());
            let base = client.produce_ok(TOPIC, 0, bytes);
            assert!(base >= self.end, "offset {base} reused (old end {})", self.end);
            new_offsets.push(base);
        }
        let (records, corrupt) = read_skipping_corrupt(&mut client, 0);
        let served: BTreeMap<i64, String> = records
            .iter()
            .map(|record| (record.offset, record.value_text()))
            .collect();
        for (offset, value) in &self.values {
            let inside = damaged.is_some_and(|(first, end)| (first..end).contains(offset));
            if inside {
                assert!(!served.contains_key(offset), "damaged offset {offset} was served");
            } else {
                assert_eq!(served.get(offset), Some(value), "acknowledged offset {offset}");
            }
        }
        for (round, offset) in new_offsets.iter().enumerate() {
            assert_eq!(served.get(offset), Some(&format!("after-{round}")));
        }
        match damaged {
            Some((first, end)) => {
                assert_eq!(corrupt.len(), 1, "{corrupt:?}");
                let (at, message) = &corrupt[0];
                assert_eq!(*at, first, "the read hit the fence at its start");
                assert!(message.contains(&format!("offsets {first}..{end}")), "{message}");
                assert!(message.contains(TOPIC), "{message}");
                let data_dir = self.dir.data_dir();
                assert!(
                    !message.contains(data_dir.to_str().unwrap()),
                    "a path in {message}"
                );
                // A fetch anywhere inside the range is refused the same way.
                let inside = client.fetch(TOPIC, 0, end - 1, 0, 0);
                assert_eq!(inside.error(), ErrorCode::CorruptMessage, "{inside:?}");
            }
            None => assert!(corrupt.is_empty(), "{corrupt:?}"),
        }
        drop(client);
        let status = self.broker.terminate_and_wait();
        assert!(status.success(), "clean stop: {status}");
    }

    fn quarantined(&self) -> Vec<String> {
        match std::fs::read_dir(self.partition_dir().join("quarantine")) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                    .collect();
                names.sort();
                names
            }
            Err(_) => Vec::new(),
        }
    }
}

fn segment_files(dir: &Path) -> Vec<(i64, PathBuf)> {
    let mut segments: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .filter_map(|path| Some((path.file_stem()?.to_str()?.parse().ok()?, path)))
        .collect();
    segments.sort();
    segments
}

/// Reads from `from` to the high watermark; a CORRUPT_MESSAGE answer is recorded (offset,
/// message) and skipped by fetching from the end of the range it names.
fn read_skipping_corrupt(client: &mut RawClient, from: i64) -> (Vec<StoredRecord>, Vec<(i64, String)>) {
    let mut records = Vec::new();
    let mut corrupt = Vec::new();
    let mut next = from;
    for _ in 0..100_000 {
        let result = client.fetch(TOPIC, 0, next, 0, 0);
        if result.error() == ErrorCode::CorruptMessage {
            let end = skip_target(&result.message)
                .unwrap_or_else(|| panic!("CORRUPT_MESSAGE does not name its range: {:?}", result.message));
            assert!(end > next, "{:?}", result.message);
            corrupt.push((next, result.message.clone()));
            next = end;
            continue;
        }
        assert_eq!(result.error(), ErrorCode::None, "fetch at {next}: {result:?}");
        let high_watermark = result.high_watermark;
        let fresh: Vec<StoredRecord> = decode_records(result.records)
            .into_iter()
            .filter(|record| record.offset >= next)
            .collect();
        if fresh.is_empty() {
            assert!(
                next >= high_watermark,
                "no progress at {next} below {high_watermark}"
            );
            return (records, corrupt);
        }
        next = fresh.last().unwrap().offset + 1;
        records.extend(fresh);
    }
    panic!("reading did not reach the high watermark");
}

/// `B` from a message saying "offsets A..B ...".
fn skip_target(message: &str) -> Option<i64> {
    let after = message.split("offsets ").nth(1)?;
    let range = after.split_whitespace().next()?;
    let (_, end) = range.split_once("..")?;
    end.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()
}

/// Runs `tidelogd verify --data-dir DIR` with a bounded timeout.
fn verify(data_dir: &Path) -> Output {
    let mut child = Command::new(&binaries().broker)
        .args(["verify", "--data-dir", data_dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting tidelogd verify");
    let finished = try_poll_until(VERIFY_TIMEOUT, || child.try_wait().expect("polling verify"));
    if finished.is_none() {
        let _ = child.kill();
        panic!("tidelogd verify did not finish within {VERIFY_TIMEOUT:?}");
    }
    child.wait_with_output().expect("verify output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every file under `dir` with its contents, to prove verify changed nothing.
fn snapshot_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    files
}

#[test]
fn a_flipped_byte_in_a_sealed_segments_last_batch_fences_only_that_batch() {
    let mut acked = Acked::new("flip-sealed-last");
    let segments = acked.segments();
    let (_, file) = &segments[1];
    let next_base = segments[2].0;
    let last_base = next_base - RECORDS_PER_BATCH;
    let position = acked.position_of(file, last_base);
    let mut data = std::fs::read(file).unwrap();
    data[position + acked.sent[&last_base].len() - 20] ^= 0x04;
    std::fs::write(file, &data).unwrap();

    let output = verify(&acked.dir.data_dir());
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let report = stdout(&output);
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(report.contains(&format!("{TOPIC}/0: DAMAGED")), "{report}");
    assert!(report.contains(name), "{report}");
    assert!(
        report.contains(&format!("offsets {last_base}..{next_base}")),
        "{report}"
    );

    acked.restart_and_check(Some((last_base, next_base)));
    let bases: Vec<i64> = acked.segments().iter().map(|(base, _)| *base).collect();
    for (base, _) in &segments {
        assert!(bases.contains(base), "segment {base} was removed: {bases:?}");
    }
    assert!(acked.quarantined().is_empty());
    // The damage stays on disk (fenced, not repaired), so verify still names it.
    assert_eq!(verify(&acked.dir.data_dir()).status.code(), Some(1));
}

#[test]
fn a_middle_segment_truncated_to_zero_loses_only_its_own_records() {
    let mut acked = Acked::new("middle-zero");
    let segments = acked.segments();
    let (base, file) = &segments[1];
    let next_base = segments[2].0;
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(0)
        .unwrap();
    let output = verify(&acked.dir.data_dir());
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(stdout(&output).contains(file.file_name().unwrap().to_str().unwrap()));

    acked.restart_and_check(Some((*base, next_base)));
    let name = file.file_name().unwrap().to_str().unwrap().to_string();
    assert!(acked.quarantined().contains(&name), "{:?}", acked.quarantined());
    for (later, _) in &segments[2..] {
        assert!(
            acked.segments().iter().any(|(kept, _)| kept == later),
            "segment {later} was removed"
        );
    }
}

#[test]
fn an_empty_stray_segment_file_inside_a_range_is_quarantined_and_deletes_nothing() {
    let mut acked = Acked::new("stray-inside");
    let segments = acked.segments();
    let inside = segments[1].0 + 3;
    let stray = acked.partition_dir().join(format!("{inside:020}.log"));
    std::fs::write(&stray, b"").unwrap();
    let output = verify(&acked.dir.data_dir());
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stdout(&output).contains(&format!("{inside:020}.log")),
        "{}",
        stdout(&output)
    );

    acked.restart_and_check(None);
    assert_eq!(acked.quarantined(), vec![format!("{inside:020}.log")]);
    let bases: Vec<i64> = acked.segments().iter().map(|(base, _)| *base).collect();
    for (base, _) in &segments {
        assert!(bases.contains(base), "segment {base} was removed: {bases:?}");
    }
}

#[test]
fn verify_exits_zero_on_an_undamaged_directory_and_changes_nothing() {
    let acked = Acked::new("verify-clean");
    let before = snapshot_tree(&acked.dir.data_dir());
    let output = verify(&acked.dir.data_dir());
    let report = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains(&format!("{TOPIC}/0: clean")), "{report}");
    assert!(report.contains("0 damaged"), "{report}");
    assert_eq!(
        snapshot_tree(&acked.dir.data_dir()),
        before,
        "verify changed the directory"
    );
    // A byte flipped in the middle of a closed segment is found: verify reads every batch.
    let (_, file) = &acked.segments()[0];
    let mut data = std::fs::read(file).unwrap();
    let header = BatchHeader::parse(&data[32..]).unwrap();
    let second = 32 + header.total_bytes().unwrap();
    data[second + 100] ^= 0x01;
    std::fs::write(file, &data).unwrap();
    let output = verify(&acked.dir.data_dir());
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let offsets = format!("offsets {}..{}", RECORDS_PER_BATCH, 2 * RECORDS_PER_BATCH);
    assert!(stdout(&output).contains(&offsets), "{}", stdout(&output));
}

#[test]
fn a_flipped_length_in_a_sealed_segments_first_batch_header_fences_only_that_batch() {
    // The length field is not covered by the batch CRC: the scan must find the next valid
    // batch by itself and keep everything after the damaged one.
    let mut acked = Acked::new("flip-sealed-length");
    let segments = acked.segments();
    let (base, file) = &segments[2];
    let position = acked.position_of(file, *base);
    let mut data = std::fs::read(file).unwrap();
    data[position + 8] ^= 0x40;
    std::fs::write(file, &data).unwrap();
    let output = verify(&acked.dir.data_dir());
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(
        stdout(&output).contains(&format!("offsets {base}..{}", base + RECORDS_PER_BATCH)),
        "{}",
        stdout(&output)
    );
    acked.restart_and_check(Some((*base, base + RECORDS_PER_BATCH)));
}
