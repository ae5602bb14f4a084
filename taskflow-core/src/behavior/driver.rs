//! The drivers a runtime calls to run a behavior: [`run_shard`] (steps from the checkpoint on),
//! [`run_rollback`] and [`split_shards`]. They turn every way a behavior can end — success,
//! error, panic, cancellation, timeout — into a [`ShardOutcome`], never into the caller's panic.

use std::any::Any;
use std::collections::BTreeSet;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use super::{
    BehaviorError, BoxFuture, CancelToken, Checkpoint, DynTaskBehavior, ShardContext, ShardPlan,
    ShardSink, ShardSpec, SplitContext,
};

/// How a shard attempt (or rollback) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardOutcome {
    /// Every step completed (or the rollback did).
    Succeeded,
    /// A step returned an error, panicked, timed out, or a checkpoint could not be recorded.
    /// The reason names the step.
    Failed {
        /// What went wrong, for the operator: `step 2 (confirm) failed: ...`.
        reason: String,
    },
    /// The runtime cancelled the shard (operator stop) before it completed.
    Cancelled,
}

/// Limits the drivers enforce on one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// The whole attempt (all remaining steps) fails after this long; `None`: no limit.
    /// Default `None`.
    pub timeout: Option<Duration>,
    /// After cancellation or timeout, how long a step may take to notice and return before it
    /// is dropped (abandoned). Default 10 s.
    pub cancel_grace: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { timeout: None, cancel_grace: Duration::from_secs(10) }
    }
}

impl RunOptions {
    /// Options with a timeout and the default grace.
    pub fn with_timeout(timeout: Duration) -> Self {
        RunOptions { timeout: Some(timeout), ..RunOptions::default() }
    }
}

/// Runs the steps of one shard after its last checkpoint (`spec.completed_steps`), in order.
///
/// Each completed step is reported through [`ShardSink::checkpoint`] and awaited before the next
/// starts; the last step's through [`ShardSink::last_checkpoint`] (no step follows it: the
/// runtime may record it together with the outcome returned next). A step that returns an error or panics fails the shard (the panic is caught here). On
/// `cancel`, or when `options.timeout` elapses, the context's cancellation fires; the running
/// step gets `options.cancel_grace` to return before it is dropped, and no further step starts.
/// A step that completes although cancellation was requested is still checkpointed.
pub async fn run_shard(
    behavior: &dyn DynTaskBehavior,
    spec: ShardSpec,
    cancel: CancelToken,
    sink: Arc<dyn ShardSink>,
    options: &RunOptions,
) -> ShardOutcome {
    let steps: Vec<String> =
        match catch_unwind(AssertUnwindSafe(|| behavior.steps().iter().map(|s| s.to_string()))) {
            Ok(steps) => steps.collect(),
            Err(panic) => {
                return failed(format!("listing steps panicked: {}", panic_message(&*panic)));
            }
        };
    if spec.completed_steps > steps.len() {
        return failed(format!(
            "checkpoint says {} steps are complete but the behavior has only {} ({})",
            spec.completed_steps,
            steps.len(),
            steps.join(", ")
        ));
    }
    let start = spec.completed_steps;
    let mut supervisor = Supervisor::new(cancel, options);
    let mut ctx = ShardContext::new(spec, supervisor.inner.clone(), sink);
    for (index, name) in steps.iter().enumerate().skip(start) {
        let label = format!("step {index} ({name})");
        if let Some(outcome) = supervisor.check_before(&label) {
            return outcome;
        }
        ctx.set_step(Some(index));
        ctx.sink().step_started(index, name);
        let finished = supervisor.run(behavior.run_step_boxed(&mut ctx, index)).await;
        match finished {
            Finished::Abandoned => return supervisor.abandoned(&ctx, &label),
            Finished::Panicked(message) => {
                return supervisor.ended_badly(
                    &ctx,
                    format!("{label} panicked: {message}"),
                    &label,
                );
            }
            Finished::Done(Err(error)) => {
                return supervisor.ended_badly(&ctx, format!("{label} failed: {error}"), &label);
            }
            Finished::Done(Ok(())) => {
                let checkpoint =
                    Checkpoint { step: index, name: name.clone(), completed_steps: index + 1 };
                let recorded = if index + 1 == steps.len() {
                    ctx.sink().last_checkpoint(checkpoint).await
                } else {
                    ctx.sink().checkpoint(checkpoint).await
                };
                if let Err(error) = recorded {
                    return failed(format!("{label} completed but {error}"));
                }
                ctx.set_completed_steps(index + 1);
                if let Some(stop) = supervisor.stop {
                    return supervisor.stopped(stop, &label);
                }
            }
        }
    }
    ShardOutcome::Succeeded
}

/// Rolls one shard back through [`TaskBehavior::rollback`](super::TaskBehavior::rollback),
/// with the same panic, cancellation and timeout handling as [`run_shard`].
pub async fn run_rollback(
    behavior: &dyn DynTaskBehavior,
    spec: ShardSpec,
    cancel: CancelToken,
    sink: Arc<dyn ShardSink>,
    options: &RunOptions,
) -> ShardOutcome {
    let label = "rollback";
    let mut supervisor = Supervisor::new(cancel, options);
    if let Some(outcome) = supervisor.check_before(label) {
        return outcome;
    }
    let mut ctx = ShardContext::new(spec, supervisor.inner.clone(), sink);
    match supervisor.run(behavior.rollback_boxed(&mut ctx)).await {
        Finished::Abandoned => supervisor.abandoned(&ctx, label),
        Finished::Panicked(message) => {
            supervisor.ended_badly(&ctx, format!("{label} panicked: {message}"), label)
        }
        Finished::Done(Err(error)) => {
            supervisor.ended_badly(&ctx, format!("{label} failed: {error}"), label)
        }
        Finished::Done(Ok(())) => ShardOutcome::Succeeded,
    }
}

