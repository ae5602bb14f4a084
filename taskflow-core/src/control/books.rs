//! The core's runtime bookkeeping — executors and their slots, run and rollback queues,
//! running shards, per-task counters — behind one owner whose counters are changed only
//! through its methods and can be recounted from scratch ([`Books::check`]).
//!
//! None of it is persisted: a restarted manager rebuilds it from the day's state.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::flow::Flow;
use crate::graph::TaskIx;
use crate::job::{AttemptKey, JobKind};
use crate::schedule::Prepared;
use crate::state::{DayState, ShardStatus};

/// The order runnable tasks get free slots in: higher `priority` first, then the longer
/// remaining path to the day's end (in tasks: the critical path first), then flow order.
type RunRank = (Reverse<i32>, Reverse<u32>, u32);

/// Each task's [`RunRank`].
fn run_ranks(flow: &Flow, topo_pos: &[u32]) -> Vec<RunRank> {
    let graph = flow.graph();
    let mut path = vec![0u32; graph.len()];
    for &ix in graph.topo_order().iter().rev() {
        let longest = graph.successors(ix).iter().map(|s| path[s.get()]).max().unwrap_or(0);
        path[ix.get()] = longest + 1;
    }
    graph
        .indices()
        .map(|ix| (Reverse(flow.task(ix).priority), Reverse(path[ix.get()]), topo_pos[ix.get()]))
        .collect()
}

/// The core's view of one executor.
#[derive(Debug, Clone)]
pub(crate) struct ExecRt {
    /// Its name.
    pub(crate) name: String,
    /// Set for an executor process.
    pub(crate) remote: Option<RemoteRt>,
    /// Free slots (a stack: the lowest index is taken first).
    free: Vec<u32>,
    slots: Vec<SlotRt>,
    /// The behaviors it hosts (`None`: every behavior, an in-process one).
    pub(crate) behaviors: Option<BTreeSet<String>>,
    /// Draining: it gets no new jobs.
    pub(crate) draining: bool,
}

impl ExecRt {
    /// Whether it may get new jobs: joined, not lost, not draining.
    pub(crate) fn accepting(&self) -> bool {
        !self.draining && self.remote.as_ref().is_none_or(|r| !r.lost)
    }

    /// Whether it can run `behavior`.
    pub(crate) fn hosts(&self, behavior: &str) -> bool {
        self.behaviors.as_ref().is_none_or(|b| b.contains(behavior))
    }

    /// How many slots are free.
    pub(crate) fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Its slots.
    pub(crate) fn slots(&self) -> &[SlotRt] {
        &self.slots
    }
}

/// The core's view of an executor process.
#[derive(Debug, Clone)]
pub(crate) struct RemoteRt {
    /// Its process instance.
    pub(crate) instance: u64,
    /// When it was last heard from (monotonic ms).
    pub(crate) last_seen_ms: u64,
    /// Declared lost (or left).
    pub(crate) lost: bool,
}

/// One slot.
#[derive(Debug, Clone, Default)]
pub(crate) struct SlotRt {
    /// The job on it.
    pub(crate) job: Option<AttemptKey>,
    /// The job was abandoned (forced stop); the slot is busy until it returns.
    pub(crate) abandoned: bool,
}

/// The runtime bookkeeping of one task.
#[derive(Debug, Default, Clone)]
pub(crate) struct TaskRt {
    pub(crate) prepared: Option<Arc<Prepared>>,
    preparing: bool,
    /// Its task actor was asked to prepare its successors ahead.
    pub(crate) active: bool,
    pub(crate) problem: Option<String>,
    fires_at_ms: Option<i64>,
    pub(crate) attempts: u64,
    pub(crate) started_ms: Option<i64>,
    pub(crate) finished_ms: Option<i64>,
    /// Shards queued to run (checked lazily: a stale entry is dropped at dispatch).
    runq: VecDeque<u32>,
    /// Shards queued to roll back, newest first.
    rbq: VecDeque<u32>,
    /// How many of its shards are in `Books::running`.
    running: u32,
}

impl TaskRt {
    /// When its `at` trigger fires, if the clock was asked.
    pub(crate) fn fires_at_ms(&self) -> Option<i64> {
        self.fires_at_ms
    }

