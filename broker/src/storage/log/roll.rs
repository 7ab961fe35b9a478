//! Segment rolls: closing the active segment and opening the next, all or nothing (see
//! `Inner::roll`). A child of `log` so it shares the writer's private state.

use std::sync::Arc;

use super::super::config::FlushPolicy;
use super::super::error::StorageError;
use super::super::key_index::{self, ActiveTable};
use super::super::segment::{write_lock, CreateError, Segment};
use super::{error_chain, Inner, SealMode, Writer};

impl Inner {
    /// Closes the active segment and opens a new one at the next offset. The old segment and
    /// its indexes are synced before the new one is published, so only the active segment can
    /// ever have an unsynced tail.
    ///
    /// All or nothing. The new segment's files are created (headers written and synced) and
    /// the directory synced *before* anything about the old segment changes, and the old one
    /// is marked sealed only after that. If any step fails (EMFILE, ENOSPC, EIO), the files
    /// made are removed, the directory synced, and a sealed flag already written is cleared
    /// again: the old segment stays active, writable and unsealed, the append that needed the
    /// roll gets [`StorageError::RollFailed`] and may be retried. Only if that undo fails too
    /// (or an fsync failed) is the log poisoned, so nothing is appended to a directory that no
    /// longer describes it alone.
    pub(super) fn roll(self: &Arc<Self>, writer: &mut Writer) -> Result<(), StorageError> {
        let old = Arc::clone(&writer.active);
        let base_offset = old.next_offset();
        let new = match Segment::create(&*self.disk, &self.dir, base_offset) {
            Ok(new) => Arc::new(new),
            Err(CreateError { error, leftovers }) => {
                for (path, remove_error) in &leftovers {
                    tracing::error!(path = %path.display(), error = %remove_error, "could not remove a file of a failed segment roll");
                }
                let undone = leftovers.is_empty();
                if undone {
                    self.sync_dir_after_discard();
                }
                return Err(self.roll_failed(base_offset, error, undone));
            }
        };
        // The new active data file keeps its descriptor (appends never reopen a file); this
        // only opens something if the cache closed the just-created file meanwhile.
        if let Err(error) = new.set_active(true).and_then(|()| self.sync_dir()) {
            let undone = self.discard_segment(&new);
            return Err(self.roll_failed(base_offset, error, undone));
        }
        if let Err(error) = self.close_segment(&old) {
            // After a failed fsync the old segment stays as it is (the log is poisoned and
            // takes no more appends); otherwise a sealed flag that may have reached the page
            // cache is cleared again, durably, so the segment can stay the active one.
            let restored = self.check_failure().is_err() || old.unseal().is_ok();
            let undone = restored && self.discard_segment(&new);
            return Err(self.roll_failed(base_offset, error, undone));
        }
        self.snapshot_producers(writer, base_offset);
        // The old table answers from memory until its `.keys` file is written; the new
        // segment starts an empty one, before anyone can see the segment.
        old.keys.freeze();
        new.keys.set_active(ActiveTable::new(self.config().key_hash));
        {
            let mut segments = write_lock(&self.segments);
            let mut list: Vec<Arc<Segment>> = segments.as_ref().clone();
            list.push(Arc::clone(&new));
            *segments = Arc::new(list);
        }
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled to a new segment");
        writer.active = new;
        // Infallible: releasing a descriptor to the cache opens nothing.
        let _ = old.set_active(false);
        if self.config().flush == FlushPolicy::Always {
            // Everything written so far is in the synced old segment.
            self.publish_durable(base_offset);
            // Sealed by close_segment: its `.keys` file may be written.
            if self.seal_mode == SealMode::Background {
                key_index::enqueue_write(&old, &self.index_context());
            }
        } else {
            // Syncing a whole segment here would stall appends for as long as the disk takes
            // to write it; a background sealer does it instead. Until sealed, a closed segment
            // is scanned in full by recovery like the active one.
            self.kick_sealer();
        }
        Ok(())
    }

    /// The old segment's part of a roll, once the new segment exists: its final time index
    /// entry and pending index entries, and under `Always` the seal (sync, flag, sync; the
    /// flag is recorded in memory only once it is durable).
    fn close_segment(&self, old: &Segment) -> Result<(), StorageError> {
        // A closed segment's file ends exactly at its data (recovery checks a sealed one's
        // tail up to the file's end).
        old.trim_preallocation()?;
        old.add_final_time_entry();
        old.flush_index_entries()?;
        if self.config().flush == FlushPolicy::Always {
            // Group commit has synced nearly all of it already, so this is cheap, and it lets
            // the high watermark cover the whole old segment at once.
            self.sync_segment(old, true)?;
            old.write_sealed_flag()?;
            self.sync_segment(old, false)?;
            old.set_sealed();
        }
        Ok(())
    }

    /// Removes the files of a segment that was created but never published, and syncs the
    /// directory. False if a file could not be removed.
    fn discard_segment(&self, segment: &Segment) -> bool {
        let mut removed = true;
        for path in [
            &segment.paths.log,
            &segment.paths.offset_index,
            &segment.paths.time_index,
        ] {
            if let Err(error) = self.disk.remove(path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::error!(path = %path.display(), %error, "could not remove a file of a failed segment roll");
                    removed = false;
                }
            }
        }
        if removed {
            self.sync_dir_after_discard();
        }
        removed
    }

    /// Makes the removal of a failed roll's files durable. If this sync fails too (say, no
    /// descriptor for the directory), the partition is still safe to append to: a name that
    /// reappears after a crash lies inside the active segment's offsets, where recovery drops
    /// it, and the next roll syncs the directory (and so the removal) before it publishes a
    /// later segment. Only a file that could not be removed at all poisons the log.
    fn sync_dir_after_discard(&self) {
        if let Err(error) = self.sync_dir() {
            tracing::warn!(dir = %self.dir.display(), error = %error_chain(&error), "could not sync the directory after removing a failed roll's files; the next roll will");
        }
    }

    /// Logs a failed roll and makes its error. `undone`: the partition is exactly as before
    /// the roll; otherwise the log is poisoned (it must be reopened, and recovered, first).
    fn roll_failed(&self, base_offset: i64, error: StorageError, undone: bool) -> StorageError {
        let cause = error_chain(&error);
        if undone {
            tracing::error!(
                dir = %self.dir.display(),
                base_offset,
                error = %cause,
                "segment roll failed and was undone; the append is refused and may be retried"
            );
        } else {
            tracing::error!(
                dir = %self.dir.display(),
                base_offset,
                error = %cause,
                "segment roll failed and could not be undone"
            );
            self.poison(format!(
                "a failed roll to offset {base_offset} could not be undone: {cause}"
            ));
        }
        StorageError::RollFailed {
            base_offset,
            source: Box::new(error),
        }
    }
}
