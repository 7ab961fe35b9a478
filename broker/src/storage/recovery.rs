//! Opening a partition directory: trust a clean-shutdown checkpoint or scan the active
//! segment's tail, truncate torn or corrupt data, rebuild damaged indexes, and report it all.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use tidelog_proto::batch::BATCH_HEADER_BYTES;

use super::disk::{read_exact_at, Disk, SegmentFile};
use super::error::StorageError;
use super::format::{
    decode_file_header_with_flags, decode_offset_index, decode_time_index, encode_file_header,
    parse_segment_file_name, Checkpoint, DecodeError, FileKind, OffsetEntry, TimeEntry, CHECKPOINT_BYTES,
    CHECKPOINT_FILE_NAME, FILE_HEADER_BYTES, FORMAT_VERSION, LOG_FLAG_SEALED, OFFSET_ENTRY_BYTES,
    TEMP_SUFFIX, TIME_ENTRY_BYTES,
};
use super::segment::{scan_batches, IndexPlacer, Segment, SegmentPaths, SegmentState, NO_TIMESTAMP};

/// What recovery found and did when a partition log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// A valid clean-shutdown checkpoint matched the files, so the active segment was trusted
    /// (only its last index interval was checked).
    pub clean_shutdown: bool,
    /// Why a checkpoint file that was present was not trusted.
    pub checkpoint_rejected: Option<String>,
    pub segments: usize,
    pub log_start_offset: i64,
    pub next_offset: i64,
    /// Batch bytes read and CRC-checked.
    pub bytes_scanned: u64,
    pub truncations: Vec<Truncation>,
    pub index_rebuilds: Vec<IndexRebuild>,
    /// Segments whose data file header was damaged and rewritten from the file name.
    pub headers_repaired: Vec<i64>,
    pub segments_dropped: Vec<DroppedSegment>,
    /// Leftover temporary and orphaned files deleted.
    pub files_removed: Vec<String>,
}

impl RecoveryReport {
    /// True when recovery changed nothing on disk but the checkpoint it consumed.
    pub fn is_clean(&self) -> bool {
        self.truncations.is_empty()
            && self.index_rebuilds.is_empty()
            && self.headers_repaired.is_empty()
            && self.segments_dropped.is_empty()
    }
}

/// Bytes cut off the end of a segment's data file.
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedSegment {
    pub base_offset: i64,
    pub bytes: u64,
    pub reason: String,
}

