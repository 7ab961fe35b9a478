//! The batch scanner every walk of a data file uses, and reading one segment completely,
//! without changing it: the data file header, every batch
//! (header, offset continuity, CRC-32C, record count), resynchronising after damage to find
//! the valid batches that follow it, and both index files. `inspect` decides what the results
//! mean for the partition.

use std::io;
use std::path::{Path, PathBuf};

use tidelog_proto::batch::{
    compute_crc, peek_batch_bytes, BatchHeader, BATCH_HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_OFFSET,
    MAGIC_V2,
};

use super::disk::{read_exact_at, Disk, SegmentFile};
use super::error::StorageError;
use super::format::{
    decode_file_header_with_flags, decode_offset_index, decode_time_index, DecodeError, FileKind,
    OffsetEntry, TimeEntry, BATCH_BYTES_MAX, FILE_HEADER_BYTES, FORMAT_VERSION, LOG_FLAG_CLEANED,
    LOG_FLAG_SEALED, OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES,
};
use super::inspect::Fence;
use super::segment::{IndexPlacer, NO_TIMESTAMP, SCAN_CHUNK_BYTES};

/// The entries of a segment's offset and time index files.
pub(crate) type IndexEntries = (Vec<OffsetEntry>, Vec<TimeEntry>);

/// What the data file header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Intact {
        sealed: bool,
        /// The cleaner wrote it (`LOG_FLAG_CLEANED`): offset gaps and short batches are legal.
        cleaned: bool,
    },
    /// Damaged (or cut short): recovery rewrites it from the file name.
    Damaged(String),
}

/// Bytes after the last batch the scan could use that are not a batch.
#[derive(Debug, Clone)]
pub(crate) struct Tail {
    pub from_bytes: u64,
    pub reason: String,
    /// Every byte from `from_bytes` to the end of the file is zero: the clean end of the data
    /// of a preallocated (or extended-but-never-written) file, not damage.
    pub all_zero: bool,
    /// The offset after the damaged batch, if its header still says plausibly (base offset
    /// where expected, a sane record count): offsets below it were assigned.
    pub claimed_end_offset: Option<i64>,
}

/// Everything one full scan of a segment found. Batches are checked as recovery always did
/// (header, length, offset continuity, CRC-32C, record count); at a batch that fails, the scan
/// looks for a later position holding a valid batch that continues the offsets and goes on
/// from there, so damage in the middle is fenced instead of cutting off what follows.
#[derive(Debug, Clone)]
pub(crate) struct SegmentScan {
    pub base_offset: i64,
    pub file_bytes: u64,
    pub header: HeaderCheck,
    /// The index files: entries, or why they cannot be used (and must be rebuilt).
    pub indexes: Result<IndexEntries, String>,
    /// End of the last valid batch (the header's end if none).
    pub valid_end: u64,
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub first_batch_timestamp: Option<i64>,
    pub last_batch: Option<(u64, i64)>,
    pub batches: u64,
    /// Index entries the writer would have made for the valid batches.
    pub entries: Vec<(OffsetEntry, TimeEntry)>,
    /// Damaged ranges with valid batches after them.
    pub damage: Vec<Fence>,
    pub tail: Option<Tail>,
    pub bytes_scanned: u64,
    /// Every valid batch as `(position, base offset, running maximum timestamp)`, when asked
    /// for (verify checks each index entry against them).
    pub batch_starts: Option<Vec<(u64, i64, i64)>>,
    /// A batch started past the previous one's end or held fewer records than its offset
    /// range: legal only in a cleaned segment (checked leniently only when the header says
    /// cleaned or cannot be read).
    pub cleaned_batches: bool,
}

impl SegmentScan {
    /// No batch, no damage: nothing but a header (maybe torn) and zeros.
    pub fn holds_nothing(&self) -> bool {
        self.batches == 0 && self.damage.is_empty() && self.damaged_tail().is_none()
    }

    /// Not a single valid batch and not even a valid header: not a segment at all.
    pub fn is_garbage(&self) -> bool {
        self.batches == 0
            && self.damage.is_empty()
            && self.damaged_tail().is_some()
            && matches!(self.header, HeaderCheck::Damaged(_))
    }

