//! Resources with real processes: the example flow with a `ta_db` resource of 2 units needed
//! by the four tasks that write the TA database, run by two executor processes of 3 slots
//! each, one of them killed with `kill -9` while it runs a shard. Checked from the day's event
//! log (`taskflow store events`): at no seq were more than 2 shards of those tasks running
//! (dispatched and not yet settled or requeued), and the day completes.

#[path = "cluster_common/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use support::*;

const SLOW: [(&str, &str); 1] = [("TASKFLOW_FUND_STEP_DELAY", "60ms")];
const SLOW_WATCHED: [(&str, &str); 2] = [SLOW[0], JOB_STARTED_LOG];
const TA_DB_TASKS: [&str; 4] =
    ["confirm_trades", "register_shares", "dividend_distribution", "fee_calculation"];

/// The example flow in `dir/flow`, with `ta_db` (2 units) needed by [`TA_DB_TASKS`].
fn flow_with_ta_db(dir: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fund-clearing");
    let dst = dir.join("flow");
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    let mut text = std::fs::read_to_string(dst.join("flow.toml")).unwrap();
    for task in TA_DB_TASKS {
        let line = format!("id = \"{task}\"\n");
        assert!(text.contains(&line), "the example has {task}");
        text = text.replace(&line, &format!("{line}needs = {{ ta_db = 1 }}\n"));
    }
    text.push_str("\n[[resource]]\nname = \"ta_db\"\nunits = 2\n");
    std::fs::write(dst.join("flow.toml"), text).unwrap();
    dst.to_str().unwrap().to_owned()
}

/// The most shards of [`TA_DB_TASKS`] running at once, replaying the log in seq order: a
/// dispatch takes a unit, a success, failure, requeue, acknowledged stop or unconfirmed mark
/// gives it back.
fn most_running_at_once(events: &[serde_json::Value]) -> usize {
    let mut running: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut most = 0;
    let releases = ["succeed", "fail", "requeue", "stop_acknowledged", "mark_unconfirmed"];
    for e in events {
        let Some(s) = e["kind"].get("shard") else {
            assert!(
                e["kind"]
                    .get("task_shards")
                    .is_none_or(|t| !TA_DB_TASKS.contains(&t["task"].as_str().unwrap_or_default())),
                "no task-wide event in this day: {e}"
            );
            continue;
        };
        let task = s["task"].as_str().unwrap_or_default();
        if !TA_DB_TASKS.contains(&task) {
            continue;
        }
        let at = (task.to_owned(), s["shard"].as_u64().unwrap());
        let event = &s["event"];
        if event.get("dispatch").is_some() {
            assert!(running.insert(at.clone()), "{at:?} dispatched while running: {e}");
        } else {
            let name = event
                .as_str()
                .map(str::to_owned)
                .or_else(|| event.as_object().and_then(|o| o.keys().next().cloned()));
            if name.is_some_and(|n| releases.contains(&n.as_str())) {
                running.remove(&at);
            }
        }
        most = most.max(running.len());
    }
    most
}

#[test]
fn a_resource_of_two_units_never_runs_more_than_two_shards_though_an_executor_is_lost() {
    let c = Cluster::new();
    let flow = flow_with_ta_db(c.dir.path());
    let mut m = c.manager_with(1000, &SLOW, &["--flow", &flow]);
    let victim = c.executor("victim", 3, &SLOW_WATCHED);
    assert!(victim.wait_for("joined the manager", Duration::from_secs(30)), "{}", victim.output());
    let survivor = c.executor("survivor", 3, &SLOW);
    assert!(survivor.wait_for("joined the manager", Duration::from_secs(30)));
    // Kill the victim while it runs a shard that holds a `ta_db` unit.
    assert!(
        victim.wait_for_line(&["job started", "confirm_trades"], Duration::from_secs(120)),
        "{}",
        victim.output()
    );
    victim.signal("-9");
    assert!(
        m.wait_for_line(&["executor lost", "executor=victim"], Duration::from_secs(10)),
        "the manager noticed the dead executor:\n{}",
        m.output()
    );
    let code = m.wait_exit(Duration::from_secs(300));
    assert_eq!(code, Some(0), "manager:\n{}", m.output());
    assert_all_done(&c.read_report());
    drop(survivor);

    let events = store_events(&c.data());
    let counts = JournalCounts::of(&events);
    assert!(counts.problems.is_empty(), "{:?}", counts.problems);
    assert!(counts.not_once().is_empty(), "{:?}", counts.not_once());
    assert!(counts.requeues >= 1, "the lost executor's shard was requeued");
    let most = most_running_at_once(&events);
    // Six slots and dozens of shards: the units, not the slots, held them to two.
    assert_eq!(most, 2, "at most 2 `ta_db` shards at once, and 2 were reached");
}
