//! `taskflow standalone`: a whole business day in one process (manager + in-process executors).
//!
//! With `--until-done` it runs the day headless with every manual task executed
//! automatically, prints a summary, writes the JSON report (`proto-docs/report.md`) and exits 0
//! only if every task ended succeeded, skipped or not applicable; with `--through` it does so
//! for every open date of a range, one day after another in this process ([`plan_headless`]
//! decides which days run and which closed days are only reported, [`run_headless`] carries
//! it out). Without it, it runs the day and keeps running until Ctrl-C (graceful shutdown),
//! printing the day's progress as states change, and serves the HTTP console
//! (`taskflow_server::serve`) until then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use taskflow_core::behavior::{BehaviorRegistry, CommandBehavior};
use taskflow_core::flow::{self, Flow};
use taskflow_core::model::{
    BusinessDate, DayFound, DayOnDisk, DayStep, NextDay, RangeError, StartError, StartPlan,
    next_day, open_dates, plan_range, plan_start,
};
use taskflow_core::state::{ShardStatus, TaskStatus};
use taskflow_core::{
    Board, DayDir, DayLook, DayOutcome, ManagerHandle, Notice, Runtime, RuntimeOptions, Topic,
    previous_open_day, today_in, wall,
};
use taskflow_examples::fund_clearing::{self, FundOptions};
use taskflow_server::alerts::{AlertOptions, Alerts};
use taskflow_server::{AppState, Auth, ConsoleOptions, generate_token, past_board};

/// Flags of `taskflow standalone`. Every option but `--until-done`, `--through` and `--report` can also be
/// set from a `TASKFLOW_*` environment variable or the `--config` file (TOML, the flag names as
/// keys: `http`, `token`, `principal`, `protect-viewing`, `date`, `executors`, `slots`, `data`,
/// `flow`); a flag beats its variable, which beats the file, which beats the default.
#[derive(Debug, clap::Args)]
pub(crate) struct StandaloneArgs {
    /// Run the business day headless: execute manual tasks automatically, print a summary and
    /// exit 0 only if every task ended succeeded, skipped or not applicable (1 otherwise).
    /// Started again on a finished day, it reports and exits 0 without re-running anything.
    /// No HTTP console is served.
    #[arg(long)]
    until_done: bool,
    /// A TOML file with any of the options below (kebab-case keys, e.g. `protect-viewing =
    /// true`).
    #[arg(long, env = "TASKFLOW_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The business date, YYYY-MM-DD. Default: the most recent open business day before today
    /// in the flow's time zone — all its `at` triggers have passed, so a fresh start completes
    /// without waiting (manual tasks still wait for an operator's execute in the console).
    #[arg(long, env = "TASKFLOW_DATE")]
    date: Option<String>,
    /// With --until-done: run every open business date from --date through this one
    /// (YYYY-MM-DD), one day after another in this process, with one summary per day; exit 0
    /// only if every day ended well. A day that stalls stops the range. Started again with the
    /// same flags, it reports the days that closed (without re-running them) and resumes at
    /// the first day that did not.
    #[arg(long, value_name = "DATE")]
    through: Option<String>,
    /// In-process executors [default: 1].
    #[arg(long, env = "TASKFLOW_EXECUTORS")]
    executors: Option<usize>,
    /// Slots per executor (shards running at once on each) [default: 4].
    #[arg(long, env = "TASKFLOW_SLOTS")]
    slots: Option<u32>,
    /// The data directory (the day's journal lives in DIR/days/YYYY-MM-DD)
    /// [default: taskflow-data].
    #[arg(long, env = "TASKFLOW_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// The flow directory (flow.toml + products, distributors, calendar). Default: the
    /// bundled fund-clearing example.
    #[arg(long, env = "TASKFLOW_FLOW", value_name = "DIR")]
    flow: Option<PathBuf>,
    /// Write the JSON report of the day here (with --until-done; see proto-docs/report.md).
    #[arg(long)]
    report: Option<PathBuf>,
    /// How long a graceful stop (SIGTERM, Ctrl-C) waits for running shards before the
    /// journal is closed and the process exits, e.g. `60s`; shards still running then are
    /// found running at the next start (re-run or rolled back by the unconfirmed policy).
    /// Keep systemd's TimeoutStopSec above it.
    #[arg(long, env = "TASKFLOW_STOP_TIMEOUT", default_value = "30s", value_parser = stop_timeout)]
    stop_timeout: Duration,
    /// The HTTP console.
    #[command(flatten)]
    console: ConsoleArgs,
    /// Alerts.
    #[command(flatten)]
    alerts: AlertArgs,
}

