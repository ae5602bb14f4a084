//! The forecast: the real core run forward in simulated time from a clone of the live one.
//!
//! ```text
//!   clone of the live Control ─► Control::handle ◄─ simulated executors: each Assign ends
//!        (its day, books, queues,    │               (Succeeded) after its estimate
//!         slots, resources,          │             ◄─ Prepare: registered at once (the flow's
//!         priorities, holds)         │               own split, or history's keys/count, or 1)
//!                                    ▼             ◄─ at-triggers and retry timers at their time
//!        observed: each task's first dispatch and the instant it becomes done
//! ```
//!
//! Nothing else is modelled: every shard succeeds at its estimate (`estimate.rs`), every
//! event is durable at once, no executor is lost. Manual tasks are assumed executed as soon as
//! they are runnable (the forecast says so); held tasks and shards stay held, so a held task
//! is predicted not to start. A task registered in the simulation with more than
//! [`AGGREGATE_OVER`] shards is predicted from its duration distribution instead of shard by
//! shard: `K` shards (the slots that host its behavior, at most its shard count) each lasting
//! ⌈shards / K⌉ × its mean. Pure: no runtime, no I/O, no clock; tracing is silenced while the
//! clone runs (its decisions are not the manager's).

use std::collections::{BTreeMap, BTreeSet};

use super::estimate::Estimates;
use super::{Control, Effect, Input, Now, Timer};
use crate::behavior::{ShardOutcome, ShardPlan};
use crate::graph::TaskIx;
use crate::job::Report;
use crate::model::{ShardBy, ShardKey, Trigger};
use crate::schedule::{self, Prepared};
use crate::state::{Command, EventKind, OperatorAction, ShardEvent, Target, TaskStatus};
use crate::view::{DayForecast, TaskForecast};

/// Tasks with more shards than this are predicted in aggregate (see the module docs).
pub(crate) const AGGREGATE_OVER: usize = 10_000;
/// At most this many inputs are fed to the clone (a bound on the work of one forecast).
pub(crate) const MAX_INPUTS: u64 = 20_000_000;
/// Simulated time is not run further than this past the start (8 days).
pub(crate) const HORIZON_MS: u64 = 8 * 24 * 3_600 * 1_000;

/// A forecast: the day's line and one line per task, by task index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Forecast {
    /// The day's line.
    pub(crate) day: DayForecast,
    /// Per task index.
    pub(crate) tasks: Vec<TaskForecast>,
}

impl Forecast {
    /// The line of `task`.
    #[cfg(test)]
    pub(crate) fn task(&self, flow: &crate::flow::Flow, task: &str) -> &TaskForecast {
        &self.tasks[flow.graph().index_of(task).expect("task").get()]
    }
}

/// Runs `core` (a clone of the live core) forward from `now` with the estimates `est` and
/// returns each task's predicted start and end and the day's predicted end.
pub(crate) fn forecast(core: Control, est: &Estimates, now: Now) -> Forecast {
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
        Sim::new(core, est, now).run()
    })
}

struct Sim<'a> {
    core: Control,
    est: &'a Estimates,
    start: Now,
    /// Inputs due, by (simulated monotonic ms, order of scheduling).
    queue: BTreeMap<(u64, u64), Input>,
    next: u64,
    inputs: u64,
    started: Vec<Option<i64>>,
    ended: Vec<Option<i64>>,
    actual: Vec<bool>,
    low: Vec<bool>,
    manual: Vec<bool>,
    /// Aggregated tasks: the duration of each of their shards.
    aggregated: BTreeMap<TaskIx, u64>,
    closed_at: Option<i64>,
    assumptions: BTreeSet<String>,
}

