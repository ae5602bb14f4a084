//! File-based flow loading: the bundled example and broken flow directories on disk.

use std::path::{Path, PathBuf};

use taskflow_core::flow::{self, Flow};
use taskflow_core::model::{BusinessDate, ScopeItem};
use taskflow_core::registration::{self, Reason};

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fund-clearing")
}

fn example() -> Flow {
    match flow::load_dir(example_dir()) {
        Ok(f) => f,
        Err(e) => panic!("the example flow must load:\n{e}"),
    }
}

fn date(s: &str) -> BusinessDate {
    s.parse().expect("valid date")
}

fn scope(flow: &Flow, task: &str, on: &str) -> registration::Registration {
    let def = flow.task_by_id(task).expect("task exists");
    registration::register(def, date(on), flow.reference()).expect("date in calendar")
}

fn products(reg: &registration::Registration) -> Vec<&str> {
    reg.items.iter().filter_map(|i| i.product.as_deref()).collect()
}

#[test]
fn the_example_flow_loads_and_summarises() {
    let flow = example();
    assert!(flow.tasks().len() >= 14);
    assert!(flow.reference().products.len() >= 30);
    assert!(flow.reference().distributors.len() >= 8);
    for ix in flow.graph().indices() {
        assert_eq!(flow.task(ix).id, *flow.graph().id(ix), "tasks are indexed like the graph");
    }
    let summary = flow.summary().to_string();
    println!("{summary}");
    for part in [
        "fund-clearing",
        "Asia/Shanghai",
        "system",
        "distributor",
        "money-market",
        "2027-03-31",
        "day_init",
        "day_close",
    ] {
        assert!(summary.contains(part), "summary lacks {part}:\n{summary}");
    }
    assert!(summary.lines().count() <= 24, "fits one screen:\n{summary}");
}

#[test]
fn the_embedded_copy_loads_like_the_directory() {
    let read = |f: &str| std::fs::read_to_string(example_dir().join(f)).expect("readable");
    let flow = Flow::from_strs(
        &read("flow.toml"),
        &read("products.toml"),
        &read("distributors.toml"),
        &read("calendar.toml"),
    )
    .expect("loads from strings");
    assert_eq!(flow.tasks(), example().tasks());
}

#[test]
fn example_registration_on_a_normal_wednesday() {
    let flow = example();
    let on = "2026-11-18";
    assert_eq!(scope(&flow, "day_init", on).items, [ScopeItem::system()]);
    // Money-market funds and classes that are open, not the terminated one.
    assert_eq!(
        products(&scope(&flow, "money_fund_income", on)),
        ["520001", "520002", "520003", "520004", "520011"]
    );
    assert_eq!(scope(&flow, "money_fund_income", on).covered_dates.len(), 1);
    let confirm = scope(&flow, "confirm_trades", on);
    let confirmed = products(&confirm);
    assert!(confirmed.contains(&"510031"), "an issuing fund confirms subscriptions");
    assert!(confirmed.contains(&"530011"), "a matured fund confirms redemptions");
    for never in ["510041", "510051", "510061", "510071", "510072", "530001"] {
        assert!(!confirmed.contains(&never), "{never} must not qualify");
    }
    // Funds only: no share class in the custody check; share classes only in the fee split.
    let custody = scope(&flow, "custody_nav_check", on);
    assert!(products(&custody).iter().all(|p| !["510002", "510003"].contains(p)));
    let split = scope(&flow, "share_class_fee_split", on);
    assert!(products(&split).contains(&"510003") && !products(&split).contains(&"510001"));
    // Settlement skips the two direct channels.
    let settle = scope(&flow, "settlement", on);
    assert_eq!(settle.items.len(), 9);
    assert!(!settle.items.contains(&ScopeItem::distributor("D001")));
    // Clearing pairs follow sales lists: the online-only C class is not cleared with a bank.
    let clearing = scope(&flow, "clearing", on);
    assert!(clearing.items.contains(&ScopeItem::pair("510003", "D201")));
    assert!(!clearing.items.contains(&ScopeItem::pair("510003", "D101")));
    let shards =
        registration::default_shards(flow.task_by_id("clearing").expect("task"), &clearing.items);
    assert_eq!(shards.len(), 11, "clearing is sharded per distributor");
}