/// The alert flags, shared by `taskflow standalone` and `taskflow manager`
/// (`proto-docs/alerts.md`).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct AlertArgs {
    /// POST a JSON alert to this http:// URL when a shard or task fails, the day stalls or an
    /// executor is lost (repeatable).
    #[arg(long = "alert-webhook", value_name = "URL")]
    pub(crate) webhooks: Vec<String>,
    /// Sign each alert: header `X-Taskflow-Signature: sha256=<HMAC-SHA256 of the body>` with
    /// this key.
    #[arg(long, env = "TASKFLOW_ALERT_SECRET", hide_env_values = true)]
    pub(crate) alert_secret: Option<String>,
}

impl AlertArgs {
    /// The alert options; a bad URL is refused before anything is opened.
    pub(crate) fn options(&self) -> anyhow::Result<taskflow_server::alerts::AlertOptions> {
        let webhooks = self
            .webhooks
            .iter()
            .map(|u| u.parse().map_err(|e: String| anyhow::anyhow!("--alert-webhook {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if self.alert_secret.is_some() && webhooks.is_empty() {
            anyhow::bail!("--alert-secret without --alert-webhook: name where alerts go");
        }
        Ok(taskflow_server::alerts::AlertOptions {
            webhooks,
            secret: self.alert_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            ..Default::default()
        })
    }
}

/// The HTTP console's flags, shared by `taskflow standalone` and `taskflow manager`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ConsoleArgs {
    /// Where the HTTP console listens [default: 127.0.0.1:8080]. Port 0 picks a free port
    /// (the printed URL shows it).
    #[arg(long, env = "TASKFLOW_HTTP", value_name = "ADDR")]
    pub(crate) http: Option<String>,
    /// The operator token actions need (`Authorization: Bearer <token>`). Without one, a
    /// loopback bind generates a token and prints it in the console URL; any other bind
    /// refuses to start.
    #[arg(long, env = "TASKFLOW_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// The name the audit log records for actions made with the token [default: operator].
    #[arg(long, env = "TASKFLOW_PRINCIPAL")]
    pub(crate) principal: Option<String>,
    /// Require the token for viewing too (GET /api/*, /metrics, /ws), not only for actions.
    #[arg(long, env = "TASKFLOW_PROTECT_VIEWING")]
    pub(crate) protect_viewing: bool,
}

/// The `--config` file: the same options, kebab-case keys.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    date: Option<String>,
    executors: Option<usize>,
    slots: Option<u32>,
    data: Option<PathBuf>,
    flow: Option<PathBuf>,
    http: Option<String>,
    token: Option<String>,
    principal: Option<String>,
    protect_viewing: Option<bool>,
    alert_webhook: Option<Vec<String>>,
    alert_secret: Option<String>,
}

impl StandaloneArgs {
    /// Fills what the flags and environment left unset from the config file.
    fn merge_config(mut self) -> anyhow::Result<StandaloneArgs> {
        let Some(path) = &self.config else { return Ok(self) };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        let file: FileConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        self.date = self.date.or(file.date);
        self.executors = self.executors.or(file.executors);
        self.slots = self.slots.or(file.slots);
        self.data = self.data.or(file.data);
        self.flow = self.flow.or(file.flow);
        self.console.http = self.console.http.or(file.http);
        self.console.token = self.console.token.or(file.token);
        self.console.principal = self.console.principal.or(file.principal);
        self.console.protect_viewing =
            self.console.protect_viewing || file.protect_viewing.unwrap_or(false);
        if self.alerts.webhooks.is_empty() {
            self.alerts.webhooks = file.alert_webhook.unwrap_or_default();
        }
        self.alerts.alert_secret = self.alerts.alert_secret.or(file.alert_secret);
        Ok(self)
    }
}

