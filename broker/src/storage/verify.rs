//! `tidelogd verify`: checks every batch (header, offsets, CRC-32C) and every index entry of
//! every partition under a data directory, and says per partition what recovery would fence,
//! cut or quarantine. Strictly read-only: files are opened for reading only, nothing is
//! created, renamed or removed, and no lock is taken, so it can run beside a live broker (it
//! then sees a moment's state of files being appended to).

use std::path::{Path, PathBuf};

use super::disk::OsDisk;
use super::error::StorageError;
use super::format::{segment_file_name, FileKind, OffsetEntry, TimeEntry};
use super::inspect::{inspect, HeaderCheck, Inspection, PlannedSegment, SegmentScan, QUARANTINE_DIR_NAME};
use super::recovery::read_checkpoint;

/// Index interval passed to the scan: verify checks the entries on disk against the batches
/// rather than against a placement it cannot know (topics may override the interval).
const ANY_INDEX_INTERVAL_BYTES: u32 = u32::MAX;

/// What verify found in one partition directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionVerdict {
    /// `<topic>/<partition>`, or the directory path if it is not under `topics/`.
    pub name: String,
    pub dir: PathBuf,
    pub segments: usize,
    pub log_start_offset: i64,
    pub next_offset: i64,
    pub bytes_checked: u64,
    /// Each problem on one line: file, byte range, offsets, what is wrong.
    pub problems: Vec<String>,
    /// Worth saying but not damage (unknown files, a consumed checkpoint's state).
    pub notes: Vec<String>,
}

