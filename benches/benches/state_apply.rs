//! Day-state benchmarks: apply throughput, memory per shard record, snapshot encode/decode.
//!
//! Run: `cargo bench -p taskflow-benches --bench state_apply`
//!
//! First prints the headline figures for one task of 1,000,000 shards driven through
//! ready → dispatch → succeed (3,000,000 single-shard events), measured directly: apply
//! throughput on one core, heap bytes per shard counted by a global allocator, and snapshot
//! size and encode/decode time. Then criterion measures the same operations with statistics.

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use taskflow_core::TaskGraph;
use taskflow_core::model::{BusinessDate, ScopeItem, ShardKey, TaskId};
use taskflow_core::state::{DayEvent, DayState, EventKind, ShardEvent};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SHARDS: u32 = 1_000_000;
/// Events are built in chunks so that 3 million of them never sit in memory at once.
const CHUNK: u32 = 100_000;

fn graph() -> Arc<TaskGraph> {
    let nodes = [(TaskId::new("confirm_trades"), vec![])];
    Arc::new(TaskGraph::build(nodes).expect("valid graph"))
}

fn date() -> BusinessDate {
    BusinessDate::from_ymd(2026, 11, 24).expect("valid date")
}

fn task() -> TaskId {
    TaskId::new("confirm_trades")
}

/// A realistic registration: product × distributor pairs, keys like `P012345@D17`.
fn registration(n: u32) -> EventKind {
    let items: Vec<ScopeItem> = (0..n)
        .map(|i| ScopeItem::pair(format!("P{:06}", i / 100), format!("D{:02}", i % 100)))
        .collect();
    let shards: Vec<ShardKey> = items.iter().map(ScopeItem::key).collect();
    EventKind::TaskRegistered { task: task(), items, shards, covered_dates: vec![date().date()] }
}

fn apply(st: &mut DayState, kind: EventKind) {
    let seq = st.last_seq() + 1;
    st.apply(&DayEvent { seq, at_ms: 1_764_000_000_000 + seq as i64, kind }).expect("legal event");
}

fn opened_day() -> DayState {
    let mut st = DayState::new(date(), graph());
    apply(&mut st, EventKind::DayOpened { date: date(), flow_digest: "sha256:bench".into() });
    st
}

/// The events driving shards `from..to` through ready, dispatch and succeed.
fn chunk_events(first_seq: u64, from: u32, to: u32) -> Vec<DayEvent> {
    let mut out = Vec::with_capacity(3 * (to - from) as usize);
    let mut seq = first_seq;
    let mut push = |event: ShardEvent, shard: u32| {
        out.push(DayEvent {
            seq,
            at_ms: 1_764_000_000_000 + seq as i64,
            kind: EventKind::Shard { task: task(), shard, event },
        });
        seq += 1;
    };
    for shard in from..to {
        push(ShardEvent::Ready, shard);
    }
    for shard in from..to {
        let executor = format!("exec-{}", shard % 16);
        push(ShardEvent::Dispatch { attempt: 1, executor, epoch: 0, instance: 0 }, shard);
    }
    for shard in from..to {
        push(ShardEvent::Succeed, shard);
    }
    out
}

/// Drives every shard to `succeeded`; returns the time spent in `apply` alone.
fn drive(st: &mut DayState, n: u32) -> Duration {
    let mut spent = Duration::ZERO;
    let mut from = 0;
    while from < n {
        let to = (from + CHUNK).min(n);
        let events = chunk_events(st.last_seq() + 1, from, to);
        let start = Instant::now();
        for e in &events {
            black_box(st.apply(e).expect("legal event"));
        }
        spent += start.elapsed();
        from = to;
    }
    spent
}

fn net_bytes(r: &Region<'_, System>) -> isize {
    let s = r.change();
    s.bytes_allocated as isize - s.bytes_deallocated as isize + s.bytes_reallocated
}

fn headline() {
    println!("\n== taskflow day state, 1 task x {SHARDS} shards ==");
    let mut st = opened_day();
    // The event is built before and dropped after the counted region: only what the state
    // keeps is counted.
    let reg =
        DayEvent { seq: st.last_seq() + 1, at_ms: 1_764_000_000_000, kind: registration(SHARDS) };
    let region = Region::new(GLOBAL);
    let start = Instant::now();
    st.apply(&reg).expect("registration applies");
    let register_time = start.elapsed();
    let registered_bytes = net_bytes(&region);

    let spent = drive(&mut st, SHARDS);
    let total_bytes = net_bytes(&region);
    drop(reg);
    let transitions = 3.0 * f64::from(SHARDS);
    println!("register {SHARDS} shards (one event):    {:>10.1} ms", ms(register_time));
    println!(
        "apply ready/dispatch/succeed:           {:>10.1} ms for {transitions} events = {:.2} M transitions/s",
        ms(spent),
        transitions / spent.as_secs_f64() / 1e6
    );
    println!(
        "heap per shard after registration:      {:>10.1} B  (record, key, scope item, counts)",
        registered_bytes as f64 / f64::from(SHARDS)
    );
    println!(
        "heap per shard after all succeeded:     {:>10.1} B  ({:.1} MiB in all)",
        total_bytes as f64 / f64::from(SHARDS),
        total_bytes as f64 / (1024.0 * 1024.0)
    );

    let mut bulk = opened_day();
    apply(&mut bulk, registration(SHARDS));
    let start = Instant::now();
    apply(&mut bulk, EventKind::TaskReady { task: task() });
    println!("task_ready (bulk, one event):           {:>10.1} ms", ms(start.elapsed()));
    drop(bulk);

    let start = Instant::now();
    let bytes = st.encode_snapshot();
    let encode = start.elapsed();
    let start = Instant::now();
    let decoded = DayState::decode_snapshot(&bytes, graph()).expect("snapshot decodes");
    let decode = start.elapsed();
    assert!(decoded == st, "snapshot round trip");
    println!(
        "snapshot: {:.1} MiB ({:.1} B/shard), encode {:.1} ms, decode {:.1} ms",
        bytes.len() as f64 / (1024.0 * 1024.0),
        bytes.len() as f64 / f64::from(SHARDS),
        ms(encode),
        ms(decode)
    );
    println!();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn benches(c: &mut Criterion) {
    headline();

    let mut g = c.benchmark_group("state_apply");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    let n = 100_000;
    g.throughput(Throughput::Elements(3 * u64::from(n)));
    g.bench_function("ready_dispatch_succeed_100k_shards", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let mut st = opened_day();
                apply(&mut st, registration(n));
                spent += drive(&mut st, n);
            }
            spent
        })
    });
    g.finish();

    let mut st = opened_day();
    apply(&mut st, registration(SHARDS));
    drive(&mut st, SHARDS);
    let bytes = st.encode_snapshot();
    let mut g = c.benchmark_group("snapshot_1m_shards");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    g.bench_function("encode", |b| b.iter(|| black_box(st.encode_snapshot())));
    g.bench_function("decode", |b| {
        b.iter(|| black_box(DayState::decode_snapshot(&bytes, graph()).expect("decodes")))
    });
    g.finish();
}

criterion_group!(state_apply, benches);
criterion_main!(state_apply);
