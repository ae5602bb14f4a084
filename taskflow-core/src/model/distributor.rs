//! Distributors (销售商): the channels that sell products and send applications.

use super::kebab_enum;

kebab_enum! {
    /// The kind of channel (`distribute_type`).
    DistributorType {
        /// The fund company's own direct sales (直销).
        Direct = "direct",
        /// A bank or broker acting as agent (传统代销).
        TraditionalAgent = "traditional-agent",
        /// An internet platform acting as agent (互联网代销).
        InternetAgent = "internet-agent",
    }
}

/// A distributor (`[[distributor]]` in `distributors.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distributor {
    /// The distributor code (`distribute_code`), unique among distributors.
    pub code: String,
    /// The display name (`distribute_name`).
    pub name: String,
    /// The kind of channel (`distribute_type`; the file field is `type`).
    pub kind: DistributorType,
}
