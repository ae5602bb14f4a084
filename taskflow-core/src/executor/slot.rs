//! A slot runner: one long-lived actor per executor slot, running one job at a time.
//!
//! ```text
//! Manager ──► Executor(i) ──► SlotRunner(i, slot)
//! ```
//!
//! The job runs as a task of its own, never inside the actor's handler, so the runner's mailbox
//! stays free for a stop: a tokio task on the runtime's workers for async behaviors (the
//! driver catches panics and enforces timeouts), or a blocking-pool thread (`spawn_blocking` +
//! `block_on`) for behaviors that declare [`TaskBehavior::blocking`], so that their blocking
//! starves neither the runtime's workers nor the manager. A stop cancels the job's token; if
//! the job has not returned after the grace (plus a margin that lets the driver's own grace act
//! first), the runner reports the attempt *abandoned*: the shard is settled with an
//! explanation, but the slot stays occupied — Rust code stuck in a blocking call cannot be
//! killed — until the job returns, which is reported too.
//!
//! [`TaskBehavior::blocking`]: crate::behavior::TaskBehavior::blocking

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::Upstream;
use crate::behavior::{
    BehaviorLease, BehaviorRegistry, BoxFuture, CancelToken, Checkpoint, CheckpointError, LogLine,
    Progress, RunOptions, ShardOutcome, ShardSink, ShardSpec, run_rollback, run_shard,
};
use crate::job::{Assignment, AttemptKey, JobKind, Report};
use crate::view::Notice;

/// Messages of a slot runner.
#[derive(Debug)]
pub(crate) enum SlotMsg {
    /// Run this job.
    Run(Assignment),
    /// Stop the job if it is this one.
    Stop(AttemptKey),
    /// The job returned (internal), with its last step's checkpoint if it completed it.
    Done(AttemptKey, ShardOutcome, Option<Checkpoint>),
    /// The grace after a stop or timeout is over (internal).
    GraceOver(AttemptKey, GraceCause),
}

impl ractor::Message for SlotMsg {}

/// Why a watchdog was armed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GraceCause {
    Stop,
    Timeout(Duration),
}

pub(crate) struct SlotArgs {
    pub(crate) executor: usize,
    pub(crate) executor_name: String,
    pub(crate) slot: u32,
    pub(crate) registry: Arc<BehaviorRegistry>,
    pub(crate) up: Arc<dyn Upstream>,
    pub(crate) stop_grace: Duration,
}

pub(crate) struct SlotRunner;

pub(crate) struct SlotState {
    args: SlotArgs,
    current: Option<Current>,
}

struct Current {
    key: AttemptKey,
    cancel: CancelToken,
    abandoned: bool,
    watchdog: Option<JoinHandle<()>>,
    timeout_watchdog: Option<JoinHandle<()>>,
}

impl SlotState {
    /// The driver gets `stop_grace` to drop a cooperative step; this runner waits a little
    /// longer before declaring the attempt abandoned, so the driver's verdict comes first.
    fn hard_grace(&self) -> Duration {
        self.args.stop_grace + self.args.stop_grace / 2 + Duration::from_millis(20)
    }

    fn report(&self, report: Report) {
        self.args.up.report(report);
    }
}

impl Actor for SlotRunner {
    type Msg = SlotMsg;
    type State = SlotState;
    type Arguments = SlotArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SlotMsg>,
        args: SlotArgs,
    ) -> Result<SlotState, ActorProcessingErr> {
        Ok(SlotState { args, current: None })
    }

    async fn handle(
        &self,
        myself: ActorRef<SlotMsg>,
        msg: SlotMsg,
        state: &mut SlotState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SlotMsg::Run(a) => {
                if let Some(cur) = &state.current {
                    warn!(slot = a.slot, busy = %cur.key, job = %a.key, "slot busy; job refused");
                    state.report(Report::Finished {
                        key: a.key,
                        executor: state.args.executor,
                        slot: state.args.slot,
                        outcome: ShardOutcome::Failed { reason: "slot busy".into() },
                        last_step: None,
                    });
                    return Ok(());
                }
                let cancel = CancelToken::new();
                let timeout_watchdog = a.timeout.map(|t| {
                    let me = myself.clone();
                    let key = a.key.clone();
                    let after = t + state.hard_grace();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = me.cast(SlotMsg::GraceOver(key, GraceCause::Timeout(t)));
                    })
                });
                state.current = Some(Current {
                    key: a.key.clone(),
                    cancel: cancel.clone(),
                    abandoned: false,
                    watchdog: None,
                    timeout_watchdog,
                });
                start_job(&state.args, a, cancel, myself);
            }
            SlotMsg::Stop(key) => {
                let grace = state.hard_grace();
                if let Some(cur) = state.current.as_mut().filter(|c| c.key == key)
                    && cur.watchdog.is_none()
                {
                    cur.cancel.cancel();
                    let me = myself.clone();
                    cur.watchdog = Some(tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        let _ = me.cast(SlotMsg::GraceOver(key, GraceCause::Stop));
                    }));
                }
            }
            SlotMsg::GraceOver(key, cause) => {
                let grace = state.args.stop_grace;
                let (executor, slot) = (state.args.executor, state.args.slot);
                let Some(cur) = state.current.as_mut().filter(|c| c.key == key && !c.abandoned)
                else {
                    return Ok(());
                };
                cur.abandoned = true;
                cur.cancel.cancel();
                let reason = match cause {
                    GraceCause::Stop => format!(
                        "did not stop within {grace:?} of being asked: the attempt was abandoned \
                         but is still running, and slot {slot} of executor {} stays occupied \
                         until it returns",
                        state.args.executor_name
                    ),
                    GraceCause::Timeout(t) => format!(
                        "timed out after {t:?} and did not stop within {grace:?}: the attempt was \
                         abandoned but is still running, and slot {slot} of executor {} stays \
                         occupied until it returns",
                        state.args.executor_name
                    ),
                };
                warn!(job = %key, %reason, "shard attempt abandoned");
                state.report(Report::Abandoned { key, executor, slot, reason });
            }
            SlotMsg::Done(key, outcome, last_step) => {
                let (executor, slot) = (state.args.executor, state.args.slot);
                let Some(cur) = state.current.take_if(|c| c.key == key) else {
                    return Ok(());
                };
                for h in [cur.watchdog, cur.timeout_watchdog].into_iter().flatten() {
                    h.abort();
                }
                if cur.abandoned {
                    state.report(Report::SlotFreed { key, executor, slot });
                } else {
                    state.report(Report::Finished { key, executor, slot, outcome, last_step });
                }
            }
        }
        Ok(())
    }
}

