//! Day state: the shard state machine, the task status derived from it, the day's events,
//! the in-memory day state they fold into, operator commands, and the snapshot format.
//!
//! The module is pure data and functions (no actors, no I/O): the manager actor owns a
//! [`DayState`], turns inputs into events with [`decide`] (operator commands) or directly
//! (executor reports, triggers), persists them, and [`DayState::apply`]s them. Everything here
//! is deterministic, so a replica or a snapshot builder folding the same events gets the same
//! state, byte for byte.
//!
//! - [`machine`]: `ShardStatus`, `ShardEvent`, the one transition table.
//! - [`TaskStatus`]: derived from per-task shard counts, never stored.
//! - [`DayEvent`] / [`EventKind`]: what is persisted and replicated.
//! - [`DayState`]: the fold; queries for the console and the scheduler.
//! - [`decide`]: operator commands, validated without mutating.
//! - snapshot codec: [`DayState::encode_snapshot`] / [`DayState::decode_snapshot`].

mod codec;
mod command;
mod day;
mod event;
pub mod machine;
mod query;
mod status;

#[cfg(test)]
mod tests;

/// Re-exported: the key a shard's writes are made idempotent by.
pub use crate::model::IdempotencyKey;
pub use codec::{CodecError, SHARD_ROW_SCHEMA_VERSION, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_MAGIC};
pub use command::{Command, CommandError, decide, shard_event_for};
pub use day::{Applied, AuditEntry, Checkpoint, DayState, Error, ShardChange, ShardView};
pub use event::{
    AuditRecord, DayEvent, EVENT_FORMAT_VERSION, EventKind, MAX_EVENT_BYTES, MAX_REASON_BYTES,
    OperatorAction, Target, cap_reason,
};
pub use machine::{
    IllegalTransition, ShardEvent, ShardEventKind, ShardStatus, TRANSITIONS, UnconfirmedPolicy,
    allowed_events, transition,
};
pub use status::{StatusCounts, TaskStatus};
