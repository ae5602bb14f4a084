//! The forecast on the pure core: known durations in, predicted starts and ends out.

use std::sync::Arc;

use super::*;
use crate::control::{ControlOptions, Estimates};
use crate::flow::Flow;
use crate::model::BusinessDate;
use crate::state::{DayState, UnconfirmedPolicy};
use crate::store::history::{History, TaskHistory};
use crate::testing::{CALENDAR, DISTRIBUTORS, PRODUCTS};

/// 2026-09-30 15:00 in Shanghai (07:00 UTC), the business date's afternoon.
const NOW: Now = Now { mono_ms: 5_000, wall_ms: 1_790_751_600_000 };

fn flow(tasks: &str) -> Arc<Flow> {
    let text = format!("[flow]\nname = \"fc\"\ntime_zone = \"Asia/Shanghai\"\n\n{tasks}");
    Arc::new(Flow::from_strs(&text, PRODUCTS, DISTRIBUTORS, CALENDAR).expect("valid flow"))
}

fn task(id: &str, deps: &[&str], extra: &str) -> String {
    let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "[[task]]\nid = \"{id}\"\nname = \"{id}\"\nlevel = \"system\"\nbehavior = \"noop\"\ndepends_on = [{}]\n{extra}\n",
        deps.join(", ")
    )
}

/// Estimates from a history in which each named task's shards took `ms`.
fn estimates(flow: &Flow, durations: &[(&str, u64)]) -> Estimates {
    let mut h = History::default();
    for (t, ms) in durations {
        h.tasks.insert((*t).into(), TaskHistory { samples: vec![*ms], ..TaskHistory::default() });
    }
    Estimates::new(flow, &h)
}

/// A live core of `flow` with `slots` in-process slots, just started (its start's events not
/// yet durable: the forecast releases them itself).
fn live(flow: &Arc<Flow>, slots: u32) -> Control {
    let date = BusinessDate::from_ymd(2026, 9, 30).expect("date");
    let opts = ControlOptions {
        auto_execute_manual: false,
        unconfirmed_policy: UnconfirmedPolicy::AutoRollback,
        shutdown_grace_ms: 1_000,
        local: vec![("local-1".into(), slots)],
        cluster: None,
    };
    let day = DayState::new(date, Arc::new(flow.graph().clone()));
    let mut core = Control::new(flow.clone(), date, day, 0, opts, NOW);
    core.handle(Input::Start, NOW);
    core
}

fn end(f: &Forecast, flow: &Flow, task: &str) -> Option<i64> {
    f.task(flow, task).predicted_end_ms.map(|e| e - NOW.wall_ms)
}

fn start(f: &Forecast, flow: &Flow, task: &str) -> Option<i64> {
    f.task(flow, task).predicted_start_ms.map(|e| e - NOW.wall_ms)
}

#[test]
fn a_chain_of_three_tasks_with_known_durations_predicts_exact_ends() {
    let f = flow(&[task("a", &[], ""), task("b", &["a"], ""), task("c", &["b"], "")].concat());
    let est = estimates(&f, &[("a", 1_000), ("b", 2_000), ("c", 3_000)]);
    let core = live(&f, 4);
    let fc = forecast(core.clone(), &est, NOW);
    assert_eq!((start(&fc, &f, "a"), end(&fc, &f, "a")), (Some(0), Some(1_000)));
    assert_eq!((start(&fc, &f, "b"), end(&fc, &f, "b")), (Some(1_000), Some(3_000)));
    assert_eq!((start(&fc, &f, "c"), end(&fc, &f, "c")), (Some(3_000), Some(6_000)));
    assert_eq!(fc.day.predicted_end_ms, Some(NOW.wall_ms + 6_000));
    assert_eq!(fc.day.computed_at_ms, NOW.wall_ms);
    assert!(fc.tasks.iter().all(|t| !t.low_confidence && !t.actual && !t.at_risk));
    // The live core is untouched: nothing of the simulation was recorded in it.
    assert_eq!(core.day().last_seq(), live(&f, 4).day().last_seq());
    assert!(!core.day().is_done(f.graph().index_of("a").expect("a")));
}

