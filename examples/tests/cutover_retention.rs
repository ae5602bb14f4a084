//! Retention in a rolling runtime: the bundled example flow with `retain_days = 3`, seven
//! consecutive business days (across the Sep 30 month end, National Day Oct 1–7 and the
//! make-up workday Sat Oct 10) in ONE `Runtime` on a fast test wall clock. At each cutover the
//! runtime removes the closed days outside the three newest open days: at the end only Oct 9,
//! Oct 10 and Oct 12 are left (Oct 10, 12 and 13 if the fast clock opened Oct 13 before the
//! shutdown), and nothing outside `days/` (the duration history
//! `DATA/history/`, a file beside `days/`, a directory in `days/` that is not a date) was touched.
//!
//! One test per file: the test clock is set once per process.

use std::sync::Arc;
use std::time::Duration;

use taskflow_core::behavior::BehaviorRegistry;
use taskflow_core::flow::Flow;
use taskflow_core::model::BusinessDate;
use taskflow_core::{DayOutcome, Runtime, RuntimeOptions, list_days, wall};
use taskflow_examples::fund_clearing::{self, FundOptions};

const DAYS: [&str; 7] = [
    "2026-09-28",
    "2026-09-29",
    "2026-09-30",
    "2026-10-08",
    "2026-10-09",
    "2026-10-10",
    "2026-10-12",
];

fn d(s: &str) -> BusinessDate {
    s.parse().expect("valid test date")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_runtime_prunes_the_closed_days_outside_retain_days_at_each_cutover() {
    let (start, speed) =
        wall::parse_test_clock("2026-09-28T23:00:00+08:00,100000").expect("a test clock");
    wall::set_test_clock(start, speed).expect("the test clock");
    let text = fund_clearing::FLOW_TOML.replacen("[flow]\n", "[flow]\nretain_days = 3\n", 1);
    let flow = Flow::from_strs(
        &text,
        fund_clearing::PRODUCTS_TOML,
        fund_clearing::DISTRIBUTORS_TOML,
        fund_clearing::CALENDAR_TOML,
    )
    .expect("the example flow with retain_days loads");
    assert_eq!(flow.settings().day.retain_days, 3);
    let flow = Arc::new(flow);
    let mut registry = BehaviorRegistry::with_builtins();
    fund_clearing::register_with(&mut registry, FundOptions::for_test()).expect("behaviors");
    let data = tempfile::tempdir().expect("temp dir");
    // What retention must never touch.
    let history = data.path().join("history");
    std::fs::create_dir_all(&history).expect("history");
    std::fs::write(history.join("durations.bin"), b"kept").expect("history file");
    std::fs::create_dir_all(data.path().join("days").join("notes")).expect("notes");
    std::fs::write(data.path().join("README"), b"operator notes").expect("a file beside days/");
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
    .expect("seven days within the bound");
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
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
    // A cutover under way (and its prune) finishes before the shutdown returns. The fast
    // clock may have opened Oct 13 before it: the newest day is then Oct 13.
    runtime.shutdown().await.expect("shutdown");

    let seen: Vec<String> = seen.iter().map(ToString::to_string).collect();
    assert_eq!(seen[..DAYS.len()], DAYS, "the open day went through each business day in order");
    let left: Vec<String> =
        list_days(data.path()).expect("list").iter().map(|d| d.date.to_string()).collect();
    let expected: &[&str] = match left.last().map(String::as_str) {
        Some("2026-10-12") => &["2026-10-09", "2026-10-10", "2026-10-12"],
        Some("2026-10-13") => &["2026-10-10", "2026-10-12", "2026-10-13"],
        other => panic!("the newest day is Oct 12 or Oct 13, found {other:?} in {left:?}"),
    };
    assert_eq!(
        left, expected,
        "the three newest open days are kept, the older closed ones removed"
    );
    assert_eq!(std::fs::read(history.join("durations.bin")).expect("history kept"), b"kept");
    assert!(data.path().join("days").join("notes").is_dir(), "a non-day directory is kept");
    assert_eq!(std::fs::read(data.path().join("README")).expect("kept"), b"operator notes");
    let leftovers: Vec<_> = std::fs::read_dir(data.path().join("days"))
        .expect("days")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pruning"))
        .collect();
    assert!(leftovers.is_empty(), "no half-removed day is left: {leftovers:?}");
}
