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
    ("TASKFLOW_LOG", "warn,taskflow_core::executor::slot=debug");

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

// --- Exactly-once checks shared by the fault tests: the ledger and the journal ---

/// The ledger of a fault-free in-process run of the example day (`taskflow standalone
/// --until-done`; the figures are deterministic), made in `dir`.
pub fn reference_ledger(dir: &Path) -> std::collections::BTreeMap<String, i64> {
    let ledger = dir.join("reference-ledger");
    let data = dir.join("reference-data");
    let mut run = Proc::spawn(
        &["standalone", "--until-done", "--date", DATE, "--data", data.to_str().unwrap()],
        &[("TASKFLOW_LEDGER_DIR", ledger.to_str().unwrap()), ("TASKFLOW_FUND_STEP_DELAY", "0ms")],
    );
    let code = run.wait_exit(Duration::from_secs(120));
    assert_eq!(code, Some(0), "reference run:\n{}", run.output());
    taskflow_examples::fund_clearing::FileLedger::open(&ledger).unwrap().entries().unwrap()
}

/// What [`check_ledger_exact`] found in a ledger that is exact.
#[derive(Debug, Clone, Copy, Default)]
pub struct LedgerSummary {
    /// Committed postings (= the expected ones).
    pub postings: usize,
    /// Re-posts refused as duplicates (a step re-run after its shard moved or resumed).
    pub dups: u32,
}

/// The committed [`FileLedger`](taskflow_examples::fund_clearing::FileLedger) in `dir` equals
/// `expected` key for key and amount for amount, and `attempts.log` shows every key committed
/// exactly once (one `new`, no `rev`); otherwise a description of every difference.
pub fn check_ledger_exact(
    dir: &Path,
    expected: &std::collections::BTreeMap<String, i64>,
) -> Result<LedgerSummary, String> {
    let ledger = taskflow_examples::fund_clearing::FileLedger::open(dir)
        .map_err(|e| format!("open the ledger {}: {e}", dir.display()))?;
    let entries = ledger.entries().map_err(|e| format!("read the ledger: {e}"))?;
    let attempts = ledger.attempts().map_err(|e| format!("read attempts.log: {e}"))?;
    let missing: Vec<_> = expected.keys().filter(|k| !entries.contains_key(*k)).collect();
    let extra: Vec<_> = entries.keys().filter(|k| !expected.contains_key(*k)).collect();
    let other: Vec<_> = entries
        .iter()
        .filter(|(k, a)| expected.get(*k).is_some_and(|e| e != *a))
        .map(|(k, a)| format!("{k}: {a} (expected {})", expected[k]))
        .collect();
    let not_once: Vec<_> = attempts.iter().filter(|(_, a)| a.new != 1 || a.rev != 0).collect();
    if missing.is_empty() && extra.is_empty() && other.is_empty() && not_once.is_empty() {
        let dups = attempts.values().map(|a| a.dup).sum();
        return Ok(LedgerSummary { postings: entries.len(), dups });
    }
    fn first<T: std::fmt::Debug>(v: &[T]) -> String {
        let shown: Vec<_> = v.iter().take(10).collect();
        if v.len() > shown.len() {
            format!("{shown:?} and {} more", v.len() - 10)
        } else {
            format!("{shown:?}")
        }
    }
    Err(format!(
        "the ledger is not exact: {} missing {}; {} extra {}; other amounts {}; keys not \
         committed exactly once (new != 1 or rev != 0): {}",
        missing.len(),
        first(&missing),
        extra.len(),
        first(&extra),
        first(&other),
        first(&not_once)
    ))
}

/// What the journal (`taskflow store events`) says about the day's shards.
#[derive(Debug, Default)]
pub struct JournalCounts {
    /// `succeed` events per registered `(task, shard)`.
    pub successes: std::collections::BTreeMap<(String, u64), u32>,
    /// `requeue` events (a lost executor's running shard back to pending).
    pub requeues: u32,
    /// `dispatch` events per `(task, shard)`.
    pub dispatches: std::collections::BTreeMap<(String, u64), u32>,
    /// Problems: a success of an unregistered shard, a task-wide success (which would hide
    /// per-shard counts), a log that does not start at seq 1.
    pub problems: Vec<String>,
}

impl JournalCounts {
    /// Counts the day's events (as printed by [`store_events`]).
    pub fn of(events: &[serde_json::Value]) -> JournalCounts {
        let mut c = JournalCounts::default();
        if events.first().and_then(|e| e["seq"].as_u64()) != Some(1) {
            c.problems.push("the journal does not start at seq 1".into());
        }
        for e in events {
            let kind = &e["kind"];
            if let Some(r) = kind.get("task_registered") {
                let task = r["task"].as_str().unwrap_or_default().to_owned();
                for i in 0..r["shards"].as_array().map_or(0, Vec::len) as u64 {
                    c.successes.insert((task.clone(), i), 0);
                }
            } else if let Some(s) = kind.get("shard") {
                let at = (
                    s["task"].as_str().unwrap_or_default().to_owned(),
                    s["shard"].as_u64().unwrap_or(u64::MAX),
                );
                match &s["event"] {
                    serde_json::Value::String(v) if v == "succeed" => {
                        match c.successes.get_mut(&at) {
                            Some(n) => *n += 1,
                            None => c.problems.push(format!("success of unregistered {at:?}")),
                        }
                    }
                    serde_json::Value::String(v) if v == "requeue" => c.requeues += 1,
                    v if v.get("dispatch").is_some() => *c.dispatches.entry(at).or_default() += 1,
                    _ => {}
                }
            } else if let Some(t) = kind.get("task_shards")
                && t["event"] == "succeed"
            {
                c.problems.push(format!("a task-wide success hides per-shard counts: {e}"));
            }
        }
        c
    }

    /// Registered shards whose success count is not exactly one.
    pub fn not_once(&self) -> Vec<(&(String, u64), &u32)> {
        self.successes.iter().filter(|(_, n)| **n != 1).collect()
    }

    /// Shards dispatched more than once.
    pub fn redispatched(&self) -> usize {
        self.dispatches.values().filter(|n| **n >= 2).count()
    }
}

/// splitmix64: small, seedable, good enough to draw a fault plan.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