    /// Its registration is being computed (a `Prepare` effect is out).
    pub(crate) fn is_preparing(&self) -> bool {
        self.preparing
    }
}

/// Whether a shard in `status` holds its task's resource units: its run is in progress (or
/// may be: a lost executor's shard holds them until it is requeued, a recovered one until it
/// is reconciled). Rollbacks take no units.
pub(crate) fn holds_units(status: ShardStatus) -> bool {
    matches!(status, ShardStatus::Running | ShardStatus::Stopping)
}

/// One resource's books.
#[derive(Debug, Clone)]
pub(crate) struct ResRt {
    /// Its name.
    pub(crate) name: String,
    /// Its units now (the flow's, or an operator's change).
    pub(crate) units: u32,
    /// Units held by shards whose status [`holds_units`].
    pub(crate) in_use: u32,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Books {
    /// The flow's resources, in flow order.
    resources: Vec<ResRt>,
    /// Each task's needs: resource index and units.
    needs: Vec<Vec<(usize, u32)>>,
    /// A planted bug the simulator must find: dispatch ignores resources.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) ignore_resources: bool,
    executors: Vec<ExecRt>,
    tasks: Vec<TaskRt>,
    topo_pos: Vec<u32>,
    /// Each task's place in the run order (see [`RunRank`]).
    run_rank: Vec<RunRank>,
    run_tasks: BTreeSet<(RunRank, TaskIx)>,
    rollback_tasks: BTreeSet<(Reverse<u32>, TaskIx)>,
    /// The job of each shard that occupies a slot (not abandoned ones): executor and slot.
    running: BTreeMap<(TaskIx, u32), (usize, u32)>,
    by_name: BTreeMap<String, usize>,
    /// How many tasks have `fires_at` set.
    timed: usize,
    /// How many tasks are being prepared.
    preparing: usize,
    /// Retry timers asked for and not fired: the failed attempt and when the retry is due
    /// (wall-clock ms, for `waiting_for`), by shard.
    retries: BTreeMap<(TaskIx, u32), (u32, i64)>,
    /// Rollback dispatches so far (each gets its own number in its key).
    rollback_dispatches: u32,
}

impl Books {
    pub(crate) fn new(flow: &Flow, local: &[(String, u32)]) -> Books {
        let graph = flow.graph();
        let mut topo_pos = vec![0; graph.len()];
        for (i, ix) in graph.topo_order().iter().enumerate() {
            topo_pos[ix.get()] = i as u32;
        }
        let resources: Vec<ResRt> = flow
            .resources()
            .iter()
            .map(|r| ResRt { name: r.name.clone(), units: r.units, in_use: 0 })
            .collect();
        let needs = graph
            .indices()
            .map(|ix| {
                flow.task(ix)
                    .needs
                    .iter()
                    .filter_map(|(name, &units)| {
                        resources.iter().position(|r| &r.name == name).map(|r| (r, units))
                    })
                    .collect()
            })
            .collect();
        let mut books = Books {
            resources,
            needs,
            #[cfg(any(test, feature = "test-util"))]
            ignore_resources: false,
            executors: Vec::new(),
            tasks: (0..graph.len()).map(|_| TaskRt::default()).collect(),
            run_rank: run_ranks(flow, &topo_pos),
            topo_pos,
            run_tasks: BTreeSet::new(),
            rollback_tasks: BTreeSet::new(),
            running: BTreeMap::new(),
            by_name: BTreeMap::new(),
            timed: 0,
            preparing: 0,
            retries: BTreeMap::new(),
            rollback_dispatches: 0,
        };
        for (name, slots) in local {
            books.add_executor(name.clone(), *slots, None, None);
        }
        books
    }

    // ----- executors -------------------------------------------------------------------

    /// Registers an executor (a new index, or the index its name had): all slots free.
    pub(crate) fn add_executor(
        &mut self,
        name: String,
        slots: u32,
        remote: Option<RemoteRt>,
        behaviors: Option<BTreeSet<String>>,
    ) -> usize {
        let rt = ExecRt {
            name: name.clone(),
            remote,
            free: (0..slots).rev().collect(),
            slots: (0..slots).map(|_| SlotRt::default()).collect(),
            behaviors,
            draining: false,
        };
        let ix = match self.by_name.get(&name) {
            Some(&ix) => {
                // Whatever the old registration still held is forgotten (the caller lost it
                // first, which requeued its jobs).
                self.forget_running_of(ix);
                self.executors[ix] = rt;
                ix
            }
            None => {
                self.executors.push(rt);
                self.executors.len() - 1
            }
        };
        self.by_name.insert(name, ix);
        ix
    }

