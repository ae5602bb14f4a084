//! The failure-injection demo: the operator API of the runtime, step by step, on the bundled
//! fund-clearing day — library calls only, no HTTP.
//!
//! Run: `cargo run -p taskflow-examples --bin operator_demo`
//!
//! It runs business day 2026-09-30 of the bundled example on a temp data dir with injected
//! faults and shows, asserting each outcome (exit code 0 only if everything behaved):
//!
//! 1. **Automatic retry.** Every `custody_nav_check` shard fails its first attempt; the flow
//!    gives the task `retries = 1` and `retry_backoff = "2s"`, so each is retried and succeeds.
//! 2. **Skip.** One `custody_nav_check` shard fails its second attempt too (beyond its retries):
//!    the day stalls. The operator skips that shard and the chain continues.
//! 3. **Rollback.** `reconciliation` fails once (no retries), so the day stays open. Rolling back
//!    `settlement` is refused (409) because its dependents ran; a cascade rolls the dependents
//!    back first (newest first, generations bumped), and retries re-run the three tasks.
//!
//! Every action goes through [`ManagerHandle::act`] with a [`Command`]: who, from where, why,
//! what and on which task/shard — the same audit record the HTTP API writes.

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use taskflow_core::behavior::BehaviorRegistry;
use taskflow_core::model::{BusinessDate, TaskId};
use taskflow_core::state::{
    Command, CommandError, EventKind, OperatorAction, ShardEvent, ShardStatus, Target, TaskStatus,
};
use taskflow_core::{
    ActionError, DayOutcome, ManagerHandle, Notice, Runtime, RuntimeOptions, Subscription, Topic,
};
use taskflow_examples::fund_clearing::{self, FundOptions};
use taskflow_examples::shards::shard_specs;

/// Every wait is bounded by this.
const WAIT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let date: BusinessDate = "2026-09-30".parse().context("date")?;
    let flow = fund_clearing::flow().map_err(|e| anyhow::anyhow!("{e}"))?;

    // The custody check's first shard is the one that fails beyond its retries.
    let plain = {
        let mut r = BehaviorRegistry::with_builtins();
        fund_clearing::register(&mut r)?;
        r
    };
    let stuck = shard_specs(&flow, "custody_nav_check", date, &plain)?
        .first()
        .map(|s| s.shard.to_string())
        .context("custody_nav_check has shards on the date")?;
    // Only reconciliation's first step fails (a bare `*` would fail its rollback too).
    let recon = flow.task_by_id("reconciliation").context("reconciliation")?;
    let first_step = plain.acquire(&recon.behavior)?.steps()[0].to_owned();
    let faults = format!(
        "custody_nav_check:{stuck}:2,custody_nav_check:*:1,reconciliation:*@{first_step}:1"
    );
    let mut registry = BehaviorRegistry::with_builtins();
    fund_clearing::register_with(&mut registry, FundOptions::for_test().with_failures(&faults)?)?;

    let dir = std::env::temp_dir().join(format!("taskflow-operator-demo-{}", std::process::id()));
    let opts = RuntimeOptions { data_dir: dir.clone(), date: Some(date), ..Default::default() };
    println!("business day {date}, data dir {}, injected faults `{faults}`\n", dir.display());

    let (runtime, m) = Runtime::start(flow.into(), registry, opts).await?;
    let result = demo(&m, &stuck).await;
    runtime.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    println!("\nall steps behaved as described");
    Ok(())
}

