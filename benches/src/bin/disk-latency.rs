//! `disk-latency`: the floor a durable append can reach on this disk. Writes `--records`
//! records of `--record-bytes` one at a time, each followed by fdatasync, and prints p50, p99
//! and p999 in microseconds, in the key=value line `tidelog perf` prints:
//!
//! * `append`: positional writes at the end of a file that grows (what a log does when its
//!   file is not preallocated: every fdatasync also commits the new length);
//! * `overwrite`: the same writes into a file written full of zeros (and synced) first, so the
//!   length never changes (what a preallocated segment gets).
//!
//! Usage: `disk-latency DIR append|overwrite [--records N] [--record-bytes B]`.
//! Standard library only, so it measures the disk, not a runtime.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

fn percentile(sorted: &[u64], quantile: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * quantile).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn run() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: disk-latency DIR append|overwrite [--records N] [--record-bytes B]";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let mode = args.next().ok_or(usage)?;
    let mut records: usize = 10_000;
    let mut record_bytes: usize = 1024;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(usage)?;
        let value: usize = value
            .parse()
            .map_err(|error| format!("{flag} {value}: {error}"))?;
        match flag.as_str() {
            "--records" => records = value,
            "--record-bytes" => record_bytes = value,
            _ => return Err(usage.to_string()),
        }
    }
    let path = dir.join(format!("disk-latency-{mode}.bin"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|error| format!("creating {}: {error}", path.display()))?;
    let total = records as u64 * record_bytes as u64;
    match mode.as_str() {
        "append" => {}
        "overwrite" => {
            // Real zeros, written and synced, so no write below allocates or changes the length.
            let zeros = vec![0u8; 4 << 20];
            let mut at = 0;
            while at < total {
                let chunk = zeros.len().min((total - at) as usize);
                file.write_all_at(&zeros[..chunk], at)
                    .map_err(|error| error.to_string())?;
                at += chunk as u64;
            }
            file.sync_all().map_err(|error| error.to_string())?;
        }
        _ => return Err(usage.to_string()),
    }
    let record: Vec<u8> = (0..record_bytes).map(|i| b'a' + (i % 26) as u8).collect();
    let mut micros = Vec::with_capacity(records);
    let started = Instant::now();
    for index in 0..records {
        let at = index as u64 * record_bytes as u64;
        let start = Instant::now();
        file.write_all_at(&record, at)
            .map_err(|error| error.to_string())?;
        file.sync_data().map_err(|error| error.to_string())?;
        micros.push(start.elapsed().as_micros() as u64);
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    micros.sort_unstable();
    let ms = |quantile| percentile(&micros, quantile) as f64 / 1000.0;
    Ok(format!(
        "records={records} records_per_s={:.1} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3}",
        records as f64 / elapsed.max(1e-9),
        ms(0.5),
        ms(0.99),
        ms(0.999)
    ))
}

fn main() {
    match run() {
        Ok(line) => println!("{line}"),
        Err(error) => {
            eprintln!("disk-latency: {error}");
            std::process::exit(1);
        }
    }
}
