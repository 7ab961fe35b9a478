//! Recovery from a damaged active segment. The broker is SIGKILLed (so no clean-shutdown
//! checkpoint vouches for the files), the last segment is damaged on disk (cut mid-batch,
//! garbage appended, a byte flipped, the file header torn) or the index files are deleted, and
//! the restarted broker must serve exactly the intact prefix and append right after it.
//!
//! The damage is placed by finding a batch's bytes in the segment file, so these tests assume
//! only what docs/protocol.md promises: a stored batch is the batch sent, apart from its base
//! offset (and partition leader epoch), which the CRC does not cover.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rand::{Rng, RngCore};
use tidelog_e2e::records::{assert_dense, batch_of, decode_records, now_ms, read_partition, timed_batch};
use tidelog_e2e::{small_segments_config, test_rng, BrokerProcess, RawClient, TestDir};
use tidelog_proto::batch::{CRC_OFFSET, MAGIC_OFFSET};
use tidelog_proto::pb::ErrorCode;

const TOPIC: &str = "recovering";
const SEGMENT_BYTES: u64 = 64 << 10;
const BATCHES: usize = 90;
const RECORDS_PER_BATCH: usize = 10;
/// Batch `b` is stamped `b` seconds after the first, which is this long before now (recent
/// enough that neither retention nor age-based rolling touches it).
const FIRST_TIMESTAMP_AGE_MS: i64 = 3_600_000;

/// One produced batch as sent.
#[derive(Debug)]
struct SentBatch {
    base_offset: i64,
    values: Vec<String>,
    bytes: Bytes,
    timestamp: i64,
}

/// A crashed broker with [`BATCHES`] batches in several segments of one partition.
struct Crashed {
    dir: TestDir,
    broker: BrokerProcess,
    batches: Vec<SentBatch>,
}

impl Crashed {
    fn new(test_name: &str) -> Self {
        let dir = TestDir::new(test_name);
        let config = small_segments_config(&dir, SEGMENT_BYTES);
        let mut broker = BrokerProcess::start(
            &dir.data_dir(),
            &["--flush", "always", "--config", config.to_str().unwrap()],
        );
        let mut client = RawClient::connect_or_panic(broker.addr());
        client.create_topic(TOPIC, 1, None);
        let mut batches = Vec::new();
        let mut next_offset = 0;
        let first_timestamp = now_ms() - FIRST_TIMESTAMP_AGE_MS;
        for batch in 0..BATCHES {
            let values: Vec<String> = (0..RECORDS_PER_BATCH)
                .map(|record| format!("batch-{batch}-record-{record}-{}", "z".repeat(150)))
                .collect();
            let timestamp = first_timestamp + batch as i64 * 1000;
            let bytes = timed_batch(&values, timestamp);
            let base_offset = client.produce_ok(TOPIC, 0, bytes.clone());
            assert_eq!(
                base_offset, next_offset,
                "batch {batch} appended at the wrong offset"
            );
            next_offset += RECORDS_PER_BATCH as i64;
            batches.push(SentBatch {
                base_offset,
                values,
                bytes,
                timestamp,
            });
        }
        drop(client);
        broker.kill9();
        let crashed = Self { dir, broker, batches };
        assert!(
            crashed.segments().len() >= 3,
            "expected several segments of {SEGMENT_BYTES} bytes, found {:?}",
            crashed.segments()
        );
        crashed
    }

    fn partition_dir(&self) -> PathBuf {
        self.dir.data_dir().join("topics").join(TOPIC).join("0")
    }

    /// The partition's segment data files, oldest first, with their base offsets.
    fn segments(&self) -> Vec<(i64, PathBuf)> {
        let mut segments: Vec<(i64, PathBuf)> = std::fs::read_dir(self.partition_dir())
            .expect("partition directory exists")
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
            .map(|path| {
                let stem = path.file_stem().unwrap().to_str().unwrap();
                let base = stem
                    .parse()
                    .unwrap_or_else(|_| panic!("segment file name {path:?}"));
                (base, path)
            })
            .collect();
        segments.sort();
        segments
    }

    fn active_segment(&self) -> (i64, PathBuf) {
        self.segments().pop().expect("at least one segment")
    }

    /// Where `batch` starts in `file`: found by its CRC-covered bytes.
    fn position_of(&self, file: &Path, batch: &SentBatch) -> usize {
        let data = std::fs::read(file).unwrap();
        let needle = &batch.bytes[MAGIC_OFFSET..];
        let found = data
            .windows(needle.len())
            .rposition(|window| window == needle)
            .unwrap_or_else(|| panic!("batch at offset {} not found in {file:?}", batch.base_offset));
        found - MAGIC_OFFSET
    }

