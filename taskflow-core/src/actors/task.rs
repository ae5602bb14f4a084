//! The task actor: one per active task (registered and not done).
//!
//! ```text
//! Manager ──► TaskActor(task)   (child of the manager; stopped when its task is done)
//! ```
//!
//! It keeps slow or timed work off the manager loop: registration and the behavior's `split`
//! (for its own task and, ahead of time, for its successors, so that a predecessor's success
//! and its successor's registration and dispatch land in one batch), and the retry-backoff
//! timers of its failed shards. It writes nothing: results go back to the manager as messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use super::manager::ManagerMsg;
use crate::behavior::{BehaviorRegistry, ShardPlan, SplitContext, split_shards};
use crate::flow::Flow;
use crate::graph::TaskIx;
use crate::model::{BusinessDate, ScopeItem, ShardBy};
use crate::registration;

/// Messages of a task actor.
#[derive(Debug)]
pub(crate) enum TaskMsg {
    /// Compute the registration and split of these tasks and send them to the manager.
    Prepare(Vec<TaskIx>),
    /// Send [`ManagerMsg::RetryDue`] for `shard` after `after`.
    ScheduleRetry {
        /// The shard.
        shard: u32,
        /// The attempt that failed (the manager checks it is still the current one).
        attempt: u32,
        /// The backoff.
        after: Duration,
    },
}

impl ractor::Message for TaskMsg {}

/// A task's registration, computed ahead of recording it.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The registered scope.
    pub(crate) items: Vec<ScopeItem>,
    /// The covered calendar dates.
    pub(crate) covered_dates: Vec<chrono::NaiveDate>,
    /// The shards, in registration order.
    pub(crate) plans: Vec<ShardPlan>,
}

/// Arguments of a task actor.
pub(crate) struct TaskArgs {
    pub(crate) task: TaskIx,
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
    timers: HashMap<u32, JoinHandle<()>>,
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
        Ok(TaskState { args, timers: HashMap::new() })
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
            TaskMsg::ScheduleRetry { shard, attempt, after } => {
                let manager = state.args.manager.clone();
                let task = state.args.task;
                let handle = tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = manager.cast(ManagerMsg::RetryDue { task, shard, attempt });
                });
                if let Some(old) = state.timers.insert(shard, handle) {
                    old.abort();
                }
            }
        }
        state.timers.retain(|_, h| !h.is_finished());
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<TaskMsg>,
        state: &mut TaskState,
    ) -> Result<(), ActorProcessingErr> {
        // Timers only send messages; the manager re-derives retries from durable state.
        for (_, h) in state.timers.drain() {
            h.abort();
        }
        Ok(())
    }
}

/// Registration plus split of one task: pure given the flow, the date and the behavior.
fn prepare(args: &TaskArgs, ix: TaskIx) -> Result<Prepared, String> {
    prepare_task(&args.flow, &args.registry, args.date, ix)
}

/// Whether preparing `ix` is trivial enough for the manager to do inline: a system-level task
/// (one scope item, no reference data walked) split by the flow, not by its behavior.
pub(crate) fn is_trivial(flow: &Flow, ix: TaskIx) -> bool {
    let def = flow.task(ix);
    def.level == crate::model::TaskLevel::System && def.shard_by != ShardBy::Behavior
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
    let reg =
        registration::register(def, args.date, args.flow.reference()).map_err(|e| e.to_string())?;
    if reg.is_empty() {
        return Ok(Prepared { items: Vec::new(), covered_dates: Vec::new(), plans: Vec::new() });
    }
    let plans = if def.shard_by == ShardBy::Behavior {
        let lease = args.registry.acquire(&def.behavior).map_err(|e| e.to_string())?;
        let ctx = SplitContext {
            task: def.id.clone(),
            date: args.date,
            scope: reg.items.clone(),
            covered_dates: reg.covered_dates.iter().map(|d| BusinessDate(*d)).collect(),
            params: def.params.clone().into(),
        };
        split_shards(&*lease, &ctx).map_err(|e| format!("split of task `{}`: {e}", def.id))?
    } else {
        crate::schedule::group_scope(def, &reg.items)
    };
    Ok(Prepared { items: reg.items, covered_dates: reg.covered_dates, plans })
}

struct PrepareArgs<'a> {
    flow: &'a Flow,
    registry: &'a BehaviorRegistry,
    date: BusinessDate,
}
