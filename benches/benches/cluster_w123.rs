//! The distributed form end to end (issue 4's W1–W3): the manager in this process, persistence
//! ON, and 2 executor **processes** of the release `taskflow` binary on loopback.
//!
//! Run (the executors are the release binary, so build it first):
//!
//! ```sh
//! cargo build --release -p taskflow-server
//! cargo bench -p taskflow-benches --bench cluster_w123
//! ```
//!
//! The binary is `target/release/taskflow` next to this bench's own target directory, or
//! `TASKFLOW_BIN`; the bench stops with a clear message if it is missing.
//!
//! Every repetition starts a fresh [`Runtime`] with a cluster listener on `127.0.0.1:<free
//! port>` and a real journal on a temp dir (group commit + fdatasync, default
//! [`JournalOptions`]) — the same runtime `taskflow manager` builds — then spawns
//! `taskflow executor --manager ADDR --name eN --slots S` twice and waits for each to print
//! "joined the manager" (bounded). The workloads are those of `runtime_w123`
//! ([`Workload`], built-in `noop` behavior), each behind one extra manual `gate` task: the clock
//! starts when the bench executes the gate (so process start and joins are not counted, as
//! the peers' cluster start is not) and stops when `wait_until_done` returns the completed
//! day, released only once every event is durable. The gate's own shard is inside the timing
//! and not counted in shards/s.
//!
//! W2's hop: the manager's durable notices are the only clock that sees both processes, so a
//! hop is measured in this process as the interval between the arrivals of consecutive chain
//! tasks' `succeeded` status notices (each published once its batch is durable). One interval
//! holds exactly one of everything a hop costs: the manager's batch (success + successor
//! ready + dispatch, one fdatasync), the assignment's trip to an executor process, the shard
//! run, the report's trip back and the next batch's fdatasync. It is comparable with the
//! peers' W2 figure (wall time / hops).
//!
//! Settings from the environment: `TF_SLOTS` (slots per executor, default 64), `TF_REPS`
//! (default 3), `TF_WORKERS` (tokio workers of the manager process, default 2),
//! `TF_ONLY` (comma list of `w1a,w1b,w2,w3`), `TASKFLOW_BIN`, and `TF_ACKS` (comma list of
//! `--replica-acks` values, e.g. `0,1,2`): with it both executors keep replicas (`--data`)
//! and every repetition runs each K in turn (A/B interleaved, so the machine's other load
//! falls on all of them alike); each K gets its own warm-up and summary line.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use taskflow_benches::{
    W2_HOPS, Workload, best_median, date, env_num, flow, load_average, ms, quantile, selected,
    task, us, w2_task,
};
use taskflow_core::behavior::BehaviorRegistry;
use taskflow_core::cluster::ClusterListen;
use taskflow_core::flow::Flow;
use taskflow_core::model::TaskId;
use taskflow_core::state::{Command as Action, CommandError, OperatorAction, Target, TaskStatus};
use taskflow_core::{
    ActionError, DayOutcome, JournalOptions, Notice, Runtime, RuntimeOptions, Topic,
};

const LIMIT: Duration = Duration::from_secs(600);
const JOIN_LIMIT: Duration = Duration::from_secs(30);
const COOKIE: &str = "cluster-w123-bench-cookie";
const GATE: &str = "gate";
const EXECUTORS: usize = 2;

#[derive(Clone)]
struct Settings {
    slots: u32,
    reps: usize,
    workers: usize,
    /// `--replica-acks` values to compare (empty: executors without `--data`, as before).
    acks: Vec<usize>,
}

/// The runs of one repetition: `None` (no replicas) or each K of `TF_ACKS`.
fn variants(s: &Settings) -> Vec<Option<usize>> {
    if s.acks.is_empty() { vec![None] } else { s.acks.iter().map(|&k| Some(k)).collect() }
}

fn variant_label(v: Option<usize>) -> String {
    v.map_or_else(String::new, |k| format!(" [replica acks {k}]"))
}

