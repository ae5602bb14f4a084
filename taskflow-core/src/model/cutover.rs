//! The day lifecycle of a long-running manager, pure: when may the next business day open and
//! which date is it ([`next_day`]), and what a start on a data directory that already holds
//! days does ([`plan_start`]).
//!
//! Dates, the calendar, the flow's `[flow]` settings and the wall clock come in; a decision
//! comes out. The manager carries it out (opens the day, or sets one timer for the instant
//! the decision names); nothing here reads a clock or a file.
//!
//! Only one business day is open at a time (`max_open_days = 1`): the next day opens when the
//! open day has closed.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::calendar::Calendar;
use super::ids::BusinessDate;
use super::task::RunOn;

super::kebab_enum! {
    /// Which missed open days a manager opens when it was down over several
    /// (`catch_up` in `[flow]`).
    #[derive(Default)]
    CatchUp {
        /// Each missed open day, in date order, under its own date (the default).
        #[default]
        All = "all",
        /// Only the newest open day that may open; the ones before it are skipped.
        Latest = "latest",
    }
}

/// What the day lifecycle needs of the flow: its zone, which dates open, and the `[flow]`
/// cutover settings.
#[derive(Debug, Clone, Copy)]
pub struct DayPolicy<'a> {
    /// The business calendar.
    pub calendar: &'a Calendar,
    /// Which dates open a business day (`open_days`).
    pub open_days: RunOn,
    /// The flow's time zone: a date's calendar day and `new_day_at` are read in it.
    pub time_zone: Tz,
    /// The earliest wall-clock time on its own date at which a business day may open
    /// (`new_day_at`); `None`: as soon as its calendar day has begun.
    pub new_day_at: Option<NaiveTime>,
    /// `catch_up`.
    pub catch_up: CatchUp,
}

/// What the manager does once the open day has closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextDay {
    /// Open `date` now. `skipped`: open days before it that are not opened
    /// (`catch_up = "latest"`), in date order.
    Open {
        /// The day to open.
        date: BusinessDate,
        /// Missed open days that are not opened.
        skipped: Vec<BusinessDate>,
    },
    /// Not yet: decide again at `at` (one timer, no poll).
    WaitUntil {
        /// The next day.
        date: BusinessDate,
        /// The instant it may open.
        at: DateTime<Utc>,
    },
    /// The calendar has no open day after the closed one: extend the calendar (a reload at
    /// the next decision picks it up).
    CalendarEnds {
        /// The calendar's last day.
        last: NaiveDate,
    },
}

impl DayPolicy<'_> {
    /// Whether `date` opens a business day (outside the calendar: no).
    pub fn opens(&self, date: NaiveDate) -> bool {
        match self.open_days {
            RunOn::EveryDay => self.calendar.covers(date),
            RunOn::BusinessDays => self.calendar.is_business_day(date).unwrap_or(false),
        }
    }

    /// The first open date strictly after `date`, if the calendar has one.
    pub fn next_open_date(&self, date: BusinessDate) -> Option<BusinessDate> {
        let mut d = date.date();
        while let Some(next) = d.succ_opt() {
            if !self.calendar.covers(next) {
                return None;
            }
            if self.opens(next) {
                return Some(BusinessDate(next));
            }
            d = next;
        }
        None
    }

    /// The open dates strictly after `date` through `through` (included), in order.
    pub fn open_dates_between(
        &self,
        date: BusinessDate,
        through: BusinessDate,
    ) -> Vec<BusinessDate> {
        let mut out = Vec::new();
        let mut d = date;
        while let Some(next) = self.next_open_date(d) {
            if next > through {
                break;
            }
            out.push(next);
            d = next;
        }
        out
    }

    /// The instant at which business day `date` may open: its own calendar day has begun in
    /// the flow's zone, and it is `new_day_at` there if the flow sets one. A local time that
    /// does not exist (a DST gap) is taken as the first instant after it that does; a time
    /// that occurs twice (a DST overlap) as its first occurrence.
    pub fn opens_at(&self, date: BusinessDate) -> DateTime<Utc> {
        let time = self.new_day_at.unwrap_or(NaiveTime::MIN);
        first_instant_at_or_after(self.time_zone, date.date().and_time(time))
    }

    /// Open business days strictly after `date` through the last one whose opening instant
    /// has passed at `now`, in order.
    fn due_after(&self, date: BusinessDate, now: DateTime<Utc>) -> Vec<BusinessDate> {
        let mut out = Vec::new();
        let mut d = date;
        while let Some(next) = self.next_open_date(d) {
            if self.opens_at(next) > now {
                break;
            }
            out.push(next);
            d = next;
        }
        out
    }

    /// The calendar ends within `within` open days after `date` (counting `date` out): the
    /// number of open days left, if so (for the once-a-day warning).
    pub fn calendar_ends_within(&self, date: BusinessDate, within: usize) -> Option<usize> {
        let mut left = 0;
        let mut d = date;
        while let Some(next) = self.next_open_date(d) {
            left += 1;
            if left >= within {
                return None;
            }
            d = next;
        }
        Some(left)
    }
}

/// The earliest instant whose local time in `tz` is `local`, or, when `local` falls in a DST
/// gap, the first instant after the gap (the first minute that exists).
fn first_instant_at_or_after(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut t = local;
    // A gap is at most a few hours; a day of minutes bounds the walk.
    for _ in 0..(24 * 60) {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => return x.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            LocalResult::None => {
                // The next whole minute.
                let next = t + chrono::Duration::minutes(1);
                t = next.with_second(0).unwrap_or(next);
            }
        }
    }
    // No zone has a day-long gap; read the time as UTC rather than fail.
    Utc.from_utc_datetime(&local)
}

