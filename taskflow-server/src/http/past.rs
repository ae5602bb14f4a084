//! Past business days, read-only: a date other than the running day is served from its
//! journal in `<data>/days/<date>/`.
//!
//! **Reading never writes:** no torn-tail repair, no metadata rewrite, no store created in an
//! empty day directory (`tests/http_past.rs` hashes every file of the past days before and
//! after its GETs). A torn tail is reported in the board's `journal_warnings` and not served;
//! a damaged journal is `500 day_damaged`.
//!
//! The day's store is read without write access ([`taskflow_core::PastDay::open`]: a shared
//! lock for the duration of the read — the running day is another directory, so this never
//! contends with the manager — and nothing in the directory changes), and its recovered
//! [`DayState`] is kept. A closed day never changes again, so its state is cached (the newest
//! few closed days read, not every one: a server runs for years) and its seq remembered for
//! the day list; a day that was never closed (a run abandoned before the day ended) is read
//! again on each request, as another process might still be running it. A day retention
//! removed is gone from the cache at its next request. The board is built from the
//! state the way the manager builds its own (`actors/manager/views.rs`) and converted with the
//! same DTO code; nothing on a past day can be acted on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use taskflow_core::flow::Flow;
use taskflow_core::model::BusinessDate;
use taskflow_core::model::Trigger;
use taskflow_core::state::{DayState, ShardStatus, ShardView, TaskStatus};
use taskflow_core::store;
use taskflow_core::{Board, JournalError, ShardInfo, TaskIx, TaskView, WaitingFor};
use tokio::sync::Mutex;

use super::error::ApiError;

/// One past day's recovered state.
pub(crate) struct PastDay {
    /// The flow the day opened with (kept in `DATA/flows/<date>/`), else the flow in use.
    pub(crate) flow: Arc<Flow>,
    pub(crate) state: DayState,
    pub(crate) board: Board,
    /// What the read-only open found that deserves a look (a torn tail, left in place and not
    /// served; a snapshot fallback), one sentence each.
    pub(crate) warnings: Vec<String>,
}

/// How many closed days [`PastDays`] keeps read (the newest dates).
const MAX_CACHED: usize = 8;

/// The past days read so far (closed days only, at most [`MAX_CACHED`]).
#[derive(Default)]
pub(crate) struct PastDays {
    /// Held while a day is loaded, so two requests never open one journal at once.
    cache: Mutex<HashMap<BusinessDate, Arc<PastDay>>>,
    /// The seq of every closed day read (for `GET /api/days`, which lists every day: a few
    /// bytes per day instead of its whole state).
    closed: std::sync::Mutex<HashMap<BusinessDate, u64>>,
}

impl PastDays {
    /// Whether the past day `date` closed, and the seq its board is at (errors as
    /// [`PastDays::get`]). A closed day is read once, then only remembered by its seq.
    pub(crate) async fn outcome(
        &self,
        flow: &Arc<Flow>,
        data_dir: &std::path::Path,
        date: BusinessDate,
        running: BusinessDate,
    ) -> Result<(bool, u64), ApiError> {
        let known = self.closed.lock().unwrap_or_else(|e| e.into_inner()).get(&date).copied();
        if let Some(seq) = known
            && taskflow_core::day_dir(data_dir, date).is_dir()
        {
            return Ok((true, seq));
        }
        let day = self.get(flow, data_dir, date, running).await?;
        if day.board.closed {
            self.closed.lock().unwrap_or_else(|e| e.into_inner()).insert(date, day.board.seq);
        }
        Ok((day.board.closed, day.board.seq))
    }

