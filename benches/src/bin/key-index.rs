//! `key-index`: the per-key index's figures (issue 8 §6) at the storage level, no network.
//!
//! * `key-index DIR load --records N --keys K`: appends N keyed records of about 100 bytes
//!   (16-byte keys, record i has key i mod K, batches of 1000 as a producer sends them) under
//!   `flush = never`, then syncs (every closed segment's `.keys` written). Prints the append
//!   rate. `--keys 0`: the same records without keys (what the index costs a keyed append).
//! * `key-index DIR measure [--reads R]`: opens the partition in a fresh process and prints the
//!   index's own accounting (resident bytes, `.keys` bytes), the process RSS, then R reads of a
//!   random stream (`read_stream` forward from 0, limit 100) and R `stream_last_offset`s with
//!   p50/p99/max, beside one scan of the whole partition for one key (every batch read and
//!   every record's key compared: what a reader without the index does).
//! * `key-index DIR rebuild`: deletes every `.keys` file, reopens (the active segment's table
//!   is rebuilt in the open), and rebuilds every closed segment's file; prints the time and
//!   the log bytes per second.
//!
//! Keep DIR under /tmp/keyindex-* and delete it afterwards. Build it optimized
//! (`cargo build --release -p tidelog-benches --bin key-index`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use tidelog_broker::storage::{Direction, FlushPolicy, LogConfig, PartitionLog};
use tidelog_proto::batch::{BatchIter, NewRecord, RecordBatch, RecordBatchBuilder};

const BATCH_RECORDS: u64 = 1000;
/// 16-byte key + 70-byte value + record framing: about 100 bytes a record.
const VALUE_BYTES: usize = 70;

fn key(index: u64) -> Vec<u8> {
    format!("entity-{index:09}").into_bytes()
}

