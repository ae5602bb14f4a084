//! A manager whose day store is gone rebuilds it from the freshest executor replica
//! (`taskflow manager --recover-from-replicas`).
//!
//! ```text
//! recovery inbox ◄── Join (replicas, seen epoch) ── executors     answer: Recovering{retry_ms}
//!   wait for K executors with replicas, or the timeout
//!   choose the freshest replica of the date: one cluster id, then (epoch in which the last
//!   held event was written, seq); divergent histories refused (`choose`)
//!   ReplicaPull ──► chosen executor ──► ReplicaChunk (snapshot chunks, then events)
//!   write `<day>.recovering/` (seeded store + events, epoch ≥ every reported epoch), rename
//! ```
//!
//! Then the node and inbox stop, the manager starts normally on the recovered store (its
//! epoch bump puts it above every epoch an executor reported) and executors join as usual.
//! **What it can lose:** the events that were durable on the old manager but not yet durable
//! on the chosen replica (acknowledged or not) — see `proto-docs/cluster.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::codec::{self, RejectLog};
use super::history;
use super::manager::{ClusterListen, MANAGER_GROUP, MANAGER_INBOX, RemoteExecutor, send_reply};
use super::messages::{
    ChunkBody, PullPart, ReplicaChunkMsg, ReplicaPosition, ReplicaPullMsg, Reply, ToExecutor,
    ToManager,
};
use super::node;
use super::status::{Status, StatusSink};
use super::wire::Wire;
use crate::model::BusinessDate;
use crate::store::{self, Store, StoreOptions};

/// How a recovery from replicas waits and chooses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverOptions {
    /// Choose once this many executors that keep replicas have joined. Default 1.
    pub quorum: usize,
    /// …or once this much time has passed since the listener started. Default 30 s.
    pub wait: Duration,
    /// Take only replicas of this cluster id (needed when executors hold replicas of several).
    pub cluster_id: Option<String>,
    /// Take only this executor's replica (needed when replicas hold divergent histories).
    pub executor: Option<String>,
    /// How long one chunk may take to arrive. Default 30 s.
    pub chunk_timeout: Duration,
    /// Where the recovery's milestones go (waiting, chosen, recovered); default: nowhere.
    pub status: StatusSink,
}

impl Default for RecoverOptions {
    fn default() -> Self {
        RecoverOptions {
            quorum: 1,
            wait: Duration::from_secs(30),
            cluster_id: None,
            executor: None,
            chunk_timeout: Duration::from_secs(30),
            status: StatusSink::default(),
        }
    }
}

/// What [`recover_from_replicas`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// The day's store exists: nothing to recover, the manager starts from it.
    NotNeeded,
    /// The store was rebuilt from a replica.
    Recovered {
        /// The executor whose replica was taken.
        executor: String,
        /// Its position (cluster id, epoch, seq).
        position: ReplicaPosition,
        /// The seq of the snapshot it started from (0: none).
        snapshot_seq: u64,
        /// The highest epoch any executor reported; the manager's next epoch is above it.
        max_epoch: u64,
    },
}

/// Why a recovery did not happen; the message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("recovery from replicas failed: {0}")]
pub struct RecoveryError(pub String);

const PULL_BYTES: u64 = 1 << 20;
/// An unanswered pull is sent again after this long.
const RESEND_PULL: Duration = Duration::from_secs(1);

enum Input {
    Join {
        name: String,
        replicas: Vec<ReplicaPosition>,
        seen_epoch: u64,
        keeps: bool,
        agent: Option<ActorRef<Wire>>,
    },
    Chunk(ReplicaChunkMsg),
}

struct RecoveryInbox;

impl Actor for RecoveryInbox {
    type Msg = Wire;
    type State = (mpsc::UnboundedSender<Input>, RejectLog);
    type Arguments = mpsc::UnboundedSender<Input>;

