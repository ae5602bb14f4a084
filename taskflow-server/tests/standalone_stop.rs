//! The graceful stop a service manager relies on (`deploy/taskflow.service`:
//! `KillSignal=SIGTERM`, `TimeoutStopSec` above `--stop-timeout`): `taskflow standalone` on
//! SIGTERM with a shard running stops dispatching, lets the running shard finish, closes the
//! journal and exits 0 — well within the bound. With a shard slower than `--stop-timeout` it
//! does not wait longer than the bound: it exits 0 shortly after it, and the next start finds
//! the abandoned shard as it finds any crash's (re-run by the unconfirmed policy).

mod common;
#[path = "cluster_common/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{JOB_STARTED_LOG, Proc};

const TOKEN: &str = "stop-test-token-0123456";

/// Starts `taskflow standalone` with `--stop-timeout`, the example's steps slowed to
/// `step_delay`; executes the manual `day_init` and waits until a shard runs.
async fn start_running(data: &std::path::Path, stop_timeout: &str, step_delay: &str) -> Proc {
    let data = data.to_str().expect("utf-8 path");
    let p = Proc::spawn(
        &[
            "standalone",
            "--http",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--date",
            "2026-09-29",
            "--data",
            data,
            "--stop-timeout",
            stop_timeout,
        ],
        &[JOB_STARTED_LOG, ("TASKFLOW_FUND_STEP_DELAY", step_delay)],
    );
    assert!(p.wait_for("console: http://", Duration::from_secs(60)), "{}", p.output());
    let out = p.output();
    let rest = out.split("console: http://").nth(1).expect("the URL");
    let addr: std::net::SocketAddr = rest
        .split('/')
        .next()
        .expect("host:port")
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("an address");
    let (status, body) = common::request(
        addr,
        "POST",
        "/api/days/2026-09-29/tasks/day_init/execute",
        Some(TOKEN),
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(p.wait_running_shard(Duration::from_secs(60)), "a shard runs: {}", p.output());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_shard_finish_and_exits_0_within_the_stop_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    // Each step 300 ms: a shard of several steps is running when SIGTERM comes.
    let mut p = start_running(&tmp.path().join("data"), "30s", "300ms").await;
    let sent = Instant::now();
    p.signal("-TERM");
    let code = p.wait_exit(Duration::from_secs(40));
    let took = sent.elapsed();
    let out = p.output();
    assert_eq!(code, Some(0), "exits 0 after SIGTERM: {out}");
    assert!(took < Duration::from_secs(30), "within --stop-timeout ({took:?})");
    assert!(out.contains("stopping: waiting for running shards"), "{out}");
    assert_eq!(
        out.matches("job started").count(),
        out.matches("job ended").count(),
        "every shard that was running finished before the exit: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_slower_than_the_stop_timeout_does_not_hold_the_exit_past_the_bound() {
    let tmp = tempfile::tempdir().unwrap();
    // Each step 20 s; the bound 1 s.
    let mut p = start_running(&tmp.path().join("data"), "1s", "20s").await;
    let sent = Instant::now();
    p.signal("-TERM");
    let code = p.wait_exit(Duration::from_secs(15));
    let took = sent.elapsed();
    assert_eq!(code, Some(0), "exits 0 after SIGTERM: {}", p.output());
    assert!(took < Duration::from_secs(10), "the bound (1 s) held, not the 20 s step ({took:?})");
    assert!(took >= Duration::from_millis(900), "it waited for the bound ({took:?})");
}
