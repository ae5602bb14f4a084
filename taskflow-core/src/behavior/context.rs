//! What a running shard sees ([`ShardContext`]) and what the runtime supplies to run one
//! ([`ShardSpec`], [`CancelToken`], [`ShardSink`]).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::{BoxFuture, Params};
use crate::model::{BusinessDate, IdempotencyKey, ScopeItem, ShardKey, TaskId};

/// Everything the runtime knows about one shard attempt: the input of [`run_shard`] and
/// [`run_rollback`].
///
/// [`run_shard`]: super::run_shard
/// [`run_rollback`]: super::run_rollback
#[derive(Debug, Clone)]
pub struct ShardSpec {
    /// The task the shard belongs to.
    pub task: TaskId,
    /// The business date (T 日).
    pub date: BusinessDate,
    /// The shard's key within the task and date.
    pub shard: ShardKey,
    /// The scope items the shard covers (from its [`ShardPlan`](super::ShardPlan)).
    pub scope: Vec<ScopeItem>,
    /// The calendar dates the registration covers (see [`SplitContext`](super::SplitContext)).
    pub covered_dates: Vec<BusinessDate>,
    /// The task's parameters from the flow file.
    pub params: Params,
    /// The shard's generation: 0 at first, bumped by every rollback so the re-run after a
    /// rollback gets a fresh idempotency key.
    pub generation: u32,
    /// The attempt number within the generation, starting at 1.
    pub attempt: u32,
    /// How many steps are already checkpointed: the driver starts at this index.
    pub completed_steps: usize,
}

impl ShardSpec {
    /// A first attempt (generation 0, attempt 1, nothing checkpointed) of shard `shard`, with
    /// the date as the only covered date and no parameters.
    pub fn new(task: TaskId, date: BusinessDate, shard: ShardKey, scope: Vec<ScopeItem>) -> Self {
        ShardSpec {
            task,
            date,
            shard,
            scope,
            covered_dates: vec![date],
            params: Params::default(),
            generation: 0,
            attempt: 1,
            completed_steps: 0,
        }
    }

    /// The idempotency key of this shard generation.
    pub fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey {
            date: self.date,
            task: self.task.clone(),
            shard: self.shard.clone(),
            generation: self.generation,
        }
    }
}

/// A cancellation signal shared by the runtime (which cancels) and a running shard (which
/// watches). Clones share the signal; once cancelled it stays cancelled.
#[derive(Debug, Clone)]
pub struct CancelToken {
    tx: Arc<watch::Sender<bool>>,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        CancelToken { tx: Arc::new(watch::Sender::new(false)) }
    }

    /// Asks everyone watching this token to stop. Idempotent.
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the token is cancelled (at once if it already is).
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot see a closed channel.
        let _ = rx.wait_for(|cancelled| *cancelled).await;
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        CancelToken::new()
    }
}

/// The severity of a shard log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogLevel {
    /// Fine detail.
    Debug,
    /// Normal progress messages (a command's stdout).
    Info,
    /// Something odd that did not stop the shard (a command's stderr).
    Warn,
    /// Something failed.
    Error,
}

/// One line of a shard's log, as delivered to the [`ShardSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the line was logged.
    pub at: DateTime<Utc>,
    /// Its severity.
    pub level: LogLevel,
    /// The step running when it was logged, if any.
    pub step: Option<usize>,
    /// The text, at most [`LogLine::MAX_LEN`] bytes (longer messages are truncated and end
    /// with `…`).
    pub message: String,
}

impl LogLine {
    /// The longest message kept, in bytes.
    pub const MAX_LEN: usize = 4096;
}

/// Progress of the running step: `done` of `total` units (rows, files, products).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The step the progress is about.
    pub step: usize,
    /// Units done.
    pub done: u64,
    /// Units in all.
    pub total: u64,
}

/// A completed step, reported through [`ShardSink::checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The index of the step that completed.
    pub step: usize,
    /// Its name.
    pub name: String,
    /// How many steps are now complete (`step + 1`): the resume point of a later attempt.
    pub completed_steps: usize,
}

/// The runtime could not record a checkpoint; the driver fails the shard with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint not recorded: {0}")]
pub struct CheckpointError(pub String);

/// Where a running shard's checkpoints, progress and log lines go; implemented by the runtime,
/// one sink per shard attempt.
///
/// `progress` and `log` are called on the shard's task and must not block: forward them to an
/// actor or a bounded channel (dropping lines under pressure is acceptable). `checkpoint` is
/// awaited before the next step starts, so a runtime that wants "never re-run a completed
/// step, even after a crash" can wait there until the checkpoint is durable. The last step's
/// checkpoint goes to [`last_checkpoint`](Self::last_checkpoint) instead: no step follows it,
/// so a runtime may record it together with the shard's outcome rather than wait for it.
pub trait ShardSink: Send + Sync + 'static {
    /// Step `step` (named `name`) is about to run.
    fn step_started(&self, step: usize, name: &str) {
        let _ = (step, name);
    }

    /// A step completed; record that `checkpoint.completed_steps` steps are done.
    fn checkpoint(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<(), CheckpointError>>;

    /// The shard's last step completed: record that every step is done. No step follows, so
    /// nothing depends on this checkpoint being durable before the driver returns; a runtime
    /// may keep it and record it with the shard's outcome (one durable write instead of two).
    /// The default records it through [`checkpoint`](Self::checkpoint) like any other.
    fn last_checkpoint(
        &self,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        self.checkpoint(checkpoint)
    }

    /// The running step reported progress.
    fn progress(&self, progress: Progress);

    /// The shard logged a line.
    fn log(&self, line: LogLine);
}