/// Splits a task through [`TaskBehavior::split`](super::TaskBehavior::split), catching a panic
/// and rejecting duplicate shard keys.
pub fn split_shards(
    behavior: &dyn DynTaskBehavior,
    ctx: &SplitContext,
) -> Result<Vec<ShardPlan>, BehaviorError> {
    let plans = catch_unwind(AssertUnwindSafe(|| behavior.split(ctx))).map_err(|panic| {
        BehaviorError::new(format!(
            "split of task {} panicked: {}",
            ctx.task,
            panic_message(&*panic)
        ))
    })??;
    let mut seen = BTreeSet::new();
    for plan in &plans {
        if !seen.insert(&plan.key) {
            return Err(BehaviorError::new(format!(
                "split of task {} produced shard key `{}` twice; keys must be unique",
                ctx.task, plan.key
            )));
        }
    }
    Ok(plans)
}

fn failed(mut reason: String) -> ShardOutcome {
    // Capped at the source too, so a huge error never crosses the wire.
    super::context::truncate_in_place(&mut reason, super::LogLine::MAX_LEN);
    ShardOutcome::Failed { reason }
}

/// Why the driver asked a behavior to stop.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Cancelled,
    TimedOut(Duration),
}

enum Finished<T> {
    Done(T),
    Panicked(String),
    /// Cancellation or timeout fired and the future did not return within the grace.
    Abandoned,
}

/// Watches one attempt: the runtime's token, the deadline and the grace after a stop request.
struct Supervisor {
    outer: CancelToken,
    /// The token the behavior sees; fired on outer cancellation and on timeout.
    inner: CancelToken,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    grace: Duration,
    stop: Option<Stop>,
    grace_deadline: Option<Instant>,
}

impl Supervisor {
    fn new(outer: CancelToken, options: &RunOptions) -> Self {
        Supervisor {
            outer,
            inner: CancelToken::new(),
            timeout: options.timeout,
            deadline: options.timeout.map(|t| Instant::now() + t),
            grace: options.cancel_grace,
            stop: None,
            grace_deadline: None,
        }
    }

    /// Before starting `label`: has the attempt been cancelled or run out of time?
    fn check_before(&mut self, label: &str) -> Option<ShardOutcome> {
        if self.outer.is_cancelled() {
            self.stop = Some(Stop::Cancelled);
        } else if let (Some(deadline), Some(timeout)) = (self.deadline, self.timeout)
            && Instant::now() >= deadline
        {
            self.stop = Some(Stop::TimedOut(timeout));
        }
        self.stop.map(|stop| self.stopped(stop, &format!("before {label}")))
    }

    fn request_stop(&mut self, stop: Stop) {
        self.stop = Some(stop);
        self.grace_deadline = Some(Instant::now() + self.grace);
        self.inner.cancel();
    }

    async fn run<T>(&mut self, future: BoxFuture<'_, T>) -> Finished<T> {
        enum Event<T> {
            Finished(Result<T, String>),
            Cancelled,
            TimedOut,
            GraceOver,
        }
        let mut future = CatchUnwind(future);
        loop {
            let event = tokio::select! {
                biased;
                result = &mut future => Event::Finished(result),
                () = self.outer.cancelled(), if self.stop.is_none() => Event::Cancelled,
                () = sleep_until_some(self.deadline), if self.stop.is_none() => Event::TimedOut,
                () = sleep_until_some(self.grace_deadline), if self.stop.is_some() => {
                    Event::GraceOver
                }
            };
            match event {
                Event::Finished(Ok(value)) => return Finished::Done(value),
                Event::Finished(Err(panic)) => return Finished::Panicked(panic),
                Event::Cancelled => self.request_stop(Stop::Cancelled),
                Event::TimedOut => {
                    self.request_stop(Stop::TimedOut(self.timeout.unwrap_or_default()));
                }
                Event::GraceOver => return Finished::Abandoned,
            }
        }
    }

    fn stopped(&self, stop: Stop, label: &str) -> ShardOutcome {
        match stop {
            Stop::Cancelled => ShardOutcome::Cancelled,
            Stop::TimedOut(after) => failed(format!("timed out after {after:?} in {label}")),
        }
    }

    /// The behavior errored or panicked: a failure, unless it was asked to stop (then the
    /// error is most likely how it stopped, and the stop is the outcome).
    fn ended_badly(&self, ctx: &ShardContext, reason: String, label: &str) -> ShardOutcome {
        ctx.error(reason.clone());
        match self.stop {
            Some(stop) => self.stopped(stop, label),
            None => failed(reason),
        }
    }

    fn abandoned(&self, ctx: &ShardContext, label: &str) -> ShardOutcome {
        let note = format!("{label} did not stop within {:?} and was abandoned", self.grace);
        ctx.warn(note.clone());
        match self.stop {
            Some(Stop::TimedOut(after)) => {
                failed(format!("timed out after {after:?} in {label}; {note}"))
            }
            _ => ShardOutcome::Cancelled,
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Polls a future, turning a panic inside `poll` into `Err(message)`.
struct CatchUnwind<'a, T>(BoxFuture<'a, T>);

impl<T> Future for CatchUnwind<'_, T> {
    type Output = Result<T, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(move || future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic_message(&*panic))),
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
