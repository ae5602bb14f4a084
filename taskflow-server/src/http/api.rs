//! The JSON API under `/api`: health, the day board, one task's shards, shard logs, operator
//! actions, executors and the audit log. Path parameters and queries are parsed here by hand so
//! that every bad input gets a JSON error naming it (axum's extractors answer in plain text).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use taskflow_core::model::{BusinessDate, TaskId};
use taskflow_core::state::{Command, ShardStatus, Target};
use taskflow_core::{Board, ShardInfo};

use super::AppState;
use super::dto::{
    AuditDto, BoardDto, LogLineDto, board_dto, executors_dto, parse_action, parse_shard_status,
    shard_dto, task_deps_done, task_dto,
};
use super::error::ApiError;
use super::past::PastDay;

type ApiResult = Result<Response, ApiError>;

/// Most shards in one page.
const MAX_LIMIT: usize = 1000;

/// `GET /api/health`.
pub(crate) async fn health(State(app): State<AppState>) -> ApiResult {
    let b = app.manager().board().await?;
    Ok(Json(serde_json::json!({
        "status": "ok",
        "date": b.date.to_string(),
        "seq": b.seq,
        "durable_seq": b.durable_seq,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response())
}

/// `GET /api/days/{date}`: the running day's board, or a past day's from its journal.
pub(crate) async fn day(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(date): Path<String>,
) -> ApiResult {
    app.auth().viewer(&headers, None)?;
    let day = resolve_day(&app, &date).await?;
    let b = day.board(&app).await?;
    Ok(Json(day.board_dto(&app, &b)).into_response())
}

/// `GET /api/days/{date}/forecast`: each task's predicted start and end, its deadline and
/// whether it is at risk, and the day's predicted end, as of the latest forecast (with the
/// time it was computed); a past day's rows are what happened (`computed_at` null).
pub(crate) async fn forecast(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(date): Path<String>,
) -> ApiResult {
    app.auth().viewer(&headers, None)?;
    let day = resolve_day(&app, &date).await?;
    let b = day.board(&app).await?;
    Ok(Json(crate::http::dto::forecast_dto(&b)).into_response())
}

/// `GET /api/days`: every business day in the data directory, newest first, with its
/// outcome: `open` (the day this server runs, not closed yet), `closed` (every task done),
/// `unfinished`
/// (a store that did not close: stalled, or killed and not resumed), `damaged` (it cannot be
/// read). Past days are read read-only (and cached), as `GET /api/days/{date}` does.
pub(crate) async fn days(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    app.auth().viewer(&headers, None)?;
    let running = app.date();
    let mut dates: Vec<BusinessDate> = taskflow_core::list_days(app.data_dir())
        .map_err(|e| ApiError::internal(format!("listing the business days: {e}")))?
        .into_iter()
        .map(|d| d.date)
        .collect();
    if !dates.contains(&running) {
        dates.push(running);
    }
    dates.sort_unstable_by(|a, b| b.cmp(a));
    let mut out = Vec::with_capacity(dates.len());
    for d in dates {
        let (outcome, seq) = if d == running {
            let b = app.manager().board().await?;
            (if b.closed { "closed" } else { "open" }, Some(b.seq))
        } else {
            match app.past().outcome(&app.flow(), app.data_dir(), d, running).await {
                Ok((true, seq)) => ("closed", Some(seq)),
                Ok((false, seq)) => ("unfinished", Some(seq)),
                Err(e) if e.status == StatusCode::NOT_FOUND => continue,
                Err(_) => ("damaged", None),
            }
        };
        out.push(serde_json::json!({
            "date": d.to_string(),
            "current": d == running,
            "outcome": outcome,
            "seq": seq,
        }));
    }
    Ok(Json(serde_json::json!({ "days": out })).into_response())
}

/// `GET /api/days/{date}/tasks/{task_id}?status=…&offset=…&limit=…`.
pub(crate) async fn task(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((date, task)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    app.auth().viewer(&headers, None)?;
    let mut statuses: Vec<ShardStatus> = Vec::new();
    let (mut offset, mut limit) = (0usize, 100usize);
    for (k, v) in query_pairs(query.as_deref()) {
        match k.as_str() {
            "status" => statuses.push(parse_shard_status(&v).ok_or_else(|| {
                ApiError::bad_request(format!("unknown shard status {v:?} in query `status`"))
            })?),
            "offset" => offset = number("offset", &v)?,
            "limit" => {
                limit = number("limit", &v)?;
                if limit == 0 || limit > MAX_LIMIT {
                    return Err(ApiError::bad_request(format!(
                        "query `limit` must be between 1 and {MAX_LIMIT}, not {limit}"
                    )));
                }
            }
            _ => {}
        }
    }
    let day = resolve_day(&app, &date).await?;
    let b = day.board(&app).await?;
    let row = b.task(&task).ok_or_else(|| no_task(&task))?;
    statuses.sort_unstable();
    statuses.dedup();
    let deps = task_deps_done(&b, &task);
    // One status (or none): the runtime pages it. Several: page their concatenation.
    let (total, page) = if statuses.len() <= 1 {
        let s = statuses.first().copied();
        let total = match s {
            Some(s) => row.counts.get(s) as usize,
            None => row.counts.total() as usize,
        };
        (total, day.shards(&app, &task, s, offset, limit).await?)
    } else {
        let total: usize = statuses.iter().map(|s| row.counts.get(*s) as usize).sum();
        let mut page = Vec::new();
        let (mut skip, mut want) = (offset, limit);
        for s in &statuses {
            let n = row.counts.get(*s) as usize;
            if skip >= n {
                skip -= n;
                continue;
            }
            let got = day.shards(&app, &task, Some(*s), skip, want).await?;
            skip = 0;
            want -= got.len().min(want);
            page.extend(got);
            if want == 0 {
                break;
            }
        }
        (total, page)
    };
    let read_only = matches!(day, Day::Past(_));
    let shards: Vec<_> = page
        .iter()
        .map(|(s, step_name)| {
            let mut dto = shard_dto(s, deps, b.closed || read_only, app.steps(&task));
            if step_name.is_some() {
                dto.step_name.clone_from(step_name);
            }
            dto
        })
        .collect();
    let mut row = task_dto(&day.flow(&app), &b, row);
    if read_only {
        row.allowed_actions.clear();
    }
    Ok(Json(serde_json::json!({
        "seq": b.seq,
        "task": row,
        "total": total,
        "offset": offset,
        "shards": shards,
    }))
    .into_response())
}

/// `GET /api/days/{date}/tasks/{task_id}/shards/{index}/logs`.
pub(crate) async fn logs(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path((date, task, index)): Path<(String, String, String)>,
) -> ApiResult {
    app.auth().viewer(&headers, None)?;
    let index = shard_index(&index)?;
    let day = resolve_day(&app, &date).await?;
    let b = day.board(&app).await?;
    let row = b.task(&task).ok_or_else(|| no_task(&task))?;
    if index >= row.counts.total() {
        return Err(ApiError::not_found(format!(
            "task `{task}` has no shard {index} (it has {})",
            row.counts.total()
        )));
    }
    if let Day::Past(_) = day {
        // Shard logs live in the memory of the server that ran the day; journals keep none.
        return Ok(Json(serde_json::json!({
            "seq": b.seq,
            "lines": [],
            "truncated": false,
            "note": format!(
                "shard logs are kept in memory by the server that runs a day; none are kept for \
                 business day {} (this server runs {})",
                b.date,
                app.date()
            ),
        }))
        .into_response());
    }
    let lines = app.manager().shard_log(&task, index).await?;
    let truncated = lines.len() >= app.log_lines_per_shard();
    let lines: Vec<_> = lines.iter().map(|l| LogLineDto::of(l, None)).collect();
    Ok(Json(serde_json::json!({"seq": b.seq, "lines": lines, "truncated": truncated}))
        .into_response())
}

/// The optional body of an action.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    cascade: bool,
}

/// `POST /api/days/{date}/tasks/{task_id}/{action}`.
pub(crate) async fn task_action(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((date, task, action)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    act(&app, peer, &headers, &date, &task, None, &action, &body).await
}

/// `POST /api/days/{date}/tasks/{task_id}/shards/{index}/{action}`.
pub(crate) async fn shard_action(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((date, task, index, action)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let index = shard_index(&index)?;
    act(&app, peer, &headers, &date, &task, Some(index), &action, &body).await
}

#[allow(clippy::too_many_arguments)]
async fn act(
    app: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    date: &str,
    task: &str,
    shard: Option<u32>,
    action: &str,
    body: &[u8],
) -> ApiResult {
    let actor = app.auth().operator(headers)?.to_owned();
    let body: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be JSON like {{\"reason\": \"…\", \"cascade\": false}}: {e}"
            ))
        })?
    };
    let action = parse_action(action, body.cascade).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown action `{action}`; expected one of execute, stop, skip, retry, rollback, \
             confirm, mark_failed, hold, free, force_start"
        ))
    })?;
    check_action_day(app, date)?;
    if !app.hub().has_task(task) {
        return Err(no_task(task));
    }
    let cmd = Command {
        actor,
        from: peer.ip().to_string(),
        reason: body.reason,
        action,
        target: Target { task: TaskId::new(task), shard },
    };
    let seq = app.manager().act(cmd).await?;
    Ok(Json(serde_json::json!({"seq": seq})).into_response())
}

