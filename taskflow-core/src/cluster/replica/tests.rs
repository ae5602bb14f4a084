//! The replica's apply / gap / snapshot / pull logic on real stores in temp dirs.

use std::time::Duration;

use super::*;
use crate::cluster::messages::ReplicaChunkMsg;

const CID: &str = "c0ffee";
const DATE: &str = "2026-09-30";

fn msg(epoch: u64, body: ReplicaBody) -> ReplicateMsg {
    ReplicateMsg { epoch, cluster_id: CID.into(), date: DATE.into(), body }
}

fn events(first_seq: u64, payloads: &[&[u8]]) -> ReplicaBody {
    ReplicaBody::Events {
        first_seq,
        events: payloads.iter().map(|p| Bytes(p.to_vec())).collect(),
        written_in: 0,
    }
}

fn begin_empty() -> ReplicaBody {
    ReplicaBody::Begin { base_seq: 0, snapshot_len: 0, snapshot_crc: 0, runs: vec![], upto: 0 }
}

fn wait_durable(set: &ReplicaSet, seq: u64) {
    let (store, _) = set.open_store().expect("a replica is open");
    assert!(store.wait_durable(seq, Duration::from_secs(10)).unwrap());
}

fn need(set: &mut ReplicaSet, m: ReplicateMsg) -> ReplicaNeed {
    set.apply(m).expect("applies").need
}

#[test]
fn events_apply_strictly_in_order_and_a_gap_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert!(set.positions().is_empty());
    assert_eq!(need(&mut set, msg(3, begin_empty())), ReplicaNeed::Nothing);
    assert_eq!(need(&mut set, msg(3, events(1, &[b"a", b"b"]))), ReplicaNeed::Nothing);
    // seq 3 is missing: 4 is not applied, the manager is asked to resend from 3.
    assert_eq!(need(&mut set, msg(3, events(4, &[b"d"]))), ReplicaNeed::ResendFrom);
    let ack = set.ack("e", 1, CID, DATE, ReplicaNeed::ResendFrom);
    assert_eq!(ack.next_seq, 3);
    // A resend overlapping what is held applies only the new part.
    assert_eq!(need(&mut set, msg(3, events(2, &[b"b", b"c", b"d"]))), ReplicaNeed::Nothing);
    // A pure duplicate is ignored.
    assert_eq!(need(&mut set, msg(3, events(1, &[b"a"]))), ReplicaNeed::Nothing);
    wait_durable(&set, 4);
    let ack = set.ack("e", 1, CID, DATE, ReplicaNeed::Nothing);
    assert_eq!((ack.durable_seq, ack.next_seq), (4, 5));
    // A newer epoch is recorded; an older one may not extend the replica.
    assert_eq!(need(&mut set, msg(4, events(5, &[b"e"]))), ReplicaNeed::Nothing);
    assert!(set.apply(msg(3, events(6, &[b"f"]))).is_err());
    assert!(set.apply(msg(3, begin_empty())).is_err(), "nor start it over");
    wait_durable(&set, 5);
    drop(set);
    let set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    let pos = set.positions();
    assert_eq!(
        pos,
        vec![ReplicaPosition {
            cluster_id: CID.into(),
            date: DATE.into(),
            epoch: 4,
            seq: 5,
            runs: vec![]
        }]
    );
    // The replica is a valid store holding exactly the manager's payloads.
    drop(set);
    let (_s, rec) =
        Store::open(dir.path().join("replica").join(DATE).join(CID), StoreOptions::for_test())
            .unwrap();
    let got: Vec<Vec<u8>> = rec.events.into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        got,
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec(), b"e".to_vec()]
    );
}

#[test]
fn events_for_a_replica_that_does_not_exist_ask_for_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(need(&mut set, msg(1, events(7, &[b"x"]))), ReplicaNeed::Reset);
    // Peer-controlled names never become paths outside the replica root.
    let bad = ReplicateMsg {
        epoch: 1,
        cluster_id: "../../etc".into(),
        date: DATE.into(),
        body: begin_empty(),
    };
    assert!(set.apply(bad).is_err());
    let bad_date = ReplicateMsg {
        epoch: 1,
        cluster_id: CID.into(),
        date: "2026-9-30".into(),
        body: begin_empty(),
    };
    assert!(set.apply(bad_date).is_err());
    // An implausible start is refused, not attempted.
    let huge =
        ReplicaBody::Begin { base_seq: 9, snapshot_len: 0, snapshot_crc: 0, runs: vec![], upto: 0 };
    assert!(set.apply(msg(1, huge)).is_err());
}

