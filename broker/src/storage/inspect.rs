//! Read-only inspection of a partition directory: which files belong, what every batch of
//! every segment holds, where data is damaged, and what recovery must therefore do. Recovery
//! (`recovery.rs`) applies the plan; `tidelogd verify` (`verify.rs`) only reports it. Nothing
//! here writes, creates, renames or deletes anything.
//!
//! The rules (docs/storage-format.md, "Recovery"): only the tail of the last segment, when
//! nothing says it was synced, may be cut. Every other damaged byte range is *fenced*: kept on
//! disk, reported, and refused to readers with its offset range. Files that do not belong are
//! moved to quarantine, and every offset the directory shows was assigned stays assigned.

use std::collections::BTreeMap;
use std::path::Path;

use super::disk::Disk;
use super::error::StorageError;
use super::format::{
    parse_segment_file_name, segment_file_name, Checkpoint, FileKind, CHECKPOINT_FILE_NAME, TEMP_SUFFIX,
};
use super::scan::scan_segment;
pub(crate) use super::scan::{HeaderCheck, SegmentScan};

/// Name of the folder, inside a partition directory, that holds files recovery moved aside.
pub const QUARANTINE_DIR_NAME: &str = "quarantine";

/// Extensions of the files Tidelog keeps in a partition directory: a name ending in one of
/// these that does not parse is not ours and is quarantined rather than ignored.
const OUR_EXTENSIONS: [&str; 5] = [".log", ".index", ".timeindex", ".snapshot", ".keys"];

/// A range of a segment that holds no batch a reader may be given: damaged bytes, or offsets
/// missing from the directory. Kept on disk, reported at ERROR, refused to readers with
/// `StorageError::CorruptRange`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub segment_base_offset: i64,
    /// Bytes of the segment's data file that hold no servable batch; empty for offsets that
    /// are missing without any damaged bytes (a lost segment).
    pub from_bytes: u64,
    pub to_bytes: u64,
    /// Offsets that cannot be served: `first_offset..end_offset`.
    pub first_offset: i64,
    pub end_offset: i64,
    pub reason: String,
}

impl Fence {
    pub fn contains_offset(&self, offset: i64) -> bool {
        (self.first_offset..self.end_offset).contains(&offset)
    }
}

/// A file moved (or, by verify, to be moved) into the quarantine folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub file: String,
    pub reason: String,
}

/// A segment recovery keeps, with what it must do to it.
#[derive(Debug, Clone)]
pub(crate) struct PlannedSegment {
    pub scan: SegmentScan,
    /// Cut the data file from `valid_end` on: the unsynced tail of the last segment.
    pub truncate: Option<String>,
    /// Fenced ranges, offset order (damage inside, then a damaged tail or missing offsets).
    pub fences: Vec<Fence>,
}

impl PlannedSegment {
    /// Offsets this segment accounts for, fences included.
    pub fn end_offset(&self) -> i64 {
        self.fences
            .iter()
            .map(|fence| fence.end_offset)
            .fold(self.scan.next_offset, i64::max)
    }
}

/// The plan for one partition directory.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inspection {
    /// `*.tmp` files, written before an atomic rename: leftovers of an interrupted write.
    pub temp_files: Vec<String>,
    pub quarantine: Vec<Quarantined>,
    /// Files already in the quarantine folder (from an earlier open).
    pub already_quarantined: Vec<String>,
    pub unknown_files: Vec<String>,
    /// The cleaner's swap journal and `*.cleaned` files (an interrupted swap).
    pub cleaner_files: Vec<String>,
    /// Kept segments, oldest first; the last is the active one unless `new_active_base`.
    pub segments: Vec<PlannedSegment>,
    /// A new, empty active segment must be created here: the last segment is damaged where it
    /// may not be cut, or the directory shows offsets past its end were assigned.
    pub new_active_base: Option<i64>,
    /// The next offset must not be below this: the highest offset the directory shows was
    /// assigned (segment names, quarantined files, snapshots, the checkpoint).
    pub offsets_floor: i64,
    /// The checkpoint matched the directory exactly: a clean shutdown.
    pub clean_shutdown: bool,
    pub checkpoint_rejected: Option<String>,
    pub bytes_scanned: u64,
}

