//! An in-process executor: a fixed set of long-lived slot runners.
//!
//! ```text
//! Manager ──► Executor(i) ──► SlotRunner × slots
//! ```
//!
//! The manager does the placement (it knows every slot's occupancy, so credits = free slots and
//! no queue grows here) and addresses a slot by index; the executor only routes. Its messages
//! are plain data with ids ([`super::Assignment`], [`super::AttemptKey`]), so an executor
//! process (`cluster/`) receives the same assignments and sends the same reports over the
//! network.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::error;

use super::slot::{SlotArgs, SlotMsg, SlotRunner};
use super::{Assignment, AttemptKey, Upstream};
use crate::behavior::BehaviorRegistry;

/// Messages of an executor.
#[derive(Debug)]
pub(crate) enum ExecutorMsg {
    /// Run a job on the slot it names.
    Assign(Assignment),
    /// Stop the job on `slot` if it is `key` (cooperative, forced after the grace).
    Stop {
        /// The slot.
        slot: u32,
        /// The job.
        key: AttemptKey,
    },
}

impl ractor::Message for ExecutorMsg {}

/// Arguments of an executor.
pub(crate) struct ExecutorArgs {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) slots: u32,
    pub(crate) registry: Arc<BehaviorRegistry>,
    pub(crate) up: Arc<dyn Upstream>,
    pub(crate) stop_grace: Duration,
}

pub(crate) struct Executor;

pub(crate) struct ExecutorState {
    name: String,
    slots: Vec<ActorRef<SlotMsg>>,
}

impl Actor for Executor {
    type Msg = ExecutorMsg;
    type State = ExecutorState;
    type Arguments = ExecutorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ExecutorMsg>,
        args: ExecutorArgs,
    ) -> Result<ExecutorState, ActorProcessingErr> {
        let mut slots = Vec::with_capacity(args.slots as usize);
        for slot in 0..args.slots {
            let slot_args = SlotArgs {
                executor: args.index,
                executor_name: args.name.clone(),
                slot,
                registry: args.registry.clone(),
                up: args.up.clone(),
                stop_grace: args.stop_grace,
            };
            let (r, _) =
                Actor::spawn_linked(None, SlotRunner, slot_args, myself.get_cell()).await?;
            slots.push(r);
        }
        Ok(ExecutorState { name: args.name, slots })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ExecutorMsg>,
        msg: ExecutorMsg,
        state: &mut ExecutorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ExecutorMsg::Assign(a) => match state.slots.get(a.slot as usize) {
                Some(slot) => slot.cast(SlotMsg::Run(a))?,
                None => error!(executor = %state.name, slot = a.slot, "assignment to no slot"),
            },
            ExecutorMsg::Stop { slot, key } => {
                if let Some(s) = state.slots.get(slot as usize) {
                    s.cast(SlotMsg::Stop(key))?;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ExecutorMsg>,
        evt: SupervisionEvent,
        state: &mut ExecutorState,
    ) -> Result<(), ActorProcessingErr> {
        // A slot runner only routes messages and never runs behavior code in its handler;
        // its death is a bug worth a loud log, not a reason to take the executor down.
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            error!(executor = %state.name, actor = ?cell.get_id(), %err, "slot runner failed");
        }
        Ok(())
    }
}