/// The decision after business day `closed` closed, at wall-clock `now`: open the next open
/// day now (with `catch_up = "latest"`, the newest one that may open, skipping the ones
/// before it), wait for the instant it may open, or the calendar has ended.
pub fn next_day(policy: &DayPolicy<'_>, closed: BusinessDate, now: DateTime<Utc>) -> NextDay {
    let Some(next) = policy.next_open_date(closed) else {
        return NextDay::CalendarEnds { last: policy.calendar.to() };
    };
    let due = policy.due_after(closed, now);
    match (due.split_last(), policy.catch_up) {
        (None, _) => NextDay::WaitUntil { date: next, at: policy.opens_at(next) },
        (Some(_), CatchUp::All) => NextDay::Open { date: next, skipped: Vec::new() },
        (Some((last, before)), CatchUp::Latest) => {
            NextDay::Open { date: *last, skipped: before.to_vec() }
        }
    }
}

/// What a data directory holds of one day, as a start sees it (read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayFound {
    /// The day's date (its directory `days/<date>/`).
    pub date: BusinessDate,
    /// The day closed: it never changes again.
    pub closed: bool,
}

/// What a start of a long-running manager does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPlan {
    /// Open (or resume) these days, one after another, in date order: the first is the open
    /// day; the others follow at their cutovers. `skipped`: missed days not opened
    /// (`catch_up = "latest"`).
    Run {
        /// The days, in date order (at least one).
        days: Vec<BusinessDate>,
        /// Missed open days that are not opened.
        skipped: Vec<BusinessDate>,
    },
    /// Every day in the directory closed and no `--date` was given: decide with [`next_day`]
    /// after this day.
    AfterClosed(BusinessDate),
}

/// Why a start is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// `--date` is earlier than the newest day the directory holds.
    #[error(
        "--date {asked} is earlier than {newest}, the newest business day in the data \
         directory: a data directory runs its days forward. Start without --date to resume \
         the open day, or give {newest} or a later date; re-running a past date is the job of \
         `taskflow backfill`, which is not available yet"
    )]
    Earlier {
        /// The date asked for.
        asked: BusinessDate,
        /// The newest day found.
        newest: BusinessDate,
    },
    /// `--date` is not an open day of the flow.
    #[error(
        "--date {0} is not an open business day of the flow (a weekend or holiday of its \
         calendar, or outside it): choose an open day"
    )]
    NotOpen(BusinessDate),
    /// No `--date` and no day in the directory: the caller must name the first day.
    #[error("the data directory holds no day and no --date was given")]
    NoDay,
}

/// What a start does, given the days found in the data directory (read-only, any order) and
/// the `--date` asked for:
///
/// - no day found: `--date` is the first day (refused if it does not open);
/// - no `--date`: the newest unclosed day is the open day and is resumed; when every day
///   closed, [`StartPlan::AfterClosed`] (the caller decides the next day with the clock);
/// - `--date` equal to the newest day: that day (resumed, or reported closed by the caller);
/// - `--date` later than the newest day: the newest day first if it is unclosed, then with
///   `catch_up = "all"` every open day between, then `--date`; with `latest`, `--date` only;
/// - `--date` earlier than the newest day: refused ([`StartError::Earlier`]).
pub fn plan_start(
    policy: &DayPolicy<'_>,
    found: &[DayFound],
    asked: Option<BusinessDate>,
) -> Result<StartPlan, StartError> {
    if let Some(d) = asked
        && !policy.opens(d.date())
    {
        return Err(StartError::NotOpen(d));
    }
    let newest = found.iter().max_by_key(|f| f.date).copied();
    let open = found.iter().filter(|f| !f.closed).max_by_key(|f| f.date).copied();
    match (newest, asked) {
        (None, None) => Err(StartError::NoDay),
        (None, Some(d)) => Ok(StartPlan::Run { days: vec![d], skipped: Vec::new() }),
        (Some(newest), None) => Ok(match open {
            Some(open) => StartPlan::Run { days: vec![open.date], skipped: Vec::new() },
            None => StartPlan::AfterClosed(newest.date),
        }),
        (Some(newest), Some(d)) if d < newest.date => {
            Err(StartError::Earlier { asked: d, newest: newest.date })
        }
        (Some(newest), Some(d)) if d == newest.date => {
            Ok(StartPlan::Run { days: vec![d], skipped: Vec::new() })
        }
        (Some(newest), Some(d)) => {
            let mut days = Vec::new();
            if !newest.closed {
                days.push(newest.date);
            }
            let between = policy.open_dates_between(newest.date, d);
            let skipped = match policy.catch_up {
                CatchUp::All => {
                    days.extend(between);
                    Vec::new()
                }
                CatchUp::Latest => {
                    days.push(d);
                    between.into_iter().filter(|x| *x != d).collect()
                }
            };
            Ok(StartPlan::Run { days, skipped })
        }
    }
}

/// `new_day_at`: `"HH:MM"`, 00:00 through 23:59.
pub fn parse_new_day_at(text: &str) -> Result<NaiveTime, String> {
    let bad = || {
        format!(
            "`{text}` is not a time of day: write \"HH:MM\" on a 24-hour clock, 00:00 through \
             23:59 (e.g. \"15:30\")"
        )
    };
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    NaiveTime::from_hms_opt(h, m, 0).filter(|_| h < 24 && m < 60).ok_or_else(bad)
}

#[cfg(test)]
mod tests;
