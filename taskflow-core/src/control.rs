//! The manager's decisions as a pure state machine: data in, effects as data out.
//!
//! ```text
//!   Input (report, join, heartbeat, operator command, timer, durable watermark, …) + Now
//!     │
//!     ▼  Control::handle            (no runtime, no I/O, no clock of its own)
//!   DayState::apply ─► worklist of reactions (registration, triggers, queues, retries)
//!     │                  ─► dispatch pump
//!     ▼
//!   Effects: Append(events) first, then what the durable watermark released
//!            (assign / stop / confirm to executor N, publish, reply to request R, timers,
//!            prepare task X, retire task X, link executor N, close)
//! ```
//!
//! The actor (`actors/manager.rs`) is a thin loop around this: it turns messages into
//! [`Input`]s, hands [`Effect::Append`] to the day log and flushes it, and carries out the rest.
//! The simulator (`testing::sim`) drives the very same core with simulated time, disk,
//! network and executors.
//!
//! **Invariants** (checked by [`Control::check`], which the simulator runs after every input):
//! - an effect that depends on an event leaves only once the event is durable (the core holds
//!   it in its [`DurabilityGate`] until [`Input::Durable`] covers its seq);
//! - follow-up events go through a FIFO worklist, never recursion; nothing iterates a hash
//!   map to decide: a seed replays exactly;
//! - every runtime counter (running shards per task, free slots, timed tasks, preparing tasks)
//!   equals its recount.

mod books;
mod dispatch;
mod estimate;
mod forecast;
mod members;
mod operator;
mod record;
mod recovery;
mod reports;
mod views;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::flow::Flow;
use crate::graph::TaskIx;
use crate::job::{Assignment, AttemptKey, Report};
use crate::model::BusinessDate;
use crate::schedule::DurabilityGate;
use crate::schedule::Prepared;
use crate::state::{AuditEntry, Command, DayEvent, DayState, ShardStatus, UnconfirmedPolicy};
use crate::view::{ActionError, Board, DayOutcome, Notice, ShardInfo, TaskView};

pub(crate) use books::Books;
pub(crate) use estimate::{Estimates, day_samples};
pub(crate) use forecast::{Forecast, forecast};
use record::Reaction;

/// The time, passed in with every input: the core has no clock of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Now {
    /// Monotonic milliseconds (timers, leases).
    pub(crate) mono_ms: u64,
    /// Wall-clock milliseconds since the Unix epoch (event stamps, `at` triggers).
    pub(crate) wall_ms: i64,
}

/// Names a request whose answer the caller keeps a reply port for.
pub(crate) type ReqId = u64;

/// What the core needs to know of the options.
#[derive(Debug, Clone)]
pub(crate) struct ControlOptions {
    /// Ready manual tasks without an operator's execute.
    pub(crate) auto_execute_manual: bool,
    /// What happens to shards found running after a crash.
    pub(crate) unconfirmed_policy: UnconfirmedPolicy,
    /// How long a graceful shutdown waits for running shards.
    pub(crate) shutdown_grace_ms: u64,
    /// In-process executors: name and slots.
    pub(crate) local: Vec<(String, u32)>,
    /// Executor processes may join (a cluster manager).
    pub(crate) cluster: Option<ClusterTiming>,
}

/// The cluster settings the core decides with.
#[derive(Debug, Clone)]
pub(crate) struct ClusterTiming {
    /// This manager's epoch (bumped durably at start).
    pub(crate) epoch: u64,
    /// The lease an executor holds between heartbeats.
    pub(crate) lease_ms: u64,
    /// How often executors send a heartbeat.
    pub(crate) heartbeat_ms: u64,
    /// An executor not heard from for longer than this is lost.
    pub(crate) lost_after_ms: u64,
    /// How long a restarted manager waits for executors to re-report.
    pub(crate) reconcile_ms: u64,
    /// The protocol version executors must speak.
    pub(crate) protocol_version: u16,
    /// The day store's cluster id: with the business date, the day every key belongs to.
    pub(crate) cluster_id: String,
}