/// The behaviors the binary hosts: the built-ins (`noop`, `command`) and the bundled
/// example's `fund.*` behaviors. `TASKFLOW_FUND_STEP_DELAY` (e.g. `800ms`) slows the simulated
/// steps down for a demo; `TASKFLOW_INJECT_FAILURES` injects failures (see
/// `taskflow_examples::fund_clearing::FailurePlan`); `TASKFLOW_LEDGER_DIR` makes the behaviors
/// post their money movements to a file ledger in that directory, shared by every process that
/// uses it (`taskflow_examples::fund_clearing::FileLedger`), so duplicates can be counted.
pub(crate) fn registry() -> anyhow::Result<BehaviorRegistry> {
    let mut registry = BehaviorRegistry::with_builtins();
    let options = FundOptions::default().with_env().context("fund behavior options")?;
    fund_clearing::register_with(&mut registry, options)?;
    Ok(registry)
}

pub(crate) fn run(args: StandaloneArgs) -> anyhow::Result<ExitCode> {
    let args = args.merge_config()?;
    // Every check of the command line comes before anything is opened or written.
    let through = parse_through(args.through.as_deref(), args.until_done)?;
    let alerts = args.alerts.options()?;
    let flow = match &args.flow {
        Some(dir) => flow::load_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => fund_clearing::flow()
            .map_err(|e| anyhow::anyhow!("the bundled example does not load: {e}"))?,
    };
    let asked = parse_date(args.date.as_deref())?;
    let data_dir = args.data.clone().unwrap_or_else(|| PathBuf::from("taskflow-data"));
    let (date, plan) = if args.until_done {
        let date = match asked {
            Some(d) => d,
            None => previous_open_day(&flow, today_in(&flow))?,
        };
        (date, Some(plan_headless(&flow, &data_dir, date, through)?))
    } else {
        (open_day(&flow, &data_dir, asked)?, None)
    };
    #[cfg(target_os = "linux")]
    if let Err(e) = CommandBehavior::adopt_orphans() {
        tracing::warn!(%e, "cannot become a subreaper; killed command groups may linger");
    }
    let opts = RuntimeOptions {
        data_dir,
        date: Some(date),
        executors: args.executors.unwrap_or(1).max(1),
        slots_per_executor: args.slots.unwrap_or(4).max(1),
        auto_execute_manual: args.until_done,
        // Without --until-done the process goes on from day to day.
        roll_over: !args.until_done,
        // A rolling day reads the flow directory again at each cutover.
        flow_dir: args.flow.clone(),
        shutdown_grace: args.stop_timeout,
        ..RuntimeOptions::default()
    };
    match plan {
        Some(plan) => run_headless(flow, opts, plan, args.report.as_deref(), "standalone", alerts),
        None => run_day(flow, opts, "standalone", &args.console, alerts),
    }
}

/// `--stop-timeout`: a duration such as `30s` or `2m`.
pub(crate) fn stop_timeout(text: &str) -> Result<Duration, String> {
    taskflow_core::model::parse_duration(text)
        .map_err(|e| format!("{e}; the bound a graceful stop waits for running shards"))
}

/// `--date`, if given.
pub(crate) fn parse_date(text: Option<&str>) -> anyhow::Result<Option<BusinessDate>> {
    text.map(|d| {
        d.parse::<BusinessDate>()
            .with_context(|| format!("--date {d:?} is not a date of the form YYYY-MM-DD"))
    })
    .transpose()
}

