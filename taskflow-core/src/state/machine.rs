//! The shard state machine: every legal `(status, event) → status` in one table.
//!
//! Decisions that are not obvious from the status names, made here once:
//! - **Skipped is terminal.** A skip is the operator saying "this shard need not run today";
//!   it did no work that could be rolled back, and un-skipping would silently un-finish a task
//!   whose successors may already have run.
//! - **Retry leaves `rollback failed` alone.** After a failed rollback the shard's data is in an
//!   unknown, half-undone state; running the work again on top of it could apply it twice. The
//!   operator retries the *rollback* (`rollback` is legal from `rollback failed`) and may retry
//!   the work once it is rolled back.
//! - **A finishing shard wins over a stop.** A shard that succeeds or fails while `stopping`
//!   takes that outcome: the work ran to its end, so the stop came too late.
//! - **A lost executor** (`requeue`) puts a running shard back to `pending` for reassignment, and
//!   completes a stop in progress (`stopping → stopped`), since nothing runs any more.
//! - **A rolling-back shard** only leaves by the rollback's outcome; a lost executor during a
//!   rollback is reported as `rollback failed` by the runtime, and the operator retries it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The status of one shard. Stored as its `u8` discriminant in snapshots: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum ShardStatus {
    /// Registered for the day; waits for its dependencies and trigger (or an operator).
    Registered = 0,
    /// Ready to run; waits for a free executor slot.
    Pending = 1,
    /// Running on an executor.
    Running = 2,
    /// Finished successfully.
    Succeeded = 3,
    /// Finished with an error; blocks successors until retried, skipped or rolled back.
    Failed = 4,
    /// Skipped by an operator; counts as done. Terminal.
    Skipped = 5,
    /// An operator asked a running shard to stop; the executor has not confirmed yet.
    Stopping = 6,
    /// Stopped before finishing; may be retried, skipped or rolled back.
    Stopped = 7,
    /// Its rollback is running on an executor.
    RollingBack = 8,
    /// Its effects were undone; its generation was bumped. May be retried or skipped.
    RolledBack = 9,
    /// Its rollback failed; only another rollback may follow.
    RollbackFailed = 10,
    /// Its outcome is unknown (a process died while it ran): confirm, mark failed or roll back.
    Unconfirmed = 11,
}

impl ShardStatus {
    /// Every status, in discriminant order (`ALL[s as usize] == s`).
    pub const ALL: [ShardStatus; 12] = [
        ShardStatus::Registered,
        ShardStatus::Pending,
        ShardStatus::Running,
        ShardStatus::Succeeded,
        ShardStatus::Failed,
        ShardStatus::Skipped,
        ShardStatus::Stopping,
        ShardStatus::Stopped,
        ShardStatus::RollingBack,
        ShardStatus::RolledBack,
        ShardStatus::RollbackFailed,
        ShardStatus::Unconfirmed,
    ];

    /// The number of statuses.
    pub const COUNT: usize = 12;

    /// The status with this discriminant, if any (decoding persisted bytes).
    pub fn from_u8(b: u8) -> Option<Self> {
        Self::ALL.get(b as usize).copied()
    }

    /// Whether the shard counts as done for the task's successors.
    pub fn is_done(self) -> bool {
        matches!(self, ShardStatus::Succeeded | ShardStatus::Skipped)
    }

    /// Whether an executor is working on the shard (run, stop or rollback in progress).
    pub fn is_active(self) -> bool {
        matches!(self, ShardStatus::Running | ShardStatus::Stopping | ShardStatus::RollingBack)
    }

