//! Reading a compacted partition back over the native protocol: batches whose records skip
//! offsets and header-only placeholders are legal there (contract: "gaps are legal only in
//! cleaned segments"), so each batch is checked as a cleaned segment may hold it
//! (`batch::filter::validate_filtered`) instead of the producer's strict shape, and the read
//! moves by whole batches (`BatchHeader::next_offset`), as every consumer must.

use tidelog_proto::batch::filter::validate_filtered;
use tidelog_proto::batch::{BatchHeader, BatchIter, DECOMPRESSED_BYTES_MAX_DEFAULT};
use tidelog_proto::pb::ErrorCode;

use crate::raw::RawClient;
use crate::records::StoredRecord;

/// What [`read_compacted`] saw.
#[derive(Debug, Clone)]
pub struct CompactedRead {
    /// The records at or after `from`, in offset order.
    pub records: Vec<StoredRecord>,
    /// The headers of every batch served, in order (placeholders included).
    pub batches: Vec<BatchHeader>,
    pub high_watermark: i64,
}

impl CompactedRead {
    /// The records of `key`, in offset order.
    pub fn of_key(&self, key: &str) -> Vec<&StoredRecord> {
        self.records
            .iter()
            .filter(|record| record.key.as_deref() == Some(key.as_bytes()))
            .collect()
    }
}

/// Reads `topic/partition` from `from` to the high watermark with non-waiting fetches. Panics
/// if the broker reports an error, serves a malformed batch, goes backwards, or a fetch below
/// the high watermark makes no progress.
pub fn read_compacted(client: &mut RawClient, topic: &str, partition: u32, from: i64) -> CompactedRead {
    let mut read = CompactedRead {
        records: Vec::new(),
        batches: Vec::new(),
        high_watermark: 0,
    };
    let mut next = from;
    // Each fetch below the high watermark moves `next` by at least one batch; a partition in a
    // test holds far fewer batches than this.
    for _ in 0..1_000_000 {
        let result = client.fetch(topic, partition, next, 0, 0);
        assert_eq!(
            result.error(),
            ErrorCode::None,
            "fetching {topic}/{partition} at {next}: {result:?}"
        );
        read.high_watermark = result.high_watermark;
        if next >= result.high_watermark {
            return read;
        }
        let before = next;
        for batch in BatchIter::new(result.records) {
            let batch =
                batch.unwrap_or_else(|error| panic!("fetch at {before} returned a malformed batch: {error}"));
            validate_filtered(&batch, DECOMPRESSED_BYTES_MAX_DEFAULT).unwrap_or_else(|error| {
                panic!(
                    "fetch at {before} returned a bad batch {:?}: {error}",
                    batch.header()
                )
            });
            let header = *batch.header();
            assert!(
                header.next_offset() > next,
                "{topic}/{partition}: batch {header:?} served for offset {next}"
            );
            for record in batch.records() {
                let record =
                    record.unwrap_or_else(|error| panic!("fetch returned a corrupt record: {error}"));
                if record.offset >= next {
                    read.records.push(StoredRecord {
                        offset: record.offset,
                        key: record.key,
                        value: record.value,
                    });
                }
            }
            next = header.next_offset();
            read.batches.push(header);
        }
        assert!(
            next > before,
            "fetch of {topic}/{partition} at {before} returned nothing below the high watermark {}",
            read.high_watermark
        );
    }
    panic!("reading {topic}/{partition} did not reach the high watermark");
}

/// A broker config file in `dir` whose segments roll every 4 KiB and whose cleaner looks for
/// work every 100 ms, so a test's few KiB of records get cleaned within its timeout.
pub fn fast_cleaner_config(dir: &crate::TestDir) -> std::path::PathBuf {
    let path = dir.path().join("tidelogd.toml");
    let text =
        "[log]\nsegment_bytes = 4096\n\n[limits]\nbatch_bytes_max = 2048\n\n[cleaner]\nbackoff_ms = 100\n";
    std::fs::write(&path, text).expect("writing the broker config");
    path
}
