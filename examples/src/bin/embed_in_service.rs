//! Embedding taskflow-core in an existing tokio service, with a behavior of the service's own.
//!
//! Run: `cargo run -p taskflow-examples --bin embed_in_service -- [DATE] [TASK...]`
//! e.g. `cargo run -p taskflow-examples --bin embed_in_service -- 2026-09-30 money_fund_income`
//! (defaults: 2026-09-30, the last business day before the National Day holiday, and the tasks
//! `money_fund_income clearing bank_reconciliation`). `TASKFLOW_FUND_STEP_DELAY=1s` slows the
//! steps down; `TASKFLOW_INJECT_FAILURES=clearing:D101:1` makes a shard fail; Ctrl-C cancels.
//!
//! The service builds one `BehaviorRegistry` with the built-ins, the fund behaviors and its
//! own `bank.reconcile_statement`, and extends the bundled flow with a task that uses it. The
//! actor runtime (whose `Manager` handle will schedule, retry and record all of this) is not
//! written yet, so for now the example drives shards itself: registration and split of one
//! task on one date, then `run_shard` for each shard concurrently, printing the outcomes. It
//! will be rewritten around the runtime's handle once that exists.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use taskflow_core::behavior::{
    BehaviorError, BehaviorRegistry, BoxFuture, CancelToken, Checkpoint, CheckpointError, LogLine,
    Progress, RunOptions, ShardContext, ShardOutcome, ShardSink, TaskBehavior, run_shard,
};
use taskflow_core::flow::Flow;
use taskflow_core::model::BusinessDate;
use taskflow_examples::fund_clearing::{self, FundOptions};
use taskflow_examples::shards::shard_specs;
use tokio::task::JoinSet;

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

/// Prints a shard's log lines and checkpoints to stdout, prefixed with `task/shard`.
struct PrintSink {
    prefix: String,
}

impl ShardSink for PrintSink {
    fn checkpoint(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<(), CheckpointError>> {
        println!("{}  ✓ {}", self.prefix, checkpoint.name);
        Box::pin(async { Ok(()) })
    }

    fn progress(&self, _progress: Progress) {}

    fn log(&self, line: LogLine) {
        println!("{}  {:?}: {}", self.prefix, line.level, line.message);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let date: BusinessDate = match args.next() {
        Some(text) => text.parse().with_context(|| format!("`{text}` is not a YYYY-MM-DD date"))?,
        None => "2026-09-30".parse()?,
    };
    let mut tasks: Vec<String> = args.collect();
    if tasks.is_empty() {
        tasks = ["money_fund_income", "clearing", "bank_reconciliation"].map(String::from).into();
    }

    let mut registry = BehaviorRegistry::with_builtins();
    let options = FundOptions { step_delay: Duration::from_millis(200), ..FundOptions::default() }
        .with_env()?;
    fund_clearing::register_with(&mut registry, options)?;
    registry.register("bank.reconcile_statement", || BankReconciliation)?;
    let registry = Arc::new(registry);

    let flow_text = format!("{}{BANK_TASK}", fund_clearing::FLOW_TOML);
    let flow = Flow::from_strs(
        &flow_text,
        fund_clearing::PRODUCTS_TOML,
        fund_clearing::DISTRIBUTORS_TOML,
        fund_clearing::CALENDAR_TOML,
    )?;
    println!("{}", flow.summary());

    // One token for the whole run: Ctrl-C asks every running shard to stop.
    let cancel = CancelToken::new();
    tokio::spawn({
        let cancel = cancel.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        }
    });

    for task_id in &tasks {
        let task = flow.task_by_id(task_id).with_context(|| format!("no task `{task_id}`"))?;
        let specs = shard_specs(&flow, task_id, date, &registry)?;
        println!("\n== {task_id} on {date}: {} shard(s), behavior {}", specs.len(), task.behavior);
        let options = RunOptions { timeout: task.timeout, ..RunOptions::default() };
        let mut running = JoinSet::new();
        for spec in specs {
            let behavior = registry.acquire(&task.behavior)?;
            let sink = Arc::new(PrintSink { prefix: format!("{task_id}/{}", spec.shard) });
            let (cancel, options) = (cancel.clone(), options.clone());
            let shard = spec.shard.clone();
            running.spawn(async move {
                (shard, run_shard(&*behavior, spec, cancel, sink, &options).await)
            });
        }
        let mut failed = 0;
        while let Some(joined) = running.join_next().await {
            let (shard, outcome) = joined?;
            if outcome != ShardOutcome::Succeeded {
                failed += 1;
                println!("{task_id}/{shard}  => {outcome:?}");
            }
        }
        println!("== {task_id}: {failed} shard(s) did not succeed");
    }
    Ok(())
}
