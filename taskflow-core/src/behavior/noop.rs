//! The built-in `noop` behavior: one step that succeeds at once. Useful for placeholder tasks
//! (milestones such as "day opened"), for trying a flow out, and for load tests: with
//! `shard_by = "behavior"` and `params = { shards = "N" }` it splits into `N` shards (keys
//! `s0` … `s{N-1}`, each on the system scope), so the benchmarks' workloads run unchanged on
//! executor processes of the shipped binary.

use super::{BehaviorError, ShardContext, ShardPlan, SplitContext, TaskBehavior};
use crate::model::{ScopeItem, ShardKey};

/// Succeeds immediately; one step named `noop`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopBehavior;

impl NoopBehavior {
    /// The name it is registered under by [`BehaviorRegistry::with_builtins`](super::BehaviorRegistry::with_builtins).
    pub const NAME: &'static str = "noop";
}

impl TaskBehavior for NoopBehavior {
    /// One shard per scope item (the default), or `shards` shards when the task's params say
    /// so (`shards = "10000"`).
    fn split(&self, ctx: &SplitContext) -> Result<Vec<ShardPlan>, BehaviorError> {
        let Some(n) = ctx.params.get("shards") else {
            return Ok(ctx.scope.iter().cloned().map(ShardPlan::per_item).collect());
        };
        let n: u32 = n.trim().parse().map_err(|_| {
            BehaviorError::new(format!(
                "task `{}`: param `shards` = {n:?} is not a whole number of shards",
                ctx.task
            ))
        })?;
        Ok((0..n)
            .map(|i| ShardPlan::new(ShardKey::new(format!("s{i}")), vec![ScopeItem::system()]))
            .collect())
    }

    fn steps(&self) -> &[&str] {
        &["noop"]
    }

    async fn run_step(&self, ctx: &mut ShardContext, _step: usize) -> Result<(), BehaviorError> {
        ctx.debug("nothing to do");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::behavior::Params;
    use crate::model::{BusinessDate, TaskId};

    fn ctx(params: &[(&str, &str)]) -> SplitContext {
        let date = BusinessDate::from_ymd(2026, 11, 24).expect("date");
        SplitContext {
            task: TaskId::new("t"),
            date,
            scope: vec![ScopeItem::system()],
            covered_dates: vec![date],
            params: Params::from(
                params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            ),
        }
    }

    #[test]
    fn noop_splits_into_the_shards_param() {
        let plans = NoopBehavior.split(&ctx(&[("shards", "3")])).expect("split");
        let keys: Vec<&str> = plans.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["s0", "s1", "s2"]);
        assert_eq!(NoopBehavior.split(&ctx(&[])).expect("split").len(), 1);
        let err = NoopBehavior.split(&ctx(&[("shards", "many")])).expect_err("not a number");
        assert!(err.to_string().contains("shards"), "{err}");
    }
}
