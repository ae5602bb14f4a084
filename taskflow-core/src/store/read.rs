//! Reading a store without writing to it: a past day shown by the console, `taskflow store
//! events`.
//!
//! [`Store::open`](super::Store::open) writes even when nothing is appended: it truncates a
//! torn tail, sled writes its own files when it opens and closes, and closing records the
//! durable seq in sled and `SLEDMARK`. [`read_only`] does none of that. It holds a *shared*
//! `flock` on `LOCK` (so no writer can open the store meanwhile, and it fails with
//! [`Error::Locked`] while one has it open), reads the log without repairing it, and opens
//! sled on a **copy** of `sled/` in the system's temporary directory, deleted afterwards —
//! sled 0.34 has no read-only mode. The copy costs a read of `sled/` (snapshots are ~57 bytes
//! per shard, plus sled's overhead), once per view.
//!
//! **Invariant:** a read-only open leaves every byte of the store directory as it was; the
//! checks are the same as [`Store::open`](super::Store::open)'s, so a damaged store is an
//! error here too, never an empty day.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{Error, Result};
use super::format::read_manifest;
use super::{Keep, Recovered, RecoveredSnapshot, recover, snap};

/// Which logged events [`read_only`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEvents {
    /// The events after the newest valid snapshot: with the snapshot, the whole day.
    AfterSnapshot,
    /// Every event the log still holds (compaction may have removed those before the older
    /// kept snapshot).
    All,
}

/// Reads the store in `dir` as [`Store::open`](super::Store::open) would recover it, without
/// writing anything to `dir` (see the module docs). A torn tail is reported in
/// [`Recovered::torn_tail`] and left in place; the events before it are returned.
pub fn read_only(dir: impl AsRef<Path>, events: ReadEvents) -> Result<Recovered> {
    let dir = dir.as_ref();
    let manifest_path = dir.join("STORE");
    if !manifest_path.exists() {
        return Err(Error::corrupt(
            &manifest_path,
            None,
            "not a taskflow store (STORE manifest missing)",
        ));
    }
    let _lock = share_lock(dir)?;
    read_manifest(&manifest_path)?;
    let sled_dir = snap::sled_dir(dir);
    for d in [&dir.join("log"), &sled_dir] {
        if !d.is_dir() {
            return Err(Error::corrupt(d, None, "directory is missing although STORE exists"));
        }
    }
    let copy = TempCopy::of(&sled_dir)?;
    let db = snap::open_sled(&copy.path, 8 << 20).map_err(|e| copy.real_path_in(e, &sled_dir))?;
    let keep = match events {
        ReadEvents::AfterSnapshot => Keep::AfterSnapshot,
        ReadEvents::All => Keep::All,
    };
    let rec = recover(dir, &db, false, keep);
    drop(db);
    let rec = rec.map_err(|e| copy.real_path_in(e, &sled_dir))?;
    Ok(Recovered {
        snapshot: rec.chosen.manifest.map(|m| RecoveredSnapshot {
            seq: m.seq,
            generation: m.generation,
            bytes: rec.chosen.bytes,
        }),
        events: rec.log.records,
        next_seq: rec.log.next_seq,
        torn_tail: rec.log.torn,
        snapshot_fallback: rec.chosen.fallback,
        warnings: rec.warnings,
    })
}

/// A shared lock on `<dir>/LOCK`, opened for reading (never created: a store without one is
/// not open anywhere).
pub(crate) fn share_lock(dir: &Path) -> Result<Option<File>> {
    let path = dir.join("LOCK");
    let f = match OpenOptions::new().read(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    match f.try_lock_shared() {
        Ok(()) => Ok(Some(f)),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// A copy of a directory tree in the system's temporary directory, removed on drop.
pub(crate) struct TempCopy {
    root: PathBuf,
    /// The copy.
    pub(crate) path: PathBuf,
}

impl TempCopy {
    /// Copies `src` (a store's `sled/`) into a fresh temporary directory.
    pub(crate) fn of(src: &Path) -> Result<TempCopy> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "taskflow-read-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of a killed process with the same pid: it is ours to replace.
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let copy = TempCopy { path: root.join("sled"), root };
        copy_tree(src, &copy.path)?;
        Ok(copy)
    }
}

impl TempCopy {
    /// `e` with a path inside the copy replaced by the same path under `real`, so messages
    /// name the store's own file, not the temporary one.
    pub(crate) fn real_path_in(&self, e: Error, real: &Path) -> Error {
        let fix = |p: PathBuf| match p.strip_prefix(&self.path) {
            Ok(rest) => real.join(rest),
            Err(_) => p,
        };
        match e {
            Error::Corrupt { path, offset, reason } => {
                let reason = reason.replace(&*self.path.to_string_lossy(), &real.to_string_lossy());
                Error::Corrupt { path: fix(path), offset, reason }
            }
            Error::Io { path, source } => Error::Io { path: fix(path), source },
            Error::Version { path, found, supported } => {
                Error::Version { path: fix(path), found, supported }
            }
            other => other,
        }
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    for entry in fs::read_dir(src).map_err(|e| Error::io(src, e))? {
        let entry = entry.map_err(|e| Error::io(src, e))?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let kind = entry.file_type().map_err(|e| Error::io(&from, e))?;
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_file() {
            fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
        }
    }
    Ok(())
}
