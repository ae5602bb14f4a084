//! Replication of the manager's durable events to executors that keep a replica.
//!
//! ```text
//! Manager ── Journal::flush ──► ReplicationTail (bounded copy of the newest events)
//!    │ Joined / ReplicaAck                     │
//!    ▼                                         ▼
//! Replicator (own actor) ── durable watch ── per executor: Begin + SnapshotChunk… then
//!                                            Events batches, within a credit window
//! ```
//!
//! The manager's only costs are copying each flushed batch into the tail (bounded) and
//! forwarding joins and acks; everything else happens in the [`Replicator`], off the dispatch
//! path. Only **durable** events are sent. Each executor has a credit window (events and
//! bytes sent but not acknowledged as durable by its replica); a slow executor stops receiving
//! until it acknowledges, falls behind the tail, and catches up from the store (log reads on a
//! blocking thread; the snapshot first if its position was compacted away).
//!
//! With `--replica-acks K` it also publishes [`Replicated`]: the highest seq that K replicas
//! hold durably *in place* (not in a replacement copy still being built), which the manager
//! waits for before it lets an effect out (see `actors/manager.rs`, `ReplicaGate`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cluster::codec;
use crate::cluster::history;
use crate::cluster::messages::{
    Bytes, EpochRun, ReplicaAckMsg, ReplicaBody, ReplicaNeed, ReplicaPosition, ReplicateMsg,
    ToExecutor,
};
use crate::cluster::wire::Wire;
use crate::journal::{DayLog, META_CLUSTER_ID, META_EPOCH_RUNS, META_RECOVERED_FROM};
use crate::store::{LogReader, Store};

/// Unacknowledged events per executor.
const WINDOW_EVENTS: u64 = 16_384;
/// Unacknowledged bytes per executor (events and snapshot chunks).
const WINDOW_BYTES: usize = 8 << 20;
/// Payload bytes per `Events` or `SnapshotChunk` message (far below the 4 MiB cap).
const PART_BYTES: usize = 512 << 10;
/// The tail keeps at most this many bytes of the newest events.
const TAIL_BYTES: usize = 16 << 20;

/// A bounded copy of the newest flushed events, shared by the journal (writer) and the
/// replicator (reader). Older events are evicted; a peer behind them reads the store.
#[derive(Default)]
pub(crate) struct ReplicationTail {
    inner: Mutex<TailBuf>,
}

#[derive(Default)]
struct TailBuf {
    events: VecDeque<(u64, Arc<[u8]>)>,
    bytes: usize,
}

impl ReplicationTail {
    pub(crate) fn push(&self, batch: &[(u64, Vec<u8>)]) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (seq, payload) in batch {
            t.bytes += payload.len();
            t.events.push_back((*seq, Arc::from(payload.as_slice())));
        }
        while t.bytes > TAIL_BYTES && t.events.len() > 1 {
            if let Some((_, p)) = t.events.pop_front() {
                t.bytes -= p.len();
            }
        }
    }

    /// Events `from..=upto` (at most `max_bytes`, at least one), if the tail still holds
    /// `from`; `None` if `from` was evicted.
    fn take(
        &self,
        from: u64,
        upto: u64,
        max_events: u64,
        max_bytes: usize,
    ) -> Option<Vec<Arc<[u8]>>> {
        let t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let first = t.events.front()?.0;
        if from < first {
            return None;
        }
        let mut out = Vec::new();
        let mut size = 0;
        for (seq, p) in t.events.iter().skip((from - first) as usize) {
            if *seq > upto
                || out.len() as u64 >= max_events
                || (!out.is_empty() && size + p.len() > max_bytes)
            {
                break;
            }
            size += p.len();
            out.push(p.clone());
        }
        Some(out)
    }
}

/// Reads (or creates, durably) the day store's cluster id.
pub(crate) fn cluster_id(journal: &DayLog) -> Result<String, crate::store::Error> {
    let store = journal.store();
    if let Some(id) = store.meta_get::<String>(META_CLUSTER_ID)? {
        return Ok(id);
    }
    let id = random_id();
    store.meta_put(META_CLUSTER_ID, &id)?;
    Ok(id)
}

