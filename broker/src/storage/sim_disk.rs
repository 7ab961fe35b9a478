//! A simulated disk for tests: an in-memory filesystem that tracks, per file and per
//! directory, what is durable. `crash` forgets everything not synced (optionally keeping a
//! random prefix of unsynced appends: a torn write); `fail_writes_after` injects I/O errors,
//! and `inject` fails the n-th operation of one kind (open, write, sync, ...) with a chosen
//! errno (EMFILE, ENOSPC, EIO), once or from then on, to test every step of a segment roll.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::disk::{Disk, SegmentFile};

#[derive(Debug, Default)]
struct Content {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct FileData {
    content: Mutex<Content>,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    /// Names visible now, and names that survive a crash (made durable by `sync_dir`).
    current: BTreeMap<PathBuf, Arc<FileData>>,
    durable: BTreeMap<PathBuf, Arc<FileData>>,
    /// Writes left before writes fail; `None`: never fail.
    writes_left: Option<u64>,
    /// Changing operations left before the disk freezes (power is cut: every later write,
    /// set_len, sync, directory sync, create, remove and rename fails and changes nothing,
    /// until a crash); `None`: never.
    changes_left: Option<u64>,
    /// An armed fault and how many operations of its kind it still lets through.
    fault: Option<ArmedFault>,
    /// Faults that fired since the last `inject`.
    faults_fired: u64,
    /// While `Some`, the threads that ran operations which block on the device or on
    /// metadata (open, sync, sync_dir, set_len, remove, rename), in order.
    blocking_threads: Option<Vec<std::thread::ThreadId>>,
}

/// A kind of disk operation a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultOp {
    /// `Disk::open`, creating or not (EMFILE hits every open).
    Open,
    /// `SegmentFile::write_all_at`.
    Write,
    /// `SegmentFile::set_len`.
    SetLen,
    /// `SegmentFile::sync_data`.
    Sync,
    /// `Disk::sync_dir`.
    SyncDir,
    /// Every kind above: with `sticky`, the disk stops working after `after` operations,
    /// which is what a crash at that moment looks like to what follows.
    Any,
    /// `Disk::remove`.
    Remove,
    /// `Disk::rename`.
    Rename,
}

/// The error an injected fault returns, as the kernel would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultErrno {
    /// Too many open files (EMFILE, 24).
    TooManyOpenFiles,
    /// No space left on device (ENOSPC, 28).
    NoSpace,
    /// Input/output error (EIO, 5).
    Io,
}

impl FaultErrno {
    fn error(self) -> io::Error {
        let errno = match self {
            FaultErrno::TooManyOpenFiles => 24,
            FaultErrno::NoSpace => 28,
            FaultErrno::Io => 5,
        };
        io::Error::from_raw_os_error(errno)
    }
}

/// Fails the `after`-th operation of kind `op` from now (0: the next one) with `errno`; with
/// `sticky`, every later one of that kind fails too (a full descriptor table or disk stays
/// full), until `clear_faults`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fault {
    pub op: FaultOp,
    pub after: u64,
    pub errno: FaultErrno,
    pub sticky: bool,
}

#[derive(Debug, Clone, Copy)]
struct ArmedFault {
    fault: Fault,
    passed: u64,
    fired: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    file_syncs: AtomicU64,
    writes: AtomicU64,
    /// Simulated device latency of one fdatasync.
    sync_delay: Duration,
    fail_syncs: AtomicBool,
}

