//! A simulated executor process, following `cluster/executor.rs`'s protocol: join with held
//! outcomes, heartbeat, fence itself when heartbeats go unacknowledged for lease − lease/5,
//! run jobs step by step with a checkpoint call after each step but the last, hold every
//! outcome until the manager confirms it (on disk with `--data`), re-join after a fence.
//!
//! An unanswered checkpoint does not fail the job: it is asked again while the session
//! lives, and a fenced job carries it as its outcome's last step (the manager records it if
//! the attempt is still current, so the next attempt resumes after it).

use std::collections::BTreeMap;

use super::{Ev, HEARTBEAT_MS, LEASE_MS, PROTOCOL, World, flows, key_day};
use crate::behavior::ShardOutcome;
use crate::control::{Answer, Held, JoinAnswer, JoinIn, RemoteBody, RemoteReport};
use crate::job::{Assignment, AttemptKey, JobKind};

/// Manager → executor.
#[derive(Debug, Clone)]
pub(crate) enum Down {
    Assign { assignment: Assignment, epoch: u64 },
    Stop { slot: u32, key: AttemptKey },
    Confirm { key: AttemptKey },
    Reply { call: u64, answer: Answer },
}

/// Executor → manager.
#[derive(Debug, Clone)]
pub(crate) enum Up {
    Join { call: u64, join: JoinIn },
    Heartbeat { call: u64, instance: u64, seq: u64 },
    Checkpoint { call: u64, instance: u64, epoch: u64, key: AttemptKey, step: u32, name: String },
    Report(RemoteReport),
}

/// An executor's own events; `life` is the process generation (a crash invalidates the rest).
#[derive(Debug, Clone)]
pub(crate) enum ExecEv {
    Connect {
        life: u64,
    },
    Tick {
        life: u64,
        tick: u64,
    },
    /// Join again after a rejected join.
    Rejoin {
        life: u64,
    },
    StepDone {
        life: u64,
        slot: u32,
        token: u64,
    },
    CallTimeout {
        life: u64,
        call: u64,
    },
    /// Its session closed (the manager went away).
    Disconnected,
}

#[derive(Debug, Clone)]
enum Call {
    Join { held: Vec<AttemptKey>, sent: u64 },
    Heartbeat { sent: u64 },
    Checkpoint { slot: u32, token: u64 },
}

#[derive(Debug, Clone)]
struct Job {
    key: AttemptKey,
    epoch: u64,
    token: u64,
    steps: u32,
    /// Steps completed (and checkpointed) so far.
    done: u32,
    /// The step at which the behavior fails (by design), if it does.
    fails_at: Option<u32>,
    /// A completed step whose checkpoint is not answered yet: (step, name).
    unacked: Option<(u32, String)>,
}

/// See the module docs.
pub(crate) struct ExecSim {
    pub(crate) name: String,
    instance: u64,
    life: u64,
    alive: bool,
    paused: bool,
    deferred: Vec<Ev>,
    /// Keeps held outcomes on disk (`--data`).
    data: bool,
    session: Option<u64>,
    joined: bool,
    epoch: u64,
    last_acked_sent: u64,
    hb_seq: u64,
    /// The current heartbeat chain (a new one per accepted join).
    tick: u64,
    slots: Vec<Option<Job>>,
    /// Outcomes held until confirmed, with the slot they ran on.
    held: BTreeMap<AttemptKey, (Held, u32)>,
    calls: BTreeMap<u64, Call>,
    next_call: u64,
    next_token: u64,
    pub(crate) attempts: u64,
}

impl ExecSim {
    pub(crate) fn new(name: String, data: bool, slots: u32) -> ExecSim {
        ExecSim {
            name,
            instance: 1,
            life: 0,
            alive: true,
            paused: false,
            deferred: Vec::new(),
            data,
            session: None,
            joined: false,
            epoch: 0,
            last_acked_sent: 0,
            hb_seq: 0,
            tick: 0,
            slots: (0..slots).map(|_| None).collect(),
            held: BTreeMap::new(),
            calls: BTreeMap::new(),
            next_call: 1,
            next_token: 1,
            attempts: 0,
        }
    }

