//! In-memory loading tests: every kind of problem is reported, located and explained.
//! File-based cases (directories, the bundled example) are in `tests/flow_files.rs`.

use super::*;

const PRODUCTS: &str = r#"
[[product]]
code = "F1"
name = "fund one"
mode = "open-nav"
lifecycle = "open"

[[product]]
code = "F1A"
name = "fund one A"
parent = "F1"
mode = "open-nav"
lifecycle = "open"
distributors = ["D1"]

[[product]]
code = "M1"
name = "money"
mode = "money-market"
lifecycle = "open"
"#;

const DISTRIBUTORS: &str = r#"
[[distributor]]
code = "D1"
name = "direct"
type = "direct"

[[distributor]]
code = "D2"
name = "bank"
type = "traditional-agent"
"#;

const CALENDAR: &str = r#"
[calendar]
from = 2026-01-01
to = 2026-12-31
holidays = [2026-10-01, 2026-10-02]
workdays = [2026-10-10]
"#;

const FLOW: &str = r#"
[flow]
name = "t"

[[task]]
id = "init"
name = "init"
level = "system"
behavior = "noop"
trigger = "manual"

[[task]]
id = "confirm"
name = "confirm"
level = "product"
behavior = "fund.confirm"
depends_on = ["init"]
in_lifecycle = ["open"]

[[task]]
id = "export"
name = "export"
level = "distributor"
behavior = "fund.export"
depends_on = ["confirm"]
trigger = "at 02:00 +1d"
"#;

fn load(flow: &str, products: &str, distributors: &str, calendar: &str) -> Result<Flow, Errors> {
    Flow::from_strs(flow, products, distributors, calendar)
}

/// Loads with `flow` and good reference data; returns the diagnostics as lines.
fn flow_errors(flow: &str) -> Vec<String> {
    match load(flow, PRODUCTS, DISTRIBUTORS, CALENDAR) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// The base flow plus one extra `[[task]]` table.
fn with_task(extra: &str) -> Vec<String> {
    flow_errors(&format!("{FLOW}\n[[task]]\n{extra}"))
}

fn assert_one(errors: &[String], needle: &str) {
    assert_eq!(errors.len(), 1, "expected one error containing {needle:?}, got {errors:#?}");
    assert!(errors[0].contains(needle), "{:?} lacks {needle:?}", errors[0]);
}

#[test]
fn a_valid_flow_loads_with_defaults_applied() {
    let flow = load(FLOW, PRODUCTS, DISTRIBUTORS, CALENDAR).expect("valid");
    assert_eq!(flow.settings().time_zone, chrono_tz::Asia::Shanghai);
    assert_eq!(flow.settings().open_days, RunOn::BusinessDays);
    let export = flow.task_by_id("export").expect("task");
    assert_eq!(export.trigger.to_string(), "at 02:00 +1d");
    assert_eq!(export.retry_backoff, TaskDef::DEFAULT_RETRY_BACKOFF);
    assert_eq!(flow.graph().depth(), 3);
}

#[test]
fn a_syntax_error_names_the_file_line_and_column() {
    let errors = flow_errors("[flow]\nname = \"t\"\n[[task]\n");
    assert!(!errors.is_empty());
    assert!(errors[0].starts_with("flow.toml:3:"), "{errors:?}");
    assert!(errors[0].contains("TOML syntax error"), "{errors:?}");
}

#[test]
fn a_misspelt_field_is_an_error_not_ignored() {
    let errors = with_task(
        "id = \"x\"\nname = \"x\"\nlevel = \"system\"\nbehavior = \"noop\"\ndepnds_on = [\"init\"]",
    );
    assert_one(&errors, "unknown field `depnds_on`");
    assert!(errors[0].starts_with("flow.toml:33:1:"), "{errors:?}");
}

#[test]
fn an_unknown_enum_value_lists_the_allowed_values() {
    let errors = with_task("id = \"x\"\nname = \"x\"\nlevel = \"fund\"\nbehavior = \"noop\"");
    assert_one(
        &errors,
        "unknown variant `fund`, expected one of `system`, `product`, `distributor`",
    );
    let errors = with_task(
        "id = \"x\"\nname = \"x\"\nlevel = \"product\"\nbehavior = \"noop\"\nin_lifecycle = [\"opened\"]",
    );
    assert_one(&errors, "expected one of `design`, `pre-issue`");
}

#[test]
fn a_duplicate_task_id_points_at_the_second_and_names_the_firsts_line() {
    let errors =
        with_task("id = \"confirm\"\nname = \"x\"\nlevel = \"system\"\nbehavior = \"noop\"");
    assert_one(&errors, "duplicate task id `confirm` (first defined on line 13)");
    assert!(errors[0].starts_with("flow.toml:29:6:"), "{errors:?}");
}

#[test]
fn unknown_dependencies_are_each_reported() {
    let errors = with_task(
        "id = \"x\"\nname = \"x\"\nlevel = \"system\"\nbehavior = \"noop\"\ndepends_on = [\"nope\", \"init\", \"gone\"]",
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("depends on unknown task `nope`"));
    assert!(errors[1].contains("depends on unknown task `gone`"));
}

#[test]
fn a_dependency_cycle_prints_the_whole_cycle() {
    let flow = FLOW.replace("depends_on = [\"init\"]", "depends_on = [\"init\", \"export\"]");
    let errors = flow_errors(&flow);
    assert_one(
        &errors,
        "dependency cycle: confirm -> export -> confirm; remove one of these dependencies",
    );
    assert!(errors[0].starts_with("flow.toml:13:6:"), "located at the first task: {errors:?}");
}

#[test]
fn invalid_id_characters_are_rejected() {
    let errors =
        with_task("id = \"bad id!\"\nname = \"x\"\nlevel = \"system\"\nbehavior = \"noop\"");
    assert_one(&errors, "invalid task id `bad id!`");
    let long = "x".repeat(65);
    let errors = with_task(&format!(
        "id = \"{long}\"\nname = \"x\"\nlevel = \"system\"\nbehavior = \"noop\""
    ));
    assert_one(&errors, "invalid task id");
}

#[test]
fn bad_trigger_duration_and_time_zone() {
    let errors = with_task(
        "id = \"x\"\nname = \"x\"\nlevel = \"system\"\nbehavior = \"noop\"\ntrigger = \"at 2am\"\nretry_backoff = \"soon\"\ntimeout = \"0s\"",
    );
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].contains("invalid trigger `at 2am`"));
    assert!(errors[1].contains("`retry_backoff`: invalid duration `soon`"));
    assert!(errors[2].contains("`timeout` must be longer than zero"));
    let errors =
        flow_errors(&FLOW.replace("name = \"t\"", "name = \"t\"\ntime_zone = \"Asia/Beijing\""));
    assert_one(&errors, "unknown time zone `Asia/Beijing`");
    assert!(errors[0].starts_with("flow.toml:4:13:"), "{errors:?}");
}

