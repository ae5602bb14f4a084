//! Exactly-once effects under executor and manager faults, with real processes on 127.0.0.1.
//!
//! A manager and three executor processes run the example day with slow steps, every executor
//! posting its money movements to one shared [`FileLedger`] (`TASKFLOW_LEDGER_DIR`). While the
//! day runs, one executor is `kill -9`ed and another `kill -STOP`ped (declared lost) and then
//! `kill -CONT`ed, each only while it is running a shard (more `job started` than `job ended`
//! lines in its slot debug log), so the faults hit running shards rather than idle processes.
//!
//! Then the manager itself is `kill -9`ed while a shard runs and started again on the same data
//! dir: the executors re-join and re-report the outcomes they held (two-phase confirmation).
//!
//! What must hold, and how each check could fail:
//! - **The day completes**: the manager exits 0 and its report says every task ended well.
//! - **Every posting is committed exactly once, and only the right ones**: the committed
//!   ledger equals, key for key and amount for amount, the ledger of a fault-free
//!   `taskflow standalone` run of the same day (the figures are deterministic). A shard re-run
//!   under another idempotency key (say, a generation bumped by a requeue) would add keys; a
//!   lost posting would miss one. `attempts.log` must show exactly one `new` per key: the
//!   ledger commits by atomic `link(2)`, so a second `new` would mean two processes both
//!   committed it. (`dup` lines — a step re-run after its shard moved — are allowed and
//!   printed.)
//! - **Every shard succeeded exactly once in the manager's journal**: after the manager exits,
//!   `taskflow store events` prints the day's whole event log (the test fails if the log was
//!   compacted, since a count over a partial log proves nothing). Each registered shard must
//!   have exactly one `succeed` event and none may come from a task-wide event. The state
//!   machine refuses `succeeded → succeeded`, so a second success of one shard could only be
//!   recorded after a rollback or by a broken transition table — both of which this counts
//!   rather than assumes. The faults are checked to have mattered: at least one shard was
//!   requeued and dispatched again.

#[path = "cluster_common/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use support::*;
use taskflow_examples::fund_clearing::FileLedger;

/// Slow enough that a shard (3–4 steps) is still running when the fault lands.
const STEP_DELAY: &str = "150ms";

/// The ledger of a fault-free in-process run of the same day.
fn reference_ledger(dir: &Path) -> BTreeMap<String, i64> {
    let ledger = dir.join("reference-ledger");
    let data = dir.join("reference-data");
    let mut run = Proc::spawn(
        &["standalone", "--until-done", "--date", DATE, "--data", data.to_str().unwrap()],
        &[("TASKFLOW_LEDGER_DIR", ledger.to_str().unwrap()), ("TASKFLOW_FUND_STEP_DELAY", "0ms")],
    );
    let code = run.wait_exit(Duration::from_secs(120));
    assert_eq!(code, Some(0), "reference run:\n{}", run.output());
    FileLedger::open(&ledger).unwrap().entries().unwrap()
}

