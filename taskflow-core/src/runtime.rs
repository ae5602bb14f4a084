//! The runtime's public API: start a business day in one process and operate it.
//!
//! ```no_run
//! # async fn demo(flow: std::sync::Arc<taskflow_core::flow::Flow>) -> Result<(), Box<dyn std::error::Error>> {
//! use taskflow_core::behavior::BehaviorRegistry;
//! use taskflow_core::runtime::{Runtime, RuntimeOptions};
//!
//! let (runtime, manager) =
//!     Runtime::start(flow, BehaviorRegistry::with_builtins(), RuntimeOptions::default()).await?;
//! let outcome = manager.wait_until_done(std::time::Duration::from_secs(3600)).await?;
//! println!("{:?}", outcome.board().tasks.len());
//! runtime.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Supervision tree
//!
//! See [`crate::actors`]: `Manager` (root) supervises the `Notifier`, the `Clock`, one
//! `TaskActor` per active task and the `Executor`s with their `SlotRunner`s.
//!
//! # Guarantees
//!
//! - **One writer, one order.** The manager assigns every seq; the day state is the fold of
//!   the durable events in seq order. Subscribers see event notices in seq order.
//! - **Nothing acknowledged is lost.** Every effect — an assignment sent to an executor, an
//!   operator's reply, a published delta, a board returned by [`ManagerHandle::board`] — is
//!   released only once the events it depends on are fdatasync'd. A crash loses at most events
//!   nobody was told about.
//! - **At-least-once execution, exactly-once intent.** A shard attempt may run again after a
//!   crash (the process died after the work but before its outcome was durable); behaviors
//!   make their writes idempotent with the shard's idempotency key `(date, task, shard,
//!   generation)`. A completed step is durable (`StepCheckpoint`) before the next step starts,
//!   so a retried or resumed shard never re-runs a step whose checkpoint was acknowledged. The
//!   last step has no next step: its checkpoint rides with the job's report and is recorded
//!   just before the shard's outcome, in the same durable batch (one fdatasync per shard, not
//!   two); a crash before that batch is durable re-runs the last step, like any step whose
//!   checkpoint was not yet acknowledged.
//! - **Unconfirmed.** On recovery, shards that were running or stopping when the process died
//!   become `unconfirmed`: their outcome is unknown. With [`UnconfirmedPolicy::AutoRollback`]
//!   (the seed's rule: work not finally confirmed is discarded) the runtime rolls them back
//!   (bumping their generation) and retries them; with [`UnconfirmedPolicy::Hold`] they wait
//!   for an operator's confirm, mark-failed or rollback.
//! - **Registration by events.** Roots are registered at bootstrap; a task's successors are
//!   registered when it becomes done; `at` triggers come from the clock (one timer, no tick).
//!   Nothing scans all tasks on a timer; recovery scans once at start.
//! - **Retries and timeouts** come from the flow file: a failed attempt `n` is retried
//!   automatically while `n <= retries`, after `retry_backoff`; then the task stays failed
//!   until an operator acts. `timeout` bounds each attempt.
//! - **Stop** is cooperative (the shard's cancel token), then forced after `stop_grace`: the
//!   shard settles as stopped with an explanation, and its slot stays occupied until the
//!   abandoned attempt returns (reported on the board).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::actors::manager::{Manager, ManagerArgs, ManagerMsg};
use crate::behavior::{BehaviorRegistry, LogLine};
use crate::flow::Flow;
use crate::journal::{self, Journal, JournalOptions};
use crate::model::{BusinessDate, TaskId};
use crate::state::{
    AuditEntry, Command, CommandError, EventKind, ShardStatus, StatusCounts, TaskStatus,
    UnconfirmedPolicy,
};
use crate::store::LogStats;

