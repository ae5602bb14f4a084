//! `taskflow store prune DATA --keep N` on a data directory of real days: four closed days
//! (Sep 28 – Oct 8, run headless by `taskflow standalone --until-done --through`), then a real
//! `taskflow standalone` serving the next day Oct 9 (open, its manual task waiting). While it
//! runs, prune refuses with a clear error, exit 1, and nothing is removed; once it stopped,
//! `--keep 2` removes exactly the closed days before the window (Oct 9 and Oct 8 are the two
//! newest open days) and prints them, and nothing outside `days/` is touched.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const TOKEN: &str = "prune-test-token-0123";

fn taskflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskflow"));
    cmd.env_remove("TASKFLOW_LOG")
        .env_remove("RUST_LOG")
        .env_remove("TASKFLOW_DATE")
        .env_remove("TASKFLOW_FLOW")
        .env_remove("TASKFLOW_TEST_CLOCK");
    cmd
}

fn prune(data: &Path, keep: &str) -> Output {
    taskflow().args(["store", "prune"]).arg(data).args(["--keep", keep]).output().expect("runs")
}

/// Every file under `dir` with its bytes (the directory tree, for before/after checks).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry")) {
            let p = e.path();
            let name = p.strip_prefix(root).expect("under root").display().to_string();
            if p.is_dir() {
                out.insert(format!("{name}/"), Vec::new());
                walk(root, &p, out);
            } else {
                out.insert(name, std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn days(data: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data.join("days"))
        .expect("days/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn prune_refuses_while_a_manager_runs_and_removes_the_old_closed_days_after_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = taskflow()
        .args(["standalone", "--until-done", "--date", "2026-09-28", "--through", "2026-10-08"])
        .arg("--data")
        .arg(&data)
        .stdout(Stdio::null())
        .status()
        .expect("headless range runs");
    assert!(out.success(), "the four days closed");
    assert_eq!(days(&data), ["2026-09-28", "2026-09-29", "2026-09-30", "2026-10-08"]);
    std::fs::create_dir_all(data.join("history")).unwrap();
    std::fs::write(data.join("history/durations"), b"never pruned").unwrap();

    let zero = prune(&data, "0");
    assert_eq!(zero.status.code(), Some(1));
    let err = String::from_utf8_lossy(&zero.stderr);
    assert!(err.contains("--keep 0") && err.contains("at least 1"), "{err}");

    // A real manager on the directory: the next day Oct 9 opens, its manual task waits.
    let mut child = taskflow()
        .args(["standalone", "--http", "127.0.0.1:0", "--token", TOKEN])
        .arg("--data")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("standalone starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("console: ") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("the console URL is printed");
    assert!(data.join("days/2026-10-09").is_dir(), "the manager opened Oct 9");

    let refused = prune(&data, "2");
    assert_eq!(refused.status.code(), Some(1), "refused while the manager runs");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("a taskflow manager is running on") && err.contains("nothing was removed"),
        "{err}"
    );
    assert!(refused.stdout.is_empty(), "nothing reported removed");
    assert_eq!(
        days(&data),
        ["2026-09-28", "2026-09-29", "2026-09-30", "2026-10-08", "2026-10-09"],
        "nothing was removed"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let before = tree(&data.join("days"));

    let history = tree(&data.join("history"));
    let done = prune(&data, "2");
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&done.stderr));
    let removed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("removed ").and_then(|r| r.split(' ').next()))
        .collect();
    assert_eq!(removed, ["2026-09-28", "2026-09-29", "2026-09-30"], "{stdout}");
    assert_eq!(days(&data), ["2026-10-08", "2026-10-09"], "the window's days are kept");
    assert_eq!(tree(&data.join("history")), history, "history/ untouched");
    for kept in ["2026-10-08", "2026-10-09"] {
        assert_eq!(
            tree(&data.join("days").join(kept)),
            before
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(&format!("{kept}/")).map(|r| (r.to_owned(), v.clone()))
                })
                .filter(|(k, _)| !k.is_empty())
                .collect::<BTreeMap<_, _>>(),
            "{kept} is byte for byte as it was"
        );
    }

    // --keep 1: Oct 8 goes; the newest day (not closed either) stays.
    let again = prune(&data, "1");
    assert!(again.status.success());
    assert_eq!(days(&data), ["2026-10-09"], "{}", String::from_utf8_lossy(&again.stdout));
}
