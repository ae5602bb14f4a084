//! The state of one business day: the fold of its events.
//!
//! Memory layout, chosen for a million shards per day: a shard is a fixed 40-byte
//! [`ShardRecord`] (status as `u8`, executor and step names interned to `u32`, timings as
//! `i64` milliseconds), its key lives in a per-task string arena (one allocation per task, not
//! one per shard), and scope items are pairs of interned product/distributor ids. Per-task
//! status counts are maintained on every transition, so a task's status is derived in
//! O(number of statuses) and never by scanning its shards.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::NaiveDate;

use super::event::{AuditRecord, DayEvent, EventKind};
use super::machine::{IllegalTransition, ShardEvent, ShardStatus, transition};
use super::status::{StatusCounts, TaskStatus};
use crate::graph::{Readiness, TaskGraph, TaskIx};
use crate::model::{BusinessDate, ScopeItem, ShardKey, TaskId};

/// Why an event was not applied. The state is unchanged after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The encoded event is over [`super::MAX_EVENT_BYTES`] (checked before it applies).
    #[error(
        "the event is {len} bytes encoded, over the limit of {limit} bytes: it was not applied"
    )]
    TooLarge {
        /// Its encoded length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The event's sequence number is not the next one (a gap, or a replay).
    #[error("event seq {got} is out of order: expected {expected}")]
    SeqGap {
        /// The next sequence number.
        expected: u64,
        /// The event's.
        got: u64,
    },
    /// An event other than `day_opened` came first.
    #[error("the day is not open: its first event must be day_opened")]
    NotOpened,
    /// A second `day_opened`.
    #[error("the day is already open")]
    AlreadyOpened,
    /// An event after `day_closed`.
    #[error("the day is closed: no further event is accepted")]
    Closed,
    /// `day_opened` for another date.
    #[error("event opens business date {got}, but this state is for {expected}")]
    DateMismatch {
        /// The state's date.
        expected: BusinessDate,
        /// The event's.
        got: BusinessDate,
    },
    /// The task is not in the flow's graph.
    #[error("unknown task `{0}`")]
    UnknownTask(TaskId),
    /// The task has not been registered for the day.
    #[error("task `{0}` is not registered for the day")]
    NotRegistered(TaskId),
    /// The task was registered already.
    #[error("task `{0}` is already registered for the day")]
    AlreadyRegistered(TaskId),
    /// A registration lists a shard key twice.
    #[error("task `{task}` registers shard key `{key}` twice")]
    DuplicateShardKey {
        /// The task.
        task: TaskId,
        /// The repeated key.
        key: ShardKey,
    },
    /// A registration exceeds the per-task limits (2³²−2 shards, 4 GiB of keys).
    #[error("task `{0}` registers more shards than a task can hold")]
    TooManyShards(TaskId),
    /// The shard index is not in the task's shard list.
    #[error("task `{task}` has no shard {shard} (it has {count})")]
    ShardOutOfRange {
        /// The task.
        task: TaskId,
        /// The index asked for.
        shard: u32,
        /// The task's number of shards.
        count: u32,
    },
    /// The state machine refuses the event for this shard.
    #[error("shard {shard} of task `{task}`: {source}")]
    Illegal {
        /// The task.
        task: TaskId,
        /// The shard index.
        shard: u32,
        /// The refused transition.
        source: IllegalTransition,
    },
    /// The state machine refuses a task-level event for one of the listed statuses.
    #[error("task `{task}`: {source}")]
    IllegalForTask {
        /// The task.
        task: TaskId,
        /// The refused transition.
        source: IllegalTransition,
    },
    /// A dispatch whose attempt is not after the shard's last one (a replayed dispatch).
    #[error("shard {shard} of task `{task}`: dispatch attempt {got} is not after attempt {last}")]
    StaleAttempt {
        /// The task.
        task: TaskId,
        /// The shard index.
        shard: u32,
        /// The shard's last attempt.
        last: u32,
        /// The event's.
        got: u32,
    },
    /// A checkpoint for another generation than the shard's current one.
    #[error(
        "shard {shard} of task `{task}`: checkpoint is for generation {got}, the shard is at \
         generation {current}"
    )]
    StaleGeneration {
        /// The task.
        task: TaskId,
        /// The shard index.
        shard: u32,
        /// The shard's generation.
        current: u32,
        /// The event's.
        got: u32,
    },
    /// A hold on what is held already, or a free of what is not held.
    #[error("{target}: {reason}")]
    Hold {
        /// The task or shard.
        target: super::Target,
        /// What is wrong.
        reason: &'static str,
    },
    /// A checkpoint while the shard is not running, or one that goes backwards.
    #[error("shard {shard} of task `{task}`: {reason}")]
    InvalidCheckpoint {
        /// The task.
        task: TaskId,
        /// The shard index.
        shard: u32,
        /// What is wrong with it.
        reason: String,
    },
}

