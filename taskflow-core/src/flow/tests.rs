//! In-memory loading tests; file-based cases are in `tests/flow_files.rs`.
