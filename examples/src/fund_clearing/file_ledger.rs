//! [`FileLedger`]: the exactly-once ledger over a directory, shared by every process that
//! opens it (executor processes on one machine, or on a shared file system with atomic
//! `link(2)`), so a multi-process test can prove that no posting was committed twice.
//!
//! ```text
//! DIR/entries/<encoded key>   one file per committed posting: "<key>\t<amount>\n"
//! DIR/tmp/                    postings being written (moved in by link(2), then removed)
//! DIR/attempts.log            one line per post or reversal: "new|dup|rev\t<key>\t<amount>\t<pid>"
//! ```
//!
//! A post writes its file under `tmp/`, fsyncs it, then `hard_link`s it to its name under
//! `entries/`: the link either creates the name with the whole content or fails because the
//! name exists, atomically, so two processes racing on one key never both commit it and a
//! `kill -9` never leaves a half-written posting. Each outcome is then appended to
//! `attempts.log` in one `O_APPEND` write, so duplicates are counted across processes.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ledger::Ledger;

/// The environment variable that makes the `taskflow` binary's fund behaviors post to a
/// [`FileLedger`] in that directory (see [`super::FundOptions::from_env`]).
pub const LEDGER_DIR_ENV: &str = "TASKFLOW_LEDGER_DIR";

/// A [`Ledger`] in a directory, safe to share between processes. See the module docs.
#[derive(Debug)]
pub struct FileLedger {
    dir: PathBuf,
    entries: PathBuf,
    tmp: PathBuf,
    log: File,
}

/// Names staged files uniquely within the process (the pid tells processes apart), however
/// many [`FileLedger`]s share a directory.
static STAGED: AtomicU64 = AtomicU64::new(0);

/// What `attempts.log` says about one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyAttempts {
    /// Posts that committed the key (more than one only after a reversal in between).
    pub new: u32,
    /// Posts refused because the key was already committed.
    pub dup: u32,
    /// Reversals that removed it.
    pub rev: u32,
}

impl FileLedger {
    /// Opens (creating if needed) the ledger in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<FileLedger> {
        let dir = dir.as_ref().to_owned();
        let entries = dir.join("entries");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&entries)?;
        fs::create_dir_all(&tmp)?;
        let log = OpenOptions::new().create(true).append(true).open(dir.join("attempts.log"))?;
        Ok(FileLedger { dir, entries, tmp, log })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Posts `amount` under `key`: `Ok(true)` if this call committed it, `Ok(false)` if it
    /// was already committed (by any process).
    pub fn try_post(&self, key: &str, amount: i64) -> io::Result<bool> {
        let n = STAGED.fetch_add(1, Ordering::Relaxed);
        let staged = self.tmp.join(format!("{}-{n}", std::process::id()));
        let mut f = OpenOptions::new().write(true).create_new(true).open(&staged)?;
        f.write_all(format!("{key}\t{amount}\n").as_bytes())?;
        f.sync_all()?;
        drop(f);
        let name = self.entries.join(file_name(key));
        let committed = match fs::hard_link(&staged, &name) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) => {
                let _ = fs::remove_file(&staged);
                return Err(e);
            }
        };
        fs::remove_file(&staged)?;
        if committed {
            File::open(&self.entries)?.sync_all()?;
        }
        self.append_log(if committed { "new" } else { "dup" }, key, amount)?;
        Ok(committed)
    }

    /// Removes every posting whose key starts with `prefix`; returns them sorted by key.
    pub fn try_reverse(&self, prefix: &str) -> io::Result<Vec<(String, i64)>> {
        let mut removed = Vec::new();
        for (key, amount, path) in self.scan()? {
            if !key.starts_with(prefix) {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                // Another process reversed it first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            self.append_log("rev", &key, amount)?;
            removed.push((key, amount));
        }
        File::open(&self.entries)?.sync_all()?;
        removed.sort();
        Ok(removed)
    }

    /// Every committed posting, by key.
    pub fn entries(&self) -> io::Result<BTreeMap<String, i64>> {
        Ok(self.scan()?.into_iter().map(|(k, a, _)| (k, a)).collect())
    }

    /// What `attempts.log` recorded for each key, across every process.
    pub fn attempts(&self) -> io::Result<BTreeMap<String, KeyAttempts>> {
        let text = fs::read_to_string(self.dir.join("attempts.log"))?;
        let mut out: BTreeMap<String, KeyAttempts> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let mut fields = line.split('\t');
            let (Some(what), Some(key)) = (fields.next(), fields.next()) else {
                return Err(bad_data(format!("attempts.log:{}: malformed line {line:?}", i + 1)));
            };
            let a = out.entry(key.to_owned()).or_default();
            match what {
                "new" => a.new += 1,
                "dup" => a.dup += 1,
                "rev" => a.rev += 1,
                _ => return Err(bad_data(format!("attempts.log:{}: unknown {what:?}", i + 1))),
            }
        }
        Ok(out)
    }

    fn append_log(&self, what: &str, key: &str, amount: i64) -> io::Result<()> {
        // One write of one buffer on an O_APPEND file: lines of processes never interleave.
        let line = format!("{what}\t{key}\t{amount}\t{}\n", std::process::id());
        (&self.log).write_all(line.as_bytes())
    }

    fn scan(&self) -> io::Result<Vec<(String, i64, PathBuf)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.entries)? {
            let path = entry?.path();
            let text = match fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let parsed = text
                .trim_end_matches('\n')
                .rsplit_once('\t')
                .and_then(|(k, a)| a.parse::<i64>().ok().map(|a| (k.to_owned(), a)));
            let Some((key, amount)) = parsed else {
                return Err(bad_data(format!("{}: malformed posting {text:?}", path.display())));
            };
            out.push((key, amount, path));
        }
        Ok(out)
    }
}

