//! From a task and a business date to the shards a runtime runs: registration
//! ([`taskflow_core::registration::register`]), then the split — the task's `shard_by`
//! grouping, or the behavior's own [`split`](taskflow_core::behavior::TaskBehavior::split) for
//! `shard_by = "behavior"` — into first-attempt [`ShardSpec`]s.
//!
//! Until the runtime exists this is how examples and tests get shards to feed
//! [`run_shard`](taskflow_core::behavior::run_shard).

use anyhow::Context as _;
use taskflow_core::behavior::{BehaviorRegistry, Params, ShardSpec, SplitContext, split_shards};
use taskflow_core::flow::Flow;
use taskflow_core::model::{BusinessDate, ScopeItem, ShardBy, ShardKey};
use taskflow_core::registration::{default_split, register};

/// The first-attempt specs of every shard of task `task_id` on `date`, sorted by shard key.
/// Empty when the task has nothing to do on `date` (a holiday, nothing qualifies).
pub fn shard_specs(
    flow: &Flow,
    task_id: &str,
    date: BusinessDate,
    registry: &BehaviorRegistry,
) -> anyhow::Result<Vec<ShardSpec>> {
    let task = flow.task_by_id(task_id).with_context(|| format!("no task `{task_id}`"))?;
    let registration = register(task, date, flow.reference())?;
    let covered_dates: Vec<BusinessDate> =
        registration.covered_dates.iter().copied().map(BusinessDate).collect();
    let params = Params::from(task.params.clone());
    let plans: Vec<(ShardKey, Vec<ScopeItem>)> = if task.shard_by == ShardBy::Behavior {
        let behavior = registry.acquire(&task.behavior)?;
        let ctx = SplitContext {
            task: task.id.clone(),
            date,
            scope: registration.items.clone(),
            covered_dates: covered_dates.clone(),
            params: params.clone(),
        };
        split_shards(&*behavior, &ctx)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .into_iter()
            .map(|plan| (plan.key, plan.scope))
            .collect()
    } else {
        default_split(task, &registration.items)
    };
    Ok(plans
        .into_iter()
        .map(|(key, scope)| {
            let mut spec = ShardSpec::new(task.id.clone(), date, key, scope);
            spec.covered_dates = covered_dates.clone();
            spec.params = params.clone();
            spec
        })
        .collect())
}
