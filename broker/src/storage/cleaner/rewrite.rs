//! Writing one cleaned segment aside: the batches of a group of consecutive closed segments,
//! each through `tidelog_proto::batch::filter::filter_batch`, into `N.log.cleaned` (header
//! flags SEALED | CLEANED) with its offset and time index (`N.index.cleaned`,
//! `N.timeindex.cleaned`), every file fdatasync'ed. `swap` then puts it in place.
//!
//! What stays (contract §0): offsets and batch offset ranges never change; the group's last
//! batch is kept (rewritten, unchanged or as a header-only placeholder) so the cleaned
//! segment ends where the group ended; the last batch of every producer id in the group is
//! kept the same way, so replaying the headers rebuilds the same producer sequences; control
//! batches are copied as they are.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tidelog_proto::batch::{filter_batch, BatchHeader, FilterOptions, Filtered, RecordBatch, RecordView};

use super::super::disk::{Disk, SegmentFile};
use super::super::error::StorageError;
use super::super::format::{
    encode_file_header, encode_file_header_with_flags, FileKind, OffsetEntry, TimeEntry, FILE_HEADER_BYTES,
    LOG_FLAG_CLEANED, LOG_FLAG_SEALED,
};
use super::super::segment::{
    IndexPlacer, Segment, SegmentPaths, SegmentState, NO_TIMESTAMP, SCAN_CHUNK_BYTES,
};
use super::swap::aside_paths;
use super::IoThrottle;

/// Bytes read at a time by the header-only walk that finds each producer's last batch.
const HEADER_WALK_CHUNK_BYTES: usize = 16 << 10;
/// Bytes of output gathered before one write.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// What the rewrite needs besides the segments and the decision.
pub(crate) struct RewriteContext<'a> {
    pub disk: &'a dyn Disk,
    pub dir: &'a Path,
    pub index_interval_bytes: u32,
    pub decompressed_bytes_max: usize,
    /// `Some(now + delete.retention.ms)` when compacting: set on batches that keep a
    /// tombstone and have no horizon yet.
    pub delete_horizon_ms: Option<i64>,
    pub throttle: &'a dyn IoThrottle,
}

/// A cleaned segment written aside, ready to be swapped in.
#[derive(Debug)]
pub(crate) struct Written {
    pub base_offset: i64,
    /// Its state as the swap installs it (sealed, cleaned, indexes on disk).
    pub state: SegmentState,
    pub bytes_read: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
}

/// One record's fate: `retain(batch header, record)`.
pub(crate) type Retain<'a> = dyn FnMut(&BatchHeader, &RecordView<'_>) -> bool + 'a;

/// Writes the cleaned version of `group` aside. `Ok(None)`: nothing would change (every
/// batch stands as it is), so nothing is written and nothing needs swapping.
///
/// # Errors
/// `CleanCancelled` when the throttle says stop; `CleanFailed` when a stored batch does not
/// filter or the output would not fit a segment; the log's I/O errors. Whatever was written
/// aside is removed before any error returns.
pub(crate) fn write_group(
    context: &RewriteContext<'_>,
    group: &[Arc<Segment>],
    retain: &mut Retain<'_>,
) -> Result<Option<Written>, StorageError> {
    let Some(first) = group.first() else {
        return Ok(None);
    };
    let base_offset = first.base_offset;
    let paths = aside_paths(context.dir, base_offset);
    let result = write_files(context, group, &paths, retain);
    match result {
        Ok(Some(written)) => Ok(Some(written)),
        other => {
            remove_aside(context.disk, &paths);
            other
        }
    }
}

/// Removes the aside files of the segment at `paths` (missing ones are fine).
pub(crate) fn remove_aside(disk: &dyn Disk, paths: &SegmentPaths) {
    for path in [&paths.log, &paths.offset_index, &paths.time_index] {
        if let Err(error) = disk.remove(path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), %error, "could not remove a cleaner file written aside");
            }
        }
    }
}

/// Output buffered and written through the throttle.
struct Output<'a> {
    file: Arc<dyn SegmentFile>,
    path: &'a Path,
    buffer: Vec<u8>,
    position: u64,
    throttle: &'a dyn IoThrottle,
}

impl Output<'_> {
    fn push(&mut self, bytes: &[u8]) -> Result<(), StorageError> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= WRITE_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        if !self.throttle.acquire(self.buffer.len() as u64) {
            return Err(StorageError::CleanCancelled);
        }
        self.file
            .write_all_at(&self.buffer, self.position)
            .map_err(StorageError::io("writing", self.path))?;
        self.position += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    fn end(&self) -> u64 {
        self.position + self.buffer.len() as u64
    }
}

