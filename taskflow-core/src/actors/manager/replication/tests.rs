//! The replicator against real stores: a replica behind the compacted log starts from the
//! snapshot and catches up from the store and the tail; an executor that never acknowledges
//! receives no more than its credit window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::*;
use crate::cluster::messages::ToManager;
use crate::cluster::replica::ReplicaSet;
use crate::store::StoreOptions;

const DATE: &str = "2026-09-30";
const CID: &str = "abc123";

/// A stand-in for an executor's agent: applies the stream to a real replica and acknowledges
/// (after waiting for durability), or only counts what it receives.
struct FakeAgent;

struct FakeState {
    set: Option<ReplicaSet>,
    replicator: ActorRef<ReplicatorMsg>,
    received: Arc<AtomicU64>,
}

impl Actor for FakeAgent {
    type Msg = Wire;
    type State = FakeState;
    type Arguments = FakeState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Wire>,
        st: FakeState,
    ) -> Result<FakeState, ActorProcessingErr> {
        Ok(st)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Wire>,
        msg: Wire,
        st: &mut FakeState,
    ) -> Result<(), ActorProcessingErr> {
        let Wire::Cast(bytes) = msg else { return Ok(()) };
        let Ok(ToExecutor::Replicate(m)) = codec::decode::<ToExecutor>("test", &bytes) else {
            panic!("not a replication message");
        };
        if let ReplicaBody::Events { events, .. } = &m.body {
            st.received.fetch_add(events.len() as u64, Ordering::SeqCst);
        }
        let Some(set) = st.set.as_mut() else { return Ok(()) };
        let applied = set.apply(m).expect("applies");
        if let Some((store, _)) = set.open_store() {
            let last = store.next_seq() - 1;
            assert!(store.wait_durable(last, Duration::from_secs(10)).unwrap());
        }
        // As the replica actor does after each part: a staged new copy durable through
        // its bound replaces the old one.
        set.maybe_swap().expect("swaps");
        let ack = set.ack("e1", 7, CID, DATE, applied.need);
        let _ = ToManager::ReplicaAck(ack.clone());
        let _ = st.replicator.cast(ReplicatorMsg::Ack(ack));
        Ok(())
    }
}

fn payload(seq: u64) -> Vec<u8> {
    // Events 2001..=2900 are large (9 MB in all): the catch-up read fills its window and
    // continues with the same reader.
    let pad = if (2001..=2900).contains(&seq) { 10_000 } else { 90 };
    format!("event-{seq:06}-{}", "x".repeat(pad)).into_bytes()
}

