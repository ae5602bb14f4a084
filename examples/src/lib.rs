//! Examples for taskflow: the fund-clearing flow's behaviors ([`fund_clearing`], flow files in
//! `examples/fund-clearing/`), a helper that turns a task and a date into runnable shards
//! ([`shards`]), and the `embed_in_service` binary (`src/bin/embed_in_service.rs`).

pub mod fund_clearing;
pub mod shards;
