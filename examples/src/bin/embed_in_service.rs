//! Embedding taskflow-core in an existing tokio service, with a behavior of the service's own.
//!
//! Run: `cargo run -p taskflow-examples --bin embed_in_service -- [DATE]`
//! (default 2026-09-30, the last business day before the National Day holiday).
//! `TASKFLOW_FUND_STEP_DELAY=1s` slows the steps down; `TASKFLOW_INJECT_FAILURES=clearing:D101:1`
//! makes a shard fail once (it is retried only if its task has retries); Ctrl-C stops the
//! runtime (running shards are stopped, the journal closed; a rerun resumes the day).
//!
//! The service builds one `BehaviorRegistry` with the built-ins, the fund behaviors and its
//! own `bank.reconcile_statement`, extends the bundled flow with a task that uses it, and
//! starts the actor runtime in-process (`Runtime::start`, journal in a temp directory). It
//! follows the day through a subscription (task status changes) and waits for the end with
//! `ManagerHandle::wait_until_done` — the same handle the HTTP server uses.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use taskflow_core::behavior::{BehaviorError, BehaviorRegistry, ShardContext, TaskBehavior};
use taskflow_core::flow::Flow;
use taskflow_core::model::BusinessDate;
use taskflow_core::{DayOutcome, Notice, Runtime, RuntimeOptions, Topic};
use taskflow_examples::fund_clearing::{self, FundOptions};

/// The service's own task, appended to the bundled flow: after settlement, match each agent's
/// bank statement against the day's settlement instructions.
const BANK_TASK: &str = r#"
[[task]]
id = "bank_reconciliation"
name = "银行对账 Bank statement reconciliation"
level = "distributor"
behavior = "bank.reconcile_statement"
depends_on = ["settlement"]
distributor_types = ["traditional-agent", "internet-agent"]
params = { bank_account = "110-0123-4567" }
"#;

/// The custom behavior: reconciles one distributor's settlement account statement.
struct BankReconciliation;

impl TaskBehavior for BankReconciliation {
    fn steps(&self) -> &[&str] {
        &["download_statement", "match_entries", "report_breaks"]
    }

    async fn run_step(&self, ctx: &mut ShardContext, step: usize) -> Result<(), BehaviorError> {
        let account = ctx.params().require("bank_account")?.to_owned();
        // A real service would call its bank gateway here; a cancellable pause stands in.
        tokio::select! {
            () = ctx.cancelled() => return Err(BehaviorError::new("stopped")),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        match step {
            0 => ctx.info(format!("downloaded statement of {account} for {}", ctx.shard())),
            1 => ctx.info("every settlement instruction matched a statement entry"),
            _ => ctx.info("no breaks to report"),
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let date: BusinessDate = match std::env::args().nth(1) {
        Some(text) => text.parse().with_context(|| format!("`{text}` is not a YYYY-MM-DD date"))?,
        None => "2026-09-30".parse()?,
    };

    let mut registry = BehaviorRegistry::with_builtins();
    let options = FundOptions { step_delay: Duration::from_millis(20), ..FundOptions::default() }
        .with_env()?;
    fund_clearing::register_with(&mut registry, options)?;
    registry.register("bank.reconcile_statement", || BankReconciliation)?;

    let flow_text = format!("{}{BANK_TASK}", fund_clearing::FLOW_TOML);
    let flow = Flow::from_strs(
        &flow_text,
        fund_clearing::PRODUCTS_TOML,
        fund_clearing::DISTRIBUTORS_TOML,
        fund_clearing::CALENDAR_TOML,
    )?;
    println!("{}", flow.summary());

    let data_dir = std::env::temp_dir().join(format!("taskflow-embed-{}", std::process::id()));
    let opts = RuntimeOptions {
        data_dir: data_dir.clone(),
        date: Some(date),
        // The service has no operator at hand: manual tasks (day_init) run when ready.
        auto_execute_manual: true,
        ..RuntimeOptions::default()
    };
    let (runtime, handle) = Runtime::start(Arc::new(flow), registry, opts).await?;
    println!("day {date}: journal in {}", data_dir.display());

    let mut statuses = handle.subscribe(vec![Topic::Day]).await?;
    let printer = tokio::spawn(async move {
        while let Some(notice) = statuses.next().await {
            if let Notice::TaskStatus { task, status, .. } = notice {
                println!("  {task:<28} {status}");
            }
        }
    });
    let outcome = tokio::select! {
        r = handle.wait_until_done(Duration::from_secs(600)) => Some(r?),
        _ = tokio::signal::ctrl_c() => None,
    };
    printer.abort();
    runtime.shutdown().await?;
    match outcome {
        Some(DayOutcome::Completed(_)) => println!("day {date} completed"),
        Some(DayOutcome::Stalled(board)) => {
            let waiting: Vec<String> = board
                .tasks
                .iter()
                .filter(|t| !t.status.is_done())
                .map(|t| t.id.to_string())
                .collect();
            println!("day {date} stalled; needs an operator: {}", waiting.join(", "));
        }
        None => println!("stopped; run again to resume day {date}"),
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