    pub(crate) fn executor(&self, ix: usize) -> Option<&ExecRt> {
        self.executors.get(ix)
    }

    pub(crate) fn executor_mut(&mut self, ix: usize) -> Option<&mut ExecRt> {
        self.executors.get_mut(ix)
    }

    pub(crate) fn executors(&self) -> &[ExecRt] {
        &self.executors
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The job on an executor's slot.
    pub(crate) fn slot_job(&self, executor: usize, slot: u32) -> Option<&AttemptKey> {
        self.executors.get(executor)?.slots.get(slot as usize)?.job.as_ref()
    }

    /// The slot of an executor that holds `key`.
    pub(crate) fn slot_of(&self, executor: usize, key: &AttemptKey) -> Option<u32> {
        let e = self.executors.get(executor)?;
        e.slots.iter().position(|s| s.job.as_ref() == Some(key)).map(|p| p as u32)
    }

    /// Takes a free slot of `executor` for `key` on shard `(ix, shard)`; the slot.
    pub(crate) fn occupy(
        &mut self,
        executor: usize,
        ix: TaskIx,
        shard: u32,
        key: AttemptKey,
    ) -> Option<u32> {
        let e = self.executors.get_mut(executor)?;
        let slot = e.free.pop()?;
        e.slots[slot as usize] = SlotRt { job: Some(key), abandoned: false };
        self.set_running(ix, shard, (executor, slot));
        Some(slot)
    }

    /// Marks a slot occupied by `key` (a busy slot of a join): abandoned — not a job of this
    /// registration — unless `running` names its shard, which then runs there.
    pub(crate) fn occupy_busy(
        &mut self,
        executor: usize,
        slot: u32,
        key: AttemptKey,
        running: Option<TaskIx>,
    ) {
        let Some(e) = self.executors.get_mut(executor) else { return };
        let Some(s) = e.slots.get_mut(slot as usize) else { return };
        let shard = key.shard;
        *s = SlotRt { job: Some(key), abandoned: running.is_none() };
        e.free.retain(|&x| x != slot);
        if let Some(ix) = running {
            self.set_running(ix, shard, (executor, slot));
        }
    }

    /// Frees `slot` of `executor` if it holds `key`; whether it did.
    pub(crate) fn free_slot(
        &mut self,
        executor: usize,
        slot: u32,
        key: &AttemptKey,
        ix: Option<TaskIx>,
    ) -> bool {
        let Some(e) = self.executors.get_mut(executor) else { return false };
        let Some(s) = e.slots.get_mut(slot as usize) else { return false };
        if s.job.as_ref() != Some(key) {
            return false;
        }
        *s = SlotRt::default();
        let lost = e.remote.as_ref().is_some_and(|r| r.lost);
        if !lost {
            e.free.push(slot);
        }
        if let Some(ix) = ix {
            self.unset_running(ix, key.shard, (executor, slot));
        }
        true
    }

    /// Marks the job on a slot abandoned: it keeps the slot but no longer counts as running.
    pub(crate) fn abandon(&mut self, executor: usize, slot: u32, key: &AttemptKey, ix: TaskIx) {
        if let Some(s) =
            self.executors.get_mut(executor).and_then(|e| e.slots.get_mut(slot as usize))
            && s.job.as_ref() == Some(key)
        {
            s.abandoned = true;
        }
        self.unset_running(ix, key.shard, (executor, slot));
    }

    /// Marks an executor process lost: no free slots, every job taken off its slots (and out
    /// of `running`). The jobs, by slot.
    pub(crate) fn lose(&mut self, executor: usize) -> Vec<(u32, AttemptKey)> {
        let Some(e) = self.executors.get_mut(executor) else { return Vec::new() };
        if let Some(r) = e.remote.as_mut() {
            r.lost = true;
        }
        e.free.clear();
        let jobs: Vec<(u32, AttemptKey)> = e
            .slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| std::mem::take(s).job.map(|k| (i as u32, k)))
            .collect();
        self.forget_running_of(executor);
        jobs
    }

