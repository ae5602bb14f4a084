//! The JSON shapes of the HTTP API and the WebSocket (`proto-docs/http-api.md`), owned by the
//! server: core types are not `Serialize` for the wire, so each is converted here, once.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use taskflow_core::behavior::{LogLevel, LogLine};
use taskflow_core::flow::Flow;
use taskflow_core::state::{
    AuditEntry, OperatorAction, ShardStatus, TaskStatus, allowed_events, shard_event_for,
    transition,
};
use taskflow_core::{Board, ExecutorView, ShardInfo, SlotView, TaskView, WaitingFor};

/// Every operator action that moves shards through the state machine, in the order the
/// console shows its buttons (hold, free and force-start follow them).
pub(crate) const ACTIONS: [&str; 7] =
    ["execute", "stop", "skip", "retry", "rollback", "confirm", "mark_failed"];

/// The action named in a URL (`cascade` only matters for `rollback`).
pub(crate) fn parse_action(name: &str, cascade: bool) -> Option<OperatorAction> {
    Some(match name {
        "execute" => OperatorAction::Execute,
        "stop" => OperatorAction::Stop,
        "skip" => OperatorAction::Skip,
        "retry" => OperatorAction::Retry,
        "rollback" => OperatorAction::Rollback { cascade },
        "confirm" => OperatorAction::Confirm,
        "mark_failed" => OperatorAction::MarkFailed,
        "hold" => OperatorAction::Hold,
        "free" => OperatorAction::Free,
        "force_start" => OperatorAction::ForceStart,
        _ => return None,
    })
}

pub(crate) fn action_name(action: OperatorAction) -> &'static str {
    match action {
        OperatorAction::Execute => "execute",
        OperatorAction::Stop => "stop",
        OperatorAction::Skip => "skip",
        OperatorAction::Retry => "retry",
        OperatorAction::Rollback { .. } => "rollback",
        OperatorAction::Confirm => "confirm",
        OperatorAction::MarkFailed => "mark_failed",
        OperatorAction::Hold => "hold",
        OperatorAction::Free => "free",
        OperatorAction::ForceStart => "force_start",
    }
}

/// The wire name of a shard status (`rolling_back`).
pub(crate) fn shard_status_name(s: ShardStatus) -> &'static str {
    match s {
        ShardStatus::Registered => "registered",
        ShardStatus::Pending => "pending",
        ShardStatus::Running => "running",
        ShardStatus::Succeeded => "succeeded",
        ShardStatus::Failed => "failed",
        ShardStatus::Skipped => "skipped",
        ShardStatus::Stopping => "stopping",
        ShardStatus::Stopped => "stopped",
        ShardStatus::RollingBack => "rolling_back",
        ShardStatus::RolledBack => "rolled_back",
        ShardStatus::RollbackFailed => "rollback_failed",
        ShardStatus::Unconfirmed => "unconfirmed",
    }
}

/// The shard status with this wire name.
pub(crate) fn parse_shard_status(name: &str) -> Option<ShardStatus> {
    ShardStatus::ALL.into_iter().find(|s| shard_status_name(*s) == name)
}

/// The wire name of a task status (`not_applicable`).
pub(crate) fn task_status_name(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Unregistered => "unregistered",
        TaskStatus::NotApplicable => "not_applicable",
        TaskStatus::Registered => "registered",
        TaskStatus::Pending => "pending",
        TaskStatus::Running => "running",
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Failed => "failed",
        TaskStatus::Skipped => "skipped",
        TaskStatus::Stopping => "stopping",
        TaskStatus::Stopped => "stopped",
        TaskStatus::RollingBack => "rolling_back",
        TaskStatus::RolledBack => "rolled_back",
        TaskStatus::Unconfirmed => "unconfirmed",
    }
}

/// Statuses a task rests in until something happens: a WebSocket client is always shown
/// these, even when the task left them again within one coalesced batch.
pub(crate) fn is_resting(s: TaskStatus) -> bool {
    matches!(
        s,
        TaskStatus::Succeeded
            | TaskStatus::Failed
            | TaskStatus::Skipped
            | TaskStatus::NotApplicable
            | TaskStatus::Stopped
            | TaskStatus::RolledBack
            | TaskStatus::Unconfirmed
    )
}

/// RFC 3339 in UTC with milliseconds, from ms since the epoch.
pub(crate) fn time_ms(ms: Option<i64>) -> Option<String> {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis).map(time)
}

pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `GET /api/days/{date}` and the `board` of a `snapshot` frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct BoardDto {
    pub(crate) date: String,
    pub(crate) flow: String,
    pub(crate) seq: u64,
    pub(crate) closed: bool,
    pub(crate) tasks: Vec<TaskDto>,
    /// The flow's resources: units, units in use, queued shards waiting for each (empty on a
    /// past day and for a flow without resources).
    pub(crate) resources: Vec<ResourceDto>,
    /// A past day only: what reading its journal found that deserves a look (a torn tail, a
    /// snapshot fallback); absent when there is nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) journal_warnings: Vec<String>,
    /// The day's `deadline`, if the flow sets one.
    pub(crate) deadline: Option<String>,
    /// When the day's last task is predicted to end (`null` before the first forecast, or
    /// when some task is predicted never to end).
    pub(crate) predicted_end: Option<String>,
    /// The predicted end is after the deadline.
    pub(crate) at_risk: bool,
    /// When the forecast was computed (`null`: none yet, or a past day).
    pub(crate) forecast_at: Option<String>,
}

/// One resource of the board.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ResourceDto {
    pub(crate) name: String,
    pub(crate) units: u32,
    pub(crate) in_use: u32,
    pub(crate) waiting: u32,
}

/// One board row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TaskDto {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) level: String,
    pub(crate) behavior: String,
    pub(crate) trigger: String,
    /// Higher runs first (the flow's `priority`, default 0).
    pub(crate) priority: i32,
    pub(crate) depends_on: Vec<String>,
    pub(crate) status: &'static str,
    pub(crate) not_applicable: bool,
    pub(crate) shards: serde_json::Map<String, serde_json::Value>,
    pub(crate) attempts: u64,
    pub(crate) registered_at: Option<String>,
    pub(crate) started_at: Option<String>,
    pub(crate) finished_at: Option<String>,
    pub(crate) fires_at: Option<String>,
    pub(crate) note: Option<String>,
    /// Who holds the task (nothing of it is dispatched), if someone does.
    pub(crate) held_by: Option<String>,
    /// How many of its shards are held one by one.
    pub(crate) held_shards: u32,
    /// An operator force-started it.
    pub(crate) forced: bool,
    /// What it waits for (`null` while it runs or once it is done).
    pub(crate) waiting_for: Option<WaitingForDto>,
    pub(crate) allowed_actions: Vec<&'static str>,
    /// Its `deadline`, if it has one.
    pub(crate) deadline: Option<String>,
    /// Predicted (or, once it started, actual) start, from the latest forecast.
    pub(crate) predicted_start: Option<String>,
    /// Predicted (or, once done, actual) end, from the latest forecast.
    pub(crate) predicted_end: Option<String>,
    /// Its (predicted) end is after its deadline.
    pub(crate) at_risk: bool,
}

/// `GET /api/days/{date}/forecast`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ForecastDto {
    pub(crate) date: String,
    /// When it was computed; `null` for a past day (its rows are what happened) or before the
    /// first forecast of the running day.
    pub(crate) computed_at: Option<String>,
    pub(crate) deadline: Option<String>,
    pub(crate) predicted_end: Option<String>,
    pub(crate) at_risk: bool,
    /// What the forecast assumed.
    pub(crate) assumptions: Vec<String>,
    pub(crate) tasks: Vec<TaskForecastDto>,
}

/// One task of the forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TaskForecastDto {
    pub(crate) id: String,
    pub(crate) status: &'static str,
    pub(crate) depends_on: Vec<String>,
    pub(crate) deadline: Option<String>,
    pub(crate) predicted_start: Option<String>,
    pub(crate) predicted_end: Option<String>,
    pub(crate) at_risk: bool,
    /// Start and end are what happened (the task is done).
    pub(crate) actual: bool,
    /// Some durations are defaults (no history of the task).
    pub(crate) low_confidence: bool,
    /// Why it is predicted never to start or end, or what was assumed of it.
    pub(crate) note: Option<String>,
}

/// The forecast part of a board row: start, end, at risk, actual, low confidence, note. The
/// latest forecast's line; without one (a past day, or none computed yet) what happened.
fn forecast_line(t: &TaskView) -> (Option<i64>, Option<i64>, bool, bool, bool, Option<String>) {
    match &t.forecast {
        Some(f) => (
            f.predicted_start_ms,
            f.predicted_end_ms,
            f.at_risk,
            f.actual,
            f.low_confidence,
            f.note.clone(),
        ),
        None => {
            let late = matches!((t.finished_ms, t.deadline_ms), (Some(e), Some(d)) if e > d);
            (t.started_ms, t.finished_ms, late, t.status.is_done(), false, None)
        }
    }
}

