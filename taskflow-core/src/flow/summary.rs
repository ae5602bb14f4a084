//! The one-screen summary of a loaded flow.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;

use super::Flow;
use crate::model::{DistributorType, Lifecycle, ProductMode, TaskId, TaskLevel};

/// What a flow contains, for a start-up banner or `taskflow check`; `Display` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The flow name.
    pub name: String,
    /// The time zone's IANA name.
    pub time_zone: String,
    /// Tasks per level.
    pub tasks_per_level: BTreeMap<TaskLevel, usize>,
    /// Products per mode.
    pub products_per_mode: BTreeMap<ProductMode, usize>,
    /// Products per lifecycle.
    pub products_per_lifecycle: BTreeMap<Lifecycle, usize>,
    /// How many products are share classes.
    pub share_classes: usize,
    /// Distributors per type.
    pub distributors_per_type: BTreeMap<DistributorType, usize>,
    /// The calendar's first and last day.
    pub calendar_range: (NaiveDate, NaiveDate),
    /// The number of holidays.
    pub holidays: usize,
    /// The number of make-up workdays.
    pub workdays: usize,
    /// The number of tasks on the longest dependency path.
    pub depth: u32,
    /// Tasks without dependencies.
    pub roots: Vec<TaskId>,
    /// Tasks nothing depends on.
    pub sinks: Vec<TaskId>,
}

fn count<K: Ord>(keys: impl Iterator<Item = K>) -> BTreeMap<K, usize> {
    keys.fold(BTreeMap::new(), |mut m, k| {
        *m.entry(k).or_insert(0) += 1;
        m
    })
}

impl Summary {
    pub(crate) fn of(flow: &Flow) -> Summary {
        let products = &flow.reference().products;
        let g = flow.graph();
        Summary {
            name: flow.settings().name.clone(),
            time_zone: flow.settings().time_zone.name().to_owned(),
            tasks_per_level: count(flow.tasks().iter().map(|t| t.level)),
            products_per_mode: count(products.iter().map(|p| p.mode)),
            products_per_lifecycle: count(products.iter().map(|p| p.lifecycle)),
            share_classes: products.iter().filter(|p| p.is_share_class()).count(),
            distributors_per_type: count(flow.reference().distributors.iter().map(|d| d.kind)),
            calendar_range: (flow.calendar().from(), flow.calendar().to()),
            holidays: flow.calendar().holidays().len(),
            workdays: flow.calendar().workdays().len(),
            depth: g.depth(),
            roots: g.roots().map(|ix| g.id(ix).clone()).collect(),
            sinks: g.sinks().map(|ix| g.id(ix).clone()).collect(),
        }
    }
}

fn join<K: fmt::Display>(m: &BTreeMap<K, usize>) -> String {
    m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tasks: usize = self.tasks_per_level.values().sum();
        let products: usize = self.products_per_mode.values().sum();
        let distributors: usize = self.distributors_per_type.values().sum();
        let ids = |v: &[TaskId]| v.iter().map(TaskId::as_str).collect::<Vec<_>>().join(", ");
        writeln!(f, "flow          {} (time zone {})", self.name, self.time_zone)?;
        writeln!(f, "tasks         {tasks}: {}", join(&self.tasks_per_level))?;
        writeln!(f, "graph         depth {}", self.depth)?;
        writeln!(f, "  roots       {}", ids(&self.roots))?;
        writeln!(f, "  sinks       {}", ids(&self.sinks))?;
        writeln!(f, "products      {products} ({} share classes)", self.share_classes)?;
        writeln!(f, "  by mode     {}", join(&self.products_per_mode))?;
        writeln!(f, "  by state    {}", join(&self.products_per_lifecycle))?;
        writeln!(f, "distributors  {distributors}: {}", join(&self.distributors_per_type))?;
        write!(
            f,
            "calendar      {}..{}, {} holidays, {} make-up workdays",
            self.calendar_range.0, self.calendar_range.1, self.holidays, self.workdays
        )
    }
}