    /// Marks a drained executor gone (its slots are empty).
    pub(crate) fn leave(&mut self, executor: usize) {
        if let Some(e) = self.executors.get_mut(executor) {
            e.free.clear();
            if let Some(r) = e.remote.as_mut() {
                r.lost = true;
            }
        }
    }

    fn forget_running_of(&mut self, executor: usize) {
        let mine: Vec<((TaskIx, u32), (usize, u32))> =
            self.running.iter().filter(|(_, at)| at.0 == executor).map(|(k, v)| (*k, *v)).collect();
        for ((ix, shard), at) in mine {
            self.unset_running(ix, shard, at);
        }
    }

    // ----- running shards --------------------------------------------------------------

    fn set_running(&mut self, ix: TaskIx, shard: u32, at: (usize, u32)) {
        if self.running.insert((ix, shard), at).is_none() {
            self.tasks[ix.get()].running += 1;
        }
    }

    /// Forgets the running job of `shard` if it is the one on `at`.
    fn unset_running(&mut self, ix: TaskIx, shard: u32, at: (usize, u32)) {
        if self.running.get(&(ix, shard)) == Some(&at) {
            self.running.remove(&(ix, shard));
            self.tasks[ix.get()].running -= 1;
        }
    }

    /// Forgets every running job (the shutdown grace is over).
    pub(crate) fn clear_running(&mut self) {
        let all: Vec<((TaskIx, u32), (usize, u32))> =
            self.running.iter().map(|(k, v)| (*k, *v)).collect();
        for ((ix, shard), at) in all {
            self.unset_running(ix, shard, at);
        }
    }

