//! Unit tests of the pure core: a day state in, inputs fed, effects inspected. The simulator
//! (`testing::sim`) hunts for bugs; these pin the ones it or a review found.

use std::sync::Arc;

use super::*;
use crate::flow::Flow;
use crate::job::{JobKind, Report};
use crate::model::{ScopeItem, ShardKey};
use crate::state::{
    CommandError, DayEvent, EventKind, OperatorAction, ShardEvent as SE, TaskStatus,
};
use crate::testing::{CALENDAR, DISTRIBUTORS, PRODUCTS};
use crate::view::WaitingFor;

const NOW: Now = Now { mono_ms: 1_000, wall_ms: 1_790_000_000_000 };

fn flow(tasks: &str) -> Arc<Flow> {
    let text = format!("[flow]\nname = \"core\"\ntime_zone = \"Asia/Shanghai\"\n\n{tasks}");
    Arc::new(Flow::from_strs(&text, PRODUCTS, DISTRIBUTORS, CALENDAR).expect("valid flow"))
}

fn date() -> BusinessDate {
    BusinessDate::from_ymd(2026, 9, 30).expect("date")
}

const ONE_SYSTEM_TASK: &str = r#"
[[task]]
id = "init"
name = "init"
level = "system"
behavior = "scripted"
retries = 1
retry_backoff = "5s"
"#;

/// A day of `flow` folded from `events` (after `day_opened` and the registration of `init`
/// with its one shard).
fn day(flow: &Flow, events: Vec<SE>) -> DayState {
    let mut d = DayState::new(date(), Arc::new(flow.graph().clone()));
    let mut seq = 0;
    let mut apply = |kind: EventKind| {
        seq += 1;
        d.apply(&DayEvent { seq, at_ms: NOW.wall_ms, kind }).expect("event applies");
    };
    apply(EventKind::DayOpened { date: date(), flow_digest: flow_digest(flow) });
    let task = crate::model::TaskId::new("init");
    apply(EventKind::TaskRegistered {
        task: task.clone(),
        items: vec![ScopeItem::system()],
        shards: vec![ShardKey::new("system")],
        covered_dates: vec![date().date()],
    });
    apply(EventKind::TaskReady { task: task.clone() });
    for event in events {
        apply(EventKind::Shard { task: task.clone(), shard: 0, event });
    }
    d
}

fn dispatch(attempt: u32) -> SE {
    SE::Dispatch { attempt, executor: "e1".into(), epoch: 1, instance: 7 }
}

/// Starts a core (one local executor) over `day`; returns it and the effects of the start,
/// every append made durable at once.
fn start(flow: Arc<Flow>, day: DayState) -> (Control, Vec<Effect>) {
    let durable = day.last_seq();
    let opts = local_options(1);
    let mut core = Control::new(flow, date(), day, durable, opts, NOW);
    let mut out = core.handle(Input::Start, NOW);
    settle(&mut core, &mut out);
    (core, out)
}

/// Makes every appended event durable, collecting what that releases.
fn settle(core: &mut Control, out: &mut Vec<Effect>) {
    let mut i = 0;
    while i < out.len() {
        if let Effect::Append(events) = &out[i]
            && let Some(last) = events.last()
        {
            let more = core.handle(Input::Durable(last.seq), NOW);
            out.extend(more);
        }
        i += 1;
    }
}

fn appended(out: &[Effect]) -> Vec<&EventKind> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Append(events) => Some(events.iter().map(|e| &e.kind)),
            _ => None,
        })
        .flatten()
        .collect()
}