#[test]
fn two_tasks_competing_for_one_slot_are_serialised_higher_priority_first() {
    let f = flow(&[task("a", &[], ""), task("b", &[], "priority = 5")].concat());
    let est = estimates(&f, &[("a", 1_000), ("b", 1_000)]);
    let fc = forecast(live(&f, 1), &est, NOW);
    assert_eq!((start(&fc, &f, "b"), end(&fc, &f, "b")), (Some(0), Some(1_000)));
    assert_eq!((start(&fc, &f, "a"), end(&fc, &f, "a")), (Some(1_000), Some(2_000)));
    // With two slots they run side by side.
    let fc = forecast(live(&f, 2), &est, NOW);
    assert_eq!((end(&fc, &f, "a"), end(&fc, &f, "b")), (Some(1_000), Some(1_000)));
}

#[test]
fn a_resource_of_one_unit_serialises_tasks_that_need_it() {
    let tasks = [task("a", &[], "needs = { db = 1 }"), task("b", &[], "needs = { db = 1 }")];
    let f = flow(&format!("[[resource]]\nname = \"db\"\nunits = 1\n\n{}", tasks.concat()));
    let est = estimates(&f, &[("a", 1_000), ("b", 1_000)]);
    let fc = forecast(live(&f, 4), &est, NOW);
    let mut ends = [end(&fc, &f, "a"), end(&fc, &f, "b")];
    ends.sort();
    assert_eq!(ends, [Some(1_000), Some(2_000)]);
}

#[test]
fn a_held_task_is_predicted_not_to_start_and_says_so() {
    let f = flow(&[task("a", &[], ""), task("b", &["a"], "deadline = \"23:00\"")].concat());
    let est = estimates(&f, &[("a", 1_000), ("b", 1_000)]);
    let mut core = live(&f, 2);
    let cmd = Command {
        actor: "op".into(),
        from: "test".into(),
        reason: "wait for the bank".into(),
        action: OperatorAction::Hold,
        target: Target { task: crate::model::TaskId::new("b"), shard: None },
    };
    core.handle(Input::Act { req: 1, cmd }, NOW);
    let fc = forecast(core, &est, NOW);
    assert_eq!(end(&fc, &f, "a"), Some(1_000));
    let b = fc.task(&f, "b");
    assert_eq!((b.predicted_start_ms, b.predicted_end_ms), (None, None));
    assert!(b.note.as_deref().is_some_and(|n| n.starts_with("held by op")), "{b:?}");
    assert!(b.at_risk, "a held task with a deadline never ends: at risk");
    assert_eq!(fc.day.predicted_end_ms, None, "the day does not end while b is held");
}

#[test]
fn a_deadline_before_the_predicted_end_is_at_risk() {
    // NOW is 15:00 local; a takes 30 minutes, b one hour after it.
    let mut text = String::from("[flow]\nname = \"fc\"\ndeadline = \"16:00\"\n\n");
    text.push_str(&task("a", &[], "deadline = \"15:45\""));
    text.push_str(&task("b", &["a"], "deadline = \"16:15\""));
    let f = Arc::new(Flow::from_strs(&text, PRODUCTS, DISTRIBUTORS, CALENDAR).expect("valid flow"));
    let est = estimates(&f, &[("a", 30 * 60_000), ("b", 60 * 60_000)]);
    let fc = forecast(live(&f, 2), &est, NOW);
    assert!(!fc.task(&f, "a").at_risk, "a ends 15:30, before 15:45");
    assert!(fc.task(&f, "b").at_risk, "b ends 16:30, after 16:15");
    assert_eq!(end(&fc, &f, "b"), Some(90 * 60_000));
    assert!(fc.day.at_risk, "the day ends 16:30, after 16:00");
}

