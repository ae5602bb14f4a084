//! Read models built from the core's state: the board, a task's view, a page of shards.

use super::Control;
use crate::graph::TaskIx;
use crate::model::Trigger;
use crate::state::{ShardStatus, TaskStatus};
use crate::view::{Board, ExecutorView, ResourceView, ShardInfo, SlotView, TaskView, WaitingFor};

impl Control {
    /// The board as of the last recorded seq (released once that seq is durable).
    pub(crate) fn board(&self) -> Board {
        let (seq, closed) = (self.day.last_seq(), self.day.is_closed());
        let tasks = self.flow.graph().topo_order().iter().map(|&ix| self.task_view(ix)).collect();
        let executors = self
            .books
            .executors()
            .iter()
            .map(|e| ExecutorView {
                name: e.name.clone(),
                slots: e
                    .slots()
                    .iter()
                    .map(|s| match (&s.job, s.abandoned) {
                        (None, _) => SlotView::Idle,
                        (Some(k), false) => SlotView::Busy(k.to_string()),
                        (Some(k), true) => SlotView::Abandoned(k.to_string()),
                    })
                    .collect(),
            })
            .collect();
        let mut resources: Vec<ResourceView> = self
            .books
            .resources()
            .iter()
            .map(|r| ResourceView {
                name: r.name.clone(),
                units: r.units,
                in_use: r.in_use,
                waiting: 0,
            })
            .collect();
        if !resources.is_empty() && !closed {
            for ix in self.flow.graph().indices() {
                let Some(short) = self.books.lacking(ix) else { continue };
                if !self.day.is_registered(ix) || self.day.held_by(ix, None).is_some() {
                    continue;
                }
                let pending = self.day.counts(ix).get(ShardStatus::Pending);
                let held = self
                    .day
                    .holds()
                    .filter(|&(t, sh, _)| {
                        t == ix
                            && sh.is_some_and(|i| {
                                self.day
                                    .shard(ix, i)
                                    .is_some_and(|v| v.status == ShardStatus::Pending)
                            })
                    })
                    .count() as u32;
                if let Some(r) = resources.iter_mut().find(|r| r.name == short.name) {
                    r.waiting += pending.saturating_sub(held);
                }
            }
        }
        let tz = self.flow.settings().time_zone;
        Board {
            date: self.date,
            seq,
            durable_seq: self.gate.durable(),
            closed,
            tasks,
            executors,
            resources,
            deadline_ms: self
                .flow
                .settings()
                .deadline
                .and_then(|d| d.at(self.date, tz))
                .map(|t| t.timestamp_millis()),
            forecast: self.forecast.as_ref().map(|f| f.day.clone()),
        }
    }

    pub(crate) fn task_view_by_id(&self, id: &str) -> Option<TaskView> {
        self.flow.graph().index_of(id).map(|ix| self.task_view(ix))
    }

    fn task_view(&self, ix: TaskIx) -> TaskView {
        let def = self.flow.task(ix);
        let rt = self.books.task(ix);
        let (status, counts, registered_ms, note) = {
            {
                let s = &self.day;
                let status = s.task_status(ix);
                let note = rt.problem.clone().or_else(|| {
                    if let Some(by) = s.held_by(ix, None).filter(|_| !status.is_done()) {
                        return Some(format!(
                            "held by {by}: nothing of it is dispatched until freed"
                        ));
                    }
                    if !s.may_run(ix) {
                        let waiting: Vec<String> = s
                            .waiting_for(ix)
                            .iter()
                            .map(|&p| format!("`{}`", s.graph().id(p)))
                            .collect();
                        return Some(format!("waits for {}", waiting.join(", ")));
                    }
                    let waits_for_execute = status == TaskStatus::Registered
                        && def.trigger == Trigger::Manual
                        && !self.opts.auto_execute_manual;
                    waits_for_execute.then(|| "manual: waits for an operator's execute".to_owned())
                });
                (status, *s.counts(ix), s.registered_at_ms(ix), note)
            }
        };
        let deadline_ms = def
            .deadline
            .and_then(|d| d.at(self.date, self.flow.settings().time_zone))
            .map(|t| t.timestamp_millis());
        let finished_ms = if status.is_done() { rt.finished_ms.or(registered_ms) } else { None };
        // The latest forecast's line, with what happened since it was computed: a task that
        // started has its actual start, one that is done its actual times.
        let forecast = self.forecast.as_ref().and_then(|f| f.tasks.get(ix.get())).map(|f| {
            let mut f = f.clone();
            if let Some(started) = rt.started_ms {
                f.predicted_start_ms = Some(started);
            }
            if let Some(end) = finished_ms {
                f.predicted_end_ms = Some(end);
                f.actual = true;
                f.low_confidence = false;
                f.note = None;
                f.at_risk = deadline_ms.is_some_and(|d| end > d);
            }
            f
        });
        TaskView {
            id: def.id.clone(),
            name: def.name.clone(),
            behavior: def.behavior.clone(),
            trigger: def.trigger.to_string(),
            depends_on: def.depends_on.clone(),
            status,
            counts,
            attempts: rt.attempts,
            registered_ms,
            started_ms: rt.started_ms,
            finished_ms,
            not_applicable: status == TaskStatus::NotApplicable,
            fires_at: rt.fires_at_ms().and_then(chrono::DateTime::from_timestamp_millis),
            note,
            held_by: self.day.held_by(ix, None).map(str::to_owned),
            held_shards: self.day.holds().filter(|&(t, s, _)| t == ix && s.is_some()).count()
                as u32,
            forced: self.day.is_forced(ix),
            waiting_for: self.task_waiting_for(ix),
            deadline_ms,
            forecast,
        }
    }