fn write_files(
    context: &RewriteContext<'_>,
    group: &[Arc<Segment>],
    paths: &SegmentPaths,
    retain: &mut Retain<'_>,
) -> Result<Option<Written>, StorageError> {
    let base_offset = group[0].base_offset;
    let keep_placeholder = last_batches(group)?;
    let disk = context.disk;
    let file = create(disk, &paths.log)?;
    file.write_all_at(
        &encode_file_header_with_flags(FileKind::Log, base_offset, LOG_FLAG_SEALED | LOG_FLAG_CLEANED),
        0,
    )
    .map_err(StorageError::io("writing", &paths.log))?;
    let mut output = Output {
        file: Arc::clone(&file),
        path: &paths.log,
        buffer: Vec::with_capacity(WRITE_CHUNK_BYTES + SCAN_CHUNK_BYTES),
        position: FILE_HEADER_BYTES as u64,
        throttle: context.throttle,
    };
    let mut placer = IndexPlacer {
        interval: u64::from(context.index_interval_bytes),
        since_entry: 0,
        max_timestamp: NO_TIMESTAMP,
    };
    let mut entries: Vec<(OffsetEntry, TimeEntry)> = Vec::new();
    let mut first_batch_timestamp = None;
    let mut last_batch = None;
    let mut next_offset = base_offset;
    let mut changed = false;
    let mut written = Written {
        base_offset,
        state: SegmentState {
            end: 0,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            first_batch_timestamp: NO_TIMESTAMP,
            last_batch: None,
            offset_entries: Vec::new(),
            time_entries: Vec::new(),
            offset_entries_on_disk: 0,
            time_entries_on_disk: 0,
            sealed: true,
            cleaned: true,
            fences: Vec::new(),
        },
        bytes_read: 0,
        bytes_before: 0,
        bytes_after: 0,
        records_removed: 0,
    };
    for segment in group {
        written.bytes_before += segment.end();
        let mut scanner = segment.scanner(FILE_HEADER_BYTES as u64, segment.end(), SCAN_CHUNK_BYTES);
        // Bounded: every step moves past one batch of a finite range.
        loop {
            let Some((_, header)) = segment.next_batch(&mut scanner)? else {
                break;
            };
            let bytes = scanner
                .batch_bytes()
                .map_err(StorageError::io("reading", &segment.paths.log))?;
            if !context.throttle.acquire(bytes.len() as u64) {
                return Err(StorageError::CleanCancelled);
            }
            written.bytes_read += bytes.len() as u64;
            let bytes = Bytes::copy_from_slice(bytes);
            scanner.skip();
            let (batch, _) =
                RecordBatch::split_first(&bytes).map_err(|source| corrupt(segment, &header, source))?;
            let options = FilterOptions {
                delete_horizon_ms: context.delete_horizon_ms,
                keep_empty: keep_placeholder.contains(&header.base_offset),
                decompressed_bytes_max: context.decompressed_bytes_max,
            };
            let filtered = filter_batch(&batch, &options, |record| retain(&header, record))
                .map_err(|source| corrupt(segment, &header, source))?;
            written.records_removed += u64::from(filtered.records_removed);
            let out = match filtered.outcome {
                Filtered::Unchanged => bytes,
                Filtered::Rewritten { bytes, .. } => {
                    changed = true;
                    bytes
                }
                Filtered::Removed => {
                    changed = true;
                    continue;
                }
            };
            let out_header = BatchHeader::parse(&out).map_err(|source| corrupt(segment, &header, source))?;
            let position = output.end();
            let relative = out_header
                .last_offset()
                .checked_sub(base_offset)
                .and_then(|relative| u32::try_from(relative).ok())
                .ok_or_else(|| StorageError::CleanFailed {
                    reason: format!(
                        "offsets {}..={} do not fit one segment starting at {base_offset}",
                        out_header.base_offset,
                        out_header.last_offset()
                    ),
                    source: None,
                })?;
            let relative_base = relative - u32::try_from(out_header.last_offset_delta).unwrap_or(0);
            if let Some(entry) = placer.on_batch(
                relative_base,
                position,
                out.len() as u64,
                out_header.max_timestamp,
            ) {
                entries.push(entry);
            }
            first_batch_timestamp.get_or_insert(out_header.max_timestamp);
            last_batch = Some((position, out_header.base_offset));
            next_offset = out_header.next_offset();
            output.push(&out)?;
        }
    }
    if !changed {
        return Ok(None);
    }
    output.flush()?;
    let end = output.end();
    if end > super::super::config::SEGMENT_BYTES_MAX {
        return Err(StorageError::CleanFailed {
            reason: format!(
                "the cleaned segment at {base_offset} would hold {end} bytes, more than a segment may"
            ),
            source: None,
        });
    }
    file.sync_data()
        .map_err(StorageError::io("syncing", &paths.log))?;
    let expected_next = group.last().map_or(base_offset, |segment| segment.next_offset());
    if next_offset != expected_next {
        // The group's last batch is always kept: anything else is a bug, never a swap.
        return Err(StorageError::CleanFailed {
            reason: format!(
                "the cleaned segment at {base_offset} ends at {next_offset}, not {expected_next}"
            ),
            source: None,
        });
    }
    let mut offset_entries: Vec<OffsetEntry> = entries.iter().map(|(offset, _)| *offset).collect();
    let mut time_entries: Vec<TimeEntry> = entries.iter().map(|(_, time)| *time).collect();
    // A closed segment's time index ends with its maximum at its last batch (as a roll and
    // recovery leave it), so recovery finds the index exactly as it would rebuild it.
    if let Some((position, last_base)) = last_batch {
        if time_entries
            .last()
            .is_none_or(|entry| u64::from(entry.position) != position)
        {
            time_entries.push(TimeEntry {
                timestamp: placer.max_timestamp,
                relative_offset: u32::try_from(last_base - base_offset).unwrap_or(u32::MAX),
                position: u32::try_from(position).unwrap_or(u32::MAX),
            });
        }
    }
    write_index(
        disk,
        &paths.offset_index,
        FileKind::OffsetIndex,
        base_offset,
        |out| offset_entries.iter().for_each(|entry| entry.encode_into(out)),
    )?;
    write_index(disk, &paths.time_index, FileKind::TimeIndex, base_offset, |out| {
        time_entries.iter().for_each(|entry| entry.encode_into(out))
    })?;
    offset_entries.shrink_to_fit();
    time_entries.shrink_to_fit();
    written.bytes_after = end;
    written.state = SegmentState {
        end,
        next_offset,
        max_timestamp: placer.max_timestamp,
        first_batch_timestamp: first_batch_timestamp.unwrap_or(NO_TIMESTAMP),
        last_batch,
        offset_entries_on_disk: offset_entries.len(),
        time_entries_on_disk: time_entries.len(),
        offset_entries,
        time_entries,
        sealed: true,
        cleaned: true,
        fences: Vec::new(),
    };
    Ok(Some(written))
}

