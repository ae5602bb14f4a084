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
    ReplicaBody::Events { first_seq, events: payloads.iter().map(|p| Bytes(p.to_vec())).collect() }
}

fn begin_empty() -> ReplicaBody {
    ReplicaBody::Begin { base_seq: 0, snapshot_len: 0, snapshot_crc: 0 }
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
        vec![ReplicaPosition { cluster_id: CID.into(), date: DATE.into(), epoch: 4, seq: 5 }]
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
    let huge = ReplicaBody::Begin { base_seq: 9, snapshot_len: 0, snapshot_crc: 0 };
    assert!(set.apply(msg(1, huge)).is_err());
}

#[test]
fn a_replica_starts_from_the_snapshot_in_chunks_then_continues_with_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = ReplicaSet::open(dir.path(), StoreOptions::for_test()).unwrap();
    let snap: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let crc = crc32fast::hash(&snap);
    let begin =
        ReplicaBody::Begin { base_seq: 40, snapshot_len: snap.len() as u64, snapshot_crc: crc };
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
    let begin = ReplicaBody::Begin { base_seq: 5, snapshot_len: 3, snapshot_crc: 1 };
    assert_eq!(need(&mut set, msg(1, begin)), ReplicaNeed::Nothing);
    let chunk =
        ReplicaBody::SnapshotChunk { base_seq: 5, offset: 0, bytes: Bytes(b"abc".to_vec()) };
    assert!(set.apply(msg(1, chunk)).is_err());
    assert!(set.open_store().is_none());
    assert!(set.positions().is_empty());
}
