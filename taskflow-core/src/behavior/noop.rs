//! The built-in `noop` behavior: one step that succeeds at once. Useful for placeholder tasks
//! (milestones such as "day opened") and for trying a flow out.

use super::{BehaviorError, ShardContext, TaskBehavior};

/// Succeeds immediately; one step named `noop`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopBehavior;

impl NoopBehavior {
    /// The name it is registered under by [`BehaviorRegistry::with_builtins`](super::BehaviorRegistry::with_builtins).
    pub const NAME: &'static str = "noop";
}

impl TaskBehavior for NoopBehavior {
    fn steps(&self) -> &[&str] {
        &["noop"]
    }

    async fn run_step(&self, ctx: &mut ShardContext, _step: usize) -> Result<(), BehaviorError> {
        ctx.debug("nothing to do");
        Ok(())
    }
}
