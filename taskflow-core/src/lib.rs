//! taskflow-core: an actor-system library for distributed end-of-day batch task flows.
//!
//! This file is the table of contents: modules are private and the public API is re-exported
//! below. See `ARCHITECTURE.md` at the repository root for the bird's-eye view.
#![warn(missing_docs)]

mod actors;
pub mod behavior;
pub mod cluster;
pub mod flow;
pub mod graph;
mod job;
pub mod journal;
pub mod model;
mod past;
pub mod registration;
pub mod runtime;
mod schedule;
pub mod state;
pub mod store;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod view;

pub use past::{PastDay, PastLog};