    async fn pre_start(
        &self,
        myself: ActorRef<Wire>,
        tx: mpsc::UnboundedSender<Input>,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(MANAGER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok((tx, RejectLog::default()))
    }

    async fn handle(
        &self,
        _myself: ActorRef<Wire>,
        msg: Wire,
        (tx, rejects): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (bytes, reply) = match msg {
            Wire::Cast(b) => (b, None),
            Wire::Call(b, r) => (b, Some(r)),
        };
        match (codec::decode::<ToManager>("executor message", &bytes), reply) {
            (Ok(ToManager::Join(join)), Some(reply)) => {
                // Keep the session: the executor answers pulls and joins again later.
                send_reply(reply, &Reply::Recovering { retry_ms: 500 });
                let agent = RemoteExecutor::find(&join, 0, Default::default()).map(|r| r.agent);
                let _ = tx.send(Input::Join {
                    name: join.executor,
                    replicas: join.replicas,
                    seen_epoch: join.seen_epoch,
                    keeps: join.keeps_replica,
                    agent,
                });
            }
            (Ok(ToManager::ReplicaChunk(c)), None) => {
                let _ = tx.send(Input::Chunk(c));
            }
            (Ok(_), reply) => {
                if let Some(reply) = reply {
                    send_reply(
                        reply,
                        &Reply::Rejected {
                            reason: "the manager is recovering from replicas".into(),
                        },
                    );
                }
            }
            (Err(e), reply) => {
                rejects.reject("unknown executor", &e);
                if let Some(reply) = reply {
                    send_reply(reply, &Reply::Rejected { reason: e.to_string() });
                }
            }
        }
        Ok(())
    }
}

/// Rebuilds `day_dir` from the freshest replica of `date` if it holds no store; see the
/// module docs. Listens on `listen.addr` while it runs and stops listening before returning.
pub async fn recover_from_replicas(
    listen: &ClusterListen,
    day_dir: &Path,
    date: BusinessDate,
    opts: &RecoverOptions,
    store_opts: &StoreOptions,
) -> Result<RecoveryOutcome, RecoveryError> {
    if day_dir.join("STORE").exists() {
        info!(dir = %day_dir.display(), "the day's journal exists; no recovery from replicas");
        return Ok(RecoveryOutcome::NotNeeded);
    }
    let nonempty = std::fs::read_dir(day_dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if nonempty {
        return Err(RecoveryError(format!(
            "{} is not empty but holds no store: inspect it (`taskflow store inspect`) and remove it \
             before recovering from replicas",
            day_dir.display()
        )));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (inbox, _) = Actor::spawn(Some(MANAGER_INBOX.into()), RecoveryInbox, tx)
        .await
        .map_err(|e| RecoveryError(format!("cannot start the recovery inbox: {e}")))?;
    let cookie = listen.cookie.clone();
    let (node, accept) = match node::start_server(
        "taskflow-manager".into(),
        cookie,
        listen.addr,
        listen.tls.as_ref(),
        |_| {},
    )
    .await
    {
        Ok(n) => n,
        Err(e) => {
            let _ = inbox.stop_and_wait(None, Some(Duration::from_secs(5))).await;
            return Err(RecoveryError(e));
        }
    };
    opts.status.emit(Status::RecoveryWaiting {
        date,
        quorum: opts.quorum,
        wait: opts.wait,
        addr: listen.addr,
    });
    let result = run(&mut rx, day_dir, date, opts, store_opts).await;
    // The node first (it would respawn a stopped listener), then its listener and sessions,
    // so the manager can bind the address again at once.
    if let Some(accept) = accept {
        accept.stop().await;
    }
    let cell = node.get_cell();
    let _ = node.stop_and_wait(None, Some(Duration::from_secs(5))).await;
    let _ = cell.stop_children_and_wait(None, Some(Duration::from_secs(5))).await;
    let _ = inbox.stop_and_wait(None, Some(Duration::from_secs(5))).await;
    result
}

struct Joined {
    replicas: Vec<ReplicaPosition>,
    agent: Option<ActorRef<Wire>>,
}

async fn run(
    rx: &mut mpsc::UnboundedReceiver<Input>,
    day_dir: &Path,
    date: BusinessDate,
    opts: &RecoverOptions,
    store_opts: &StoreOptions,
) -> Result<RecoveryOutcome, RecoveryError> {
    let deadline = tokio::time::Instant::now() + opts.wait;
    let mut joined: BTreeMap<String, Joined> = BTreeMap::new();
    let mut max_epoch = 0u64;
    let mut keepers = BTreeSet::new();
    while keepers.len() < opts.quorum.max(1) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Input::Join { name, replicas, seen_epoch, keeps, agent })) => {
                max_epoch = max_epoch.max(seen_epoch);
                for r in &replicas {
                    max_epoch = max_epoch.max(r.epoch);
                }
                if keeps {
                    keepers.insert(name.clone());
                }
                if !joined.contains_key(&name) {
                    opts.status.emit(Status::RecoveryExecutorJoined {
                        executor: name.clone(),
                        replicas: replicas.len(),
                        keeps,
                    });
                }
                joined.insert(name, Joined { replicas, agent });
            }
            Ok(Some(Input::Chunk(_))) => {}
            Ok(None) => return Err(RecoveryError("the recovery inbox stopped".into())),
            Err(_) => break,
        }
    }
    if keepers.len() < opts.quorum.max(1) {
        // K + Q > N guarantees that Q replicas include one of the K that acknowledged what
        // clients saw; fewer than Q do not.
        tracing::warn!(
            joined = keepers.len(),
            quorum = opts.quorum,
            wait = ?opts.wait,
            "only {} of the --replica-quorum {} executors with --data joined in time: the \
             replica chosen may lack events a client saw, even under --replica-acks",
            keepers.len(),
            opts.quorum
        );
    }
    let held: Vec<(String, Vec<ReplicaPosition>)> =
        joined.iter().map(|(n, j)| (n.clone(), j.replicas.clone())).collect();
    let (name, position) =
        choose(&held, &date.to_string(), opts.cluster_id.as_deref(), opts.executor.as_deref())
            .map_err(|reason| {
                RecoveryError(format!(
                    "{reason} ({} executor(s) joined within {:?})",
                    joined.len(),
                    opts.wait
                ))
            })?;
    let Some(agent) = joined.get(&name).and_then(|j| j.agent.clone()) else {
        return Err(RecoveryError(format!("executor {name}'s agent is not reachable")));
    };
    opts.status.emit(Status::RecoveryChosen {
        executor: name.clone(),
        cluster_id: position.cluster_id.clone(),
        epoch: position.last_epoch(),
        seq: position.seq,
    });
    let staging = staging_dir(day_dir);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| RecoveryError(format!("cannot clear {}: {e}", staging.display())))?;
    }
    let mut puller = Puller {
        rx,
        agent,
        name: name.clone(),
        position: position.clone(),
        request: 0,
        timeout: opts.chunk_timeout,
    };
    let snapshot_seq = puller.pull_into(&staging, store_opts, max_epoch).await?;
    if let Some(parent) = day_dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| RecoveryError(format!("cannot create {}: {e}", parent.display())))?;
    }
    if day_dir.exists() {
        std::fs::remove_dir(day_dir)
            .map_err(|e| RecoveryError(format!("cannot replace {}: {e}", day_dir.display())))?;
    }
    std::fs::rename(&staging, day_dir)
        .map_err(|e| RecoveryError(format!("cannot move the recovered store into place: {e}")))?;
    if let Some(parent) = day_dir.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    opts.status.emit(Status::Recovered {
        date,
        executor: name.clone(),
        snapshot_seq,
        seq: position.seq,
        max_epoch,
    });
    Ok(RecoveryOutcome::Recovered { executor: name, position, snapshot_seq, max_epoch })
}

