//! Snapshot and recovery of a day with 1,000,000 shard states, and proof that the manager's
//! recording never pauses for a snapshot (issue 2 targets: snapshot ≤ 2 s, recovery ≤ 2 s).
//!
//! Run: `cargo bench -p taskflow-benches --bench journal_snapshot`
//!
//! The "manager" here is the bench's main thread calling `Journal::record` + `flush` in batches
//! of 1,000 events, as the manager actor does per handler. We record the slowest batch while no
//! snapshot runs and while one is being built and written on the snapshot thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use taskflow_core::model::{BusinessDate, ShardKey, TaskId};
use taskflow_core::state::{EventKind, ShardEvent};
use taskflow_core::{Journal, JournalOptions, TaskGraph};
use tokio::sync::watch;

const SHARDS: u32 = 1_000_000;
const BATCH: u32 = 1_000;

fn shard(i: u32, event: ShardEvent) -> EventKind {
    EventKind::Shard { task: TaskId::new("confirm"), shard: i, event }
}

/// Records `f(i)` for every shard in batches; returns (total time, slowest batch).
fn record_all(j: &mut Journal, f: impl Fn(u32) -> EventKind) -> (Duration, Duration) {
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    for b in 0..SHARDS / BATCH {
        let t = Instant::now();
        for i in b * BATCH..(b + 1) * BATCH {
            j.record(f(i), 0).expect("event applies");
        }
        j.flush().expect("hand-over");
        worst = worst.max(t.elapsed());
    }
    (start.elapsed(), worst)
}

fn wait_for(rx: &mut watch::Receiver<u64>, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while *rx.borrow() < seq {
        assert!(Instant::now() < deadline, "snapshot did not finish in 120 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let date = BusinessDate::from_ymd(2026, 9, 30).expect("date");
    let graph = Arc::new(TaskGraph::build([(TaskId::new("confirm"), vec![])]).expect("graph"));
    let opts = JournalOptions { snapshot_every: u64::MAX, ..JournalOptions::default() };
    let (mut j, _) = Journal::open(dir.path(), date, graph.clone(), opts.clone()).expect("open");

    j.record(EventKind::DayOpened { date, flow_digest: "bench".into() }, 0).expect("open day");
    let shards = (0..SHARDS).map(|i| ShardKey::new(format!("P{i:07}@D{:03}", i % 97))).collect();
    let t = Instant::now();
    let kind = EventKind::TaskRegistered {
        task: TaskId::new("confirm"),
        items: vec![],
        shards,
        covered_dates: vec![],
    };
    j.record(kind, 0).expect("register");
    j.record(EventKind::TaskReady { task: TaskId::new("confirm") }, 0).expect("ready");
    j.flush().expect("flush");
    println!("register 1,000,000 shards (one event):      {:>8.1} ms", ms(t.elapsed()));

    let dispatch = |i| {
        shard(
            i,
            ShardEvent::Dispatch { attempt: 1, executor: "exec-1".into(), epoch: 0, instance: 0 },
        )
    };
    let (total, worst_idle) = record_all(&mut j, dispatch);
    println!(
        "record 1,000,000 dispatches, no snapshot:   {:>8.1} ms, slowest 1,000-event batch {:.2} ms",
        ms(total),
        ms(worst_idle)
    );

    // A snapshot of the day with a million running shards, while the manager keeps recording.
    let mut snaps = j.snapshots();
    let target = j.state().last_seq();
    let t = Instant::now();
    j.request_snapshot();
    let (total, worst_during) = record_all(&mut j, |i| shard(i, ShardEvent::Succeed));
    wait_for(&mut snaps, target);
    let snapshot_time = t.elapsed();
    println!(
        "record 1,000,000 successes during snapshot: {:>8.1} ms, slowest 1,000-event batch {:.2} ms",
        ms(total),
        ms(worst_during)
    );
    println!(
        "snapshot of 1,000,000 shards (request → durable in sled): {:>8.1} ms",
        ms(snapshot_time)
    );

    // A final snapshot, then recovery from it.
    let target = j.state().last_seq();
    let t = Instant::now();
    j.request_snapshot();
    wait_for(&mut snaps, target);
    println!("second snapshot (all succeeded):             {:>8.1} ms", ms(t.elapsed()));
    let live = j.state().clone();
    j.close(Duration::from_secs(60)).expect("close");
    let size = dir_size(dir.path());

    let t = Instant::now();
    let (j, rec) = Journal::open(dir.path(), date, graph, opts).expect("reopen");
    let recovery = t.elapsed();
    assert!(*j.state() == live, "recovered state equals the live state");
    println!(
        "recovery (open + decode snapshot at seq {} + replay {} events): {:>8.1} ms",
        rec.snapshot_seq.unwrap_or(0),
        rec.replayed,
        ms(recovery)
    );
    println!("data directory size: {:.1} MiB", size as f64 / (1 << 20) as f64);
    j.close(Duration::from_secs(60)).expect("close");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn dir_size(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
