//! `PartitionLog`: one partition's segmented log. Assigns offsets, appends, rolls segments,
//! group-commits fsyncs, publishes the high watermark, serves reads and timestamp lookups,
//! applies retention, and writes the clean-shutdown checkpoint.
//!
//! Concurrency: one writer at a time (the `writer` mutex); readers never take it. Readers load
//! the high watermark, then clone an `Arc` of the segment list, then `pread` shared file handles.
//! The writer publishes in the opposite order (bytes, segment end, list, high watermark), so a
//! reader that sees a high watermark can read every byte below it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

use super::config::{FlushPolicy, LogConfig};
use super::disk::{Disk, OsDisk};
use super::error::StorageError;
use super::format::{Checkpoint, OffsetEntry, TimeEntry, CHECKPOINT_FILE_NAME, TEMP_SUFFIX};
use super::key_index::{self, IndexContext};
use super::producer_snapshot::{self, ProducerStateRecovery, SNAPSHOTS_RETAINED};
use super::producer_state::{ProducerLimits, ProducerStateMap};
use super::recovery::{recover, remove_segment_files, RecoveryReport};
use super::segment::{read_lock, write_lock, Segment};
use super::stream_marks::StreamMarks;

mod admin;
mod append;
mod clean;
mod durability;
mod marks;
mod read;
mod roll;
mod streams;

pub(crate) use admin::LOG_START_FILE_NAME;
pub use admin::LOG_START_HIGH_WATERMARK;
pub use durability::SyncOn;
#[allow(unused_imports)] // the cleaner's
pub(crate) use marks::SegmentsHolding;

/// Index entries buffered in memory before the writer appends them to the index files. The
/// active segment's index is rebuilt from the data after a crash, so these need no fsync.
const PENDING_INDEX_ENTRIES_MAX: usize = 256;
/// The append buffer is kept between calls up to this capacity; a bigger one is freed after
/// the append, so an idle partition holds at most a page (10,000 partitions: 40 MiB at most),
/// never the 16 MiB of its largest batch. The copy itself is charged to the server's memory
/// budget while the append runs.
const APPEND_BUFFER_RETAINED_BYTES: usize = 4 << 10;

/// Offsets assigned by one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    /// Every batch was a retry of batches this producer already appended: nothing was written,
    /// and `base_offset`/`last_offset` are the offsets those batches got the first time.
    pub duplicate: bool,
}

/// Whole batches returned by a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub rolled: bool,
}

/// One topic partition's log. Share it as `Arc<PartitionLog>`; every method takes `&self`.
#[derive(Debug)]
pub struct PartitionLog {
    inner: Arc<Inner>,
}

/// Who seals closed segments under `Interval` and `Never` (under `Always` the roll does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealMode {
    /// A background thread, started by a roll.
    Background,
    /// Only `sync` and `close`.
    #[cfg_attr(not(test), allow(dead_code))]
    Deferred,
}

#[derive(Debug, Clone, Copy)]
struct Durable {
    /// Everything below this offset is fdatasync'ed.
    offset: i64,
    /// Bumped when a group commit finishes, successful or not, to wake waiters.
    generation: u64,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Replaced whole by `alter_config` (its flush policy never changes once open); readers
    /// take an `Arc` of it once per operation.
    config: RwLock<Arc<LogConfig>>,
    /// The log start a `DeleteRecords`/`topic trim` advanced to (0: none), persisted in the
    /// partition's log-start file; the log start is the higher of it and the first segment's
    /// base offset.
    log_start_floor: AtomicI64,
    disk: Arc<dyn Disk>,
    writer: Mutex<Writer>,
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    high_watermark: AtomicI64,
    log_start_offset: AtomicI64,
    high_watermark_tx: watch::Sender<i64>,
    durable_tx: watch::Sender<Durable>,
    sync_in_progress: AtomicBool,
    /// Serialises maintenance passes and close, which both delete or describe whole files.
    maintenance: Mutex<()>,
    seal_mode: SealMode,
    sealer_running: AtomicBool,
    /// Serialises sealing between the background sealer and sync/close.
    seal_lock: Mutex<()>,
    failure: Mutex<Option<String>>,
    closed: AtomicBool,
    log_syncs: AtomicU64,
    report: RecoveryReport,
    producer_recovery: ProducerStateRecovery,
    /// Per-key truncations and erasures (`stream_marks.rs`); changed only in `log/marks.rs`.
    marks: StreamMarks,
    /// The cleaner's state (`log/clean.rs`).
    cleaner: clean::CleanerState,
}

