//! Retries, step resume, triggers, operator actions, forced stops, panics and unconfirmed work.

mod support;

use support::*;
use taskflow_core::state::{
    CommandError, OperatorAction, ShardStatus, TaskStatus, UnconfirmedPolicy,
};
use taskflow_core::{ActionError, DayOutcome, SlotView};

fn system_task(id: &str, deps: &str, extra: &str) -> String {
    format!(
        "[[task]]\nid = \"{id}\"\nname = \"{id}\"\nlevel = \"system\"\nbehavior = \"scripted\"\n\
         depends_on = [{deps}]\n{extra}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_shard_is_retried_after_backoff_and_resumes_at_its_failed_step() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let f = flow(&system_task(
        "t",
        "",
        "retries = 2\nretry_backoff = \"50ms\"\nparams = { fail_step = \"1\", fail_attempts = \"1\" }",
    ));
    let (rt, m) = start(f, &ledger, opts(&dir)).await;
    let DayOutcome::Completed(board) = wait_done(&m).await else { panic!("not completed") };
    assert_eq!(board.task("t").unwrap().attempts, 2);
    let lines = ledger.lines();
    assert_eq!(ledger.count("step 0"), 1, "step 0 runs once: {lines:#?}");
    assert_eq!(ledger.count("step 1 attempt 1"), 1, "{lines:#?}");
    assert_eq!(ledger.count("step 1 attempt 2"), 1, "{lines:#?}");
    assert_eq!(ledger.count("step 2"), 1, "{lines:#?}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_leave_the_task_failed_until_an_operator_retries() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let f = flow(&system_task(
        "t",
        "",
        "retries = 1\nretry_backoff = \"10ms\"\nparams = { fail_step = \"0\", fail_attempts = \"2\" }",
    ));
    let (rt, m) = start(f, &ledger, opts(&dir)).await;
    let DayOutcome::Stalled(board) = wait_done(&m).await else { panic!("should stall") };
    assert_eq!(board.task("t").unwrap().status, TaskStatus::Failed);
    m.act(cmd(OperatorAction::Retry, "t", None)).await.unwrap();
    let DayOutcome::Completed(_) = wait_done(&m).await else { panic!("not completed") };
    assert_eq!(ledger.count("step 0"), 3);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_task_waits_for_execute_and_an_empty_scope_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let tasks = format!(
        "{}[[task]]\nid = \"matured_only\"\nname = \"m\"\nlevel = \"product\"\nbehavior = \
         \"scripted\"\nin_lifecycle = [\"open\"]\nshard_by = \"behavior\"\ndepends_on = \
         [\"go\"]\nparams = {{ split_empty = \"1\" }}\n\n{}",
        system_task("go", "", "trigger = \"manual\""),
        system_task("after", "\"matured_only\"", ""),
    );
    let (rt, m) = start(flow(&tasks), &ledger, opts(&dir)).await;
    let DayOutcome::Stalled(board) = wait_done(&m).await else { panic!("should wait") };
    let go = board.task("go").unwrap();
    assert_eq!(go.status, TaskStatus::Registered);
    assert!(go.note.as_deref().unwrap_or("").contains("execute"), "{go:?}");
    assert!(ledger.lines().is_empty());
    let seq = m.act(cmd(OperatorAction::Execute, "go", None)).await.unwrap();
    assert!(seq > 0);
    let DayOutcome::Completed(board) = wait_done(&m).await else { panic!("not completed") };
    let na = board.task("matured_only").unwrap();
    assert_eq!(na.status, TaskStatus::NotApplicable);
    assert!(na.not_applicable);
    assert_eq!(board.task("after").unwrap().status, TaskStatus::Succeeded);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_at_trigger_fires_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let (rt, m) =
        start(flow(&system_task("t", "", "trigger = \"at 18:00\"")), &ledger, opts(&dir)).await;
    let DayOutcome::Completed(_) = wait_done(&m).await else { panic!("not completed") };
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_is_refused_when_dependents_ran_and_cascades_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let tasks = format!(
        "{}{}{}",
        system_task("a", "", ""),
        system_task("b", "\"a\"", ""),
        system_task("hold", "\"b\"", "trigger = \"manual\""),
    );
    let (rt, m) = start(flow(&tasks), &ledger, opts(&dir)).await;
    let DayOutcome::Stalled(_) = wait_done(&m).await else { panic!("hold keeps the day open") };
    let refused = m.act(cmd(OperatorAction::Rollback { cascade: false }, "a", None)).await;
    assert!(
        matches!(refused, Err(ActionError::Refused(CommandError::DependentsRan { .. }))),
        "{refused:?}"
    );
    m.act(cmd(OperatorAction::Rollback { cascade: true }, "a", None)).await.unwrap();
    until("both rolled back", || async {
        let b = m.board().await.unwrap();
        b.task("a").unwrap().status == TaskStatus::RolledBack
            && b.task("b").unwrap().status == TaskStatus::RolledBack
    })
    .await;
    let rollbacks: Vec<String> =
        ledger.lines().into_iter().filter(|l| l.starts_with("rollback")).collect();
    assert_eq!(rollbacks.len(), 2);
    assert!(rollbacks[0].contains("/b/"), "the dependent first: {rollbacks:?}");
    assert!(rollbacks[1].contains("/a/"), "{rollbacks:?}");
    for t in ["a", "b"] {
        let s = m.shards(t, None, 0, 10).await.unwrap();
        assert_eq!(s[0].generation, 1, "{t}: the rollback bumps the generation");
    }
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ignored_by_blocking_code_is_forced_and_the_slot_stays_occupied_until_it_returns() {
    forced_stop_of_blocking_code("scripted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ignored_by_a_behavior_declared_blocking_is_forced_likewise() {
    forced_stop_of_blocking_code("scripted.blocking").await;
}

async fn forced_stop_of_blocking_code(behavior: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let task = system_task("t", "", "params = { block_ms = \"2500\" }");
    let f = flow(&task.replace("\"scripted\"", &format!("\"{behavior}\"")));
    let mut o = opts(&dir);
    o.slots_per_executor = 1;
    let (rt, m) = start(f, &ledger, o).await;
    // The step has started (and blocks): a stop that reached the slot earlier would cancel the
    // shard before it ran, which is a cooperative stop, not the forced one under test.
    until("the step blocking", || async { ledger.lines().iter().any(|l| l.starts_with("run ")) })
        .await;
    m.act(cmd(OperatorAction::Stop, "t", None)).await.unwrap();
    until("stopped", || async {
        m.board().await.unwrap().task("t").unwrap().status == TaskStatus::Stopped
    })
    .await;
    let shard = &m.shards("t", None, 0, 1).await.unwrap()[0];
    assert_eq!(shard.status, ShardStatus::Stopped);
    assert!(shard.note.as_deref().unwrap_or("").contains("abandoned"), "{shard:?}");
    let board = m.board().await.unwrap();
    assert!(matches!(board.executors[0].slots[0], SlotView::Abandoned(_)), "{board:?}");
    until("slot freed", || async {
        matches!(m.board().await.unwrap().executors[0].slots[0], SlotView::Idle)
    })
    .await;
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperative_stop_then_skip_completes_the_day() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let f = flow(&format!(
        "{}{}",
        system_task("t", "", "params = { wait_cancel = \"1\" }"),
        system_task("next", "\"t\"", "")
    ));
    let (rt, m) = start(f, &ledger, opts(&dir)).await;
    until("running", || async {
        m.board().await.unwrap().task("t").unwrap().status == TaskStatus::Running
    })
    .await;
    m.act(cmd(OperatorAction::Stop, "t", Some(0))).await.unwrap();
    until("stopped", || async {
        m.board().await.unwrap().task("t").unwrap().status == TaskStatus::Stopped
    })
    .await;
    assert_eq!(m.shards("t", None, 0, 1).await.unwrap()[0].note, None, "stopped in time");
    m.act(cmd(OperatorAction::Skip, "t", None)).await.unwrap();
    let DayOutcome::Completed(board) = wait_done(&m).await else { panic!("not completed") };
    assert_eq!(board.task("t").unwrap().status, TaskStatus::Skipped);
    assert_eq!(board.task("next").unwrap().status, TaskStatus::Succeeded);
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_fails_the_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let f = flow(&system_task("t", "", "timeout = \"200ms\"\nparams = { sleep_ms = \"5000\" }"));
    let (rt, m) = start(f, &ledger, opts(&dir)).await;
    let DayOutcome::Stalled(_) = wait_done(&m).await else { panic!("should stall") };
    let shard = &m.shards("t", None, 0, 1).await.unwrap()[0];
    assert_eq!(shard.status, ShardStatus::Failed);
    assert!(shard.last_error.as_deref().unwrap_or("").contains("timed out"), "{shard:?}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_behavior_fails_its_shard_not_the_manager() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let f = flow(&system_task("t", "", "params = { panic_step = \"0\" }"));
    let (rt, m) = start(f, &ledger, opts(&dir)).await;
    let DayOutcome::Stalled(board) = wait_done(&m).await else { panic!("should stall") };
    assert_eq!(board.task("t").unwrap().status, TaskStatus::Failed);
    let shard = &m.shards("t", None, 0, 1).await.unwrap()[0];
    assert!(shard.last_error.as_deref().unwrap_or("").contains("panicked"), "{shard:?}");
    rt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_work_is_held_for_an_operator_then_confirmed_or_marked_failed() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::default();
    let f = flow(&format!(
        "{}[[task]]\nid = \"p\"\nname = \"p\"\nlevel = \"product\"\nbehavior = \"scripted\"\n\
         in_lifecycle = [\"open\"]\nparams = {{ sleep_ms = \"2000\" }}\n",
        ""
    ));
    let (rt, m) = start(f.clone(), &ledger, opts(&dir)).await;
    until("running", || async {
        m.board().await.unwrap().task("p").unwrap().counts.get(ShardStatus::Running) == 2
    })
    .await;
    tokio::time::timeout(WAIT, rt.abort()).await.expect("abort");

    let mut o = opts(&dir);
    o.unconfirmed_policy = UnconfirmedPolicy::Hold;
    o.slots_per_executor = 1;
    let (rt, m) = tokio::time::timeout(WAIT, start(f, &ledger, o)).await.expect("restart");
    until("unconfirmed", || async {
        m.board().await.unwrap().task("p").unwrap().counts.get(ShardStatus::Unconfirmed) == 2
    })
    .await;
    let running = m.shards("p", Some(ShardStatus::Unconfirmed), 0, 10).await.unwrap();
    m.act(cmd(OperatorAction::Confirm, "p", Some(running[0].index))).await.unwrap();
    m.act(cmd(OperatorAction::MarkFailed, "p", Some(running[1].index))).await.unwrap();
    let shards = m.shards("p", None, 0, 10).await.unwrap();
    assert_eq!(shards[running[0].index as usize].status, ShardStatus::Succeeded);
    assert_eq!(shards[running[1].index as usize].status, ShardStatus::Failed);
    rt.shutdown().await.unwrap();
}
