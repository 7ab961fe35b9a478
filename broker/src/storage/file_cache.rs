//! Segment files as a bounded resource: a broker-wide cache of open file descriptors in front
//! of any [`Disk`]. Every file the storage engine opens is known to the cache, but only a bounded
//! number of them hold a descriptor at a time; the others are reopened on demand, evicting the
//! least recently used. A closed segment therefore costs memory, not a descriptor.
//!
//! A file can be *kept open* (pinned): the active segment's data file is, because every append
//! writes it and every group commit syncs it, so the produce path never reopens a file, never
//! takes the cache lock and never meets EMFILE. Everything else (closed segments, every index
//! file, snapshots) goes through the cache.
//!
//! Why closing a descriptor is safe for durability: on Linux, `fdatasync` on any descriptor of
//! a file writes back every dirty page of that file, whichever descriptor wrote it, and a
//! writeback error nobody has seen yet is reported to descriptors opened after it (errseq
//! since Linux 4.16). So data written through an evicted descriptor is synced, with errors
//! reported, by a later sync through a reopened one.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use super::disk::{Disk, SegmentFile};
use super::format::{parse_segment_file_name, FileKind};

/// A file the cache had closed could not be opened again (EMFILE, the file gone). Nothing was
/// read, written or synced: the operation can be retried, and unlike a failed fsync it says
/// nothing about data already written.
#[derive(Debug, thiserror::Error)]
#[error("could not reopen a segment file whose descriptor the file cache had closed: {source}")]
pub struct ReopenError {
    #[source]
    pub source: io::Error,
}

/// Whether `error` is a [`ReopenError`].
pub fn is_reopen_failure(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<ReopenError>())
}

/// The bounds of one cache, derived from the broker's descriptor budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCacheLimits {
    /// Descriptors the cache may hold in all, kept-open files included.
    pub descriptors_max: usize,
    /// At most this many files open through the cache besides the kept-open ones, even when
    /// the budget would allow more (`limits.open_segment_files_max`).
    pub open_files_max: usize,
    /// The cache keeps at least this many, whatever the kept-open files take
    /// (`limits.open_segment_files_min`); the broker refuses partitions before that happens.
    pub open_files_min: usize,
    /// Segment files (data and index) known at once, open or not: creating one more fails
    /// (`limits.segment_files_max`).
    pub segment_files_max: usize,
}

impl FileCacheLimits {
    /// Bounds for tests and tools: at most `open_files` open files, no other limit.
    pub fn with_open_files(open_files: usize) -> Self {
        Self {
            descriptors_max: usize::MAX,
            open_files_max: open_files,
            open_files_min: open_files.min(1),
            segment_files_max: usize::MAX,
        }
    }
}

/// Counters of a cache, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCacheStats {
    /// Files open through the cache now (not counting kept-open ones).
    pub open: usize,
    /// Files kept open (active segments' data files).
    pub kept_open: usize,
    /// Files known, open or not.
    pub files: usize,
    /// Segment files known (the number `segment_files_max` bounds).
    pub segment_files: usize,
    /// How many open files the cache allows now.
    pub capacity: usize,
    /// Descriptors closed to make room since start.
    pub evictions: u64,
    /// Files opened again after an eviction since start.
    pub reopens: u64,
}

/// The shared cache. Create one per broker with [`FileCache::new`] and open files through
/// [`FileCache::disk`].
#[derive(Debug)]
pub struct FileCache {
    inner: Arc<dyn Disk>,
    limits: FileCacheLimits,
    state: Mutex<CacheState>,
    next_key: AtomicU64,
    files: AtomicUsize,
    segment_files: AtomicUsize,
    kept_open: AtomicUsize,
    evictions: AtomicU64,
    reopens: AtomicU64,
}

/// Open, evictable descriptors in least-recently-used order.
#[derive(Debug, Default)]
struct CacheState {
    tick: u64,
    open: HashMap<u64, (Arc<dyn SegmentFile>, u64)>,
    /// tick -> key, oldest first.
    order: BTreeMap<u64, u64>,
}

