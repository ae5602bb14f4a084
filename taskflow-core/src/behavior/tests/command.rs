//! Tests of the `command` behavior.
