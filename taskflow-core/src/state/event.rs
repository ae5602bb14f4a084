//! The day's events: every change to a [`super::DayState`] is one of these.
//!
//! Events are persisted (the event log, the replication stream), so they are `Serialize` and
//! carry an envelope version; see [`DayEvent::encode`].

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::CodecError;
use super::machine::ShardEvent;
use crate::model::{BusinessDate, ScopeItem, ShardKey, TaskId};

/// One event of a business day, as the manager sequenced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayEvent {
    /// The sequence number: exactly one more than the previous event's (the first is 1).
    pub seq: u64,
    /// When the manager accepted it, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened. Every variant is validated by [`super::DayState::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The day begins; must be the first event. `date` must be the state's date.
    DayOpened {
        /// The business date.
        date: BusinessDate,
        /// The digest of the flow file the day runs, so a recovery with a changed flow is
        /// detected rather than silently mixed.
        flow_digest: String,
    },
    /// A task was registered for the day: the registration's result as plain data.
    /// An empty `shards` list makes the task not applicable (done at once).
    TaskRegistered {
        /// The task.
        task: TaskId,
        /// The registered scope (products/distributors covered).
        items: Vec<ScopeItem>,
        /// The shard keys, unique within the task; a shard is named by its index here.
        shards: Vec<ShardKey>,
        /// The dates this registration covers (e.g. a run on T that catches up a holiday).
        covered_dates: Vec<NaiveDate>,
    },
    /// Every `registered` shard of the task becomes `pending` (dependencies done and trigger
    /// fired, or an operator's execute). A task with no registered shard is left as it is.
    TaskReady {
        /// The task.
        task: TaskId,
    },
    /// One shard's state machine input.
    Shard {
        /// The task.
        task: TaskId,
        /// The shard's index in the task's registered shard list.
        shard: u32,
        /// The input.
        event: ShardEvent,
    },
    /// The same input to every shard of a task whose status is in `from` (an operator's
    /// task-level action: one event instead of one per shard). Every listed status must accept
    /// the event; a listed status with no shard is fine.
    TaskShards {
        /// The task.
        task: TaskId,
        /// The statuses whose shards receive the event.
        from: Vec<super::ShardStatus>,
        /// The input.
        event: ShardEvent,
    },
    /// A running shard completed steps `0..=step`; a retried or moved shard resumes after it.
    /// Only legal while the shard is running or stopping, for its current generation, and
    /// never backwards. A rollback clears it.
    StepCheckpoint {
        /// The task.
        task: TaskId,
        /// The shard index.
        shard: u32,
        /// The shard's generation the step ran in.
        generation: u32,
        /// The index of the last completed step.
        step: u32,
        /// That step's name.
        name: String,
    },
    /// An operator action, recorded in the same batch as its effects.
    Audit(AuditRecord),
    /// A task (`shard: None`; accepted before its registration too) or one registered shard
    /// is held: none of its shards is dispatched to run until it is freed. Running shards go
    /// on; stops and rollbacks are not held.
    Hold {
        /// The task.
        task: TaskId,
        /// The shard, or `None` for the whole task.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<u32>,
        /// Who held it (shown on the board).
        by: String,
    },
    /// A hold is lifted: what it kept back may be dispatched again.
    Free {
        /// The task.
        task: TaskId,
        /// The shard, or `None` for the whole task.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard: Option<u32>,
    },
    /// An operator force-started the task: from now on it counts as free to run whatever its
    /// dependencies and trigger (the manager registers it and readies its shards with the
    /// usual `TaskRegistered` / `TaskReady` events; this one changes no shard).
    ForceStarted {
        /// The task.
        task: TaskId,
    },
    /// The day is closed: no event is accepted after this one.
    DayClosed,
}

/// A durable record of an operator action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Who acted (the token's principal name).
    pub actor: String,
    /// What they did.
    pub action: OperatorAction,
    /// On what.
    pub target: Target,
    /// Why, in their words.
    pub reason: String,
    /// Where the action came from (client address or interface, e.g. `console 10.0.0.7`).
    pub from: String,
}

/// An operator action on a task or a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorAction {
    /// Make registered shards pending (a manual trigger).
    Execute,
    /// Stop shards that have not finished.
    Stop,
    /// Skip shards: they count as done.
    Skip,
    /// Run failed, stopped or rolled-back shards again.
    Retry,
    /// Undo shards' effects; `cascade` rolls back dependents that ran first, newest first.
    Rollback {
        /// Whether to roll back the dependents that ran.
        cascade: bool,
    },
    /// Confirm unconfirmed shards as succeeded.
    Confirm,
    /// Declare unconfirmed shards failed.
    MarkFailed,
    /// Keep a task (any non-terminal status, also unregistered) or a shard from being
    /// dispatched.
    Hold,
    /// Lift a hold.
    Free,
    /// Register and run a task now, whatever its dependencies and trigger (a reason is
    /// required).
    ForceStart,
}

