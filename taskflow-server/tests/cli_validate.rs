//! The `taskflow validate` and `taskflow plan` commands, run as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn taskflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskflow")).args(args).output().expect("run taskflow")
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fund-clearing")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_accepts_the_example_and_prints_a_summary() {
    let out = taskflow(&["validate", example().to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("tasks         17: system 4, product 9, distributor 4"), "{stdout}");
    assert!(stdout.contains("graph         depth"), "{stdout}");
}

#[test]
fn validate_reports_every_problem_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["flow.toml", "products.toml", "distributors.toml", "calendar.toml"] {
        std::fs::copy(example().join(f), dir.path().join(f)).unwrap();
    }
    let flow = std::fs::read_to_string(dir.path().join("flow.toml")).unwrap();
    let flow =
        flow.replacen(r#"depends_on = ["import_quotes"]"#, r#"depends_on = ["import_quotez"]"#, 1);
    std::fs::write(dir.path().join("flow.toml"), flow).unwrap();
    let products = std::fs::read_to_string(dir.path().join("products.toml")).unwrap();
    std::fs::write(
        dir.path().join("products.toml"),
        products.replacen(r#"lifecycle = "open""#, r#"lifecycle = "opne""#, 1),
    )
    .unwrap();

    let out = taskflow(&["validate", dir.path().to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let flow_file = dir.path().join("flow.toml");
    let line = stderr
        .lines()
        .find(|l| l.contains("unknown task `import_quotez`"))
        .unwrap_or_else(|| panic!("no unknown-dependency error in {stderr}"));
    assert!(line.starts_with(&format!("{}:", flow_file.display())), "{line}");
    let pos: Vec<&str> = line[flow_file.display().to_string().len() + 1..].splitn(3, ':').collect();
    assert!(pos[0].parse::<u32>().is_ok() && pos[1].parse::<u32>().is_ok(), "{line}");
    assert!(stderr.contains("unknown variant `opne`, expected one of"), "{stderr}");
    assert!(stderr.contains("problems found"), "{stderr}");
}

#[test]
fn validate_on_a_missing_directory_says_so() {
    let out = taskflow(&["validate", "/definitely/not/here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a directory"));
}

#[test]
fn plan_shows_the_money_fund_income_covering_the_national_day_holiday() {
    let out = taskflow(&["plan", example().to_str().unwrap(), "--date", "2026-09-30"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let income = stdout.lines().find(|l| l.starts_with("money_fund_income")).expect("income row");
    assert!(income.contains("covers 8 calendar days through 2026-10-07"), "{income}");
}

#[test]
fn plan_rejects_a_malformed_date() {
    let out = taskflow(&["plan", example().to_str().unwrap(), "--date", "2026-13-01"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("YYYY-MM-DD"), "{}", text(&out.stderr));
}
