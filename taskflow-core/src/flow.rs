//! Loading and validation of a flow directory.
