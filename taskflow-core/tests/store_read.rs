//! A read-only open (`store::read_only`) returns what `Store::open` would recover and leaves
//! every byte of the store directory as it was — a torn tail included — and refuses a store
//! another process has open.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use taskflow_core::store::{Error, ReadEvents, Store, StoreOptions, read_only};

fn payload(seq: u64) -> Vec<u8> {
    format!("event {seq:010} payload-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz").into_bytes()
}

/// Every file under `dir` with its bytes (the lock file included: it must not change either).
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.insert(p.clone(), Vec::new());
            out.extend(contents(&p));
        } else {
            out.insert(p.clone(), fs::read(&p).unwrap());
        }
    }
    out
}

fn assert_unchanged(before: &BTreeMap<PathBuf, Vec<u8>>, dir: &Path) {
    let after = contents(dir);
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(before), names(&after), "files were added or removed");
    for (path, bytes) in before {
        assert!(&after[path] == bytes, "{} changed", path.display());
    }
}

/// A closed store: events 1..=2500, snapshots at 1000 and 2000 (the log compacted through 1000).
fn build(dir: &Path) {
    let (store, _) = Store::open(dir, StoreOptions::for_test()).unwrap();
    let put = |from: u64, to: u64| {
        store.append((from..=to).map(|s| (s, payload(s))).collect()).unwrap();
        assert!(store.wait_durable(to, Duration::from_secs(30)).unwrap());
    };
    put(1, 2200);
    store.write_snapshot(1000, b"snapshot at 1000").unwrap();
    store.write_snapshot(2000, b"snapshot at 2000").unwrap();
    put(2201, 2500);
    store.close().unwrap();
}

#[test]
fn a_read_only_open_returns_the_recovered_day_and_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let before = contents(dir.path());

    let r = read_only(dir.path(), ReadEvents::AfterSnapshot).unwrap();
    let snap = r.snapshot.expect("the newest snapshot");
    assert_eq!((snap.seq, snap.bytes.as_slice()), (2000, &b"snapshot at 2000"[..]));
    assert_eq!(r.events.first().map(|e| e.0), Some(2001));
    assert_eq!(r.events.len(), 500);
    assert_eq!(r.events[0].1, payload(2001));
    assert_eq!(r.next_seq, 2501);
    assert!(r.torn_tail.is_none());
    assert_unchanged(&before, dir.path());

    // Every event the log still holds: from after the older snapshot's compaction.
    let all = read_only(dir.path(), ReadEvents::All).unwrap();
    let first = all.events.first().map(|e| e.0).unwrap();
    assert!((2..=1001).contains(&first), "compacted through seq 1000 at most: {first}");
    assert_eq!(all.events.last().map(|e| e.0), Some(2500));
    assert_unchanged(&before, dir.path());

    // And the store still opens for writing afterwards, with the same content.
    let (store, rec) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!((rec.next_seq, rec.events.len()), (2501, 500));
    store.close().unwrap();
}

#[test]
fn a_torn_tail_is_reported_and_left_in_place() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    // Power loss after the file grew: a zero-filled tail on the last segment.
    let seg =
        fs::read_dir(dir.path().join("log")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let len = bytes.len() as u64;
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(&seg, &bytes).unwrap();
    let before = contents(dir.path());

    let r = read_only(dir.path(), ReadEvents::AfterSnapshot).unwrap();
    let torn = r.torn_tail.expect("the torn tail is reported");
    assert_eq!(torn.offset, len);
    assert_eq!(r.next_seq, 2501);
    assert_unchanged(&before, dir.path());
    assert_eq!(fs::metadata(&seg).unwrap().len(), len + 4096, "not truncated");
}

#[test]
fn a_store_open_elsewhere_is_refused_and_a_missing_one_is_not_a_day() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let (store, _) = Store::open(dir.path(), StoreOptions::for_test()).unwrap();
    match read_only(dir.path(), ReadEvents::AfterSnapshot) {
        Err(Error::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
    store.close().unwrap();

    let empty = tempfile::tempdir().unwrap();
    match read_only(empty.path(), ReadEvents::AfterSnapshot) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("not a taskflow store")),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read_dir(empty.path()).unwrap().count(), 0, "nothing created");
}
