//! The runtime's public API: start a business day in one process and operate it.
//!
//! ```no_run
//! # async fn demo(flow: std::sync::Arc<taskflow_core::flow::Flow>) -> Result<(), Box<dyn std::error::Error>> {
//! use taskflow_core::behavior::BehaviorRegistry;
//! use taskflow_core::{Runtime, RuntimeOptions};
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
//!   (the default: work not finally confirmed is discarded) the runtime rolls them back
//!   (bumping their generation) and retries them; with [`UnconfirmedPolicy::Hold`] they wait
//!   for an operator's confirm, mark-failed or rollback.
//! - **Registration by events.** Roots are registered at bootstrap; a task's successors are
//!   registered when it becomes done; `at` triggers come from the clock (one timer, no tick).
//!   Nothing scans all tasks on a timer; recovery scans once at start.
//! - **Retries and timeouts** come from the flow file: a shard that failed `n` times since its
//!   generation began is retried automatically while `n <= retries`, after `retry_backoff`
//!   (a requeue after an executor loss or a restart is not a failure); then the task stays
//!   failed until an operator acts. `timeout` bounds each attempt.
//! - **Stop** is cooperative (the shard's cancel token), then forced after `stop_grace`: the
//!   shard settles as stopped with an explanation, and its slot stays occupied until the
//!   abandoned attempt returns (reported on the board).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};

use crate::actors::manager::{Manager, ManagerArgs, ManagerMsg};
use crate::behavior::{BehaviorRegistry, LogLine};
use crate::flow::Flow;
use crate::journal::{self, Journal};
use crate::model::{BusinessDate, TaskId};
use crate::options::RuntimeOptions;
use crate::state::{AuditEntry, Command, ShardStatus};
use crate::view::{
    ActionError, Board, DayOutcome, RuntimeStats, ShardInfo, Subscription, TaskView, Topic,
};

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

/// Today's date in the flow's zone (for defaults and messages).
pub fn today_in(flow: &Flow) -> chrono::NaiveDate {
    Utc::now().with_timezone(&flow.settings().time_zone).date_naive()
}
