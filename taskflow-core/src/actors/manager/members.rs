//! Executor processes joining, heartbeating, reporting and getting lost — and the fencing of
//! their results.
//!
//! # Fencing rule
//!
//! Every assignment is persisted (`Dispatch {attempt, executor, epoch}`, durable) before it is
//! sent. A result is accepted iff its `(epoch, attempt)` — and executor — equal the shard's
//! persisted current assignment:
//! - a report or checkpoint on a live session must carry this manager's epoch, come from the
//!   executor's current registration (`name` + `instance`, not lost) and name the job the
//!   manager recorded on that slot (which is the persisted assignment), and the shard must
//!   still be on that attempt (checked again in `settle`);
//! - an outcome re-reported in a `Join` (two-phase confirmation: the executor held it until
//!   confirmed) may carry an older epoch — it was assigned before this manager restarted — and
//!   is accepted iff the shard is still running on exactly that `(epoch, attempt, executor)`.
//!
//! Anything else is a late result: rejected and logged once per executor and attempt.

use std::time::Instant;

use tracing::{info, warn};

use super::day::Settle;
use super::{ClusterIn, Effect, ExecLink, ExecRt, ManagerState, RemoteExecutor, RemoteRt, SlotRt};
use crate::actors::{AttemptKey, JobKind, Report};
use crate::cluster::codec::PROTOCOL_VERSION;
use crate::cluster::manager::send_reply;
use crate::cluster::messages::{
    CheckpointMsg, DrainMsg, HeldOutcome, Join, Reply, ReportBody, ReportMsg, WireOutcome,
};
use crate::runtime::Notice;
use crate::state::{EventKind, ShardEvent, ShardStatus};

impl ManagerState {
    pub(super) fn on_cluster(&mut self, input: ClusterIn) {
        match input {
            ClusterIn::Join { join, reply } => {
                // Answered once the re-reported outcomes it settled are durable: the executor
                // forgets them on acceptance.
                let answer = self.on_join(join);
                self.reply_when_durable(move |_| send_reply(reply, &answer));
            }
            ClusterIn::Drain { msg, leave, reply } => {
                let ok = self.on_drain(&msg, leave);
                send_reply(reply, &Reply::DrainAck { ok });
            }
            ClusterIn::Heartbeat { hb, reply } => {
                let ok = match self.current_remote(&hb.executor, hb.instance) {
                    Some(ix) => {
                        if let Some(r) = self.executors[ix].remote.as_mut() {
                            r.last_seen = Instant::now();
                        }
                        true
                    }
                    None => false,
                };
                send_reply(reply, &Reply::HeartbeatAck { seq: hb.seq, ok });
            }
            ClusterIn::Checkpoint { cp, reply } => self.on_remote_checkpoint(cp, reply),
            ClusterIn::Report(r) => self.on_remote_report(r),
            ClusterIn::Reports(reports) => {
                for r in reports {
                    self.on_remote_report(r);
                }
            }
            ClusterIn::SessionClosed { node_id } => {
                let lost: Vec<usize> = (0..self.executors.len())
                    .filter(|&i| {
                        let e = &self.executors[i];
                        matches!(&e.actor, ExecLink::Remote(r) if r.node_id() == node_id)
                            && e.remote.as_ref().is_some_and(|r| !r.lost)
                    })
                    .collect();
                for i in lost {
                    self.lose_executor(i, "its session closed");
                }
            }
        }
    }

    /// The index of a registered, not lost executor process with this name and instance.
    fn current_remote(&self, name: &str, instance: u64) -> Option<usize> {
        let ix = *self.cluster.as_ref()?.by_name.get(name)?;
        let r = self.executors[ix].remote.as_ref()?;
        (r.instance == instance && !r.lost).then_some(ix)
    }