    /// The first batch stored in the active segment.
    fn first_batch_of_active_segment(&self) -> &SentBatch {
        let (base, _) = self.active_segment();
        self.batches
            .iter()
            .find(|batch| batch.base_offset == base)
            .expect("the active segment starts at a batch boundary")
    }

    fn last_batch(&self) -> &SentBatch {
        self.batches.last().unwrap()
    }

    fn total_records(&self) -> i64 {
        (self.batches.len() * RECORDS_PER_BATCH) as i64
    }

    fn value_at(&self, offset: i64) -> &str {
        let batch = &self.batches[offset as usize / RECORDS_PER_BATCH];
        &batch.values[offset as usize % RECORDS_PER_BATCH]
    }

    /// Restarts and checks that exactly offsets `0..high_watermark` are served, intact, and
    /// that the next append lands at `high_watermark`; then crashes and restarts once more to
    /// check the repaired log is stable.
    fn restart_and_expect(&mut self, high_watermark: i64) {
        self.broker.restart();
        let mut client = RawClient::connect_or_panic(self.broker.addr());
        let (records, served_high_watermark) = read_partition(&mut client, TOPIC, 0, 0);
        assert_eq!(
            served_high_watermark, high_watermark,
            "high watermark after recovery"
        );
        assert_eq!(records.len() as i64, high_watermark);
        assert_dense(&records, 0, "recovered partition");
        for record in &records {
            assert_eq!(
                record.value_text(),
                self.value_at(record.offset),
                "offset {}",
                record.offset
            );
        }
        let at_end = client.fetch(TOPIC, 0, high_watermark, 0, 0);
        assert_eq!(
            at_end.error(),
            ErrorCode::None,
            "fetch at the high watermark: {at_end:?}"
        );
        assert!(
            decode_records(at_end.records)
                .iter()
                .all(|record| record.offset < high_watermark),
            "a fetch at the high watermark returned records past it"
        );

        let appended = client.produce_ok(TOPIC, 0, batch_of(&["after recovery 1", "after recovery 2"]));
        assert_eq!(appended, high_watermark, "the first append after recovery");
        let (tail, _) = read_partition(&mut client, TOPIC, 0, high_watermark);
        let tail: Vec<String> = tail.iter().map(|record| record.value_text()).collect();
        assert_eq!(tail, vec!["after recovery 1", "after recovery 2"]);
        drop(client);

        self.broker.kill9();
        self.broker.restart();
        let mut client = RawClient::connect_or_panic(self.broker.addr());
        let (records, served_high_watermark) = read_partition(&mut client, TOPIC, 0, 0);
        assert_eq!(
            served_high_watermark,
            high_watermark + 2,
            "high watermark after a second crash"
        );
        assert_dense(&records, 0, "partition after a second crash");
    }
}

/// Records from `from` on, up to the first fetch answered with CORRUPT_MESSAGE.
fn read_until_corrupt(client: &mut RawClient, from: i64) -> Vec<tidelog_e2e::records::StoredRecord> {
    let mut records = Vec::new();
    let mut next = from;
    for _ in 0..100_000 {
        let result = client.fetch(TOPIC, 0, next, 0, 0);
        if result.error() == ErrorCode::CorruptMessage {
            return records;
        }
        assert_eq!(result.error(), ErrorCode::None, "fetch at {next}: {result:?}");
        let fresh: Vec<_> = decode_records(result.records)
            .into_iter()
            .filter(|record| record.offset >= next)
            .collect();
        let Some(last) = fresh.last() else {
            panic!("no CORRUPT_MESSAGE before the end of the log at {next}");
        };
        next = last.offset + 1;
        records.extend(fresh);
    }
    panic!("reading did not reach the damage");
}

fn set_len(path: &Path, length: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(length)
        .unwrap();
}

#[test]
fn active_segment_cut_mid_batch_loses_only_that_batch() {
    let mut crashed = Crashed::new("cut-mid-batch");
    let (_, active) = crashed.active_segment();
    let last = crashed.last_batch();
    let position = crashed.position_of(&active, last);
    set_len(&active, (position + last.bytes.len() / 2) as u64);
    let expected = last.base_offset;
    crashed.restart_and_expect(expected);
}

