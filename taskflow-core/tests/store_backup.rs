//! Backup → restore round trip; restore refuses corrupt backups and non-empty targets; inspect.

use std::fs;
use std::time::Duration;

use taskflow_core::store::{Error, Store, StoreOptions, Verdict, backup, inspect, restore};

fn payload(seq: u64) -> Vec<u8> {
    format!("event {seq:010} zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz").into_bytes()
}

fn make_store(dir: &std::path::Path) {
    let (store, _) = Store::open(dir, StoreOptions::for_test()).unwrap();
    store.append((1..=1500).map(|s| (s, payload(s))).collect()).unwrap();
    assert!(store.wait_durable(1500, Duration::from_secs(30)).unwrap());
    store.write_snapshot(1000, &vec![7u8; 70_000]).unwrap();
    store.meta_put("cluster_id", &"prod-a".to_string()).unwrap();
    store.set_epoch(1).unwrap();
    store.close().unwrap();
}

#[test]
fn backup_restore_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_store(&src);
    let file = tmp.path().join("day.tfbackup");
    assert_eq!(backup(&src, &file).unwrap(), 500);
    let dst = tmp.path().join("dst");
    assert_eq!(restore(&file, &dst, false).unwrap(), 500);
    let (store, rec) = Store::open(&dst, StoreOptions::for_test()).unwrap();
    let snap = rec.snapshot.unwrap();
    assert_eq!((snap.seq, snap.bytes), (1000, vec![7u8; 70_000]));
    assert_eq!(rec.events.len(), 500);
    assert!(
        rec.events.iter().enumerate().all(|(i, (s, p))| *s == 1001 + i as u64 && *p == payload(*s))
    );
    assert_eq!(rec.next_seq, 1501);
    assert_eq!(store.epoch().unwrap(), 1);
    assert_eq!(store.meta_get::<String>("cluster_id").unwrap().as_deref(), Some("prod-a"));
    // The restored store keeps working.
    store.append(vec![(1501, payload(1501))]).unwrap();
    assert!(store.wait_durable(1501, Duration::from_secs(30)).unwrap());
    store.close().unwrap();
    assert_eq!(inspect(&dst).verdict, Verdict::Ok);
}

#[test]
fn restore_refuses_a_non_empty_directory_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_store(&src);
    let file = tmp.path().join("b");
    backup(&src, &file).unwrap();
    // The source goes on after the backup, so a forced restore visibly replaces it.
    let (store, _) = Store::open(&src, StoreOptions::for_test()).unwrap();
    store.append((1501..=1600).map(|s| (s, payload(s))).collect()).unwrap();
    assert!(store.wait_durable(1600, Duration::from_secs(30)).unwrap());
    store.close().unwrap();
    let other = tmp.path().join("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("keep.txt"), b"x").unwrap();
    assert!(matches!(restore(&file, &other, false), Err(Error::NotEmpty { .. })));
    assert!(other.join("keep.txt").exists(), "nothing may be touched without force");
    // Restoring over the live source store needs force too, and then replaces it.
    assert!(matches!(restore(&file, &src, false), Err(Error::NotEmpty { .. })));
    // Force replaces a store, never files that are not part of one.
    assert!(matches!(restore(&file, &other, true), Err(Error::Invalid(_))));
    assert!(other.join("keep.txt").exists(), "force must not delete foreign files");
    restore(&file, &src, true).unwrap();
    let (_, rec) = Store::open(&src, StoreOptions::for_test()).unwrap();
    assert_eq!(rec.next_seq, 1501);
}

#[test]
fn restore_refuses_a_damaged_backup_before_writing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_store(&src);
    let file = tmp.path().join("b");
    backup(&src, &file).unwrap();
    let good = fs::read(&file).unwrap();
    let offsets =
        [0, 9, 21, 22, 30, good.len() / 3, good.len() / 2, good.len() - 20, good.len() - 1];
    for off in offsets {
        let mut bad = good.clone();
        bad[off] ^= 0x10;
        let f = tmp.path().join(format!("bad{off}"));
        fs::write(&f, &bad).unwrap();
        let target = tmp.path().join(format!("t{off}"));
        match restore(&f, &target, false) {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, f),
            Err(Error::Version { .. }) => {}
            other => panic!("flip at {off}: expected Corrupt, got {other:?}"),
        }
        assert!(!target.join("STORE").exists(), "flip at {off}: restore wrote before verifying");
    }
    for cut in [0, 10, good.len() / 2, good.len() - 1] {
        let f = tmp.path().join(format!("cut{cut}"));
        fs::write(&f, &good[..cut]).unwrap();
        assert!(
            matches!(restore(&f, tmp.path().join("tc"), false), Err(Error::Corrupt { .. })),
            "cut {cut}"
        );
    }
}

#[test]
fn inspect_reports_state_and_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_store(&src);
    let report = inspect(&src);
    assert_eq!(report.verdict, Verdict::Ok, "{report}");
    let text = report.to_string();
    assert!(text.contains("format v1"), "{text}");
    assert!(text.contains("epoch = 1"), "{text}");
    assert!(text.contains("gen 1 [current] seq 1000"), "{text}");
    assert!(text.contains("VERDICT: ok"), "{text}");

    // While the store is open, inspect says so instead of fighting for the lock.
    let (store, _) = Store::open(&src, StoreOptions::for_test()).unwrap();
    assert_eq!(inspect(&src).verdict, Verdict::Locked);
    drop(store);

    // Flip a byte in the middle of the second log segment.
    let mut segs: Vec<_> =
        fs::read_dir(src.join("log")).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    let seg = &segs[1];
    let mut b = fs::read(seg).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    fs::write(seg, b).unwrap();
    let report = inspect(&src);
    let text = report.to_string();
    assert!(matches!(report.verdict, Verdict::Corrupt(_)), "{text}");
    assert!(text.contains("DAMAGED"), "{text}");
    assert!(text.contains(&seg.file_name().unwrap().to_string_lossy().into_owned()), "{text}");
    assert!(text.contains("VERDICT: corrupt") && text.contains("taskflow store restore"), "{text}");
    // A corrupt store cannot be backed up (the backup would silently miss events).
    assert!(matches!(backup(&src, tmp.path().join("x")), Err(Error::Corrupt { .. })));
    assert_eq!(inspect(tmp.path().join("nothing")).verdict, Verdict::NotAStore);
}

#[test]
fn restore_over_a_store_that_is_open_is_refused_and_leaves_it_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_store(&src);
    let file = tmp.path().join("b");
    backup(&src, &file).unwrap();
    let (live, _) = Store::open(&src, StoreOptions::for_test()).unwrap();
    assert!(matches!(restore(&file, &src, true), Err(Error::Locked { .. })));
    assert_eq!(live.durable_seq(), 1500);
    live.close().unwrap();
}

#[test]
fn restore_builds_in_a_staging_directory_and_cleans_up_an_interrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_store(&src);
    let file = tmp.path().join("b");
    backup(&src, &file).unwrap();
    // What an interrupted earlier restore leaves behind: a half-built staging directory.
    let staging = tmp.path().join(".dst.restoring");
    fs::create_dir_all(staging.join("log")).unwrap();
    fs::write(staging.join("STORE"), b"half").unwrap();
    let dst = tmp.path().join("dst");
    assert_eq!(restore(&file, &dst, false).unwrap(), 500);
    assert!(!staging.exists(), "the staging directory is renamed into place");
    let (_, rec) = Store::open(&dst, StoreOptions::for_test()).unwrap();
    assert_eq!(rec.next_seq, 1501);
}
