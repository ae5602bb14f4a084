//! Reports and fencing: what a job's end means for its shard, step checkpoints, and the
//! reports of executor processes.
//!
//! # Fencing rule
//!
//! Every assignment is persisted (`Dispatch {attempt, executor, epoch, instance}`, durable)
//! before it is sent. A result is accepted iff its `(epoch, attempt)` — and executor — equal
//! the shard's persisted current assignment:
//! - a report or checkpoint on a live session must carry this manager's epoch, come from the
//!   executor's current registration (`name` + `instance`, not lost) and name the job the
//!   core recorded on that slot (which is the persisted assignment), and the shard must still
//!   be on that attempt (checked again in `settle`);
//! - an outcome re-reported in a `Join` (two-phase confirmation: the executor held it until
//!   confirmed) may carry an older epoch — it was assigned before this manager restarted — and
//!   is accepted iff the shard is still running on exactly that `(epoch, attempt, executor)`.
//!
//! Anything else is a late result: rejected and logged once per executor and attempt.

use tracing::{info, warn};

use super::{Answer, Control, Effect, Held, RemoteBody, RemoteReport, ReqId};
use crate::behavior::ShardOutcome;
use crate::graph::TaskIx;
use crate::job::{AttemptKey, JobKind, Report};
use crate::state::{EventKind, ShardEvent, ShardStatus};

/// How a job ended, for [`Control::settle`].
pub(super) enum Settle {
    Outcome(ShardOutcome),
    Abandoned(String),
    /// Cancelled by its executor's fence (its manager was out of reach), not by a stop: the
    /// run resumes at its last durable checkpoint, a rollback runs again.
    Interrupted,
}

