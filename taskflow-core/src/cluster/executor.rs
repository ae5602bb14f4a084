//! An executor process: joins a manager over ractor_cluster, runs the shards it is assigned on
//! its slots, heartbeats, fences itself when the manager is out of reach, and reconnects with
//! backoff after any disconnect.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::codec::{self, RejectLog};
use super::manager::{EXECUTOR_GROUP, MANAGER_GROUP, MANAGER_INBOX, agent_name};
use super::messages::{
    CheckpointMsg, DrainMsg, Heartbeat, HeldOutcome, Join, LastStep, Reply, ReportBody, ReportMsg,
    ToExecutor, ToManager, WireAttempt, WireOutcome,
};
use super::messages::{ReplicaPosition, ReplicateMsg};
use super::node::{self, NodeEvent};
use super::replica::{ReplicaMsg, ToManagerFn};
use super::status::Status;
use super::wire::Wire;
use crate::actors::executor::{Executor, ExecutorArgs, ExecutorMsg};
use crate::actors::{AttemptKey, Report, Upstream};
use crate::behavior::{BehaviorRegistry, BoxFuture, LogLevel};
use crate::runtime::Notice;

/// How an executor process joins its manager.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The manager's cluster address, HOST:PORT.
    pub manager: String,
    /// The executor's unique name.
    pub name: String,
    /// Shards run at once.
    pub slots: u32,
    /// The shared secret of the handshake.
    pub cookie: String,
    /// How long a stopped shard may take before it is abandoned.
    pub stop_grace: Duration,
    /// The local address of this node's own listener (port 0: any). Default 127.0.0.1:0.
    pub listen: SocketAddr,
    /// The protocol version to announce (a test hook; normally [`codec::PROTOCOL_VERSION`]).
    pub protocol_version: u16,
    /// The data directory for replicas of the manager's day logs (`--data`); none: this
    /// executor keeps no replica.
    pub data: Option<std::path::PathBuf>,
    /// Where the process's milestones go (joined, draining, left …); default: nowhere.
    pub status: super::StatusSink,
}

impl ExecutorConfig {
    /// A config with defaults for everything but the manager address, name and cookie.
    pub fn new(manager: impl Into<String>, name: impl Into<String>, cookie: String) -> Self {
        ExecutorConfig {
            manager: manager.into(),
            name: name.into(),
            slots: 4,
            cookie,
            stop_grace: Duration::from_secs(10),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            protocol_version: codec::PROTOCOL_VERSION,
            data: None,
            status: super::StatusSink::default(),
        }
    }
}

/// Why an executor process gave up (it never gives up on a reachable manager).
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The handshake failed: almost always a wrong cookie.
    #[error(
        "the manager at {0} closed the connection during the cluster handshake: the cookie \
         (TASKFLOW_COOKIE or --cookie-file) does not match the manager's"
    )]
    AuthFailed(String),
    /// The manager refused the join.
    #[error("the manager at {manager} rejected this executor: {reason}")]
    Rejected {
        /// The address.
        manager: String,
        /// The manager's reason.
        reason: String,
    },
    /// The local node could not start.
    #[error("{0}")]
    Startup(String),
}

struct Link {
    name: String,
    instance: u64,
    state: Mutex<LinkState>,
    /// The replicas this process keeps, for `Join` (kept current by the replica keeper).
    replicas: Arc<Mutex<Vec<ReplicaPosition>>>,
    /// Casts to the manager (reports, notes), sent by [`send_casts`] in batches.
    out: mpsc::UnboundedSender<(ActorRef<Wire>, ToManager)>,
}