#[test]
fn active_segment_cut_inside_a_batch_header_loses_only_that_batch() {
    let mut crashed = Crashed::new("cut-in-header");
    let (_, active) = crashed.active_segment();
    let last = crashed.last_batch();
    let position = crashed.position_of(&active, last);
    set_len(&active, (position + 7) as u64);
    let expected = last.base_offset;
    crashed.restart_and_expect(expected);
}

#[test]
fn garbage_after_the_last_batch_is_cut_and_every_batch_kept() {
    let mut rng = test_rng("garbage_after_the_last_batch_is_cut_and_every_batch_kept");
    let mut crashed = Crashed::new("garbage-tail");
    let (_, active) = crashed.active_segment();
    let mut garbage = vec![0u8; rng.random_range(1..4096)];
    rng.fill_bytes(&mut garbage);
    OpenOptions::new()
        .append(true)
        .open(&active)
        .unwrap()
        .write_all(&garbage)
        .unwrap();
    let expected = crashed.total_records();
    crashed.restart_and_expect(expected);
}

#[test]
fn zeroes_after_the_last_batch_are_cut_and_every_batch_kept() {
    // A file extended but never written (a crash after a size change) reads as zeroes.
    let mut crashed = Crashed::new("zero-tail");
    let (_, active) = crashed.active_segment();
    let length = std::fs::metadata(&active).unwrap().len();
    set_len(&active, length + 8192);
    let expected = crashed.total_records();
    crashed.restart_and_expect(expected);
}

#[test]
fn flipped_byte_in_the_last_batch_drops_that_batch() {
    let mut rng = test_rng("flipped_byte_in_the_last_batch_drops_that_batch");
    let mut crashed = Crashed::new("flipped-last");
    let (_, active) = crashed.active_segment();
    let last = crashed.last_batch();
    let position = crashed.position_of(&active, last);
    // Anywhere from the CRC on: the CRC itself or the bytes it covers.
    let flip_at = position + rng.random_range(CRC_OFFSET..last.bytes.len());
    let mut data = std::fs::read(&active).unwrap();
    data[flip_at] ^= 1 << rng.random_range(0..8);
    std::fs::write(&active, &data).unwrap();
    let expected = last.base_offset;
    crashed.restart_and_expect(expected);
}

#[test]
fn flipped_byte_in_the_first_batch_of_the_active_segment_fences_it_and_keeps_the_rest() {
    // Damage followed by valid batches is corruption in the middle, not a torn tail: the
    // batches after it were acknowledged too.
    let mut rng =
        test_rng("flipped_byte_in_the_first_batch_of_the_active_segment_fences_it_and_keeps_the_rest");
    let mut crashed = Crashed::new("flipped-first");
    let (_, active) = crashed.active_segment();
    let first = crashed.first_batch_of_active_segment();
    let (damaged_from, damaged_to) = (first.base_offset, first.base_offset + RECORDS_PER_BATCH as i64);
    let position = crashed.position_of(&active, first);
    let flip_at = position + rng.random_range(CRC_OFFSET..first.bytes.len());
    let mut data = std::fs::read(&active).unwrap();
    data[flip_at] ^= 0xff;
    std::fs::write(&active, &data).unwrap();
    crashed.broker.restart();
    let mut client = RawClient::connect_or_panic(crashed.broker.addr());
    let damaged = client.fetch(TOPIC, 0, damaged_from, 0, 0);
    assert_eq!(damaged.error(), ErrorCode::CorruptMessage, "{damaged:?}");
    assert!(
        damaged
            .message
            .contains(&format!("offsets {damaged_from}..{damaged_to}")),
        "{damaged:?}"
    );
    let before = read_until_corrupt(&mut client, 0);
    assert_dense(&before, 0, "before the damage");
    assert_eq!(
        before.len() as i64,
        damaged_from,
        "a read before the damage stops at its start"
    );
    let (after, high_watermark) = read_partition(&mut client, TOPIC, 0, damaged_to);
    assert_eq!(high_watermark, crashed.total_records());
    assert_dense(&after, damaged_to, "after the damage");
    for record in before.iter().chain(&after) {
        assert_eq!(record.value_text(), crashed.value_at(record.offset));
    }
    let appended = client.produce_ok(TOPIC, 0, batch_of(&["after recovery"]));
    assert_eq!(appended, crashed.total_records());
}

#[test]
fn active_segment_with_a_torn_file_header_recovers_to_its_base_offset() {
    // A crash while a new segment's header was being written: the segment holds no batch.
    let mut crashed = Crashed::new("torn-header");
    let (base, active) = crashed.active_segment();
    set_len(&active, 10);
    crashed.restart_and_expect(base);
}

