//! Alerts from the real binary to a real HTTP receiver in the test: each kind once, signed,
//! with the documented fields (`proto-docs/alerts.md`); a receiver that never answers does
//! not slow the day.

#[path = "cluster_common/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cluster, JOB_STARTED_LOG};

const DATE: &str = "2026-09-30";
const SECRET: &str = "s3cret-for-the-test";

/// One request the receiver got: its headers (lower-case names) and body.
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A receiver on 127.0.0.1 answering 200 to every POST; what it got comes on the channel.
fn receiver() -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/taskflow", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() || !line.starts_with("POST /hooks/taskflow ") {
                continue;
            }
            let mut headers = BTreeMap::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).is_err() || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.insert(k.to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            let len: usize =
                headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            if tx.send(Received { headers, body }).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

/// A receiver that accepts connections and never answers.
fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    url
}

fn standalone(data: &Path, hooks: &[&str], env: &[(&str, &str)]) -> (Output, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskflow"));
    cmd.args(["standalone", "--until-done", "--date", DATE, "--data"])
        .arg(data)
        .arg("--report")
        .arg(data.with_extension("report.json"))
        .arg("--alert-secret")
        .arg(SECRET)
        .env_remove("TASKFLOW_INJECT_FAILURES")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for h in hooks {
        cmd.arg("--alert-webhook").arg(h);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn taskflow");
    let deadline = started + Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            let took = started.elapsed();
            return (child.wait_with_output().expect("output"), took);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("taskflow did not finish in 120 s: {}", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What arrived within `within`, checked: valid JSON with the documented fields, signed.
fn collect(rx: &mpsc::Receiver<Received>, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(r) = rx.recv_timeout(left) else { break };
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
        let sig = r.headers.get("x-taskflow-signature").expect("signed");
        assert_eq!(sig, &taskflow_server::alerts::signature(SECRET.as_bytes(), &r.body));
        let v: Value = serde_json::from_slice(&r.body).expect("an alert is JSON");
        for field in ["id", "kind", "date", "message", "at"] {
            assert!(v.get(field).is_some(), "{field} in {v}");
        }
        assert_eq!(v["date"], DATE);
        got.push(v);
    }
    got
}

fn kinds(alerts: &[Value]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for a in alerts {
        *n.entry(a["kind"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    n
}

#[test]
fn a_failure_beyond_the_retries_alerts_shard_task_and_stall_once_each_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, rx) = receiver();
    let (out, _) = standalone(
        &tmp.path().join("data"),
        &[&url],
        &[("TASKFLOW_INJECT_FAILURES", "reconciliation:*:1")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    // The process delivered before it exited (a grace at exit): what came is all there is.
    let alerts = collect(&rx, Duration::from_millis(500));
    let n = kinds(&alerts);
    assert!(n.get("shard_failed").is_some_and(|&k| k >= 1), "{alerts:?}");
    assert_eq!(n.get("task_failed"), Some(&1), "{alerts:?}");
    assert_eq!(n.get("day_stalled"), Some(&1), "{alerts:?}");
    let ids: std::collections::BTreeSet<&str> =
        alerts.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), alerts.len(), "ids are unique");
    let failed = alerts.iter().find(|a| a["kind"] == "task_failed").unwrap();
    assert_eq!(failed["task"], "reconciliation");
    let shard = alerts.iter().find(|a| a["kind"] == "shard_failed").unwrap();
    assert_eq!(shard["task"], "reconciliation");
    assert!(
        shard["shard"].is_u64() && shard["message"].as_str().unwrap().contains("reconciliation")
    );
}

/// The day's span in its report: the first task's start to the last task's end.
fn day_span(data: &Path) -> Duration {
    let report: Value =
        serde_json::from_slice(&std::fs::read(data.with_extension("report.json")).unwrap())
            .unwrap();
    let at = |t: &Value, k: &str| {
        t[k].as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    };
    let tasks = report["tasks"].as_array().unwrap();
    let start = tasks.iter().filter_map(|t| at(t, "started_at")).min().unwrap();
    let end = tasks.iter().filter_map(|t| at(t, "finished_at")).max().unwrap();
    (end - start).to_std().unwrap()
}

#[test]
fn a_receiver_that_never_answers_does_not_slow_the_day() {
    let tmp = tempfile::tempdir().unwrap();
    let failing = [("TASKFLOW_INJECT_FAILURES", "custody_nav_check:*:1")];
    // The same day with a live receiver, with one that accepts and never answers, and live
    // again: the day's span (first start to last end) must not grow with the dead one.
    let (url, rx) = receiver();
    let mut spans = Vec::new();
    for (run, hook) in [("a", url.clone()), ("b", black_hole()), ("c", url)] {
        let data = tmp.path().join(run);
        let (out, took) = standalone(&data, &[&hook], &failing);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        spans.push((day_span(&data), took));
    }
    let delivered = collect(&rx, Duration::from_millis(300));
    assert!(kinds(&delivered).contains_key("shard_failed"), "failures retried are alerted");
    let live = spans[0].0.max(spans[2].0);
    let (dead, dead_took) = spans[1];
    println!("day spans: live {:?} / {:?}, never answering {dead:?}", spans[0].0, spans[2].0);
    assert!(
        dead < live + live / 2 + Duration::from_millis(500),
        "a receiver that never answers slowed the day: {dead:?} against {live:?}"
    );
    // Only the exit waits out the alert grace (5 s), bounded.
    assert!(dead_took < spans[1].0 + Duration::from_secs(12), "exit took {dead_took:?}");
}

#[test]
fn a_lost_executor_process_is_alerted_by_the_manager() {
    let cluster = Cluster::new();
    let (url, rx) = receiver();
    let env = [("TASKFLOW_FUND_STEP_DELAY", "300ms")];
    let manager =
        cluster.manager_with(1500, &env, &["--alert-webhook", &url, "--alert-secret", SECRET]);
    let doomed = cluster.executor("ex-doomed", 2, &[env[0], JOB_STARTED_LOG]);
    assert!(doomed.wait_running_shard(Duration::from_secs(30)), "{}", doomed.output());
    doomed.signal("-KILL");
    let _keeper = cluster.executor("ex-keeper", 2, &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lost = None;
    while lost.is_none() && Instant::now() < deadline {
        lost = collect(&rx, Duration::from_millis(500))
            .into_iter()
            .find(|a| a["kind"] == "executor_lost");
    }
    let lost = lost.unwrap_or_else(|| panic!("no executor_lost alert\n{}", manager.output()));
    assert!(lost["message"].as_str().unwrap().contains("ex-doomed"), "{lost}");
    assert!(lost.get("task").is_none(), "an executor alert names no task");
}

#[test]
fn a_deadline_already_passed_and_a_late_forecast_are_alerted_once_each() {
    // The example's `export_confirmations` must be done by 23:00 on the business date; the
    // run starts at 23:30 that evening (test clock), so it is late before it starts.
    let tmp = tempfile::tempdir().unwrap();
    let (url, rx) = receiver();
    let (out, _) = standalone(
        &tmp.path().join("data"),
        &[&url],
        &[
            ("TASKFLOW_TEST_CLOCK", "2026-09-30T23:30:00+08:00"),
            ("TASKFLOW_FUND_STEP_DELAY", "20ms"),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let alerts = collect(&rx, Duration::from_millis(500));
    let of = |kind: &str| -> Vec<&Value> {
        alerts.iter().filter(|a| a["kind"] == kind && a["task"] == "export_confirmations").collect()
    };
    let missed = of("deadline_missed");
    assert_eq!(missed.len(), 1, "{alerts:?}");
    assert!(
        missed[0]["message"].as_str().unwrap().contains("2026-09-30T15:00:00Z"),
        "{}",
        missed[0]
    );
    assert_eq!(of("predicted_late").len(), 1, "once, however many forecasts: {alerts:?}");
    assert!(
        alerts.iter().all(|a| a["task"] != "day_close" || a["kind"] != "deadline_missed"),
        "a task without a deadline never misses one"
    );
}
