//! The `taskflow` binary: parses flags and calls into `taskflow-core`.
//!
//! Every subcommand lives in `commands/`; this file only parses the command line, sets up
//! logging and maps the outcome to an exit code (0 ok, 1 the command's check failed, 2 bad
//! usage — clap's own convention).

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// taskflow: a distributed end-of-day batch task-flow engine.
#[derive(Debug, Parser)]
#[command(name = "taskflow", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a flow directory (flow.toml + products, distributors, calendar) and print a summary.
    ///
    /// Exits 1 and prints every problem as FILE:LINE:COL: MESSAGE when the flow is invalid.
    Validate {
        /// The flow directory, e.g. examples/fund-clearing.
        path: PathBuf,
    },
    /// Show what each task of a flow registers on a business date (a dry run: nothing is stored).
    Plan {
        /// The flow directory.
        path: PathBuf,
        /// The business date, YYYY-MM-DD.
        #[arg(long)]
        date: String,
    },
    /// Inspect, back up, restore or prune a data directory.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run a business day in one process: the manager and in-process executors.
    ///
    /// With no --flow it runs the bundled fund-clearing example. With --until-done it runs the
    /// day headless (manual tasks executed automatically), prints a summary, optionally writes
    /// a JSON report, and exits 0 only if every task ended succeeded, skipped or not
    /// applicable. Without it, it serves the web console and HTTP API (default
    /// http://127.0.0.1:8080, the URL with its token is printed) and runs until Ctrl-C or
    /// SIGTERM (graceful shutdown); manual tasks wait for an operator's execute.
    Standalone(commands::standalone::StandaloneArgs),
    /// Run a business day's manager that executor processes join over the network.
    ///
    /// Binds only the --cluster address; the cookie comes from TASKFLOW_COOKIE or
    /// --cookie-file. --until-done and --report work as in `standalone`.
    Manager(commands::cluster::ManagerArgs),
    /// Run an executor process that joins a manager and runs the shards it is assigned.
    ///
    /// Hosts the built-in and fund-clearing behaviors; reconnects after any disconnect.
    /// Exits non-zero with a clear message on a wrong cookie or a rejected join.
    Executor(commands::cluster::ExecutorArgs),
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Report versions, snapshots, log segments and whether the store is healthy.
    ///
    /// Works on a corrupt store; exits 1 unless the verdict is ok.
    Inspect {
        /// The data directory.
        data: PathBuf,
    },
    /// Write a consistent, self-checking backup of a data directory to one file.
    ///
    /// The store must not be open in another process.
    Backup {
        /// The data directory.
        data: PathBuf,
        /// The backup file to create.
        file: PathBuf,
    },
    /// Restore a backup file into a data directory, verifying the whole backup first.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The data directory to create (must be empty or absent unless --force).
        data: PathBuf,
        /// Replace the store in a non-empty data directory (refused if it holds anything but
        /// a store's own files: STORE, LOCK, SLEDMARK, log/, sled/).
        #[arg(long)]
        force: bool,
    },
    /// Print a business day's logged events, one JSON object per line, oldest first.
    ///
    /// Changes no event; the store must not be open in another process. Events compacted into a
    /// snapshot are gone from the log: a note on stderr then says where the log starts.
    Events {
        /// A data directory, or one day's store directory.
        data: PathBuf,
        /// The business date, YYYY-MM-DD (needed when the data directory holds several days).
        #[arg(long)]
        date: Option<String>,
    },
    /// Remove the closed business days outside a retention window, by hand.
    ///
    /// Keeps the closed days of the newest N open business days of the flow's calendar,
    /// counted back from the newest day in the data directory (never from today); a day that
    /// did not close is never removed, nor anything outside DATA/days/. Refused (nothing
    /// removed) while a manager runs on the data directory. Prints each day it removed.
    Prune {
        /// The data directory.
        data: PathBuf,
        /// How many open business days to keep (at least 1; the flow's `retain_days` is what
        /// a running manager keeps).
        #[arg(long, value_name = "N")]
        keep: u32,
        /// The flow directory whose calendar counts the business days and whose task graph
        /// reads the days. Default: the bundled fund-clearing example.
        #[arg(long, env = "TASKFLOW_FLOW", value_name = "DIR")]
        flow: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // Test-only (README): start the wall clock at an instant and run it faster, so a process
    // test crosses midnight and a cutover in seconds.
    if let Ok(text) = std::env::var("TASKFLOW_TEST_CLOCK") {
        let set = taskflow_core::wall::parse_test_clock(&text)
            .and_then(|(at, speed)| taskflow_core::wall::set_test_clock(at, speed));
        if let Err(e) = set {
            eprintln!("error: TASKFLOW_TEST_CLOCK={text:?}: {e}");
            return ExitCode::FAILURE;
        }
        tracing::warn!(clock = %text, "TASKFLOW_TEST_CLOCK is set: the wall clock is a test clock");
    }
    let outcome = match cli.command {
        Command::Validate { path } => commands::validate::run(&path),
        Command::Plan { path, date } => commands::validate::plan(&path, &date),
        Command::Store(StoreCommand::Inspect { data }) => commands::store::inspect(&data),
        Command::Standalone(args) => commands::standalone::run(args),
        Command::Manager(args) => commands::cluster::manager(args),
        Command::Executor(args) => commands::cluster::executor(args),
        Command::Store(StoreCommand::Backup { data, file }) => {
            commands::store::backup(&data, &file)
        }
        Command::Store(StoreCommand::Restore { file, data, force }) => {
            commands::store::restore(&file, &data, force)
        }
        Command::Store(StoreCommand::Events { data, date }) => {
            commands::store::events(&data, date.as_deref())
        }
        Command::Store(StoreCommand::Prune { data, keep, flow }) => {
            commands::store::prune(&data, keep, flow.as_deref())
        }
    };
    match outcome {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr through `tracing`; levels per module come from `TASKFLOW_LOG` (or
/// `RUST_LOG`) in env-filter syntax. The default is quiet: warnings and errors only. Colours
/// only when stderr is a terminal.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("TASKFLOW_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    // Colours only on a terminal: a log file or a pipe gets plain `field=value` text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}