#[test]
fn a_replica_starts_from_the_snapshot_in_chunks_then_continues_with_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    let snap: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let crc = crc32fast::hash(&snap);
    let begin = ReplicaBody::Begin {
        base_seq: 40,
        snapshot_len: snap.len() as u64,
        snapshot_crc: crc,
        runs: vec![],
        upto: 0,
    };
    assert_eq!(need(&mut set, msg(2, begin)), ReplicaNeed::Nothing);
    let chunk = |off: usize, end: usize| ReplicaBody::SnapshotChunk {
        base_seq: 40,
        offset: off as u64,
        bytes: Bytes(snap[off..end].to_vec()),
    };
    assert_eq!(need(&mut set, msg(2, chunk(0, 30_000))), ReplicaNeed::Nothing);
    // Out of order: not applied; the ack says how much arrived.
    assert_eq!(need(&mut set, msg(2, chunk(60_000, 100_000))), ReplicaNeed::ResendFrom);
    assert_eq!(set.ack("e", 1, CID, DATE, ReplicaNeed::ResendFrom).snapshot_received, 30_000);
    // Events before the snapshot is installed cannot apply.
    assert_eq!(need(&mut set, msg(2, events(41, &[b"x"]))), ReplicaNeed::Reset);
    assert_eq!(need(&mut set, msg(2, chunk(30_000, 60_000))), ReplicaNeed::Nothing);
    assert_eq!(need(&mut set, msg(2, chunk(60_000, 100_000))), ReplicaNeed::Nothing);
    let ack = set.ack("e", 1, CID, DATE, ReplicaNeed::Nothing);
    assert_eq!((ack.next_seq, ack.snapshot_received), (41, 0));
    assert_eq!(need(&mut set, msg(2, events(41, &[b"x", b"y"]))), ReplicaNeed::Nothing);
    wait_durable(&set, 42);

    // A recovering manager pulls it back: the snapshot in chunks, then the events.
    let pull =
        |request, part| ReplicaPullMsg { request, cluster_id: CID.into(), date: DATE.into(), part };
    let mut got = Vec::new();
    loop {
        let part = PullPart::Snapshot { offset: got.len() as u64, max_bytes: 16_384 };
        match set.serve(&pull(1, part)) {
            ChunkBody::Snapshot { base_seq, total_len, crc: c, offset, bytes } => {
                assert_eq!((base_seq, total_len, c, offset), (40, 100_000, crc, got.len() as u64));
                got.extend_from_slice(&bytes.0);
                if got.len() as u64 == total_len {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, snap);
    match set.serve(&pull(2, PullPart::Events { from_seq: 41, max_bytes: 1 })) {
        ChunkBody::Events { first_seq: 41, events } => {
            assert_eq!(events, vec![Bytes(b"x".to_vec())])
        }
        other => panic!("unexpected {other:?}"),
    }
    match set.serve(&pull(3, PullPart::Events { from_seq: 42, max_bytes: 1 << 20 })) {
        ChunkBody::Events { first_seq: 42, events } => {
            assert_eq!(events, vec![Bytes(b"y".to_vec())])
        }
        other => panic!("unexpected {other:?}"),
    }
    match set.serve(&pull(4, PullPart::Events { from_seq: 43, max_bytes: 1 << 20 })) {
        ChunkBody::Events { events, .. } => assert!(events.is_empty()),
        other => panic!("unexpected {other:?}"),
    }
    let other = ReplicaPullMsg {
        cluster_id: "other".into(),
        ..pull(5, PullPart::Events { from_seq: 1, max_bytes: 1 })
    };
    assert!(matches!(set.serve(&other), ChunkBody::Error { .. }));
    let _ = std::mem::size_of::<ReplicaChunkMsg>();
}

#[test]
fn a_snapshot_with_a_bad_checksum_is_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    let begin =
        ReplicaBody::Begin { base_seq: 5, snapshot_len: 3, snapshot_crc: 1, runs: vec![], upto: 0 };
    assert_eq!(need(&mut set, msg(1, begin)), ReplicaNeed::Nothing);
    let chunk =
        ReplicaBody::SnapshotChunk { base_seq: 5, offset: 0, bytes: Bytes(b"abc".to_vec()) };
    assert!(set.apply(msg(1, chunk)).is_err());
    assert!(set.open_store().is_none());
    assert!(set.positions().is_empty());
}

fn written(first_seq: u64, payloads: &[&[u8]], written_in: u64) -> ReplicaBody {
    ReplicaBody::Events {
        first_seq,
        events: payloads.iter().map(|p| Bytes(p.to_vec())).collect(),
        written_in,
    }
}

fn run(first_seq: u64, epoch: u64) -> EpochRun {
    EpochRun { first_seq, epoch }
}

fn replica_dir(root: &Path) -> PathBuf {
    root.join("replica").join(DATE).join(CID)
}

fn payloads_of(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    let (_s, rec) = Store::open(dir, StoreOptions::for_test()).unwrap();
    rec.events
}

#[test]
fn the_epoch_each_event_was_written_in_is_kept_and_never_goes_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(need(&mut set, msg(3, begin_empty())), ReplicaNeed::Nothing);
    // A manager of epoch 3 sends what epoch 2 wrote, then its own events.
    assert_eq!(need(&mut set, msg(3, written(1, &[b"a", b"b"], 2))), ReplicaNeed::Nothing);
    assert_eq!(need(&mut set, msg(3, written(3, &[b"c"], 3))), ReplicaNeed::Nothing);
    wait_durable(&set, 3);
    let p = &set.positions()[0];
    assert_eq!((p.epoch, p.seq, p.runs.clone()), (3, 3, vec![run(1, 2), run(3, 3)]));
    assert_eq!(p.last_epoch(), 3);
    // Epochs never go down along a log, and nobody sends what a later epoch wrote.
    assert!(set.apply(msg(4, written(4, &[b"d"], 2))).is_err());
    assert!(set.apply(msg(4, written(4, &[b"d"], 5))).is_err());
    wait_durable(&set, 3);
    drop(set);
    // Kept on disk (format 2).
    let set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(set.positions()[0].runs, vec![run(1, 2), run(3, 3)]);
    drop(set);
    let (s, _) = Store::open(replica_dir(dir.path()), StoreOptions::for_test()).unwrap();
    assert_eq!(s.meta_get::<u16>("replica_format").unwrap(), Some(2));
}

