//! Read-only queries on a [`DayState`] for the console, the scheduler and `decide`.

use std::sync::Arc;

use chrono::NaiveDate;

use super::day::{AuditEntry, Checkpoint, DayState, Interner, ShardView};
use super::machine::ShardStatus;
use super::status::{StatusCounts, TaskStatus};
use crate::graph::{TaskGraph, TaskIx};
use crate::model::IdempotencyKey;
use crate::model::{BusinessDate, ScopeItem, ShardKey};

/// Queries.
impl DayState {
    /// The business date.
    pub fn date(&self) -> BusinessDate {
        self.date
    }

    /// The flow graph.
    pub fn graph(&self) -> &Arc<TaskGraph> {
        &self.graph
    }

    /// The digest of the flow the day runs (empty before `day_opened`).
    pub fn flow_digest(&self) -> &str {
        &self.flow_digest
    }

    /// The sequence number of the last applied event (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether `day_opened` was applied.
    pub fn is_open(&self) -> bool {
        self.opened
    }

    /// Whether `day_closed` was applied.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// A task's derived status, by id.
    pub fn task_status_of(&self, task: &str) -> Option<TaskStatus> {
        self.graph.index_of(task).map(|ix| self.task_status(ix))
    }

    /// A task's derived status. Panics on an index from another graph.
    pub fn task_status(&self, ix: TaskIx) -> TaskStatus {
        self.tasks[ix.get()].status
    }

    /// Whether the task is registered for the day.
    pub fn is_registered(&self, ix: TaskIx) -> bool {
        self.tasks[ix.get()].registered
    }

    /// Whether the task counts as done for its successors: registered, and every shard
    /// succeeded or skipped (or it has none).
    pub fn is_done(&self, ix: TaskIx) -> bool {
        self.readiness.is_done(ix)
    }

    /// Whether every task of the flow is done (O(1)).
    pub fn all_done(&self) -> bool {
        self.readiness.all_done()
    }

    /// Who holds the task (`shard: None`) or the shard itself, if someone does (a shard
    /// of a held task is not itself held: see [`DayState::run_held`]).
    pub fn held_by(&self, ix: TaskIx, shard: Option<u32>) -> Option<&str> {
        self.holds.get(&(ix.0, shard)).map(String::as_str)
    }

    /// Whether the shard may not be dispatched to run: its task or the shard is held.
    pub fn run_held(&self, ix: TaskIx, shard: u32) -> bool {
        self.holds.contains_key(&(ix.0, None)) || self.holds.contains_key(&(ix.0, Some(shard)))
    }

