//! Retention of closed business days, pure: which days of a data directory may go.
//!
//! A data directory keeps the closed days of the newest `keep` open business days, counted
//! back from the newest day it holds (that day included) on the flow's calendar — never from
//! the wall clock, so a manager that was down for a month prunes nothing it would not have
//! pruned the day it stopped. Weekends and holidays are not counted: `keep = 30` keeps thirty
//! business days, however many calendar days they span. A day that did not close (the open
//! day, a stalled or killed run, a store that cannot be read) is never pruned, however old.
//!
//! When the calendar begins before `keep` open days are counted, the window reaches past its
//! start and nothing is pruned (a day outside the calendar cannot be counted, so it is kept).

use super::cutover::{DayFound, DayPolicy};
use super::ids::BusinessDate;

/// The default of `[flow] retain_days`.
pub const DEFAULT_RETAIN_DAYS: u32 = 30;

/// The first date of the retention window: the `keep`-th open date counted back from
/// `newest` (itself counted when it is an open date); `None` when the calendar begins first.
pub fn window_start(
    policy: &DayPolicy<'_>,
    newest: BusinessDate,
    keep: u32,
) -> Option<BusinessDate> {
    let keep = keep.max(1);
    let mut d = newest.date();
    let mut counted = u32::from(policy.opens(d));
    while counted < keep {
        d = d.pred_opt()?;
        if !policy.calendar.covers(d) {
            return None;
        }
        if policy.opens(d) {
            counted += 1;
        }
    }
    // With `newest` not an open date and keep reached on an earlier one, `d` is that date.
    Some(BusinessDate(d))
}

/// The closed days of `days` before the retention window of `keep` open days (see the module
/// documentation), oldest first. `keep` below 1 counts as 1: the newest day is always kept.
pub fn days_to_prune(policy: &DayPolicy<'_>, days: &[DayFound], keep: u32) -> Vec<BusinessDate> {
    let Some(newest) = days.iter().map(|f| f.date).max() else { return Vec::new() };
    let Some(start) = window_start(policy, newest, keep) else { return Vec::new() };
    let mut out: Vec<BusinessDate> =
        days.iter().filter(|f| f.closed && f.date < start).map(|f| f.date).collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Flow;

    fn d(s: &str) -> BusinessDate {
        s.parse().expect("valid test date")
    }

    /// The bundled example flow: its 2026 Chinese calendar has the Mid-Autumn holiday Fri
    /// Sep 25 – Sun Sep 27 and National Day Oct 1–7.
    fn example() -> Flow {
        crate::flow::load_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fund-clearing"))
            .expect("the example flow loads")
    }

    fn closed(dates: &[&str]) -> Vec<DayFound> {
        dates.iter().map(|s| DayFound { date: d(s), closed: true }).collect()
    }

    #[test]
    fn the_window_counts_open_days_so_a_weekend_and_a_holiday_inside_it_do_not_count() {
        let flow = example();
        let p = flow.day_policy();
        // Newest Tue Sep 29; 3 open days back: Tue 29, Mon 28, Thu 24 (Fri 25 – Sun 27 are the
        // Mid-Autumn holiday and its weekend).
        let days = closed(&["2026-09-21", "2026-09-22", "2026-09-23", "2026-09-24", "2026-09-28"])
            .into_iter()
            .chain([DayFound { date: d("2026-09-29"), closed: false }])
            .collect::<Vec<_>>();
        assert_eq!(window_start(&p, d("2026-09-29"), 3), Some(d("2026-09-24")));
        assert_eq!(
            days_to_prune(&p, &days, 3),
            vec![d("2026-09-21"), d("2026-09-22"), d("2026-09-23")]
        );
        // keep 1: only the newest day stays.
        assert_eq!(days_to_prune(&p, &days, 1).len(), 5);
        assert_eq!(days_to_prune(&p, &days, 0).len(), 5, "0 counts as 1");
        // A window of 30 open days holds them all.
        assert!(days_to_prune(&p, &days, 30).is_empty());
    }

    #[test]
    fn an_unclosed_old_day_is_never_pruned() {
        let flow = example();
        let p = flow.day_policy();
        let mut days = closed(&["2026-09-14", "2026-09-16", "2026-09-28", "2026-09-29"]);
        days.push(DayFound { date: d("2026-09-15"), closed: false });
        assert_eq!(days_to_prune(&p, &days, 2), vec![d("2026-09-14"), d("2026-09-16")]);
    }

    #[test]
    fn the_window_is_counted_from_the_newest_day_not_from_the_clock() {
        let flow = example();
        let p = flow.day_policy();
        // The newest day is Oct 8, right after National Day: 2 open days are Oct 8 and Sep 30.
        let days = closed(&["2026-09-28", "2026-09-29", "2026-09-30", "2026-10-08"]);
        assert_eq!(days_to_prune(&p, &days, 2), vec![d("2026-09-28"), d("2026-09-29")]);
        assert!(days_to_prune(&p, &[], 2).is_empty(), "an empty directory prunes nothing");
    }

    #[test]
    fn a_window_reaching_past_the_calendars_start_prunes_nothing() {
        let flow = example();
        let p = flow.day_policy();
        let from = flow.calendar().from();
        let days = closed(&[&from.to_string(), "2026-01-06"]);
        assert_eq!(window_start(&p, d("2026-01-06"), 30), None);
        assert!(days_to_prune(&p, &days, 30).is_empty());
    }
}
