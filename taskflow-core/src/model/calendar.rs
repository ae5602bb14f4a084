//! The business calendar (营业日历): which calendar dates are business days.

use std::collections::BTreeSet;

use chrono::{Datelike, Days, NaiveDate, Weekday};

/// A business calendar over a fixed range of dates.
///
/// A date is a business day when it is not a weekend day and not a holiday, or when it is a
/// make-up workday (调休: a weekend day worked to compensate for a holiday). Questions about a
/// date outside `[from, to]` are errors, never guesses: a calendar that silently treats 2027 as
/// all business days would register a whole holiday's batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    from: NaiveDate,
    to: NaiveDate,
    /// `weekend[d]`: whether weekday `d` (0 = Monday) is a weekend day.
    weekend: [bool; 7],
    holidays: BTreeSet<NaiveDate>,
    workdays: BTreeSet<NaiveDate>,
}

/// Why a calendar cannot be built or cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// The range is empty.
    #[error("calendar range is empty: `from` {from} is after `to` {to}")]
    EmptyRange {
        /// The first day.
        from: NaiveDate,
        /// The last day.
        to: NaiveDate,
    },
    /// A holiday or workday lies outside the range.
    #[error(
        "{kind} {date} is outside the calendar range {from}..{to}; extend `from`/`to` or remove it"
    )]
    DateOutsideRange {
        /// `holiday` or `workday`.
        kind: &'static str,
        /// The date.
        date: NaiveDate,
        /// The first day.
        from: NaiveDate,
        /// The last day.
        to: NaiveDate,
    },
    /// A date is listed both as a holiday and as a make-up workday.
    #[error("{0} is listed both as a holiday and as a workday; keep it in one list")]
    HolidayAndWorkday(NaiveDate),
    /// A question about a date the calendar does not cover.
    #[error("calendar.toml covers {from}..{to}; {date} is outside it — extend the calendar")]
    OutOfRange {
        /// The date asked about.
        date: NaiveDate,
        /// The first day.
        from: NaiveDate,
        /// The last day.
        to: NaiveDate,
    },
}

impl Calendar {
    /// The default weekend: Saturday and Sunday.
    pub const DEFAULT_WEEKEND: [Weekday; 2] = [Weekday::Sat, Weekday::Sun];

    /// Builds a calendar. All problems found are returned, not only the first.
    pub fn new(
        from: NaiveDate,
        to: NaiveDate,
        weekend: impl IntoIterator<Item = Weekday>,
        holidays: impl IntoIterator<Item = NaiveDate>,
        workdays: impl IntoIterator<Item = NaiveDate>,
    ) -> Result<Self, Vec<CalendarError>> {
        let cal = Calendar {
            from,
            to,
            weekend: weekend.into_iter().fold([false; 7], |mut w, d| {
                w[d.num_days_from_monday() as usize] = true;
                w
            }),
            holidays: holidays.into_iter().collect(),
            workdays: workdays.into_iter().collect(),
        };
        let mut errors = Vec::new();
        if from > to {
            errors.push(CalendarError::EmptyRange { from, to });
            return Err(errors);
        }
        let outside = |kind, date| CalendarError::DateOutsideRange { kind, date, from, to };
        errors.extend(
            cal.holidays.iter().filter(|d| !cal.covers(**d)).map(|d| outside("holiday", *d)),
        );
        errors.extend(
            cal.workdays.iter().filter(|d| !cal.covers(**d)).map(|d| outside("workday", *d)),
        );
        errors.extend(
            cal.holidays.intersection(&cal.workdays).map(|d| CalendarError::HolidayAndWorkday(*d)),
        );
        if errors.is_empty() { Ok(cal) } else { Err(errors) }
    }

    /// The first day covered.
    pub fn from(&self) -> NaiveDate {
        self.from
    }

    /// The last day covered.
    pub fn to(&self) -> NaiveDate {
        self.to
    }