fn retry_timers(out: &[Effect]) -> Vec<(u64, u32)> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Timer { at_ms, timer: Timer::Retry { attempt, .. } } => {
                Some((*at_ms, *attempt))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn requeues_do_not_use_up_retries() {
    // Two requeues (a lost executor, a refused assignment), then the behavior's first failure:
    // attempt 3, failure 1 of `retries = 1`. Counting by attempt (the old rule) gave up here.
    let f = flow(ONE_SYSTEM_TASK);
    let d = day(
        &f,
        vec![
            dispatch(1),
            SE::Requeue,
            dispatch(2),
            SE::Requeue,
            dispatch(3),
            SE::Fail { reason: "no quotes".into() },
        ],
    );
    let v = d.shard(TaskIx(0), 0).expect("shard");
    assert_eq!((v.attempt, v.failures), (3, 1));
    let (_, out) = start(f.clone(), d);
    assert_eq!(retry_timers(&out), vec![(NOW.mono_ms + 5_000, 3)], "{out:#?}");

    // The second failure has no retry left.
    let d = day(
        &f,
        vec![
            dispatch(1),
            SE::Fail { reason: "a".into() },
            SE::Retry,
            dispatch(2),
            SE::Fail { reason: "b".into() },
        ],
    );
    let (_, out) = start(f, d);
    assert_eq!(retry_timers(&out), vec![], "{out:#?}");
}

#[test]
fn an_automatic_rollback_interrupted_by_a_crash_still_retries() {
    // The unconfirmed policy rolled the shard back; the manager died before it recorded the
    // retry. The intent is in the log (`RollbackThenRetry`), so the restarted core retries.
    let f = flow(ONE_SYSTEM_TASK);
    let d = day(
        &f,
        vec![dispatch(1), SE::MarkUnconfirmed, SE::RollbackThenRetry, SE::RollbackSucceeded],
    );
    let (core, out) = start(f.clone(), d);
    let retried = appended(&out)
        .into_iter()
        .any(|k| matches!(k, EventKind::Shard { event: SE::Retry, shard: 0, .. }));
    assert!(retried, "{out:#?}");
    let v = core.day().shard(TaskIx(0), 0).expect("shard");
    assert!(!v.retry_after_rollback, "the intent ends with the retry");

    // An operator's rollback carries no such intent: the shard waits for the operator.
    let d = day(&f, vec![dispatch(1), SE::MarkUnconfirmed, SE::Rollback, SE::RollbackSucceeded]);
    let (core, out) = start(f, d);
    assert!(
        !appended(&out).into_iter().any(|k| matches!(k, EventKind::Shard { event: SE::Retry, .. })),
        "{out:#?}"
    );
    assert_eq!(core.day().shard(TaskIx(0), 0).map(|v| v.status), Some(ShardStatus::RolledBack));
}

#[test]
fn the_unconfirmed_policy_records_its_intent_in_the_log() {
    // A local shard found running after a crash is unconfirmed; AutoRollback records the
    // rollback with its retry intent, not a bare rollback.
    let f = flow(ONE_SYSTEM_TASK);
    let d = day(
        &f,
        vec![SE::Dispatch { attempt: 1, executor: "local-1".into(), epoch: 0, instance: 0 }],
    );
    let (_, out) = start(f, d);
    let kinds = appended(&out);
    assert!(
        kinds.iter().any(|k| matches!(k, EventKind::Shard { event: SE::RollbackThenRetry, .. })),
        "{kinds:#?}"
    );
    assert!(!kinds.iter().any(|k| matches!(k, EventKind::Shard { event: SE::Rollback, .. })));
}

/// A cluster core (epoch 3, no in-process executor) over `day`, after its start.
fn start_cluster(flow: Arc<Flow>, day: DayState, reconcile_ms: u64) -> (Control, Vec<Effect>) {
    let durable = day.last_seq();
    let opts = ControlOptions {
        auto_execute_manual: false,
        unconfirmed_policy: UnconfirmedPolicy::AutoRollback,
        shutdown_grace_ms: 1000,
        local: Vec::new(),
        cluster: Some(ClusterTiming {
            epoch: 3,
            lease_ms: 1000,
            heartbeat_ms: 200,
            lost_after_ms: 1200,
            reconcile_ms,
            protocol_version: 1,
            cluster_id: "c1".into(),
        }),
    };
    let mut core = Control::new(flow.clone(), date(), day, durable, opts, NOW);
    let mut out = core.handle(Input::Start, NOW);
    feed_prepared(&mut core, &flow, &mut out, NOW);
    (core, out)
}

/// Answers every `Prepare` in `out` (and what that releases), making appends durable.
fn feed_prepared(core: &mut Control, flow: &Flow, out: &mut Vec<Effect>, now: Now) {
    let mut i = 0;
    while i < out.len() {
        let more = match &out[i] {
            Effect::Append(events) => match events.last() {
                Some(last) => core.handle(Input::Durable(last.seq), now),
                None => Vec::new(),
            },
            Effect::Prepare { tasks, .. } => {
                let mut more = Vec::new();
                for &task in tasks.clone().iter() {
                    let result = crate::schedule::prepare_by_flow(flow, date(), task);
                    more.extend(core.handle(Input::Prepared { task, result }, now));
                }
                more
            }
            _ => Vec::new(),
        };
        out.extend(more);
        i += 1;
    }
}

fn rollbacks_assigned(out: &[Effect]) -> usize {
    out.iter()
        .filter(|e| {
            matches!(e, Effect::Assign { assignment, .. } if assignment.key.kind == JobKind::Rollback)
        })
        .count()
}

#[test]
fn a_rollback_recovered_in_flight_waits_for_the_reconcile_window() {
    // Seed 60793: epoch 2 dispatched this shard's rollback to e1 (rollback dispatches are not
    // in the log) and died; e1 was paused, so it still ran the rollback on its old lease. The
    // epoch-3 core gave the same rollback to the first executor that joined, and both ran it
    // at once. A rollback found in flight waits, as a running shard does, until every
    // executor of an earlier epoch must have fenced itself.
    let f = flow(ONE_SYSTEM_TASK);
    let d = day(&f, vec![dispatch(1), SE::MarkUnconfirmed, SE::RollbackThenRetry]);
    let (mut core, mut out) = start_cluster(f.clone(), d, 5_000);
    assert!(
        out.iter().any(|e| matches!(e, Effect::Timer { timer: Timer::Reconcile, at_ms } if *at_ms == NOW.mono_ms + 5_000)),
        "{out:#?}"
    );
    let join = join_in("e2", 2);
    let mut joined = core.handle(Input::Join { req: 1, join }, NOW);
    feed_prepared(&mut core, &f, &mut joined, NOW);
    out.extend(joined);
    assert_eq!(rollbacks_assigned(&out), 0, "no rollback before the window ends: {out:#?}");

    let later = Now { mono_ms: NOW.mono_ms + 5_000, wall_ms: NOW.wall_ms + 5_000 };
    let mut due = core.handle(Input::Timer(Timer::Reconcile), later);
    feed_prepared(&mut core, &f, &mut due, later);
    assert_eq!(rollbacks_assigned(&due), 1, "the rollback runs once the window ends: {due:#?}");
}

#[test]
fn higher_priority_then_the_critical_path_gets_free_slots_first() {
    // One slot; three distributor-level tasks ready at once. `high` goes first for its
    // priority; of the two at priority 0, `chain` has a dependent (`after`), so it is on the
    // longer remaining path and goes before `low`, which flow order would put first.
    let f = flow(
        r#"
[[task]]
id = "low"
name = "low"
level = "distributor"
behavior = "scripted"

[[task]]
id = "chain"
name = "chain"
level = "distributor"
behavior = "scripted"

[[task]]
id = "after"
name = "after"
level = "system"
behavior = "scripted"
depends_on = ["chain"]

[[task]]
id = "high"
name = "high"
level = "distributor"
behavior = "scripted"
priority = 5
"#,
    );
    let opts = local_options(1);
    let d = DayState::new(date(), Arc::new(f.graph().clone()));
    let mut core = Control::new(f.clone(), date(), d, 0, opts, NOW);
    // Every task is prepared before the first dispatch can free the slot again.
    let mut out = core.handle(Input::Start, NOW);
    feed_prepared(&mut core, &f, &mut out, NOW);
    let mut order = Vec::new();
    for _ in 0..100 {
        let Some((key, slot)) = out.iter().rev().find_map(|e| match e {
            Effect::Assign { assignment, .. } => Some((assignment.key.clone(), assignment.slot)),
            _ => None,
        }) else {
            break;
        };
        order.push(key.task.as_str().to_owned());
        let report = Report::Finished {
            key,
            executor: 0,
            slot,
            outcome: crate::behavior::ShardOutcome::Succeeded,
            last_step: None,
        };
        out = core.handle(Input::Report(report), NOW);
        feed_prepared(&mut core, &f, &mut out, NOW);
    }
    let per_task = |t: &str| order.iter().filter(|o| o.as_str() == t).count();
    let n = per_task("low");
    assert!(n >= 2 && per_task("high") == n && per_task("chain") == n, "{order:?}");
    assert_eq!(per_task("after"), 1, "{order:?}");
    // The first dispatch took the slot as soon as one task was prepared; after it, the rank
    // decides.
    let rest: Vec<&str> = order[1..].iter().map(String::as_str).collect();
    let first = |t: &str| rest.iter().position(|o| *o == t).unwrap_or(usize::MAX);
    let last = |t: &str| rest.iter().rposition(|o| *o == t).unwrap_or(0);
    assert!(last("high") < first("chain") || order[0] == "chain", "{order:?}");
    assert!(last("chain") < first("low"), "{order:?}");
}

/// The tasks of the `Assign` effects in `out`, in order.
fn assigned(out: &[Effect]) -> Vec<(String, u32)> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Assign { assignment, .. } => {
                Some((assignment.key.task.as_str().to_owned(), assignment.key.shard))
            }
            _ => None,
        })
        .collect()
}