#[test]
fn options_invalid_for_the_level_are_rejected() {
    let base = "id = \"x\"\nname = \"x\"\nbehavior = \"noop\"\n";
    let cases = [
        (
            "level = \"system\"\nin_lifecycle = [\"open\"]",
            "`in_lifecycle` applies to product-level tasks only",
        ),
        (
            "level = \"distributor\"\nproduct_modes = [\"open-nav\"]",
            "`product_modes` applies to product-level",
        ),
        (
            "level = \"system\"\nper_distributor = true",
            "`per_distributor` applies to product-level",
        ),
        ("level = \"distributor\"\nproducts = \"funds\"", "`products` applies to product-level"),
        (
            "level = \"product\"\nin_lifecycle = [\"open\"]\ndistributor_types = [\"direct\"]",
            "`distributor_types` applies to distributor-level tasks and to product-level tasks with `per_distributor = true`",
        ),
        ("level = \"system\"\nshard_by = \"product\"", "`shard_by = \"product\"` needs items"),
        (
            "level = \"product\"\nin_lifecycle = [\"open\"]\nshard_by = \"distributor\"",
            "`shard_by = \"distributor\"`",
        ),
        ("level = \"product\"", "product-level tasks need `in_lifecycle`"),
        (
            "level = \"system\"\nrun_on = \"every-day\"\ncovers_non_business_days = true",
            "`covers_non_business_days` needs `run_on = \"business-days\"`",
        ),
    ];
    for (extra, needle) in cases {
        assert_one(&with_task(&format!("{base}{extra}")), needle);
    }
    // Valid combinations.
    for ok in [
        "level = \"product\"\nin_lifecycle = [\"open\"]\nper_distributor = true\ndistributor_types = [\"direct\"]\nshard_by = \"distributor\"",
        "level = \"distributor\"\ndistributor_types = [\"traditional-agent\"]\nshard_by = \"single\"",
    ] {
        assert_eq!(with_task(&format!("{base}{ok}")), Vec::<String>::new(), "{ok}");
    }
}

