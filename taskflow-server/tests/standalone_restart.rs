//! `taskflow standalone --until-done` killed with SIGKILL mid-day and started again on the same
//! data directory: the day completes, and no shard that had succeeded runs again.
//!
//! The proof is an external ledger: every shard runs a `command` that appends its idempotency
//! key (`date/task/shard/gN`) to a file. A succeeded shard that ran again would append the same
//! key twice (only unconfirmed shards are rolled back, which bumps their generation).

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(90);

const PRODUCTS: &str = r#"
[[product]]
code = "F1"
name = "fund one"
mode = "open-nav"
lifecycle = "open"
distributors = ["D1", "D2"]

[[product]]
code = "F2"
name = "fund two"
mode = "open-nav"
lifecycle = "open"
distributors = ["D1", "D2"]

[[product]]
code = "F3"
name = "fund three"
mode = "open-nav"
lifecycle = "open"
distributors = ["D1", "D2"]
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
"#;

/// A day of three levels; each shard sleeps a little, then appends its key to the ledger.
fn write_flow(dir: &Path, ledger: &Path) {
    let shell = format!("sleep 0.15; echo \"$TASKFLOW_IDEMPOTENCY_KEY\" >> '{}'", ledger.display());
    let task = |id: &str, level: &str, deps: &str, extra: &str| {
        format!(
            "[[task]]\nid = \"{id}\"\nname = \"{id}\"\nlevel = \"{level}\"\nbehavior = \"command\"\n\
             depends_on = [{deps}]\n{extra}params = {{ shell = {shell:?} }}\n\n"
        )
    };
    let flow = format!(
        "[flow]\nname = \"restart\"\ntime_zone = \"Asia/Shanghai\"\n\n{}{}{}{}",
        task("init", "system", "", "trigger = \"manual\"\n"),
        task(
            "per_pair",
            "product",
            "\"init\"",
            "in_lifecycle = [\"open\"]\nper_distributor = true\n"
        ),
        task("per_product", "product", "\"per_pair\"", "in_lifecycle = [\"open\"]\n"),
        task("per_distributor", "distributor", "\"per_product\"", ""),
    );
    std::fs::write(dir.join("flow.toml"), flow).unwrap();
    std::fs::write(dir.join("products.toml"), PRODUCTS).unwrap();
    std::fs::write(dir.join("distributors.toml"), DISTRIBUTORS).unwrap();
    std::fs::write(dir.join("calendar.toml"), CALENDAR).unwrap();
}

fn standalone(flow: &Path, data: &Path, report: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_taskflow"))
        .args(["standalone", "--until-done", "--date", "2026-09-30", "--slots", "2"])
        .arg("--flow")
        .arg(flow)
        .arg("--data")
        .arg(data)
        .arg("--report")
        .arg(report)
        .env_remove("TASKFLOW_LOG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the taskflow binary starts")
}

fn ledger_lines(ledger: &Path) -> Vec<String> {
    std::fs::read_to_string(ledger).unwrap_or_default().lines().map(str::to_owned).collect()
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("taskflow standalone did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_day_completes_on_restart_without_rerunning_succeeded_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let (flow, data) = (tmp.path().join("flow"), tmp.path().join("data"));
    std::fs::create_dir_all(&flow).unwrap();
    let ledger = tmp.path().join("ledger.txt");
    let report = tmp.path().join("report.json");
    write_flow(&flow, &ledger);

    // 1 + 6 + 3 + 2 = 12 shards. Kill once a few have appended to the ledger.
    let mut first = standalone(&flow, &data, &report);
    let deadline = Instant::now() + WAIT;
    while ledger_lines(&ledger).len() < 4 {
        assert!(first.try_wait().unwrap().is_none(), "the first run ended before being killed");
        assert!(Instant::now() < deadline, "no shard ran within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let before = ledger_lines(&ledger).len();
    assert!(before < 12, "the day must be killed mid-run (ledger has {before} lines)");

    let mut second = standalone(&flow, &data, &report);
    let status = wait_exit(&mut second);
    assert!(status.success(), "the restarted day must complete: {status}");

    let lines = ledger_lines(&ledger);
    let unique: HashSet<&String> = lines.iter().collect();
    assert_eq!(unique.len(), lines.len(), "a key ran twice: {lines:#?}");
    // Every shard ran; only shards whose outcome was unconfirmed at the kill (at most the two
    // slots) re-ran, under a new generation.
    let shards: HashSet<String> =
        lines.iter().map(|l| l.rsplit_once('/').unwrap().0.to_owned()).collect();
    assert_eq!(shards.len(), 12, "{lines:#?}");
    let reruns = lines.iter().filter(|l| !l.ends_with("/g0")).count();
    assert!(reruns <= 2, "only the shards running at the kill may re-run: {lines:#?}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["ok"], true, "{json:#}");

    // Started again on the finished day: it reports and exits 0; nothing runs.
    let mut third = standalone(&flow, &data, &report);
    assert!(wait_exit(&mut third).success());
    assert_eq!(ledger_lines(&ledger).len(), lines.len(), "nothing re-runs on a finished day");
}