/// Timers the core asks for (as [`Effect::Timer`]) and is told about (as [`Input::Timer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A task's `at` instant was reached (scheduled with [`Effect::WakeAt`]).
    Trigger(TaskIx),
    /// A retry backoff elapsed.
    Retry {
        /// The task.
        task: TaskIx,
        /// The shard.
        shard: u32,
        /// The failed attempt the timer was set for.
        attempt: u32,
    },
    /// Time to look for executors whose lease ran out.
    Sweep,
    /// The window for executors to re-report the shards they ran before this manager started
    /// is over.
    Reconcile,
    /// The shutdown grace is over.
    ShutdownDeadline,
    /// A lost executor's lease is surely over: its orphaned jobs may go elsewhere.
    Orphans,
}

/// The jobs of a lost executor, waiting until it must have fenced itself.
#[derive(Debug, Clone)]
pub(crate) struct Orphans {
    /// When (monotonic ms) they may be requeued.
    pub(crate) due_ms: u64,
    /// The executor's name.
    pub(crate) executor: String,
    /// Its process instance.
    pub(crate) instance: u64,
    /// The jobs.
    pub(crate) jobs: Vec<AttemptKey>,
}

/// An outcome an executor held across a disconnect or a manager restart (two-phase
/// confirmation), as re-reported in its join or in a report of an older epoch.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// The epoch it was assigned in.
    pub(crate) epoch: u64,
    /// The job.
    pub(crate) key: AttemptKey,
    /// How it ended; `Cancelled` means interrupted by the executor's fence.
    pub(crate) outcome: crate::behavior::ShardOutcome,
    /// The last step's checkpoint (index, name), if the job completed it.
    pub(crate) last_step: Option<(u32, String)>,
    /// The business date and cluster id its key carries (empty: an old, unvouched key).
    pub(crate) day: KeyDay,
}

/// The day a key belongs to: its business date (YYYY-MM-DD) and cluster id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyDay {
    /// YYYY-MM-DD.
    pub(crate) date: String,
    /// The day store's cluster id.
    pub(crate) cluster_id: String,
}

/// A slot a joining executor still has busy (a job running or abandoned on it).
#[derive(Debug, Clone)]
pub(crate) struct Busy {
    /// The slot.
    pub(crate) slot: u32,
    /// The epoch the job was assigned in.
    pub(crate) epoch: u64,
    /// The job.
    pub(crate) key: AttemptKey,
    /// The day its key carries.
    pub(crate) day: KeyDay,
    /// The job was abandoned (it does not return to a stop).
    pub(crate) abandoned: bool,
}

/// A join, as the core sees it.
#[derive(Debug, Clone)]
pub(crate) struct JoinIn {
    /// The executor's name.
    pub(crate) executor: String,
    /// Its process instance.
    pub(crate) instance: u64,
    /// The protocol version it speaks.
    pub(crate) protocol_version: u16,
    /// Its slots.
    pub(crate) slots: u32,
    /// The behaviors it hosts.
    pub(crate) behaviors: Vec<String>,
    /// The outcomes it held.
    pub(crate) held: Vec<Held>,
    /// Its busy slots.
    pub(crate) busy: Vec<Busy>,
    /// Whether the transport found its agent (the actor assignments go to).
    pub(crate) agent_found: bool,
}

