//! `taskflow store inspect|backup|restore` on real stores: "corrupt" always has a next step.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use taskflow_core::model::{BusinessDate, ShardKey, TaskId};
use taskflow_core::state::EventKind;
use taskflow_core::{Journal, JournalOptions, TaskGraph};

fn taskflow(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taskflow")).args(args).output().expect("run taskflow")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A data directory with one business day of a few events.
fn make_day(data: &Path) -> std::path::PathBuf {
    let date = BusinessDate::from_ymd(2026, 9, 30).unwrap();
    let day = data.join("days").join(date.to_string());
    let graph = Arc::new(TaskGraph::build([(TaskId::new("t"), vec![])]).unwrap());
    let (mut j, _) = Journal::open(&day, date, graph, JournalOptions::for_test()).unwrap();
    j.record(EventKind::DayOpened { date, flow_digest: "d".into() }, 1).unwrap();
    let shards = (0..50).map(|i| ShardKey::new(format!("s{i}"))).collect();
    let kind = EventKind::TaskRegistered {
        task: TaskId::new("t"),
        items: vec![],
        shards,
        covered_dates: vec![],
    };
    j.record(kind, 2).unwrap();
    j.close(Duration::from_secs(20)).unwrap();
    day
}

#[test]
fn inspect_backup_and_restore_a_healthy_day() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let day = make_day(&data);

    let out = taskflow(&[Path::new("store"), Path::new("inspect"), &data]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).to_lowercase().contains("verdict"), "{}", text(&out));

    let file = tmp.path().join("day.tfbak");
    let out = taskflow(&[Path::new("store"), Path::new("backup"), &day, &file]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(2 events)"), "{}", text(&out));

    let restored = tmp.path().join("restored");
    let out = taskflow(&[Path::new("store"), Path::new("restore"), &file, &restored]);
    assert!(out.status.success(), "{}", text(&out));
    let out = taskflow(&[Path::new("store"), Path::new("inspect"), &restored]);
    assert!(out.status.success(), "{}", text(&out));

    // Restoring over a store that exists is refused without --force.
    let out = taskflow(&[Path::new("store"), Path::new("restore"), &file, &restored]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn backup_of_a_whole_data_directory_names_the_days_to_choose_from() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_day(&data);
    let out = taskflow(&[Path::new("store"), Path::new("backup"), &data, &tmp.path().join("x")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("2026-09-30"), "{}", text(&out));
}

#[test]
fn inspect_reports_a_damaged_log_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let day = make_day(&tmp.path().join("data"));
    let seg = std::fs::read_dir(day.join("log")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();

    let out = taskflow(&[Path::new("store"), Path::new("inspect"), &day]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    assert!(report.to_lowercase().contains("corrupt"), "{report}");
    assert!(
        report.contains(seg.file_name().unwrap().to_str().unwrap()),
        "names the file: {report}"
    );
}

#[test]
fn inspect_of_something_that_is_not_a_store_says_what_it_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let out = taskflow(&[Path::new("store"), Path::new("inspect"), tmp.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("neither a taskflow store"), "{}", text(&out));
}

#[test]
fn events_prints_each_logged_event_as_one_json_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let day = make_day(&data);
    let date = Path::new("2026-09-30");
    let (store, events, flag) = (Path::new("store"), Path::new("events"), Path::new("--date"));

    for args in [
        vec![store, events, &data, flag, date],
        vec![store, events, &data],
        vec![store, events, &day],
    ] {
        let out = taskflow(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0]["seq"], 1);
        assert_eq!(lines[0]["kind"]["day_opened"]["date"], "2026-09-30");
        assert_eq!(lines[1]["kind"]["task_registered"]["shards"].as_array().unwrap().len(), 50);
        assert!(
            out.stderr.is_empty(),
            "no compaction note: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let out = taskflow(&[store, events, &data, flag, Path::new("2026-10-01")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no store for business date 2026-10-01"), "{}", text(&out));
}
