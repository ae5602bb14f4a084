//! Recording events and reacting to what they changed: registration of successors,
//! triggers, queues, retries, the unconfirmed policy, the day's end.
//!
//! `record` applies an event at once and queues a [`Reaction`]; reactions run in record order
//! from [`Control::react`] (a worklist, not recursion), and may record more events.

use std::sync::Arc;

use tracing::{error, info, warn};

use super::{Control, Effect, Timer};
use crate::graph::TaskIx;
use crate::job::JobKind;
use crate::model::Trigger;
use crate::schedule::Prepared;
use crate::schedule::{self, Readiness};
use crate::state::{
    Applied, AuditRecord, DayEvent, EventKind, OperatorAction, ShardEvent, ShardStatus, Target,
    TaskStatus, transition,
};
use crate::view::Notice;

/// One shard that a bulk event moves: index, status before, status after, finished time.
type Moved = (u32, ShardStatus, ShardStatus, i64);

/// What a recorded event changed, to react to.
#[derive(Clone)]
pub(crate) struct Reaction {
    task: TaskIx,
    applied: Applied,
    moved: Vec<Moved>,
}

impl Control {
    /// Records one event: applies it, queues it for the log, publishes it (once durable) and
    /// queues the reaction. `None` if it did not apply (a bug in a decision, logged).
    pub(super) fn record(&mut self, kind: EventKind) -> Option<u64> {
        let moved = self.moved_by(&kind);
        let at_ms = self.now.wall_ms;
        let event = DayEvent { seq: self.day.last_seq() + 1, at_ms, kind };
        if let Err(len) = event.check_size() {
            // Never applied, so never logged: the day stays what its log says.
            error!(
                len,
                limit = crate::state::MAX_EVENT_BYTES,
                seq = event.seq,
                "event over the size limit not applied"
            );
            return None;
        }
        let applied = match self.day.apply(&event) {
            Ok(applied) => applied,
            Err(err) => {
                error!(%err, kind = ?event.kind, "event not applied");
                return None;
            }
        };
        let seq = event.seq;
        if let Some(ix) = applied.task {
            if let Some(ch) = applied.shard {
                self.books.shard_moved(ix, ch.from, ch.to);
            }
            for &(_, from, to, _) in &moved {
                self.books.shard_moved(ix, from, to);
            }
        }
        if matches!(event.kind, EventKind::DayClosed) {
            info!(date = %self.date, seq, "day closed");
        }
        if let (Some(ix), EventKind::Shard { event: ShardEvent::Dispatch { .. }, .. }) =
            (applied.task, &event.kind)
        {
            let now = self.now.wall_ms;
            let t = self.books.task_mut(ix);
            t.attempts += 1;
            t.started_ms.get_or_insert(now);
        }
        // Notices are published in seq order: this event's, then its task's status.
        let notice = Notice::Event { seq, at_ms, kind: event.kind.clone() };
        self.pending.push(event);
        self.push_effect(seq, Effect::Publish(notice));
        if let (Some(ix), Some(status)) = (applied.task, applied.task_status) {
            let task = self.flow.graph().id(ix).clone();
            info!(task = %task, %status, seq, "task status");
            self.push_effect(seq, Effect::Publish(Notice::TaskStatus { seq, task, status }));
        }
        if let Some(task) = applied.task {
            self.work.push_back(Reaction { task, applied, moved });
        }
        Some(seq)
    }