    fn on_join(&mut self, join: Join) -> Reply {
        let Some(cluster) = self.cluster.as_ref() else {
            return Reply::JoinRejected { reason: "this manager accepts no executors".into() };
        };
        let (epoch, lease, heartbeat) =
            (cluster.epoch, cluster.listen.lease, cluster.listen.heartbeat);
        let reject = |reason: String| {
            warn!(executor = %join.executor, %reason, "join rejected");
            Reply::JoinRejected { reason }
        };
        if join.protocol_version != PROTOCOL_VERSION {
            return reject(format!(
                "protocol version mismatch: the executor speaks {}, the manager speaks {}",
                join.protocol_version, PROTOCOL_VERSION
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
        let existing = cluster.by_name.get(&join.executor).copied();
        if let Some(ix) = existing
            && let Some(r) = &self.executors[ix].remote
            && !r.lost
            && r.instance != join.instance
        {
            return reject(format!(
                "duplicate name: an executor named `{}` is already connected; give each \
                 executor a unique --name",
                join.executor
            ));
        }
        if existing.is_some_and(|ix| self.executors[ix].remote.is_none()) {
            return reject(format!(
                "duplicate name: `{}` is an in-process executor of the manager",
                join.executor
            ));
        }
        let Some(proxy) = RemoteExecutor::find(&join, epoch) else {
            return reject("the executor's agent was not advertised on its session".into());
        };
        // Two-phase confirmation: settle what it still holds before its old registration
        // (if any) is dropped and its remaining jobs requeued.
        let mut reconciled = 0usize;
        for held in &join.held_outcomes {
            reconciled += usize::from(self.reconcile_held(&join.executor, held));
        }
        self.unvouched(&join.executor, join.instance);
        if let Some(ix) = existing
            && self.executors[ix].remote.as_ref().is_some_and(|r| !r.lost)
        {
            // The same process joins again (it fenced itself): its other jobs are gone.
            self.lose_executor(ix, "it joined again");
        }
        let slots = join.slots.min(4096);
        let rt = ExecRt {
            name: join.executor.clone(),
            actor: ExecLink::Remote(proxy),
            remote: Some(RemoteRt {
                instance: join.instance,
                last_seen: Instant::now(),
                lost: false,
            }),
            free: (0..slots).rev().collect(),
            slots: (0..slots).map(|_| SlotRt::default()).collect(),
            behaviors: Some(join.behaviors.iter().cloned().collect()),
            draining: false,
        };
        if let Some(c) = self.cluster.as_mut() {
            c.unhosted.retain(|b| !join.behaviors.contains(b));
        }
        let ix = match existing {
            Some(ix) => {
                self.executors[ix] = rt;
                ix
            }
            None => {
                self.executors.push(rt);
                self.executors.len() - 1
            }
        };
        if let Some(c) = self.cluster.as_mut() {
            c.by_name.insert(join.executor.clone(), ix);
        }
        info!(
            executor = %join.executor,
            slots,
            epoch,
            held = join.held_outcomes.len(),
            reconciled,
            "executor joined"
        );
        Reply::JoinAccepted {
            epoch,
            lease_ms: lease.as_millis() as u64,
            heartbeat_ms: heartbeat.as_millis() as u64,
        }
    }

    /// Checks a report's or checkpoint's origin (fencing rules 1–3); logs a late one once.
    fn fenced_origin(
        &mut self,
        what: &str,
        executor: &str,
        instance: u64,
        epoch: u64,
        slot: u32,
        key: &AttemptKey,
    ) -> Option<usize> {
        let current_epoch = self.cluster.as_ref().map_or(0, |c| c.epoch);
        let ok = self.current_remote(executor, instance).filter(|&ix| {
            epoch == current_epoch
                && self.executors[ix].slots.get(slot as usize).and_then(|s| s.job.as_ref())
                    == Some(key)
        });
        if ok.is_none()
            && let Some(c) = self.cluster.as_mut()
            && c.late_logged.len() < 100_000
            && c.late_logged.insert((executor.to_owned(), format!("{what} {key}")))
        {
            warn!(
                %executor, job = %key, epoch, current_epoch, what,
                "late result rejected: not the shard's current assignment (fenced)"
            );
        }
        ok
    }

    fn on_remote_report(&mut self, r: ReportMsg) {
        let key = AttemptKey::from(&r.key);
        let body = r.body;
        if let ReportBody::Progress { .. } | ReportBody::Log { .. } = body {
            // Notes are best-effort: shown only for a current registration.
            if self.current_remote(&r.executor, r.instance).is_none() {
                return;
            }
            let notice = match body {
                ReportBody::Progress { step, done, total } => Notice::Progress {
                    task: key.task,
                    shard: key.shard,
                    attempt: key.attempt,
                    step,
                    done,
                    total,
                },
                ReportBody::Log { at_ms, level, step, message } => Notice::Log {
                    task: key.task,
                    shard: key.shard,
                    attempt: key.attempt,
                    line: crate::behavior::LogLine {
                        at: chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default(),
                        level: match level.as_str() {
                            "debug" => crate::behavior::LogLevel::Debug,
                            "warn" => crate::behavior::LogLevel::Warn,
                            "error" => crate::behavior::LogLevel::Error,
                            _ => crate::behavior::LogLevel::Info,
                        },
                        step: step.map(|s| s as usize),
                        message,
                    },
                },
                _ => return,
            };
            crate::actors::Upstream::note(&*self.local_up, notice);
            return;
        }
        let current_epoch = self.cluster.as_ref().map_or(0, |c| c.epoch);
        if let ReportBody::Finished { outcome, last_step } = &body
            && r.epoch < current_epoch
        {
            // Assigned before this manager restarted (held by the executor across it): judged
            // against the persisted assignment like a re-report in a join.
            let held = HeldOutcome {
                epoch: r.epoch,
                key: r.key.clone(),
                outcome: outcome.clone(),
                last_step: last_step.clone(),
            };
            self.reconcile_held(&r.executor, &held);
            if let Some(ix) = self.current_remote(&r.executor, r.instance) {
                self.push_effect(self.last_seq(), Effect::Confirm { executor: ix, key });
            }
            return;
        }
        let Some(executor) =
            self.fenced_origin("report", &r.executor, r.instance, r.epoch, r.slot, &key)
        else {
            // A stale outcome from a live registration: it may forget it.
            if matches!(body, ReportBody::Finished { .. })
                && let Some(ix) = self.current_remote(&r.executor, r.instance)
            {
                self.push_effect(self.last_seq(), Effect::Confirm { executor: ix, key });
            }
            return;
        };
        let slot = r.slot;
        if let ReportBody::Finished { outcome: WireOutcome::Cancelled, last_step } = &body
            && let Some(ix) = self.flow.graph().index_of(key.task.as_str())
            && self.journal_state().shard(ix, key.shard).map(|v| v.status)
                != Some(crate::state::ShardStatus::Stopping)
        {
            // Cancelled without a stop: the executor fenced the job.
            let last_step = last_step.as_ref().map(|c| (c.step, c.name.clone()));
            self.finish_job(&key, Some((executor, slot)), last_step, Settle::Interrupted);
            self.push_effect(self.last_seq(), Effect::Confirm { executor, key });
            return;
        }
        let finished = matches!(body, ReportBody::Finished { .. });
        let report = match body {
            ReportBody::Finished { outcome, last_step } => {
                let last_step = last_step.map(|c| crate::behavior::Checkpoint {
                    step: c.step as usize,
                    name: c.name,
                    completed_steps: c.step as usize + 1,
                });
                Report::Finished { key, executor, slot, outcome: outcome.into(), last_step }
            }
            ReportBody::Abandoned { reason } => Report::Abandoned { key, executor, slot, reason },
            ReportBody::SlotFreed => Report::SlotFreed { key, executor, slot },
            ReportBody::Progress { .. } | ReportBody::Log { .. } => return,
        };
        let confirm = finished.then(|| report.key().clone());
        self.on_report(report);
        if let Some(key) = confirm {
            self.push_effect(self.last_seq(), Effect::Confirm { executor, key });
        }
    }

    /// Settles an outcome an executor held across a disconnect or a manager restart, if the
    /// shard still runs exactly that assignment; true if it was recorded.
    fn reconcile_held(&mut self, executor: &str, held: &HeldOutcome) -> bool {
        let key = AttemptKey::from(&held.key);
        let Some(ix) = self.flow.graph().index_of(key.task.as_str()) else { return false };
        let current = self.journal_state().shard(ix, key.shard).is_some_and(|v| {
            key.kind == JobKind::Run
                && matches!(
                    v.status,
                    crate::state::ShardStatus::Running | crate::state::ShardStatus::Stopping
                )
                && v.attempt == key.attempt
                && v.epoch == held.epoch
                && v.executor == Some(executor)
        });
        if !current {
            // Settled already (its report arrived), reassigned, or a rollback (a restart runs
            // rollbacks again): nothing to record; the executor forgets it.
            info!(%executor, job = %key, epoch = held.epoch, "re-reported outcome is stale; dropped");
            return false;
        }
        if let Some(c) = self.cluster.as_mut() {
            c.awaiting.remove(&(ix, key.shard));
        }
        let how = match &held.outcome {
            WireOutcome::Cancelled => Settle::Interrupted,
            other => Settle::Outcome(other.clone().into()),
        };
        info!(%executor, job = %key, outcome = ?held.outcome, "re-reported outcome reconciled");
        let last_step = held.last_step.as_ref().map(|c| (c.step, c.name.clone()));
        // Whoever holds the slot in this manager's tables no longer does.
        let at = self.running.get(&(ix, key.shard)).copied();
        self.finish_job(&key, at, last_step, how);
        true
    }

    /// Shards dispatched to this executor name before the manager restarted that it did not
    /// re-report. If the very process they were dispatched to re-joins, they never started
    /// (it keeps every outcome until confirmed, and fenced jobs end before it joins): they
    /// run again from their checkpoint. If another process took the name, nobody can vouch
    /// for them: unconfirmed.
    fn unvouched(&mut self, executor: &str, instance: u64) {
        let Some(c) = self.cluster.as_mut() else { return };
        let mine: Vec<((crate::graph::TaskIx, u32), u64)> = c
            .awaiting
            .iter()
            .filter(|(_, (e, _))| e.as_str() == executor)
            .map(|(k, (_, i))| (*k, *i))
            .collect();
        for (k, _) in &mine {
            c.awaiting.remove(k);
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
            let running = self.journal_state().shard(ix, shard).is_some_and(|v| {
                matches!(
                    v.status,
                    crate::state::ShardStatus::Running | crate::state::ShardStatus::Stopping
                )
            });
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
        let Some(c) = self.cluster.as_mut() else { return };
        if c.awaiting.is_empty() {
            return;
        }
        let lost: Vec<(crate::graph::TaskIx, u32)> = c.awaiting.drain().map(|(k, _)| k).collect();
        warn!(
            shards = lost.len(),
            "no executor re-reported these shards in time; their outcome is unconfirmed"
        );
        self.mark_unconfirmed(lost);
    }

    fn mark_unconfirmed(&mut self, shards: Vec<(crate::graph::TaskIx, u32)>) {
        for (ix, shard) in shards {
            let running = self.journal_state().shard(ix, shard).is_some_and(|v| {
                matches!(
                    v.status,
                    crate::state::ShardStatus::Running | crate::state::ShardStatus::Stopping
                )
            });
            if running && !self.running.contains_key(&(ix, shard)) {
                let task = self.flow.graph().id(ix).clone();
                self.record(EventKind::Shard { task, shard, event: ShardEvent::MarkUnconfirmed });
            }
        }
    }

    /// `Drain` (stop assigning) or `Leave` (a drained executor goes away cleanly).
    fn on_drain(&mut self, msg: &DrainMsg, leave: bool) -> bool {
        let Some(ix) = self.current_remote(&msg.executor, msg.instance) else { return false };
        let busy = self.executors[ix].slots.iter().any(|s| s.job.is_some());
        if !leave {
            if !self.executors[ix].draining {
                self.executors[ix].draining = true;
                info!(executor = %msg.executor, "executor draining: no new shards");
            }
            return true;
        }
        if busy {
            self.lose_executor(ix, "it left with jobs still assigned");
            return true;
        }
        let e = &mut self.executors[ix];
        e.free.clear();
        if let Some(r) = e.remote.as_mut() {
            r.lost = true;
        }
        info!(executor = %msg.executor, "executor drained and left");
        true
    }

    fn on_remote_checkpoint(&mut self, cp: CheckpointMsg, reply: ractor::RpcReplyPort<Vec<u8>>) {
        let key = AttemptKey::from(&cp.key);
        let slot = self.executors_slot_of(&cp.executor, &key);
        let origin = slot.and_then(|slot| {
            self.fenced_origin("checkpoint", &cp.executor, cp.instance, cp.epoch, slot, &key)
        });
        if origin.is_none() {
            if slot.is_none() {
                self.fenced_origin(
                    "checkpoint",
                    &cp.executor,
                    cp.instance,
                    cp.epoch,
                    u32::MAX,
                    &key,
                );
            }
            let error = Some(format!("{key} is not this executor's current assignment (fenced)"));
            send_reply(reply, &Reply::CheckpointAck { error });
            return;
        }
        self.on_checkpoint(
            key,
            cp.step,
            cp.name,
            Box::new(move |r| send_reply(reply, &Reply::CheckpointAck { error: r.err() })),
        );
    }

    fn executors_slot_of(&self, executor: &str, key: &AttemptKey) -> Option<u32> {
        let ix = *self.cluster.as_ref()?.by_name.get(executor)?;
        self.executors[ix].slots.iter().position(|s| s.job.as_ref() == Some(key)).map(|p| p as u32)
    }

    /// Declares executor processes whose lease (plus margin) ran out lost.
    pub(super) fn sweep(&mut self) {
        let Some(c) = self.cluster.as_ref() else { return };
        let limit = c.listen.lease + c.listen.margin();
        let expired: Vec<usize> = (0..self.executors.len())
            .filter(|&i| {
                self.executors[i]
                    .remote
                    .as_ref()
                    .is_some_and(|r| !r.lost && r.last_seen.elapsed() > limit)
            })
            .collect();
        for i in expired {
            let why = format!("no heartbeat for more than {limit:?}");
            self.lose_executor(i, &why);
        }
    }

    /// Marks an executor process lost and requeues its jobs (durably, before they are sent
    /// anywhere else): runs go back to pending and resume at their last checkpoint; rollbacks
    /// are queued again.
    pub(super) fn lose_executor(&mut self, executor: usize, why: &str) {
        let e = &mut self.executors[executor];
        let Some(r) = e.remote.as_mut() else { return };
        if r.lost {
            return;
        }
        r.lost = true;
        e.free.clear();
        let jobs: Vec<(u32, AttemptKey)> = e
            .slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| std::mem::take(s).job.map(|k| (i as u32, k)))
            .collect();
        let name = e.name.clone();
        let mut requeued = 0;
        for (slot, key) in jobs {
            let Some(ix) = self.flow.graph().index_of(key.task.as_str()) else { continue };
            if self.running.get(&(ix, key.shard)) == Some(&(executor, slot)) {
                self.running.remove(&(ix, key.shard));
            }
            let Some(v) = self.journal_state().shard(ix, key.shard) else { continue };
            let (status, attempt, generation) = (v.status, v.attempt, v.generation);
            match key.kind {
                JobKind::Run
                    if matches!(status, ShardStatus::Running | ShardStatus::Stopping)
                        && attempt == key.attempt =>
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
                    if status == ShardStatus::RollingBack && generation == key.generation =>
                {
                    self.tasks[ix.get()].rbq.push_front(key.shard);
                    self.rollback_tasks.insert((std::cmp::Reverse(self.topo_pos[ix.get()]), ix));
                    requeued += 1;
                }
                _ => {}
            }
        }
        warn!(executor = %name, reason = why, requeued, "executor lost; its shards are reassigned");
    }
}
