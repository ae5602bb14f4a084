//! `taskflow standalone --until-done` killed with SIGKILL mid-day and started again on the same
//! data directory: the day completes, and no shard that had succeeded runs again.
//!
//! The proof is an external ledger: every shard runs a `command` that appends its idempotency
//! key (`date/task/shard/gN`) to a file. A succeeded shard that ran again would append the same
//! key twice (only unconfirmed shards are rolled back, which bumps their generation).

#[path = "ledger_flow/mod.rs"]
mod ledger_flow;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

fn standalone(flow: &Path, data: &Path, report: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_taskflow"))
        .args(["standalone", "--until-done", "--date", "2026-09-30", "--slots", "2"])
        .arg("--flow")
        .arg(flow)
        .arg("--data")
        .arg(data)
        .arg("--report")
        .arg(report)
        .env_remove("TASKFLOW_LOG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the taskflow binary starts")
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("taskflow standalone did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_day_completes_on_restart_without_rerunning_succeeded_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let day = ledger_flow::LedgerFlow::write(tmp.path(), 0.15);
    let (flow, data) = (day.flow.clone(), tmp.path().join("data"));
    let report = tmp.path().join("report.json");

    // Kill once a few of the day's shards have appended to the ledger.
    let mut first = standalone(&flow, &data, &report);
    let deadline = Instant::now() + WAIT;
    while day.ledger().len() < 4 {
        assert!(first.try_wait().unwrap().is_none(), "the first run ended before being killed");
        assert!(Instant::now() < deadline, "no shard ran within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let before = day.ledger().len();
    assert!(
        before < ledger_flow::SHARDS,
        "the day must be killed mid-run (ledger has {before} lines)"
    );

    let mut second = standalone(&flow, &data, &report);
    let status = wait_exit(&mut second);
    assert!(status.success(), "the restarted day must complete: {status}");

    let lines = day.ledger();
    let unique: HashSet<&String> = lines.iter().collect();
    assert_eq!(unique.len(), lines.len(), "a key ran twice: {lines:#?}");
    // Every shard ran; only shards whose outcome was unconfirmed at the kill (at most the two
    // slots) re-ran, under a new generation.
    let shards: HashSet<String> =
        lines.iter().map(|l| l.rsplit_once('/').unwrap().0.to_owned()).collect();
    assert_eq!(shards.len(), ledger_flow::SHARDS, "{lines:#?}");
    let reruns = lines.iter().filter(|l| !l.ends_with("/g0")).count();
    assert!(reruns <= 2, "only the shards running at the kill may re-run: {lines:#?}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["ok"], true, "{json:#}");

    // Started again on the finished day: it reports and exits 0; nothing runs.
    let mut third = standalone(&flow, &data, &report);
    assert!(wait_exit(&mut third).success());
    assert_eq!(day.ledger().len(), lines.len(), "nothing re-runs on a finished day");
}
