//! A range of business days run one after another (`taskflow standalone --until-done --date D1
//! --through D2`): which dates of the range open, and where a run of the range resumes.
//!
//! Pure: dates and what the data directory holds in, a plan out. The server shell looks at the
//! data directory (read-only) and carries the plan out.

use chrono::NaiveDate;

use super::calendar::Calendar;
use super::ids::BusinessDate;
use super::task::RunOn;

/// Why a range of dates cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The last day comes before the first.
    #[error(
        "the range ends on {through}, before its first day {from}: give the first day first \
         and the last day second (or the same date twice for one day)"
    )]
    ThroughBeforeFrom {
        /// The first day asked for.
        from: BusinessDate,
        /// The last day asked for.
        through: BusinessDate,
    },
    /// A day of the range lies outside the calendar.
    #[error(
        "{date} is outside the calendar, which covers {cal_from}..{cal_to}: choose dates inside \
         it or extend the calendar (`from`/`to` in calendar.toml)"
    )]
    OutsideCalendar {
        /// The date outside.
        date: BusinessDate,
        /// The calendar's first day.
        cal_from: NaiveDate,
        /// The calendar's last day.
        cal_to: NaiveDate,
    },
    /// No date of the range is an open day of the flow.
    #[error(
        "no open business day from {from} through {through} (weekends and holidays of the \
         calendar do not open): choose a range with at least one open day"
    )]
    NoOpenDay {
        /// The first day asked for.
        from: BusinessDate,
        /// The last day asked for.
        through: BusinessDate,
    },
}

/// The dates from `from` through `through` (both included) that open a business day, in order:
/// every business day of `calendar`, or every date for [`RunOn::EveryDay`] (the flow's
/// `open_days`). Both ends must lie inside the calendar, and at least one date must open.
pub fn open_dates(
    calendar: &Calendar,
    open_days: RunOn,
    from: BusinessDate,
    through: BusinessDate,
) -> Result<Vec<BusinessDate>, RangeError> {
    if through < from {
        return Err(RangeError::ThroughBeforeFrom { from, through });
    }
    for date in [from, through] {
        if !calendar.covers(date.date()) {
            return Err(RangeError::OutsideCalendar {
                date,
                cal_from: calendar.from(),
                cal_to: calendar.to(),
            });
        }
    }
    let dates: Vec<BusinessDate> = from
        .date()
        .iter_days()
        .take_while(|d| *d <= through.date())
        .filter(|d| match open_days {
            RunOn::EveryDay => true,
            // Inside the calendar's range (checked above), so this cannot fail.
            RunOn::BusinessDays => calendar.is_business_day(*d).unwrap_or(false),
        })
        .map(BusinessDate)
        .collect();
    if dates.is_empty() {
        return Err(RangeError::NoOpenDay { from, through });
    }
    Ok(dates)
}

/// What a data directory holds of one date, as far as a range run cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayOnDisk {
    /// No store for the date: the day was never opened.
    Absent,
    /// A store that is not closed (still running, stalled, killed mid-day, or unreadable: the
    /// run opens it and its journal decides).
    Unfinished,
    /// A closed day: every task ended well; it never changes again.
    Closed,
}

/// One step of a range run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayStep {
    /// The day closed before this run: report it from its store (read-only), do not run it.
    Report(BusinessDate),
    /// Run the day (open or recover its journal) until it is done or stalls.
    Run(BusinessDate),
}

impl DayStep {
    /// The step's date.
    pub fn date(self) -> BusinessDate {
        match self {
            DayStep::Report(d) | DayStep::Run(d) => d,
        }
    }
}

