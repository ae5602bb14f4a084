//! Day after day in one process (issue 11's must-show): the cutover latency of a rolling
//! runtime and its memory over 100 consecutive days.
//!
//! Run: `cargo bench -p taskflow-benches --bench cutover_days`
//!
//! Both use [`RuntimeOptions::roll_over`] (the runtime opens the next business day by itself
//! when the open one closes) on a real journal in a temp directory (group commit + fdatasync,
//! default [`JournalOptions`]), and a test wall clock set after every date run
//! (`wall::set_test_clock`, 2026-12-31 20:00 in Shanghai), so every next day may open at once:
//! no wall-clock wait is measured. Retention is on (`retain_days` default 30): from day 31 on,
//! every cutover also removes a closed day's directory, as in production.
//!
//! - **latency** — a flow of three tasks, `open` → `big` (10,000 no-op shards) → `last`, over
//!   `TF_DAYS` days (default 101: 100 cutovers). Per cutover: from the instant day T's `last`
//!   step *returned* (inside the behavior) to the instant day T+1's `open` step *started*. It
//!   contains T's last success made durable, the day's close, the old manager's shutdown
//!   (journal closed), T+1's store created and its manager started, the bootstrap, the
//!   registration, the dispatch and the trip to a slot — an upper bound on "last task of T
//!   succeeded → first task of T+1 dispatched". Target: p99 ≤ 50 ms.
//! - **memory** — the bundled fund-clearing example (17 tasks, 35 products, 11 distributors,
//!   its 2026 calendar; manual tasks executed automatically) for `TF_MEM_DAYS` days (default
//!   100) from 2026-05-06. RSS (`/proc/self/status`) and the heap in use (counting allocator)
//!   when day 2 opens (day 1 done) and when day 101 opens (day 100 done). Target: RSS after day
//!   100 within 10 % of RSS after day 1.
//!
//! - **stores** — a diagnostic for the heap figure of *memory*: 100 day stores created,
//!   written and closed in a row, the heap in use after the first and the last.
//!
//! `TF_ONLY` (comma list of `latency,memory,stores`), `TF_SLOTS` (default 128), `TF_WORKERS` (tokio
//! worker threads, default 2).

use std::alloc::System;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use taskflow_benches::{
    Timings, bench_registry, env_num, flow, load_average, ms, quantile, selected, task,
};
use taskflow_core::behavior::BehaviorRegistry;
use taskflow_core::flow::Flow;
use taskflow_core::model::BusinessDate;
use taskflow_core::{JournalOptions, ManagerHandle, Runtime, RuntimeOptions, list_days, wall};
use taskflow_examples::fund_clearing::{self, FundOptions};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const LIMIT: Duration = Duration::from_secs(1800);

fn d(s: &str) -> BusinessDate {
    s.parse().expect("a valid date")
}

/// Starts a rolling runtime on `flow` from `first` in a fresh temp directory.
async fn rolling(
    flow: Arc<Flow>,
    registry: BehaviorRegistry,
    first: BusinessDate,
    slots: u32,
) -> (tempfile::TempDir, Runtime, ManagerHandle) {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = RuntimeOptions {
        data_dir: dir.path().to_path_buf(),
        date: Some(first),
        executors: 1,
        slots_per_executor: slots,
        auto_execute_manual: true,
        roll_over: true,
        journal: JournalOptions::default(),
        ..RuntimeOptions::default()
    };
    let (rt, m) = Runtime::start(flow, registry, opts).await.expect("runtime starts");
    (dir, rt, m)
}

/// Waits (bounded) until the open day is `target` or later; returns it.
async fn wait_open(m: &ManagerHandle, target: BusinessDate) -> BusinessDate {
    let mut days = m.day_changes();
    let open = tokio::time::timeout(LIMIT, days.wait_for(|d| *d >= target))
        .await
        .expect("the days within the bound")
        .expect("the runtime keeps running");
    *open
}

/// The `n`-th open date after `first` (`n` = 0: `first`).
fn nth_open(f: &Flow, first: BusinessDate, n: usize) -> BusinessDate {
    let policy = f.day_policy();
    (0..n).fold(first, |d, _| policy.next_open_date(d).expect("the calendar is long enough"))
}