/// Inspects `dir` without changing anything. `checkpoint` is the clean-shutdown checkpoint
/// if one was present: `Ok` decoded, `Err` why it is unusable.
///
/// `rolls_seal_first` (the log runs under `flush = always`): a roll seals the old segment
/// before the next one takes any append, so only the last segment can hold unsynced data (and
/// the one before it while the last is still empty).
pub(crate) fn inspect(
    disk: &dyn Disk,
    dir: &Path,
    checkpoint: Option<Result<Checkpoint, String>>,
    index_interval_bytes: u32,
    rolls_seal_first: bool,
    collect_batch_starts: bool,
) -> Result<Inspection, StorageError> {
    let mut inspection = Inspection::default();
    let names = disk.list(dir).map_err(StorageError::io("listing", dir))?;
    let mut files: BTreeMap<i64, [bool; 4]> = BTreeMap::new();
    // Offsets the directory shows were assigned, besides the segments' own batches.
    let mut evidence: i64 = 0;
    for name in names {
        if name.ends_with(TEMP_SUFFIX) {
            inspection.temp_files.push(name);
        } else if name == CHECKPOINT_FILE_NAME
            || name == QUARANTINE_DIR_NAME
            || name == super::log::LOG_START_FILE_NAME
            || name == super::stream_marks::STREAM_MARKS_FILE_NAME
            || name == super::cleaner::checkpoint::CLEANER_CHECKPOINT_FILE_NAME
        {
        } else if super::producer_state::parse_snapshot_file_name(&name).is_some() {
            // Producer state snapshots: `producer_state::rebuild` checks them after recovery.
            // Not evidence of assigned offsets: written unsynced at rolls, whose segment names
            // say as much.
        } else if let Some((base_offset, kind)) = parse_segment_file_name(&name) {
            let slot = match kind {
                FileKind::Log => 0,
                FileKind::OffsetIndex => 1,
                FileKind::TimeIndex => 2,
                FileKind::KeyIndex => 3,
            };
            files.entry(base_offset).or_default()[slot] = true;
        } else if super::cleaner::swap::is_cleaner_file(&name) {
            // The cleaner's swap journal and aside files: the open completes or removes them
            // before recovery inspects (`cleaner::swap::recover_at_open`); only a read-only
            // verify sees them.
            inspection.cleaner_files.push(name);
        } else if OUR_EXTENSIONS.iter().any(|extension| name.ends_with(extension)) {
            inspection.quarantine.push(Quarantined {
                reason: "named like a Tidelog file but not a name Tidelog writes".to_string(),
                file: name,
            });
        } else {
            inspection.unknown_files.push(name);
        }
    }
    let quarantine_dir = dir.join(QUARANTINE_DIR_NAME);
    if let Ok(names) = disk.list(&quarantine_dir) {
        inspection.already_quarantined = names;
    }

    let checkpoint = match checkpoint {
        Some(Ok(found)) => {
            // Written at a clean close after everything was synced: these offsets were assigned.
            evidence = evidence.max(found.next_offset);
            Some(found)
        }
        Some(Err(reason)) => {
            inspection.checkpoint_rejected = Some(reason);
            None
        }
        None => None,
    };

    let mut scans = Vec::new();
    for (base_offset, [log, offset_index, time_index, key_index]) in &files {
        if *log {
            let scan = scan_segment(
                disk,
                dir,
                *base_offset,
                index_interval_bytes,
                collect_batch_starts,
            )?;
            inspection.bytes_scanned += scan.bytes_scanned;
            scans.push(scan);
            continue;
        }
        // Index files without a data file: an interrupted deletion, a roll that crashed
        // before its names were synced, or a stray. Derived data, but never deleted on a
        // guess; not evidence of assigned offsets (no record was ever in them).
        for (present, kind) in [
            (offset_index, FileKind::OffsetIndex),
            (time_index, FileKind::TimeIndex),
            (key_index, FileKind::KeyIndex),
        ] {
            if *present {
                inspection.quarantine.push(Quarantined {
                    file: segment_file_name(*base_offset, kind),
                    reason: "index file without a data file".to_string(),
                });
            }
        }
    }

    resolve_layout(
        &mut inspection,
        scans,
        checkpoint.as_ref(),
        evidence,
        rolls_seal_first,
    );
    Ok(inspection)
}

