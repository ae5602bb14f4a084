//! The actor runtime end to end, in one process, persistence ON (issue 3's W1–W3 and the
//! manager's memory per shard).
//!
//! Run: `cargo bench -p taskflow-benches --bench runtime_w123`
//!
//! Every workload starts a fresh [`Runtime`] on a temp directory on the machine's disk (real
//! journal, group commit + fdatasync, default [`JournalOptions`]), runs one business day to
//! completion and shuts down. Timings are end to end: from the `Runtime::start` call (journal
//! open included) to `wait_until_done` returning a completed day, whose board is released only
//! once every event is durable.
//!
//! The workloads are defined once in the benches crate ([`Workload`], shared with
//! `cluster_w123`); every task is the built-in `noop` behavior, here [`taskflow_benches::BenchNoop`]
//! (the same split and step, plus a record of when the step ran).
//!
//! - **W1a** one task with 10,000 no-op shards (`shard_by = "behavior"`, `noop` splits into
//!   `shards` keys); **W1b** 10,000 independent one-shard tasks.
//! - **W2** a chain of 1,000 dependent one-shard tasks: per-hop latency, see [`w2`].
//! - **W3** fan-out 1 → 5,000 → 1.
//! - **Memory**: heap (counting allocator) and RSS growth of the process when a task of
//!   1,000,000 shards is registered (manual trigger, so nothing runs).
//!
//! Settings come from the environment: `TF_EXECUTORS` (default 1), `TF_SLOTS` (slots per
//! executor, default 128), `TF_REPS` (repetitions of W1/W3, default 3), `TF_WORKERS` (tokio
//! worker threads, default 2 = the machine's vCPUs), `TF_ONLY` (comma list of
//! `w1a,w1b,w2,w3,mem`).

use std::alloc::System;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use taskflow_benches::{
    Timings, W2_HOPS, Workload, bench_registry, best_median, date, env_num, flow, ms, quantile,
    selected, task, us, w2_task,
};
use taskflow_core::flow::Flow;
use taskflow_core::state::TaskStatus;
use taskflow_core::{DayOutcome, JournalOptions, Runtime, RuntimeOptions};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const LIMIT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy)]
struct Settings {
    executors: usize,
    slots: u32,
    reps: usize,
    workers: usize,
}

struct Run {
    elapsed: Duration,
    outcome: DayOutcome,
}

async fn run_day(flow: Arc<Flow>, s: Settings, timings: &Timings) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = bench_registry(timings);
    let opts = RuntimeOptions {
        data_dir: dir.path().to_path_buf(),
        date: Some(date()),
        executors: s.executors,
        slots_per_executor: s.slots,
        journal: JournalOptions::default(),
        ..RuntimeOptions::default()
    };
    let start = Instant::now();
    let (rt, m) = Runtime::start(flow, registry, opts).await.expect("runtime starts");
    let outcome = m.wait_until_done(LIMIT).await.expect("the day settles");
    let elapsed = start.elapsed();
    rt.shutdown().await.expect("shutdown");
    Run { elapsed, outcome }
}

fn completed(run: &Run, shards: u64) {
    let DayOutcome::Completed(board) = &run.outcome else {
        panic!("the day did not complete: {:?}", run.outcome.board().tasks.first())
    };
    let total: u64 = board.tasks.iter().map(|t| u64::from(t.counts.total())).sum();
    assert_eq!(total, shards, "shard count");
    assert!(board.tasks.iter().all(|t| t.status == TaskStatus::Succeeded));
}

/// Runs a throughput workload `reps` times; prints best and median shards/s.
async fn throughput(w: Workload, s: Settings) -> (f64, f64) {
    let (name, shards) = (w.label(), w.shards());
    let t = Instant::now();
    let flow = flow(&w.tasks(None));
    println!("  ({name}: flow parsed in {:.0} ms, not counted)", ms(t.elapsed()));
    let none = Timings::default();
    let mut rates = Vec::new();
    // Warm-up (first journal, thread pools, page cache), not counted.
    completed(&run_day(flow.clone(), s, &none).await, shards);
    for _ in 0..s.reps {
        let run = run_day(flow.clone(), s, &none).await;
        completed(&run, shards);
        let rate = shards as f64 / run.elapsed.as_secs_f64();
        println!("  {name}: {shards} shards in {:>8.1} ms = {rate:>9.0} shards/s", ms(run.elapsed));
        rates.push(rate);
    }
    let (best, median) = best_median(&mut rates);
    println!("{name}: best {best:.0} shards/s, median {median:.0} shards/s (target ≥ 100,000)\n");
    (best, median)
}

