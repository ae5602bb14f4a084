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

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};

use crate::actors::manager::{Manager, ManagerArgs, ManagerMsg};
use crate::behavior::{BehaviorRegistry, LogLine};
use crate::flow::Flow;
use crate::journal::{self, Journal};
use crate::model::{BusinessDate, TaskId};
use crate::options::{RuntimeOptions, wall};
use crate::state::{AuditEntry, Command, ShardStatus};
use crate::view::{
    ActionError, Board, DayOutcome, Notice, RuntimeStats, ShardInfo, Subscription, TaskView, Topic,
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
    /// The options contradict each other (the message names them and what to do).
    #[error("invalid options: {0}")]
    Options(String),
}

/// The business day a runtime serves now: its manager actor. A cutover replaces it.
struct DayCell {
    current: std::sync::RwLock<ActorRef<ManagerMsg>>,
    /// The flow the open day runs (a cutover may bring a changed one, read again from
    /// [`RuntimeOptions::flow_dir`]).
    flow: std::sync::RwLock<Arc<Flow>>,
    /// The open day's date; bumped after every cutover (the console follows it).
    day: tokio::sync::watch::Sender<BusinessDate>,
    /// The current manager's join handle; held by the cutover while it replaces the manager,
    /// and by the shutdown.
    join: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set while a cutover replaces the manager: a query that finds the old one stopped
    /// waits for the next one instead of failing.
    cutting_over: std::sync::atomic::AtomicBool,
}

