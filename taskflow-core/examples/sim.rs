//! The long runner of the deterministic simulator: many seeds on all cores, stopping at the
//! first seed that breaks an invariant and printing the line that replays it.
//!
//! ```text
//! cargo run --release -p taskflow-core --features test-util --example sim -- \
//!     [--seeds N] [--first S] [--threads T] [--example-flow]
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use taskflow_core::testing::sim::{self, SimConfig, SimFlow};

fn arg(args: &[String], name: &str) -> Option<u64> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seeds = arg(&args, "--seeds").unwrap_or(10_000);
    let first = arg(&args, "--first").unwrap_or(1);
    let threads = arg(&args, "--threads")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
    let cfg = if args.iter().any(|a| a == "--example-flow") {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fund-clearing");
        let flow = taskflow_core::flow::load_dir(dir).expect("the example flow loads");
        SimConfig {
            flow: SimFlow::Given(Arc::new(flow)),
            start_wall_ms: 1_790_773_200_000,
            ..SimConfig::default()
        }
    } else {
        SimConfig::default()
    };
    let next = Arc::new(AtomicU64::new(first));
    let stop = Arc::new(AtomicBool::new(false));
    let totals = Arc::new(Mutex::new((0u64, 0u64, 0u64, 0u64)));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (next, stop, totals, cfg) =
                (next.clone(), stop.clone(), totals.clone(), cfg.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= first + seeds {
                        break;
                    }
                    match sim::run(seed, &cfg) {
                        Ok(r) => {
                            let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
                            t.0 += 1;
                            t.1 += r.attempts;
                            t.2 += r.faults;
                            t.3 += u64::from(r.closed);
                        }
                        Err(f) => {
                            stop.store(true, Ordering::Relaxed);
                            eprintln!("{f}");
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let (runs, attempts, faults, closed) = *totals.lock().unwrap_or_else(|p| p.into_inner());
    println!(
        "{runs} seeds from {first} ({closed} days closed, the rest stalled for an operator): \
         {attempts} shard attempts, {faults} faults in {secs:.1} s on {threads} threads — \
         {:.0} attempts/min",
        attempts as f64 / secs * 60.0
    );
    if stop.load(Ordering::Relaxed) {
        std::process::exit(1);
    }
}