/// A random 128-bit id in hex.
pub(crate) fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u32 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id() ^ i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// What the replicas hold, as far as `--replica-acks` is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Replicated {
    /// Every event ≤ this seq is durable in at least K replicas, each in the copy a recovery
    /// would read. Never goes back (a replica that disconnects still holds what it acked).
    pub(crate) seq: u64,
    /// Executors being replicated to now.
    pub(crate) connected: usize,
}

/// How many replica acknowledgements an effect waits for, and the recovery quorum the
/// guarantee is stated for (`--replica-acks`, `--replica-quorum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckPolicy {
    /// K: replicas that must hold an event durably before an effect depending on it leaves
    /// (0: only the manager's own fdatasync).
    pub(crate) acks: usize,
    /// Q: executors a recovery waits for (`--replica-quorum`).
    pub(crate) quorum: usize,
}

impl AckPolicy {
    /// The guarantee this policy gives, for the start-up log line.
    pub(crate) fn guarantee(&self) -> String {
        crate::cluster::replica_ack_guarantee(self.acks, self.quorum)
    }
}

/// Messages of the [`Replicator`].
pub(crate) enum ReplicatorMsg {
    /// The journal's durable watermark moved.
    Durable(u64),
    /// An executor that keeps replicas joined (or joined again).
    Joined { name: String, instance: u64, agent: ActorRef<Wire>, replicas: Vec<ReplicaPosition> },
    /// An executor's replica acknowledged.
    Ack(ReplicaAckMsg),
    /// The session of these executors' node closed: they are no longer replicated to.
    Left { node_id: u64 },
    /// A catch-up read finished (on a blocking thread).
    Read { name: String, instance: u64, result: Result<ReadResult, String> },
}

impl ractor::Message for ReplicatorMsg {}

/// What a catch-up read found.
pub(crate) enum ReadResult {
    /// The store's snapshot at `seq` (none: the log starts at 1).
    Snapshot(Option<(u64, Arc<Vec<u8>>)>),
    /// Durable events from `first`.
    Events {
        first: u64,
        events: Vec<Arc<[u8]>>,
        /// The reader, when it stopped at the window (more to read).
        reader: Option<(u64, LogReader)>,
    },
}

/// Arguments of the [`Replicator`].
pub(crate) struct ReplicatorArgs {
    pub(crate) store: Arc<Store>,
    pub(crate) tail: Arc<ReplicationTail>,
    pub(crate) cluster_id: String,
    pub(crate) date: String,
    pub(crate) epoch: u64,
    /// The epochs the store's events were written in (this epoch's run last).
    pub(crate) runs: Vec<EpochRun>,
    /// `--replica-acks` and `--replica-quorum`.
    pub(crate) policy: AckPolicy,
    /// Where [`Replicated`] is published (for `--replica-acks` > 0).
    pub(crate) replicated: watch::Sender<Replicated>,
}

/// The replication actor (a child of the manager).
pub(crate) struct Replicator;

enum Stage {
    /// The replica must start over (`Begin`): a snapshot read is due.
    NeedsBegin,
    /// Sending the snapshot.
    Snapshot { base_seq: u64, bytes: Arc<Vec<u8>>, sent: usize, acked: usize },
    /// Streaming events from `next`.
    Events,
}

struct Peer {
    instance: u64,
    agent: ActorRef<Wire>,
    stage: Stage,
    next: u64,
    acked: u64,
    /// `(last seq, bytes)` of each unacknowledged `Events` message.
    inflight: VecDeque<(u64, usize)>,
    inflight_bytes: usize,
    /// A blocking read is under way.
    reading: bool,
    /// Events read from the store, not yet sent (catch-up).
    buffered: VecDeque<(u64, Arc<[u8]>)>,
    /// The catch-up log reader and the seq it continues at.
    reader: Option<(u64, LogReader)>,
    /// The peer acknowledged more than it was sent (said once per peer, then clamped).
    warned_overack: bool,
    /// The highest seq of this manager's history the peer acknowledged as durable in the
    /// copy a recovery would read (what counts for `--replica-acks`).
    held: u64,
    /// After a `Begin`: the seq through which the new copy must be durable before it is in
    /// place (the replica swaps it in then); its acks below it do not count.
    counts_from: u64,
}