/// The release binary the executors run.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TASKFLOW_BIN") {
        return PathBuf::from(p);
    }
    // This bench runs as target/release/deps/cluster_w123-<hash>.
    let exe = std::env::current_exe().expect("current exe");
    let target = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let bin = target.parent().map(|t| t.join("release").join("taskflow"));
    bin.unwrap_or_else(|| target.join("taskflow"))
}

/// One executor process; killed (by its pid) when dropped.
struct Executor {
    child: Child,
    lines: mpsc::Receiver<String>,
    output: Arc<Mutex<String>>,
}

impl Executor {
    fn spawn(
        bin: &PathBuf,
        manager: SocketAddr,
        name: &str,
        slots: u32,
        data: Option<&std::path::Path>,
    ) -> Executor {
        let mut cmd = Command::new(bin);
        cmd.args(["executor", "--manager", &manager.to_string(), "--name", name])
            .args(["--slots", &slots.to_string()]);
        if let Some(d) = data {
            cmd.arg("--data").arg(d);
        }
        let mut child = cmd
            .env("TASKFLOW_COOKIE", COOKIE)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                out.lock().unwrap_or_else(PoisonError::into_inner).push_str(&line);
                out.lock().unwrap_or_else(PoisonError::into_inner).push('\n');
                let _ = tx.send(line);
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let out = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                out.lock().unwrap_or_else(PoisonError::into_inner).push_str(&text);
            }
        });
        Executor { child, lines, output }
    }

    /// Waits (bounded) for the executor's "joined the manager" line.
    fn wait_joined(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains("joined the manager") => return,
                Ok(_) => {}
                Err(_) => panic!(
                    "executor did not join within {limit:?}; its output:\n{}",
                    self.output.lock().unwrap_or_else(PoisonError::into_inner)
                ),
            }
        }
    }

    /// CPU seconds (user + system) the process has used so far.
    fn cpu(&self) -> f64 {
        proc_cpu(&format!("/proc/{}/stat", self.child.id()))
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a `/proc/*/stat` file, in seconds (USER_HZ = 100 on Linux).
fn proc_cpu(path: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(path) else { return 0.0 };
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

struct Run {
    elapsed: Duration,
    outcome: DayOutcome,
    /// Arrival of each task's `succeeded` notice, by task id (W2).
    succeeded: HashMap<String, Instant>,
    /// CPU seconds during the timed part: this (manager) process, the executor processes.
    cpu_manager: f64,
    cpu_executors: f64,
}

async fn run_day(
    flow: Arc<Flow>,
    s: &Settings,
    bin: &PathBuf,
    watch: bool,
    acks: Option<usize>,
) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = free_port();
    let opts = RuntimeOptions {
        data_dir: dir.path().to_path_buf(),
        date: Some(date()),
        executors: 0,
        journal: JournalOptions::default(),
        cluster: Some(ClusterListen {
            tls: None,
            insecure_plain_tcp: false,
            addr,
            cookie: COOKIE.into(),
            lease: Duration::from_secs(10),
            heartbeat: Duration::from_secs(2),
        }),
        replica_acks: acks.unwrap_or(0),
        ..RuntimeOptions::default()
    };
    // The manager splits with the built-in `noop`, as `taskflow manager` would.
    let (rt, m) = Runtime::start(flow, BehaviorRegistry::with_builtins(), opts)
        .await
        .expect("runtime starts");
    let mut execs: Vec<Executor> = (1..=EXECUTORS)
        .map(|i| {
            let data = acks.map(|_| dir.path().join(format!("e{i}")));
            Executor::spawn(bin, addr, &format!("e{i}"), s.slots, data.as_deref())
        })
        .collect();
    for e in &mut execs {
        e.wait_joined(JOIN_LIMIT);
    }
    let succeeded = Arc::new(Mutex::new(HashMap::new()));
    let watcher = if watch {
        let mut sub = m.subscribe(vec![Topic::Day]).await.expect("subscribe");
        let seen = succeeded.clone();
        Some(tokio::spawn(async move {
            while let Some(n) = sub.next().await {
                match n {
                    Notice::TaskStatus { task, status: TaskStatus::Succeeded, .. } => {
                        let now = Instant::now();
                        seen.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(task.as_str().to_owned(), now);
                    }
                    Notice::Lagged { missed } => panic!("the W2 watcher lagged ({missed} lost)"),
                    _ => {}
                }
            }
        }))
    } else {
        None
    };
    let cpu0 = (proc_cpu("/proc/self/stat"), execs.iter().map(Executor::cpu).sum::<f64>());
    let start = Instant::now();
    execute_gate(&rt).await;
    let outcome = m.wait_until_done(LIMIT).await.expect("the day settles");
    let elapsed = start.elapsed();
    let cpu_manager = proc_cpu("/proc/self/stat") - cpu0.0;
    let cpu_executors = execs.iter().map(Executor::cpu).sum::<f64>() - cpu0.1;
    rt.shutdown().await.expect("shutdown");
    if let Some(w) = watcher {
        w.abort();
    }
    drop(execs);
    let succeeded = std::mem::take(&mut *succeeded.lock().unwrap_or_else(PoisonError::into_inner));
    Run { elapsed, outcome, succeeded, cpu_manager, cpu_executors }
}

/// Executes the gate task, waiting (bounded) until it is registered.
async fn execute_gate(rt: &Runtime) {
    let deadline = Instant::now() + JOIN_LIMIT;
    loop {
        let cmd = Action {
            actor: "bench".into(),
            from: "cluster_w123".into(),
            reason: "start the workload".into(),
            action: OperatorAction::Execute,
            target: Target { task: TaskId::new(GATE), shard: None },
        };
        match rt.handle().act(cmd).await {
            Ok(_) => return,
            Err(ActionError::Refused(CommandError::NotRegistered(_)))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("cannot execute the gate: {e}"),
        }
    }
}

fn gated(w: Workload) -> Arc<Flow> {
    flow(&format!("{}{}", task(GATE, &[], "trigger = \"manual\""), w.tasks(Some(GATE))))
}

fn completed(run: &Run, shards: u64) {
    let DayOutcome::Completed(board) = &run.outcome else {
        panic!("the day did not complete: {:?}", run.outcome.board().tasks.first())
    };
    let total: u64 = board.tasks.iter().map(|t| u64::from(t.counts.total())).sum();
    assert_eq!(total, shards + 1, "shard count (workload + gate)");
    assert!(board.tasks.iter().all(|t| t.status == TaskStatus::Succeeded));
    let execs: Vec<&str> = board.executors.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(execs.len(), EXECUTORS, "executors on the board: {execs:?}");
}

/// CPU use during the timed part: share of one core, and CPU µs per shard (robust to the
/// machine's other load, which only lowers the shares).
fn cpu_line(run: &Run, shards: u64) -> String {
    let wall = run.elapsed.as_secs_f64();
    let per = |cpu: f64| cpu * 1e6 / shards as f64;
    format!(
        "CPU: manager {:.0} % = {:.1} µs/shard, executors {:.0} % = {:.1} µs/shard",
        run.cpu_manager / wall * 100.0,
        per(run.cpu_manager),
        run.cpu_executors / wall * 100.0,
        per(run.cpu_executors)
    )
}

/// Runs a throughput workload `reps` times after a warm-up (per variant, interleaved); best
/// and median shards/s of each.
async fn throughput(w: Workload, s: &Settings, bin: &PathBuf) {
    let (name, shards) = (w.label(), w.shards());
    let f = gated(w);
    let vs = variants(s);
    for &v in &vs {
        completed(&run_day(f.clone(), s, bin, false, v).await, shards);
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); vs.len()];
    for _ in 0..s.reps {
        for (i, &v) in vs.iter().enumerate() {
            let run = run_day(f.clone(), s, bin, false, v).await;
            completed(&run, shards);
            let rate = shards as f64 / run.elapsed.as_secs_f64();
            println!(
                "  {name}{}: {shards} shards in {:>8.1} ms = {rate:>9.0} shards/s ({}; load {})",
                variant_label(v),
                ms(run.elapsed),
                cpu_line(&run, shards),
                load_average()
            );
            rates[i].push(rate);
        }
    }
    for (i, &v) in vs.iter().enumerate() {
        let (best, median) = best_median(&mut rates[i]);
        println!(
            "{name}{}: best {best:.0} shards/s, median {median:.0} shards/s (target ≥ 30,000)",
            variant_label(v)
        );
    }
    println!();
}

