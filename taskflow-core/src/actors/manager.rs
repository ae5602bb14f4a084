//! The manager: the root of the supervision tree and the only writer of day state.
//!
//! ```text
//! Manager (root) ──► Notifier, Clock, TaskActor × active tasks, Executor × N ──► SlotRunner
//! ```
//!
//! Each handler turns its input into events (decide), records them through the journal (which
//! assigns seqs and applies at once), queues the effects in the durability gate, pumps the
//! dispatch queue, and flushes the batch (do). Effects leave when `Durable(seq)` arrives.
//! See [`crate::actors`] for the whole loop and [`crate::runtime`] for the guarantees.

mod day;
mod members;
mod replication;
mod views;

pub(crate) use replication::{META_CLUSTER_ID, META_RECOVERED_FROM};

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info, warn};

use super::clock::{Clock, ClockMsg};
use super::executor::{Executor, ExecutorArgs, ExecutorMsg};
use super::notifier::{Notifier, NotifierArgs, NotifierMsg};
use super::task::{Prepared, TaskMsg};
use super::{Assignment, AttemptKey, LocalUpstream, Report};
use crate::behavior::{BehaviorRegistry, LogLine};
use crate::cluster::ClusterListen;
use crate::cluster::manager::{ClusterIn, RemoteExecutor};
use crate::cluster::wire::Wire;
use crate::flow::Flow;
use crate::graph::TaskIx;
use crate::journal::Journal;
use crate::model::{BusinessDate, TaskId};
use crate::runtime::{
    ActionError, Board, DayOutcome, Notice, RuntimeOptions, RuntimeStats, ShardInfo, Subscription,
    TaskView, Topic,
};
use crate::schedule::DurabilityGate;
use crate::state::{AuditEntry, Command, ShardStatus};

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
    /// A retry backoff elapsed.
    RetryDue {
        /// The task.
        task: TaskIx,
        /// The shard.
        shard: u32,
        /// The failed attempt the timer was set for.
        attempt: u32,
    },
    /// A report from an executor.
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
    /// An executor's replica acknowledged (forwarded to the replicator).
    ReplicaAck(crate::cluster::messages::ReplicaAckMsg),
    /// Time to look for executors whose lease ran out (internal timer).
    Sweep,
    /// The window for executors to re-report the shards they ran before this manager
    /// started is over: what no one vouched for becomes unconfirmed (internal timer).
    ReconcileDue,
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
    /// The shutdown grace is over (internal).
    ShutdownDeadline,
}

impl ractor::Message for ManagerMsg {}

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

/// The manager's view of an executor process.
pub(crate) struct RemoteRt {
    pub(crate) instance: u64,
    pub(crate) last_seen: std::time::Instant,
    pub(crate) lost: bool,
}

/// The manager's cluster bookkeeping.
pub(crate) struct ClusterRt {
    pub(crate) listen: ClusterListen,
    pub(crate) epoch: u64,
    pub(crate) by_name: HashMap<String, usize>,
    pub(crate) late_logged: HashSet<(String, String)>,
    /// Shards that were running on an executor process when this manager started, by the
    /// executor they were dispatched to: reconciled from its re-reported outcomes when it
    /// joins again, unconfirmed when the window ends.
    /// The value is the executor's name and process instance.
    pub(crate) awaiting: HashMap<(TaskIx, u32), (String, u64)>,
    /// Behaviors no joined executor hosts (logged once each).
    pub(crate) unhosted: HashSet<String>,
    pub(crate) inbox: ActorRef<Wire>,
    pub(crate) node: ActorRef<ractor_cluster::NodeServerMessage>,
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

/// An effect held until the events it depends on are durable.
pub(crate) enum Effect {
    Assign {
        executor: usize,
        assignment: Assignment,
    },
    Stop {
        executor: usize,
        slot: u32,
        key: AttemptKey,
    },
    Publish(Notice),
    Reply(Box<dyn FnOnce(u64) + Send>),
    /// Tell a remote executor it may forget an outcome (its settlement is durable).
    Confirm {
        executor: usize,
        key: AttemptKey,
    },
}

/// The manager's view of one executor.
pub(crate) struct ExecRt {
    pub(crate) name: String,
    pub(crate) actor: ExecLink,
    pub(crate) remote: Option<RemoteRt>,
    pub(crate) free: Vec<u32>,
    pub(crate) slots: Vec<SlotRt>,
    /// The behaviors it hosts (`None`: every behavior of the registry, an in-process one).
    pub(crate) behaviors: Option<HashSet<String>>,
    /// Draining: it gets no new jobs.
    pub(crate) draining: bool,
}

impl ExecRt {
    /// Whether it may get new jobs: joined, not lost, not draining.
    pub(crate) fn accepting(&self) -> bool {
        !self.draining && self.remote.as_ref().is_none_or(|r| !r.lost)
    }