#[test]
fn a_task_that_can_never_qualify_is_an_error() {
    let base = "id = \"x\"\nname = \"x\"\nbehavior = \"noop\"\n";
    assert_one(
        &with_task(&format!("{base}level = \"product\"\nin_lifecycle = []")),
        "task `x` can never qualify: `in_lifecycle` is empty",
    );
    assert_one(
        &with_task(&format!(
            "{base}level = \"product\"\nin_lifecycle = [\"open\"]\nproduct_modes = [\"closed-nav\"]"
        )),
        "task `x` can never qualify: no product in products.toml matches in_lifecycle = [\"open\"], product_modes = [\"closed-nav\"]",
    );
    assert_one(
        &with_task(&format!(
            "{base}level = \"product\"\nin_lifecycle = [\"open\"]\nproduct_modes = [\"money-market\"]\nproducts = \"share-classes\""
        )),
        "products = \"share-classes\"",
    );
    assert_one(
        &with_task(&format!(
            "{base}level = \"distributor\"\ndistributor_types = [\"internet-agent\"]"
        )),
        "no distributor in distributors.toml matches distributor_types = [\"internet-agent\"]",
    );
    // The share class is sold only by D1 (direct); no pair with an agent exists.
    assert_one(
        &with_task(&format!(
            "{base}level = \"product\"\nin_lifecycle = [\"open\"]\nproducts = \"share-classes\"\nper_distributor = true\ndistributor_types = [\"traditional-agent\"]"
        )),
        "sold by a distributor in distributors.toml",
    );
}

#[test]
fn every_problem_in_every_file_is_collected() {
    let products = PRODUCTS
        .replace("code = \"M1\"", "code = \"F1\"")
        .replace("distributors = [\"D1\"]", "distributors = [\"D9\"]");
    let distributors = format!(
        "{DISTRIBUTORS}\n[[distributor]]\ncode = \"D2\"\nname = \"again\"\ntype = \"direct\"\n"
    );
    let calendar = CALENDAR.replace("2026-10-02", "2027-10-02");
    let flow = FLOW.replace("trigger = \"manual\"", "trigger = \"never\"");
    let err = load(&flow, &products, &distributors, &calendar).unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0]
            .starts_with("calendar.toml:5:25: holiday 2027-10-02 is outside the calendar range"),
        "{text}"
    );
    assert!(
        lines[1].starts_with(
            "distributors.toml:13:8: duplicate distributor code `D2` (first defined on line 8)"
        ),
        "{text}"
    );
    assert!(lines[2].starts_with("flow.toml:10:11: invalid trigger `never`"), "{text}");
    assert!(
        lines[3].starts_with(
            "products.toml:17:8: duplicate product code `F1` (first defined on line 3)"
        ),
        "{text}"
    );
    // With the distributor file fixed, the unknown distributor in a sales list shows up.
    let err = load(FLOW, &products, DISTRIBUTORS, CALENDAR).unwrap_err();
    assert!(
        err.to_string()
            .contains("products.toml:14:17: product `F1A` lists unknown distributor `D9`"),
        "{err}"
    );
}

#[test]
fn unknown_and_cyclic_parents_are_rejected() {
    let unknown = PRODUCTS.replace("parent = \"F1\"", "parent = \"F0\"");
    let err = load(FLOW, &unknown, DISTRIBUTORS, CALENDAR).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(
        err.to_string().starts_with("products.toml:11:10: product `F1A` has unknown parent `F0`"),
        "{err}"
    );
    let cyclic = PRODUCTS.replace(
        "code = \"F1\"\nname = \"fund one\"",
        "code = \"F1\"\nname = \"fund one\"\nparent = \"F1A\"",
    );
    let err = load(FLOW, &cyclic, DISTRIBUTORS, CALENDAR).unwrap_err();
    assert_eq!(err.0.len(), 1, "reported once per cycle: {err}");
    assert!(err.to_string().contains("parent cycle: F1 -> F1A -> F1"), "{err}");
}