/// W2: hop = interval between consecutive chain tasks' durable `succeeded` notices.
async fn w2(s: &Settings, bin: &PathBuf) {
    let f = gated(Workload::W2);
    println!("{}", Workload::W2.label());
    let vs = variants(s);
    for &v in &vs {
        completed(&run_day(f.clone(), s, bin, true, v).await, W2_HOPS as u64);
    }
    let mut reps: Vec<Vec<(Duration, Duration, Duration, Duration)>> = vec![Vec::new(); vs.len()];
    for rep in 0..s.reps.max(1) {
        for (i, &v) in vs.iter().enumerate() {
            let run = run_day(f.clone(), s, bin, true, v).await;
            completed(&run, W2_HOPS as u64);
            let at = |i: usize| {
                *run.succeeded
                    .get(&w2_task(i))
                    .unwrap_or_else(|| panic!("no notice for {}", w2_task(i)))
            };
            let mut hops: Vec<Duration> = (1..W2_HOPS).map(|i| at(i) - at(i - 1)).collect();
            let chain = at(W2_HOPS - 1) - at(0);
            hops.sort();
            let p = |q: f64| quantile(&hops, q);
            println!(
                "  rep {}{}: hop p50 {:>6.0} µs, p90 {:>6.0} µs, p99 {:>6.0} µs, max {:>6.0} µs; \
                 first → last success {:.1} ms ({:.0} µs/hop); gate → done {:.1} ms ({}; load {})",
                rep + 1,
                variant_label(v),
                us(p(0.5)),
                us(p(0.9)),
                us(p(0.99)),
                us(hops[hops.len() - 1]),
                ms(chain),
                us(chain) / (W2_HOPS - 1) as f64,
                ms(run.elapsed),
                cpu_line(&run, W2_HOPS as u64),
                load_average()
            );
            reps[i].push((p(0.5), p(0.9), p(0.99), chain / (W2_HOPS as u32 - 1)));
        }
    }
    for (i, &v) in vs.iter().enumerate() {
        let r = &mut reps[i];
        r.sort();
        let (p50, p90, p99, mean) = r[r.len() / 2];
        println!(
            "W2{} (median rep): p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, mean {:.0} µs/hop \
             (target p50 ≤ 500 µs)",
            variant_label(v),
            us(p50),
            us(p90),
            us(p99),
            us(mean)
        );
    }
    println!();
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) do nothing.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster_w123: run with `cargo bench -p taskflow-benches --bench cluster_w123`");
        return;
    }
    let bin = binary();
    if !bin.is_file() {
        eprintln!(
            "cluster_w123: the executor binary {} is missing. Build it first:\n    \
             cargo build --release -p taskflow-server\n(or point TASKFLOW_BIN at a taskflow \
             binary)",
            bin.display()
        );
        std::process::exit(2);
    }
    let s = Settings {
        slots: env_num("TF_SLOTS", 64),
        reps: env_num("TF_REPS", 3),
        workers: env_num("TF_WORKERS", 2),
        acks: std::env::var("TF_ACKS")
            .ok()
            .map(|v| {
                v.split(',')
                    .filter(|x| !x.trim().is_empty())
                    .map(|x| {
                        x.trim().parse().unwrap_or_else(|_| panic!("TF_ACKS: {x:?} is not a K"))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or("?".into(), |e| format!("{:.0} min ago", e.as_secs_f64() / 60.0));
    println!(
        "\n== taskflow manager in this process + {EXECUTORS} executor processes ({}, built \
         {built}), loopback, persistence ON: slots {} per executor, tokio workers {}, {} reps; \
         load {} ==\n",
        bin.display(),
        s.slots,
        s.workers,
        s.reps,
        load_average()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        for (w, name) in [(Workload::W1a, "w1a"), (Workload::W1b, "w1b")] {
            if selected(name) {
                throughput(w, &s, &bin).await;
            }
        }
        if selected("w2") {
            w2(&s, &bin).await;
        }
        if selected("w3") {
            throughput(Workload::W3, &s, &bin).await;
        }
    });
}