    /// Whether it can run `behavior`.
    pub(crate) fn hosts(&self, behavior: &str) -> bool {
        self.behaviors.as_ref().is_none_or(|b| b.contains(behavior))
    }
}

/// The manager's view of one slot.
#[derive(Default)]
pub(crate) struct SlotRt {
    pub(crate) job: Option<AttemptKey>,
    pub(crate) abandoned: bool,
}

/// The manager's runtime bookkeeping of one task (not persisted: rebuilt on recovery).
#[derive(Default)]
pub(crate) struct TaskRt {
    pub(crate) actor: Option<ActorRef<TaskMsg>>,
    pub(crate) spawning: bool,
    pub(crate) prepared: Option<Arc<Prepared>>,
    pub(crate) preparing: bool,
    pub(crate) problem: Option<String>,
    pub(crate) fires_at: Option<DateTime<Utc>>,
    pub(crate) attempts: u64,
    pub(crate) started_ms: Option<i64>,
    pub(crate) finished_ms: Option<i64>,
    /// Shards queued to run (checked lazily: a stale entry is dropped at dispatch).
    pub(crate) runq: VecDeque<u32>,
    /// Shards queued to roll back, newest first.
    pub(crate) rbq: VecDeque<u32>,
    /// Retry timers asked for before the task actor exists: (shard, attempt, backoff).
    pub(crate) retry_stash: Vec<(u32, u32, std::time::Duration)>,
    /// How many of its shards are in `ManagerState::running`.
    pub(crate) running: u32,
}

pub(crate) struct ManagerState {
    pub(crate) flow: Arc<Flow>,
    pub(crate) registry: Arc<BehaviorRegistry>,
    pub(crate) opts: RuntimeOptions,
    pub(crate) date: BusinessDate,
    pub(crate) journal: Option<Journal>,
    pub(crate) myself: ActorRef<ManagerMsg>,
    pub(crate) notifier: ActorRef<NotifierMsg>,
    pub(crate) clock: ActorRef<ClockMsg>,
    pub(crate) executors: Vec<ExecRt>,
    pub(crate) tasks: Vec<TaskRt>,
    pub(crate) topo_pos: Vec<u32>,
    pub(crate) run_tasks: BTreeSet<(u32, TaskIx)>,
    pub(crate) rollback_tasks: BTreeSet<(std::cmp::Reverse<u32>, TaskIx)>,
    /// The job of each shard that occupies a slot (not abandoned ones). Changed only through
    /// `set_running` / `unset_running`, which keep `TaskRt::running` in step.
    pub(crate) running: HashMap<(TaskIx, u32), (usize, u32)>,
    /// The task of each live task actor, for supervision events.
    pub(crate) task_actors: HashMap<ActorId, TaskIx>,
    /// How many tasks have `fires_at` set (changed only through `set_fires_at`).
    pub(crate) timed: usize,
    pub(crate) gate: DurabilityGate<Effect>,
    pub(crate) auto_retry_after_rollback: HashSet<(TaskIx, u32)>,
    pub(crate) notes: HashMap<(TaskIx, u32), String>,
    pub(crate) ignored: HashSet<AttemptKey>,
    pub(crate) to_spawn: Vec<(TaskIx, Vec<TaskIx>)>,
    pub(crate) retry_timers: usize,
    pub(crate) preparing: usize,
    pub(crate) waiters: Vec<RpcReplyPort<DayOutcome>>,
    pub(crate) draining: Option<RpcReplyPort<Result<(), String>>>,
    pub(crate) snapshot_after_flush: bool,
    pub(crate) flow_digest: String,
    pub(crate) local_up: Arc<LocalUpstream>,
    pub(crate) cluster: Option<ClusterRt>,
    /// Replication to executors with `--data` (cluster managers only).
    pub(crate) replicator: Option<ActorRef<replication::ReplicatorMsg>>,
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
        let (clock, _) =
            Actor::spawn_linked(None, Clock, (myself.clone(), Utc::now as fn() -> _), cell.clone())
                .await?;
        let mut executors = Vec::new();
        let local_up = Arc::new(LocalUpstream {
            manager: myself.clone(),
            notifier: notifier.clone(),
            inflight: inflight.clone(),
        });
        let local = if opts.cluster.is_some() { opts.executors } else { opts.executors.max(1) };
        for index in 0..local {
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
            executors.push(ExecRt {
                name,
                actor: ExecLink::Local(actor),
                remote: None,
                free: (0..slots).rev().collect(),
                slots: (0..slots).map(|_| SlotRt::default()).collect(),
                behaviors: None,
                draining: false,
            });
        }
        let mut journal = args.journal;
        let mut replicator = None;
        let cluster = match &opts.cluster {
            None => None,
            Some(listen) => {
                // A new epoch for every manager start, durable before any executor joins.
                let epoch = journal.bump_epoch()?;
                // --- replication ---
                replicator = Some(
                    replication::start(&mut journal, args.date.to_string(), epoch, cell.clone())
                        .await?,
                );
                // --- end replication ---
                let (inbox, node) = crate::cluster::manager::start(listen, myself.clone()).await?;
                let every = (listen.heartbeat / 2).max(std::time::Duration::from_millis(10));
                myself.send_interval(every, || ManagerMsg::Sweep);
                tracing::info!(addr = %listen.addr, epoch, "accepting executors");
                Some(ClusterRt {
                    listen: listen.clone(),
                    epoch,
                    by_name: HashMap::new(),
                    late_logged: HashSet::new(),
                    awaiting: HashMap::new(),
                    unhosted: HashSet::new(),
                    inbox,
                    node,
                })
            }
        };
        // Forward the journal's durable watermark into the mailbox; the watch coalesces, so a
        // burst of group commits becomes one message.
        let mut durable = journal.durable();
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
        let graph = args.flow.graph();
        let mut topo_pos = vec![0; graph.len()];
        for (i, ix) in graph.topo_order().iter().enumerate() {
            topo_pos[ix.get()] = i as u32;
        }
        let flow_digest = day::flow_digest(&args.flow);
        let gate = DurabilityGate::new(journal.durable_seq());
        Ok(ManagerState {
            tasks: (0..graph.len()).map(|_| TaskRt::default()).collect(),
            flow: args.flow,
            registry: args.registry,
            opts,
            date: args.date,
            journal: Some(journal),
            myself,
            notifier,
            clock,
            executors,
            topo_pos,
            run_tasks: BTreeSet::new(),
            rollback_tasks: BTreeSet::new(),
            running: HashMap::new(),
            task_actors: HashMap::new(),
            timed: 0,
            gate,
            auto_retry_after_rollback: HashSet::new(),
            notes: HashMap::new(),
            ignored: HashSet::new(),
            to_spawn: Vec::new(),
            retry_timers: 0,
            preparing: 0,
            waiters: Vec::new(),
            draining: None,
            snapshot_after_flush: false,
            flow_digest,
            local_up,
            cluster,
            replicator,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<ManagerMsg>,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        state.bootstrap();
        state.finish().await
    }

    async fn handle(
        &self,
        myself: ActorRef<ManagerMsg>,
        msg: ManagerMsg,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ManagerMsg::Durable { seq, failure } => {
                if let Some(failure) = failure {
                    // Nothing will become durable again: effects can never be released. Stop
                    // loudly; a restart recovers everything that was acknowledged.
                    error!(%failure, "the journal failed; the manager stops");
                    myself.stop_children(None);
                    myself.stop(Some(failure));
                    return Ok(());
                }
                state.release(seq);
                return Ok(());
            }
            ManagerMsg::Prepared { task, result } => state.on_prepared(task, result),
            ManagerMsg::TriggerFired { task } => {
                state.set_fires_at(task, None);
                state.trigger_check(task);
            }
            ManagerMsg::RetryDue { task, shard, attempt } => {
                state.on_retry_due(task, shard, attempt)
            }
            ManagerMsg::Report(report) => state.on_report(report),
            ManagerMsg::Cluster(input) => {
                let joining = replication::joining(&input);
                state.on_cluster(input);
                state.replication_after_join(joining);
            }
            ManagerMsg::ReplicaAck(ack) => state.on_replica_ack(ack),
            ManagerMsg::Sweep => state.sweep(),
            ManagerMsg::ReconcileDue => state.reconcile_due(),
            ManagerMsg::Checkpoint { key, step, name, reply } => {
                state.on_checkpoint(key, step, name, reply)
            }
            ManagerMsg::Act { cmd, reply } => state.on_act(cmd, reply),
            ManagerMsg::Board(reply) => {
                let board = state.board();
                state.reply_when_durable(move |durable| {
                    let mut board = board;
                    board.durable_seq = durable;
                    let _ = reply.send(board);
                });
            }
            ManagerMsg::Task { id, reply } => {
                let view = state.task_view_by_id(&id);
                state.reply_when_durable(move |_| {
                    let _ = reply.send(view);
                });
            }
            ManagerMsg::Shards { id, status, offset, limit, reply } => {
                let page = state.shard_page(&id, status, offset, limit);
                state.reply_when_durable(move |_| {
                    let _ = reply.send(page);
                });
            }
            ManagerMsg::Audit(reply) => {
                let log = state
                    .journal
                    .as_ref()
                    .map(|j| j.state().audit_log().to_vec())
                    .unwrap_or_default();
                state.reply_when_durable(move |_| {
                    let _ = reply.send(log);
                });
            }
            ManagerMsg::Stats(reply) => {
                let log = state.journal.as_ref().map(|j| j.log_stats()).unwrap_or_default();
                let _ = reply.send(RuntimeStats { log });
            }
            ManagerMsg::Logs { task, shard, reply } => {
                let _ = state.notifier.cast(NotifierMsg::Logs { task, shard, reply });
            }
            ManagerMsg::Subscribe { topics, reply } => {
                let _ = state.notifier.cast(NotifierMsg::Subscribe { topics, reply });
            }
            ManagerMsg::WaitDone(reply) => state.waiters.push(reply),
            ManagerMsg::Shutdown(reply) => {
                info!(date = %state.date, running = state.running.len(), "shutting down");
                state.draining = Some(reply);
                if !state.running.is_empty() {
                    myself.send_after(state.opts.shutdown_grace, || ManagerMsg::ShutdownDeadline);
                }
            }
            ManagerMsg::ShutdownDeadline => {
                warn!(
                    running = state.running.len(),
                    "shutdown grace over; shards still running will be unconfirmed on restart"
                );
                state.clear_running();
            }
        }
        state.finish().await?;
        if state.draining.is_some() && state.running.is_empty() {
            state.close().await;
            myself.stop_children(None);
            myself.stop(None);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ManagerMsg>,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        // The cluster inbox (a globally named actor) and the node server are not children:
        // stop them and wait, so that the listener is closed and a new runtime in this process
        // can accept executors again.
        if let Some(c) = state.cluster.take() {
            let grace = Some(std::time::Duration::from_secs(5));
            let _ = c.inbox.stop_and_wait(None, grace).await;
            let _ = c.node.stop_and_wait(None, grace).await;
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