#[test]
fn calendar_problems_are_located() {
    let cases = [
        (
            CALENDAR.replace("from = 2026-01-01", "from = 2027-01-01"),
            "calendar.toml:3:8: calendar range is empty",
        ),
        (
            CALENDAR.replace("2026-10-10", "2026-10-01"),
            "calendar.toml:6:13: 2026-10-01 is listed both as a holiday and as a workday",
        ),
        (
            CALENDAR.replace("to = 2026-12-31", "to = 2026-12-31T00:00:00"),
            "calendar.toml:4:6: `2026-12-31T00:00:00` is not a plain date",
        ),
        (format!("{CALENDAR}weekend = [\"sat\"]\n"), "calendar.toml:7:12: unknown weekday `sat`"),
        ("# nothing\n".to_owned(), "calendar.toml:1:1: missing `[calendar]` table"),
    ];
    for (cal, want) in cases {
        let err = load(FLOW, PRODUCTS, DISTRIBUTORS, &cal).unwrap_err();
        assert!(err.to_string().starts_with(want), "{err}\nwanted {want}");
    }
}

#[test]
fn structural_mistakes_in_flow_toml() {
    assert_one(
        &flow_errors(
            "[[task]]\nid = \"a\"\nname = \"a\"\nlevel = \"system\"\nbehavior = \"noop\"\n",
        ),
        "missing `[flow]` table",
    );
    assert_one(&flow_errors("[flow]\nname = \"t\"\n"), "the flow has no tasks");
    assert_one(
        &flow_errors(&format!("{FLOW}\n[tasks]\n")),
        "unknown top-level key `tasks`, expected one of `flow`, `task`",
    );
    assert_one(
        &flow_errors("[flow]\nname = \"t\"\n[task]\nid = \"a\"\n"),
        "write each entry as `[[task]]`",
    );
}

#[test]
fn a_broken_task_does_not_cascade_into_its_dependents() {
    let flow = FLOW.replace("level = \"system\"", "level = \"sistem\"");
    assert_one(&flow_errors(&flow), "unknown variant `sistem`");
}

#[test]
fn open_days_every_day_opens_weekends_and_holidays() {
    let flow = FLOW.replace("name = \"t\"", "name = \"t\"\nopen_days = \"every-day\"");
    let flow = load(&flow, PRODUCTS, DISTRIBUTORS, CALENDAR).expect("valid");
    let d = |s: &str| s.parse::<NaiveDate>().expect("date");
    assert_eq!(flow.is_open_day(d("2026-10-01")), Ok(true));
    assert!(flow.is_open_day(d("2027-01-01")).is_err());
}