impl Ledger for FileLedger {
    /// Panics on an I/O error (the shard driver turns the panic into a failed step, with the
    /// message): a posting that cannot be recorded must not count as done.
    fn post(&self, key: &str, amount: i64) -> bool {
        self.try_post(key, amount).unwrap_or_else(|e| {
            panic!("cannot post {key} to the ledger in {}: {e}", self.dir.display())
        })
    }

    fn reverse(&self, prefix: &str) -> Vec<(String, i64)> {
        self.try_reverse(prefix).unwrap_or_else(|e| {
            panic!("cannot reverse {prefix}* in the ledger in {}: {e}", self.dir.display())
        })
    }
}

fn bad_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A file name for `key`: ASCII letters, digits, `-`, `_` and `.` kept, every other byte as
/// `%XX` (so `/` cannot make a path and distinct keys get distinct names). Names longer than
/// 200 bytes keep their first 180 and append a 64-bit FNV-1a hash of the whole key.
fn file_name(key: &str) -> String {
    let mut name = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !name.is_empty())
        {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    if name.len() > 200 {
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        name.truncate(180);
        name.push_str(&format!("~{hash:016x}"));
    }
    name
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    #[test]
    fn two_threads_racing_on_one_key_commit_it_once() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..50 {
            let key = format!("2026-09-30/clearing/D101/g0/net{round}");
            let barrier = Arc::new(Barrier::new(2));
            let racers: Vec<_> = (0..2)
                .map(|i| {
                    // Each thread opens its own ledger, as separate processes would.
                    let ledger = FileLedger::open(dir.path()).unwrap();
                    let (key, barrier) = (key.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        ledger.try_post(&key, 100 + i).unwrap()
                    })
                })
                .collect();
            let won: Vec<bool> = racers.into_iter().map(|t| t.join().unwrap()).collect();
            assert_eq!(won.iter().filter(|w| **w).count(), 1, "round {round}: {won:?}");
        }
        let ledger = FileLedger::open(dir.path()).unwrap();
        assert_eq!(ledger.entries().unwrap().len(), 50);
        let attempts = ledger.attempts().unwrap();
        assert_eq!(attempts.len(), 50);
        assert!(attempts.values().all(|a| *a == KeyAttempts { new: 1, dup: 1, rev: 0 }));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "nothing staged left");
    }

    #[test]
    fn posts_are_exactly_once_and_reversal_is_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = FileLedger::open(dir.path()).unwrap();
        assert!(ledger.post("d/t/P1/g0/a", 5));
        assert!(!ledger.post("d/t/P1/g0/a", 7));
        assert!(ledger.post("d/t/P1/g0/b", -6));
        assert!(ledger.post("d/t/P10/g0/a", 1));
        let removed = ledger.reverse("d/t/P1/g0/");
        assert_eq!(removed, vec![("d/t/P1/g0/a".to_owned(), 5), ("d/t/P1/g0/b".to_owned(), -6)]);
        assert_eq!(ledger.entries().unwrap(), BTreeMap::from([("d/t/P10/g0/a".to_owned(), 1)]));
        // A reversed key can be posted again (the re-run after a rollback uses a new
        // generation, but the ledger does not rely on it).
        assert!(ledger.post("d/t/P1/g0/a", 5));
        let a = ledger.attempts().unwrap();
        assert_eq!(a["d/t/P1/g0/a"], KeyAttempts { new: 2, dup: 1, rev: 1 });
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("2026-09-30/t/P1×D1/g0"), "2026-09-30%2Ft%2FP1%C3%97D1%2Fg0");
        assert_eq!(file_name(".."), "%2E.");
        assert_ne!(file_name("a/b"), file_name("a%2Fb"));
        let long = "k".repeat(300);
        let name = file_name(&long);
        assert!(name.len() <= 200);
        assert_ne!(name, file_name(&"k".repeat(301)));
    }
}
