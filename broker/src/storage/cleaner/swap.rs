//! Replacing segments by a cleaned one, crash-safely: "a crash at any point leaves either the
//! old segments or the new ones, never a mix, never less".
//!
//! Steps (the commit point is the journal's rename):
//! 1. `rewrite` wrote `N.log.cleaned`, `N.index.cleaned`, `N.timeindex.cleaned` and synced
//!    them; the directory is synced so their names are durable.
//! 2. The swap journal `cleaner-swap` names the replaced base offsets and the new base (N,
//!    the first of them): written as `cleaner-swap.tmp`, synced, renamed, directory synced.
//! 3. Roll forward: remove every replaced segment's files (`.keys` included: the cleaned
//!    segment takes N's name, and N's old `.keys` must never be trusted for it), rename the
//!    `.cleaned` files into place, sync the directory.
//! 4. Remove the journal, sync the directory.
//!
//! At open, before recovery looks at the directory ([`recover_at_open`]): a journal present
//! means step 2 completed, so step 3 is repeated (every part of it is idempotent: removing a
//! missing file is fine, a `.cleaned` file is renamed only while it exists, and its name was
//! durable before the journal's); no journal means the swap never committed, so `.cleaned`
//! leftovers are deleted and the old segments stand untouched.
//!
//! Journal layout (big-endian): magic `TDLGCSW1` (8), version u16, reserved u16, count u32,
//! new base offset i64, `count` replaced base offsets (i64 each, ascending, the first equal to
//! the new base), CRC32 (IEEE) of everything before it.

use std::io;
use std::path::{Path, PathBuf};

use super::super::disk::{read_exact_at, Disk};
use super::super::error::StorageError;
use super::super::format::{
    i64_at, segment_file_name, u16_at, u32_at, FileKind, FORMAT_VERSION, TEMP_SUFFIX,
};
use super::super::inspect::QUARANTINE_DIR_NAME;
use super::super::key_index::keys_path;
use super::super::segment::SegmentPaths;

/// Name of the swap journal in a partition directory.
pub(crate) const SWAP_JOURNAL_FILE_NAME: &str = "cleaner-swap";
/// Suffix of a cleaned segment's files while they are written aside.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
const MAGIC: &[u8; 8] = b"TDLGCSW1";
const HEADER_BYTES: usize = 8 + 2 + 2 + 4 + 8;
/// A journal never names more segments than this (a group is bounded by the segment size,
/// and segments by a broker-wide cap far below it): a bigger count is damage.
const REPLACED_MAX: usize = 1 << 20;

/// Whether `name` is a file the cleaner writes in a partition directory (the swap journal,
/// its temporary, a cleaned segment's aside files): recovery's inspection neither
/// quarantines them nor calls them unknown; `recover_at_open` deals with them.
pub(crate) fn is_cleaner_file(name: &str) -> bool {
    name == SWAP_JOURNAL_FILE_NAME || name.ends_with(CLEANED_SUFFIX)
}

/// The aside paths of the cleaned segment with base `base_offset`.
pub(crate) fn aside_paths(dir: &Path, base_offset: i64) -> SegmentPaths {
    let aside = |kind| {
        dir.join(format!(
            "{}{CLEANED_SUFFIX}",
            segment_file_name(base_offset, kind)
        ))
    };
    SegmentPaths {
        log: aside(FileKind::Log),
        offset_index: aside(FileKind::OffsetIndex),
        time_index: aside(FileKind::TimeIndex),
    }
}

/// One committed swap: `replaced` (ascending, the first is `new_base`) become `new_base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Journal {
    pub new_base: i64,
    pub replaced: Vec<i64>,
}

