//! Process-level backup: the manager streams its events to executors started with `--data`;
//! when the manager's data directory is deleted mid-day it recovers from their replicas
//! (`--recover-from-replicas`) and completes the day without re-running finished work.

#[path = "cluster_common/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const STEP_DELAY: (&str, &str) = ("TASKFLOW_FUND_STEP_DELAY", "150ms");
/// Warnings, plus the manager's task status changes (`task status task=… status=… seq=…`).
const LOG: (&str, &str) = ("TASKFLOW_LOG", "warn,taskflow_core::control=info");

fn manager(c: &Cluster, data: &Path, extra: &[&str]) -> Proc {
    let report = c.report();
    let mut args = vec![
        "manager",
        "--cluster",
        &c.addr,
        "--date",
        DATE,
        "--until-done",
        "--lease",
        "2000",
        "--data",
        data.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&args, &[STEP_DELAY, LOG, ("NO_COLOR", "1")])
}

fn executor(c: &Cluster, name: &str, data: &Path) -> Proc {
    Proc::spawn(
        &[
            "executor",
            "--manager",
            &c.addr,
            "--name",
            name,
            "--slots",
            "2",
            "--data",
            data.to_str().unwrap(),
        ],
        &[STEP_DELAY, ("TASKFLOW_LOG", "warn,taskflow_core::cluster=debug"), ("NO_COLOR", "1")],
    )
}

/// Removes ANSI colour sequences (in case the log is coloured anyway).
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

/// `(task, status, seq)` of every "task status" line.
fn statuses(output: &str) -> Vec<(String, String, u64)> {
    plain(output)
        .lines()
        .filter(|l| l.contains("task status"))
        .filter_map(|l| {
            let task = field(l, "task")?.to_owned();
            let status = field(l, "status")?.to_owned();
            let seq = field(l, "seq")?.parse().ok()?;
            Some((task, status, seq))
        })
        .collect()
}

fn succeeded(output: &str) -> Vec<(String, u64)> {
    statuses(output)
        .into_iter()
        .filter(|(_, s, _)| s == "succeeded")
        .map(|(t, _, seq)| (t, seq))
        .collect()
}

#[test]
fn a_manager_whose_data_dir_is_deleted_mid_day_recovers_from_the_executors_replicas() {
    let c = Cluster::new();
    let data = c.dir.path().join("manager-data");
    let m1 = manager(&c, &data, &[]);
    assert!(m1.wait_for("accepting executors", Duration::from_secs(30)), "{}", m1.output());
    let e1 = executor(&c, "e1", &c.dir.path().join("e1"));
    let e2 = executor(&c, "e2", &c.dir.path().join("e2"));
    for e in [&e1, &e2] {
        assert!(e.wait_for("joined the manager", Duration::from_secs(30)), "{}", e.output());
        assert!(e.output().contains("keeping replicas"), "{}", e.output());
    }

    // Wait (bounded) until part of the day is done, then crash the manager and lose its data.
    let deadline = Instant::now() + Duration::from_secs(120);
    while succeeded(&m1.output()).len() < 4 {
        assert!(Instant::now() < deadline, "the day made no progress:\n{}", m1.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = m1.output();
    m1.signal("-9");
    let mut m1 = m1;
    assert!(m1.wait_exit(Duration::from_secs(10)).is_some(), "the manager died");
    std::fs::remove_dir_all(&data).unwrap();

    let mut m2 = manager(
        &c,
        &data,
        &["--recover-from-replicas", "--replica-quorum", "2", "--replica-wait", "30000"],
    );
    assert!(
        m2.wait_for("recovered day", Duration::from_secs(60)),
        "recovery from a replica:\n{}\ne1:\n{}\ne2:\n{}",
        m2.output(),
        e1.output(),
        e2.output()
    );
    let out = plain(&m2.output());
    let recovered_seq: u64 = out
        .lines()
        .find(|l| l.contains("recovered day"))
        .and_then(|l| l.split("events through seq ").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .expect("the recovery line names the seq");
    assert!(recovered_seq > 0, "{out}");

    let code = m2.wait_exit(Duration::from_secs(240));
    assert_eq!(
        code,
        Some(0),
        "manager:\n{}\ne1:\n{}\ne2:\n{}",
        m2.output(),
        e1.output(),
        e2.output()
    );
    let report = c.read_report();
    assert_all_done(&report);

    // Tasks that had succeeded within the recovered prefix were not run again: the recovered
    // manager never changed their status, and each of their shards was dispatched once.
    let done_before: Vec<String> = succeeded(&before)
        .into_iter()
        .filter(|(_, seq)| *seq <= recovered_seq)
        .map(|(t, _)| t)
        .collect();
    assert!(!done_before.is_empty(), "some task had succeeded by seq {recovered_seq}:\n{before}");
    let after = statuses(&m2.output());
    for t in &done_before {
        assert!(
            !after.iter().any(|(task, _, _)| task == t),
            "task {t} was done before the crash but changed again after recovery:\n{}",
            m2.output()
        );
        let row = report["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == t.as_str())
            .unwrap_or_else(|| panic!("{t} in the report"));
        assert_eq!(row["status"], "succeeded", "{row}");
    }
    drop((e1, e2));
}
