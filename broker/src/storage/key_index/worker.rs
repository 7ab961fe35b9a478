//! Writing and rebuilding `.keys` files off the append path. One process-wide thread takes
//! jobs in order: writing a sealed segment's frozen table, or rebuilding the file of a
//! segment opened without a usable one (scanning its batches). Until a job is done the
//! segment answers from its frozen table, or by scanning: exact either way, only slower.
//! Tests and `PartitionLog::close` run the same steps synchronously (`run_now`).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use super::super::disk::Disk;
use super::super::error::StorageError;
use super::super::segment::{Segment, SCAN_CHUNK_BYTES};
use super::extract::for_each_key;
use super::file::{encode, keys_path, rename_into_place, write_aside, Expect, KeysFile};
use super::table::{ActiveTable, Place};
use super::KeyHash;

/// What a job needs besides its segment.
#[derive(Debug, Clone)]
pub(crate) struct IndexContext {
    pub disk: Arc<dyn Disk>,
    pub hash: KeyHash,
    pub decompressed_bytes_max: usize,
    /// Work goes to the worker thread (`false`: it waits for `sync`/`close`, deterministic
    /// tests' `SealMode::Deferred`).
    pub background: bool,
}

#[derive(Debug)]
struct Job {
    segment: Arc<Segment>,
    context: IndexContext,
}

#[derive(Debug, Default)]
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();
static STARTED: OnceLock<Result<(), String>> = OnceLock::new();

fn queue() -> &'static Queue {
    QUEUE.get_or_init(Queue::default)
}

/// Queues the `.keys` work of a closed segment (write its frozen table, or rebuild it): the
/// queue holds at most one job per closed segment (`SegmentKeys::claim_queued`), so it is
/// bounded by the segment count. If the thread cannot start, the work runs here and now.
pub(crate) fn enqueue(segment: &Arc<Segment>, context: &IndexContext) {
    if !segment.keys.claim_queued() {
        return;
    }
    let started = STARTED.get_or_init(|| {
        std::thread::Builder::new()
            .name("tidelog-keyindex".to_string())
            .spawn(run_worker)
            .map(|_| ())
            .map_err(|error| error.to_string())
    });
    let job = Job {
        segment: Arc::clone(segment),
        context: context.clone(),
    };
    if let Err(error) = started {
        tracing::warn!(%error, "no per-key index thread; writing the index in the caller");
        run_job(job);
        return;
    }
    let queue = queue();
    queue
        .jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push_back(job);
    queue.ready.notify_one();
}

/// Same as [`enqueue`]; the name says why at the call site (a segment sealed with a frozen
/// table).
pub(crate) fn enqueue_write(segment: &Arc<Segment>, context: &IndexContext) {
    enqueue(segment, context);
}

fn run_worker() {
    let queue = queue();
    loop {
        let job = {
            let mut jobs = queue.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            // Bounded wait loop: each wake-up either finds a job or waits again.
            loop {
                if let Some(job) = jobs.pop_front() {
                    break job;
                }
                jobs = queue.ready.wait(jobs).unwrap_or_else(PoisonError::into_inner);
            }
        };
        run_job(job);
    }
}

fn run_job(job: Job) {
    job.segment.keys.release_queued();
    scrub(&job.segment);
    if let Err(error) = run_now(&job.segment, &job.context) {
        tracing::error!(
            segment = %job.segment.paths.log.display(),
            %error,
            "could not write the per-key index of a segment; it is answered by scanning until the next open"
        );
    }
}

/// Checks every block of the file a segment uses; a damaged one is dropped (the segment is
/// answered by scanning) so `run_now` rebuilds it.
pub(crate) fn scrub(segment: &Segment) {
    let Some(file) = segment.keys.file() else {
        return;
    };
    if let Err(reason) = file.scrub() {
        tracing::error!(
            path = %file.path().display(),
            %reason,
            "per-key index file is damaged; rebuilding it from the log"
        );
        segment.keys.mark_unindexed();
    }
}

