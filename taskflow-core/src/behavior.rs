//! Task behaviors, the work a shard does: the one trait a task author implements —
//! [`TaskBehavior`] — plus the runtime-facing pieces that host it: the [`ShardSink`] a runtime
//! implements, the [`run_shard`] / [`run_rollback`] drivers, and the lazy [`BehaviorRegistry`].
//!
//! The runtime (manager, executors) is deliberately absent from this module: a behavior is
//! plugged into any runtime through [`ShardSpec`] (what to run), [`CancelToken`] (when to stop),
//! [`ShardSink`] (where checkpoints, progress and log lines go) and [`ShardOutcome`] (how it
//! ended). The built-in behaviors [`NoopBehavior`] (`noop`) and [`CommandBehavior`] (`command`)
//! let the shipped binary run flows without any Rust code.
//!
//! # Writing a behavior
//!
//! ```
//! use taskflow_core::behavior::{BehaviorError, ShardContext, TaskBehavior};
//!
//! /// Confirms the day's fund trades of one product.
//! #[derive(Default)]
//! struct ConfirmTrades;
//!
//! impl TaskBehavior for ConfirmTrades {
//!     fn steps(&self) -> &[&str] {
//!         &["load_applications", "validate", "confirm", "write_shares"]
//!     }
//!
//!     async fn run_step(&self, ctx: &mut ShardContext, step: usize) -> Result<(), BehaviorError> {
//!         // Writes downstream are keyed by the idempotency key, so a step re-run after a crash
//!         // between "step done" and "checkpoint recorded" is harmless.
//!         let key = ctx.idempotency_key().to_string();
//!         match step {
//!             0 => ctx.info(format!("loading applications for {key}")),
//!             1 => {
//!                 for done in 1..=3 {
//!                     if ctx.is_cancelled() {
//!                         return Err(BehaviorError::new("stopped while validating"));
//!                     }
//!                     ctx.progress(done, 3);
//!                 }
//!             }
//!             2 => ctx.info("confirmed"),
//!             _ => ctx.info("shares written"),
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let mut registry = taskflow_core::behavior::BehaviorRegistry::with_builtins();
//! registry.register("fund.confirm_trades", ConfirmTrades::default)?;
//! assert!(registry.names().contains(&"fund.confirm_trades"));
//! # Ok::<(), taskflow_core::behavior::RegistryError>(())
//! ```
//!
//! # Why `steps()` + `run_step(step)` rather than `ctx.step("name", ..)` inside one `run`
//!
//! Resuming after the last checkpoint must be impossible to get wrong. With a single `run`
//! method that wraps its work in `ctx.step(..)` calls, any code outside those calls re-runs on
//! every attempt, step names computed at run time can differ between attempts, and a forgotten
//! wrapper silently loses the checkpoint. Here the *driver* owns the loop: it reads the
//! checkpoint, calls `run_step` only for the steps after it, and records a checkpoint after each
//! completed step. A behavior cannot re-run a completed step, because it is never asked to.

mod command;
mod context;
mod driver;
mod noop;
mod registry;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::model::{BusinessDate, ScopeItem, ShardKey, TaskId};

pub use crate::model::IdempotencyKey;
pub use command::CommandBehavior;
pub use context::{
    CancelToken, Checkpoint, CheckpointError, LogLevel, LogLine, Progress, ShardContext,
    ShardLogger, ShardSink, ShardSpec,
};
pub use driver::{RunOptions, ShardOutcome, run_rollback, run_shard, split_shards};
pub use noop::NoopBehavior;
pub use registry::{BehaviorLease, BehaviorRegistry, RegistryError};