/// The forecast of a board (`GET /api/days/{date}/forecast`).
pub(crate) fn forecast_dto(b: &Board) -> ForecastDto {
    let tasks = b
        .tasks
        .iter()
        .map(|t| {
            let (start, end, at_risk, actual, low_confidence, note) = forecast_line(t);
            TaskForecastDto {
                id: t.id.to_string(),
                status: task_status_name(t.status),
                depends_on: t.depends_on.iter().map(|d| d.to_string()).collect(),
                deadline: time_ms(t.deadline_ms),
                predicted_start: time_ms(start),
                predicted_end: time_ms(end),
                at_risk,
                actual,
                low_confidence,
                note,
            }
        })
        .collect();
    let (computed_at, predicted_end, at_risk, assumptions) = day_line(b);
    ForecastDto {
        date: b.date.to_string(),
        computed_at: time_ms(computed_at),
        deadline: time_ms(b.deadline_ms),
        predicted_end: time_ms(predicted_end),
        at_risk,
        assumptions,
        tasks,
    }
}

/// The day's line: computed at, end, at risk, assumptions (without a forecast: the last end
/// once every task is done).
fn day_line(b: &Board) -> (Option<i64>, Option<i64>, bool, Vec<String>) {
    match &b.forecast {
        Some(f) => (Some(f.computed_at_ms), f.predicted_end_ms, f.at_risk, f.assumptions.clone()),
        None => {
            let end =
                b.all_done().then(|| b.tasks.iter().filter_map(|t| t.finished_ms).max()).flatten();
            let late = matches!((end, b.deadline_ms), (Some(e), Some(d)) if e > d);
            (None, end, late, Vec::new())
        }
    }
}

/// `waiting_for` of a task or shard row: `{"kind": …}` and the kind's fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum WaitingForDto {
    Dependency { task: String, date: String },
    Operator,
    Trigger { at: Option<String> },
    Retry { at: Option<String> },
    Slot { behavior: String },
    Resource { resource: String },
    Held { by: String },
}

impl WaitingForDto {
    pub(crate) fn of(w: &WaitingFor) -> WaitingForDto {
        match w {
            WaitingFor::Dependency { task, date } => {
                WaitingForDto::Dependency { task: task.to_string(), date: date.to_string() }
            }
            WaitingFor::Operator => WaitingForDto::Operator,
            WaitingFor::Trigger { at_ms } => WaitingForDto::Trigger { at: time_ms(Some(*at_ms)) },
            WaitingFor::Retry { at_ms } => WaitingForDto::Retry { at: time_ms(Some(*at_ms)) },
            WaitingFor::Slot { behavior } => WaitingForDto::Slot { behavior: behavior.clone() },
            WaitingFor::Resource { resource } => {
                WaitingForDto::Resource { resource: resource.clone() }
            }
            WaitingFor::Held { by } => WaitingForDto::Held { by: by.clone() },
        }
    }
}

/// One shard row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ShardDto {
    pub(crate) index: u32,
    pub(crate) key: String,
    pub(crate) status: &'static str,
    pub(crate) attempt: u32,
    pub(crate) generation: u32,
    pub(crate) failures: u32,
    pub(crate) executor: Option<String>,
    pub(crate) step: u32,
    pub(crate) step_name: Option<String>,
    pub(crate) steps: Option<u32>,
    pub(crate) error: Option<String>,
    pub(crate) note: Option<String>,
    /// Who holds the shard itself, if someone does.
    pub(crate) held_by: Option<String>,
    /// What it waits for (`null` while it runs or once it is done).
    pub(crate) waiting_for: Option<WaitingForDto>,
    pub(crate) started_at: Option<String>,
    pub(crate) finished_at: Option<String>,
    pub(crate) allowed_actions: Vec<&'static str>,
}

/// One executor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ExecutorDto {
    pub(crate) name: String,
    pub(crate) slots: usize,
    pub(crate) busy: usize,
    pub(crate) abandoned: usize,
    pub(crate) state: &'static str,
    pub(crate) heartbeat_at: String,
    pub(crate) heartbeat_age_ms: u64,
    pub(crate) jobs: Vec<String>,
    pub(crate) behaviors: Vec<String>,
}