/// What an applied event changed, for the caller to publish and schedule from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The task the event concerned, if any.
    pub task: Option<TaskIx>,
    /// The task's new derived status, if it changed.
    pub task_status: Option<TaskStatus>,
    /// For a single-shard event: the shard and its old and new status.
    pub shard: Option<ShardChange>,
    /// How many shards changed status.
    pub shards_changed: u32,
    /// The successors whose last outstanding dependency just became done (in the graph's
    /// successor order). Found in O(out-degree).
    pub ready: Vec<TaskIx>,
}

/// One shard's status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardChange {
    /// The shard index.
    pub shard: u32,
    /// Its status before the event.
    pub from: ShardStatus,
    /// Its status after.
    pub to: ShardStatus,
}

/// A read-only view of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardView<'a> {
    /// The shard's index in its task.
    pub index: u32,
    /// Its key.
    pub key: &'a str,
    /// Its status.
    pub status: ShardStatus,
    /// The last dispatch attempt (0: never dispatched).
    pub attempt: u32,
    /// How many times it was rolled back (part of the idempotency key).
    pub generation: u32,
    /// The executor of its last dispatch.
    pub executor: Option<&'a str>,
    /// The manager epoch of its last dispatch (0: standalone or never dispatched).
    pub epoch: u64,
    /// The executor process instance of its last dispatch (0: in-process or unknown).
    pub instance: u64,
    /// Its progress in the current generation, if any step completed.
    pub checkpoint: Option<Checkpoint<'a>>,
    /// When its last run or rollback started (ms since the epoch).
    pub started_ms: Option<i64>,
    /// When it last came to rest (ms since the epoch).
    pub finished_ms: Option<i64>,
    /// The error of its latest failure, cleared by success.
    pub last_error: Option<&'a str>,
    /// How many of its runs failed (`Fail`) in the current generation: the automatic retries
    /// it used up. A requeue (lost executor, refused assignment), a manager restart or an
    /// operator's action never counts; a rollback starts again at 0.
    pub failures: u32,
    /// It is being rolled back by the unconfirmed policy and is run again once rolled back
    /// (`RollbackThenRetry`; durable).
    pub retry_after_rollback: bool,
    /// Who holds the shard itself (not its task), if someone does.
    pub held_by: Option<&'a str>,
}

/// How far a shard got in its current generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint<'a> {
    /// Steps `0..steps_done` completed: a resumed run starts at step `steps_done`.
    pub steps_done: u32,
    /// The name of step `steps_done - 1`.
    pub last_step: &'a str,
}

/// An audit record with the event's sequence number and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The event's sequence number.
    pub seq: u64,
    /// The event's time (ms since the epoch).
    pub at_ms: i64,
    /// The record.
    pub record: AuditRecord,
}

/// "None" for an interned id.
pub(super) const NONE: u32 = u32::MAX;

/// One shard, 40 bytes (checked by a test). Timestamps use 0 for "not set".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ShardRecord {
    pub(super) started_ms: i64,
    pub(super) finished_ms: i64,
    pub(super) executor: u32,
    pub(super) attempt: u32,
    pub(super) generation: u32,
    pub(super) steps_done: u32,
    pub(super) step_name: u32,
    /// `Fail`s in the current generation (saturating).
    pub(super) failures: u16,
    pub(super) status: ShardStatus,
    /// Rolled back by `RollbackThenRetry`, not retried yet.
    pub(super) then_retry: bool,
}

impl ShardRecord {
    pub(super) const REGISTERED: ShardRecord = ShardRecord {
        started_ms: 0,
        finished_ms: 0,
        executor: NONE,
        attempt: 0,
        generation: 0,
        steps_done: 0,
        step_name: NONE,
        failures: 0,
        status: ShardStatus::Registered,
        then_retry: false,
    };
}

/// Strings stored once and named by a dense `u32`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Interner {
    pub(super) names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Interner {
    pub(super) fn from_names(names: Vec<String>) -> Option<Self> {
        let mut index = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            if index.insert(n.clone(), i as u32).is_some() {
                return None;
            }
        }
        Some(Interner { names, index })
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), i);
        i
    }

    pub(super) fn get(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(String::as_str)
    }
}

