//! Two-phase confirmation and drain with real processes.
//!
//! The day is the ledger flow (`ledger_flow/`): each shard's command appends its idempotency
//! key to a file after a short sleep, so a shard that ran twice shows up twice.
//!
//! - `kill -9` of the manager mid-day, then a restart on the same data dir: shards that had
//!   finished on executors but whose outcome was not yet durable on the manager, and shards
//!   the executors cancelled when the manager vanished, are re-reported by the executors when
//!   they re-join; the restarted manager reconciles them (nothing becomes unconfirmed) and no
//!   shard that succeeded runs again.
//! - Draining an executor (SIGTERM): it gets no new shards, its running ones finish and are
//!   confirmed, it leaves — and nothing is reassigned.

#[path = "cluster_common/mod.rs"]
mod support;

#[path = "ledger_flow/mod.rs"]
mod ledger_flow;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use ledger_flow::{LedgerFlow, SHARDS};
use support::*;

const INFO: [(&str, &str); 1] = [("TASKFLOW_LOG", "taskflow_core=info,warn")];

fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_each_shard_once(day: &LedgerFlow) {
    let keys = day.ledger();
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "a shard committed twice: {keys:#?}");
    assert_eq!(keys.len(), SHARDS, "every shard committed once: {keys:#?}");
    assert!(keys.iter().all(|k| k.ends_with("/g0")), "nothing was rolled back: {keys:#?}");
}

#[test]
fn a_manager_killed_mid_day_reconciles_in_flight_shards_from_executor_re_reports() {
    let c = Cluster::new();
    let day = LedgerFlow::write(c.dir.path(), 0.4);
    let flow = day.flow.to_str().unwrap().to_owned();
    let m = c.manager_with(1000, &INFO, &["--flow", &flow]);
    let e1 = c.executor("e1", 2, &[]);
    let e2 = c.executor("e2", 2, &[]);
    // Kill the manager while the second level runs: the root and some pairs are committed.
    wait_until(Duration::from_secs(60), "three committed shards", || day.ledger().len() >= 3);
    m.signal("-9");
    drop(m);
    let before = day.ledger().len();
    assert!(before < SHARDS, "killed mid-day ({before} committed)");

    let mut m2 = c.manager_with(1000, &INFO, &["--flow", &flow]);
    let code = m2.wait_exit(Duration::from_secs(120));
    let out = m2.output();
    assert_eq!(code, Some(0), "the restarted manager completes the day:\n{out}");
    assert!(
        out.contains("waiting for their executors to re-report"),
        "shards were in flight at the kill:\n{out}"
    );
    assert!(out.contains("re-reported outcome reconciled"), "re-reports were reconciled:\n{out}");
    assert!(!out.contains("unconfirmed"), "nothing became unconfirmed:\n{out}");
    assert!(c.report_ok(), "{}", c.read_report());
    assert_each_shard_once(&day);
    for e in [&e1, &e2] {
        assert!(!e.output().contains("panicked"), "{}", e.output());
    }
}

#[test]
fn a_drained_executor_finishes_its_shards_and_leaves_without_any_reassignment() {
    let c = Cluster::new();
    let day = LedgerFlow::write(c.dir.path(), 0.4);
    let flow = day.flow.to_str().unwrap().to_owned();
    let mut m = c.manager_with(1000, &INFO, &["--flow", &flow]);
    let mut a = c.executor("a", 2, &[("TF_MARK", "a")]);
    let b = c.executor("b", 2, &[("TF_MARK", "b")]);
    // Drain `a` while it runs a shard: one it started that has not committed yet.
    wait_until(Duration::from_secs(60), "a shard running on executor a", || {
        let done: HashSet<String> = day.ledger().into_iter().collect();
        day.starts().iter().any(|(k, mark)| mark == "a" && !done.contains(k))
    });
    a.signal("-TERM");
    assert_eq!(
        a.wait_exit(Duration::from_secs(30)),
        Some(0),
        "a drains and exits:\n{}",
        a.output()
    );
    assert!(a.output().contains("drained and left"), "{}", a.output());
    let code = m.wait_exit(Duration::from_secs(120));
    let out = m.output();
    assert_eq!(code, Some(0), "the day completes on b:\n{out}");
    assert!(out.contains("executor drained and left"), "{out}");
    assert!(!out.contains("executor lost"), "nothing was reassigned:\n{out}");
    assert_each_shard_once(&day);
    // Zero reassignments: every shard started exactly once.
    let mut starts: HashMap<String, usize> = HashMap::new();
    for (k, _) in day.starts() {
        *starts.entry(k).or_default() += 1;
    }
    assert!(starts.values().all(|&n| n == 1), "a shard started twice: {starts:#?}");
    assert!(day.starts().iter().any(|(_, m)| m == "b"), "b ran the rest");
    drop(b);
}

#[test]
fn a_drain_without_a_manager_session_exits_at_once() {
    // Nobody listens there: the executor keeps reconnecting until told to stop.
    let c = Cluster::new();
    let mut e = c.executor("lonely", 1, &[]);
    assert!(e.wait_for("connecting to the manager", Duration::from_secs(30)), "{}", e.output());
    e.signal("-TERM");
    assert_eq!(e.wait_exit(Duration::from_secs(10)), Some(0), "{}", e.output());
    assert!(e.output().contains("drained (no manager session"), "{}", e.output());
}

#[test]
fn an_executor_restarted_on_its_data_dir_re_reports_the_outcomes_it_held() {
    // Manager and executor both die while a shard runs; the executor's fenced (interrupted)
    // outcome survives in its --data dir, so the restarted manager can resume the shard
    // instead of declaring it unconfirmed (which would roll it back: a `/g1` key).
    let c = Cluster::new();
    let day = LedgerFlow::write(c.dir.path(), 1.0);
    let flow = day.flow.to_str().unwrap().to_owned();
    let edata = c.dir.path().join("executor-data");
    let edata = edata.to_str().unwrap().to_owned();
    let spawn_executor = || {
        Proc::spawn(
            &["executor", "--manager", &c.addr, "--name", "e", "--slots", "1", "--data", &edata],
            &[("TF_MARK", "e")],
        )
    };
    let m = c.manager_with(1000, &INFO, &["--flow", &flow]);
    let e = spawn_executor();
    wait_until(Duration::from_secs(60), "a shard running on the executor", || {
        let done: HashSet<String> = day.ledger().into_iter().collect();
        day.starts().iter().any(|(k, _)| !done.contains(k))
    });
    m.signal("-9");
    drop(m);
    let held = Path::new(&edata).join("held");
    wait_until(Duration::from_secs(10), "the interrupted outcome on disk", || {
        std::fs::read_dir(&held)
            .is_ok_and(|d| d.flatten().any(|f| f.path().extension().is_some_and(|x| x == "held")))
    });
    e.signal("-9");
    drop(e);

    let mut m2 = c.manager_with(1000, &INFO, &["--flow", &flow]);
    let e2 = spawn_executor();
    let code = m2.wait_exit(Duration::from_secs(120));
    let out = m2.output();
    assert_eq!(code, Some(0), "the restarted manager completes the day:\n{out}");
    assert!(out.contains("re-reported outcome reconciled"), "{out}");
    assert!(!out.contains("unconfirmed"), "nothing became unconfirmed:\n{out}");
    assert_each_shard_once(&day);
    drop(e2);
}