impl ExecutorDto {
    /// Equal apart from the heartbeat (which changes with every report).
    pub(crate) fn same_as(&self, o: &ExecutorDto) -> bool {
        self.name == o.name
            && self.slots == o.slots
            && self.busy == o.busy
            && self.abandoned == o.abandoned
            && self.state == o.state
            && self.jobs == o.jobs
    }
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct AuditDto {
    pub(crate) seq: u64,
    pub(crate) at: Option<String>,
    pub(crate) actor: String,
    pub(crate) action: &'static str,
    pub(crate) cascade: bool,
    pub(crate) task: String,
    pub(crate) shard: Option<u32>,
    pub(crate) reason: String,
    pub(crate) from: String,
}

impl AuditDto {
    pub(crate) fn of(e: &AuditEntry) -> AuditDto {
        let r = &e.record;
        AuditDto {
            seq: e.seq,
            at: time_ms(Some(e.at_ms)),
            actor: r.actor.clone(),
            action: action_name(r.action),
            cascade: matches!(r.action, OperatorAction::Rollback { cascade: true }),
            task: r.target.task.to_string(),
            shard: r.target.shard,
            reason: r.reason.clone(),
            from: r.from.clone(),
        }
    }
}

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct LogLineDto {
    pub(crate) at: String,
    pub(crate) level: &'static str,
    /// Known on live `log` frames; the kept log does not record it (`null`).
    pub(crate) attempt: Option<u32>,
    pub(crate) step: Option<usize>,
    pub(crate) line: String,
}

impl LogLineDto {
    pub(crate) fn of(l: &LogLine, attempt: Option<u32>) -> LogLineDto {
        LogLineDto {
            at: time(l.at),
            level: match l.level {
                LogLevel::Debug => "debug",
                LogLevel::Info => "info",
                LogLevel::Warn => "warn",
                LogLevel::Error => "error",
            },
            attempt,
            step: l.step,
            line: l.message.clone(),
        }
    }
}

/// Converts the runtime's board to its DTO.
pub(crate) fn board_dto(flow: &Flow, b: &Board) -> BoardDto {
    BoardDto {
        date: b.date.to_string(),
        flow: flow.settings().name.clone(),
        seq: b.seq,
        closed: b.closed,
        tasks: b.tasks.iter().map(|t| task_dto(flow, b, t)).collect(),
        resources: b
            .resources
            .iter()
            .map(|r| ResourceDto {
                name: r.name.clone(),
                units: r.units,
                in_use: r.in_use,
                waiting: r.waiting,
            })
            .collect(),
        journal_warnings: Vec::new(),
        deadline: time_ms(b.deadline_ms),
        predicted_end: time_ms(day_line(b).1),
        at_risk: day_line(b).2,
        forecast_at: time_ms(day_line(b).0),
    }
}

/// Whether every dependency of `t` is done on the board (execute and retry need it).
fn deps_done(b: &Board, t: &TaskView) -> bool {
    t.depends_on.iter().all(|d| b.task(d.as_str()).is_some_and(|v| v.status.is_done()))
}

pub(crate) fn task_dto(flow: &Flow, b: &Board, t: &TaskView) -> TaskDto {
    let mut shards = serde_json::Map::new();
    shards.insert("total".into(), t.counts.total().into());
    for s in ShardStatus::ALL {
        shards.insert(shard_status_name(s).into(), t.counts.get(s).into());
    }
    let deps = deps_done(b, t);
    let mut allowed: Vec<&'static str> = if b.closed || t.status == TaskStatus::Unregistered {
        Vec::new()
    } else {
        ACTIONS
            .into_iter()
            .filter(|a| {
                let action = parse_action(a, false).expect("every listed action parses");
                let kind = shard_event_for(action).kind();
                let any = t.counts.non_zero().any(|(s, _)| transition(s, kind).is_ok());
                any && (deps || !needs_dependencies(action))
            })
            .collect()
    };
    // Hold, free and force-start, by the rules of `state::decide`.
    if !b.closed {
        let done = t.status.is_done();
        if t.held_by.is_none() && !done {
            allowed.push("hold");
        }
        if t.held_by.is_some() {
            allowed.push("free");
        }
        let unregistered = t.status == TaskStatus::Unregistered;
        let startable =
            if unregistered { !t.forced } else { t.counts.get(ShardStatus::Registered) > 0 };
        if !done && startable {
            allowed.push("force_start");
        }
    }
    TaskDto {
        id: t.id.to_string(),
        name: t.name.clone(),
        level: flow.task_by_id(t.id.as_str()).map(|d| d.level.to_string()).unwrap_or_default(),
        behavior: t.behavior.clone(),
        trigger: t.trigger.clone(),
        priority: flow.task_by_id(t.id.as_str()).map(|d| d.priority).unwrap_or_default(),
        depends_on: t.depends_on.iter().map(|d| d.to_string()).collect(),
        status: task_status_name(t.status),
        not_applicable: t.not_applicable,
        shards,
        attempts: t.attempts,
        registered_at: time_ms(t.registered_ms),
        started_at: time_ms(t.started_ms),
        finished_at: time_ms(t.finished_ms),
        fires_at: t.fires_at.map(time),
        note: t.note.clone(),
        held_by: t.held_by.clone(),
        held_shards: t.held_shards,
        forced: t.forced,
        waiting_for: t.waiting_for.as_ref().map(WaitingForDto::of),
        allowed_actions: allowed,
        deadline: time_ms(t.deadline_ms),
        predicted_start: time_ms(forecast_line(t).0),
        predicted_end: time_ms(forecast_line(t).1),
        at_risk: forecast_line(t).2,
    }
}