fn append(store: &Store, tail: Option<&ReplicationTail>, seqs: std::ops::RangeInclusive<u64>) {
    let batch: Vec<(u64, Vec<u8>)> = seqs.map(|s| (s, payload(s))).collect();
    if let Some(t) = tail {
        t.push(&batch);
    }
    let last = batch.last().map(|b| b.0).unwrap();
    store.append(batch).unwrap();
    assert!(store.wait_durable(last, Duration::from_secs(10)).unwrap());
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_compacted_log_starts_from_the_snapshot_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path().join("manager"), StoreOptions::for_test()).unwrap();
    let store = Arc::new(store);
    let tail = Arc::new(ReplicationTail::default());
    // 3,000 events with snapshots at 1,000 and 2,000: the log is compacted through 1,000.
    append(&store, None, 1..=1000);
    store.write_snapshot(1000, b"snapshot-at-1000").unwrap();
    append(&store, None, 1001..=2000);
    store.write_snapshot(2000, b"snapshot-at-2000").unwrap();
    append(&store, None, 2001..=2900);
    // Only the newest events are in the tail: the rest comes from the store.
    append(&store, Some(&tail), 2901..=3000);
    assert!(store.first_log_seq() > 1, "the log was compacted");

    let args = ReplicatorArgs {
        store: store.clone(),
        tail: tail.clone(),
        cluster_id: CID.into(),
        date: DATE.into(),
        epoch: 3,
        // Events through 2,500 were written in epoch 2, the rest in epoch 3.
        runs: vec![EpochRun { first_seq: 1, epoch: 2 }, EpochRun { first_seq: 2501, epoch: 3 }],
        policy: AckPolicy { acks: 0, quorum: 1 },
        replicated: watch::channel(Replicated::default()).0,
    };
    let (rep, _) = Actor::spawn(None, Replicator, args).await.unwrap();
    let set = ReplicaSet::open(&dir.path().join("exec"), StoreOptions::for_test()).unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let fake = FakeState { set: Some(set), replicator: rep.clone(), received: received.clone() };
    let (agent, _) = Actor::spawn(None, FakeAgent, fake).await.unwrap();
    rep.cast(ReplicatorMsg::Joined {
        name: "e1".into(),
        instance: 7,
        agent: agent.clone(),
        replicas: vec![],
    })
    .unwrap();
    // Live events keep flowing while it catches up.
    append(&store, Some(&tail), 3001..=3500);
    let replica_dir = dir.path().join("exec").join("replica").join(DATE).join(CID);
    eventually("the replica to reach seq 3500", || received.load(Ordering::SeqCst) >= 1500).await;
    agent.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();
    rep.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();

    let (replica, rec) = Store::open(&replica_dir, StoreOptions::for_test()).unwrap();
    let snap = rec.snapshot.expect("the replica starts from the manager's snapshot");
    assert_eq!((snap.seq, snap.bytes.as_slice()), (2000, &b"snapshot-at-2000"[..]));
    let expected: Vec<(u64, Vec<u8>)> = (2001..=3500).map(|s| (s, payload(s))).collect();
    assert_eq!(rec.events, expected, "every event after the snapshot, in order, byte for byte");
    assert_eq!(replica.meta_get::<u64>("replica_epoch").unwrap(), Some(3));
    // The epochs each event was written in came along: the snapshot's (through 2,000),
    // then one run per writing epoch (no message spans two).
    assert_eq!(
        replica.meta_get::<Vec<EpochRun>>("replica_runs").unwrap(),
        Some(vec![EpochRun { first_seq: 1, epoch: 2 }, EpochRun { first_seq: 2501, epoch: 3 }])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_that_never_acknowledges_gets_no_more_than_its_credit_window() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path().join("manager"), StoreOptions::for_test()).unwrap();
    let store = Arc::new(store);
    let tail = Arc::new(ReplicationTail::default());
    append(&store, Some(&tail), 1..=40_000);
    let args = ReplicatorArgs {
        store: store.clone(),
        tail,
        cluster_id: CID.into(),
        date: DATE.into(),
        epoch: 1,
        runs: vec![],
        policy: AckPolicy { acks: 0, quorum: 1 },
        replicated: watch::channel(Replicated::default()).0,
    };
    let (rep, _) = Actor::spawn(None, Replicator, args).await.unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let fake = FakeState { set: None, replicator: rep.clone(), received: received.clone() };
    let (agent, _) = Actor::spawn(None, FakeAgent, fake).await.unwrap();
    // The replica already holds everything up to 10: streaming continues after it.
    let pos = ReplicaPosition {
        cluster_id: CID.into(),
        date: DATE.into(),
        epoch: 1,
        seq: 10,
        runs: vec![],
    };
    rep.cast(ReplicatorMsg::Joined { name: "e1".into(), instance: 7, agent, replicas: vec![pos] })
        .unwrap();
    eventually("the window to fill", || received.load(Ordering::SeqCst) > 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = received.load(Ordering::SeqCst);
    assert!(got <= WINDOW_EVENTS, "{got} events sent without an ack");
    assert!(got as usize * 110 <= WINDOW_BYTES + PART_BYTES, "{got} events exceed the byte window");
    // An ack opens the window again.
    let ack = ReplicaAckMsg {
        executor: "e1".into(),
        instance: 7,
        cluster_id: CID.into(),
        date: DATE.into(),
        durable_seq: 10 + got,
        next_seq: 11 + got,
        snapshot_received: 0,
        need: ReplicaNeed::Nothing,
        staged: false,
    };
    rep.cast(ReplicatorMsg::Ack(ack)).unwrap();
    eventually("more events after the ack", || received.load(Ordering::SeqCst) > got).await;
    rep.stop(None);
}

