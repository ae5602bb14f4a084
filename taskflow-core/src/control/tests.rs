//! Unit tests of the pure core: a day state in, inputs fed, effects inspected. The simulator
//! (`testing::sim`) hunts for bugs; these pin the ones it or a review found.

use std::sync::Arc;

use super::*;
use crate::flow::Flow;
use crate::model::{ScopeItem, ShardKey};
use crate::state::{DayEvent, EventKind, ShardEvent as SE};
use crate::testing::{CALENDAR, DISTRIBUTORS, PRODUCTS};

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
    let opts = ControlOptions {
        auto_execute_manual: false,
        unconfirmed_policy: UnconfirmedPolicy::AutoRollback,
        shutdown_grace_ms: 1000,
        local: vec![("local-1".into(), 1)],
        cluster: None,
    };
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