/// How a crash treats data written but not synced.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CrashMode {
    /// Every unsynced byte and name is lost.
    ForgetUnsynced,
    /// Unsynced appends survive up to a pseudo-random length derived from the seed (a torn
    /// write); unsynced names survive or not at random. Other unsynced changes are lost.
    TornAppends(u64),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SimDisk {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct SimFile {
    shared: Arc<Shared>,
    data: Arc<FileData>,
    generation: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// A disk whose fdatasync takes `delay`, like a real device.
    pub fn with_sync_delay(delay: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                sync_delay: delay,
                ..Shared::default()
            }),
        }
    }

    /// While set, every fdatasync fails (and syncs nothing).
    pub fn fail_syncs(&self, fail: bool) {
        self.shared.fail_syncs.store(fail, Ordering::Relaxed);
    }

    /// Power loss: every open handle dies, and only durable data and names remain.
    pub fn crash(&self, mode: CrashMode) {
        let mut state = lock(&self.shared.state);
        state.generation += 1;
        state.writes_left = None;
        state.changes_left = None;
        state.fault = None;
        let mut rng = match mode {
            CrashMode::ForgetUnsynced => None,
            CrashMode::TornAppends(seed) => Some(SplitMix(seed)),
        };
        let mut names = state.durable.clone();
        if let Some(rng) = rng.as_mut() {
            for (path, data) in &state.current {
                if !names.contains_key(path) && rng.next() % 2 == 0 {
                    names.insert(path.clone(), Arc::clone(data));
                }
            }
        }
        let mut seen: Vec<*const FileData> = Vec::new();
        for data in state
            .current
            .values()
            .chain(state.durable.values())
            .chain(names.values())
        {
            let pointer = Arc::as_ptr(data);
            if seen.contains(&pointer) {
                continue;
            }
            seen.push(pointer);
            let mut content = lock(&data.content);
            let Content { current, durable } = &mut *content;
            let appended = current.len() > durable.len() && current.starts_with(durable);
            let mut survivor = durable.clone();
            if let (Some(rng), true) = (rng.as_mut(), appended) {
                let extra = current.len() - durable.len();
                let keep = (rng.next() % (extra as u64 + 1)) as usize;
                survivor.extend_from_slice(&current[durable.len()..durable.len() + keep]);
            }
            *current = survivor.clone();
            *durable = survivor;
        }
        state.current = names.clone();
        state.durable = names;
    }

    /// The next `count` writes succeed; later ones fail (until a crash).
    pub fn fail_writes_after(&self, count: u64) {
        lock(&self.shared.state).writes_left = Some(count);
    }

    /// The next `count` changing operations (write, set_len, sync, directory sync, create,
    /// remove, rename) happen; every later one fails and changes nothing, as if power were cut
    /// right there. Follow with `crash` to see what survived. Cleared by a crash.
    pub fn freeze_after(&self, count: u64) {
        lock(&self.shared.state).changes_left = Some(count);
    }

    /// Whether a `freeze_after` froze the disk.
    pub fn is_frozen(&self) -> bool {
        lock(&self.shared.state).changes_left == Some(0)
    }

    /// Arms one fault (replacing any earlier one) and resets the fired count.
    pub fn inject(&self, fault: Fault) {
        let mut state = lock(&self.shared.state);
        state.fault = Some(ArmedFault {
            fault,
            passed: 0,
            fired: false,
        });
        state.faults_fired = 0;
    }

    /// Starts recording which threads run blocking operations (see `blocking_threads`).
    pub fn record_blocking_threads(&self) {
        lock(&self.shared.state).blocking_threads = Some(Vec::new());
    }

    /// The threads that ran blocking operations since `record_blocking_threads`.
    pub fn blocking_threads(&self) -> Vec<std::thread::ThreadId> {
        lock(&self.shared.state)
            .blocking_threads
            .clone()
            .unwrap_or_default()
    }

    /// Disarms the fault: every operation succeeds again.
    pub fn clear_faults(&self) {
        lock(&self.shared.state).fault = None;
    }

    /// How many operations the armed fault failed since `inject`.
    pub fn faults_fired(&self) -> u64 {
        lock(&self.shared.state).faults_fired
    }

    /// Current content of a file, for tests that corrupt files directly.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = lock(&self.shared.state);
        state
            .current
            .get(path)
            .map(|data| lock(&data.content).current.clone())
    }

    /// Replaces a file's content, durably (as if corrupted on the platter).
    pub fn write_file_durably(&self, path: &Path, bytes: &[u8]) {
        let mut state = lock(&self.shared.state);
        let data = Arc::clone(state.current.entry(path.to_path_buf()).or_default());
        state.durable.insert(path.to_path_buf(), Arc::clone(&data));
        let mut content = lock(&data.content);
        content.current = bytes.to_vec();
        content.durable = bytes.to_vec();
    }

    /// Removes a file durably.
    pub fn remove_durably(&self, path: &Path) {
        let mut state = lock(&self.shared.state);
        state.current.remove(path);
        state.durable.remove(path);
    }

    pub fn file_names(&self, dir: &Path) -> Vec<String> {
        self.list(dir).unwrap_or_default()
    }
}

/// Counts a changing operation against `freeze_after`; `Err` once the disk is frozen.
fn freeze_check(shared: &Shared) -> io::Result<()> {
    let mut state = lock(&shared.state);
    if let Some(left) = state.changes_left.as_mut() {
        if *left == 0 {
            return Err(io::Error::other("simulated power cut: the disk is frozen"));
        }
        *left -= 1;
    }
    Ok(())
}

