//! Which alerts a notice raises: a pure fold of the manager's notices (no I/O, no clock: the
//! instant is passed in), so each rule is unit-tested.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use taskflow_core::model::{BusinessDate, TaskId};
use taskflow_core::state::{EventKind, ShardEvent, TaskStatus};
use taskflow_core::{Board, Notice};

/// What an alert is about (`kind` in the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AlertKind {
    /// A shard attempt failed (a retry may follow).
    ShardFailed,
    /// A task became failed (once until it is done again).
    TaskFailed,
    /// Nothing runs, is queued or timed, and some task is not done: an operator is needed.
    DayStalled,
    /// An executor process was lost; its shards are reassigned.
    ExecutorLost,
    /// A task (or the day) is predicted to end after its deadline (once until it is not).
    PredictedLate,
    /// A task's (or the day's) deadline passed and it is not done (once).
    DeadlineMissed,
}

/// One alert, as posted (`proto-docs/alerts.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Alert {
    /// Unique per occurrence and the same on every retry: receivers dedupe on it.
    pub(crate) id: String,
    /// What happened.
    pub(crate) kind: AlertKind,
    /// The business date.
    pub(crate) date: BusinessDate,
    /// The task, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) task: Option<TaskId>,
    /// The shard, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) shard: Option<u32>,
    /// One sentence for a human.
    pub(crate) message: String,
    /// When it happened (RFC 3339, UTC).
    pub(crate) at: DateTime<Utc>,
}

/// The rules, with what they remember: the tasks alerted as failed (until they are done).
#[derive(Debug)]
pub(crate) struct Rules {
    date: BusinessDate,
    failed: BTreeSet<TaskId>,
    /// Tasks alerted as predicted late (until their forecast is on time again); `None`: the day.
    late: BTreeSet<Option<TaskId>>,
    /// Tasks (and the day, `None`) whose missed deadline was alerted.
    missed: BTreeSet<Option<TaskId>>,
}

/// A failure reason in an alert is cut to this many bytes (the log keeps the rest).
const REASON_BYTES: usize = 500;

impl Rules {
    /// Rules for the day `date`.
    pub(crate) fn new(date: BusinessDate) -> Rules {
        Rules { date, failed: BTreeSet::new(), late: BTreeSet::new(), missed: BTreeSet::new() }
    }

    /// The day the rules follow.
    pub(crate) fn date(&self) -> BusinessDate {
        self.date
    }

    fn alert(
        &self,
        kind: AlertKind,
        id: String,
        task: Option<&TaskId>,
        shard: Option<u32>,
        message: String,
        at: DateTime<Utc>,
    ) -> Alert {
        Alert {
            id: format!("{}/{id}", self.date),
            kind,
            date: self.date,
            task: task.cloned(),
            shard,
            message,
            at,
        }
    }

    /// The alerts `notice` raises; `now` for notices that carry no time.
    pub(crate) fn on_notice(&mut self, notice: &Notice, now: DateTime<Utc>) -> Vec<Alert> {
        match notice {
            Notice::Event { seq, at_ms, kind: EventKind::Shard { task, shard, event } } => {
                let at = DateTime::from_timestamp_millis(*at_ms).unwrap_or(now);
                let (what, reason) = match event {
                    ShardEvent::Fail { reason } => ("failed", reason.as_str()),
                    ShardEvent::RollbackFailed { reason } => {
                        ("failed its rollback", reason.as_str())
                    }
                    ShardEvent::MarkFailed => ("was marked failed by an operator", ""),
                    _ => return Vec::new(),
                };
                let reason = cut(reason);
                let message = if reason.is_empty() {
                    format!("{task}[{shard}] {what}")
                } else {
                    format!("{task}[{shard}] {what}: {reason}")
                };
                vec![self.alert(
                    AlertKind::ShardFailed,
                    format!("shard_failed/{task}/{shard}/{seq}"),
                    Some(task),
                    Some(*shard),
                    message,
                    at,
                )]
            }
            Notice::TaskStatus { seq, task, status } => {
                if status.is_done() {
                    self.failed.remove(task);
                    return Vec::new();
                }
                if *status != TaskStatus::Failed || !self.failed.insert(task.clone()) {
                    return Vec::new();
                }
                vec![self.alert(
                    AlertKind::TaskFailed,
                    format!("task_failed/{task}/{seq}"),
                    Some(task),
                    None,
                    format!("task {task} failed: it needs an operator (retry, skip or mark done)"),
                    now,
                )]
            }
            Notice::ExecutorLost { executor, reason } => vec![self.alert(
                AlertKind::ExecutorLost,
                format!("executor_lost/{executor}/{}", now.timestamp_millis()),
                None,
                None,
                format!("executor {executor} lost ({}); its shards are reassigned", cut(reason)),
                now,
            )],
            _ => Vec::new(),
        }
    }