    /// Garbage after the last valid batch (not a zero-filled end).
    pub fn damaged_tail(&self) -> Option<&Tail> {
        self.tail.as_ref().filter(|tail| !tail.all_zero)
    }

    pub fn sealed(&self) -> bool {
        matches!(self.header, HeaderCheck::Intact { sealed: true, .. })
    }

    /// Whether the cleaner wrote this segment: its header says so, or (a damaged header) its
    /// batches show what only a cleaned segment holds, gaps or placeholders.
    pub fn cleaned(&self) -> bool {
        matches!(self.header, HeaderCheck::Intact { cleaned: true, .. }) || self.cleaned_batches
    }

    /// Its intact header says it was never sealed: its data may not all have been synced.
    pub fn unsynced_candidate(&self) -> bool {
        matches!(self.header, HeaderCheck::Intact { sealed: false, .. })
    }
}

/// Reads and checks one segment's files completely, without changing them.
pub(crate) fn scan_segment(
    disk: &dyn Disk,
    dir: &Path,
    base_offset: i64,
    index_interval_bytes: u32,
    collect_batch_starts: bool,
) -> Result<SegmentScan, StorageError> {
    let paths = super::segment::SegmentPaths::new(dir, base_offset);
    let log = disk
        .open_read_only(&paths.log)
        .map_err(StorageError::io("opening", &paths.log))?;
    let file_bytes = log.len().map_err(StorageError::io("measuring", &paths.log))?;
    let mut header = [0u8; FILE_HEADER_BYTES];
    let header_read = usize::try_from(file_bytes)
        .unwrap_or(usize::MAX)
        .min(FILE_HEADER_BYTES);
    read_exact_at(&*log, &mut header[..header_read], 0).map_err(StorageError::io("reading", &paths.log))?;
    let header = match decode_file_header_with_flags(FileKind::Log, &header[..header_read]) {
        Ok((found, flags)) if found == base_offset => HeaderCheck::Intact {
            sealed: flags & LOG_FLAG_SEALED != 0,
            cleaned: flags & LOG_FLAG_CLEANED != 0,
        },
        Ok((found, _)) => HeaderCheck::Damaged(format!("header names base offset {found}")),
        Err(DecodeError::UnsupportedVersion(found)) => {
            // The data itself is from a newer Tidelog: refuse it rather than "repair" it.
            return Err(StorageError::UnsupportedVersion {
                path: paths.log.clone(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        Err(DecodeError::Invalid(reason)) => HeaderCheck::Damaged(reason),
    };
    let indexes = load_indexes(disk, &paths, base_offset, file_bytes)?;
    let placer = IndexPlacer {
        interval: u64::from(index_interval_bytes),
        since_entry: 0,
        max_timestamp: NO_TIMESTAMP,
    };
    let mut scan = SegmentScan {
        base_offset,
        file_bytes,
        header,
        indexes,
        valid_end: FILE_HEADER_BYTES as u64,
        next_offset: base_offset,
        max_timestamp: NO_TIMESTAMP,
        first_batch_timestamp: None,
        last_batch: None,
        batches: 0,
        entries: Vec::new(),
        damage: Vec::new(),
        tail: None,
        bytes_scanned: 0,
        batch_starts: collect_batch_starts.then(Vec::new),
        cleaned_batches: false,
    };
    scan_batches(&*log, &mut scan, placer).map_err(StorageError::io("scanning", &paths.log))?;
    Ok(scan)
}

/// Walks every batch of the data file, resynchronising after damage.
fn scan_batches(log: &dyn SegmentFile, scan: &mut SegmentScan, mut placer: IndexPlacer) -> io::Result<()> {
    let end = scan.file_bytes;
    // A cleaned segment's batches may leave offset gaps and hold fewer records than their
    // range. A damaged header cannot say whether the segment was cleaned: then the lenient
    // checks apply too (a gap between CRC-valid batches is not what a crash or a flipped
    // byte produces), and `cleaned_batches` tells recovery to keep the flag when it repairs
    // the header.
    let lenient = matches!(
        scan.header,
        HeaderCheck::Intact { cleaned: true, .. } | HeaderCheck::Damaged(_)
    );
    let mut start = FILE_HEADER_BYTES as u64;
    while start < end {
        let mut scanner = BatchScanner::new(log, start, end, SCAN_CHUNK_BYTES);
        let problem = loop {
            let (position, header) = match scanner.next_header()? {
                ScanStep::End => break None,
                ScanStep::Invalid(reason) => break Some((scanner.position(), reason)),
                ScanStep::Batch(position, header) => (position, header),
            };
            if let Err(reason) =
                check_batch(&mut scanner, &header, scan.base_offset, scan.next_offset, lenient)?
            {
                break Some((position, reason));
            }
            if header.base_offset != scan.next_offset || header.record_count != header.last_offset_delta + 1 {
                scan.cleaned_batches = true;
            }
            // check_batch checked the length and the relative offsets.
            let total = header.total_bytes().unwrap_or(0) as u64;
            let relative = u32::try_from(header.base_offset - scan.base_offset).unwrap_or(u32::MAX);
            if let Some(entries) = placer.on_batch(relative, position, total, header.max_timestamp) {
                scan.entries.push(entries);
            }
            scan.first_batch_timestamp.get_or_insert(header.max_timestamp);
            scan.max_timestamp = scan.max_timestamp.max(header.max_timestamp);
            if let Some(starts) = scan.batch_starts.as_mut() {
                starts.push((position, header.base_offset, scan.max_timestamp));
            }
            scan.last_batch = Some((position, header.base_offset));
            scan.next_offset = header.next_offset();
            scan.valid_end = position + total;
            scan.batches += 1;
            scan.bytes_scanned += total;
            scanner.skip();
        };
        let Some((position, reason)) = problem else {
            return Ok(());
        };
        if all_zero(log, position, end)? {
            scan.tail = Some(Tail {
                from_bytes: position,
                reason,
                all_zero: true,
                claimed_end_offset: None,
            });
            return Ok(());
        }
        match find_resync(log, position, end, scan.base_offset, scan.next_offset, lenient)? {
            Some((resume_at, resume_offset)) => {
                scan.damage.push(Fence {
                    segment_base_offset: scan.base_offset,
                    from_bytes: position,
                    to_bytes: resume_at,
                    first_offset: scan.next_offset,
                    end_offset: resume_offset,
                    reason: format!("damaged batch data: {reason}"),
                });
                scan.next_offset = resume_offset;
                // An index entry right after the damage, so a lookup past it never has to
                // walk from before it.
                placer.since_entry = placer.interval;
                start = resume_at;
            }
            None => {
                let claimed_end_offset = claimed_end_offset(log, position, end, scan.next_offset)?;
                scan.tail = Some(Tail {
                    from_bytes: position,
                    reason,
                    all_zero: false,
                    claimed_end_offset,
                });
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The checks every stored batch must pass, beyond its header parsing: its base offset
/// continues the log, its CRC-32C matches, its record count matches its lastOffsetDelta, and
/// its offsets fit the segment's relative (u32) range. In a cleaned segment (`cleaned`) the
/// base offset may lie past `expected` and the record count below the range.
pub(crate) fn check_batch(
    scanner: &mut BatchScanner<'_>,
    header: &BatchHeader,
    segment_base: i64,
    expected: i64,
    cleaned: bool,
) -> io::Result<Result<(), String>> {
    if header.base_offset != expected && !(cleaned && header.base_offset > expected) {
        return Ok(Err(format!(
            "batch has base offset {}, expected {expected}",
            header.base_offset
        )));
    }
    if let Err(reason) = scanner.verify_current(header, cleaned)? {
        return Ok(Err(format!("batch at offset {}: {reason}", header.base_offset)));
    }
    if header
        .last_offset()
        .checked_sub(segment_base)
        .and_then(|relative| u32::try_from(relative).ok())
        .is_none()
    {
        return Ok(Err(format!(
            "batch at offset {} is too far from the segment base {segment_base}",
            header.base_offset
        )));
    }
    Ok(Ok(()))
}

/// True if every byte of `[from, end)` is zero.
fn all_zero(file: &dyn SegmentFile, from: u64, end: u64) -> io::Result<bool> {
    let mut buffer = vec![0u8; SCAN_CHUNK_BYTES];
    let mut position = from;
    while position < end {
        let length = usize::try_from(end - position)
            .unwrap_or(usize::MAX)
            .min(SCAN_CHUNK_BYTES);
        read_exact_at(file, &mut buffer[..length], position)?;
        if buffer[..length].iter().any(|byte| *byte != 0) {
            return Ok(false);
        }
        position += length as u64;
    }
    Ok(true)
}

/// The first position after `from` holding a whole, CRC-valid batch whose base offset is at
/// least `expected` and whose offsets fit the segment: `(position, base offset)`. Reads the
/// range once, through a bounded buffer; candidate positions are filtered by the magic byte
/// and the base offset before any CRC is computed.
fn find_resync(
    file: &dyn SegmentFile,
    from: u64,
    end: u64,
    segment_base: i64,
    expected: i64,
    cleaned: bool,
) -> io::Result<Option<(u64, i64)>> {
    let header_bytes = BATCH_HEADER_BYTES as u64;
    let mut window_start = from + 1;
    let mut buffer = Vec::new();
    let mut batch = Vec::new();
    while window_start + header_bytes <= end {
        let length = usize::try_from(end - window_start)
            .unwrap_or(usize::MAX)
            .min(SCAN_CHUNK_BYTES + BATCH_HEADER_BYTES);
        buffer.resize(length, 0);
        read_exact_at(file, &mut buffer, window_start)?;
        let candidates = (length + 1)
            .saturating_sub(BATCH_HEADER_BYTES)
            .min(SCAN_CHUNK_BYTES);
        for at in 0..candidates {
            let bytes = &buffer[at..at + BATCH_HEADER_BYTES];
            if bytes[MAGIC_OFFSET] as i8 != MAGIC_V2 {
                continue;
            }
            let Ok(header) = BatchHeader::parse(bytes) else {
                continue;
            };
            let relative_ok = header
                .last_offset()
                .checked_sub(segment_base)
                .is_some_and(|relative| u32::try_from(relative).is_ok());
            let count_ok = record_count_ok(&header, cleaned);
            if header.base_offset < expected || !relative_ok || !count_ok {
                continue;
            }
            let position = window_start + at as u64;
            let Some(total) = header.total_bytes() else {
                continue;
            };
            if total > BATCH_BYTES_MAX || total as u64 > end - position {
                continue;
            }
            batch.resize(total, 0);
            read_exact_at(file, &mut batch, position)?;
            if compute_crc(&batch) == header.crc {
                return Ok(Some((position, header.base_offset)));
            }
        }
        window_start += candidates as u64;
        if candidates == 0 {
            break;
        }
    }
    Ok(None)
}

/// What a damaged batch's header still claims about the offsets it held, if plausible.
fn claimed_end_offset(file: &dyn SegmentFile, from: u64, end: u64, expected: i64) -> io::Result<Option<i64>> {
    if end - from < BATCH_HEADER_BYTES as u64 {
        return Ok(None);
    }
    let mut bytes = [0u8; BATCH_HEADER_BYTES];
    read_exact_at(file, &mut bytes, from)?;
    let Ok(header) = BatchHeader::parse(&bytes) else {
        return Ok(None);
    };
    if header.base_offset != expected {
        return Ok(None);
    }
    // Either field may be the damaged one; the larger keeps every offset it may have held.
    let count = i64::from(header.last_offset_delta.saturating_add(1)).max(i64::from(header.record_count));
    Ok((count >= 1).then(|| expected.saturating_add(count)))
}

/// Reads and checks both index files against the data file's length. `Err(reason)` when
/// either is unusable, including a newer format version: indexes are derived data, rebuilt
/// from the log rather than stopping the partition.
fn load_indexes(
    disk: &dyn Disk,
    paths: &super::segment::SegmentPaths,
    base_offset: i64,
    log_bytes: u64,
) -> Result<Result<IndexEntries, String>, StorageError> {
    // At most one entry per batch, plus the closing time entry: a bigger file is damaged,
    // and the bound keeps a garbage length from making us allocate without limit.
    let batches_max = log_bytes / BATCH_HEADER_BYTES as u64 + 1;
    let Some(offset_bytes) = read_bounded(disk, &paths.offset_index, batches_max, OFFSET_ENTRY_BYTES)? else {
        return Ok(Err(
            "offset index is missing or larger than its data file allows".to_string()
        ));
    };
    let Some(time_bytes) = read_bounded(disk, &paths.time_index, batches_max, TIME_ENTRY_BYTES)? else {
        return Ok(Err(
            "time index is missing or larger than its data file allows".to_string()
        ));
    };
    let offset_entries = match decode_offset_index(&offset_bytes, base_offset) {
        Ok(entries) => entries,
        Err(error) => return Ok(Err(format!("offset index: {error}"))),
    };
    let time_entries = match decode_time_index(&time_bytes, base_offset) {
        Ok(entries) => entries,
        Err(error) => return Ok(Err(format!("time index: {error}"))),
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

/// Whole file if it exists, has a header and at most `entries_max` entries; `None` otherwise.
fn read_bounded(
    disk: &dyn Disk,
    path: &PathBuf,
    entries_max: u64,
    entry_bytes: usize,
) -> Result<Option<Vec<u8>>, StorageError> {
    let file = match disk.open_read_only(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StorageError::io("opening", path)(error)),
    };
    let length = file.len().map_err(StorageError::io("measuring", path))?;
    let length_max = FILE_HEADER_BYTES as u64 + entries_max.saturating_mul(entry_bytes as u64);
    if length < FILE_HEADER_BYTES as u64 || length > length_max {
        return Ok(None);
    }
    // length <= length_max, which is derived from a file we can address, so it fits usize.
    let mut bytes = vec![0u8; usize::try_from(length).unwrap_or(0)];
    read_exact_at(&*file, &mut bytes, 0).map_err(StorageError::io("reading", path))?;
    Ok(Some(bytes))
}

/// One step of a [`BatchScanner`].
#[derive(Debug)]
pub(crate) enum ScanStep {
    /// A batch whose header parses and whose length fits in the scanned range.
    Batch(u64, BatchHeader),
    /// The range ends exactly after the last batch.
    End,
    /// The bytes at the current position are not a whole batch (torn tail or corruption).
    Invalid(String),
}

/// Walks the batches of a byte range of a data file through a bounded buffer.
#[derive(Debug)]
pub(crate) struct BatchScanner<'a> {
    file: &'a dyn SegmentFile,
    position: u64,
    end: u64,
    chunk_bytes: usize,
    buffer: Vec<u8>,
    buffer_start: u64,
    current: Option<(u64, usize)>,
    /// Byte ranges `[from, to)` to step over when the walk reaches `from` (fenced damage).
    skips: Vec<(u64, u64)>,
}

impl<'a> BatchScanner<'a> {
    pub fn new(file: &'a dyn SegmentFile, start: u64, end: u64, chunk_bytes: usize) -> Self {
        Self {
            file,
            position: start,
            end,
            chunk_bytes,
            buffer: Vec::new(),
            buffer_start: start,
            current: None,
            skips: Vec::new(),
        }
    }

    /// Steps over each byte range `[from, to)` (fenced damage) when the walk reaches `from`.
    /// Every `from < to`, so the walk always moves forward.
    pub fn skipping(mut self, skips: Vec<(u64, u64)>) -> Self {
        self.skips = skips;
        self
    }

    /// Position of the batch last returned (or of the next one, after `skip`).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Makes `[position, position + length)` available in the buffer.
    fn ensure(&mut self, position: u64, length: usize) -> std::io::Result<&[u8]> {
        let buffer_end = self.buffer_start + self.buffer.len() as u64;
        if position < self.buffer_start || position + length as u64 > buffer_end {
            let remaining = usize::try_from(self.end - position).unwrap_or(usize::MAX);
            let read = length.max(self.chunk_bytes).min(remaining);
            self.buffer.clear();
            self.buffer.resize(read, 0);
            read_exact_at(self.file, &mut self.buffer, position)?;
            self.buffer_start = position;
        }
        let from = usize::try_from(position - self.buffer_start).unwrap_or(usize::MAX);
        Ok(&self.buffer[from..from + length])
    }

    /// Parses the header of the batch at the current position without moving past it.
    pub fn next_header(&mut self) -> std::io::Result<ScanStep> {
        if let Some((position, total)) = self.current.take() {
            // The previous batch was not skipped explicitly: move past it.
            debug_assert_eq!(position, self.position);
            self.position += total as u64;
        }
        // Fences start where a valid batch ended and end where one starts (or at the end).
        while let Some((_, to)) = self.skips.iter().find(|(from, _)| *from == self.position) {
            self.position = *to;
        }
        let position = self.position;
        // `>=`, not `==`: a reader may pick an index entry the writer added after the reader
        // loaded the segment's end; such an entry lies past everything the reader may see.
        if position >= self.end {
            return Ok(ScanStep::End);
        }
        let remaining = self.end - position;
        if remaining < BATCH_HEADER_BYTES as u64 {
            return Ok(ScanStep::Invalid(format!(
                "{remaining} bytes after the last whole batch, fewer than a batch header"
            )));
        }
        let overhead = self.ensure(position, LOG_OVERHEAD_BYTES)?;
        let total = match peek_batch_bytes(overhead) {
            Ok(Some(total)) => total,
            Ok(None) => return Ok(ScanStep::Invalid("batch length field is cut off".to_string())),
            Err(error) => return Ok(ScanStep::Invalid(error.to_string())),
        };
        if total > BATCH_BYTES_MAX {
            return Ok(ScanStep::Invalid(format!(
                "batch length {total} exceeds the limit of {BATCH_BYTES_MAX} bytes"
            )));
        }
        if total as u64 > remaining {
            return Ok(ScanStep::Invalid(format!(
                "batch of {total} bytes runs past the end ({remaining} bytes left)"
            )));
        }
        let header_bytes = self.ensure(position, BATCH_HEADER_BYTES)?;
        let header = match BatchHeader::parse(header_bytes) {
            Ok(header) => header,
            Err(error) => return Ok(ScanStep::Invalid(error.to_string())),
        };
        self.current = Some((position, total));
        Ok(ScanStep::Batch(position, header))
    }

    /// The whole bytes of the batch last returned by `next_header`.
    pub fn batch_bytes(&mut self) -> std::io::Result<&[u8]> {
        let (position, total) = self.current.unwrap_or((self.position, 0));
        self.ensure(position, total)
    }

    /// Moves past the batch last returned by `next_header`.
    pub fn skip(&mut self) {
        if let Some((_, total)) = self.current.take() {
            self.position += total as u64;
        }
    }

    /// Checks the batch last returned: CRC, record count against lastOffsetDelta (in a cleaned
    /// segment, `cleaned`, at most the range: the cleaner removed records). The same
    /// integrity checks as `RecordBatch::validate` short of decoding every record: the CRC
    /// already covers every record byte, and every stored batch was fully validated before it
    /// was appended (or written by the cleaner from such a batch).
    pub fn verify_current(
        &mut self,
        header: &BatchHeader,
        cleaned: bool,
    ) -> std::io::Result<Result<(), String>> {
        let bytes = self.batch_bytes()?;
        let computed = compute_crc(bytes);
        if computed != header.crc {
            return Ok(Err(format!(
                "batch CRC mismatch: header says {:#010x}, data gives {computed:#010x}",
                header.crc
            )));
        }
        if !record_count_ok(header, cleaned) {
            return Ok(Err(format!(
                "record count {} does not match lastOffsetDelta {}",
                header.record_count, header.last_offset_delta
            )));
        }
        Ok(Ok(()))
    }
}

/// A batch's record count against its lastOffsetDelta: equal to the range, or (in a cleaned
/// segment) anywhere from 0 (a header-only placeholder) to the range.
pub(crate) fn record_count_ok(header: &BatchHeader, cleaned: bool) -> bool {
    if cleaned {
        header.last_offset_delta >= 0
            && header.record_count >= 0
            && header.record_count <= header.last_offset_delta.saturating_add(1)
    } else {
        header.record_count >= 1 && header.last_offset_delta == header.record_count - 1
    }
}