/// Feeds an operator command; returns its answer and the effects it released.
fn act(
    core: &mut Control,
    f: &Flow,
    action: OperatorAction,
    task: &str,
    shard: Option<u32>,
    reason: &str,
) -> (Option<Result<u64, ActionError>>, Vec<Effect>) {
    let cmd = crate::state::Command {
        actor: "alice".into(),
        from: "test".into(),
        reason: reason.into(),
        action,
        target: crate::state::Target { task: crate::model::TaskId::new(task), shard },
    };
    let mut out = core.handle(Input::Act { req: 77, cmd }, NOW);
    feed_prepared(core, f, &mut out, NOW);
    let answer = out.iter().find_map(|e| match e {
        Effect::Reply { req: 77, answer: Answer::Act(a) } => Some(a.clone()),
        _ => None,
    });
    (answer, out)
}

/// Reports every assignment in `out` succeeded until nothing more is assigned; the tasks
/// and shards run, in order.
fn run_all(core: &mut Control, f: &Flow, mut out: Vec<Effect>) -> Vec<(String, u32)> {
    let mut ran = Vec::new();
    for _ in 0..1000 {
        let jobs: Vec<(AttemptKey, usize, u32)> = out
            .iter()
            .filter_map(|e| match e {
                Effect::Assign { executor, assignment } => {
                    Some((assignment.key.clone(), *executor, assignment.slot))
                }
                _ => None,
            })
            .collect();
        if jobs.is_empty() {
            break;
        }
        out.clear();
        for (key, executor, slot) in jobs {
            ran.push((key.task.as_str().to_owned(), key.shard));
            let report = Report::Finished {
                key,
                executor,
                slot,
                outcome: crate::behavior::ShardOutcome::Succeeded,
                last_step: None,
            };
            let mut more = core.handle(Input::Report(report), NOW);
            feed_prepared(core, f, &mut more, NOW);
            out.extend(more);
        }
    }
    ran
}

