//! An executor process built from `taskflow-core` with a behavior of its own: it joins a
//! `taskflow manager` exactly as `taskflow executor` does, and the manager places on it only
//! the shards of the behaviors it hosts.
//!
//! ```sh
//! export TASKFLOW_COOKIE=change-me
//! cargo run -p taskflow-examples --bin custom_executor -- 127.0.0.1:7700 [NAME] [SLOTS]
//! ```
//!
//! It hosts one behavior, `custom.stamp`: one step that appends the shard's idempotency key
//! and this executor's name to the file in `TASKFLOW_STAMP_FILE` (if set) and logs it. The
//! first Ctrl-C / SIGTERM drains it (running shards finish, nothing is reassigned); dropping
//! the future stops it at once.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use taskflow_core::behavior::{BehaviorError, BehaviorRegistry, ShardContext, TaskBehavior};
use taskflow_core::cluster::{ExecutorConfig, StatusSink, run_executor};

/// The behavior this executor brings.
struct Stamp {
    file: Option<PathBuf>,
    executor: String,
}

impl TaskBehavior for Stamp {
    fn steps(&self) -> &[&str] {
        &["stamp"]
    }

    async fn run_step(&self, ctx: &mut ShardContext, _step: usize) -> Result<(), BehaviorError> {
        let line = format!("{} {}", ctx.idempotency_key(), self.executor);
        if let Some(path) = &self.file {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| BehaviorError::new(format!("{}: {e}", path.display())))?;
            // One write of the whole line: concurrent shards append without interleaving
            // (`writeln!` may split the text and the newline into two writes).
            f.write_all(format!("{line}\n").as_bytes())
                .map_err(|e| BehaviorError::new(format!("{}: {e}", path.display())))?;
        }
        ctx.info(format!("stamped {line}"));
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let manager = args.next().context("usage: custom_executor HOST:PORT [NAME] [SLOTS]")?;
    let name = args.next().unwrap_or_else(|| format!("custom-{}", std::process::id()));
    let slots = match args.next() {
        Some(s) => s.parse().with_context(|| format!("SLOTS {s:?} is not a number"))?,
        None => 2,
    };
    let cookie = std::env::var("TASKFLOW_COOKIE").context("set TASKFLOW_COOKIE")?;

    let mut registry = BehaviorRegistry::new();
    let (file, executor) =
        (std::env::var_os("TASKFLOW_STAMP_FILE").map(PathBuf::from), name.clone());
    registry.register("custom.stamp", move || Stamp {
        file: file.clone(),
        executor: executor.clone(),
    })?;

    let mut cfg = ExecutorConfig::new(manager, name, cookie);
    cfg.slots = slots;
    // The library prints nothing; this program prints its statuses ("joined the manager …").
    cfg.status = StatusSink::new(|status| println!("{status}"));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let drain = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        run_executor(cfg, registry, drain).await
    })?;
    Ok(())
}
