use chrono::{NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::*;
use crate::flow::Flow;

fn d(s: &str) -> BusinessDate {
    s.parse().expect("valid test date")
}

/// The bundled example flow (its 2026 Chinese calendar: National Day Oct 1–7, make-up
/// workdays Sun Sep 20 and Sat Oct 10).
fn example() -> Flow {
    crate::flow::load_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fund-clearing"))
        .expect("the example flow loads")
}

fn policy<'a>(flow: &'a Flow, new_day_at: Option<&str>, catch_up: CatchUp) -> DayPolicy<'a> {
    DayPolicy {
        calendar: flow.calendar(),
        open_days: flow.settings().open_days,
        time_zone: flow.settings().time_zone,
        new_day_at: new_day_at.map(|t| parse_new_day_at(t).expect("valid time")),
        catch_up,
    }
}

/// A wall-clock instant given in the flow's zone.
fn at(tz: Tz, s: &str) -> DateTime<Utc> {
    let local = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect("valid test time");
    tz.from_local_datetime(&local).earliest().expect("exists").with_timezone(&Utc)
}

#[test]
fn the_next_day_opens_at_the_start_of_its_own_calendar_day() {
    let flow = example();
    let p = policy(&flow, None, CatchUp::All);
    let tz = p.time_zone;
    // Tue Sep 29 closed late in the evening of the 29th: Wed Sep 30 waits for its midnight.
    assert_eq!(
        next_day(&p, d("2026-09-29"), at(tz, "2026-09-29 23:10")),
        NextDay::WaitUntil { date: d("2026-09-30"), at: at(tz, "2026-09-30 00:00") }
    );
    // Closed after midnight: it opens at once.
    assert_eq!(
        next_day(&p, d("2026-09-29"), at(tz, "2026-09-30 00:20")),
        NextDay::Open { date: d("2026-09-30"), skipped: vec![] }
    );
}

#[test]
fn weekends_holidays_and_make_up_workdays_come_from_the_calendar() {
    let flow = example();
    let p = policy(&flow, None, CatchUp::All);
    let next = |s: &str| p.next_open_date(d(s)).map(|d| d.to_string());
    assert_eq!(next("2026-09-18").as_deref(), Some("2026-09-20"), "Fri → Sun (make-up workday)");
    assert_eq!(next("2026-09-24").as_deref(), Some("2026-09-28"), "Mid-Autumn Sep 25–27");
    assert_eq!(next("2026-09-30").as_deref(), Some("2026-10-08"), "National Day Oct 1–7");
    assert_eq!(next("2026-10-09").as_deref(), Some("2026-10-10"), "Sat Oct 10 is a workday");
    assert_eq!(next("2026-10-16").as_deref(), Some("2026-10-19"), "an ordinary weekend");
    assert_eq!(next("2026-10-30").as_deref(), Some("2026-11-02"), "across a month end");
}

#[test]
fn new_day_at_holds_the_next_day_until_that_time_on_its_own_date() {
    let flow = example();
    let p = policy(&flow, Some("15:30"), CatchUp::All);
    let tz = p.time_zone;
    // Sep 30 closed at 01:00 on Oct 1 (a holiday): the next day is Oct 8, at 15:30.
    assert_eq!(
        next_day(&p, d("2026-09-30"), at(tz, "2026-10-01 01:00")),
        NextDay::WaitUntil { date: d("2026-10-08"), at: at(tz, "2026-10-08 15:30") }
    );
    assert_eq!(
        next_day(&p, d("2026-09-30"), at(tz, "2026-10-08 15:29")),
        NextDay::WaitUntil { date: d("2026-10-08"), at: at(tz, "2026-10-08 15:30") }
    );
    assert_eq!(
        next_day(&p, d("2026-09-30"), at(tz, "2026-10-08 15:30")),
        NextDay::Open { date: d("2026-10-08"), skipped: vec![] }
    );
}

