//! What the runtime shows of a day, shared by the manager (which builds it) and the runtime's
//! API (which hands it out): the board and its task, shard, executor and slot views, the
//! notices of the event bus and their topics, how a day ended, why an action was refused, and
//! the day's counters.
//!
//! Plain data below the actors: of taskflow's modules this one uses only `model`, `state`,
//! `behavior` (log lines) and `store` (log counters), so the actors and the cluster code use
//! it without importing the runtime, which imports them. The crate root re-exports every
//! public item.

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::behavior::LogLine;
use crate::graph::TaskIx;
use crate::model::{BusinessDate, TaskId};
use crate::state::{CommandError, DayState, EventKind, ShardStatus, StatusCounts, TaskStatus};
use crate::store::LogStats;

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
    /// An executor process was lost (its session broke or its lease ran out, or it came back
    /// as a new instance): its shards are reassigned (not an event; topic `day`).
    ExecutorLost {
        /// Its name.
        executor: String,
        /// Why, in the manager's words.
        reason: String,
    },
    /// A new forecast was computed (not an event; topic `day`): the board has it.
    Forecast {
        /// When it was computed (ms since the epoch).
        computed_at_ms: i64,
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
            (
                Notice::Event { .. }
                | Notice::TaskStatus { .. }
                | Notice::ExecutorLost { .. }
                | Notice::Forecast { .. },
                Topic::Day,
            ) => true,
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
        | EventKind::StepCheckpoint { task, .. }
        | EventKind::Hold { task, .. }
        | EventKind::Free { task, .. }
        | EventKind::ForceStarted { task } => Some(task),
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
    /// The flow's resources, in flow order (empty on a past day: nothing runs there).
    pub resources: Vec<ResourceView>,
    /// The day's `deadline` (ms since the epoch), if the flow sets one.
    pub deadline_ms: Option<i64>,
    /// The day's latest forecast, once one was computed (never on a past day).
    pub forecast: Option<DayForecast>,
}

/// The day's line of a forecast: the pure core run forward from the live state with the
/// duration history (`proto-docs/http-api.md`, forecast).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DayForecast {
    /// When it was computed (ms since the epoch): the instant the simulation starts from.
    pub computed_at_ms: i64,
    /// When the day's last task is predicted to end; `None` if some task is predicted never
    /// to end (held, waiting for an operator the forecast cannot stand in for, failed).
    pub predicted_end_ms: Option<i64>,
    /// The predicted end is after the day's deadline (or the day never ends and has one).
    pub at_risk: bool,
    /// What the forecast assumed (manual tasks executed when runnable, large tasks
    /// aggregated, history missing), each once.
    pub assumptions: Vec<String>,
}

/// One task's line of a forecast.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskForecast {
    /// When it starts (its first shard's dispatch; the actual one once it started).
    pub predicted_start_ms: Option<i64>,
    /// When it ends (done; the actual end once done); `None`: predicted never to end.
    pub predicted_end_ms: Option<i64>,
    /// The end is after the task's deadline (or it never ends and has one).
    pub at_risk: bool,
    /// Start and end are what happened (the task is done), not a prediction.
    pub actual: bool,
    /// Some of its durations are defaults: no history of the task.
    pub low_confidence: bool,
    /// Why it is predicted never to start or end, or what was assumed of it.
    pub note: Option<String>,
}

/// One resource on the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceView {
    /// Its name.
    pub name: String,
    /// Its units now (the flow's, or an operator's change).
    pub units: u32,
    /// Units held by running shards (may exceed `units` after an operator lowered them).
    pub in_use: u32,
    /// Queued shards that wait for it (their task's first resource that is short).
    pub waiting: u32,
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
    /// Who holds the task, if someone does: none of its shards is dispatched to run.
    pub held_by: Option<String>,
    /// Shards held one by one (the task itself may not be).
    pub held_shards: u32,
    /// An operator force-started it.
    pub forced: bool,
    /// What it waits for, when it neither runs nor has ended (see [`WaitingFor`]).
    pub waiting_for: Option<WaitingFor>,
    /// Its `deadline` (ms since the epoch), if it has one.
    pub deadline_ms: Option<i64>,
    /// Its line of the day's latest forecast, once one was computed.
    pub forecast: Option<TaskForecast>,
}