impl CacheState {
    fn touch(&mut self, key: u64) -> Option<Arc<dyn SegmentFile>> {
        let (file, tick) = self.open.get_mut(&key)?;
        self.order.remove(tick);
        self.tick += 1;
        *tick = self.tick;
        self.order.insert(self.tick, key);
        Some(Arc::clone(file))
    }

    fn insert(&mut self, key: u64, file: Arc<dyn SegmentFile>) -> Arc<dyn SegmentFile> {
        if let Some(existing) = self.touch(key) {
            // Another thread reopened it meanwhile: keep one descriptor, drop ours.
            return existing;
        }
        self.tick += 1;
        self.open.insert(key, (Arc::clone(&file), self.tick));
        self.order.insert(self.tick, key);
        file
    }

    fn remove(&mut self, key: u64) -> Option<Arc<dyn SegmentFile>> {
        let (file, tick) = self.open.remove(&key)?;
        self.order.remove(&tick);
        Some(file)
    }

    /// Takes the least recently used descriptors out until at most `keep` remain. The caller
    /// drops them (closing them) after releasing the lock.
    fn evict_to(&mut self, keep: usize) -> Vec<Arc<dyn SegmentFile>> {
        let mut victims = Vec::new();
        while self.open.len() > keep {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some((file, _)) = self.open.remove(&key) {
                victims.push(file);
            }
        }
        victims
    }
}

fn lock(state: &Mutex<CacheState>) -> MutexGuard<'_, CacheState> {
    // Every change to the state is a single map operation pair that cannot panic half-way
    // in a way that breaks it, so a poisoned lock still guards a usable state.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_out_of_descriptors(error: &io::Error) -> bool {
    let code = error.raw_os_error();
    code == Some(nix::errno::Errno::EMFILE as i32) || code == Some(nix::errno::Errno::ENFILE as i32)
}

/// Files one segment has: its data file, two offset/time indexes and its per-key index.
const FILES_PER_SEGMENT: usize = 4;

fn segment_file_kind(path: &Path) -> Option<FileKind> {
    let name = path.file_name()?.to_str()?;
    parse_segment_file_name(name).map(|(_, kind)| kind)
}

impl FileCache {
    pub fn new(inner: Arc<dyn Disk>, limits: FileCacheLimits) -> Arc<Self> {
        Arc::new(Self {
            inner,
            limits,
            state: Mutex::new(CacheState::default()),
            next_key: AtomicU64::new(0),
            files: AtomicUsize::new(0),
            segment_files: AtomicUsize::new(0),
            kept_open: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
        })
    }

    /// The [`Disk`] whose files go through this cache.
    pub fn disk(self: &Arc<Self>) -> Arc<dyn Disk> {
        Arc::new(CachedDisk {
            cache: Arc::clone(self),
        })
    }

    pub fn limits(&self) -> FileCacheLimits {
        self.limits
    }

    /// How many files may be open through the cache now: what the budget leaves after the
    /// kept-open files, within the configured bounds.
    pub fn capacity(&self) -> usize {
        let left = self
            .limits
            .descriptors_max
            .saturating_sub(self.kept_open.load(Ordering::Acquire));
        left.min(self.limits.open_files_max)
            .max(self.limits.open_files_min)
    }

    pub fn stats(&self) -> FileCacheStats {
        let open = lock(&self.state).open.len();
        FileCacheStats {
            open,
            kept_open: self.kept_open.load(Ordering::Acquire),
            files: self.files.load(Ordering::Acquire),
            segment_files: self.segment_files.load(Ordering::Acquire),
            capacity: self.capacity(),
            evictions: self.evictions.load(Ordering::Relaxed),
            reopens: self.reopens.load(Ordering::Relaxed),
        }
    }

    /// Closes least recently used descriptors until `keep` remain.
    fn evict_to(&self, keep: usize) {
        let victims = lock(&self.state).evict_to(keep);
        self.evictions.fetch_add(victims.len() as u64, Ordering::Relaxed);
        // Dropped here, outside the lock: the last reference closes the descriptor (an
        // in-flight read holding a clone keeps it open until it finishes).
        drop(victims);
    }