#[test]
fn example_registration_on_a_friday_covers_the_weekend_for_money_funds_only() {
    let flow = example();
    let income = scope(&flow, "money_fund_income", "2026-11-20");
    let covered: Vec<String> = income.covered_dates.iter().map(|d| d.to_string()).collect();
    assert_eq!(covered, ["2026-11-20", "2026-11-21", "2026-11-22"]);
    assert_eq!(scope(&flow, "nav_calculation", "2026-11-20").covered_dates.len(), 1);
    let saturday = scope(&flow, "day_init", "2026-11-21");
    assert!(saturday.counts_as_done());
    assert_eq!(saturday.not_applicable, Some(Reason::NotABusinessDay));
    assert_eq!(flow.is_open_day(date("2026-11-21").date()), Ok(false));
}

#[test]
fn example_registration_the_day_before_national_day_covers_the_whole_holiday() {
    let flow = example();
    let income = scope(&flow, "money_fund_income", "2026-09-30");
    assert_eq!(income.covered_dates.len(), 8, "Sep 30 and Oct 1..=7");
    assert_eq!(income.covered_dates.last().map(|d| d.to_string()).as_deref(), Some("2026-10-07"));
    for task in ["day_init", "confirm_trades", "clearing", "day_close"] {
        assert!(scope(&flow, task, "2026-10-05").counts_as_done(), "{task} on a holiday");
    }
    assert!(!scope(&flow, "day_init", "2026-10-10").is_empty(), "make-up Saturday works");
}

#[test]
fn example_registration_outside_the_calendar_is_an_error() {
    let flow = example();
    let def = flow.task_by_id("day_init").expect("task");
    let err = registration::register(def, date("2027-04-01"), flow.reference()).unwrap_err();
    assert!(err.to_string().contains("extend the calendar"), "{err}");
}

/// Writes the example to a temp dir with one file replaced, and loads it.
fn load_with(file: &str, text: &str) -> (tempfile::TempDir, Result<Flow, flow::Errors>) {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["flow.toml", "products.toml", "distributors.toml", "calendar.toml"] {
        std::fs::copy(example_dir().join(f), dir.path().join(f)).expect("copy");
    }
    std::fs::write(dir.path().join(file), text).expect("write");
    let result = flow::load_dir(dir.path());
    (dir, result)
}

fn example_text(file: &str) -> String {
    std::fs::read_to_string(example_dir().join(file)).expect("readable")
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = flow::load_dir(dir.path()).unwrap_err();
    assert_eq!(err.diagnostics().len(), 4);
    assert!(err.to_string().contains("flow.toml:1:1: cannot read the file"), "{err}");
}

#[test]
fn errors_in_several_files_are_all_reported_with_their_paths() {
    let products =
        example_text("products.toml").replacen("mode = \"open-nav\"", "mode = \"open\"", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["flow.toml", "distributors.toml", "calendar.toml"] {
        std::fs::copy(example_dir().join(f), dir.path().join(f)).expect("copy");
    }
    std::fs::write(dir.path().join("products.toml"), products).expect("write");
    let flow =
        example_text("flow.toml").replacen("trigger = \"at 15:30\"", "trigger = \"at 15h30\"", 1);
    std::fs::write(dir.path().join("flow.toml"), flow).expect("write");
    let err = flow::load_dir(dir.path()).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.diagnostics().len(), 2, "{text}");
    assert!(text.contains("flow.toml:") && text.contains("invalid trigger `at 15h30`"), "{text}");
    assert!(text.contains("products.toml:") && text.contains("unknown variant `open`"), "{text}");
}

#[test]
fn custom_reference_file_names_are_followed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("ref")).expect("mkdir");
    for f in ["products.toml", "distributors.toml", "calendar.toml"] {
        std::fs::copy(example_dir().join(f), dir.path().join("ref").join(f)).expect("copy");
    }
    let flow = example_text("flow.toml")
        .replace("products = \"products.toml\"", "products = \"ref/products.toml\"")
        .replace("distributors = \"distributors.toml\"", "distributors = \"ref/distributors.toml\"")
        .replace("calendar = \"calendar.toml\"", "calendar = \"ref/calendar.toml\"");
    std::fs::write(dir.path().join("flow.toml"), flow).expect("write");
    if let Err(e) = flow::load_dir(dir.path()) {
        panic!("{e}");
    }
}

#[test]
fn a_calendar_error_points_at_the_date() {
    let cal = example_text("calendar.toml").replace("2026-10-10, # Sat", "2026-10-01, # Sat");
    let (_dir, result) = load_with("calendar.toml", &cal);
    let err = result.unwrap_err();
    let d = &err.diagnostics()[0];
    assert!(d.path.ends_with("calendar.toml"));
    assert!(d.message.contains("both as a holiday and as a workday"), "{err}");
    let line = cal.lines().position(|l| l.contains("2026-10-01, # Sat")).expect("line") + 1;
    assert_eq!((d.line, d.column), (line, 5));
}
