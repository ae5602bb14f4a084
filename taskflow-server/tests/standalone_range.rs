//! `taskflow standalone --until-done --date D1 --through D2`: every open date of a range in one
//! process, a run killed mid-range resumed with the same flags, a stalled day stopping the range,
//! and bad input refused before anything is written.
//!
//! The range 2026-09-22 (Tue) .. 2026-09-29 (Tue) of the example calendar crosses the
//! Mid-Autumn holiday (Fri Sep 25) and the weekend after it: its open dates are the 22nd, 23rd,
//! 24th, 28th and 29th.

#[path = "cluster_common/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Proc, read_json};
use taskflow_examples::fund_clearing::FileLedger;

const FROM: &str = "2026-09-22";
const THROUGH: &str = "2026-09-29";
const OPEN: [&str; 5] = ["2026-09-22", "2026-09-23", "2026-09-24", "2026-09-28", "2026-09-29"];
/// The bound on one whole range run.
const WAIT: Duration = Duration::from_secs(300);

struct Dirs {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    report: PathBuf,
    ledger: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    Dirs {
        _tmp: tmp,
        data: root.join("data"),
        report: root.join("report.json"),
        ledger: root.join("ledger"),
    }
}

/// `taskflow standalone --until-done --date from --through through` posting to the ledger.
fn range(d: &Dirs, from: &str, through: &str, env: &[(&str, &str)]) -> Proc {
    let mut env = env.to_vec();
    env.push(("TASKFLOW_LEDGER_DIR", d.ledger.to_str().unwrap()));
    Proc::spawn(
        &[
            "standalone",
            "--until-done",
            "--date",
            from,
            "--through",
            through,
            "--data",
            d.data.to_str().unwrap(),
            "--report",
            d.report.to_str().unwrap(),
        ],
        &env,
    )
}

fn finish(p: &mut Proc) -> i32 {
    match p.wait_exit(WAIT) {
        Some(code) => code,
        None => panic!("taskflow did not finish within {WAIT:?}:\n{}", p.output()),
    }
}

fn day_dates(report: &Value) -> Vec<String> {
    report["days"].as_array().unwrap().iter().map(|d| d["date"].as_str().unwrap().into()).collect()
}

fn assert_day_ok(day: &Value) {
    assert_eq!(day["ok"], true, "{day:#}");
    assert_eq!(day["outcome"], "completed", "{day:#}");
    for t in day["tasks"].as_array().unwrap() {
        assert!(
            ["succeeded", "not_applicable", "skipped"].contains(&t["status"].as_str().unwrap()),
            "{} on {}: {t}",
            t["id"],
            day["date"]
        );
    }
}

/// Every file under `dir` with its bytes (to show that reading a closed day wrote nothing).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_owned(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The ledger's attempts per key, grouped by the key's business date (its first segment).
fn attempts_by_date(
    ledger: &Path,
) -> BTreeMap<String, Vec<(String, taskflow_examples::fund_clearing::KeyAttempts)>> {
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for (key, a) in FileLedger::open(ledger).unwrap().attempts().unwrap() {
        let date = key.split('/').next().unwrap().to_owned();
        out.entry(date).or_default().push((key, a));
    }
    out
}

