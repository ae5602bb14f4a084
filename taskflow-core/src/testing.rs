//! Test fixtures shared by the tests of every crate in the workspace (feature `test-util`):
//! one small universe of products, distributors and a calendar, so each test writes only the
//! flow it is about. Cluster test peers live in [`crate::cluster::testing`].

/// Three open funds: `F1` sold by `D1` and `D2`, `F2` by `D1`, `F3` by nobody.
pub const PRODUCTS: &str = r#"
[[product]]
code = "F1"
name = "fund one"
mode = "open-nav"
lifecycle = "open"
distributors = ["D1", "D2"]

[[product]]
code = "F2"
name = "fund two"
mode = "open-nav"
lifecycle = "open"
distributors = ["D1"]

[[product]]
code = "F3"
name = "fund three"
mode = "open-nav"
lifecycle = "open"
"#;

/// A direct channel `D1` and a bank `D2`.
pub const DISTRIBUTORS: &str = r#"
[[distributor]]
code = "D1"
name = "direct"
type = "direct"

[[distributor]]
code = "D2"
name = "bank"
type = "traditional-agent"
"#;

/// 2026, with 1–2 October closed (2026-09-30 is the last open day before them).
pub const CALENDAR: &str = r#"
[calendar]
from = 2026-01-01
to = 2026-12-31
holidays = [2026-10-01, 2026-10-02]
"#;

pub mod sim;