impl Journal {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + 8 * self.replaced.len() + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        // The count is bounded by REPLACED_MAX (see `decode`); a group is far smaller.
        out.extend_from_slice(
            &u32::try_from(self.replaced.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.new_base.to_be_bytes());
        for base in &self.replaced {
            out.extend_from_slice(&base.to_be_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < HEADER_BYTES + 4 {
            return Err(format!("{} bytes is shorter than a journal", bytes.len()));
        }
        if &bytes[..8] != MAGIC {
            return Err("bad magic".to_string());
        }
        let body = bytes.len() - 4;
        let stored = u32_at(bytes, body);
        let computed = crc32fast::hash(&bytes[..body]);
        if stored != computed {
            return Err(format!(
                "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        let version = u16_at(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(format!("unsupported version {version}"));
        }
        let count = u32_at(bytes, 12) as usize;
        if count == 0 || count > REPLACED_MAX || body != HEADER_BYTES + 8 * count {
            return Err(format!("names {count} segments in {} bytes", bytes.len()));
        }
        let new_base = i64_at(bytes, 16);
        let replaced: Vec<i64> = (0..count)
            .map(|index| i64_at(bytes, HEADER_BYTES + 8 * index))
            .collect();
        if replaced[0] != new_base || replaced.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err("replaced base offsets are not ascending from the new base".to_string());
        }
        Ok(Self { new_base, replaced })
    }
}

/// Step 1's end and step 2: makes the aside files' names durable, then commits the journal.
/// After an `Ok` the swap is committed (a crash from here on completes it at open). An error
/// from the journal's own directory sync leaves it unknown whether it committed: the caller
/// must then neither remove the old files nor the aside ones, and stop writing the log (the
/// next open finds out).
pub(crate) fn commit(disk: &dyn Disk, dir: &Path, journal: &Journal) -> Result<(), CommitError> {
    let sync_dir = || {
        disk.sync_dir(dir)
            .map_err(StorageError::io("syncing directory", dir))
    };
    sync_dir().map_err(CommitError::Before)?;
    let path = dir.join(SWAP_JOURNAL_FILE_NAME);
    let temp = dir.join(format!("{SWAP_JOURNAL_FILE_NAME}{TEMP_SUFFIX}"));
    let written = (|| {
        let file = disk
            .open(&temp, true)
            .map_err(StorageError::io("creating", &temp))?;
        file.set_len(0).map_err(StorageError::io("truncating", &temp))?;
        file.write_all_at(&journal.encode(), 0)
            .map_err(StorageError::io("writing", &temp))?;
        file.sync_data().map_err(StorageError::io("syncing", &temp))?;
        drop(file);
        disk.rename(&temp, &path)
            .map_err(StorageError::io("renaming", &temp))
    })();
    if let Err(error) = written {
        // A rename either happened or not; here it did not: nothing committed.
        if let Err(remove) = disk.remove(&temp) {
            if remove.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %temp.display(), error = %remove, "could not remove a journal written aside");
            }
        }
        return Err(CommitError::Before(error));
    }
    sync_dir().map_err(CommitError::Unknown)
}

/// Why a commit failed.
#[derive(Debug)]
pub(crate) enum CommitError {
    /// Before the commit point: the old segments stand; the aside files may be removed.
    Before(StorageError),
    /// The journal was renamed but its directory sync failed: committed or not, unknown.
    Unknown(StorageError),
}

/// Step 3: removes the replaced segments' files and renames the cleaned ones into place,
/// then syncs the directory. Idempotent, so recovery repeats it after a crash.
pub(crate) fn roll_forward(disk: &dyn Disk, dir: &Path, journal: &Journal) -> Result<(), StorageError> {
    for base in &journal.replaced {
        let paths = SegmentPaths::new(dir, *base);
        // Data file first: a crash midway leaves index files without a data file only for
        // segments the journal names, and the next open completes their removal.
        if *base != journal.new_base {
            remove_if_present(disk, &paths.log)?;
            remove_if_present(disk, &paths.offset_index)?;
            remove_if_present(disk, &paths.time_index)?;
        }
        remove_if_present(disk, &keys_path(dir, *base))?;
    }
    let aside = aside_paths(dir, journal.new_base);
    let target = SegmentPaths::new(dir, journal.new_base);
    // The indexes first, the data file last: until the data file is renamed, the old data
    // file (whose indexes recovery rebuilds if they disagree) still answers a read-only
    // inspection sensibly.
    for (from, to) in [
        (&aside.offset_index, &target.offset_index),
        (&aside.time_index, &target.time_index),
        (&aside.log, &target.log),
    ] {
        match disk.rename(from, to) {
            Ok(()) => {}
            // Renamed before a crash: nothing left to do for this file.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(StorageError::io("renaming", from)(error)),
        }
    }
    disk.sync_dir(dir)
        .map_err(StorageError::io("syncing directory", dir))
}

/// Step 4: the swap is complete on disk.
pub(crate) fn finish(disk: &dyn Disk, dir: &Path) -> Result<(), StorageError> {
    remove_if_present(disk, &dir.join(SWAP_JOURNAL_FILE_NAME))?;
    disk.sync_dir(dir)
        .map_err(StorageError::io("syncing directory", dir))
}

/// What [`recover_at_open`] did, for the log's open report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SwapRecovery {
    /// A committed swap was completed: the base offsets it replaced.
    pub rolled_forward: Option<Vec<i64>>,
    /// Leftover aside files of a swap that never committed, deleted.
    pub removed: Vec<String>,
}

