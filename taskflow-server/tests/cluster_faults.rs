//! Executor faults with real processes: `kill -9` mid-shard (shards reassigned, the day
//! completes) and `kill -STOP` (detected within the lease; after `kill -CONT` the late results
//! are rejected and logged).

#[path = "cluster_common/mod.rs"]
mod support;

use std::time::Duration;

use support::*;

const SLOW: [(&str, &str); 1] = [("TASKFLOW_FUND_STEP_DELAY", "250ms")];
/// SLOW, and the `job started` log line the victims are watched for.
const SLOW_WATCHED: [(&str, &str); 2] = [SLOW[0], JOB_STARTED_LOG];

#[test]
fn kill_9_of_an_executor_mid_shard_reassigns_its_shards_and_the_day_completes() {
    let c = Cluster::new();
    let mut m = c.manager(1000, &SLOW);
    let victim = c.executor("victim", 2, &SLOW_WATCHED);
    assert!(victim.wait_for("joined the manager", Duration::from_secs(30)), "{}", victim.output());
    // Join the survivor, then kill the victim while it runs a shard.
    let survivor = c.executor("survivor", 2, &SLOW);
    assert!(survivor.wait_for("joined the manager", Duration::from_secs(30)));
    assert!(victim.wait_running_shard(Duration::from_secs(60)), "{}", victim.output());
    victim.signal("-9");
    assert!(
        m.wait_for_line(&["executor lost", "executor=victim"], Duration::from_secs(10)),
        "the manager noticed the dead executor:\n{}",
        m.output()
    );
    let code = m.wait_exit(Duration::from_secs(240));
    assert_eq!(code, Some(0), "manager:\n{}", m.output());
    assert_all_done(&c.read_report());
    drop(survivor);
}

#[test]
fn a_stopped_executor_is_lost_within_the_lease_and_its_late_results_are_rejected() {
    let c = Cluster::new();
    let mut m = c.manager(1000, &SLOW);
    let frozen = c.executor("frozen", 2, &SLOW_WATCHED);
    assert!(frozen.wait_for("joined the manager", Duration::from_secs(30)));
    let other = c.executor("other", 2, &SLOW);
    assert!(other.wait_for("joined the manager", Duration::from_secs(30)));
    assert!(frozen.wait_running_shard(Duration::from_secs(60)), "{}", frozen.output());
    frozen.signal("-STOP");
    let stopped_at = std::time::Instant::now();
    assert!(m.wait_for("executor lost", Duration::from_secs(10)), "{}", m.output());
    // lease 1 s + margin 0.2 s + sweep period + scheduling slack.
    assert!(stopped_at.elapsed() < Duration::from_secs(3), "{:?}", stopped_at.elapsed());
    frozen.signal("-CONT");
    assert!(
        m.wait_for("late result rejected", Duration::from_secs(15)),
        "the resumed executor's stale report was rejected and logged:\n{}",
        m.output()
    );
    let code = m.wait_exit(Duration::from_secs(240));
    assert_eq!(code, Some(0), "manager:\n{}", m.output());
    assert_all_done(&c.read_report());
    drop((frozen, other));
}