    /// The day `date` from `data_dir`: 404 without a journal, 500 when it cannot be read.
    pub(crate) async fn get(
        &self,
        flow: &Arc<Flow>,
        data_dir: &std::path::Path,
        date: BusinessDate,
        running: BusinessDate,
    ) -> Result<Arc<PastDay>, ApiError> {
        let mut cache = self.cache.lock().await;
        let dir = taskflow_core::day_dir(data_dir, date);
        if !dir.is_dir() {
            // Retention may have removed it since it was read.
            cache.remove(&date);
            return Err(ApiError::not_found(format!(
                "no business day {date} in the data directory {} (no journal in {}; this server \
                 runs {running})",
                data_dir.display(),
                dir.display()
            )));
        }
        if store::is_empty_dir(&dir) {
            // Never created here: a read creates nothing (an empty directory may be waiting
            // for `--recover-from-replicas`, which a store in it would block).
            return Err(ApiError::not_found(format!(
                "no business day {date} in the data directory {}: {} is an empty directory (no \
                 journal was ever written in it; this server runs {running})",
                data_dir.display(),
                dir.display()
            )));
        }
        if let Some(day) = cache.get(&date) {
            return Ok(day.clone());
        }
        let open_dir = dir.clone();
        let (data_dir, fallback) = (data_dir.to_owned(), flow.clone());
        let (flow, read) = tokio::task::spawn_blocking(move || {
            let (flow, why) = taskflow_core::flow::flow_of_day(&data_dir, date, &fallback);
            let read = read_state(open_dir, date, Arc::new(flow.graph().clone()));
            (
                flow,
                read.map(|(state, mut warnings)| {
                    warnings.extend(why);
                    (state, warnings)
                }),
            )
        })
        .await
        .map_err(|e| ApiError::internal(format!("reading {}: {e}", dir.display())))?;
        let (state, warnings) = read.map_err(|e| unreadable(&dir, e))?;
        let board = board_of(&flow, &state);
        let day = Arc::new(PastDay { flow, state, board, warnings });
        if day.state.is_closed() {
            // Bounded: a server that runs for years keeps the newest few closed days read,
            // not every day anyone ever looked at (an older one is read again when asked).
            while cache.len() >= MAX_CACHED
                && let Some(oldest) = cache.keys().min().copied()
            {
                cache.remove(&oldest);
            }
            cache.insert(date, day.clone());
        }
        Ok(day)
    }
}

/// Reads the day's state from its store, writing nothing; with what deserves a look.
fn read_state(
    dir: PathBuf,
    date: BusinessDate,
    graph: Arc<taskflow_core::TaskGraph>,
) -> Result<(DayState, Vec<String>), JournalError> {
    let day = taskflow_core::PastDay::open(&dir, date, graph)?;
    let mut warnings: Vec<String> = day
        .torn_tail()
        .map(|t| {
            format!(
                "the journal's log ends in a torn tail: {} from byte {} ({} bytes, {}); never \
                 acknowledged, so not served and left in place",
                t.path.display(),
                t.offset,
                t.dropped_bytes,
                t.reason
            )
        })
        .into_iter()
        .collect();
    warnings.extend(day.warnings().iter().cloned());
    Ok((day.into_state(), warnings))
}

fn unreadable(dir: &std::path::Path, e: JournalError) -> ApiError {
    if let JournalError::Store(store::Error::Locked { .. }) = &e {
        return ApiError {
            status: StatusCode::CONFLICT,
            code: "day_locked",
            message: format!(
                "the journal in {} is in use by another taskflow process: {e}",
                dir.display()
            ),
        };
    }
    if let JournalError::Store(store::Error::Io { .. }) = &e {
        return ApiError::internal(format!("the journal in {} cannot be read: {e}", dir.display()));
    }
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "day_damaged",
        message: format!(
            "the journal in {} is damaged or not this flow's day: {e}. Nothing was changed; run \
             `taskflow store inspect {}` to see what is wrong and the next step",
            dir.display(),
            dir.display()
        ),
    }
}

/// The board of a recovered day, as the manager would show it (no executors, no timers); the
/// headless runner reports a day closed before its start with it.
pub fn board_of(flow: &Flow, s: &DayState) -> Board {
    let tasks = flow.graph().topo_order().iter().map(|&ix| task_view(flow, s, ix)).collect();
    Board {
        date: s.date(),
        seq: s.last_seq(),
        durable_seq: s.last_seq(),
        closed: s.is_closed(),
        tasks,
        executors: Vec::new(),
        resources: Vec::new(),
        deadline_ms: deadline_ms(flow.settings().deadline, flow, s),
        forecast: None,
    }
}

/// A deadline's instant on the day's business date, in ms.
fn deadline_ms(
    d: Option<taskflow_core::model::Deadline>,
    flow: &Flow,
    s: &DayState,
) -> Option<i64> {
    d.and_then(|d| d.at(s.date(), flow.settings().time_zone)).map(|t| t.timestamp_millis())
}

