//! The data directory's epoch: one number per data directory that never goes backwards.
//!
//! A manager bumps it at every start, before any executor joins, and stamps every assignment
//! with it. Executors keep the highest epoch they have seen across sessions and days and refuse
//! anything older, so the number must grow across days and recoveries too — one counter per day
//! store would start again at 1 each business day.
//!
//! The file is `DATA/EPOCH`: the text `taskflow epoch <n>\n`, written durably (temp file, fsync,
//! rename, fsync of the directory). `DATA/EPOCH.lock` serialises the read-modify-write between
//! processes sharing a data directory (two days' managers). A damaged file is an error naming
//! it, never read as 0.

use std::fs::{self, OpenOptions};
use std::path::Path;

use super::error::{Error, Result};
use super::format::write_file_durably;

/// The epoch file's name inside the data directory.
pub const EPOCH_FILE: &str = "EPOCH";
const PREFIX: &str = "taskflow epoch ";

/// The data directory's epoch (0 when it has none yet). Reading never writes.
pub fn dir_epoch(data_dir: &Path) -> Result<u64> {
    let path = data_dir.join(EPOCH_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(&path, e)),
    };
    text.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| {
            Error::corrupt(
                &path,
                None,
                format!(
                    "expected `{PREFIX}<number>` and a newline, found {:?}; restore it from a \
                     backup or write the highest epoch any executor reported",
                    text.chars().take(40).collect::<String>()
                ),
            )
        })
}

/// Increments the data directory's epoch durably and returns the new value, which is above both
/// the stored one and `at_least` (an epoch known from elsewhere: a day store written by an older
/// version, or the highest epoch executors reported to a recovery). Blocking (fsync).
pub fn bump_dir_epoch(data_dir: &Path, at_least: u64) -> Result<u64> {
    fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
    let lock_path = data_dir.join(format!("{EPOCH_FILE}.lock"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    let next = dir_epoch(data_dir)?.max(at_least).saturating_add(1);
    write_file_durably(&data_dir.join(EPOCH_FILE), format!("{PREFIX}{next}\n").as_bytes())?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_only_grows_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(dir_epoch(dir.path()).expect("read"), 0);
        assert_eq!(bump_dir_epoch(dir.path(), 0).expect("bump"), 1);
        assert_eq!(bump_dir_epoch(dir.path(), 0).expect("bump"), 2);
        // A higher epoch known from elsewhere lifts it; a lower one never lowers it.
        assert_eq!(bump_dir_epoch(dir.path(), 9).expect("bump"), 10);
        assert_eq!(bump_dir_epoch(dir.path(), 3).expect("bump"), 11);
        assert_eq!(dir_epoch(dir.path()).expect("read"), 11);
        let text = fs::read_to_string(dir.path().join(EPOCH_FILE)).expect("file");
        assert_eq!(text, "taskflow epoch 11\n");
    }

    #[test]
    fn a_damaged_epoch_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(EPOCH_FILE), "taskflow epoch 1x\n").expect("write");
        let err = bump_dir_epoch(dir.path(), 0).expect_err("damaged");
        let msg = err.to_string();
        assert!(msg.contains("EPOCH") && msg.contains("1x"), "{msg}");
        // Nothing was written over it.
        let text = fs::read_to_string(dir.path().join(EPOCH_FILE)).expect("file");
        assert_eq!(text, "taskflow epoch 1x\n");
    }
}