    pub(crate) fn paused(&self) -> bool {
        self.paused
    }

    pub(crate) fn joined(&self) -> bool {
        self.alive && self.joined
    }

    pub(crate) fn defer(&mut self, ev: Ev) {
        self.deferred.push(ev);
    }

    pub(crate) fn pause(&mut self) {
        if self.alive {
            self.paused = true;
        }
    }

    /// Resumes; the events that waited, to run now (in their order).
    pub(crate) fn resume(&mut self) -> Vec<Ev> {
        self.paused = false;
        std::mem::take(&mut self.deferred)
    }

    /// The jobs running now in a live process that holds its lease. A process resumed
    /// after a pause longer than its lease runs its jobs until its next tick fences them:
    /// result fencing, not the lease, guards that window, so they do not count.
    pub(crate) fn live_jobs(&self, now: u64) -> impl Iterator<Item = &AttemptKey> {
        let expired = self.joined && now.saturating_sub(self.last_acked_sent) > fence_after();
        let live = self.alive && !self.paused && !expired;
        self.slots.iter().flatten().filter(move |_| live).map(|j| &j.key)
    }

    fn call(&mut self, call: Call) -> u64 {
        let id = self.next_call;
        self.next_call += 1;
        self.calls.insert(id, call);
        id
    }
}

fn fence_after() -> u64 {
    LEASE_MS - LEASE_MS / 5
}

/// One of the executor's own events.
pub(crate) fn on_event(w: &mut World, exec: usize, ev: ExecEv) {
    let e = &w.execs[exec];
    if !e.alive {
        return;
    }
    match ev {
        ExecEv::Connect { life } => {
            if life != e.life || e.session.is_some() {
                return;
            }
            match w.connect(exec) {
                Some(session) => {
                    w.execs[exec].session = Some(session);
                    send_join(w, exec);
                }
                None => {
                    let life = w.execs[exec].life;
                    let dt = w.rng.range(50, 300);
                    w.after(dt, Ev::Exec { exec, ev: ExecEv::Connect { life } });
                }
            }
        }
        ExecEv::Rejoin { life } => {
            if life == e.life && e.session.is_some() && !e.joined {
                send_join(w, exec);
            }
        }
        ExecEv::Tick { life, tick } => {
            if life != e.life || tick != e.tick || !e.joined {
                return;
            }
            if w.now.saturating_sub(e.last_acked_sent) > fence_after() {
                fence(w, exec, "no heartbeat acknowledged");
                rejoin(w, exec);
                return;
            }
            let e = &mut w.execs[exec];
            e.hb_seq += 1;
            let (seq, instance) = (e.hb_seq, e.instance);
            let call = e.call(Call::Heartbeat { sent: w.now });
            w.send_up(exec, Up::Heartbeat { call, instance, seq });
            w.after(HEARTBEAT_MS, Ev::Exec { exec, ev: ExecEv::CallTimeout { life, call } });
            // Fence exactly at the deadline, not only at the next tick.
            let deadline = w.execs[exec].last_acked_sent + fence_after() + 1;
            let next = (w.now + HEARTBEAT_MS).min(deadline.max(w.now + 1));
            w.at(next, Ev::Exec { exec, ev: ExecEv::Tick { life, tick } });
        }
        ExecEv::StepDone { life, slot, token } => {
            if life != e.life {
                return;
            }
            step_done(w, exec, slot, token);
        }
        ExecEv::CallTimeout { life, call } => {
            if life != e.life {
                return;
            }
            let Some(c) = w.execs[exec].calls.remove(&call) else { return };
            match c {
                Call::Join { .. } => rejoin(w, exec),
                Call::Heartbeat { .. } => {}
                Call::Checkpoint { slot, token } => {
                    // No answer: ask again while the session lives.
                    if w.execs[exec].joined {
                        send_checkpoint(w, exec, slot, token);
                    }
                }
            }
        }
        ExecEv::Disconnected => {
            let e = &mut w.execs[exec];
            e.session = None;
            e.joined = false;
            e.calls.clear();
            fence(w, exec, "the session ended");
            let life = w.execs[exec].life;
            let dt = w.rng.range(10, 200);
            w.after(dt, Ev::Exec { exec, ev: ExecEv::Connect { life } });
        }
    }
}