/// A boxed, sendable future borrowed for `'a`: the shape of [`DynTaskBehavior`]'s methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The one trait a task author implements: split a task into shards, run a shard step by step,
/// roll a shard back.
///
/// Implement it with plain `async fn`s (see the [module example](self)); every implementor is
/// automatically a [`DynTaskBehavior`], the dyn-compatible form that a [`BehaviorRegistry`]
/// holds as `Arc<dyn DynTaskBehavior>`.
///
/// One instance serves every shard of every task that names it, possibly concurrently, hence
/// `&self` and `Sync`: keep per-shard state in locals or in the [`ShardContext`].
pub trait TaskBehavior: Send + Sync + 'static {
    /// Splits a registered task's scope into shards.
    ///
    /// The default makes one shard per scope item, keyed by [`ScopeItem::key`]. Keys must be
    /// unique; an empty plan means the task has nothing to do on this date (it counts as done).
    fn split(&self, ctx: &SplitContext) -> Result<Vec<ShardPlan>, BehaviorError> {
        Ok(ctx.scope.iter().cloned().map(ShardPlan::per_item).collect())
    }

    /// The named steps every shard runs, in order (e.g. `load_applications`, `validate`,
    /// `confirm`, `write_shares`). The list must be the same on every call: the checkpoint is
    /// an index into it.
    fn steps(&self) -> &[&str];

    /// Runs step `step` (an index into [`steps`](Self::steps)) of one shard.
    ///
    /// Called by [`run_shard`] only for steps after the shard's last checkpoint, in order; an
    /// `Ok` is checkpointed before the next step starts. A step may still run twice (the process
    /// can die after the step finished but before its checkpoint was recorded), so its writes
    /// should be keyed by [`ShardContext::idempotency_key`].
    ///
    /// Cancellation is cooperative: watch [`ShardContext::cancelled`] or poll
    /// [`ShardContext::is_cancelled`] and return early (with any error) when asked to stop.
    fn run_step(
        &self,
        ctx: &mut ShardContext,
        step: usize,
    ) -> impl Future<Output = Result<(), BehaviorError>> + Send;

    /// Rolls one shard back (compensation), undoing the effects of its completed steps
    /// ([`ShardContext::completed_steps`] says how many). The default has nothing to undo.
    fn rollback(
        &self,
        _ctx: &mut ShardContext,
    ) -> impl Future<Output = Result<(), BehaviorError>> + Send {
        async { Ok(()) }
    }

    /// Whether the steps (or the rollback) block their thread: synchronous I/O, long
    /// computations without an `.await`, a blocking client library.
    ///
    /// The default, `false`, runs each shard attempt as a task on the runtime's worker threads,
    /// which is cheap but means a step that blocks stalls a worker. Return `true` and the
    /// runtime runs each attempt of this behavior on a thread of its own (tokio's blocking
    /// pool) instead. A step that blocks only in one place can rather wrap that call in
    /// `tokio::task::spawn_blocking` or `tokio::task::block_in_place`. Either way, a stop or
    /// timeout that the blocked code ignores is forced after the grace: the shard settles, and
    /// its slot stays occupied until the code returns.
    fn blocking(&self) -> bool {
        false
    }
}

/// The dyn-compatible form of [`TaskBehavior`], implemented for every `TaskBehavior`.
///
/// Runtimes hold behaviors as `Arc<dyn DynTaskBehavior>` (through a [`BehaviorLease`]) and call
/// them through [`run_shard`], [`run_rollback`] and [`split_shards`]; authors never implement
/// or call it directly.
pub trait DynTaskBehavior: Send + Sync + 'static {
    /// See [`TaskBehavior::split`].
    fn split(&self, ctx: &SplitContext) -> Result<Vec<ShardPlan>, BehaviorError>;
    /// See [`TaskBehavior::steps`].
    fn steps(&self) -> &[&str];
    /// See [`TaskBehavior::run_step`].
    fn run_step_boxed<'a>(
        &'a self,
        ctx: &'a mut ShardContext,
        step: usize,
    ) -> BoxFuture<'a, Result<(), BehaviorError>>;
    /// See [`TaskBehavior::rollback`].
    fn rollback_boxed<'a>(
        &'a self,
        ctx: &'a mut ShardContext,
    ) -> BoxFuture<'a, Result<(), BehaviorError>>;
    /// See [`TaskBehavior::blocking`].
    fn blocking(&self) -> bool;
}

