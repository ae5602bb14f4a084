//! The executor's store of unconfirmed outcomes (two-phase confirmation): with `--data DIR`,
//! each outcome the manager has not yet confirmed durable is also a file in `DIR/held/`, so an
//! executor process that dies while its manager is down re-reports it when it starts again.
//! Without `--data` outcomes are held in memory only. A step checkpoint the manager did not
//! answer is held the same way, as the outcome "interrupted after that step" — which is what
//! it is if the process dies before the checkpoint is delivered.
//!
//! Each file is one cluster envelope (`[u16 protocol version][rmp named HeldOutcome]`), written
//! to a temp name, fsynced and renamed. Writes and removals are done in order by one
//! background thread and never delay a report: a crash before the write only means the
//! outcome is not vouched for (the shard becomes unconfirmed), and a file removed late is
//! re-reported once and dropped as stale.
//!
//! A file of protocol version 2 (or any key without a business date and cluster id) is vouched
//! for by nobody: it could belong to another day's shard with the same names and numbers. It
//! is dropped with a warning when the store is opened, never re-reported.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tracing::warn;

use super::codec;
use super::messages::{HeldOutcome, WireAttempt, WireJobKind};

/// Where held outcomes are kept (nowhere without `--data`).
#[derive(Debug, Clone, Default)]
pub(crate) struct HeldStore {
    dir: Option<PathBuf>,
    /// The writer thread's queue: operations are carried out in the order they were asked.
    ops: Option<mpsc::Sender<Op>>,
}

#[derive(Debug)]
enum Op {
    Put(PathBuf, Vec<u8>),
    Remove(PathBuf),
    #[cfg(test)]
    Barrier(mpsc::Sender<()>),
}