/// The days `data_dir` holds (`days/<date>/`), looked at read-only: closed or not
/// ([`taskflow_core::days_found`]: a directory that is not a date is ignored; a store that
/// cannot be read read-only counts as unclosed, its journal decides when it is opened).
pub(crate) fn days_found(flow: &Flow, data_dir: &Path) -> anyhow::Result<Vec<DayFound>> {
    taskflow_core::days_found(data_dir, &Arc::new(flow.clone()))
        .with_context(|| format!("listing the business days of {}", data_dir.display()))
}

/// The day a long-running start opens (`taskflow_core::model::plan_start`): the data
/// directory's open day when it has one (a `--date` must agree: later catches up, earlier is
/// refused), `--date` or the default for an empty directory; after a directory whose days
/// all closed, the next day once it may open (waiting for its cutover instant).
pub(crate) fn open_day(
    flow: &Flow,
    data_dir: &Path,
    asked: Option<BusinessDate>,
) -> anyhow::Result<BusinessDate> {
    let found = days_found(flow, data_dir)?;
    let policy = flow.day_policy();
    let plan = match plan_start(&policy, &found, asked) {
        Err(StartError::NoDay) => return Ok(previous_open_day(flow, today_in(flow))?),
        Err(e) => anyhow::bail!("{e} (data directory {})", data_dir.display()),
        Ok(plan) => plan,
    };
    match plan {
        StartPlan::Run { days, skipped } => {
            for s in skipped {
                tracing::info!(date = %s, "catch_up = latest: missed business day not opened");
            }
            if days.len() > 1 {
                tracing::info!(
                    open = %days[0],
                    then = ?days[1..].iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "catching up: the later days open one after another at their cutovers"
                );
            }
            days.first().copied().context("a start plan names a day")
        }
        StartPlan::AfterClosed(closed) => loop {
            match next_day(&policy, closed, wall::now()) {
                NextDay::Open { date, skipped } => {
                    for s in skipped {
                        tracing::info!(date = %s, "catch_up = latest: missed business day not opened");
                    }
                    return Ok(date);
                }
                NextDay::WaitUntil { date, at } => {
                    println!(
                        "every day in {} closed; business date {date} opens at {at}",
                        data_dir.display()
                    );
                    std::thread::sleep(wall::real_delay_until(at));
                }
                NextDay::CalendarEnds { last } => anyhow::bail!(
                    "every day in {} closed and the calendar has no business day after \
                     {closed} (it ends on {last}): extend calendar.toml",
                    data_dir.display()
                ),
            }
        },
    }
}

/// `--through`: a date, and only with `--until-done` (the console serves one day).
pub(crate) fn parse_through(
    through: Option<&str>,
    until_done: bool,
) -> anyhow::Result<Option<BusinessDate>> {
    let Some(text) = through else { return Ok(None) };
    let date = text.parse::<BusinessDate>().map_err(|_| {
        anyhow::anyhow!(
            "--through {text:?} is not a date of the form YYYY-MM-DD: give the last business \
             date of the range, e.g. --through 2026-10-09"
        )
    })?;
    if !until_done {
        anyhow::bail!(
            "--through {date} needs --until-done: a range of days runs headless, one day after \
             another (the console serves a single day); add --until-done, or drop --through"
        );
    }
    Ok(Some(date))
}

/// What a headless run does: its range and, per open date, run it or report it (it closed
/// before this start), with the boards of the closed days, read from their stores read-only.
#[derive(Debug)]
pub(crate) struct HeadlessPlan {
    from: BusinessDate,
    through: BusinessDate,
    /// In date order (`taskflow_core::model::plan_range`).
    pub(crate) steps: Vec<DayStep>,
    closed: BTreeMap<BusinessDate, Board>,
}

