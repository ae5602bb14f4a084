//! Operator actions: validated by [`crate::state::decide`] without mutating, audit event
//! first, then the effects; the answer leaves once they are durable.

use tracing::info;

use super::{Answer, Control, Effect, ReqId};
use crate::state::{Command, decide};
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
            if let Some(seq) = self.record(kind) {
                audit_seq.get_or_insert(seq);
            }
        }
        let audit_seq = audit_seq.unwrap_or(self.day.last_seq());
        self.reply_when_durable(req, Answer::Act(Ok(audit_seq)));
    }
}