    /// The lowercase name used in messages and the console: `rolling back`.
    pub fn name(self) -> &'static str {
        match self {
            ShardStatus::Registered => "registered",
            ShardStatus::Pending => "pending",
            ShardStatus::Running => "running",
            ShardStatus::Succeeded => "succeeded",
            ShardStatus::Failed => "failed",
            ShardStatus::Skipped => "skipped",
            ShardStatus::Stopping => "stopping",
            ShardStatus::Stopped => "stopped",
            ShardStatus::RollingBack => "rolling back",
            ShardStatus::RolledBack => "rolled back",
            ShardStatus::RollbackFailed => "rollback failed",
            ShardStatus::Unconfirmed => "unconfirmed",
        }
    }
}

impl fmt::Display for ShardStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An input to the shard state machine. Persisted inside [`super::EventKind::Shard`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardEvent {
    /// Dependencies are done and the trigger fired, or an operator pressed execute:
    /// `registered → pending`.
    Ready,
    /// Assigned to an executor: `pending → running`. `attempt` must exceed the shard's last
    /// attempt (1 for the first run), so a replayed dispatch is rejected.
    Dispatch {
        /// The attempt number, counted over the whole day (retries and reassignments included).
        attempt: u32,
        /// The executor's name.
        executor: String,
        /// The manager's epoch when it assigned the shard (0: standalone, no epochs). A result
        /// is accepted iff it carries this epoch and attempt.
        #[serde(default, skip_serializing_if = "is_zero")]
        epoch: u64,
        /// The executor process's random instance id (0: in-process). After a manager
        /// restart, the same live process re-joining without the shard proves it never ran.
        #[serde(default, skip_serializing_if = "is_zero")]
        instance: u64,
    },
    /// The executor reports success: `running | stopping → succeeded`.
    Succeed,
    /// The executor reports failure: `running | stopping → failed`.
    Fail {
        /// The error, as the behavior reported it.
        reason: String,
    },
    /// An operator stops the shard: `registered | pending → stopped`, `running → stopping`.
    Stop,
    /// The executor confirms the stop: `stopping → stopped`.
    StopAcknowledged,
    /// An operator skips the shard: it counts as done.
    Skip,
    /// Run again (operator or automatic retry): `failed | stopped | rolled back → pending`.
    /// The shard resumes after its last checkpoint of the current generation.
    Retry,
    /// Undo the shard's effects: `succeeded | failed | stopped | unconfirmed | rollback failed
    /// → rolling back`.
    Rollback,
    /// The rollback finished: `rolling back → rolled back`; bumps the generation and clears the
    /// checkpoint.
    RollbackSucceeded,
    /// The rollback failed: `rolling back → rollback failed`.
    RollbackFailed {
        /// The error, as the behavior reported it.
        reason: String,
    },
    /// Its executor was lost: `running → pending` (reassign), `stopping → stopped`.
    Requeue,
    /// Its outcome is unknown after a process died: `running | stopping → unconfirmed`.
    MarkUnconfirmed,
    /// An operator confirms the work was done: `unconfirmed → succeeded`.
    Confirm,
    /// An operator declares the work failed: `unconfirmed → failed`.
    MarkFailed,
    /// The unconfirmed policy `auto-rollback`: `unconfirmed → rolling back`, and once rolled
    /// back the shard is retried. The intent is part of the event, so a manager crash during
    /// the rollback does not leave the shard rolled back and the day stalled.
    RollbackThenRetry,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The kind of a [`ShardEvent`], without its data: the table's column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)] // each mirrors the ShardEvent variant of the same name
pub enum ShardEventKind {
    Ready,
    Dispatch,
    Succeed,
    Fail,
    Stop,
    StopAcknowledged,
    Skip,
    Retry,
    Rollback,
    RollbackSucceeded,
    RollbackFailed,
    Requeue,
    MarkUnconfirmed,
    Confirm,
    MarkFailed,
    RollbackThenRetry,
}

impl ShardEventKind {
    /// Every kind.
    pub const ALL: [ShardEventKind; 16] = [
        ShardEventKind::Ready,
        ShardEventKind::Dispatch,
        ShardEventKind::Succeed,
        ShardEventKind::Fail,
        ShardEventKind::Stop,
        ShardEventKind::StopAcknowledged,
        ShardEventKind::Skip,
        ShardEventKind::Retry,
        ShardEventKind::Rollback,
        ShardEventKind::RollbackSucceeded,
        ShardEventKind::RollbackFailed,
        ShardEventKind::Requeue,
        ShardEventKind::MarkUnconfirmed,
        ShardEventKind::Confirm,
        ShardEventKind::MarkFailed,
        ShardEventKind::RollbackThenRetry,
    ];

    /// The verb for "cannot {verb} a shard that is {status}".
    pub fn verb(self) -> &'static str {
        match self {
            ShardEventKind::Ready => "ready",
            ShardEventKind::Dispatch => "dispatch",
            ShardEventKind::Succeed => "complete",
            ShardEventKind::Fail => "fail",
            ShardEventKind::Stop => "stop",
            ShardEventKind::StopAcknowledged => "acknowledge the stop of",
            ShardEventKind::Skip => "skip",
            ShardEventKind::Retry => "retry",
            ShardEventKind::Rollback => "roll back",
            ShardEventKind::RollbackSucceeded => "finish the rollback of",
            ShardEventKind::RollbackFailed => "fail the rollback of",
            ShardEventKind::Requeue => "requeue",
            ShardEventKind::MarkUnconfirmed => "mark unconfirmed",
            ShardEventKind::Confirm => "confirm",
            ShardEventKind::MarkFailed => "mark failed",
            ShardEventKind::RollbackThenRetry => "roll back and retry",
        }
    }
}

impl ShardEvent {
    /// The event's kind.
    pub fn kind(&self) -> ShardEventKind {
        match self {
            ShardEvent::Ready => ShardEventKind::Ready,
            ShardEvent::Dispatch { .. } => ShardEventKind::Dispatch,
            ShardEvent::Succeed => ShardEventKind::Succeed,
            ShardEvent::Fail { .. } => ShardEventKind::Fail,
            ShardEvent::Stop => ShardEventKind::Stop,
            ShardEvent::StopAcknowledged => ShardEventKind::StopAcknowledged,
            ShardEvent::Skip => ShardEventKind::Skip,
            ShardEvent::Retry => ShardEventKind::Retry,
            ShardEvent::Rollback => ShardEventKind::Rollback,
            ShardEvent::RollbackSucceeded => ShardEventKind::RollbackSucceeded,
            ShardEvent::RollbackFailed { .. } => ShardEventKind::RollbackFailed,
            ShardEvent::Requeue => ShardEventKind::Requeue,
            ShardEvent::MarkUnconfirmed => ShardEventKind::MarkUnconfirmed,
            ShardEvent::Confirm => ShardEventKind::Confirm,
            ShardEvent::MarkFailed => ShardEventKind::MarkFailed,
            ShardEvent::RollbackThenRetry => ShardEventKind::RollbackThenRetry,
        }
    }
}

/// An event that the state machine does not allow in the shard's current status.
///
/// Its message is written for an operator (it becomes an HTTP 409 reason):
/// `cannot retry a shard that is running`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a shard that is {from}", event.verb())]
pub struct IllegalTransition {
    /// The shard's status.
    pub from: ShardStatus,
    /// The refused event.
    pub event: ShardEventKind,
}

use ShardEventKind as E;
use ShardStatus as S;

/// THE transition table: every legal `(from, event) → to`. Anything absent is illegal.
pub const TRANSITIONS: &[(ShardStatus, ShardEventKind, ShardStatus)] = &[
    (S::Registered, E::Ready, S::Pending),
    (S::Registered, E::Stop, S::Stopped),
    (S::Registered, E::Skip, S::Skipped),
    (S::Pending, E::Dispatch, S::Running),
    (S::Pending, E::Stop, S::Stopped),
    (S::Pending, E::Skip, S::Skipped),
    (S::Running, E::Succeed, S::Succeeded),
    (S::Running, E::Fail, S::Failed),
    (S::Running, E::Stop, S::Stopping),
    (S::Running, E::Requeue, S::Pending),
    (S::Running, E::MarkUnconfirmed, S::Unconfirmed),
    (S::Stopping, E::StopAcknowledged, S::Stopped),
    (S::Stopping, E::Succeed, S::Succeeded),
    (S::Stopping, E::Fail, S::Failed),
    (S::Stopping, E::Requeue, S::Stopped),
    (S::Stopping, E::MarkUnconfirmed, S::Unconfirmed),
    (S::Succeeded, E::Rollback, S::RollingBack),
    (S::Failed, E::Retry, S::Pending),
    (S::Failed, E::Skip, S::Skipped),
    (S::Failed, E::Rollback, S::RollingBack),
    (S::Stopped, E::Retry, S::Pending),
    (S::Stopped, E::Skip, S::Skipped),
    (S::Stopped, E::Rollback, S::RollingBack),
    (S::RollingBack, E::RollbackSucceeded, S::RolledBack),
    (S::RollingBack, E::RollbackFailed, S::RollbackFailed),
    (S::RolledBack, E::Retry, S::Pending),
    (S::RolledBack, E::Skip, S::Skipped),
    (S::RollbackFailed, E::Rollback, S::RollingBack),
    (S::Unconfirmed, E::Confirm, S::Succeeded),
    (S::Unconfirmed, E::MarkFailed, S::Failed),
    (S::Unconfirmed, E::Rollback, S::RollingBack),
    (S::Unconfirmed, E::RollbackThenRetry, S::RollingBack),
];

/// The table as a dense matrix for O(1) lookup on the hot path; built from [`TRANSITIONS`] at
/// compile time, so the two cannot disagree. `NONE` marks an illegal cell.
const NONE: u8 = u8::MAX;
const MATRIX: [[u8; ShardEventKind::ALL.len()]; ShardStatus::COUNT] = {
    let mut m = [[NONE; ShardEventKind::ALL.len()]; ShardStatus::COUNT];
    let mut i = 0;
    while i < TRANSITIONS.len() {
        let (from, event, to) = TRANSITIONS[i];
        m[from as usize][event as usize] = to as u8;
        i += 1;
    }
    m
};

/// The status after `event`, or why the event is illegal in `from`.
pub fn transition(
    from: ShardStatus,
    event: ShardEventKind,
) -> Result<ShardStatus, IllegalTransition> {
    match ShardStatus::from_u8(MATRIX[from as usize][event as usize]) {
        Some(to) => Ok(to),
        None => Err(IllegalTransition { from, event }),
    }
}

/// The events legal in `from`, in table order (the console enables buttons from this).
pub fn allowed_events(from: ShardStatus) -> Vec<ShardEventKind> {
    TRANSITIONS.iter().filter(|(f, _, _)| *f == from).map(|(_, e, _)| *e).collect()
}

/// What the runtime does with a shard that became [`ShardStatus::Unconfirmed`].
///
/// The default rule is that work not finally confirmed has its changes discarded (its shard is
/// rolled back and run again); some deployments prefer an operator to look first. The state module only provides the hook: the
/// runtime consults the policy and, for `AutoRollback`, submits the returned event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnconfirmedPolicy {
    /// Leave it for an operator to confirm, mark failed or roll back (the default).
    #[default]
    Hold,
    /// Roll it back automatically, then run it again.
    AutoRollback,
}

impl UnconfirmedPolicy {
    /// The event the runtime should submit for a newly unconfirmed shard, if any.
    pub fn on_unconfirmed(self) -> Option<ShardEvent> {
        match self {
            UnconfirmedPolicy::Hold => None,
            UnconfirmedPolicy::AutoRollback => Some(ShardEvent::RollbackThenRetry),
        }
    }
}