/// The distinct `(executor name id, epoch, instance)` triples shards were dispatched to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Assignees {
    pub(super) pairs: Vec<Assignee>,
    index: HashMap<Assignee, u32>,
}

/// `(executor name id, epoch, instance)`.
pub(super) type Assignee = (u32, u64, u64);

impl Assignees {
    pub(super) fn from_pairs(pairs: Vec<Assignee>) -> Option<Self> {
        let mut index = HashMap::with_capacity(pairs.len());
        for (i, p) in pairs.iter().enumerate() {
            if index.insert(*p, i as u32).is_some() {
                return None;
            }
        }
        Some(Assignees { pairs, index })
    }

    fn intern(&mut self, a: Assignee) -> u32 {
        if let Some(&i) = self.index.get(&a) {
            return i;
        }
        let i = self.pairs.len() as u32;
        self.pairs.push(a);
        self.index.insert(a, i);
        i
    }

    pub(super) fn get(&self, id: u32) -> Option<Assignee> {
        self.pairs.get(id as usize).copied()
    }
}

/// A task's shard keys in one string; key `i` ends at `ends[i]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyArena {
    pub(super) bytes: String,
    pub(super) ends: Vec<u32>,
}

impl KeyArena {
    pub(super) fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }
}

/// One task's day state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TaskState {
    pub(super) registered: bool,
    pub(super) registered_at_ms: i64,
    /// Scope items as `[product, distributor]` interned ids (`NONE` when absent).
    pub(super) items: Vec<[u32; 2]>,
    pub(super) covered_dates: Vec<NaiveDate>,
    pub(super) keys: KeyArena,
    pub(super) shards: Vec<ShardRecord>,
    pub(super) counts: StatusCounts,
    pub(super) status: TaskStatus,
}

impl TaskState {
    pub(super) const UNREGISTERED: TaskState = TaskState {
        registered: false,
        registered_at_ms: 0,
        items: Vec::new(),
        covered_dates: Vec::new(),
        keys: KeyArena { bytes: String::new(), ends: Vec::new() },
        shards: Vec::new(),
        counts: StatusCounts::ZERO,
        status: TaskStatus::Unregistered,
    };
}

/// The in-memory state of one business day: the fold of its [`DayEvent`]s.
///
/// `apply` is deterministic (no clock, no randomness, no hash-order dependence), so a snapshot
/// built on another thread by folding events onto a clone equals the manager's own state.
#[derive(Debug, Clone)]
pub struct DayState {
    pub(super) date: BusinessDate,
    pub(super) graph: Arc<TaskGraph>,
    pub(super) flow_digest: String,
    pub(super) opened: bool,
    pub(super) closed: bool,
    pub(super) last_seq: u64,
    pub(super) tasks: Vec<TaskState>,
    pub(super) readiness: Readiness,
    pub(super) executors: Interner,
    /// Who a shard was dispatched to: `ShardRecord::executor` indexes this table.
    pub(super) assignees: Assignees,
    pub(super) step_names: Interner,
    pub(super) products: Interner,
    pub(super) distributors: Interner,
    /// Latest error per `(task, shard)`; ordered so snapshots are deterministic.
    pub(super) errors: BTreeMap<(u32, u32), String>,
    pub(super) audit: Vec<AuditEntry>,
    /// Holds: `(task, None)` for a task, `(task, Some(shard))` for a shard; who holds it.
    pub(super) holds: BTreeMap<(u32, Option<u32>), String>,
    /// Tasks an operator force-started.
    pub(super) forced: BTreeSet<u32>,
}

impl PartialEq for DayState {
    /// Equal days: the same graph (by task ids, in order) and the same fold.
    fn eq(&self, o: &Self) -> bool {
        let same_graph = Arc::ptr_eq(&self.graph, &o.graph)
            || (self.graph.len() == o.graph.len()
                && self.graph.indices().all(|ix| self.graph.id(ix) == o.graph.id(ix)));
        same_graph
            && self.date == o.date
            && self.flow_digest == o.flow_digest
            && self.opened == o.opened
            && self.closed == o.closed
            && self.last_seq == o.last_seq
            && self.tasks == o.tasks
            && self.readiness == o.readiness
            && self.executors == o.executors
            && self.assignees == o.assignees
            && self.step_names == o.step_names
            && self.products == o.products
            && self.distributors == o.distributors
            && self.errors == o.errors
            && self.audit == o.audit
            && self.holds == o.holds
            && self.forced == o.forced
    }
}

