//! Ten consecutive business days of the bundled example flow in ONE `Runtime` that rolls over
//! by itself (`RuntimeOptions::roll_over`), on a test wall clock that runs fast: across the
//! Sep 30 month end, the National Day holiday (Oct 1–7), the make-up workday Sat Oct 10 and
//! the weekend Sun Oct 11. Each day lives in its own `days/<date>/` store, closed with every
//! task done; no directory is created for a date that does not open.
//!
//! One test per file: the test clock is set once per process.

use std::sync::Arc;
use std::time::Duration;

use taskflow_core::behavior::BehaviorRegistry;
use taskflow_core::model::BusinessDate;
use taskflow_core::{DayOutcome, PastDay, Runtime, RuntimeOptions, wall};
use taskflow_examples::fund_clearing::{self, FundOptions};

const DAYS: [&str; 10] = [
    "2026-09-28",
    "2026-09-29",
    "2026-09-30",
    "2026-10-08",
    "2026-10-09",
    "2026-10-10",
    "2026-10-12",
    "2026-10-13",
    "2026-10-14",
    "2026-10-15",
];

fn d(s: &str) -> BusinessDate {
    s.parse().expect("valid test date")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_business_days_roll_over_in_one_runtime() {
    // 23:00 on the first day; 100,000× real time: a wall-clock day is under a second.
    let (start, speed) =
        wall::parse_test_clock("2026-09-28T23:00:00+08:00,100000").expect("a test clock");
    wall::set_test_clock(start, speed).expect("the test clock");
    let flow = Arc::new(fund_clearing::flow().expect("the example flow loads"));
    let mut registry = BehaviorRegistry::with_builtins();
    fund_clearing::register_with(&mut registry, FundOptions::for_test()).expect("behaviors");
    let data = tempfile::tempdir().expect("temp dir");
    let opts = RuntimeOptions {
        auto_execute_manual: true,
        roll_over: true,
        ..RuntimeOptions::for_test(data.path(), d(DAYS[0]))
    };
    let (runtime, manager) = Runtime::start(flow.clone(), registry, opts).await.expect("start");
    let mut days = manager.day_changes();
    let mut seen = vec![*days.borrow_and_update()];
    let last = d(DAYS[DAYS.len() - 1]);
    tokio::time::timeout(Duration::from_secs(240), async {
        while *seen.last().expect("a day") < last {
            days.changed().await.expect("the runtime keeps running");
            seen.push(*days.borrow_and_update());
        }
    })
    .await
    .expect("ten days within the bound");
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            // The handle follows the open day: wait on the last one.
            let o = manager.wait_until_done(Duration::from_secs(60)).await.expect("answer");
            if o.board().date == last {
                return o;
            }
            days.changed().await.expect("runtime running");
        }
    })
    .await
    .expect("the last day ends within the bound");
    assert!(matches!(outcome, DayOutcome::Completed(_)), "the last day completed");
    runtime.shutdown().await.expect("shutdown");

    let seen: Vec<String> = seen.iter().map(ToString::to_string).collect();
    assert_eq!(seen, DAYS, "the open day went through each business day in order");
    let graph = Arc::new(flow.graph().clone());
    for date in DAYS {
        let dir = data.path().join("days").join(date);
        let day = PastDay::open(&dir, d(date), graph.clone()).expect("the day's store reads");
        let state = day.state();
        assert!(state.is_closed(), "{date} closed");
        for ix in flow.graph().indices() {
            assert!(state.task_status(ix).is_done(), "{date}: {} done", flow.graph().id(ix));
        }
    }
    for never in ["2026-10-01", "2026-10-04", "2026-10-07", "2026-10-11", "2026-10-03"] {
        assert!(!data.path().join("days").join(never).exists(), "{never} is not an open day");
    }
}