/// What a report of an executor process says.
#[derive(Debug, Clone)]
pub(crate) enum RemoteBody {
    /// The job ended.
    Finished {
        /// How.
        outcome: crate::behavior::ShardOutcome,
        /// The last step's checkpoint (index, name).
        last_step: Option<(u32, String)>,
    },
    /// A stop or timeout was forced; the slot stays busy until `SlotFreed`.
    Abandoned {
        /// The explanation.
        reason: String,
        /// The executor had fenced the job before it was abandoned.
        fenced: bool,
    },
    /// An abandoned job returned.
    SlotFreed,
    /// The executor refused the assignment without running it (it was not registered at
    /// the time, e.g. fenced); the shard goes back to its queue, no retry spent.
    Refused {
        /// Why.
        reason: String,
        /// The job still occupying the slot, if that was why.
        busy: Option<Busy>,
    },
    /// Progress or a log line (best effort, published only for a current registration).
    Note(Notice),
}

/// A report of an executor process.
#[derive(Debug, Clone)]
pub(crate) struct RemoteReport {
    /// The executor's name.
    pub(crate) executor: String,
    /// Its process instance.
    pub(crate) instance: u64,
    /// The epoch the job was assigned in.
    pub(crate) epoch: u64,
    /// The slot.
    pub(crate) slot: u32,
    /// The job.
    pub(crate) key: AttemptKey,
    /// The day its key carries.
    pub(crate) day: KeyDay,
    /// What it says.
    pub(crate) body: RemoteBody,
}

/// Every input of the core.
#[derive(Debug)]
pub(crate) enum Input {
    /// Open the day (or recover it). The first input.
    Start,
    /// Every event ≤ this seq is durable.
    Durable(u64),
    /// A task's registration and split, computed off the manager.
    Prepared {
        /// The task.
        task: TaskIx,
        /// The result, or why it could not be computed.
        result: Result<Prepared, String>,
    },
    /// A timer fired.
    Timer(Timer),
    /// A report of an in-process executor.
    Report(Report),
    /// An in-process job completed a step other than its last.
    Checkpoint {
        /// Answered with [`Answer::Checkpoint`] once durable (or refused).
        req: ReqId,
        /// The job.
        key: AttemptKey,
        /// The step index.
        step: u32,
        /// The step name.
        name: String,
    },
    /// An operator action.
    Act {
        /// Answered with [`Answer::Act`].
        req: ReqId,
        /// The command.
        cmd: Command,
    },
    /// The board ([`Answer::Board`]).
    Board {
        /// The request.
        req: ReqId,
    },
    /// One task's view ([`Answer::Task`]).
    Task {
        /// The request.
        req: ReqId,
        /// The task id.
        id: String,
    },
    /// A page of a task's shards ([`Answer::Shards`]).
    Shards {
        /// The request.
        req: ReqId,
        /// The task id.
        id: String,
        /// Only shards in this status.
        status: Option<ShardStatus>,
        /// Skip this many.
        offset: usize,
        /// At most this many.
        limit: usize,
    },
    /// The audit log ([`Answer::Audit`]).
    Audit {
        /// The request.
        req: ReqId,
    },
    /// Answer [`Answer::Done`] when the day is completed or stalled.
    WaitDone {
        /// The request.
        req: ReqId,
    },
    /// Graceful shutdown: stop dispatching; [`Effect::Close`] once nothing runs.
    Shutdown {
        /// Answered by the caller after closing.
        req: ReqId,
    },
    /// An executor process asks to join ([`Answer::Join`]).
    Join {
        /// The request.
        req: ReqId,
        /// The join.
        join: JoinIn,
    },
    /// A heartbeat ([`Answer::Heartbeat`], at once).
    Heartbeat {
        /// The request.
        req: ReqId,
        /// The executor.
        executor: String,
        /// Its instance.
        instance: u64,
        /// The heartbeat's seq.
        seq: u64,
    },
    /// A checkpoint of an executor process ([`Answer::Checkpoint`]).
    RemoteCheckpoint {
        /// The request.
        req: ReqId,
        /// The executor.
        executor: String,
        /// Its instance.
        instance: u64,
        /// The epoch the job was assigned in.
        epoch: u64,
        /// The job.
        key: AttemptKey,
        /// The step index.
        step: u32,
        /// The step name.
        name: String,
    },
    /// Reports of executor processes, in order.
    RemoteReports(Vec<RemoteReport>),
    /// `Drain` (stop assigning) or `Leave` ([`Answer::Drain`], at once).
    Drain {
        /// The request.
        req: ReqId,
        /// The executor.
        executor: String,
        /// Its instance.
        instance: u64,
        /// A leave rather than a drain.
        leave: bool,
    },
    /// The sessions of these executors closed.
    SessionClosed {
        /// Executor indices.
        executors: Vec<usize>,
    },
    /// A forecast computed off the manager from a clone of this core ([`forecast()`]): kept
    /// for the board, changes nothing else.
    Forecast(Arc<Forecast>),
}