#[test]
fn deleted_index_files_are_rebuilt_and_reads_and_timestamp_lookups_stay_right() {
    let mut crashed = Crashed::new("deleted-indexes");
    let mut deleted = 0;
    for entry in std::fs::read_dir(crashed.partition_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|extension| extension == "index" || extension == "timeindex")
        {
            std::fs::remove_file(&path).unwrap();
            deleted += 1;
        }
    }
    assert!(
        deleted > 0,
        "expected index files in {:?}",
        crashed.partition_dir()
    );
    crashed.broker.restart();
    let mut client = RawClient::connect_or_panic(crashed.broker.addr());
    // Random access: a fetch at any offset starts with the batch holding it.
    for offset in (0..crashed.total_records()).step_by(7) {
        let result = client.fetch(TOPIC, 0, offset, 0, 0);
        assert_eq!(result.error(), ErrorCode::None, "fetch at {offset}: {result:?}");
        let first = decode_records(result.records)
            .into_iter()
            .find(|record| record.offset >= offset)
            .unwrap_or_else(|| panic!("fetch at {offset} returned no record at or after it"));
        assert_eq!(first.offset, offset, "fetch at {offset}");
        assert_eq!(first.value_text(), crashed.value_at(offset), "fetch at {offset}");
    }
    // Timestamp lookups: the first offset stamped at or after T, in closed and active segments.
    for batch in crashed.batches.iter().step_by(11) {
        for (timestamp, expected) in [
            (batch.timestamp, batch.base_offset),
            (batch.timestamp - 500, batch.base_offset),
        ] {
            let found = client.list_offset(TOPIC, 0, timestamp);
            assert_eq!(found.error(), ErrorCode::None, "{found:?}");
            assert_eq!(found.offset, expected, "ListOffsets({timestamp}): {found:?}");
            assert_eq!(
                found.timestamp, batch.timestamp,
                "ListOffsets({timestamp}): {found:?}"
            );
        }
    }
    let after_all = client.list_offset(TOPIC, 0, crashed.last_batch().timestamp + 1);
    assert_eq!(
        after_all.offset, -1,
        "no record is stamped after the last batch: {after_all:?}"
    );
    drop(client);
    crashed.broker.kill9();
    let expected = crashed.total_records();
    crashed.restart_and_expect(expected);
}

#[test]
fn garbage_appended_after_a_clean_shutdown_is_not_served() {
    // The clean-shutdown checkpoint must not vouch for bytes written after it.
    let mut rng = test_rng("garbage_appended_after_a_clean_shutdown_is_not_served");
    let mut crashed = Crashed::new("garbage-after-clean");
    crashed.broker.restart();
    let status = crashed.broker.terminate_and_wait();
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    let (_, active) = crashed.active_segment();
    let mut garbage = vec![0u8; rng.random_range(100..4096)];
    rng.fill_bytes(&mut garbage);
    OpenOptions::new()
        .append(true)
        .open(&active)
        .unwrap()
        .write_all(&garbage)
        .unwrap();
    let expected = crashed.total_records();
    crashed.restart_and_expect(expected);
}

#[test]
fn last_batch_cut_after_a_clean_shutdown_is_fenced_and_its_offsets_never_reused() {
    // The clean-shutdown checkpoint says those bytes were synced: losing them is damage, not
    // a crash tail, and the offsets they held were acknowledged.
    let mut crashed = Crashed::new("cut-after-clean");
    crashed.broker.restart();
    let status = crashed.broker.terminate_and_wait();
    assert!(status.success(), "SIGTERM should exit 0, got {status}");
    let (_, active) = crashed.active_segment();
    let last = crashed.last_batch();
    let position = crashed.position_of(&active, last);
    set_len(&active, (position + last.bytes.len() - 3) as u64);
    let (damaged_from, end) = (last.base_offset, crashed.total_records());
    crashed.broker.restart();
    let mut client = RawClient::connect_or_panic(crashed.broker.addr());
    let records = read_until_corrupt(&mut client, 0);
    assert_eq!(records.len() as i64, damaged_from);
    assert_dense(&records, 0, "before the damage");
    let damaged = client.fetch(TOPIC, 0, damaged_from, 0, 0);
    assert_eq!(damaged.error(), ErrorCode::CorruptMessage, "{damaged:?}");
    assert_eq!(client.high_watermark(TOPIC, 0), end);
    let appended = client.produce_ok(TOPIC, 0, batch_of(&["after recovery"]));
    assert_eq!(appended, end, "no acknowledged offset is handed out again");
}