pub(crate) struct ReplicatorState {
    args: ReplicatorArgs,
    /// Recovery bound: (first epoch, last seq taken from the replica).
    recovered_from: Option<(u64, u64)>,
    durable: u64,
    peers: HashMap<String, Peer>,
    /// Every executor that joined with `--data` since this manager started (N, as far as
    /// this manager knows).
    keepers: BTreeSet<String>,
    /// The connected count last logged (the waiting note is logged once per change).
    noted_connected: Option<usize>,
}

impl Actor for Replicator {
    type Msg = ReplicatorMsg;
    type State = ReplicatorState;
    type Arguments = ReplicatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ReplicatorMsg>,
        args: ReplicatorArgs,
    ) -> Result<ReplicatorState, ActorProcessingErr> {
        let recovered_from = args.store.meta_get::<(u64, u64)>(META_RECOVERED_FROM)?;
        let mut rx = args.store.durable();
        let durable = rx.borrow().seq;
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let seq = rx.borrow_and_update().seq;
                if myself.cast(ReplicatorMsg::Durable(seq)).is_err() {
                    break;
                }
            }
        });
        let mut st = ReplicatorState {
            args,
            recovered_from,
            durable,
            peers: HashMap::new(),
            keepers: BTreeSet::new(),
            noted_connected: None,
        };
        st.publish();
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<ReplicatorMsg>,
        msg: ReplicatorMsg,
        st: &mut ReplicatorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ReplicatorMsg::Durable(seq) => {
                st.durable = st.durable.max(seq);
                let names: Vec<String> = st.peers.keys().cloned().collect();
                for n in names {
                    st.pump(&n, &myself);
                }
            }
            ReplicatorMsg::Joined { name, instance, agent, replicas } => {
                let peer = st.new_peer(&name, instance, agent, &replicas);
                st.peers.insert(name.clone(), peer);
                st.joined_keeper(&name);
                st.pump(&name, &myself);
                st.publish();
            }
            ReplicatorMsg::Left { node_id } => {
                st.peers.retain(|_, p| p.agent.get_id().node() != node_id);
                st.publish();
            }
            ReplicatorMsg::Ack(a) => {
                if a.cluster_id != st.args.cluster_id || a.date != st.args.date {
                    return Ok(());
                }
                let Some(p) = st.peers.get_mut(&a.executor).filter(|p| p.instance == a.instance)
                else {
                    return Ok(());
                };
                p.on_ack(&a);
                st.pump(&a.executor, &myself);
                st.publish();
            }
            ReplicatorMsg::Read { name, instance, result } => {
                let Some(p) = st.peers.get_mut(&name).filter(|p| p.instance == instance) else {
                    return Ok(());
                };
                p.reading = false;
                match result {
                    Ok(ReadResult::Snapshot(snap)) => {
                        let (base_seq, bytes) = snap.unwrap_or((0, Arc::new(Vec::new())));
                        let begin = ReplicaBody::Begin {
                            base_seq,
                            snapshot_len: bytes.len() as u64,
                            snapshot_crc: crc32fast::hash(&bytes),
                            runs: history::through(&st.args.runs, base_seq),
                            upto: st.durable,
                        };
                        info!(executor = %name, base_seq, bytes = bytes.len(), "replica starts over");
                        p.buffered.clear();
                        p.inflight.clear();
                        p.inflight_bytes = 0;
                        p.acked = base_seq;
                        p.next = base_seq + 1;
                        // The new copy replaces the old one once durable through this.
                        p.counts_from = base_seq.max(st.durable);
                        p.stage = if bytes.is_empty() {
                            Stage::Events
                        } else {
                            Stage::Snapshot { base_seq, bytes, sent: 0, acked: 0 }
                        };
                        let (epoch, cid, date) =
                            (st.args.epoch, st.args.cluster_id.clone(), st.args.date.clone());
                        if !send(&p.agent, epoch, &cid, &date, begin) {
                            st.peers.remove(&name);
                            st.publish();
                            return Ok(());
                        }
                    }
                    Ok(ReadResult::Events { first, events, reader }) => {
                        if first == p.next && p.buffered.is_empty() {
                            p.buffered.extend((first..).zip(events));
                            p.reader = reader;
                        }
                    }
                    Err(e) => {
                        warn!(executor = %name, error = %e, "replication read failed; the replica starts over");
                        p.stage = Stage::NeedsBegin;
                    }
                }
                st.pump(&name, &myself);
                st.publish();
            }
        }
        Ok(())
    }
}