async fn latency(slots: u32) {
    let days: usize = env_num("TF_DAYS", 101);
    let text = format!(
        "{}{}{}",
        task("open", &[], "params = { record = \"1\" }"),
        task("big", &["open".into()], "shard_by = \"behavior\"\nparams = { shards = \"10000\" }"),
        task("last", &["big".into()], "params = { record = \"1\" }"),
    );
    let f = flow(&text);
    let timings = Timings::default();
    let first = d("2026-01-05");
    println!("latency: {days} days of open → big (10,000 shards) → last, rolling, {slots} slots");
    let start = Instant::now();
    let (dir, rt, m) = rolling(f.clone(), bench_registry(&timings), first, slots).await;
    // When each next day's manager was in place (the runtime's day change), to split a gap
    // into "close + shut down + open the next store" and "bootstrap + dispatch".
    let changed = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let watcher = {
        let (changed, mut days) = (changed.clone(), m.day_changes());
        tokio::spawn(async move {
            while days.changed().await.is_ok() {
                changed.lock().unwrap_or_else(PoisonError::into_inner).push(Instant::now());
            }
        })
    };
    // Day `days` opened: days − 1 cutovers measured (its own first task runs at once).
    wait_open(&m, nth_open(&f, first, days - 1)).await;
    // Let the last day's first task start.
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let n = timings.lock().unwrap_or_else(PoisonError::into_inner).len();
            if n > 2 * (days - 1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the last day's first task runs");
    let elapsed = start.elapsed();
    rt.shutdown().await.expect("shutdown");
    let rows = timings.lock().unwrap_or_else(PoisonError::into_inner).clone();
    // Rows come in day order: open, last, open, last, …
    let mut gaps = Vec::new();
    for pair in rows.windows(2) {
        let ((a, _, a_end), (b, b_start, _)) = (&pair[0], &pair[1]);
        if a == "last" && b == "open" {
            gaps.push(*b_start - *a_end);
        }
    }
    assert_eq!(gaps.len(), days - 1, "one gap per cutover: {rows:?}");
    watcher.abort();
    let changed = changed.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let ends: Vec<Instant> = rows.iter().filter(|r| r.0 == "last").map(|r| r.2).collect();
    let starts: Vec<Instant> = rows.iter().filter(|r| r.0 == "open").skip(1).map(|r| r.1).collect();
    if changed.len() >= gaps.len() {
        let mut close: Vec<Duration> = (0..gaps.len()).map(|i| changed[i] - ends[i]).collect();
        let mut boot: Vec<Duration> = (0..gaps.len()).map(|i| starts[i] - changed[i]).collect();
        close.sort();
        boot.sort();
        println!(
            "  of which: last done → next day's manager in place p50 {:.1} / p99 {:.1} ms; \
             → its first task running p50 {:.1} / p99 {:.1} ms",
            ms(quantile(&close, 0.5)),
            ms(quantile(&close, 0.99)),
            ms(quantile(&boot, 0.5)),
            ms(quantile(&boot, 0.99)),
        );
    }
    let kept = list_days(dir.path()).expect("list").len();
    let mut sorted = gaps.clone();
    sorted.sort();
    let p = |q: f64| ms(quantile(&sorted, q));
    println!(
        "  {} cutovers in {:.1} s ({} days kept by retention): p50 {:.1} ms, p90 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms, min {:.1} ms (target p99 ≤ 50 ms)",
        gaps.len(),
        elapsed.as_secs_f64(),
        kept,
        p(0.5),
        p(0.9),
        p(0.99),
        ms(sorted[sorted.len() - 1]),
        ms(sorted[0]),
    );
    let late: Vec<String> = gaps
        .iter()
        .enumerate()
        .filter(|(_, g)| ms(**g) > 50.0)
        .map(|(i, g)| format!("#{}: {:.0} ms", i + 1, ms(*g)))
        .collect();
    println!(
        "  cutovers over 50 ms: {}",
        if late.is_empty() { "none".into() } else { late.join(", ") }
    );
    println!("  load average after: {}\n", load_average());
}

async fn memory(slots: u32) {
    let days: usize = env_num("TF_MEM_DAYS", 100);
    let f = Arc::new(fund_clearing::flow().expect("the example flow"));
    let mut registry = BehaviorRegistry::with_builtins();
    fund_clearing::register_with(&mut registry, FundOptions::for_test()).expect("behaviors");
    let first = d("2026-05-06");
    println!("memory: {days} days of the example flow, rolling, {slots} slots, from {first}");
    let region = Region::new(GLOBAL);
    let start = Instant::now();
    let (dir, rt, m) = rolling(f.clone(), registry, first, slots).await;
    let day2 = wait_open(&m, nth_open(&f, first, 1)).await;
    // The cutover's prune and the closed day's last notices settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss1, heap1) = (rss_kib(), net_bytes(&region));
    println!(
        "  after day 1 (day {day2} open): RSS {:.1} MiB, heap {:.1} MiB",
        rss1 as f64 / 1024.0,
        heap1 as f64 / 1048576.0
    );
    let mut samples = Vec::new();
    for mark in [10, 25, 50, 75, days] {
        let open = wait_open(&m, nth_open(&f, first, mark)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (rss, heap) = (rss_kib(), net_bytes(&region));
        println!(
            "  after day {mark} (day {open} open, {:.0} s): RSS {:.1} MiB ({:+.1} %), heap {:.1} MiB ({:+.1} %)",
            start.elapsed().as_secs_f64(),
            rss as f64 / 1024.0,
            (rss - rss1) as f64 * 100.0 / rss1 as f64,
            heap as f64 / 1048576.0,
            (heap - heap1) as f64 * 100.0 / heap1 as f64,
        );
        samples.push((mark, rss, heap));
    }
    let kept = list_days(dir.path()).expect("list").len();
    rt.shutdown().await.expect("shutdown");
    let (_, rss_n, _) = samples[samples.len() - 1];
    let growth = (rss_n - rss1) as f64 * 100.0 / rss1 as f64;
    println!(
        "  RSS after day {days} vs after day 1: {growth:+.1} % (target within 10 %); {kept} days \
         kept by retention; load average after: {}\n",
        load_average()
    );
}

/// Where heap growth over days could come from: `TF_STORES` (default 100) day stores created,
/// written (one event, one snapshot) and closed, one after another, as a cutover does.
fn stores() {
    let n: usize = env_num("TF_STORES", 100);
    let dir = tempfile::tempdir().expect("temp dir");
    let region = Region::new(GLOBAL);
    let mut marks = Vec::new();
    for i in 0..n {
        let day = dir.path().join(format!("d{i:04}"));
        let (store, _) = taskflow_core::store::Store::open(&day, Default::default()).expect("open");
        store.append(vec![(1, vec![7u8; 64])]).expect("append");
        store.wait_durable(1, Duration::from_secs(10)).expect("durable");
        store.write_snapshot(1, &[1u8; 4096]).expect("snapshot");
        store.close().expect("close");
        std::fs::remove_dir_all(&day).expect("remove");
        if i == 0 || i + 1 == n {
            marks.push((i + 1, net_bytes(&region), rss_kib()));
        }
    }
    let ((_, h1, r1), (_, hn, rn)) = (marks[0], marks[marks.len() - 1]);
    println!(
        "stores: {n} day stores opened, written and closed: heap in use {:.1} MiB after the \
         first, {:.1} MiB after the last ({:.1} KiB per store); RSS {:.1} → {:.1} MiB\n",
        h1 as f64 / 1048576.0,
        hn as f64 / 1048576.0,
        (hn - h1) as f64 / 1024.0 / (n - 1).max(1) as f64,
        r1 as f64 / 1024.0,
        rn as f64 / 1024.0,
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
        println!("cutover_days: run with `cargo bench -p taskflow-benches --bench cutover_days`");
        return;
    }
    let (at, speed) = wall::parse_test_clock("2026-12-31T20:00:00+08:00,1").expect("a test clock");
    wall::set_test_clock(at, speed).expect("the test clock");
    let slots = env_num("TF_SLOTS", 128);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_num("TF_WORKERS", 2))
        .enable_all()
        .build()
        .expect("tokio");
    println!("\n== taskflow day after day in one process (rolling runtime, persistence ON) ==\n");
    rt.block_on(async {
        if selected("latency") {
            latency(slots).await;
        }
        if selected("memory") {
            memory(slots).await;
        }
        if selected("stores") {
            stores();
        }
    });
}
