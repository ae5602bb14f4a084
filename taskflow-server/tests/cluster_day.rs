//! A manager and executor processes on 127.0.0.1 run the example day; wrong cookie and
//! duplicate names are rejected clearly while the cluster keeps running.

#[path = "cluster_common/mod.rs"]
mod support;

use std::time::Duration;

use support::*;

#[test]
fn a_manager_and_three_executors_complete_the_example_day() {
    let c = Cluster::new();
    let mut m = c.manager(2000, &[]);
    let execs: Vec<Proc> = (1..=3).map(|i| c.executor(&format!("e{i}"), 2, &[])).collect();
    // Under load the manager's first `Assign` can overtake its answer to the executor's join;
    // such a shard used to be refused by the executor and the day hung until this timeout.
    let code = m.wait_exit(Duration::from_secs(120));
    let outputs: Vec<String> = execs.iter().map(Proc::output).collect();
    assert_eq!(code, Some(0), "manager:\n{}\nexecutors:\n{}", m.output(), outputs.join("\n"));
    assert_all_done(&c.read_report());
    let joined = execs.iter().filter(|e| e.output().contains("joined the manager")).count();
    assert_eq!(joined, 3, "every executor joined");
}

#[test]
fn a_wrong_cookie_fails_clearly_and_a_duplicate_name_is_rejected() {
    let c = Cluster::new();
    // Slow steps keep the day running while the bad executors try.
    let slow = [("TASKFLOW_FUND_STEP_DELAY", "30ms")];
    let mut m = c.manager(2000, &slow);
    let good = c.executor("e1", 2, &slow);
    assert!(good.wait_for("joined the manager", Duration::from_secs(30)), "{}", good.output());

    let mut bad = c.executor("intruder", 2, &[("TASKFLOW_COOKIE", "wrong")]);
    let code = bad.wait_exit(Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "wrong cookie must fail: {}", bad.output());
    assert!(bad.output().contains("cookie"), "{}", bad.output());

    let mut dup = c.executor("e1", 2, &slow);
    let code = dup.wait_exit(Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "duplicate must fail: {}", dup.output());
    assert!(dup.output().contains("duplicate name"), "{}", dup.output());

    let mut old = c.executor("old", 2, &[]);
    let v = "--protocol-version";
    drop(old);
    old = Proc::spawn(&["executor", "--manager", &c.addr, "--name", "old", v, "99"], &[]);
    let code = old.wait_exit(Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "{}", old.output());
    assert!(old.output().contains("protocol version"), "{}", old.output());

    // The cluster kept running: the day completes on the good executor.
    let code = m.wait_exit(Duration::from_secs(180));
    assert_eq!(code, Some(0), "manager:\n{}", m.output());
    assert_all_done(&c.read_report());
}
