//! The manager's day logic: record events and react to what they changed (registration of
//! successors, triggers, queues, retries, the unconfirmed policy), dispatch, reports, operator
//! actions, and the durability gate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, RpcReplyPort};
use tracing::{error, info, warn};

use super::{Effect, ManagerState};
use crate::actors::executor::ExecutorMsg;
use crate::actors::notifier::NotifierMsg;
use crate::actors::task::{Prepared, TaskActor, TaskArgs, TaskMsg};
use crate::actors::{Assignment, AttemptKey, JobKind, Report};
use crate::behavior::ShardOutcome;
use crate::flow::Flow;
use crate::graph::TaskIx;
use crate::model::{BusinessDate, Trigger};
use crate::runtime::{ActionError, DayOutcome, Notice};
use crate::schedule::{self, Readiness};
use crate::state::{
    Applied, AuditRecord, Command, EventKind, OperatorAction, ShardEvent, ShardStatus, Target,
    TaskStatus, UnconfirmedPolicy, decide, transition,
};

/// A digest of the flow's task definitions, recorded in `day_opened` so that a recovery with
/// a changed flow is noticed.
/// An executor name and process instance.
type Assignee = (String, u64);

pub(super) fn flow_digest(flow: &Flow) -> String {
    format!("crc32:{:08x}", crc32fast::hash(format!("{:?}", flow.tasks()).as_bytes()))
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// One shard that a bulk event moves: index, status before, status after, finished time.
type Moved = (u32, ShardStatus, ShardStatus, i64);

impl ManagerState {
    pub(super) fn journal_state(&self) -> &crate::state::DayState {
        // The journal is only taken at close, after which no handler runs.
        self.journal.as_ref().map(|j| j.state()).expect("journal open while handling")
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.state().last_seq())
    }

    // ----- recording -------------------------------------------------------------------

    /// Records one event and reacts to what it changed. `None` if it did not apply (a bug in
    /// a decision, logged).
    pub(super) fn record(&mut self, kind: EventKind) -> Option<(u64, Applied)> {
        let moved = self.moved_by(&kind);
        let at = now_ms();
        let result = self.journal.as_mut()?.record(kind.clone(), at);
        match result {
            Ok((seq, applied)) => {
                // Notices are published in seq order: this event's before any follow-up's.
                let kind_for_after = kind.clone();
                self.push_effect(seq, Effect::Publish(Notice::Event { seq, at_ms: at, kind }));
                self.after(seq, &kind_for_after, &applied, moved);
                Some((seq, applied))
            }
            Err(err) => {
                error!(%err, ?kind, "event not applied");
                None
            }
        }
    }

    /// The shards a task-level event moves, computed before it is applied.
    fn moved_by(&self, kind: &EventKind) -> Vec<Moved> {
        let (task, from, event) = match kind {
            EventKind::TaskReady { task } => {
                (task, vec![ShardStatus::Registered], ShardEvent::Ready)
            }
            EventKind::TaskShards { task, from, event } => (task, from.clone(), event.clone()),
            _ => return Vec::new(),
        };
        let state = self.journal_state();
        let Some(ix) = state.graph().index_of(task.as_str()) else { return Vec::new() };
        if !state.is_registered(ix) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for s in from {
            let Ok(to) = transition(s, event.kind()) else { continue };
            if state.counts(ix).get(s) == 0 {
                continue;
            }
            for v in state.shards(ix, Some(s), 0, usize::MAX) {
                out.push((v.index, s, to, v.finished_ms.unwrap_or(0)));
            }
        }
        if matches!(event, ShardEvent::Rollback) {
            // Newest first: the shard that finished last is undone first.
            out.sort_by_key(|m| std::cmp::Reverse(m.3));
        }
        out
    }

    fn after(&mut self, seq: u64, kind: &EventKind, applied: &Applied, moved: Vec<Moved>) {
        let Some(ix) = applied.task else {
            if matches!(kind, EventKind::DayClosed) {
                info!(date = %self.date, seq, "day closed");
            }
            return;
        };
        if let EventKind::Shard { event: ShardEvent::Dispatch { .. }, .. } = kind {
            let t = &mut self.tasks[ix.get()];
            t.attempts += 1;
            t.started_ms.get_or_insert_with(now_ms);
        }
        if let Some(status) = applied.task_status {
            let task = self.flow.graph().id(ix).clone();
            info!(task = %task, %status, seq, "task status");
            self.push_effect(seq, Effect::Publish(Notice::TaskStatus { seq, task, status }));
        }
        if let Some(ch) = applied.shard {
            self.on_shard_change(ix, ch.shard, ch.from, ch.to);
        }
        for (shard, from, to, _) in moved {
            self.on_shard_change(ix, shard, from, to);
        }
        if let Some(status) = applied.task_status {
            self.on_task_status(ix, status);
        }
        for &s in &applied.ready {
            self.on_deps_done(s);
        }
    }

    fn on_shard_change(&mut self, ix: TaskIx, shard: u32, from: ShardStatus, to: ShardStatus) {
        match to {
            ShardStatus::Pending => {
                self.tasks[ix.get()].runq.push_back(shard);
                self.run_tasks.insert((self.topo_pos[ix.get()], ix));
            }
            ShardStatus::RollingBack => {
                self.tasks[ix.get()].rbq.push_back(shard);
                self.rollback_tasks.insert((std::cmp::Reverse(self.topo_pos[ix.get()]), ix));
            }
            ShardStatus::Stopping => {
                if let Some(&(executor, slot)) = self.running.get(&(ix, shard))
                    && let Some(key) = self.executors[executor].slots[slot as usize].job.clone()
                {
                    let seq = self.last_seq();
                    self.push_effect(seq, Effect::Stop { executor, slot, key });
                }
            }
            ShardStatus::Failed if matches!(from, ShardStatus::Running | ShardStatus::Stopping) => {
                self.maybe_auto_retry(ix, shard);
            }
            ShardStatus::Unconfirmed
                if self.opts.unconfirmed_policy == UnconfirmedPolicy::AutoRollback =>
            {
                self.auto_retry_after_rollback.insert((ix, shard));
                let task = self.flow.graph().id(ix).clone();
                self.record(EventKind::Shard { task, shard, event: ShardEvent::Rollback });
            }
            ShardStatus::RolledBack
                if self.auto_retry_after_rollback.remove(&(ix, shard))
                    && self.journal_state().dependencies_done(ix) =>
            {
                let task = self.flow.graph().id(ix).clone();
                self.record(EventKind::Shard { task, shard, event: ShardEvent::Retry });
            }
            _ => {}
        }
    }

    fn on_task_status(&mut self, ix: TaskIx, status: TaskStatus) {
        let t = &mut self.tasks[ix.get()];
        if status.is_done() {
            t.finished_ms = Some(now_ms());
            t.prepared = None;
            t.runq.clear();
            t.rbq.clear();
            if let Some(actor) = t.actor.take() {
                // Drain, not stop: its mailbox may still hold a successor's `Prepare`, which
                // a stop would drop (leaving the successor `preparing` for ever).
                let _ = actor.drain();
            }
            self.check_day_complete();
        } else if status != TaskStatus::Unregistered {
            t.finished_ms = None;
            self.ensure_actor(ix);
        }
    }

    // ----- registration and triggers ----------------------------------------------------

    /// Starts the day: opens it if new and registers the roots, or recovers it.
    pub(super) fn bootstrap(&mut self) {
        let (opened, closed) = {
            let s = self.journal_state();
            (s.is_open(), s.is_closed())
        };
        if closed {
            info!(date = %self.date, "the day is closed; nothing to run");
            let all: Vec<TaskIx> = self.flow.graph().indices().collect();
            for ix in all {
                if self.journal_state().is_registered(ix) {
                    self.load_timings(ix);
                }
            }
            return;
        }
        if !opened {
            let kind =
                EventKind::DayOpened { date: self.date, flow_digest: self.flow_digest.clone() };
            self.record(kind);
            info!(date = %self.date, "day opened");
            let roots: Vec<TaskIx> = self.flow.graph().roots().collect();
            for r in roots {
                self.on_deps_done(r);
            }
            return;
        }
        self.recover();
    }

    fn recover(&mut self) {
        if self.journal_state().flow_digest() != self.flow_digest {
            warn!(
                date = %self.date,
                "the flow changed since the day was opened; the recorded registrations are kept"
            );
        }
        let order: Vec<TaskIx> = self.flow.graph().topo_order().to_vec();
        let mut unconfirmed = Vec::new();
        for ix in order {
            let s = self.journal_state();
            if !s.is_registered(ix) {
                if s.dependencies_done(ix) {
                    self.on_deps_done(ix);
                }
                continue;
            }
            if s.is_done(ix) {
                self.load_timings(ix);
                continue;
            }
            let work: Vec<(u32, ShardStatus, u32, Option<Assignee>)> = s
                .shards(ix, None, 0, usize::MAX)
                .into_iter()
                .map(|v| {
                    (v.index, v.status, v.attempt, v.executor.map(|e| (e.to_owned(), v.instance)))
                })
                .collect();
            self.load_timings(ix);
            self.ensure_actor(ix);
            for (shard, status, attempt, executor) in work {
                match status {
                    ShardStatus::Running | ShardStatus::Stopping => {
                        // A shard dispatched to an executor process may have finished there:
                        // wait for that executor to re-report before declaring it unconfirmed.
                        let remote = executor.filter(|(name, _)| {
                            !self.executors.iter().any(|e| e.remote.is_none() && &e.name == name)
                        });
                        match (remote, self.cluster.as_mut()) {
                            (Some(who), Some(c)) => {
                                c.awaiting.insert((ix, shard), who);
                            }
                            _ => unconfirmed.push((ix, shard)),
                        }
                    }
                    ShardStatus::Pending => self.on_shard_change(ix, shard, status, status),
                    ShardStatus::RollingBack => self.on_shard_change(ix, shard, status, status),
                    ShardStatus::Failed => {
                        let def = self.flow.task(ix);
                        if let Some(b) =
                            schedule::auto_retry(attempt, def.retries, def.retry_backoff)
                        {
                            self.schedule_retry(ix, shard, attempt, b);
                        }
                    }
                    _ => {}
                }
            }
            self.trigger_check(ix);
        }
        if let Some(c) = self.cluster.as_ref()
            && !c.awaiting.is_empty()
        {
            let window = c.listen.reconcile_window();
            warn!(
                shards = c.awaiting.len(),
                ?window,
                "shards were running on executors when the manager stopped; waiting for their \
                 executors to re-report"
            );
            self.myself.send_after(window, || super::ManagerMsg::ReconcileDue);
        }
        if !unconfirmed.is_empty() {
            warn!(
                shards = unconfirmed.len(),
                policy = ?self.opts.unconfirmed_policy,
                "shards were running when the process stopped; their outcome is unconfirmed"
            );
        }
        for (ix, shard) in unconfirmed {
            let task = self.flow.graph().id(ix).clone();
            self.record(EventKind::Shard { task, shard, event: ShardEvent::MarkUnconfirmed });
        }
        self.check_day_complete();
    }

    /// Rebuilds a registered task's attempts and timings from its shards (once, at start).
    fn load_timings(&mut self, ix: TaskIx) {
        let s = self.journal_state();
        let (mut attempts, mut started, mut finished) = (0u64, None::<i64>, None::<i64>);
        for v in s.shards(ix, None, 0, usize::MAX) {
            attempts += u64::from(v.attempt);
            if let Some(st) = v.started_ms {
                started = Some(started.map_or(st, |m: i64| m.min(st)));
            }
            if let Some(f) = v.finished_ms {
                finished = Some(finished.map_or(f, |m: i64| m.max(f)));
            }
        }
        let done = s.is_done(ix);
        let registered_at = s.registered_at_ms(ix);
        let t = &mut self.tasks[ix.get()];
        t.attempts = attempts;
        t.started_ms = started;
        t.finished_ms = if done { finished.or(registered_at) } else { None };
    }

    /// Every dependency of `s` is done: register it, or ready it if registered.
    fn on_deps_done(&mut self, s: TaskIx) {
        if self.journal_state().is_registered(s) {
            self.trigger_check(s);
        } else if self.tasks[s.get()].prepared.is_some() {
            self.register(s);
        } else {
            self.request_prepare(s);
        }
    }

    fn request_prepare(&mut self, s: TaskIx) {
        let t = &mut self.tasks[s.get()];
        if t.preparing || t.problem.is_some() {
            return;
        }
        t.preparing = true;
        self.preparing += 1;
        if crate::actors::task::is_trivial(&self.flow, s) {
            // A system task split by the flow: one scope item, nothing to walk. Preparing it
            // here costs less than the actor it would otherwise need.
            let result =
                crate::actors::task::prepare_task(&self.flow, &self.registry, self.date, s);
            self.on_prepared(s, result);
            return;
        }
        let t = &mut self.tasks[s.get()];
        match &t.actor {
            Some(actor) => {
                let _ = actor.cast(TaskMsg::Prepare(vec![s]));
            }
            None => {
                t.spawning = true;
                self.to_spawn.push((s, vec![s]));
            }
        }
    }

    /// Makes sure an active task has its actor (and its plans, for dispatch).
    ///
    /// A trivial task (prepared inline) gets its actor only when it needs one: for a retry
    /// timer, or to prepare a non-trivial successor ahead of its success.
    fn ensure_actor(&mut self, ix: TaskIx) {
        if self.tasks[ix.get()].prepared.is_none() {
            self.request_prepare(ix);
        }
        let needed = !crate::actors::task::is_trivial(&self.flow, ix)
            || !self.tasks[ix.get()].retry_stash.is_empty()
            || self.flow.graph().successors(ix).iter().any(|&s| {
                !crate::actors::task::is_trivial(&self.flow, s)
                    && self.tasks[s.get()].prepared.is_none()
            });
        let t = &mut self.tasks[ix.get()];
        if needed && t.actor.is_none() && !t.spawning {
            t.spawning = true;
            self.to_spawn.push((ix, Vec::new()));
        }
    }

    fn register(&mut self, s: TaskIx) {
        let Some(p) = self.tasks[s.get()].prepared.clone() else { return };
        let task = self.flow.graph().id(s).clone();
        let kind = EventKind::TaskRegistered {
            task,
            items: p.items.clone(),
            shards: p.plans.iter().map(|pl| pl.key.clone()).collect(),
            covered_dates: p.covered_dates.clone(),
        };
        if self.record(kind).is_none() {
            return;
        }
        if !self.journal_state().is_done(s) {
            self.ensure_actor(s);
            self.trigger_check(s);
        }
    }

    /// A registered task whose dependencies are done and whose shards wait for the trigger:
    /// ready it now, ask the clock, or wait for an operator.
    pub(super) fn trigger_check(&mut self, s: TaskIx) {
        let state = self.journal_state();
        if !state.is_registered(s)
            || !state.dependencies_done(s)
            || state.counts(s).get(ShardStatus::Registered) == 0
            || state.is_closed()
        {
            return;
        }
        let def = self.flow.task(s);
        let tz = self.flow.settings().time_zone;
        let auto = self.opts.auto_execute_manual;
        match schedule::readiness(&def.trigger, self.date, tz, Utc::now(), auto) {
            Readiness::Now => {
                let task = def.id.clone();
                if def.trigger == Trigger::Manual {
                    self.record(EventKind::Audit(AuditRecord {
                        actor: "taskflow".into(),
                        action: OperatorAction::Execute,
                        target: Target { task: task.clone(), shard: None },
                        reason: "manual tasks are executed automatically (auto_execute_manual)"
                            .into(),
                        from: "runtime".into(),
                    }));
                }
                self.set_fires_at(s, None);
                self.record(EventKind::TaskReady { task });
            }
            Readiness::At(at) => {
                if self.tasks[s.get()].fires_at != Some(at) {
                    self.set_fires_at(s, Some(at));
                    let _ =
                        self.clock.cast(crate::actors::clock::ClockMsg::Schedule { task: s, at });
                }
            }
            Readiness::Operator => {}
        }
    }

    pub(super) fn on_prepared(&mut self, ix: TaskIx, result: Result<Prepared, String>) {
        let t = &mut self.tasks[ix.get()];
        if std::mem::replace(&mut t.preparing, false) {
            self.preparing -= 1;
        }
        let p = match result {
            Ok(p) => p,
            Err(problem) => {
                error!(task = %self.flow.graph().id(ix), %problem, "cannot register task");
                self.tasks[ix.get()].problem = Some(problem);
                return;
            }
        };
        let state = self.journal_state();
        let (registered, deps_done, done) =
            (state.is_registered(ix), state.dependencies_done(ix), state.is_done(ix));
        if !registered {
            self.tasks[ix.get()].prepared = Some(Arc::new(p));
            if deps_done {
                self.register(ix);
            }
            return;
        }
        if done {
            return;
        }
        let state = self.journal_state();
        // Re-split after a restart or a rollback: line the plans up with the recorded keys.
        let n = state.shard_count(ix) as usize;
        let same = p.plans.len() == n
            && p.plans
                .iter()
                .enumerate()
                .all(|(i, pl)| state.shard(ix, i as u32).is_some_and(|v| v.key == pl.key.as_str()));
        let p = if same {
            p
        } else {
            warn!(task = %self.flow.graph().id(ix), "the split differs from the recorded shards; shards not split now run with no scope items");
            let mut by_key: std::collections::HashMap<_, _> =
                p.plans.into_iter().map(|pl| (pl.key.0.clone(), pl)).collect();
            let plans = (0..n as u32)
                .filter_map(|i| state.shard(ix, i))
                .map(|v| {
                    by_key.remove(v.key).unwrap_or_else(|| {
                        crate::behavior::ShardPlan::new(crate::model::ShardKey::new(v.key), vec![])
                    })
                })
                .collect();
            Prepared { plans, ..p }
        };
        let t = &mut self.tasks[ix.get()];
        t.prepared = Some(Arc::new(p));
        // `next_job` drops unprepared tasks from the dispatch sets; queued shards return now.
        let (runs, rollbacks) = (!t.runq.is_empty(), !t.rbq.is_empty());
        let pos = self.topo_pos[ix.get()];
        if runs {
            self.run_tasks.insert((pos, ix));
        }
        if rollbacks {
            self.rollback_tasks.insert((std::cmp::Reverse(pos), ix));
        }
    }

    pub(super) fn set_fires_at(&mut self, ix: TaskIx, at: Option<chrono::DateTime<Utc>>) {
        let t = &mut self.tasks[ix.get()];
        match (t.fires_at.is_some(), at.is_some()) {
            (false, true) => self.timed += 1,
            (true, false) => self.timed -= 1,
            _ => {}
        }
        t.fires_at = at;
    }

    // WIRE: `pub(super)` for `members::on_join` (a busy slot of a join still running its shard).
    pub(super) fn set_running(&mut self, ix: TaskIx, shard: u32, at: (usize, u32)) {
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

    pub(super) fn clear_running(&mut self) {
        for ((ix, _), _) in self.running.drain() {
            self.tasks[ix.get()].running = 0;
        }
    }

    /// A task actor stopped or failed: forget it (if it is still its task's actor). Whether
    /// `id` was a task actor.
    pub(super) fn task_actor_ended(&mut self, id: ractor::ActorId) -> bool {
        let Some(ix) = self.task_actors.remove(&id) else { return false };
        let t = &mut self.tasks[ix.get()];
        if t.actor.as_ref().is_some_and(|a| a.get_id() == id) {
            t.actor = None;
        }
        true
    }

    // ----- retries ---------------------------------------------------------------------

    fn maybe_auto_retry(&mut self, ix: TaskIx, shard: u32) {
        let Some(attempt) = self.journal_state().shard(ix, shard).map(|v| v.attempt) else {
            return;
        };
        let def = self.flow.task(ix);
        if let Some(backoff) = schedule::auto_retry(attempt, def.retries, def.retry_backoff) {
            info!(task = %def.id, shard, attempt, ?backoff, "shard failed; retrying after backoff");
            self.schedule_retry(ix, shard, attempt, backoff);
        }
    }

    fn schedule_retry(&mut self, ix: TaskIx, shard: u32, attempt: u32, after: Duration) {
        self.retry_timers += 1;
        let t = &mut self.tasks[ix.get()];
        match &t.actor {
            Some(a) => {
                let _ = a.cast(TaskMsg::ScheduleRetry { shard, attempt, after });
            }
            None => {
                t.retry_stash.push((shard, attempt, after));
                self.ensure_actor(ix);
            }
        }
    }

    pub(super) fn on_retry_due(&mut self, ix: TaskIx, shard: u32, attempt: u32) {
        self.retry_timers = self.retry_timers.saturating_sub(1);
        let state = self.journal_state();
        let current = state.shard(ix, shard).map(|v| (v.status, v.attempt));
        if current == Some((ShardStatus::Failed, attempt)) && state.dependencies_done(ix) {
            let task = self.flow.graph().id(ix).clone();
            self.record(EventKind::Shard { task, shard, event: ShardEvent::Retry });
        }
    }

    // ----- dispatch --------------------------------------------------------------------

    /// Dispatches queued jobs while slots are free: rollbacks first (dependents before their
    /// dependencies), then runs in topological order.
    ///
    /// A job goes to the least-loaded executor that hosts its behavior. Jobs no free executor
    /// can run are put back at the head of their queue (at most [`MAX_SKIPPED`] per pump, so
    /// a behavior nobody hosts costs a bounded walk).
    fn pump(&mut self) {
        const MAX_SKIPPED: usize = 256;
        if self.draining.is_some() {
            return;
        }
        let mut skipped = Vec::new();
        while skipped.len() < MAX_SKIPPED
            && self.executors.iter().any(|e| e.accepting() && !e.free.is_empty())
        {
            let Some((ix, shard, kind)) = self.next_job() else { break };
            let behavior = self.flow.task(ix).behavior.as_str();
            let free = self
                .executors
                .iter()
                .map(|e| (if e.accepting() { e.free.len() } else { 0 }, e.hosts(behavior)));
            match schedule::place(free) {
                Some(executor) => self.dispatch(executor, ix, shard, kind),
                None => {
                    if !self.executors.iter().any(|e| e.accepting() && e.hosts(behavior))
                        && let Some(c) = self.cluster.as_mut()
                        && c.unhosted.insert(behavior.to_owned())
                    {
                        warn!(behavior, "no joined executor hosts this behavior; its shards wait");
                    }
                    skipped.push((ix, shard, kind));
                }
            }
        }
        for (ix, shard, kind) in skipped.into_iter().rev() {
            self.requeue_front(ix, shard, kind);
        }
    }

    /// Puts a job back at the head of its task's queue.
    pub(super) fn requeue_front(&mut self, ix: TaskIx, shard: u32, kind: JobKind) {
        match kind {
            JobKind::Run => {
                self.tasks[ix.get()].runq.push_front(shard);
                self.run_tasks.insert((self.topo_pos[ix.get()], ix));
            }
            JobKind::Rollback => {
                self.tasks[ix.get()].rbq.push_front(shard);
                self.rollback_tasks.insert((std::cmp::Reverse(self.topo_pos[ix.get()]), ix));
            }
        }
    }

    /// The next job to dispatch. Tasks whose queue is empty leave the dispatch sets here; so
    /// do tasks without plans (until `on_prepared` puts them back), so a dispatch never walks
    /// past them again. Only rollback tasks blocked by their dependents are stepped over.
    fn next_job(&mut self) -> Option<(TaskIx, u32, JobKind)> {
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
                self.request_prepare(ix);
                continue;
            }
            let state = self.journal_state();
            // A dependency is rolled back only after its dependents' rollbacks finished.
            if state.graph().descendants(ix).iter().any(|&d| {
                state.counts(d).get(ShardStatus::RollingBack) > 0
                    && !self.tasks[d.get()].rbq.is_empty()
                    || self.tasks[d.get()].running > 0
            }) {
                continue;
            }
            while let Some(shard) = self.tasks[ix.get()].rbq.pop_front() {
                let status = self.journal_state().shard(ix, shard).map(|v| v.status);
                if status == Some(ShardStatus::RollingBack)
                    && !self.running.contains_key(&(ix, shard))
                {
                    return Some((ix, shard, JobKind::Rollback));
                }
            }
            self.rollback_tasks.remove(&entry);
        }
        while let Some(&entry) = self.run_tasks.first() {
            let ix = entry.1;
            if self.tasks[ix.get()].prepared.is_none() {
                self.run_tasks.remove(&entry);
                self.request_prepare(ix);
                continue;
            }
            while let Some(shard) = self.tasks[ix.get()].runq.pop_front() {
                let status = self.journal_state().shard(ix, shard).map(|v| v.status);
                if status == Some(ShardStatus::Pending) && !self.running.contains_key(&(ix, shard))
                {
                    return Some((ix, shard, JobKind::Run));
                }
            }
            self.run_tasks.remove(&entry);
        }
        None
    }

    fn dispatch(&mut self, executor: usize, ix: TaskIx, shard: u32, kind: JobKind) {
        let Some(plans) = self.tasks[ix.get()].prepared.clone() else { return };
        let (attempt, generation, steps_done, key_str) = {
            let Some(v) = self.journal_state().shard(ix, shard) else { return };
            (v.attempt, v.generation, v.checkpoint.map_or(0, |c| c.steps_done), v.key.to_owned())
        };
        let def = self.flow.task(ix);
        let task = def.id.clone();
        let attempt = match kind {
            JobKind::Run => {
                let event = ShardEvent::Dispatch {
                    attempt: attempt + 1,
                    executor: self.executors[executor].name.clone(),
                    epoch: self.cluster.as_ref().map_or(0, |c| c.epoch),
                    instance: self.executors[executor].remote.as_ref().map_or(0, |r| r.instance),
                };
                if self.record(EventKind::Shard { task: task.clone(), shard, event }).is_none() {
                    return;
                }
                attempt + 1
            }
            JobKind::Rollback => attempt,
        };
        let Some(slot) = self.executors[executor].free.pop() else { return };
        let key = AttemptKey { task, shard, attempt, generation, kind };
        let def = self.flow.task(ix);
        let scope = plans
            .plans
            .get(shard as usize)
            .filter(|p| p.key.as_str() == key_str)
            .map(|p| p.scope.clone())
            .unwrap_or_default();
        let assignment = Assignment {
            key: key.clone(),
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
        self.executors[executor].slots[slot as usize] =
            super::SlotRt { job: Some(key), abandoned: false };
        self.set_running(ix, shard, (executor, slot));
        self.notes.remove(&(ix, shard));
        let seq = self.last_seq();
        self.push_effect(seq, Effect::Assign { executor, assignment });
    }

    // ----- reports ---------------------------------------------------------------------

    pub(super) fn on_report(&mut self, report: Report) {
        match report {
            Report::Finished { key, executor, slot, outcome, last_step } => {
                let last_step = last_step.map(|c| (c.step as u32, c.name));
                let at = Some((executor, slot));
                self.finish_job(&key, at, last_step, Settle::Outcome(outcome));
            }
            Report::Abandoned { key, executor, slot, reason } => {
                if let Some(s) =
                    self.executors.get_mut(executor).and_then(|e| e.slots.get_mut(slot as usize))
                    && s.job.as_ref() == Some(&key)
                {
                    s.abandoned = true;
                }
                if let Some(ix) = self.flow.graph().index_of(key.task.as_str()) {
                    self.unset_running(ix, key.shard, (executor, slot));
                    self.notes.insert((ix, key.shard), reason.clone());
                }
                self.settle(&key, Settle::Abandoned(reason));
            }
            Report::SlotFreed { key, executor, slot } => {
                info!(job = %key, "abandoned attempt returned; its slot is free again");
                self.free_slot(executor, slot, &key);
                if let Some(ix) = self.flow.graph().index_of(key.task.as_str()) {
                    self.notes.remove(&(ix, key.shard));
                }
            }
        }
    }

    /// A job ended: frees its slot `at` (executor, slot) if it still holds one, records the
    /// last step's checkpoint (the job completed it; nothing waited for it) and settles the
    /// shard, in one batch.
    pub(super) fn finish_job(
        &mut self,
        key: &AttemptKey,
        at: Option<(usize, u32)>,
        last_step: Option<(u32, String)>,
        how: Settle,
    ) {
        if let Some((executor, slot)) = at {
            self.free_slot(executor, slot, key);
        }
        if let Some((step, name)) = last_step
            && let Err(e) = self.record_checkpoint(key, step, name)
        {
            info!(job = %key, %e, "last step's checkpoint not recorded");
        }
        self.settle(key, how);
    }

    pub(super) fn free_slot(&mut self, executor: usize, slot: u32, key: &AttemptKey) {
        let Some(e) = self.executors.get_mut(executor) else { return };
        let Some(s) = e.slots.get_mut(slot as usize) else { return };
        if s.job.as_ref() != Some(key) {
            return;
        }
        *s = super::SlotRt::default();
        e.free.push(slot);
        if let Some(ix) = self.flow.graph().index_of(key.task.as_str()) {
            self.unset_running(ix, key.shard, (executor, slot));
        }
    }

    /// Records what a job's end means for its shard, if the job is still the shard's current
    /// one (fencing); a stale report is ignored and logged once.
    pub(super) fn settle(&mut self, key: &AttemptKey, how: Settle) {
        let Some(ix) = self.flow.graph().index_of(key.task.as_str()) else { return };
        let Some((status, attempt, generation)) =
            self.journal_state().shard(ix, key.shard).map(|v| (v.status, v.attempt, v.generation))
        else {
            return;
        };
        let current = match key.kind {
            JobKind::Run => {
                matches!(status, ShardStatus::Running | ShardStatus::Stopping)
                    && attempt == key.attempt
            }
            JobKind::Rollback => status == ShardStatus::RollingBack && generation == key.generation,
        };
        if !current {
            if self.ignored.insert(key.clone()) {
                info!(job = %key, %status, "report of an attempt that is not current; ignored");
            }
            return;
        }
        let event = match (key.kind, how) {
            (JobKind::Run, Settle::Interrupted) => {
                if status == ShardStatus::Stopping {
                    ShardEvent::StopAcknowledged
                } else {
                    info!(job = %key, "interrupted by its executor's fence; it resumes elsewhere");
                    ShardEvent::Requeue
                }
            }
            (JobKind::Rollback, Settle::Interrupted) => {
                self.requeue_front(ix, key.shard, JobKind::Rollback);
                return;
            }
            (JobKind::Run, Settle::Outcome(ShardOutcome::Succeeded)) => ShardEvent::Succeed,
            (JobKind::Run, Settle::Outcome(ShardOutcome::Failed { reason })) => {
                ShardEvent::Fail { reason }
            }
            (JobKind::Run, Settle::Outcome(ShardOutcome::Cancelled)) => {
                if status == ShardStatus::Stopping {
                    ShardEvent::StopAcknowledged
                } else {
                    ShardEvent::Fail { reason: "cancelled".into() }
                }
            }
            (JobKind::Run, Settle::Abandoned(reason)) => {
                if status == ShardStatus::Stopping {
                    ShardEvent::StopAcknowledged
                } else {
                    ShardEvent::Fail { reason }
                }
            }
            (JobKind::Rollback, Settle::Outcome(ShardOutcome::Succeeded)) => {
                ShardEvent::RollbackSucceeded
            }
            (JobKind::Rollback, Settle::Outcome(ShardOutcome::Failed { reason }))
            | (JobKind::Rollback, Settle::Abandoned(reason)) => {
                ShardEvent::RollbackFailed { reason }
            }
            (JobKind::Rollback, Settle::Outcome(ShardOutcome::Cancelled)) => {
                ShardEvent::RollbackFailed { reason: "rollback cancelled".into() }
            }
        };
        if let ShardEvent::Fail { reason } | ShardEvent::RollbackFailed { reason } = &event {
            warn!(job = %key, %reason, "shard failed");
        }
        let task = key.task.clone();
        self.record(EventKind::Shard { task, shard: key.shard, event });
    }

    /// A running job completed a step that another follows: the reply (which lets the next
    /// step start) leaves once the checkpoint is durable.
    pub(super) fn on_checkpoint(
        &mut self,
        key: AttemptKey,
        step: u32,
        name: String,
        reply: super::CheckpointReply,
    ) {
        match self.record_checkpoint(&key, step, name) {
            Ok(seq) => self.push_effect(seq, Effect::Reply(Box::new(move |_| reply(Ok(()))))),
            Err(e) => reply(Err(e)),
        }
    }

    /// Records a step checkpoint of `key` if it is the shard's current attempt; its seq.
    pub(super) fn record_checkpoint(
        &mut self,
        key: &AttemptKey,
        step: u32,
        name: String,
    ) -> Result<u64, String> {
        let Some(ix) = self.flow.graph().index_of(key.task.as_str()) else {
            return Err(format!("unknown task `{}`", key.task));
        };
        let current = self.journal_state().shard(ix, key.shard).is_some_and(|v| {
            matches!(v.status, ShardStatus::Running | ShardStatus::Stopping)
                && v.attempt == key.attempt
                && key.kind == JobKind::Run
        });
        if !current {
            return Err(format!("{key} is not the shard's current attempt"));
        }
        let kind = EventKind::StepCheckpoint {
            task: key.task.clone(),
            shard: key.shard,
            generation: key.generation,
            step,
            name,
        };
        match self.record(kind) {
            Some((seq, _)) => Ok(seq),
            None => Err("the checkpoint does not apply".into()),
        }
    }

    // ----- operator actions ------------------------------------------------------------

    pub(super) fn on_act(&mut self, cmd: Command, reply: RpcReplyPort<Result<u64, ActionError>>) {
        if self.draining.is_some() {
            let _ = reply.send(Err(ActionError::Unavailable("shutting down".into())));
            return;
        }
        let events = match decide(self.journal_state(), &cmd) {
            Ok(events) => events,
            Err(e) => {
                info!(actor = %cmd.actor, action = cmd.action.verb(), target = %cmd.target, refused = %e, "operator action refused");
                let _ = reply.send(Err(ActionError::Refused(e)));
                return;
            }
        };
        info!(actor = %cmd.actor, action = cmd.action.verb(), target = %cmd.target, reason = %cmd.reason, "operator action");
        let mut audit_seq = None;
        for kind in events {
            if let Some((seq, _)) = self.record(kind) {
                audit_seq.get_or_insert(seq);
            }
        }
        let seq = self.last_seq();
        let audit_seq = audit_seq.unwrap_or(seq);
        self.push_effect(
            seq,
            Effect::Reply(Box::new(move |_| {
                let _ = reply.send(Ok(audit_seq));
            })),
        );
    }

    // ----- the day's end ---------------------------------------------------------------

    fn check_day_complete(&mut self) {
        let state = self.journal_state();
        if state.is_closed() || !state.all_done() {
            return;
        }
        if self.record(EventKind::DayClosed).is_some() {
            self.snapshot_after_flush = true;
            if self.opts.roll_over {
                warn!(
                    "roll-over to the next business day is not implemented yet; start the next day explicitly"
                );
            }
        }
    }

    /// Whether nothing can make progress without an operator (or a trigger time). Counters
    /// first; the dispatch sets hold, after a pump with free slots, only tasks that cannot
    /// dispatch (blocked rollbacks, registration problems), so this never walks all tasks.
    fn stalled(&self) -> bool {
        self.running.is_empty()
            && self.cluster.as_ref().is_none_or(|c| c.awaiting.is_empty())
            && self.retry_timers == 0
            && self.preparing == 0
            && self.to_spawn.is_empty()
            && self.timed == 0
            && self
                .run_tasks
                .iter()
                .map(|&(_, ix)| ix)
                .chain(self.rollback_tasks.iter().map(|&(_, ix)| ix))
                .all(|ix| {
                    self.tasks[ix.get()].problem.is_some()
                        || (self.tasks[ix.get()].runq.is_empty()
                            && self.tasks[ix.get()].rbq.is_empty())
                })
    }

    // ----- end of every handler --------------------------------------------------------

    /// Pumps the queue, flushes the batch, spawns task actors and answers waiters.
    pub(super) async fn finish(&mut self) -> Result<(), ractor::ActorProcessingErr> {
        self.pump();
        if let Some(j) = self.journal.as_mut() {
            j.flush()?;
            if std::mem::take(&mut self.snapshot_after_flush) {
                j.request_snapshot();
            }
        }
        for (ix, prepare) in std::mem::take(&mut self.to_spawn) {
            self.spawn_task_actor(ix, prepare).await;
        }
        if !self.waiters.is_empty() {
            let closed = self.journal.as_ref().is_some_and(|j| j.state().is_closed());
            if closed || self.stalled() {
                let board = self.board();
                let waiters = std::mem::take(&mut self.waiters);
                self.reply_when_durable(move |durable| {
                    let mut board = board;
                    board.durable_seq = durable;
                    for w in waiters {
                        let outcome = if closed {
                            DayOutcome::Completed(board.clone())
                        } else {
                            DayOutcome::Stalled(board.clone())
                        };
                        let _ = w.send(outcome);
                    }
                });
            }
        }
        Ok(())
    }

    async fn spawn_task_actor(&mut self, ix: TaskIx, prepare: Vec<TaskIx>) {
        let t = &mut self.tasks[ix.get()];
        t.spawning = false;
        if let Some(actor) = &t.actor {
            if !prepare.is_empty() {
                let _ = actor.cast(TaskMsg::Prepare(prepare));
            }
            return;
        }
        let done = self.journal.as_ref().is_some_and(|j| j.state().is_done(ix));
        if done && prepare.is_empty() {
            return;
        }
        // Prepare the successors ahead, so a success and the successor's registration share
        // a batch.
        let mut prepare = prepare;
        for &s in self.flow.graph().successors(ix) {
            let st = &mut self.tasks[s.get()];
            if st.prepared.is_none() && !st.preparing && st.problem.is_none() {
                let registered = self.journal.as_ref().is_some_and(|j| j.state().is_registered(s));
                if !registered {
                    st.preparing = true;
                    self.preparing += 1;
                    prepare.push(s);
                }
            }
        }
        let args = TaskArgs {
            task: ix,
            flow: self.flow.clone(),
            registry: self.registry.clone(),
            date: self.date,
            manager: self.myself.clone(),
            prepare,
        };
        match Actor::spawn_linked(None, TaskActor, args, self.myself.get_cell()).await {
            Ok((actor, _)) => {
                self.task_actors.insert(actor.get_id(), ix);
                for (shard, attempt, after) in std::mem::take(&mut self.tasks[ix.get()].retry_stash)
                {
                    let _ = actor.cast(TaskMsg::ScheduleRetry { shard, attempt, after });
                }
                self.tasks[ix.get()].actor = Some(actor);
            }
            Err(e) => error!(task = %self.flow.graph().id(ix), %e, "cannot start task actor"),
        }
    }

    // ----- the durability gate ---------------------------------------------------------

    pub(super) fn push_effect(&mut self, seq: u64, effect: Effect) {
        if let Some(e) = self.gate.push(seq, effect) {
            self.execute(vec![e]);
        }
    }

    pub(crate) fn reply_when_durable(&mut self, f: impl FnOnce(u64) + Send + 'static) {
        let seq = self.last_seq();
        self.push_effect(seq, Effect::Reply(Box::new(f)));
    }

    pub(super) fn release(&mut self, durable: u64) {
        let effects = self.gate.advance(durable);
        self.execute(effects);
    }

    fn execute(&mut self, effects: Vec<Effect>) {
        let durable = self.gate.durable();
        let mut notices = Vec::new();
        let mut confirms: HashMap<usize, Vec<crate::cluster::messages::WireAttempt>> =
            HashMap::new();
        // Messages to executors leave per executor, once per release (one network envelope
        // per executor process, not one per shard).
        let mut outbox: Vec<Vec<ExecutorMsg>> = Vec::new();
        let mut post = |executor: usize, msg: ExecutorMsg| {
            if outbox.len() <= executor {
                outbox.resize_with(executor + 1, Vec::new);
            }
            outbox[executor].push(msg);
        };
        for e in effects {
            match e {
                Effect::Assign { executor, assignment } => {
                    // The executor may have been lost (and its slots reset) since.
                    let e = &self.executors[executor];
                    if e.slots.get(assignment.slot as usize).and_then(|s| s.job.as_ref())
                        == Some(&assignment.key)
                    {
                        post(executor, ExecutorMsg::Assign(assignment));
                    }
                }
                Effect::Stop { executor, slot, key } => {
                    post(executor, ExecutorMsg::Stop { slot, key });
                }
                Effect::Publish(n) => notices.push(n),
                Effect::Reply(f) => f(durable),
                Effect::Confirm { executor, key } => {
                    confirms.entry(executor).or_default().push((&key).into());
                }
            }
        }
        for (executor, keys) in confirms {
            if let Some(super::ExecLink::Remote(r)) = self.executors.get(executor).map(|e| &e.actor)
            {
                r.confirm(keys);
            }
        }
        for (executor, msgs) in outbox.into_iter().enumerate() {
            if !msgs.is_empty() {
                self.executors[executor].actor.send_all(msgs);
            }
        }
        if !notices.is_empty() {
            let _ = self.notifier.cast(NotifierMsg::Publish(notices));
        }
    }

    /// Flushes, closes the journal (waiting for durability) and releases every held effect.
    pub(super) async fn close(&mut self) {
        let Some(journal) = self.journal.take() else { return };
        let last = journal.state().last_seq();
        let closed =
            tokio::task::spawn_blocking(move || journal.close(Duration::from_secs(30))).await;
        match closed {
            Ok(Ok(())) => {
                self.release(last);
                info!(date = %self.date, seq = last, "journal closed");
            }
            Ok(Err(e)) => error!(%e, "closing the journal failed"),
            Err(e) => error!(%e, "closing the journal panicked"),
        }
        if let Some(reply) = self.draining.take() {
            let _ = reply.send(Ok(()));
        }
    }
}

/// How a job ended, for [`ManagerState::settle`].
pub(super) enum Settle {
    Outcome(ShardOutcome),
    Abandoned(String),
    /// Cancelled by its executor's fence (its manager was out of reach), not by a stop: the
    /// run resumes at its last durable checkpoint, a rollback runs again.
    Interrupted,
}
