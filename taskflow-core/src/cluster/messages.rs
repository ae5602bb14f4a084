//! The cluster's application messages: plain serde structs, encoded with
//! [`super::codec::encode`] (field names included, so adding a field with `#[serde(default)]`
//! is compatible both ways). Enums are tagged by variant name: never rename a variant or a
//! field (use `#[serde(alias)]`); a new variant needs a protocol version bump.
//!
//! See `proto-docs/cluster.md` for directions, timing, fencing and idempotency.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::behavior::{Params, ShardOutcome};
use crate::job::{Assignment, AttemptKey, JobKind};
use crate::model::{BusinessDate, ScopeItem, ShardKey, TaskId};

// --- replication (issue 4 part 7) ---
mod replica;
pub use replica::*;
// --- end replication ---

/// Executor → manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToManager {
    /// A call: register (first message of every session). Answered by [`Reply::JoinAccepted`]
    /// or [`Reply::JoinRejected`].
    Join(Join),
    /// A call: "I am alive and these jobs run". Answered by [`Reply::HeartbeatAck`].
    Heartbeat(Heartbeat),
    /// A call: a running job completed a step. Answered by [`Reply::CheckpointAck`] once the
    /// checkpoint is durable (or refused).
    Checkpoint(CheckpointMsg),
    /// A cast: a job ended, was abandoned, freed its slot, or logged / made progress.
    Report(ReportMsg),
    /// A call: stop assigning to this executor; its in-flight jobs finish and are confirmed.
    /// Answered by [`Reply::DrainAck`].
    Drain(DrainMsg),
    /// A call: a drained executor leaves (its slots are empty, its outcomes confirmed).
    /// Answered by [`Reply::DrainAck`].
    Leave(DrainMsg),
    /// A cast: a replica's durable position (replication).
    ReplicaAck(ReplicaAckMsg),
    /// A cast: part of a replica, answering a recovering manager's [`ToExecutor::ReplicaPull`].
    ReplicaChunk(ReplicaChunkMsg),
    /// A cast: several casts (reports) coalesced into one envelope, handled in order. Never
    /// nested, never a call; each envelope stays ≤ 4 MiB (senders split bigger batches).
    Batch(Vec<ToManager>),
}

/// Manager → executor (casts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToExecutor {
    /// Run a job on a slot.
    Assign(AssignMsg),
    /// Stop a job (cooperative, forced after the grace).
    Stop(StopMsg),
    /// These outcomes are durable on the manager (or were judged stale): forget them.
    Confirm(ConfirmMsg),
    /// Part of the replication stream (executors with `--data`).
    Replicate(ReplicateMsg),
    /// A recovering manager asks for part of the executor's replica.
    ReplicaPull(ReplicaPullMsg),
    /// Several messages for this executor from one manager turn, in one envelope, handled in
    /// order. Never nested; each envelope stays ≤ 4 MiB (senders split bigger batches).
    Batch(Vec<ToExecutor>),
}

/// The answer to every call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// The executor is registered for this epoch.
    JoinAccepted {
        /// The manager's epoch (bumped durably at each manager start).
        epoch: u64,
        /// The lease: an executor not heard from for longer is lost.
        lease_ms: u64,
        /// How often the executor sends a heartbeat.
        heartbeat_ms: u64,
        /// The manager's day store cluster id (every key it sends carries it too).
        #[serde(default)]
        cluster_id: String,
        /// The manager's business date, YYYY-MM-DD.
        #[serde(default)]
        date: String,
    },
    /// The executor is not registered; the reason is printed by the executor.
    JoinRejected {
        /// Clear text: version mismatch, unknown behavior, duplicate name.
        reason: String,
    },
    /// A heartbeat was received.
    HeartbeatAck {
        /// The heartbeat's seq.
        seq: u64,
        /// False when the manager no longer knows this executor (declared lost): the
        /// executor must fence its jobs and join again.
        ok: bool,
    },
    /// A checkpoint was recorded durably (`error` none) or refused.
    CheckpointAck {
        /// Why it was refused.
        error: Option<String>,
    },
    /// A drain or leave was recorded.
    DrainAck {
        /// False when the manager does not know this registration (lost): nothing to drain.
        ok: bool,
    },
    /// The call was rejected before it was understood (undecodable, newer version).
    Rejected {
        /// Clear text.
        reason: String,
    },
    /// The manager is recovering its day from replicas: the executor keeps the session,
    /// answers [`ToExecutor::ReplicaPull`] and joins again after `retry_ms`.
    Recovering {
        /// When to send `Join` again.
        retry_ms: u64,
    },
}

/// Registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    /// The executor's name (unique in the cluster; default hostname-pid).
    pub executor: String,
    /// A random id of the executor process: tells a re-join of the same process apart from a
    /// second process using the same name.
    pub instance: u64,
    /// The protocol version the executor speaks.
    pub protocol_version: u16,
    /// Shards it runs at once (its credits).
    pub slots: u32,
    /// The behaviors it hosts.
    pub behaviors: Vec<String>,
    /// Outcomes it still holds, unconfirmed (two-phase confirmation): the manager records
    /// the ones that are still their shard's current assignment and answers the join only
    /// once they are durable, so the executor forgets every outcome it sent on acceptance.
    #[serde(default)]
    pub held_outcomes: Vec<HeldOutcome>,
    /// The replicas this executor keeps (none without `--data`), newest dates first.
    #[serde(default)]
    pub replicas: Vec<ReplicaPosition>,
    /// The highest manager epoch this executor process was accepted in (0: none yet).
    #[serde(default)]
    pub seen_epoch: u64,
    /// Whether this executor keeps replicas (`--data`): only then is it sent the stream.
    #[serde(default)]
    pub keeps_replica: bool,
    /// Slots whose job has not returned yet (fenced, still stopping, or abandoned): the
    /// manager keeps them occupied until the job's end is reported (`Finished` or
    /// `SlotFreed`), so it neither assigns onto them nor runs their shard elsewhere meanwhile.
    #[serde(default)]
    pub busy_slots: Vec<BusySlot>,
}

/// A slot of an executor occupied by a job that has not returned yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusySlot {
    /// The slot.
    pub slot: u32,
    /// The epoch the job was assigned in.
    pub epoch: u64,
    /// The job.
    pub key: WireAttempt,
    /// The executor gave up waiting for it (a stop or timeout was forced): it ends with
    /// `SlotFreed` and no outcome. Otherwise it ends with `Finished`.
    pub abandoned: bool,
}

/// An outcome an executor keeps until the manager confirms it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutcome {
    /// The epoch it was assigned in.
    pub epoch: u64,
    /// The job.
    pub key: WireAttempt,
    /// How it ended. `Cancelled` means interrupted: the executor fenced the job (its manager
    /// was out of reach) before it completed, so it resumes at its last durable checkpoint.
    pub outcome: WireOutcome,
    /// The last step's checkpoint, as in [`ReportBody::Finished`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<LastStep>,
}

/// Forget these outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfirmMsg {
    /// The manager's epoch.
    pub epoch: u64,
    /// The jobs.
    pub keys: Vec<WireAttempt>,
}

/// Drain or leave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainMsg {
    /// The executor's name.
    pub executor: String,
    /// Its process id ([`Join::instance`]).
    pub instance: u64,
}

/// Liveness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The executor's name.
    pub executor: String,
    /// Its process id ([`Join::instance`]).
    pub instance: u64,
    /// Increasing per executor process.
    pub seq: u64,
    /// The jobs running now.
    pub running: Vec<WireAttempt>,
}

/// A step checkpoint of a running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMsg {
    /// The epoch of the assignment.
    pub epoch: u64,
    /// The executor's name.
    pub executor: String,
    /// Its process id.
    pub instance: u64,
    /// The job.
    pub key: WireAttempt,
    /// The step index.
    pub step: u32,
    /// The step name.
    pub name: String,
}

/// A report about a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportMsg {
    /// The epoch of the assignment.
    pub epoch: u64,
    /// The executor's name.
    pub executor: String,
    /// Its process id.
    pub instance: u64,
    /// The job.
    pub key: WireAttempt,
    /// The slot.
    pub slot: u32,
    /// What happened.
    pub body: ReportBody,
}