impl DayState {
    /// An empty day for `date` over `graph`: no event applied, every task unregistered.
    pub fn new(date: BusinessDate, graph: Arc<TaskGraph>) -> Self {
        DayState {
            date,
            readiness: Readiness::new(&graph),
            tasks: vec![TaskState::UNREGISTERED; graph.len()],
            graph,
            flow_digest: String::new(),
            opened: false,
            closed: false,
            last_seq: 0,
            executors: Interner::default(),
            assignees: Assignees::default(),
            step_names: Interner::default(),
            products: Interner::default(),
            distributors: Interner::default(),
            errors: BTreeMap::new(),
            audit: Vec::new(),
            holds: BTreeMap::new(),
            forced: BTreeSet::new(),
        }
    }

    /// Applies one event. On error nothing changed.
    pub fn apply(&mut self, event: &DayEvent) -> Result<Applied, Error> {
        let expected = self.last_seq + 1;
        if event.seq != expected {
            return Err(Error::SeqGap { expected, got: event.seq });
        }
        if self.closed {
            return Err(Error::Closed);
        }
        if !self.opened && !matches!(event.kind, EventKind::DayOpened { .. }) {
            return Err(Error::NotOpened);
        }
        let at = event.at_ms;
        let applied = match &event.kind {
            EventKind::DayOpened { date, flow_digest } => {
                if self.opened {
                    return Err(Error::AlreadyOpened);
                }
                if *date != self.date {
                    return Err(Error::DateMismatch { expected: self.date, got: *date });
                }
                self.opened = true;
                self.flow_digest.clone_from(flow_digest);
                Applied::default()
            }
            EventKind::TaskRegistered { task, items, shards, covered_dates } => {
                self.register(task, items, shards, covered_dates, at)?
            }
            EventKind::TaskReady { task } => {
                self.bulk(task, &[ShardStatus::Registered], &ShardEvent::Ready, at)?
            }
            EventKind::TaskShards { task, from, event } => self.bulk(task, from, event, at)?,
            EventKind::Shard { task, shard, event } => self.shard_event(task, *shard, event, at)?,
            EventKind::StepCheckpoint { task, shard, generation, step, name } => {
                self.checkpoint(task, *shard, *generation, *step, name)?
            }
            EventKind::Audit(record) => {
                self.audit.push(AuditEntry { seq: event.seq, at_ms: at, record: record.clone() });
                Applied::default()
            }
            EventKind::Hold { task, shard, by } => self.hold(task, *shard, Some(by))?,
            EventKind::Free { task, shard } => self.hold(task, *shard, None)?,
            EventKind::ForceStarted { task } => {
                let ix = self.task_ix(task)?;
                self.forced.insert(ix.0);
                Applied { task: Some(ix), ..Applied::default() }
            }
            EventKind::DayClosed => {
                self.closed = true;
                Applied::default()
            }
        };
        self.last_seq = event.seq;
        Ok(applied)
    }

    /// Sets (`by` given) or lifts a hold on a task or a registered shard.
    fn hold(
        &mut self,
        task: &TaskId,
        shard: Option<u32>,
        by: Option<&String>,
    ) -> Result<Applied, Error> {
        let ix = match shard {
            None => self.task_ix(task)?,
            Some(s) => {
                let ix = self.registered_ix(task)?;
                let count = self.tasks[ix.get()].shards.len() as u32;
                if s >= count {
                    return Err(Error::ShardOutOfRange { task: task.clone(), shard: s, count });
                }
                ix
            }
        };
        let target = || super::Target { task: task.clone(), shard };
        match by {
            Some(by) => {
                if self.holds.contains_key(&(ix.0, shard)) {
                    return Err(Error::Hold { target: target(), reason: "already held" });
                }
                self.holds.insert((ix.0, shard), by.clone());
            }
            None => {
                if self.holds.remove(&(ix.0, shard)).is_none() {
                    return Err(Error::Hold { target: target(), reason: "not held" });
                }
            }
        }
        Ok(Applied { task: Some(ix), ..Applied::default() })
    }

    fn task_ix(&self, task: &TaskId) -> Result<TaskIx, Error> {
        self.graph.index_of(task.as_str()).ok_or_else(|| Error::UnknownTask(task.clone()))
    }

