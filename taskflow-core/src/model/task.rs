//! Task definitions (任务): one `[[task]]` table of `flow.toml`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::{BusinessDate, DistributorType, Lifecycle, ProductMode, TaskId, kebab_enum};

kebab_enum! {
    /// What a task's scope is made of (`task_type`).
    TaskLevel {
        /// One item for the whole system (系统级).
        System = "system",
        /// One item per qualifying product, or per product×distributor pair (产品级).
        Product = "product",
        /// One item per qualifying distributor (销售商级).
        Distributor = "distributor",
    }
}

kebab_enum! {
    /// On which dates a task registers a scope.
    RunOn {
        /// Only on business days; on other dates its scope is empty (default).
        BusinessDays = "business-days",
        /// On every calendar date the engine opens.
        EveryDay = "every-day",
    }
}

kebab_enum! {
    /// Which products a product-level task considers, by their place in the fund/share-class
    /// hierarchy (`parent_prod_code`).
    ProductSelection {
        /// Funds and share classes alike (default).
        All = "all",
        /// Only products without a parent: fund-level work such as NAV or custody.
        Funds = "funds",
        /// Only products with a parent: per-class work such as class fees.
        ShareClasses = "share-classes",
    }
}

kebab_enum! {
    /// How the default split turns a task's scope into shards.
    ShardBy {
        /// One shard per scope item (default).
        Item = "item",
        /// One shard for the whole scope, key `*`.
        Single = "single",
        /// Group items by product (for product×distributor pairs).
        Product = "product",
        /// Group items by distributor (for product×distributor pairs).
        Distributor = "distributor",
        /// The behavior splits; the default split treats it as `item`.
        Behavior = "behavior",
    }
}

/// When a registered task may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// An operator presses *execute* (`"manual"`).
    Manual,
    /// As soon as its dependencies are done (`"auto"`).
    Auto,
    /// Automatically, but not before a local time relative to the business date
    /// (`"at 18:30"`, `"at 02:00 +1d"`).
    At {
        /// The local time in the flow's time zone.
        time: NaiveTime,
        /// Calendar days after the business date (`+1d`: the night after T).
        day_offset: u32,
    },
}

/// Why a trigger string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid trigger `{0}`: expected \"manual\", \"auto\", \"at HH:MM\" or \"at HH:MM +Nd\" (e.g. \"at 02:00 +1d\")"
)]
pub struct TriggerError(pub String);

impl Trigger {
    /// Parses the file spelling.
    pub fn parse(s: &str) -> Result<Self, TriggerError> {
        let err = || TriggerError(s.to_owned());
        match s.trim() {
            "manual" => return Ok(Trigger::Manual),
            "auto" => return Ok(Trigger::Auto),
            _ => {}
        }
        let rest = s.trim().strip_prefix("at ").ok_or_else(err)?;
        let mut parts = rest.split_whitespace();
        let time_text = parts.next().ok_or_else(err)?;
        let (h, m) = time_text.split_once(':').ok_or_else(err)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(err());
        }
        let time = NaiveTime::from_hms_opt(
            h.parse().map_err(|_| err())?,
            m.parse().map_err(|_| err())?,
            0,
        )
        .ok_or_else(err)?;
        let day_offset = match parts.next() {
            None => 0,
            Some(off) => {
                let n = off.strip_prefix('+').and_then(|o| o.strip_suffix('d')).ok_or_else(err)?;
                let n: u32 = n.parse().map_err(|_| err())?;
                if n > 7 {
                    return Err(err());
                }
                n
            }
        };
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Trigger::At { time, day_offset })
    }

    /// The instant an `at` trigger fires for `date` in `tz`; `None` for manual and auto.
    ///
    /// The local time is taken on the business date plus the day offset (`at 02:00 +1d` for
    /// business date 2026-11-24 fires at 2026-11-25 02:00 local). A local time skipped by a
    /// daylight-saving jump fires at the first instant after the gap.
    pub fn fire_at(&self, date: BusinessDate, tz: Tz) -> Option<DateTime<Utc>> {
        let Trigger::At { time, day_offset } = *self else { return None };
        let day = date.date().checked_add_days(Days::new(day_offset.into()))?;
        let local = day.and_time(time);
        let resolved = tz.from_local_datetime(&local).earliest().or_else(|| {
            // In a DST gap: step forward minute by minute to the first local time that exists.
            (1..=180).find_map(|m| {
                tz.from_local_datetime(&(local + chrono::Duration::minutes(m))).earliest()
            })
        })?;
        Some(resolved.with_timezone(&Utc))
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Manual => f.write_str("manual"),
            Trigger::Auto => f.write_str("auto"),
            Trigger::At { time, day_offset: 0 } => write!(f, "at {}", time.format("%H:%M")),
            Trigger::At { time, day_offset } => {
                write!(f, "at {} +{day_offset}d", time.format("%H:%M"))
            }
        }
    }
}

