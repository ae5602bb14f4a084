//! Jobs as plain data: which attempt of which shard ([`AttemptKey`]), what a slot is asked to
//! run ([`Assignment`]) and what an executor says about it ([`Report`]). Shared by the manager
//! core, the actors and the cluster protocol, so it depends on nothing above `model` and
//! `behavior`.

use crate::behavior::{Checkpoint, Params, ShardOutcome};
use crate::model::{BusinessDate, ScopeItem, ShardKey, TaskId};

/// What a slot runs: a shard's work, or its rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum JobKind {
    /// The behavior's steps, from the shard's checkpoint on.
    Run,
    /// The behavior's rollback.
    Rollback,
}

/// Names one attempt of one shard; every report carries it, so a report of an attempt that is
/// not the shard's current one is recognised and ignored (fencing).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AttemptKey {
    /// The task.
    pub(crate) task: TaskId,
    /// The shard index.
    pub(crate) shard: u32,
    /// The dispatch attempt (runs) or the shard's last attempt (rollbacks).
    pub(crate) attempt: u32,
    /// The shard's generation when the job started.
    pub(crate) generation: u32,
    /// Run or rollback.
    pub(crate) kind: JobKind,
    /// Which dispatch of a rollback this is (0 for runs, whose `attempt` already differs per
    /// dispatch): a rollback dispatched again keeps its attempt and generation, and without
    /// this a late report of the earlier dispatch would pass for the later one's.
    pub(crate) dispatch: u32,
}

impl std::fmt::Display for AttemptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            JobKind::Run => "attempt",
            JobKind::Rollback => "rollback of attempt",
        };
        write!(f, "{}[{}] {kind} {} g{}", self.task, self.shard, self.attempt, self.generation)?;
        if self.dispatch > 0 {
            write!(f, " (dispatch {})", self.dispatch)?;
        }
        Ok(())
    }
}

/// One job for one slot: everything an executor needs, as plain data.
#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    /// Which attempt this is.
    pub(crate) key: AttemptKey,
    /// The slot of the executor it is for.
    pub(crate) slot: u32,
    /// The registered behavior name.
    pub(crate) behavior: String,
    /// The business date.
    pub(crate) date: BusinessDate,
    /// The shard key.
    pub(crate) shard_key: ShardKey,
    /// The shard's scope items.
    pub(crate) scope: Vec<ScopeItem>,
    /// The calendar dates the registration covers.
    pub(crate) covered_dates: Vec<BusinessDate>,
    /// The task's parameters.
    pub(crate) params: Params,
    /// Steps already checkpointed.
    pub(crate) completed_steps: usize,
    /// The task's timeout per attempt, if any.
    pub(crate) timeout: Option<std::time::Duration>,
}

/// What an executor reports to the manager about a job.
#[derive(Debug)]
pub(crate) enum Report {
    /// The job ended; the slot is free again.
    Finished {
        /// The job.
        key: AttemptKey,
        /// The executor index.
        executor: usize,
        /// The slot.
        slot: u32,
        /// How it ended.
        outcome: ShardOutcome,
        /// The last step's checkpoint, if the job completed it: not recorded yet (nothing
        /// waited for it), so the manager records it before the outcome, in the same batch.
        last_step: Option<Checkpoint>,
    },
    /// A stop or timeout was forced: the job did not return within the grace and was
    /// abandoned. Its slot stays occupied until the job returns ([`Report::SlotFreed`]).
    Abandoned {
        /// The job.
        key: AttemptKey,
        /// The executor index.
        executor: usize,
        /// The slot.
        slot: u32,
        /// The explanation shown to operators.
        reason: String,
    },
    /// An abandoned job finally returned; its slot is free again. Its outcome is not used.
    SlotFreed {
        /// The job.
        key: AttemptKey,
        /// The executor index.
        executor: usize,
        /// The slot.
        slot: u32,
    },
}
