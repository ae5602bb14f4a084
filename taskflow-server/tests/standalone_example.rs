//! `taskflow standalone --until-done` on the bundled example, as a new user runs it: the day
//! completes, a second start re-runs nothing, and injected failures show failed → automatic
//! retry → succeeded, or a failure that needs an operator (exit 1).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DATE: &str = "2026-09-30";

/// Runs the binary with a bounded wait (it must never hang CI).
fn standalone(data: &Path, report: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskflow"));
    cmd.args(["standalone", "--until-done", "--date", DATE, "--data"])
        .arg(data)
        .arg("--report")
        .arg(report)
        .env_remove("TASKFLOW_INJECT_FAILURES")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn taskflow");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("taskflow did not finish in 120 s: {}", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_report(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("report written")).expect("report is JSON")
}

fn task<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["tasks"].as_array().unwrap().iter().find(|t| t["id"] == id).expect(id)
}

#[test]
fn the_example_day_completes_and_a_second_start_reruns_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, report) = (tmp.path().join("data"), tmp.path().join("report.json"));
    let out = standalone(&data, &report, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every task ended well"), "{stdout}");
    let first = read_report(&report);
    assert_eq!(first["ok"], true);
    assert_eq!(first["outcome"], "completed");
    assert_eq!(first["date"], DATE);
    let tasks = first["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 17);
    for t in tasks {
        assert!(
            ["succeeded", "not_applicable", "skipped"].contains(&t["status"].as_str().unwrap()),
            "{t}"
        );
    }
    // 2026-09-30 precedes the National Day holiday: the money funds' income covers it.
    assert_eq!(task(&first, "money_fund_income")["status"], "succeeded");

    let out = standalone(&data, &report, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let second = read_report(&report);
    for (a, b) in tasks.iter().zip(second["tasks"].as_array().unwrap()) {
        assert_eq!(a["attempts"], b["attempts"], "task {} ran again", a["id"]);
        assert_eq!(a["status"], b["status"]);
    }
    assert_eq!(first["seq"], second["seq"], "nothing was recorded on the finished day");
}

#[test]
fn an_injected_failure_is_retried_automatically_and_the_day_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, report) = (tmp.path().join("data"), tmp.path().join("report.json"));
    // Every shard of the custodian check fails its first attempt; the flow allows one retry.
    let out = standalone(&data, &report, &[("TASKFLOW_INJECT_FAILURES", "custody_nav_check:*:1")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let r = read_report(&report);
    let check = task(&r, "custody_nav_check");
    assert_eq!(check["status"], "succeeded");
    let shards = check["shards"].as_u64().unwrap();
    assert!(shards > 0);
    assert_eq!(check["attempts"].as_u64().unwrap(), 2 * shards, "each shard: failed, then retried");
}

#[test]
fn a_failure_beyond_the_retries_stops_the_chain_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, report) = (tmp.path().join("data"), tmp.path().join("report.json"));
    let out = standalone(&data, &report, &[("TASKFLOW_INJECT_FAILURES", "reconciliation:*:1")]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let r = read_report(&report);
    assert_eq!(r["ok"], false);
    assert_eq!(task(&r, "reconciliation")["status"], "failed");
    let close = task(&r, "day_close");
    assert!(
        ["unregistered", "registered"].contains(&close["status"].as_str().unwrap()),
        "a failed predecessor keeps its successor blocked: {close}"
    );
}

#[test]
fn a_bad_failure_spec_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = standalone(
        &tmp.path().join("data"),
        &tmp.path().join("r.json"),
        &[("TASKFLOW_INJECT_FAILURES", "clearing")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TASKFLOW_INJECT_FAILURES") || stderr.contains("clearing"), "{stderr}");
}