#[derive(Default)]
struct LinkState {
    manager: Option<ActorRef<Wire>>,
    epoch: u64,
    /// Jobs of the current registration, by slot.
    running: HashMap<u32, AttemptKey>,
    /// The epoch each job not yet returned was assigned in.
    job_epochs: HashMap<AttemptKey, u64>,
    /// Slots whose job has not returned yet (including fenced ones).
    busy: HashSet<u32>,
    /// Jobs cancelled by a fence: unless they succeeded, their outcome is "interrupted".
    fenced: HashSet<AttemptKey>,
    /// Outcomes not yet confirmed durable by the manager (two-phase confirmation).
    held: HashMap<AttemptKey, HeldOutcome>,
    /// Their copies on disk (with `--data`).
    held_store: super::held::HeldStore,
    /// A drain was requested: tell every manager session, leave once idle and confirmed.
    draining: bool,
    notes_window: Option<(Instant, u32)>,
    // --- replication ---
    /// Where replica acks and chunks go: the manager inbox of the session (also while the
    /// manager is recovering, when `manager` is none).
    replica_to: Option<ActorRef<Wire>>,
    /// The highest epoch a manager accepted this process in.
    seen_epoch: u64,
    /// Replication parts that overtook the join answer the same way (bounded).
    early_replication: Vec<ReplicateMsg>,
    /// The replica keeper, if this executor has `--data`.
    replica: Option<ActorRef<ReplicaMsg>>,
    // --- end replication ---
}

impl LinkState {
    /// Nothing runs and no outcome awaits confirmation: a drain may end.
    fn idle(&self) -> bool {
        self.busy.is_empty() && self.held.is_empty()
    }
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a cast to the manager; [`send_casts`] sends it (with whatever else is queued).
    fn send(&self, manager: &ActorRef<Wire>, msg: ToManager) {
        let _ = self.out.send((manager.clone(), msg));
    }

    /// Sends a cast on its own envelope at once (replication: never inside a `Batch`, whose
    /// items the manager accepts only as reports).
    fn send_now(manager: &ActorRef<Wire>, msg: &ToManager) {
        match codec::encode("executor message", msg) {
            Ok(b) => {
                let _ = manager.cast(Wire::Cast(b));
            }
            Err(e) => warn!(error = %e, "message to the manager refused"),
        }
    }
}

/// The most casts coalesced into one envelope.
const MAX_BATCH: usize = 4096;

