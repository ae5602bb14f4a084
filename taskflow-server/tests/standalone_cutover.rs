//! `taskflow standalone` without `--until-done` on the test clock (`TASKFLOW_TEST_CLOCK`):
//! it runs day T, cuts over to T+1 by itself when T closes and midnight has passed (a
//! WebSocket client sees the `day` frame, then a snapshot of T+1), is killed with SIGKILL, and
//! restarted without `--date` resumes the open day T+1 — not the day the clock would pick (the
//! restarted clock reads T's evening again). Bad starts: `--date` earlier than the data
//! directory's days is refused and writes nothing.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{request, ws_connect, ws_next};

const TOKEN: &str = "cutover-test-token-0123";
/// Tue Sep 29, 23:58 in Shanghai; 120× real time: midnight comes after one second.
const CLOCK: &str = "2026-09-29T23:58:00+08:00,120";

/// Starts `taskflow standalone` on the bundled example and waits for its console URL.
fn start(data: &Path, date: Option<&str>) -> common::Console {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskflow"));
    cmd.args(["standalone", "--http", "127.0.0.1:0", "--token", TOKEN])
        .arg("--data")
        .arg(data)
        .env("TASKFLOW_TEST_CLOCK", CLOCK)
        .env_remove("TASKFLOW_LOG")
        .env_remove("RUST_LOG")
        .env_remove("TASKFLOW_DATE")
        .stderr(Stdio::null());
    if let Some(d) = date {
        cmd.args(["--date", d]);
    }
    common::spawn_console(cmd)
}

async fn board(addr: std::net::SocketAddr) -> serde_json::Value {
    let (status, body) = request(addr, "GET", "/api/days/current", Some(TOKEN), "").await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_cuts_over_by_itself_and_a_killed_process_resumes_the_open_day() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut first = start(&data, Some("2026-09-29"));
    let b = board(first.addr).await;
    assert_eq!(b["date"], "2026-09-29", "{b}");
    let mut ws = ws_connect(&format!("ws://{}/ws?token={TOKEN}", first.addr)).await;
    // The day's manual task waits for an operator.
    let (status, body) = request(
        first.addr,
        "POST",
        "/api/days/2026-09-29/tasks/day_init/execute",
        Some(TOKEN),
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // T closes, midnight passes on the test clock, T+1 opens: `day` frame, then a snapshot.
    let day_frame = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let f = ws_next(&mut ws).await;
            if f["type"] == "day" && f["date"] == "2026-09-30" {
                return f;
            }
        }
    })
    .await
    .expect("the cutover's day frame within the bound");
    assert_eq!(day_frame["closed"], false, "{day_frame}");
    let snap = ws_next(&mut ws).await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(board(first.addr).await["date"], "2026-09-30");
    // The closed day stays browsable, read-only.
    let (status, past) = request(first.addr, "GET", "/api/days/2026-09-29", Some(TOKEN), "").await;
    assert_eq!(status, 200, "{past}");
    assert_eq!(past["closed"], true, "{past}");
    let (status, days) = request(first.addr, "GET", "/api/days", Some(TOKEN), "").await;
    assert_eq!(status, 200, "{days}");
    let listed: Vec<(String, String, bool)> = days["days"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            (s("date"), s("outcome"), d["current"] == true)
        })
        .collect();
    assert_eq!(
        listed,
        [("2026-09-30".into(), "open".into(), true), ("2026-09-29".into(), "closed".into(), false)],
        "{days}"
    );
    let (_, _, metrics) = common::raw(first.addr, "GET", "/metrics", Some(TOKEN), "").await;
    assert!(metrics.contains("taskflow_day_info{date=\"2026-09-30\"} 1"), "{metrics}");

    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");
    assert!(data.join("days/2026-09-30").is_dir(), "T+1 has its own store");

    // Restarted without --date, on a clock that reads Sep 29 23:58 again: the open day is
    // Sep 30, from the data directory, not from the clock.
    let second = start(&data, None);
    let b = board(second.addr).await;
    assert_eq!(b["date"], "2026-09-30", "{b}");
    assert_eq!(b["closed"], false, "{b}");
    drop(second);

    // An earlier --date is refused, naming both dates and backfill; nothing is created.
    let out = Command::new(env!("CARGO_BIN_EXE_taskflow"))
        .args(["standalone", "--http", "127.0.0.1:0", "--token", TOKEN, "--date", "2026-09-28"])
        .arg("--data")
        .arg(&data)
        .env("TASKFLOW_TEST_CLOCK", CLOCK)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--date 2026-09-28 is earlier than 2026-09-30"), "{err}");
    assert!(err.contains("taskflow backfill") && err.contains("not available yet"), "{err}");
    assert!(!data.join("days/2026-09-28").exists());
}
