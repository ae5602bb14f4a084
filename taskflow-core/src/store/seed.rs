//! Stores that start from a snapshot (replicas and stores recovered from a replica), and
//! reading the current snapshot of an open store (replication catch-up).

use std::path::Path;

use super::{
    Error, RecoveredSnapshot, Result, Store, StoreOptions, dir_entries, init_layout, snap,
    take_lock,
};

/// Creates a store in `dir` (missing or empty) whose snapshot covers every event with seq ≤
/// `base_seq` and whose log starts at `base_seq + 1`; with `snapshot` none, `base_seq` must be
/// 0 (a new, empty store). Durable on return; open it with [`Store::open`].
pub fn create_seeded(
    dir: impl AsRef<Path>,
    opts: &StoreOptions,
    base_seq: u64,
    snapshot: Option<&[u8]>,
) -> Result<()> {
    let dir = dir.as_ref();
    if snapshot.is_none() && base_seq != 0 {
        return Err(Error::Invalid(format!(
            "a store starting after seq {base_seq} needs the snapshot at that seq"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let lock = take_lock(dir)?;
    if !dir_entries(dir)?.is_empty() {
        return Err(Error::NotEmpty { path: dir.to_owned() });
    }
    init_layout(dir, opts, base_seq + 1, |db, sled_dir| {
        if let Some(bytes) = snapshot {
            snap::write_generation(db, sled_dir, base_seq, bytes)?;
        }
        Ok(())
    })?;
    drop(lock);
    Ok(())
}

impl Store {
    /// The newest valid snapshot, if any (blocking: reads sled). Serialised with snapshot
    /// writes, so the generation read is never deleted under the reader.
    pub fn current_snapshot(&self) -> Result<Option<RecoveredSnapshot>> {
        let _guard = self.snap_lock.lock().unwrap_or_else(|p| p.into_inner());
        let chosen = snap::choose(&self.db, &self.sled_dir)?;
        Ok(chosen.manifest.map(|m| RecoveredSnapshot {
            seq: m.seq,
            generation: m.generation,
            bytes: chosen.bytes,
        }))
    }

    /// The lowest seq the log still holds (events below it are only in the snapshot).
    pub fn first_log_seq(&self) -> u64 {
        self.log.segments().first().map_or_else(|| self.next_seq(), |s| s.first_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seeded_store_opens_with_its_snapshot_and_continues_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("s");
        create_seeded(&d, &StoreOptions::for_test(), 41, Some(b"snapshot-bytes")).unwrap();
        let (store, rec) = Store::open(&d, StoreOptions::for_test()).unwrap();
        assert_eq!(rec.next_seq, 42);
        assert_eq!(rec.snapshot.as_ref().map(|s| s.seq), Some(41));
        assert_eq!(store.current_snapshot().unwrap().unwrap().bytes, b"snapshot-bytes");
        assert!(matches!(store.append(vec![(41, vec![1])]), Err(Error::Gap { .. })));
        store.append(vec![(42, vec![1]), (43, vec![2])]).unwrap();
        assert!(store.wait_durable(43, std::time::Duration::from_secs(10)).unwrap());
        assert_eq!(store.first_log_seq(), 42);
        store.close().unwrap();
        let (_store, rec) = Store::open(&d, StoreOptions::for_test()).unwrap();
        assert_eq!(rec.events, vec![(42, vec![1]), (43, vec![2])]);
    }

    #[test]
    fn seeding_refuses_a_non_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"x").unwrap();
        let r = create_seeded(dir.path(), &StoreOptions::for_test(), 0, None);
        assert!(matches!(r, Err(Error::NotEmpty { .. })), "{r:?}");
    }
}
