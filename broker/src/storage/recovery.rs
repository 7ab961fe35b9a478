//! Opening a partition directory: consume the clean-shutdown checkpoint, let `inspect` decide
//! (read-only) what every file holds, then apply its plan: quarantine files that do not belong,
//! cut only the unsynced tail of the last segment, fence every other damaged or missing range,
//! rebuild indexes, and continue appending past every offset the directory shows. Recovery
//! never deletes a segment.

use std::io;
use std::path::Path;

use super::disk::{read_exact_at, Disk, SegmentFile};
use super::error::StorageError;
use super::format::{
    encode_file_header, encode_file_header_with_flags, Checkpoint, FileKind, OffsetEntry, TimeEntry,
    CHECKPOINT_BYTES, CHECKPOINT_FILE_NAME, LOG_FLAG_CLEANED,
};
use super::inspect::{inspect, HeaderCheck, Inspection, PlannedSegment, QUARANTINE_DIR_NAME};
pub use super::inspect::{Fence, Quarantined};
use super::segment::{Segment, SegmentPaths, SegmentState, NO_TIMESTAMP};

/// How many `<name>.N` variants are tried when a quarantined name is already taken.
const QUARANTINE_NAME_ATTEMPTS_MAX: u32 = 10_000;

/// What recovery found and did when a partition log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// A valid clean-shutdown checkpoint matched the files exactly.
    pub clean_shutdown: bool,
    /// Why a checkpoint file that was present was not trusted.
    pub checkpoint_rejected: Option<String>,
    pub segments: usize,
    pub log_start_offset: i64,
    pub next_offset: i64,
    /// Batch bytes read and CRC-checked.
    pub bytes_scanned: u64,
    /// Unsynced tails cut off the last segment.
    pub truncations: Vec<Truncation>,
    pub index_rebuilds: Vec<IndexRebuild>,
    /// Segments whose data file header was damaged and rewritten from the file name.
    pub headers_repaired: Vec<i64>,
    /// Damaged or missing ranges kept on disk and refused to readers.
    pub fenced: Vec<Fence>,
    /// Files moved into `<partition>/quarantine/`.
    pub quarantined: Vec<Quarantined>,
    /// A new active segment recovery created to continue after damage or after offsets the
    /// directory shows were assigned.
    pub continued_at: Option<i64>,
    /// Leftover temporary files deleted.
    pub files_removed: Vec<String>,
}

impl RecoveryReport {
    /// True when recovery found nothing wrong and changed nothing on disk but the checkpoint
    /// it consumed.
    pub fn is_clean(&self) -> bool {
        self.truncations.is_empty()
            && self.index_rebuilds.is_empty()
            && self.headers_repaired.is_empty()
            && self.fenced.is_empty()
            && self.quarantined.is_empty()
            && self.continued_at.is_none()
    }
}

/// Bytes cut off the end of the last segment's data file: its unsynced tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub segment_base_offset: i64,
    pub from_bytes: u64,
    pub to_bytes: u64,
    /// First offset lost (the log's next offset after the cut).
    pub next_offset: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRebuild {
    pub segment_base_offset: i64,
    pub reason: String,
}

