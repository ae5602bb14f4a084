//! The duration history: how long the succeeded attempts of past days' shards took, per task
//! and per shard key, kept beside the days (`DATA/history/durations`), not inside any
//! `days/<date>/` — pruning closed days never removes it.
//!
//! One file, replaced durably (temp file, fsync, rename, fsync of the directory) when a day
//! closes: the store envelope (`magic ‖ version ‖ crc32`) around named MessagePack whose
//! `format` field is [`HISTORY_FORMAT`]. `DATA/history/LOCK` serialises the read-fold-write of
//! processes sharing the data directory. Bounded: per key the last [`KEY_SAMPLES`] durations,
//! per task the last [`TASK_SAMPLES`] durations and [`TASK_DAYS`] days' sizes, at most
//! [`MAX_KEYS`] keys per task. Format: `proto-docs/store-format.md` (duration history).
//!
//! It knows no domain type: tasks and keys are strings. **Reading never writes**: [`read`]
//! creates nothing (a missing directory or file is an empty history).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::format::{envelope, open_envelope, write_file_durably};

/// The history directory inside the data directory.
pub const HISTORY_DIR: &str = "history";
/// The history file inside [`HISTORY_DIR`].
pub const HISTORY_FILE: &str = "durations";
/// The format version of the history payload this build reads and writes.
pub const HISTORY_FORMAT: u16 = 1;
/// Durations kept per shard key (the newest).
pub const KEY_SAMPLES: usize = 20;
/// Durations kept per task (the newest, over all its keys).
pub const TASK_SAMPLES: usize = 200;
/// Days' sizes (shards, scope items) kept per task.
pub const TASK_DAYS: usize = 20;
/// Keys kept per task; beyond it, keys not seen on the newest day go first.
pub const MAX_KEYS: usize = 5_000;
/// Business dates remembered as folded in (a day folded twice counts once).
pub const DAYS_KEPT: usize = 60;

/// The whole history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// [`HISTORY_FORMAT`].
    pub format: u16,
    /// The business dates folded in, oldest first (at most [`DAYS_KEPT`]).
    pub days: Vec<String>,
    /// Per task id.
    pub tasks: BTreeMap<String, TaskHistory>,
}

/// One task's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHistory {
    /// Durations (ms) of its succeeded shards, newest last (at most [`TASK_SAMPLES`]).
    pub samples: Vec<u64>,
    /// Each day's size, newest last (at most [`TASK_DAYS`]).
    pub sizes: Vec<DaySize>,
    /// Durations (ms) per shard key, newest last (at most [`KEY_SAMPLES`] each).
    pub keys: BTreeMap<String, Vec<u64>>,
    /// The shard keys of the newest day, in registration order (empty when it had more than
    /// [`MAX_KEYS`]).
    pub last_keys: Vec<String>,
}

/// A task's size on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaySize {
    /// Its shards.
    pub shards: u32,
    /// Its scope items.
    pub items: u32,
}

/// What one closed day adds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaySamples {
    /// The business date (YYYY-MM-DD).
    pub date: String,
    /// Per task id: its size and the succeeded shards' `(key, duration ms)`, in shard order.
    pub tasks: BTreeMap<String, (DaySize, Vec<(String, u64)>)>,
}

fn path_of(data_dir: &Path) -> PathBuf {
    data_dir.join(HISTORY_DIR).join(HISTORY_FILE)
}

