//! A rolling runtime reads its flow directory again at each cutover
//! (`RuntimeOptions::flow_dir`): a changed flow takes effect from the next day, and a flow
//! that no longer validates, or names a behavior nobody hosts, is refused — the next day opens
//! with the flow it had, and the day goes on.
//!
//! The days are held open by a manual task until the test has rewritten the directory, so no
//! cutover races the rewrite. One test per file: the test clock is set once per process.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use support::*;
use taskflow_core::behavior::BehaviorRegistry;
use taskflow_core::flow::Flow;
use taskflow_core::model::BusinessDate;
use taskflow_core::state::OperatorAction;
use taskflow_core::{ManagerHandle, Runtime, RuntimeOptions, wall};

const HEADER: &str = "[flow]\nname = \"changing\"\ntime_zone = \"Asia/Shanghai\"\n\n";

fn task(id: &str, behavior: &str, trigger: &str) -> String {
    format!(
        "[[task]]\nid = \"{id}\"\nname = \"{id}\"\nlevel = \"system\"\nbehavior = \"{behavior}\"\n\
         trigger = \"{trigger}\"\n\n"
    )
}

/// Writes the flow directory: `flow.toml` from `tasks`, the shared reference files and a
/// calendar with every day open.
fn write_flow(dir: &Path, flow_toml: &str) {
    std::fs::write(dir.join("flow.toml"), flow_toml).unwrap();
    std::fs::write(dir.join("products.toml"), PRODUCTS).unwrap();
    std::fs::write(dir.join("distributors.toml"), DISTRIBUTORS).unwrap();
    std::fs::write(dir.join("calendar.toml"), CALENDAR_EVERY_DAY).unwrap();
}

const CALENDAR_EVERY_DAY: &str = "[calendar]\nfrom = 2026-01-01\nto = 2026-12-31\nweekend = []\n";

fn d(s: &str) -> BusinessDate {
    s.parse().unwrap()
}

