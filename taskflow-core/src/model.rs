//! The domain model: products, distributors, task definitions, the business calendar,
//! and the ids and keys every other module shares.

mod calendar;
mod cutover;
mod day_range;
mod distributor;
mod ids;
mod product;
mod retention;
mod task;

pub use calendar::{Calendar, CalendarError};
pub use cutover::{
    CatchUp, DayFound, DayPolicy, NextDay, StartError, StartPlan, next_day, parse_new_day_at,
    plan_start,
};
pub use day_range::{DayOnDisk, DayStep, RangeError, open_dates, plan_range};
pub use distributor::{Distributor, DistributorType};
pub use ids::{BusinessDate, IdempotencyKey, ScopeItem, ShardKey, TaskId};
pub use product::{Lifecycle, Product, ProductMode};
pub use retention::{DEFAULT_RETAIN_DAYS, days_to_prune, window_start};
pub use task::{
    Deadline, DeadlineError, ProductSelection, ResourceDef, RunOn, ShardBy, TaskDef, TaskLevel,
    Trigger, TriggerError, parse_duration,
};

/// Where registration reads products, distributors and the calendar from.
///
/// The shipped server reads files (see [`crate::flow`]); a service that embeds taskflow-core
/// implements this trait over its own database. Implementations return a consistent snapshot:
/// registration of one task on one date reads all three through the same `&self`.
pub trait ReferenceData: Send + Sync {
    /// Every product, in a stable order.
    fn products(&self) -> &[Product];
    /// Every distributor, in a stable order.
    fn distributors(&self) -> &[Distributor];
    /// The business calendar.
    fn calendar(&self) -> &Calendar;
}

/// Reference data held in memory: what the flow loader builds from `products.toml`,
/// `distributors.toml` and `calendar.toml`, and what tests build by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticReferenceData {
    /// The products (`products.toml`).
    pub products: Vec<Product>,
    /// The distributors (`distributors.toml`).
    pub distributors: Vec<Distributor>,
    /// The business calendar (`calendar.toml`).
    pub calendar: Calendar,
}

impl ReferenceData for StaticReferenceData {
    fn products(&self) -> &[Product] {
        &self.products
    }

    fn distributors(&self) -> &[Distributor] {
        &self.distributors
    }

    fn calendar(&self) -> &Calendar {
        &self.calendar
    }
}

/// Defines a fieldless enum that files spell in kebab-case, with `ALL`, `as_str`, `Display`
/// and serde support. The serde derive gives "unknown variant `x`, expected one of …" errors.
macro_rules! kebab_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
        )]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling used in files.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            /// Parses the file spelling; the error lists the allowed values.
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    other => Err(format!(
                        "unknown value `{other}`, expected one of {}",
                        [$(concat!("`", $text, "`")),+].join(", ")
                    )),
                }
            }
        }
    };
}
pub(crate) use kebab_enum;