    /// Opens `path` on the inner disk after making room, so the cache itself never takes the
    /// process past its budget. If the process is out of descriptors anyway (something else
    /// took them), half the cache is closed and the open tried once more.
    fn open_inner(&self, path: &Path, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        self.evict_to(self.capacity().saturating_sub(1));
        match self.inner.open(path, create) {
            Err(error) if is_out_of_descriptors(&error) => {
                let open = lock(&self.state).open.len();
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    open,
                    "out of file descriptors opening a segment file; closing half the file cache and retrying"
                );
                self.evict_to(open / 2);
                self.inner.open(path, create)
            }
            result => result,
        }
    }

    /// The open descriptor of file `key`, reopening it if it was evicted.
    fn get(&self, key: u64, path: &Path) -> io::Result<Arc<dyn SegmentFile>> {
        if let Some(file) = lock(&self.state).touch(key) {
            return Ok(file);
        }
        let file = self
            .open_inner(path, false)
            .map_err(|source| io::Error::new(source.kind(), ReopenError { source }))?;
        self.reopens.fetch_add(1, Ordering::Relaxed);
        let file = lock(&self.state).insert(key, file);
        self.evict_to(self.capacity());
        Ok(file)
    }

    fn release(&self, key: u64, segment_file: bool) {
        let file = lock(&self.state).remove(key);
        drop(file);
        self.files.fetch_sub(1, Ordering::AcqRel);
        if segment_file {
            self.segment_files.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The [`Disk`] of a [`FileCache`]: directory operations go straight to the inner disk; files
/// come back as [`CachedFile`]s.
#[derive(Debug)]
struct CachedDisk {
    cache: Arc<FileCache>,
}

impl Disk for CachedDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.cache.inner.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.cache.inner.list(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        let cache = &self.cache;
        let kind = segment_file_kind(path);
        let segment_file = kind.is_some();
        if segment_file {
            let known = cache.segment_files.fetch_add(1, Ordering::AcqRel);
            // Only a new segment is refused, at its first file (the data file), with room
            // left for its indexes: files already on disk must open (recovery also recreates
            // missing indexes), or their data would be unreachable.
            if create
                && kind == Some(FileKind::Log)
                && known + FILES_PER_SEGMENT > cache.limits.segment_files_max
            {
                cache.segment_files.fetch_sub(1, Ordering::AcqRel);
                return Err(io::Error::other(format!(
                    "the broker already holds its maximum of {} segment files (limits.segment_files_max)",
                    cache.limits.segment_files_max
                )));
            }
        }
        let file = match cache.open_inner(path, create) {
            Ok(file) => file,
            Err(error) => {
                if segment_file {
                    cache.segment_files.fetch_sub(1, Ordering::AcqRel);
                }
                return Err(error);
            }
        };
        cache.files.fetch_add(1, Ordering::AcqRel);
        let key = cache.next_key.fetch_add(1, Ordering::Relaxed);
        lock(&cache.state).insert(key, file);
        cache.evict_to(cache.capacity());
        Ok(Arc::new(CachedFile {
            key,
            path: path.to_path_buf(),
            segment_file,
            cache: Arc::clone(cache),
            kept_open: RwLock::new(None),
        }))
    }

    /// Read-only handles are for inspection (recovery's scans, checkpoints): held for the
    /// length of one function, not cached. Room is made first, so they stay within the
    /// budget's slack for descriptors in flight.
    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn SegmentFile>> {
        let cache = &self.cache;
        cache.evict_to(cache.capacity().saturating_sub(1));
        cache.inner.open_read_only(path)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.cache.inner.remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.cache.inner.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.cache.inner.sync_dir(dir)
    }
}

/// A file whose descriptor the cache may close and reopen. Operations through it reopen it
/// transparently; a reopen that fails (EMFILE, the file gone) fails that one operation with an
/// I/O error and leaves the file usable for the next.
#[derive(Debug)]
struct CachedFile {
    key: u64,
    path: PathBuf,
    segment_file: bool,
    cache: Arc<FileCache>,
    /// The descriptor while the file is kept open, outside the cache (no cache lock on the
    /// active segment's append path).
    kept_open: RwLock<Option<Arc<dyn SegmentFile>>>,
}

impl CachedFile {
    fn handle(&self) -> io::Result<Arc<dyn SegmentFile>> {
        if let Some(file) = &*self.kept_open.read().unwrap_or_else(PoisonError::into_inner) {
            return Ok(Arc::clone(file));
        }
        self.cache.get(self.key, &self.path)
    }
}

impl SegmentFile for CachedFile {
    fn len(&self) -> io::Result<u64> {
        self.handle()?.len()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.handle()?.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.handle()?.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.handle()?.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.handle()?.sync_data()
    }

    fn keep_open(&self, keep: bool) -> io::Result<()> {
        let cache = &self.cache;
        // The Option only ever holds a whole value, so a poisoned lock is still consistent.
        let mut kept = self.kept_open.write().unwrap_or_else(PoisonError::into_inner);
        match (keep, kept.is_some()) {
            (true, false) => {
                let file = cache.get(self.key, &self.path)?;
                // Out of the evictable set: it no longer counts against the cache's capacity
                // but against the budget's share of kept-open files.
                drop(lock(&cache.state).remove(self.key));
                *kept = Some(file);
                cache.kept_open.fetch_add(1, Ordering::AcqRel);
            }
            (false, true) => {
                if let Some(file) = kept.take() {
                    cache.kept_open.fetch_sub(1, Ordering::AcqRel);
                    lock(&cache.state).insert(self.key, file);
                    cache.evict_to(cache.capacity());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Drop for CachedFile {
    fn drop(&mut self) {
        let kept = self
            .kept_open
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if kept.is_some() {
            self.cache.kept_open.fetch_sub(1, Ordering::AcqRel);
        }
        self.cache.release(self.key, self.segment_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::disk::{read_exact_at, OsDisk};

    fn segment_path(dir: &Path, base: i64) -> PathBuf {
        dir.join(crate::storage::format::segment_file_name(
            base,
            crate::storage::format::FileKind::Log,
        ))
    }

    #[test]
    fn no_more_descriptors_than_the_capacity_are_open_and_evicted_files_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(Arc::new(OsDisk), FileCacheLimits::with_open_files(3));
        let disk = cache.disk();
        let mut files = Vec::new();
        for base in 0..10 {
            let file = disk.open(&segment_path(dir.path(), base), true).unwrap();
            file.write_all_at(format!("file {base}").as_bytes(), 0).unwrap();
            files.push(file);
            assert!(cache.stats().open <= 3, "{:?}", cache.stats());
        }
        assert_eq!(cache.stats().files, 10);
        assert_eq!(cache.stats().segment_files, 10);
        // Every file reads back, oldest first, each reopened on demand.
        for (base, file) in files.iter().enumerate() {
            let mut buf = vec![0; format!("file {base}").len()];
            read_exact_at(&**file, &mut buf, 0).unwrap();
            assert_eq!(buf, format!("file {base}").as_bytes());
            assert!(cache.stats().open <= 3);
        }
        let stats = cache.stats();
        assert!(stats.reopens >= 7, "{stats:?}");
        assert!(stats.evictions >= 7, "{stats:?}");
        drop(files);
        assert_eq!(cache.stats().files, 0);
        assert_eq!(cache.stats().open, 0);
    }

    #[test]
    fn a_kept_open_file_is_never_evicted_and_counts_against_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let limits = FileCacheLimits {
            descriptors_max: 6,
            open_files_max: usize::MAX,
            open_files_min: 2,
            segment_files_max: usize::MAX,
        };
        let cache = FileCache::new(Arc::new(OsDisk), limits);
        let disk = cache.disk();
        let active: Vec<_> = (0..3)
            .map(|base| {
                let file = disk.open(&segment_path(dir.path(), base), true).unwrap();
                file.keep_open(true).unwrap();
                file
            })
            .collect();
        assert_eq!(cache.stats().kept_open, 3);
        assert_eq!(cache.capacity(), 3);
        let closed: Vec<_> = (10..20)
            .map(|base| disk.open(&segment_path(dir.path(), base), true).unwrap())
            .collect();
        for file in &closed {
            file.len().unwrap();
        }
        let reopens = cache.stats().reopens;
        for file in &active {
            file.write_all_at(b"x", 0).unwrap();
        }
        assert_eq!(cache.stats().reopens, reopens, "kept-open files never reopen");
        // More kept open than the budget leaves: the cache keeps its minimum.
        for file in &closed[..4] {
            file.keep_open(true).unwrap();
        }
        assert_eq!(cache.capacity(), 2);
        assert!(cache.stats().open <= 2);
        // Released: back to the evictable set.
        for file in &active {
            file.keep_open(false).unwrap();
        }
        assert_eq!(cache.stats().kept_open, 4);
        assert!(cache.stats().open <= cache.capacity());
        drop(active);
        drop(closed);
        assert_eq!(cache.stats().kept_open, 0);
        assert_eq!(cache.stats().files, 0);
    }

    #[test]
    fn a_new_segment_past_the_cap_is_refused_but_existing_files_open() {
        let dir = tempfile::tempdir().unwrap();
        // Room for four files known plus three, not four: a new segment counts four (its
        // data file, two indexes and its `.keys`).
        let limits = FileCacheLimits {
            segment_files_max: 7,
            ..FileCacheLimits::with_open_files(8)
        };
        let cache = FileCache::new(Arc::new(OsDisk), limits);
        let disk = cache.disk();
        let index = |base| {
            dir.path().join(crate::storage::format::segment_file_name(
                base,
                FileKind::OffsetIndex,
            ))
        };
        let first = disk.open(&segment_path(dir.path(), 0), true).unwrap();
        let first_index = disk.open(&index(0), true).unwrap();
        let _second = disk.open(&segment_path(dir.path(), 1), true).unwrap();
        let _second_index = disk.open(&index(1), true).unwrap();
        // Four known: a third segment's data file would leave no room for all its files.
        let refused = disk.open(&segment_path(dir.path(), 2), true).unwrap_err();
        assert!(refused.to_string().contains("segment_files_max"), "{refused}");
        assert!(
            !segment_path(dir.path(), 2).exists(),
            "a refused file is not created"
        );
        assert_eq!(cache.stats().segment_files, 4);
        // An index (recovery recreates missing ones) and other files are not refused.
        let _more_index = disk.open(&index(7), true).unwrap();
        drop(
            disk.open(&dir.path().join("clean-shutdown.checkpoint"), true)
                .unwrap(),
        );
        drop((first, first_index));
        disk.open(&segment_path(dir.path(), 2), true).unwrap();
        // Opening what exists is never refused.
        disk.open(&segment_path(dir.path(), 1), false).unwrap();
    }

    #[test]
    fn a_failed_reopen_fails_one_operation_and_the_next_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(Arc::new(OsDisk), FileCacheLimits::with_open_files(1));
        let disk = cache.disk();
        let path = segment_path(dir.path(), 0);
        let file = disk.open(&path, true).unwrap();
        file.write_all_at(b"kept", 0).unwrap();
        let _other = disk.open(&segment_path(dir.path(), 1), true).unwrap();
        // Evicted; now the file cannot be reopened (moved away, like a failing open).
        let aside = dir.path().join("aside");
        std::fs::rename(&path, &aside).unwrap();
        let error = file.len().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(is_reopen_failure(&error), "{error}");
        assert!(error.to_string().contains("could not reopen"), "{error}");
        std::fs::rename(&aside, &path).unwrap();
        let mut buf = [0; 4];
        read_exact_at(&*file, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"kept");
    }
}