async fn demo(m: &ManagerHandle, stuck: &str) -> anyhow::Result<()> {
    let mut custody_events =
        m.subscribe(vec![Topic::Task(TaskId::new("custody_nav_check"))]).await?;

    println!("== 0. the operator opens the day (`day_init` is a manual task)");
    act(m, OperatorAction::Execute, "day_init", None, "applications cut off at 15:00").await?;
    let board = stalled(m).await?;

    println!("\n== 1. failed → automatic retry → succeeded (custody_nav_check: retries = 1)");
    let shards = m.shards("custody_nav_check", None, 0, 100).await?;
    let other = shards.iter().find(|s| s.key != stuck).context("a second custody shard")?;
    let story = shard_story(&mut custody_events, other.index);
    println!("   shard {} `{}`: {}", other.index, other.key, story.join(" → "));
    ensure!(
        story.iter().any(|s| s.starts_with("failed"))
            && story.iter().filter(|s| s.starts_with("dispatched")).count() == 2
            && story.last().map(String::as_str) == Some("succeeded"),
        "expected failed → retried → succeeded, got {story:?}"
    );
    for s in shards.iter().filter(|s| s.key != stuck) {
        ensure!(s.status == ShardStatus::Succeeded && s.attempt == 2, "{s:?}");
    }
    println!("   all {} other shards: succeeded on attempt 2", shards.len() - 1);

    println!("\n== 2. beyond its retries → the day stalls → the operator skips the shard");
    let failed = shards.iter().find(|s| s.key == stuck).context("the stuck shard")?;
    ensure!(failed.status == ShardStatus::Failed && failed.attempt == 2, "{failed:?}");
    println!(
        "   shard {} `{}` failed after {} attempts: {}",
        failed.index,
        failed.key,
        failed.attempt,
        failed.last_error.as_deref().unwrap_or("?")
    );
    let waiting = board.task("export_confirmations").context("task")?;
    ensure!(waiting.status == TaskStatus::Unregistered, "{waiting:?}");
    println!("   the day is stalled; export_confirmations waits ({})", waiting.status);
    act(
        m,
        OperatorAction::Skip,
        "custody_nav_check",
        Some(failed.index),
        "custodian confirmed by phone",
    )
    .await?;
    let board = stalled(m).await?;
    let status = |b: &taskflow_core::Board, t: &str| b.task(t).map(|v| v.status);
    ensure!(status(&board, "export_confirmations") == Some(TaskStatus::Succeeded), "{board:?}");
    println!(
        "   custody_nav_check {}, export_confirmations {}: the chain continued",
        status(&board, "custody_nav_check").context("task")?,
        status(&board, "export_confirmations").context("task")?
    );
    ensure!(status(&board, "reconciliation") == Some(TaskStatus::Failed), "{board:?}");
    println!("   (reconciliation failed on purpose, no retries: the day stays open for step 3)");

    println!("\n== 3. rollback: refused while dependents ran, then cascade, then retry");
    let mut day = m.subscribe(vec![Topic::Day]).await?;
    let refused =
        act(m, OperatorAction::Rollback { cascade: false }, "settlement", None, "wrong bank file")
            .await;
    match &refused {
        Err(ActionError::Refused(e @ CommandError::DependentsRan { .. })) => {
            println!("   409 Conflict: {e}");
        }
        other => bail!("the rollback should be refused because dependents ran: {other:?}"),
    }
    act(m, OperatorAction::Rollback { cascade: true }, "settlement", None, "wrong bank file")
        .await?;
    let board = stalled(m).await?;
    let order = rollback_order(&mut day);
    println!("   rollbacks finished in this order: {}", order.join(", "));
    ensure!(
        order.first().map(String::as_str) == Some("reconciliation")
            && order.last().map(String::as_str) == Some("settlement")
            && order.iter().position(|t| t == "export_confirmations")
                < order.iter().position(|t| t == "settlement"),
        "dependents are rolled back first, newest first: {order:?}"
    );
    for t in ["settlement", "export_confirmations", "reconciliation"] {
        ensure!(status(&board, t) == Some(TaskStatus::RolledBack), "{t}: {:?}", status(&board, t));
        let gens: Vec<u32> =
            m.shards(t, None, 0, 100).await?.iter().map(|s| s.generation).collect();
        ensure!(gens.iter().all(|&g| g == 1), "{t}: generations {gens:?}");
        println!("   {t}: rolled back, generation 0 → 1 on all {} shards", gens.len());
    }
    for t in ["settlement", "export_confirmations", "reconciliation"] {
        act(m, OperatorAction::Retry, t, None, "re-run on the corrected file").await?;
        let outcome = m.wait_until_done(WAIT).await?;
        let view = outcome.board().task(t).context("task")?;
        ensure!(view.status == TaskStatus::Succeeded, "{t} after retry: {view:?}");
        println!("   retry {t}: succeeded again ({} dispatches in all)", view.attempts);
        if t == "reconciliation" {
            ensure!(matches!(outcome, DayOutcome::Completed(_)), "the day should complete");
            println!("   day_close ran: the day is completed and closed");
        }
    }
    Ok(())
}

/// Carries out one operator action and prints it.
async fn act(
    m: &ManagerHandle,
    action: OperatorAction,
    task: &str,
    shard: Option<u32>,
    reason: &str,
) -> Result<u64, ActionError> {
    let cmd = Command {
        actor: "alice".into(),
        from: "operator_demo".into(),
        reason: reason.into(),
        action,
        target: Target { task: TaskId::new(task), shard },
    };
    let what = format!("{} {}", action.verb(), cmd.target);
    let result = m.act(cmd).await;
    match &result {
        Ok(seq) => println!("   operator: {what} (\"{reason}\") → done, audit event #{seq}"),
        Err(_) => println!("   operator: {what} (\"{reason}\") → refused"),
    }
    result
}

/// Waits until the day stalls (needs an operator), printing where it stopped.
async fn stalled(m: &ManagerHandle) -> anyhow::Result<taskflow_core::Board> {
    match m.wait_until_done(WAIT).await? {
        DayOutcome::Stalled(board) => {
            let stuck: Vec<String> = board
                .tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Failed || t.status == TaskStatus::RolledBack)
                .map(|t| format!("{} {}", t.id, t.status))
                .collect();
            println!("   … the day stalled: {}", stuck.join(", "));
            Ok(board)
        }
        DayOutcome::Completed(_) => bail!("the day completed although a step should hold it"),
    }
}

/// What happened to one shard, from the buffered notices of its task's topic.
fn shard_story(sub: &mut Subscription, shard: u32) -> Vec<String> {
    let mut story = Vec::new();
    while let Some(notice) = sub.try_next() {
        let Notice::Event { kind: EventKind::Shard { shard: s, event, .. }, .. } = notice else {
            continue;
        };
        if s != shard {
            continue;
        }
        story.push(match event {
            ShardEvent::Dispatch { attempt, .. } => format!("dispatched (attempt {attempt})"),
            ShardEvent::Fail { reason } => format!("failed ({reason})"),
            ShardEvent::Succeed => "succeeded".into(),
            other => format!("{:?}", other.kind()).to_lowercase(),
        });
    }
    story
}

/// The tasks whose shard rollbacks finished, in order (each task once, at its first).
fn rollback_order(sub: &mut Subscription) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    while let Some(notice) = sub.try_next() {
        if let Notice::Event {
            kind: EventKind::Shard { task, event: ShardEvent::RollbackSucceeded, .. },
            ..
        } = notice
            && !order.iter().any(|t| t == task.as_str())
        {
            order.push(task.as_str().to_owned());
        }
    }
    order
}