/// The answer to a request.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// An operator action: the audit event's seq, or why it was refused.
    Act(Result<u64, ActionError>),
    /// The board (its `durable_seq` is set when released).
    Board(Board),
    /// One task's view (boxed: it is the largest answer).
    Task(Option<Box<TaskView>>),
    /// A page of shards.
    Shards(Vec<ShardInfo>),
    /// The audit log.
    Audit(Vec<AuditEntry>),
    /// The day is completed or stalled.
    Done(DayOutcome),
    /// A checkpoint is durable (`Ok`) or was refused.
    Checkpoint(Result<(), String>),
    /// A join's answer.
    Join(JoinAnswer),
    /// A heartbeat's answer: false when the executor is not (or no longer) registered.
    Heartbeat {
        /// The heartbeat's seq.
        seq: u64,
        /// Whether it is registered.
        ok: bool,
    },
    /// A drain's or leave's answer.
    Drain {
        /// False when the registration is unknown.
        ok: bool,
    },
}

/// A join's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinAnswer {
    /// Registered for this epoch.
    Accepted {
        /// The epoch.
        epoch: u64,
        /// The lease.
        lease_ms: u64,
        /// The heartbeat period.
        heartbeat_ms: u64,
        /// The manager's day: every key it sends carries it.
        day: KeyDay,
    },
    /// Not registered, and why.
    Rejected {
        /// Clear text.
        reason: String,
    },
}

/// Every effect of the core: plain data the caller carries out, in order.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    /// Append these applied events to the day log (always first in a turn's effects).
    Append(Vec<DayEvent>),
    /// Ask for a snapshot once the appended events are durable (the day closed).
    Snapshot,
    /// Run a job on an executor's slot.
    Assign {
        /// The executor index.
        executor: usize,
        /// The job.
        assignment: Assignment,
    },
    /// Stop a job.
    Stop {
        /// The executor index.
        executor: usize,
        /// The slot.
        slot: u32,
        /// The job.
        key: AttemptKey,
    },
    /// Tell an executor process it may forget an outcome (its settlement is durable).
    Confirm {
        /// The executor index.
        executor: usize,
        /// The job.
        key: AttemptKey,
    },
    /// Publish to subscribers.
    Publish(Notice),
    /// A best-effort note (progress, log line) of an executor process.
    Note(Notice),
    /// Answer a request.
    Reply {
        /// The request.
        req: ReqId,
        /// The answer.
        answer: Answer,
    },
    /// Fire `timer` at this monotonic instant.
    Timer {
        /// When.
        at_ms: u64,
        /// What.
        timer: Timer,
    },
    /// Fire [`Timer::Trigger`] for `task` at this wall-clock instant.
    WakeAt {
        /// The task.
        task: TaskIx,
        /// When (ms since the Unix epoch).
        at_wall_ms: i64,
    },
    /// Compute the registration and split of `tasks` off the manager (by `owner`'s task
    /// actor), answering with [`Input::Prepared`] for each.
    Prepare {
        /// The task whose actor prepares.
        owner: TaskIx,
        /// The tasks to prepare.
        tasks: Vec<TaskIx>,
    },
    /// A task is done: its task actor (if any) may go, after what it was asked.
    Retire {
        /// The task.
        task: TaskIx,
    },
    /// The joining executor was registered at this index: attach its link.
    Link {
        /// The executor index.
        executor: usize,
    },
    /// The shutdown is complete on the core's side: flush, close the log, answer `req`.
    Close {
        /// The shutdown request.
        req: ReqId,
    },
}

