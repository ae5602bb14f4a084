//! The manager actor: the root of the supervision tree and a thin loop around the pure core.
//!
//! ```text
//! Manager (root) ──► Notifier, Clock, Replicator, TaskActor × preparing tasks, Executor × N
//!   message ─► Input ─► control::Control::handle ─► Effects ─► day log, executors, replies
//! ```
//!
//! Every message becomes an [`Input`] (with the time: monotonic and wall-clock), the core
//! decides, and the actor carries out the [`Effect`]s in order: appended events go to the day
//! log and are flushed once per message (one group commit), assignments and stops to the
//! executors (one envelope per executor process), notices to the notifier, answers to the
//! reply ports it keeps by request id, timers to `send_after` and the clock. The core holds
//! back every effect that depends on an event until `Durable(seq)` covers it.
//!
//! With `--replica-acks K` (K > 0) what the core released waits once more, in the actor's
//! [`ReplicaGate`], until K executor replicas hold the events durably too — except the
//! cluster's membership answers (joins, heartbeats, drains), which must leave for replicas
//! to exist at all. The core is fed the manager's own fdatasync as before and does not change.

mod replication;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info};

use super::clock::{Clock, ClockMsg};
use super::notifier::{Notifier, NotifierArgs, NotifierMsg};
use super::task::{Prepared, TaskActor, TaskArgs, TaskMsg};
use super::{AttemptKey, LocalUpstream, Report};
use crate::behavior::{BehaviorRegistry, LogLine};
use crate::cluster::manager::{ClusterIn, DayIdentity, Listener, RemoteExecutor};
use crate::cluster::messages::{
    BusySlot, ReplicaPosition, Reply, ReportBody, ReportMsg, WireAttempt,
};
use crate::control::{
    Answer, Busy, ClusterTiming, Control, ControlOptions, Effect, Estimates, Forecast, Held, Input,
    JoinAnswer, JoinIn, KeyDay, Now, RemoteBody, RemoteReport, ReqId, Timer,
};
use crate::executor::{Executor, ExecutorArgs, ExecutorMsg};
use crate::flow::Flow;
use crate::graph::TaskIx;
use crate::journal::{DayLog, Journal};
use crate::model::{BusinessDate, TaskId};
use crate::options::RuntimeOptions;
use crate::state::{AuditEntry, Command, ShardStatus};
use crate::view::{
    ActionError, Board, DayOutcome, Notice, RuntimeStats, ShardInfo, Subscription, TaskView, Topic,
};

/// Messages of the manager.
pub(crate) enum ManagerMsg {
    /// The journal's durable watermark moved (from the forwarding task).
    Durable {
        /// Every event ≤ this seq is durable.
        seq: u64,
        /// Set when the log writer failed: nothing will become durable any more.
        failure: Option<String>,
    },
    /// A task actor computed a registration and split.
    Prepared {
        /// The task.
        task: TaskIx,
        /// The result, or why it could not be computed.
        result: Result<Prepared, String>,
    },
    /// The clock reached a task's `at` instant.
    TriggerFired {
        /// The task.
        task: TaskIx,
    },
    /// A timer the core asked for fired.
    Timer(Timer),
    /// A report from an in-process executor.
    Report(Report),
    /// A running job completed a step other than its last (the last one's checkpoint comes
    /// with [`Report::Finished`]); the reply comes once the checkpoint is durable.
    Checkpoint {
        /// The job.
        key: AttemptKey,
        /// The step index.
        step: u32,
        /// The step name.
        name: String,
        /// Called with `Ok` once durable, or why it was not recorded.
        reply: CheckpointReply,
    },
    /// A decoded message from an executor process, or a session event.
    Cluster(ClusterIn),
    /// K replicas hold every event ≤ this seq durably (`--replica-acks` > 0).
    Replicated(u64),
    /// An operator action.
    Act {
        /// The command.
        cmd: Command,
        /// The audit event's seq once durable, or why it was refused.
        reply: RpcReplyPort<Result<u64, ActionError>>,
    },
    /// The board.
    Board(RpcReplyPort<Board>),
    /// One task's view.
    Task {
        /// The task id.
        id: String,
        /// The view, if the task exists.
        reply: RpcReplyPort<Option<TaskView>>,
    },
    /// A page of a task's shards.
    Shards {
        /// The task id.
        id: String,
        /// Only shards in this status.
        status: Option<ShardStatus>,
        /// Skip this many.
        offset: usize,
        /// At most this many.
        limit: usize,
        /// The page (empty for an unknown or unregistered task).
        reply: RpcReplyPort<Vec<ShardInfo>>,
    },
    /// A shard's kept log lines (answered by the notifier).
    Logs {
        /// The task.
        task: TaskId,
        /// The shard.
        shard: u32,
        /// The lines.
        reply: RpcReplyPort<Vec<LogLine>>,
    },
    /// The day's audit log (durable operator actions), oldest first.
    Audit(RpcReplyPort<Vec<AuditEntry>>),
    /// Counters for metrics: the journal's log writer.
    Stats(RpcReplyPort<RuntimeStats>),
    /// A new subscription (answered by the notifier).
    Subscribe {
        /// The topics.
        topics: Vec<Topic>,
        /// The subscription.
        reply: RpcReplyPort<Subscription>,
    },
    /// Reply when the day is completed or stalled.
    WaitDone(RpcReplyPort<DayOutcome>),
    /// Graceful shutdown.
    Shutdown(RpcReplyPort<Result<(), String>>),
    /// A forecast computed off the manager's thread.
    Forecast(Arc<Forecast>),
    /// The forecast's 500 ms spacing is over: predict again if something changed.
    ForecastDue,
}