/// Decides which segments are kept, what is fenced, cut or quarantined, and where appends
/// continue.
fn resolve_layout(
    inspection: &mut Inspection,
    scans: Vec<SegmentScan>,
    checkpoint: Option<&Checkpoint>,
    mut evidence: i64,
    rolls_seal_first: bool,
) {
    let count = scans.len();
    // First: files that are not segments of this log at all.
    let mut kept: Vec<SegmentScan> = Vec::new();
    for (index, scan) in scans.into_iter().enumerate() {
        let is_last = index + 1 == count;
        let previous_end = kept.last().map(|previous| previous.next_offset);
        let overlaps = previous_end.is_some_and(|end| scan.base_offset < end);
        // An empty file (or a torn header and nothing else) proves nothing; a header intact
        // and naming its own base offset is one only Tidelog writes.
        let holds_nothing = scan.holds_nothing();
        let intact = matches!(scan.header, HeaderCheck::Intact { .. });
        let emptied_first_segment = kept.is_empty() && scan.base_offset == 0;
        let stray_reason = if overlaps {
            Some(format!(
                "starts at {}, inside the previous segment (which holds offsets up to {})",
                scan.base_offset,
                previous_end.unwrap_or_default()
            ))
        } else if scan.is_garbage() {
            Some("neither its header nor any of its bytes belong to a segment".to_string())
        } else if holds_nothing && !intact && !is_last && !emptied_first_segment {
            // (At offset 0 it can only be the partition's first segment, emptied: it is kept
            // with its offsets fenced, so a consumer reading from the start is told.)
            Some("holds no segment header and no batch, but other segments follow it".to_string())
        } else if holds_nothing && !intact && previous_end.is_some_and(|end| scan.base_offset > end) {
            // An empty last file is a roll that crashed creating it, and a roll creates it
            // exactly where the previous segment ends (or where the unsynced tail the crash
            // took back ended). Anywhere else it explains nothing the directory shows.
            let previous_unsynced =
                !rolls_seal_first && kept.last().is_some_and(|previous| previous.unsynced_candidate());
            let explained = kept.last().map_or(0, scan_claimed_end).max(evidence);
            (!previous_unsynced && scan.base_offset > explained).then(|| {
                format!(
                    "holds no segment header and no batch, and starts at {}, past the end of the log ({})",
                    scan.base_offset,
                    previous_end.unwrap_or_default()
                )
            })
        } else {
            None
        };
        if let Some(reason) = stray_reason {
            // Its offsets were assigned as far as the disk shows; never reuse them.
            evidence = evidence.max(scan.base_offset).max(scan.next_offset);
            quarantine_segment(inspection, scan.base_offset, &reason);
            continue;
        }
        kept.push(scan);
    }

    // Then the unsynced suffix: the trailing run of segments whose intact header says they were
    // never sealed (and an empty last file, a crashed roll). Under `flush = always` only the
    // active segment; under `interval` and `never` also closed segments the sealer had not
    // reached. Everything before it was synced. Inside it, data lost to a crash is lost from
    // some point on: the log ends at the first loss, and later unsynced segments (written
    // after what was lost) go to quarantine; their offsets were never synced and are reused.
    let mut suffix_start = kept.len();
    while suffix_start > 0 {
        let candidate = &kept[suffix_start - 1];
        let empty_last = suffix_start == kept.len() && candidate.holds_nothing();
        if !(candidate.unsynced_candidate() || empty_last) {
            break;
        }
        suffix_start -= 1;
    }
    // A clean close synced and sealed everything, and under `always` every roll seals the old
    // segment before the new one takes appends: nothing before the last segment is unsynced.
    if rolls_seal_first || checkpoint.is_some_and(|found| found.segment_count as usize == kept.len()) {
        let mut start = kept.len().saturating_sub(1);
        // Except a roll that crashed after creating the new (still empty) segment and before
        // sealing the old one: the old one's tail may still be unsynced.
        if rolls_seal_first
            && start > 0
            && kept[start].holds_nothing()
            && kept[start - 1].unsynced_candidate()
        {
            start -= 1;
        }
        suffix_start = suffix_start.max(start);
    }
    let mut cut_at = None;
    for index in suffix_start..kept.len().saturating_sub(1) {
        let lost_tail = kept[index].damaged_tail().is_some();
        let gap = kept[index + 1].base_offset > kept[index].next_offset;
        if lost_tail || gap {
            cut_at = Some(index);
            break;
        }
    }
    if let Some(index) = cut_at {
        let reason = format!(
            "unsynced segment after offset {}, where a crash took back unsynced data",
            kept[index].next_offset
        );
        for later in kept.drain(index + 1..) {
            quarantine_segment(inspection, later.base_offset, &reason);
        }
    }

    let mut planned: Vec<PlannedSegment> = Vec::with_capacity(kept.len());
    for scan in kept {
        if let Some(previous) = planned.last_mut() {
            // Followed by a segment and not cut: a damaged tail or a hole is fenced.
            fence_until(previous, scan.base_offset);
        }
        let mut fences = scan.damage.clone();
        fences.sort_by_key(|fence| fence.first_offset);
        planned.push(PlannedSegment {
            scan,
            truncate: None,
            fences,
        });
    }
    inspection.offsets_floor = evidence;
    let count = planned.len();
    let Some(last) = planned.last_mut() else {
        inspection.segments = planned;
        return;
    };
    if let Some(found) = checkpoint {
        let matches = found.segment_count as usize == count
            && found.active_base_offset == last.scan.base_offset
            && found.next_offset == last.scan.next_offset
            && found.log_bytes == last.scan.valid_end
            && last.scan.damaged_tail().is_none();
        if matches {
            inspection.clean_shutdown = true;
        } else if inspection.checkpoint_rejected.is_none() {
            inspection.checkpoint_rejected = Some(format!(
                "checkpoint describes {} segments with the active one at {} ending at offset {} (byte {}); the directory has {} with the last at {} ending at offset {} (byte {})",
                found.segment_count,
                found.active_base_offset,
                found.next_offset,
                found.log_bytes,
                count,
                last.scan.base_offset,
                last.scan.next_offset,
                last.scan.valid_end
            ));
        }
    }
    let mut new_active_base = None;
    if let Some(tail) = last.scan.damaged_tail().cloned() {
        // The last segment's tail may be cut only if nothing says it was synced: a sealed
        // header, a header we cannot read (it is rewritten only once data is synced), or a
        // clean-shutdown checkpoint covering those bytes.
        let synced_by_checkpoint = checkpoint.is_some_and(|found| {
            found.active_base_offset == last.scan.base_offset && found.log_bytes > tail.from_bytes
        });
        if last.scan.unsynced_candidate() && !synced_by_checkpoint {
            last.truncate = Some(tail.reason);
        } else {
            // Appending after it would overwrite the damaged bytes: continue in a new segment.
            new_active_base = Some(claimed_end(last));
        }
    }
    if evidence > new_active_base.unwrap_or_else(|| last.end_offset()) {
        new_active_base = Some(evidence);
    }
    if let Some(base) = new_active_base {
        fence_until(last, base);
    }
    inspection.new_active_base = new_active_base;
    inspection.segments = planned;
}