impl DayCell {
    fn manager(&self) -> ActorRef<ManagerMsg> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn flow(&self) -> Arc<Flow> {
        self.flow.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits (until `deadline`) for a cutover to put another manager in place of `stopped`;
    /// false when none comes (the runtime stopped, or the cutover failed).
    async fn wait_replaced(
        &self,
        stopped: &ActorRef<ManagerMsg>,
        deadline: tokio::time::Instant,
    ) -> bool {
        use std::sync::atomic::Ordering;
        let mut days = self.day.subscribe();
        loop {
            if self.manager().get_id() != stopped.get_id() {
                return true;
            }
            if !self.cutting_over.load(Ordering::Acquire) {
                return false;
            }
            match tokio::time::timeout_at(deadline, days.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.manager().get_id() != stopped.get_id(),
            }
        }
    }
}

/// A running business day (or, with [`RuntimeOptions::roll_over`], one business day after
/// another): the manager, its executors and the journal. Dropping it without
/// [`Runtime::shutdown`] leaves the actors running until the process ends.
pub struct Runtime {
    cell: Arc<DayCell>,
    /// The cutover driver (with `roll_over`).
    driver: Option<tokio::task::JoinHandle<()>>,
    /// The data directory's manager lock, held shared while the runtime runs (so
    /// `taskflow store prune` by hand refuses meanwhile); released after the shutdown.
    _lock: Arc<crate::store::ManagerLock>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

/// Opens (or recovers) the journal of `date` and starts its manager, with the flow the day
/// opened with ([`day_flow`]). Returns the flow the day runs and its texts, if known.
async fn start_day(
    flow: Arc<Flow>,
    files: Option<crate::flow::FlowFiles>,
    registry: Arc<BehaviorRegistry>,
    opts: RuntimeOptions,
    date: BusinessDate,
) -> Result<DayStarted, Error> {
    let (flow, files) = day_flow(flow, files, &opts, date).await?;
    let journal = open_journal(&flow, &opts, date)?.await;
    let (manager, join) = spawn_manager(flow.clone(), registry, opts, date, journal).await?;
    Ok(DayStarted { manager, join, flow, files })
}

/// The flow day `date` runs: the one it opened with when the data directory keeps one
/// (`DATA/flows/<date>/`), else `flow`; a new day keeps `files` (the texts `flow` was built
/// from) as its flow first.
async fn day_flow(
    flow: Arc<Flow>,
    files: Option<crate::flow::FlowFiles>,
    opts: &RuntimeOptions,
    date: BusinessDate,
) -> Result<(Arc<Flow>, Option<crate::flow::FlowFiles>), Error> {
    let dir = opts.day_dir(date);
    let data_dir = opts.data_dir.clone();
    tokio::task::spawn_blocking(move || {
        match crate::flow::read_kept(&data_dir, date) {
            Some(Ok((kept, kept_files))) => {
                if !same_flow(&kept, &flow) {
                    tracing::info!(
                        %date,
                        "the day goes on with the flow it opened with; the changed flow takes \
                         effect from the next day"
                    );
                }
                return (Arc::new(kept), Some(kept_files));
            }
            Some(Err(why)) => tracing::warn!(
                %date,
                "the day runs the flow given, not the one it opened with: {why}"
            ),
            None => {
                if !dir.exists()
                    && let Some(files) = &files
                    && let Err(e) = files.write_copy(&data_dir, date)
                {
                    tracing::warn!(%date, %e, "cannot keep the flow the day opens with; it will be read with the flow in use");
                }
            }
        }
        (flow, files)
    })
    .await
    .map_err(|e| Error::Startup(e.to_string()))
}

/// The journal of `date` being opened (or recovered) on a blocking thread.
type Opening = tokio::task::JoinHandle<Result<(Journal, journal::Recovery), journal::Error>>;

/// Starts opening the journal of `date` (refused for a date that is not an open day).
fn open_journal(flow: &Flow, opts: &RuntimeOptions, date: BusinessDate) -> Result<Opening, Error> {
    if !flow.is_open_day(date.date()).unwrap_or(false) {
        return Err(Error::NotAnOpenDay(date));
    }
    let dir = opts.day_dir(date);
    let graph = Arc::new(flow.graph().clone());
    let jopts = opts.journal.clone();
    Ok(tokio::task::spawn_blocking(move || Journal::open(dir, date, graph, jopts)))
}

/// Starts the manager of `date` on its opened journal.
async fn spawn_manager(
    flow: Arc<Flow>,
    registry: Arc<BehaviorRegistry>,
    opts: RuntimeOptions,
    date: BusinessDate,
    opened: Result<Result<(Journal, journal::Recovery), journal::Error>, tokio::task::JoinError>,
) -> Result<(ActorRef<ManagerMsg>, tokio::task::JoinHandle<()>), Error> {
    let (journal, recovery) = opened.map_err(|e| Error::Startup(e.to_string()))??;
    for w in &recovery.warnings {
        tracing::warn!(%date, warning = %w, "journal recovery");
    }
    let args = ManagerArgs { flow, registry, opts, date, journal };
    Actor::spawn(None, Manager, args).await.map_err(|e| Error::Spawn(e.to_string()))
}

/// A day's manager, started.
struct DayStarted {
    manager: ActorRef<ManagerMsg>,
    join: tokio::task::JoinHandle<()>,
    /// The flow it runs.
    flow: Arc<Flow>,
    /// Its texts, when known (kept beside the day).
    files: Option<crate::flow::FlowFiles>,
}

/// The texts of the flow in `opts.flow_dir`, if it still builds the flow given (so that a
/// new day keeps exactly the flow it runs).
async fn files_of(flow: &Arc<Flow>, opts: &RuntimeOptions) -> Option<crate::flow::FlowFiles> {
    let dir = opts.flow_dir.clone()?;
    let loaded = tokio::task::spawn_blocking(move || crate::flow::load_dir_files(dir)).await.ok();
    match loaded {
        Some(Ok((f, files))) if same_flow(&f, flow) => Some(files),
        _ => {
            tracing::warn!(
                "the flow directory no longer holds the flow loaded at start; the day keeps no copy of it"
            );
            None
        }
    }
}

impl Runtime {
    /// Opens (or recovers) the journal of the business date and starts the manager, which
    /// bootstraps the day: records `day_opened` if new, registers the roots, and proceeds by
    /// events. Recovery marks shards that were running as unconfirmed and applies the policy.
    ///
    /// With [`RuntimeOptions::roll_over`] the runtime goes on to the next business day by
    /// itself once the day closes (see [`crate::model::next_day`]): the closed day's manager
    /// is shut down, the next day's store `days/<date>/` opened and its manager started,
    /// and every [`ManagerHandle`] follows it.
    pub async fn start(
        flow: Arc<Flow>,
        registry: BehaviorRegistry,
        opts: RuntimeOptions,
    ) -> Result<(Runtime, ManagerHandle), Error> {
        if opts.replica_acks > 0 && opts.cluster.is_none() {
            return Err(Error::Options(format!(
                "replica_acks = {} needs a cluster manager (replication to executors with \
                 --data); set cluster, or replica_acks = 0",
                opts.replica_acks
            )));
        }
        let tz = flow.settings().time_zone;
        let date = match opts.date {
            Some(d) => d,
            None => previous_open_day(&flow, wall::now().with_timezone(&tz).date_naive())?,
        };
        let registry = Arc::new(registry);
        let data_dir = opts.data_dir.clone();
        let lock =
            tokio::task::spawn_blocking(move || crate::store::ManagerLock::shared(&data_dir))
                .await
                .map_err(|e| Error::Startup(e.to_string()))?
                .map_err(|e| Error::Journal(journal::Error::Store(e)))?;
        let lock = Arc::new(lock);
        let files = files_of(&flow, &opts).await;
        let DayStarted { manager, join, flow, files } =
            start_day(flow, files, registry.clone(), opts.clone(), date).await?;
        let cell = Arc::new(DayCell {
            current: std::sync::RwLock::new(manager),
            flow: std::sync::RwLock::new(flow.clone()),
            day: tokio::sync::watch::channel(date).0,
            join: tokio::sync::Mutex::new(Some(join)),
            cutting_over: std::sync::atomic::AtomicBool::new(false),
        });
        let handle = ManagerHandle { cell: cell.clone() };
        warn_if_calendar_ends(&flow, date);
        // With executor processes, a cutover closes and binds the cluster listener again (the
        // next day's manager has its own epoch): the executors re-join by themselves.
        let driver = opts.roll_over.then(|| {
            tokio::spawn(drive(cell.clone(), flow, files, registry, opts, date, lock.clone()))
        });
        Ok((Runtime { cell, driver, _lock: lock }, handle))
    }