#[test]
fn a_replica_of_format_1_reads_as_of_unknown_epochs_and_learns_them_when_continued() {
    let dir = tempfile::tempdir().unwrap();
    // What format 1 wrote: the store and `cluster_id`, `replica_date`, `replica_epoch` (the
    // last sender's epoch) and nothing about the epochs the events were written in.
    let path = replica_dir(dir.path());
    store::create_seeded(&path, &StoreOptions::for_test(), 0, None).unwrap();
    {
        let (s, _) = Store::open(&path, StoreOptions::for_test()).unwrap();
        s.meta_put("cluster_id", &CID).unwrap();
        s.meta_put("replica_date", &DATE).unwrap();
        s.meta_put("replica_epoch", &7u64).unwrap();
        s.append((1..=3).map(|i| (i, vec![i as u8])).collect()).unwrap();
        assert!(s.wait_durable(3, Duration::from_secs(10)).unwrap());
        s.close().unwrap();
    }
    let mut set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    let p = set.positions()[0].clone();
    assert_eq!((p.epoch, p.seq, p.last_epoch(), p.runs.len()), (7, 3, 0, 0));
    // A manager continuing it tells the epoch of what it sends from then on.
    assert_eq!(need(&mut set, msg(8, written(4, &[b"d"], 8))), ReplicaNeed::Nothing);
    wait_durable(&set, 4);
    let p = set.positions()[0].clone();
    assert_eq!((p.seq, p.last_epoch(), p.runs), (4, 8, vec![run(4, 8)]));
}