/// The manager's core. See the module docs. A clone is a core of its own (the forecast runs
/// one forward in simulated time).
#[derive(Clone)]
pub(crate) struct Control {
    flow: Arc<Flow>,
    date: BusinessDate,
    opts: ControlOptions,
    flow_digest: String,
    day: DayState,
    now: Now,
    /// Applied, not yet handed out as [`Effect::Append`].
    pending: Vec<DayEvent>,
    gate: DurabilityGate<Effect>,
    /// Effects released this turn.
    out: Vec<Effect>,
    /// Reactions to recorded events, in record order.
    work: VecDeque<Reaction>,
    books: Books,
    /// Notes shown beside a shard (why it is abandoned).
    notes: BTreeMap<(TaskIx, u32), String>,
    /// Stale reports already logged.
    ignored: BTreeSet<AttemptKey>,
    /// Late (fenced) results already logged, per executor.
    late_logged: BTreeSet<(String, String)>,
    /// Behaviors no joined executor hosts (logged once each).
    unhosted: BTreeSet<String>,
    /// Shards that were running on an executor process when this manager started: their
    /// executor name and instance.
    awaiting: BTreeMap<(TaskIx, u32), (String, u64)>,
    /// Shards found rolling back when this manager started: their rollback may still run on
    /// an executor of an earlier epoch (rollback dispatches are not in the log), so they are
    /// queued only when the reconcile window is over and every such executor has fenced.
    rollbacks_in_doubt: BTreeSet<(TaskIx, u32)>,
    /// Jobs of lost executors, until their leases are surely over.
    orphans: Vec<Orphans>,
    waiters: Vec<ReqId>,
    draining: Option<ReqId>,
    closed_emitted: bool,
    snapshot_after: bool,
    /// The latest forecast, for the board.
    forecast: Option<Arc<Forecast>>,
    /// Planted bugs for the simulator's self-test.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) faults: PlantedFaults,
}

/// Bugs the simulator must find (test builds only).
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PlantedFaults {
    /// Accept every finished report, current attempt or not.
    pub(crate) no_fencing: bool,
}

#[cfg(any(test, feature = "test-util"))]
impl Control {
    /// Plants a bug the simulator must find: dispatch ignores resources.
    pub(crate) fn plant_ignore_resources(&mut self, on: bool) {
        self.books.ignore_resources = on;
    }

    /// The resources' books, for the simulator's recount.
    pub(crate) fn resources(&self) -> &[books::ResRt] {
        self.books.resources()
    }
}

impl Control {
    /// A core for `date`, whose state `day` was recovered with `durable` as its watermark.
    pub(crate) fn new(
        flow: Arc<Flow>,
        date: BusinessDate,
        day: DayState,
        durable: u64,
        opts: ControlOptions,
        now: Now,
    ) -> Control {
        let mut books = Books::new(&flow, &opts.local);
        books.init_resources(&day);
        Control {
            flow_digest: flow_digest(&flow),
            flow,
            date,
            opts,
            day,
            now,
            pending: Vec::new(),
            gate: DurabilityGate::new(durable),
            out: Vec::new(),
            work: VecDeque::new(),
            books,
            notes: BTreeMap::new(),
            ignored: BTreeSet::new(),
            late_logged: BTreeSet::new(),
            unhosted: BTreeSet::new(),
            awaiting: BTreeMap::new(),
            rollbacks_in_doubt: BTreeSet::new(),
            orphans: Vec::new(),
            waiters: Vec::new(),
            draining: None,
            closed_emitted: false,
            snapshot_after: false,
            forecast: None,
            #[cfg(any(test, feature = "test-util"))]
            faults: PlantedFaults::default(),
        }
    }