/// Sends the executor's casts to the manager: each wake-up takes what is queued (after one
/// yield, so that jobs finishing together report together) and sends it as one `Batch`
/// envelope. No timer: an idle executor's report leaves at once, so batching adds no
/// latency to a lone shard.
async fn send_casts(mut rx: mpsc::UnboundedReceiver<(ActorRef<Wire>, ToManager)>) {
    let mut carry = None;
    loop {
        let (to, first) = match carry.take() {
            Some(x) => x,
            None => match rx.recv().await {
                Some(x) => x,
                None => return,
            },
        };
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((m, msg)) if m.get_id() == to.get_id() => batch.push(msg),
                Ok(other) => {
                    carry = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let unwrap = |m| match m {
            ToManager::Batch(items) => items,
            other => vec![other],
        };
        for bytes in codec::encode_batch("executor message", batch, ToManager::Batch, unwrap) {
            match bytes {
                Ok(b) => {
                    let _ = to.cast(Wire::Cast(b));
                }
                Err(e) => warn!(error = %e, "message to the manager refused"),
            }
        }
    }
}

/// The executor's upstream over the network. Reports of any job are sent while a session is
/// up — the manager judges them against the current assignment (fencing) and logs the stale
/// ones.
struct RemoteUpstream(Arc<Link>);

impl Upstream for RemoteUpstream {
    fn report(&self, report: Report) {
        let mut st = self.0.lock();
        let job_epoch = st.job_epochs.get(report.key()).copied().unwrap_or(st.epoch);
        let (key, slot, body) = match report {
            Report::Finished { key, slot, outcome, last_step, .. } => {
                let last_step = last_step.map(|c| LastStep { step: c.step as u32, name: c.name });
                let mut outcome = WireOutcome::from(&outcome);
                if st.fenced.remove(&key) && outcome != WireOutcome::Succeeded {
                    // Cancelled by a fence (a failed checkpoint included): interrupted.
                    outcome = WireOutcome::Cancelled;
                }
                st.job_epochs.remove(&key);
                let held = HeldOutcome {
                    epoch: job_epoch,
                    key: WireAttempt::from(&key),
                    outcome: outcome.clone(),
                    last_step: last_step.clone(),
                };
                st.held_store.put(&held);
                st.held.insert(key.clone(), held);
                (key, slot, ReportBody::Finished { outcome, last_step })
            }
            Report::Abandoned { key, slot, reason, .. } => {
                (key, slot, ReportBody::Abandoned { reason })
            }
            Report::SlotFreed { key, slot, .. } => (key, slot, ReportBody::SlotFreed),
        };
        if !matches!(body, ReportBody::Abandoned { .. }) {
            st.busy.remove(&slot);
            if st.running.get(&slot) == Some(&key) {
                st.running.remove(&slot);
            }
        }
        let manager = st.manager.clone();
        drop(st);
        let Some(manager) = manager else {
            info!(job = %key, "no manager session; the outcome is held for the next join");
            return;
        };
        let msg = ToManager::Report(ReportMsg {
            epoch: job_epoch,
            executor: self.0.name.clone(),
            instance: self.0.instance,
            key: WireAttempt::from(&key),
            slot,
            body,
        });
        self.0.send(&manager, msg);
    }

    fn checkpoint(
        &self,
        key: AttemptKey,
        step: u32,
        name: String,
    ) -> BoxFuture<'static, Result<(), String>> {
        let link = self.0.clone();
        Box::pin(async move {
            let (manager, epoch) = {
                let st = link.lock();
                (st.manager.clone(), st.job_epochs.get(&key).copied().unwrap_or(st.epoch))
            };
            let manager = manager.ok_or("no session with the manager")?;
            let msg = ToManager::Checkpoint(CheckpointMsg {
                epoch,
                executor: link.name.clone(),
                instance: link.instance,
                key: WireAttempt::from(&key),
                step,
                name,
            });
            let bytes = codec::encode("checkpoint", &msg).map_err(|e| e.to_string())?;
            match manager.call(|r| Wire::Call(bytes, r), Some(Duration::from_secs(30))).await {
                Ok(CallResult::Success(b)) => match codec::decode::<Reply>("reply", &b) {
                    Ok(Reply::CheckpointAck { error: None }) => Ok(()),
                    Ok(Reply::CheckpointAck { error: Some(e) }) => Err(e),
                    Ok(other) => Err(format!("unexpected answer to a checkpoint: {other:?}")),
                    Err(e) => Err(e.to_string()),
                },
                _ => Err("the manager did not confirm the checkpoint".into()),
            }
        })
    }

    fn note(&self, notice: Notice) {
        let (manager, epoch) = {
            let mut st = self.0.lock();
            // At most 2,000 notes a second leave this process; the rest are dropped.
            let now = Instant::now();
            let w = st.notes_window.get_or_insert((now, 0));
            if now.duration_since(w.0) > Duration::from_secs(1) {
                *w = (now, 0);
            }
            w.1 += 1;
            if w.1 > 2000 {
                return;
            }
            (st.manager.clone(), st.epoch)
        };
        let Some(manager) = manager else { return };
        let (task, shard, attempt, body) = match notice {
            Notice::Progress { task, shard, attempt, step, done, total } => {
                (task, shard, attempt, ReportBody::Progress { step, done, total })
            }
            Notice::Log { task, shard, attempt, line } => (
                task,
                shard,
                attempt,
                ReportBody::Log {
                    at_ms: line.at.timestamp_millis(),
                    level: match line.level {
                        LogLevel::Debug => "debug",
                        LogLevel::Info => "info",
                        LogLevel::Warn => "warn",
                        LogLevel::Error => "error",
                    }
                    .into(),
                    step: line.step.map(|s| s as u32),
                    message: line.message,
                },
            ),
            _ => return,
        };
        let key = WireAttempt {
            task: task.to_string(),
            shard,
            attempt,
            generation: 0,
            kind: super::messages::WireJobKind::Run,
            dispatch: 0,
        };
        let msg = ToManager::Report(ReportMsg {
            epoch,
            executor: self.0.name.clone(),
            instance: self.0.instance,
            key,
            slot: u32::MAX,
            body,
        });
        self.0.send(&manager, msg);
    }
}

