//! A task's status, derived from the counts of its shards per status (one source of truth).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::machine::ShardStatus;

/// The status of a task on a day, derived by [`TaskStatus::derive`]; never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Not registered for the day yet.
    Unregistered,
    /// Registered with an empty scope (a holiday, no qualifying product): nothing to run, and
    /// it **counts as done** for its successors. A distinct variant rather than `Skipped` with
    /// a flag, so that the console and `--until-done` can tell "an operator skipped it" from
    /// "it did not apply today" without a second field.
    NotApplicable,
    /// Registered; waiting for its dependencies, trigger or an operator.
    Registered,
    /// Ready, waiting for executor slots; no shard has made progress yet.
    Pending,
    /// Work in progress.
    Running,
    /// Every shard succeeded or was skipped, at least one succeeded. Done.
    Succeeded,
    /// Some shard failed (or its rollback failed) and nothing is in progress.
    Failed,
    /// Every shard was skipped. Done.
    Skipped,
    /// A stop is in progress.
    Stopping,
    /// Some shard was stopped and nothing is in progress or failed.
    Stopped,
    /// A rollback is in progress.
    RollingBack,
    /// Some shard was rolled back and nothing is in progress, failed or stopped.
    RolledBack,
    /// Some shard's outcome is unknown and nothing is in progress.
    Unconfirmed,
}

impl TaskStatus {
    /// Derives a task's status from its shard counts, in O(number of statuses).
    ///
    /// The first matching rule wins:
    /// 1. not registered → `Unregistered`;
    /// 2. no shard → `NotApplicable`;
    /// 3. any `rolling back` → `RollingBack`;
    /// 4. any `stopping` → `Stopping`;
    /// 5. any `running`, or any `pending` while some shard is past `pending` (the task has
    ///    started; retried and requeued shards wait for a slot) → `Running`;
    /// 6. any `unconfirmed` → `Unconfirmed`;
    /// 7. any `failed` or `rollback failed` → `Failed`;
    /// 8. any `pending` (all others `registered`) → `Pending`;
    /// 9. any `stopped` → `Stopped`;
    /// 10. any `rolled back` → `RolledBack`;
    /// 11. any `registered` → `Registered`;
    /// 12. every shard `skipped` → `Skipped`;
    /// 13. otherwise (all succeeded or skipped) → `Succeeded`.
    ///
    /// Hence the status is `Succeeded`, `Skipped` or `NotApplicable` exactly when the task is
    /// [done](StatusCounts::is_done).
    pub fn derive(registered: bool, c: &StatusCounts) -> TaskStatus {
        use ShardStatus as S;
        let total = c.total();
        if !registered {
            TaskStatus::Unregistered
        } else if total == 0 {
            TaskStatus::NotApplicable
        } else if c.get(S::RollingBack) > 0 {
            TaskStatus::RollingBack
        } else if c.get(S::Stopping) > 0 {
            TaskStatus::Stopping
        } else if c.get(S::Running) > 0
            || (c.get(S::Pending) > 0 && c.get(S::Pending) + c.get(S::Registered) < total)
        {
            TaskStatus::Running
        } else if c.get(S::Unconfirmed) > 0 {
            TaskStatus::Unconfirmed
        } else if c.get(S::Failed) + c.get(S::RollbackFailed) > 0 {
            TaskStatus::Failed
        } else if c.get(S::Pending) > 0 {
            TaskStatus::Pending
        } else if c.get(S::Stopped) > 0 {
            TaskStatus::Stopped
        } else if c.get(S::RolledBack) > 0 {
            TaskStatus::RolledBack
        } else if c.get(S::Registered) > 0 {
            TaskStatus::Registered
        } else if c.get(S::Skipped) == total {
            TaskStatus::Skipped
        } else {
            TaskStatus::Succeeded
        }
    }

    /// Whether the task counts as done for its successors.
    pub fn is_done(self) -> bool {
        matches!(self, TaskStatus::Succeeded | TaskStatus::Skipped | TaskStatus::NotApplicable)
    }

    /// The lowercase name used in messages and the console: `rolling back`.
    pub fn name(self) -> &'static str {
        match self {
            TaskStatus::Unregistered => "unregistered",
            TaskStatus::NotApplicable => "not applicable",
            TaskStatus::Registered => "registered",
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Stopping => "stopping",
            TaskStatus::Stopped => "stopped",
            TaskStatus::RollingBack => "rolling back",
            TaskStatus::RolledBack => "rolled back",
            TaskStatus::Unconfirmed => "unconfirmed",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The number of a task's shards in each status, maintained incrementally on every transition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts([u32; ShardStatus::COUNT]);

impl StatusCounts {
    /// No shard at all.
    pub const ZERO: StatusCounts = StatusCounts([0; ShardStatus::COUNT]);

    /// How many shards are in `status`.
    pub fn get(&self, status: ShardStatus) -> u32 {
        self.0[status as usize]
    }

    /// The number of shards.
    pub fn total(&self) -> u32 {
        self.0.iter().sum()
    }

    /// Whether every shard succeeded or was skipped (true for no shards).
    pub fn is_done(&self) -> bool {
        self.get(ShardStatus::Succeeded) + self.get(ShardStatus::Skipped) == self.total()
    }

    /// `(status, count)` for every status with a non-zero count.
    pub fn non_zero(&self) -> impl Iterator<Item = (ShardStatus, u32)> + '_ {
        ShardStatus::ALL.iter().map(|&s| (s, self.get(s))).filter(|&(_, n)| n > 0)
    }

    pub(crate) fn add(&mut self, status: ShardStatus, n: u32) {
        self.0[status as usize] += n;
    }

    pub(crate) fn move_one(&mut self, from: ShardStatus, to: ShardStatus) {
        self.0[from as usize] -= 1;
        self.0[to as usize] += 1;
    }
}

impl FromIterator<ShardStatus> for StatusCounts {
    fn from_iter<I: IntoIterator<Item = ShardStatus>>(iter: I) -> Self {
        let mut c = StatusCounts::default();
        for s in iter {
            c.add(s, 1);
        }
        c
    }
}

impl fmt::Display for StatusCounts {
    /// `3 running, 2 succeeded` (or `no shards`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (s, n) in self.non_zero() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{n} {s}")?;
        }
        if first {
            f.write_str("no shards")?;
        }
        Ok(())
    }
}