    /// Every hold: task, shard (`None`: the whole task), who holds it; in task order.
    pub fn holds(&self) -> impl Iterator<Item = (TaskIx, Option<u32>, &str)> + '_ {
        self.holds.iter().map(|(&(t, s), by)| (TaskIx(t), s, by.as_str()))
    }

    /// Whether an operator force-started the task.
    pub fn is_forced(&self, ix: TaskIx) -> bool {
        self.forced.contains(&ix.0)
    }

    /// Whether the task may run: every dependency is done, or an operator force-started it.
    pub fn may_run(&self, ix: TaskIx) -> bool {
        self.dependencies_done(ix) || self.is_forced(ix)
    }

    /// Whether every dependency of the task is done.
    pub fn dependencies_done(&self, ix: TaskIx) -> bool {
        self.readiness.is_ready(ix)
    }

    /// The task's dependencies that are not done, in graph order (O(in-degree)).
    pub fn waiting_for(&self, ix: TaskIx) -> Vec<TaskIx> {
        self.graph.predecessors(ix).iter().copied().filter(|&p| !self.is_done(p)).collect()
    }

    /// The number of the task's shards in each status.
    pub fn counts(&self, ix: TaskIx) -> &StatusCounts {
        &self.tasks[ix.get()].counts
    }

    /// The number of the task's shards.
    pub fn shard_count(&self, ix: TaskIx) -> u32 {
        self.tasks[ix.get()].shards.len() as u32
    }

    /// When the task was registered (ms since the epoch), if it was.
    pub fn registered_at_ms(&self, ix: TaskIx) -> Option<i64> {
        let t = &self.tasks[ix.get()];
        t.registered.then_some(t.registered_at_ms)
    }

    /// The dates the task's registration covers.
    pub fn covered_dates(&self, ix: TaskIx) -> &[NaiveDate] {
        &self.tasks[ix.get()].covered_dates
    }

    /// The task's registered scope.
    pub fn scope_items(&self, ix: TaskIx) -> Vec<ScopeItem> {
        let name = |i: &Interner, id: u32| i.get(id).map(str::to_owned);
        self.tasks[ix.get()]
            .items
            .iter()
            .map(|&[p, d]| ScopeItem {
                product: name(&self.products, p),
                distributor: name(&self.distributors, d),
            })
            .collect()
    }

    /// One shard, or `None` if the index is out of range.
    pub fn shard(&self, ix: TaskIx, shard: u32) -> Option<ShardView<'_>> {
        let t = &self.tasks[ix.get()];
        let rec = t.shards.get(shard as usize)?;
        let set = |ms: i64| (ms != 0).then_some(ms);
        Some(ShardView {
            index: shard,
            key: t.keys.get(shard as usize),
            status: rec.status,
            attempt: rec.attempt,
            generation: rec.generation,
            executor: self
                .assignees
                .get(rec.executor)
                .and_then(|(name, _, _)| self.executors.get(name)),
            epoch: self.assignees.get(rec.executor).map_or(0, |(_, epoch, _)| epoch),
            instance: self.assignees.get(rec.executor).map_or(0, |(_, _, instance)| instance),
            checkpoint: (rec.steps_done > 0).then(|| Checkpoint {
                steps_done: rec.steps_done,
                last_step: self.step_names.get(rec.step_name).unwrap_or(""),
            }),
            started_ms: set(rec.started_ms),
            finished_ms: set(rec.finished_ms),
            last_error: self.errors.get(&(ix.0, shard)).map(String::as_str),
            failures: u32::from(rec.failures),
            retry_after_rollback: rec.then_retry,
            held_by: self.holds.get(&(ix.0, Some(shard))).map(String::as_str),
        })
    }

    /// A page of the task's shards, optionally only those in `status`.
    pub fn shards(
        &self,
        ix: TaskIx,
        status: Option<ShardStatus>,
        offset: usize,
        limit: usize,
    ) -> Vec<ShardView<'_>> {
        let t = &self.tasks[ix.get()];
        (0..t.shards.len() as u32)
            .filter(|&i| status.is_none_or(|s| t.shards[i as usize].status == s))
            .skip(offset)
            .take(limit)
            .filter_map(|i| self.shard(ix, i))
            .collect()
    }

    /// The index of the shard with `key` (a scan of the task's keys; keys are not hashed, to
    /// keep a million shards small).
    pub fn find_shard(&self, ix: TaskIx, key: &str) -> Option<u32> {
        let t = &self.tasks[ix.get()];
        (0..t.keys.ends.len()).find(|&i| t.keys.get(i) == key).map(|i| i as u32)
    }

    /// The idempotency key of a shard's current generation.
    pub fn idempotency_key(&self, ix: TaskIx, shard: u32) -> Option<IdempotencyKey> {
        let view = self.shard(ix, shard)?;
        Some(IdempotencyKey {
            date: self.date,
            task: self.graph.id(ix).clone(),
            shard: ShardKey::new(view.key),
            generation: view.generation,
        })
    }

    /// Whether the task has run (or is about to): some shard is past `registered` other than
    /// by a skip or a completed rollback. Such a dependent blocks a rollback of its
    /// dependencies.
    pub fn has_run(&self, ix: TaskIx) -> bool {
        let c = &self.tasks[ix.get()].counts;
        c.total()
            > c.get(ShardStatus::Registered)
                + c.get(ShardStatus::Skipped)
                + c.get(ShardStatus::RolledBack)
    }

    /// The tasks depending on `ix`, directly or transitively, that have run, in topological
    /// order (the ones a rollback of `ix` would invalidate).
    pub fn dependents_that_ran(&self, ix: TaskIx) -> Vec<TaskIx> {
        self.graph.descendants(ix).into_iter().filter(|&d| self.has_run(d)).collect()
    }

    /// Operator actions so far, oldest first.
    pub fn audit_log(&self) -> &[AuditEntry] {
        &self.audit
    }

    /// A shard's status, or `None` if out of range.
    pub(super) fn shard_status_raw(&self, ix: TaskIx, shard: u32) -> Option<ShardStatus> {
        self.tasks[ix.get()].shards.get(shard as usize).map(|r| r.status)
    }
}