/// W2: a chain of 1,000 one-shard tasks.
///
/// What is measured, per hop i → i+1: from the instant task i's only step *returned* (taken
/// inside the behavior) to the instant task i+1's step *started* (likewise), both with
/// `Instant` (ns resolution). The board's and the notices' timestamps are whole milliseconds,
/// and notices are released only when their batch is durable — a predecessor's success and its
/// successor's dispatch are in the same batch by design — so they cannot resolve a sub-ms hop
/// honestly. The hop measured here is an upper bound on "dependency done → next running":
/// it also contains the predecessor's checkpoint (durable before the shard may report), its
/// completion report, the manager's batch (success + successor registration + ready +
/// dispatch, one fdatasync), the assignment's trip to a slot and the start of its thread.
async fn w2(s: Settings) {
    const N: usize = W2_HOPS;
    let f = flow(&Workload::W2.tasks(None));
    println!("W2: chain of {N} one-shard tasks");
    let mut all_p50 = Vec::new();
    for rep in 0..s.reps.max(1) {
        let timings = Timings::default();
        let run = run_day(f.clone(), s, &timings).await;
        completed(&run, N as u64);
        let rows = timings.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(rows.len(), N, "every task ran once");
        let by_task: HashMap<String, (Instant, Instant)> =
            rows.into_iter().map(|(t, a, b)| (t, (a, b))).collect();
        let at = |i: usize| by_task[&w2_task(i)];
        let mut hops: Vec<Duration> = (1..N).map(|i| at(i).0 - at(i - 1).1).collect();
        let chain = at(N - 1).1 - at(0).0;
        hops.sort();
        let p = |q: f64| quantile(&hops, q);
        println!(
            "  rep {}: hop p50 {:>6.0} µs, p90 {:>6.0} µs, p99 {:>6.0} µs, max {:>6.0} µs; \
             first step → last step {:.1} ms ({:.0} µs/hop); start → done {:.1} ms",
            rep + 1,
            us(p(0.5)),
            us(p(0.9)),
            us(p(0.99)),
            us(hops[hops.len() - 1]),
            ms(chain),
            us(chain) / (N - 1) as f64,
            ms(run.elapsed),
        );
        all_p50.push((p(0.5), p(0.9), p(0.99)));
    }
    all_p50.sort();
    let (p50, p90, p99) = all_p50[all_p50.len() / 2];
    println!(
        "W2 (median rep): p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs (target p50 ≤ 250 µs)\n",
        us(p50),
        us(p90),
        us(p99)
    );
}

/// Registers one task of 1,000,000 shards (manual trigger: registered, nothing runs) and
/// counts what the process keeps for it.
async fn memory(s: Settings) {
    const N: u64 = 1_000_000;
    let f = flow(&task(
        "big",
        &[],
        &format!("trigger = \"manual\"\nshard_by = \"behavior\"\nparams = {{ shards = \"{N}\" }}"),
    ));
    let empty = flow(&task("big", &[], "trigger = \"manual\""));
    let none = Timings::default();
    // The same runtime with a one-shard task, to subtract what is not per shard.
    let measure = |f: Arc<Flow>| {
        let none = none.clone();
        async move {
            let dir = tempfile::tempdir().expect("temp dir");
            let registry = bench_registry(&none);
            let opts = RuntimeOptions {
                data_dir: dir.path().to_path_buf(),
                date: Some(date()),
                executors: s.executors,
                slots_per_executor: s.slots,
                ..RuntimeOptions::default()
            };
            let rss0 = rss_kib();
            let region = Region::new(GLOBAL);
            let start = Instant::now();
            let (rt, m) = Runtime::start(f, registry, opts).await.expect("runtime starts");
            let outcome = m.wait_until_done(LIMIT).await.expect("the day settles");
            let elapsed = start.elapsed();
            let DayOutcome::Stalled(board) = &outcome else { panic!("the manual task must wait") };
            let shards = board.task("big").expect("task").counts.total();
            drop(outcome);
            // Let the snapshot thread and the notifier settle before counting.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let heap = net_bytes(&region);
            let rss = rss_kib() - rss0;
            rt.shutdown().await.expect("shutdown");
            (shards, heap, rss, elapsed)
        }
    };
    let (one, heap1, rss1, _) = measure(empty).await;
    assert_eq!(one, 1);
    let (shards, heap, rss, elapsed) = measure(f).await;
    assert_eq!(u64::from(shards), N);
    let per = |b: i64| b as f64 / N as f64;
    println!("Memory: one task of {N} shards registered (manual trigger, nothing runs)");
    println!("  start → registered and stalled: {:.0} ms", ms(elapsed));
    println!(
        "  heap kept by the process: {:.1} MiB = {:.1} B/shard (runtime with 1 shard: {:.2} MiB)",
        (heap - heap1) as f64 / 1048576.0,
        per(heap - heap1),
        heap1 as f64 / 1048576.0
    );
    println!(
        "  RSS growth: {:.1} MiB = {:.1} B/shard (1-shard runtime: {:.1} MiB)\n",
        (rss - rss1) as f64 / 1024.0,
        per((rss - rss1) * 1024),
        rss1 as f64 / 1024.0
    );
}

fn net_bytes(r: &Region<'_, System>) -> i64 {
    let s = r.change();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64
}

fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --all-targets`) do nothing.
    if !std::env::args().any(|a| a == "--bench") {
        println!("runtime_w123: run with `cargo bench -p taskflow-benches --bench runtime_w123`");
        return;
    }
    let s = Settings {
        executors: env_num("TF_EXECUTORS", 1),
        slots: env_num("TF_SLOTS", 128),
        reps: env_num("TF_REPS", 3),
        workers: env_num("TF_WORKERS", 2),
    };
    println!(
        "\n== taskflow runtime in one process, persistence ON: executors {} × slots {}, \
         tokio workers {}, {} reps ==\n",
        s.executors, s.slots, s.workers, s.reps
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        for (w, name) in [(Workload::W1a, "w1a"), (Workload::W1b, "w1b")] {
            if selected(name) {
                throughput(w, s).await;
            }
        }
        if selected("w2") {
            w2(s).await;
        }
        if selected("w3") {
            throughput(Workload::W3, s).await;
        }
        if selected("mem") {
            memory(s).await;
        }
    });
}
