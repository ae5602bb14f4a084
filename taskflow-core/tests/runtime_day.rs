//! A business day in one process: levels of tasks run to completion, registered by events.

mod support;

use support::*;
use taskflow_core::DayOutcome;
use taskflow_core::state::TaskStatus;

const CHAIN: &str = r#"
[[task]]
id = "init"
name = "init"
level = "system"
behavior = "scripted"

[[task]]
id = "per_product"
name = "per product"
level = "product"
behavior = "scripted"
in_lifecycle = ["open"]
depends_on = ["init"]

[[task]]
id = "per_distributor"
name = "per distributor"
level = "distributor"
behavior = "scripted"
depends_on = ["init"]

[[task]]
id = "close"
name = "close"
level = "system"
behavior = "noop"
depends_on = ["per_product", "per_distributor"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_level_flow_runs_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let (rt, m) = start(flow(CHAIN), &ledger, opts(&dir)).await;
    let outcome = wait_done(&m).await;
    let DayOutcome::Completed(board) = outcome else { panic!("stalled: {outcome:?}") };
    assert!(board.closed);
    assert!(board.seq <= board.durable_seq, "the board is never ahead of the durable watermark");
    for t in &board.tasks {
        assert_eq!(t.status, TaskStatus::Succeeded, "{}", t.id);
        assert!(t.started_ms.is_some() && t.finished_ms.is_some(), "{}", t.id);
    }
    assert_eq!(board.task("per_product").unwrap().counts.total(), 3);
    assert_eq!(board.task("per_distributor").unwrap().counts.total(), 2);
    // 1 + 3 + 2 shards × 3 steps, each once.
    assert_eq!(ledger.lines().len(), 6 * 3);
    rt.shutdown().await.unwrap();
}
