//! The built-in `command` behavior.

use super::{BehaviorError, ShardContext, TaskBehavior};

/// Runs a program per shard.
#[derive(Debug, Clone, Default)]
pub struct CommandBehavior;

impl CommandBehavior {
    /// The name it is registered under.
    pub const NAME: &'static str = "command";
}

impl TaskBehavior for CommandBehavior {
    fn steps(&self) -> &[&str] {
        &["run"]
    }

    async fn run_step(&self, _ctx: &mut ShardContext, _step: usize) -> Result<(), BehaviorError> {
        Ok(())
    }
}
