//! The task actor: one per active task (registered and not done).
//!
//! ```text
//! Manager ──► TaskActor(task)   (child of the manager; stopped when its task is done)
//! ```
//!
//! It keeps slow work off the manager loop: registration and the behavior's `split` (for its
//! own task and, ahead of time, for its successors, so that a predecessor's success and its
//! successor's registration and dispatch land in one batch). It writes nothing: results go
//! back to the manager as messages. Retry backoffs are the manager core's timers.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::manager::ManagerMsg;
use crate::behavior::{BehaviorRegistry, SplitContext, split_shards};
use crate::flow::Flow;
use crate::graph::TaskIx;
use crate::model::{BusinessDate, ShardBy};
use crate::registration;

/// Messages of a task actor.
#[derive(Debug)]
pub(crate) enum TaskMsg {
    /// Compute the registration and split of these tasks and send them to the manager.
    Prepare(Vec<TaskIx>),
}

impl ractor::Message for TaskMsg {}

pub(crate) use crate::schedule::Prepared;

/// Arguments of a task actor.
pub(crate) struct TaskArgs {
    pub(crate) flow: Arc<Flow>,
    pub(crate) registry: Arc<BehaviorRegistry>,
    pub(crate) date: BusinessDate,
    pub(crate) manager: ActorRef<ManagerMsg>,
    /// Tasks to prepare right after start.
    pub(crate) prepare: Vec<TaskIx>,
}

pub(crate) struct TaskActor;

pub(crate) struct TaskState {
    args: TaskArgs,
}

impl Actor for TaskActor {
    type Msg = TaskMsg;
    type State = TaskState;
    type Arguments = TaskArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TaskMsg>,
        mut args: TaskArgs,
    ) -> Result<TaskState, ActorProcessingErr> {
        let prepare = std::mem::take(&mut args.prepare);
        if !prepare.is_empty() {
            let _ = myself.cast(TaskMsg::Prepare(prepare));
        }
        Ok(TaskState { args })
    }

    async fn handle(
        &self,
        _myself: ActorRef<TaskMsg>,
        msg: TaskMsg,
        state: &mut TaskState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TaskMsg::Prepare(tasks) => {
                for task in tasks {
                    let result = prepare(&state.args, task);
                    let _ = state.args.manager.cast(ManagerMsg::Prepared { task, result });
                }
            }
        }
        Ok(())
    }
}

/// Registration plus split of one task: pure given the flow, the date and the behavior.
fn prepare(args: &TaskArgs, ix: TaskIx) -> Result<Prepared, String> {
    prepare_task(&args.flow, &args.registry, args.date, ix)
}

/// See [`prepare`].
pub(crate) fn prepare_task(
    flow: &Flow,
    registry: &BehaviorRegistry,
    date: BusinessDate,
    ix: TaskIx,
) -> Result<Prepared, String> {
    let args = PrepareArgs { flow, registry, date };
    let def = args.flow.task(ix);
    if def.shard_by != ShardBy::Behavior {
        return crate::schedule::prepare_by_flow(flow, date, ix);
    }
    let reg =
        registration::register(def, args.date, args.flow.reference()).map_err(|e| e.to_string())?;
    if reg.is_empty() {
        return Ok(Prepared { items: Vec::new(), covered_dates: Vec::new(), plans: Vec::new() });
    }
    let plans = {
        let lease = args.registry.acquire(&def.behavior).map_err(|e| e.to_string())?;
        let ctx = SplitContext {
            task: def.id.clone(),
            date: args.date,
            scope: reg.items.clone(),
            covered_dates: reg.covered_dates.iter().map(|d| BusinessDate(*d)).collect(),
            params: def.params.clone().into(),
        };
        split_shards(&*lease, &ctx).map_err(|e| format!("split of task `{}`: {e}", def.id))?
    };
    Ok(Prepared { items: reg.items, covered_dates: reg.covered_dates, plans })
}

struct PrepareArgs<'a> {
    flow: &'a Flow,
    registry: &'a BehaviorRegistry,
    date: BusinessDate,
}