impl ractor::Message for ManagerMsg {}

/// At most one forecast per this long.
const FORECAST_EVERY: Duration = Duration::from_millis(500);

/// The forecast's bookkeeping: predicted again on relevant changes (recorded events), at most
/// every [`FORECAST_EVERY`], off the manager's thread, skipped while one runs.
struct Forecasting {
    /// The duration history's estimates (read at start).
    estimates: Arc<Estimates>,
    /// A forecast is running.
    busy: bool,
    /// Something changed since the last forecast started.
    dirty: bool,
    /// When the last one started.
    last: Option<Instant>,
    /// A [`ManagerMsg::ForecastDue`] is on its way.
    due: bool,
    /// The closed day being folded into the duration history.
    history: Option<tokio::task::JoinHandle<()>>,
}

/// The answer to a checkpoint, local or remote.
pub(crate) type CheckpointReply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// How the manager reaches an executor: in this process, or through its network proxy.
pub(crate) enum ExecLink {
    Local(ActorRef<ExecutorMsg>),
    Remote(RemoteExecutor),
}

impl ExecLink {
    /// Sends the messages of one manager turn: a remote executor gets them in one envelope.
    pub(crate) fn send_all(&self, msgs: Vec<ExecutorMsg>) {
        match self {
            ExecLink::Local(a) => {
                for msg in msgs {
                    let _ = a.cast(msg);
                }
            }
            ExecLink::Remote(r) => r.send_all(msgs),
        }
    }
}

/// Arguments of the manager.
pub(crate) struct ManagerArgs {
    pub(crate) flow: Arc<Flow>,
    pub(crate) registry: Arc<BehaviorRegistry>,
    pub(crate) opts: RuntimeOptions,
    pub(crate) date: BusinessDate,
    pub(crate) journal: Journal,
}

pub(crate) struct Manager;

/// A reply port kept until the core answers the request.
enum Pending {
    Act(RpcReplyPort<Result<u64, ActionError>>),
    Board(RpcReplyPort<Board>),
    Task(RpcReplyPort<Option<TaskView>>),
    Shards(RpcReplyPort<Vec<ShardInfo>>),
    Audit(RpcReplyPort<Vec<AuditEntry>>),
    Done(RpcReplyPort<DayOutcome>),
    Checkpoint(CheckpointReply),
    Wire(RpcReplyPort<Vec<u8>>),
    Shutdown(RpcReplyPort<Result<(), String>>),
}

/// A join under way: the link attached if the core accepts it.
struct Joining {
    link: RemoteExecutor,
    name: String,
    instance: u64,
    /// What its replicas hold, if it keeps any (`--data`).
    replicas: Option<Vec<ReplicaPosition>>,
}

pub(crate) struct ManagerState {
    core: Control,
    log: Option<DayLog>,
    flow: Arc<Flow>,
    registry: Arc<BehaviorRegistry>,
    date: BusinessDate,
    myself: ActorRef<ManagerMsg>,
    notifier: ActorRef<NotifierMsg>,
    clock: ActorRef<ClockMsg>,
    /// How each executor index is reached (`None` until a joined executor's link is set).
    links: Vec<Option<ExecLink>>,
    joining: Option<Joining>,
    replies: HashMap<ReqId, Pending>,
    next_req: ReqId,
    /// The live task actors, by task and by actor id (for supervision events).
    task_actors: HashMap<TaskIx, ActorRef<TaskMsg>>,
    actor_tasks: HashMap<ActorId, TaskIx>,
    local_up: Arc<LocalUpstream>,
    /// The listener for executor processes (cluster managers).
    cluster: Option<Listener>,
    /// Replication to executors with `--data` (cluster managers only).
    replicator: Option<ActorRef<replication::ReplicatorMsg>>,
    started: Instant,
    stopping: bool,
    /// The manager's day on the wire (cluster managers).
    day_id: Option<DayIdentity>,
    /// The durable watermark the core was last fed (the manager's own fdatasync).
    core_durable: u64,
    /// `--replica-acks` > 0: released effects waiting for the replicas.
    replica_gate: Option<ReplicaGate>,
    /// The data directory (its duration history).
    data_dir: std::path::PathBuf,
    forecasting: Forecasting,
}

/// How long a closing manager waits for the replicas to acknowledge its last events before it
/// drops the effects still waiting for them (logged).
const CLOSE_REPLICA_WAIT: Duration = Duration::from_secs(5);