#[test]
fn a_replica_told_to_start_over_keeps_its_old_copy_until_the_new_one_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(need(&mut set, msg(2, begin_empty())), ReplicaNeed::Nothing);
    let old: Vec<&[u8]> = vec![b"o1", b"o2", b"o3", b"o4", b"o5"];
    assert_eq!(need(&mut set, msg(2, written(1, &old, 2))), ReplicaNeed::Nothing);
    wait_durable(&set, 5);
    // A manager of epoch 4 (recovered elsewhere at seq 2) starts it over: a snapshot at 2,
    // its history durable through 4 when it sent the Begin.
    let snap = b"snapshot-at-2".to_vec();
    let begin = ReplicaBody::Begin {
        base_seq: 2,
        snapshot_len: snap.len() as u64,
        snapshot_crc: crc32fast::hash(&snap),
        runs: vec![run(1, 2)],
        upto: 4,
    };
    let chunk = ReplicaBody::SnapshotChunk { base_seq: 2, offset: 0, bytes: Bytes(snap.clone()) };
    assert_eq!(need(&mut set, msg(4, begin.clone())), ReplicaNeed::Nothing);
    assert_eq!(need(&mut set, msg(4, chunk.clone())), ReplicaNeed::Nothing);
    assert_eq!(need(&mut set, msg(4, written(3, &[b"n3"], 4))), ReplicaNeed::Nothing);
    wait_durable(&set, 3);
    assert!(!set.maybe_swap().unwrap(), "not durable through 4 yet");
    // Until then the old copy is what the executor holds and reports.
    let p = set.positions()[0].clone();
    assert_eq!((p.seq, p.last_epoch()), (5, 2));
    let staging = dir.path().join("replica").join(DATE).join(format!(".{CID}.staging"));
    assert!(staging.join("STORE").exists(), "the new copy is built beside the old one");
    assert_eq!(payloads_of(&replica_dir(dir.path())).len(), 5, "the old copy is intact");

    // A crash now: the unfinished copy goes, the old one stays, and a recovering manager's
    // pull gets the old copy.
    drop(set);
    let mut set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(set.positions()[0].seq, 5);
    assert!(!staging.exists());
    assert_eq!(payloads_of_held(&mut set).len(), 5);
    drop(set);

    // Again, to the end: once durable through 4 the new copy replaces the old one.
    let mut set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(need(&mut set, msg(4, begin)), ReplicaNeed::Nothing);
    assert_eq!(need(&mut set, msg(4, chunk)), ReplicaNeed::Nothing);
    assert_eq!(need(&mut set, msg(4, written(3, &[b"n3", b"n4"], 4))), ReplicaNeed::Nothing);
    wait_durable(&set, 4);
    assert!(set.maybe_swap().unwrap());
    let p = set.positions()[0].clone();
    assert_eq!((p.seq, p.last_epoch(), p.runs.clone()), (4, 4, vec![run(1, 2), run(3, 4)]));
    // It goes on in place.
    assert_eq!(need(&mut set, msg(4, written(5, &[b"n5"], 4))), ReplicaNeed::Nothing);
    wait_durable(&set, 5);
    drop(set);
    let (_s, rec) = Store::open(replica_dir(dir.path()), StoreOptions::for_test()).unwrap();
    assert_eq!(rec.snapshot.map(|s| s.bytes), Some(snap));
    let got: Vec<Vec<u8>> = rec.events.into_iter().map(|(_, p)| p).collect();
    assert_eq!(got, vec![b"n3".to_vec(), b"n4".to_vec(), b"n5".to_vec()]);
    let date_dir = dir.path().join("replica").join(DATE);
    let names: Vec<String> = std::fs::read_dir(&date_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![CID.to_owned()], "no staging or old copy left");
}