/// The checkpoint of a job's last step, carried by its `Finished` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastStep {
    /// The index of the step that completed.
    pub step: u32,
    /// Its name.
    pub name: String,
}

/// What a [`ReportMsg`] says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReportBody {
    /// The job ended; its slot is free.
    Finished {
        /// How.
        outcome: WireOutcome,
        /// The last step's checkpoint, recorded with the outcome in one durable batch (absent
        /// from executors that predate it: the outcome alone is then recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_step: Option<LastStep>,
    },
    /// A stop or timeout was forced; the slot stays occupied until `SlotFreed`.
    Abandoned {
        /// The explanation.
        reason: String,
        /// The executor had fenced the job (its manager was out of reach) before it was
        /// abandoned: the shard is interrupted, not failed (protocol version 3).
        #[serde(default)]
        fenced: bool,
    },
    /// An abandoned job returned.
    SlotFreed,
    /// The assignment was not run (protocol version 3): its epoch is older than the
    /// executor's registration (it overtook the answer to a join), or its slot is still busy
    /// with a job that has not returned. Not a failure: the manager puts the shard back in its
    /// queue if the key is still its current attempt.
    Refused {
        /// Why, for the log.
        reason: String,
        /// The job still occupying the slot, if that is the reason: the manager keeps the
        /// slot occupied until that job's end is reported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        busy: Option<BusySlot>,
    },
    /// Progress of a step (dropped under pressure).
    Progress {
        /// The step.
        step: u32,
        /// Done so far.
        done: u64,
        /// Total.
        total: u64,
    },
    /// A log line (dropped under pressure).
    Log {
        /// When (ms since the Unix epoch).
        at_ms: i64,
        /// `debug`, `info`, `warn` or `error`.
        level: String,
        /// The step, if any.
        step: Option<u32>,
        /// The text.
        message: String,
    },
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireOutcome {
    /// Every step completed.
    Succeeded,
    /// A step failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// Cancelled by a stop.
    Cancelled,
}

/// A job to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignMsg {
    /// The manager's epoch: reports and checkpoints carry it back.
    pub epoch: u64,
    /// The job.
    pub key: WireAttempt,
    /// The slot.
    pub slot: u32,
    /// The behavior.
    pub behavior: String,
    /// The business date, YYYY-MM-DD.
    pub date: String,
    /// The shard key.
    pub shard_key: String,
    /// The shard's scope items (references: product and distributor codes).
    pub scope: Vec<ScopeItem>,
    /// The dates the registration covers.
    pub covered_dates: Vec<String>,
    /// The task's parameters.
    pub params: BTreeMap<String, String>,
    /// Steps already checkpointed (the job resumes after them).
    pub completed_steps: u32,
    /// The timeout per attempt.
    pub timeout_ms: Option<u64>,
}

/// Stop a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopMsg {
    /// The manager's epoch.
    pub epoch: u64,
    /// The slot.
    pub slot: u32,
    /// The job.
    pub key: WireAttempt,
}

/// One attempt of one shard of one manager's day (the wire form of `AttemptKey`): the
/// business date and the day store's cluster id tell apart keys of different days or
/// clusters that have the same task, shard and numbers (protocol version 3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WireAttempt {
    /// The task id.
    pub task: String,
    /// The shard index.
    pub shard: u32,
    /// The attempt.
    pub attempt: u32,
    /// The shard's generation.
    pub generation: u32,
    /// `run` or `rollback`.
    pub kind: WireJobKind,
    /// The business date, YYYY-MM-DD. Empty only in a key read from a protocol-2 held file
    /// (such an outcome is vouched for by nobody).
    #[serde(default)]
    pub date: String,
    /// The cluster id of the manager's day store (`meta/app/cluster_id`). Empty only in a
    /// key read from a protocol-2 held file.
    #[serde(default)]
    pub cluster_id: String,
    /// Which dispatch of a rollback this is (0 for runs, whose attempt already differs per
    /// dispatch; absent means 0).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub dispatch: u32,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl WireAttempt {
    /// Whether the key carries a business date and a cluster id (every key since protocol
    /// version 3 does; a protocol-2 held file's does not).
    pub fn is_vouched(&self) -> bool {
        !self.date.is_empty() && !self.cluster_id.is_empty()
    }

    /// Whether the key belongs to the day `date` of the cluster `cluster_id`.
    pub fn is_of(&self, date: &str, cluster_id: &str) -> bool {
        self.is_vouched() && self.date == date && self.cluster_id == cluster_id
    }
}

