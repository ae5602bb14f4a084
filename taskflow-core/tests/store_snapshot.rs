//! Snapshots in sled: write, compaction through the older generation, reopen, fallback.

use std::time::Duration;

use taskflow_core::store::{Error, Store, StoreOptions, Verdict, inspect};

fn payload(seq: u64) -> Vec<u8> {
    format!("event {seq:010} payload-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
        .into_bytes()
}

fn snap_bytes(seq: u64) -> Vec<u8> {
    // ~150 KB: more than two 60 KiB chunks, and more than sled's blob threshold as one value.
    (0..150_000u64).map(|i| ((i * 31 + seq) % 251) as u8).collect()
}

fn append_through(store: &Store, to: u64) {
    let from = store.next_seq();
    let batch: Vec<_> = (from..=to).map(|s| (s, payload(s))).collect();
    store.append(batch).unwrap();
    assert!(store.wait_durable(to, Duration::from_secs(30)).unwrap());
}

#[test]
fn snapshot_compaction_and_reopen_return_snapshot_plus_later_events() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    append_through(&store, 2000);
    let seg_before = store.segments().len();
    assert!(seg_before > 2);

    let w1 = store.write_snapshot(1000, &snap_bytes(1000)).unwrap();
    assert_eq!((w1.generation, w1.fallback_seq, w1.segments_removed), (1, None, 0));
    append_through(&store, 3000);
    let w2 = store.write_snapshot(2500, &snap_bytes(2500)).unwrap();
    assert_eq!(w2.generation, 2);
    assert_eq!(w2.fallback_seq, Some(1000));
    assert!(w2.segments_removed > 0, "segments wholly ≤ 1000 should be compacted");
    let first = store.segments()[0].first_seq;
    assert!(first > 1 && first <= 1001, "log must still cover seq 1001.., starts at {first}");
    // Compaction never goes past the older kept snapshot.
    store.compact_through(2999).unwrap();
    assert!(store.segments()[0].first_seq <= 1001);
    // A snapshot beyond the durable watermark or behind the current one is refused.
    assert!(matches!(store.write_snapshot(4000, b"x"), Err(Error::Invalid(_))));
    assert!(matches!(store.write_snapshot(2000, b"x"), Err(Error::Invalid(_))));
    // Reading from a seq inside the kept log works.
    let r: Vec<_> = store.read_from(2501).map(|r| r.unwrap().0).collect();
    assert_eq!(r, (2501..=3000).collect::<Vec<_>>());
    store.close().unwrap();

    let (store, rec) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    let snap = rec.snapshot.as_ref().unwrap();
    assert_eq!((snap.seq, snap.generation), (2500, 2));
    assert_eq!(snap.bytes, snap_bytes(2500));
    assert_eq!(rec.events.first().unwrap().0, 2501);
    assert_eq!(rec.events.len(), 500);
    assert!(rec.events.iter().all(|(s, p)| *p == payload(*s)));
    assert!(rec.snapshot_fallback.is_none());

    // A third snapshot drops generation 1 and compacts through 2500.
    append_through(&store, 4000);
    let w3 = store.write_snapshot(3500, &snap_bytes(3500)).unwrap();
    assert_eq!((w3.generation, w3.fallback_seq), (3, Some(2500)));
    assert!(store.segments()[0].first_seq <= 2501);
    store.close().unwrap();
    let report = inspect(dir.path());
    assert_eq!(report.verdict, Verdict::Ok, "{report}");
    let gens: Vec<_> = report.generations.iter().map(|g| (g.generation, g.role)).collect();
    assert_eq!(gens, vec![(2, "previous"), (3, "current")]);
    assert!(report.to_string().contains("VERDICT: ok"));
}

fn corrupt_key(dir: &std::path::Path, key: &[u8]) {
    let db = sled::open(dir.join("sled")).unwrap();
    let v = db.get(key).unwrap().expect("key exists");
    let mut v = v.to_vec();
    let last = v.len() - 1;
    v[last] ^= 0xff;
    db.insert(key, v).unwrap();
    db.flush().unwrap();
}

fn chunk_key(generation: u64, idx: u32) -> Vec<u8> {
    let mut k = b"snap/".to_vec();
    k.extend_from_slice(&generation.to_be_bytes());
    k.extend_from_slice(b"/chunk/");
    k.extend_from_slice(&idx.to_be_bytes());
    k
}