fn send_join(w: &mut World, exec: usize) {
    let e = &mut w.execs[exec];
    e.joined = false;
    let held: Vec<Held> = e.held.values().map(|(h, _)| h.clone()).collect();
    let keys = held.iter().map(|h| h.key.clone()).collect();
    let call = e.call(Call::Join { held: keys, sent: w.now });
    let join = JoinIn {
        executor: e.name.clone(),
        instance: e.instance,
        protocol_version: PROTOCOL,
        slots: e.slots.len() as u32,
        behaviors: w.flow.tasks().iter().map(|t| t.behavior.clone()).collect(),
        held,
        busy: Vec::new(),
        agent_found: true,
    };
    let life = e.life;
    w.send_up(exec, Up::Join { call, join });
    w.after(3 * LEASE_MS, Ev::Exec { exec, ev: ExecEv::CallTimeout { life, call } });
}

/// After a fence on a live session: join again (the same session).
fn rejoin(w: &mut World, exec: usize) {
    if w.execs[exec].session.is_some() {
        send_join(w, exec);
    } else {
        let life = w.execs[exec].life;
        w.after(50, Ev::Exec { exec, ev: ExecEv::Connect { life } });
    }
}

/// Cancels every job: each ends as interrupted (its unanswered checkpoint carried along).
fn fence(w: &mut World, exec: usize, why: &str) {
    w.execs[exec].joined = false;
    let slots = w.execs[exec].slots.len();
    let mut any = false;
    for slot in 0..slots {
        if w.execs[exec].slots[slot].is_some() {
            any = true;
            finish(w, exec, slot as u32, ShardOutcome::Cancelled);
        }
    }
    if any {
        w.note(|| format!("e{} fenced: {why}", exec + 1));
    }
}

/// A job ended: hold its outcome until confirmed and report it if a session is up.
fn finish(w: &mut World, exec: usize, slot: u32, outcome: ShardOutcome) {
    let Some(job) = w.execs[exec].slots[slot as usize].take() else { return };
    let last_step = match &outcome {
        ShardOutcome::Succeeded => Some((job.steps - 1, step_name(job.steps - 1))),
        _ => job.unacked.clone(),
    };
    let held = Held {
        epoch: job.epoch,
        key: job.key.clone(),
        outcome: outcome.clone(),
        last_step,
        day: key_day(),
    };
    let e = &mut w.execs[exec];
    e.held.insert(job.key.clone(), (held.clone(), slot));
    // Reports go on any open session: the manager judges them (fencing).
    if e.session.is_some() {
        let report = RemoteReport {
            executor: e.name.clone(),
            instance: e.instance,
            epoch: job.epoch,
            slot,
            key: job.key,
            day: key_day(),
            body: RemoteBody::Finished { outcome, last_step: held.last_step },
        };
        w.send_up(exec, Up::Report(report));
    }
}

fn step_name(i: u32) -> String {
    format!("step-{i}")
}

/// How a job's behavior goes, drawn from the seed and the attempt.
fn plan(w: &mut World, key: &AttemptKey) -> (u32, Option<u32>) {
    let steps = match key.kind {
        JobKind::Run => {
            1 + (flows::hash(&[w.seed, key.shard as u64, key.task.as_str().len() as u64]) % 4)
                as u32
        }
        JobKind::Rollback => 1,
    };
    // One task in four is flaky (a third of its runs fail), so retries are used up — and a
    // requeue that spent one would show — often enough to be seen.
    let name: u64 = key.task.as_str().bytes().fold(0, |h, b| h.wrapping_mul(31) + u64::from(b));
    let flaky = flows::hash(&[w.seed, name]).is_multiple_of(4);
    let fails = w.rng.chance(if flaky { 0.33 } else { 0.06 });
    let fails_at = fails.then(|| w.rng.range(0, steps as u64 - 1) as u32);
    (steps, fails_at)
}