fn needs_dependencies(a: OperatorAction) -> bool {
    matches!(a, OperatorAction::Execute | OperatorAction::Retry)
}

/// Step names by behavior name (each behavior's `steps()`, read once from the registry).
pub(crate) type Steps = BTreeMap<String, Vec<String>>;

/// The step names of `task`'s behavior, if this server hosts it.
pub(crate) fn task_steps<'a>(flow: &Flow, steps: &'a Steps, task: &str) -> Option<&'a [String]> {
    flow.task_by_id(task).and_then(|d| steps.get(&d.behavior)).map(Vec::as_slice)
}

/// A shard row; `deps_done` and `closed` gate its actions as [`task_dto`] does. `steps` are
/// the step names of its task's behavior: `steps` is their count and `step_name` the name of
/// the last step completed (`null` before the first).
pub(crate) fn shard_dto(
    s: &ShardInfo,
    deps_done: bool,
    closed: bool,
    steps: Option<&[String]>,
) -> ShardDto {
    let allowed = if closed {
        Vec::new()
    } else {
        let events = allowed_events(s.status);
        let mut allowed: Vec<&'static str> = ACTIONS
            .into_iter()
            .filter(|a| {
                let action = parse_action(a, false).expect("every listed action parses");
                events.contains(&shard_event_for(action).kind())
                    && (deps_done || !needs_dependencies(action))
            })
            .collect();
        match &s.held_by {
            Some(_) => allowed.push("free"),
            None if !matches!(s.status, ShardStatus::Succeeded | ShardStatus::Skipped) => {
                allowed.push("hold")
            }
            None => {}
        }
        allowed
    };
    ShardDto {
        index: s.index,
        key: s.key.clone(),
        status: shard_status_name(s.status),
        attempt: s.attempt,
        generation: s.generation,
        failures: s.failures,
        executor: s.executor.clone(),
        step: s.steps_done,
        step_name: (s.steps_done > 0)
            .then(|| steps.and_then(|n| n.get(s.steps_done as usize - 1)).cloned())
            .flatten(),
        steps: steps.map(|n| n.len() as u32),
        error: s.last_error.clone(),
        note: s.note.clone(),
        held_by: s.held_by.clone(),
        waiting_for: s.waiting_for.as_ref().map(WaitingForDto::of),
        started_at: time_ms(s.started_ms),
        finished_at: time_ms(s.finished_ms),
        allowed_actions: allowed,
    }
}

/// Whether the task's dependencies are done, for its shards' actions.
pub(crate) fn task_deps_done(b: &Board, id: &str) -> bool {
    b.task(id).is_some_and(|t| deps_done(b, t))
}

/// The executors as of `now`. In-process executors live as long as the manager answers, so
/// their heartbeat is the board's time.
pub(crate) fn executors_dto(
    execs: &[ExecutorView],
    behaviors: &[String],
    now: DateTime<Utc>,
) -> Vec<ExecutorDto> {
    execs
        .iter()
        .map(|e| {
            let mut jobs = Vec::new();
            let mut abandoned = 0;
            for s in &e.slots {
                match s {
                    SlotView::Idle => {}
                    SlotView::Busy(j) => jobs.push(j.clone()),
                    SlotView::Abandoned(j) => {
                        abandoned += 1;
                        jobs.push(format!("{j} (abandoned)"));
                    }
                }
            }
            ExecutorDto {
                name: e.name.clone(),
                slots: e.slots.len(),
                busy: jobs.len(),
                abandoned,
                state: "up",
                heartbeat_at: time(now),
                heartbeat_age_ms: 0,
                jobs,
                behaviors: behaviors.to_vec(),
            }
        })
        .collect()
}
