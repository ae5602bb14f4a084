//! One module per subcommand.

pub(crate) mod cluster;
pub(crate) mod standalone;
pub(crate) mod store;
pub(crate) mod validate;