/// The payloads a pull of the reported replica returns (what a recovery would get).
fn payloads_of_held(set: &mut ReplicaSet) -> Vec<Vec<u8>> {
    let pull = ReplicaPullMsg {
        request: 1,
        cluster_id: CID.into(),
        date: DATE.into(),
        part: PullPart::Events { from_seq: 1, max_bytes: 1 << 20 },
    };
    match set.serve(&pull) {
        ChunkBody::Events { events, .. } => events.into_iter().map(|b| b.0).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn an_interrupted_swap_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(need(&mut set, msg(2, begin_empty())), ReplicaNeed::Nothing);
    assert_eq!(need(&mut set, msg(2, written(1, &[b"x"], 2))), ReplicaNeed::Nothing);
    wait_durable(&set, 1);
    drop(set);
    // The old copy was moved aside and the new one not yet into place.
    let date_dir = dir.path().join("replica").join(DATE);
    std::fs::rename(date_dir.join(CID), date_dir.join(format!(".{CID}.old"))).unwrap();
    let set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(set.positions()[0].seq, 1, "the old copy is back");
    assert!(!date_dir.join(format!(".{CID}.old")).exists());
}

#[test]
fn messages_of_replica_format_1_still_decode_with_unknown_epochs() {
    // Golden bytes as format 1 (protocol 3 before the writing epochs) encoded them: a
    // `Join` replica position, an `Events` body and a `Begin` body.
    let mut position = vec![0x84, 0xaa];
    position.extend_from_slice(b"cluster_id");
    position.push(0xa2);
    position.extend_from_slice(b"c1");
    position.push(0xa4);
    position.extend_from_slice(b"date");
    position.push(0xaa);
    position.extend_from_slice(b"2026-09-30");
    position.push(0xa5);
    position.extend_from_slice(b"epoch");
    position.push(0x07);
    position.push(0xa3);
    position.extend_from_slice(b"seq");
    position.extend_from_slice(&[0xcd, 0x03, 0x84]);
    let p: ReplicaPosition = rmp_serde::from_slice(&position).unwrap();
    assert_eq!((p.epoch, p.seq, p.runs.len(), p.last_epoch()), (7, 900, 0, 0));
    assert_eq!(p.freshness(), (0, 900), "an unknown epoch ranks oldest");

    let mut events = vec![0x81, 0xa6];
    events.extend_from_slice(b"Events");
    events.extend_from_slice(&[0x82, 0xa9]);
    events.extend_from_slice(b"first_seq");
    events.extend_from_slice(&[0x01, 0xa6]);
    events.extend_from_slice(b"events");
    events.extend_from_slice(&[0x91, 0xc4, 0x01, b'a']);
    let body: ReplicaBody = rmp_serde::from_slice(&events).unwrap();
    assert_eq!(body, written(1, &[b"a"], 0));

    let mut begin = vec![0x81, 0xa5];
    begin.extend_from_slice(b"Begin");
    begin.extend_from_slice(&[0x83, 0xa8]);
    begin.extend_from_slice(b"base_seq");
    begin.extend_from_slice(&[0x00, 0xac]);
    begin.extend_from_slice(b"snapshot_len");
    begin.extend_from_slice(&[0x00, 0xac]);
    begin.extend_from_slice(b"snapshot_crc");
    begin.push(0x00);
    let body: ReplicaBody = rmp_serde::from_slice(&begin).unwrap();
    assert_eq!(body, begin_empty());
}

#[test]
fn a_replica_of_a_new_date_removes_the_dates_beyond_the_newest_retain_days() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    set.set_retain_days(2);
    let on = |date: &str, body: ReplicaBody| ReplicateMsg {
        epoch: 3,
        cluster_id: CID.into(),
        date: date.into(),
        body,
    };
    for date in ["2026-09-28", "2026-09-29"] {
        assert_eq!(need(&mut set, on(date, begin_empty())), ReplicaNeed::Nothing);
        assert_eq!(need(&mut set, on(date, events(1, &[b"a"]))), ReplicaNeed::Nothing);
    }
    let held = |set: &ReplicaSet| -> Vec<String> {
        let mut d: Vec<String> = set.positions().into_iter().map(|p| p.date).collect();
        d.sort();
        d
    };
    assert_eq!(held(&set), ["2026-09-28", "2026-09-29"], "two dates are within retention");
    // A third date: the oldest goes, on disk too; the one being written stays.
    assert_eq!(need(&mut set, on("2026-09-30", begin_empty())), ReplicaNeed::Nothing);
    assert_eq!(held(&set), ["2026-09-29", "2026-09-30"]);
    let root = dir.path().join("replica");
    assert!(!root.join("2026-09-28").exists(), "the old replica's directory is removed");
    assert!(root.join("2026-09-29").join(CID).join("STORE").exists());
    drop(set);
    let set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    assert_eq!(held(&set), ["2026-09-29", "2026-09-30"], "and stays removed");
}