/// The day's events as `taskflow store events` prints them.
fn events(data: &Path, date: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_taskflow"))
        .args(["store", "events", data.to_str().unwrap(), "--date", date])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_range_across_a_weekend_and_a_holiday_runs_each_open_day_once() {
    let d = dirs();
    let mut run = range(&d, FROM, THROUGH, &[]);
    assert_eq!(finish(&mut run), 0, "{}", run.output());
    let out = run.output();
    let report = read_json(&d.report);
    assert_eq!(day_dates(&report), OPEN, "each open date, no weekend or holiday: {report:#}");
    for day in report["days"].as_array().unwrap() {
        assert_day_ok(day);
        assert_eq!(day["from_store"], false);
        let summary =
            format!("business date {}: every task ended well", day["date"].as_str().unwrap());
        assert_eq!(out.matches(&summary).count(), 1, "one summary per day:\n{out}");
    }
    assert_eq!(report["ok"], true);
    assert_eq!(report["outcome"], "completed");
    assert_eq!(report["from"], FROM);
    assert_eq!(report["through"], THROUGH);
    // The top level keeps the one-day fields: the last day of the range.
    assert_eq!(report["date"], THROUGH);
    assert_eq!(report["tasks"], report["days"][4]["tasks"]);
    assert!(!d.data.join("days/2026-09-25").exists(), "a holiday is never opened");
    assert!(!d.data.join("days/2026-09-26").exists(), "a weekend day is never opened");

    // The ledger: postings for every open date and no other, each key committed once.
    let by_date = attempts_by_date(&d.ledger);
    assert_eq!(by_date.keys().cloned().collect::<Vec<_>>(), OPEN, "{by_date:?}");
    for (date, keys) in &by_date {
        for (key, a) in keys {
            assert_eq!((a.new, a.dup, a.rev), (1, 0, 0), "{date}: {key} {a:?}");
        }
    }
    let ledger_before = tree(&d.ledger);
    let days_before = tree(&d.data.join("days"));

    // Started again on the finished range: it reports every day from its store and exits 0,
    // running nothing and writing nothing to the closed days.
    let mut again = range(&d, FROM, THROUGH, &[]);
    assert_eq!(finish(&mut again), 0, "{}", again.output());
    let second = read_json(&d.report);
    assert_eq!(day_dates(&second), OPEN);
    for (a, b) in report["days"].as_array().unwrap().iter().zip(second["days"].as_array().unwrap())
    {
        assert_day_ok(b);
        assert_eq!(b["from_store"], true, "{b:#}");
        assert_eq!(a["seq"], b["seq"], "nothing was recorded on {}", a["date"]);
    }
    assert_eq!(tree(&d.ledger), ledger_before, "nothing ran again");
    assert_eq!(tree(&d.data.join("days")), days_before, "reading a closed day writes nothing");

    // The range extended by a day that stalls: the closed days are reported, the new day
    // stalls, and the run exits 1 with the days so far.
    let mut stall =
        range(&d, FROM, "2026-09-30", &[("TASKFLOW_INJECT_FAILURES", "reconciliation:*:1")]);
    assert_eq!(finish(&mut stall), 1, "{}", stall.output());
    let third = read_json(&d.report);
    let mut dates = OPEN.to_vec();
    dates.push("2026-09-30");
    assert_eq!(day_dates(&third), dates);
    assert_eq!(third["ok"], false);
    assert_eq!(third["outcome"], "stalled");
    assert_eq!(third["date"], "2026-09-30");
    let last = &third["days"][5];
    assert_eq!((last["ok"].clone(), last["outcome"].clone()), (false.into(), "stalled".into()));
    assert!(d.data.join("days/2026-09-30").is_dir(), "the stalled day was run");
}

#[test]
fn a_stalled_day_stops_the_range_and_later_days_are_not_opened() {
    let d = dirs();
    let failures = [("TASKFLOW_INJECT_FAILURES", "reconciliation:*:1")];
    let mut run = range(&d, "2026-09-29", "2026-10-09", &failures);
    assert_eq!(finish(&mut run), 1, "{}", run.output());
    let report = read_json(&d.report);
    assert_eq!(day_dates(&report), ["2026-09-29"], "{report:#}");
    assert_eq!(report["ok"], false);
    assert_eq!(report["outcome"], "stalled");
    assert_eq!(report["days"][0]["outcome"], "stalled");
    assert!(!d.data.join("days/2026-09-30").exists(), "no day after the stalled one is opened");
    assert!(run.output().contains("stopped at 2026-09-29"), "{}", run.output());
}

#[test]
fn a_range_killed_mid_day_resumes_at_that_day_without_rerunning_succeeded_shards() {
    let d = dirs();
    // Slow steps so the kill lands while the third day's shards run.
    let slow = [("TASKFLOW_FUND_STEP_DELAY", "20ms")];
    let mut first = range(&d, FROM, THROUGH, &slow);
    let third = OPEN[2];
    let deadline = Instant::now() + WAIT;
    loop {
        let posted = FileLedger::open(&d.ledger)
            .unwrap()
            .entries()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(third))
            .count();
        if posted >= 3 {
            break;
        }
        assert!(
            first.child.try_wait().unwrap().is_none(),
            "ended before the kill:\n{}",
            first.output()
        );
        assert!(
            Instant::now() < deadline,
            "{third} posted nothing in {WAIT:?}:\n{}",
            first.output()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    first.signal("-KILL");
    first.wait_exit(Duration::from_secs(30)).expect("killed");
    assert!(
        !first.output().contains(&format!("business date {third}: every task")),
        "killed mid-day"
    );
    let closed_before: BTreeMap<_, _> =
        OPEN[..2].iter().map(|date| (*date, tree(&d.data.join("days").join(date)))).collect();

    let mut second = range(&d, FROM, THROUGH, &slow);
    assert_eq!(finish(&mut second), 0, "{}", second.output());
    let report = read_json(&d.report);
    assert_eq!(day_dates(&report), OPEN, "the days before the kill are in the report");
    for (i, day) in report["days"].as_array().unwrap().iter().enumerate() {
        assert_day_ok(day);
        assert_eq!(day["from_store"], i < 2, "{i}: {day:#}");
    }
    for (date, files) in &closed_before {
        assert_eq!(&tree(&d.data.join("days").join(date)), files, "{date} was not written again");
    }

    // The ledger: the days closed before the kill were not touched again; on the killed day
    // every key committed at most once (a shard running at the kill is rolled back, its
    // generation bumped, and re-posted under the new key); the later days ran once.
    let by_date = attempts_by_date(&d.ledger);
    assert_eq!(by_date.keys().cloned().collect::<Vec<_>>(), OPEN);
    for (date, keys) in &by_date {
        for (key, a) in keys {
            if *date == third {
                // Committed once, or only reversed: the rollback of the attempt the kill
                // interrupted reverses every key of its shard, also those it never reached.
                assert!(a.new == 1 || (a.new == 0 && a.rev > 0), "{key} {a:?}");
            } else {
                assert_eq!((a.new, a.dup, a.rev), (1, 0, 0), "{date}: {key} {a:?}");
            }
        }
    }
    // The killed day's journal: no shard succeeded twice.
    let mut successes: BTreeMap<(String, u64), u32> = BTreeMap::new();
    for e in events(&d.data, third) {
        if let Some(s) = e["kind"].get("shard")
            && s["event"] == "succeed"
        {
            let at = (s["task"].as_str().unwrap().to_owned(), s["shard"].as_u64().unwrap());
            *successes.entry(at).or_default() += 1;
        }
    }
    assert!(!successes.is_empty());
    let twice: Vec<_> = successes.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "shards that succeeded more than once: {twice:?}");
}

/// Runs the binary with `args`; returns (exit code, stderr).
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_taskflow"))
        .args(args)
        .env("TASKFLOW_COOKIE", support::COOKIE)
        .env_remove("TASKFLOW_DATE")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_ranges_are_refused_naming_the_value_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data = data.to_str().unwrap();
    let report = tmp.path().join("r.json");
    let report = report.to_str().unwrap();
    let cluster = support::free_addr();
    let standalone = |extra: &[&str]| {
        let mut a = vec!["standalone", "--data", data, "--report", report];
        a.extend_from_slice(extra);
        refused(&a)
    };
    let manager = |extra: &[&str]| {
        let mut a = vec!["manager", "--cluster", &cluster, "--data", data, "--report", report];
        a.extend_from_slice(extra);
        refused(&a)
    };
    type Case<'a> = (&'a str, (Option<i32>, String), &'a [&'a str]);
    let cases: Vec<Case<'_>> = vec![
        (
            "--through before --date",
            standalone(&["--until-done", "--date", "2026-09-30", "--through", "2026-09-28"]),
            &["2026-09-28", "2026-09-30", "first day first"],
        ),
        (
            "--through without --until-done",
            standalone(&["--date", "2026-09-28", "--through", "2026-09-30"]),
            &["--through 2026-09-30 needs --until-done", "add --until-done"],
        ),
        (
            "a range leaving the calendar",
            standalone(&["--until-done", "--date", "2027-03-29", "--through", "2027-04-02"]),
            &["2027-04-02", "2026-01-01..2027-03-31", "extend the calendar"],
        ),
        (
            "a range starting before the calendar",
            standalone(&["--until-done", "--date", "2025-12-30", "--through", "2026-01-06"]),
            &["2025-12-30", "outside the calendar"],
        ),
        (
            "--through that is not a date",
            standalone(&["--until-done", "--date", "2026-09-28", "--through", "2026-13-01"]),
            &["--through \"2026-13-01\" is not a date", "YYYY-MM-DD"],
        ),
        (
            "a range of holidays only",
            standalone(&["--until-done", "--date", "2026-10-01", "--through", "2026-10-07"]),
            &["no open business day from 2026-10-01 through 2026-10-07"],
        ),
        (
            "manager: --through before --date",
            manager(&["--until-done", "--date", "2026-09-30", "--through", "2026-09-28"]),
            &["2026-09-28", "2026-09-30"],
        ),
        (
            "manager: --through without --until-done",
            manager(&["--date", "2026-09-28", "--through", "2026-09-30"]),
            &["needs --until-done"],
        ),
        (
            "manager: a range leaving the calendar",
            manager(&["--until-done", "--date", "2027-03-29", "--through", "2027-04-02"]),
            &["2027-04-02", "extend the calendar"],
        ),
        (
            "manager: --through that is not a date",
            manager(&["--until-done", "--date", "2026-09-28", "--through", "tomorrow"]),
            &["\"tomorrow\" is not a date"],
        ),
    ];
    for (what, (code, stderr), needles) in cases {
        assert_eq!(code, Some(1), "{what}: {stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{what}: {n:?} missing from: {stderr}");
        }
        assert!(!Path::new(data).exists(), "{what}: the data directory was created");
        assert!(!Path::new(report).exists(), "{what}: a report was written");
    }
}