/// Counts an operation of kind `op` against the armed fault; `Err` if it must fail.
fn fault_check(shared: &Shared, op: FaultOp) -> io::Result<()> {
    let mut state = lock(&shared.state);
    let State {
        fault,
        faults_fired,
        blocking_threads,
        ..
    } = &mut *state;
    if let Some(threads) = blocking_threads.as_mut() {
        if op != FaultOp::Write {
            threads.push(std::thread::current().id());
        }
    }
    let Some(armed) = fault.as_mut() else {
        return Ok(());
    };
    if armed.fault.op != op && armed.fault.op != FaultOp::Any {
        return Ok(());
    }
    let fire = if armed.fired {
        armed.fault.sticky
    } else if armed.passed == armed.fault.after {
        armed.fired = true;
        true
    } else {
        armed.passed += 1;
        false
    };
    if fire {
        *faults_fired += 1;
        return Err(armed.fault.errno.error());
    }
    Ok(())
}

impl SimFile {
    fn check(&self) -> io::Result<()> {
        if lock(&self.shared.state).generation != self.generation {
            return Err(io::Error::other("simulated disk crashed: stale handle"));
        }
        Ok(())
    }
}

impl SegmentFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.check()?;
        Ok(lock(&self.data.content).current.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check()?;
        let content = lock(&self.data.content);
        let offset = usize::try_from(offset).map_err(io::Error::other)?;
        if offset >= content.current.len() {
            return Ok(0);
        }
        let count = buf.len().min(content.current.len() - offset);
        buf[..count].copy_from_slice(&content.current[offset..offset + count]);
        Ok(count)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check()?;
        fault_check(&self.shared, FaultOp::Write)?;
        freeze_check(&self.shared)?;
        {
            let mut state = lock(&self.shared.state);
            if let Some(left) = state.writes_left.as_mut() {
                if *left == 0 {
                    return Err(io::Error::other("injected write failure"));
                }
                *left -= 1;
            }
        }
        self.shared.writes.fetch_add(1, Ordering::Relaxed);
        let mut content = lock(&self.data.content);
        let offset = usize::try_from(offset).map_err(io::Error::other)?;
        let end = offset + buf.len();
        if content.current.len() < end {
            content.current.resize(end, 0);
        }
        content.current[offset..end].copy_from_slice(buf);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        fault_check(&self.shared, FaultOp::SetLen)?;
        freeze_check(&self.shared)?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        lock(&self.data.content).current.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        if self.shared.fail_syncs.load(Ordering::Relaxed) {
            return Err(io::Error::other("injected fsync failure"));
        }
        fault_check(&self.shared, FaultOp::Sync)?;
        freeze_check(&self.shared)?;
        if !self.shared.sync_delay.is_zero() {
            std::thread::sleep(self.shared.sync_delay);
        }
        self.shared.file_syncs.fetch_add(1, Ordering::Relaxed);
        let mut content = lock(&self.data.content);
        content.durable = content.current.clone();
        Ok(())
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = lock(&self.shared.state);
        Ok(state
            .current
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        fault_check(&self.shared, FaultOp::Open)?;
        if create && !lock(&self.shared.state).current.contains_key(path) {
            freeze_check(&self.shared)?;
        }
        let mut state = lock(&self.shared.state);
        let data = match state.current.get(path) {
            Some(data) => Arc::clone(data),
            None if create => {
                let data = Arc::new(FileData::default());
                state.current.insert(path.to_path_buf(), Arc::clone(&data));
                data
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}", path.display()),
                ))
            }
        };
        Ok(Arc::new(SimFile {
            shared: Arc::clone(&self.shared),
            data,
            generation: state.generation,
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fault_check(&self.shared, FaultOp::Remove)?;
        freeze_check(&self.shared)?;
        let mut state = lock(&self.shared.state);
        match state.current.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}", path.display()),
            )),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fault_check(&self.shared, FaultOp::Rename)?;
        freeze_check(&self.shared)?;
        let mut state = lock(&self.shared.state);
        let data = state
            .current
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{}", from.display())))?;
        state.current.insert(to.to_path_buf(), data);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        fault_check(&self.shared, FaultOp::SyncDir)?;
        freeze_check(&self.shared)?;
        let mut state = lock(&self.shared.state);
        state.durable.retain(|path, _| path.parent() != Some(dir));
        let entries: Vec<(PathBuf, Arc<FileData>)> = state
            .current
            .iter()
            .filter(|(path, _)| path.parent() == Some(dir))
            .map(|(path, data)| (path.clone(), Arc::clone(data)))
            .collect();
        state.durable.extend(entries);
        Ok(())
    }
}

/// A small seedable generator (SplitMix64): deterministic tests without a rand dependency.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}