/// Options of a [`Runtime`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RuntimeOptions {
    /// The data directory; a day's journal lives in `<data-dir>/days/<YYYY-MM-DD>/`.
    /// Default `./taskflow-data`.
    pub data_dir: PathBuf,
    /// The business date to run. Default: [`previous_open_day`] of today in the flow's zone.
    pub date: Option<BusinessDate>,
    /// In-process executors. Default 1.
    pub executors: usize,
    /// Slots per executor (shards running at once on it). Default 4.
    pub slots_per_executor: u32,
    /// Ready manual tasks without an operator's execute (the headless runner). Default false.
    pub auto_execute_manual: bool,
    /// What happens to shards found running after a crash. Default `auto-rollback`.
    pub unconfirmed_policy: UnconfirmedPolicy,
    /// How long a stopped shard may take to return before it is abandoned. Default 10 s.
    #[serde(with = "duration_text")]
    pub stop_grace: Duration,
    /// How long a graceful shutdown waits for running shards. Default 30 s.
    #[serde(with = "duration_text")]
    pub shutdown_grace: Duration,
    /// Journal (store and snapshot) options; not configurable from a file.
    #[serde(skip)]
    pub journal: JournalOptions,
    /// When the day is closed, open the next open business day. Default false.
    pub roll_over: bool,
    /// Buffer of each subscription, in notices. Default 4096.
    pub subscriber_buffer: usize,
    /// Shard log lines kept per shard. Default 200.
    pub log_lines_per_shard: usize,
    /// Shard log lines kept in all. Default 100,000.
    pub log_lines_total: usize,
    /// Accept executor processes over the network (`taskflow manager --cluster`). The
    /// in-process executors (`executors`, may be 0) run besides them.
    #[serde(skip)]
    pub cluster: Option<crate::cluster::ClusterListen>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            data_dir: PathBuf::from("taskflow-data"),
            date: None,
            executors: 1,
            slots_per_executor: 4,
            auto_execute_manual: false,
            unconfirmed_policy: UnconfirmedPolicy::AutoRollback,
            stop_grace: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            journal: JournalOptions::default(),
            roll_over: false,
            subscriber_buffer: 4096,
            log_lines_per_shard: 200,
            log_lines_total: 100_000,
            cluster: None,
        }
    }
}

impl RuntimeOptions {
    /// Options for tests: the given data dir and date, 2 slots, short graces, test journal.
    pub fn for_test(data_dir: impl Into<PathBuf>, date: BusinessDate) -> Self {
        RuntimeOptions {
            data_dir: data_dir.into(),
            date: Some(date),
            slots_per_executor: 2,
            stop_grace: Duration::from_millis(300),
            shutdown_grace: Duration::from_secs(5),
            journal: JournalOptions::for_test(),
            ..RuntimeOptions::default()
        }
    }

    /// The journal directory of `date`.
    pub fn day_dir(&self, date: BusinessDate) -> PathBuf {
        self.data_dir.join("days").join(date.to_string())
    }
}

/// `"10s"`-style durations in option files.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::model::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// The most recent open business day strictly before `today` (searching back a year): the
/// default date, whose `at` triggers have all passed, so a fresh start completes without
/// waiting.
pub fn previous_open_day(flow: &Flow, today: chrono::NaiveDate) -> Result<BusinessDate, Error> {
    let mut d = today;
    for _ in 0..366 {
        d = d.pred_opt().ok_or(Error::NoOpenDay(today))?;
        if flow.is_open_day(d).unwrap_or(false) {
            return Ok(BusinessDate(d));
        }
    }
    Err(Error::NoOpenDay(today))
}

/// Why the runtime could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The day's journal could not be opened.
    #[error(transparent)]
    Journal(#[from] journal::Error),
    /// No open business day was found in the year before the date (extend the calendar).
    #[error("no open business day in the year before {0}: extend the flow's calendar")]
    NoOpenDay(chrono::NaiveDate),
    /// The date is not an open day of the flow.
    #[error("{0} is not an open business day of the flow")]
    NotAnOpenDay(BusinessDate),
    /// An actor could not be spawned.
    #[error("cannot start the runtime's actors: {0}")]
    Spawn(String),
    /// The manager did not answer (stopped, or the timeout passed).
    #[error("the manager is unavailable: {0}")]
    Unavailable(String),
    /// A blocking start-up step panicked or was cancelled.
    #[error("start-up failed: {0}")]
    Startup(String),
}

/// Why an operator action was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// Refused by the state machine or the day's rules (HTTP 409, or 404 for unknown targets).
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// The manager is shutting down, stopped or unreachable (HTTP 503).
    #[error("the manager is unavailable: {0}")]
    Unavailable(String),
}

