//! Executor processes joining, heartbeating, draining and getting lost.

use std::collections::BTreeSet;

use tracing::{info, warn};

use super::books::RemoteRt;
use super::reports::Settle;
use super::{Answer, Control, Effect, JoinAnswer, JoinIn, KeyDay, Orphans, ReqId, Timer};
use crate::graph::TaskIx;
use crate::job::{AttemptKey, JobKind};
use crate::state::{EventKind, ShardEvent, ShardStatus};

/// At most this many slots are taken from a join.
const MAX_SLOTS: u32 = 4096;

impl Control {
    pub(super) fn on_join(&mut self, req: ReqId, join: JoinIn) {
        // Answered once the re-reported outcomes it settled are durable: the executor forgets
        // them on acceptance.
        let answer = self.decide_join(join);
        self.reply_when_durable(req, Answer::Join(answer));
    }

    fn decide_join(&mut self, join: JoinIn) -> JoinAnswer {
        let Some(cluster) = self.opts.cluster.clone() else {
            return JoinAnswer::Rejected { reason: "this manager accepts no executors".into() };
        };
        let reject = |reason: String| {
            warn!(executor = %join.executor, %reason, "join rejected");
            JoinAnswer::Rejected { reason }
        };
        if join.protocol_version != cluster.protocol_version {
            return reject(format!(
                "protocol version mismatch: the executor speaks {}, the manager speaks {}",
                join.protocol_version, cluster.protocol_version
            ));
        }
        if join.executor.is_empty() || join.slots == 0 {
            return reject("an executor needs a non-empty name and at least one slot".into());
        }
        let mut used: Vec<&str> = self.flow.tasks().iter().map(|t| t.behavior.as_str()).collect();
        used.sort_unstable();
        used.dedup();
        let (hosted, missing): (Vec<&str>, Vec<&str>) =
            used.iter().partition(|b| join.behaviors.iter().any(|h| h == *b));
        if hosted.is_empty() {
            return reject(format!(
                "unknown behavior: this executor hosts {} but the flow uses only {}; it could \
                 run nothing",
                if join.behaviors.is_empty() {
                    "nothing".into()
                } else {
                    join.behaviors.join(", ")
                },
                used.join(", ")
            ));
        }
        if !missing.is_empty() {
            info!(
                executor = %join.executor,
                missing = %missing.join(", "),
                "the executor does not host every behavior of the flow; it gets only the shards \
                 of the ones it hosts"
            );
        }
        let existing = self.books.by_name(&join.executor);
        if let Some(ix) = existing
            && let Some(r) = self.books.executor(ix).and_then(|e| e.remote.as_ref())
            && !r.lost
            && r.instance != join.instance
        {
            return reject(format!(
                "duplicate name: an executor named `{}` is already connected; give each \
                 executor a unique --name",
                join.executor
            ));
        }
        if existing.is_some_and(|ix| self.books.executor(ix).is_some_and(|e| e.remote.is_none())) {
            return reject(format!(
                "duplicate name: `{}` is an in-process executor of the manager",
                join.executor
            ));
        }
        if !join.agent_found {
            return reject("the executor's agent was not advertised on its session".into());
        }
        // Two-phase confirmation: settle what it still holds before its old registration
        // (if any) is dropped and its remaining jobs requeued.
        let mut reconciled = 0usize;
        for held in &join.held {
            reconciled += usize::from(self.reconcile_held(&join.executor, held));
        }
        // Busy slots whose job is still its shard's assignment keep the shard running there
        // (before `unvouched` and the re-join's `lose_executor` would requeue it).
        let (vouched, still_running) = self.vouch_busy_slots(&join, existing);
        self.unvouched(&join.executor, join.instance);
        // Its jobs from a registration lost earlier: it joined again, so it has fenced them.
        self.release_orphans(Some((&join.executor, join.instance)));
        if let Some(ix) = existing
            && self.books.executor(ix).and_then(|e| e.remote.as_ref()).is_some_and(|r| !r.lost)
        {
            // The same process joins again (it fenced itself): its other jobs are gone.
            self.lose_executor(ix, "it joined again", true);
        }
        let slots = join.slots.min(MAX_SLOTS);
        let behaviors: BTreeSet<String> = join.behaviors.iter().cloned().collect();
        self.unhosted.retain(|b| !behaviors.contains(b));
        let remote =
            RemoteRt { instance: join.instance, last_seen_ms: self.now.mono_ms, lost: false };
        let ix =
            self.books.add_executor(join.executor.clone(), slots, Some(remote), Some(behaviors));
        // Every busy slot stays occupied by its job (shown abandoned: not a job of this
        // registration) until that job's end is reported or the executor is lost; a vouched,
        // live one is a job of this registration, its shard running there.
        for b in join.busy.iter().filter(|b| b.slot < slots) {
            self.books.occupy_busy(ix, b.slot, b.key.clone(), None);
        }
        for (task, slot, key) in still_running {
            self.books.occupy_busy(ix, slot, key, Some(task));
        }
        self.out.push(Effect::Link { executor: ix });
        info!(
            executor = %join.executor,
            slots,
            epoch = cluster.epoch,
            held = join.held.len(),
            reconciled,
            busy = join.busy.len(),
            vouched,
            "executor joined"
        );
        JoinAnswer::Accepted {
            epoch: cluster.epoch,
            lease_ms: cluster.lease_ms,
            heartbeat_ms: cluster.heartbeat_ms,
            day: self.key_day(),
        }
    }