/// Sends one stream part; false if the executor is gone.
fn send(
    agent: &ActorRef<Wire>,
    epoch: u64,
    cluster_id: &str,
    date: &str,
    body: ReplicaBody,
) -> bool {
    let msg = ToExecutor::Replicate(ReplicateMsg {
        epoch,
        cluster_id: cluster_id.to_owned(),
        date: date.to_owned(),
        body,
    });
    match codec::encode("replication", &msg) {
        Ok(bytes) => agent.cast(Wire::Cast(bytes)).is_ok(),
        Err(e) => {
            warn!(error = %e, "replication part refused (an event over the message limit?)");
            true
        }
    }
}

impl Peer {
    /// Counts `durable` (already clamped to what was sent) towards `--replica-acks` if the
    /// ack is of the copy in place: not a replacement still being built, and (after a
    /// `Begin`) durable through the bound at which the replica swaps the new copy in.
    fn count(&mut self, a: &ReplicaAckMsg, durable: u64) {
        if !a.staged && durable >= self.counts_from {
            self.held = self.held.max(durable);
        }
    }

    fn on_ack(&mut self, a: &ReplicaAckMsg) {
        if let Stage::Snapshot { base_seq, acked, sent, .. } = &mut self.stage {
            if a.next_seq == *base_seq + 1 && a.need == ReplicaNeed::Nothing {
                // Installed: stream the events after it.
                self.stage = Stage::Events;
                self.acked = a.durable_seq.max(self.acked);
                self.count(a, self.acked);
                return;
            }
            // A peer never holds more than it was sent: an ack beyond that (a stale ack of an
            // earlier start-over, a confused peer) is clamped, so `sent - acked` never
            // underflows.
            let received = usize::try_from(a.snapshot_received).unwrap_or(usize::MAX);
            if received > *sent && !self.warned_overack {
                self.warned_overack = true;
                warn!(executor = %a.executor, sent = *sent, acknowledged = received,
                    "executor acknowledged snapshot bytes it was never sent; counting only what was sent");
            }
            let received = received.min(*sent);
            *acked = received.max(*acked);
            match a.need {
                ReplicaNeed::ResendFrom => {
                    // It holds exactly `received` bytes: continue from there.
                    *sent = received;
                    *acked = received;
                }
                ReplicaNeed::Reset => self.stage = Stage::NeedsBegin,
                ReplicaNeed::Nothing => {}
            }
            return;
        }
        let mut durable = a.durable_seq;
        if matches!(self.stage, Stage::Events) && durable >= self.next {
            // Acknowledging events it was never sent would open the credit window past
            // what is in flight: count only what was sent.
            if !self.warned_overack {
                self.warned_overack = true;
                warn!(executor = %a.executor, next = self.next, acknowledged = durable,
                    "executor acknowledged events it was never sent; counting only what was sent");
            }
            durable = self.next.saturating_sub(1);
        }
        self.acked = self.acked.max(durable);
        if matches!(self.stage, Stage::Events) {
            self.count(a, durable);
        }
        while self.inflight.front().is_some_and(|(last, _)| *last <= self.acked) {
            if let Some((_, b)) = self.inflight.pop_front() {
                self.inflight_bytes -= b;
            }
        }
        match a.need {
            ReplicaNeed::Nothing => {}
            ReplicaNeed::ResendFrom if a.next_seq > 0 => {
                self.next = a.next_seq;
                self.inflight.clear();
                self.inflight_bytes = 0;
                self.buffered.clear();
            }
            ReplicaNeed::ResendFrom | ReplicaNeed::Reset => {
                self.stage = Stage::NeedsBegin;
                self.inflight.clear();
                self.inflight_bytes = 0;
                self.buffered.clear();
            }
        }
    }
}