    /// Handles one input at `now`; the effects to carry out, in order ([`Effect::Append`]
    /// first when events were recorded).
    pub(crate) fn handle(&mut self, input: Input, now: Now) -> Vec<Effect> {
        self.now = now;
        match input {
            Input::Start => {
                if self.opts.cluster.is_some() {
                    self.arm_sweep();
                }
                self.bootstrap();
            }
            Input::Durable(seq) => {
                let released = self.gate.advance(seq);
                self.release(released);
            }
            Input::Prepared { task, result } => self.on_prepared(task, result),
            Input::Timer(timer) => self.on_timer(timer),
            Input::Report(report) => self.on_report(report),
            Input::Checkpoint { req, key, step, name } => self.on_checkpoint(req, key, step, name),
            Input::Act { req, cmd } => self.on_act(req, cmd),
            Input::Board { req } => {
                let board = self.board();
                self.reply_when_durable(req, Answer::Board(board));
            }
            Input::Task { req, id } => {
                let view = self.task_view_by_id(&id);
                self.reply_when_durable(req, Answer::Task(view.map(Box::new)));
            }
            Input::Shards { req, id, status, offset, limit } => {
                let page = self.shard_page(&id, status, offset, limit);
                self.reply_when_durable(req, Answer::Shards(page));
            }
            Input::Audit { req } => {
                let log = self.day.audit_log().to_vec();
                self.reply_when_durable(req, Answer::Audit(log));
            }
            Input::WaitDone { req } => self.waiters.push(req),
            Input::Shutdown { req } => {
                tracing::info!(date = %self.date, running = self.books.running_len(), "shutting down");
                self.draining = Some(req);
                if self.books.running_len() > 0 {
                    let at_ms = self.now.mono_ms + self.opts.shutdown_grace_ms;
                    self.out.push(Effect::Timer { at_ms, timer: Timer::ShutdownDeadline });
                }
            }
            Input::Join { req, join } => self.on_join(req, join),
            Input::Heartbeat { req, executor, instance, seq } => {
                let ok = self.on_heartbeat(&executor, instance);
                self.out.push(Effect::Reply { req, answer: Answer::Heartbeat { seq, ok } });
            }
            Input::RemoteCheckpoint { req, executor, instance, epoch, key, step, name } => {
                self.on_remote_checkpoint(req, &executor, instance, epoch, key, step, name)
            }
            Input::RemoteReports(reports) => {
                for r in reports {
                    self.on_remote_report(r);
                }
            }
            Input::Drain { req, executor, instance, leave } => {
                let ok = self.on_drain(&executor, instance, leave);
                self.out.push(Effect::Reply { req, answer: Answer::Drain { ok } });
            }
            Input::SessionClosed { executors } => {
                for ix in executors {
                    self.lose_executor(ix, "its session closed", false);
                }
            }
            Input::Forecast(f) => self.forecast = Some(f),
        }
        let effects = self.finish();
        // Debug builds recount after every input (cheap: it walks tasks and slots, not
        // shards); the simulator checks the same and reports a planted bug itself.
        #[cfg(debug_assertions)]
        if !self.planted()
            && let Err(e) = self.check()
        {
            debug_assert!(false, "the manager core's bookkeeping diverged: {e}");
        }
        effects
    }

    /// The day's state (the fold of every recorded event).
    pub(crate) fn day(&self) -> &DayState {
        &self.day
    }

    #[cfg(debug_assertions)]
    fn planted(&self) -> bool {
        #[cfg(any(test, feature = "test-util"))]
        return self.faults.no_fencing;
        #[cfg(not(any(test, feature = "test-util")))]
        false
    }