/// The recovered segments, oldest first; the last is the active one. Never empty.
/// `rolls_seal_first`: the log runs under `flush = always` (see `inspect`).
pub(crate) fn recover(
    disk: &dyn Disk,
    dir: &Path,
    index_interval_bytes: u32,
    rolls_seal_first: bool,
) -> Result<(Vec<Segment>, RecoveryReport), StorageError> {
    disk.create_dir_all(dir)
        .map_err(StorageError::io("creating", dir))?;
    let mut report = RecoveryReport::default();
    let checkpoint_path = dir.join(CHECKPOINT_FILE_NAME);
    let checkpoint = read_checkpoint(disk, &checkpoint_path)?;
    if checkpoint.is_some() {
        // Consumed now, before anything can change: a crash from here on must not be mistaken
        // for a clean shutdown.
        remove_if_present(disk, &checkpoint_path)?;
    }
    let inspection = inspect(
        disk,
        dir,
        checkpoint,
        index_interval_bytes,
        rolls_seal_first,
        false,
    )?;
    report.clean_shutdown = inspection.clean_shutdown;
    report.checkpoint_rejected = inspection.checkpoint_rejected.clone();
    report.bytes_scanned = inspection.bytes_scanned;
    for name in &inspection.temp_files {
        remove_if_present(disk, &dir.join(name))?;
        report.files_removed.push(name.clone());
    }
    for name in &inspection.unknown_files {
        tracing::warn!(dir = %dir.display(), file = %name, "ignoring unknown file in partition directory");
    }
    quarantine(disk, dir, &inspection, &mut report)?;

    let mut segments = Vec::with_capacity(inspection.segments.len() + 1);
    let count = inspection.segments.len();
    for (index, planned) in inspection.segments.iter().enumerate() {
        let closed = index + 1 < count || inspection.new_active_base.is_some();
        segments.push(open_segment(disk, dir, planned, closed, &mut report)?);
    }
    let continue_at = match (&inspection.new_active_base, segments.is_empty()) {
        (Some(base), _) => Some(*base),
        // A new partition, or one whose every file was quarantined: start past everything
        // the directory shows was assigned.
        (None, true) => Some(inspection.offsets_floor),
        (None, false) => None,
    };
    if let Some(base) = continue_at {
        if !segments.is_empty() {
            tracing::error!(
                dir = %dir.display(),
                base_offset = base,
                "continuing the log in a new segment after damage or assigned offsets past its end"
            );
            report.continued_at = Some(base);
        }
        segments.push(Segment::create(disk, dir, base)?);
    }
    // Closed segments are sealed now (their bytes synced, then the flag), so the next open
    // knows them for synced; the active segment must not carry the flag, since it will take
    // unsynced appends.
    if let Some((active, closed)) = segments.split_last() {
        for segment in closed {
            segment.seal()?;
        }
        if active.is_sealed() {
            active.unseal()?;
        }
    }
    // Always, not only after changes: recovery may also have created missing index files,
    // and a rebuilt index is worthless if its name does not survive a crash.
    disk.sync_dir(dir)
        .map_err(StorageError::io("syncing directory", dir))?;
    // After a process crash the recovered tail may still be only in the page cache; make it
    // durable before anyone can read it as committed.
    if let Some(active) = segments.last() {
        active.sync_log()?;
        active.sync_indexes()?;
    }
    report.segments = segments.len();
    report.log_start_offset = segments.first().map_or(0, |segment| segment.base_offset);
    report.next_offset = segments.last().map_or(0, |segment| segment.next_offset());
    Ok((segments, report))
}

/// Moves every file the inspection found not to belong into `<dir>/quarantine/`, keeping its
/// name (with a `.N` suffix if taken). Never deletes: an operator decides.
fn quarantine(
    disk: &dyn Disk,
    dir: &Path,
    inspection: &Inspection,
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    if inspection.quarantine.is_empty() {
        return Ok(());
    }
    let quarantine_dir = dir.join(QUARANTINE_DIR_NAME);
    disk.create_dir_all(&quarantine_dir)
        .map_err(StorageError::io("creating", &quarantine_dir))?;
    let taken = disk.list(&quarantine_dir).unwrap_or_default();
    let mut moved_any = false;
    for item in &inspection.quarantine {
        let from = dir.join(&item.file);
        if disk.open_read_only(&from).is_err() {
            // A segment's index files are listed with it whether or not they exist.
            continue;
        }
        let mut name = item.file.clone();
        let mut attempt = 0;
        while taken.contains(&name) && attempt < QUARANTINE_NAME_ATTEMPTS_MAX {
            attempt += 1;
            name = format!("{}.{attempt}", item.file);
        }
        let to = quarantine_dir.join(&name);
        disk.rename(&from, &to)
            .map_err(StorageError::io("moving to quarantine", &from))?;
        moved_any = true;
        tracing::error!(
            dir = %dir.display(),
            file = %item.file,
            moved_to = %to.display(),
            reason = %item.reason,
            "moved a file that does not belong to the partition into quarantine"
        );
        report.quarantined.push(Quarantined {
            file: item.file.clone(),
            reason: item.reason.clone(),
        });
    }
    if moved_any {
        // Both names must survive a crash: the new one first, so the file is never nowhere.
        disk.sync_dir(&quarantine_dir)
            .map_err(StorageError::io("syncing directory", &quarantine_dir))?;
        disk.sync_dir(dir)
            .map_err(StorageError::io("syncing directory", dir))?;
    }
    Ok(())
}

