//! Quiet logs (SPEC §7): an idle `taskflow standalone` — its day waiting on a manual task —
//! prints and logs nothing for 60 s at the default level.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const FLOW: &str = r#"[flow]
name = "quiet"
time_zone = "Asia/Shanghai"

[[task]]
id = "init"
name = "init"
level = "system"
behavior = "noop"

[[task]]
id = "wait_for_me"
name = "waits for an operator"
level = "system"
behavior = "noop"
depends_on = ["init"]
trigger = "manual"
"#;

#[test]
fn an_idle_standalone_logs_nothing_for_a_minute() {
    let tmp = tempfile::tempdir().unwrap();
    let flow = tmp.path().join("flow");
    std::fs::create_dir_all(&flow).unwrap();
    std::fs::write(flow.join("flow.toml"), FLOW).unwrap();
    std::fs::write(flow.join("products.toml"), "").unwrap();
    std::fs::write(flow.join("distributors.toml"), "").unwrap();
    std::fs::write(flow.join("calendar.toml"), "[calendar]\nfrom = 2026-01-01\nto = 2026-12-31\n")
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskflow"))
        .args(["standalone", "--http", "127.0.0.1:0", "--date", "2026-09-30", "--flow"])
        .arg(&flow)
        .arg("--data")
        .arg(tmp.path().join("data"))
        .env_remove("TASKFLOW_LOG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), format!("stdout: {l}")));
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx2.send((Instant::now(), format!("stderr: {l}")));
        }
    });
    // Start-up: the banner (its last line is `running; press Ctrl-C …`, printed once the
    // console listens) and the day reaching its idle state (the manual task registered), in
    // either order: the day may well be idle before the console is up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut startup = Vec::new();
    let seen = |lines: &[String], what: &str| lines.iter().any(|l| l.contains(what));
    while !(seen(&startup, "wait_for_me: registered") && seen(&startup, "running; press Ctrl-C")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, l)) => startup.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("no idle state within 30 s: {startup:#?}");
            }
        }
    }
    // Idle for 60 s: nothing at all on stdout or stderr.
    let quiet = rx.recv_timeout(Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        quiet.is_err(),
        "an idle standalone printed {:?} (start-up: {startup:#?})",
        quiet.map(|(_, l)| l)
    );
}