/// A cheap, cloneable handle that writes into a shard's log; usable from spawned tasks that
/// cannot borrow the [`ShardContext`].
#[derive(Clone)]
pub struct ShardLogger {
    sink: Arc<dyn ShardSink>,
    step: Option<usize>,
}

impl ShardLogger {
    /// Logs one line at `level`, truncated to [`LogLine::MAX_LEN`] bytes.
    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        let mut message = message.into();
        truncate_in_place(&mut message, LogLine::MAX_LEN);
        self.sink.log(LogLine { at: Utc::now(), level, step: self.step, message });
    }
}

impl fmt::Debug for ShardLogger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardLogger").field("step", &self.step).finish_non_exhaustive()
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub(crate) fn truncate_in_place(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
}

/// What a running shard step sees: its identity, inputs, cancellation, progress and log.
pub struct ShardContext {
    spec: ShardSpec,
    step: Option<usize>,
    cancel: CancelToken,
    sink: Arc<dyn ShardSink>,
}

impl ShardContext {
    /// A context for `spec`, cancelled through `cancel`, reporting to `sink`. The drivers build
    /// it; tests of a single step may too.
    pub fn new(spec: ShardSpec, cancel: CancelToken, sink: Arc<dyn ShardSink>) -> Self {
        ShardContext { spec, step: None, cancel, sink }
    }

    /// The task.
    pub fn task(&self) -> &TaskId {
        &self.spec.task
    }

    /// The business date (T 日).
    pub fn date(&self) -> BusinessDate {
        self.spec.date
    }

    /// The shard's key.
    pub fn shard(&self) -> &ShardKey {
        &self.spec.shard
    }

    /// The scope items this shard covers.
    pub fn scope(&self) -> &[ScopeItem] {
        &self.spec.scope
    }

    /// The calendar dates the registration covers.
    pub fn covered_dates(&self) -> &[BusinessDate] {
        &self.spec.covered_dates
    }

    /// The task's parameters.
    pub fn params(&self) -> &Params {
        &self.spec.params
    }

    /// The shard's generation (bumped by each rollback).
    pub fn generation(&self) -> u32 {
        self.spec.generation
    }

    /// The attempt number within the generation, from 1.
    pub fn attempt(&self) -> u32 {
        self.spec.attempt
    }

    /// How many steps are checkpointed as complete (during a step: the steps before it).
    pub fn completed_steps(&self) -> usize {
        self.spec.completed_steps
    }

    /// The step running now, if any (`None` during a rollback).
    pub fn current_step(&self) -> Option<usize> {
        self.step
    }

    /// The key to make this shard's writes exactly-once: `date/task/shard/gN`.
    pub fn idempotency_key(&self) -> IdempotencyKey {
        self.spec.idempotency_key()
    }

    /// Whether the shard has been asked to stop (operator stop or timeout).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves once the shard is asked to stop; use it in `tokio::select!` around long waits.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// A clone of the shard's cancellation token, for spawned helpers.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Reports progress of the current step: `done` of `total` units.
    pub fn progress(&self, done: u64, total: u64) {
        self.sink.progress(Progress { step: self.step.unwrap_or(0), done, total });
    }

    /// Logs a line into the shard's log (not stdout).
    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.logger().log(level, message);
    }

    /// Logs at [`LogLevel::Debug`].
    pub fn debug(&self, message: impl Into<String>) {
        self.log(LogLevel::Debug, message);
    }

    /// Logs at [`LogLevel::Info`].
    pub fn info(&self, message: impl Into<String>) {
        self.log(LogLevel::Info, message);
    }

    /// Logs at [`LogLevel::Warn`].
    pub fn warn(&self, message: impl Into<String>) {
        self.log(LogLevel::Warn, message);
    }

    /// Logs at [`LogLevel::Error`].
    pub fn error(&self, message: impl Into<String>) {
        self.log(LogLevel::Error, message);
    }

    /// A cloneable logger for this shard and step, for spawned helpers.
    pub fn logger(&self) -> ShardLogger {
        ShardLogger { sink: Arc::clone(&self.sink), step: self.step }
    }

    pub(crate) fn set_step(&mut self, step: Option<usize>) {
        self.step = step;
    }

    pub(crate) fn set_completed_steps(&mut self, completed: usize) {
        self.spec.completed_steps = completed;
    }

    pub(crate) fn sink(&self) -> &Arc<dyn ShardSink> {
        &self.sink
    }
}

impl fmt::Debug for ShardContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardContext")
            .field("spec", &self.spec)
            .field("step", &self.step)
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}