    pub(crate) fn running_at(&self, ix: TaskIx, shard: u32) -> Option<(usize, u32)> {
        self.running.get(&(ix, shard)).copied()
    }

    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn running_list(&self) -> Vec<((TaskIx, u32), (usize, u32))> {
        self.running.iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub(crate) fn running_len(&self) -> usize {
        self.running.len()
    }

    // ----- tasks -----------------------------------------------------------------------

    pub(crate) fn task(&self, ix: TaskIx) -> &TaskRt {
        &self.tasks[ix.get()]
    }

    pub(crate) fn task_mut(&mut self, ix: TaskIx) -> &mut TaskRt {
        &mut self.tasks[ix.get()]
    }

    pub(crate) fn set_fires_at(&mut self, ix: TaskIx, at: Option<i64>) {
        let t = &mut self.tasks[ix.get()];
        match (t.fires_at_ms.is_some(), at.is_some()) {
            (false, true) => self.timed += 1,
            (true, false) => self.timed -= 1,
            _ => {}
        }
        t.fires_at_ms = at;
    }

    /// Marks a task as being prepared; false if it already was.
    pub(crate) fn start_preparing(&mut self, ix: TaskIx) -> bool {
        let t = &mut self.tasks[ix.get()];
        if t.preparing {
            return false;
        }
        t.preparing = true;
        self.preparing += 1;
        true
    }

    pub(crate) fn stop_preparing(&mut self, ix: TaskIx) {
        let t = &mut self.tasks[ix.get()];
        if std::mem::replace(&mut t.preparing, false) {
            self.preparing -= 1;
        }
    }

    /// A task is done: nothing of it is queued any more.
    pub(crate) fn task_done(&mut self, ix: TaskIx, finished_ms: i64) {
        let t = &mut self.tasks[ix.get()];
        t.finished_ms = Some(finished_ms);
        t.prepared = None;
        t.runq.clear();
        t.rbq.clear();
    }

    // ----- queues ----------------------------------------------------------------------

    pub(crate) fn queue(&mut self, ix: TaskIx, shard: u32, kind: JobKind) {
        let pos = self.topo_pos[ix.get()];
        match kind {
            JobKind::Run => {
                self.tasks[ix.get()].runq.push_back(shard);
                self.run_tasks.insert((self.run_rank[ix.get()], ix));
            }
            JobKind::Rollback => {
                self.tasks[ix.get()].rbq.push_back(shard);
                self.rollback_tasks.insert((Reverse(pos), ix));
            }
        }
    }

    /// Puts a job back at the head of its task's queue.
    pub(crate) fn queue_front(&mut self, ix: TaskIx, shard: u32, kind: JobKind) {
        let pos = self.topo_pos[ix.get()];
        match kind {
            JobKind::Run => {
                self.tasks[ix.get()].runq.push_front(shard);
                self.run_tasks.insert((self.run_rank[ix.get()], ix));
            }
            JobKind::Rollback => {
                self.tasks[ix.get()].rbq.push_front(shard);
                self.rollback_tasks.insert((Reverse(pos), ix));
            }
        }
    }

    /// A task got its plans: its queued shards may dispatch again.
    pub(crate) fn requeue_task(&mut self, ix: TaskIx) {
        let pos = self.topo_pos[ix.get()];
        let t = &self.tasks[ix.get()];
        if !t.runq.is_empty() {
            self.run_tasks.insert((self.run_rank[ix.get()], ix));
        }
        if !t.rbq.is_empty() {
            self.rollback_tasks.insert((Reverse(pos), ix));
        }
    }

    /// The next job to dispatch (see `dispatch::next_job`). Tasks whose queue is empty leave
    /// the dispatch sets; so do tasks without plans (`needs_plans` gets them, until
    /// [`Books::requeue_task`] puts them back). Only rollback tasks blocked by their
    /// dependents are stepped over.
    pub(crate) fn next_job(
        &mut self,
        day: &DayState,
        needs_plans: &mut Vec<TaskIx>,
    ) -> Option<(TaskIx, u32, JobKind)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut after = None;
        loop {
            let next = match after {
                None => self.rollback_tasks.first(),
                Some(k) => self.rollback_tasks.range((Excluded(k), Unbounded)).next(),
            };
            let Some(&entry) = next else { break };
            after = Some(entry);
            let ix = entry.1;
            if self.tasks[ix.get()].prepared.is_none() {
                self.rollback_tasks.remove(&entry);
                needs_plans.push(ix);
                continue;
            }
            // A dependency is rolled back only after its dependents' rollbacks finished.
            if day.graph().descendants(ix).iter().any(|&d| {
                day.counts(d).get(ShardStatus::RollingBack) > 0
                    && !self.tasks[d.get()].rbq.is_empty()
                    || self.tasks[d.get()].running > 0
            }) {
                continue;
            }
            while let Some(shard) = self.tasks[ix.get()].rbq.pop_front() {
                let status = day.shard(ix, shard).map(|v| v.status);
                if status == Some(ShardStatus::RollingBack)
                    && !self.running.contains_key(&(ix, shard))
                {
                    return Some((ix, shard, JobKind::Rollback));
                }
            }
            self.rollback_tasks.remove(&entry);
        }
        let mut after = None;
        loop {
            let next = match after {
                None => self.run_tasks.first(),
                Some(k) => self.run_tasks.range((Excluded(k), Unbounded)).next(),
            };
            let Some(&entry) = next else { break };
            let ix = entry.1;
            if self.tasks[ix.get()].prepared.is_none() {
                self.run_tasks.remove(&entry);
                needs_plans.push(ix);
                continue;
            }
            // A held task leaves the dispatch set with its queue kept; freeing it puts it
            // back (`requeue_task`). A held shard leaves the queue; freeing it queues it.
            if day.held_by(ix, None).is_some() {
                self.run_tasks.remove(&entry);
                continue;
            }
            // A task whose resources are short is stepped over (it stays in the set): the
            // tasks after it that need other resources, or none, are not blocked behind it.
            if self.resources_short(ix)
                && self.tasks[ix.get()]
                    .runq
                    .iter()
                    .any(|&sh| day.shard(ix, sh).is_some_and(|v| v.status == ShardStatus::Pending))
            {
                after = Some(entry);
                continue;
            }
            while let Some(shard) = self.tasks[ix.get()].runq.pop_front() {
                let status = day.shard(ix, shard).map(|v| v.status);
                if status == Some(ShardStatus::Pending)
                    && !self.running.contains_key(&(ix, shard))
                    && day.held_by(ix, Some(shard)).is_none()
                {
                    return Some((ix, shard, JobKind::Run));
                }
            }
            self.run_tasks.remove(&entry);
        }
        None
    }