/// Opens one kept segment for use: repairs its header, cuts its unsynced tail if planned,
/// writes back indexes that disagree with the data, and attaches its fences.
fn open_segment(
    disk: &dyn Disk,
    dir: &Path,
    planned: &PlannedSegment,
    closed: bool,
    report: &mut RecoveryReport,
) -> Result<Segment, StorageError> {
    let scan = &planned.scan;
    let base_offset = scan.base_offset;
    let paths = SegmentPaths::new(dir, base_offset);
    let log = disk
        .open(&paths.log, false)
        .map_err(StorageError::io("opening", &paths.log))?;
    if let HeaderCheck::Damaged(reason) = &scan.header {
        // The file name carries the base offset too, and every batch was checked against it.
        tracing::warn!(path = %paths.log.display(), %reason, "rewriting damaged segment header from the file name");
        // A segment whose batches show the cleaner's gaps keeps its cleaned flag, or the next
        // open's strict checks would fence them; the sealed flag comes back when it is sealed.
        let flags = if scan.cleaned() { LOG_FLAG_CLEANED } else { 0 };
        log.write_all_at(
            &encode_file_header_with_flags(FileKind::Log, base_offset, flags),
            0,
        )
        .map_err(StorageError::io("writing", &paths.log))?;
        report.headers_repaired.push(base_offset);
    }
    if let Some(reason) = &planned.truncate {
        tracing::warn!(
            path = %paths.log.display(),
            %reason,
            from_bytes = scan.file_bytes,
            to_bytes = scan.valid_end,
            next_offset = scan.next_offset,
            "cutting the unsynced tail of the last segment"
        );
        log.set_len(scan.valid_end)
            .map_err(StorageError::io("truncating", &paths.log))?;
        log.sync_data().map_err(StorageError::io("syncing", &paths.log))?;
        report.truncations.push(Truncation {
            segment_base_offset: base_offset,
            from_bytes: scan.file_bytes,
            to_bytes: scan.valid_end,
            next_offset: scan.next_offset,
            reason: reason.clone(),
        });
    }
    for fence in &planned.fences {
        tracing::error!(
            path = %paths.log.display(),
            from_bytes = fence.from_bytes,
            to_bytes = fence.to_bytes,
            first_offset = fence.first_offset,
            end_offset = fence.end_offset,
            reason = %fence.reason,
            "corrupt data: fencing the range; reads of these offsets get CORRUPT_MESSAGE"
        );
        report.fenced.push(fence.clone());
    }

    let offset_index_file = disk
        .open(&paths.offset_index, true)
        .map_err(StorageError::io("opening", &paths.offset_index))?;
    let time_index_file = disk
        .open(&paths.time_index, true)
        .map_err(StorageError::io("opening", &paths.time_index))?;
    let mut offset_entries: Vec<OffsetEntry> = scan.entries.iter().map(|(offset, _)| *offset).collect();
    let mut time_entries: Vec<TimeEntry> = scan.entries.iter().map(|(_, time)| *time).collect();
    if closed {
        if let Some((position, last_base_offset)) = scan.last_batch {
            if time_entries
                .last()
                .is_none_or(|entry| u64::from(entry.position) != position)
            {
                // Positions and relative offsets inside a valid segment fit in u32.
                time_entries.push(TimeEntry {
                    timestamp: scan.max_timestamp,
                    relative_offset: u32::try_from(last_base_offset - base_offset).unwrap_or(u32::MAX),
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                });
            }
        }
    }
    // Keep the on-disk index if it already says exactly this, so a clean segment is not
    // rewritten; one that is only behind (the active segment's entries are written lazily)
    // is completed without being reported.
    let (unchanged, behind, problem) = match &scan.indexes {
        Ok((on_disk_offsets, on_disk_times)) => (
            *on_disk_offsets == offset_entries && *on_disk_times == time_entries,
            offset_entries.starts_with(on_disk_offsets) && time_entries.starts_with(on_disk_times),
            None,
        ),
        Err(reason) => (false, false, Some(reason.clone())),
    };
    if !unchanged {
        if !behind {
            report.index_rebuilds.push(IndexRebuild {
                segment_base_offset: base_offset,
                reason: problem.unwrap_or_else(|| "index entries disagree with the data".to_string()),
            });
        }
        rewrite_index(
            &*offset_index_file,
            &paths.offset_index,
            FileKind::OffsetIndex,
            base_offset,
            |out| {
                for entry in &offset_entries {
                    entry.encode_into(out);
                }
            },
        )?;
        rewrite_index(
            &*time_index_file,
            &paths.time_index,
            FileKind::TimeIndex,
            base_offset,
            |out| {
                for entry in &time_entries {
                    entry.encode_into(out);
                }
            },
        )?;
    }
    offset_entries.shrink_to_fit();
    time_entries.shrink_to_fit();
    let sealed = scan.sealed() && planned.truncate.is_none();
    let state = SegmentState {
        end: scan.valid_end,
        next_offset: scan.next_offset,
        max_timestamp: scan.max_timestamp,
        first_batch_timestamp: scan.first_batch_timestamp.unwrap_or(NO_TIMESTAMP),
        last_batch: scan.last_batch,
        offset_entries_on_disk: offset_entries.len(),
        time_entries_on_disk: time_entries.len(),
        sealed,
        cleaned: scan.cleaned(),
        offset_entries,
        time_entries,
        fences: planned.fences.clone(),
    };
    Ok(Segment::from_parts(
        base_offset,
        paths,
        log,
        offset_index_file,
        time_index_file,
        state,
    ))
}