/// At open, before recovery inspects the directory: completes a committed swap or removes the
/// leftovers of an uncommitted one (see the module comment). A journal that does not decode
/// (it was synced before its rename, so this is damage, not a crash) is moved to quarantine
/// with the aside files, and the directory is left to recovery's own rules.
pub(crate) fn recover_at_open(disk: &dyn Disk, dir: &Path) -> Result<SwapRecovery, StorageError> {
    let mut outcome = SwapRecovery::default();
    let names = match disk.list(dir) {
        Ok(names) => names,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(outcome),
        Err(error) => return Err(StorageError::io("listing", dir)(error)),
    };
    let journal_path = dir.join(SWAP_JOURNAL_FILE_NAME);
    let aside: Vec<&String> = names
        .iter()
        .filter(|name| name.ends_with(CLEANED_SUFFIX))
        .collect();
    if names.iter().any(|name| name == SWAP_JOURNAL_FILE_NAME) {
        match read_journal(disk, &journal_path)? {
            Ok(journal) => {
                tracing::warn!(
                    dir = %dir.display(),
                    replaced = ?journal.replaced,
                    "completing a cleaner swap interrupted by a crash"
                );
                roll_forward(disk, dir, &journal)?;
                // Aside files of other bases (a swap that never committed, or a clean cut
                // short beside it) are not the journal's: they go.
                for name in &aside {
                    let path = dir.join(name);
                    remove_if_present(disk, &path)?;
                    outcome.removed.push((*name).clone());
                }
                finish(disk, dir)?;
                outcome.rolled_forward = Some(journal.replaced);
                return Ok(outcome);
            }
            Err(reason) => {
                tracing::error!(
                    dir = %dir.display(),
                    %reason,
                    "the cleaner swap journal is damaged; moving it and the cleaned files to quarantine"
                );
                let quarantine = dir.join(QUARANTINE_DIR_NAME);
                disk.create_dir_all(&quarantine)
                    .map_err(StorageError::io("creating", &quarantine))?;
                let mut moved: Vec<PathBuf> = vec![journal_path.clone()];
                moved.extend(aside.iter().map(|name| dir.join(name)));
                for from in moved {
                    let Some(name) = from.file_name() else { continue };
                    let to = quarantine.join(name);
                    disk.rename(&from, &to)
                        .map_err(StorageError::io("moving to quarantine", &from))?;
                }
                disk.sync_dir(&quarantine)
                    .map_err(StorageError::io("syncing directory", &quarantine))?;
                disk.sync_dir(dir)
                    .map_err(StorageError::io("syncing directory", dir))?;
                return Ok(outcome);
            }
        }
    }
    for name in aside {
        remove_if_present(disk, &dir.join(name))?;
        outcome.removed.push(name.clone());
    }
    if !outcome.removed.is_empty() {
        tracing::info!(dir = %dir.display(), removed = ?outcome.removed, "removed the files of a cleaner swap that never committed");
        disk.sync_dir(dir)
            .map_err(StorageError::io("syncing directory", dir))?;
    }
    Ok(outcome)
}

/// Reads the journal; the inner `Err` says why it does not decode.
fn read_journal(disk: &dyn Disk, path: &Path) -> Result<Result<Journal, String>, StorageError> {
    let file = disk
        .open_read_only(path)
        .map_err(StorageError::io("opening", path))?;
    let length = file.len().map_err(StorageError::io("measuring", path))?;
    let length_max = (HEADER_BYTES + 8 * REPLACED_MAX + 4) as u64;
    if length > length_max {
        return Ok(Err(format!("{length} bytes is larger than a journal may be")));
    }
    // length <= length_max, a few MiB.
    let mut bytes = vec![0u8; usize::try_from(length).unwrap_or(0)];
    read_exact_at(&*file, &mut bytes, 0).map_err(StorageError::io("reading", path))?;
    Ok(Journal::decode(&bytes))
}

fn remove_if_present(disk: &dyn Disk, path: &Path) -> Result<(), StorageError> {
    match disk.remove(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StorageError::io("removing", path)(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_and_damage_is_refused() {
        let journal = Journal {
            new_base: 100,
            replaced: vec![100, 250, 400],
        };
        let bytes = journal.encode();
        assert_eq!(Journal::decode(&bytes), Ok(journal));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x20;
            assert!(Journal::decode(&damaged).is_err(), "byte {at}");
        }
        assert!(Journal::decode(&bytes[..bytes.len() - 1]).is_err());
        let unordered = Journal {
            new_base: 100,
            replaced: vec![100, 90],
        };
        assert!(Journal::decode(&unordered.encode()).is_err());
    }

    #[test]
    fn cleaner_file_names_are_recognised() {
        assert!(is_cleaner_file(SWAP_JOURNAL_FILE_NAME));
        assert!(is_cleaner_file("00000000000000000042.log.cleaned"));
        assert!(is_cleaner_file("00000000000000000042.timeindex.cleaned"));
        assert!(!is_cleaner_file("00000000000000000042.log"));
        assert!(!is_cleaner_file("cleaner-checkpoint"));
    }
}
