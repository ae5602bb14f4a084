//! `taskflow manager --until-done --date D1 --through D2` with two executor processes: three
//! business days across the National Day holiday, one after another; the executors reconnect
//! for each day, and the shared ledger has each day's postings exactly once.

#[path = "cluster_common/mod.rs"]
mod support;

use std::time::Duration;

use support::*;
use taskflow_examples::fund_clearing::FileLedger;

#[test]
fn a_manager_and_two_executors_run_three_days_across_a_holiday() {
    let c = Cluster::new();
    let (data, report) = (c.data(), c.report());
    let ledger = c.dir.path().join("ledger");
    let env = [("TASKFLOW_LEDGER_DIR", ledger.to_str().unwrap())];
    let mut m = Proc::spawn(
        &[
            "manager",
            "--cluster",
            &c.addr,
            "--date",
            "2026-09-29",
            "--through",
            "2026-10-08",
            "--until-done",
            "--lease",
            "2000",
            "--data",
            data.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
        &env,
    );
    assert!(m.wait_for("accepting executors", Duration::from_secs(30)), "{}", m.output());
    let execs: Vec<Proc> = ["e1", "e2"]
        .iter()
        .map(|n| {
            Proc::spawn(&["executor", "--manager", &c.addr, "--name", n, "--slots", "2"], &env)
        })
        .collect();
    let code = m.wait_exit(Duration::from_secs(300));
    let outputs: Vec<String> = execs.iter().map(Proc::output).collect();
    assert_eq!(code, Some(0), "manager:\n{}\nexecutors:\n{}", m.output(), outputs.join("\n"));

    let r = c.read_report();
    let dates: Vec<&str> =
        r["days"].as_array().unwrap().iter().map(|d| d["date"].as_str().unwrap()).collect();
    assert_eq!(dates, ["2026-09-29", "2026-09-30", "2026-10-08"], "{r:#}");
    for day in r["days"].as_array().unwrap() {
        assert_eq!(day["ok"], true, "{day:#}");
        assert_eq!(day["from_store"], false);
    }
    assert_all_done(&r);
    for out in &outputs {
        assert!(out.contains("joined the manager"), "{out}");
    }

    let attempts = FileLedger::open(&ledger).unwrap().attempts().unwrap();
    for date in dates {
        assert!(attempts.keys().any(|k| k.starts_with(date)), "no posting on {date}");
    }
    for (key, a) in &attempts {
        assert_eq!(a.new, 1, "{key} committed {} times: {a:?}", a.new);
        assert_eq!(a.rev, 0, "{key} reversed: {a:?}");
    }
}