impl ReplicatorState {
    fn new_peer(
        &self,
        name: &str,
        instance: u64,
        agent: ActorRef<Wire>,
        replicas: &[ReplicaPosition],
    ) -> Peer {
        let mine = replicas
            .iter()
            .find(|p| p.cluster_id == self.args.cluster_id && p.date == self.args.date);
        let first_log = self.args.store.first_log_seq();
        // A replica continues iff it is a prefix of this history: not ahead of it, not
        // compacted past, and not holding an older epoch's tail beyond a recovery point.
        // With epochs known on both sides, the replica's events must have been written in
        // the epochs this store's were (Raft's consistency check).
        let continues = mine.filter(|p| {
            p.seq <= self.durable
                && p.seq + 1 >= first_log
                && !self.recovered_from.is_some_and(|(e, s)| p.epoch < e && p.seq > s)
                && history::diverge_at(&p.runs, p.seq, &self.args.runs, self.durable).is_none()
        });
        if let Some(other) = replicas.iter().find(|p| {
            p.date == self.args.date && p.cluster_id != self.args.cluster_id && p.seq > self.durable
        }) {
            // An operator may have started this day afresh after losing the manager's data:
            // the other replica is kept (replicas are per cluster id) and can still be recovered.
            warn!(
                executor = %name,
                other_cluster = %other.cluster_id,
                other_seq = other.seq,
                "this executor holds a longer replica of the day from another cluster id: if the \
                 manager's data was lost, stop it, remove the day's directory and restart with \
                 --recover-from-replicas --recover-cluster-id {}",
                other.cluster_id
            );
        }
        let (stage, next) = match continues {
            Some(p) => (Stage::Events, p.seq + 1),
            None => (Stage::NeedsBegin, 0),
        };
        info!(
            executor = %name,
            replica_seq = ?mine.map(|p| p.seq),
            continues = continues.is_some(),
            "replicating to executor"
        );
        Peer {
            instance,
            agent,
            stage,
            next,
            acked: next.saturating_sub(1),
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            reading: false,
            buffered: VecDeque::new(),
            reader: None,
            warned_overack: false,
            // A replica that continues holds its reported position in place.
            held: continues.map_or(0, |p| p.seq),
            counts_from: 0,
        }
    }

    /// An executor with `--data` joined: N as this manager knows it. Says once per new N when
    /// the recovery quorum no longer covers it (K + Q ≤ N).
    fn joined_keeper(&mut self, name: &str) {
        let AckPolicy { acks, quorum } = self.args.policy;
        if acks == 0 || !self.keepers.insert(name.to_owned()) {
            return;
        }
        let n = self.keepers.len();
        if acks + quorum.max(1) <= n {
            warn!(
                keepers = n,
                replica_acks = acks,
                replica_quorum = quorum,
                "{n} executors keep replicas of this day: a recovery with --replica-quorum \
                 {quorum} might choose none of the {acks} that acknowledged; recover with \
                 --replica-quorum {} or more to lose nothing a client saw",
                n - acks + 1
            );
        }
    }