/// Checks the range `from..=through` (one day without `through`) against the flow's calendar
/// and looks at each open date's store in `data_dir` without writing to it: a closed day is
/// reported from its store, any other is run. Nothing is created or written here.
pub(crate) fn plan_headless(
    flow: &Flow,
    data_dir: &Path,
    from: BusinessDate,
    through: Option<BusinessDate>,
) -> anyhow::Result<HeadlessPlan> {
    let last = through.unwrap_or(from);
    let dates =
        open_dates(flow.calendar(), flow.settings().open_days, from, last).map_err(|e| {
            match (e, through) {
                (RangeError::NoOpenDay { .. }, None) => anyhow::anyhow!(
                    "--date {from} is not an open business day of the flow (a weekend or holiday \
                 of its calendar): choose an open day, or a range with --through"
                ),
                (e, None) => anyhow::anyhow!("--date {from}: {e}"),
                (e, Some(t)) => anyhow::anyhow!("--date {from} --through {t}: {e}"),
            }
        })?;
    let fallback = Arc::new(flow.clone());
    let mut closed = BTreeMap::new();
    let mut days = Vec::with_capacity(dates.len());
    for date in dates {
        let day = DayDir { date, path: taskflow_core::day_dir(data_dir, date) };
        let disk = if !day.path.exists() {
            DayOnDisk::Absent
        } else {
            match day.look(&fallback) {
                (day_flow, DayLook::Closed(past)) => {
                    closed.insert(date, past_board(&day_flow, past.state()));
                    DayOnDisk::Closed
                }
                // The run opens it; its journal recovers it or says what is wrong.
                (_, DayLook::Unreadable(e)) => {
                    tracing::debug!(%date, %e, "the day's store cannot be read read-only");
                    DayOnDisk::Unfinished
                }
                (_, DayLook::Unclosed(_) | DayLook::Empty) => DayOnDisk::Unfinished,
            }
        };
        days.push((date, disk));
    }
    Ok(HeadlessPlan { from, through: last, steps: plan_range(&days), closed })
}

/// Carries out a [`HeadlessPlan`] on one tokio runtime: each day to run gets its own
/// [`Runtime`] (opened, run until done or stalled, shut down), one after another; a closed day
/// is only reported. Shared with `taskflow manager --until-done`.
pub(crate) fn run_headless(
    flow: Flow,
    opts: RuntimeOptions,
    plan: HeadlessPlan,
    report: Option<&Path>,
    label: &str,
    alerts: AlertOptions,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = rt.block_on(headless(Arc::new(flow), opts, plan, report, label, &alerts));
    // An abandoned shard attempt (Rust code stuck in a blocking call) must not keep the
    // process alive once the journal is closed.
    rt.shutdown_timeout(Duration::from_millis(500));
    outcome
}

/// One day of a headless run, as it ended.
struct DayEnd {
    board: Board,
    /// The day closed (else it stalled).
    completed: bool,
    /// Closed before this run started and read from its store, not run.
    from_store: bool,
}

