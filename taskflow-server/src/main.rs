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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let outcome = match cli.command {
        Command::Validate { path } => commands::validate::run(&path),
        Command::Plan { path, date } => commands::validate::plan(&path, &date),
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
/// `RUST_LOG`) in env-filter syntax. The default is quiet: warnings and errors only.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("TASKFLOW_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
