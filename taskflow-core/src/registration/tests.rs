//! Unit tests of registration: every filter, the parent rules, sales lists and the calendar.

use super::*;
use crate::model::{
    Calendar, DistributorType, Lifecycle, ProductMode, StaticReferenceData, TaskDef,
};

fn d(s: &str) -> NaiveDate {
    s.parse().expect("valid test date")
}

fn bd(s: &str) -> BusinessDate {
    BusinessDate(d(s))
}

fn product(code: &str, parent: Option<&str>, mode: ProductMode, lc: Lifecycle) -> Product {
    Product {
        code: code.into(),
        name: code.into(),
        parent: parent.map(Into::into),
        mode,
        lifecycle: lc,
        distributors: None,
    }
}

fn distributor(code: &str, kind: DistributorType) -> Distributor {
    Distributor { code: code.into(), name: code.into(), kind }
}

/// Sep–Oct 2026: National Day Oct 1–7 (Thu Oct 1 .. Wed Oct 7), make-up workday Sat Oct 10,
/// and a one-day holiday on Fri Sep 25 for the "Thursday before a Friday holiday" case.
fn data() -> StaticReferenceData {
    use DistributorType::*;
    use Lifecycle::*;
    use ProductMode::*;
    let mut products = vec![
        product("F_OPEN", None, OpenNav, Open),
        product("F_OPEN_A", Some("F_OPEN"), OpenNav, Open),
        product("F_OPEN_C", Some("F_OPEN"), OpenNav, Open),
        product("F_MMF", None, MoneyMarket, Open),
        product("F_CLOSED", None, ClosedNav, Closed),
        product("F_PERIODIC", None, PeriodicNav, Established),
        product("F_ISSUING", None, OpenNav, Issuing),
        product("F_DEAD", None, OpenNav, Terminated),
        product("F_DEAD_A", Some("F_DEAD"), OpenNav, Open),
        product("F_FAILED", None, ClosedNav, IssueFailed),
        product("F_FAILED_A", Some("F_FAILED"), ClosedNav, Issuing),
        product("F_MATURED", None, PeriodicNav, Matured),
    ];
    // The C class is sold only through the internet agent.
    products[2].distributors = Some(vec!["D003".into()]);
    StaticReferenceData {
        products,
        distributors: vec![
            distributor("D001", Direct),
            distributor("D002", TraditionalAgent),
            distributor("D003", InternetAgent),
        ],
        calendar: Calendar::new(
            d("2026-09-01"),
            d("2026-10-31"),
            Calendar::DEFAULT_WEEKEND,
            std::iter::once(d("2026-09-25")).chain((1..=7).map(|i| d(&format!("2026-10-0{i}")))),
            [d("2026-10-10")],
        )
        .expect("valid calendar"),
    }
}

fn product_task(lifecycles: &[Lifecycle]) -> TaskDef {
    let mut t = TaskDef::new("t", TaskLevel::Product, "noop", &[]);
    t.in_lifecycle = lifecycles.to_vec();
    t
}

fn codes(reg: &Registration) -> Vec<String> {
    reg.items.iter().map(|i| i.key().to_string()).collect()
}

const WED: &str = "2026-09-16";

#[test]
fn a_system_task_has_one_item_on_a_business_day() {
    let t = TaskDef::new("day_init", TaskLevel::System, "noop", &[]);
    let reg = register(&t, bd(WED), &data()).expect("registers");
    assert_eq!(reg.items, vec![ScopeItem::system()]);
    assert_eq!(reg.covered_dates, vec![d(WED)]);
    assert!(!reg.counts_as_done());
}

#[test]
fn a_business_day_task_on_a_weekend_is_empty_and_counts_as_done() {
    let t = TaskDef::new("day_init", TaskLevel::System, "noop", &[]);
    let reg = register(&t, bd("2026-09-19"), &data()).expect("registers");
    assert!(reg.is_empty() && reg.counts_as_done());
    assert_eq!(reg.not_applicable, Some(Reason::NotABusinessDay));
    assert_eq!(reg.not_applicable.map(|r| r.to_string()).as_deref(), Some("not a business day"));
    assert!(reg.covered_dates.is_empty());
}

#[test]
fn an_every_day_task_runs_on_holidays_and_weekends() {
    let mut t = TaskDef::new("watch", TaskLevel::System, "noop", &[]);
    t.run_on = RunOn::EveryDay;
    for date in ["2026-09-19", "2026-10-01"] {
        let reg = register(&t, bd(date), &data()).expect("registers");
        assert_eq!(reg.items.len(), 1, "{date}");
        assert_eq!(reg.covered_dates, vec![d(date)]);
    }
}