/// A running business day: the manager, its executors and the journal. Dropping it without
/// [`Runtime::shutdown`] leaves the actors running until the process ends.
pub struct Runtime {
    manager: ActorRef<ManagerMsg>,
    join: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// Opens (or recovers) the journal of the business date and starts the manager, which
    /// bootstraps the day: records `day_opened` if new, registers the roots, and proceeds by
    /// events. Recovery marks shards that were running as unconfirmed and applies the policy.
    pub async fn start(
        flow: Arc<Flow>,
        registry: BehaviorRegistry,
        opts: RuntimeOptions,
    ) -> Result<(Runtime, ManagerHandle), Error> {
        let tz = flow.settings().time_zone;
        let date = match opts.date {
            Some(d) => d,
            None => previous_open_day(&flow, Utc::now().with_timezone(&tz).date_naive())?,
        };
        if !flow.is_open_day(date.date()).unwrap_or(false) {
            return Err(Error::NotAnOpenDay(date));
        }
        let dir = opts.day_dir(date);
        let graph = Arc::new(flow.graph().clone());
        let jopts = opts.journal.clone();
        let (journal, recovery) =
            tokio::task::spawn_blocking(move || Journal::open(dir, date, graph, jopts))
                .await
                .map_err(|e| Error::Startup(e.to_string()))??;
        for w in &recovery.warnings {
            tracing::warn!(%date, warning = %w, "journal recovery");
        }
        let args = ManagerArgs { flow, registry: Arc::new(registry), opts, date, journal };
        let (manager, join) =
            Actor::spawn(None, Manager, args).await.map_err(|e| Error::Spawn(e.to_string()))?;
        let handle = ManagerHandle { manager: manager.clone() };
        Ok((Runtime { manager, join }, handle))
    }

    /// A handle on the manager (cheap to clone).
    pub fn handle(&self) -> ManagerHandle {
        ManagerHandle { manager: self.manager.clone() }
    }

    /// Graceful shutdown: stop dispatching, wait up to `shutdown_grace` for running shards,
    /// make every event durable, close the journal and stop every actor.
    pub async fn shutdown(self) -> Result<(), Error> {
        let r = self.manager.call(ManagerMsg::Shutdown, Some(Duration::from_secs(600))).await;
        let _ = self.join.await;
        match r {
            Ok(CallResult::Success(Ok(()))) => Ok(()),
            Ok(CallResult::Success(Err(e))) => Err(Error::Unavailable(e)),
            Ok(CallResult::Timeout) => Err(Error::Unavailable("shutdown timed out".into())),
            // Already stopped (e.g. after a journal failure): nothing left to close.
            Ok(CallResult::SenderError) | Err(_) => Ok(()),
        }
    }

    /// Stops every actor at once without closing the journal: what a crash leaves behind
    /// (events already handed to the store are kept; nothing else). For tests.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn abort(self) {
        self.manager.kill();
        let _ = self.join.await;
    }
}

/// A cheap, cloneable handle on the manager: queries, operator actions, subscriptions.
#[derive(Clone)]
pub struct ManagerHandle {
    manager: ActorRef<ManagerMsg>,
}

impl std::fmt::Debug for ManagerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerHandle").finish_non_exhaustive()
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl ManagerHandle {
    async fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(ractor::RpcReplyPort<T>) -> ManagerMsg,
        timeout: Duration,
    ) -> Result<T, Error> {
        match self.manager.call(build, Some(timeout)).await {
            Ok(CallResult::Success(v)) => Ok(v),
            Ok(CallResult::Timeout) => Err(Error::Unavailable(format!("no answer in {timeout:?}"))),
            Ok(CallResult::SenderError) => Err(Error::Unavailable("the manager stopped".into())),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }

    /// The day's board (as of a durable seq).
    pub async fn board(&self) -> Result<Board, Error> {
        self.ask(ManagerMsg::Board, CALL_TIMEOUT).await
    }

    /// One task's view, or `None` if the flow has no such task.
    pub async fn task(&self, id: &str) -> Result<Option<TaskView>, Error> {
        let id = id.to_owned();
        self.ask(|reply| ManagerMsg::Task { id, reply }, CALL_TIMEOUT).await
    }

    /// A page of a task's shards, optionally only those in `status`.
    pub async fn shards(
        &self,
        id: &str,
        status: Option<ShardStatus>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<ShardInfo>, Error> {
        let id = id.to_owned();
        self.ask(|reply| ManagerMsg::Shards { id, status, offset, limit, reply }, CALL_TIMEOUT)
            .await
    }

    /// The kept log lines of one shard, oldest first.
    pub async fn shard_log(&self, task: &str, shard: u32) -> Result<Vec<LogLine>, Error> {
        let task = TaskId::new(task);
        self.ask(|reply| ManagerMsg::Logs { task, shard, reply }, CALL_TIMEOUT).await
    }

    /// Carries out an operator action; returns the seq of its audit event once it is durable.
    pub async fn act(&self, cmd: Command) -> Result<u64, ActionError> {
        match self.ask(|reply| ManagerMsg::Act { cmd, reply }, CALL_TIMEOUT).await {
            Ok(r) => r,
            Err(e) => Err(ActionError::Unavailable(e.to_string())),
        }
    }

    /// The day's audit log (every durable operator action), oldest first.
    pub async fn audit(&self) -> Result<Vec<AuditEntry>, Error> {
        self.ask(ManagerMsg::Audit, CALL_TIMEOUT).await
    }

    /// Counters for metrics (the journal's log writer: fsyncs, events, bytes).
    pub async fn stats(&self) -> Result<RuntimeStats, Error> {
        self.ask(ManagerMsg::Stats, CALL_TIMEOUT).await
    }

    /// Subscribes to notices on `topics` (empty: all).
    pub async fn subscribe(&self, topics: Vec<Topic>) -> Result<Subscription, Error> {
        self.ask(|reply| ManagerMsg::Subscribe { topics, reply }, CALL_TIMEOUT).await
    }

    /// Waits until the day is completed (every task done; the day is closed) or stalled
    /// (nothing runs, nothing is queued or timed, and some task is not done — it needs an
    /// operator), at most `timeout`.
    pub async fn wait_until_done(&self, timeout: Duration) -> Result<DayOutcome, Error> {
        self.ask(ManagerMsg::WaitDone, timeout).await
    }
}

/// Counters of a running day, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// The journal's log writer: fsyncs, events made durable, bytes, batches since open.
    pub log: LogStats,
}