    /// A handle on the manager (cheap to clone).
    pub fn handle(&self) -> ManagerHandle {
        ManagerHandle { cell: self.cell.clone() }
    }

    /// Graceful shutdown: stop dispatching, wait up to `shutdown_grace` for running shards,
    /// make every event durable, close the journal and stop every actor.
    pub async fn shutdown(self) -> Result<(), Error> {
        // A cutover under way finishes first (it holds the join), then the driver stops.
        let mut join = self.cell.join.lock().await;
        if let Some(driver) = &self.driver {
            driver.abort();
        }
        let manager = self.cell.manager();
        let r = manager.call(ManagerMsg::Shutdown, Some(Duration::from_secs(600))).await;
        if let Some(j) = join.take() {
            let _ = j.await;
        }
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
        let mut join = self.cell.join.lock().await;
        if let Some(driver) = &self.driver {
            driver.abort();
        }
        self.cell.manager().kill();
        if let Some(j) = join.take() {
            let _ = j.await;
        }
    }
}

/// Warns (once per opened day) when the calendar ends within 20 open days.
fn warn_if_calendar_ends(flow: &Flow, date: BusinessDate) {
    if let Some(left) = flow.day_policy().calendar_ends_within(date, 20) {
        tracing::warn!(
            %date,
            open_days_left = left,
            calendar_to = %flow.calendar().to(),
            "the calendar ends within 20 business days: extend calendar.toml (`to` and the \
             holidays) before it runs out"
        );
    }
}

/// The cutover driver of a rolling runtime: waits for the open day to close (an event), then
/// for the instant the next day may open (one timer), then replaces the day's manager; once
/// the next day is open, retention removes the closed days `retain_days` lets go.
async fn drive(
    cell: Arc<DayCell>,
    mut flow: Arc<Flow>,
    mut flow_files: Option<crate::flow::FlowFiles>,
    registry: Arc<BehaviorRegistry>,
    opts: RuntimeOptions,
    mut date: BusinessDate,
    lock: Arc<crate::store::ManagerLock>,
) {
    use crate::model::{NextDay, next_day};
    let hosted: Option<Vec<String>> =
        (opts.cluster.is_none()).then(|| registry.names().into_iter().map(str::to_owned).collect());
    loop {
        if !wait_closed(&cell).await {
            return;
        }
        // The flow is read again once the next day may open (after any wait), so that an
        // edit made overnight is the one the day opens with; a changed calendar or
        // `new_day_at` is then decided again with it.
        let mut reread = false;
        // The texts of the flow the next day opens with, kept beside it.
        let mut files = flow_files.clone();
        let next = loop {
            match next_day(&flow.day_policy(), date, wall::now()) {
                NextDay::Open { date: next, skipped } => {
                    if let (false, Some(dir)) = (reread, &opts.flow_dir) {
                        reread = true;
                        let dir = dir.clone();
                        let loaded = tokio::task::spawn_blocking(move || {
                            crate::flow::load_dir_files(&dir).map_err(|e| e.to_string())
                        })
                        .await
                        .unwrap_or_else(|e| Err(format!("reading the flow failed: {e}")));
                        match choose_flow(&flow, loaded, hosted.as_deref()) {
                            FlowChoice::Same(same) => files = Some(same),
                            FlowChoice::Changed(new, new_files) => {
                                tracing::info!(
                                    closed = %date,
                                    next = %next,
                                    from = %crate::control::flow_digest(&flow),
                                    to = %crate::control::flow_digest(&new),
                                    "the flow changed: the next day opens with the new one"
                                );
                                flow = Arc::new(*new);
                                files = Some(new_files);
                                continue;
                            }
                            FlowChoice::Keep(why) => {
                                files.clone_from(&flow_files);
                                tracing::error!(
                                next = %next,
                                dir = %opts.flow_dir.as_deref().unwrap_or(std::path::Path::new("")).display(),
                                "the flow read again at the cutover is refused; the next day \
                                 opens with the flow it had: {why}"
                                );
                            }
                        }
                    }
                    for s in skipped {
                        tracing::info!(date = %s, "catch_up = latest: missed business day not opened");
                    }
                    break next;
                }
                NextDay::WaitUntil { date: next, at } => {
                    tracing::info!(%date, next = %next, %at, "day closed; the next day opens at its cutover time");
                    tokio::time::sleep(wall::real_delay_until(at)).await;
                    reread = false;
                }
                NextDay::CalendarEnds { last } => {
                    tracing::error!(
                        %date, %last,
                        "the calendar has no business day after the closed day: extend \
                         calendar.toml and restart"
                    );
                    return;
                }
            }
        };
        let mut join = cell.join.lock().await;
        // The next day's store is created while the closed day's manager shuts down (two
        // directories, two independent stores): most of a cutover is their fsyncs.
        let started = match day_flow(flow.clone(), files, &opts, next).await {
            Ok((day_flow, day_files)) => {
                open_journal(&day_flow, &opts, next).map(|o| (day_flow, day_files, o))
            }
            Err(e) => Err(e),
        };
        let old = cell.manager();
        cell.cutting_over.store(true, std::sync::atomic::Ordering::Release);
        let _ = old.call(ManagerMsg::Shutdown, Some(Duration::from_secs(600))).await;
        if let Some(j) = join.take() {
            let _ = j.await;
        }
        let started = match started {
            Ok((day_flow, day_files, opening)) => {
                let opened = opening.await;
                spawn_manager(day_flow.clone(), registry.clone(), opts.clone(), next, opened)
                    .await
                    .map(|(m, j)| (m, j, day_flow, day_files))
            }
            Err(e) => Err(e),
        };
        match started {
            Ok((manager, j, day_flow, day_files)) => {
                flow = day_flow;
                flow_files = day_files;
                *cell.current.write().unwrap_or_else(|e| e.into_inner()) = manager;
                *cell.flow.write().unwrap_or_else(|e| e.into_inner()) = flow.clone();
                *join = Some(j);
                tracing::info!(closed = %date, opened = %next, "cutover: the next business day is open");
                warn_if_calendar_ends(&flow, next);
                date = next;
                cell.cutting_over.store(false, std::sync::atomic::Ordering::Release);
                cell.day.send_replace(next);
                // Part of the cutover (the join is held): a shutdown waits for it to finish.
                crate::days::prune_at_cutover(lock.clone(), opts.data_dir.clone(), flow.clone())
                    .await;
                drop(join);
            }
            Err(e) => {
                tracing::error!(date = %next, %e, "cutover: cannot open the next business day");
                cell.cutting_over.store(false, std::sync::atomic::Ordering::Release);
                cell.day.send_replace(date);
                return;
            }
        }
    }
}

/// What a cutover does with the flow read again from its directory.
#[derive(Debug)]
enum FlowChoice {
    /// The same task definitions, calendar and reference data: go on with the flow in use
    /// (its texts, which the next day keeps).
    Same(crate::flow::FlowFiles),
    /// A changed flow that loads and whose behaviors are hosted: the next day runs it.
    Changed(Box<Flow>, crate::flow::FlowFiles),
    /// Refused (why): the next day runs the flow in use.
    Keep(String),
}

/// Decides between the flow in use and the one read again at a cutover. `hosted`: the
/// behaviors of the in-process executors when they are the only ones (a behavior nobody
/// hosts would fail every shard of its task); `None` with executor processes, which say at
/// their join what they host.
fn choose_flow(
    current: &Flow,
    loaded: Result<(Flow, crate::flow::FlowFiles), String>,
    hosted: Option<&[String]>,
) -> FlowChoice {
    let (new, files) = match loaded {
        Ok(f) => f,
        Err(e) => return FlowChoice::Keep(format!("it no longer validates: {e}")),
    };
    if let Some(hosted) = hosted {
        let missing: std::collections::BTreeSet<&str> = new
            .tasks()
            .iter()
            .map(|t| t.behavior.as_str())
            .filter(|b| !hosted.iter().any(|h| h == b))
            .collect();
        if !missing.is_empty() {
            let missing: Vec<&str> = missing.into_iter().collect();
            return FlowChoice::Keep(format!(
                "it uses behaviors this process does not host: {} (hosted: {})",
                missing.join(", "),
                hosted.join(", ")
            ));
        }
    }
    if same_flow(current, &new) {
        FlowChoice::Same(files)
    } else {
        FlowChoice::Changed(Box::new(new), files)
    }
}

/// Whether two flows define the same day: tasks, resources, settings, calendar, reference data.
fn same_flow(a: &Flow, b: &Flow) -> bool {
    a.tasks() == b.tasks()
        && a.resources() == b.resources()
        && a.settings() == b.settings()
        && a.reference() == b.reference()
}

/// Waits until the current day is closed (its `day_closed` event, or already closed); false
/// when the manager stopped.
async fn wait_closed(cell: &Arc<DayCell>) -> bool {
    // Only the driver replaces the manager: this handle stays on the day it waits for.
    let handle = ManagerHandle { cell: cell.clone() };
    let Ok(mut sub) = handle.subscribe(vec![Topic::Day]).await else { return false };
    match handle.board().await {
        Ok(b) if b.closed => return true,
        Ok(_) => {}
        Err(_) => return false,
    }
    while let Some(n) = sub.next().await {
        if let Notice::Event { kind: crate::state::EventKind::DayClosed, .. } = n {
            return true;
        }
    }
    false
}

/// A cheap, cloneable handle on the manager: queries, operator actions, subscriptions.
#[derive(Clone)]
pub struct ManagerHandle {
    cell: Arc<DayCell>,
}

impl std::fmt::Debug for ManagerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerHandle").finish_non_exhaustive()
    }
}

const CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl ManagerHandle {
    /// A query of the open day: when it finds the manager stopped by a cutover, it asks the
    /// next day's manager once that is in place (within `timeout`), so a reader never sees
    /// the cutover as an outage.
    async fn query<T: Send + 'static>(
        &self,
        build: impl Fn(ractor::RpcReplyPort<T>) -> ManagerMsg,
        timeout: Duration,
    ) -> Result<T, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let manager = self.cell.manager();
            match manager.call(&build, Some(timeout)).await {
                Ok(CallResult::Success(v)) => return Ok(v),
                Ok(CallResult::Timeout) => {
                    return Err(Error::Unavailable(format!("no answer in {timeout:?}")));
                }
                Ok(CallResult::SenderError) | Err(_) => {
                    if !self.cell.wait_replaced(&manager, deadline).await {
                        return Err(Error::Unavailable("the manager stopped".into()));
                    }
                }
            }
        }
    }

    async fn ask<T: Send + 'static>(
        &self,
        build: impl FnOnce(ractor::RpcReplyPort<T>) -> ManagerMsg,
        timeout: Duration,
    ) -> Result<T, Error> {
        match self.cell.manager().call(build, Some(timeout)).await {
            Ok(CallResult::Success(v)) => Ok(v),
            Ok(CallResult::Timeout) => Err(Error::Unavailable(format!("no answer in {timeout:?}"))),
            Ok(CallResult::SenderError) => Err(Error::Unavailable("the manager stopped".into())),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }

    /// The day's board (as of a durable seq).
    pub async fn board(&self) -> Result<Board, Error> {
        self.query(ManagerMsg::Board, CALL_TIMEOUT).await
    }

    /// One task's view, or `None` if the flow has no such task.
    pub async fn task(&self, id: &str) -> Result<Option<TaskView>, Error> {
        let id = id.to_owned();
        self.query(|reply| ManagerMsg::Task { id: id.clone(), reply }, CALL_TIMEOUT).await
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
        let build = |reply| ManagerMsg::Shards { id: id.clone(), status, offset, limit, reply };
        self.query(build, CALL_TIMEOUT).await
    }

    /// The kept log lines of one shard, oldest first.
    pub async fn shard_log(&self, task: &str, shard: u32) -> Result<Vec<LogLine>, Error> {
        let task = TaskId::new(task);
        self.query(|reply| ManagerMsg::Logs { task: task.clone(), shard, reply }, CALL_TIMEOUT)
            .await
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
        self.query(ManagerMsg::Audit, CALL_TIMEOUT).await
    }

    /// Counters for metrics (the journal's log writer: fsyncs, events, bytes).
    pub async fn stats(&self) -> Result<RuntimeStats, Error> {
        self.query(ManagerMsg::Stats, CALL_TIMEOUT).await
    }

    /// Subscribes to notices on `topics` (empty: all).
    pub async fn subscribe(&self, topics: Vec<Topic>) -> Result<Subscription, Error> {
        self.query(|reply| ManagerMsg::Subscribe { topics: topics.clone(), reply }, CALL_TIMEOUT)
            .await
    }

    /// The flow the open day runs: with [`RuntimeOptions::flow_dir`], a cutover may bring a
    /// changed one.
    pub fn flow(&self) -> Arc<Flow> {
        self.cell.flow()
    }

    /// The open day's date, changing at every cutover of a rolling runtime
    /// ([`RuntimeOptions::roll_over`]); the sender is gone once the runtime stopped.
    pub fn day_changes(&self) -> tokio::sync::watch::Receiver<BusinessDate> {
        self.cell.day.subscribe()
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
    wall::now().with_timezone(&flow.settings().time_zone).date_naive()
}