    /// The holidays, sorted.
    pub fn holidays(&self) -> impl ExactSizeIterator<Item = NaiveDate> + '_ {
        self.holidays.iter().copied()
    }

    /// The make-up workdays, sorted.
    pub fn workdays(&self) -> impl ExactSizeIterator<Item = NaiveDate> + '_ {
        self.workdays.iter().copied()
    }

    /// The weekend days, Monday first.
    pub fn weekend(&self) -> Vec<Weekday> {
        (0..7u8)
            .filter(|i| self.weekend[usize::from(*i)])
            .filter_map(|i| Weekday::try_from(i).ok())
            .collect()
    }

    /// Whether `date` lies in `[from, to]`.
    pub fn covers(&self, date: NaiveDate) -> bool {
        self.from <= date && date <= self.to
    }

    /// Whether `date` is a business day; an error if the calendar does not cover it.
    pub fn is_business_day(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        if !self.covers(date) {
            return Err(CalendarError::OutOfRange { date, from: self.from, to: self.to });
        }
        if self.workdays.contains(&date) {
            return Ok(true);
        }
        Ok(!self.holidays.contains(&date)
            && !self.weekend[date.weekday().num_days_from_monday() as usize])
    }

    /// The first business day strictly after `date`.
    pub fn next_business_day(&self, date: NaiveDate) -> Result<NaiveDate, CalendarError> {
        self.step_to_business_day(date, |d| d.checked_add_days(Days::new(1)))
    }

    /// The last business day strictly before `date`.
    pub fn previous_business_day(&self, date: NaiveDate) -> Result<NaiveDate, CalendarError> {
        self.step_to_business_day(date, |d| d.checked_sub_days(Days::new(1)))
    }

    /// The non-business calendar days that directly follow `date`, up to the next business
    /// day (exclusive): the days a task with `covers_non_business_days` also covers.
    pub fn following_non_business_days(
        &self,
        date: NaiveDate,
    ) -> Result<Vec<NaiveDate>, CalendarError> {
        let next = self.next_business_day(date)?;
        Ok(date.iter_days().skip(1).take_while(|d| *d < next).collect())
    }

    fn step_to_business_day(
        &self,
        date: NaiveDate,
        step: impl Fn(NaiveDate) -> Option<NaiveDate>,
    ) -> Result<NaiveDate, CalendarError> {
        let mut d = date;
        loop {
            d = step(d).ok_or(CalendarError::OutOfRange {
                date: d,
                from: self.from,
                to: self.to,
            })?;
            if self.is_business_day(d)? {
                return Ok(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().expect("valid test date")
    }

    /// October 2026: National Day holiday Oct 1–7, make-up workday Sat Oct 10.
    fn october() -> Calendar {
        Calendar::new(
            d("2026-09-01"),
            d("2026-10-31"),
            Calendar::DEFAULT_WEEKEND,
            (1..=7).map(|i| d(&format!("2026-10-0{i}"))),
            [d("2026-10-10")],
        )
        .expect("valid calendar")
    }

    #[test]
    fn weekends_holidays_and_make_up_workdays() {
        let c = october();
        assert_eq!(c.is_business_day(d("2026-09-30")), Ok(true));
        assert_eq!(c.is_business_day(d("2026-10-01")), Ok(false), "holiday");
        assert_eq!(c.is_business_day(d("2026-10-03")), Ok(false), "holiday on a Saturday");
        assert_eq!(c.is_business_day(d("2026-10-10")), Ok(true), "make-up Saturday");
        assert_eq!(c.is_business_day(d("2026-10-11")), Ok(false), "ordinary Sunday");
    }

    #[test]
    fn next_and_previous_business_day_skip_the_holiday() {
        let c = october();
        assert_eq!(c.next_business_day(d("2026-09-30")), Ok(d("2026-10-08")));
        assert_eq!(c.previous_business_day(d("2026-10-08")), Ok(d("2026-09-30")));
        assert_eq!(c.next_business_day(d("2026-10-09")), Ok(d("2026-10-10")));
        assert_eq!(
            c.following_non_business_days(d("2026-09-30")).map(|v| v.len()),
            Ok(7),
            "Oct 1..=7"
        );
        assert_eq!(c.following_non_business_days(d("2026-09-29")), Ok(vec![]));
    }

    #[test]
    fn a_date_outside_the_range_is_an_error_that_says_what_to_do() {
        let c = october();
        let err = c.is_business_day(d("2027-01-04")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "calendar.toml covers 2026-09-01..2026-10-31; 2027-01-04 is outside it — extend the calendar"
        );
        assert!(matches!(
            c.next_business_day(d("2026-10-30")),
            Err(CalendarError::OutOfRange { .. })
        ));
    }

    #[test]
    fn invalid_calendars_report_every_problem() {
        let errs = Calendar::new(
            d("2026-01-01"),
            d("2026-12-31"),
            Calendar::DEFAULT_WEEKEND,
            [d("2025-12-31"), d("2026-05-01")],
            [d("2026-05-01")],
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.contains(&CalendarError::HolidayAndWorkday(d("2026-05-01"))));
        let empty = Calendar::new(d("2026-02-01"), d("2026-01-01"), [], [], []).unwrap_err();
        assert!(matches!(empty[..], [CalendarError::EmptyRange { .. }]));
    }
}