const FIRST_THEN_SECOND: &str = r#"
[[task]]
id = "first"
name = "first"
level = "system"
behavior = "scripted"
trigger = "manual"

[[task]]
id = "second"
name = "second"
level = "distributor"
behavior = "scripted"
depends_on = ["first"]
"#;

/// A local core with one slot over a fresh day, after its start and every preparation.
fn start_local(f: &Arc<Flow>) -> (Control, Vec<Effect>) {
    start_slots(f, 1)
}

#[test]
fn a_task_held_before_registration_dispatches_nothing_until_freed() {
    let f = flow(FIRST_THEN_SECOND);
    let (mut core, _) = start_local(&f);
    let (answer, _) = act(&mut core, &f, OperatorAction::Hold, "second", None, "");
    assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
    let (_, out) = act(&mut core, &f, OperatorAction::Execute, "first", None, "go");
    let ran = run_all(&mut core, &f, out);
    assert_eq!(ran, vec![("first".to_owned(), 0)], "second is held");
    let second = f.graph().index_of("second").expect("second");
    assert_eq!(core.day().task_status(second), TaskStatus::Pending, "registered and ready");
    assert!(core.stalled(), "{}", core.not_stalled_because());
    let view = core.task_view_by_id("second").expect("view");
    assert_eq!(view.held_by.as_deref(), Some("alice"));
    assert!(view.note.as_deref().is_some_and(|n| n.starts_with("held by alice")), "{view:?}");

    let (answer, out) = act(&mut core, &f, OperatorAction::Free, "second", None, "");
    assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
    let ran = run_all(&mut core, &f, out);
    assert_eq!(ran.len() as u32, core.day().shard_count(second), "{ran:?}");
    assert!(core.day().is_closed());
}

#[test]
fn a_held_shard_waits_while_the_others_run() {
    let f = flow(FIRST_THEN_SECOND);
    let (mut core, _) = start_local(&f);
    let (_, out) = act(&mut core, &f, OperatorAction::Execute, "first", None, "go");
    // One slot: `second` registers when `first` succeeds; hold a shard right after.
    let mut ran = Vec::new();
    let Some(Effect::Assign { executor, assignment }) =
        out.iter().find(|e| matches!(e, Effect::Assign { .. }))
    else {
        panic!("first is assigned: {out:#?}")
    };
    let report = Report::Finished {
        key: assignment.key.clone(),
        executor: *executor,
        slot: assignment.slot,
        outcome: crate::behavior::ShardOutcome::Succeeded,
        last_step: None,
    };
    let mut out = core.handle(Input::Report(report), NOW);
    feed_prepared(&mut core, &f, &mut out, NOW);
    let second = f.graph().index_of("second").expect("second");
    let n = core.day().shard_count(second);
    assert!(n >= 2, "{n} shards");
    // The first shard of `second` took the slot; hold the last one before it runs.
    let (answer, more) = act(&mut core, &f, OperatorAction::Hold, "second", Some(n - 1), "");
    assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
    out.extend(more);
    ran.extend(run_all(&mut core, &f, out));
    assert_eq!(ran.len() as u32, n - 1, "{ran:?}");
    assert!(!ran.contains(&("second".to_owned(), n - 1)), "{ran:?}");
    assert!(core.stalled());
    assert!(!core.day().is_closed());
    let (_, out) = act(&mut core, &f, OperatorAction::Free, "second", Some(n - 1), "");
    assert_eq!(run_all(&mut core, &f, out), vec![("second".to_owned(), n - 1)]);
    assert!(core.day().is_closed());
}

#[test]
fn force_start_registers_and_runs_a_task_whose_dependencies_are_not_done() {
    let f = flow(FIRST_THEN_SECOND);
    let (mut core, _) = start_local(&f);
    let (answer, _) = act(&mut core, &f, OperatorAction::ForceStart, "second", None, "");
    assert!(
        matches!(answer, Some(Err(ActionError::Refused(CommandError::ReasonRequired { .. })))),
        "{answer:?}"
    );
    let (answer, out) =
        act(&mut core, &f, OperatorAction::ForceStart, "second", None, "feed is late");
    assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
    let ran = run_all(&mut core, &f, out);
    let second = f.graph().index_of("second").expect("second");
    assert!(core.day().is_done(second), "{ran:?}");
    assert!(ran.iter().all(|(t, _)| t == "second"), "first still waits: {ran:?}");
    let first = f.graph().index_of("first").expect("first");
    assert_eq!(core.day().task_status(first), TaskStatus::Registered);
}