impl HeldStore {
    /// Opens `data/held/` (created if missing) and reads the outcomes a previous process of
    /// this executor left there. Unreadable files are logged and left in place; files without
    /// a business date and cluster id (protocol version 2) are logged and removed.
    pub(crate) fn open(data: Option<&Path>) -> Result<(HeldStore, Vec<HeldOutcome>), String> {
        let Some(data) = data else { return Ok((HeldStore::default(), Vec::new())) };
        let dir = data.join("held");
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut found = Vec::new();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("held") {
                continue;
            }
            match read(&path) {
                Ok(Some(h)) => found.push(h),
                Ok(None) => {
                    warn!(
                        file = %path.display(),
                        "held outcome without a business date and cluster id (protocol \
                         version 2): nobody can vouch for it, so it is dropped"
                    );
                    if let Err(e) = std::fs::remove_file(&path) {
                        warn!(file = %path.display(), error = %e, "cannot remove it");
                    }
                }
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "unreadable held outcome; left in place")
                }
            }
        }
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("taskflow-held".into())
            .spawn(move || writer(&rx))
            .map_err(|e| format!("cannot start the held-outcome writer: {e}"))?;
        Ok((HeldStore { dir: Some(dir.clone()), ops: Some(tx) }, found))
    }

    /// Persists an outcome (in the background), replacing any earlier one of the same job.
    pub(crate) fn put(&self, held: &HeldOutcome) {
        let (Some(dir), Some(ops)) = (&self.dir, &self.ops) else { return };
        match codec::encode("held outcome", held) {
            Ok(bytes) => {
                let _ = ops.send(Op::Put(dir.join(file_name(&held.key)), bytes));
            }
            Err(e) => warn!(error = %e, "cannot encode a held outcome"),
        }
    }

    /// Forgets an outcome (in the background, after every earlier write).
    pub(crate) fn remove(&self, key: &WireAttempt) {
        let (Some(dir), Some(ops)) = (&self.dir, &self.ops) else { return };
        let _ = ops.send(Op::Remove(dir.join(file_name(key))));
    }

    /// Waits until every operation asked so far is done.
    #[cfg(test)]
    pub(crate) fn sync(&self) {
        let Some(ops) = &self.ops else { return };
        let (tx, rx) = mpsc::channel();
        if ops.send(Op::Barrier(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// Reads one held file: `None` if it is of protocol version 2 or its key carries no day.
fn read(path: &Path) -> Result<Option<HeldOutcome>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if codec::version_of(&bytes).is_some_and(|v| v < codec::MIN_PROTOCOL_VERSION) {
        return Ok(None);
    }
    let held = codec::decode::<HeldOutcome>("held outcome", &bytes).map_err(|e| e.to_string())?;
    Ok(held.key.is_vouched().then_some(held))
}

/// Carries out the store's operations in order until the store is dropped.
fn writer(ops: &mpsc::Receiver<Op>) {
    while let Ok(op) = ops.recv() {
        match op {
            Op::Put(path, bytes) => {
                let tmp = path.with_extension("tmp");
                let written = std::fs::File::create(&tmp).and_then(|mut f| {
                    std::io::Write::write_all(&mut f, &bytes)?;
                    f.sync_data()
                });
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                let result = written
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .and_then(|()| std::fs::File::open(&dir)?.sync_all());
                if let Err(e) = result {
                    warn!(file = %path.display(), error = %e, "cannot persist a held outcome");
                }
            }
            Op::Remove(path) => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => warn!(file = %path.display(), error = %e, "cannot remove a held outcome"),
            },
            #[cfg(test)]
            Op::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// A path-safe name: the day, the cluster id, the task id in hex, then the numbers.
fn file_name(k: &WireAttempt) -> String {
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let safe = |s: &str| {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            s.to_owned()
        } else {
            format!("x{}", hex(s))
        }
    };
    let kind = match k.kind {
        WireJobKind::Run => "run",
        WireJobKind::Rollback => "rollback",
    };
    format!(
        "{}-{}-{}-{}-{}-{}-{kind}.held",
        safe(&k.date),
        safe(&k.cluster_id),
        hex(&k.task),
        k.shard,
        k.attempt,
        k.generation
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::messages::{LastStep, WireOutcome};

    fn held(shard: u32, date: &str) -> HeldOutcome {
        HeldOutcome {
            epoch: 3,
            key: WireAttempt {
                task: "a/b c".into(),
                shard,
                attempt: 1,
                generation: 0,
                kind: WireJobKind::Run,
                date: date.into(),
                cluster_id: "0123abcd".into(),
                dispatch: 0,
            },
            outcome: WireOutcome::Succeeded,
            last_step: None,
        }
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("held"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "held")
            .count()
    }

    #[test]
    fn outcomes_survive_a_restart_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, found) = HeldStore::open(Some(dir.path())).unwrap();
        assert!(found.is_empty());
        store.put(&held(0, "2026-09-30"));
        store.put(&held(1, "2026-09-30"));
        // The same key of another day is another file.
        store.put(&held(1, "2026-10-08"));
        store.sync();
        assert_eq!(files(dir.path()), 3);
        let (_, mut found) = HeldStore::open(Some(dir.path())).unwrap();
        found.sort_by_key(|h| (h.key.shard, h.key.date.clone()));
        let expected = vec![held(0, "2026-09-30"), held(1, "2026-09-30"), held(1, "2026-10-08")];
        assert_eq!(found, expected);
        store.remove(&held(0, "2026-09-30").key);
        store.sync();
        assert_eq!(files(dir.path()), 2);
        std::fs::write(dir.path().join("held").join("junk.held"), b"\x00\x03\xc1").unwrap();
        let (_, found) = HeldStore::open(Some(dir.path())).unwrap();
        assert_eq!(found.len(), 2, "the unreadable file is skipped");
        assert_eq!(files(dir.path()), 3, "and left in place");
    }

    #[test]
    fn writes_and_removals_happen_in_the_order_asked() {
        // A held checkpoint is written, then replaced by the job's outcome, then removed on
        // confirmation: whatever the timing, the last word wins.
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = HeldStore::open(Some(dir.path())).unwrap();
        let mut checkpoint = held(0, "2026-09-30");
        checkpoint.outcome = WireOutcome::Cancelled;
        checkpoint.last_step = Some(LastStep { step: 0, name: "first".into() });
        for _ in 0..50 {
            store.put(&checkpoint);
            store.remove(&checkpoint.key);
        }
        store.put(&checkpoint);
        store.put(&held(0, "2026-09-30"));
        store.sync();
        let (_, found) = HeldStore::open(Some(dir.path())).unwrap();
        assert_eq!(found, vec![held(0, "2026-09-30")]);
        store.remove(&checkpoint.key);
        store.sync();
        assert_eq!(files(dir.path()), 0);
    }

    #[test]
    fn a_protocol_2_held_file_is_unvouched_and_dropped() {
        // The body of a version-2 held outcome: its key has no date and no cluster id.
        #[derive(serde::Serialize)]
        struct V2Key<'a> {
            task: &'a str,
            shard: u32,
            attempt: u32,
            generation: u32,
            kind: &'a str,
        }
        #[derive(serde::Serialize)]
        struct V2Held<'a> {
            epoch: u64,
            key: V2Key<'a>,
            outcome: &'a str,
        }
        let v2 = V2Held {
            epoch: 4,
            key: V2Key { task: "t", shard: 0, attempt: 1, generation: 0, kind: "run" },
            outcome: "Succeeded",
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("held")).unwrap();
        let old = codec::encode_version(2, "held outcome", &v2).unwrap();
        std::fs::write(dir.path().join("held").join("74-0-1-0-run.held"), &old).unwrap();
        // The same body under version 3 still has no day: unvouched too.
        let new = codec::encode("held outcome", &v2).unwrap();
        std::fs::write(dir.path().join("held").join("other.held"), &new).unwrap();
        let (_, found) = HeldStore::open(Some(dir.path())).unwrap();
        assert!(found.is_empty(), "not re-reported: {found:?}");
        assert_eq!(files(dir.path()), 0, "and removed");
    }
}