fn task_view(flow: &Flow, s: &DayState, ix: TaskIx) -> TaskView {
    let def = flow.task(ix);
    let status = s.task_status(ix);
    // Attempts and timings from the shards, as the manager rebuilds them on recovery.
    let (mut attempts, mut started, mut finished) = (0u64, None::<i64>, None::<i64>);
    if s.is_registered(ix) {
        for v in s.shards(ix, None, 0, usize::MAX) {
            attempts += u64::from(v.attempt);
            if let Some(st) = v.started_ms {
                started = Some(started.map_or(st, |m| m.min(st)));
            }
            if let Some(f) = v.finished_ms {
                finished = Some(finished.map_or(f, |m| m.max(f)));
            }
        }
    }
    let registered_ms = s.registered_at_ms(ix);
    let note = (!s.is_closed() && !s.dependencies_done(ix)).then(|| {
        let waiting: Vec<String> =
            s.waiting_for(ix).iter().map(|&p| format!("`{}`", s.graph().id(p))).collect();
        format!("waits for {}", waiting.join(", "))
    });
    TaskView {
        id: def.id.clone(),
        name: def.name.clone(),
        behavior: def.behavior.clone(),
        trigger: def.trigger.to_string(),
        depends_on: def.depends_on.clone(),
        status,
        counts: *s.counts(ix),
        attempts,
        registered_ms,
        started_ms: started,
        finished_ms: if status.is_done() { finished.or(registered_ms) } else { None },
        not_applicable: status == TaskStatus::NotApplicable,
        fires_at: None,
        note,
        held_by: s.held_by(ix, None).map(str::to_owned),
        held_shards: s.holds().filter(|&(t, sh, _)| t == ix && sh.is_some()).count() as u32,
        forced: s.is_forced(ix),
        waiting_for: past_waiting_for(flow, s, ix, status),
        deadline_ms: deadline_ms(def.deadline, flow, s),
        forecast: None,
    }
}

/// What a past day's task waits for, as far as its journal tells (no slots, timers or
/// resources: nothing runs it here): a hold, a dependency, or an operator.
fn past_waiting_for(
    flow: &Flow,
    s: &DayState,
    ix: TaskIx,
    status: TaskStatus,
) -> Option<WaitingFor> {
    if s.is_closed() || !WaitingFor::task_may_wait(status) {
        return None;
    }
    if let Some(w) = WaitingFor::in_state(s, ix, None) {
        return Some(w);
    }
    match status {
        TaskStatus::Unregistered | TaskStatus::Pending => None,
        TaskStatus::Registered => {
            (flow.task(ix).trigger == Trigger::Manual).then_some(WaitingFor::Operator)
        }
        _ => Some(WaitingFor::Operator),
    }
}

/// What a past day's shard waits for, as [`past_waiting_for`] for a task.
fn past_shard_waiting_for(s: &DayState, ix: TaskIx, v: &ShardView<'_>) -> Option<WaitingFor> {
    if s.is_closed() || !WaitingFor::shard_may_wait(v.status) {
        return None;
    }
    if let Some(w) = WaitingFor::in_state(s, ix, Some(v.index)) {
        return Some(w);
    }
    match v.status {
        ShardStatus::Registered | ShardStatus::Pending => None,
        _ => Some(WaitingFor::Operator),
    }
}

impl PastDay {
    /// A page of a task's shards (empty for an unknown or unregistered task).
    pub(crate) fn shards(
        &self,
        task: &str,
        status: Option<ShardStatus>,
        offset: usize,
        limit: usize,
    ) -> Vec<(ShardInfo, Option<String>)> {
        let s = &self.state;
        let Some(ix) = s.graph().index_of(task) else { return Vec::new() };
        if !s.is_registered(ix) {
            return Vec::new();
        }
        s.shards(ix, status, offset, limit)
            .into_iter()
            .map(|v| {
                let (mut info, step) = shard_info(&v);
                info.waiting_for = past_shard_waiting_for(s, ix, &v);
                (info, step)
            })
            .collect()
    }
}

/// A shard row and the name of its last completed step (from its checkpoint).
fn shard_info(v: &ShardView<'_>) -> (ShardInfo, Option<String>) {
    let info = ShardInfo::from_view(v, None);
    let step = v.checkpoint.map(|c| c.last_step.to_owned()).filter(|n| !n.is_empty());
    (info, step)
}