#[test]
fn a_force_start_recorded_before_a_crash_registers_the_task_on_recovery() {
    let f = flow(FIRST_THEN_SECOND);
    let mut d = DayState::new(date(), Arc::new(f.graph().clone()));
    let kinds = [
        EventKind::DayOpened { date: date(), flow_digest: flow_digest(&f) },
        EventKind::ForceStarted { task: crate::model::TaskId::new("second") },
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        d.apply(&DayEvent { seq: i as u64 + 1, at_ms: NOW.wall_ms, kind }).expect("applies");
    }
    let opts = local_options(1);
    let mut core = Control::new(f.clone(), date(), d, 2, opts, NOW);
    let mut out = core.handle(Input::Start, NOW);
    feed_prepared(&mut core, &f, &mut out, NOW);
    assert_eq!(assigned(&out), vec![("second".to_owned(), 0)], "{out:#?}");
}

#[test]
fn a_failed_shard_of_a_force_started_task_is_retried_though_its_dependencies_are_not_done() {
    // Simulator seed 100: the retry timer was never armed (nor a due retry taken), because
    // the retry paths asked for done dependencies, which a force-started task does not have.
    let f = flow(&FIRST_THEN_SECOND.replace(
        "level = \"distributor\"",
        "level = \"distributor\"\nretries = 1\nretry_backoff = \"5s\"",
    ));
    let mut d = DayState::new(date(), Arc::new(f.graph().clone()));
    let second = crate::model::TaskId::new("second");
    let kinds = [
        EventKind::DayOpened { date: date(), flow_digest: flow_digest(&f) },
        EventKind::ForceStarted { task: second.clone() },
        EventKind::TaskRegistered {
            task: second.clone(),
            items: vec![ScopeItem::system()],
            shards: vec![ShardKey::new("system")],
            covered_dates: vec![date().date()],
        },
        EventKind::TaskReady { task: second.clone() },
        EventKind::Shard { task: second.clone(), shard: 0, event: dispatch(1) },
        EventKind::Shard {
            task: second.clone(),
            shard: 0,
            event: SE::Fail { reason: "feed incomplete".into() },
        },
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        d.apply(&DayEvent { seq: i as u64 + 1, at_ms: NOW.wall_ms, kind }).expect("applies");
    }
    let ix = f.graph().index_of("second").expect("second");
    assert!(!d.dependencies_done(ix) && d.is_forced(ix));
    let (mut core, out) = start(f.clone(), d);
    assert_eq!(retry_timers(&out), vec![(NOW.mono_ms + 5_000, 1)], "{out:#?}");
    let due = Now { mono_ms: NOW.mono_ms + 5_000, wall_ms: NOW.wall_ms + 5_000 };
    let mut out = core.handle(Input::Timer(Timer::Retry { task: ix, shard: 0, attempt: 1 }), due);
    settle(&mut core, &mut out);
    assert!(
        appended(&out).iter().any(|k| matches!(k, EventKind::Shard { event: SE::Retry, .. })),
        "{out:#?}"
    );
}

// ----- waiting_for ---------------------------------------------------------------------

fn task_waits(core: &Control, task: &str) -> Option<WaitingFor> {
    core.task_view_by_id(task).expect("task").waiting_for
}

fn shard_waits(core: &Control, task: &str, shard: u32) -> Option<WaitingFor> {
    let page = core.shard_page(task, None, 0, usize::MAX);
    page.into_iter().find(|s| s.index == shard).expect("shard").waiting_for
}

#[test]
fn waiting_for_names_the_dependency_and_the_operator() {
    let f = flow(FIRST_THEN_SECOND);
    let (core, _) = start_local(&f);
    // `first` is manual: registered, waiting for an operator's execute; `second` for `first`.
    assert_eq!(task_waits(&core, "first"), Some(WaitingFor::Operator));
    assert_eq!(shard_waits(&core, "first", 0), Some(WaitingFor::Operator));
    assert_eq!(
        task_waits(&core, "second"),
        Some(WaitingFor::Dependency { task: crate::model::TaskId::new("first"), date: date() })
    );
}

#[test]
fn waiting_for_names_who_holds_the_task_or_the_shard() {
    let f = flow(FIRST_THEN_SECOND);
    let (mut core, _) = start_local(&f);
    let (answer, _) = act(&mut core, &f, OperatorAction::Hold, "second", None, "");
    assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
    // A hold is named before the dependency it also waits for.
    assert_eq!(task_waits(&core, "second"), Some(WaitingFor::Held { by: "alice".into() }));
    let (answer, _) = act(&mut core, &f, OperatorAction::Hold, "first", Some(0), "");
    assert!(matches!(answer, Some(Ok(_))), "{answer:?}");
    assert_eq!(shard_waits(&core, "first", 0), Some(WaitingFor::Held { by: "alice".into() }));
}