    /// The alerts of a board the rules start from: each task failed already, once; and what
    /// its forecast and deadlines say ([`Rules::on_forecast`], [`Rules::on_deadlines`]).
    pub(crate) fn on_board(&mut self, board: &Board, now: DateTime<Utc>) -> Vec<Alert> {
        let mut out: Vec<Alert> = board
            .tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Failed)
            .flat_map(|t| {
                let n = Notice::TaskStatus { seq: board.seq, task: t.id.clone(), status: t.status };
                self.on_notice(&n, now)
            })
            .collect();
        out.extend(self.on_schedule(board, now));
        out
    }

    /// What `board`'s forecast and deadlines raise ([`Rules::on_lines`] on [`lines`]).
    pub(crate) fn on_schedule(&mut self, board: &Board, now: DateTime<Utc>) -> Vec<Alert> {
        let computed = board.forecast.as_ref().map(|f| f.computed_at_ms);
        self.on_lines(&lines(board), computed, now)
    }

    /// Predicted late: each line not done that its forecast (computed at `computed`, if
    /// any) ends after its deadline, once until it is on time again; deadline missed: each
    /// line not done whose deadline is at or before `now`, once.
    pub(crate) fn on_lines(
        &mut self,
        lines: &[Line],
        computed: Option<i64>,
        now: DateTime<Utc>,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        for l in lines {
            let what =
                l.task.as_ref().map_or_else(|| "the day".to_owned(), |t| format!("task {t}"));
            let name = l.task.as_ref().map_or("day", TaskId::as_str);
            if let Some(computed) = computed {
                if !l.late || l.done {
                    self.late.remove(&l.task);
                } else if self.late.insert(l.task.clone()) {
                    let end = l.end_ms.map_or_else(
                        || "never without an operator".to_owned(),
                        |e| format!("at {}", at(e)),
                    );
                    let deadline = l.deadline_ms.map(at).unwrap_or_default();
                    let message =
                        format!("{what} is predicted to end {end}, after its deadline {deadline}");
                    let id = format!("predicted_late/{name}/{computed}");
                    out.push(self.alert(
                        AlertKind::PredictedLate,
                        id,
                        l.task.as_ref(),
                        None,
                        message,
                        now,
                    ));
                }
            }
            if let Some(deadline) = l.deadline_ms
                && !l.done
                && deadline <= now.timestamp_millis()
                && self.missed.insert(l.task.clone())
            {
                let message =
                    format!("{what} missed its deadline {}: it is not done", at(deadline));
                let id = format!("deadline_missed/{name}");
                out.push(self.alert(
                    AlertKind::DeadlineMissed,
                    id,
                    l.task.as_ref(),
                    None,
                    message,
                    now,
                ));
            }
        }
        out
    }

    /// The next deadline of `board` not yet missed (ms since the epoch), to wake up for.
    pub(crate) fn next_deadline(&self, board: &Board) -> Option<i64> {
        lines(board)
            .into_iter()
            .filter(|l| !l.done && !self.missed.contains(&l.task))
            .filter_map(|l| l.deadline_ms)
            .min()
    }

    /// The day stalled at board seq `seq`, with `waiting` tasks not done.
    pub(crate) fn on_stalled(&self, seq: u64, waiting: &[TaskId], now: DateTime<Utc>) -> Alert {
        let shown: Vec<&str> = waiting.iter().take(5).map(TaskId::as_str).collect();
        let more = waiting.len().saturating_sub(shown.len());
        let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
        self.alert(
            AlertKind::DayStalled,
            format!("day_stalled/{seq}"),
            None,
            None,
            format!(
                "the day is stalled: nothing runs or waits for a time; an operator is needed for {}{tail}",
                shown.join(", ")
            ),
            now,
        )
    }
}