#[test]
fn a_make_up_workday_is_a_business_day_and_a_holiday_is_not() {
    let t = TaskDef::new("day_init", TaskLevel::System, "noop", &[]);
    assert!(!register(&t, bd("2026-10-10"), &data()).expect("registers").is_empty());
    assert!(register(&t, bd("2026-10-05"), &data()).expect("registers").is_empty());
}

#[test]
fn each_lifecycle_filter_selects_exactly_the_products_in_it() {
    use Lifecycle::*;
    let data = data();
    let cases: &[(Lifecycle, &[&str])] = &[
        (Open, &["F_MMF", "F_OPEN", "F_OPEN_A", "F_OPEN_C"]), // F_DEAD_A: parent terminated
        (Closed, &["F_CLOSED"]),
        (Established, &["F_PERIODIC"]),
        (Issuing, &["F_ISSUING"]), // F_FAILED_A: parent issue-failed
        (Matured, &["F_MATURED"]),
        (Terminated, &["F_DEAD"]),
        (IssueFailed, &["F_FAILED"]),
        (Design, &[]),
        (PreIssue, &[]),
    ];
    for (lc, want) in cases {
        let reg = register(&product_task(&[*lc]), bd(WED), &data).expect("registers");
        assert_eq!(codes(&reg), *want, "{lc}");
        if want.is_empty() {
            assert_eq!(reg.not_applicable, Some(Reason::NothingQualifies));
            assert!(reg.counts_as_done());
        }
    }
}

#[test]
fn each_mode_filter_selects_exactly_the_products_of_that_mode() {
    use ProductMode::*;
    let data = data();
    let all_live = [
        Lifecycle::Issuing,
        Lifecycle::Established,
        Lifecycle::Closed,
        Lifecycle::Open,
        Lifecycle::Matured,
    ];
    let cases: &[(ProductMode, &[&str])] = &[
        (OpenNav, &["F_ISSUING", "F_OPEN", "F_OPEN_A", "F_OPEN_C"]),
        (MoneyMarket, &["F_MMF"]),
        (ClosedNav, &["F_CLOSED"]),
        (PeriodicNav, &["F_MATURED", "F_PERIODIC"]),
    ];
    for (mode, want) in cases {
        let mut t = product_task(&all_live);
        t.product_modes = Some(vec![*mode]);
        assert_eq!(codes(&register(&t, bd(WED), &data).expect("registers")), *want, "{mode}");
    }
}

#[test]
fn funds_and_share_classes_selections() {
    let data = data();
    let mut t = product_task(&[Lifecycle::Open]);
    t.products = ProductSelection::Funds;
    assert_eq!(codes(&register(&t, bd(WED), &data).expect("registers")), ["F_MMF", "F_OPEN"]);
    t.products = ProductSelection::ShareClasses;
    assert_eq!(
        codes(&register(&t, bd(WED), &data).expect("registers")),
        ["F_OPEN_A", "F_OPEN_C"],
        "F_DEAD_A never qualifies: its fund is terminated"
    );
}

#[test]
fn a_share_class_of_a_terminated_fund_never_qualifies_even_when_asked_for_its_lifecycle() {
    let data = data();
    let t = product_task(Lifecycle::ALL);
    let got = codes(&register(&t, bd(WED), &data).expect("registers"));
    assert!(!got.contains(&"F_DEAD_A".to_owned()) && !got.contains(&"F_FAILED_A".to_owned()));
    assert!(got.contains(&"F_DEAD".to_owned()), "the terminated fund itself is asked for");
}

#[test]
fn per_distributor_pairs_respect_sales_lists_and_distributor_types() {
    let data = data();
    let mut t = product_task(&[Lifecycle::Open]);
    t.per_distributor = true;
    t.products = ProductSelection::ShareClasses;
    assert_eq!(
        codes(&register(&t, bd(WED), &data).expect("registers")),
        ["F_OPEN_A@D001", "F_OPEN_A@D002", "F_OPEN_A@D003", "F_OPEN_C@D003"]
    );
    t.distributor_types = Some(vec![DistributorType::Direct, DistributorType::TraditionalAgent]);
    assert_eq!(
        codes(&register(&t, bd(WED), &data).expect("registers")),
        ["F_OPEN_A@D001", "F_OPEN_A@D002"],
        "F_OPEN_C is sold only by the internet agent, which is filtered out"
    );
}

#[test]
fn distributor_level_tasks_filter_by_type() {
    let data = data();
    let mut t = TaskDef::new("export", TaskLevel::Distributor, "noop", &[]);
    assert_eq!(codes(&register(&t, bd(WED), &data).expect("registers")), ["D001", "D002", "D003"]);
    for (kind, want) in [
        (DistributorType::Direct, "D001"),
        (DistributorType::TraditionalAgent, "D002"),
        (DistributorType::InternetAgent, "D003"),
    ] {
        t.distributor_types = Some(vec![kind]);
        assert_eq!(codes(&register(&t, bd(WED), &data).expect("registers")), [want], "{kind}");
    }
}