/// Reads the history of a data directory; a missing file is an empty history. Writes nothing.
pub fn read(data_dir: &Path) -> Result<History> {
    let path = path_of(data_dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(History { format: HISTORY_FORMAT, ..History::default() });
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    decode(&bytes).map_err(|reason| {
        Error::corrupt(
            &path,
            None,
            format!(
                "{reason}; the history is derived from past days: remove the file to start it again"
            ),
        )
    })
}

/// Decodes a history file's bytes.
pub fn decode(bytes: &[u8]) -> std::result::Result<History, String> {
    let payload = open_envelope(bytes)?;
    let h: History = rmp_serde::from_slice(payload).map_err(|e| format!("undecodable: {e}"))?;
    if h.format != HISTORY_FORMAT {
        return Err(format!("history format {}, this build reads {HISTORY_FORMAT}", h.format));
    }
    Ok(h)
}

/// Encodes a history as its file's bytes.
pub fn encode(h: &History) -> Vec<u8> {
    let mut h = h.clone();
    h.format = HISTORY_FORMAT;
    // Named MessagePack of plain strings, integers and maps: encoding cannot fail.
    envelope(&rmp_serde::to_vec_named(&h).unwrap_or_default())
}

/// Folds `day` into the data directory's history and writes it durably (under the history's
/// lock); `false` when the date was already folded in (nothing written). Blocking (fsync).
pub fn record_day(data_dir: &Path, day: &DaySamples) -> Result<bool> {
    let dir = data_dir.join(HISTORY_DIR);
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let lock_path = dir.join("LOCK");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    let mut h = read(data_dir)?;
    if !h.fold(day) {
        return Ok(false);
    }
    write_file_durably(&path_of(data_dir), &encode(&h))?;
    Ok(true)
}

/// Keeps the newest `n` of `v`.
fn keep_last<T>(v: &mut Vec<T>, n: usize) {
    if v.len() > n {
        v.drain(..v.len() - n);
    }
}

impl History {
    /// Folds one day in; `false` if its date was already folded in.
    pub fn fold(&mut self, day: &DaySamples) -> bool {
        if self.days.iter().any(|d| d == &day.date) {
            return false;
        }
        self.days.push(day.date.clone());
        keep_last(&mut self.days, DAYS_KEPT);
        for (task, (size, shards)) in &day.tasks {
            let t = self.tasks.entry(task.clone()).or_default();
            t.sizes.push(*size);
            keep_last(&mut t.sizes, TASK_DAYS);
            t.samples.extend(shards.iter().map(|(_, ms)| *ms));
            keep_last(&mut t.samples, TASK_SAMPLES);
            let newest: BTreeSet<&str> = shards.iter().map(|(k, _)| k.as_str()).collect();
            for (key, ms) in shards.iter().take(MAX_KEYS) {
                let v = t.keys.entry(key.clone()).or_default();
                v.push(*ms);
                keep_last(v, KEY_SAMPLES);
            }
            if t.keys.len() > MAX_KEYS {
                let mut over = t.keys.len() - MAX_KEYS;
                t.keys.retain(|k, _| {
                    if over > 0 && !newest.contains(k.as_str()) {
                        over -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
            t.last_keys = if shards.len() <= MAX_KEYS {
                shards.iter().map(|(k, _)| k.clone()).collect()
            } else {
                Vec::new()
            };
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(date: &str, shards: &[(&str, u64)]) -> DaySamples {
        let mut tasks = BTreeMap::new();
        let list = shards.iter().map(|(k, ms)| (k.to_string(), *ms)).collect();
        tasks.insert(
            "confirm".to_string(),
            (DaySize { shards: shards.len() as u32, items: 7 }, list),
        );
        DaySamples { date: date.into(), tasks }
    }

    #[test]
    fn a_day_is_folded_once_bounded_and_survives_a_reopen_reading_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Reading a directory without a history creates nothing.
        assert_eq!(read(dir.path()).expect("empty").tasks.len(), 0);
        assert!(!dir.path().join(HISTORY_DIR).exists());
        assert!(
            record_day(dir.path(), &day("2026-11-24", &[("F1", 100), ("F2", 900)])).expect("w")
        );
        assert!(!record_day(dir.path(), &day("2026-11-24", &[("F1", 5)])).expect("w"), "once");
        for i in 0..30u64 {
            let date = format!("2026-12-{:02}", i + 1);
            assert!(record_day(dir.path(), &day(&date, &[("F1", 100 + i)])).expect("w"));
        }
        let before = fs::read(path_of(dir.path())).expect("file");
        let h = read(dir.path()).expect("read");
        assert_eq!(fs::read(path_of(dir.path())).expect("file"), before, "reading wrote");
        let t = &h.tasks["confirm"];
        assert_eq!(t.keys["F1"].len(), KEY_SAMPLES);
        assert_eq!(*t.keys["F1"].last().expect("newest"), 129);
        assert_eq!(t.keys["F2"], vec![900], "a key not seen lately keeps its samples");
        assert_eq!(t.sizes.len(), TASK_DAYS);
        assert_eq!(t.last_keys, vec!["F1".to_string()]);
        assert_eq!(h.days.len(), 31);
        assert_eq!(h.format, HISTORY_FORMAT);
    }

    #[test]
    fn a_damaged_or_newer_history_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(record_day(dir.path(), &day("2026-11-24", &[("F1", 100)])).expect("w"));
        let path = path_of(dir.path());
        let mut bytes = fs::read(&path).expect("file");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).expect("write");
        let e = read(dir.path()).expect_err("damaged").to_string();
        assert!(e.contains("durations") && e.contains("checksum"), "{e}");
        let newer = History { format: 2, ..History::default() };
        let payload = rmp_serde::to_vec_named(&newer).expect("encode");
        fs::write(&path, envelope(&payload)).expect("write");
        let e = read(dir.path()).expect_err("newer").to_string();
        assert!(e.contains("history format 2"), "{e}");
    }
}