    /// What a task waits for ([`WaitingFor`]): `None` while it runs, once it is done, on a
    /// closed day, and for the moments nothing but the core itself is working on it (being
    /// prepared).
    pub(crate) fn task_waiting_for(&self, ix: TaskIx) -> Option<WaitingFor> {
        let s = &self.day;
        let status = s.task_status(ix);
        if s.is_closed() || !WaitingFor::task_may_wait(status) {
            return None;
        }
        if let Some(w) = WaitingFor::in_state(s, ix, None) {
            return Some(w);
        }
        let rt = self.books.task(ix);
        match status {
            TaskStatus::Unregistered => rt.fires_at_ms().map(|at_ms| WaitingFor::Trigger { at_ms }),
            TaskStatus::Registered => self.registered_waiting_for(ix),
            TaskStatus::Pending => {
                let pending = s.counts(ix).get(ShardStatus::Pending);
                let mut held = s.holds().filter(|&(t, sh, _)| {
                    t == ix
                        && sh.is_some_and(|i| {
                            s.shard(ix, i).is_some_and(|v| v.status == ShardStatus::Pending)
                        })
                });
                let first_held = held.next().map(|(_, _, by)| by.to_owned());
                let held_count = first_held.as_ref().map_or(0, |_| 1 + held.count() as u32);
                match first_held {
                    Some(by) if held_count >= pending => Some(WaitingFor::Held { by }),
                    _ => Some(self.queued_waiting_for(ix)),
                }
            }
            TaskStatus::Failed => Some(
                self.books
                    .first_retry_due(ix)
                    .map_or(WaitingFor::Operator, |at_ms| WaitingFor::Retry { at_ms }),
            ),
            _ => Some(WaitingFor::Operator),
        }
    }

    /// What a shard waits for ([`WaitingFor`]), as [`Control::task_waiting_for`] for a task.
    pub(crate) fn shard_waiting_for(
        &self,
        ix: TaskIx,
        shard: u32,
        status: ShardStatus,
    ) -> Option<WaitingFor> {
        let s = &self.day;
        if s.is_closed() || !WaitingFor::shard_may_wait(status) {
            return None;
        }
        if let Some(w) = WaitingFor::in_state(s, ix, Some(shard)) {
            return Some(w);
        }
        match status {
            ShardStatus::Registered => self.registered_waiting_for(ix),
            ShardStatus::Pending => Some(self.queued_waiting_for(ix)),
            ShardStatus::Failed => Some(
                self.books
                    .retry_due(ix, shard)
                    .map_or(WaitingFor::Operator, |at_ms| WaitingFor::Retry { at_ms }),
            ),
            _ => Some(WaitingFor::Operator),
        }
    }

    /// A registered task (or shard) that may run: its trigger, or an operator's `execute`.
    fn registered_waiting_for(&self, ix: TaskIx) -> Option<WaitingFor> {
        if let Some(at_ms) = self.books.task(ix).fires_at_ms() {
            return Some(WaitingFor::Trigger { at_ms });
        }
        let manual =
            self.flow.task(ix).trigger == Trigger::Manual && !self.opts.auto_execute_manual;
        manual.then_some(WaitingFor::Operator)
    }

    /// A queued shard of the task: what dispatch would need to take it (its resources are
    /// checked first, as dispatch does).
    fn queued_waiting_for(&self, ix: TaskIx) -> WaitingFor {
        match self.books.lacking(ix) {
            Some(r) => WaitingFor::Resource { resource: r.name.clone() },
            None => WaitingFor::Slot { behavior: self.flow.task(ix).behavior.clone() },
        }
    }

    pub(crate) fn shard_page(
        &self,
        id: &str,
        status: Option<ShardStatus>,
        offset: usize,
        limit: usize,
    ) -> Vec<ShardInfo> {
        let Some(ix) = self.flow.graph().index_of(id) else {
            return Vec::new();
        };
        let s = &self.day;
        if !s.is_registered(ix) {
            return Vec::new();
        }
        s.shards(ix, status, offset, limit)
            .into_iter()
            .map(|v| {
                let mut info = ShardInfo::from_view(&v, self.notes.get(&(ix, v.index)).cloned());
                info.waiting_for = self.shard_waiting_for(ix, v.index, v.status);
                info
            })
            .collect()
    }
}
