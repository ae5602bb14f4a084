//! Shared helpers for the taskflow benchmarks.
