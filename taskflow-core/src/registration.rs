//! Registration (任务注册): which products, distributors or product×distributor
//! pairs a task covers on a business date.
//!
//! Pure functions over a task definition, a date and [`ReferenceData`]: no I/O, no clock. The
//! manager calls [`register`] when a trigger event arrives and persists the result; the same
//! inputs always give the same, sorted scope.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;

use crate::model::{
    BusinessDate, CalendarError, Distributor, Product, ProductSelection, ReferenceData, RunOn,
    ScopeItem, ShardBy, ShardKey, TaskDef, TaskId, TaskLevel,
};

/// The scope of one task on one business date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The task.
    pub task: TaskId,
    /// The business date.
    pub date: BusinessDate,
    /// What the task covers, sorted and without duplicates.
    pub items: Vec<ScopeItem>,
    /// The calendar dates the run accounts for: the date itself, plus the following
    /// non-business days for a `covers_non_business_days` task on the last business day
    /// before them. Empty when the task does not apply.
    pub covered_dates: Vec<NaiveDate>,
    /// Why the scope is empty, if it is.
    pub not_applicable: Option<Reason>,
}

/// Why a task has nothing to do on a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// The task runs on business days only and the date is not one.
    #[error("not a business day")]
    NotABusinessDay,
    /// No product, distributor or pair passes the task's filters on the date.
    #[error("no product or distributor qualifies")]
    NothingQualifies,
}

/// Why registration could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The calendar does not cover a date registration needs.
    #[error("cannot register task `{task}` for {date}: {source}")]
    Calendar {
        /// The task.
        task: TaskId,
        /// The business date.
        date: BusinessDate,
        /// The calendar's answer.
        source: CalendarError,
    },
}

impl Registration {
    /// Whether the scope is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the task counts as done for its successors without running: an empty scope
    /// (a holiday, nothing qualifying) must never block the chain.
    pub fn counts_as_done(&self) -> bool {
        self.is_empty()
    }
}

/// Computes the scope of `task` on `date`.
///
/// - `run_on = business-days` on a non-business date: empty, [`Reason::NotABusinessDay`].
/// - system level: the single [`ScopeItem::system`] item.
/// - product level: every product in one of `in_lifecycle`, of one of `product_modes` (if
///   set), matching `products` (funds / share classes), and — for a share class — whose parent
///   is not terminal; with `per_distributor`, one pair per such product and each distributor
///   that sells it and is of one of `distributor_types` (if set).
/// - distributor level: every distributor of one of `distributor_types` (if set).
pub fn register(
    task: &TaskDef,
    date: BusinessDate,
    data: &dyn ReferenceData,
) -> Result<Registration, Error> {
    let calendar_error = |source| Error::Calendar { task: task.id.clone(), date, source };
    let calendar = data.calendar();
    let business_day = calendar.is_business_day(date.date()).map_err(calendar_error)?;
    let mut reg = Registration {
        task: task.id.clone(),
        date,
        items: Vec::new(),
        covered_dates: Vec::new(),
        not_applicable: None,
    };
    if task.run_on == RunOn::BusinessDays && !business_day {
        reg.not_applicable = Some(Reason::NotABusinessDay);
        return Ok(reg);
    }
    reg.items = scope_items(task, data);
    if reg.items.is_empty() {
        reg.not_applicable = Some(Reason::NothingQualifies);
        return Ok(reg);
    }
    reg.covered_dates.push(date.date());
    if task.covers_non_business_days && business_day {
        let following =
            calendar.following_non_business_days(date.date()).map_err(calendar_error)?;
        reg.covered_dates.extend(following);
    }
    Ok(reg)
}