    /// Publishes what K replicas hold (the K-th highest in-place ack of the connected
    /// peers), and logs once per change of the connected count while fewer than K are
    /// connected (the day waits, visibly).
    fn publish(&mut self) {
        let acks = self.args.policy.acks;
        if acks == 0 {
            return;
        }
        let mut held: Vec<u64> = self.peers.values().map(|p| p.held).collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        let kth = held.get(acks - 1).copied().unwrap_or(0);
        let connected = self.peers.len();
        self.args.replicated.send_if_modified(|r| {
            let next = Replicated { seq: r.seq.max(kth), connected };
            let changed = *r != next;
            *r = next;
            changed
        });
        if self.noted_connected == Some(connected) {
            return;
        }
        let before = self.noted_connected.replace(connected);
        if connected < acks {
            warn!(
                replica_acks = acks,
                connected,
                "waiting for {acks} replica acknowledgements, {connected} connected: \
                 dispatches, replies and console updates wait until {acks} executors with \
                 --data replicate this day"
            );
        } else if before.is_some_and(|b| b < acks) {
            info!(replica_acks = acks, connected, "enough replicas connected; effects flow again");
        }
    }

    /// Sends what the peer's credits allow; starts a blocking read when the data is not in
    /// memory.
    fn pump(&mut self, name: &str, myself: &ActorRef<ReplicatorMsg>) {
        let (epoch, durable) = (self.args.epoch, self.durable);
        let runs = self.args.runs.clone();
        let cid = self.args.cluster_id.clone();
        let date = self.args.date.clone();
        let Some(p) = self.peers.get_mut(name) else { return };
        if p.reading {
            return;
        }
        let mut alive = true;
        match &mut p.stage {
            Stage::NeedsBegin => {
                p.reading = true;
                let store = self.args.store.clone();
                let (me, n, instance) = (myself.clone(), name.to_owned(), p.instance);
                tokio::task::spawn_blocking(move || {
                    let result = store
                        .current_snapshot()
                        .map(|s| {
                            // Without a snapshot the log must still start at 1.
                            ReadResult::Snapshot(s.map(|s| (s.seq, Arc::new(s.bytes))))
                        })
                        .map_err(|e| e.to_string());
                    let _ = me.cast(ReplicatorMsg::Read { name: n, instance, result });
                });
                return;
            }
            Stage::Snapshot { base_seq, bytes, sent, acked } => {
                while *sent < bytes.len() && sent.saturating_sub(*acked) < WINDOW_BYTES {
                    let end = (*sent + PART_BYTES).min(bytes.len());
                    let body = ReplicaBody::SnapshotChunk {
                        base_seq: *base_seq,
                        offset: *sent as u64,
                        bytes: Bytes(bytes[*sent..end].to_vec()),
                    };
                    alive = send(&p.agent, epoch, &cid, &date, body);
                    if !alive {
                        break;
                    }
                    *sent = end;
                }
            }
            Stage::Events => loop {
                let unacked = p.next.saturating_sub(1).saturating_sub(p.acked);
                if p.next > durable || unacked >= WINDOW_EVENTS || p.inflight_bytes >= WINDOW_BYTES
                {
                    break;
                }
                // One message carries the events of one run (one writing epoch).
                let written_in = history::epoch_at(&runs, p.next);
                let upto = runs
                    .iter()
                    .find(|r| r.first_seq > p.next)
                    .map_or(durable, |r| durable.min(r.first_seq - 1));
                let room = (WINDOW_BYTES - p.inflight_bytes).min(PART_BYTES);
                let credits = WINDOW_EVENTS - unacked;
                let events: Vec<Arc<[u8]>> = if !p.buffered.is_empty() {
                    let mut out = Vec::new();
                    let mut size = 0;
                    while let Some((seq, e)) = p.buffered.front() {
                        if *seq > upto
                            || out.len() as u64 >= credits
                            || (!out.is_empty() && size + e.len() > room)
                        {
                            break;
                        }
                        size += e.len();
                        out.push(e.clone());
                        p.buffered.pop_front();
                    }
                    out
                } else if let Some(ev) = self.args.tail.take(p.next, upto, credits, room) {
                    ev
                } else {
                    if p.next < self.args.store.first_log_seq() {
                        // Compacted away: start over from the snapshot.
                        p.stage = Stage::NeedsBegin;
                        self.pump(name, myself);
                        return;
                    }
                    p.reading = true;
                    let store = self.args.store.clone();
                    let (me, n, instance, from) =
                        (myself.clone(), name.to_owned(), p.instance, p.next);
                    // A reader left by the previous read continues where it stopped (each
                    // segment is read once, not once per window).
                    let kept = p.reader.take().filter(|(next, _)| *next == from);
                    tokio::task::spawn_blocking(move || {
                        let mut events = Vec::new();
                        let mut size = 0;
                        let mut err = None;
                        let mut reader = kept.map_or_else(|| store.read_from(from), |(_, r)| r);
                        let mut full = false;
                        for item in reader.by_ref() {
                            match item {
                                Ok((seq, _)) if seq != from + events.len() as u64 => {
                                    err = Some(format!("the log no longer holds seq {from}"));
                                    break;
                                }
                                Ok((_, e)) => {
                                    size += e.len();
                                    events.push(Arc::from(e.as_slice()));
                                    if size >= WINDOW_BYTES {
                                        full = true;
                                        break;
                                    }
                                }
                                Err(e) => {
                                    err = Some(e.to_string());
                                    break;
                                }
                            }
                        }
                        let result = match err {
                            Some(e) => Err(e),
                            None => {
                                let next = from + events.len() as u64;
                                let reader = full.then_some((next, reader));
                                Ok(ReadResult::Events { first: from, events, reader })
                            }
                        };
                        let _ = me.cast(ReplicatorMsg::Read { name: n, instance, result });
                    });
                    return;
                };
                if events.is_empty() {
                    break;
                }
                let first = p.next;
                let size: usize = events.iter().map(|e| e.len()).sum();
                let n = events.len() as u64;
                let body = ReplicaBody::Events {
                    first_seq: first,
                    events: events.iter().map(|e| Bytes(e.to_vec())).collect(),
                    written_in,
                };
                alive = send(&p.agent, epoch, &cid, &date, body);
                if !alive {
                    break;
                }
                p.next = first + n;
                p.inflight.push_back((p.next - 1, size));
                p.inflight_bytes += size;
            },
        }
        if !alive {
            info!(executor = %name, "executor unreachable; replication to it stops until it joins again");
            self.peers.remove(name);
            self.publish();
        }
    }
}