    /// Runs queued reactions until none is left.
    pub(super) fn react(&mut self) {
        while let Some(r) = self.work.pop_front() {
            let ix = r.task;
            if let Some(ch) = r.applied.shard {
                self.on_shard_change(ix, ch.shard, ch.from, ch.to);
            }
            for (shard, from, to, _) in r.moved {
                self.on_shard_change(ix, shard, from, to);
            }
            if let Some(status) = r.applied.task_status {
                self.on_task_status(ix, status);
            }
            for &s in &r.applied.ready {
                self.on_deps_done(s);
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
        let state = &self.day;
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

    pub(super) fn on_shard_change(
        &mut self,
        ix: TaskIx,
        shard: u32,
        from: ShardStatus,
        to: ShardStatus,
    ) {
        match to {
            ShardStatus::Pending => self.books.queue(ix, shard, JobKind::Run),
            ShardStatus::RollingBack => self.books.queue(ix, shard, JobKind::Rollback),
            ShardStatus::Stopping => {
                if let Some((executor, slot)) = self.books.running_at(ix, shard)
                    && let Some(key) = self.books.slot_job(executor, slot).cloned()
                {
                    self.after_last(Effect::Stop { executor, slot, key });
                }
            }
            ShardStatus::Failed if matches!(from, ShardStatus::Running | ShardStatus::Stopping) => {
                self.maybe_auto_retry(ix, shard);
            }
            ShardStatus::Unconfirmed => {
                if let Some(event) = self.opts.unconfirmed_policy.on_unconfirmed() {
                    let task = self.flow.graph().id(ix).clone();
                    self.record(EventKind::Shard { task, shard, event });
                }
            }
            ShardStatus::RolledBack => self.maybe_retry_after_rollback(ix, shard),
            _ => {}
        }
    }

    fn on_task_status(&mut self, ix: TaskIx, status: TaskStatus) {
        if status.is_done() {
            self.books.task_done(ix, self.now.wall_ms);
            self.out.push(Effect::Retire { task: ix });
            self.check_day_complete();
        } else if status != TaskStatus::Unregistered {
            self.books.task_mut(ix).finished_ms = None;
            self.ensure_active(ix);
        }
    }

    // ----- registration and triggers ----------------------------------------------------

    /// Every dependency of `s` is done: register it, or ready it if registered.
    pub(super) fn on_deps_done(&mut self, s: TaskIx) {
        if self.day.is_registered(s) {
            self.trigger_check(s);
        } else if self.books.task(s).prepared.is_some() {
            self.register(s);
        } else {
            self.request_prepare(s);
        }
    }

    /// Asks for `s`'s registration and split: inline for a trivial task, else by its own
    /// task actor.
    pub(super) fn request_prepare(&mut self, s: TaskIx) {
        if self.books.task(s).problem.is_some() || !self.books.start_preparing(s) {
            return;
        }
        if crate::schedule::is_trivial(&self.flow, s) {
            // A system task split by the flow: one scope item, nothing to walk. Preparing it
            // here costs less than the actor it would otherwise need.
            let result = crate::schedule::prepare_by_flow(&self.flow, self.date, s);
            self.on_prepared(s, result);
            return;
        }
        self.out.push(Effect::Prepare { owner: s, tasks: vec![s] });
    }

    /// An active task (registered, not done) has its plans, and its successors are prepared
    /// ahead, so a success and the successor's registration and dispatch share a batch.
    pub(super) fn ensure_active(&mut self, ix: TaskIx) {
        if self.books.task(ix).prepared.is_none() {
            self.request_prepare(ix);
        }
        if std::mem::replace(&mut self.books.task_mut(ix).active, true) {
            return;
        }
        let mut ahead = Vec::new();
        for &s in self.flow.graph().successors(ix) {
            let t = self.books.task(s);
            if crate::schedule::is_trivial(&self.flow, s)
                || t.prepared.is_some()
                || t.problem.is_some()
                || self.day.is_registered(s)
            {
                continue;
            }
            if self.books.start_preparing(s) {
                ahead.push(s);
            }
        }
        if !ahead.is_empty() {
            self.out.push(Effect::Prepare { owner: ix, tasks: ahead });
        }
    }

    fn register(&mut self, s: TaskIx) {
        let Some(p) = self.books.task(s).prepared.clone() else { return };
        let task = self.flow.graph().id(s).clone();
        let kind = EventKind::TaskRegistered {
            task: task.clone(),
            items: p.items.clone(),
            shards: p.plans.iter().map(|pl| pl.key.clone()).collect(),
            covered_dates: p.covered_dates.clone(),
        };
        let probe = DayEvent { seq: self.day.last_seq() + 1, at_ms: self.now.wall_ms, kind };
        if let Err(len) = probe.check_size() {
            // The task fails to register (shown on its board row); the day goes on.
            let problem = format!(
                "task {task}: its registration of {} shards ({} scope items) encodes to {len} \
                 bytes, over the event limit of {} bytes: split it into fewer shards (a coarser \
                 shard_by) or narrow its scope",
                p.plans.len(),
                p.items.len(),
                crate::state::MAX_EVENT_BYTES
            );
            error!(%task, shards = p.plans.len(), len, "cannot register task: over the event limit");
            let t = self.books.task_mut(s);
            t.problem = Some(problem);
            t.prepared = None;
            return;
        }
        if self.record(probe.kind).is_none() {
            return;
        }
        if !self.day.is_done(s) {
            self.ensure_active(s);
            self.trigger_check(s);
        }
    }

    /// A registered task whose dependencies are done and whose shards wait for the trigger:
    /// ready it now, ask the clock, or wait for an operator.
    pub(super) fn trigger_check(&mut self, s: TaskIx) {
        let state = &self.day;
        let forced = state.is_forced(s);
        if !state.is_registered(s)
            || !state.may_run(s)
            || state.counts(s).get(ShardStatus::Registered) == 0
            || state.is_closed()
        {
            return;
        }
        let def = self.flow.task(s);
        if forced {
            // The operator's force-start (audited) stands for the trigger.
            self.books.set_fires_at(s, None);
            self.record(EventKind::TaskReady { task: def.id.clone() });
            return;
        }
        let tz = self.flow.settings().time_zone;
        let auto = self.opts.auto_execute_manual;
        let now = chrono::DateTime::from_timestamp_millis(self.now.wall_ms).unwrap_or_default();
        match schedule::readiness(&def.trigger, self.date, tz, now, auto) {
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
                self.books.set_fires_at(s, None);
                self.record(EventKind::TaskReady { task });
            }
            Readiness::At(at) => {
                let at_ms = at.timestamp_millis();
                if self.books.task(s).fires_at_ms() != Some(at_ms) {
                    self.books.set_fires_at(s, Some(at_ms));
                    self.out.push(Effect::WakeAt { task: s, at_wall_ms: at_ms });
                }
            }
            Readiness::Operator => {}
        }
    }

    pub(super) fn on_prepared(&mut self, ix: TaskIx, result: Result<Prepared, String>) {
        self.books.stop_preparing(ix);
        let p = match result {
            Ok(p) => p,
            Err(problem) => {
                error!(task = %self.flow.graph().id(ix), %problem, "cannot register task");
                self.books.task_mut(ix).problem = Some(problem);
                return;
            }
        };
        let state = &self.day;
        let (registered, deps_done, done) =
            (state.is_registered(ix), state.may_run(ix), state.is_done(ix));
        if !registered {
            self.books.task_mut(ix).prepared = Some(Arc::new(p));
            if deps_done {
                self.register(ix);
            }
            return;
        }
        if done {
            return;
        }
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
            let mut by_key: std::collections::BTreeMap<_, _> =
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
        self.books.task_mut(ix).prepared = Some(Arc::new(p));
        // `next_job` drops unprepared tasks from the dispatch sets; queued shards return now.
        self.books.requeue_task(ix);
    }

    // ----- retries ---------------------------------------------------------------------

    /// A shard's run failed: retry it after the backoff while its failures in this generation
    /// are within `retries` (requeues and restarts are not failures: the count is the day's).
    pub(super) fn maybe_auto_retry(&mut self, ix: TaskIx, shard: u32) {
        let Some((attempt, failures)) = self.day.shard(ix, shard).map(|v| (v.attempt, v.failures))
        else {
            return;
        };
        let def = self.flow.task(ix);
        if let Some(backoff) = schedule::auto_retry(failures, def.retries, def.retry_backoff) {
            info!(task = %def.id, shard, attempt, failures, ?backoff, "shard failed; retrying after backoff");
            self.schedule_retry(ix, shard, attempt, backoff);
        }
    }

    /// A shard rolled back by the unconfirmed policy (`RollbackThenRetry`, durable) runs again
    /// once rolled back — after a recovery too. If its dependencies are not done (an upstream
    /// was rolled back meanwhile) it waits, rolled back, for an operator.
    pub(super) fn maybe_retry_after_rollback(&mut self, ix: TaskIx, shard: u32) {
        let intent = self
            .day
            .shard(ix, shard)
            .is_some_and(|v| v.status == ShardStatus::RolledBack && v.retry_after_rollback);
        if intent && self.day.may_run(ix) {
            let task = self.flow.graph().id(ix).clone();
            self.record(EventKind::Shard { task, shard, event: ShardEvent::Retry });
        }
    }

    pub(super) fn schedule_retry(
        &mut self,
        ix: TaskIx,
        shard: u32,
        attempt: u32,
        after: std::time::Duration,
    ) {
        let due_wall_ms = self.now.wall_ms + after.as_millis() as i64;
        self.books.retry_armed(ix, shard, attempt, due_wall_ms);
        let at_ms = self.now.mono_ms + after.as_millis() as u64;
        self.out.push(Effect::Timer { at_ms, timer: Timer::Retry { task: ix, shard, attempt } });
    }

    pub(super) fn on_retry_due(&mut self, ix: TaskIx, shard: u32, attempt: u32) {
        if !self.books.retry_fired(ix, shard, attempt) {
            return;
        }
        let current = self.day.shard(ix, shard).map(|v| (v.status, v.attempt));
        if current == Some((ShardStatus::Failed, attempt)) && self.day.may_run(ix) {
            let task = self.flow.graph().id(ix).clone();
            self.record(EventKind::Shard { task, shard, event: ShardEvent::Retry });
        }
    }

    // ----- the day's end ---------------------------------------------------------------

    pub(super) fn check_day_complete(&mut self) {
        if self.day.is_closed() || !self.day.all_done() {
            return;
        }
        if self.record(EventKind::DayClosed).is_some() {
            self.snapshot_after = true;
        }
    }

    /// What keeps the day from counting as stalled (for the simulator's reports).
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn not_stalled_because(&self) -> String {
        format!(
            "running {:?}, awaiting {}, rollbacks in doubt {}, orphans {}, retries {}, preparing {}, timed {}, reactions {}, queued work {}",
            self.books.running_list(),
            self.awaiting.len(),
            self.rollbacks_in_doubt.len(),
            self.orphans.len(),
            self.books.retries_pending(),
            self.books.preparing_count(),
            self.books.timed(),
            self.work.len(),
            self.books.queued_work()
        )
    }

    /// Whether nothing can make progress without an operator (or a trigger time).
    pub(crate) fn stalled(&self) -> bool {
        self.books.running_len() == 0
            && self.awaiting.is_empty()
            && self.rollbacks_in_doubt.is_empty()
            && self.orphans.is_empty()
            && self.books.retries_pending() == 0
            && self.books.preparing_count() == 0
            && self.books.timed() == 0
            && self.work.is_empty()
            && !self.books.queued_work()
    }
}