#[test]
fn catch_up_all_opens_each_missed_day_in_order_and_latest_only_the_newest() {
    let flow = example();
    let tz = flow.settings().time_zone;
    // Down from the evening of Mon Oct 12 until Mon Oct 19, 10:00.
    let now = at(tz, "2026-10-19 10:00");
    let all = policy(&flow, Some("09:00"), CatchUp::All);
    let mut day = d("2026-10-12");
    let mut opened = Vec::new();
    while let NextDay::Open { date, skipped } = next_day(&all, day, now) {
        assert!(skipped.is_empty());
        opened.push(date.to_string());
        day = date;
    }
    assert_eq!(
        opened,
        ["2026-10-13", "2026-10-14", "2026-10-15", "2026-10-16", "2026-10-19"],
        "each missed open day under its own date, in order, then the day due now"
    );
    assert_eq!(
        next_day(&all, day, now),
        NextDay::WaitUntil { date: d("2026-10-20"), at: at(tz, "2026-10-20 09:00") }
    );
    let latest = policy(&flow, Some("09:00"), CatchUp::Latest);
    assert_eq!(
        next_day(&latest, d("2026-10-12"), now),
        NextDay::Open {
            date: d("2026-10-19"),
            skipped: ["2026-10-13", "2026-10-14", "2026-10-15", "2026-10-16"].map(d).to_vec()
        }
    );
    // Before Oct 19's 09:00, the newest due is Fri Oct 16.
    assert_eq!(
        next_day(&latest, d("2026-10-12"), at(tz, "2026-10-19 08:59")),
        NextDay::Open {
            date: d("2026-10-16"),
            skipped: ["2026-10-13", "2026-10-14", "2026-10-15"].map(d).to_vec()
        }
    );
}

#[test]
fn the_end_of_the_calendar_is_a_decision_not_a_guess() {
    let flow = example();
    let p = policy(&flow, None, CatchUp::All);
    let last = flow.calendar().to();
    let far = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    assert_eq!(next_day(&p, d("2027-03-31"), far), NextDay::CalendarEnds { last });
    assert_eq!(p.calendar_ends_within(d("2027-03-31"), 20), Some(0));
    let left = p.calendar_ends_within(d("2027-03-10"), 20).expect("ends within 20");
    assert!(left > 0 && left < 20, "{left}");
    assert_eq!(p.calendar_ends_within(d("2026-10-12"), 20), None);
}

/// A flow in New York: DST starts Sun 2026-03-08 at 02:00 (clocks jump to 03:00) and ends Sun
/// 2026-11-01 at 02:00 (01:00–02:00 happens twice).
fn new_york() -> Flow {
    let flow = r#"
[flow]
name = "ny"
time_zone = "America/New_York"
open_days = "every-day"

[[task]]
id = "a"
name = "A"
level = "system"
behavior = "noop"
"#;
    let cal = "[calendar]\nfrom = 2026-01-01\nto = 2026-12-31\n";
    Flow::from_strs(flow, "", "", cal).expect("the test flow loads")
}

#[test]
fn a_new_day_at_in_a_dst_gap_fires_at_the_next_time_that_exists() {
    let flow = new_york();
    let p = policy(&flow, Some("02:30"), CatchUp::All);
    let ny: Tz = "America/New_York".parse().unwrap();
    // 02:30 does not exist on Mar 8: the day opens at 03:00 EDT (07:00 UTC).
    let opens = p.opens_at(d("2026-03-08"));
    assert_eq!(opens, Utc.with_ymd_and_hms(2026, 3, 8, 7, 0, 0).unwrap());
    assert_eq!(opens.with_timezone(&ny).format("%H:%M %Z").to_string(), "03:00 EDT");
    assert_eq!(
        next_day(&p, d("2026-03-07"), opens - chrono::Duration::seconds(1)),
        NextDay::WaitUntil { date: d("2026-03-08"), at: opens }
    );
    assert_eq!(
        next_day(&p, d("2026-03-07"), opens),
        NextDay::Open { date: d("2026-03-08"), skipped: vec![] }
    );
    // The day before and after, 02:30 is an ordinary time.
    assert_eq!(p.opens_at(d("2026-03-07")), Utc.with_ymd_and_hms(2026, 3, 7, 7, 30, 0).unwrap());
    assert_eq!(p.opens_at(d("2026-03-09")), Utc.with_ymd_and_hms(2026, 3, 9, 6, 30, 0).unwrap());
}

