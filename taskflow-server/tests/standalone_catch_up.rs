//! Catch-up after a week down, with the real binary on the test clock: a rolling `taskflow
//! standalone` closes Mon 2026-10-12 and is stopped; started again a week later (Mon
//! 2026-10-19, 23:00) without `--date`, it opens each missed business day in date order under
//! its own date with `catch_up = "all"` (never the weekend), and only the newest with
//! `catch_up = "latest"`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::request;

const TOKEN: &str = "catch-up-test-token-0123";

/// A flow of one no-op task with `catch_up`, on the example's calendar and reference data.
fn flow_dir(dir: &Path, catch_up: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fund-clearing");
    for f in ["products.toml", "distributors.toml", "calendar.toml"] {
        std::fs::copy(Path::new(example).join(f), dir.join(f)).unwrap();
    }
    let flow = format!(
        "[flow]\nname = \"nightly\"\ntime_zone = \"Asia/Shanghai\"\ncatch_up = \"{catch_up}\"\n\n\
         [[task]]\nid = \"eod\"\nname = \"end of day\"\nlevel = \"system\"\nbehavior = \"noop\"\n"
    );
    std::fs::write(dir.join("flow.toml"), flow).unwrap();
}

/// Starts a rolling `taskflow standalone` on the test clock `clock` and waits for its console.
fn start(flow: &Path, data: &Path, clock: &str, date: Option<&str>) -> common::Console {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskflow"));
    cmd.args(["standalone", "--http", "127.0.0.1:0", "--token", TOKEN, "--flow"])
        .arg(flow)
        .arg("--data")
        .arg(data)
        .env("TASKFLOW_TEST_CLOCK", clock)
        .env_remove("TASKFLOW_LOG")
        .env_remove("RUST_LOG")
        .env_remove("TASKFLOW_DATE")
        .stderr(Stdio::inherit());
    if let Some(d) = date {
        cmd.args(["--date", d]);
    }
    common::spawn_console(cmd)
}

/// Waits (bounded) until `GET /api/days` lists exactly `want` (oldest first), each closed.
async fn wait_days_closed(t: &common::Console, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = request(t.addr, "GET", "/api/days", Some(TOKEN), "").await;
        assert_eq!(status, 200, "{body}");
        let mut days: Vec<(String, String)> = body["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (d["date"].as_str().unwrap().to_owned(), d["outcome"].as_str().unwrap().to_owned())
            })
            .collect();
        days.sort();
        let dates: Vec<&str> = days.iter().map(|(d, _)| d.as_str()).collect();
        if dates == want && days.iter().all(|(_, o)| o == "closed") {
            return;
        }
        assert!(
            dates.iter().all(|d| want.contains(d)),
            "a day that must not open was opened: {days:?} (want {want:?})"
        );
        assert!(Instant::now() < deadline, "days {days:?}, want {want:?} all closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_week_down(catch_up: &str, after: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let (flow, data) = (tmp.path().join("flow"), tmp.path().join("data"));
    flow_dir(&flow, catch_up);
    // Monday evening: the day runs and closes; the process waits for Tuesday's midnight.
    let first = start(&flow, &data, "2026-10-12T23:00:00+08:00,1", Some("2026-10-12"));
    wait_days_closed(&first, &["2026-10-12"]).await;
    drop(first);
    // A week later, 23:00 on Monday Oct 19, started again without --date.
    let second = start(&flow, &data, "2026-10-19T23:00:00+08:00,1", None);
    let mut want = vec!["2026-10-12"];
    want.extend_from_slice(after);
    wait_days_closed(&second, &want).await;
    let (_, current) = request(second.addr, "GET", "/api/days/current", Some(TOKEN), "").await;
    assert_eq!(current["date"], "2026-10-19", "the newest day is the open one: {current}");
    for skipped in ["2026-10-17", "2026-10-18"] {
        assert!(!data.join("days").join(skipped).exists(), "{skipped} is a weekend");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_all_opens_each_missed_business_day_in_order() {
    a_week_down("all", &["2026-10-13", "2026-10-14", "2026-10-15", "2026-10-16", "2026-10-19"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_latest_opens_only_the_newest_missed_day() {
    a_week_down("latest", &["2026-10-19"]).await;
}
