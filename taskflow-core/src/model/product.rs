//! Products (产品): funds and their share classes.

use super::kebab_enum;

kebab_enum! {
    /// A product's lifecycle state (`prod_lifecycle`).
    Lifecycle {
        /// Being designed (设计).
        Design = "design",
        /// Approved, not yet on sale (发行前).
        PreIssue = "pre-issue",
        /// In its subscription period (发行).
        Issuing = "issuing",
        /// The issue failed; money is returned (发行失败). Terminal.
        IssueFailed = "issue-failed",
        /// Established after a successful issue (成立).
        Established = "established",
        /// In a closed period: no subscriptions or redemptions (封闭).
        Closed = "closed",
        /// Open for subscriptions and redemptions (开放).
        Open = "open",
        /// Reached maturity, being wound up (到期).
        Matured = "matured",
        /// Terminated and liquidated (终止). Terminal.
        Terminated = "terminated",
    }
}

impl Lifecycle {
    /// Whether the product can never become active again (`terminated`, `issue-failed`).
    ///
    /// A share class whose parent is terminal never qualifies for registration: a class
    /// cannot outlive its fund.
    pub fn is_terminal(self) -> bool {
        matches!(self, Lifecycle::Terminated | Lifecycle::IssueFailed)
    }
}

kebab_enum! {
    /// How a product is valued (`prod_mode`).
    ProductMode {
        /// Closed-end, NAV-based (封闭净值).
        ClosedNav = "closed-nav",
        /// Open-end, NAV-based (开放净值).
        OpenNav = "open-nav",
        /// Money-market: unit value fixed at 1, daily income accrued (货币净值).
        MoneyMarket = "money-market",
        /// NAV published per period, opens periodically (周期净值).
        PeriodicNav = "periodic-nav",
    }
}

/// A product (`[[product]]` in `products.toml`).
///
/// A product with a [`parent`](Product::parent) is a *share class* (子份额, e.g. the A and C
/// classes) of its parent fund. Registration treats each product as its own scope item, with
/// two rules: a share class never qualifies while its parent is in a terminal lifecycle
/// ([`Lifecycle::is_terminal`]), and a task may restrict itself to funds or to share classes
/// ([`crate::model::ProductSelection`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// The product code (`prod_code`), unique among products.
    pub code: String,
    /// The display name (`prod_name`).
    pub name: String,
    /// The parent fund's code (`parent_prod_code`); `None` for a fund itself.
    pub parent: Option<String>,
    /// How the product is valued (`prod_mode`).
    pub mode: ProductMode,
    /// Where the product is in its life (`prod_lifecycle`).
    pub lifecycle: Lifecycle,
    /// The codes of the distributors that sell the product; `None` means every distributor.
    pub distributors: Option<Vec<String>>,
}

impl Product {
    /// Whether the product is a share class of another product.
    pub fn is_share_class(&self) -> bool {
        self.parent.is_some()
    }

    /// Whether `distributor` sells this product.
    pub fn sold_by(&self, distributor: &str) -> bool {
        self.distributors.as_ref().is_none_or(|ds| ds.iter().any(|d| d == distributor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_spellings_round_trip_and_unknown_values_list_the_allowed_ones() {
        for l in Lifecycle::ALL {
            assert_eq!(l.as_str().parse::<Lifecycle>(), Ok(*l));
        }
        let err = "opened".parse::<Lifecycle>().unwrap_err();
        assert!(err.contains("`opened`") && err.contains("`issue-failed`"), "{err}");
    }

    #[test]
    fn only_terminated_and_issue_failed_are_terminal() {
        let terminal: Vec<_> = Lifecycle::ALL.iter().filter(|l| l.is_terminal()).collect();
        assert_eq!(terminal, [&Lifecycle::IssueFailed, &Lifecycle::Terminated]);
    }

    #[test]
    fn a_product_without_a_sales_list_is_sold_by_everyone() {
        let mut p = Product {
            code: "F1".into(),
            name: "f".into(),
            parent: None,
            mode: ProductMode::OpenNav,
            lifecycle: Lifecycle::Open,
            distributors: None,
        };
        assert!(p.sold_by("D001"));
        p.distributors = Some(vec!["D002".into()]);
        assert!(!p.sold_by("D001") && p.sold_by("D002"));
    }
}