/// The executor's agent: receives the manager's envelopes and routes jobs to the slots.
struct Agent;

struct AgentState {
    link: Arc<Link>,
    executor: ActorRef<ExecutorMsg>,
    rejects: RejectLog,
    replica: Option<ActorRef<ReplicaMsg>>,
}

impl Actor for Agent {
    type Msg = Wire;
    type State = AgentState;
    type Arguments = (Arc<Link>, ActorRef<ExecutorMsg>, Option<ActorRef<ReplicaMsg>>);

    async fn pre_start(
        &self,
        myself: ActorRef<Wire>,
        (link, executor, replica): (Arc<Link>, ActorRef<ExecutorMsg>, Option<ActorRef<ReplicaMsg>>),
    ) -> Result<AgentState, ActorProcessingErr> {
        ractor::pg::join(EXECUTOR_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(AgentState { link, executor, rejects: RejectLog::default(), replica })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Wire>,
        msg: Wire,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        let bytes = match msg {
            Wire::Cast(b) => b,
            Wire::Call(_, reply) => {
                super::manager::send_reply(
                    reply,
                    &Reply::Rejected { reason: "an executor answers no calls".into() },
                );
                return Ok(());
            }
        };
        match codec::decode::<ToExecutor>("manager message", &bytes) {
            Err(e) => {
                state.rejects.reject("manager", &e);
            }
            Ok(ToExecutor::Batch(items)) => {
                for item in items {
                    if let ToExecutor::Batch(_) = item {
                        let detail = "a batch inside a batch".to_owned();
                        let err = codec::WireError::Body { what: "manager message", detail };
                        state.rejects.reject("manager", &err);
                        continue;
                    }
                    state.on_message(item);
                }
            }
            Ok(msg) => state.on_message(msg),
        }
        Ok(())
    }
}

impl AgentState {
    /// Routes one (non-batch) message from the manager.
    fn on_message(&mut self, msg: ToExecutor) {
        match msg {
            ToExecutor::Assign(a) => {
                let assignment = match a.to_assignment() {
                    Ok(x) => x,
                    Err(detail) => {
                        let err = codec::WireError::Body { what: "assignment", detail };
                        self.rejects.reject("manager", &err);
                        return;
                    }
                };
                {
                    // An assignment can overtake the answer to our join (it is sent once the
                    // dispatch is durable; the answer once the join is): accept the current
                    // epoch and newer ones, refuse only an older manager's.
                    let mut st = self.link.lock();
                    if a.epoch < st.epoch {
                        warn!(job = %assignment.key, epoch = a.epoch, current = st.epoch, "assignment of an older epoch refused");
                        return;
                    }
                    st.running.insert(a.slot, assignment.key.clone());
                    st.job_epochs.insert(assignment.key.clone(), a.epoch);
                    st.busy.insert(a.slot);
                }
                let _ = self.executor.cast(ExecutorMsg::Assign(assignment));
            }
            ToExecutor::Stop(s) => {
                let key = AttemptKey::from(&s.key);
                let _ = self.executor.cast(ExecutorMsg::Stop { slot: s.slot, key });
            }
            ToExecutor::Confirm(c) => {
                let mut st = self.link.lock();
                for k in &c.keys {
                    if st.held.remove(&AttemptKey::from(k)).is_some() {
                        st.held_store.remove(k);
                    }
                }
            }
            // --- replication ---
            ToExecutor::Replicate(r) => {
                let current = {
                    let st = self.link.lock();
                    st.manager.is_some() && st.epoch == r.epoch
                };
                match &self.replica {
                    // Only the manager this process is registered with extends the replica.
                    Some(replica) if current => {
                        let _ = replica.cast(ReplicaMsg::Stream(r));
                    }
                    Some(_) => {
                        let mut st = self.link.lock();
                        if r.epoch > st.epoch && st.early_replication.len() < 256 {
                            st.early_replication.push(r);
                        }
                    }
                    None => {
                        let err = codec::WireError::Body {
                            what: "replication",
                            detail: "this executor keeps no replica (no --data)".into(),
                        };
                        self.rejects.reject("manager", &err);
                    }
                }
            }
            ToExecutor::ReplicaPull(p) => match &self.replica {
                Some(replica) => {
                    let _ = replica.cast(ReplicaMsg::Pull(p));
                }
                None => {
                    let err = codec::WireError::Body {
                        what: "replica pull",
                        detail: "this executor keeps no replica (no --data)".into(),
                    };
                    self.rejects.reject("manager", &err);
                }
            },
            // --- end replication ---
            ToExecutor::Batch(_) => {}
        }
    }
}

fn random_instance() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Runs an executor process until it is rejected, the handshake fails, the future is dropped,
/// or — after `drain` completes — it has drained: the manager stopped assigning to it, its
/// in-flight shards finished and their outcomes were confirmed durable, and it left the
/// cluster (no shard is reassigned). Reconnects with backoff after any disconnect.
pub async fn run_executor(
    cfg: ExecutorConfig,
    registry: BehaviorRegistry,
    drain: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ExecutorError> {
    let behaviors: Vec<String> = registry.names().iter().map(|s| s.to_string()).collect();
    let instance = random_instance();
    let (out, casts) = mpsc::unbounded_channel();
    let (held_store, held) =
        super::held::HeldStore::open(cfg.data.as_deref()).map_err(ExecutorError::Startup)?;
    if !held.is_empty() {
        info!(outcomes = held.len(), "outcomes of a previous process are held for the next join");
    }
    let state = LinkState {
        held: held.into_iter().map(|h| (AttemptKey::from(&h.key), h)).collect(),
        held_store,
        ..LinkState::default()
    };
    let link = Arc::new(Link {
        name: cfg.name.clone(),
        instance,
        state: Mutex::new(state),
        replicas: Arc::new(Mutex::new(Vec::new())),
        out,
    });
    let sender = tokio::spawn(send_casts(casts));
    let up: Arc<dyn Upstream> = Arc::new(RemoteUpstream(link.clone()));
    let exec_args = ExecutorArgs {
        index: 0,
        name: cfg.name.clone(),
        slots: cfg.slots.max(1),
        registry: Arc::new(registry),
        up,
        stop_grace: cfg.stop_grace,
    };
    let (executor, _) = Actor::spawn(None, Executor, exec_args)
        .await
        .map_err(|e| ExecutorError::Startup(format!("cannot start the slots: {e}")))?;
    let replica = start_replica(&cfg, &link).await?;
    link.lock().replica = replica.clone();
    let (agent, _) = Actor::spawn(
        Some(agent_name(&cfg.name, instance)),
        Agent,
        (link.clone(), executor.clone(), replica.clone()),
    )
    .await
    .map_err(|e| ExecutorError::Startup(format!("cannot start the agent: {e}")))?;
    let drained = Arc::new(tokio::sync::Notify::new());
    let watcher = tokio::spawn({
        let (link, drained) = (link.clone(), drained.clone());
        async move {
            drain.await;
            link.lock().draining = true;
            drained.notify_one();
        }
    });
    let result = connection_loop(&cfg, &behaviors, &link, &executor, &drained).await;
    watcher.abort();
    agent.stop(None);
    executor.stop(None);
    if let Some(r) = replica {
        r.stop(None);
    }
    sender.abort();
    result
}

/// Starts the replica keeper (`cluster::replica`) when the executor has `--data`.
async fn start_replica(
    cfg: &ExecutorConfig,
    link: &Arc<Link>,
) -> Result<Option<ActorRef<ReplicaMsg>>, ExecutorError> {
    let to = link.clone();
    let send: ToManagerFn = Arc::new(move |msg| {
        let target = to.lock().replica_to.clone();
        match target {
            Some(m) => Link::send_now(&m, &msg),
            None => tracing::debug!("no manager session: a replica message is dropped"),
        }
    });
    super::replica::start(cfg, link.instance, send, link.replicas.clone())
        .await
        .map_err(ExecutorError::Startup)
}

enum SessionEnd {
    Retry(String),
    Left,
}

async fn connection_loop(
    cfg: &ExecutorConfig,
    behaviors: &[String],
    link: &Arc<Link>,
    executor: &ActorRef<ExecutorMsg>,
    drained: &tokio::sync::Notify,
) -> Result<(), ExecutorError> {
    let mut backoff = Duration::from_millis(100);
    let mut handshake_failures = 0;
    for conn in 1u64.. {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let node_name = format!("taskflow-executor:{}:{:016x}:{conn}", cfg.name, link.instance);
        let node = node::start(node_name, cfg.cookie.clone(), cfg.listen, move |e| {
            let _ = tx.send(e);
        })
        .await
        .map_err(ExecutorError::Startup)?;
        let end = session(cfg, behaviors, link, executor, &node, &mut rx, drained).await;
        link.lock().manager = None;
        fence(link, executor, "the session ended");
        {
            let mut st = link.lock();
            st.replica_to = None;
            st.early_replication.clear();
        }
        node.stop(None);
        match end {
            Err(SessionFail::Handshake) => {
                handshake_failures += 1;
                if handshake_failures >= 2 {
                    return Err(ExecutorError::AuthFailed(cfg.manager.clone()));
                }
            }
            Err(SessionFail::Rejected(reason)) => {
                return Err(ExecutorError::Rejected { manager: cfg.manager.clone(), reason });
            }
            Ok(SessionEnd::Left) => {
                cfg.status.emit(Status::Left { executor: cfg.name.clone() });
                return Ok(());
            }
            Ok(SessionEnd::Retry(why)) => {
                handshake_failures = 0;
                if why != "connect" {
                    warn!(manager = %cfg.manager, reason = %why, "session with the manager ended; reconnecting");
                    backoff = Duration::from_millis(100);
                }
            }
        }
        // Draining without a manager: done once nothing runs and nothing awaits confirmation
        // (held outcomes wait for a manager; a second signal exits regardless).
        if drained_offline(cfg, link) {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = drained.notified() => {
                if drained_offline(cfg, link) {
                    return Ok(());
                }
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    Ok(())
}

enum SessionFail {
    Handshake,
    Rejected(String),
}

/// Whether a drain requested while no session is up is complete.
fn drained_offline(cfg: &ExecutorConfig, link: &Link) -> bool {
    let st = link.lock();
    if !st.draining {
        return false;
    }
    if st.idle() {
        cfg.status.emit(Status::DrainedOffline { executor: cfg.name.clone() });
        return true;
    }
    false
}

/// Sends `Drain` (or `Leave`); `Some(ok)` once answered.
async fn drain_call(
    inbox: &ActorRef<Wire>,
    cfg: &ExecutorConfig,
    instance: u64,
    leave: bool,
    timeout: Duration,
) -> Option<bool> {
    let msg = DrainMsg { executor: cfg.name.clone(), instance };
    let msg = if leave { ToManager::Leave(msg) } else { ToManager::Drain(msg) };
    let bytes = codec::encode("drain", &msg).ok()?;
    let timeout = timeout.max(Duration::from_millis(200));
    match inbox.call(|r| Wire::Call(bytes, r), Some(timeout)).await {
        Ok(CallResult::Success(b)) => match codec::decode::<Reply>("drain reply", &b) {
            Ok(Reply::DrainAck { ok }) => Some(ok),
            _ => None,
        },
        _ => None,
    }
}

/// Cancels every job of the current registration; their late reports are judged (and
/// rejected) by the manager.
fn fence(link: &Link, executor: &ActorRef<ExecutorMsg>, why: &str) {
    let jobs: Vec<(u32, AttemptKey)> = {
        let mut st = link.lock();
        let jobs: Vec<(u32, AttemptKey)> = st.running.drain().collect();
        st.fenced.extend(jobs.iter().map(|(_, k)| k.clone()));
        jobs
    };
    if !jobs.is_empty() {
        warn!(jobs = jobs.len(), reason = why, "fencing: cancelling this executor's jobs");
    }
    for (slot, key) in jobs {
        let _ = executor.cast(ExecutorMsg::Stop { slot, key });
    }
}

async fn session(
    cfg: &ExecutorConfig,
    behaviors: &[String],
    link: &Arc<Link>,
    executor: &ActorRef<ExecutorMsg>,
    node: &ActorRef<ractor_cluster::NodeServerMessage>,
    rx: &mut mpsc::UnboundedReceiver<NodeEvent>,
    drained: &tokio::sync::Notify,
) -> Result<SessionEnd, SessionFail> {
    if let Err(e) = node::connect(node, &cfg.manager).await {
        info!(error = %e, "manager not reachable yet");
        return Ok(SessionEnd::Retry("connect".into()));
    }
    // client_connect returns before the handshake: wait until the session is ready.
    let mut authed = false;
    let node_id = loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(NodeEvent::Authenticated)) => authed = true,
            Ok(Some(NodeEvent::Ready { node_id })) => break node_id,
            Ok(Some(NodeEvent::Disconnected { .. })) if !authed => {
                return Err(SessionFail::Handshake);
            }
            Ok(Some(NodeEvent::Disconnected { .. })) => {
                return Ok(SessionEnd::Retry("closed before ready".into()));
            }
            Ok(None) | Err(_) => return Ok(SessionEnd::Retry("handshake timed out".into())),
        }
    };
    let Some(inbox) = node::remote_members(MANAGER_GROUP, Some(MANAGER_INBOX))
        .into_iter()
        .find(|c| c.get_id().node() == node_id)
        .map(ActorRef::<Wire>::from)
    else {
        return Ok(SessionEnd::Retry("the peer has no taskflow manager inbox".into()));
    };
    let mut seq = 0u64;
    loop {
        // Wait for fenced jobs to return before offering the slots again (bounded).
        let deadline = Instant::now() + cfg.stop_grace * 2 + Duration::from_secs(1);
        while !link.lock().busy.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // From here on reports go to this session (the manager judges them after the join).
        let held_outcomes: Vec<HeldOutcome> = {
            let mut st = link.lock();
            st.manager = Some(inbox.clone());
            st.held.values().cloned().collect()
        };
        let join = ToManager::Join(Join {
            executor: cfg.name.clone(),
            instance: link.instance,
            protocol_version: cfg.protocol_version,
            slots: cfg.slots.max(1),
            behaviors: behaviors.to_vec(),
            held_outcomes: held_outcomes.clone(),
            replicas: link.replicas.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            seen_epoch: link.lock().seen_epoch,
            keeps_replica: cfg.data.is_some(),
        });
        let bytes = codec::encode_version(cfg.protocol_version, "join", &join)
            .map_err(|e| SessionFail::Rejected(e.to_string()))?;
        let sent = Instant::now();
        let answer = inbox.call(|r| Wire::Call(bytes, r), Some(Duration::from_secs(10))).await;
        let (epoch, lease, every) = match answer {
            Ok(CallResult::Success(b)) => match codec::decode::<Reply>("join reply", &b) {
                Ok(Reply::JoinAccepted { epoch, lease_ms, heartbeat_ms }) => (
                    epoch,
                    Duration::from_millis(lease_ms),
                    Duration::from_millis(heartbeat_ms.max(10)),
                ),
                Ok(Reply::JoinRejected { reason } | Reply::Rejected { reason }) => {
                    return Err(SessionFail::Rejected(reason));
                }
                // --- replication ---
                Ok(Reply::Recovering { retry_ms }) => {
                    let first = {
                        let mut st = link.lock();
                        // Not a registration: reports stay held until a real join.
                        st.manager = None;
                        st.replica_to.replace(inbox.clone()).is_none()
                    };
                    if first {
                        cfg.status.emit(Status::ManagerRecovering { executor: cfg.name.clone() });
                    }
                    let wait = Duration::from_millis(retry_ms.clamp(10, 10_000));
                    let until = tokio::time::Instant::now() + wait;
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(until) => break,
                            ev = rx.recv() => match ev {
                                Some(NodeEvent::Disconnected { node_id: n, .. }) if n == node_id => {
                                    return Ok(SessionEnd::Retry("the session closed".into()));
                                }
                                None => return Ok(SessionEnd::Retry("node stopped".into())),
                                _ => {}
                            },
                        }
                    }
                    continue;
                }
                // --- end replication ---
                Ok(other) => return Err(SessionFail::Rejected(format!("unexpected {other:?}"))),
                Err(e) => return Err(SessionFail::Rejected(e.to_string())),
            },
            _ => return Ok(SessionEnd::Retry("no answer to join".into())),
        };
        {
            // The manager answered only once the outcomes we re-reported were durable (or
            // judged stale): forget them, unless one was replaced since.
            let mut st = link.lock();
            for h in &held_outcomes {
                let key = AttemptKey::from(&h.key);
                if st.held.get(&key) == Some(h) {
                    st.held.remove(&key);
                    st.held_store.remove(&h.key);
                }
            }
            st.manager = Some(inbox.clone());
            st.epoch = epoch;
            st.replica_to = Some(inbox.clone());
            st.seen_epoch = st.seen_epoch.max(epoch);
            // --- replication: parts that overtook the join answer ---
            let early_replication = std::mem::take(&mut st.early_replication);
            if let Some(replica) = &st.replica {
                for r in early_replication.into_iter().filter(|r| r.epoch == epoch) {
                    let _ = replica.cast(ReplicaMsg::Stream(r));
                }
            }
            // --- end replication ---
        }
        if !held_outcomes.is_empty() {
            info!(outcomes = held_outcomes.len(), "held outcomes re-reported and reconciled");
        }
        cfg.status.emit(Status::Joined {
            executor: cfg.name.clone(),
            manager: cfg.manager.clone(),
            epoch,
            slots: cfg.slots.max(1),
            lease,
        });
        let fence_at = lease.saturating_sub(lease / 5);
        let mut last_acked_sent = sent;
        let mut drain_sent = false;
        let why = loop {
            let draining = link.lock().draining;
            if draining && !drain_sent {
                drain_sent = true;
                match drain_call(&inbox, cfg, link.instance, false, every).await {
                    Some(true) => cfg.status.emit(Status::Draining { executor: cfg.name.clone() }),
                    Some(false) => break "the manager no longer knows this executor".to_owned(),
                    None => drain_sent = false,
                }
            }
            if draining && drain_sent {
                let idle = link.lock().idle();
                if idle && drain_call(&inbox, cfg, link.instance, true, every).await.is_some() {
                    return Ok(SessionEnd::Left);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = drained.notified() => continue,
                ev = rx.recv() => match ev {
                    Some(NodeEvent::Disconnected { node_id: n, .. }) if n == node_id => {
                        return Ok(SessionEnd::Retry("the session closed".into()));
                    }
                    None => return Ok(SessionEnd::Retry("node stopped".into())),
                    _ => continue,
                },
            }
            if last_acked_sent.elapsed() > fence_at {
                break format!("no heartbeat acknowledged for {:?}", last_acked_sent.elapsed());
            }
            seq += 1;
            let running = link.lock().running.values().map(WireAttempt::from).collect();
            let hb = ToManager::Heartbeat(Heartbeat {
                executor: cfg.name.clone(),
                instance: link.instance,
                seq,
                running,
            });
            let Ok(bytes) = codec::encode("heartbeat", &hb) else { continue };
            let sent = Instant::now();
            let answer = inbox
                .call(|r| Wire::Call(bytes, r), Some(every.max(Duration::from_millis(50))))
                .await;
            if let Ok(CallResult::Success(b)) = answer {
                match codec::decode::<Reply>("heartbeat reply", &b) {
                    Ok(Reply::HeartbeatAck { ok: true, .. }) => last_acked_sent = sent,
                    Ok(Reply::HeartbeatAck { ok: false, .. }) => {
                        break "the manager declared this executor lost".to_owned();
                    }
                    _ => {}
                }
            }
        };
        fence(link, executor, &why);
        warn!(reason = %why, "fenced; joining again");
    }
}