// ----- hooks called from the manager ---------------------------------------------------

/// Starts the replicator for a cluster manager (a child of the manager).
pub(crate) async fn start(
    journal: &mut DayLog,
    date: String,
    epoch: u64,
    policy: AckPolicy,
    supervisor: ractor::ActorCell,
) -> Result<(ActorRef<ReplicatorMsg>, watch::Receiver<Replicated>), ActorProcessingErr> {
    let cluster_id = cluster_id(journal)?;
    let store = journal.store();
    // This epoch's run, durable before the manager writes an event in it.
    let mut runs: Vec<EpochRun> = store.meta_get(META_EPOCH_RUNS)?.unwrap_or_default();
    if history::push_run(&mut runs, store.next_seq(), epoch) {
        store.meta_put(META_EPOCH_RUNS, &runs)?;
    }
    let tail = Arc::new(ReplicationTail::default());
    let copy = tail.clone();
    journal.set_tap(Box::new(move |batch| copy.push(batch)));
    let (replicated, rx) = watch::channel(Replicated::default());
    let args = ReplicatorArgs {
        store,
        tail,
        cluster_id: cluster_id.clone(),
        date,
        epoch,
        runs,
        policy,
        replicated,
    };
    let (actor, _) = Actor::spawn_linked(None, Replicator, args, supervisor).await?;
    info!(%cluster_id, "replicating events to executors with --data");
    Ok((actor, rx))
}

#[cfg(test)]
mod tests;