/// Rewrites an index file in place. A crash halfway leaves an index that fails its checks
/// and is rebuilt again from the data file, which is the source of truth.
fn rewrite_index(
    file: &dyn SegmentFile,
    path: &Path,
    kind: FileKind,
    base_offset: i64,
    encode: impl FnOnce(&mut Vec<u8>),
) -> Result<(), StorageError> {
    let mut out = encode_file_header(kind, base_offset).to_vec();
    encode(&mut out);
    file.write_all_at(&out, 0)
        .map_err(StorageError::io("writing", path))?;
    file.set_len(out.len() as u64)
        .map_err(StorageError::io("truncating", path))?;
    file.sync_data().map_err(StorageError::io("syncing", path))
}

/// The checkpoint, if the file exists: `Ok` decoded, `Err` why it is unusable. Read only.
pub(crate) fn read_checkpoint(
    disk: &dyn Disk,
    path: &Path,
) -> Result<Option<Result<Checkpoint, String>>, StorageError> {
    let file = match disk.open_read_only(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io("opening", path)(error)),
    };
    let length = file.len().map_err(StorageError::io("measuring", path))?;
    if length != CHECKPOINT_BYTES as u64 {
        return Ok(Some(Err(format!(
            "checkpoint is {length} bytes, expected {CHECKPOINT_BYTES}"
        ))));
    }
    let mut bytes = [0u8; CHECKPOINT_BYTES];
    read_exact_at(&*file, &mut bytes, 0).map_err(StorageError::io("reading", path))?;
    Ok(Some(
        Checkpoint::decode(&bytes).map_err(|error| error.to_string()),
    ))
}

fn remove_if_present(disk: &dyn Disk, path: &Path) -> Result<(), StorageError> {
    match disk.remove(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StorageError::io("removing", path)(error)),
    }
}

/// Removes a segment's files (retention only; recovery never does), data file first: a crash
/// midway leaves index files without a data file, which the next open quarantines, never a
/// data file without its reason to exist.
pub(crate) fn remove_segment_files(
    disk: &dyn Disk,
    dir: &Path,
    base_offset: i64,
) -> Result<(), StorageError> {
    let paths = SegmentPaths::new(dir, base_offset);
    remove_if_present(disk, &paths.log)?;
    remove_if_present(disk, &paths.offset_index)?;
    remove_if_present(disk, &paths.time_index)?;
    remove_if_present(disk, &super::key_index::keys_path(dir, base_offset))
}