/// A deadline, `deadline = "HH:MM [+Nd]"`: a local time in the flow's time zone on the
/// business date plus `day_offset` calendar days (`"02:00 +1d"` for business date 2026-11-24
/// is 2026-11-25 02:00 local), like an `at` trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// The local time.
    pub time: NaiveTime,
    /// Calendar days after the business date (0 to 7).
    pub day_offset: u32,
}

/// Why a deadline string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid deadline `{0}`: expected \"HH:MM\" or \"HH:MM +Nd\" (a local time in the flow's time zone, N from 0 to 7 calendar days after the business date, e.g. \"18:30\" or \"02:00 +1d\")"
)]
pub struct DeadlineError(pub String);

impl Deadline {
    /// Parses the file spelling.
    pub fn parse(s: &str) -> Result<Self, DeadlineError> {
        match Trigger::parse(&format!("at {}", s.trim())) {
            Ok(Trigger::At { time, day_offset }) if !s.trim().starts_with("at") => {
                Ok(Deadline { time, day_offset })
            }
            _ => Err(DeadlineError(s.to_owned())),
        }
    }

    /// The instant of the deadline for `date` in `tz` (a local time skipped by a
    /// daylight-saving jump is the first instant after the gap).
    pub fn at(&self, date: BusinessDate, tz: Tz) -> Option<DateTime<Utc>> {
        Trigger::At { time: self.time, day_offset: self.day_offset }.fire_at(date, tz)
    }
}

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.time.format("%H:%M"))?;
        if self.day_offset > 0 {
            write!(f, " +{}d", self.day_offset)?;
        }
        Ok(())
    }
}

/// Parses a duration such as `"30s"`, `"5m"`, `"2h"`, `"1h30m"` or `"500ms"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let err = || {
        format!(
            "invalid duration `{s}`: expected a number with a unit, e.g. \"500ms\", \"30s\", \"5m\", \"1h30m\""
        )
    };
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            _ => return Err(err()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A validated task definition: one `[[task]]` table of `flow.toml`.
///
/// Built by the flow loader ([`crate::flow`]), which checks every rule documented on the
/// fields; registration ([`crate::registration`]) relies on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDef {
    /// The id, `[A-Za-z0-9_.-]{1,64}`, unique in the flow.
    pub id: TaskId,
    /// The display name.
    pub name: String,
    /// What the scope is made of.
    pub level: TaskLevel,
    /// The name of the behavior that runs the task, resolved at start-up.
    pub behavior: String,
    /// The tasks that must be done first.
    pub depends_on: Vec<TaskId>,
    /// When a registered task may start (default `auto`).
    pub trigger: Trigger,
    /// On which dates the task has a scope (default business days).
    pub run_on: RunOn,
    /// The product lifecycles the task applies to; non-empty for product-level tasks, empty
    /// for other levels.
    pub in_lifecycle: Vec<Lifecycle>,
    /// Only products of these modes (product level); `None`: any mode.
    pub product_modes: Option<Vec<ProductMode>>,
    /// Only distributors of these types (distributor level, or product level per distributor);
    /// `None`: any type.
    pub distributor_types: Option<Vec<DistributorType>>,
    /// Product level only: one item per product×distributor pair where the distributor sells
    /// the product.
    pub per_distributor: bool,
    /// Product level only: funds, share classes or both (default both).
    pub products: ProductSelection,
    /// How the default split makes shards (default one per item).
    pub shard_by: ShardBy,
    /// On the last business day before non-business days, also cover those calendar days
    /// (e.g. money-fund income accrued over a weekend). Requires `run_on = business-days`.
    pub covers_non_business_days: bool,
    /// How many times a failed shard is retried automatically (default 0).
    pub retries: u32,
    /// The wait before an automatic retry (default 30 s).
    pub retry_backoff: Duration,
    /// Which runnable shards get free slots first: higher first (default 0, within
    /// [`TaskDef::PRIORITIES`]); ties go to the task on the longest remaining path to the
    /// day's end (the critical path first), then to flow order.
    pub priority: i32,
    /// A shard attempt running longer than this fails; `None`: no limit.
    pub timeout: Option<Duration>,
    /// When the task should be done (`deadline = "HH:MM [+Nd]"`), if it has one.
    pub deadline: Option<Deadline>,
    /// Units of the flow's resources ([`ResourceDef`]) each of its shards holds while it runs
    /// (`needs = { ta_db = 1 }`); empty: it needs none.
    pub needs: BTreeMap<String, u32>,
    /// Free-form parameters passed to the behavior.
    pub params: BTreeMap<String, String>,
}