/// A task's (or the day's, `task: None`) schedule as the rules read it from a board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) task: Option<TaskId>,
    /// Done (the day: closed).
    pub(crate) done: bool,
    pub(crate) deadline_ms: Option<i64>,
    /// The latest forecast ends it after its deadline.
    pub(crate) late: bool,
    /// Its predicted end, if it ends.
    pub(crate) end_ms: Option<i64>,
}

/// Every task's line of `board`, then the day's.
pub(crate) fn lines(board: &Board) -> Vec<Line> {
    let mut out: Vec<Line> = board
        .tasks
        .iter()
        .map(|t| Line {
            task: Some(t.id.clone()),
            done: t.status.is_done(),
            deadline_ms: t.deadline_ms,
            late: t.forecast.as_ref().is_some_and(|f| f.at_risk),
            end_ms: t.forecast.as_ref().and_then(|f| f.predicted_end_ms),
        })
        .collect();
    out.push(Line {
        task: None,
        done: board.closed,
        deadline_ms: board.deadline_ms,
        late: board.forecast.as_ref().is_some_and(|f| f.at_risk),
        end_ms: board.forecast.as_ref().and_then(|f| f.predicted_end_ms),
    });
    out
}

/// An instant for a message: RFC 3339, UTC, to the second.
fn at(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// `text` cut to [`REASON_BYTES`] at a character boundary.
fn cut(text: &str) -> &str {
    if text.len() <= REASON_BYTES {
        return text;
    }
    let mut end = REASON_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::new("2026-09-30".parse().unwrap())
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_790_000_000_000).unwrap()
    }

    fn fail(seq: u64, task: &str, shard: u32, reason: &str) -> Notice {
        Notice::Event {
            seq,
            at_ms: 1_790_000_000_123,
            kind: EventKind::Shard {
                task: TaskId::new(task),
                shard,
                event: ShardEvent::Fail { reason: reason.into() },
            },
        }
    }

    fn status(seq: u64, task: &str, status: TaskStatus) -> Notice {
        Notice::TaskStatus { seq, task: TaskId::new(task), status }
    }

    #[test]
    fn a_shard_failure_is_one_alert_with_its_reason_time_and_a_stable_id() {
        let mut r = rules();
        let a = r.on_notice(&fail(7, "nav", 3, "price missing"), now());
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, AlertKind::ShardFailed);
        assert_eq!(a[0].id, "2026-09-30/shard_failed/nav/3/7");
        assert_eq!(a[0].shard, Some(3));
        assert_eq!(a[0].message, "nav[3] failed: price missing");
        assert_eq!(a[0].at.timestamp_millis(), 1_790_000_000_123, "the event's time");
        let json = serde_json::to_value(&a[0]).unwrap();
        assert_eq!(json["kind"], "shard_failed");
        assert_eq!(json["date"], "2026-09-30");
        assert_eq!(json["task"], "nav");
    }

    #[test]
    fn a_failed_task_alerts_once_until_it_is_done_again() {
        let mut r = rules();
        assert_eq!(r.on_notice(&status(5, "nav", TaskStatus::Failed), now()).len(), 1);
        assert!(r.on_notice(&status(6, "nav", TaskStatus::Running), now()).is_empty());
        assert!(
            r.on_notice(&status(8, "nav", TaskStatus::Failed), now()).is_empty(),
            "a retry that fails again is the same failure"
        );
        assert!(r.on_notice(&status(9, "nav", TaskStatus::Succeeded), now()).is_empty());
        let again = r.on_notice(&status(12, "nav", TaskStatus::Failed), now());
        assert_eq!(again.len(), 1, "re-armed once the task was done");
        assert_eq!(again[0].id, "2026-09-30/task_failed/nav/12");
    }

    #[test]
    fn other_events_raise_nothing_and_a_long_reason_is_cut() {
        let mut r = rules();
        let ok = Notice::Event {
            seq: 1,
            at_ms: 0,
            kind: EventKind::Shard { task: TaskId::new("a"), shard: 0, event: ShardEvent::Succeed },
        };
        assert!(r.on_notice(&ok, now()).is_empty());
        let long = "é".repeat(600);
        let a = r.on_notice(&fail(2, "a", 0, &long), now());
        assert!(a[0].message.len() <= "a[0] failed: ".len() + REASON_BYTES);
    }

    fn line(task: Option<&str>, deadline_ms: Option<i64>, late: bool) -> Line {
        Line { task: task.map(TaskId::new), done: false, deadline_ms, late, end_ms: Some(2_000) }
    }

    #[test]
    fn predicted_late_alerts_once_until_the_forecast_is_on_time_again() {
        let mut r = rules();
        let now = DateTime::from_timestamp_millis(500).unwrap();
        let late = [line(Some("nav"), Some(1_000), true), line(None, Some(1_500), true)];
        let a = r.on_lines(&late, Some(100), now);
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(a.iter().all(|a| a.kind == AlertKind::PredictedLate));
        assert_eq!(a[0].id, "2026-09-30/predicted_late/nav/100");
        assert!(a[1].task.is_none() && a[1].message.starts_with("the day is predicted to end"));
        assert!(r.on_lines(&late, Some(200), now).is_empty(), "still late: the same alert");
        let on_time = [line(Some("nav"), Some(1_000), false)];
        assert!(r.on_lines(&on_time, Some(300), now).is_empty());
        assert_eq!(r.on_lines(&late[..1], Some(400), now).len(), 1, "late again: a new alert");
        let mut done = late[0].clone();
        done.done = true;
        assert!(r.on_lines(&[done], Some(500), now).is_empty(), "a done task is not late");
    }

    #[test]
    fn a_deadline_passed_on_a_task_not_done_alerts_once_and_the_next_one_is_woken_for() {
        let mut r = rules();
        let before = DateTime::from_timestamp_millis(999).unwrap();
        let after = DateTime::from_timestamp_millis(1_000).unwrap();
        let lines = [line(Some("nav"), Some(1_000), false), line(Some("fee"), Some(5_000), false)];
        assert!(r.on_lines(&lines, None, before).is_empty(), "not yet");
        let a = r.on_lines(&lines, None, after);
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].kind, a[0].id.as_str()),
            (AlertKind::DeadlineMissed, "2026-09-30/deadline_missed/nav")
        );
        assert!(r.on_lines(&lines, None, after).is_empty(), "once");
        let mut done = lines[1].clone();
        done.done = true;
        let late = DateTime::from_timestamp_millis(9_000).unwrap();
        assert!(r.on_lines(&[done], None, late).is_empty(), "a task done in time never misses");
    }

    #[test]
    fn a_lost_executor_and_a_stall_name_what_they_are_about() {
        let mut r = rules();
        let lost = Notice::ExecutorLost { executor: "ex-2".into(), reason: "lease expired".into() };
        let a = r.on_notice(&lost, now());
        assert_eq!(a[0].kind, AlertKind::ExecutorLost);
        assert!(a[0].message.contains("ex-2") && a[0].message.contains("lease expired"));
        let waiting: Vec<TaskId> = (0..7).map(|i| TaskId::new(format!("t{i}"))).collect();
        let s = r.on_stalled(40, &waiting, now());
        assert_eq!(s.id, "2026-09-30/day_stalled/40");
        assert!(s.message.ends_with("t0, t1, t2, t3, t4 and 2 more"), "{}", s.message);
    }
}