/// The items `task` covers with this reference data, ignoring the calendar; sorted, unique.
pub fn scope_items(task: &TaskDef, data: &dyn ReferenceData) -> Vec<ScopeItem> {
    let mut items: BTreeSet<ScopeItem> = BTreeSet::new();
    match task.level {
        TaskLevel::System => {
            items.insert(ScopeItem::system());
        }
        TaskLevel::Distributor => {
            items.extend(
                data.distributors()
                    .iter()
                    .filter(|d| distributor_qualifies(task, d))
                    .map(|d| ScopeItem::distributor(&d.code)),
            );
        }
        TaskLevel::Product => {
            let by_code: HashMap<&str, &Product> =
                data.products().iter().map(|p| (p.code.as_str(), p)).collect();
            for p in data.products().iter().filter(|p| product_qualifies(task, p, &by_code)) {
                if task.per_distributor {
                    items.extend(
                        data.distributors()
                            .iter()
                            .filter(|d| distributor_qualifies(task, d) && p.sold_by(&d.code))
                            .map(|d| ScopeItem::pair(&p.code, &d.code)),
                    );
                } else {
                    items.insert(ScopeItem::product(&p.code));
                }
            }
        }
    }
    items.into_iter().collect()
}

/// The default split of a scope into shard keys, by the task's `shard_by`; sorted, unique.
///
/// `item` and `behavior` give one shard per item ([`ScopeItem::key`]); `single` gives the one
/// key `*`; `product` and `distributor` group items by that code (an item without it keeps its
/// own key). An empty scope has no shards.
pub fn default_shards(task: &TaskDef, items: &[ScopeItem]) -> Vec<ShardKey> {
    default_split(task, items).into_iter().map(|(key, _)| key).collect()
}

/// [`default_shards`] with the scope items of each shard, in key order; every item is in
/// exactly one shard.
pub fn default_split(task: &TaskDef, items: &[ScopeItem]) -> Vec<(ShardKey, Vec<ScopeItem>)> {
    let mut shards: BTreeMap<ShardKey, Vec<ScopeItem>> = BTreeMap::new();
    for item in items {
        shards.entry(shard_key_of(task, item)).or_default().push(item.clone());
    }
    shards.into_iter().collect()
}

/// The shard a scope item belongs to under the task's `shard_by`.
fn shard_key_of(task: &TaskDef, item: &ScopeItem) -> ShardKey {
    let by = |code: &Option<String>| code.as_ref().map_or_else(|| item.key(), ShardKey::new);
    match task.shard_by {
        ShardBy::Single => ShardKey::new("*"),
        ShardBy::Item | ShardBy::Behavior => item.key(),
        ShardBy::Product => by(&item.product),
        ShardBy::Distributor => by(&item.distributor),
    }
}

/// Whether a product passes a product-level task's filters (lifecycle, mode, fund/class,
/// parent rule). `by_code` resolves parents.
pub(crate) fn product_qualifies(
    task: &TaskDef,
    p: &Product,
    by_code: &HashMap<&str, &Product>,
) -> bool {
    if !task.in_lifecycle.contains(&p.lifecycle) {
        return false;
    }
    if task.product_modes.as_ref().is_some_and(|m| !m.contains(&p.mode)) {
        return false;
    }
    match task.products {
        ProductSelection::All => {}
        ProductSelection::Funds if p.is_share_class() => return false,
        ProductSelection::ShareClasses if !p.is_share_class() => return false,
        ProductSelection::Funds | ProductSelection::ShareClasses => {}
    }
    // A share class cannot outlive its fund. A parent missing from the data (the loader
    // rejects that for files) does not disqualify: the class's own state decides.
    !p.parent
        .as_deref()
        .and_then(|code| by_code.get(code))
        .is_some_and(|parent| parent.lifecycle.is_terminal())
}

/// Whether a distributor passes the task's distributor-type filter.
pub(crate) fn distributor_qualifies(task: &TaskDef, d: &Distributor) -> bool {
    task.distributor_types.as_ref().is_none_or(|t| t.contains(&d.kind))
}

#[cfg(test)]
mod tests;