impl<T: TaskBehavior> DynTaskBehavior for T {
    fn split(&self, ctx: &SplitContext) -> Result<Vec<ShardPlan>, BehaviorError> {
        TaskBehavior::split(self, ctx)
    }

    fn steps(&self) -> &[&str] {
        TaskBehavior::steps(self)
    }

    fn run_step_boxed<'a>(
        &'a self,
        ctx: &'a mut ShardContext,
        step: usize,
    ) -> BoxFuture<'a, Result<(), BehaviorError>> {
        Box::pin(TaskBehavior::run_step(self, ctx, step))
    }

    fn rollback_boxed<'a>(
        &'a self,
        ctx: &'a mut ShardContext,
    ) -> BoxFuture<'a, Result<(), BehaviorError>> {
        Box::pin(TaskBehavior::rollback(self, ctx))
    }

    fn blocking(&self) -> bool {
        TaskBehavior::blocking(self)
    }
}

/// What [`TaskBehavior::split`] sees: one registered task on one business date.
#[derive(Debug, Clone)]
pub struct SplitContext {
    /// The task being split.
    pub task: TaskId,
    /// The business date (T 日) of the registration.
    pub date: BusinessDate,
    /// The registered scope: the products / distributors / pairs the task covers on `date`.
    pub scope: Vec<ScopeItem>,
    /// The calendar dates the registration covers: `[date]`, or `date` plus the following
    /// non-business days when the task covers them (e.g. weekend income accrual).
    pub covered_dates: Vec<BusinessDate>,
    /// The task's parameters from the flow file.
    pub params: Params,
}

/// One shard of a split: its key and the scope items it works on.
///
/// The plan carries the items, not only the key, so that a behavior-defined grouping (say, all
/// products of one distributor in one shard) reaches the shard as [`ShardContext::scope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    /// The shard's key, unique within the task and date.
    pub key: ShardKey,
    /// The scope items this shard covers.
    pub scope: Vec<ScopeItem>,
}

impl ShardPlan {
    /// A shard for exactly one scope item, keyed by [`ScopeItem::key`].
    pub fn per_item(item: ScopeItem) -> Self {
        ShardPlan { key: item.key(), scope: vec![item] }
    }

    /// A shard with an explicit key and items.
    pub fn new(key: ShardKey, scope: Vec<ScopeItem>) -> Self {
        ShardPlan { key, scope }
    }
}

/// A task's free-form parameters from the flow file (`[task.params]`), as string pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Params::default()
    }

    /// Adds or replaces one parameter (builder style, handy in tests).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The value of `key`, or an error naming the missing parameter.
    pub fn require(&self, key: &str) -> Result<&str, BehaviorError> {
        self.get(key).ok_or_else(|| BehaviorError::new(format!("missing parameter `{key}`")))
    }

    /// Every `(rest, value)` whose key is `prefix` + `rest`, e.g. `env.` → `("PATH", "/bin")`.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0.iter().filter_map(move |(k, v)| Some((k.strip_prefix(prefix)?, v.as_str())))
    }

    /// All parameters, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl From<BTreeMap<String, String>> for Params {
    fn from(map: BTreeMap<String, String>) -> Self {
        Params(map)
    }
}

/// Why a behavior's step, split or rollback failed: a message plus the error it came from.
///
/// Any `std::error::Error` converts into it, so `?` works on I/O, parse and database errors
/// alike (like `anyhow::Error`, and for the same reason it does not itself implement
/// `std::error::Error`).
pub struct BehaviorError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl BehaviorError {
    /// An error with a message and no underlying cause.
    pub fn new(message: impl Into<String>) -> Self {
        BehaviorError { message: message.into(), source: None }
    }

    /// Adds context in front of the message: `"{context}: {message}"`.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The underlying error, if the error came from one.
    pub fn source(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for BehaviorError {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut cause = error.source();
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        BehaviorError { message, source: Some(Box::new(error)) }
    }
}

impl fmt::Display for BehaviorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for BehaviorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BehaviorError").field("message", &self.message).finish_non_exhaustive()
    }
}