/// `GET /api/executors`.
pub(crate) async fn executors(State(app): State<AppState>, headers: HeaderMap) -> ApiResult {
    app.auth().viewer(&headers, None)?;
    let b = app.manager().board().await?;
    let executors = executors_dto(&b.executors, app.behaviors(), Utc::now());
    Ok(Json(serde_json::json!({"seq": b.seq, "executors": executors})).into_response())
}

/// `GET /api/audit?since_seq=…&limit=…`.
pub(crate) async fn audit(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult {
    app.auth().viewer(&headers, None)?;
    let (mut since, mut limit) = (None, 200usize);
    for (k, v) in query_pairs(query.as_deref()) {
        match k.as_str() {
            "since_seq" => since = Some(number::<u64>("since_seq", &v)?),
            "limit" => {
                limit = number("limit", &v)?;
                if limit == 0 || limit > MAX_LIMIT {
                    return Err(ApiError::bad_request(format!(
                        "query `limit` must be between 1 and {MAX_LIMIT}, not {limit}"
                    )));
                }
            }
            _ => {}
        }
    }
    let log = app.manager().audit().await?;
    let entries: Vec<_> = match since {
        Some(s) => log.iter().filter(|e| e.seq > s).take(limit).map(AuditDto::of).collect(),
        None => log[log.len().saturating_sub(limit)..].iter().map(AuditDto::of).collect(),
    };
    Ok(Json(serde_json::json!({"entries": entries})).into_response())
}

/// Any other path: a JSON 404.
pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// The day a request is about.
pub(crate) enum Day {
    /// The day this server runs (`current` or its date).
    Running,
    /// Another day, read from its journal.
    Past(Arc<PastDay>),
}

impl Day {
    async fn board(&self, app: &AppState) -> Result<Board, ApiError> {
        Ok(match self {
            Day::Running => app.manager().board().await?,
            Day::Past(p) => p.board.clone(),
        })
    }

    /// The flow the day runs (a past day: the one it opened with).
    fn flow(&self, app: &AppState) -> Arc<taskflow_core::flow::Flow> {
        match self {
            Day::Running => app.flow(),
            Day::Past(p) => p.flow.clone(),
        }
    }

    /// The board's DTO; nothing on a past day can be acted on.
    fn board_dto(&self, app: &AppState, b: &Board) -> BoardDto {
        let mut dto = board_dto(&self.flow(app), b);
        if let Day::Past(p) = self {
            for t in &mut dto.tasks {
                t.allowed_actions.clear();
            }
            dto.journal_warnings = p.warnings.clone();
        }
        dto
    }

    /// A page of shards, each with its last step's name when the journal recorded it.
    async fn shards(
        &self,
        app: &AppState,
        task: &str,
        status: Option<ShardStatus>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(ShardInfo, Option<String>)>, ApiError> {
        Ok(match self {
            Day::Running => app
                .manager()
                .shards(task, status, offset, limit)
                .await?
                .into_iter()
                .map(|s| (s, None))
                .collect(),
            Day::Past(p) => p.shards(task, status, offset, limit),
        })
    }
}

fn parse_date(date: &str) -> Result<BusinessDate, ApiError> {
    date.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "`{date}` is not a business date: use YYYY-MM-DD or `current`"
        ))
    })
}

