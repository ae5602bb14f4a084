//! `taskflow manager` without `--until-done`, on the test clock, with two executor processes:
//! it runs day T, cuts over to T+1 and then T+2 by itself (an operator executes each day's
//! manual `day_init` over HTTP; a WebSocket client sees each `day` frame), and the shared
//! ledger holds each day's postings exactly once.

#[path = "cluster_common/mod.rs"]
mod support;

#[path = "common/mod.rs"]
mod http;

use std::time::Duration;

use support::*;
use taskflow_examples::fund_clearing::FileLedger;

const TOKEN: &str = "cluster-cutover-token-01";
/// Mon Sep 28, 23:58 in Shanghai; 3000× real time: a wall-clock day is under 30 s.
const CLOCK: &str = "2026-09-28T23:58:00+08:00,3000";
const DAYS: [&str; 3] = ["2026-09-28", "2026-09-29", "2026-09-30"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_cuts_over_twice_with_executor_processes_and_each_ledger_is_exact() {
    let c = Cluster::new();
    let data = c.data();
    let ledger = c.dir.path().join("ledger");
    let env = [("TASKFLOW_LEDGER_DIR", ledger.to_str().unwrap()), ("TASKFLOW_TEST_CLOCK", CLOCK)];
    let m = Proc::spawn(
        &[
            "manager",
            "--cluster",
            &c.addr,
            "--date",
            DAYS[0],
            "--lease",
            "2000",
            "--data",
            data.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--token",
            TOKEN,
        ],
        &env,
    );
    assert!(m.wait_for("console: http://", Duration::from_secs(60)), "{}", m.output());
    let out = m.output();
    let addr: std::net::SocketAddr = out
        .lines()
        .find_map(|l| l.strip_prefix("console: http://"))
        .and_then(|rest| rest.split('/').next())
        .expect("the console URL")
        .parse()
        .expect("host:port");
    let execs: Vec<Proc> = ["e1", "e2"].iter().map(|n| c.executor(n, 2, &env)).collect();
    let mut ws = http::ws_connect(&format!("ws://{addr}/ws?token={TOKEN}")).await;
    for (i, date) in DAYS.iter().enumerate() {
        let path = format!("/api/days/{date}/tasks/day_init/execute");
        let (status, body) = http::request(addr, "POST", &path, Some(TOKEN), "{}").await;
        assert_eq!(status, 200, "{date}: {body}\n{}", m.output());
        if let Some(next) = DAYS.get(i + 1) {
            tokio::time::timeout(Duration::from_secs(180), async {
                loop {
                    let f = http::ws_next(&mut ws).await;
                    if f["type"] == "day" && f["date"] == *next {
                        return;
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no cutover to {next}:\n{}", m.output()));
        }
    }
    // The last day closes (its `day` frame with closed = true).
    tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            let f = http::ws_next(&mut ws).await;
            if f["type"] == "day" && f["date"] == DAYS[2] && f["closed"] == true {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} did not close:\n{}", DAYS[2], m.output()));
    let (status, days) = http::request(addr, "GET", "/api/days", Some(TOKEN), "").await;
    assert_eq!(status, 200, "{days}");
    let listed: Vec<(&str, &str)> = days["days"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| {
            (d["date"].as_str().unwrap_or_default(), d["outcome"].as_str().unwrap_or_default())
        })
        .collect();
    assert_eq!(listed, [(DAYS[2], "closed"), (DAYS[1], "closed"), (DAYS[0], "closed")], "{days}");
    drop(execs);
    drop(m);

    let attempts = FileLedger::open(&ledger).unwrap().attempts().unwrap();
    for date in DAYS {
        assert!(attempts.keys().any(|k| k.starts_with(date)), "no posting on {date}");
    }
    for (key, a) in &attempts {
        assert_eq!(a.new, 1, "{key} committed {} times: {a:?}", a.new);
        assert_eq!(a.rev, 0, "{key} reversed: {a:?}");
    }
}