#[test]
fn a_repeated_new_day_at_fires_once_at_its_first_occurrence() {
    let flow = new_york();
    let p = policy(&flow, Some("01:30"), CatchUp::All);
    // 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST) on Nov 1.
    let first = Utc.with_ymd_and_hms(2026, 11, 1, 5, 30, 0).unwrap();
    let second = Utc.with_ymd_and_hms(2026, 11, 1, 6, 30, 0).unwrap();
    assert_eq!(p.opens_at(d("2026-11-01")), first);
    assert_eq!(
        next_day(&p, d("2026-10-31"), first - chrono::Duration::minutes(1)),
        NextDay::WaitUntil { date: d("2026-11-01"), at: first }
    );
    // Opened at the first 01:30; once Nov 1 closed, the second 01:30 does not open anything
    // again: the next day is Nov 2.
    assert_eq!(
        next_day(&p, d("2026-10-31"), first),
        NextDay::Open { date: d("2026-11-01"), skipped: vec![] }
    );
    assert_eq!(
        next_day(&p, d("2026-11-01"), second),
        NextDay::WaitUntil {
            date: d("2026-11-02"),
            at: Utc.with_ymd_and_hms(2026, 11, 2, 6, 30, 0).unwrap()
        }
    );
}

#[test]
fn new_day_at_accepts_hh_mm_and_names_a_bad_value() {
    assert_eq!(parse_new_day_at("00:00"), Ok(NaiveTime::MIN));
    assert_eq!(parse_new_day_at("23:59"), Ok(NaiveTime::from_hms_opt(23, 59, 0).unwrap()));
    for bad in ["25:00", "24:00", "12:60", "7:30", "07:30:00", "noon", "", "-1:00"] {
        let e = parse_new_day_at(bad).unwrap_err();
        assert!(e.contains(&format!("`{bad}`")) && e.contains("HH:MM"), "{bad}: {e}");
    }
}

fn found(date: &str, closed: bool) -> DayFound {
    DayFound { date: d(date), closed }
}

#[test]
fn a_start_resumes_the_newest_unclosed_day_not_a_day_of_the_clock() {
    let flow = example();
    let p = policy(&flow, None, CatchUp::All);
    let days = [found("2026-10-08", true), found("2026-10-09", false), found("2026-10-12", false)];
    assert_eq!(
        plan_start(&p, &days, None),
        Ok(StartPlan::Run { days: vec![d("2026-10-12")], skipped: vec![] })
    );
    let days = [found("2026-10-08", true), found("2026-10-09", true)];
    assert_eq!(plan_start(&p, &days, None), Ok(StartPlan::AfterClosed(d("2026-10-09"))));
    assert_eq!(plan_start(&p, &[], None), Err(StartError::NoDay));
    assert_eq!(
        plan_start(&p, &[], Some(d("2026-10-09"))),
        Ok(StartPlan::Run { days: vec![d("2026-10-09")], skipped: vec![] })
    );
    assert_eq!(
        plan_start(&p, &days, Some(d("2026-10-09"))),
        Ok(StartPlan::Run { days: vec![d("2026-10-09")], skipped: vec![] })
    );
}

#[test]
fn a_later_date_catches_up_the_days_between_and_an_earlier_one_is_refused() {
    let flow = example();
    let days = [found("2026-10-08", true), found("2026-10-09", false)];
    let all = policy(&flow, None, CatchUp::All);
    assert_eq!(
        plan_start(&all, &days, Some(d("2026-10-14"))),
        Ok(StartPlan::Run {
            days: ["2026-10-09", "2026-10-10", "2026-10-12", "2026-10-13", "2026-10-14"]
                .map(d)
                .to_vec(),
            skipped: vec![]
        })
    );
    let latest = policy(&flow, None, CatchUp::Latest);
    assert_eq!(
        plan_start(&latest, &days, Some(d("2026-10-14"))),
        Ok(StartPlan::Run {
            days: ["2026-10-09", "2026-10-14"].map(d).to_vec(),
            skipped: ["2026-10-10", "2026-10-12", "2026-10-13"].map(d).to_vec()
        })
    );
    let e = plan_start(&all, &days, Some(d("2026-09-30"))).unwrap_err();
    assert_eq!(e, StartError::Earlier { asked: d("2026-09-30"), newest: d("2026-10-09") });
    let text = e.to_string();
    assert!(text.contains("2026-09-30") && text.contains("2026-10-09"), "{text}");
    assert!(text.contains("taskflow backfill") && text.contains("not available yet"), "{text}");
    assert_eq!(
        plan_start(&all, &days, Some(d("2026-10-11"))),
        Err(StartError::NotOpen(d("2026-10-11")))
    );
}
