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
use crate::cluster::manager::{DayIdentity, send_reply};
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
        // WIRE: the manager's day (business date + day store cluster id) goes to the proxy,
        // which stamps it on every key it sends, and into `JoinAccepted`.
        let day = self.wire_day();
        let Some(proxy) = RemoteExecutor::find(&join, epoch, day.clone()) else {
            return reject("the executor's agent was not advertised on its session".into());
        };
        // Two-phase confirmation: settle what it still holds before its old registration
        // (if any) is dropped and its remaining jobs requeued.
        let mut reconciled = 0usize;
        for held in &join.held_outcomes {
            reconciled += usize::from(self.reconcile_held(&join.executor, held, &day));
        }
        // WIRE: busy slots whose job is still its shard's assignment keep the shard running
        // there (before `unvouched` and the re-join's `lose_executor` would requeue it).
        let (vouched, still_running) = self.vouch_busy_slots(&join, existing, &day);
        self.unvouched(&join.executor, join.instance);
        if let Some(ix) = existing
            && self.executors[ix].remote.as_ref().is_some_and(|r| !r.lost)
        {
            // The same process joins again (it fenced itself): its other jobs are gone.
            self.lose_executor(ix, "it joined again");
        }
        let slots = join.slots.min(4096);
        let mut rt = ExecRt {
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
        // WIRE: every busy slot of the join stays occupied by its job (shown abandoned: not a
        // job of this registration) until that job's end is reported (`Finished` or
        // `SlotFreed`) or the executor is lost: nothing is assigned onto it.
        for b in join.busy_slots.iter().filter(|b| b.slot < slots) {
            let job = Some(AttemptKey::from(&b.key));
            rt.slots[b.slot as usize] = SlotRt { job, abandoned: true };
            rt.free.retain(|&s| s != b.slot);
        }
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
        // WIRE: a vouched busy slot whose job has not been abandoned is a live job of this
        // registration: it occupies its slot and its shard counts as running there.
        for (task, shard, slot, key) in still_running {
            if let Some(s) = self.executors[ix].slots.get_mut(slot as usize) {
                *s = SlotRt { job: Some(key), abandoned: false };
                self.set_running(task, shard, (ix, slot));
            }
        }
        info!(
            executor = %join.executor,
            slots,
            epoch,
            held = join.held_outcomes.len(),
            reconciled,
            busy = join.busy_slots.len(),
            vouched,
            "executor joined"
        );
        Reply::JoinAccepted {
            epoch,
            lease_ms: lease.as_millis() as u64,
            heartbeat_ms: heartbeat.as_millis() as u64,
            // WIRE: the manager's day.
            cluster_id: day.cluster_id,
            date: day.date,
        }
    }

    // WIRE: the manager's day on the wire: its business date and its day store's cluster id
    // (`meta/app/cluster_id`, created by the replicator at start).
    fn wire_day(&self) -> DayIdentity {
        let cluster_id = self.journal.as_ref().map(super::replication::cluster_id);
        let cluster_id = match cluster_id {
            Some(Ok(id)) => id,
            Some(Err(e)) => {
                warn!(%e, "cannot read the day store's cluster id; no re-reported outcome is reconciled");
                String::new()
            }
            None => String::new(),
        };
        DayIdentity { date: self.date.to_string(), cluster_id }
    }

    // WIRE: a busy slot of a join vouches for its shard iff its key is of this manager's day,
    // a run, and exactly the shard's persisted assignment (running or stopping; attempt,
    // epoch, executor name and process instance as in its `Dispatch`). Such a shard is no
    // longer awaited (neither requeued as "never received" nor made unconfirmed), and a
    // re-joining process's old registration lets go of it (losing that registration does not
    // requeue it). If the busy job is abandoned, the shard is settled as interrupted at once
    // (running → pending, stopping → stopped) and the slot stays occupied. Otherwise the job
    // is a live job of the new registration (returned, to be installed once it exists): the
    // shard stays running there until the job's own end (`Finished` settles it; `SlotFreed`
    // or a fenced `Abandoned` settle it as interrupted) or the executor is lost (requeued).
    // Returns how many were vouched for, and the live ones (task, shard, slot, key).
    #[allow(clippy::type_complexity)]
    fn vouch_busy_slots(
        &mut self,
        join: &Join,
        existing: Option<usize>,
        day: &DayIdentity,
    ) -> (usize, Vec<(crate::graph::TaskIx, u32, u32, AttemptKey)>) {
        let (mut vouched, mut live) = (0, Vec::new());
        for b in &join.busy_slots {
            let key = AttemptKey::from(&b.key);
            if key.kind != JobKind::Run || !day.owns(&b.key) || b.slot >= join.slots {
                continue;
            }
            let Some(ix) = self.flow.graph().index_of(key.task.as_str()) else { continue };
            let assigned = self.journal_state().shard(ix, key.shard).is_some_and(|v| {
                matches!(v.status, ShardStatus::Running | ShardStatus::Stopping)
                    && v.attempt == key.attempt
                    && v.epoch == b.epoch
                    && v.executor == Some(join.executor.as_str())
                    && v.instance == join.instance
            });
            if !assigned {
                continue;
            }
            if let Some(c) = self.cluster.as_mut() {
                c.awaiting.remove(&(ix, key.shard));
            }
            if let Some(old) = existing {
                self.free_slot(old, b.slot, &key);
            }
            if b.abandoned {
                info!(executor = %join.executor, job = %key, slot = b.slot, "a busy slot of the join holds an abandoned attempt of this shard; it is interrupted");
                self.settle(&key, Settle::Interrupted);
            } else {
                info!(executor = %join.executor, job = %key, slot = b.slot, "a busy slot of the join still runs this shard; it stays assigned there");
                live.push((ix, key.shard, b.slot, key));
            }
            vouched += 1;
        }
        (vouched, live)
    }

    // WIRE: an abandoned job the executor had fenced: its shard is interrupted (settled
    // first: running → pending, stopping → stopped), then the abandonment is recorded as
    // usual (the slot stays occupied until `SlotFreed`; the shard is no longer on that
    // attempt, so it is not failed).
    fn abandoned_after_fence(
        &mut self,
        executor: usize,
        slot: u32,
        key: AttemptKey,
        reason: String,
    ) {
        self.settle(&key, Settle::Interrupted);
        self.on_report(Report::Abandoned { key, executor, slot, reason });
    }

    // WIRE: the end (`Finished`, `SlotFreed`) of a job that occupied a busy slot of the
    // current registration (from its join, or named by a `Refused`) frees that slot, whatever
    // the job's epoch.
    fn release_busy_slot(&mut self, executor: &str, instance: u64, slot: u32, key: &AttemptKey) {
        if let Some(ix) = self.current_remote(executor, instance) {
            self.free_slot(ix, slot, key);
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
            // WIRE: it may have occupied a busy slot of the join: free it.
            self.release_busy_slot(&r.executor, r.instance, r.slot, &key);
            let day = self.wire_day();
            self.reconcile_held(&r.executor, &held, &day);
            if let Some(ix) = self.current_remote(&r.executor, r.instance) {
                self.push_effect(self.last_seq(), Effect::Confirm { executor: ix, key });
            }
            return;
        }
        // WIRE: a job assigned before this manager started, on a busy slot of the join,
        // returned without an outcome (`SlotFreed`: it had been abandoned; the slot is freed)
        // or was abandoned after its executor fenced it (the slot stays occupied): its shard,
        // if still exactly that assignment, is interrupted (it resumes at its last durable
        // checkpoint).
        if r.epoch < current_epoch
            && let ReportBody::SlotFreed | ReportBody::Abandoned { fenced: true, .. } = &body
        {
            let live = self.current_remote(&r.executor, r.instance).filter(|&ix| {
                self.executors[ix].slots.get(r.slot as usize).and_then(|s| s.job.as_ref())
                    == Some(&key)
            });
            match (body, live) {
                (ReportBody::Abandoned { reason, .. }, Some(ix)) => {
                    self.abandoned_after_fence(ix, r.slot, key, reason);
                }
                (body, _) => {
                    if matches!(body, ReportBody::SlotFreed) {
                        self.release_busy_slot(&r.executor, r.instance, r.slot, &key);
                    }
                    let held = HeldOutcome {
                        epoch: r.epoch,
                        key: r.key.clone(),
                        outcome: WireOutcome::Cancelled,
                        last_step: None,
                    };
                    let day = self.wire_day();
                    self.reconcile_held(&r.executor, &held, &day);
                }
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
        // WIRE: a refused assignment (protocol 3: its epoch was older than the executor's
        // registration, or its slot was still busy) never ran: its slot is freed — or, if the
        // refusal names the job still occupying it, kept occupied by that job until its end is
        // reported — and the shard, if still on that attempt, is queued again (running →
        // pending through `Requeue`; stopping → stopped; a rollback is queued again): not a
        // failure.
        if let ReportBody::Refused { reason, busy } = body {
            warn!(executor = %r.executor, job = %key, %reason, "assignment refused by the executor; queued again");
            self.free_slot(executor, slot, &key);
            if let Some(b) = busy.filter(|b| b.slot == slot) {
                let e = &mut self.executors[executor];
                if let Some(s) = e.slots.get_mut(slot as usize).filter(|s| s.job.is_none()) {
                    *s = SlotRt { job: Some(AttemptKey::from(&b.key)), abandoned: true };
                    e.free.retain(|&x| x != slot);
                }
            }
            self.settle(&key, Settle::Interrupted);
            return;
        }
        // WIRE: a job the executor had fenced and then abandoned (it did not return within the
        // grace) is interrupted, not failed.
        if let ReportBody::Abandoned { fenced: true, reason } = body {
            self.abandoned_after_fence(executor, slot, key, reason);
            return;
        }
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
            ReportBody::Abandoned { reason, .. } => {
                Report::Abandoned { key, executor, slot, reason }
            }
            ReportBody::SlotFreed => Report::SlotFreed { key, executor, slot },
            ReportBody::Progress { .. } | ReportBody::Log { .. } | ReportBody::Refused { .. } => {
                return;
            }
        };
        let confirm = finished.then(|| report.key().clone());
        self.on_report(report);
        if let Some(key) = confirm {
            self.push_effect(self.last_seq(), Effect::Confirm { executor, key });
        }
    }

    /// Settles an outcome an executor held across a disconnect or a manager restart, if the
    /// shard still runs exactly that assignment; true if it was recorded.
    fn reconcile_held(&mut self, executor: &str, held: &HeldOutcome, day: &DayIdentity) -> bool {
        let key = AttemptKey::from(&held.key);
        // WIRE: only an outcome of this manager's day is reconciled: its key's business date
        // and cluster id must equal the manager's (keys of protocol 3 carry both). Another
        // day's shard with the same names and numbers, or an unvouched key, is dropped.
        if !day.owns(&held.key) {
            info!(
                %executor, job = %key, date = %held.key.date, cluster_id = %held.key.cluster_id,
                "re-reported outcome is of another day or cluster; dropped"
            );
            return false;
        }
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
        // WIRE: a checkpoint sent again (the executor holds an unanswered one and re-sends it)
        // whose step is already recorded for this attempt and generation is answered ok once
        // the journal is durable, not refused as going backwards.
        let recorded = self.flow.graph().index_of(key.task.as_str()).is_some_and(|ix| {
            self.journal_state().shard(ix, key.shard).is_some_and(|v| {
                v.attempt == key.attempt
                    && v.generation == key.generation
                    && v.checkpoint.is_some_and(|c| c.steps_done > cp.step)
            })
        });
        if recorded {
            self.reply_when_durable(move |_| {
                send_reply(reply, &Reply::CheckpointAck { error: None });
            });
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
