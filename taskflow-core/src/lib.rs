//! taskflow-core: an actor-system library for distributed end-of-day batch task flows.
//!
//! This file is the table of contents. The crate root holds what running a business day
//! takes — [`Runtime`], its [`RuntimeOptions`] and [`ManagerHandle`], the views it hands out
//! ([`Board`], [`Notice`], …), the [`Journal`] and read-only [`PastDay`]s — re-exported from
//! private modules. Seven modules stay public because each is a vocabulary of its own, whose
//! names read best qualified (`store::Error`, `state::Command`, `flow::load_dir`,
//! `cluster::Status`, `registration::Reason`): [`behavior`], [`cluster`], [`flow`], [`model`],
//! [`registration`], [`state`] and [`store`]. See `ARCHITECTURE.md` at the repository root for
//! the bird's-eye view.
#![warn(missing_docs)]

pub mod behavior;
pub mod cluster;
mod control;
pub mod flow;
pub mod model;
pub mod registration;
pub mod state;
pub mod store;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

mod actors;
mod days;
mod executor;
mod graph;
mod job;
mod journal;
mod options;
mod past;
mod runtime;
mod schedule;
mod view;

pub use days::{DayDir, DayLook, Pruned, day_dir, days_found, list_days, prune_days};
pub use graph::{Error as GraphError, TaskGraph, TaskIx};
pub use journal::{Error as JournalError, Journal, JournalOptions, Recovery as JournalRecovery};
pub use options::{RuntimeOptions, wall};
pub use past::{PastDay, PastLog};
pub use runtime::{Error as RuntimeError, ManagerHandle, Runtime, previous_open_day, today_in};
pub use view::{
    ActionError, Board, DayForecast, DayOutcome, ExecutorView, Notice, ResourceView, RuntimeStats,
    ShardInfo, SlotView, Subscription, TaskForecast, TaskView, Topic, WaitingFor, event_task,
};