/// The steps of a range run, in date order: a closed day is reported, any other is run. A run
/// killed at any instant and started again with the same range therefore resumes at the first
/// day that did not close, and the days that closed are never run again.
pub fn plan_range(days: &[(BusinessDate, DayOnDisk)]) -> Vec<DayStep> {
    let mut days = days.to_vec();
    days.sort_by_key(|(d, _)| *d);
    days.dedup_by_key(|(d, _)| *d);
    days.into_iter()
        .map(|(date, disk)| match disk {
            DayOnDisk::Closed => DayStep::Report(date),
            DayOnDisk::Absent | DayOnDisk::Unfinished => DayStep::Run(date),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> BusinessDate {
        s.parse().expect("valid test date")
    }

    /// September–October 2026: Mid-Autumn Sep 25–27, National Day Oct 1–7, make-up workdays
    /// Sun Sep 20 and Sat Oct 10.
    fn calendar() -> Calendar {
        Calendar::new(
            d("2026-09-01").date(),
            d("2026-10-31").date(),
            Calendar::DEFAULT_WEEKEND,
            (25..=27)
                .map(|day| NaiveDate::from_ymd_opt(2026, 9, day))
                .chain((1..=7).map(|day| NaiveDate::from_ymd_opt(2026, 10, day)))
                .map(|date| date.expect("valid test date")),
            [d("2026-09-20").date(), d("2026-10-10").date()],
        )
        .expect("valid calendar")
    }

    fn strings(v: &[BusinessDate]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_range_opens_its_business_days_and_skips_weekends_and_holidays() {
        let dates =
            open_dates(&calendar(), RunOn::BusinessDays, d("2026-09-17"), d("2026-10-12")).unwrap();
        assert_eq!(
            strings(&dates),
            [
                "2026-09-17", // Thu
                "2026-09-18", // Fri
                "2026-09-20", // Sun, make-up workday
                "2026-09-21",
                "2026-09-22",
                "2026-09-23",
                "2026-09-24", // Thu; Fri 25 – Sun 27 Mid-Autumn
                "2026-09-28",
                "2026-09-29",
                "2026-09-30", // National Day Oct 1–7
                "2026-10-08",
                "2026-10-09",
                "2026-10-10", // Sat, make-up workday
                "2026-10-12", // Mon; Sun 11 is a weekend day
            ]
        );
    }

    #[test]
    fn every_day_flows_open_weekends_and_holidays_too() {
        let dates =
            open_dates(&calendar(), RunOn::EveryDay, d("2026-09-30"), d("2026-10-02")).unwrap();
        assert_eq!(strings(&dates), ["2026-09-30", "2026-10-01", "2026-10-02"]);
    }

    #[test]
    fn one_day_is_a_range_of_one() {
        let dates =
            open_dates(&calendar(), RunOn::BusinessDays, d("2026-09-30"), d("2026-09-30")).unwrap();
        assert_eq!(strings(&dates), ["2026-09-30"]);
    }

    #[test]
    fn a_range_ending_before_it_starts_is_refused_naming_both_dates() {
        let err = open_dates(&calendar(), RunOn::BusinessDays, d("2026-09-30"), d("2026-09-28"))
            .unwrap_err();
        assert_eq!(
            err,
            RangeError::ThroughBeforeFrom { from: d("2026-09-30"), through: d("2026-09-28") }
        );
        let text = err.to_string();
        assert!(text.contains("2026-09-28") && text.contains("2026-09-30"), "{text}");
    }

    #[test]
    fn a_range_outside_the_calendar_is_refused_naming_the_date_and_the_calendar() {
        for (from, through, outside) in
            [("2026-08-31", "2026-09-03", "2026-08-31"), ("2026-10-30", "2026-11-02", "2026-11-02")]
        {
            let err =
                open_dates(&calendar(), RunOn::BusinessDays, d(from), d(through)).unwrap_err();
            assert!(
                matches!(err, RangeError::OutsideCalendar { date, .. } if date == d(outside)),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(outside) && text.contains("2026-09-01..2026-10-31"), "{text}");
            assert!(text.contains("extend the calendar"), "{text}");
        }
        // Every-day flows too: a date outside the calendar is never a guess.
        let err =
            open_dates(&calendar(), RunOn::EveryDay, d("2026-10-31"), d("2026-11-01")).unwrap_err();
        assert!(matches!(err, RangeError::OutsideCalendar { .. }), "{err:?}");
    }

    #[test]
    fn a_range_of_holidays_only_is_refused() {
        let err = open_dates(&calendar(), RunOn::BusinessDays, d("2026-10-01"), d("2026-10-07"))
            .unwrap_err();
        assert!(matches!(err, RangeError::NoOpenDay { .. }), "{err:?}");
        assert!(err.to_string().contains("2026-10-01"), "{err}");
    }

    #[test]
    fn closed_days_are_reported_and_the_rest_run_from_the_first_unfinished_one() {
        let steps = plan_range(&[
            (d("2026-09-28"), DayOnDisk::Closed),
            (d("2026-09-29"), DayOnDisk::Closed),
            (d("2026-09-30"), DayOnDisk::Unfinished),
            (d("2026-10-08"), DayOnDisk::Absent),
        ]);
        assert_eq!(
            steps,
            [
                DayStep::Report(d("2026-09-28")),
                DayStep::Report(d("2026-09-29")),
                DayStep::Run(d("2026-09-30")),
                DayStep::Run(d("2026-10-08")),
            ]
        );
    }

    #[test]
    fn a_finished_range_only_reports_and_a_fresh_one_runs_every_day() {
        let days = [d("2026-09-29"), d("2026-09-30")];
        let closed: Vec<_> = days.iter().map(|d| (*d, DayOnDisk::Closed)).collect();
        assert!(plan_range(&closed).iter().all(|s| matches!(s, DayStep::Report(_))));
        let fresh: Vec<_> = days.iter().map(|d| (*d, DayOnDisk::Absent)).collect();
        assert_eq!(plan_range(&fresh), [DayStep::Run(days[0]), DayStep::Run(days[1])]);
    }

    #[test]
    fn a_day_closed_after_an_unfinished_one_is_still_not_run_again() {
        // E.g. a later day run on its own before the range: closed days never re-run.
        let steps = plan_range(&[
            (d("2026-09-30"), DayOnDisk::Closed),
            (d("2026-09-29"), DayOnDisk::Unfinished),
            (d("2026-10-08"), DayOnDisk::Closed),
            (d("2026-09-29"), DayOnDisk::Unfinished),
        ]);
        assert_eq!(
            steps,
            [
                DayStep::Run(d("2026-09-29")),
                DayStep::Report(d("2026-09-30")),
                DayStep::Report(d("2026-10-08")),
            ],
            "in date order, each date once"
        );
    }
}