#[test]
fn tasks_without_history_use_the_default_and_are_low_confidence_and_manual_ones_are_assumed() {
    let f = flow(
        &[task("a", &[], "trigger = \"manual\""), task("b", &["a"], "timeout = \"20s\"")].concat(),
    );
    let fc = forecast(live(&f, 2), &Estimates::new(&f, &History::default()), NOW);
    // a: 1 s (no timeout), b: a tenth of its 20 s timeout.
    assert_eq!(end(&fc, &f, "a"), Some(1_000));
    assert_eq!(end(&fc, &f, "b"), Some(3_000));
    assert!(fc.task(&f, "a").low_confidence && fc.task(&f, "b").low_confidence);
    assert_eq!(fc.task(&f, "a").note.as_deref(), Some("manual: assumed executed when runnable"));
    assert!(fc.day.assumptions.iter().any(|a| a.contains("manual")), "{:?}", fc.day.assumptions);
}

#[test]
fn a_task_over_ten_thousand_shards_is_predicted_in_aggregate() {
    // A behavior-split task with 50,000 shards on its last day, 4 slots, 10 ms a shard:
    // ⌈50,000 / 4⌉ × 10 ms = 125 s, predicted from 4 aggregate shards, not 50,000.
    let f = flow(&task("big", &[], "shard_by = \"behavior\""));
    let mut h = History::default();
    let sizes = vec![crate::store::history::DaySize { shards: 50_000, items: 50_000 }];
    h.tasks
        .insert("big".into(), TaskHistory { samples: vec![10], sizes, ..TaskHistory::default() });
    let fc = forecast(live(&f, 4), &Estimates::new(&f, &h), NOW);
    assert_eq!(end(&fc, &f, "big"), Some(125_000));
    assert!(
        fc.day.assumptions.iter().any(|a| a.contains("50000 shards predicted in aggregate")),
        "{:?}",
        fc.day.assumptions
    );
}

#[test]
fn the_board_shows_what_happened_since_the_forecast_a_done_task_its_actual_times() {
    let f = flow(&[task("a", &[], "deadline = \"15:00\""), task("b", &["a"], "")].concat());
    let est = estimates(&f, &[("a", 60_000), ("b", 1_000)]);
    let mut core = live(&f, 2);
    let fc = forecast(core.clone(), &est, NOW);
    assert_eq!(end(&fc, &f, "a"), Some(60_000));
    core.handle(Input::Forecast(std::sync::Arc::new(fc)), NOW);
    // a runs (its start released once durable) and ends after 10 ms, not the predicted minute.
    let last = core.day().last_seq();
    let out = core.handle(Input::Durable(last), NOW);
    let (executor, assignment) = out
        .iter()
        .find_map(|e| match e {
            Effect::Assign { executor, assignment } => Some((*executor, assignment.clone())),
            _ => None,
        })
        .expect("a is assigned");
    let later = Now { mono_ms: NOW.mono_ms + 10, wall_ms: NOW.wall_ms + 10 };
    let report = Report::Finished {
        key: assignment.key,
        executor,
        slot: assignment.slot,
        outcome: ShardOutcome::Succeeded,
        last_step: None,
    };
    core.handle(Input::Report(report), later);
    let board = core.board();
    let a = board.task("a").and_then(|t| t.forecast.clone()).expect("a's line");
    assert_eq!(
        (a.predicted_start_ms, a.predicted_end_ms),
        (Some(NOW.wall_ms), Some(NOW.wall_ms + 10))
    );
    assert!(a.actual && a.at_risk, "done 10 ms after its 15:00 deadline: {a:?}");
    let b = board.task("b").and_then(|t| t.forecast.clone()).expect("b's line");
    assert!(!b.actual && b.predicted_end_ms == Some(NOW.wall_ms + 61_000), "{b:?}");
}