/// `--replica-acks K` (K > 0): the effects the core released, each tagged with the manager's
/// own durable watermark when it was released (≥ the seq it depends on, so never released
/// early), held in order until K replicas hold that seq ([`ManagerMsg::Replicated`]).
struct ReplicaGate {
    held: crate::schedule::DurabilityGate<Effect>,
    /// The replicator's watermark, for the bounded wait at close.
    replicated: tokio::sync::watch::Receiver<replication::Replicated>,
}

/// Whether an effect leaves without waiting for replica acknowledgements: the manager's own
/// bookkeeping (the log, timers, task actors) and the membership answers. A replica is
/// streamed to and acknowledges only once its executor's join is answered, so holding
/// `JoinAccepted` would wait for ever; heartbeat and drain answers carry nothing a client
/// sees. Everything a client or an executor acts on waits.
fn bypasses_replicas(e: &Effect) -> bool {
    match e {
        Effect::Assign { .. }
        | Effect::Stop { .. }
        | Effect::Confirm { .. }
        | Effect::Publish(_) => false,
        Effect::Reply { answer, .. } => {
            matches!(answer, Answer::Join(_) | Answer::Heartbeat { .. } | Answer::Drain { .. })
        }
        Effect::Append(_)
        | Effect::Snapshot
        | Effect::Note(_)
        | Effect::Timer { .. }
        | Effect::WakeAt { .. }
        | Effect::Prepare { .. }
        | Effect::Retire { .. }
        | Effect::Link { .. }
        | Effect::Close { .. } => true,
    }
}