fn config() -> LogConfig {
    LogConfig {
        flush: FlushPolicy::Never,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn percentile(sorted: &[u128], quantile: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * quantile).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn load(dir: &Path, records: u64, keys: u64) -> Result<String, String> {
    let keyless = keys == 0;
    let keys = keys.max(1);
    let log = PartitionLog::open(dir, config()).map_err(|error| error.to_string())?;
    // Keyless records carry the key's 16 bytes in the value: the same record sizes.
    let value = Bytes::from(vec![b'v'; VALUE_BYTES + if keyless { 16 } else { 0 }]);
    let started = Instant::now();
    let mut appended = 0u64;
    let mut build_nanos = 0u128;
    while appended < records {
        let count = BATCH_RECORDS.min(records - appended);
        let building = Instant::now();
        let mut builder = RecordBatchBuilder::new();
        for index in appended..appended + count {
            builder.push(&NewRecord {
                timestamp: 1_700_000_000_000 + index as i64,
                key: (!keyless).then(|| Bytes::from(key(index % keys))),
                value: Some(value.clone()),
                headers: Vec::new(),
            });
        }
        let bytes = builder.build().ok_or("empty batch")?;
        let (batch, _) = RecordBatch::split_first(&bytes).map_err(|error| error.to_string())?;
        build_nanos += building.elapsed().as_nanos();
        log.append(std::slice::from_ref(&batch), 1_700_000_000_000)
            .map_err(|error| error.to_string())?;
        appended += count;
    }
    let append_seconds = started.elapsed().as_secs_f64() - build_nanos as f64 / 1e9;
    log.sync().map_err(|error| error.to_string())?;
    log.flush_key_index().map_err(|error| error.to_string())?;
    log.close().map_err(|error| error.to_string())?;
    Ok(format!(
        "records={records} keys={keys} segments={} log_bytes={} append_records_per_s={:.0}",
        log.segment_count(),
        log.size_bytes(),
        records as f64 / append_seconds
    ))
}

fn measure(dir: &Path, reads: usize) -> Result<String, String> {
    let (rss_before, _) = rss_kib();
    let opening = Instant::now();
    let log = PartitionLog::open(dir, config()).map_err(|error| error.to_string())?;
    let open_ms = opening.elapsed().as_millis();
    let (rss_open, _) = rss_kib();
    let (resident, disk) = log.key_index_bytes();
    let end = log.high_watermark();
    // Keys present: record i has key i mod K; K is the number of distinct keys the load used,
    // found from the last record's stream (its last offset + 1 >= K).
    let keys = key_count(&log, end)?;
    let mut rng = Rng(42);
    let mut read_nanos = Vec::with_capacity(reads);
    let mut last_nanos = Vec::with_capacity(reads);
    let mut events = 0usize;
    for _ in 0..reads {
        let index = rng.next() % keys;
        let wanted = key(index);
        let started = Instant::now();
        let read = log
            .read_stream(&wanted, 0, Direction::Forward, 100, 1 << 20)
            .map_err(|error| error.to_string())?;
        read_nanos.push(started.elapsed().as_nanos());
        events += read.records.len();
        if read.records.first().map(|record| record.offset) != Some(index as i64) {
            return Err(format!(
                "stream {index} starts at {:?}",
                read.records.first().map(|record| record.offset)
            ));
        }
        let started = Instant::now();
        let last = log
            .stream_last_offset(&wanted)
            .map_err(|error| error.to_string())?;
        last_nanos.push(started.elapsed().as_nanos());
        if last.is_none() {
            return Err(format!("stream {index} has no last offset"));
        }
    }
    read_nanos.sort_unstable();
    last_nanos.sort_unstable();
    // One scan of the whole partition for one key, as a reader without the index does it.
    let wanted = key(rng.next() % keys);
    let scanning = Instant::now();
    let mut offset = log.log_start_offset();
    let mut found = 0usize;
    let mut scanned = 0u64;
    while offset < end {
        let outcome = log.read(offset, 1 << 20).map_err(|error| error.to_string())?;
        for batch in BatchIter::new(outcome.records) {
            let batch = batch.map_err(|error| error.to_string())?;
            offset = batch.header().next_offset();
            for record in batch.records() {
                let record = record.map_err(|error| error.to_string())?;
                scanned += 1;
                if record.key.as_deref() == Some(&wanted[..]) {
                    found += 1;
                }
            }
        }
    }
    let scan_ms = scanning.elapsed().as_millis();
    let (rss_after, peak) = rss_kib();
    Ok(format!(
        "records={end} keys={keys} segments={} open_ms={open_ms} index_resident_bytes={resident} index_disk_bytes={disk} \
         rss_before_open_kib={rss_before} rss_after_open_kib={rss_open} rss_after_reads_kib={rss_after} rss_peak_kib={peak}\n\
         read_stream_100: reads={reads} events={events} p50_us={:.1} p99_us={:.1} max_us={:.1}\n\
         stream_last_offset: p50_us={:.1} p99_us={:.1} max_us={:.1}\n\
         scan_for_one_key: records_scanned={scanned} found={found} ms={scan_ms}",
        log.segment_count(),
        percentile(&read_nanos, 0.5) as f64 / 1e3,
        percentile(&read_nanos, 0.99) as f64 / 1e3,
        read_nanos.last().copied().unwrap_or(0) as f64 / 1e3,
        percentile(&last_nanos, 0.5) as f64 / 1e3,
        percentile(&last_nanos, 0.99) as f64 / 1e3,
        last_nanos.last().copied().unwrap_or(0) as f64 / 1e3,
    ))
}

/// The number of distinct keys of a partition `load` wrote: the key of the last record is
/// (N - 1) mod K; keys below K all exist, K itself does not.
fn key_count(log: &PartitionLog, end: i64) -> Result<u64, String> {
    let (mut low, mut high) = (1u64, end.max(1) as u64);
    // Binary search on "key k exists"; bounded by 64 steps.
    for _ in 0..64 {
        if low >= high {
            break;
        }
        let middle = low + (high - low) / 2;
        let exists = log
            .stream_last_offset(&key(middle))
            .map_err(|error| error.to_string())?
            .is_some();
        if exists {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    Ok(low)
}

fn rebuild(dir: &Path) -> Result<String, String> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(|error| error.to_string())? {
        let path = entry.map_err(|error| error.to_string())?.path();
        if path.extension().is_some_and(|extension| extension == "keys") {
            std::fs::remove_file(&path).map_err(|error| error.to_string())?;
            removed += 1;
        }
    }
    let started = Instant::now();
    let log = PartitionLog::open(dir, config()).map_err(|error| error.to_string())?;
    let open_ms = started.elapsed().as_millis();
    log.flush_key_index().map_err(|error| error.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes = log.size_bytes();
    let (_, disk) = log.key_index_bytes();
    log.close().map_err(|error| error.to_string())?;
    Ok(format!(
        "keys_files_removed={removed} log_bytes={bytes} open_ms={open_ms} rebuild_total_ms={:.0} seconds_per_gib={:.2} index_disk_bytes={disk}",
        seconds * 1e3,
        seconds / (bytes as f64 / f64::from(1u32 << 30))
    ))
}

fn run() -> Result<String, String> {
    let usage = "usage: key-index DIR load|measure|rebuild [--records N] [--keys K] [--reads R]";
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let mode = args.next().ok_or(usage)?;
    let (mut records, mut keys, mut reads) = (10_000_000u64, 10_000_000u64, 2_000usize);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(usage)?;
        let value: u64 = value
            .parse()
            .map_err(|error| format!("{flag} {value}: {error}"))?;
        match flag.as_str() {
            "--records" => records = value,
            "--keys" => keys = value,
            "--reads" => reads = value as usize,
            _ => return Err(usage.to_string()),
        }
    }
    match mode.as_str() {
        "load" => load(&dir, records, keys),
        "measure" => measure(&dir, reads),
        "rebuild" => rebuild(&dir),
        _ => Err(usage.to_string()),
    }
}

fn main() {
    match run() {
        Ok(line) => println!("{line}"),
        Err(error) => {
            eprintln!("key-index: {error}");
            std::process::exit(1);
        }
    }
}
