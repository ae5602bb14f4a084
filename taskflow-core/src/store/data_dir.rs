//! The data directory around the day stores: `DATA/days/<name>/` (one store each), the
//! managers' lock `DATA/MANAGER.lock`, and the removal of a day's directory (retention).
//!
//! Byte-level like the rest of the store: names and paths, no dates. The meaning of a day (its
//! date, whether it closed, whether retention lets it go) is decided above, in `crate::days`
//! and `crate::model::retention`.
//!
//! Listing never writes: [`day_dirs`] and [`is_empty_dir`] only read directory entries.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use super::format::sync_dir;

/// The directory of the day stores inside a data directory.
pub const DAYS_DIR: &str = "days";

/// The managers' lock inside a data directory: every manager process holds it shared while it
/// runs; `taskflow store prune` takes it exclusively (and refuses while anyone holds it).
pub const MANAGER_LOCK: &str = "MANAGER.lock";

/// The suffix of a day directory being removed (`days/.<name>.pruning`): a crash in the middle
/// of a removal leaves it, never a half-removed day under its own name.
const PRUNING_SUFFIX: &str = ".pruning";

/// The sub-directories of `DATA/days/`, by name (every entry that is a directory, whatever its
/// name; the caller keeps the ones it understands), sorted by name. No `days/` is no day.
/// Reading never writes.
pub fn day_dirs(data_dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let days = data_dir.join(DAYS_DIR);
    let entries = match fs::read_dir(&days) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&days, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&days, e))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_owned(), path));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `dir` is a directory with nothing in it (a day directory that never got a store,
/// e.g. one waiting for `--recover-from-replicas`). Reading never writes.
pub fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// A hold on a data directory's [`MANAGER_LOCK`]: shared by every running manager, exclusive
/// for a removal by hand. Released on drop.
#[derive(Debug)]
pub struct ManagerLock {
    _file: File,
}

impl ManagerLock {
    /// Takes the lock shared (a manager process; several may share a data directory, each
    /// running its own day), waiting while a `store prune` holds it exclusively. Creates the
    /// data directory and the lock file if needed. Blocking.
    pub fn shared(data_dir: &Path) -> Result<ManagerLock> {
        let file = open_lock(data_dir)?;
        let path = data_dir.join(MANAGER_LOCK);
        file.lock_shared().map_err(|e| Error::io(&path, e))?;
        Ok(ManagerLock { _file: file })
    }

    /// Takes the lock exclusively, without waiting: [`Error::Locked`] while a manager runs on
    /// the directory.
    pub fn exclusive(data_dir: &Path) -> Result<ManagerLock> {
        let file = open_lock(data_dir)?;
        let path = data_dir.join(MANAGER_LOCK);
        match file.try_lock() {
            Ok(()) => Ok(ManagerLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
            Err(fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}

fn open_lock(data_dir: &Path) -> Result<File> {
    fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
    let path = data_dir.join(MANAGER_LOCK);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))
}

/// Removes one day's directory `dir` (under `DATA/days/`) and everything in it: refused with
/// [`Error::Locked`] while a store in it is open (its `LOCK` is held); otherwise renamed to
/// `.<name>.pruning` first (durably), so a crash mid-way never leaves a half-removed day
/// under its own name, then deleted. Blocking.
pub fn remove_day_dir(dir: &Path) -> Result<()> {
    let lock = dir.join("LOCK");
    // Held until the rename: no store can be opened in the directory meanwhile.
    let _held = match OpenOptions::new().write(true).open(&lock) {
        Ok(f) => match f.try_lock() {
            Ok(()) => Some(f),
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked { path: lock }),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&lock, e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&lock, e)),
    };
    let parent = dir.parent().ok_or_else(|| {
        Error::io(dir, std::io::Error::new(std::io::ErrorKind::InvalidInput, "no parent"))
    })?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let doomed = parent.join(format!(".{name}{PRUNING_SUFFIX}"));
    fs::rename(dir, &doomed).map_err(|e| Error::io(dir, e))?;
    sync_dir(parent)?;
    drop(_held);
    fs::remove_dir_all(&doomed).map_err(|e| Error::io(&doomed, e))?;
    sync_dir(parent)
}

/// Finishes removals a crash interrupted: deletes every `DATA/days/.<name>.pruning`. Returns
/// how many it removed.
pub fn finish_removals(data_dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for (name, path) in day_dirs(data_dir)? {
        if name.starts_with('.') && name.ends_with(PRUNING_SUFFIX) {
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(&data_dir.join(DAYS_DIR))?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_whose_store_is_open_is_not_removed() {
        let data = tempfile::tempdir().expect("tempdir");
        let day = data.path().join(DAYS_DIR).join("2026-03-02");
        let store = crate::store::Store::open(&day, crate::store::StoreOptions::for_test())
            .expect("open")
            .0;
        let err = remove_day_dir(&day).expect_err("open store");
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(day.join("STORE").exists(), "nothing removed");
        drop(store);
        remove_day_dir(&day).expect("closed store");
        assert!(!day.exists());
        assert!(day_dirs(data.path()).expect("list").is_empty(), "no leftover");
    }

    #[test]
    fn the_manager_lock_is_shared_by_managers_and_refuses_a_removal_by_hand() {
        let data = tempfile::tempdir().expect("tempdir");
        let a = ManagerLock::shared(data.path()).expect("shared");
        let b = ManagerLock::shared(data.path()).expect("two managers share it");
        assert!(matches!(ManagerLock::exclusive(data.path()), Err(Error::Locked { .. })));
        drop((a, b));
        ManagerLock::exclusive(data.path()).expect("no manager");
    }
}