fn schedule_step(w: &mut World, exec: usize, slot: u32, token: u64) {
    let life = w.execs[exec].life;
    let dt = if w.rng.chance(0.1) { w.rng.range(100, 600) } else { w.rng.range(2, 60) };
    w.after(dt, Ev::Exec { exec, ev: ExecEv::StepDone { life, slot, token } });
}

fn step_done(w: &mut World, exec: usize, slot: u32, token: u64) {
    let Some(job) = w.execs[exec].slots[slot as usize].as_mut() else { return };
    if job.token != token || job.unacked.is_some() {
        return;
    }
    let step = job.done;
    if job.fails_at == Some(step) {
        let key = job.key.clone();
        w.designed_failures.insert((key.task.clone(), key.shard, key.attempt));
        let outcome = ShardOutcome::Failed { reason: format!("step {step} failed (simulated)") };
        finish(w, exec, slot, outcome);
        return;
    }
    if step + 1 >= job.steps {
        finish(w, exec, slot, ShardOutcome::Succeeded);
        return;
    }
    job.unacked = Some((step, step_name(step)));
    send_checkpoint(w, exec, slot, token);
}

fn send_checkpoint(w: &mut World, exec: usize, slot: u32, token: u64) {
    let e = &mut w.execs[exec];
    let Some(job) = e.slots[slot as usize].as_ref() else { return };
    let Some((step, name)) = job.unacked.clone() else { return };
    let (key, epoch, instance) = (job.key.clone(), job.epoch, e.instance);
    let call = e.call(Call::Checkpoint { slot, token });
    let life = e.life;
    w.send_up(exec, Up::Checkpoint { call, instance, epoch, key, step, name });
    w.after(LEASE_MS / 2, Ev::Exec { exec, ev: ExecEv::CallTimeout { life, call } });
}

/// A message from the manager.
pub(crate) fn on_down(w: &mut World, exec: usize, msg: Down) {
    if !w.execs[exec].alive {
        return;
    }
    match msg {
        Down::Assign { assignment, epoch } => {
            let e = &w.execs[exec];
            // Only a registered, unfenced executor runs assignments: one sent before a fence
            // (buffered through a pause or a partition) would run a shard the manager has
            // given to another executor since. Refused, never dropped silently: the manager
            // queues the shard again.
            if epoch < e.epoch || !e.joined {
                let report = RemoteReport {
                    executor: e.name.clone(),
                    instance: e.instance,
                    epoch,
                    slot: assignment.slot,
                    key: assignment.key,
                    day: key_day(),
                    body: RemoteBody::Refused {
                        reason: "not registered (fenced)".into(),
                        busy: None,
                    },
                };
                w.send_up(exec, Up::Report(report));
                return;
            }
            let slot = assignment.slot as usize;
            if e.slots.get(slot).and_then(|j| j.as_ref()).is_some_and(|j| j.key == assignment.key) {
                // The same assignment again: it runs already.
                return;
            }
            if slot >= e.slots.len() || e.slots[slot].is_some() {
                // A busy slot: the behavior would fail the job at once.
                let key = assignment.key.clone();
                w.designed_failures.insert((key.task.clone(), key.shard, key.attempt));
                let outcome = ShardOutcome::Failed { reason: "slot busy".into() };
                // Reported without touching the job that holds the slot.
                let e = &w.execs[exec];
                let report = RemoteReport {
                    executor: e.name.clone(),
                    instance: e.instance,
                    epoch,
                    slot: assignment.slot,
                    key,
                    day: key_day(),
                    body: RemoteBody::Finished { outcome, last_step: None },
                };
                w.send_up(exec, Up::Report(report));
                return;
            }
            let (steps, fails_at) = plan(w, &assignment.key);
            let e = &mut w.execs[exec];
            e.attempts += 1;
            let token = e.next_token;
            e.next_token += 1;
            let done = assignment.completed_steps as u32;
            e.slots[slot] = Some(Job {
                key: assignment.key,
                epoch,
                token,
                steps: steps.max(done + 1),
                done,
                fails_at: fails_at.filter(|&f| f >= done),
                unacked: None,
            });
            schedule_step(w, exec, assignment.slot, token);
        }
        Down::Stop { slot, key } => {
            if w.execs[exec]
                .slots
                .get(slot as usize)
                .and_then(|s| s.as_ref())
                .is_some_and(|j| j.key == key)
            {
                finish(w, exec, slot, ShardOutcome::Cancelled);
            }
        }
        Down::Confirm { key } => {
            w.execs[exec].held.remove(&key);
        }
        Down::Reply { call, answer } => {
            let Some(c) = w.execs[exec].calls.remove(&call) else { return };
            on_reply(w, exec, c, answer);
        }
    }
}