fn income_task() -> TaskDef {
    let mut t = product_task(&[Lifecycle::Open]);
    t.product_modes = Some(vec![ProductMode::MoneyMarket]);
    t.covers_non_business_days = true;
    t
}

#[test]
fn the_money_fund_income_task_on_the_business_day_before_a_holiday_covers_the_holidays_calendar_days()
 {
    let data = data();
    // Thursday Sep 24, before the Friday Sep 25 holiday: Thu, Fri, Sat, Sun.
    let reg = register(&income_task(), bd("2026-09-24"), &data).expect("registers");
    assert_eq!(codes(&reg), ["F_MMF"]);
    assert_eq!(
        reg.covered_dates,
        [d("2026-09-24"), d("2026-09-25"), d("2026-09-26"), d("2026-09-27")]
    );
    // Wednesday Sep 30, before National Day: Sep 30 and Oct 1..=7.
    let reg = register(&income_task(), bd("2026-09-30"), &data).expect("registers");
    assert_eq!(reg.covered_dates.len(), 8);
    assert_eq!(reg.covered_dates.last(), Some(&d("2026-10-07")));
    // Friday Oct 9: the next day is a make-up workday, so nothing extra.
    let reg = register(&income_task(), bd("2026-10-09"), &data).expect("registers");
    assert_eq!(reg.covered_dates, [d("2026-10-09")]);
    // An ordinary Wednesday covers itself only; the holiday itself registers nothing.
    let reg = register(&income_task(), bd(WED), &data).expect("registers");
    assert_eq!(reg.covered_dates, [d(WED)]);
    assert!(register(&income_task(), bd("2026-10-02"), &data).expect("registers").is_empty());
}

#[test]
fn a_date_outside_the_calendar_is_a_typed_error_not_an_empty_scope() {
    let t = TaskDef::new("day_init", TaskLevel::System, "noop", &[]);
    let err = register(&t, bd("2027-01-04"), &data()).unwrap_err();
    let Error::Calendar { source, .. } = &err;
    assert!(matches!(source, CalendarError::OutOfRange { .. }));
    assert!(err.to_string().contains("extend the calendar"), "{err}");
    // The last day of the calendar: covering the following days needs the next business day.
    let err = register(&income_task(), bd("2026-10-30"), &data()).unwrap_err();
    assert!(matches!(err, Error::Calendar { source: CalendarError::OutOfRange { .. }, .. }));
}

#[test]
fn default_shards_follow_shard_by() {
    let mut t = product_task(&[Lifecycle::Open]);
    let items =
        vec![ScopeItem::pair("P2", "D1"), ScopeItem::pair("P1", "D2"), ScopeItem::pair("P1", "D1")];
    let keys = |t: &TaskDef| -> Vec<String> {
        default_shards(t, &items).iter().map(|k| k.to_string()).collect()
    };
    assert_eq!(keys(&t), ["P1@D1", "P1@D2", "P2@D1"]);
    t.shard_by = ShardBy::Behavior;
    assert_eq!(keys(&t), ["P1@D1", "P1@D2", "P2@D1"]);
    t.shard_by = ShardBy::Single;
    assert_eq!(keys(&t), ["*"]);
    t.shard_by = ShardBy::Product;
    assert_eq!(keys(&t), ["P1", "P2"]);
    t.shard_by = ShardBy::Distributor;
    assert_eq!(keys(&t), ["D1", "D2"]);
    assert!(default_shards(&t, &[]).is_empty(), "an empty scope has no shards");
    t.shard_by = ShardBy::Single;
    assert!(default_shards(&t, &[]).is_empty());
}

#[test]
fn default_split_puts_every_item_in_exactly_the_shard_of_its_key() {
    let mut t = product_task(&[Lifecycle::Open]);
    let items =
        vec![ScopeItem::pair("P2", "D1"), ScopeItem::pair("P1", "D2"), ScopeItem::pair("P1", "D1")];
    t.shard_by = ShardBy::Product;
    let split = default_split(&t, &items);
    assert_eq!(split.len(), 2);
    assert_eq!(split[0].0.as_str(), "P1");
    assert_eq!(split[0].1, vec![ScopeItem::pair("P1", "D2"), ScopeItem::pair("P1", "D1")]);
    assert_eq!(split[1].1, vec![ScopeItem::pair("P2", "D1")]);
    for by in [ShardBy::Item, ShardBy::Single, ShardBy::Product, ShardBy::Distributor] {
        t.shard_by = by;
        let split = default_split(&t, &items);
        let total: usize = split.iter().map(|(_, s)| s.len()).sum();
        assert_eq!(total, items.len(), "{by:?}: every item in exactly one shard");
        let keys: Vec<_> = split.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, default_shards(&t, &items), "{by:?}");
    }
}