impl Actor for Manager {
    type Msg = ManagerMsg;
    type State = ManagerState;
    type Arguments = ManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ManagerMsg>,
        args: ManagerArgs,
    ) -> Result<ManagerState, ActorProcessingErr> {
        let started = Instant::now();
        let opts = args.opts;
        let inflight = Arc::new(AtomicUsize::new(0));
        let notifier_args = NotifierArgs {
            buffer: opts.subscriber_buffer,
            lines_per_shard: opts.log_lines_per_shard,
            lines_total: opts.log_lines_total,
            inflight: inflight.clone(),
        };
        let cell = myself.get_cell();
        let (notifier, _) =
            Actor::spawn_linked(None, Notifier, notifier_args, cell.clone()).await?;
        let (clock, _) = Actor::spawn_linked(
            None,
            Clock,
            (myself.clone(), crate::options::wall::now as fn() -> _),
            cell.clone(),
        )
        .await?;
        let local_up = Arc::new(LocalUpstream {
            manager: myself.clone(),
            notifier: notifier.clone(),
            inflight: inflight.clone(),
        });
        let mut links = Vec::new();
        let mut local = Vec::new();
        let count = if opts.cluster.is_some() { opts.executors } else { opts.executors.max(1) };
        for index in 0..count {
            let name = format!("local-{}", index + 1);
            let slots = opts.slots_per_executor.max(1);
            let exec_args = ExecutorArgs {
                index,
                name: name.clone(),
                slots,
                registry: args.registry.clone(),
                up: local_up.clone(),
                stop_grace: opts.stop_grace,
            };
            let (actor, _) = Actor::spawn_linked(None, Executor, exec_args, cell.clone()).await?;
            links.push(Some(ExecLink::Local(actor)));
            local.push((name, slots));
        }
        let (day, mut log) = args.journal.into_parts();
        let mut replicator = None;
        let mut replica_gate = None;
        let mut timing = None;
        let mut day_id = None;
        let cluster = match &opts.cluster {
            None => None,
            Some(listen) => {
                // A new epoch for every manager start, durable before any executor joins: the
                // data directory's, which never goes backwards across days and recoveries (a
                // recovered or older day store's own epoch is its floor).
                let epoch = crate::store::bump_dir_epoch(&opts.data_dir, log.epoch()?)?;
                log.set_epoch(epoch)?;
                let cluster_id = replication::cluster_id(&log)?;
                day_id = Some(DayIdentity {
                    date: args.date.to_string(),
                    cluster_id: cluster_id.clone(),
                });
                let policy =
                    replication::AckPolicy { acks: opts.replica_acks, quorum: opts.replica_quorum };
                let (rep, replicated) = replication::start(
                    &mut log,
                    args.date.to_string(),
                    epoch,
                    policy,
                    cell.clone(),
                )
                .await?;
                info!("{}", policy.guarantee());
                if policy.acks > 0 {
                    // Forward what K replicas hold into the mailbox (the watch coalesces).
                    let mut rx = replicated.clone();
                    let me = myself.clone();
                    tokio::spawn(async move {
                        loop {
                            let seq = rx.borrow_and_update().seq;
                            if me.cast(ManagerMsg::Replicated(seq)).is_err()
                                || rx.changed().await.is_err()
                            {
                                break;
                            }
                        }
                    });
                    replica_gate = Some(ReplicaGate {
                        held: crate::schedule::DurabilityGate::new(0),
                        replicated,
                    });
                }
                // Replica acks go straight to the replicator (not through this mailbox, so
                // they also arrive while a closing manager waits for them).
                let to_me = myself.clone();
                let to_rep = rep.clone();
                let deliver: crate::cluster::manager::Deliver = Arc::new(move |inbound| {
                    use crate::cluster::manager::Inbound;
                    match inbound {
                        Inbound::Cluster(input) => {
                            let _ = to_me.cast(ManagerMsg::Cluster(input));
                        }
                        Inbound::ReplicaAck(ack) => {
                            let _ = to_rep.cast(replication::ReplicatorMsg::Ack(ack));
                        }
                    }
                });
                replicator = Some(rep);
                let listener = crate::cluster::manager::start(listen, deliver).await?;
                tracing::info!(addr = %listen.addr, epoch, "accepting executors");
                timing = Some(ClusterTiming {
                    epoch,
                    lease_ms: listen.lease.as_millis() as u64,
                    heartbeat_ms: listen.heartbeat.as_millis() as u64,
                    lost_after_ms: (listen.lease + listen.margin()).as_millis() as u64,
                    reconcile_ms: listen.reconcile_window().as_millis() as u64,
                    protocol_version: crate::cluster::codec::PROTOCOL_VERSION,
                    cluster_id,
                });
                Some(listener)
            }
        };
        // Forward the journal's durable watermark into the mailbox; the watch coalesces, so a
        // burst of group commits becomes one message.
        let mut durable = log.durable();
        let me = myself.clone();
        tokio::spawn(async move {
            loop {
                let d = durable.borrow_and_update().clone();
                let failed = d.failure.is_some();
                if me.cast(ManagerMsg::Durable { seq: d.seq, failure: d.failure }).is_err()
                    || failed
                    || durable.changed().await.is_err()
                {
                    break;
                }
            }
        });
        let control_opts = ControlOptions {
            auto_execute_manual: opts.auto_execute_manual,
            unconfirmed_policy: opts.unconfirmed_policy,
            shutdown_grace_ms: opts.shutdown_grace.as_millis() as u64,
            local,
            cluster: timing,
        };
        let durable_seq = log.durable_seq();
        // The duration history of past days, read once (reading never writes); without it
        // every forecast is low-confidence.
        let history = match crate::store::history::read(&opts.data_dir) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(%e, "the duration history cannot be read; forecasting without it");
                crate::store::history::History::default()
            }
        };
        let estimates = Arc::new(Estimates::new(&args.flow, &history));
        let data_dir = opts.data_dir.clone();
        let now = now(started);
        let core = Control::new(args.flow.clone(), args.date, day, durable_seq, control_opts, now);
        Ok(ManagerState {
            core,
            log: Some(log),
            flow: args.flow,
            registry: args.registry,
            date: args.date,
            myself,
            notifier,
            clock,
            links,
            joining: None,
            replies: HashMap::new(),
            next_req: 1,
            task_actors: HashMap::new(),
            actor_tasks: HashMap::new(),
            local_up,
            cluster,
            replicator,
            started,
            stopping: false,
            day_id,
            core_durable: durable_seq,
            replica_gate,
            data_dir,
            forecasting: Forecasting {
                estimates,
                busy: false,
                dirty: true,
                last: None,
                due: false,
                history: None,
            },
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<ManagerMsg>,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        state.feed(Input::Start).await
    }

    async fn handle(
        &self,
        myself: ActorRef<ManagerMsg>,
        msg: ManagerMsg,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        if state.stopping {
            return Ok(());
        }
        let input = match msg {
            ManagerMsg::Durable { seq, failure } => {
                if let Some(failure) = failure {
                    // Nothing will become durable again: effects can never be released. Stop
                    // loudly; a restart recovers everything that was acknowledged.
                    error!(%failure, "the journal failed; the manager stops");
                    state.stopping = true;
                    myself.stop_children(None);
                    myself.stop(Some(failure));
                    return Ok(());
                }
                state.core_durable = state.core_durable.max(seq);
                Input::Durable(seq)
            }
            ManagerMsg::Replicated(seq) => {
                let released = match state.replica_gate.as_mut() {
                    Some(gate) => gate.held.advance(seq),
                    None => return Ok(()),
                };
                if !released.is_empty() {
                    state.carry_out(released).await?;
                }
                return Ok(());
            }
            ManagerMsg::Prepared { task, result } => Input::Prepared { task, result },
            ManagerMsg::TriggerFired { task } => Input::Timer(Timer::Trigger(task)),
            ManagerMsg::Timer(timer) => Input::Timer(timer),
            ManagerMsg::Report(report) => Input::Report(report),
            ManagerMsg::Checkpoint { key, step, name, reply } => {
                let req = state.keep(Pending::Checkpoint(reply));
                Input::Checkpoint { req, key, step, name }
            }
            ManagerMsg::Cluster(input) => match state.cluster_input(input) {
                Some(input) => input,
                None => return Ok(()),
            },
            ManagerMsg::Act { cmd, reply } => {
                Input::Act { req: state.keep(Pending::Act(reply)), cmd }
            }
            ManagerMsg::Board(reply) => Input::Board { req: state.keep(Pending::Board(reply)) },
            ManagerMsg::Task { id, reply } => {
                Input::Task { req: state.keep(Pending::Task(reply)), id }
            }
            ManagerMsg::Shards { id, status, offset, limit, reply } => {
                let req = state.keep(Pending::Shards(reply));
                Input::Shards { req, id, status, offset, limit }
            }
            ManagerMsg::Audit(reply) => Input::Audit { req: state.keep(Pending::Audit(reply)) },
            ManagerMsg::Stats(reply) => {
                let log = state.log.as_ref().map(|j| j.log_stats()).unwrap_or_default();
                let _ = reply.send(RuntimeStats { log });
                return Ok(());
            }
            ManagerMsg::Logs { task, shard, reply } => {
                let _ = state.notifier.cast(NotifierMsg::Logs { task, shard, reply });
                return Ok(());
            }
            ManagerMsg::Subscribe { topics, reply } => {
                let _ = state.notifier.cast(NotifierMsg::Subscribe { topics, reply });
                return Ok(());
            }
            ManagerMsg::WaitDone(reply) => {
                Input::WaitDone { req: state.keep(Pending::Done(reply)) }
            }
            ManagerMsg::Shutdown(reply) => {
                Input::Shutdown { req: state.keep(Pending::Shutdown(reply)) }
            }
            ManagerMsg::Forecast(f) => {
                state.forecasting.busy = false;
                let computed_at_ms = f.day.computed_at_ms;
                state.feed(Input::Forecast(f)).await?;
                let notice = Notice::Forecast { computed_at_ms };
                let _ = state.notifier.cast(NotifierMsg::Publish(vec![notice]));
                state.maybe_forecast();
                return Ok(());
            }
            ManagerMsg::ForecastDue => {
                state.forecasting.due = false;
                state.maybe_forecast();
                return Ok(());
            }
        };
        state.feed(input).await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ManagerMsg>,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        // The cluster inbox (a globally named actor) and the node server are not children:
        // stop them and wait, so that the listener is closed and a new runtime in this process
        // can accept executors again.
        if let Some(listener) = state.cluster.take() {
            listener.stop().await;
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ManagerMsg>,
        evt: SupervisionEvent,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        // Never stop the manager because a child ended (ractor's default would).
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                if state.task_actor_ended(cell.get_id()) {
                    error!(%err, "task actor failed; it is started again when needed");
                } else {
                    error!(actor = ?cell.get_id(), %err, "runtime actor failed");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.task_actor_ended(cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

fn now(started: Instant) -> Now {
    Now {
        mono_ms: started.elapsed().as_millis() as u64,
        wall_ms: crate::options::wall::now().timestamp_millis(),
    }
}

impl ManagerState {
    fn keep(&mut self, pending: Pending) -> ReqId {
        let req = self.next_req;
        self.next_req += 1;
        self.replies.insert(req, pending);
        req
    }

    /// Feeds one input to the core and carries out its effects (through the replica gate).
    async fn feed(&mut self, input: Input) -> Result<(), ActorProcessingErr> {
        let effects = self.core.handle(input, now(self.started));
        let mut changed = false;
        let mut closed = false;
        for e in &effects {
            if let Effect::Append(events) = e {
                changed |= !events.is_empty();
                closed |=
                    events.iter().any(|e| matches!(e.kind, crate::state::EventKind::DayClosed));
            }
        }
        if closed {
            self.fold_into_history();
        }
        let effects = self.through_replica_gate(effects);
        self.carry_out(effects).await?;
        if changed {
            self.forecasting.dirty = true;
            self.maybe_forecast();
        }
        Ok(())
    }

    /// Starts a forecast off the manager's thread if something changed, none is running and
    /// the last one started at least [`FORECAST_EVERY`] ago (else asks to be reminded then).
    fn maybe_forecast(&mut self) {
        let f = &mut self.forecasting;
        if !f.dirty || f.busy || self.stopping {
            return;
        }
        if let Some(last) = f.last {
            let since = last.elapsed();
            if since < FORECAST_EVERY {
                if !f.due {
                    f.due = true;
                    self.myself.send_after(FORECAST_EVERY - since, || ManagerMsg::ForecastDue);
                }
                return;
            }
        }
        f.busy = true;
        f.dirty = false;
        f.last = Some(Instant::now());
        let core = self.core.clone();
        let estimates = f.estimates.clone();
        let at = now(self.started);
        let me = self.myself.clone();
        tokio::task::spawn_blocking(move || {
            let forecast = crate::control::forecast(core, &estimates, at);
            let _ = me.cast(ManagerMsg::Forecast(Arc::new(forecast)));
        });
    }

    /// The day closed: fold its durations into the data directory's history, off the
    /// manager's thread (a shutdown waits for it).
    fn fold_into_history(&mut self) {
        let day = self.core.day().clone();
        let flow = self.flow.clone();
        let dir = self.data_dir.clone();
        self.forecasting.history = Some(tokio::task::spawn_blocking(move || {
            let samples = crate::control::day_samples(&flow, &day);
            match crate::store::history::record_day(&dir, &samples) {
                Ok(true) => info!(date = %samples.date, "day folded into the duration history"),
                Ok(false) => {}
                Err(e) => error!(%e, "the duration history was not updated"),
            }
        }));
    }

    /// With `--replica-acks` > 0: the effects that may leave now, in order; the rest wait in
    /// the gate, tagged with the core's durable watermark (every event they depend on is at
    /// or below it). Without: all of them.
    fn through_replica_gate(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        let Some(gate) = self.replica_gate.as_mut() else { return effects };
        let tag = self.core_durable;
        effects
            .into_iter()
            .filter_map(|e| if bypasses_replicas(&e) { Some(e) } else { gate.held.push(tag, e) })
            .collect()
    }

    /// Turns a decoded cluster message into an input (or answers it at once).
    fn cluster_input(&mut self, input: ClusterIn) -> Option<Input> {
        Some(match input {
            ClusterIn::Join { join, reply } => {
                let epoch = self.core.epoch();
                let day = self.day_id.clone().unwrap_or(DayIdentity {
                    date: self.date.to_string(),
                    cluster_id: String::new(),
                });
                let link = RemoteExecutor::find(&join, epoch, day);
                let agent_found = link.is_some();
                self.joining = link.map(|link| Joining {
                    link,
                    name: join.executor.clone(),
                    instance: join.instance,
                    replicas: join.keeps_replica.then(|| join.replicas.clone()),
                });
                let held = join
                    .held_outcomes
                    .iter()
                    .map(|h| Held {
                        epoch: h.epoch,
                        key: AttemptKey::from(&h.key),
                        outcome: h.outcome.clone().into(),
                        last_step: h.last_step.as_ref().map(|c| (c.step, c.name.clone())),
                        day: key_day(&h.key),
                    })
                    .collect();
                let busy = join.busy_slots.iter().map(busy).collect();
                let req = self.keep(Pending::Wire(reply));
                Input::Join {
                    req,
                    join: JoinIn {
                        executor: join.executor,
                        instance: join.instance,
                        protocol_version: join.protocol_version,
                        slots: join.slots,
                        behaviors: join.behaviors,
                        held,
                        busy,
                        agent_found,
                    },
                }
            }
            ClusterIn::Drain { msg, leave, reply } => {
                let req = self.keep(Pending::Wire(reply));
                Input::Drain { req, executor: msg.executor, instance: msg.instance, leave }
            }
            ClusterIn::Heartbeat { hb, reply } => {
                let req = self.keep(Pending::Wire(reply));
                Input::Heartbeat { req, executor: hb.executor, instance: hb.instance, seq: hb.seq }
            }
            ClusterIn::Checkpoint { cp, reply } => {
                let req = self.keep(Pending::Wire(reply));
                Input::RemoteCheckpoint {
                    req,
                    executor: cp.executor,
                    instance: cp.instance,
                    epoch: cp.epoch,
                    key: AttemptKey::from(&cp.key),
                    step: cp.step,
                    name: cp.name,
                }
            }
            ClusterIn::Report(r) => Input::RemoteReports(vec![remote_report(r)]),
            ClusterIn::Reports(reports) => {
                Input::RemoteReports(reports.into_iter().map(remote_report).collect())
            }
            ClusterIn::SessionClosed { node_id } => {
                if let Some(rep) = &self.replicator {
                    let _ = rep.cast(replication::ReplicatorMsg::Left { node_id });
                }
                let executors: Vec<usize> = self
                    .links
                    .iter()
                    .enumerate()
                    .filter(
                        |(_, l)| matches!(l, Some(ExecLink::Remote(r)) if r.node_id() == node_id),
                    )
                    .map(|(i, _)| i)
                    .collect();
                if executors.is_empty() {
                    return None;
                }
                Input::SessionClosed { executors }
            }
        })
    }

    /// Carries out the core's effects, in order.
    async fn carry_out(&mut self, effects: Vec<Effect>) -> Result<(), ActorProcessingErr> {
        let mut notices = Vec::new();
        let mut confirms: HashMap<usize, Vec<WireAttempt>> = HashMap::new();
        // Messages to executors leave per executor, once per turn (one network envelope per
        // executor process, not one per shard).
        let mut outbox: Vec<Vec<ExecutorMsg>> = Vec::new();
        let mut post = |executor: usize, msg: ExecutorMsg| {
            if outbox.len() <= executor {
                outbox.resize_with(executor + 1, Vec::new);
            }
            outbox[executor].push(msg);
        };
        let mut close = None;
        let mut snapshot = false;
        let mut appended = false;
        for e in effects {
            match e {
                Effect::Append(events) => {
                    if let Some(log) = self.log.as_mut() {
                        log.extend(events);
                        appended = true;
                    }
                }
                Effect::Snapshot => snapshot = true,
                Effect::Assign { executor, assignment } => {
                    post(executor, ExecutorMsg::Assign(assignment))
                }
                Effect::Stop { executor, slot, key } => {
                    post(executor, ExecutorMsg::Stop { slot, key })
                }
                Effect::Confirm { executor, key } => {
                    confirms.entry(executor).or_default().push((&key).into())
                }
                Effect::Publish(n) => notices.push(n),
                Effect::Note(n) => crate::executor::Upstream::note(&*self.local_up, n),
                Effect::Reply { req, answer } => self.answer(req, answer),
                Effect::Timer { at_ms, timer } => {
                    let delay = at_ms.saturating_sub(now(self.started).mono_ms);
                    self.myself
                        .send_after(Duration::from_millis(delay), move || ManagerMsg::Timer(timer));
                }
                Effect::WakeAt { task, at_wall_ms } => {
                    if let Some(at) = chrono::DateTime::from_timestamp_millis(at_wall_ms) {
                        let _ = self.clock.cast(ClockMsg::Schedule { task, at });
                    }
                }
                Effect::Prepare { owner, tasks } => self.prepare(owner, tasks).await,
                Effect::Retire { task } => {
                    if let Some(actor) = self.task_actors.remove(&task) {
                        // Drain, not stop: its mailbox may still hold a successor's `Prepare`,
                        // which a stop would drop (leaving the successor preparing for ever).
                        let _ = actor.drain();
                    }
                }
                Effect::Link { executor } => self.link(executor),
                Effect::Close { req } => close = Some(req),
            }
        }
        if appended && let Some(log) = self.log.as_mut() {
            log.flush()?;
            if snapshot {
                log.request_snapshot();
            }
        }
        for (executor, keys) in confirms {
            if let Some(Some(ExecLink::Remote(r))) = self.links.get(executor) {
                r.confirm(keys);
            }
        }
        for (executor, msgs) in outbox.into_iter().enumerate() {
            if !msgs.is_empty()
                && let Some(Some(link)) = self.links.get(executor)
            {
                link.send_all(msgs);
            }
        }
        if !notices.is_empty() {
            let _ = self.notifier.cast(NotifierMsg::Publish(notices));
        }
        if let Some(req) = close {
            Box::pin(self.close(req)).await;
        }
        Ok(())
    }

    fn answer(&mut self, req: ReqId, answer: Answer) {
        let Some(pending) = self.replies.remove(&req) else { return };
        match (pending, answer) {
            (Pending::Act(p), Answer::Act(a)) => {
                let _ = p.send(a);
            }
            (Pending::Board(p), Answer::Board(b)) => {
                let _ = p.send(b);
            }
            (Pending::Task(p), Answer::Task(t)) => {
                let _ = p.send(t.map(|t| *t));
            }
            (Pending::Shards(p), Answer::Shards(s)) => {
                let _ = p.send(s);
            }
            (Pending::Audit(p), Answer::Audit(a)) => {
                let _ = p.send(a);
            }
            (Pending::Done(p), Answer::Done(d)) => {
                let _ = p.send(d);
            }
            (Pending::Checkpoint(f), Answer::Checkpoint(r)) => f(r),
            (Pending::Wire(p), answer) => {
                let reply = match answer {
                    Answer::Join(JoinAnswer::Accepted { epoch, lease_ms, heartbeat_ms, day }) => {
                        Reply::JoinAccepted {
                            epoch,
                            lease_ms,
                            heartbeat_ms,
                            cluster_id: day.cluster_id,
                            date: day.date,
                        }
                    }
                    Answer::Join(JoinAnswer::Rejected { reason }) => Reply::JoinRejected { reason },
                    Answer::Heartbeat { seq, ok } => Reply::HeartbeatAck { seq, ok },
                    Answer::Checkpoint(r) => Reply::CheckpointAck { error: r.err() },
                    Answer::Drain { ok } => Reply::DrainAck { ok },
                    other => {
                        error!(?other, "a cluster call got an answer of another kind");
                        return;
                    }
                };
                crate::cluster::manager::send_reply(p, &reply);
            }
            (_, other) => error!(?other, "an answer of another kind than its request"),
        }
    }

    /// The core registered the joining executor at `executor`: attach its link and start
    /// replicating to it.
    fn link(&mut self, executor: usize) {
        let Some(j) = self.joining.take() else { return };
        if self.links.len() <= executor {
            self.links.resize_with(executor + 1, || None);
        }
        if let (Some(rep), Some(replicas)) = (&self.replicator, j.replicas) {
            let _ = rep.cast(replication::ReplicatorMsg::Joined {
                name: j.name,
                instance: j.instance,
                agent: j.link.agent.clone(),
                replicas,
            });
        }
        self.links[executor] = Some(ExecLink::Remote(j.link));
    }

    /// Asks `owner`'s task actor (started if needed) to prepare `tasks`.
    async fn prepare(&mut self, owner: TaskIx, tasks: Vec<TaskIx>) {
        if let Some(actor) = self.task_actors.get(&owner) {
            let _ = actor.cast(TaskMsg::Prepare(tasks));
            return;
        }
        let args = TaskArgs {
            flow: self.flow.clone(),
            registry: self.registry.clone(),
            date: self.date,
            manager: self.myself.clone(),
            prepare: tasks.clone(),
        };
        match Actor::spawn_linked(None, TaskActor, args, self.myself.get_cell()).await {
            Ok((actor, _)) => {
                self.actor_tasks.insert(actor.get_id(), owner);
                self.task_actors.insert(owner, actor);
            }
            Err(e) => {
                error!(task = %self.flow.graph().id(owner), %e, "cannot start task actor");
                for task in tasks {
                    let result = Err(format!("cannot start the task actor: {e}"));
                    let _ = self.myself.cast(ManagerMsg::Prepared { task, result });
                }
            }
        }
    }

    /// A task actor stopped or failed: forget it (if it is still its task's actor). Whether
    /// `id` was a task actor.
    fn task_actor_ended(&mut self, id: ActorId) -> bool {
        let Some(ix) = self.actor_tasks.remove(&id) else { return false };
        if self.task_actors.get(&ix).is_some_and(|a| a.get_id() == id) {
            self.task_actors.remove(&ix);
        }
        true
    }

    /// Flushes, closes the log (waiting for durability), releases every held effect, answers
    /// the shutdown and stops.
    async fn close(&mut self, req: ReqId) {
        self.stopping = true;
        if let Some(h) = self.forecasting.history.take() {
            let _ = h.await;
        }
        let last = self.core.day().last_seq();
        if let Some(log) = self.log.take() {
            let closed =
                tokio::task::spawn_blocking(move || log.close(Duration::from_secs(30))).await;
            match closed {
                Ok(Ok(())) => {
                    self.core_durable = self.core_durable.max(last);
                    let effects = self.core.handle(Input::Durable(last), now(self.started));
                    let mut effects = self.through_replica_gate(effects);
                    effects.extend(self.drain_replica_gate(last).await);
                    // Nothing new is recorded by a release; carry out what it frees.
                    let _ = Box::pin(self.carry_out(effects)).await;
                    info!(date = %self.date, seq = last, "journal closed");
                }
                Ok(Err(e)) => error!(%e, "closing the journal failed"),
                Err(e) => error!(%e, "closing the journal panicked"),
            }
        }
        if let Some(Pending::Shutdown(reply)) = self.replies.remove(&req) {
            let _ = reply.send(Ok(()));
        }
        self.myself.stop_children(None);
        self.myself.stop(None);
    }
}

impl ManagerState {
    /// At close: waits (at most [`CLOSE_REPLICA_WAIT`]) until K replicas hold `last`, and
    /// returns what that releases; effects still waiting after it are dropped, loudly (they
    /// never left, so no client saw them).
    async fn drain_replica_gate(&mut self, last: u64) -> Vec<Effect> {
        let Some(gate) = self.replica_gate.as_mut() else { return Vec::new() };
        if gate.held.len() == 0 {
            return Vec::new();
        }
        let waited = tokio::time::timeout(CLOSE_REPLICA_WAIT, async {
            gate.replicated.wait_for(|r| r.seq >= last).await.is_ok()
        })
        .await;
        let seq = gate.replicated.borrow().seq;
        let released = gate.held.advance(seq);
        if !waited.unwrap_or(false) || gate.held.len() > 0 {
            tracing::warn!(
                replicated = seq,
                last,
                dropped = gate.held.len(),
                "closing before the replicas acknowledged the last events: the effects that \
                 waited for them are dropped (no client saw them)"
            );
        }
        released
    }
}

/// The day a wire key carries.
fn key_day(k: &WireAttempt) -> KeyDay {
    KeyDay { date: k.date.clone(), cluster_id: k.cluster_id.clone() }
}

/// A busy slot of a join, as the core sees it.
fn busy(b: &BusySlot) -> Busy {
    Busy {
        slot: b.slot,
        epoch: b.epoch,
        key: AttemptKey::from(&b.key),
        day: key_day(&b.key),
        abandoned: b.abandoned,
    }
}

fn remote_report(r: ReportMsg) -> RemoteReport {
    let key = AttemptKey::from(&r.key);
    let day = key_day(&r.key);
    let body = match r.body {
        ReportBody::Finished { outcome, last_step } => RemoteBody::Finished {
            outcome: outcome.into(),
            last_step: last_step.map(|c| (c.step, c.name)),
        },
        ReportBody::Abandoned { reason, fenced } => RemoteBody::Abandoned { reason, fenced },
        ReportBody::SlotFreed => RemoteBody::SlotFreed,
        ReportBody::Refused { reason, busy: b } => {
            RemoteBody::Refused { reason, busy: b.as_ref().map(busy) }
        }
        ReportBody::Progress { step, done, total } => RemoteBody::Note(Notice::Progress {
            task: key.task.clone(),
            shard: key.shard,
            attempt: key.attempt,
            step,
            done,
            total,
        }),
        ReportBody::Log { at_ms, level, step, message } => RemoteBody::Note(Notice::Log {
            task: key.task.clone(),
            shard: key.shard,
            attempt: key.attempt,
            line: LogLine {
                at: chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default(),
                level: match level.as_str() {
                    "debug" => crate::behavior::LogLevel::Debug,
                    "warn" => crate::behavior::LogLevel::Warn,
                    "error" => crate::behavior::LogLevel::Error,
                    _ => crate::behavior::LogLevel::Info,
                },
                step: step.map(|s| s as usize),
                message,
            },
        }),
    };
    RemoteReport {
        executor: r.executor,
        instance: r.instance,
        epoch: r.epoch,
        slot: r.slot,
        key,
        day,
        body,
    }
}