    /// The day of this manager's keys.
    pub(super) fn key_day(&self) -> KeyDay {
        KeyDay {
            date: self.date.to_string(),
            cluster_id: self
                .opts
                .cluster
                .as_ref()
                .map(|c| c.cluster_id.clone())
                .unwrap_or_default(),
        }
    }

    /// Whether a key of `day` belongs to this manager's day (an empty day is nobody's).
    pub(super) fn owns(&self, day: &KeyDay) -> bool {
        !day.date.is_empty() && !day.cluster_id.is_empty() && *day == self.key_day()
    }

    /// A busy slot of a join vouches for its shard iff its key is of this manager's day, a
    /// run, and exactly the shard's persisted assignment (running or stopping; attempt, epoch,
    /// executor name and process instance as in its `Dispatch`). Such a shard is no longer
    /// awaited, and a re-joining process's old registration lets go of it. An abandoned job's
    /// shard is interrupted at once; a live one stays running there (returned, to be
    /// installed once the registration exists). How many were vouched for, and the live ones.
    fn vouch_busy_slots(
        &mut self,
        join: &JoinIn,
        existing: Option<usize>,
    ) -> (usize, Vec<(TaskIx, u32, AttemptKey)>) {
        let (mut vouched, mut live) = (0, Vec::new());
        for b in &join.busy {
            let key = &b.key;
            if key.kind != JobKind::Run || !self.owns(&b.day) || b.slot >= join.slots {
                continue;
            }
            let Some(ix) = self.flow.graph().index_of(key.task.as_str()) else { continue };
            let assigned = self.day.shard(ix, key.shard).is_some_and(|v| {
                matches!(v.status, ShardStatus::Running | ShardStatus::Stopping)
                    && v.attempt == key.attempt
                    && v.epoch == b.epoch
                    && v.executor == Some(join.executor.as_str())
                    && v.instance == join.instance
            });
            if !assigned {
                continue;
            }
            self.awaiting.remove(&(ix, key.shard));
            if let Some(old) = existing {
                self.free_slot(old, b.slot, key);
            }
            if b.abandoned {
                info!(executor = %join.executor, job = %key, slot = b.slot, "a busy slot of the join holds an abandoned attempt of this shard; it is interrupted");
                self.settle(key, Settle::Interrupted);
            } else {
                info!(executor = %join.executor, job = %key, slot = b.slot, "a busy slot of the join still runs this shard; it stays assigned there");
                live.push((ix, b.slot, key.clone()));
            }
            vouched += 1;
        }
        (vouched, live)
    }

    /// A heartbeat; whether the executor is registered.
    pub(super) fn on_heartbeat(&mut self, executor: &str, instance: u64) -> bool {
        let now = self.now.mono_ms;
        match self.current_remote(executor, instance) {
            Some(ix) => {
                if let Some(r) = self.books.executor_mut(ix).and_then(|e| e.remote.as_mut()) {
                    r.last_seen_ms = now;
                }
                true
            }
            None => false,
        }
    }

    /// `Drain` (stop assigning) or `Leave` (a drained executor goes away cleanly).
    pub(super) fn on_drain(&mut self, executor: &str, instance: u64, leave: bool) -> bool {
        let Some(ix) = self.current_remote(executor, instance) else { return false };
        let Some(e) = self.books.executor_mut(ix) else { return false };
        let busy = e.slots().iter().any(|s| s.job.is_some());
        if !leave {
            if !e.draining {
                e.draining = true;
                info!(%executor, "executor draining: no new shards");
            }
            return true;
        }
        if busy {
            self.lose_executor(ix, "it left with jobs still assigned", true);
            return true;
        }
        self.books.leave(ix);
        info!(%executor, "executor drained and left");
        true
    }

