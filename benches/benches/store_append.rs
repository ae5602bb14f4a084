//! Durable (fdatasync'd, power-loss safe) group-commit append throughput of the event store.
//!
//! Run: `cargo bench -p taskflow-benches --bench store_append`
//! A producer keeps handing over batches of ~80-byte events without waiting (bounded to 256k
//! events in flight); a watcher thread records every durable-watermark change. Reports events/s,
//! fsyncs/s, events per fsync and p50/p99 latency from hand-over to durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use taskflow_core::store::{Store, StoreOptions};

const BATCH: u64 = 256;
const IN_FLIGHT: u64 = 256 * 1024;
const RUN: Duration = Duration::from_secs(5);

fn main() {
    run(None);
    run(Some(300_000.0));
}

/// One run: `rate` paces the producer (events/s); `None` hands over as fast as possible.
fn run(rate: Option<f64>) {
    // On the real disk (the target dir), not a tmpfs, so fdatasync costs what it costs.
    let base =
        std::env::var("TASKFLOW_BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let store = Arc::new(store);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            // Woken by the writer's condvar on every published watermark.
            let mut marks = Vec::with_capacity(1 << 16);
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                if store.wait_durable(seen + 1, Duration::from_millis(50)).unwrap() {
                    seen = store.durable_seq();
                    marks.push((seen, Instant::now()));
                }
            }
            marks
        })
    };

    let payloads: Vec<Vec<u8>> =
        (0..BATCH).map(|i| vec![b'a' + (i % 26) as u8; 64 + (i % 37) as usize]).collect();
    let mut handovers = Vec::with_capacity(1 << 16);
    let mut next = 1u64;
    let start = Instant::now();
    let before = store.stats();
    while start.elapsed() < RUN {
        if let Some(rate) = rate {
            let due = start.elapsed().as_secs_f64() * rate;
            if (next as f64) > due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        let batch: Vec<_> = (0..BATCH).map(|i| (next + i, payloads[i as usize].clone())).collect();
        store.append(batch).unwrap();
        next += BATCH;
        handovers.push((next - 1, Instant::now()));
        if next - 1 - store.durable_seq() > IN_FLIGHT {
            store.wait_durable(next - 1 - IN_FLIGHT / 2, Duration::from_secs(30)).unwrap();
        }
    }
    assert!(store.wait_durable(next - 1, Duration::from_secs(60)).unwrap());
    let elapsed = start.elapsed().as_secs_f64();
    let stats = store.stats();
    stop.store(true, Ordering::Relaxed);
    let marks = watcher.join().unwrap();
    Arc::try_unwrap(store).unwrap().close().unwrap();

    // Latency: first watermark at or past a batch's last seq, minus its hand-over instant.
    let mut lat: Vec<Duration> = Vec::with_capacity(handovers.len());
    let mut m = 0;
    for (seq, t) in &handovers {
        while m < marks.len() && marks[m].0 < *seq {
            m += 1;
        }
        if let Some((_, at)) = marks.get(m) {
            lat.push(at.saturating_duration_since(*t));
        }
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let events = stats.events - before.events;
    let fsyncs = stats.fsyncs - before.fsyncs;
    println!(
        "store_append: durable group commit, {}-event batches, ~81 B payloads, {:.1} s",
        BATCH, elapsed
    );
    println!("  events/s         {:>12.0}", events as f64 / elapsed);
    println!("  MB/s (log bytes) {:>12.1}", (stats.bytes - before.bytes) as f64 / elapsed / 1e6);
    println!("  fsyncs/s         {:>12.1}", fsyncs as f64 / elapsed);
    println!("  events per fsync {:>12.0}", events as f64 / fsyncs.max(1) as f64);
    println!("  latency p50      {:>12.2?}", pct(0.50));
    println!("  latency p99      {:>12.2?}", pct(0.99));
    if rate.is_none() {
        println!(
            "  target 300000 events/s: {}",
            if events as f64 / elapsed >= 300_000.0 { "met" } else { "MISSED" }
        );
    }
}