impl<'a> Sim<'a> {
    fn new(mut core: Control, est: &'a Estimates, now: Now) -> Sim<'a> {
        let n = core.flow.graph().len();
        core.opts.auto_execute_manual = true;
        core.waiters.clear();
        core.forecast = None;
        Sim {
            core,
            est,
            start: now,
            queue: BTreeMap::new(),
            next: 0,
            inputs: 0,
            started: vec![None; n],
            ended: vec![None; n],
            actual: vec![false; n],
            low: vec![false; n],
            manual: vec![false; n],
            aggregated: BTreeMap::new(),
            closed_at: None,
            assumptions: BTreeSet::new(),
        }
    }

    fn mono_of(&self, wall_ms: i64) -> u64 {
        self.start.mono_ms + (wall_ms - self.start.wall_ms).max(0) as u64
    }

    fn wall_of(&self, mono_ms: u64) -> i64 {
        self.start.wall_ms + mono_ms.saturating_sub(self.start.mono_ms) as i64
    }

    fn at(&mut self, mono_ms: u64, input: Input) {
        self.next += 1;
        self.queue.insert((mono_ms, self.next), input);
    }

    fn run(mut self) -> Forecast {
        let flow = self.core.flow.clone();
        let graph = flow.graph();
        let now = self.start;
        // What already happened, and the timers the live core armed.
        for ix in graph.indices() {
            let rt = self.core.books.task(ix);
            let (fires_at, preparing) = (rt.fires_at_ms(), rt.is_preparing());
            self.started[ix.get()] = rt.started_ms;
            if self.core.day.is_done(ix) {
                let end = rt.finished_ms.or(self.core.day.registered_at_ms(ix));
                self.ended[ix.get()] = Some(end.unwrap_or(now.wall_ms));
                self.actual[ix.get()] = true;
            } else if flow.task(ix).trigger == Trigger::Manual {
                self.manual[ix.get()] = true;
            }
            if let Some(at) = fires_at {
                let t = self.mono_of(at);
                self.at(t, Input::Timer(Timer::Trigger(ix)));
            }
            // Asked of a task actor before the clone: answered here.
            if preparing {
                let result = Ok(self.prepare(ix));
                self.at(now.mono_ms, Input::Prepared { task: ix, result });
            }
        }
        for ((task, shard), (attempt, due)) in self.core.books.retry_list() {
            let t = self.mono_of(due);
            self.at(t, Input::Timer(Timer::Retry { task, shard, attempt }));
        }
        let orphans: Vec<u64> = self.core.orphans.iter().map(|o| o.due_ms).collect();
        for due in orphans {
            self.at(due.max(now.mono_ms), Input::Timer(Timer::Orphans));
        }
        // Jobs running now end at their start plus their estimate (at once if overdue).
        let mut running = Vec::new();
        for (e, exec) in self.core.books.executors().iter().enumerate() {
            for (s, slot) in exec.slots().iter().enumerate() {
                if let (Some(key), false) = (&slot.job, slot.abandoned) {
                    running.push((e, s as u32, key.clone()));
                }
            }
        }
        for (executor, slot, key) in running {
            let Some(ix) = graph.index_of(key.task.as_str()) else { continue };
            let (started, shard_key) = match self.core.day.shard(ix, key.shard) {
                Some(v) => (v.started_ms.unwrap_or(now.wall_ms), v.key.to_owned()),
                None => (now.wall_ms, String::new()),
            };
            let ms = self.shard_ms(ix, &shard_key, 0);
            let end = (started + ms as i64).max(now.wall_ms);
            let t = self.mono_of(end);
            let report = Report::Finished {
                key,
                executor,
                slot,
                outcome: ShardOutcome::Succeeded,
                last_step: None,
            };
            self.at(t, Input::Report(report));
        }
        // Manual tasks already waiting for an operator's execute: executed now.
        for ix in graph.indices() {
            let day = &self.core.day;
            if self.manual[ix.get()]
                && day.is_registered(ix)
                && day.task_status(ix) == TaskStatus::Registered
                && day.may_run(ix)
            {
                let cmd = Command {
                    actor: "forecast".into(),
                    from: "forecast".into(),
                    reason: "assumed executed when runnable".into(),
                    action: OperatorAction::Execute,
                    target: Target { task: graph.id(ix).clone(), shard: None },
                };
                self.at(now.mono_ms, Input::Act { req: 0, cmd });
            }
        }
        // Release what the live core holds until durable, then run.
        let last = self.core.day.last_seq();
        self.feed(now.mono_ms, Input::Durable(last));
        while let Some(((t, _), input)) = self.queue.pop_first() {
            if t > now.mono_ms + HORIZON_MS || self.inputs > MAX_INPUTS || self.closed_at.is_some()
            {
                break;
            }
            self.feed(t, input);
        }
        self.result()
    }

    /// Feeds one input at simulated `t`, then the durable watermark of what it appended, and
    /// carries out the effects the simulation models.
    fn feed(&mut self, t: u64, input: Input) {
        let mut next = Some(input);
        while let Some(input) = next.take() {
            let wall = self.wall_of(t);
            let effects = self.core.handle(input, Now { mono_ms: t, wall_ms: wall });
            self.inputs += 1;
            let mut touched = BTreeSet::new();
            for e in effects {
                match e {
                    Effect::Append(events) => {
                        for ev in &events {
                            self.observe(&ev.kind, wall, &mut touched);
                        }
                        if let Some(last) = events.last() {
                            next = Some(Input::Durable(last.seq));
                        }
                    }
                    Effect::Assign { executor, assignment } => {
                        let ix = self.core.flow.graph().index_of(assignment.key.task.as_str());
                        let ms = match ix {
                            Some(ix) => match self.aggregated.get(&ix) {
                                Some(&ms) => ms,
                                None => self.shard_ms(
                                    ix,
                                    assignment.shard_key.as_str(),
                                    assignment.scope.len(),
                                ),
                            },
                            None => 0,
                        };
                        let report = Report::Finished {
                            key: assignment.key,
                            executor,
                            slot: assignment.slot,
                            outcome: ShardOutcome::Succeeded,
                            last_step: None,
                        };
                        self.at(t + ms, Input::Report(report));
                    }
                    Effect::Prepare { tasks, .. } => {
                        for task in tasks {
                            let result = Ok(self.prepare(task));
                            self.at(t, Input::Prepared { task, result });
                        }
                    }
                    Effect::Timer { at_ms, timer } => match timer {
                        Timer::Retry { .. } | Timer::Orphans | Timer::Reconcile => {
                            self.at(at_ms.max(t), Input::Timer(timer))
                        }
                        // No executor is lost in the forecast; no shutdown runs out.
                        Timer::Sweep | Timer::ShutdownDeadline | Timer::Trigger(_) => {}
                    },
                    Effect::WakeAt { task, at_wall_ms } => {
                        let at = self.mono_of(at_wall_ms).max(t);
                        self.at(at, Input::Timer(Timer::Trigger(task)));
                    }
                    _ => {}
                }
            }
            for ix in touched {
                if self.ended[ix.get()].is_none() && self.core.day.is_done(ix) {
                    self.ended[ix.get()] = Some(wall);
                }
            }
        }
    }

    fn observe(&mut self, kind: &EventKind, wall: i64, touched: &mut BTreeSet<TaskIx>) {
        if matches!(kind, EventKind::DayClosed) {
            self.closed_at = Some(wall);
            return;
        }
        let Some(task) = crate::view::event_task(kind) else { return };
        let Some(ix) = self.core.flow.graph().index_of(task.as_str()) else { return };
        touched.insert(ix);
        if let EventKind::Shard { event: ShardEvent::Dispatch { .. }, .. } = kind {
            self.started[ix.get()].get_or_insert(wall);
        }
    }

    fn shard_ms(&mut self, ix: TaskIx, key: &str, items: usize) -> u64 {
        let (ms, known) = self.est.shard_ms(ix, key, items);
        if !known {
            self.low[ix.get()] = true;
        }
        ms
    }

    /// A task's registration in the simulation: its recorded keys if it is registered, the
    /// flow's own split, else the keys or shard count of its newest past day, else one shard;
    /// aggregated when it has more than [`AGGREGATE_OVER`] shards.
    fn prepare(&mut self, ix: TaskIx) -> Prepared {
        let flow = self.core.flow.clone();
        let def = flow.task(ix);
        let plan = |key: String| ShardPlan::new(ShardKey::new(key), Vec::new());
        let empty = |plans| Prepared { items: Vec::new(), covered_dates: Vec::new(), plans };
        let day = &self.core.day;
        let mut p = if day.is_registered(ix) {
            let plans = (0..day.shard_count(ix))
                .filter_map(|i| day.shard(ix, i))
                .map(|v| plan(v.key.to_owned()));
            empty(plans.collect())
        } else if let Some(p) = (def.shard_by != ShardBy::Behavior)
            .then(|| schedule::prepare_by_flow(&flow, self.core.date, ix).ok())
            .flatten()
        {
            p
        } else {
            let none = super::estimate::TaskEstimate::default();
            let e = self.est.tasks.get(ix.get()).unwrap_or(&none);
            if !e.last_keys.is_empty() {
                empty(e.last_keys.iter().cloned().map(plan).collect())
            } else {
                if e.shards.is_none() {
                    self.assumptions.insert(format!(
                        "`{}`: split by its behavior and no history: one shard assumed",
                        def.id
                    ));
                }
                empty((0..e.shards.unwrap_or(1)).map(|i| plan(format!("shard-{i}"))).collect())
            }
        };
        if p.plans.len() > AGGREGATE_OVER {
            let n = p.plans.len();
            let slots: usize = self
                .core
                .books
                .executors()
                .iter()
                .filter(|e| e.accepting() && e.hosts(&def.behavior))
                .map(|e| e.slots().len())
                .sum();
            let k = slots.clamp(1, n);
            let (mean, known) = self.est.task_mean(ix);
            if !known {
                self.low[ix.get()] = true;
            }
            self.aggregated.insert(ix, n.div_ceil(k) as u64 * mean);
            p.plans.truncate(k);
            p.items.clear();
            self.assumptions.insert(format!(
                "`{}`: {n} shards predicted in aggregate ({k} slots × ⌈{n}/{k}⌉ × {mean} ms)",
                def.id
            ));
        }
        p
    }

    fn result(mut self) -> Forecast {
        let flow = self.core.flow.clone();
        let tz = flow.settings().time_zone;
        let date = self.core.date;
        let mut tasks = Vec::with_capacity(flow.graph().len());
        for ix in flow.graph().indices() {
            let i = ix.get();
            let def = flow.task(ix);
            let end = self.ended[i];
            let deadline = def.deadline.and_then(|d| d.at(date, tz)).map(|t| t.timestamp_millis());
            let note = if end.is_none() {
                Some(match self.core.day.held_by(ix, None) {
                    Some(by) => format!("held by {by}: predicted not to start until freed"),
                    None => match &self.core.books.task(ix).problem {
                        Some(p) => format!("cannot register: {p}"),
                        None => {
                            "predicted not to end (it waits for an operator, is held, or failed)"
                                .to_owned()
                        }
                    },
                })
            } else if self.manual[i] {
                self.assumptions.insert("manual tasks are assumed executed when runnable".into());
                Some("manual: assumed executed when runnable".to_owned())
            } else {
                None
            };
            tasks.push(TaskForecast {
                predicted_start_ms: self.started[i],
                predicted_end_ms: end,
                at_risk: deadline.is_some_and(|d| end.is_none_or(|e| e > d)),
                actual: self.actual[i],
                low_confidence: self.low[i] && !self.actual[i],
                note,
            });
        }
        if self.low.iter().zip(&self.actual).any(|(l, a)| *l && !a) {
            self.assumptions.insert("tasks without history use a default duration".into());
        }
        let end = match self.closed_at {
            Some(at) => Some(at),
            None if tasks.iter().all(|t| t.predicted_end_ms.is_some()) => {
                tasks.iter().filter_map(|t| t.predicted_end_ms).max()
            }
            None => None,
        };
        let deadline =
            flow.settings().deadline.and_then(|d| d.at(date, tz)).map(|t| t.timestamp_millis());
        Forecast {
            day: DayForecast {
                computed_at_ms: self.start.wall_ms,
                predicted_end_ms: end,
                at_risk: deadline.is_some_and(|d| end.is_none_or(|e| e > d)),
                assumptions: self.assumptions.into_iter().collect(),
            },
            tasks,
        }
    }
}

#[cfg(test)]
mod tests;