    /// Whether some queued task could still dispatch (one without a registration problem
    /// and with something queued).
    pub(crate) fn queued_work(&self) -> bool {
        self.run_tasks
            .iter()
            .map(|&(_, ix)| ix)
            .chain(self.rollback_tasks.iter().map(|&(_, ix)| ix))
            .any(|ix| {
                let t = &self.tasks[ix.get()];
                t.problem.is_none() && (!t.runq.is_empty() || !t.rbq.is_empty())
            })
    }

    /// The number of the next rollback dispatch (from 1).
    pub(crate) fn next_rollback_dispatch(&mut self) -> u32 {
        self.rollback_dispatches = self.rollback_dispatches.wrapping_add(1).max(1);
        self.rollback_dispatches
    }

    // ----- resources -------------------------------------------------------------------

    /// Counts the units held in `day` from scratch (a start or a recovery walks the day once).
    pub(crate) fn init_resources(&mut self, day: &DayState) {
        let in_use = self.recount_units(day);
        for (r, n) in self.resources.iter_mut().zip(in_use) {
            r.in_use = n;
        }
    }

    /// The units each resource has in use in `day`, counted from its shards (those whose
    /// status [`holds_units`]): what [`Books::init_resources`] sets and [`Books::check`]
    /// compares.
    fn recount_units(&self, day: &DayState) -> Vec<u32> {
        let mut in_use = vec![0u32; self.resources.len()];
        for (t, needs) in self.needs.iter().enumerate() {
            let ix = TaskIx(t as u32);
            if needs.is_empty() || !day.is_registered(ix) {
                continue;
            }
            let c = day.counts(ix);
            let holding = c.get(ShardStatus::Running) + c.get(ShardStatus::Stopping);
            for &(r, units) in needs {
                in_use[r] += units * holding;
            }
        }
        in_use
    }

    /// A shard of `ix` moved from `from` to `to`: its units are taken or given back.
    pub(crate) fn shard_moved(&mut self, ix: TaskIx, from: ShardStatus, to: ShardStatus) {
        let (was, is) = (holds_units(from), holds_units(to));
        if was == is {
            return;
        }
        for &(r, units) in &self.needs[ix.get()] {
            let res = &mut self.resources[r];
            res.in_use = if is { res.in_use + units } else { res.in_use.saturating_sub(units) };
        }
    }

    /// The first resource whose free units are fewer than a shard of `ix` needs, if any
    /// (lowered units leave a resource over-used until enough shards end: it pre-empts
    /// nothing).
    pub(crate) fn lacking(&self, ix: TaskIx) -> Option<&ResRt> {
        self.needs[ix.get()]
            .iter()
            .map(|&(r, units)| (&self.resources[r], units))
            .find_map(|(res, units)| (res.in_use.saturating_add(units) > res.units).then_some(res))
    }

    /// Whether dispatch must step over `ix` for its resources.
    fn resources_short(&self, ix: TaskIx) -> bool {
        #[cfg(any(test, feature = "test-util"))]
        if self.ignore_resources {
            return false;
        }
        self.lacking(ix).is_some()
    }

    /// The resources, in flow order.
    pub(crate) fn resources(&self) -> &[ResRt] {
        &self.resources
    }

    // ----- retry timers ----------------------------------------------------------------

    /// A retry timer is asked for, due at `due_wall_ms`.
    pub(crate) fn retry_armed(&mut self, ix: TaskIx, shard: u32, attempt: u32, due_wall_ms: i64) {
        self.retries.insert((ix, shard), (attempt, due_wall_ms));
    }

    /// When the shard's armed retry is due (wall-clock ms), if one is.
    pub(crate) fn retry_due(&self, ix: TaskIx, shard: u32) -> Option<i64> {
        self.retries.get(&(ix, shard)).map(|&(_, at)| at)
    }

    /// When the task's first armed retry is due (wall-clock ms), if one is.
    pub(crate) fn first_retry_due(&self, ix: TaskIx) -> Option<i64> {
        self.retries.range((ix, 0)..=(ix, u32::MAX)).map(|(_, &(_, at))| at).min()
    }

    /// A retry timer fired; whether it was the one armed last for the shard.
    pub(crate) fn retry_fired(&mut self, ix: TaskIx, shard: u32, attempt: u32) -> bool {
        if self.retries.get(&(ix, shard)).map(|&(a, _)| a) == Some(attempt) {
            self.retries.remove(&(ix, shard));
            return true;
        }
        false
    }

