//! The `taskflow` binary: parses flags and calls into `taskflow-core`.

fn main() {}
