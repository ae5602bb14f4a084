//! An executor process: joins a manager over ractor_cluster, runs the shards it is assigned on
//! its slots, heartbeats, fences itself when the manager is out of reach, and reconnects with
//! backoff after any disconnect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::codec::{self, RejectLog};
use super::manager::{EXECUTOR_GROUP, MANAGER_GROUP, MANAGER_INBOX, agent_name};
use super::messages::{
    AssignMsg, BusySlot, CheckpointMsg, DrainMsg, Heartbeat, HeldOutcome, Join, LastStep, Reply,
    ReportBody, ReportMsg, ToExecutor, ToManager, WireAttempt, WireOutcome,
};
use super::messages::{ReplicaPosition, ReplicateMsg};
use super::node::{self, NodeEvent};
use super::replica::{ReplicaMsg, ToManagerFn};
use super::status::Status;
use super::tls::ConnectFail;
use super::wire::Wire;
use crate::behavior::{BehaviorRegistry, BoxFuture, LogLevel};
use crate::executor::{Executor, ExecutorArgs, ExecutorMsg, Upstream};
use crate::job::{AttemptKey, Report};
use crate::view::Notice;

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
    /// Replicas of at most this many business dates are kept (the newest; `--retain-days`,
    /// default 30 like `[flow] retain_days`): a replica of a new date removes the older ones.
    pub retain_days: u32,
    /// Where the process's milestones go (joined, draining, left …); default: nowhere.
    pub status: super::StatusSink,
    /// TLS to the manager (`--tls-ca`, optionally `--tls-cert`/`--tls-key`); none: plain TCP.
    pub tls: Option<super::ClientTls>,
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
            retain_days: crate::model::DEFAULT_RETAIN_DAYS,
            status: super::StatusSink::default(),
            tls: None,
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
    /// The TLS layer refused the connection (a certificate refused either way, TLS expected
    /// but not spoken): definitive, not retried.
    #[error("TLS: {0}")]
    Tls(String),
}

struct Link {
    name: String,
    instance: u64,
    /// The slots of this process (an assignment to another is answered as failed).
    slots: u32,
    state: Mutex<LinkState>,
    /// Bumped whenever the registration changes (a fence, an accepted join): a checkpoint
    /// waiting for an answer looks again.
    changes: watch::Sender<u64>,
    /// The replicas this process keeps, for `Join` (kept current by the replica keeper).
    replicas: Arc<Mutex<Vec<ReplicaPosition>>>,
    /// Casts to the manager (reports, notes), sent by [`send_casts`] in batches.
    out: mpsc::UnboundedSender<(ActorRef<Wire>, ToManager)>,
}

/// A job a slot has not returned yet.
struct Job {
    /// The job, as the slots know it.
    key: AttemptKey,
    /// Its key as the manager sent it: with the manager's business date and cluster id.
    wire: WireAttempt,
    /// The epoch it was assigned in: its reports and checkpoints carry it.
    epoch: u64,
    /// Cancelled by a fence: it sends no more checkpoints, and its outcome is "interrupted"
    /// unless it had succeeded.
    fenced: bool,
    /// Its slot runner gave up waiting for it (a stop or timeout was forced): it ends with
    /// `SlotFreed`, and its outcome is not used.
    abandoned: bool,
    /// A completed step whose checkpoint the manager did not answer: the next step waits for
    /// it; if the job is fenced meanwhile, it rides with the job's interrupted outcome.
    held_checkpoint: Option<LastStep>,
}