    fn registered_ix(&self, task: &TaskId) -> Result<TaskIx, Error> {
        let ix = self.task_ix(task)?;
        if !self.tasks[ix.get()].registered {
            return Err(Error::NotRegistered(task.clone()));
        }
        Ok(ix)
    }

    fn register(
        &mut self,
        task: &TaskId,
        items: &[ScopeItem],
        shards: &[ShardKey],
        covered_dates: &[NaiveDate],
        at: i64,
    ) -> Result<Applied, Error> {
        let ix = self.task_ix(task)?;
        if self.tasks[ix.get()].registered {
            return Err(Error::AlreadyRegistered(task.clone()));
        }
        let total_len: usize = shards.iter().map(|k| k.as_str().len()).sum();
        if shards.len() >= NONE as usize || total_len > NONE as usize {
            return Err(Error::TooManyShards(task.clone()));
        }
        let mut seen = HashSet::with_capacity(shards.len());
        for k in shards {
            if !seen.insert(k.as_str()) {
                return Err(Error::DuplicateShardKey { task: task.clone(), key: k.clone() });
            }
        }
        drop(seen);
        let mut keys = KeyArena {
            bytes: String::with_capacity(total_len),
            ends: Vec::with_capacity(shards.len()),
        };
        for k in shards {
            keys.bytes.push_str(k.as_str());
            keys.ends.push(keys.bytes.len() as u32);
        }
        let items = items
            .iter()
            .map(|it| {
                [
                    it.product.as_deref().map_or(NONE, |p| self.products.intern(p)),
                    it.distributor.as_deref().map_or(NONE, |d| self.distributors.intern(d)),
                ]
            })
            .collect();
        let mut counts = StatusCounts::default();
        counts.add(ShardStatus::Registered, shards.len() as u32);
        self.tasks[ix.get()] = TaskState {
            registered: true,
            registered_at_ms: at,
            items,
            covered_dates: covered_dates.to_vec(),
            keys,
            shards: vec![ShardRecord::REGISTERED; shards.len()],
            counts,
            status: TaskStatus::Unregistered,
        };
        Ok(self.refresh(ix, None, 0))
    }

    /// Checks a shard event against the table and the record, without changing anything.
    fn check(
        rec: &ShardRecord,
        event: &ShardEvent,
    ) -> Result<ShardStatus, Result<IllegalTransition, (u32, u32)>> {
        let to = transition(rec.status, event.kind()).map_err(Ok)?;
        if let ShardEvent::Dispatch { attempt, .. } = event
            && *attempt <= rec.attempt
        {
            return Err(Err((rec.attempt, *attempt)));
        }
        Ok(to)
    }

    fn shard_event(
        &mut self,
        task: &TaskId,
        shard: u32,
        event: &ShardEvent,
        at: i64,
    ) -> Result<Applied, Error> {
        let ix = self.registered_ix(task)?;
        let t = &self.tasks[ix.get()];
        let Some(rec) = t.shards.get(shard as usize) else {
            return Err(Error::ShardOutOfRange {
                task: task.clone(),
                shard,
                count: t.shards.len() as u32,
            });
        };
        let from = rec.status;
        let to = Self::check(rec, event).map_err(|e| match e {
            Ok(source) => Error::Illegal { task: task.clone(), shard, source },
            Err((last, got)) => Error::StaleAttempt { task: task.clone(), shard, last, got },
        })?;
        self.commit(ix, shard, event, to, at);
        Ok(self.refresh(ix, Some(ShardChange { shard, from, to }), 1))
    }

    fn bulk(
        &mut self,
        task: &TaskId,
        from: &[ShardStatus],
        event: &ShardEvent,
        at: i64,
    ) -> Result<Applied, Error> {
        let ix = self.registered_ix(task)?;
        let mut mask = 0u16;
        for &s in from {
            transition(s, event.kind())
                .map_err(|source| Error::IllegalForTask { task: task.clone(), source })?;
            mask |= 1 << s as u16;
        }
        let t = &self.tasks[ix.get()];
        if let ShardEvent::Dispatch { attempt, .. } = event {
            for (i, rec) in t.shards.iter().enumerate() {
                if mask & (1 << rec.status as u16) != 0 && *attempt <= rec.attempt {
                    return Err(Error::StaleAttempt {
                        task: task.clone(),
                        shard: i as u32,
                        last: rec.attempt,
                        got: *attempt,
                    });
                }
            }
        }
        let mut changed = 0u32;
        for i in 0..t.shards.len() {
            let status = self.tasks[ix.get()].shards[i].status;
            if mask & (1 << status as u16) != 0 {
                // Checked above for every status in the mask.
                let to = transition(status, event.kind()).unwrap_or(status);
                self.commit(ix, i as u32, event, to, at);
                changed += 1;
            }
        }
        Ok(self.refresh(ix, None, changed))
    }

