//! Opening the day, recovering it after a restart, and reconciling what executor processes
//! ran while this manager was down.

use tracing::{info, warn};

use super::{Control, Effect, Timer};
use crate::graph::TaskIx;
use crate::schedule;
use crate::state::{EventKind, ShardEvent, ShardStatus};

/// An executor name and process instance.
type Assignee = (String, u64);

impl Control {
    /// Starts the day: opens it if new and registers the roots, or recovers it.
    pub(super) fn bootstrap(&mut self) {
        let (opened, closed) = (self.day.is_open(), self.day.is_closed());
        if closed {
            info!(date = %self.date, "the day is closed; nothing to run");
            let all: Vec<TaskIx> = self.flow.graph().indices().collect();
            for ix in all {
                if self.day.is_registered(ix) {
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
        if self.day.flow_digest() != self.flow_digest {
            warn!(
                date = %self.date,
                "the flow changed since the day was opened; the recorded registrations are kept"
            );
        }
        let order: Vec<TaskIx> = self.flow.graph().topo_order().to_vec();
        let mut unconfirmed = Vec::new();
        for ix in order {
            let s = &self.day;
            if !s.is_registered(ix) {
                // A force-started task registers whatever its dependencies.
                if s.may_run(ix) {
                    self.on_deps_done(ix);
                }
                continue;
            }
            if s.is_done(ix) {
                self.load_timings(ix);
                continue;
            }
            let work: Vec<(u32, ShardStatus, u32, u32, Option<Assignee>)> = s
                .shards(ix, None, 0, usize::MAX)
                .into_iter()
                .map(|v| {
                    let executor = v.executor.map(|e| (e.to_owned(), v.instance));
                    (v.index, v.status, v.attempt, v.failures, executor)
                })
                .collect();
            self.load_timings(ix);
            self.ensure_active(ix);
            for (shard, status, attempt, failures, executor) in work {
                match status {
                    ShardStatus::Running | ShardStatus::Stopping => {
                        // A shard dispatched to an executor process may have finished there:
                        // wait for that executor to re-report before declaring it unconfirmed.
                        let remote = executor.filter(|(name, _)| {
                            !self
                                .books
                                .executors()
                                .iter()
                                .any(|e| e.remote.is_none() && &e.name == name)
                        });
                        match (remote, self.opts.cluster.is_some()) {
                            (Some(who), true) => {
                                self.awaiting.insert((ix, shard), who);
                            }
                            _ => unconfirmed.push((ix, shard)),
                        }
                    }
                    ShardStatus::RollingBack if self.opts.cluster.is_some() => {
                        // Its rollback may have been dispatched by the manager before this one
                        // and still run on an executor that has not noticed yet.
                        self.rollbacks_in_doubt.insert((ix, shard));
                        self.notes.insert(
                            (ix, shard),
                            "its rollback may still run on an executor of the previous manager; \
                             it runs again when the reconcile window is over"
                                .into(),
                        );
                    }
                    ShardStatus::Pending | ShardStatus::RollingBack => {
                        self.on_shard_change(ix, shard, status, status)
                    }
                    ShardStatus::Failed => {
                        let def = self.flow.task(ix);
                        if let Some(b) =
                            schedule::auto_retry(failures, def.retries, def.retry_backoff)
                        {
                            self.schedule_retry(ix, shard, attempt, b);
                        }
                    }
                    ShardStatus::RolledBack => self.maybe_retry_after_rollback(ix, shard),
                    _ => {}
                }
            }
            self.trigger_check(ix);
        }
        if let Some(c) = &self.opts.cluster
            && !(self.awaiting.is_empty() && self.rollbacks_in_doubt.is_empty())
        {
            let window = c.reconcile_ms;
            if !self.awaiting.is_empty() {
                warn!(
                    shards = self.awaiting.len(),
                    window_ms = window,
                    "shards were running on executors when the manager stopped; waiting for \
                     their executors to re-report"
                );
            }
            if !self.rollbacks_in_doubt.is_empty() {
                warn!(
                    shards = self.rollbacks_in_doubt.len(),
                    window_ms = window,
                    "shards were rolling back when the manager stopped; their rollbacks run \
                     again once every executor of the previous manager has fenced"
                );
            }
            let at_ms = self.now.mono_ms + window;
            self.out.push(Effect::Timer { at_ms, timer: Timer::Reconcile });
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
        let s = &self.day;
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
        let t = self.books.task_mut(ix);
        t.attempts = attempts;
        t.started_ms = started;
        t.finished_ms = if done { finished.or(registered_at) } else { None };
    }

    /// Shards dispatched to this executor name before the manager restarted that it did not
    /// re-report. If the very process they were dispatched to re-joins, they never started
    /// (it keeps every outcome until confirmed, and fenced jobs end before it joins): they
    /// run again from their checkpoint. If another process took the name, nobody can vouch
    /// for them: unconfirmed.
    pub(super) fn unvouched(&mut self, executor: &str, instance: u64) {
        let mine: Vec<((TaskIx, u32), u64)> = self
            .awaiting
            .iter()
            .filter(|(_, (e, _))| e.as_str() == executor)
            .map(|(k, (_, i))| (*k, *i))
            .collect();
        for (k, _) in &mine {
            self.awaiting.remove(k);
        }
        let (never_started, lost): (Vec<_>, Vec<_>) =
            mine.into_iter().partition(|&(_, i)| i == instance && i != 0);
        if !never_started.is_empty() {
            info!(
                %executor,
                shards = never_started.len(),
                "the executor never received these shards before the manager stopped; they run again"
            );
        }
        for ((ix, shard), _) in never_started {
            let running = self
                .day
                .shard(ix, shard)
                .is_some_and(|v| matches!(v.status, ShardStatus::Running | ShardStatus::Stopping));
            if running {
                let task = self.flow.graph().id(ix).clone();
                self.record(EventKind::Shard { task, shard, event: ShardEvent::Requeue });
            }
        }
        if !lost.is_empty() {
            warn!(
                %executor,
                shards = lost.len(),
                "another process re-joined under this executor's name without the outcome of \
                 shards it ran; they are unconfirmed"
            );
        }
        self.mark_unconfirmed(lost.into_iter().map(|(k, _)| k).collect());
    }

    /// The reconcile window is over.
    pub(super) fn reconcile_due(&mut self) {
        for (ix, shard) in std::mem::take(&mut self.rollbacks_in_doubt) {
            self.notes.remove(&(ix, shard));
            let status = self.day.shard(ix, shard).map(|v| v.status);
            if status == Some(ShardStatus::RollingBack) {
                self.on_shard_change(ix, shard, ShardStatus::RollingBack, ShardStatus::RollingBack);
            }
        }
        if self.awaiting.is_empty() {
            return;
        }
        let lost: Vec<(TaskIx, u32)> = std::mem::take(&mut self.awaiting).into_keys().collect();
        warn!(
            shards = lost.len(),
            "no executor re-reported these shards in time; their outcome is unconfirmed"
        );
        self.mark_unconfirmed(lost);
    }

    fn mark_unconfirmed(&mut self, shards: Vec<(TaskIx, u32)>) {
        for (ix, shard) in shards {
            let running = self
                .day
                .shard(ix, shard)
                .is_some_and(|v| matches!(v.status, ShardStatus::Running | ShardStatus::Stopping));
            if running && self.books.running_at(ix, shard).is_none() {
                let task = self.flow.graph().id(ix).clone();
                self.record(EventKind::Shard { task, shard, event: ShardEvent::MarkUnconfirmed });
            }
        }
    }
}
