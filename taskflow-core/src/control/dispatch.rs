//! Dispatch: queued jobs to free slots — rollbacks first (dependents before their
//! dependencies), then runs in topological order — each to the least-loaded executor that
//! hosts its behavior. The assignment is durable (`Dispatch`) before it is sent.

use tracing::warn;

use super::{Control, Effect};
use crate::graph::TaskIx;
use crate::job::{Assignment, AttemptKey, JobKind};
use crate::model::BusinessDate;
use crate::schedule;
use crate::state::{EventKind, ShardEvent};

/// Jobs no free executor can run are put back at the head of their queue, at most this many
/// per pump, so a behavior nobody hosts costs a bounded walk.
const MAX_SKIPPED: usize = 256;

impl Control {
    /// Dispatches queued jobs while slots are free.
    pub(super) fn pump(&mut self) {
        if self.draining.is_some() {
            return;
        }
        let mut skipped = Vec::new();
        let mut needs_plans = Vec::new();
        while skipped.len() < MAX_SKIPPED
            && self.books.executors().iter().any(|e| e.accepting() && e.free_slots() > 0)
        {
            let Some((ix, shard, kind)) = self.books.next_job(&self.day, &mut needs_plans) else {
                break;
            };
            let behavior = self.flow.task(ix).behavior.as_str();
            let free = self
                .books
                .executors()
                .iter()
                .map(|e| (if e.accepting() { e.free_slots() } else { 0 }, e.hosts(behavior)));
            match schedule::place(free) {
                Some(executor) => self.dispatch(executor, ix, shard, kind),
                None => {
                    if !self.books.executors().iter().any(|e| e.accepting() && e.hosts(behavior))
                        && self.opts.cluster.is_some()
                        && self.unhosted.insert(behavior.to_owned())
                    {
                        warn!(behavior, "no joined executor hosts this behavior; its shards wait");
                    }
                    skipped.push((ix, shard, kind));
                }
            }
        }
        for (ix, shard, kind) in skipped.into_iter().rev() {
            self.books.queue_front(ix, shard, kind);
        }
        for ix in needs_plans {
            self.request_prepare(ix);
        }
    }

    fn dispatch(&mut self, executor: usize, ix: TaskIx, shard: u32, kind: JobKind) {
        let Some(plans) = self.books.task(ix).prepared.clone() else { return };
        let (attempt, generation, steps_done, key_str) = {
            let Some(v) = self.day.shard(ix, shard) else { return };
            (v.attempt, v.generation, v.checkpoint.map_or(0, |c| c.steps_done), v.key.to_owned())
        };
        let def = self.flow.task(ix);
        let task = def.id.clone();
        let Some(e) = self.books.executor(executor) else { return };
        let attempt = match kind {
            JobKind::Run => {
                let event = ShardEvent::Dispatch {
                    attempt: attempt + 1,
                    executor: e.name.clone(),
                    epoch: self.opts.cluster.as_ref().map_or(0, |c| c.epoch),
                    instance: e.remote.as_ref().map_or(0, |r| r.instance),
                };
                if self.record(EventKind::Shard { task: task.clone(), shard, event }).is_none() {
                    return;
                }
                attempt + 1
            }
            JobKind::Rollback => attempt,
        };
        let dispatch = match kind {
            JobKind::Run => 0,
            JobKind::Rollback => self.books.next_rollback_dispatch(),
        };
        let key = AttemptKey { task, shard, attempt, generation, kind, dispatch };
        let Some(slot) = self.books.occupy(executor, ix, shard, key.clone()) else { return };
        let def = self.flow.task(ix);
        let scope = plans
            .plans
            .get(shard as usize)
            .filter(|p| p.key.as_str() == key_str)
            .map(|p| p.scope.clone())
            .unwrap_or_default();
        let assignment = Assignment {
            key,
            slot,
            behavior: def.behavior.clone(),
            date: self.date,
            shard_key: crate::model::ShardKey::new(key_str),
            scope,
            covered_dates: plans.covered_dates.iter().map(|d| BusinessDate(*d)).collect(),
            params: def.params.clone().into(),
            completed_steps: steps_done as usize,
            timeout: def.timeout,
        };
        self.notes.remove(&(ix, shard));
        self.after_last(Effect::Assign { executor, assignment });
    }
}