impl OperatorAction {
    /// The verb for messages: `retry`, `roll back`.
    pub fn verb(self) -> &'static str {
        match self {
            OperatorAction::Execute => "execute",
            OperatorAction::Stop => "stop",
            OperatorAction::Skip => "skip",
            OperatorAction::Retry => "retry",
            OperatorAction::Rollback { .. } => "roll back",
            OperatorAction::Confirm => "confirm",
            OperatorAction::MarkFailed => "mark failed",
            OperatorAction::Hold => "hold",
            OperatorAction::Free => "free",
            OperatorAction::ForceStart => "force-start",
        }
    }
}

/// A task, or one shard of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// The task.
    pub task: TaskId,
    /// The shard index, or `None` for the whole task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shard {
            Some(s) => write!(f, "shard {s} of task `{}`", self.task),
            None => write!(f, "task `{}`", self.task),
        }
    }
}

/// The envelope version of an encoded [`DayEvent`]. Version 2 added the shard event
/// `rollback_then_retry`; version 3 the events `hold`, `free`, `force_started` and the
/// operator actions `hold`, `free`, `force_start`. Bodies of older versions are a subset and
/// are still read.
pub const EVENT_FORMAT_VERSION: u8 = 3;

/// The one size limit of an event: its encoding (version byte included) is at most this many
/// bytes. It equals the log's record limit (`store::MAX_PAYLOAD`), and the manager checks it
/// **before** an event is applied, so an event that could not be logged never changes the day
/// (and can never kill the manager or crash-loop it on restart). A registration over it fails
/// its task; reasons are capped to [`MAX_REASON_BYTES`] where they enter.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// The longest failure reason kept in an event, in bytes: a shard's failure or rollback
/// failure reason is cut to this (on a character boundary, ending with `…`) where it enters
/// the manager.
pub const MAX_REASON_BYTES: usize = 4096;

/// Cuts a failure reason to [`MAX_REASON_BYTES`] on a character boundary, ending with `…`.
pub fn cap_reason(reason: &mut String) {
    if reason.len() <= MAX_REASON_BYTES {
        return;
    }
    let mut end = MAX_REASON_BYTES - '…'.len_utf8();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    reason.push('…');
}

/// Counts the bytes an encoding would take, without keeping them.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl DayEvent {
    /// The length of [`DayEvent::encode`]'s output, computed without allocating it.
    pub fn encoded_len(&self) -> usize {
        let mut c = Counter(1);
        let _ = rmp_serde::encode::write_named(&mut c, self);
        c.0
    }

    /// Whether the event may be longer than a few hundred bytes (a registration, or text
    /// from a behavior, a peer or an operator): only those are measured against
    /// [`MAX_EVENT_BYTES`] before they apply, so the fixed-size events of the hot path cost
    /// nothing.
    pub fn may_be_large(&self) -> bool {
        use super::ShardEvent as S;
        match &self.kind {
            EventKind::Shard { event, .. } | EventKind::TaskShards { event, .. } => {
                // A dispatch names an executor (a peer's name, within a 4 MiB message): small.
                matches!(event, S::Fail { .. } | S::RollbackFailed { .. })
            }
            EventKind::TaskReady { .. }
            | EventKind::StepCheckpoint { .. }
            | EventKind::DayClosed => false,
            _ => true,
        }
    }

    /// `Err(encoded length)` if the event is over [`MAX_EVENT_BYTES`].
    pub fn check_size(&self) -> Result<(), usize> {
        if !self.may_be_large() {
            return Ok(());
        }
        match self.encoded_len() {
            n if n > MAX_EVENT_BYTES => Err(n),
            _ => Ok(()),
        }
    }

    /// Encodes the event: one version byte, then MessagePack with field names.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![EVENT_FORMAT_VERSION];
        // Serializing these plain types into a Vec cannot fail; an error here would be a bug
        // in a derive, so fall back to an empty body that the decoder rejects.
        if let Ok(body) = rmp_serde::to_vec_named(self) {
            out.extend_from_slice(&body);
        }
        out
    }

    /// Decodes an event written by [`DayEvent::encode`] (any supported version).
    pub fn decode(bytes: &[u8]) -> Result<DayEvent, CodecError> {
        let Some((&version, body)) = bytes.split_first() else {
            return Err(CodecError::Truncated { what: "event version" });
        };
        if !(1..=EVENT_FORMAT_VERSION).contains(&version) {
            return Err(CodecError::UnsupportedVersion {
                what: "event",
                found: u16::from(version),
                supported: u16::from(EVENT_FORMAT_VERSION),
            });
        }
        let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(body));
        let event = DayEvent::deserialize(&mut de)
            .map_err(|e| CodecError::Malformed { what: "event", detail: e.to_string() })?;
        if de.position() as usize != body.len() {
            return Err(CodecError::TrailingBytes { what: "event" });
        }
        Ok(event)
    }
}
