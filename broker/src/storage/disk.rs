//! The storage engine's only door to the filesystem: a small file trait and a directory trait,
//! with the real OS implementation. Tests plug in `sim_disk::SimDisk` to crash and inject faults.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One open file. Every method takes `&self` and uses positional I/O, so readers and the
/// writer share one handle without a lock or a shared cursor.
pub trait SegmentFile: Send + Sync + Debug {
    fn len(&self) -> io::Result<u64>;
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and the metadata needed to read it, such as its length) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Asks that this file keep its descriptor open (`true`: the active segment's data file,
    /// written by every append) or lets a descriptor cache close it and reopen it on demand
    /// (`false`, the default state). Files of disks without a cache (`OsDisk` on its own, the
    /// simulated disk) are always open and ignore it.
    ///
    /// # Errors
    /// Keeping open a file whose descriptor was closed reopens it, which can fail.
    fn keep_open(&self, _keep: bool) -> io::Result<()> {
        Ok(())
    }
}

/// Directory-level operations. A created, renamed or removed name is durable only after
/// `sync_dir` on its directory.
pub trait Disk: Send + Sync + Debug {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// File names (not paths) in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` for reading and writing, creating it (empty) if `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn SegmentFile>>;
    /// Opens an existing file for reading only (inspection and `tidelogd verify`, which must
    /// change nothing). Writes through the handle fail.
    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn SegmentFile>> {
        self.open(path, false)
    }
    fn remove(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
pub(crate) fn read_exact_at(file: &dyn SegmentFile, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file ended early")),
            Ok(read) => {
                buf = &mut buf[read..];
                offset += read as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsDisk;

#[derive(Debug)]
struct OsFile {
    file: File,
    #[allow(dead_code)] // kept for Debug output
    path: PathBuf,
}

impl SegmentFile for OsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Disk for OsDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // Names that are not UTF-8 cannot be ours; recovery ignores them.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(OsFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new().read(true).open(path)?;
        Ok(Arc::new(OsFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // On Linux a directory opened read-only can be fsync'ed; that makes the names in it
        // (creates, renames, unlinks) durable.
        File::open(dir)?.sync_all()
    }
}
