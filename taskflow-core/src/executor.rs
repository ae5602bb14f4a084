//! The executor actor: a fixed set of long-lived slot runners. The manager's process runs it
//! for its in-process executors, an executor process (`cluster/`) for the shards it is sent;
//! it sits below both, so neither imports the other for it.
//!
//! ```text
//! Manager ──► Executor(i) ──► SlotRunner × slots
//! ```
//!
//! The manager does the placement (it knows every slot's occupancy, so credits = free slots and
//! no queue grows here) and addresses a slot by index; the executor only routes. Its messages
//! are plain data with ids ([`crate::job::Assignment`], [`crate::job::AttemptKey`]), so an executor
//! process (`cluster/`) receives the same assignments and sends the same reports over the
//! network.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::error;

use crate::behavior::{BehaviorRegistry, BoxFuture};
use crate::job::{Assignment, AttemptKey, Report};
use crate::view::Notice;
use slot::{SlotArgs, SlotMsg, SlotRunner};

pub(crate) mod slot;

/// Where an executor's slots send what they have to say: to the manager in this process
/// (the manager actor's local upstream), or over the network (`crate::cluster`).
pub(crate) trait Upstream: Send + Sync + 'static {
    /// A report about a job (finished, abandoned, slot freed).
    fn report(&self, report: Report);
    /// A step checkpoint; resolves once it is durable, or with why it was refused.
    fn checkpoint(
        &self,
        key: AttemptKey,
        step: u32,
        name: String,
    ) -> BoxFuture<'static, Result<(), String>>;
    /// A progress or log notice (dropped under pressure).
    fn note(&self, notice: Notice);
}

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
