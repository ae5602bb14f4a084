//! Past business days over real HTTP: one day is run to the end by the real binary
//! (`taskflow standalone --until-done`), then a server running another date in the same data
//! directory serves the first day read-only from its journal — board, shards, logs — refuses
//! actions on it (409), answers 404 for a date without a journal (or an empty day directory)
//! and 500 `day_damaged` for a journal that cannot be read — and no GET changes a byte of a
//! past day's directory (a torn tail is reported, not truncated).

mod common;
mod tree;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{DATE, TOKEN, start_in};
use serde_json::Value;
use taskflow_core::{Journal, JournalOptions};
use taskflow_examples::fund_clearing;
use tree::{changed, contents};

const PAST: &str = "2026-09-29";

/// `taskflow standalone --until-done --date PAST` on `data`; returns its JSON report.
fn run_past_day(data: &Path) -> Value {
    let report = data.join("report.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskflow"))
        .args(["standalone", "--until-done", "--date", PAST, "--data"])
        .arg(data)
        .arg("--report")
        .arg(&report)
        .env_remove("TASKFLOW_INJECT_FAILURES")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn taskflow");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("taskflow standalone --until-done did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the past day completes: {status}");
    serde_json::from_slice(&std::fs::read(&report).expect("the report")).expect("JSON report")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_day_is_served_read_only_from_its_journal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let report = tokio::task::spawn_blocking({
        let data = data.clone();
        move || run_past_day(&data)
    })
    .await
    .unwrap();
    // A journal that cannot be opened as its date: another day's journal copied under it.
    let broken = data.join("days").join("2026-09-28");
    copy_dir(&data.join("days").join(PAST), &broken);
    let _ = std::fs::remove_file(broken.join("LOCK"));
    // The past day's log ends in a torn (never acknowledged) tail: power loss after the file
    // grew. A read must report it and leave it in place.
    let past_dir = data.join("days").join(PAST);
    let seg =
        std::fs::read_dir(past_dir.join("log")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&seg, &bytes).unwrap();
    // An empty day directory (e.g. a day whose data was lost, waiting for a recovery).
    let empty = data.join("days").join("2026-09-27");
    std::fs::create_dir_all(&empty).unwrap();
    let watched = [past_dir.clone(), broken.clone(), empty.clone()];
    let before: Vec<_> = watched.iter().map(|d| contents(d)).collect();

    let s = start_in(dir, DATE, false, "").await;

    // The board of the past day, as the run left it; nothing can be acted on.
    let (code, board) = s.get(&format!("/api/days/{PAST}")).await;
    assert_eq!(code, 200, "{board}");
    assert_eq!(board["date"], PAST);
    assert_eq!(board["flow"], "fund-clearing");
    assert_eq!(board["closed"], true);
    assert_eq!(board["seq"], report["seq"], "the board is the journal's last seq");
    let warnings = board["journal_warnings"].as_array().expect("the torn tail is reported");
    assert!(
        warnings.iter().any(|w| w.as_str().unwrap().contains("torn tail")
            && w.as_str().unwrap().contains(&seg.display().to_string())),
        "{board}"
    );
    let tasks = board["tasks"].as_array().unwrap();
    let expected = report["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), expected.len());
    for (t, r) in tasks.iter().zip(expected) {
        assert_eq!(t["id"], r["id"]);
        assert_eq!(t["status"], r["status"], "{}", t["id"]);
        assert_eq!(t["shards"]["total"], r["shards"], "{}", t["id"]);
        assert_eq!(t["attempts"], r["attempts"], "{}", t["id"]);
        assert_eq!(t["allowed_actions"], serde_json::json!([]), "{}", t["id"]);
        if r["finished_at"].is_string() {
            assert!(t["finished_at"].is_string(), "{t}");
        }
    }
    // The running day is untouched.
    let (code, current) = s.get("/api/days/current").await;
    assert_eq!((code, current["date"].as_str()), (200, Some(DATE)), "{current}");

    // A task's shards: paged, filtered, with step names from the checkpoints.
    let (code, page) = s.get(&format!("/api/days/{PAST}/tasks/confirm_trades?limit=3")).await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(page["task"]["id"], "confirm_trades");
    assert_eq!(page["task"]["allowed_actions"], serde_json::json!([]));
    let shards = page["shards"].as_array().unwrap();
    assert!(!shards.is_empty() && shards.len() <= 3, "{page}");
    for sh in shards {
        assert_eq!(sh["status"], "succeeded", "{sh}");
        assert_eq!(sh["allowed_actions"], serde_json::json!([]), "{sh}");
        assert!(sh["step"].as_u64().unwrap() > 0, "{sh}");
        assert!(sh["step_name"].is_string(), "{sh}");
        assert_eq!(sh["steps"], sh["step"], "a succeeded shard did every step: {sh}");
    }
    let (code, page) = s.get(&format!("/api/days/{PAST}/tasks/confirm_trades?status=failed")).await;
    assert_eq!((code, page["total"].as_u64()), (200, Some(0)), "{page}");
    let (code, err) = s.get(&format!("/api/days/{PAST}/tasks/nope")).await;
    assert_eq!((code, err["error"].as_str()), (404, Some("not_found")), "{err}");

    // Logs are not journaled: an empty log that says so.
    let (code, logs) = s.get(&format!("/api/days/{PAST}/tasks/day_init/shards/0/logs")).await;
    assert_eq!(code, 200, "{logs}");
    assert_eq!(logs["lines"], serde_json::json!([]));
    assert!(logs["note"].as_str().unwrap().contains(PAST), "{logs}");

    // Actions on a past day: 409, whatever the action.
    for path in ["tasks/day_init/retry", "tasks/confirm_trades/shards/0/rollback"] {
        let (code, err) = s.post(&format!("/api/days/{PAST}/{path}"), Some(TOKEN), "").await;
        assert_eq!((code, err["error"].as_str()), (409, Some("not_running_day")), "{err}");
        assert!(err["message"].as_str().unwrap().contains("not the running day"), "{err}");
    }

    // No journal: 404 naming the data directory.
    let (code, err) = s.get("/api/days/2026-09-01").await;
    assert_eq!((code, err["error"].as_str()), (404, Some("not_found")), "{err}");
    assert!(err["message"].as_str().unwrap().contains(&data.display().to_string()), "{err}");
    let (code, err) = s.post("/api/days/2026-09-01/tasks/day_init/retry", Some(TOKEN), "").await;
    assert_eq!(code, 404, "{err}");

    // A journal that does not open: 500 day_damaged naming the directory and the inspect
    // command.
    let (code, err) = s.get("/api/days/2026-09-28").await;
    assert_eq!((code, err["error"].as_str()), (500, Some("day_damaged")), "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains(&broken.display().to_string()), "{err}");
    assert!(msg.contains("taskflow store inspect"), "{err}");

    // An empty day directory holds no journal: 404 saying so, and nothing is created in it.
    let (code, err) = s.get("/api/days/2026-09-27").await;
    assert_eq!((code, err["error"].as_str()), (404, Some("not_found")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("empty"), "{err}");

    // Reading never writes: every file of the past days is as it was, the torn tail included.
    for (d, b) in watched.iter().zip(&before) {
        let diff = changed(b, &contents(d));
        assert!(diff.is_empty(), "a GET changed {diff:?} in {}", d.display());
    }
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "nothing created");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), bytes.len() as u64, "not truncated");

    // The closed day is cached and its journal's lock released: it opens again at once.
    let (code, again) = s.get(&format!("/api/days/{PAST}")).await;
    assert_eq!((code, &again), (200, &board));
    let graph = Arc::new(fund_clearing::flow().unwrap().graph().clone());
    let (journal, _) =
        Journal::open(&past_dir, PAST.parse().unwrap(), graph, JournalOptions::for_test())
            .expect("the past day's journal is not held open");
    assert!(journal.state().is_closed());
    journal.close(Duration::from_secs(10)).unwrap();

    s.stop().await;
}