    /// Checks every counter against its recount; the first difference, if any.
    #[cfg(any(debug_assertions, test, feature = "test-util"))]
    pub(crate) fn check(&self) -> Result<(), String> {
        self.books.check(&self.day)
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Trigger(task) => {
                self.books.set_fires_at(task, None);
                self.trigger_check(task);
            }
            Timer::Retry { task, shard, attempt } => self.on_retry_due(task, shard, attempt),
            Timer::Sweep => {
                self.sweep();
                self.arm_sweep();
            }
            Timer::Reconcile => self.reconcile_due(),
            Timer::Orphans => self.release_orphans(None),
            Timer::ShutdownDeadline => {
                tracing::warn!(
                    running = self.books.running_len(),
                    "shutdown grace over; shards still running will be unconfirmed on restart"
                );
                self.books.clear_running();
            }
        }
    }

    fn arm_sweep(&mut self) {
        if let Some(c) = &self.opts.cluster {
            let every = (c.heartbeat_ms / 2).max(10);
            self.out.push(Effect::Timer { at_ms: self.now.mono_ms + every, timer: Timer::Sweep });
        }
    }

    /// The end of every input: run the reactions, pump the dispatch queue, answer waiters,
    /// and hand out the turn's effects (events first).
    fn finish(&mut self) -> Vec<Effect> {
        self.react();
        self.pump();
        self.react();
        if !self.waiters.is_empty() {
            let closed = self.day.is_closed();
            if closed || self.stalled() {
                let board = self.board();
                for req in std::mem::take(&mut self.waiters) {
                    let outcome = if closed {
                        DayOutcome::Completed(board.clone())
                    } else {
                        DayOutcome::Stalled(board.clone())
                    };
                    self.reply_when_durable(req, Answer::Done(outcome));
                }
            }
        }
        if let Some(req) = self.draining
            && !self.closed_emitted
            && self.books.running_len() == 0
        {
            self.closed_emitted = true;
            self.out.push(Effect::Close { req });
        }
        let mut effects = Vec::with_capacity(self.out.len() + 2);
        if !self.pending.is_empty() {
            effects.push(Effect::Append(std::mem::take(&mut self.pending)));
            if std::mem::take(&mut self.snapshot_after) {
                effects.push(Effect::Snapshot);
            }
        }
        effects.append(&mut self.out);
        effects
    }

    // ----- the durability gate ---------------------------------------------------------

    /// Holds `effect` until `seq` is durable.
    fn push_effect(&mut self, seq: u64, effect: Effect) {
        if let Some(e) = self.gate.push(seq, effect) {
            self.release(vec![e]);
        }
    }

    /// Holds `effect` until everything recorded so far is durable.
    fn after_last(&mut self, effect: Effect) {
        self.push_effect(self.day.last_seq(), effect);
    }

    fn reply_when_durable(&mut self, req: ReqId, answer: Answer) {
        self.after_last(Effect::Reply { req, answer });
    }

    fn release(&mut self, effects: Vec<Effect>) {
        let durable = self.gate.durable();
        for mut e in effects {
            match &mut e {
                Effect::Reply { answer: Answer::Board(b), .. } => b.durable_seq = durable,
                Effect::Reply { answer: Answer::Done(d), .. } => match d {
                    DayOutcome::Completed(b) | DayOutcome::Stalled(b) => b.durable_seq = durable,
                },
                // The executor may have been lost (and its slots reset) since.
                Effect::Assign { executor, assignment }
                    if self.books.slot_job(*executor, assignment.slot) != Some(&assignment.key) =>
                {
                    continue;
                }
                _ => {}
            }
            self.out.push(e);
        }
    }
}

/// A digest of the flow's task definitions, recorded in `day_opened` so that a recovery with
/// a changed flow is noticed.
pub(crate) fn flow_digest(flow: &Flow) -> String {
    format!("crc32:{:08x}", crc32fast::hash(format!("{:?}", flow.tasks()).as_bytes()))
}

#[cfg(test)]
mod tests;
