//! Helpers shared by the `cluster_*` tests (included with `#[path]`): spawn the real binary,
//! free ports, bounded waits, and processes killed on drop.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DATE: &str = "2026-09-30";
pub const COOKIE: &str = "test-cookie";

pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A child process whose stdout and stderr are collected; killed on drop.
pub struct Proc {
    pub child: Child,
    out: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::spawn_exe(Path::new(env!("CARGO_BIN_EXE_taskflow")), args, env)
    }

    /// Spawns another executable with the cluster cookie and quiet logs.
    pub fn spawn_exe(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env("TASKFLOW_COOKIE", COOKIE)
            .env("TASKFLOW_LOG", "warn")
            .env_remove("TASKFLOW_INJECT_FAILURES")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn taskflow");
        let out = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    out.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        Proc { child, out }
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits (bounded) until the output contains `needle`.
    pub fn wait_for(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits (bounded) until one line of the output contains every one of `needles`.
    pub fn wait_for_line(&self, needles: &[&str], within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.output().lines().any(|l| needles.iter().all(|n| l.contains(n))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// How many times `needle` occurs in the output so far.
    pub fn count(&self, needle: &str) -> usize {
        self.output().matches(needle).count()
    }

    /// Waits (bounded) until this executor is running a shard right now: more `job started`
    /// than `job ended` lines (needs [`JOB_STARTED_LOG`]). Poll, then signal at once: a shard
    /// of the example takes several steps, far longer than the 20 ms poll.
    pub fn wait_running_shard(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let out = self.output();
            if out.matches("job started").count() > out.matches("job ended").count() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits (bounded) for the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                // Let the reader threads drain.
                std::thread::sleep(Duration::from_millis(100));
                return Some(s.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.pid().to_string()]).status().unwrap();
        assert!(ok.success(), "kill {sig}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addr: String,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster { dir: tempfile::tempdir().unwrap(), addr: free_addr() }
    }
}

impl Cluster {
    pub fn new() -> Cluster {
        Cluster::default()
    }

    pub fn report(&self) -> PathBuf {
        self.dir.path().join("report.json")
    }

    pub fn manager(&self, lease_ms: u64, env: &[(&str, &str)]) -> Proc {
        self.manager_with(lease_ms, env, &[])
    }

    /// The data directory of the manager.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A manager with extra flags (e.g. `--flow DIR`).
    pub fn manager_with(&self, lease_ms: u64, env: &[(&str, &str)], extra: &[&str]) -> Proc {
        let data = self.data();
        let report = self.report();
        let lease = lease_ms.to_string();
        let mut args = vec![
            "manager",
            "--cluster",
            &self.addr,
            "--date",
            DATE,
            "--until-done",
            "--lease",
            &lease,
            "--data",
            data.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let p = Proc::spawn(&args, env);
        assert!(p.wait_for("accepting executors", Duration::from_secs(30)), "{}", p.output());
        p
    }

    pub fn executor(&self, name: &str, slots: u32, env: &[(&str, &str)]) -> Proc {
        let slots = slots.to_string();
        Proc::spawn(&["executor", "--manager", &self.addr, "--name", name, "--slots", &slots], env)
    }

    /// Whether the report says every task ended well.
    pub fn report_ok(&self) -> bool {
        std::fs::read(self.report())
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|r| r["ok"] == true)
    }

    pub fn read_report(&self) -> serde_json::Value {
        read_json(&self.report())
    }
}

/// The log filter that makes an executor print `job started` / `job ended` as a slot starts
/// and finishes a shard: the signal fault tests wait for before they kill or stop a process.
pub const JOB_STARTED_LOG: (&str, &str) =
    ("TASKFLOW_LOG", "warn,taskflow_core::actors::slot=debug");

/// What `taskflow store events DATA --date DATE` prints: one JSON value per event.
pub fn store_events(data: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_taskflow"))
        .args(["store", "events", data.to_str().unwrap(), "--date", DATE])
        .output()
        .expect("run taskflow store events");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "store events failed: {stderr}");
    assert!(
        !stderr.contains("compacted"),
        "the log was compacted, so counting its events would be partial: {stderr}"
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("report written")).expect("JSON")
}

pub fn assert_all_done(report: &serde_json::Value) {
    assert_eq!(report["ok"], true, "{report}");
    for t in report["tasks"].as_array().unwrap() {
        assert!(
            ["succeeded", "not_applicable", "skipped"].contains(&t["status"].as_str().unwrap()),
            "{t}"
        );
    }
}
