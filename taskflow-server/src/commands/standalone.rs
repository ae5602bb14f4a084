//! `taskflow standalone`: a whole business day in one process (manager + in-process executors).
//!
//! With `--until-done` it runs the day headless with every manual task executed
//! automatically, prints a summary, writes the JSON report (`proto-docs/report.md`) and exits 0
//! only if every task ended succeeded, skipped or not applicable. Without it, it runs the day
//! and keeps running until Ctrl-C (graceful shutdown), printing the day's progress as states
//! change; the HTTP console comes with the next issue.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use taskflow_core::behavior::{BehaviorRegistry, CommandBehavior};
use taskflow_core::flow::{self, Flow};
use taskflow_core::model::BusinessDate;
use taskflow_core::runtime::{
    Board, DayOutcome, ManagerHandle, Notice, Runtime, RuntimeOptions, Topic, previous_open_day,
    today_in,
};
use taskflow_core::state::ShardStatus;
use taskflow_examples::fund_clearing::{self, FundOptions};

/// Flags of `taskflow standalone`.
#[derive(Debug, clap::Args)]
pub(crate) struct StandaloneArgs {
    /// Run the business day headless: execute manual tasks automatically, print a summary and
    /// exit 0 only if every task ended succeeded, skipped or not applicable (1 otherwise).
    /// Started again on a finished day, it reports and exits 0 without re-running anything.
    #[arg(long)]
    until_done: bool,
    /// The business date, YYYY-MM-DD. Default: the most recent open business day before today
    /// in the flow's time zone — all its `at` triggers have passed, so a fresh start completes
    /// without waiting.
    #[arg(long)]
    date: Option<String>,
    /// In-process executors.
    #[arg(long, default_value_t = 1)]
    executors: usize,
    /// Slots per executor (shards running at once on each).
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// The data directory (the day's journal lives in DIR/days/YYYY-MM-DD).
    #[arg(long, default_value = "taskflow-data")]
    data: PathBuf,
    /// The flow directory (flow.toml + products, distributors, calendar). Default: the
    /// bundled fund-clearing example.
    #[arg(long)]
    flow: Option<PathBuf>,
    /// Write the JSON report of the day here (see proto-docs/report.md).
    #[arg(long)]
    report: Option<PathBuf>,
}

/// The behaviors the binary hosts: the built-ins (`noop`, `command`) and the bundled
/// example's `fund.*` behaviors. `TASKFLOW_FUND_STEP_DELAY` (e.g. `800ms`) slows the simulated
/// steps down for a demo; `TASKFLOW_INJECT_FAILURES` injects failures (see
/// `taskflow_examples::fund_clearing::FailurePlan`).
pub(crate) fn registry() -> anyhow::Result<BehaviorRegistry> {
    let mut registry = BehaviorRegistry::with_builtins();
    let options = FundOptions::default().with_env().context("fund behavior options")?;
    fund_clearing::register_with(&mut registry, options)?;
    Ok(registry)
}

