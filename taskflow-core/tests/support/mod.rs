//! Shared pieces of the runtime tests: small flows built from strings, a scriptable behavior
//! that writes to a ledger, and bounded waits.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskflow_core::behavior::{
    BehaviorError, BehaviorRegistry, ShardContext, ShardPlan, SplitContext, TaskBehavior,
};
use taskflow_core::flow::Flow;
use taskflow_core::model::BusinessDate;
use taskflow_core::model::TaskId;
use taskflow_core::state::{Command, OperatorAction, Target};
use taskflow_core::{DayOutcome, ManagerHandle, Runtime, RuntimeOptions};

/// Every test is bounded by this.
pub const WAIT: Duration = Duration::from_secs(30);

pub use taskflow_core::testing::{CALENDAR, DISTRIBUTORS, PRODUCTS};

/// A business day of the calendar above (a Wednesday).
pub fn date() -> BusinessDate {
    BusinessDate::from_ymd(2026, 9, 30).unwrap()
}

/// A flow from `[[task]]` tables (the `[flow]` header is added).
pub fn flow(tasks: &str) -> Arc<Flow> {
    let text = format!("[flow]\nname = \"test\"\ntime_zone = \"Asia/Shanghai\"\n\n{tasks}");
    Arc::new(
        Flow::from_strs(&text, PRODUCTS, DISTRIBUTORS, CALENDAR).unwrap_or_else(|e| panic!("{e}")),
    )
}

/// What the scripted behavior did, in order: `run <key> step <i> attempt <a>`,
/// `rollback <key>`.
#[derive(Clone, Default)]
pub struct Ledger(Arc<Mutex<Vec<String>>>);

impl Ledger {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    pub fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }
}

/// A behavior driven by task params:
/// - `fail_step` / `fail_attempts`: step N fails on attempts ≤ K;
/// - `sleep_ms`: each step sleeps (cooperatively);
/// - `block_ms`: each step blocks its thread, ignoring cancellation (inside `block_in_place`
///   as async code must, or plainly when registered as `scripted.blocking`, which declares
///   [`TaskBehavior::blocking`] and so runs on a thread of its own);
/// - `wait_cancel`: each step waits until cancelled, then errors;
/// - `panic_step`: step N panics;
/// - `split_empty` (with `shard_by = "behavior"`): the split finds nothing to do.
pub struct Scripted {
    pub ledger: Ledger,
    /// Declares [`TaskBehavior::blocking`].
    pub blocking: bool,
}

impl TaskBehavior for Scripted {
    fn steps(&self) -> &[&str] {
        &["load", "validate", "confirm"]
    }

    fn split(&self, ctx: &SplitContext) -> Result<Vec<ShardPlan>, BehaviorError> {
        if ctx.params.get("split_empty").is_some() {
            return Ok(Vec::new());
        }
        Ok(ctx.scope.iter().cloned().map(ShardPlan::per_item).collect())
    }

    async fn run_step(&self, ctx: &mut ShardContext, step: usize) -> Result<(), BehaviorError> {
        let p = ctx.params().clone();
        let num = |k: &str| p.get(k).and_then(|v| v.parse::<u64>().ok());
        self.ledger.push(format!(
            "run {} step {step} attempt {}",
            ctx.idempotency_key(),
            ctx.attempt()
        ));
        if num("panic_step") == Some(step as u64) {
            panic!("scripted panic at step {step}");
        }
        if let Some(ms) = num("sleep_ms") {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(ms) = num("block_ms") {
            let block = || std::thread::sleep(Duration::from_millis(ms));
            if self.blocking { block() } else { tokio::task::block_in_place(block) }
        }
        if p.get("wait_cancel").is_some() {
            ctx.cancelled().await;
            return Err(BehaviorError::new("cancelled"));
        }
        if num("fail_step") == Some(step as u64)
            && u64::from(ctx.attempt()) <= num("fail_attempts").unwrap_or(u64::MAX)
        {
            return Err(BehaviorError::new(format!("scripted failure at step {step}")));
        }
        Ok(())
    }

    async fn rollback(&self, ctx: &mut ShardContext) -> Result<(), BehaviorError> {
        self.ledger.push(format!("rollback {}", ctx.idempotency_key()));
        Ok(())
    }

    fn blocking(&self) -> bool {
        self.blocking
    }
}

/// A registry with the built-ins, and `scripted` and `scripted.blocking` writing to `ledger`.
pub fn registry(ledger: &Ledger) -> BehaviorRegistry {
    let mut r = BehaviorRegistry::with_builtins();
    let l = ledger.clone();
    r.register("scripted", move || Scripted { ledger: l.clone(), blocking: false }).unwrap();
    let l = ledger.clone();
    r.register("scripted.blocking", move || Scripted { ledger: l.clone(), blocking: true })
        .unwrap();
    r
}

pub async fn start(
    flow: Arc<Flow>,
    ledger: &Ledger,
    opts: RuntimeOptions,
) -> (Runtime, ManagerHandle) {
    Runtime::start(flow, registry(ledger), opts).await.expect("runtime starts")
}

pub fn opts(dir: &tempfile::TempDir) -> RuntimeOptions {
    RuntimeOptions::for_test(dir.path(), date())
}

pub async fn wait_done(m: &ManagerHandle) -> DayOutcome {
    m.wait_until_done(WAIT).await.expect("the day settles in time")
}

/// Polls `check` until it holds, at most [`WAIT`].
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn cmd(action: OperatorAction, task: &str, shard: Option<u32>) -> Command {
    Command {
        actor: "alice".into(),
        from: "test".into(),
        reason: "test".into(),
        action,
        target: Target { task: TaskId::new(task), shard },
    }
}