/// A `[[resource]]` of the flow: a pool of `units` that shards of the tasks that `need` it
/// hold while they run (`units = 1` is an exclusive lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDef {
    /// Its name, `[A-Za-z0-9_.-]{1,64}`, unique in the flow.
    pub name: String,
    /// How many units it has (≥ 1) until an operator changes it.
    pub units: u32,
}

impl TaskDef {
    /// The default retry backoff: 30 seconds.
    pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(30);

    /// The range of `priority`.
    pub const PRIORITIES: std::ops::RangeInclusive<i32> = -1000..=1000;

    /// A task with every option at its default (`auto`, business days, no filters, one shard
    /// per item, no retries). Product-level tasks get every non-terminal lifecycle.
    pub fn new(
        id: impl Into<String>,
        level: TaskLevel,
        behavior: impl Into<String>,
        depends_on: &[&str],
    ) -> Self {
        let id = id.into();
        TaskDef {
            name: id.clone(),
            id: TaskId::new(id),
            level,
            behavior: behavior.into(),
            depends_on: depends_on.iter().map(|d| TaskId::new(*d)).collect(),
            trigger: Trigger::Auto,
            run_on: RunOn::BusinessDays,
            in_lifecycle: if level == TaskLevel::Product {
                Lifecycle::ALL.iter().copied().filter(|l| !l.is_terminal()).collect()
            } else {
                Vec::new()
            },
            product_modes: None,
            distributor_types: None,
            per_distributor: false,
            products: ProductSelection::All,
            shard_by: ShardBy::Item,
            covers_non_business_days: false,
            retries: 0,
            retry_backoff: Self::DEFAULT_RETRY_BACKOFF,
            priority: 0,
            timeout: None,
            deadline: None,
            needs: BTreeMap::new(),
            params: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_parse_and_print_back() {
        for text in ["manual", "auto", "at 18:30", "at 02:00 +1d"] {
            assert_eq!(Trigger::parse(text).map(|t| t.to_string()).as_deref(), Ok(text));
        }
        for bad in
            ["at 25:00", "at 2:00", "at 02:00 +1", "at 02:00 1d", "sometime", "at 02:00 +1d x"]
        {
            assert_eq!(Trigger::parse(bad), Err(TriggerError(bad.to_owned())), "{bad}");
        }
    }

    #[test]
    fn an_overnight_trigger_fires_on_the_next_calendar_day_in_the_flow_time_zone() {
        let date = BusinessDate::from_ymd(2026, 11, 24).expect("date");
        let t = Trigger::parse("at 02:00 +1d").expect("trigger");
        let at = t.fire_at(date, chrono_tz::Asia::Shanghai).expect("fires");
        assert_eq!(at.to_rfc3339(), "2026-11-24T18:00:00+00:00", "02:00 CST is 18:00 UTC");
        assert_eq!(Trigger::Auto.fire_at(date, chrono_tz::Asia::Shanghai), None);
        assert_eq!(Trigger::Manual.fire_at(date, chrono_tz::UTC), None);
    }

    #[test]
    fn a_trigger_in_a_daylight_saving_gap_fires_after_the_gap() {
        // 2026-03-08 02:30 does not exist in New York.
        let date = BusinessDate::from_ymd(2026, 3, 8).expect("date");
        let t = Trigger::parse("at 02:30").expect("trigger");
        let at = t.fire_at(date, chrono_tz::America::New_York).expect("fires");
        assert_eq!(at.to_rfc3339(), "2026-03-08T07:00:00+00:00");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "30", "s", "5 minutes", "-5s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