pub(crate) fn run(args: StandaloneArgs) -> anyhow::Result<ExitCode> {
    let flow = match &args.flow {
        Some(dir) => flow::load_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => fund_clearing::flow()
            .map_err(|e| anyhow::anyhow!("the bundled example does not load: {e}"))?,
    };
    let date = match &args.date {
        Some(d) => d
            .parse::<BusinessDate>()
            .with_context(|| format!("--date {d:?} is not a date of the form YYYY-MM-DD"))?,
        None => previous_open_day(&flow, today_in(&flow))?,
    };
    #[cfg(target_os = "linux")]
    if let Err(e) = CommandBehavior::adopt_orphans() {
        tracing::warn!(%e, "cannot become a subreaper; killed command groups may linger");
    }
    let opts = RuntimeOptions {
        data_dir: args.data.clone(),
        date: Some(date),
        executors: args.executors.max(1),
        slots_per_executor: args.slots.max(1),
        auto_execute_manual: args.until_done,
        roll_over: false,
        ..RuntimeOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = rt.block_on(serve(
        Arc::new(flow),
        opts,
        args.until_done,
        args.report.as_deref(),
        "standalone",
    ));
    // An abandoned shard attempt (Rust code stuck in a blocking call) must not keep the
    // process alive once the journal is closed.
    rt.shutdown_timeout(Duration::from_millis(500));
    outcome
}

/// Runs the day until done (`until_done`) or until Ctrl-C; shared with `taskflow manager`.
pub(crate) async fn serve(
    flow: Arc<Flow>,
    opts: RuntimeOptions,
    until_done: bool,
    report: Option<&std::path::Path>,
    label: &str,
) -> anyhow::Result<ExitCode> {
    let date = opts.date.unwrap_or_else(|| BusinessDate(today_in(&flow)));
    let data = opts.day_dir(date);
    let (runtime, manager) = Runtime::start(flow.clone(), registry()?, opts)
        .await
        .with_context(|| format!("starting business date {date} in {}", data.display()))?;
    println!(
        "taskflow {label}: flow `{}`, business date {date}, data {}",
        flow.settings().name,
        data.display()
    );
    let progress = tokio::spawn(print_progress(manager.clone()));
    if until_done {
        let outcome = manager.wait_until_done(Duration::from_secs(30 * 24 * 3600)).await?;
        progress.abort();
        let (board, completed) = match &outcome {
            DayOutcome::Completed(b) => (b, true),
            DayOutcome::Stalled(b) => (b, false),
        };
        print_summary(board, completed);
        if let Some(path) = report {
            let report = Report::of(&flow.settings().name, board, completed);
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(path, json + "\n")
                .with_context(|| format!("writing the report to {}", path.display()))?;
        }
        let ok = board.all_done();
        runtime.shutdown().await?;
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    println!("running; press Ctrl-C to stop (manual tasks wait for an operator's execute)");
    shutdown_signal().await;
    println!("stopping: waiting for running shards, then closing the journal");
    progress.abort();
    runtime.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// Graceful shutdown starts on Ctrl-C (SIGINT) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Prints one line per task status change, as they happen (never periodically).
async fn print_progress(manager: ManagerHandle) {
    let Ok(mut sub) = manager.subscribe(vec![Topic::Day]).await else { return };
    while let Some(n) = sub.next().await {
        if let Notice::TaskStatus { task, status, .. } = n {
            println!("{}  {task}: {status}", Utc::now().format("%H:%M:%S"));
        }
    }
}

fn print_summary(board: &Board, completed: bool) {
    println!();
    println!(
        "business date {}: {}",
        board.date,
        if board.all_done() {
            "every task ended well".to_owned()
        } else if completed {
            "closed".to_owned()
        } else {
            "stalled: some tasks need an operator".to_owned()
        }
    );
    println!(
        "{:<26} {:<15} {:>6} {:>8} {:>10}  detail",
        "task", "status", "shards", "attempts", "duration"
    );
    for t in &board.tasks {
        let duration = match (t.started_ms, t.finished_ms) {
            (Some(s), Some(f)) if f >= s => format!("{:.1}s", (f - s) as f64 / 1000.0),
            _ => "-".into(),
        };
        let mut detail = t.counts.to_string();
        if let Some(note) = &t.note {
            detail = format!("{detail}; {note}");
        }
        println!(
            "{:<26} {:<15} {:>6} {:>8} {:>10}  {detail}",
            t.id.as_str(),
            t.status.to_string(),
            t.counts.total(),
            t.attempts,
            duration
        );
    }
}

/// The `--report` JSON (documented in `proto-docs/report.md`).
#[derive(Debug, Serialize)]
struct Report {
    version: u32,
    flow: String,
    date: String,
    outcome: &'static str,
    ok: bool,
    seq: u64,
    tasks: Vec<TaskReport>,
}

#[derive(Debug, Serialize)]
struct TaskReport {
    id: String,
    name: String,
    status: String,
    not_applicable: bool,
    shards: u32,
    counts: std::collections::BTreeMap<String, u32>,
    attempts: u64,
    registered_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    note: Option<String>,
}

impl Report {
    fn of(flow: &str, board: &Board, completed: bool) -> Report {
        let at = |ms: Option<i64>| ms.and_then(DateTime::<Utc>::from_timestamp_millis);
        let tasks = board
            .tasks
            .iter()
            .map(|t| TaskReport {
                id: t.id.to_string(),
                name: t.name.clone(),
                status: serde_json::to_value(t.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                not_applicable: t.not_applicable,
                shards: t.counts.total(),
                counts: ShardStatus::ALL
                    .iter()
                    .filter(|s| t.counts.get(**s) > 0)
                    .map(|s| {
                        let name = serde_json::to_value(s)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default();
                        (name, t.counts.get(*s))
                    })
                    .collect(),
                attempts: t.attempts,
                registered_at: at(t.registered_ms),
                started_at: at(t.started_ms),
                finished_at: at(t.finished_ms),
                duration_ms: match (t.started_ms, t.finished_ms) {
                    (Some(s), Some(f)) => Some(f - s),
                    _ => None,
                },
                note: t.note.clone(),
            })
            .collect();
        Report {
            version: 1,
            flow: flow.to_owned(),
            date: board.date.to_string(),
            outcome: if completed { "completed" } else { "stalled" },
            ok: board.all_done(),
            seq: board.seq,
            tasks,
        }
    }
}
