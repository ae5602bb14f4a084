//! The domain model (SPEC §3): products, distributors, task definitions, the business calendar,
//! and the ids and keys every other module shares.

mod ids;

pub use ids::{BusinessDate, ScopeItem, ShardKey, TaskId};