#[test]
fn corrupt_newest_snapshot_falls_back_to_previous_plus_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    append_through(&store, 1500);
    store.write_snapshot(500, &snap_bytes(500)).unwrap();
    store.write_snapshot(1200, &snap_bytes(1200)).unwrap();
    append_through(&store, 1800);
    store.close().unwrap();

    corrupt_key(dir.path(), &chunk_key(2, 1));
    let report = inspect(dir.path());
    assert!(matches!(report.verdict, Verdict::RecoverableWithFallback(_)), "{report}");
    assert!(report.to_string().contains("recoverable-with-fallback"));

    let (store, rec) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    let why = rec.snapshot_fallback.as_deref().expect("fallback reported");
    assert!(why.contains("generation 2"), "{why}");
    let snap = rec.snapshot.unwrap();
    assert_eq!((snap.seq, snap.generation), (500, 1));
    assert_eq!(snap.bytes, snap_bytes(500));
    assert_eq!(rec.events.first().unwrap().0, 501);
    assert_eq!(rec.events.last().unwrap().0, 1800);
    assert!(rec.events.iter().all(|(s, p)| *p == payload(*s)));

    // The next snapshot keeps the valid generation 1 as its fallback, not the corrupt one.
    let w = store.write_snapshot(1700, &snap_bytes(1700)).unwrap();
    assert_eq!(w.fallback_seq, Some(500));
    store.close().unwrap();
    let (_, rec) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(rec.snapshot.unwrap().seq, 1700);
}

#[test]
fn both_snapshots_corrupt_is_reported_not_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    append_through(&store, 3000);
    store.write_snapshot(1000, &snap_bytes(1000)).unwrap();
    store.write_snapshot(2000, &snap_bytes(2000)).unwrap();
    store.close().unwrap();
    corrupt_key(dir.path(), &chunk_key(1, 0));
    corrupt_key(dir.path(), &chunk_key(2, 2));
    match Store::open(dir.path(), StoreOptions::for_test()) {
        Err(Error::Corrupt { path, reason, .. }) => {
            assert!(path.ends_with("sled"), "{path:?}");
            assert!(reason.contains("both snapshot generations"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let report = inspect(dir.path());
    assert!(matches!(report.verdict, Verdict::Corrupt(_)), "{report}");
    assert!(report.to_string().contains("taskflow store restore"));
}

/// `close` returns only once sled has let go of the directory: opening it again at once (the
/// store, or sled itself) never finds it locked. sled 0.34's background threads hold the lock
/// for a moment after its last handle is dropped, which made reopening tests flaky.
#[test]
fn a_closed_store_can_be_opened_again_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for round in 1..=60u64 {
        let (store, _) = Store::open(dir.path(), StoreOptions::for_test())
            .unwrap_or_else(|e| panic!("round {round}: reopen after close: {e}"));
        append_through(&store, round * 20);
        store.write_snapshot(round * 20, &snap_bytes(round)).unwrap();
        store.close().unwrap();
        let db = sled::open(dir.path().join("sled"))
            .unwrap_or_else(|e| panic!("round {round}: sled open after close: {e}"));
        drop(db);
        // sled's own handle has the same lag; only the store's close waits it out.
        wait_unlocked(&dir.path().join("sled").join("db"));
    }
}

fn wait_unlocked(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let f = std::fs::File::open(path).unwrap();
        if f.try_lock().is_ok() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "sled kept {} locked", path.display());
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_crash_during_the_first_snapshot_leaves_a_store_that_opens_from_its_log() {
    // Found by a kill -9 of `taskflow standalone` right after its day closed: the first
    // snapshot's chunks were in sled, its `snap/current` pointer not yet, and every later
    // open refused the store as corrupt ("snapshot chunks exist but the pointer is missing"),
    // so the closed day could not be listed and the next start could not open it.
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    append_through(&store, 300);
    store.write_snapshot(300, &snap_bytes(300)).unwrap();
    store.close().unwrap();
    // The state the crash leaves: the chunks and manifest durable, the pointer never written.
    {
        let db = sled::open(dir.path().join("sled")).unwrap();
        assert!(db.remove(b"snap/current").unwrap().is_some());
        db.flush().unwrap();
    }
    let (store, rec) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert!(rec.snapshot.is_none(), "an uncommitted snapshot is not used");
    assert_eq!(rec.events.len(), 300, "the whole log is replayed");
    assert!(rec.events.iter().all(|(s, p)| *p == payload(*s)));
    let why = rec.snapshot_fallback.as_deref().expect("reported");
    assert!(why.contains("never committed"), "{why}");
    // The next snapshot replaces the orphan, and the store reopens clean.
    append_through(&store, 400);
    store.write_snapshot(400, &snap_bytes(400)).unwrap();
    store.close().unwrap();
    let (store, rec) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(rec.snapshot.as_ref().map(|s| s.seq), Some(400));
    assert!(rec.snapshot_fallback.is_none());
    store.close().unwrap();
}