/// A subscription to the notifier's notices. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Notice>,
}

impl Subscription {
    pub(crate) fn new(rx: mpsc::Receiver<Notice>) -> Self {
        Subscription { rx }
    }

    /// The next notice; `None` once the runtime stopped.
    pub async fn next(&mut self) -> Option<Notice> {
        self.rx.recv().await
    }

    /// The next notice if one is buffered.
    pub fn try_next(&mut self) -> Option<Notice> {
        self.rx.try_recv().ok()
    }
}

/// A topic of the event bus.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every durable event and task status change.
    Day,
    /// Events, status changes and progress of one task.
    Task(TaskId),
    /// Shard log lines of every task.
    ShardLog,
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A durable event (topic `day`, and `task/<id>` for events about a task).
    Event {
        /// Its seq.
        seq: u64,
        /// When it was recorded (ms since the epoch).
        at_ms: i64,
        /// What happened.
        kind: EventKind,
    },
    /// A task's derived status changed with the event `seq`.
    TaskStatus {
        /// The event's seq.
        seq: u64,
        /// The task.
        task: TaskId,
        /// Its new status.
        status: TaskStatus,
    },
    /// A running shard's progress (not an event; topic `task/<id>`).
    Progress {
        /// The task.
        task: TaskId,
        /// The shard index.
        shard: u32,
        /// The attempt.
        attempt: u32,
        /// The step.
        step: u32,
        /// Units done.
        done: u64,
        /// Units in all.
        total: u64,
    },
    /// A shard log line (not an event; topic `shard-log`).
    Log {
        /// The task.
        task: TaskId,
        /// The shard index.
        shard: u32,
        /// The attempt.
        attempt: u32,
        /// The line.
        line: LogLine,
    },
    /// This subscriber's buffer overflowed and `missed` notices were dropped: fetch a board
    /// and continue with events after its seq.
    Lagged {
        /// How many notices were dropped.
        missed: u64,
    },
}

impl Notice {
    /// Whether the notice belongs on `topic`.
    pub fn is_on(&self, topic: &Topic) -> bool {
        match (self, topic) {
            (Notice::Lagged { .. }, _) => true,
            (Notice::Event { .. } | Notice::TaskStatus { .. }, Topic::Day) => true,
            (Notice::Event { kind, .. }, Topic::Task(t)) => event_task(kind) == Some(t),
            (Notice::TaskStatus { task, .. } | Notice::Progress { task, .. }, Topic::Task(t)) => {
                task == t
            }
            (Notice::Log { .. }, Topic::ShardLog) => true,
            _ => false,
        }
    }
}

/// The task an event is about, if any.
pub fn event_task(kind: &EventKind) -> Option<&TaskId> {
    match kind {
        EventKind::TaskRegistered { task, .. }
        | EventKind::TaskReady { task }
        | EventKind::Shard { task, .. }
        | EventKind::TaskShards { task, .. }
        | EventKind::StepCheckpoint { task, .. } => Some(task),
        EventKind::Audit(a) => Some(&a.target.task),
        EventKind::DayOpened { .. } | EventKind::DayClosed => None,
    }
}