#[test]
fn waiting_for_names_the_retry_instant_then_the_operator() {
    let f = flow(ONE_SYSTEM_TASK);
    let d = day(&f, vec![dispatch(1), SE::Fail { reason: "boom".into() }]);
    let (mut core, out) = start(f.clone(), d);
    assert_eq!(retry_timers(&out).len(), 1, "{out:#?}");
    let retry = Some(WaitingFor::Retry { at_ms: NOW.wall_ms + 5_000 });
    assert_eq!(task_waits(&core, "init"), retry);
    assert_eq!(shard_waits(&core, "init", 0), retry);
    // The retry runs and fails too: no retry left, an operator decides.
    let ix = f.graph().index_of("init").expect("init");
    let mut out = core.handle(Input::Timer(Timer::Retry { task: ix, shard: 0, attempt: 1 }), NOW);
    settle(&mut core, &mut out);
    let Some(Effect::Assign { executor, assignment }) =
        out.iter().find(|e| matches!(e, Effect::Assign { .. }))
    else {
        panic!("the retry is assigned: {out:#?}")
    };
    assert_eq!(task_waits(&core, "init"), None, "running");
    let report = Report::Finished {
        key: assignment.key.clone(),
        executor: *executor,
        slot: assignment.slot,
        outcome: crate::behavior::ShardOutcome::Failed { reason: "boom again".into() },
        last_step: None,
    };
    let mut out = core.handle(Input::Report(report), NOW);
    settle(&mut core, &mut out);
    assert_eq!(task_waits(&core, "init"), Some(WaitingFor::Operator));
    assert_eq!(shard_waits(&core, "init", 0), Some(WaitingFor::Operator));
}

#[test]
fn waiting_for_names_the_trigger_instant() {
    let f = flow(&ONE_SYSTEM_TASK.replace("retries = 1", "trigger = \"at 23:30\""));
    let (core, _) = start_local(&f);
    let at = task_waits(&core, "init");
    let fires = core.task_view_by_id("init").and_then(|v| v.fires_at).map(|t| t.timestamp_millis());
    assert!(fires.is_some(), "the clock was asked");
    assert_eq!(at, fires.map(|at_ms| WaitingFor::Trigger { at_ms }));
}

#[test]
fn waiting_for_names_the_behavior_whose_slots_are_busy() {
    // One slot, two system tasks ready at once: one runs, the other waits for a slot.
    let f =
        flow(&format!("{ONE_SYSTEM_TASK}\n{}", ONE_SYSTEM_TASK.replace("\"init\"", "\"other\"")));
    let (core, out) = start_local(&f);
    let running = assigned(&out);
    assert_eq!(running.len(), 1, "{out:#?}");
    let waiting = if running[0].0 == "init" { "other" } else { "init" };
    let slot = Some(WaitingFor::Slot { behavior: "scripted".into() });
    assert_eq!(task_waits(&core, waiting), slot);
    assert_eq!(shard_waits(&core, waiting, 0), slot);
    assert_eq!(task_waits(&core, &running[0].0), None, "running");
    assert_eq!(shard_waits(&core, &running[0].0, 0), None, "running");
}

// ----- resources -----------------------------------------------------------------------

const LOCKED: &str = r#"
[[resource]]
name = "ta_db"
units = 1

[[task]]
id = "a"
name = "a"
level = "system"
behavior = "scripted"
priority = 5
needs = { ta_db = 1 }

[[task]]
id = "b"
name = "b"
level = "system"
behavior = "scripted"
priority = 4
needs = { ta_db = 1 }

[[task]]
id = "c"
name = "c"
level = "system"
behavior = "scripted"
"#;

/// A local core with `slots` slots over a fresh day, after its start and every preparation.
fn start_slots(f: &Arc<Flow>, slots: u32) -> (Control, Vec<Effect>) {
    let opts = local_options(slots);
    let d = DayState::new(date(), Arc::new(f.graph().clone()));
    let mut core = Control::new(f.clone(), date(), d, 0, opts, NOW);
    let mut out = core.handle(Input::Start, NOW);
    feed_prepared(&mut core, f, &mut out, NOW);
    (core, out)
}

fn finish(core: &mut Control, f: &Flow, out: &[Effect], task: &str, ok: bool) -> Vec<Effect> {
    let Some((executor, assignment)) = out.iter().find_map(|e| match e {
        Effect::Assign { executor, assignment } if assignment.key.task.as_str() == task => {
            Some((*executor, assignment.clone()))
        }
        _ => None,
    }) else {
        panic!("{task} is assigned: {out:#?}")
    };
    let outcome = if ok {
        crate::behavior::ShardOutcome::Succeeded
    } else {
        crate::behavior::ShardOutcome::Failed { reason: "ta_db down".into() }
    };
    let report = Report::Finished {
        key: assignment.key,
        executor,
        slot: assignment.slot,
        outcome,
        last_step: None,
    };
    let mut more = core.handle(Input::Report(report), NOW);
    feed_prepared(core, f, &mut more, NOW);
    more
}