#[test]
fn faulted_executors_post_every_ledger_entry_exactly_once_and_each_shard_succeeds_once() {
    let c = Cluster::new();
    let expected = reference_ledger(c.dir.path());
    assert!(!expected.is_empty(), "the example posts to the ledger");

    let ledger_dir = c.dir.path().join("ledger");
    let ledger = ledger_dir.to_str().unwrap();
    let env = [
        ("TASKFLOW_FUND_STEP_DELAY", STEP_DELAY),
        ("TASKFLOW_LEDGER_DIR", ledger),
        JOB_STARTED_LOG,
    ];
    let mut m = c.manager(1000, &env);
    let killed = c.executor("killed", 2, &env);
    let frozen = c.executor("frozen", 2, &env);
    let steady = c.executor("steady", 2, &env);
    for e in [&killed, &frozen, &steady] {
        assert!(e.wait_for("joined the manager", Duration::from_secs(30)), "{}", e.output());
    }

    // Fault 1: kill -9 an executor that is running a shard.
    assert!(killed.wait_running_shard(Duration::from_secs(60)), "{}", killed.output());
    killed.signal("-9");
    assert!(
        m.wait_for_line(&["executor lost", "executor=killed"], Duration::from_secs(10)),
        "the manager noticed the dead executor:\n{}",
        m.output()
    );

    // Fault 2: kill -STOP an executor while it runs a shard, until the manager declares it
    // lost; then kill -CONT: its stale work resumes and must be fenced.
    assert!(frozen.wait_running_shard(Duration::from_secs(60)), "{}", frozen.output());
    frozen.signal("-STOP");
    let lost = m.wait_for_line(&["executor lost", "executor=frozen"], Duration::from_secs(10));
    frozen.signal("-CONT");
    assert!(lost, "the manager declared the stopped executor lost:\n{}", m.output());

    // Fault 3: kill -9 the MANAGER while a shard runs, and start it again on the same data
    // dir and address. The executors re-join and re-report what finished meanwhile (two-phase
    // confirmation); nothing may become unconfirmed (the default policy would roll it back and
    // re-post under a new generation's keys, which the ledger check below catches).
    assert!(steady.wait_running_shard(Duration::from_secs(60)), "{}", steady.output());
    m.signal("-9");
    assert!(m.wait_exit(Duration::from_secs(10)).is_some(), "the manager died");
    let before = m.output();
    m = c.manager(1000, &env);

    let code = m.wait_exit(Duration::from_secs(300));
    assert_eq!(code, Some(0), "manager:\n{before}\n--- restarted ---\n{}", m.output());
    let restarted = m.output();
    assert!(
        restarted.contains("waiting for their executors to re-report"),
        "shards were in flight at the manager's kill:\n{restarted}"
    );
    assert!(!restarted.contains("unconfirmed"), "nothing became unconfirmed:\n{restarted}");
    assert_all_done(&c.read_report());
    drop((killed, frozen, steady));

    // The ledger: exactly the fault-free postings, each committed once.
    let ledger = FileLedger::open(&ledger_dir).unwrap();
    let entries = ledger.entries().unwrap();
    let missing: Vec<_> = expected.keys().filter(|k| !entries.contains_key(*k)).collect();
    let extra: Vec<_> = entries.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    assert_eq!(entries, expected, "the same amounts as the fault-free run");
    let attempts = ledger.attempts().unwrap();
    let twice: Vec<_> = attempts.iter().filter(|(_, a)| a.new != 1 || a.rev != 0).collect();
    assert!(twice.is_empty(), "keys not committed exactly once: {twice:?}");
    let dups: u32 = attempts.values().map(|a| a.dup).sum();
    println!("{} postings committed once each; {dups} re-posts deduplicated", entries.len());

    // The journal: one success per registered shard, and the faults moved shards.
    let events = store_events(&c.dir.path().join("data"));
    assert_eq!(events.first().map(|e| e["seq"].as_u64()), Some(Some(1)), "the whole log");
    let mut shards: BTreeMap<(String, u64), u32> = BTreeMap::new();
    let (mut requeues, mut dispatches) = (0, BTreeMap::<(String, u64), u32>::new());
    for e in &events {
        let kind = &e["kind"];
        if let Some(r) = kind.get("task_registered") {
            let task = r["task"].as_str().unwrap().to_owned();
            for i in 0..r["shards"].as_array().unwrap().len() as u64 {
                shards.insert((task.clone(), i), 0);
            }
        } else if let Some(s) = kind.get("shard") {
            let at = (s["task"].as_str().unwrap().to_owned(), s["shard"].as_u64().unwrap());
            match &s["event"] {
                serde_json::Value::String(v) if v == "succeed" => {
                    *shards.get_mut(&at).unwrap_or_else(|| panic!("unregistered {at:?}")) += 1;
                }
                serde_json::Value::String(v) if v == "requeue" => requeues += 1,
                v if v.get("dispatch").is_some() => *dispatches.entry(at).or_default() += 1,
                _ => {}
            }
        } else if let Some(t) = kind.get("task_shards") {
            assert_ne!(t["event"], "succeed", "a task-wide success hides per-shard counts: {e}");
        }
    }
    assert!(!shards.is_empty());
    let wrong: Vec<_> = shards.iter().filter(|(_, n)| **n != 1).collect();
    assert!(wrong.is_empty(), "shards that did not succeed exactly once: {wrong:?}");
    assert!(requeues >= 1, "a fault requeued a running shard");
    assert!(dispatches.values().any(|n| *n >= 2), "a requeued shard was dispatched again");
}
