//! Operator actions: validated by [`crate::state::decide`] without mutating, audit event
//! first, then the effects; the answer leaves once they are durable.

use tracing::info;

use super::{Answer, Control, Effect, ReqId};
use crate::graph::TaskIx;
use crate::job::JobKind;
use crate::state::{Command, EventKind, ShardStatus, decide};
use crate::view::ActionError;

impl Control {
    pub(super) fn on_act(&mut self, req: ReqId, cmd: Command) {
        if self.draining.is_some() {
            let answer = Answer::Act(Err(ActionError::Unavailable("shutting down".into())));
            self.out.push(Effect::Reply { req, answer });
            return;
        }
        let events = match decide(&self.day, &cmd) {
            Ok(events) => events,
            Err(e) => {
                info!(actor = %cmd.actor, action = cmd.action.verb(), target = %cmd.target, refused = %e, "operator action refused");
                self.out
                    .push(Effect::Reply { req, answer: Answer::Act(Err(ActionError::Refused(e))) });
                return;
            }
        };
        info!(actor = %cmd.actor, action = cmd.action.verb(), target = %cmd.target, reason = %cmd.reason, "operator action");
        let mut audit_seq = None;
        for kind in events {
            let after = match &kind {
                EventKind::Free { task, shard } => Some((task.clone(), *shard, false)),
                EventKind::ForceStarted { task } => Some((task.clone(), None, true)),
                _ => None,
            };
            if let Some(seq) = self.record(kind) {
                audit_seq.get_or_insert(seq);
                if let Some((task, shard, forced)) = after
                    && let Some(ix) = self.flow.graph().index_of(task.as_str())
                {
                    if forced {
                        self.on_forced(ix);
                    } else {
                        self.on_freed(ix, shard);
                    }
                }
            }
        }
        let audit_seq = audit_seq.unwrap_or(self.day.last_seq());
        self.reply_when_durable(req, Answer::Act(Ok(audit_seq)));
    }
}

impl Control {
    /// A hold was lifted: what it kept back goes back to the dispatch queues.
    fn on_freed(&mut self, ix: TaskIx, shard: Option<u32>) {
        match shard {
            None => self.books.requeue_task(ix),
            Some(shard) => {
                // Queued even while its task is held: `next_job` steps over a held task.
                if self.day.shard(ix, shard).is_some_and(|v| v.status == ShardStatus::Pending) {
                    self.books.queue(ix, shard, JobKind::Run);
                }
            }
        }
    }

    /// A task was force-started: registered now if it is not (its pending shards are made
    /// ready by `trigger_check`, which lets a forced task through).
    fn on_forced(&mut self, ix: TaskIx) {
        if !self.day.is_registered(ix) {
            self.on_deps_done(ix);
        }
    }
}