/// Does a closed segment's `.keys` work now: writes its frozen table, or rebuilds it from
/// the segment if it has neither table nor file. Nothing if it has its file, is active, was
/// deleted, or its log closed.
pub(crate) fn run_now(segment: &Arc<Segment>, context: &IndexContext) -> Result<(), StorageError> {
    let _writing = segment.keys.lock_writing();
    if !segment.keys.needs_file() {
        return Ok(());
    }
    let table = match segment.keys.frozen_table() {
        Some(table) => table,
        None => {
            let started = std::time::Instant::now();
            let table = Arc::new(rebuild_table(segment, context)?);
            tracing::info!(
                segment = %segment.paths.log.display(),
                records = table.records(),
                keys = table.distinct_keys(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "rebuilt the per-key index of a segment from its data"
            );
            table
        }
    };
    write_file(segment, &table, context)
}

/// Scans a segment's batches into a table.
pub(crate) fn rebuild_table(segment: &Segment, context: &IndexContext) -> Result<ActiveTable, StorageError> {
    let mut table = ActiveTable::new(context.hash);
    let end = segment.end();
    let mut scanner = segment.scanner(
        super::super::format::FILE_HEADER_BYTES as u64,
        end,
        SCAN_CHUNK_BYTES,
    );
    let base = segment.base_offset;
    // Bounded: every step moves past one batch of a finite range.
    loop {
        let Some((position, header)) = segment.next_batch(&mut scanner)? else {
            break;
        };
        let bytes = scanner
            .batch_bytes()
            .map_err(StorageError::io("reading", &segment.paths.log))?;
        let batch_position = u32::try_from(position).unwrap_or(u32::MAX);
        let batch_relative = header.base_offset - base;
        for_each_key(
            &header,
            bytes,
            context.decompressed_bytes_max,
            |offset_delta, record_start, key| {
                let relative_offset =
                    u32::try_from(batch_relative + i64::from(offset_delta)).unwrap_or(u32::MAX);
                table.insert(
                    key,
                    Place {
                        relative_offset,
                        batch_position,
                        record_start,
                    },
                );
            },
        )
        .map_err(|source| StorageError::Corrupt {
            path: segment.paths.log.clone(),
            detail: format!("batch at offset {} does not decode", header.base_offset),
            source: Some(source),
        })?;
        scanner.skip();
    }
    Ok(table)
}

/// Writes `table` as the segment's `.keys` file (aside, fdatasync, rename, directory sync)
/// and makes the segment use it.
fn write_file(segment: &Segment, table: &ActiveTable, context: &IndexContext) -> Result<(), StorageError> {
    let Some(dir) = segment.paths.log.parent() else {
        return Ok(());
    };
    let path = keys_path(dir, segment.base_offset);
    let expect = Expect {
        base_offset: segment.base_offset,
        next_offset: segment.next_offset(),
        log_bytes: segment.end(),
        hash: context.hash,
    };
    let bytes = encode(table, expect);
    let disk = &*context.disk;
    let temp = write_aside(disk, &path, &bytes)?;
    let mut reopen_error = None;
    let installed = segment.keys.install_file(|| {
        rename_into_place(disk, &temp, &path)?;
        match KeysFile::open(disk, &path, expect) {
            Ok(file) => Ok(file),
            Err(reason) => {
                reopen_error = Some(reason);
                Ok(None)
            }
        }
    })?;
    if !installed {
        // Deleted (or its log closed) while we wrote: nothing may appear beside it.
        if let Err(error) = disk.remove(&temp) {
            tracing::warn!(path = %temp.display(), %error, "could not remove an unused per-key index file");
        }
    }
    if let Some(reason) = reopen_error {
        tracing::error!(path = %path.display(), %reason, "a just-written per-key index file does not read back");
    }
    Ok(())
}