#[test]
fn the_tail_is_bounded_and_says_when_it_no_longer_holds_a_seq() {
    let tail = ReplicationTail::default();
    let big = vec![0u8; 1 << 20];
    let batch: Vec<(u64, Vec<u8>)> = (1..=40).map(|s| (s, big.clone())).collect();
    tail.push(&batch);
    assert!(tail.take(1, 40, u64::MAX, 1 << 30).is_none(), "the oldest events were evicted");
    let got = tail.take(35, 40, u64::MAX, 3 << 20).unwrap();
    assert_eq!(got.len(), 3, "at most max_bytes (but at least one event)");
    assert_eq!(tail.take(40, 39, u64::MAX, 1 << 30).unwrap().len(), 0, "nothing beyond upto");
    assert_eq!(tail.take(35, 40, 2, 1 << 30).unwrap().len(), 2, "at most max_events");
}

/// Counts the snapshot bytes it is sent; never acknowledges by itself.
struct ChunkCounter;

impl Actor for ChunkCounter {
    type Msg = Wire;
    type State = Arc<AtomicU64>;
    type Arguments = Arc<AtomicU64>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Wire>,
        st: Arc<AtomicU64>,
    ) -> Result<Arc<AtomicU64>, ActorProcessingErr> {
        Ok(st)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Wire>,
        msg: Wire,
        st: &mut Arc<AtomicU64>,
    ) -> Result<(), ActorProcessingErr> {
        let Wire::Cast(bytes) = msg else { return Ok(()) };
        if let Ok(ToExecutor::Replicate(m)) = codec::decode::<ToExecutor>("test", &bytes)
            && let ReplicaBody::SnapshotChunk { bytes, .. } = &m.body
        {
            st.fetch_add(bytes.0.len() as u64, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_of_more_snapshot_bytes_than_were_sent_does_not_kill_the_replicator() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path().join("manager"), StoreOptions::for_test()).unwrap();
    let store = Arc::new(store);
    append(&store, None, 1..=10);
    // A snapshot larger than the byte window: it is sent in two rounds of credits.
    let snapshot = vec![7u8; WINDOW_BYTES + 2 * PART_BYTES];
    store.write_snapshot(10, &snapshot).unwrap();
    let args = ReplicatorArgs {
        store: store.clone(),
        tail: Arc::new(ReplicationTail::default()),
        cluster_id: CID.into(),
        date: DATE.into(),
        epoch: 1,
        runs: vec![],
        policy: AckPolicy { acks: 0, quorum: 1 },
        replicated: watch::channel(Replicated::default()).0,
    };
    let (rep, _) = Actor::spawn(None, Replicator, args).await.unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let (agent, _) = Actor::spawn(None, ChunkCounter, received.clone()).await.unwrap();
    rep.cast(ReplicatorMsg::Joined { name: "e1".into(), instance: 7, agent, replicas: vec![] })
        .unwrap();
    let window = WINDOW_BYTES as u64;
    eventually("a window of snapshot chunks", || received.load(Ordering::SeqCst) >= window).await;
    assert_eq!(received.load(Ordering::SeqCst), window, "no more than the window before an ack");
    let ack = |snapshot_received: u64, need: ReplicaNeed| ReplicaAckMsg {
        executor: "e1".into(),
        instance: 7,
        cluster_id: CID.into(),
        date: DATE.into(),
        durable_seq: 0,
        next_seq: 0,
        snapshot_received,
        need,
        staged: false,
    };
    // A confused (or stale) peer acknowledges more than it was sent...
    rep.cast(ReplicatorMsg::Ack(ack(window + PART_BYTES as u64, ReplicaNeed::Nothing))).unwrap();
    // ...and then, having lost its copy, asks for everything again from 0: the replicator is
    // alive and resends (the window counts from what the peer said it holds).
    rep.cast(ReplicatorMsg::Ack(ack(0, ReplicaNeed::ResendFrom))).unwrap();
    eventually("the resend from 0", || received.load(Ordering::SeqCst) > window).await;
    assert_eq!(rep.get_status(), ractor::ActorStatus::Running);
    rep.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_events_were_written_in_other_epochs_starts_over_instead_of_continuing() {
    // The manager's history: 1..150 written in epoch 2, then (recovered from a replica at
    // 150) 151..300 in epoch 4. The joining replica holds 1..200 all written in epoch 2:
    // its 151..200 are events this history does not have.
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path().join("manager"), StoreOptions::for_test()).unwrap();
    let store = Arc::new(store);
    let tail = Arc::new(ReplicationTail::default());
    append(&store, Some(&tail), 1..=300);
    let mut set = ReplicaSet::open(&dir.path().join("exec"), StoreOptions::for_test()).unwrap();
    let stream = |body| ReplicateMsg { epoch: 2, cluster_id: CID.into(), date: DATE.into(), body };
    set.apply(stream(ReplicaBody::Begin {
        base_seq: 0,
        snapshot_len: 0,
        snapshot_crc: 0,
        runs: vec![],
        upto: 0,
    }))
    .unwrap();
    let old: Vec<Bytes> = (1..=200u64)
        .map(|s| Bytes(if s <= 150 { payload(s) } else { format!("old-{s}").into_bytes() }))
        .collect();
    set.apply(stream(ReplicaBody::Events { first_seq: 1, events: old, written_in: 2 })).unwrap();
    let (s, _) = set.open_store().unwrap();
    assert!(s.wait_durable(200, Duration::from_secs(10)).unwrap());
    drop(s);
    let replicas = set.positions();
    assert_eq!(replicas[0].seq, 200);

    let args = ReplicatorArgs {
        store: store.clone(),
        tail,
        cluster_id: CID.into(),
        date: DATE.into(),
        epoch: 4,
        runs: vec![EpochRun { first_seq: 1, epoch: 2 }, EpochRun { first_seq: 151, epoch: 4 }],
        policy: AckPolicy { acks: 0, quorum: 1 },
        replicated: watch::channel(Replicated::default()).0,
    };
    let (rep, _) = Actor::spawn(None, Replicator, args).await.unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let fake = FakeState { set: Some(set), replicator: rep.clone(), received: received.clone() };
    let (agent, _) = Actor::spawn(None, FakeAgent, fake).await.unwrap();
    rep.cast(ReplicatorMsg::Joined {
        name: "e1".into(),
        instance: 7,
        agent: agent.clone(),
        replicas,
    })
    .unwrap();
    // Continuing from 201 would send 100 events; starting over sends all 300.
    eventually("the replica to start over", || received.load(Ordering::SeqCst) >= 300).await;
    agent.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();
    rep.stop_and_wait(None, Some(Duration::from_secs(10))).await.unwrap();
    let replica_dir = dir.path().join("exec").join("replica").join(DATE).join(CID);
    let (replica, rec) = Store::open(&replica_dir, StoreOptions::for_test()).unwrap();
    let expected: Vec<(u64, Vec<u8>)> = (1..=300).map(|s| (s, payload(s))).collect();
    assert!(
        rec.events == expected,
        "exactly the manager's history, none of the old tail: {} events, the first different \
         at {:?}",
        rec.events.len(),
        rec.events.iter().zip(&expected).find(|(a, b)| a != b).map(|(a, _)| a.0)
    );
    assert_eq!(
        replica.meta_get::<Vec<EpochRun>>("replica_runs").unwrap(),
        Some(vec![EpochRun { first_seq: 1, epoch: 2 }, EpochRun { first_seq: 151, epoch: 4 }])
    );
}

/// `--replica-acks 2`: what is published is the second-highest in-place ack of the connected
/// peers; an ack of a replacement copy still being built (`staged`) does not count, and the
/// watermark never goes back when a peer leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replica_acks_the_watermark_is_the_second_highest_in_place_ack() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path().join("manager"), StoreOptions::for_test()).unwrap();
    let store = Arc::new(store);
    let tail = Arc::new(ReplicationTail::default());
    append(&store, Some(&tail), 1..=100);
    // The replicator reads the durable seq from the store's watch, which is published a
    // moment after `wait_durable` returns: a peer ahead of what it saw would start over.
    let mut durable = store.durable();
    tokio::time::timeout(Duration::from_secs(30), durable.wait_for(|d| d.seq >= 100))
        .await
        .expect("the durable watch reaches 100 in time")
        .expect("the writer is alive");
    drop(durable);
    let (tx, mut rx) = watch::channel(Replicated::default());
    let args = ReplicatorArgs {
        store: store.clone(),
        tail,
        cluster_id: CID.into(),
        date: DATE.into(),
        epoch: 1,
        runs: vec![],
        policy: AckPolicy { acks: 2, quorum: 2 },
        replicated: tx,
    };
    let (rep, _) = Actor::spawn(None, Replicator, args).await.unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let mut agents = Vec::new();
    for name in ["e1", "e2"] {
        let fake = FakeState { set: None, replicator: rep.clone(), received: received.clone() };
        let (agent, _) = Actor::spawn(None, FakeAgent, fake).await.unwrap();
        // Both hold a prefix of this history (seq 10): they continue from it.
        let pos = ReplicaPosition {
            cluster_id: CID.into(),
            date: DATE.into(),
            epoch: 1,
            seq: 10,
            runs: vec![],
        };
        rep.cast(ReplicatorMsg::Joined {
            name: name.into(),
            instance: 7,
            agent: agent.clone(),
            replicas: vec![pos],
        })
        .unwrap();
        agents.push(agent);
    }
    let wait = |rx: &mut watch::Receiver<Replicated>, want: Replicated| {
        let mut rx = rx.clone();
        async move {
            let waited = tokio::time::timeout(Duration::from_secs(30), async {
                rx.wait_for(|r| *r == want).await.is_ok()
            })
            .await;
            assert!(
                waited.unwrap_or(false),
                "timed out waiting for {want:?}; it is {:?}",
                *rx.borrow()
            );
        }
    };
    // Both continue at 10: 10 is held by two.
    wait(&mut rx, Replicated { seq: 10, connected: 2 }).await;
    let ack = |executor: &str, durable_seq: u64, staged: bool| ReplicaAckMsg {
        executor: executor.into(),
        instance: 7,
        cluster_id: CID.into(),
        date: DATE.into(),
        durable_seq,
        next_seq: durable_seq + 1,
        snapshot_received: 0,
        need: ReplicaNeed::Nothing,
        staged,
    };
    eventually("both peers were sent everything", || received.load(Ordering::SeqCst) >= 180).await;
    // One replica alone holding 100 is not enough for K = 2.
    rep.cast(ReplicatorMsg::Ack(ack("e1", 100, false))).unwrap();
    rep.cast(ReplicatorMsg::Ack(ack("e2", 50, false))).unwrap();
    wait(&mut rx, Replicated { seq: 50, connected: 2 }).await;
    // e2's copy at 90 is a replacement not in place yet: a recovery would read its old copy.
    rep.cast(ReplicatorMsg::Ack(ack("e2", 90, true))).unwrap();
    // A third peer joining after it (one mailbox, in order) shows it was handled: still 50.
    let fake = FakeState { set: None, replicator: rep.clone(), received: received.clone() };
    let (agent, _) = Actor::spawn(None, FakeAgent, fake).await.unwrap();
    rep.cast(ReplicatorMsg::Joined {
        name: "e3".into(),
        instance: 7,
        agent: agent.clone(),
        replicas: vec![],
    })
    .unwrap();
    agents.push(agent);
    wait(&mut rx, Replicated { seq: 50, connected: 3 }).await;
    assert_eq!(*rx.borrow(), Replicated { seq: 50, connected: 3 }, "a staged ack counted");
    rep.cast(ReplicatorMsg::Ack(ack("e2", 90, false))).unwrap();
    wait(&mut rx, Replicated { seq: 90, connected: 3 }).await;
    // Their session closes (both fakes are on this node): what two replicas held stays held.
    let node = agents[1].get_id().node();
    rep.cast(ReplicatorMsg::Left { node_id: node }).unwrap();
    wait(&mut rx, Replicated { seq: 90, connected: 0 }).await;
    rep.stop(None);
    for a in agents {
        a.stop(None);
    }
}
