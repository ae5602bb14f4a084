//! The actors of the runtime (ractor), one module each with its message enum beside it.
//!
//! # Supervision tree
//!
//! ```text
//! Manager  (root; the only writer of day state; overrides supervision: a child's death is
//!  │        logged and handled, never stops the manager)
//!  ├── Notifier          event bus: topics `day`, `task/<id>`, `shard-log`; bounded
//!  │                     per-subscriber buffers, a lagging subscriber is told to resync
//!  ├── Clock             `at HH:MM` triggers: one timer for the earliest instant, no tick
//!  ├── TaskActor × active tasks   registration + split off the manager loop, retry backoff
//!  │                              timers; lives while its task is registered and not done
//!  └── Executor × N      in-process executors (plain-data messages with ids, so they can
//!       └── SlotRunner × slots    cross a process boundary later); a slot runs one shard
//!                                 attempt at a time through `run_shard` / `run_rollback`
//! ```
//!
//! A million shard *records* are plain data in [`crate::state::DayState`]; only running shards
//! occupy a slot, and only active tasks have an actor.
//!
//! # The manager loop
//!
//! Every input — an executor report, an operator command, a clock trigger, a retry timer, a
//! split result — is turned into events by plain functions ([`crate::state::decide`],
//! [`crate::schedule`]), recorded through [`crate::journal::Journal::record`] (which assigns the
//! seq and applies at once) and, at the end of the handler, flushed as one batch. Effects —
//! assignments to executors, replies to operators, published deltas, stop requests — are held
//! in a [`crate::schedule::DurabilityGate`] tagged with the seq they depend on and released
//! when a `Durable(seq)` message arrives (a small task forwards the journal's durable watch
//! into the mailbox). The manager never awaits the disk in a handler.

pub(crate) mod clock;
pub(crate) mod manager;
pub(crate) mod notifier;
pub(crate) mod task;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ractor::ActorRef;
use ractor::rpc::CallResult;

use crate::behavior::BoxFuture;
use crate::executor::Upstream;
pub(crate) use crate::job::{AttemptKey, Report};
use crate::view::Notice;
use manager::ManagerMsg;
use notifier::NotifierMsg;

/// How many progress/log notices may wait in the notifier's mailbox before slots drop them.
const MAX_INFLIGHT_NOTES: usize = 10_000;

/// The manager and notifier of this process.
pub(crate) struct LocalUpstream {
    pub(crate) manager: ActorRef<ManagerMsg>,
    pub(crate) notifier: ActorRef<NotifierMsg>,
    pub(crate) inflight: Arc<AtomicUsize>,
}

impl Upstream for LocalUpstream {
    fn report(&self, report: Report) {
        let _ = self.manager.cast(ManagerMsg::Report(report));
    }

    fn checkpoint(
        &self,
        key: AttemptKey,
        step: u32,
        name: String,
    ) -> BoxFuture<'static, Result<(), String>> {
        let manager = self.manager.clone();
        Box::pin(async move {
            let call = manager.call(
                |reply| ManagerMsg::Checkpoint {
                    key,
                    step,
                    name,
                    reply: Box::new(move |r| {
                        let _ = reply.send(r);
                    }),
                },
                None,
            );
            match call.await {
                Ok(CallResult::Success(result)) => result,
                _ => Err("the manager is not reachable".into()),
            }
        })
    }

    fn note(&self, notice: Notice) {
        if self.inflight.fetch_add(1, Ordering::Relaxed) >= MAX_INFLIGHT_NOTES {
            self.inflight.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        if self.notifier.cast(NotifierMsg::ShardNote(notice)).is_err() {
            self.inflight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