fn quarantine_segment(inspection: &mut Inspection, base_offset: i64, reason: &str) {
    for kind in [
        FileKind::Log,
        FileKind::OffsetIndex,
        FileKind::TimeIndex,
        FileKind::KeyIndex,
    ] {
        inspection.quarantine.push(Quarantined {
            file: segment_file_name(base_offset, kind),
            reason: reason.to_string(),
        });
    }
}

fn scan_claimed_end(scan: &SegmentScan) -> i64 {
    let mut end = scan.next_offset;
    if let Some(tail) = scan.damaged_tail() {
        end = end.max(scan.next_offset.saturating_add(1));
        if let Some(claimed) = tail.claimed_end_offset {
            end = end.max(claimed);
        }
    }
    end
}

/// The offset after everything `segment` shows was assigned, damaged tail included: at least
/// one offset past its valid batches when its tail is damaged, since a damaged batch held at
/// least one record.
fn claimed_end(segment: &PlannedSegment) -> i64 {
    let mut end = segment.end_offset();
    if let Some(tail) = segment.scan.damaged_tail() {
        end = end.max(segment.scan.next_offset.saturating_add(1));
        if let Some(claimed) = tail.claimed_end_offset {
            end = end.max(claimed);
        }
    }
    end
}

/// Fences whatever lies between `segment`'s last valid batch and `end`: its damaged tail
/// bytes (if any) and the offsets up to `end`. Adds nothing when there is neither.
fn fence_until(segment: &mut PlannedSegment, end: i64) {
    let scan = &segment.scan;
    // A tail that is cut is no longer there to fence.
    let tail = scan.damaged_tail().filter(|_| segment.truncate.is_none());
    let first_offset = segment.end_offset();
    if tail.is_none() && end <= first_offset {
        return;
    }
    let reason = match tail {
        Some(tail) => format!("damaged after its last valid batch: {}", tail.reason),
        None => "offsets missing: no segment holds them".to_string(),
    };
    let (from_bytes, to_bytes) = match tail {
        Some(tail) => (tail.from_bytes, scan.file_bytes),
        None => (scan.valid_end, scan.valid_end),
    };
    segment.fences.push(Fence {
        segment_base_offset: scan.base_offset,
        from_bytes,
        to_bytes,
        first_offset,
        end_offset: end.max(first_offset),
        reason,
    });
}