#[derive(Debug)]
struct Writer {
    active: Arc<Segment>,
    buffer: Vec<u8>,
    entries: Vec<(OffsetEntry, TimeEntry)>,
    /// An append used `buffer` since the last `release_idle_buffers`.
    buffer_used: bool,
    /// Idempotent producer state: checked and changed only in `append`, under this lock.
    producers: ProducerStateMap,
    producer_limits: ProducerLimits,
    /// Offsets of the producer state snapshots on disk, oldest first.
    snapshots: Vec<i64>,
}

impl PartitionLog {
    /// Opens (creating if absent) the partition directory and runs recovery.
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, StorageError> {
        Self::open_with_disk(dir, config, Arc::new(OsDisk))
    }

    /// Opens the log on any [`Disk`]; tests pass a simulated disk that can crash.
    pub fn open_with_disk(
        dir: &Path,
        config: LogConfig,
        disk: Arc<dyn Disk>,
    ) -> Result<PartitionLog, StorageError> {
        Self::open_with_seal_mode(dir, config, disk, SealMode::Background)
    }

    /// `SealMode::Deferred` makes tests deterministic: closed segments stay unsealed (and so
    /// exposed to crashes) until `sync` or `close`.
    pub(crate) fn open_with_seal_mode(
        dir: &Path,
        config: LogConfig,
        disk: Arc<dyn Disk>,
        seal_mode: SealMode,
    ) -> Result<PartitionLog, StorageError> {
        config.validate()?;
        let rolls_seal_first = config.flush == FlushPolicy::Always;
        // Before recovery looks at the directory: an interrupted cleaner swap is rolled
        // forward (or its leftovers removed), so recovery sees old segments or new, never both.
        let cleaner = clean::CleanerState::open(&*disk, dir)?;
        let (segments, report) = recover(&*disk, dir, config.index_interval_bytes, rolls_seal_first)?;
        tracing::info!(dir = %dir.display(), ?report, "partition log recovered");
        let segments: Vec<Arc<Segment>> = segments.into_iter().map(Arc::new).collect();
        let (Some(first), Some(active)) = (segments.first(), segments.last()) else {
            // recover() always returns at least one segment.
            return Err(StorageError::corrupt(dir, "recovery produced no segment"));
        };
        let log_start_floor = admin::read_log_start_floor(&*disk, dir, active.next_offset())?;
        let log_start_offset = first.base_offset.max(log_start_floor);
        let active = Arc::clone(active);
        active.set_active(true)?;
        let index_context = IndexContext {
            disk: Arc::clone(&disk),
            hash: config.key_hash,
            decompressed_bytes_max: config.decompressed_bytes_max,
            background: seal_mode == SealMode::Background,
        };
        streams::open_key_index(dir, &segments, &index_context)?;
        let producer_limits = config.producer_limits;
        // Replayed headers get the open time as their broker append time (see rebuild).
        let (producers, snapshots, producer_recovery) = producer_snapshot::rebuild(
            &*disk,
            dir,
            &segments,
            producer_limits.producers_max,
            crate::clock::now_ms(),
        )?;
        tracing::info!(dir = %dir.display(), ?producer_recovery, "producer state rebuilt");
        // recover() synced the active segment, so everything recovered is durable and visible.
        let next_offset = active.next_offset();
        let (marks, marks_lowered) = StreamMarks::open(&*disk, dir, next_offset)?;
        let (high_watermark_tx, _) = watch::channel(next_offset);
        let (durable_tx, _) = watch::channel(Durable {
            offset: next_offset,
            generation: 0,
        });
        let log = PartitionLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                config: RwLock::new(Arc::new(config)),
                log_start_floor: AtomicI64::new(log_start_floor),
                disk,
                writer: Mutex::new(Writer {
                    active,
                    buffer: Vec::new(),
                    entries: Vec::new(),
                    buffer_used: false,
                    producers,
                    producer_limits,
                    snapshots,
                }),
                segments: RwLock::new(Arc::new(segments)),
                high_watermark: AtomicI64::new(next_offset),
                log_start_offset: AtomicI64::new(log_start_offset),
                high_watermark_tx,
                durable_tx,
                sync_in_progress: AtomicBool::new(false),
                maintenance: Mutex::new(()),
                seal_mode,
                sealer_running: AtomicBool::new(false),
                seal_lock: Mutex::new(()),
                failure: Mutex::new(None),
                closed: AtomicBool::new(false),
                log_syncs: AtomicU64::new(0),
                report,
                producer_recovery,
                marks,
                cleaner,
            }),
        };
        if marks_lowered {
            // Before any append: offsets a crash freed are assigned again from now on.
            log.inner.settle_marks()?;
        }
        log.inner.kick_key_index();
        Ok(log)
    }

    /// What recovery found, truncated and rebuilt when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// How the idempotent producer state was rebuilt when this log was opened.
    pub fn producer_state_recovery(&self) -> &ProducerStateRecovery {
        &self.inner.producer_recovery
    }

    /// The configuration the log runs with now (`alter_config` replaces it).
    pub fn config(&self) -> Arc<LogConfig> {
        self.inner.config()
    }

    /// Sets the bounds of the producer state (the broker passes its configuration; the
    /// defaults are [`ProducerLimits::default`]). A lower `producers_max` takes effect as new
    /// producers arrive.
    pub fn set_producer_limits(&self, limits: ProducerLimits) -> Result<(), StorageError> {
        self.inner.lock_writer()?.producer_limits = limits;
        Ok(())
    }

    /// Producers whose state this partition holds now.
    pub fn producer_count(&self) -> Result<usize, StorageError> {
        Ok(self.inner.lock_writer()?.producers.len())
    }

    /// The highest producer id this partition ever appended a batch of (-1: none), from its
    /// snapshots and batch headers: the broker's producer-id counter must stay above it.
    pub fn producer_id_max(&self) -> Result<i64, StorageError> {
        Ok(self.inner.lock_writer()?.producers.producer_id_max())
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Whether anything written is not fdatasync'ed yet, or a closed segment is not sealed:
    /// whether [`sync`](Self::sync) has work to do.
    pub fn has_unsynced_data(&self) -> bool {
        let inner = &self.inner;
        inner.durable_tx.borrow().offset < inner.written_next_offset() || inner.has_unsealed_closed_segments()
    }

    /// Frees the append buffer if no append used it since the last call (maintenance calls it
    /// every pass), so a partition that went idle keeps no copy buffer however large its last
    /// append was. Never waits: a busy writer keeps its buffer.
    pub fn release_idle_buffers(&self) {
        let Ok(mut writer) = self.inner.writer.try_lock() else {
            return;
        };
        if writer.buffer_used {
            writer.buffer_used = false;
        } else if writer.buffer.capacity() > 0 {
            writer.buffer = Vec::new();
            writer.entries = Vec::new();
        }
    }

    /// Last visible offset + 1.
    pub fn high_watermark(&self) -> i64 {
        self.inner.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.inner.log_start_offset.load(Ordering::Acquire)
    }

    /// A watch channel whose value is the high watermark; it changes whenever the visible high
    /// watermark moves (long-poll fetches wait on it).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.inner.high_watermark_tx.subscribe()
    }

    /// First offset whose record timestamp is >= `timestamp_ms`, with that record's
    /// timestamp; `None` if no visible record is that new.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let high_watermark = self.inner.high_watermark.load(Ordering::Acquire);
        let floor = self.inner.log_start_floor.load(Ordering::Acquire);
        let segments = self.inner.segments_snapshot();
        for segment in segments.iter() {
            if segment.base_offset >= high_watermark {
                break;
            }
            if segment.next_offset() <= floor {
                continue;
            }
            if segment.max_timestamp() < timestamp_ms {
                continue;
            }
            if let Some((offset, timestamp)) = segment.find_timestamp(timestamp_ms, high_watermark)? {
                // Below a trimmed log start the record is unreadable: the answer is the log
                // start (the found record's timestamp stands in for the first readable one's).
                return Ok(Some((offset.max(floor), timestamp)));
            }
        }
        Ok(None)
    }

    /// The newest record timestamp of the readable log (above a trimmed log start), and the
    /// first offset carrying it (Kafka's ListOffsets max-timestamp query); `None` when no
    /// readable record has a timestamp.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, StorageError> {
        let high_watermark = self.inner.high_watermark.load(Ordering::Acquire);
        let floor = self.inner.log_start_floor.load(Ordering::Acquire);
        let newest = self
            .inner
            .segments_snapshot()
            .iter()
            .filter(|segment| segment.base_offset < high_watermark && segment.next_offset() > floor)
            .map(|segment| segment.max_timestamp())
            .max()
            .filter(|newest| *newest != super::segment::NO_TIMESTAMP);
        match newest {
            // The first record at or after the newest time is the first one carrying it.
            Some(newest) => self.offset_for_timestamp(newest),
            None => Ok(None),
        }
    }

    /// Rolls the active segment if it is too old, then deletes closed segments past retention:
    /// from the oldest, while the newest record of the segment is older than `retention_ms`
    /// or the partition is larger than `retention_bytes` (only when `cleanup_policy` deletes),
    /// or the segment lies wholly below a trimmed log start (any policy). Never deletes the
    /// active segment.
    pub fn run_maintenance(&self, now_ms: i64) -> Result<MaintenanceOutcome, StorageError> {
        let inner = &self.inner;
        inner.check_writable()?;
        let _maintenance = lock_ignoring_poison(&inner.maintenance);
        let mut outcome = MaintenanceOutcome::default();
        let config = inner.config();
        let log_start_floor = inner.log_start_floor.load(Ordering::Acquire);
        let victims = {
            let mut writer = inner.lock_writer()?;
            let active = &writer.active;
            if !active.is_empty() && now_ms.saturating_sub(active.first_batch_timestamp()) > config.segment_ms
            {
                inner.roll(&mut writer)?;
                outcome.rolled = true;
            }
            let segments = inner.segments_snapshot();
            let mut total_bytes: u64 = segments.iter().map(|segment| segment.end()).sum();
            let closed = &segments[..segments.len().saturating_sub(1)];
            let mut victims = 0;
            // A compact-only log keeps every closed segment (the cleaner shrinks them); only a
            // trim removes its segments.
            let retains = config.cleanup_policy.deletes();
            for segment in closed {
                let expired = retains
                    && config.retention_ms >= 0
                    && now_ms.saturating_sub(segment.max_timestamp()) > config.retention_ms;
                let oversized = retains
                    && config.retention_bytes >= 0
                    && total_bytes > config.retention_bytes.unsigned_abs();
                // Wholly below the log start a trim advanced to: unreadable already.
                let trimmed = segment.next_offset() <= log_start_floor;
                if !(expired || oversized || trimmed) {
                    break;
                }
                total_bytes -= segment.end();
                victims += 1;
            }
            let remaining = &segments[victims..];
            // The oldest offset still in a segment file; the reported log start may be above
            // it (a trim), but producer snapshots follow the files.
            let segments_start = remaining.first().map_or(0, |segment| segment.base_offset);
            if victims > 0 {
                *write_lock(&inner.segments) = Arc::new(remaining.to_vec());
                inner
                    .log_start_offset
                    .store(segments_start.max(log_start_floor), Ordering::Release);
            }
            let log_start_offset = segments_start;
            let Writer {
                producers,
                producer_limits,
                snapshots,
                ..
            } = &mut *writer;
            let expired = producers.expire(now_ms, producer_limits.producer_idle_ms);
            if expired > 0 {
                tracing::info!(dir = %inner.dir.display(), expired, "forgot idle producers");
            }
            // Snapshots below the log start describe deleted segments; they go with them.
            let stale = snapshots.partition_point(|offset| *offset < log_start_offset);
            let stale: Vec<i64> = snapshots.drain(..stale).collect();
            for offset in stale {
                producer_snapshot::remove_snapshot(&*inner.disk, &inner.dir, offset)?;
            }
            segments[..victims].to_vec()
        };
        // Files are unlinked outside the writer lock: unlinking a large file can take a while.
        // Readers holding an older snapshot keep reading through their open handles.
        for segment in &victims {
            tracing::info!(
                base_offset = segment.base_offset,
                bytes = segment.end(),
                "deleting segment past retention"
            );
            // First, so a `.keys` file being written for it is never renamed into place after
            // the segment's files are gone (it would be an orphan).
            segment.keys.mark_deleted();
            remove_segment_files(&*inner.disk, &inner.dir, segment.base_offset)?;
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += segment.size_bytes();
        }
        if !victims.is_empty() {
            inner.sync_dir()?;
        }
        Ok(outcome)
    }

    /// fdatasyncs whatever is unsynced (the interval flush task and shutdown use it) and, under
    /// `Always`, makes it visible.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.inner.check_failure()?;
        self.inner.seal_pending()?;
        if self.inner.seal_mode == SealMode::Deferred {
            self.inner.key_index_now(false)?;
        }
        self.inner.sync_active(true).map(|_synced_bytes| ())
    }

    /// Clean shutdown: sync, then write a checksummed clean-shutdown checkpoint so the next
    /// open can skip scanning the active segment. Later writes fail with `Closed`.
    pub fn close(&self) -> Result<(), StorageError> {
        let inner = &*self.inner;
        let _maintenance = lock_ignoring_poison(&inner.maintenance);
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        inner.check_failure()?;
        inner.seal_pending()?;
        // Frozen tables are written now (a clean restart then rebuilds nothing); segments
        // still unindexed are rebuilt after the next open, in the background.
        inner.key_index_now(inner.seal_mode == SealMode::Background)?;
        let writer = inner.lock_writer()?;
        let active = Arc::clone(&writer.active);
        // The checkpoint records the data file's length: it must end at the data.
        active.trim_preallocation()?;
        active.flush_index_entries()?;
        inner.sync_segment(&active, true)?;
        streams::write_active_table(&inner.dir, &active, &inner.index_context());
        inner.publish_durable(active.next_offset());
        // The producer state at the very end, so the next open replays nothing.
        producer_snapshot::write_snapshot(
            &*inner.disk,
            &inner.dir,
            &writer.producers,
            active.next_offset(),
            true,
        )?;
        let segments = inner.segments_snapshot();
        let (offset_index_bytes, time_index_bytes) = active.index_file_bytes();
        let checkpoint = Checkpoint {
            segment_count: u32::try_from(segments.len()).unwrap_or(u32::MAX),
            log_start_offset: segments
                .first()
                .map_or(active.base_offset, |segment| segment.base_offset),
            active_base_offset: active.base_offset,
            next_offset: active.next_offset(),
            log_bytes: active.end(),
            offset_index_bytes,
            time_index_bytes,
        };
        // Written aside, synced, then renamed into place: the checkpoint is either whole or
        // absent, never half-written.
        let path = inner.dir.join(CHECKPOINT_FILE_NAME);
        let temp = inner.dir.join(format!("{CHECKPOINT_FILE_NAME}{TEMP_SUFFIX}"));
        let file = inner
            .disk
            .open(&temp, true)
            .map_err(StorageError::io("creating", &temp))?;
        file.set_len(0).map_err(StorageError::io("truncating", &temp))?;
        file.write_all_at(&checkpoint.encode(), 0)
            .map_err(StorageError::io("writing", &temp))?;
        file.sync_data().map_err(StorageError::io("syncing", &temp))?;
        inner
            .disk
            .rename(&temp, &path)
            .map_err(StorageError::io("renaming", &temp))?;
        inner.sync_dir()?;
        for segment in segments.iter() {
            segment.keys.set_closed();
        }
        drop(writer);
        Ok(())
    }

    /// Bytes of all segment files (data and indexes).
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .segments_snapshot()
            .iter()
            .map(|segment| segment.size_bytes())
            .sum()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> usize {
        self.inner.segments_snapshot().len()
    }

    #[cfg(test)]
    pub(crate) fn append_buffer_capacity_for_test(&self) -> usize {
        self.inner
            .writer
            .lock()
            .map_or(0, |writer| writer.buffer.capacity())
    }

    #[cfg(test)]
    pub(crate) fn segments_for_test(&self) -> Arc<Vec<Arc<Segment>>> {
        self.inner.segments_snapshot()
    }

    /// fdatasync calls made on data files since open (group commit makes this much smaller
    /// than the number of appends under `Always`).
    pub fn log_sync_count(&self) -> u64 {
        self.inner.log_syncs.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>, StorageError> {
        self.writer.lock().map_err(|_| StorageError::Poisoned {
            reason: "a writer panicked while appending".to_string(),
        })
    }

    fn check_failure(&self) -> Result<(), StorageError> {
        match &*lock_ignoring_poison(&self.failure) {
            Some(reason) => Err(StorageError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        self.check_failure()
    }

    fn poison(&self, reason: String) {
        tracing::error!(dir = %self.dir.display(), %reason, "partition log failed; refusing further writes");
        let mut failure = lock_ignoring_poison(&self.failure);
        if failure.is_none() {
            *failure = Some(reason);
        }
    }

    fn config(&self) -> Arc<LogConfig> {
        Arc::clone(&read_lock(&self.config))
    }

    fn segments_snapshot(&self) -> Arc<Vec<Arc<Segment>>> {
        Arc::clone(&read_lock(&self.segments))
    }

    fn written_next_offset(&self) -> i64 {
        self.segments_snapshot()
            .last()
            .map_or(0, |segment| segment.next_offset())
    }

    fn sync_dir(&self) -> Result<(), StorageError> {
        self.disk
            .sync_dir(&self.dir)
            .map_err(StorageError::io("syncing directory", &self.dir))
    }

    /// Writes the producer state as of `next_offset` (not synced: see `write_snapshot`) and
    /// deletes snapshots beyond [`SNAPSHOTS_RETAINED`]. A failure only costs a longer replay at
    /// the next open, so it is logged, not returned.
    fn snapshot_producers(&self, writer: &mut Writer, next_offset: i64) {
        let written =
            producer_snapshot::write_snapshot(&*self.disk, &self.dir, &writer.producers, next_offset, false);
        if let Err(error) = written {
            tracing::warn!(dir = %self.dir.display(), %error, "could not write a producer state snapshot");
            return;
        }
        writer.snapshots.retain(|offset| *offset != next_offset);
        writer.snapshots.push(next_offset);
        while writer.snapshots.len() > SNAPSHOTS_RETAINED {
            let oldest = writer.snapshots.remove(0);
            if let Err(error) = producer_snapshot::remove_snapshot(&*self.disk, &self.dir, oldest) {
                tracing::warn!(dir = %self.dir.display(), %error, "could not delete an old producer state snapshot");
            }
        }
    }

    fn seal_segment(&self, segment: &Arc<Segment>) -> Result<(), StorageError> {
        match segment.seal() {
            Ok(syncs) => {
                self.log_syncs.fetch_add(syncs, Ordering::Relaxed);
                // Only a sealed segment gets its `.keys` file: it describes synced data.
                if self.seal_mode == SealMode::Background {
                    key_index::enqueue_write(segment, &self.index_context());
                }
                Ok(())
            }
            Err(error) => {
                if error.is_reopen_failure() {
                    tracing::warn!(dir = %self.dir.display(), %error, "sealing postponed: a segment file could not be reopened");
                } else {
                    self.poison(format!("sealing segment {} failed: {error}", segment.base_offset));
                }
                Err(error)
            }
        }
    }

    /// Seals every closed segment not sealed yet, oldest first.
    fn seal_pending(&self) -> Result<(), StorageError> {
        let _sealing = lock_ignoring_poison(&self.seal_lock);
        let segments = self.segments_snapshot();
        for segment in &segments[..segments.len().saturating_sub(1)] {
            if !segment.is_sealed() {
                self.seal_segment(segment)?;
            }
        }
        Ok(())
    }

    fn has_unsealed_closed_segments(&self) -> bool {
        let segments = self.segments_snapshot();
        segments[..segments.len().saturating_sub(1)]
            .iter()
            .any(|segment| !segment.is_sealed())
    }

    /// Starts the background sealer unless it is running (it then picks up the new segment
    /// itself). At most one sealer thread per log; it exits when nothing is left to seal.
    fn kick_sealer(self: &Arc<Self>) {
        if self.seal_mode == SealMode::Deferred || self.sealer_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("tidelog-sealer".to_string())
            .spawn(move || loop {
                if let Err(error) = inner.seal_pending() {
                    tracing::error!(dir = %inner.dir.display(), %error, "background segment sealing failed");
                }
                inner.sealer_running.store(false, Ordering::Release);
                // A roll between our last look and clearing the flag found it set and left the
                // new segment to us: look again.
                if inner.check_failure().is_err()
                    || !inner.has_unsealed_closed_segments()
                    || inner.sealer_running.swap(true, Ordering::AcqRel)
                {
                    break;
                }
            });
        if let Err(error) = spawned {
            // Not fatal: sync(), close() and the next roll seal what is left.
            self.sealer_running.store(false, Ordering::Release);
            tracing::warn!(%error, "could not start the segment sealer thread");
        }
    }
}

/// An error and its causes in one line, for logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // Bounded: error chains are a handful of links long.
    for _ in 0..16 {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Used for locks whose data stays consistent even if a holder panicked (a unit or an
    // Option set once).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