    /// Declares executor processes whose lease (plus margin) ran out lost.
    pub(super) fn sweep(&mut self) {
        let Some(c) = self.opts.cluster.as_ref() else { return };
        let limit = c.lost_after_ms;
        let now = self.now.mono_ms;
        let expired: Vec<usize> = (0..self.books.executors().len())
            .filter(|&i| {
                self.books.executors()[i]
                    .remote
                    .as_ref()
                    .is_some_and(|r| !r.lost && now.saturating_sub(r.last_seen_ms) > limit)
            })
            .collect();
        for i in expired {
            let why = format!("no heartbeat for more than {limit} ms");
            self.lose_executor(i, &why, false);
        }
    }

    /// Marks an executor process lost and requeues its jobs (durably, before they are sent
    /// anywhere else): runs go back to pending and resume at their last checkpoint; rollbacks
    /// are queued again.
    ///
    /// Its jobs are requeued only once the process must have fenced itself: at its last
    /// heartbeat + the lost-after bound (lease + margin), unless `fenced` says it has (it
    /// joined again, or left). A closed session alone proves nothing — the executor may
    /// notice the break only at its next heartbeat and run on until its lease is over — so
    /// until then the jobs wait as orphans, holding no slot and getting no new executor.
    pub(super) fn lose_executor(&mut self, executor: usize, why: &str, fenced: bool) {
        let Some(e) = self.books.executor(executor) else { return };
        let Some(r) = e.remote.as_ref() else { return };
        if r.lost {
            return;
        }
        let lost_after = self.opts.cluster.as_ref().map_or(0, |c| c.lost_after_ms);
        let due = if fenced { self.now.mono_ms } else { r.last_seen_ms + lost_after };
        let (name, instance) = (e.name.clone(), r.instance);
        self.out.push(Effect::Note(crate::view::Notice::ExecutorLost {
            executor: name.clone(),
            reason: why.to_owned(),
        }));
        let jobs: Vec<AttemptKey> = self.books.lose(executor).into_iter().map(|(_, k)| k).collect();
        if due > self.now.mono_ms && !jobs.is_empty() {
            warn!(
                executor = %name, reason = why, jobs = jobs.len(), wait_ms = due - self.now.mono_ms,
                "executor lost; its shards are reassigned once its lease is surely over"
            );
            self.orphans.push(Orphans { due_ms: due, executor: name, instance, jobs });
            self.out.push(Effect::Timer { at_ms: due, timer: Timer::Orphans });
            return;
        }
        let requeued = self.requeue_jobs(jobs);
        warn!(executor = %name, reason = why, requeued, "executor lost; its shards are reassigned");
    }

    /// Orphaned jobs whose executor must have fenced by now (or `executor`/`instance`, which
    /// joined again and so has fenced) go back to their queues.
    pub(super) fn release_orphans(&mut self, joined: Option<(&str, u64)>) {
        let now = self.now.mono_ms;
        let (due, keep): (Vec<Orphans>, Vec<Orphans>) =
            std::mem::take(&mut self.orphans).into_iter().partition(|o| {
                o.due_ms <= now || joined.is_some_and(|(n, i)| o.executor == n && o.instance == i)
            });
        self.orphans = keep;
        for o in due {
            let requeued = self.requeue_jobs(o.jobs);
            info!(executor = %o.executor, requeued, "a lost executor's shards are reassigned");
        }
    }

    /// Requeues the jobs of a lost executor that are still their shards' current ones.
    fn requeue_jobs(&mut self, jobs: Vec<AttemptKey>) -> usize {
        let mut requeued = 0;
        for key in jobs {
            let Some(ix) = self.flow.graph().index_of(key.task.as_str()) else { continue };
            let Some(v) = self.day.shard(ix, key.shard) else { continue };
            let (status, attempt, generation) = (v.status, v.attempt, v.generation);
            match key.kind {
                JobKind::Run
                    if matches!(status, ShardStatus::Running | ShardStatus::Stopping)
                        && attempt == key.attempt
                        && self.books.running_at(ix, key.shard).is_none() =>
                {
                    let task = key.task.clone();
                    self.record(EventKind::Shard {
                        task,
                        shard: key.shard,
                        event: ShardEvent::Requeue,
                    });
                    requeued += 1;
                }
                JobKind::Rollback
                    if status == ShardStatus::RollingBack
                        && generation == key.generation
                        && self.books.running_at(ix, key.shard).is_none() =>
                {
                    self.books.queue_front(ix, key.shard, JobKind::Rollback);
                    requeued += 1;
                }
                _ => {}
            }
        }
        requeued
    }
}