#[test]
fn a_shard_waits_for_its_resource_units_while_shards_needing_none_run() {
    // Three slots, an exclusive `ta_db`: `a` (priority 5) takes it, `b` (4) waits for it,
    // and `c` (0, needing nothing) is not blocked behind `b`.
    let f = flow(LOCKED);
    let (mut core, out) = start_slots(&f, 3);
    let mut running: Vec<String> = assigned(&out).into_iter().map(|(t, _)| t).collect();
    running.sort();
    assert_eq!(running, vec!["a", "c"], "{out:#?}");
    let ta_db = Some(WaitingFor::Resource { resource: "ta_db".into() });
    assert_eq!(task_waits(&core, "b"), ta_db);
    assert_eq!(shard_waits(&core, "b", 0), ta_db);
    let board = core.board();
    let r = &board.resources[0];
    assert_eq!((r.name.as_str(), r.units, r.in_use, r.waiting), ("ta_db", 1, 1, 1), "{board:?}");
    assert!(core.books.check(core.day()).is_ok());

    // `a` fails (no retries): its unit is released with the failure, and `b` takes it.
    let more = finish(&mut core, &f, &out, "a", false);
    assert_eq!(assigned(&more), vec![("b".to_owned(), 0)], "{more:#?}");
    assert_eq!(task_waits(&core, "a"), Some(WaitingFor::Operator));
    assert_eq!(core.board().resources[0].in_use, 1);
    let more = finish(&mut core, &f, &more, "b", true);
    assert!(assigned(&more).is_empty());
    let board = core.board();
    assert_eq!((board.resources[0].in_use, board.resources[0].waiting), (0, 0), "{board:?}");
    assert!(core.books.check(core.day()).is_ok());
}

/// A cluster core for `date()` (2026-09-30, cluster id `c1`, epoch 3) over a day whose shard
/// `init/0` was dispatched to `e1` (attempt 1, epoch 1) before the restart, fed one finished
/// report of that job whose key names the business date `key_date`.
fn late_report(key_date: &str) -> Control {
    let f = flow(ONE_SYSTEM_TASK);
    let d = day(&f, vec![dispatch(1)]);
    let (mut core, _) = start_cluster(f.clone(), d, 5_000);
    let key = AttemptKey {
        task: crate::model::TaskId::new("init"),
        shard: 0,
        attempt: 1,
        generation: 0,
        kind: JobKind::Run,
        dispatch: 0,
    };
    let report = RemoteReport {
        executor: "e1".into(),
        instance: 7,
        epoch: 1,
        slot: 0,
        key,
        day: KeyDay { date: key_date.into(), cluster_id: "c1".into() },
        body: RemoteBody::Finished {
            outcome: crate::behavior::ShardOutcome::Succeeded,
            last_step: None,
        },
    };
    let mut out = core.handle(Input::RemoteReports(vec![report]), NOW);
    feed_prepared(&mut core, &f, &mut out, NOW);
    core
}

#[test]
fn a_late_report_of_the_previous_business_day_never_changes_the_open_day() {
    // Day T = 2026-09-29 closed and T+1 opened; an executor reports a job of T whose task,
    // shard, attempt and generation equal a running shard's of T+1. Its key's business date
    // (KeyDay) tells them apart: the report is dropped, T+1's shard keeps running.
    let init = |core: &Control| {
        let ix = core.flow.graph().index_of("init").expect("init");
        core.day().shard(ix, 0).expect("shard").status
    };
    let core = late_report("2026-09-29");
    assert_eq!(init(&core), ShardStatus::Running, "a report of day T is not applied to T+1");
    // The same report with T+1's date settles the shard: the check above could fail.
    let core = late_report("2026-09-30");
    assert_eq!(init(&core), ShardStatus::Succeeded, "a report of the open day is applied");
}

const TWO_INDEPENDENT: &str = r#"
[[task]]
id = "big"
name = "big"
level = "distributor"
behavior = "scripted"

[[task]]
id = "small"
name = "small"
level = "system"
behavior = "scripted"
"#;

#[test]
fn a_huge_failure_reason_is_capped_where_it_enters_and_the_day_goes_on() {
    // A behavior (or a peer) fails a shard with a 20 MiB reason: over the event limit, it
    // used to be applied in memory before the log refused it, killing the manager.
    let f = flow(ONE_SYSTEM_TASK);
    let (mut core, out) = start(f.clone(), day(&f, vec![]));
    let (key, executor, slot) = out
        .iter()
        .find_map(|e| match e {
            Effect::Assign { executor, assignment } => {
                Some((assignment.key.clone(), *executor, assignment.slot))
            }
            _ => None,
        })
        .expect("the shard is assigned");
    let reason = "é".repeat(10 << 20);
    let report = Report::Finished {
        key,
        executor,
        slot,
        outcome: crate::behavior::ShardOutcome::Failed { reason },
        last_step: None,
    };
    let mut out = core.handle(Input::Report(report), NOW);
    settle(&mut core, &mut out);
    let events: Vec<&DayEvent> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Append(events) => Some(events.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    let failed = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Shard { event: SE::Fail { reason }, .. } => Some((e, reason)),
            _ => None,
        })
        .expect("the failure is recorded");
    assert!(failed.1.len() <= crate::state::MAX_REASON_BYTES, "{} bytes", failed.1.len());
    assert!(failed.1.starts_with("éé") && failed.1.ends_with('…'));
    assert!(failed.0.encoded_len() <= crate::state::MAX_EVENT_BYTES);
    // The retry is armed as for any failure.
    assert_eq!(retry_timers(&out).len(), 1, "{out:#?}");
}