/// Starts the job as a task (async behaviors) or on a blocking-pool thread (behaviors that
/// declare they block); its outcome comes back as [`SlotMsg::Done`].
fn start_job(args: &SlotArgs, a: Assignment, cancel: CancelToken, me: ActorRef<SlotMsg>) {
    let key = a.key.clone();
    // Quiet by default; multi-process fault tests enable it (with "job ended") to learn that
    // a process is running a shard right now before they kill or stop it.
    debug!(job = %key, slot = a.slot, behavior = %a.behavior, "job started");
    let lease = args.registry.acquire(&a.behavior);
    let sink =
        Arc::new(Sink { up: args.up.clone(), key: key.clone(), last_step: Mutex::new(None) });
    let job_sink: Arc<dyn ShardSink> = sink.clone();
    let spec = ShardSpec {
        task: a.key.task.clone(),
        date: a.date,
        shard: a.shard_key,
        scope: a.scope,
        covered_dates: a.covered_dates,
        params: a.params,
        generation: a.key.generation,
        attempt: a.key.attempt,
        completed_steps: a.completed_steps,
    };
    let options = RunOptions { timeout: a.timeout, cancel_grace: args.stop_grace };
    let done = DoneGuard { me, key: Some(a.key), sink };
    let kind = key.kind;
    let job = async move |lease: BehaviorLease| match kind {
        JobKind::Run => run_shard(&*lease, spec, cancel, job_sink, &options).await,
        JobKind::Rollback => run_rollback(&*lease, spec, cancel, job_sink, &options).await,
    };
    match lease {
        Err(e) => done.send(ShardOutcome::Failed { reason: e.to_string() }),
        Ok(lease) if lease.blocking() => {
            let runtime = tokio::runtime::Handle::current();
            let thread = tokio::task::spawn_blocking(move || runtime.block_on(job(lease)));
            tokio::spawn(async move {
                let outcome = thread.await.unwrap_or_else(|e| ShardOutcome::Failed {
                    reason: format!("the shard's thread ended abnormally: {e}"),
                });
                done.send(outcome);
            });
        }
        Ok(lease) => {
            tokio::spawn(async move {
                let outcome = job(lease).await;
                done.send(outcome);
            });
        }
    }
}

/// Sends the job's [`SlotMsg::Done`] exactly once: with its outcome, or — if the job's task
/// ends without one (a panic outside the driver's guard, the runtime shutting down) — as a
/// failure, so that the slot is never left occupied by a job that is gone.
struct DoneGuard {
    me: ActorRef<SlotMsg>,
    key: Option<AttemptKey>,
    sink: Arc<Sink>,
}

impl DoneGuard {
    fn send(mut self, outcome: ShardOutcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: ShardOutcome) {
        if let Some(key) = self.key.take() {
            debug!(job = %key, ?outcome, "job ended");
            let last_step =
                self.sink.last_step.lock().unwrap_or_else(PoisonError::into_inner).take();
            let _ = self.me.cast(SlotMsg::Done(key, outcome, last_step));
        }
    }
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.finish(ShardOutcome::Failed { reason: "the shard's task ended abnormally".into() });
    }
}

/// Where a running job's checkpoints (to the manager, awaited until durable; the last step's
/// is kept and rides with the job's report), progress and log lines (to the notifier, dropped
/// under pressure) go.
struct Sink {
    up: Arc<dyn Upstream>,
    key: AttemptKey,
    last_step: Mutex<Option<Checkpoint>>,
}

impl ShardSink for Sink {
    fn checkpoint(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<(), CheckpointError>> {
        let call = self.up.checkpoint(self.key.clone(), checkpoint.step as u32, checkpoint.name);
        Box::pin(async move { call.await.map_err(CheckpointError) })
    }

    /// No step follows: kept for the report, where the manager records it just before the
    /// outcome (one durable batch for both).
    fn last_checkpoint(
        &self,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        *self.last_step.lock().unwrap_or_else(PoisonError::into_inner) = Some(checkpoint);
        Box::pin(std::future::ready(Ok(())))
    }

    fn progress(&self, p: Progress) {
        self.up.note(Notice::Progress {
            task: self.key.task.clone(),
            shard: self.key.shard,
            attempt: self.key.attempt,
            step: p.step as u32,
            done: p.done,
            total: p.total,
        });
    }

    fn log(&self, line: LogLine) {
        self.up.note(Notice::Log {
            task: self.key.task.clone(),
            shard: self.key.shard,
            attempt: self.key.attempt,
            line,
        });
    }
}