/// Picks the replica to recover `date` from: among the replicas of that date (of `cluster_id`
/// if named, of `executor` if named; ids that are not valid are ignored), the freshest as Raft
/// compares logs — by the epoch in which the last held event was written, then by seq — ties
/// going to the first executor name. So a longer copy of the same history always wins, and a
/// replica whose last event's epoch is unknown (written before replica format 2) ranks below
/// every known one. Refused: replicas of several cluster ids, none at all, and replicas of
/// divergent histories (one seq written in two different epochs), which are named with how to
/// choose (`--recover-executor`).
pub(crate) fn choose(
    held: &[(String, Vec<ReplicaPosition>)],
    date: &str,
    cluster_id: Option<&str>,
    executor: Option<&str>,
) -> Result<(String, ReplicaPosition), String> {
    let mut candidates: Vec<(String, ReplicaPosition)> = held
        .iter()
        .filter(|(n, _)| executor.is_none_or(|e| n == e))
        .flat_map(|(n, rs)| rs.iter().map(move |r| (n.clone(), r.clone())))
        .filter(|(_, r)| r.date == date && super::replica::valid_id(&r.cluster_id))
        .filter(|(_, r)| cluster_id.is_none_or(|c| r.cluster_id == c))
        .collect();
    let ids: BTreeSet<&str> = candidates.iter().map(|(_, r)| r.cluster_id.as_str()).collect();
    if ids.len() > 1 {
        let list: Vec<String> = ids
            .iter()
            .map(|id| {
                let held = candidates
                    .iter()
                    .filter(|(_, r)| r.cluster_id == *id)
                    .map(|(n, r)| format!("{n}: epoch {} seq {}", r.last_epoch(), r.seq))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{id} ({held})")
            })
            .collect();
        return Err(format!(
            "executors hold replicas of {date} from {} different clusters: {}; name the one to \
             recover with --recover-cluster-id ID",
            ids.len(),
            list.join("; ")
        ));
    }
    if candidates.is_empty() {
        let of_cluster = cluster_id.map(|c| format!(" of cluster {c}")).unwrap_or_default();
        if let Some(e) = executor {
            return Err(format!(
                "executor {e} holds no replica of {date}{of_cluster} (or did not join); name an \
                 executor that does with --recover-executor, or leave it out"
            ));
        }
        return Err(format!(
            "no executor holds a replica of {date}{of_cluster}; start executors with --data, or \
             run without --recover-from-replicas to open the day afresh"
        ));
    }
    candidates.sort_by(|a, b| b.1.freshness().cmp(&a.1.freshness()).then(a.0.cmp(&b.0)));
    let mut split = Vec::new();
    for (i, (na, a)) in candidates.iter().enumerate() {
        for (nb, b) in &candidates[i + 1..] {
            if let Some(at) = history::diverge_at(&a.runs, a.seq, &b.runs, b.seq) {
                split.push(format!(
                    "{na} (seq {}, seq {at} written in epoch {}) and {nb} (seq {}, seq {at} \
                     written in epoch {})",
                    a.seq,
                    history::epoch_at(&a.runs, at),
                    b.seq,
                    history::epoch_at(&b.runs, at)
                ));
            }
        }
    }
    if !split.is_empty() {
        return Err(format!(
            "the replicas of {date} hold divergent histories (a recovery from either loses events \
             of the other): {}; recover from one of them with --recover-executor NAME (the \
             history a manager continued last is the one whose last event has the highest epoch: \
             {}), after saving the others' replica directories if their events matter",
            split.join("; "),
            candidates[0].0
        ));
    }
    Ok(candidates.swap_remove(0))
}