/// `current` or the running day's date is the running day; any other date is read from its
/// journal (404 without one, 500 when it cannot be read).
pub(crate) async fn resolve_day(app: &AppState, date: &str) -> Result<Day, ApiError> {
    if date == "current" {
        return Ok(Day::Running);
    }
    let d = parse_date(date)?;
    if d == app.date() {
        return Ok(Day::Running);
    }
    let past = app.past().get(&app.flow(), app.data_dir(), d, app.date()).await?;
    Ok(Day::Past(past))
}

/// Actions only act on the running day: another day with a journal is a 409 (it is closed, or
/// at least not this server's to run), a date without one a 404.
fn check_action_day(app: &AppState, date: &str) -> Result<(), ApiError> {
    if date == "current" {
        return Ok(());
    }
    let d = parse_date(date)?;
    if d == app.date() {
        return Ok(());
    }
    if taskflow_core::day_dir(app.data_dir(), d).is_dir() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "not_running_day",
            message: format!(
                "business day {d} is not the running day ({}): the day is closed or not this \
                 server's to run, so it is read-only here",
                app.date()
            ),
        });
    }
    Err(ApiError::not_found(format!(
        "no business day {d} in the data directory {} (this server runs {})",
        app.data_dir().display(),
        app.date()
    )))
}

fn no_task(task: &str) -> ApiError {
    ApiError::not_found(format!("the flow has no task `{task}`"))
}

fn shard_index(s: &str) -> Result<u32, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad_request(format!("shard index must be a non-negative integer, not {s:?}"))
    })
}

fn number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ApiError> {
    v.parse().map_err(|_| {
        ApiError::bad_request(format!("query `{name}` must be a non-negative integer, not {v:?}"))
    })
}

/// `a=1&b=x%20y` → `[("a", "1"), ("b", "x y")]`, repeated keys kept in order.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c))) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_and_keep_repeats() {
        let q = query_pairs(Some("status=failed&status=running&x=a%20b+c&bad=%zz&e"));
        assert_eq!(q[0], ("status".into(), "failed".into()));
        assert_eq!(q[1], ("status".into(), "running".into()));
        assert_eq!(q[2], ("x".into(), "a b c".into()));
        assert_eq!(q[3], ("bad".into(), "%zz".into()));
        assert_eq!(q[4], ("e".into(), "".into()));
        assert!(query_pairs(None).is_empty());
    }
}