impl Control {
    pub(super) fn on_report(&mut self, report: Report) {
        match report {
            Report::Finished { key, executor, slot, outcome, last_step } => {
                let last_step = last_step.map(|c| (c.step as u32, c.name));
                self.finish_job(&key, Some((executor, slot)), last_step, Settle::Outcome(outcome));
            }
            Report::Abandoned { key, executor, slot, reason } => {
                if let Some(ix) = self.flow.graph().index_of(key.task.as_str()) {
                    self.books.abandon(executor, slot, &key, ix);
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
        let ix = self.flow.graph().index_of(key.task.as_str());
        self.books.free_slot(executor, slot, key, ix);
    }

    /// Whether `key` is its shard's current job.
    fn is_current(&self, ix: TaskIx, key: &AttemptKey) -> Option<(bool, ShardStatus)> {
        let v = self.day.shard(ix, key.shard)?;
        let current = match key.kind {
            JobKind::Run => {
                matches!(v.status, ShardStatus::Running | ShardStatus::Stopping)
                    && v.attempt == key.attempt
            }
            JobKind::Rollback => {
                v.status == ShardStatus::RollingBack && v.generation == key.generation
            }
        };
        Some((current, v.status))
    }

    /// Records what a job's end means for its shard, if the job is still the shard's current
    /// one (fencing); a stale report is ignored and logged once.
    pub(super) fn settle(&mut self, key: &AttemptKey, how: Settle) {
        let Some(ix) = self.flow.graph().index_of(key.task.as_str()) else { return };
        let Some((current, status)) = self.is_current(ix, key) else { return };
        #[cfg(any(test, feature = "test-util"))]
        let current = current || (self.faults.no_fencing && key.kind == JobKind::Run);
        if !current {
            if self.ignored.len() < 100_000 && self.ignored.insert(key.clone()) {
                info!(job = %key, %status, "report of an attempt that is not current; ignored");
            }
            return;
        }
        let mut event = match (key.kind, how) {
            (JobKind::Run, Settle::Interrupted) => {
                if status == ShardStatus::Stopping {
                    ShardEvent::StopAcknowledged
                } else {
                    info!(job = %key, "interrupted by its executor's fence; it resumes elsewhere");
                    ShardEvent::Requeue
                }
            }
            (JobKind::Rollback, Settle::Interrupted) => {
                self.books.queue_front(ix, key.shard, JobKind::Rollback);
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
        if let ShardEvent::Fail { reason } | ShardEvent::RollbackFailed { reason } = &mut event {
            // Reasons come from behaviors and peers: capped here, where they enter the day.
            crate::state::cap_reason(reason);
            warn!(job = %key, %reason, "shard failed");
        }
        let task = key.task.clone();
        self.record(EventKind::Shard { task, shard: key.shard, event });
    }

    /// A running job completed a step that another follows: the answer (which lets the next
    /// step start) leaves once the checkpoint is durable.
    pub(super) fn on_checkpoint(&mut self, req: ReqId, key: AttemptKey, step: u32, name: String) {
        match self.record_checkpoint(&key, step, name) {
            Ok(seq) => {
                self.push_effect(seq, Effect::Reply { req, answer: Answer::Checkpoint(Ok(())) })
            }
            Err(e) => self.out.push(Effect::Reply { req, answer: Answer::Checkpoint(Err(e)) }),
        }
    }

    /// Records a step checkpoint of `key` if it is the shard's current attempt; its seq.
    fn record_checkpoint(
        &mut self,
        key: &AttemptKey,
        step: u32,
        name: String,
    ) -> Result<u64, String> {
        let Some(ix) = self.flow.graph().index_of(key.task.as_str()) else {
            return Err(format!("unknown task `{}`", key.task));
        };
        let current = self.day.shard(ix, key.shard).is_some_and(|v| {
            matches!(v.status, ShardStatus::Running | ShardStatus::Stopping)
                && v.attempt == key.attempt
                && key.kind == JobKind::Run
        });
        if !current {
            return Err(format!("{key} is not the shard's current attempt"));
        }
        let done =
            self.day.shard(ix, key.shard).and_then(|v| v.checkpoint).map_or(0, |c| c.steps_done);
        if done > step {
            // Asked again (the answer was lost or late): it is recorded; answer once all that
            // is recorded is durable.
            return Ok(self.day.last_seq());
        }
        let kind = EventKind::StepCheckpoint {
            task: key.task.clone(),
            shard: key.shard,
            generation: key.generation,
            step,
            name,
        };
        self.record(kind).ok_or_else(|| "the checkpoint does not apply".to_owned())
    }

    // ----- executor processes ----------------------------------------------------------

    /// The index of a registered, not lost executor process with this name and instance.
    pub(super) fn current_remote(&self, name: &str, instance: u64) -> Option<usize> {
        let ix = self.books.by_name(name)?;
        let r = self.books.executor(ix)?.remote.as_ref()?;
        (r.instance == instance && !r.lost).then_some(ix)
    }

    /// This manager's epoch (0 without a cluster).
    pub(crate) fn epoch(&self) -> u64 {
        self.opts.cluster.as_ref().map_or(0, |c| c.epoch)
    }

    /// Checks a report's or checkpoint's origin (fencing rules 1–3); logs a late one once.
    fn fenced_origin(
        &mut self,
        what: &str,
        executor: &str,
        instance: u64,
        epoch: u64,
        slot: Option<u32>,
        key: &AttemptKey,
    ) -> Option<usize> {
        let current_epoch = self.epoch();
        let ok = self.current_remote(executor, instance).filter(|&ix| {
            epoch == current_epoch
                && slot.is_some_and(|slot| self.books.slot_job(ix, slot) == Some(key))
        });
        if ok.is_none()
            && self.late_logged.len() < 100_000
            && self.late_logged.insert((executor.to_owned(), format!("{what} {key}")))
        {
            warn!(
                %executor, job = %key, epoch, current_epoch, what,
                "late result rejected: not the shard's current assignment (fenced)"
            );
        }
        ok
    }

    pub(super) fn on_remote_report(&mut self, r: RemoteReport) {
        let RemoteReport { executor: name, instance, epoch, slot, key, day, body } = r;
        if let RemoteBody::Note(notice) = body {
            // Notes are best-effort: shown only for a current registration.
            if self.current_remote(&name, instance).is_some() {
                self.out.push(Effect::Note(notice));
            }
            return;
        }
        if let RemoteBody::Finished { outcome, last_step } = &body
            && epoch < self.epoch()
        {
            // Assigned before this manager restarted (held by the executor across it): judged
            // against the persisted assignment like a re-report in a join. It may have
            // occupied a busy slot of the join: that slot is free again.
            self.release_busy_slot(&name, instance, slot, &key);
            let held = Held {
                epoch,
                key: key.clone(),
                outcome: outcome.clone(),
                last_step: last_step.clone(),
                day: day.clone(),
            };
            self.reconcile_held(&name, &held);
            if let Some(ix) = self.current_remote(&name, instance) {
                self.after_last(Effect::Confirm { executor: ix, key });
            }
            return;
        }
        // A job assigned before this manager started, on a busy slot of the join, returned
        // without an outcome (`SlotFreed`: it had been abandoned; the slot is freed) or was
        // abandoned after its executor fenced it (the slot stays occupied): its shard, if
        // still exactly that assignment, is interrupted (it resumes at its last checkpoint).
        if epoch < self.epoch()
            && matches!(body, RemoteBody::SlotFreed | RemoteBody::Abandoned { fenced: true, .. })
        {
            let live = self
                .current_remote(&name, instance)
                .filter(|&ix| self.books.slot_job(ix, slot) == Some(&key));
            match (body, live) {
                (RemoteBody::Abandoned { reason, .. }, Some(ix)) => {
                    self.abandoned_after_fence(ix, slot, key, reason);
                }
                (body, _) => {
                    if matches!(body, RemoteBody::SlotFreed) {
                        self.release_busy_slot(&name, instance, slot, &key);
                    }
                    let held =
                        Held { epoch, key, outcome: ShardOutcome::Cancelled, last_step: None, day };
                    self.reconcile_held(&name, &held);
                }
            }
            return;
        }
        let origin = self.fenced_origin("report", &name, instance, epoch, Some(slot), &key);
        #[cfg(any(test, feature = "test-util"))]
        let origin =
            origin.or_else(|| self.faults.no_fencing.then(|| self.books.by_name(&name)).flatten());
        let Some(executor) = origin else {
            // A stale outcome from a live registration: it may forget it.
            if matches!(body, RemoteBody::Finished { .. })
                && let Some(ix) = self.current_remote(&name, instance)
            {
                self.after_last(Effect::Confirm { executor: ix, key });
            }
            return;
        };
        match body {
            RemoteBody::Finished { outcome: ShardOutcome::Cancelled, last_step }
                if self
                    .flow
                    .graph()
                    .index_of(key.task.as_str())
                    .and_then(|ix| self.day.shard(ix, key.shard))
                    .map(|v| v.status)
                    != Some(ShardStatus::Stopping) =>
            {
                // Cancelled without a stop: the executor fenced the job.
                self.finish_job(&key, Some((executor, slot)), last_step, Settle::Interrupted);
                self.after_last(Effect::Confirm { executor, key });
            }
            RemoteBody::Finished { outcome, last_step } => {
                self.finish_job(&key, Some((executor, slot)), last_step, Settle::Outcome(outcome));
                self.after_last(Effect::Confirm { executor, key });
            }
            // A job the executor fenced and then abandoned (it did not return within the
            // grace) is interrupted, not failed.
            RemoteBody::Abandoned { reason, fenced: true } => {
                self.abandoned_after_fence(executor, slot, key, reason)
            }
            RemoteBody::Abandoned { reason, fenced: false } => {
                self.on_report(Report::Abandoned { key, executor, slot, reason })
            }
            RemoteBody::SlotFreed => self.on_report(Report::SlotFreed { key, executor, slot }),
            RemoteBody::Refused { reason, busy } => {
                // It never ran: its slot is freed — or kept occupied by the job the refusal
                // names as still on it — and the shard is queued again, not failed.
                warn!(executor = %name, job = %key, %reason, "assignment refused by the executor; queued again");
                self.free_slot(executor, slot, &key);
                if let Some(b) = busy.filter(|b| b.slot == slot)
                    && self.books.slot_job(executor, slot).is_none()
                {
                    self.books.occupy_busy(executor, slot, b.key, None);
                }
                self.settle(&key, Settle::Interrupted);
            }
            RemoteBody::Note(_) => {}
        }
    }

    /// Settles an outcome an executor held across a disconnect or a manager restart, if the
    /// shard still runs exactly that assignment; true if it was recorded.
    pub(super) fn reconcile_held(&mut self, executor: &str, held: &Held) -> bool {
        let key = &held.key;
        // Only an outcome of this manager's day: another day's shard with the same names and
        // numbers, or an old key without a day, is dropped.
        if !self.owns(&held.day) {
            info!(
                %executor, job = %key, date = %held.day.date, cluster_id = %held.day.cluster_id,
                "re-reported outcome is of another day or cluster; dropped"
            );
            return false;
        }
        let Some(ix) = self.flow.graph().index_of(key.task.as_str()) else { return false };
        let current = self.day.shard(ix, key.shard).is_some_and(|v| {
            key.kind == JobKind::Run
                && matches!(v.status, ShardStatus::Running | ShardStatus::Stopping)
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
        self.awaiting.remove(&(ix, key.shard));
        let how = match &held.outcome {
            ShardOutcome::Cancelled => Settle::Interrupted,
            other => Settle::Outcome(other.clone()),
        };
        info!(%executor, job = %key, outcome = ?held.outcome, "re-reported outcome reconciled");
        // Whoever holds the slot in the core's tables no longer does.
        let at = self.books.running_at(ix, key.shard);
        self.finish_job(key, at, held.last_step.clone(), how);
        true
    }

    /// An abandoned job the executor had fenced: its shard is interrupted (settled first:
    /// running → pending, stopping → stopped), then the abandonment is recorded as usual (the
    /// slot stays occupied until `SlotFreed`; the shard is no longer on that attempt, so it
    /// is not failed).
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

    /// The end of a job that occupied a busy slot of the current registration (from its
    /// join, or named by a refusal) frees that slot, whatever the job's epoch.
    fn release_busy_slot(&mut self, executor: &str, instance: u64, slot: u32, key: &AttemptKey) {
        if let Some(ix) = self.current_remote(executor, instance) {
            self.free_slot(ix, slot, key);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_remote_checkpoint(
        &mut self,
        req: ReqId,
        executor: &str,
        instance: u64,
        epoch: u64,
        key: AttemptKey,
        step: u32,
        name: String,
    ) {
        let slot = self.books.by_name(executor).and_then(|ix| self.books.slot_of(ix, &key));
        let origin = self.fenced_origin("checkpoint", executor, instance, epoch, slot, &key);
        if origin.is_none() {
            let error = format!("{key} is not this executor's current assignment (fenced)");
            self.out.push(Effect::Reply { req, answer: Answer::Checkpoint(Err(error)) });
            return;
        }
        self.on_checkpoint(req, key, step, name);
    }
}