fn staging_dir(day_dir: &Path) -> PathBuf {
    let name = day_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    day_dir.with_file_name(format!(".{name}.recovering"))
}

struct Puller<'a> {
    rx: &'a mut mpsc::UnboundedReceiver<Input>,
    agent: ActorRef<Wire>,
    name: String,
    position: ReplicaPosition,
    request: u64,
    timeout: Duration,
}

impl Puller<'_> {
    /// One request, one answer (a credit of one chunk: nothing queues on either side).
    async fn ask(&mut self, part: PullPart) -> Result<ChunkBody, RecoveryError> {
        // A pull is idempotent: it is sent again every second until one of its copies is
        // answered (the first copy can overtake the executor's processing of the join
        // answer, and a chunk sent before that has nowhere to go).
        let first = self.request + 1;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            self.request += 1;
            let msg = ToExecutor::ReplicaPull(ReplicaPullMsg {
                request: self.request,
                cluster_id: self.position.cluster_id.clone(),
                date: self.position.date.clone(),
                part: part.clone(),
            });
            let bytes =
                codec::encode("replica pull", &msg).map_err(|e| RecoveryError(e.to_string()))?;
            self.agent.cast(Wire::Cast(bytes)).map_err(|_| {
                RecoveryError(format!("executor {} went away during recovery", self.name))
            })?;
            let resend = (tokio::time::Instant::now() + RESEND_PULL).min(deadline);
            loop {
                match tokio::time::timeout_at(resend, self.rx.recv()).await {
                    Ok(Some(Input::Chunk(c)))
                        if c.executor == self.name
                            && (first..=self.request).contains(&c.request) =>
                    {
                        return match c.body {
                            ChunkBody::Error { reason } => Err(RecoveryError(format!(
                                "executor {} cannot serve its replica: {reason}",
                                self.name
                            ))),
                            body => Ok(body),
                        };
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(RecoveryError("the recovery inbox stopped".into())),
                    Err(_) if tokio::time::Instant::now() >= deadline => {
                        return Err(RecoveryError(format!(
                            "executor {} did not answer a replica pull within {:?}",
                            self.name, self.timeout
                        )));
                    }
                    Err(_) => break,
                }
            }
        }
    }

    /// Pulls the replica into a new store in `dir`; returns the snapshot's seq.
    async fn pull_into(
        &mut self,
        dir: &Path,
        store_opts: &StoreOptions,
        max_epoch: u64,
    ) -> Result<u64, RecoveryError> {
        let err = |e: store::Error| RecoveryError(e.to_string());
        // The snapshot, in chunks.
        let (mut snap, mut base_seq, mut total, mut crc) = (Vec::new(), 0u64, None::<u64>, 0u32);
        while total.is_none_or(|t| (snap.len() as u64) < t) {
            let part = PullPart::Snapshot { offset: snap.len() as u64, max_bytes: PULL_BYTES };
            match self.ask(part).await? {
                ChunkBody::Snapshot { base_seq: b, total_len, crc: c, offset, bytes } => {
                    if offset != snap.len() as u64
                        || total.is_some_and(|t| t != total_len)
                        || (total.is_some() && b != base_seq)
                        || total_len > (1 << 34)
                        || (bytes.0.is_empty() && (snap.len() as u64) < total_len)
                    {
                        return Err(RecoveryError("a malformed snapshot chunk arrived".into()));
                    }
                    total = Some(total_len);
                    base_seq = b;
                    crc = c;
                    snap.extend_from_slice(&bytes.0);
                }
                other => {
                    return Err(RecoveryError(format!("unexpected answer {}", kind(&other))));
                }
            }
        }
        if !snap.is_empty() && crc32fast::hash(&snap) != crc {
            return Err(RecoveryError("the replica's snapshot does not match its checksum".into()));
        }
        if snap.is_empty() && base_seq != 0 {
            return Err(RecoveryError("the replica reports a snapshot seq without bytes".into()));
        }
        store::create_seeded(dir, store_opts, base_seq, (!snap.is_empty()).then_some(&snap[..]))
            .map_err(err)?;
        drop(snap);
        let (store, _) = Store::open(dir, store_opts.clone()).map_err(err)?;
        // The events after it, chunk by chunk, appended as they arrive.
        let mut next = base_seq + 1;
        loop {
            match self.ask(PullPart::Events { from_seq: next, max_bytes: PULL_BYTES }).await? {
                ChunkBody::Events { first_seq, events } if first_seq == next => {
                    if events.is_empty() {
                        break;
                    }
                    let batch: Vec<(u64, Vec<u8>)> =
                        (next..).zip(events.into_iter().map(|b| b.0)).collect();
                    next += batch.len() as u64;
                    store.append(batch).map_err(err)?;
                }
                other => {
                    return Err(RecoveryError(format!("unexpected answer {}", kind(&other))));
                }
            }
        }
        let last = next - 1;
        if last < self.position.seq {
            return Err(RecoveryError(format!(
                "executor {} reported its replica durable through seq {} but served only through {last}",
                self.name, self.position.seq
            )));
        }
        if last > 0 && !store.wait_durable(last, Duration::from_secs(600)).map_err(err)? {
            return Err(RecoveryError("the recovered events did not become durable".into()));
        }
        // The manager bumps the epoch at start: it will be max_epoch + 1, above every epoch
        // an executor reported. `recovered_from` bounds which replicas may continue later.
        store.meta_put(crate::journal::META_CLUSTER_ID, &self.position.cluster_id).map_err(err)?;
        store.meta_put("epoch", &max_epoch).map_err(err)?;
        store.meta_put(crate::journal::META_RECOVERED_FROM, &(max_epoch + 1, last)).map_err(err)?;
        // The epochs its events were written in, so the recovered history ranks and is
        // compared as the replica's was.
        let runs = history::through(&self.position.runs, last);
        store.meta_put(crate::journal::META_EPOCH_RUNS, &runs).map_err(err)?;
        store.close().map_err(err)?;
        if last != self.position.seq {
            warn!(last, reported = self.position.seq, "the replica held more than it reported");
        }
        Ok(base_seq)
    }
}