/// Waits until the open day is `date`, then returns its task ids.
async fn open_day_tasks(m: &ManagerHandle, date: &str) -> Vec<String> {
    let mut days = m.day_changes();
    tokio::time::timeout(Duration::from_secs(60), async {
        while *days.borrow_and_update() != d(date) {
            days.changed().await.expect("the runtime keeps running");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{date} opens within the bound"));
    let board = m.board().await.unwrap();
    assert_eq!(board.date, d(date));
    let mut ids: Vec<String> = board.tasks.iter().map(|t| t.id.to_string()).collect();
    ids.sort();
    ids
}

async fn execute(m: &ManagerHandle, task: &str) {
    until(&format!("{task} is ready for an operator"), || async {
        m.act(cmd(OperatorAction::Execute, task, None)).await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_flow_takes_effect_at_the_next_cutover_and_a_broken_one_is_refused() {
    // 23:00 on the first day, 100,000× real time: a wall-clock day is under a second.
    let (start, speed) = wall::parse_test_clock("2026-09-28T23:00:00+08:00,100000").unwrap();
    wall::set_test_clock(start, speed).unwrap();
    let flow_dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();

    // Day 1 runs the flow given in code: `a` alone. The directory already holds version 2
    // (`a` and a manual `gate`), which day 2 must open with.
    let v1 = format!("{HEADER}{}", task("a", "noop", "auto"));
    let flow1 = Arc::new(Flow::from_strs(&v1, PRODUCTS, DISTRIBUTORS, CALENDAR_EVERY_DAY).unwrap());
    let v2 = format!("{HEADER}{}{}", task("a", "noop", "auto"), task("gate", "noop", "manual"));
    write_flow(flow_dir.path(), &v2);
    let opts = RuntimeOptions {
        roll_over: true,
        flow_dir: Some(flow_dir.path().to_owned()),
        ..RuntimeOptions::for_test(data.path(), d("2026-09-28"))
    };
    let (runtime, m) =
        Runtime::start(flow1, BehaviorRegistry::with_builtins(), opts).await.unwrap();

    assert_eq!(open_day_tasks(&m, "2026-09-28").await, ["a"]);
    assert_eq!(open_day_tasks(&m, "2026-09-29").await, ["a", "gate"], "v2 from the second day");
    assert!(m.flow().task_by_id("gate").is_some(), "the handle serves the day's flow");

    // A flow that no longer parses: the third day keeps v2.
    write_flow(flow_dir.path(), &format!("{v2}[[task]\nid = "));
    execute(&m, "gate").await;
    assert_eq!(open_day_tasks(&m, "2026-09-30").await, ["a", "gate"], "a broken flow is refused");

    // A valid flow whose behavior nobody here hosts: refused too.
    let unhosted =
        format!("{HEADER}{}{}", task("a", "nope", "auto"), task("gate", "noop", "manual"));
    write_flow(flow_dir.path(), &unhosted);
    execute(&m, "gate").await;
    let tasks = open_day_tasks(&m, "2026-10-01").await;
    assert_eq!(tasks, ["a", "gate"]);
    assert_eq!(
        m.flow().task_by_id("a").unwrap().behavior,
        "noop",
        "an unhosted behavior is refused"
    );

    // Version 3, valid again: `b` replaces `gate` from the next day on.
    let v3 = format!("{HEADER}{}{}", task("a", "noop", "auto"), task("b", "noop", "manual"));
    write_flow(flow_dir.path(), &v3);
    execute(&m, "gate").await;
    assert_eq!(open_day_tasks(&m, "2026-10-02").await, ["a", "b"]);

    // Each day keeps the flow it opened with beside it: day 1 ran a flow the directory no
    // longer held, so it keeps none; the refused flows were never kept.
    runtime.shutdown().await.unwrap();
    let kept = |date: &str| {
        let path = data.path().join("flows").join(date).join("flow.toml");
        std::fs::read_to_string(path).ok()
    };
    assert_eq!(kept("2026-09-28"), None);
    assert_eq!(kept("2026-09-29").as_deref(), Some(v2.as_str()));
    assert_eq!(kept("2026-09-30").as_deref(), Some(v2.as_str()));
    assert_eq!(kept("2026-10-01").as_deref(), Some(v2.as_str()));
    assert_eq!(kept("2026-10-02").as_deref(), Some(v3.as_str()));

    // The flow directory now drops `b`, which the open day registered. A restart resumes the
    // open day with the flow it opened with (with the new flow its journal would not even
    // recover: it names a task the new flow lacks); the new one waits for the next day.
    let v4 = format!("{HEADER}{}", task("a", "noop", "auto"));
    write_flow(flow_dir.path(), &v4);
    let flow4 = Arc::new(Flow::from_strs(&v4, PRODUCTS, DISTRIBUTORS, CALENDAR_EVERY_DAY).unwrap());
    let opts = RuntimeOptions {
        roll_over: true,
        flow_dir: Some(flow_dir.path().to_owned()),
        ..RuntimeOptions::for_test(data.path(), d("2026-10-02"))
    };
    let (runtime, m) =
        Runtime::start(flow4.clone(), BehaviorRegistry::with_builtins(), opts).await.unwrap();
    assert_eq!(open_day_tasks(&m, "2026-10-02").await, ["a", "b"], "resumed with its own flow");
    execute(&m, "b").await;
    assert_eq!(open_day_tasks(&m, "2026-10-03").await, ["a"], "the new flow from the next day");
    runtime.shutdown().await.unwrap();
    let (past, why) = taskflow_core::flow::flow_of_day(data.path(), d("2026-09-29"), &flow4);
    assert!(why.is_none() && past.task_by_id("gate").is_some(), "a past day reads with its flow");

    // Each day records the digest of the flow it opened with.
    let digest = |date: &str, flow: &Flow| {
        let dir = data.path().join("days").join(date);
        let day =
            taskflow_core::PastDay::open(&dir, d(date), Arc::new(flow.graph().clone())).unwrap();
        day.state().flow_digest().to_owned()
    };
    let f2 = Flow::from_strs(&v2, PRODUCTS, DISTRIBUTORS, CALENDAR_EVERY_DAY).unwrap();
    let f3 = Flow::from_strs(&v3, PRODUCTS, DISTRIBUTORS, CALENDAR_EVERY_DAY).unwrap();
    assert_eq!(digest("2026-09-30", &f2), digest("2026-09-29", &f2));
    assert_ne!(
        digest("2026-10-02", &f3),
        digest("2026-09-29", &f2),
        "the new day records its flow"
    );
}