#[test]
fn priority_defaults_to_zero_and_must_be_in_range() {
    let flow = load(FLOW, PRODUCTS, DISTRIBUTORS, CALENDAR).expect("valid");
    assert!(flow.graph().indices().all(|ix| flow.task(ix).priority == 0));
    let base = "id = \"x\"\nname = \"x\"\nlevel = \"system\"\nbehavior = \"noop\"\n";
    let ok =
        load(&format!("{FLOW}\n[[task]]\n{base}priority = -7"), PRODUCTS, DISTRIBUTORS, CALENDAR)
            .expect("valid");
    let x = ok.graph().index_of("x").expect("x");
    assert_eq!(ok.task(x).priority, -7);
    for bad in ["1001", "-5000", "99999999999"] {
        let errors = with_task(&format!("{base}priority = {bad}"));
        assert_one(
            &errors,
            &format!("`priority` = {bad} is out of range; use an integer from -1000 to 1000"),
        );
    }
    let errors = with_task(&format!("{base}priority = \"high\""));
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

#[test]
fn resources_and_needs_load_and_bad_ones_are_located() {
    let base = "id = \"x\"\nname = \"x\"\nlevel = \"system\"\nbehavior = \"noop\"\n";
    let res =
        "\n[[resource]]\nname = \"ta_db\"\nunits = 2\n\n[[resource]]\nname = \"ftp\"\nunits = 1\n";
    let ok = load(
        &format!("{FLOW}{res}\n[[task]]\n{base}needs = {{ ta_db = 2, ftp = 1 }}"),
        PRODUCTS,
        DISTRIBUTORS,
        CALENDAR,
    )
    .expect("valid");
    let names: Vec<(&str, u32)> =
        ok.resources().iter().map(|r| (r.name.as_str(), r.units)).collect();
    assert_eq!(names, vec![("ta_db", 2), ("ftp", 1)]);
    let x = ok.graph().index_of("x").expect("x");
    let needs: Vec<(&str, u32)> = ok.task(x).needs.iter().map(|(n, u)| (n.as_str(), *u)).collect();
    assert_eq!(needs, vec![("ftp", 1), ("ta_db", 2)]);
    let plain = load(FLOW, PRODUCTS, DISTRIBUTORS, CALENDAR).expect("valid");
    assert!(plain.resources().is_empty());
    assert!(plain.graph().indices().all(|ix| plain.task(ix).needs.is_empty()));

    let with = |resources: &str, needs: &str| {
        flow_errors(&format!("{FLOW}{resources}\n[[task]]\n{base}needs = {needs}"))
    };
    let errors = with(res, "{ ta_db = 1, tape = 1 }");
    assert_one(&errors, "task `x` needs unknown resource `tape` (defined: `ta_db`, `ftp`)");
    assert!(errors[0].starts_with("flow.toml:"), "{errors:?}");
    let line = FLOW.lines().count() + res.lines().count() + 7;
    assert!(errors[0].starts_with(&format!("flow.toml:{line}:")), "{errors:?} (line {line})");
    assert_one(&with("", "{ ta_db = 1 }"), "the flow defines no resources");
    assert_one(
        &with(res, "{ ta_db = 3 }"),
        "task `x` needs 3 units of `ta_db`, which has only 2; need at most 2",
    );
    assert_one(&with(res, "{ ta_db = 0 }"), "task `x` needs 0 units of `ta_db`");
    let zero = "\n[[resource]]\nname = \"ta_db\"\nunits = 0\n";
    let errors = with(zero, "{ ta_db = 1 }");
    assert_one(&errors, "resource `ta_db`: `units` = 0 is invalid; use an integer of at least 1");
    let dup = format!("{res}\n[[resource]]\nname = \"ftp\"\nunits = 3\n");
    assert_one(&with(&dup, "{ ftp = 1 }"), "duplicate resource name `ftp` (first defined on line");
    let errors = flow_errors(&format!("{FLOW}\n[[resource]]\nname = \"a\"\n"));
    assert_one(&errors, "units");
}

#[test]
fn deadlines_load_relative_to_the_business_date_and_bad_ones_are_located() {
    let base = "id = \"x\"\nname = \"x\"\nlevel = \"system\"\nbehavior = \"noop\"\n";
    let with_day = FLOW.replacen("name = \"t\"\n", "name = \"t\"\ndeadline = \"06:00 +1d\"\n", 1);
    let ok = load(
        &format!("{with_day}\n[[task]]\n{base}deadline = \"18:30\""),
        PRODUCTS,
        DISTRIBUTORS,
        CALENDAR,
    )
    .expect("valid");
    let x = ok.task_by_id("x").expect("x").deadline.expect("deadline");
    assert_eq!(x.to_string(), "18:30");
    let date = crate::model::BusinessDate::from_ymd(2026, 11, 24).expect("date");
    let tz = ok.settings().time_zone;
    // Shanghai is UTC+8: 18:30 local on the business date is 10:30 UTC the same day.
    assert_eq!(x.at(date, tz).expect("instant").to_rfc3339(), "2026-11-24T10:30:00+00:00");
    let day = ok.settings().deadline.expect("day deadline");
    assert_eq!(day.to_string(), "06:00 +1d");
    assert_eq!(day.at(date, tz).expect("instant").to_rfc3339(), "2026-11-24T22:00:00+00:00");
    assert_eq!(ok.task_by_id("init").expect("init").deadline, None);

    for bad in ["25:00", "6pm", "at 18:00", "18:00 +9d", "18:00 tomorrow", ""] {
        let errors = with_task(&format!("{base}deadline = \"{bad}\""));
        assert_one(
            &errors,
            &format!("task `x` `deadline`: invalid deadline `{bad}`: expected \"HH:MM\""),
        );
        // Located at the value (column 12 of the `deadline` line).
        let text = format!("{FLOW}\n[[task]]\n{base}deadline = \"{bad}\"");
        let line = 1 + text.lines().position(|l| l.starts_with("deadline")).expect("line");
        assert!(errors[0].starts_with(&format!("flow.toml:{line}:12:")), "{}", errors[0]);
    }
    let errors =
        flow_errors(&FLOW.replacen("name = \"t\"\n", "name = \"t\"\ndeadline = \"noon\"\n", 1));
    assert_one(&errors, "the day's `deadline`: invalid deadline `noon`");
    assert!(errors[0].starts_with("flow.toml:4:12:"), "{}", errors[0]);
}
