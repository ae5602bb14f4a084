//! The clock: fires `at HH:MM` triggers as time events to the manager.
//!
//! ```text
//! Manager ──► Clock   (child of the manager)
//! ```
//!
//! It keeps the pending instants in order and arms **one** timer (`send_after`) for the
//! earliest; there is no periodic tick, so an idle day costs nothing. Triggers missed while the
//! manager was down need nothing special here: on start the manager finds them passed and
//! readies their tasks at once (once, because `TaskReady` is durable).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use super::manager::ManagerMsg;
use crate::graph::TaskIx;

/// Messages of the clock.
#[derive(Debug)]
pub(crate) enum ClockMsg {
    /// Tell the manager [`ManagerMsg::TriggerFired`] for `task` at `at`.
    Schedule {
        /// The task.
        task: TaskIx,
        /// The instant.
        at: DateTime<Utc>,
    },
    /// The armed timer went off (internal).
    Wake,
}

impl ractor::Message for ClockMsg {}

/// Where the clock reads the time (tests may shift it).
pub(crate) type Now = fn() -> DateTime<Utc>;

pub(crate) struct Clock;

pub(crate) struct ClockState {
    manager: ActorRef<ManagerMsg>,
    now: Now,
    due: BTreeMap<DateTime<Utc>, Vec<TaskIx>>,
    armed: Option<(DateTime<Utc>, JoinHandle<()>)>,
}

impl Actor for Clock {
    type Msg = ClockMsg;
    type State = ClockState;
    type Arguments = (ActorRef<ManagerMsg>, Now);

    async fn pre_start(
        &self,
        _myself: ActorRef<ClockMsg>,
        (manager, now): (ActorRef<ManagerMsg>, Now),
    ) -> Result<ClockState, ActorProcessingErr> {
        Ok(ClockState { manager, now, due: BTreeMap::new(), armed: None })
    }

    async fn handle(
        &self,
        myself: ActorRef<ClockMsg>,
        msg: ClockMsg,
        state: &mut ClockState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClockMsg::Schedule { task, at } => {
                state.due.entry(at).or_default().push(task);
            }
            ClockMsg::Wake => state.armed = None,
        }
        let now = (state.now)();
        while let Some(entry) = state.due.first_entry() {
            if *entry.key() > now {
                break;
            }
            for task in entry.remove() {
                let _ = state.manager.cast(ManagerMsg::TriggerFired { task });
            }
        }
        if let Some((&next, _)) = state.due.first_key_value()
            && state.armed.as_ref().is_none_or(|(at, _)| next < *at)
        {
            if let Some((_, handle)) = state.armed.take() {
                handle.abort();
            }
            let delay = crate::options::wall::real_delay_until(next);
            let me = myself.clone();
            let handle = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = me.cast(ClockMsg::Wake);
            });
            state.armed = Some((next, handle));
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ClockMsg>,
        state: &mut ClockState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, handle)) = state.armed.take() {
            handle.abort();
        }
        Ok(())
    }
}