    /// Applies a checked transition to one shard record and its task's counts.
    fn commit(&mut self, ix: TaskIx, shard: u32, event: &ShardEvent, to: ShardStatus, at: i64) {
        let executor = match event {
            ShardEvent::Dispatch { executor, epoch, instance, .. } => {
                let name = self.executors.intern(executor);
                self.assignees.intern((name, *epoch, *instance))
            }
            _ => NONE,
        };
        let key = (ix.0, shard);
        match event {
            ShardEvent::Fail { reason } | ShardEvent::RollbackFailed { reason } => {
                self.errors.insert(key, reason.clone());
            }
            ShardEvent::Succeed | ShardEvent::Confirm | ShardEvent::RollbackSucceeded
                if !self.errors.is_empty() =>
            {
                self.errors.remove(&key);
            }
            _ => {}
        }
        let t = &mut self.tasks[ix.get()];
        let rec = &mut t.shards[shard as usize];
        t.counts.move_one(rec.status, to);
        rec.status = to;
        // The intent to retry lasts from `RollbackThenRetry` through the rollback's success.
        rec.then_retry = matches!(event, ShardEvent::RollbackThenRetry)
            || rec.then_retry && matches!(event, ShardEvent::RollbackSucceeded);
        match event {
            ShardEvent::Dispatch { attempt, .. } => {
                rec.attempt = *attempt;
                rec.executor = executor;
            }
            ShardEvent::Fail { .. } => rec.failures = rec.failures.saturating_add(1),
            ShardEvent::RollbackSucceeded => {
                rec.generation += 1;
                rec.steps_done = 0;
                rec.step_name = NONE;
                rec.failures = 0;
            }
            _ => {}
        }
        match to {
            ShardStatus::Running | ShardStatus::RollingBack => {
                rec.started_ms = at;
                rec.finished_ms = 0;
            }
            ShardStatus::Registered | ShardStatus::Pending | ShardStatus::Stopping => {}
            _ => rec.finished_ms = at,
        }
    }

    /// Re-derives the task's status and keeps readiness in step with "done".
    fn refresh(&mut self, ix: TaskIx, shard: Option<ShardChange>, changed: u32) -> Applied {
        let t = &mut self.tasks[ix.get()];
        let status = TaskStatus::derive(t.registered, &t.counts);
        let old = std::mem::replace(&mut t.status, status);
        let mut ready = Vec::new();
        if status.is_done() != self.readiness.is_done(ix) {
            if status.is_done() {
                ready = self.readiness.mark_done(&self.graph, ix);
            } else {
                self.readiness.mark_undone(&self.graph, ix);
            }
        }
        Applied {
            task: Some(ix),
            task_status: (old != status).then_some(status),
            shard,
            shards_changed: changed,
            ready,
        }
    }

    fn checkpoint(
        &mut self,
        task: &TaskId,
        shard: u32,
        generation: u32,
        step: u32,
        name: &str,
    ) -> Result<Applied, Error> {
        let ix = self.registered_ix(task)?;
        let t = &self.tasks[ix.get()];
        let Some(rec) = t.shards.get(shard as usize) else {
            return Err(Error::ShardOutOfRange {
                task: task.clone(),
                shard,
                count: t.shards.len() as u32,
            });
        };
        let invalid =
            |reason: String| Error::InvalidCheckpoint { task: task.clone(), shard, reason };
        if !matches!(rec.status, ShardStatus::Running | ShardStatus::Stopping) {
            return Err(invalid(format!("cannot checkpoint a shard that is {}", rec.status)));
        }
        if generation != rec.generation {
            return Err(Error::StaleGeneration {
                task: task.clone(),
                shard,
                current: rec.generation,
                got: generation,
            });
        }
        let steps_done = step.checked_add(1).filter(|&n| n > rec.steps_done).ok_or_else(|| {
            invalid(format!(
                "checkpoint of step {step} goes backwards: steps 0..{} are done",
                rec.steps_done
            ))
        })?;
        let name = self.step_names.intern(name);
        let rec = &mut self.tasks[ix.get()].shards[shard as usize];
        rec.steps_done = steps_done;
        rec.step_name = name;
        Ok(Applied { task: Some(ix), ..Applied::default() })
    }
}
