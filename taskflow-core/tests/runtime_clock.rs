//! `at HH:MM` triggers against the real clock: a task waits for its time while the runtime
//! runs, and a trigger whose time passed while the runtime was down fires once on start.
//!
//! The trigger is set to the next whole minute in the flow's time zone, so each test waits at
//! most a minute of wall-clock time — that passing time is what is under test.

mod support;

use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use support::*;
use taskflow_core::model::BusinessDate;
use taskflow_core::state::TaskStatus;
use taskflow_core::{DayOutcome, RuntimeOptions, today_in};

/// A flow of one timed task, firing at the next whole minute; with its fire instant.
fn timed_flow() -> (std::sync::Arc<taskflow_core::flow::Flow>, DateTime<Utc>) {
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    let now = Utc::now().with_timezone(&tz);
    let next = now + chrono::Duration::seconds(60 - i64::from(now.second()));
    let at = format!("at {:02}:{:02}", next.hour(), next.minute());
    let tasks = format!(
        "[[task]]\nid = \"timed\"\nname = \"timed\"\nlevel = \"system\"\nbehavior = \"noop\"\n\
         run_on = \"every-day\"\ntrigger = \"{at}\"\n"
    );
    let fire = next.with_second(0).unwrap().with_nanosecond(0).unwrap().with_timezone(&Utc);
    // A calendar around today, whatever the year the test runs in, with every day open: the
    // test runs on the day it is started, a Saturday in the flow's time zone included.
    let year = now.year();
    let calendar =
        format!("[calendar]\nfrom = {}-01-01\nto = {}-12-31\nweekend = []\n", year - 1, year + 1);
    let text = format!("[flow]\nname = \"clock\"\ntime_zone = \"Asia/Shanghai\"\n\n{tasks}");
    let flow = taskflow_core::flow::Flow::from_strs(&text, PRODUCTS, DISTRIBUTORS, &calendar)
        .unwrap_or_else(|e| panic!("{e}"));
    (std::sync::Arc::new(flow), fire)
}

fn today_opts(dir: &tempfile::TempDir, flow: &taskflow_core::flow::Flow) -> RuntimeOptions {
    let today = BusinessDate(today_in(flow));
    RuntimeOptions::for_test(dir.path(), today)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_task_waits_for_its_time_and_then_runs() {
    let (flow, fire) = timed_flow();
    let dir = tempfile::tempdir().unwrap();
    let (rt, m) = start(flow.clone(), &Ledger::default(), today_opts(&dir, &flow)).await;
    until("the timed task is registered", || async {
        let board = m.board().await.unwrap();
        board.task("timed").is_some_and(|t| t.registered_ms.is_some())
    })
    .await;
    let board = m.board().await.unwrap();
    let task = board.task("timed").unwrap();
    if Utc::now() < fire - chrono::Duration::milliseconds(200) {
        assert!(task.started_ms.is_none(), "ran before its time: {task:?}");
        assert_eq!(task.fires_at, Some(fire));
    }
    let outcome = m.wait_until_done(Duration::from_secs(90)).await.unwrap();
    let DayOutcome::Completed(board) = outcome else { panic!("stalled: {outcome:?}") };
    let task = board.task("timed").unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert!(task.started_ms.unwrap() >= fire.timestamp_millis(), "started before {fire}");
    assert_eq!(task.attempts, 1);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_missed_while_down_fires_once_on_start() {
    let (flow, fire) = timed_flow();
    let dir = tempfile::tempdir().unwrap();
    let (rt, m) = start(flow.clone(), &Ledger::default(), today_opts(&dir, &flow)).await;
    let board = m.board().await.unwrap();
    assert!(board.task("timed").unwrap().started_ms.is_none() || Utc::now() >= fire);
    rt.shutdown().await.unwrap();

    // Down while the trigger's time passes.
    let wait = (fire - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(300);
    tokio::time::sleep(wait).await;

    let (rt, m) = start(flow.clone(), &Ledger::default(), today_opts(&dir, &flow)).await;
    let outcome = m.wait_until_done(Duration::from_secs(30)).await.unwrap();
    let DayOutcome::Completed(board) = outcome else { panic!("stalled: {outcome:?}") };
    let task = board.task("timed").unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(task.attempts, 1, "fires once");
    rt.shutdown().await.unwrap();
}