#[test]
fn a_registration_over_the_event_limit_fails_its_task_naming_the_shard_count_and_the_day_goes_on() {
    let f = flow(TWO_INDEPENDENT);
    let opts = local_options(1);
    let d = DayState::new(date(), Arc::new(f.graph().clone()));
    let mut core = Control::new(f.clone(), date(), d, 0, opts, NOW);
    let mut out = core.handle(Input::Start, NOW);
    // `big` splits into 20,000 shards with 1 KiB keys: ~20 MiB of registration.
    let mut i = 0;
    while i < out.len() {
        let more = match &out[i] {
            Effect::Append(events) => match events.last() {
                Some(last) => core.handle(Input::Durable(last.seq), NOW),
                None => Vec::new(),
            },
            Effect::Prepare { tasks, .. } => {
                let mut more = Vec::new();
                for &task in tasks.clone().iter() {
                    let mut result = crate::schedule::prepare_by_flow(&f, date(), task);
                    if f.graph().id(task).as_str() == "big"
                        && let Ok(p) = &mut result
                    {
                        let item = p.plans[0].scope.clone();
                        p.plans = (0..20_000)
                            .map(|n| {
                                crate::behavior::ShardPlan::new(
                                    ShardKey::new(format!("{n:0>1024}")),
                                    item.clone(),
                                )
                            })
                            .collect();
                    }
                    more.extend(core.handle(Input::Prepared { task, result }, NOW));
                }
                more
            }
            _ => Vec::new(),
        };
        out.extend(more);
        i += 1;
    }
    let registered: Vec<String> = appended(&out)
        .into_iter()
        .filter_map(|k| match k {
            EventKind::TaskRegistered { task, .. } => Some(task.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(registered, vec!["small".to_owned()], "big is not registered");
    // Nothing over the limit was appended.
    for e in out.iter().filter_map(|e| match e {
        Effect::Append(events) => Some(events.iter()),
        _ => None,
    }) {
        for ev in e {
            assert!(ev.encoded_len() <= crate::state::MAX_EVENT_BYTES);
        }
    }
    let big = core.task_view_by_id("big").expect("big on the board");
    let note = big.note.clone().unwrap_or_default();
    assert!(note.contains("20000 shards") && note.contains("event limit"), "{note}");
    // The day goes on: `small` runs.
    let ran = run_all(&mut core, &f, out);
    assert_eq!(ran, vec![("small".to_owned(), 0)]);
}

#[test]
fn a_lost_executors_shard_holds_its_units_until_it_is_requeued() {
    // `ta_db` is exclusive; `a` runs on e1, `b` waits for the unit. e1's session closes: it
    // may run on until its lease is surely over, so the unit stays held, and `b` waits, until
    // the orphan is requeued; then one of the two takes it (never both).
    let f = flow(LOCKED);
    let d = DayState::new(date(), Arc::new(f.graph().clone()));
    let (mut core, _) = start_cluster(f.clone(), d, 0);
    let join = join_in("e1", 3);
    let mut out = core.handle(Input::Join { req: 1, join }, NOW);
    feed_prepared(&mut core, &f, &mut out, NOW);
    let mut ran: Vec<String> = assigned(&out).into_iter().map(|(t, _)| t).collect();
    ran.sort();
    assert_eq!(ran, vec!["a", "c"], "{out:#?}");
    assert_eq!(core.board().resources[0].in_use, 1);

    let mut out = core.handle(Input::SessionClosed { executors: vec![0] }, NOW);
    feed_prepared(&mut core, &f, &mut out, NOW);
    assert!(assigned(&out).is_empty(), "nothing is reassigned before the lease is over: {out:#?}");
    assert_eq!(core.board().resources[0].in_use, 1, "the lost attempt still holds ta_db");
    assert_eq!(task_waits(&core, "b"), Some(WaitingFor::Resource { resource: "ta_db".into() }));
    assert!(core.books.check(core.day()).is_ok());

    // Past the lease (+ margin): the orphans are requeued and the unit given back.
    let later = Now { mono_ms: NOW.mono_ms + 1_300, wall_ms: NOW.wall_ms + 1_300 };
    let mut out = core.handle(Input::Timer(Timer::Orphans), later);
    feed_prepared(&mut core, &f, &mut out, later);
    assert!(
        appended(&out).iter().any(|k| matches!(k, EventKind::Shard { event: SE::Requeue, .. })),
        "{out:#?}"
    );
    assert_eq!(core.board().resources[0].in_use, 0, "released once requeued");
    assert!(core.books.check(core.day()).is_ok());
}

/// The join of a fresh executor (instance 9, protocol 1) running `scripted` with `slots` slots,
/// holding nothing.
fn join_in(executor: &str, slots: u32) -> JoinIn {
    JoinIn {
        executor: executor.into(),
        instance: 9,
        protocol_version: 1,
        slots,
        behaviors: vec!["scripted".into()],
        held: Vec::new(),
        busy: Vec::new(),
        agent_found: true,
    }
}

/// The options of a core with one in-process executor of `slots` slots (no cluster; unconfirmed
/// shards rolled back automatically).
fn local_options(slots: u32) -> ControlOptions {
    ControlOptions {
        auto_execute_manual: false,
        unconfirmed_policy: UnconfirmedPolicy::AutoRollback,
        shutdown_grace_ms: 1000,
        local: vec![("local-1".into(), slots)],
        cluster: None,
    }
}