/// Run or rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireJobKind {
    /// The steps.
    Run,
    /// The rollback.
    Rollback,
}

/// The key without its day: date and cluster id empty. Every sender stamps it with its own
/// ([`WireAttempt::stamped`]) before it leaves the process.
impl From<&AttemptKey> for WireAttempt {
    fn from(k: &AttemptKey) -> Self {
        WireAttempt::stamped(k, "", "")
    }
}

impl WireAttempt {
    /// The wire form of `k` for the day `date` of the cluster `cluster_id`.
    pub(crate) fn stamped(k: &AttemptKey, date: &str, cluster_id: &str) -> Self {
        WireAttempt {
            task: k.task.to_string(),
            shard: k.shard,
            attempt: k.attempt,
            generation: k.generation,
            kind: match k.kind {
                JobKind::Run => WireJobKind::Run,
                JobKind::Rollback => WireJobKind::Rollback,
            },
            date: date.to_owned(),
            cluster_id: cluster_id.to_owned(),
            dispatch: k.dispatch,
        }
    }
}

impl From<&WireAttempt> for AttemptKey {
    fn from(k: &WireAttempt) -> Self {
        AttemptKey {
            task: TaskId::new(&k.task),
            shard: k.shard,
            attempt: k.attempt,
            generation: k.generation,
            kind: match k.kind {
                WireJobKind::Run => JobKind::Run,
                WireJobKind::Rollback => JobKind::Rollback,
            },
            dispatch: k.dispatch,
        }
    }
}

impl From<&ShardOutcome> for WireOutcome {
    fn from(o: &ShardOutcome) -> Self {
        match o {
            ShardOutcome::Succeeded => WireOutcome::Succeeded,
            ShardOutcome::Failed { reason } => WireOutcome::Failed { reason: reason.clone() },
            ShardOutcome::Cancelled => WireOutcome::Cancelled,
        }
    }
}

impl From<WireOutcome> for ShardOutcome {
    fn from(o: WireOutcome) -> Self {
        match o {
            WireOutcome::Succeeded => ShardOutcome::Succeeded,
            WireOutcome::Failed { reason } => ShardOutcome::Failed { reason },
            WireOutcome::Cancelled => ShardOutcome::Cancelled,
        }
    }
}

impl AssignMsg {
    /// The wire form of an assignment of the cluster `cluster_id` (its date is the
    /// assignment's).
    pub(crate) fn from_assignment(epoch: u64, a: &Assignment, cluster_id: &str) -> Self {
        let date = a.date.to_string();
        AssignMsg {
            epoch,
            key: WireAttempt::stamped(&a.key, &date, cluster_id),
            slot: a.slot,
            behavior: a.behavior.clone(),
            date,
            shard_key: a.shard_key.as_str().to_owned(),
            scope: a.scope.clone(),
            covered_dates: a.covered_dates.iter().map(ToString::to_string).collect(),
            params: a.params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            completed_steps: a.completed_steps as u32,
            timeout_ms: a.timeout.map(|t| t.as_millis() as u64),
        }
    }

    /// The assignment it carries, or why it is malformed.
    pub(crate) fn to_assignment(&self) -> Result<Assignment, String> {
        let date = |s: &str| {
            s.parse::<BusinessDate>().map_err(|e| format!("bad date {s:?} in an assignment: {e}"))
        };
        Ok(Assignment {
            key: AttemptKey::from(&self.key),
            slot: self.slot,
            behavior: self.behavior.clone(),
            date: date(&self.date)?,
            shard_key: ShardKey::new(&self.shard_key),
            scope: self.scope.clone(),
            covered_dates: self.covered_dates.iter().map(|d| date(d)).collect::<Result<_, _>>()?,
            params: Params::from(self.params.clone()),
            completed_steps: self.completed_steps as usize,
            timeout: self.timeout_ms.map(Duration::from_millis),
        })
    }
}
