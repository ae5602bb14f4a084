//! The executor's store of unconfirmed outcomes (two-phase confirmation, seed §3.4): with
//! `--data DIR`, each outcome the manager has not yet confirmed durable is also a file in
//! `DIR/held/`, so an executor process that dies while its manager is down re-reports it when
//! it starts again. Without `--data` outcomes are held in memory only.
//!
//! Each file is one cluster envelope (`[u16 protocol version][rmp named HeldOutcome]`), written
//! to a temp name, fsynced and renamed. Writes and removals run on the blocking pool and never
//! delay a report: a crash before the write only means the outcome is not vouched for (the
//! shard becomes unconfirmed), and a file removed late is re-reported once and dropped as
//! stale.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::codec;
use super::messages::{HeldOutcome, WireAttempt, WireJobKind};

/// Where held outcomes are kept (nowhere without `--data`).
#[derive(Debug, Clone, Default)]
pub(crate) struct HeldStore {
    dir: Option<PathBuf>,
}

impl HeldStore {
    /// Opens `data/held/` (created if missing) and reads the outcomes a previous process of
    /// this executor left there. Unreadable files are logged and left in place.
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
            let decoded = std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
                codec::decode::<HeldOutcome>("held outcome", &b).map_err(|e| e.to_string())
            });
            match decoded {
                Ok(h) => found.push(h),
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "unreadable held outcome; left in place")
                }
            }
        }
        Ok((HeldStore { dir: Some(dir) }, found))
    }

    /// Persists an outcome (in the background).
    pub(crate) fn put(&self, held: &HeldOutcome) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(file_name(&held.key));
        let bytes = match codec::encode("held outcome", held) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot encode a held outcome");
                return;
            }
        };
        let dir = dir.clone();
        background(move || {
            let tmp = path.with_extension("tmp");
            let written = std::fs::File::create(&tmp).and_then(|mut f| {
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_data()
            });
            let result = written
                .and_then(|()| std::fs::rename(&tmp, &path))
                .and_then(|()| std::fs::File::open(&dir)?.sync_all());
            if let Err(e) = result {
                warn!(file = %path.display(), error = %e, "cannot persist a held outcome");
            }
        });
    }

    /// Forgets an outcome (in the background).
    pub(crate) fn remove(&self, key: &WireAttempt) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(file_name(key));
        background(move || match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(file = %path.display(), error = %e, "cannot remove a held outcome"),
        });
    }
}

fn background(f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(f);
        }
        Err(_) => f(),
    }
}

/// A path-safe name: the task id in hex, then the numbers.
fn file_name(k: &WireAttempt) -> String {
    let task: String = k.task.bytes().map(|b| format!("{b:02x}")).collect();
    let kind = match k.kind {
        WireJobKind::Run => "run",
        WireJobKind::Rollback => "rollback",
    };
    format!("{task}-{}-{}-{}-{kind}.held", k.shard, k.attempt, k.generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::messages::WireOutcome;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outcomes_survive_a_restart_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, found) = HeldStore::open(Some(dir.path())).unwrap();
        assert!(found.is_empty());
        let held = |shard| HeldOutcome {
            epoch: 3,
            key: WireAttempt {
                task: "a/b c".into(),
                shard,
                attempt: 1,
                generation: 0,
                kind: WireJobKind::Run,
                dispatch: 0,
            },
            outcome: WireOutcome::Succeeded,
            last_step: None,
        };
        store.put(&held(0));
        store.put(&held(1));
        let files = |n: usize| {
            for _ in 0..500 {
                let count = std::fs::read_dir(dir.path().join("held"))
                    .unwrap()
                    .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "held")
                    .count();
                if count == n {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            panic!("expected {n} held files");
        };
        files(2);
        let (_, mut found) = HeldStore::open(Some(dir.path())).unwrap();
        found.sort_by_key(|h| h.key.shard);
        assert_eq!(found, vec![held(0), held(1)]);
        store.remove(&held(0).key);
        files(1);
        std::fs::write(dir.path().join("held").join("junk.held"), b"\x00\x02\xc1").unwrap();
        let (_, found) = HeldStore::open(Some(dir.path())).unwrap();
        assert_eq!(found, vec![held(1)], "the unreadable file is skipped");
    }
}