    /// The armed retry timers: shard, failed attempt, due (wall-clock ms).
    pub(crate) fn retry_list(&self) -> Vec<((TaskIx, u32), (u32, i64))> {
        self.retries.iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub(crate) fn retries_pending(&self) -> usize {
        self.retries.len()
    }

    pub(crate) fn timed(&self) -> usize {
        self.timed
    }

    pub(crate) fn preparing_count(&self) -> usize {
        self.preparing
    }

    // ----- checks ----------------------------------------------------------------------

    /// Recounts every counter from scratch and compares; also that the slot tables and
    /// `running` agree, and that running shards are running in the day's state.
    #[cfg(any(debug_assertions, test, feature = "test-util"))]
    pub(crate) fn check(&self, day: &DayState) -> Result<(), String> {
        let mut per_task = vec![0u32; self.tasks.len()];
        for (&(ix, shard), &(executor, slot)) in &self.running {
            per_task[ix.get()] += 1;
            let Some(e) = self.executors.get(executor) else {
                return Err(format!("running {ix:?}[{shard}] on unknown executor {executor}"));
            };
            let Some(s) = e.slots.get(slot as usize) else {
                return Err(format!("running {ix:?}[{shard}] on unknown slot {executor}/{slot}"));
            };
            let status = day.shard(ix, shard).map(|v| v.status);
            if !matches!(
                status,
                Some(ShardStatus::Running | ShardStatus::Stopping | ShardStatus::RollingBack)
            ) {
                return Err(format!("running {ix:?}[{shard}] but its status is {status:?}"));
            }
            match &s.job {
                Some(k) if k.shard == shard && !s.abandoned => {}
                other => {
                    return Err(format!(
                        "running {ix:?}[{shard}] says slot {executor}/{slot}, which holds \
                         {other:?} (abandoned {})",
                        s.abandoned
                    ));
                }
            }
        }
        for (i, t) in self.tasks.iter().enumerate() {
            if t.running != per_task[i] {
                return Err(format!(
                    "task {i}: running {} but {} recounted",
                    t.running, per_task[i]
                ));
            }
        }
        let in_use = self.recount_units(day);
        for (r, &n) in self.resources.iter().zip(&in_use) {
            if r.in_use != n {
                return Err(format!("resource {}: in use {} but {n} recounted", r.name, r.in_use));
            }
        }
        let timed = self.tasks.iter().filter(|t| t.fires_at_ms.is_some()).count();
        if timed != self.timed {
            return Err(format!("timed {} but {timed} recounted", self.timed));
        }
        let preparing = self.tasks.iter().filter(|t| t.preparing).count();
        if preparing != self.preparing {
            return Err(format!("preparing {} but {preparing} recounted", self.preparing));
        }
        for (ix, e) in self.executors.iter().enumerate() {
            let lost = e.remote.as_ref().is_some_and(|r| r.lost);
            let mut seen = vec![false; e.slots.len()];
            for &f in &e.free {
                let Some(s) = e.slots.get(f as usize) else {
                    return Err(format!("executor {ix}: free slot {f} does not exist"));
                };
                if std::mem::replace(&mut seen[f as usize], true) {
                    return Err(format!("executor {ix}: slot {f} free twice"));
                }
                if s.job.is_some() {
                    return Err(format!("executor {ix}: slot {f} free but holds {:?}", s.job));
                }
            }
            if !lost {
                let idle = e.slots.iter().filter(|s| s.job.is_none()).count();
                if idle != e.free.len() {
                    return Err(format!(
                        "executor {ix}: {idle} idle slots but {} free",
                        e.free.len()
                    ));
                }
            } else if !e.free.is_empty() {
                return Err(format!("executor {ix} is lost but has free slots"));
            }
            for (slot, s) in e.slots.iter().enumerate() {
                let Some(k) = &s.job else { continue };
                if s.abandoned {
                    continue;
                }
                let Some(tix) = day.graph().index_of(k.task.as_str()) else {
                    return Err(format!("slot {ix}/{slot} holds unknown task {}", k.task));
                };
                if self.running.get(&(tix, k.shard)) != Some(&(ix, slot as u32)) {
                    return Err(format!("slot {ix}/{slot} holds {k} but it is not running there"));
                }
            }
        }
        Ok(())
    }
}