/// Why a task or a shard that is neither running nor done does not move: the board's and the
/// shard page's `waiting_for`. Computed from the day's state and the core's books (no event
/// of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitingFor {
    /// A dependency of the same business day is not done (the first one in graph order).
    Dependency {
        /// The dependency.
        task: TaskId,
        /// Its business date.
        date: BusinessDate,
    },
    /// Nothing moves it but an operator (a manual trigger, a failure without retries left, a
    /// stopped, rolled-back or unconfirmed shard).
    Operator,
    /// Its `at` trigger, at this instant (ms since the epoch).
    Trigger {
        /// When it fires.
        at_ms: i64,
    },
    /// An automatic retry, due at this instant (ms since the epoch).
    Retry {
        /// When it is due.
        at_ms: i64,
    },
    /// Queued: no free slot of an executor that hosts its behavior.
    Slot {
        /// The behavior.
        behavior: String,
    },
    /// Queued: the units of a resource it needs are not free.
    Resource {
        /// The resource.
        resource: String,
    },
    /// An operator holds the shard or its task.
    Held {
        /// Who.
        by: String,
    },
}

impl WaitingFor {
    /// What the day's state alone says keeps a task (`shard: None`) or one of its shards from
    /// moving, checked before anything else: a hold (the shard's, then its task's), then a
    /// dependency that is not done (unless the task was force-started). The past days' view
    /// uses it as it is; the manager adds its triggers, retries, slots and resources.
    pub fn in_state(day: &DayState, ix: TaskIx, shard: Option<u32>) -> Option<WaitingFor> {
        let held = shard.and_then(|s| day.held_by(ix, Some(s))).or_else(|| day.held_by(ix, None));
        if let Some(by) = held {
            return Some(WaitingFor::Held { by: by.to_owned() });
        }
        if !day.may_run(ix) {
            let dep = *day.waiting_for(ix).first()?;
            return Some(WaitingFor::Dependency {
                task: day.graph().id(dep).clone(),
                date: day.date(),
            });
        }
        None
    }

    /// Whether a task in `status` is a row that can wait: neither running (or stopping, or
    /// rolling back) nor done.
    pub fn task_may_wait(status: TaskStatus) -> bool {
        !status.is_done()
            && !matches!(
                status,
                TaskStatus::Running | TaskStatus::Stopping | TaskStatus::RollingBack
            )
    }

    /// Whether a shard in `status` is a row that can wait: neither in progress nor done.
    pub fn shard_may_wait(status: ShardStatus) -> bool {
        !matches!(
            status,
            ShardStatus::Running
                | ShardStatus::Stopping
                | ShardStatus::RollingBack
                | ShardStatus::Succeeded
                | ShardStatus::Skipped
        )
    }
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
    /// Runs that failed in this generation (the automatic retries used up).
    pub failures: u32,
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
    /// Who holds the shard itself, if someone does.
    pub held_by: Option<String>,
    /// What it waits for, when it is neither in progress nor done (see [`WaitingFor`]).
    pub waiting_for: Option<WaitingFor>,
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
            failures: v.failures,
            executor: v.executor.map(str::to_owned),
            steps_done: v.checkpoint.map_or(0, |c| c.steps_done),
            started_ms: v.started_ms,
            finished_ms: v.finished_ms,
            last_error: v.last_error.map(str::to_owned),
            note,
            held_by: v.held_by.map(str::to_owned),
            waiting_for: None,
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

/// How a day ended: completed, or stalled until an operator acts.
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
