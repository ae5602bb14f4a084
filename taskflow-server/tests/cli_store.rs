//! `taskflow store inspect|backup|restore` on real stores: "corrupt" always has a next step.

mod tree;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use taskflow_core::model::{BusinessDate, ShardKey, TaskId};
use taskflow_core::state::EventKind;
use taskflow_core::{Journal, JournalOptions, TaskGraph};
use tree::{changed, contents};

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

fn last_segment(day: &Path) -> std::path::PathBuf {
    std::fs::read_dir(day.join("log")).unwrap().map(|e| e.unwrap().path()).max().unwrap()
}

/// A store of 3,000 raw events with snapshots at 1,000 and 2,000 (the log compacted through
/// 1,000), whose sled — where the snapshots live — was replaced by a fresh store's: the
/// snapshot the log needs is missing.
fn make_missing_snapshot(day: &Path, scratch: &Path) {
    use taskflow_core::store::{Store, StoreOptions};
    let (store, _) = Store::open(day, StoreOptions::for_test()).unwrap();
    let put = |from: u64, to: u64| {
        let event = |s: u64| format!("event {s:06} {}", "x".repeat(200)).into_bytes();
        store.append((from..=to).map(|s| (s, event(s))).collect()).unwrap();
        assert!(store.wait_durable(to, Duration::from_secs(30)).unwrap());
    };
    put(1, 2200);
    store.write_snapshot(1000, b"snapshot at 1000").unwrap();
    store.write_snapshot(2000, b"snapshot at 2000").unwrap();
    put(2201, 3000);
    assert!(store.first_log_seq() > 1, "the log was compacted into the snapshots");
    store.close().unwrap();
    let (fresh, _) = Store::open(scratch, StoreOptions::for_test()).unwrap();
    fresh.close().unwrap();
    std::fs::remove_dir_all(day.join("sled")).unwrap();
    let mut stack = vec![(scratch.join("sled"), day.join("sled"))];
    while let Some((from, to)) = stack.pop() {
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push((e.path(), to.join(e.file_name())));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    std::fs::copy(scratch.join("SLEDMARK"), day.join("SLEDMARK")).unwrap();
}

#[test]
fn inspect_and_events_change_no_file_of_intact_or_damaged_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let days = data.join("days");
    // Intact.
    let intact = make_day(&data);
    // A torn (never acknowledged) tail: a zero-filled region after the last record.
    let torn = days.join("2026-09-29");
    copy_tree(&intact, &torn);
    let seg = last_segment(&torn);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&seg, &bytes).unwrap();
    // A corrupt record: a flipped byte inside the log.
    let corrupt = days.join("2026-09-28");
    copy_tree(&intact, &corrupt);
    let seg = last_segment(&corrupt);
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    // A missing snapshot.
    let missing = days.join("2026-09-25");
    make_missing_snapshot(&missing, &tmp.path().join("scratch"));
    // An empty day directory.
    let empty = days.join("2026-09-24");
    std::fs::create_dir_all(&empty).unwrap();
    for d in [&intact, &torn, &corrupt, &missing] {
        let _ = std::fs::remove_file(d.join("LOCK"));
    }
    let before = contents(&data);

    let (store, inspect, events) = (Path::new("store"), Path::new("inspect"), Path::new("events"));
    let check = |args: &[&Path]| {
        let out = taskflow(args);
        let diff = changed(&before, &contents(&data));
        assert!(diff.is_empty(), "{args:?} changed {diff:?}: {}", text(&out));
        out
    };

    // inspect of the whole data directory: one report per day, exit 1 (not every day is ok).
    let out = check(&[store, inspect, &data]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let out = check(&[store, inspect, &intact]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("VERDICT: ok"), "{}", text(&out));

    let out = check(&[store, inspect, &torn]);
    assert!(out.status.success(), "a torn tail loses nothing acknowledged: {}", text(&out));
    let report = text(&out);
    assert!(report.contains("torn tail") && report.contains("never acknowledged"), "{report}");

    for (dir, what) in [(&corrupt, "checksum"), (&missing, "missing")] {
        let out = check(&[store, inspect, dir]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let report = text(&out);
        assert!(report.contains("VERDICT: corrupt") && report.contains(what), "{report}");
        assert!(report.contains("next step") && report.contains("store restore"), "{report}");
    }

    let out = check(&[store, inspect, &empty]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    assert!(report.contains("empty") && report.contains("next step"), "{report}");

    // events: the intact and torn days print their two events; the damaged ones fail naming
    // the damage; nothing changes in any case.
    for dir in [&intact, &torn] {
        let out = check(&[store, events, dir]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2, "{}", text(&out));
    }
    let out = check(&[store, events, &torn]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("torn tail"), "{}", text(&out));
    for dir in [&corrupt, &missing] {
        let out = check(&[store, events, dir]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("taskflow store inspect"), "{}", text(&out));
    }
    let out = check(&[store, events, &data, Path::new("--date"), Path::new("2026-09-24")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = check(&[store, events, &empty]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "nothing created");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn restore_force_refuses_a_directory_holding_files_outside_the_store_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let day = make_day(&tmp.path().join("data"));
    let file = tmp.path().join("day.tfbak");
    let out = taskflow(&[Path::new("store"), Path::new("backup"), &day, &file]);
    assert!(out.status.success(), "{}", text(&out));
    let target = tmp.path().join("target");
    let out = taskflow(&[Path::new("store"), Path::new("restore"), &file, &target]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(target.join("notes.txt"), b"mine").unwrap();
    let force = Path::new("--force");
    let out = taskflow(&[Path::new("store"), Path::new("restore"), &file, &target, force]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("notes.txt"), "names the foreign file: {}", text(&out));
    assert_eq!(std::fs::read(target.join("notes.txt")).unwrap(), b"mine", "it survives");
    std::fs::remove_file(target.join("notes.txt")).unwrap();
    let out = taskflow(&[Path::new("store"), Path::new("restore"), &file, &target, force]);
    assert!(out.status.success(), "a store's own files are replaced: {}", text(&out));
}