/// The recovered segments, oldest first; the last is the active one. Never empty.
pub(crate) fn recover(
    disk: &dyn Disk,
    dir: &Path,
    index_interval_bytes: u32,
) -> Result<(Vec<Segment>, RecoveryReport), StorageError> {
    disk.create_dir_all(dir)
        .map_err(StorageError::io("creating", dir))?;
    let mut report = RecoveryReport::default();
    let names = disk.list(dir).map_err(StorageError::io("listing", dir))?;
    let mut files: BTreeMap<i64, [bool; 3]> = BTreeMap::new();
    let mut checkpoint_present = false;
    for name in names {
        if name.ends_with(TEMP_SUFFIX) {
            remove_if_present(disk, &dir.join(&name))?;
            report.files_removed.push(name);
        } else if name == CHECKPOINT_FILE_NAME {
            checkpoint_present = true;
        } else if super::producer_state::parse_snapshot_file_name(&name).is_some() {
            // Producer state snapshots: `producer_state::rebuild` checks them after recovery.
        } else if let Some((base_offset, kind)) = parse_segment_file_name(&name) {
            let slot = match kind {
                FileKind::Log => 0,
                FileKind::OffsetIndex => 1,
                FileKind::TimeIndex => 2,
            };
            files.entry(base_offset).or_default()[slot] = true;
        } else {
            tracing::warn!(dir = %dir.display(), file = %name, "ignoring unknown file in partition directory");
        }
    }

    let mut checkpoint = None;
    if checkpoint_present {
        let path = dir.join(CHECKPOINT_FILE_NAME);
        match read_checkpoint(disk, &path)? {
            Ok(found) => checkpoint = Some(found),
            Err(reason) => report.checkpoint_rejected = Some(reason),
        }
        // Consumed now, before anything can change: a crash from here on must not be mistaken
        // for a clean shutdown.
        remove_if_present(disk, &path)?;
    }

    let mut bases = Vec::new();
    for (base_offset, [log, offset_index, time_index]) in &files {
        if *log {
            bases.push(*base_offset);
            continue;
        }
        // Index files without a data file: left by an interrupted segment deletion.
        for (present, kind) in [
            (offset_index, FileKind::OffsetIndex),
            (time_index, FileKind::TimeIndex),
        ] {
            if *present {
                let name = super::format::segment_file_name(*base_offset, kind);
                remove_if_present(disk, &dir.join(&name))?;
                report.files_removed.push(name);
            }
        }
    }

    if let (Some(found), Some(first), Some(last)) = (checkpoint, bases.first(), bases.last()) {
        let matches = found.segment_count as usize == bases.len()
            && found.log_start_offset == *first
            && found.active_base_offset == *last;
        if !matches {
            report.checkpoint_rejected = Some(format!(
                "checkpoint describes {} segments from {} (active {}), directory has {} from {} (active {})",
                found.segment_count,
                found.log_start_offset,
                found.active_base_offset,
                bases.len(),
                first,
                last
            ));
            checkpoint = None;
        }
    }

    let mut segments: Vec<Segment> = Vec::new();
    let mut previous_was_sealed = true;
    let mut index = 0;
    while index < bases.len() {
        let base_offset = bases[index];
        let is_last = index + 1 == bases.len();
        let role = if is_last {
            Role::Active(checkpoint)
        } else {
            Role::Closed
        };
        let recovered = recover_segment(disk, dir, base_offset, role, index_interval_bytes, &mut report)?;
        index += 1;
        if let Some(previous) = segments.last() {
            let expected = previous.next_offset();
            if base_offset > expected && !previous_was_sealed {
                // The previous segment was closed but not yet sealed when we crashed, and lost
                // its unsynced tail: what follows it cannot be attached.
                let reason = format!(
                    "previous segment lost offsets {expected}..{base_offset} (closed but not synced before the crash)"
                );
                tracing::warn!(dir = %dir.display(), %reason, "dropping segments after an unsynced closed segment");
                drop_segment_files(
                    disk,
                    dir,
                    base_offset,
                    recovered.segment.end(),
                    &reason,
                    &mut report,
                )?;
                drop_later_segments(disk, dir, &bases[index..], &reason, &mut report)?;
                break;
            } else if base_offset > expected {
                // A hole before this segment. Retention deletes oldest first, so this is a
                // deletion interrupted by a crash (or a lost file): keep the newest contiguous
                // run and drop what lies before the hole.
                let reason = format!("offsets {expected}..{base_offset} are missing after this segment");
                tracing::error!(dir = %dir.display(), %reason, "dropping segments before a gap in the log");
                for segment in segments.drain(..) {
                    drop_segment_files(
                        disk,
                        dir,
                        segment.base_offset,
                        segment.end(),
                        &reason,
                        &mut report,
                    )?;
                }
            } else if base_offset < expected {
                let reason = format!(
                    "starts at {base_offset}, inside the previous segment (which ends at {expected})"
                );
                tracing::error!(dir = %dir.display(), %reason, "dropping overlapping segments");
                drop_segment_files(
                    disk,
                    dir,
                    base_offset,
                    recovered.segment.end(),
                    &reason,
                    &mut report,
                )?;
                drop_later_segments(disk, dir, &bases[index..], &reason, &mut report)?;
                break;
            }
        }
        let corrupt = recovered.corrupt_closed;
        previous_was_sealed = recovered.was_sealed;
        segments.push(recovered.segment);
        if corrupt && !is_last {
            let reason =
                format!("segment {base_offset} was truncated at corruption; later offsets cannot follow it");
            tracing::error!(dir = %dir.display(), %reason, "dropping segments after a corrupt segment");
            drop_later_segments(disk, dir, &bases[index..], &reason, &mut report)?;
            break;
        }
    }

    if segments.is_empty() {
        // A new partition: the loop above keeps at least one segment whenever there was one.
        segments.push(Segment::create(disk, dir, 0)?);
    }
    // Closed segments that checked out are sealed now, so the next open trusts them; the
    // active segment must not carry the flag, since it will take unsynced appends.
    if let Some((active, closed)) = segments.split_last() {
        for segment in closed {
            segment.seal()?;
        }
        if active.is_sealed() {
            active.unseal()?;
        }
    }
    // Always, not only after removals: recovery may also have created missing index files,
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

#[derive(Debug, Clone, Copy)]
enum Role {
    /// Synced at roll: trusted, only its tail is checked.
    Closed,
    /// The last segment: trusted only if the clean-shutdown checkpoint matches it.
    Active(Option<Checkpoint>),
}

struct RecoveredSegment {
    segment: Segment,
    /// The data file header carried the sealed flag when we found it.
    was_sealed: bool,
    /// A closed segment had to be truncated: nothing after it can be kept.
    corrupt_closed: bool,
}

fn recover_segment(
    disk: &dyn Disk,
    dir: &Path,
    base_offset: i64,
    role: Role,
    index_interval_bytes: u32,
    report: &mut RecoveryReport,
) -> Result<RecoveredSegment, StorageError> {
    let paths = SegmentPaths::new(dir, base_offset);
    let log = disk
        .open(&paths.log, false)
        .map_err(StorageError::io("opening", &paths.log))?;
    let mut log_bytes = log.len().map_err(StorageError::io("measuring", &paths.log))?;
    let mut full_scan_reason: Option<String> = None;

    let mut header = [0u8; FILE_HEADER_BYTES];
    let header_read = usize::try_from(log_bytes)
        .unwrap_or(usize::MAX)
        .min(FILE_HEADER_BYTES);
    read_exact_at(&*log, &mut header[..header_read], 0).map_err(StorageError::io("reading", &paths.log))?;
    let mut was_sealed = false;
    let header_problem = match decode_file_header_with_flags(FileKind::Log, &header[..header_read]) {
        Ok((found, flags)) if found == base_offset => {
            was_sealed = flags & LOG_FLAG_SEALED != 0;
            None
        }
        Ok((found, _)) => Some(format!("header names base offset {found}")),
        Err(DecodeError::UnsupportedVersion(found)) => {
            return Err(StorageError::UnsupportedVersion {
                path: paths.log.clone(),
                found,
                supported: FORMAT_VERSION,
            })
        }
        Err(DecodeError::Invalid(reason)) => Some(reason),
    };
    if let Some(reason) = header_problem {
        // The file name carries the base offset too; batches are checked one by one below.
        tracing::warn!(path = %paths.log.display(), %reason, "rewriting damaged segment header");
        log.write_all_at(&encode_file_header(FileKind::Log, base_offset), 0)
            .map_err(StorageError::io("writing", &paths.log))?;
        log_bytes = log_bytes.max(FILE_HEADER_BYTES as u64);
        report.headers_repaired.push(base_offset);
        full_scan_reason = Some(format!("data file header was damaged: {reason}"));
    }

    let offset_index_file = disk
        .open(&paths.offset_index, true)
        .map_err(StorageError::io("opening", &paths.offset_index))?;
    let time_index_file = disk
        .open(&paths.time_index, true)
        .map_err(StorageError::io("opening", &paths.time_index))?;
    let loaded = load_indexes(
        &*offset_index_file,
        &*time_index_file,
        &paths,
        base_offset,
        log_bytes,
    )?;
    let (offset_entries, time_entries, index_problem) = match loaded {
        Ok((offset_entries, time_entries)) => (offset_entries, time_entries, None),
        Err(reason) => (Vec::new(), Vec::new(), Some(reason)),
    };
    if let (None, Some(reason)) = (&full_scan_reason, &index_problem) {
        full_scan_reason = Some(format!("index unusable: {reason}"));
    }

    let trusted = match role {
        Role::Closed => was_sealed,
        Role::Active(Some(checkpoint)) => {
            let index_bytes = (
                (FILE_HEADER_BYTES + offset_entries.len() * OFFSET_ENTRY_BYTES) as u64,
                (FILE_HEADER_BYTES + time_entries.len() * TIME_ENTRY_BYTES) as u64,
            );
            let matches = checkpoint.log_bytes == log_bytes
                && (checkpoint.offset_index_bytes, checkpoint.time_index_bytes) == index_bytes;
            if !matches && report.checkpoint_rejected.is_none() {
                report.checkpoint_rejected = Some(format!(
                    "checkpoint says the active segment has {} log bytes and index files of {} and {} bytes; found {log_bytes}, {} and {}",
                    checkpoint.log_bytes, checkpoint.offset_index_bytes, checkpoint.time_index_bytes, index_bytes.0, index_bytes.1
                ));
            }
            matches
        }
        Role::Active(None) => false,
    };

    if trusted && full_scan_reason.is_none() {
        match check_tail(
            &*log,
            &paths,
            base_offset,
            log_bytes,
            &offset_entries,
            &time_entries,
        )? {
            Ok(state) => {
                let expected_next = match role {
                    Role::Active(Some(checkpoint)) => Some(checkpoint.next_offset),
                    _ => None,
                };
                if expected_next.is_none_or(|next| next == state.state.next_offset) {
                    if matches!(role, Role::Active(Some(_))) {
                        report.clean_shutdown = true;
                    }
                    report.bytes_scanned += state.scanned;
                    let state = SegmentState {
                        offset_entries_on_disk: offset_entries.len(),
                        time_entries_on_disk: time_entries.len(),
                        sealed: was_sealed,
                        offset_entries,
                        time_entries,
                        ..state.state
                    };
                    let segment = Segment::from_parts(
                        base_offset,
                        paths,
                        log,
                        offset_index_file,
                        time_index_file,
                        state,
                    );
                    return Ok(RecoveredSegment {
                        segment,
                        corrupt_closed: false,
                        was_sealed,
                    });
                }
                report.checkpoint_rejected = Some(format!(
                    "checkpoint says the log ends at offset {:?}, the data ends at {}",
                    expected_next, state.state.next_offset
                ));
                full_scan_reason = Some("checkpoint disagrees with the data".to_string());
            }
            Err(reason) => full_scan_reason = Some(format!("tail check failed: {reason}")),
        }
    }
    if let Some(reason) = &full_scan_reason {
        if matches!(role, Role::Closed) {
            tracing::info!(path = %paths.log.display(), %reason, "scanning closed segment");
        }
    }

    // Full scan: every batch from the start, CRC-checked, indexes rebuilt as the writer would.
    let placer = IndexPlacer {
        interval: u64::from(index_interval_bytes),
        since_entry: 0,
        max_timestamp: NO_TIMESTAMP,
    };
    let header_end = FILE_HEADER_BYTES as u64;
    let scan = scan_batches(
        &*log,
        base_offset,
        header_end,
        log_bytes,
        base_offset,
        Some(placer),
    )
    .map_err(StorageError::io("scanning", &paths.log))?;
    report.bytes_scanned += scan.valid_end - header_end;
    let mut corrupt_closed = false;
    if let Some(problem) = &scan.problem {
        if matches!(role, Role::Closed) {
            if was_sealed {
                tracing::error!(path = %paths.log.display(), %problem, at = scan.valid_end, "corrupt sealed segment; truncating the log here");
            } else {
                tracing::warn!(path = %paths.log.display(), %problem, at = scan.valid_end, "closed segment lost its unsynced tail; truncating the log here");
            }
            corrupt_closed = true;
        } else {
            tracing::warn!(path = %paths.log.display(), %problem, at = scan.valid_end, "truncating torn tail of the active segment");
        }
        log.set_len(scan.valid_end)
            .map_err(StorageError::io("truncating", &paths.log))?;
        log.sync_data().map_err(StorageError::io("syncing", &paths.log))?;
        report.truncations.push(Truncation {
            segment_base_offset: base_offset,
            from_bytes: log_bytes,
            to_bytes: scan.valid_end,
            next_offset: scan.next_offset,
            reason: problem.clone(),
        });
    }
    let mut new_offset_entries: Vec<OffsetEntry> = scan.entries.iter().map(|(offset, _)| *offset).collect();
    let mut new_time_entries: Vec<TimeEntry> = scan.entries.iter().map(|(_, time)| *time).collect();
    if matches!(role, Role::Closed) {
        if let Some((position, last_base_offset)) = scan.last_batch {
            if new_time_entries
                .last()
                .is_none_or(|entry| u64::from(entry.position) != position)
            {
                // Positions and relative offsets inside a valid segment fit in u32.
                new_time_entries.push(TimeEntry {
                    timestamp: scan.max_timestamp,
                    relative_offset: u32::try_from(last_base_offset - base_offset).unwrap_or(u32::MAX),
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                });
            }
        }
    }
    // Entries from before the cut are still valid; keep the on-disk index if it already says
    // exactly this, so a clean segment is not rewritten.
    let unchanged =
        index_problem.is_none() && offset_entries == new_offset_entries && time_entries == new_time_entries;
    if !unchanged {
        let behind = index_problem.is_none()
            && new_offset_entries.starts_with(&offset_entries)
            && new_time_entries.starts_with(&time_entries);
        if !behind {
            report.index_rebuilds.push(IndexRebuild {
                segment_base_offset: base_offset,
                reason: index_problem
                    .clone()
                    .unwrap_or_else(|| "index entries disagree with the data".to_string()),
            });
        }
        rewrite_index(
            &*offset_index_file,
            &paths.offset_index,
            FileKind::OffsetIndex,
            base_offset,
            |out| {
                for entry in &new_offset_entries {
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
                for entry in &new_time_entries {
                    entry.encode_into(out);
                }
            },
        )?;
    }
    new_offset_entries.shrink_to_fit();
    new_time_entries.shrink_to_fit();
    let state = SegmentState {
        end: scan.valid_end,
        next_offset: scan.next_offset,
        max_timestamp: scan.max_timestamp,
        first_batch_timestamp: scan.first_batch_timestamp.unwrap_or(NO_TIMESTAMP),
        last_batch: scan.last_batch,
        offset_entries_on_disk: new_offset_entries.len(),
        time_entries_on_disk: new_time_entries.len(),
        sealed: was_sealed && scan.problem.is_none(),
        offset_entries: new_offset_entries,
        time_entries: new_time_entries,
    };
    let segment = Segment::from_parts(base_offset, paths, log, offset_index_file, time_index_file, state);
    Ok(RecoveredSegment {
        segment,
        corrupt_closed,
        was_sealed,
    })
}

struct TailState {
    state: SegmentState,
    scanned: u64,
}

/// Checks a trusted segment cheaply: walks from the last index entry to the end of the file.
/// Everything before was synced and indexed; the walk proves the end of the file is a batch
/// boundary and yields the next offset and the newest timestamp.
fn check_tail(
    log: &dyn SegmentFile,
    paths: &SegmentPaths,
    base_offset: i64,
    log_bytes: u64,
    offset_entries: &[OffsetEntry],
    time_entries: &[TimeEntry],
) -> Result<Result<TailState, String>, StorageError> {
    let header_end = FILE_HEADER_BYTES as u64;
    // Start at the earlier of the two last entries, so every batch is covered either by the
    // time index's running maximum or by the walk.
    let (start, start_offset) = match (offset_entries.last(), time_entries.last()) {
        (Some(offset), Some(time)) if offset.position <= time.position => (
            u64::from(offset.position),
            base_offset + i64::from(offset.relative_offset),
        ),
        (Some(_), Some(time)) => (
            u64::from(time.position),
            base_offset + i64::from(time.relative_offset),
        ),
        _ => (header_end, base_offset),
    };
    let walk = scan_batches(log, base_offset, start, log_bytes, start_offset, None)
        .map_err(StorageError::io("scanning", &paths.log))?;
    if let Some(problem) = walk.problem {
        return Ok(Err(problem));
    }
    let indexed_max = time_entries.last().map_or(NO_TIMESTAMP, |entry| entry.timestamp);
    let first_batch_timestamp = if start == header_end {
        walk.first_batch_timestamp.unwrap_or(NO_TIMESTAMP)
    } else {
        let mut header = [0u8; BATCH_HEADER_BYTES];
        read_exact_at(log, &mut header, header_end).map_err(StorageError::io("reading", &paths.log))?;
        match tidelog_proto::batch::BatchHeader::parse(&header) {
            Ok(header) => header.max_timestamp,
            Err(error) => return Ok(Err(format!("first batch header: {error}"))),
        }
    };
    Ok(Ok(TailState {
        scanned: walk.valid_end - start,
        state: SegmentState {
            end: walk.valid_end,
            next_offset: walk.next_offset,
            max_timestamp: indexed_max.max(walk.max_timestamp),
            first_batch_timestamp,
            last_batch: walk.last_batch,
            offset_entries: Vec::new(),
            time_entries: Vec::new(),
            offset_entries_on_disk: 0,
            time_entries_on_disk: 0,
            sealed: false,
        },
    }))
}

/// Reads and checks both index files against the data file's length. `Ok(Err(reason))`
/// when either is unusable (and both are then rebuilt together, so they stay in step).
#[allow(clippy::type_complexity)]
fn load_indexes(
    offset_index: &dyn SegmentFile,
    time_index: &dyn SegmentFile,
    paths: &SegmentPaths,
    base_offset: i64,
    log_bytes: u64,
) -> Result<Result<(Vec<OffsetEntry>, Vec<TimeEntry>), String>, StorageError> {
    // At most one entry per batch, plus the closing time entry: a bigger file is damaged,
    // and the bound keeps a garbage length from making us allocate without limit.
    let batches_max = log_bytes / BATCH_HEADER_BYTES as u64 + 1;
    let Some(offset_bytes) =
        read_bounded(offset_index, &paths.offset_index, batches_max, OFFSET_ENTRY_BYTES)?
    else {
        return Ok(Err(
            "offset index is missing or larger than its data file allows".to_string()
        ));
    };
    let Some(time_bytes) = read_bounded(time_index, &paths.time_index, batches_max, TIME_ENTRY_BYTES)? else {
        return Ok(Err(
            "time index is missing or larger than its data file allows".to_string()
        ));
    };
    let offset_entries = match decode_offset_index(&offset_bytes, base_offset) {
        Ok(entries) => entries,
        Err(DecodeError::UnsupportedVersion(found)) => {
            return Err(StorageError::UnsupportedVersion {
                path: paths.offset_index.clone(),
                found,
                supported: FORMAT_VERSION,
            })
        }
        Err(DecodeError::Invalid(reason)) => return Ok(Err(format!("offset index: {reason}"))),
    };
    let time_entries = match decode_time_index(&time_bytes, base_offset) {
        Ok(entries) => entries,
        Err(DecodeError::UnsupportedVersion(found)) => {
            return Err(StorageError::UnsupportedVersion {
                path: paths.time_index.clone(),
                found,
                supported: FORMAT_VERSION,
            })
        }
        Err(DecodeError::Invalid(reason)) => return Ok(Err(format!("time index: {reason}"))),
    };
    let header_end = FILE_HEADER_BYTES as u64;
    let position_ok = |position: u32| (header_end..log_bytes).contains(&u64::from(position));
    for pair in offset_entries.windows(2) {
        if pair[0].relative_offset >= pair[1].relative_offset || pair[0].position >= pair[1].position {
            return Ok(Err("offset index entries are out of order".to_string()));
        }
    }
    if !offset_entries.iter().all(|entry| position_ok(entry.position)) {
        return Ok(Err("offset index points outside the data file".to_string()));
    }
    for pair in time_entries.windows(2) {
        if pair[0].timestamp > pair[1].timestamp
            || pair[0].relative_offset >= pair[1].relative_offset
            || pair[0].position >= pair[1].position
        {
            return Ok(Err("time index entries are out of order".to_string()));
        }
    }
    if !time_entries.iter().all(|entry| position_ok(entry.position)) {
        return Ok(Err("time index points outside the data file".to_string()));
    }
    Ok(Ok((offset_entries, time_entries)))
}

/// Whole file if it has a header and at most `entries_max` entries; `None` otherwise.
fn read_bounded(
    file: &dyn SegmentFile,
    path: &Path,
    entries_max: u64,
    entry_bytes: usize,
) -> Result<Option<Vec<u8>>, StorageError> {
    let length = file.len().map_err(StorageError::io("measuring", path))?;
    let length_max = FILE_HEADER_BYTES as u64 + entries_max.saturating_mul(entry_bytes as u64);
    if length < FILE_HEADER_BYTES as u64 || length > length_max {
        return Ok(None);
    }
    // length <= length_max, which is derived from a file we can address, so it fits usize.
    let mut bytes = vec![0u8; usize::try_from(length).unwrap_or(0)];
    read_exact_at(file, &mut bytes, 0).map_err(StorageError::io("reading", path))?;
    Ok(Some(bytes))
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

/// `Ok(Err(reason))` for an unusable checkpoint.
fn read_checkpoint(disk: &dyn Disk, path: &Path) -> Result<Result<Checkpoint, String>, StorageError> {
    let file = disk
        .open(path, false)
        .map_err(StorageError::io("opening", path))?;
    let length = file.len().map_err(StorageError::io("measuring", path))?;
    if length != CHECKPOINT_BYTES as u64 {
        return Ok(Err(format!(
            "checkpoint is {length} bytes, expected {CHECKPOINT_BYTES}"
        )));
    }
    let mut bytes = [0u8; CHECKPOINT_BYTES];
    read_exact_at(&*file, &mut bytes, 0).map_err(StorageError::io("reading", path))?;
    Ok(Checkpoint::decode(&bytes).map_err(|error| error.to_string()))
}

fn remove_if_present(disk: &dyn Disk, path: &Path) -> Result<(), StorageError> {
    match disk.remove(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StorageError::io("removing", path)(error)),
    }
}

/// Removes a segment's files, data file first: a crash midway leaves orphaned index files,
/// which the next open deletes, never a data file without its reason to exist.
pub(crate) fn remove_segment_files(
    disk: &dyn Disk,
    dir: &Path,
    base_offset: i64,
) -> Result<(), StorageError> {
    let paths = SegmentPaths::new(dir, base_offset);
    remove_if_present(disk, &paths.log)?;
    remove_if_present(disk, &paths.offset_index)?;
    remove_if_present(disk, &paths.time_index)
}

fn drop_segment_files(
    disk: &dyn Disk,
    dir: &Path,
    base_offset: i64,
    bytes: u64,
    reason: &str,
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    remove_segment_files(disk, dir, base_offset)?;
    report.segments_dropped.push(DroppedSegment {
        base_offset,
        bytes,
        reason: reason.to_string(),
    });
    Ok(())
}

fn drop_later_segments(
    disk: &dyn Disk,
    dir: &Path,
    bases: &[i64],
    reason: &str,
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    for base_offset in bases {
        let path = SegmentPaths::new(dir, *base_offset).log;
        let bytes = match disk.open(&path, false) {
            Ok(file) => file.len().unwrap_or(0),
            Err(_) => 0,
        };
        drop_segment_files(disk, dir, *base_offset, bytes, reason, report)?;
    }
    Ok(())
}