fn kind(b: &ChunkBody) -> &'static str {
    match b {
        ChunkBody::Snapshot { .. } => "snapshot chunk",
        ChunkBody::Events { .. } => "events chunk",
        ChunkBody::Error { .. } => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::messages::EpochRun;

    /// A replica of cluster `cluster_id` last sent to by epoch `epoch`, holding `seq` events
    /// written in the epochs of `runs` ((first seq, epoch) each).
    fn at(
        cluster_id: &str,
        date: &str,
        epoch: u64,
        seq: u64,
        runs: &[(u64, u64)],
    ) -> ReplicaPosition {
        ReplicaPosition {
            cluster_id: cluster_id.into(),
            date: date.into(),
            epoch,
            seq,
            runs: runs.iter().map(|&(first_seq, epoch)| EpochRun { first_seq, epoch }).collect(),
        }
    }

    /// A replica whose events were all written in `epoch`.
    fn pos(cluster_id: &str, date: &str, epoch: u64, seq: u64) -> ReplicaPosition {
        at(cluster_id, date, epoch, seq, &[(1, epoch)])
    }

    const D: &str = "2026-09-30";

    fn name(r: Result<(String, ReplicaPosition), String>) -> String {
        r.unwrap().0
    }

    #[test]
    fn the_issues_scenario_a_longer_copy_of_an_older_epoch_beats_a_shorter_one_caught_up_later() {
        // Epoch 2: A durable at 900, B lagging at 100. The manager restarts (epoch 3) and B
        // catches up to 150 first — with events written in epoch 2. Disk lost; quorum 2.
        let held = vec![
            ("a".to_owned(), vec![at("c1", D, 2, 900, &[(1, 2)])]),
            ("b".to_owned(), vec![at("c1", D, 3, 150, &[(1, 2)])]),
        ];
        let (n, p) = choose(&held, D, None, None).unwrap();
        assert_eq!((n.as_str(), p.seq, p.last_epoch()), ("a", 900, 2));
        // Once B holds an event epoch 3 wrote, it is the newer history (A is its prefix).
        let held = vec![
            ("a".to_owned(), vec![at("c1", D, 2, 900, &[(1, 2)])]),
            ("b".to_owned(), vec![at("c1", D, 3, 901, &[(1, 2), (901, 3)])]),
        ];
        assert_eq!(name(choose(&held, D, None, None)), "b");
    }

    #[test]
    fn the_freshest_replica_by_last_written_epoch_then_seq_is_chosen() {
        let held = vec![
            ("a".to_owned(), vec![pos("c1", D, 2, 900), pos("c1", "2026-09-29", 9, 9_999)]),
            ("b".to_owned(), vec![at("c1", D, 3, 1_000, &[(1, 2), (950, 3)])]),
            ("c".to_owned(), vec![at("c1", D, 3, 1_000, &[(1, 2), (950, 3)])]),
            ("d".to_owned(), vec![]),
        ];
        // Ties go to the first name.
        let (n, p) = choose(&held, D, None, None).unwrap();
        assert_eq!((n.as_str(), p.last_epoch(), p.seq), ("b", 3, 1_000));
        // A longer copy of the same history always wins, whatever epoch last sent to it.
        let held = vec![
            ("a".to_owned(), vec![at("c1", D, 7, 400, &[(1, 2), (301, 5)])]),
            ("b".to_owned(), vec![at("c1", D, 5, 401, &[(1, 2), (301, 5)])]),
        ];
        assert_eq!(name(choose(&held, D, None, None)), "b");
    }

    #[test]
    fn a_replica_of_the_old_format_ranks_as_of_an_unknown_oldest_epoch() {
        // Format 1 recorded only the last sender's epoch (an upper bound): its events' epoch
        // is unknown, below every known one; among unknown ones the longest wins.
        let old = |epoch, seq| at("c1", D, epoch, seq, &[]);
        let held = vec![
            ("a".to_owned(), vec![old(9, 900)]),
            ("b".to_owned(), vec![at("c1", D, 2, 150, &[(1, 2)])]),
        ];
        assert_eq!(name(choose(&held, D, None, None)), "b");
        let held = vec![("a".to_owned(), vec![old(2, 900)]), ("b".to_owned(), vec![old(3, 150)])];
        let (n, p) = choose(&held, D, None, None).unwrap();
        assert_eq!((n.as_str(), p.last_epoch()), ("a", 0));
        // An old replica continued by a new manager knows the epoch of its newest events.
        let held = vec![
            ("a".to_owned(), vec![at("c1", D, 4, 950, &[(901, 4)])]),
            ("b".to_owned(), vec![old(4, 990)]),
        ];
        assert_eq!(name(choose(&held, D, None, None)), "a");
    }

    #[test]
    fn replicas_of_divergent_histories_are_refused_naming_them_unless_one_is_named() {
        // Recovered from b at 150 in epoch 4, which then wrote 151..300; a still holds the
        // epoch-2 events 151..900 the recovery did not have.
        let held = vec![
            ("a".to_owned(), vec![at("c1", D, 3, 900, &[(1, 2)])]),
            ("b".to_owned(), vec![at("c1", D, 4, 300, &[(1, 2), (151, 4)])]),
            ("c".to_owned(), vec![at("c1", D, 4, 100, &[(1, 2)])]),
        ];
        let err = choose(&held, D, None, None).unwrap_err();
        assert!(err.contains("divergent histories"), "{err}");
        assert!(
            err.contains("b (seq 300, seq 151 written in epoch 4) and a (seq 900, seq 151 written in epoch 2)"),
            "{err}"
        );
        assert!(!err.contains(" c "), "c is a prefix of both: {err}");
        assert!(err.contains("--recover-executor NAME"), "{err}");
        assert_eq!(name(choose(&held, D, None, Some("a"))), "a");
        assert_eq!(name(choose(&held, D, None, Some("b"))), "b");
        let err = choose(&held, D, None, Some("z")).unwrap_err();
        assert!(err.contains("executor z holds no replica of 2026-09-30"), "{err}");
        // Unknown epochs are no evidence of divergence.
        let held = vec![
            ("a".to_owned(), vec![at("c1", D, 3, 900, &[])]),
            ("b".to_owned(), vec![at("c1", D, 4, 300, &[(1, 2), (151, 4)])]),
        ];
        assert_eq!(name(choose(&held, D, None, None)), "b");
    }

    #[test]
    fn replicas_of_several_clusters_are_refused_unless_one_is_named() {
        let held = vec![
            ("a".to_owned(), vec![pos("c1", D, 2, 900)]),
            ("b".to_owned(), vec![pos("c2", D, 5, 10)]),
        ];
        let err = choose(&held, D, None, None).unwrap_err();
        assert!(
            err.contains("2 different clusters") && err.contains("c1") && err.contains("c2"),
            "{err}"
        );
        assert!(err.contains("--recover-cluster-id"), "{err}");
        assert_eq!(name(choose(&held, D, Some("c1"), None)), "a");
    }

    #[test]
    fn no_replica_of_the_date_is_refused_rather_than_opening_an_empty_day() {
        let held = vec![("a".to_owned(), vec![pos("c1", "2026-09-29", 2, 900)])];
        let err = choose(&held, D, None, None).unwrap_err();
        assert!(err.contains("no executor holds a replica of 2026-09-30"), "{err}");
        // A malformed cluster id from a peer is never chosen.
        let held = vec![("a".to_owned(), vec![pos("../x", D, 2, 900)])];
        assert!(choose(&held, D, None, None).is_err());
    }
}
