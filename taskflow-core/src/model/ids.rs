//! Identifiers and keys shared by every module: task ids, business dates, scope items, shard keys.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// The id of a task definition in a flow file (`[[task]] id = "..."`).
///
/// Ids are short ASCII words (`confirm_trades`); the flow loader enforces the character set so
/// an id can appear in a URL path, a file name and a log line without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(String);

impl TaskId {
    /// Wraps an id. Validation of the character set happens in the flow loader.
    pub fn new(id: impl Into<String>) -> Self {
        TaskId(id.into())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for TaskId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A business date (T 日): the day whose batch is being run.
///
/// It is distinct from the calendar date: the batch of business date T usually starts in the
/// evening of T and runs past midnight, and a time trigger such as `at 02:00 +1d` is relative to
/// T, not to the wall clock's date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BusinessDate(pub NaiveDate);

impl BusinessDate {
    /// Builds a date; `None` if the day does not exist.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Self> {
        NaiveDate::from_ymd_opt(year, month, day).map(BusinessDate)
    }

    /// The calendar date with the same number.
    pub fn date(self) -> NaiveDate {
        self.0
    }
}

impl fmt::Display for BusinessDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

impl std::str::FromStr for BusinessDate {
    type Err = chrono::ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map(BusinessDate)
    }
}

/// One unit of a task's registered scope: what the task covers on a date.
///
/// A system-level task has one item with neither field set; a product-level task one item per
/// qualifying product (with the distributor set too when the task runs per product×distributor
/// pair); a distributor-level task one item per qualifying distributor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScopeItem {
    /// The product code (`prod_code`), if the item is about one product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// The distributor code (`distribute_code`), if the item is about one distributor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributor: Option<String>,
}

impl ScopeItem {
    /// The single item of a system-level task.
    pub fn system() -> Self {
        ScopeItem { product: None, distributor: None }
    }

    /// An item for one product.
    pub fn product(code: impl Into<String>) -> Self {
        ScopeItem { product: Some(code.into()), distributor: None }
    }

    /// An item for one distributor.
    pub fn distributor(code: impl Into<String>) -> Self {
        ScopeItem { product: None, distributor: Some(code.into()) }
    }

    /// An item for one product sold through one distributor.
    pub fn pair(product: impl Into<String>, distributor: impl Into<String>) -> Self {
        ScopeItem { product: Some(product.into()), distributor: Some(distributor.into()) }
    }

    /// The item as a shard key: `P001`, `D01`, `P001@D01`, or `*` for the system item.
    pub fn key(&self) -> ShardKey {
        ShardKey(match (&self.product, &self.distributor) {
            (Some(p), Some(d)) => format!("{p}@{d}"),
            (Some(p), None) => p.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => "*".to_owned(),
        })
    }
}

/// The key of one shard of a registered task, unique within the task and date.
///
/// Together with the business date, the task id and the shard's generation it forms the
/// idempotency key that a behavior uses to make its writes exactly-once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardKey(pub String);

impl ShardKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ShardKey(key.into())
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The idempotency key of one shard's work: `(business date, task, shard, generation)`, shown
/// as `2026-11-24/confirm_trades/P001@D01/g0`.
///
/// Retries and reassignments of the same generation share the key, so a behavior that keys its
/// writes by it writes each effect once however often the shard runs. A rollback bumps the
/// generation, so the legitimate re-run after a rollback is not deduplicated away downstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey {
    /// The business date.
    pub date: BusinessDate,
    /// The task.
    pub task: TaskId,
    /// The shard key.
    pub shard: ShardKey,
    /// The shard's generation.
    pub generation: u32,
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/g{}", self.date, self.task, self.shard, self.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_item_keys_are_distinct_per_shape() {
        assert_eq!(ScopeItem::system().key().as_str(), "*");
        assert_eq!(ScopeItem::product("P1").key().as_str(), "P1");
        assert_eq!(ScopeItem::distributor("D1").key().as_str(), "D1");
        assert_eq!(ScopeItem::pair("P1", "D1").key().as_str(), "P1@D1");
    }

    #[test]
    fn business_date_round_trips_through_text() {
        let d: BusinessDate = "2026-11-24".parse().expect("valid date");
        assert_eq!(d.to_string(), "2026-11-24");
        assert!("2026-02-30".parse::<BusinessDate>().is_err());
    }
}