impl PartitionVerdict {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Every partition directory under `<data_dir>/topics/`, in name order.
///
/// # Errors
/// `Io` if the data directory or its `topics/` directory cannot be listed.
pub fn verify_data_dir(data_dir: &Path) -> Result<Vec<PartitionVerdict>, StorageError> {
    let topics = data_dir.join("topics");
    let mut verdicts = Vec::new();
    for topic in sorted_entries(&topics)? {
        let topic_dir = topics.join(&topic);
        if !topic_dir.is_dir() {
            continue;
        }
        let mut partitions: Vec<(u64, String)> = sorted_entries(&topic_dir)?
            .into_iter()
            .filter(|name| topic_dir.join(name).is_dir())
            .filter_map(|name| Some((name.parse().ok()?, name)))
            .collect();
        partitions.sort();
        for (_, partition) in partitions {
            let dir = topic_dir.join(&partition);
            let name = format!("{topic}/{partition}");
            verdicts.push(verify_partition(&dir, name));
        }
    }
    Ok(verdicts)
}

fn sorted_entries(dir: &Path) -> Result<Vec<String>, StorageError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StorageError::io("listing", dir))? {
        let entry = entry.map_err(StorageError::io("listing", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Checks one partition directory. Never fails: a file that cannot be read is a problem.
pub fn verify_partition(dir: &Path, name: String) -> PartitionVerdict {
    let mut verdict = PartitionVerdict {
        name,
        dir: dir.to_path_buf(),
        segments: 0,
        log_start_offset: 0,
        next_offset: 0,
        bytes_checked: 0,
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let checkpoint = match read_checkpoint(&OsDisk, &dir.join(super::format::CHECKPOINT_FILE_NAME)) {
        Ok(checkpoint) => checkpoint,
        Err(error) => {
            verdict.problems.push(error_line(&error));
            None
        }
    };
    // Strict: as if every roll had sealed first (`flush = always`), so a hole or a damaged
    // tail anywhere before the last segment is reported, whatever the policy was.
    match inspect(&OsDisk, dir, checkpoint, ANY_INDEX_INTERVAL_BYTES, true, true) {
        Ok(inspection) => describe(&inspection, &mut verdict),
        Err(error) => verdict.problems.push(error_line(&error)),
    }
    verdict
}

fn error_line(error: &StorageError) -> String {
    let mut line = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

fn describe(inspection: &Inspection, verdict: &mut PartitionVerdict) {
    let problems = &mut verdict.problems;
    for item in &inspection.quarantine {
        if verdict.dir.join(&item.file).exists() {
            problems.push(format!(
                "{}: does not belong here ({}); recovery moves it to {QUARANTINE_DIR_NAME}/",
                item.file, item.reason
            ));
        }
    }
    if !inspection.already_quarantined.is_empty() {
        problems.push(format!(
            "{QUARANTINE_DIR_NAME}/ holds {} file(s) an earlier recovery moved aside: {}",
            inspection.already_quarantined.len(),
            inspection.already_quarantined.join(", ")
        ));
    }
    let count = inspection.segments.len();
    for (index, planned) in inspection.segments.iter().enumerate() {
        describe_segment(planned, problems);
        let closed = index + 1 < count || inspection.new_active_base.is_some();
        check_keys_file(&verdict.dir, planned, closed, problems, &mut verdict.notes);
    }
    if let Some(base) = inspection.new_active_base {
        problems.push(format!(
            "recovery continues the log in a new segment at offset {base}"
        ));
    }
    if !inspection.cleaner_files.is_empty() {
        let committed = inspection
            .cleaner_files
            .iter()
            .any(|name| name == super::cleaner::swap::SWAP_JOURNAL_FILE_NAME);
        verdict.notes.push(format!(
            "an interrupted cleaner swap ({}): the next open {}",
            inspection.cleaner_files.join(", "),
            if committed {
                "completes it (the cleaned segment replaces the ones it names)"
            } else {
                "removes these files (the swap never committed; the old segments stand)"
            }
        ));
    }
    for name in &inspection.unknown_files {
        verdict
            .notes
            .push(format!("{name}: not a Tidelog file (ignored)"));
    }
    if let Some(reason) = &inspection.checkpoint_rejected {
        verdict
            .notes
            .push(format!("clean-shutdown checkpoint not usable: {reason}"));
    }
    verdict.segments = inspection.segments.len();
    verdict.log_start_offset = inspection
        .segments
        .first()
        .map_or(0, |segment| segment.scan.base_offset);
    verdict.next_offset = inspection
        .segments
        .last()
        .map_or(inspection.offsets_floor, |segment| segment.scan.next_offset)
        .max(inspection.new_active_base.unwrap_or(0));
    verdict.bytes_checked = inspection.bytes_scanned;
}

fn describe_segment(planned: &PlannedSegment, problems: &mut Vec<String>) {
    let scan = &planned.scan;
    let file = segment_file_name(scan.base_offset, FileKind::Log);
    if let HeaderCheck::Damaged(reason) = &scan.header {
        problems.push(format!("{file}: bytes 0..32 (file header) damaged: {reason}"));
    }
    for fence in &planned.fences {
        problems.push(format!(
            "{file}: bytes {}..{}, offsets {}..{} damaged: {}",
            fence.from_bytes, fence.to_bytes, fence.first_offset, fence.end_offset, fence.reason
        ));
    }
    if let Some(reason) = &planned.truncate {
        problems.push(format!(
            "{file}: bytes {}..{} after offset {} are not whole batches (an unsynced tail recovery cuts): {reason}",
            scan.valid_end, scan.file_bytes, scan.next_offset
        ));
    }
    match &scan.indexes {
        Err(reason) => problems.push(format!(
            "{file}: indexes unusable (recovery rebuilds them): {reason}"
        )),
        Ok((offsets, times)) => check_index_entries(scan, &file, offsets, times, problems),
    }
}

/// A closed segment's `.keys` file, if present, must describe it exactly: header, summary,
/// every block's CRC, entry order, and every record at a batch that holds its offset. A
/// missing one is only a note (it is derived; the broker writes or rebuilds it), and so is an
/// active segment's that is not current (a clean close writes one; the next open uses it only
/// if it matches exactly, and scans the segment otherwise).
fn check_keys_file(
    dir: &Path,
    planned: &PlannedSegment,
    closed: bool,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let scan = &planned.scan;
    let name = segment_file_name(scan.base_offset, FileKind::KeyIndex);
    let bytes = match std::fs::read(dir.join(&name)) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if closed && scan.next_offset > scan.base_offset {
                notes.push(format!("{name}: absent (derived; the broker rebuilds it)"));
            }
            return;
        }
        Err(error) => {
            problems.push(format!("{name}: cannot be read: {error}"));
            return;
        }
    };
    let expect = super::key_index::Expect {
        base_offset: scan.base_offset,
        next_offset: scan.next_offset,
        log_bytes: scan.valid_end,
        hash: super::key_index::KeyHash::DEFAULT,
    };
    let starts = scan.batch_starts.as_deref().unwrap_or(&[]);
    let holds = |relative_offset: u32, position: u32| {
        let offset = scan.base_offset + i64::from(relative_offset);
        let Ok(index) = starts.binary_search_by_key(&u64::from(position), |(at, _, _)| *at) else {
            return false;
        };
        let next_base = starts
            .get(index + 1)
            .map_or(scan.next_offset, |(_, base, _)| *base);
        (starts[index].1..next_base).contains(&offset)
    };
    match super::key_index::verify_bytes(&bytes, expect, &holds) {
        Ok(_) => {}
        // The active segment's file is only a shortcut for the next open: stale once appends
        // follow it, and never trusted then.
        Err(reason) if !closed => notes.push(format!(
            "{name}: beside the active segment and not current (the broker scans the segment instead): {reason}"
        )),
        Err(reason) => problems.push(format!(
            "{name}: per-key index unusable (derived data: the broker rebuilds it from the log): {reason}"
        )),
    }
}

/// Every entry must name a valid batch: its position and base offset, and for the time index
/// the running maximum timestamp up to it.
fn check_index_entries(
    scan: &SegmentScan,
    file: &str,
    offsets: &[OffsetEntry],
    times: &[TimeEntry],
    problems: &mut Vec<String>,
) {
    let Some(starts) = &scan.batch_starts else {
        return;
    };
    let batch_at = |position: u32| {
        starts
            .binary_search_by_key(&u64::from(position), |(at, _, _)| *at)
            .ok()
            .map(|index| starts[index])
    };
    let index_file = segment_file_name(scan.base_offset, FileKind::OffsetIndex);
    for (index, entry) in offsets.iter().enumerate() {
        let expected = scan.base_offset + i64::from(entry.relative_offset);
        match batch_at(entry.position) {
            Some((_, base, _)) if base == expected => {}
            _ => problems.push(format!(
                "{index_file}: entry {index} says offset {expected} is at byte {} of {file}, which holds no such batch",
                entry.position
            )),
        }
    }
    let time_file = segment_file_name(scan.base_offset, FileKind::TimeIndex);
    for (index, entry) in times.iter().enumerate() {
        let expected = scan.base_offset + i64::from(entry.relative_offset);
        match batch_at(entry.position) {
            Some((_, base, running_max)) if base == expected && running_max == entry.timestamp => {}
            _ => problems.push(format!(
                "{time_file}: entry {index} (timestamp {}, offset {expected}, byte {}) does not match {file}",
                entry.timestamp, entry.position
            )),
        }
    }
}