/// The day at a glance: what the console and the `--report` JSON show.
#[derive(Debug, Clone, PartialEq)]
pub struct Board {
    /// The business date.
    pub date: BusinessDate,
    /// The seq the board reflects (durable).
    pub seq: u64,
    /// The durable watermark when the board was released (≥ `seq`).
    pub durable_seq: u64,
    /// Whether the day is closed.
    pub closed: bool,
    /// Every task of the flow, in topological order.
    pub tasks: Vec<TaskView>,
    /// The executors and their slots.
    pub executors: Vec<ExecutorView>,
}

impl Board {
    /// Whether every task ended succeeded, skipped or not applicable.
    pub fn all_done(&self) -> bool {
        self.tasks.iter().all(|t| t.status.is_done())
    }

    /// The task with `id`.
    pub fn task(&self, id: &str) -> Option<&TaskView> {
        self.tasks.iter().find(|t| t.id.as_str() == id)
    }
}

/// One task on the board.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    /// The task's id.
    pub id: TaskId,
    /// Its display name.
    pub name: String,
    /// Its behavior.
    pub behavior: String,
    /// Its trigger (`manual`, `auto`, `at 18:30`).
    pub trigger: String,
    /// Its dependencies.
    pub depends_on: Vec<TaskId>,
    /// Its derived status.
    pub status: TaskStatus,
    /// Its shards per status.
    pub counts: StatusCounts,
    /// Dispatches of its shards (first runs, retries, re-runs).
    pub attempts: u64,
    /// When it was registered (ms since the epoch).
    pub registered_ms: Option<i64>,
    /// When its first shard started.
    pub started_ms: Option<i64>,
    /// When it last became done.
    pub finished_ms: Option<i64>,
    /// Registered with an empty scope: it did not apply on the date.
    pub not_applicable: bool,
    /// When its `at` trigger fires, while it waits for it.
    pub fires_at: Option<DateTime<Utc>>,
    /// Why it waits or cannot proceed (manual trigger, registration problem), if it does.
    pub note: Option<String>,
}

/// One shard, owned (see [`crate::state::ShardView`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Its index.
    pub index: u32,
    /// Its key.
    pub key: String,
    /// Its status.
    pub status: ShardStatus,
    /// Its last attempt.
    pub attempt: u32,
    /// Its generation.
    pub generation: u32,
    /// The executor of its last dispatch.
    pub executor: Option<String>,
    /// Steps completed in this generation.
    pub steps_done: u32,
    /// When its last run or rollback started.
    pub started_ms: Option<i64>,
    /// When it last came to rest.
    pub finished_ms: Option<i64>,
    /// Its latest error.
    pub last_error: Option<String>,
    /// A runtime note (e.g. an abandoned attempt still running).
    pub note: Option<String>,
}

impl ShardInfo {
    /// The row of a shard of the day state, with the runtime's `note` (none for a past day).
    pub fn from_view(v: &crate::state::ShardView<'_>, note: Option<String>) -> ShardInfo {
        ShardInfo {
            index: v.index,
            key: v.key.to_owned(),
            status: v.status,
            attempt: v.attempt,
            generation: v.generation,
            executor: v.executor.map(str::to_owned),
            steps_done: v.checkpoint.map_or(0, |c| c.steps_done),
            started_ms: v.started_ms,
            finished_ms: v.finished_ms,
            last_error: v.last_error.map(str::to_owned),
            note,
        }
    }
}

/// An executor on the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorView {
    /// Its name.
    pub name: String,
    /// Its slots.
    pub slots: Vec<SlotView>,
}

/// A slot on the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotView {
    /// Free.
    Idle,
    /// Running a job: `task[shard] attempt N`.
    Busy(String),
    /// Occupied by an attempt that was abandoned after a forced stop or timeout and has not
    /// returned yet.
    Abandoned(String),
}

/// How a day ended (for now).
#[derive(Debug, Clone, PartialEq)]
pub enum DayOutcome {
    /// Every task is done; the day is closed.
    Completed(Board),
    /// Nothing runs, is queued or timed, and some task is not done: it needs an operator.
    Stalled(Board),
}

impl DayOutcome {
    /// The board at that point.
    pub fn board(&self) -> &Board {
        match self {
            DayOutcome::Completed(b) | DayOutcome::Stalled(b) => b,
        }
    }
}

/// Today's date in the flow's zone (for defaults and messages).
pub fn today_in(flow: &Flow) -> chrono::NaiveDate {
    Utc::now().with_timezone(&flow.settings().time_zone).date_naive()
}