fn on_reply(w: &mut World, exec: usize, call: Call, answer: Answer) {
    let life = w.execs[exec].life;
    match (call, answer) {
        (Call::Join { held, sent }, Answer::Join(JoinAnswer::Accepted { epoch, .. })) => {
            let e = &mut w.execs[exec];
            for k in held {
                e.held.remove(&k);
            }
            e.epoch = epoch;
            e.joined = true;
            e.last_acked_sent = sent;
            e.tick += 1;
            let tick = e.tick;
            w.after(HEARTBEAT_MS, Ev::Exec { exec, ev: ExecEv::Tick { life, tick } });
        }
        (Call::Join { .. }, _) => {
            // Rejected (e.g. the old registration is not lost yet): try again later, as a
            // supervisor restarting the process would.
            let dt = w.rng.range(200, 2 * LEASE_MS);
            w.after(dt, Ev::Exec { exec, ev: ExecEv::Rejoin { life } });
        }
        (Call::Heartbeat { sent }, Answer::Heartbeat { ok, .. }) => {
            if ok {
                let e = &mut w.execs[exec];
                e.last_acked_sent = e.last_acked_sent.max(sent);
            } else if w.execs[exec].joined {
                fence(w, exec, "the manager declared this executor lost");
                rejoin(w, exec);
            }
        }
        (Call::Checkpoint { slot, token }, Answer::Checkpoint(result)) => {
            let Some(job) = w.execs[exec].slots[slot as usize].as_mut() else { return };
            if job.token != token {
                return;
            }
            match result {
                Ok(()) => {
                    job.unacked = None;
                    job.done += 1;
                    schedule_step(w, exec, slot, token);
                }
                Err(_) => {
                    // Refused: a newer attempt owns the shard (fenced).
                    finish(w, exec, slot, ShardOutcome::Cancelled);
                }
            }
        }
        _ => {}
    }
}

/// The process dies: jobs, calls and the session go; held outcomes stay only with `--data`.
pub(crate) fn crash(w: &mut World, exec: usize, keep_held: bool) {
    let e = &mut w.execs[exec];
    if !e.alive {
        return;
    }
    e.alive = false;
    e.paused = false;
    e.deferred.clear();
    e.life += 1;
    e.joined = false;
    e.session = None;
    e.calls.clear();
    for s in e.slots.iter_mut() {
        *s = None;
    }
    if !(e.data && keep_held) {
        e.held.clear();
    }
    w.close_session(exec);
}

/// A new process under the same name.
pub(crate) fn restart(w: &mut World, exec: usize) {
    let e = &mut w.execs[exec];
    if e.alive {
        return;
    }
    e.alive = true;
    e.instance += 1;
    e.epoch = 0;
    let life = e.life;
    w.after(1, Ev::Exec { exec, ev: ExecEv::Connect { life } });
}