/// Base offsets of the batches a filter must keep even when every record goes: the group's
/// last batch, and each producer id's last batch in the group.
fn last_batches(group: &[Arc<Segment>]) -> Result<Vec<i64>, StorageError> {
    let mut last_of_producer: HashMap<i64, i64> = HashMap::new();
    let mut last = None;
    for segment in group {
        // Headers only: small chunks, so large batches are not read twice (small ones come
        // from the page cache the rewrite then reads them from). Not paced: the rewrite pass
        // paces the reads that go to the disk.
        let mut scanner = segment.scanner(FILE_HEADER_BYTES as u64, segment.end(), HEADER_WALK_CHUNK_BYTES);
        // Bounded: every step moves past one batch of a finite range.
        while let Some((_, header)) = segment.next_batch(&mut scanner)? {
            if header.producer_id >= 0 {
                last_of_producer.insert(header.producer_id, header.base_offset);
            }
            last = Some(header.base_offset);
            scanner.skip();
        }
    }
    let mut keep: Vec<i64> = last_of_producer.into_values().chain(last).collect();
    keep.sort_unstable();
    keep.dedup();
    Ok(keep)
}

fn corrupt(segment: &Segment, header: &BatchHeader, source: tidelog_proto::BatchError) -> StorageError {
    StorageError::CleanFailed {
        reason: format!(
            "the batch at offset {} of segment {} does not filter: {source}",
            header.base_offset, segment.base_offset
        ),
        source: Some(Box::new(StorageError::Corrupt {
            path: segment.paths.log.clone(),
            detail: format!("batch at offset {} does not filter", header.base_offset),
            source: Some(source),
        })),
    }
}

fn create(disk: &dyn Disk, path: &Path) -> Result<Arc<dyn SegmentFile>, StorageError> {
    let file = disk
        .open(path, true)
        .map_err(StorageError::io("creating", path))?;
    file.set_len(0).map_err(StorageError::io("truncating", path))?;
    Ok(file)
}

fn write_index(
    disk: &dyn Disk,
    path: &Path,
    kind: FileKind,
    base_offset: i64,
    encode: impl FnOnce(&mut Vec<u8>),
) -> Result<(), StorageError> {
    let file = create(disk, path)?;
    let mut out = encode_file_header(kind, base_offset).to_vec();
    encode(&mut out);
    file.write_all_at(&out, 0)
        .map_err(StorageError::io("writing", path))?;
    file.sync_data().map_err(StorageError::io("syncing", path))
}