async fn headless(
    flow: Arc<Flow>,
    opts: RuntimeOptions,
    mut plan: HeadlessPlan,
    report: Option<&Path>,
    label: &str,
    alerts: &AlertOptions,
) -> anyhow::Result<ExitCode> {
    let planned = plan.steps.len();
    let mut days: Vec<DayEnd> = Vec::with_capacity(planned);
    for step in std::mem::take(&mut plan.steps) {
        let day = match step {
            DayStep::Report(date) => {
                let board = plan.closed.remove(&date).context("a closed day's board")?;
                println!(
                    "taskflow {label}: business date {date} closed before this run; reported \
                     from {} (not run again)",
                    opts.day_dir(date).display()
                );
                DayEnd { board, completed: true, from_store: true }
            }
            DayStep::Run(date) => {
                let opts = RuntimeOptions { date: Some(date), ..opts.clone() };
                run_one(flow.clone(), opts, label, alerts).await?
            }
        };
        print_summary(&day.board, day.completed);
        let ok = day.board.all_done();
        days.push(day);
        if !ok {
            break;
        }
    }
    let ok = days.len() == planned && days.iter().all(|d| d.board.all_done());
    if plan.through != plan.from {
        let well = days.iter().filter(|d| d.board.all_done()).count();
        match days.last() {
            _ if ok => println!(
                "range {}..{}: all {planned} open days ended well",
                plan.from, plan.through
            ),
            Some(last) => println!(
                "range {}..{}: stopped at {} ({well} of {planned} open days ended well); the \
                 later days were not run",
                plan.from, plan.through, last.board.date
            ),
            None => {}
        }
    }
    if let Some(path) = report {
        let report = Report::of(&flow.settings().name, &plan, &days, ok);
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs one business day to its end (done or stalled) and shuts its runtime down.
async fn run_one(
    flow: Arc<Flow>,
    opts: RuntimeOptions,
    label: &str,
    alerts: &AlertOptions,
) -> anyhow::Result<DayEnd> {
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
    let alerts = Alerts::start(&manager, alerts.clone()).await;
    let outcome = manager.wait_until_done(Duration::from_secs(30 * 24 * 3600)).await?;
    progress.abort();
    let (board, completed) = match outcome {
        DayOutcome::Completed(b) => (b, true),
        DayOutcome::Stalled(b) => (b, false),
    };
    if !completed {
        alerts.day_stalled(&board);
    }
    runtime.shutdown().await?;
    alerts.shutdown(ALERT_GRACE).await;
    Ok(DayEnd { board, completed, from_store: false })
}

/// [`serve`] on a fresh multi-threaded tokio runtime; shared with `taskflow manager`.
pub(crate) fn run_day(
    flow: Flow,
    opts: RuntimeOptions,
    label: &str,
    console: &ConsoleArgs,
    alerts: AlertOptions,
) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = rt.block_on(serve(Arc::new(flow), opts, label, console, alerts));
    // An abandoned shard attempt (Rust code stuck in a blocking call) must not keep the
    // process alive once the journal is closed.
    rt.shutdown_timeout(Duration::from_millis(500));
    outcome
}

/// Runs the day with the console until Ctrl-C; shared with `taskflow manager`.
async fn serve(
    flow: Arc<Flow>,
    opts: RuntimeOptions,
    label: &str,
    console: &ConsoleArgs,
    alerts: AlertOptions,
) -> anyhow::Result<ExitCode> {
    let date = opts.date.unwrap_or_else(|| BusinessDate(today_in(&flow)));
    let data = opts.day_dir(date);
    // The console's listener is bound before the day is opened: a taken port or a missing
    // token fails the start without touching the journal.
    let (listener, auth, url) = bind_console(console).await?;
    let registry = registry()?;
    let behaviors: Vec<String> = registry.names().into_iter().map(str::to_owned).collect();
    let steps = taskflow_server::behavior_steps(&registry);
    let data_dir = opts.data_dir.clone();
    let log_lines_per_shard = opts.log_lines_per_shard;
    let (runtime, manager) = Runtime::start(flow.clone(), registry, opts)
        .await
        .with_context(|| format!("starting business date {date} in {}", data.display()))?;
    println!(
        "taskflow {label}: flow `{}`, business date {date}, data {}",
        flow.settings().name,
        data.display()
    );
    let progress = tokio::spawn(print_progress(manager.clone()));
    let alerts = Alerts::start(&manager, alerts).await;
    let options = ConsoleOptions {
        auth,
        behaviors,
        data_dir,
        log_lines_per_shard,
        steps,
        alerts: Some(alerts.stats()),
    };
    let state = AppState::start(manager.clone(), options).await?;
    println!("console: {url}");
    println!("running; press Ctrl-C to stop (manual tasks wait for an operator's execute)");
    let served = taskflow_server::serve(listener, state, shutdown_signal()).await;
    println!("stopping: waiting for running shards, then closing the journal");
    progress.abort();
    runtime.shutdown().await?;
    alerts.shutdown(ALERT_GRACE).await;
    served?;
    Ok(ExitCode::SUCCESS)
}

/// How long queued alerts may take to go at exit.
const ALERT_GRACE: Duration = Duration::from_secs(5);

/// Binds the console's listener and settles the token rules; returns the URL to print (with
/// a generated token, as Jupyter does).
async fn bind_console(
    args: &ConsoleArgs,
) -> anyhow::Result<(tokio::net::TcpListener, Auth, String)> {
    let addr = args.http.clone().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on --http {addr}"))?;
    let local = listener.local_addr()?;
    let configured = args.token.clone().filter(|t| !t.trim().is_empty());
    let (token, generated) = match configured {
        Some(t) => (t, false),
        None if local.ip().is_loopback() => (generate_token()?, true),
        None => anyhow::bail!(
            "refusing to serve the console on {local} without a token: anyone who can reach \
             it could act on the day. Set --token, TASKFLOW_TOKEN or `token` in the config \
             file, or listen on a loopback address (127.0.0.1)"
        ),
    };
    let host =
        if local.ip().is_unspecified() { "localhost".to_owned() } else { local.ip().to_string() };
    let host = if local.is_ipv6() && host != "localhost" { format!("[{host}]") } else { host };
    let url = if generated {
        format!("http://{host}:{}/?token={token}", local.port())
    } else {
        format!("http://{host}:{}/ (operator token as configured)", local.port())
    };
    let auth = Auth {
        token,
        principal: args.principal.clone().unwrap_or_else(|| "operator".to_owned()),
        protect_viewing: args.protect_viewing,
    };
    Ok((listener, auth, url))
}

/// Graceful shutdown starts on Ctrl-C (SIGINT) or SIGTERM: the console stops accepting,
/// WebSocket clients are closed, running shards get `shutdown_grace`, the journal is closed.
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

/// Prints one line per task status change, as they happen (never periodically). The day
/// runs before this subscribes, so it starts from a board taken after subscribing: every
/// task that already left `unregistered` is printed once, then only notices after the
/// board's seq (the manager answers the two calls in order, so nothing falls between them).
async fn print_progress(manager: ManagerHandle) {
    let Ok(mut sub) = manager.subscribe(vec![Topic::Day]).await else { return };
    let Ok(board) = manager.board().await else { return };
    for t in board.tasks.iter().filter(|t| t.status != TaskStatus::Unregistered) {
        println!("{}  {}: {}", Utc::now().format("%H:%M:%S"), t.id, t.status);
    }
    while let Some(n) = sub.next().await {
        if let Notice::TaskStatus { seq, task, status } = n
            && seq > board.seq
        {
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

/// The `--report` JSON (documented in `proto-docs/report.md`): the range's outcome, the last
/// day reported at the top level (what a one-day report always held), and every day in `days`.
#[derive(Debug, Serialize)]
struct Report {
    version: u32,
    flow: String,
    date: String,
    outcome: &'static str,
    ok: bool,
    seq: u64,
    tasks: Vec<TaskReport>,
    from: String,
    through: String,
    days: Vec<DayReport>,
}

/// One day of the range in the report.
#[derive(Debug, Serialize)]
struct DayReport {
    date: String,
    outcome: &'static str,
    ok: bool,
    seq: u64,
    from_store: bool,
    tasks: Vec<TaskReport>,
}

#[derive(Debug, Clone, Serialize)]
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
    /// `ok`: every day of the plan ended well.
    fn of(flow: &str, plan: &HeadlessPlan, days: &[DayEnd], ok: bool) -> Report {
        let days: Vec<DayReport> = days.iter().map(DayReport::of).collect();
        let completed = days.iter().all(|d| d.outcome == "completed");
        let (date, seq, tasks) = match days.last() {
            Some(d) => (d.date.clone(), d.seq, d.tasks.clone()),
            None => (plan.from.to_string(), 0, Vec::new()),
        };
        Report {
            version: 1,
            flow: flow.to_owned(),
            date,
            outcome: if completed { "completed" } else { "stalled" },
            ok,
            seq,
            tasks,
            from: plan.from.to_string(),
            through: plan.through.to_string(),
            days,
        }
    }
}

impl DayReport {
    fn of(day: &DayEnd) -> DayReport {
        let board = &day.board;
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
        DayReport {
            date: board.date.to_string(),
            outcome: if day.completed { "completed" } else { "stalled" },
            ok: board.all_done(),
            seq: board.seq,
            from_store: day.from_store,
            tasks,
        }
    }
}