#[derive(Default)]
struct LinkState {
    manager: Option<ActorRef<Wire>>,
    epoch: u64,
    /// The business date and cluster id of the registration (from `JoinAccepted`).
    date: String,
    cluster_id: String,
    /// The registration's lease: an unanswered checkpoint is sent again after it.
    lease: Duration,
    /// Jobs not returned yet, by slot: those of the current registration, and fenced or
    /// abandoned ones still occupying their slot.
    jobs: HashMap<u32, Job>,
    /// Outcomes not yet confirmed durable by the manager (two-phase confirmation).
    held: HashMap<WireAttempt, HeldOutcome>,
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
        self.jobs.is_empty() && self.held.is_empty()
    }

    /// The job `key` (the one not fenced, if a fenced job of the same key still runs).
    fn job_mut(&mut self, key: &AttemptKey) -> Option<&mut Job> {
        let mut found = None;
        for job in self.jobs.values_mut().filter(|j| &j.key == key) {
            if !job.fenced {
                return Some(job);
            }
            found = Some(job);
        }
        found
    }

    /// The slots whose job has not returned, for `Join`.
    fn busy_slots(&self) -> Vec<BusySlot> {
        let mut busy: Vec<BusySlot> = self
            .jobs
            .iter()
            .map(|(&slot, j)| BusySlot {
                slot,
                epoch: j.epoch,
                key: j.wire.clone(),
                abandoned: j.abandoned,
            })
            .collect();
        busy.sort_by_key(|b| b.slot);
        busy
    }

    /// Keeps an outcome until the manager confirms it (in memory and, with `--data`, on disk).
    fn hold(&mut self, held: HeldOutcome) {
        self.held_store.put(&held);
        self.held.insert(held.key.clone(), held);
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

    /// A report about the job of assignment `a` that never reached a slot.
    fn report_unrun(&self, a: &AssignMsg, body: ReportBody) {
        let manager = self.lock().manager.clone();
        let Some(manager) = manager else {
            warn!(job = ?a.key, "no manager session: the answer to an assignment cannot be sent");
            return;
        };
        let msg = ToManager::Report(ReportMsg {
            epoch: a.epoch,
            executor: self.name.clone(),
            instance: self.instance,
            key: a.key.clone(),
            slot: a.slot,
            body,
        });
        self.send(&manager, msg);
    }

    /// Answers an assignment that was not run and need not be sent again (its epoch is older
    /// than the registration, or its slot is still busy): the manager requeues the shard.
    fn refuse(&self, a: &AssignMsg, reason: String, busy: Option<BusySlot>) {
        warn!(job = ?a.key, slot = a.slot, %reason, "assignment refused; the manager requeues it");
        self.report_unrun(a, ReportBody::Refused { reason, busy });
    }

    /// Answers an assignment that cannot run here as it is (malformed, no such slot) with a
    /// failure, held until confirmed like any outcome: sent again, it would fail again.
    fn fail_unrun(&self, a: &AssignMsg, reason: String) {
        warn!(job = ?a.key, slot = a.slot, %reason, "assignment cannot run; reported as failed");
        let outcome = WireOutcome::Failed { reason };
        self.lock().hold(HeldOutcome {
            epoch: a.epoch,
            key: a.key.clone(),
            outcome: outcome.clone(),
            last_step: None,
        });
        self.report_unrun(a, ReportBody::Finished { outcome, last_step: None });
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
        let (key, slot) = match &report {
            Report::Finished { key, slot, .. }
            | Report::Abandoned { key, slot, .. }
            | Report::SlotFreed { key, slot, .. } => (key.clone(), *slot),
        };
        let mut st = self.0.lock();
        let known = st.jobs.get(&slot).is_some_and(|j| j.key == key);
        let (wire, epoch, body) = match report {
            Report::Finished { outcome, last_step, .. } => {
                let mut outcome = WireOutcome::from(&outcome);
                let mut last_step =
                    last_step.map(|c| LastStep { step: c.step as u32, name: c.name });
                let (wire, epoch) = match known.then(|| st.jobs.remove(&slot)).flatten() {
                    Some(job) => {
                        if job.fenced && outcome != WireOutcome::Succeeded {
                            // Cancelled by a fence (an unanswered checkpoint included):
                            // interrupted, and a checkpoint the manager never answered rides
                            // with it, so the shard resumes after that step.
                            outcome = WireOutcome::Cancelled;
                            last_step = last_step.or(job.held_checkpoint);
                        }
                        (job.wire, job.epoch)
                    }
                    // Not a job the agent handed over (the slot runner's own refusal of a busy
                    // slot): still answered, under the registration's day and epoch.
                    None => (WireAttempt::stamped(&key, &st.date, &st.cluster_id), st.epoch),
                };
                st.hold(HeldOutcome {
                    epoch,
                    key: wire.clone(),
                    outcome: outcome.clone(),
                    last_step: last_step.clone(),
                });
                (wire, epoch, ReportBody::Finished { outcome, last_step })
            }
            Report::Abandoned { reason, .. } => {
                let (wire, epoch, fenced) = match st.jobs.get_mut(&slot).filter(|_| known) {
                    Some(job) => {
                        job.abandoned = true;
                        (job.wire.clone(), job.epoch, job.fenced)
                    }
                    None => (WireAttempt::stamped(&key, &st.date, &st.cluster_id), st.epoch, false),
                };
                (wire, epoch, ReportBody::Abandoned { reason, fenced })
            }
            Report::SlotFreed { .. } => match known.then(|| st.jobs.remove(&slot)).flatten() {
                Some(job) => {
                    if job.held_checkpoint.is_some() {
                        // Its outcome is not used: neither is its unanswered checkpoint.
                        st.held_store.remove(&job.wire);
                    }
                    (job.wire, job.epoch, ReportBody::SlotFreed)
                }
                None => {
                    let wire = WireAttempt::stamped(&key, &st.date, &st.cluster_id);
                    (wire, st.epoch, ReportBody::SlotFreed)
                }
            },
        };
        let manager = st.manager.clone();
        drop(st);
        let Some(manager) = manager else {
            info!(job = %key, "no manager session; the outcome is held for the next join");
            return;
        };
        let msg = ToManager::Report(ReportMsg {
            epoch,
            executor: self.0.name.clone(),
            instance: self.0.instance,
            key: wire,
            slot,
            body,
        });
        self.0.send(&manager, msg);
    }

    /// Resolves once the manager answered: `Ok` when the checkpoint is durable, the reason
    /// when it refused it (a newer attempt owns the shard: the job then fails, fenced). An
    /// unanswered checkpoint (no session, no answer in time) is not a failure: it is held
    /// (in `DIR/held/` with `--data`, as "interrupted after this step") and sent again after
    /// the lease or as soon as the registration changes, while the next step waits. If the
    /// executor fences the job meanwhile, this resolves with an error and the checkpoint
    /// rides with the job's interrupted outcome, delivered in the next `Join`.
    fn checkpoint(
        &self,
        key: AttemptKey,
        step: u32,
        name: String,
    ) -> BoxFuture<'static, Result<(), String>> {
        let link = self.0.clone();
        Box::pin(async move {
            let mut changes = link.changes.subscribe();
            loop {
                changes.borrow_and_update();
                let (manager, msg, wait) = {
                    let mut st = link.lock();
                    let wait = st.lease.max(Duration::from_secs(1));
                    let manager = st.manager.clone();
                    let Some(job) = st.job_mut(&key) else {
                        return Err("the job is no longer on this executor".to_owned());
                    };
                    if job.fenced {
                        return Err(match job.held_checkpoint {
                            Some(_) => format!(
                                "step {step}'s checkpoint is held: this executor fenced itself \
                                 before the manager answered it"
                            ),
                            None => "this executor fenced itself".to_owned(),
                        });
                    }
                    let msg = ToManager::Checkpoint(CheckpointMsg {
                        epoch: job.epoch,
                        executor: link.name.clone(),
                        instance: link.instance,
                        key: job.wire.clone(),
                        step,
                        name: name.clone(),
                    });
                    (manager, msg, wait)
                };
                let answer = match manager {
                    // A fence meanwhile ends the wait: the job must not go on to its next step.
                    Some(manager) => tokio::select! {
                        answer = checkpoint_call(&manager, &msg, wait) => answer,
                        _ = changes.changed() => None,
                    },
                    None => None,
                };
                let done = {
                    let mut st = link.lock();
                    let held_store = st.held_store.clone();
                    match (st.job_mut(&key), answer) {
                        (None, _) => Some(Err("the job is no longer on this executor".to_owned())),
                        (Some(job), Some(result)) => {
                            if job.held_checkpoint.take().is_some() {
                                held_store.remove(&job.wire);
                            }
                            Some(match result {
                                Ok(()) if job.fenced => {
                                    Err("this executor fenced itself".to_owned())
                                }
                                other => other,
                            })
                        }
                        (Some(job), None) => {
                            if job.held_checkpoint.as_ref().is_none_or(|c| c.step != step) {
                                info!(job = %key, step, "the manager did not answer a checkpoint; it is held and sent again");
                                let last_step = LastStep { step, name: name.clone() };
                                held_store.put(&HeldOutcome {
                                    epoch: job.epoch,
                                    key: job.wire.clone(),
                                    outcome: WireOutcome::Cancelled,
                                    last_step: Some(last_step.clone()),
                                });
                                job.held_checkpoint = Some(last_step);
                            }
                            job.fenced.then(|| {
                                Err(format!(
                                    "step {step}'s checkpoint is held: this executor fenced \
                                     itself before the manager answered it"
                                ))
                            })
                        }
                    }
                };
                if let Some(result) = done {
                    return result;
                }
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
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
        let (key, epoch) = {
            let st = self.0.lock();
            let job = st
                .jobs
                .values()
                .find(|j| j.key.task == task && j.key.shard == shard && j.key.attempt == attempt);
            match job {
                Some(j) => (j.wire.clone(), j.epoch),
                None => {
                    let key = AttemptKey {
                        task: task.clone(),
                        shard,
                        attempt,
                        generation: 0,
                        kind: crate::job::JobKind::Run,
                        dispatch: 0,
                    };
                    (WireAttempt::stamped(&key, &st.date, &st.cluster_id), epoch)
                }
            }
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

/// One checkpoint call: `Some` with the manager's answer (accepted, or refused with the
/// reason), `None` if it did not answer within `wait` (or the session is gone).
async fn checkpoint_call(
    manager: &ActorRef<Wire>,
    msg: &ToManager,
    wait: Duration,
) -> Option<Result<(), String>> {
    let bytes = match codec::encode("checkpoint", msg) {
        Ok(b) => b,
        Err(e) => return Some(Err(e.to_string())),
    };
    match manager.call(|r| Wire::Call(bytes, r), Some(wait)).await {
        Ok(CallResult::Success(b)) => Some(match codec::decode::<Reply>("reply", &b) {
            Ok(Reply::CheckpointAck { error: None }) => Ok(()),
            Ok(Reply::CheckpointAck { error: Some(e) }) => Err(e),
            Ok(Reply::Rejected { reason }) => Err(reason),
            Ok(other) => Err(format!("unexpected answer to a checkpoint: {other:?}")),
            Err(e) => Err(e.to_string()),
        }),
        _ => None,
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
    /// Starts an assignment on its slot, or answers why not: an assignment is never dropped
    /// without a word to the manager.
    fn on_assign(&mut self, a: AssignMsg) {
        let assignment = match a.to_assignment() {
            Ok(x) => x,
            Err(detail) => {
                let err = codec::WireError::Body { what: "assignment", detail: detail.clone() };
                self.rejects.reject("manager", &err);
                self.link.fail_unrun(&a, format!("malformed assignment: {detail}"));
                return;
            }
        };
        let mut st = self.link.lock();
        // An assignment can overtake the answer to our join (it is sent once the dispatch is
        // durable; the answer once the join is): accept the current epoch and newer ones.
        if a.epoch < st.epoch {
            let reason = format!(
                "an assignment of epoch {} is older than this executor's registration (epoch {})",
                a.epoch, st.epoch
            );
            drop(st);
            self.link.refuse(&a, reason, None);
            return;
        }
        if a.slot >= self.link.slots {
            drop(st);
            let reason = format!(
                "slot {} does not exist: this executor has {} slots",
                a.slot, self.link.slots
            );
            self.link.fail_unrun(&a, reason);
            return;
        }
        if let Some(job) = st.jobs.get(&a.slot) {
            let busy = BusySlot {
                slot: a.slot,
                epoch: job.epoch,
                key: job.wire.clone(),
                abandoned: job.abandoned,
            };
            let reason =
                format!("slot {} is still busy with {} (not returned yet)", a.slot, job.key);
            drop(st);
            self.link.refuse(&a, reason, Some(busy));
            return;
        }
        st.jobs.insert(
            a.slot,
            Job {
                key: assignment.key.clone(),
                wire: a.key.clone(),
                epoch: a.epoch,
                fenced: false,
                abandoned: false,
                held_checkpoint: None,
            },
        );
        drop(st);
        let _ = self.executor.cast(ExecutorMsg::Assign(assignment));
    }

    /// Routes one (non-batch) message from the manager.
    fn on_message(&mut self, msg: ToExecutor) {
        match msg {
            ToExecutor::Assign(a) => self.on_assign(a),
            ToExecutor::Stop(s) => {
                let key = AttemptKey::from(&s.key);
                let _ = self.executor.cast(ExecutorMsg::Stop { slot: s.slot, key });
            }
            ToExecutor::Confirm(c) => {
                let mut st = self.link.lock();
                for k in &c.keys {
                    if st.held.remove(k).is_some() {
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
        held: held.into_iter().map(|h| (h.key.clone(), h)).collect(),
        held_store,
        ..LinkState::default()
    };
    let link = Arc::new(Link {
        name: cfg.name.clone(),
        instance,
        slots: cfg.slots.max(1),
        state: Mutex::new(state),
        changes: watch::Sender::new(0),
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
            Err(SessionFail::Tls(reason)) => return Err(ExecutorError::Tls(reason)),
            Err(SessionFail::TlsHandshake(reason)) => {
                handshake_failures += 1;
                if handshake_failures >= 2 {
                    return Err(ExecutorError::Tls(reason));
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
    /// A definitive TLS refusal.
    Tls(String),
    /// The connection closed during the TLS handshake (twice: given up).
    TlsHandshake(String),
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
    // The caller bounds it by the fence deadline (a zero timeout would mean none).
    let timeout = timeout.max(Duration::from_millis(1));
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
        st.jobs
            .iter_mut()
            .filter(|(_, j)| !j.fenced)
            .map(|(&slot, j)| {
                j.fenced = true;
                (slot, j.key.clone())
            })
            .collect()
    };
    // A checkpoint waiting for an answer gives up now: no step of a fenced job starts.
    link.changes.send_modify(|n| *n += 1);
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
    let probe = match node::connect_tls(node, &cfg.manager, cfg.tls.as_ref()).await {
        Ok(probe) => probe,
        Err(ConnectFail::Unreachable(e)) => {
            info!(error = %e, "manager not reachable yet");
            return Ok(SessionEnd::Retry("connect".into()));
        }
        Err(ConnectFail::Refused(reason)) => return Err(SessionFail::Tls(reason)),
        Err(ConnectFail::Handshake(reason)) => return Err(SessionFail::TlsHandshake(reason)),
    };
    // client_connect returns before the handshake: wait until the session is ready.
    let mut authed = false;
    let node_id = loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(NodeEvent::Authenticated)) => authed = true,
            Ok(Some(NodeEvent::Ready { node_id })) => break node_id,
            Ok(Some(NodeEvent::Disconnected { .. })) if !authed => {
                // A TLS refusal (seen by the probe) closes the session before the cookie
                // handshake too: say which it was.
                return Err(match probe.refusal() {
                    Some(reason) => SessionFail::Tls(reason),
                    None => SessionFail::Handshake,
                });
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
        while !link.lock().jobs.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // From here on reports go to this session (the manager judges them after the join).
        let (held_outcomes, busy_slots) = {
            let mut st = link.lock();
            st.manager = Some(inbox.clone());
            (st.held.values().cloned().collect::<Vec<HeldOutcome>>(), st.busy_slots())
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
            busy_slots,
        });
        let bytes = codec::encode_version(cfg.protocol_version, "join", &join)
            .map_err(|e| SessionFail::Rejected(e.to_string()))?;
        let sent = Instant::now();
        let answer = inbox.call(|r| Wire::Call(bytes, r), Some(Duration::from_secs(10))).await;
        let (epoch, lease, heartbeat, day) = match answer {
            Ok(CallResult::Success(b)) => match codec::decode::<Reply>("join reply", &b) {
                Ok(Reply::JoinAccepted { epoch, lease_ms, heartbeat_ms, cluster_id, date }) => (
                    epoch,
                    Duration::from_millis(lease_ms),
                    Duration::from_millis(heartbeat_ms),
                    (date, cluster_id),
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
        if let Err(e) = super::manager::check_timing(lease, heartbeat) {
            return Err(SessionFail::Rejected(format!(
                "its lease and heartbeat break the fencing bound: {e}"
            )));
        }
        {
            // The manager answered only once the outcomes we re-reported were durable (or
            // judged stale): forget them, unless one was replaced since.
            let mut st = link.lock();
            for h in &held_outcomes {
                if st.held.get(&h.key) == Some(h) {
                    st.held.remove(&h.key);
                    st.held_store.remove(&h.key);
                }
            }
            st.manager = Some(inbox.clone());
            st.epoch = epoch;
            (st.date, st.cluster_id) = day;
            st.lease = lease;
            link.changes.send_modify(|n| *n += 1);
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
            // Every wait and call below ends by the fence deadline: lease − lease/5 after the
            // send of the last heartbeat (or join) the manager acknowledged, whatever the
            // heartbeat interval (the fencing bound, proto-docs/cluster.md). `every` bounds
            // the drain calls: 200 ms for a busy manager's answer, never past the deadline.
            let deadline = tokio::time::Instant::from_std(last_acked_sent + fence_at);
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let every = heartbeat.max(Duration::from_millis(200)).min(remaining);
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
                _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + heartbeat)) => {}
                _ = drained.notified() => continue,
                ev = rx.recv() => match ev {
                    Some(NodeEvent::Disconnected { node_id: n, .. }) if n == node_id => {
                        return Ok(SessionEnd::Retry("the session closed".into()));
                    }
                    None => return Ok(SessionEnd::Retry("node stopped".into())),
                    _ => continue,
                },
            }
            if tokio::time::Instant::now() >= deadline {
                break format!("no heartbeat acknowledged for {:?}", last_acked_sent.elapsed());
            }
            seq += 1;
            let running =
                link.lock().jobs.values().filter(|j| !j.fenced).map(|j| j.wire.clone()).collect();
            let hb = ToManager::Heartbeat(Heartbeat {
                executor: cfg.name.clone(),
                instance: link.instance,
                seq,
                running,
            });
            let Ok(bytes) = codec::encode("heartbeat", &hb) else { continue };
            let sent = Instant::now();
            let call = inbox
                .call(|r| Wire::Call(bytes, r), Some(heartbeat.max(Duration::from_millis(50))));
            let Ok(answer) = tokio::time::timeout_at(deadline, call).await else {
                break format!("no heartbeat acknowledged for {:?}", last_acked_sent.elapsed());
            };
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
