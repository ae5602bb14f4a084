//! Deterministic simulation of the manager core: many seeds, each a whole business day under
//! executor crashes, pauses, partitions, manager crashes and operator actions, with the
//! invariants of `taskflow_core::testing::sim` checked after every step.
//!
//! `TASKFLOW_SIM_SEEDS=N` runs N seeds (default 500); a failure prints the line that
//! replays it: `TASKFLOW_SIM_SEED=<seed> cargo test -p taskflow-core --test sim -- --exact
//! replay_one_seed --nocapture` (`TASKFLOW_SIM_TRACE=<file>` writes the whole trace).

use std::sync::Arc;
use std::time::Instant;

use taskflow_core::testing::sim::{self, SimConfig, SimFlow};

fn seeds() -> u64 {
    std::env::var("TASKFLOW_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(500)
}

fn example_flow() -> Arc<taskflow_core::flow::Flow> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fund-clearing");
    Arc::new(taskflow_core::flow::load_dir(dir).expect("the example flow loads"))
}

/// The first seed of the example flow's runs.
const EXAMPLE_SEEDS: u64 = 1_000_000;

fn example_config() -> SimConfig {
    // 21:00 in Shanghai: the example's `at 15:30` and `at 21:00` triggers are due at once.
    SimConfig {
        flow: SimFlow::Given(example_flow()),
        start_wall_ms: 1_790_773_200_000,
        ..SimConfig::default()
    }
}

fn run_many(first: u64, count: u64, cfg: &SimConfig) -> (u64, u64, u64) {
    let (mut closed, mut attempts, mut faults) = (0, 0, 0);
    for seed in first..first + count {
        match sim::run(seed, cfg) {
            Ok(r) => {
                closed += u64::from(r.closed);
                attempts += r.attempts;
                faults += r.faults;
                assert!(r.shards >= 1, "seed {seed}: no shard registered");
            }
            Err(f) => panic!("{f}"),
        }
    }
    (closed, attempts, faults)
}

/// Runs the `part`-th quarter of the random-flow seeds (four tests, so they run in parallel).
fn random_quarter(part: u64) {
    let started = Instant::now();
    let n = seeds().div_ceil(4);
    let first = 1 + part * n;
    let (closed, attempts, faults) = run_many(first, n, &SimConfig::default());
    eprintln!(
        "random-flow seeds {first}..{}: {closed} closed, {attempts} attempts, {faults} faults, {:?}",
        first + n,
        started.elapsed()
    );
}

#[test]
fn simulated_days_on_random_flows_keep_every_invariant_1() {
    random_quarter(0);
}

#[test]
fn simulated_days_on_random_flows_keep_every_invariant_2() {
    random_quarter(1);
}

#[test]
fn simulated_days_on_random_flows_keep_every_invariant_3() {
    random_quarter(2);
}

#[test]
fn simulated_days_on_random_flows_keep_every_invariant_4() {
    random_quarter(3);
}

#[test]
fn simulated_days_on_the_example_flow_keep_every_invariant() {
    let n = (seeds() / 5).max(20);
    let (closed, attempts, _) = run_many(EXAMPLE_SEEDS, n, &example_config());
    eprintln!("{n} example-flow seeds: {closed} closed, {attempts} attempts");
}

/// The simulator is honest: with the fencing check switched off it finds the bug.
#[test]
fn the_simulator_finds_a_planted_fencing_bug() {
    let cfg = SimConfig { plant_no_fencing: true, ..SimConfig::default() };
    let found = (1..=200u64).find_map(|seed| sim::run(seed, &cfg).err());
    let failure = found.expect("200 seeds without fencing broke no invariant");
    eprintln!("found: {failure}");
    assert!(failure.detail.len() > 1, "{failure}");
}

/// The resource invariant is honest: with dispatch ignoring resources it breaks.
#[test]
fn the_simulator_finds_a_planted_resource_bug() {
    let cfg = SimConfig { plant_ignore_resources: true, ..SimConfig::default() };
    let found = (1..=200u64).find_map(|seed| sim::run(seed, &cfg).err());
    let failure = found.expect("200 seeds with dispatch ignoring resources broke no invariant");
    eprintln!("found: {failure}");
    assert_eq!(failure.invariant, sim::Invariant::ResourcesKept, "{failure}");
}

/// Replays `TASKFLOW_SIM_SEED` with its trace (seed 1 without it).
#[test]
fn replay_one_seed() {
    let seed = std::env::var("TASKFLOW_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    // Seeds from 1,000,000 on are the example flow's.
    let cfg = if seed >= EXAMPLE_SEEDS { example_config() } else { SimConfig::default() };
    let cfg = SimConfig { trace: true, ..cfg };
    match sim::run(seed, &cfg) {
        Ok(r) => eprintln!("{r:?}"),
        Err(f) => {
            if let Ok(path) = std::env::var("TASKFLOW_SIM_TRACE") {
                std::fs::write(&path, f.trace.join("\n")).expect("the trace file is writable");
                eprintln!("trace written to {path}");
            }
            for line in f.trace.iter().rev().take(400).rev() {
                eprintln!("{line}");
            }
            panic!("{f}");
        }
    }
}

/// Seeds of the random flows that once broke an invariant, each pinned by a unit test of the
/// core too; they stay in every run.
const KEPT_SEEDS: &[(u64, &str)] = &[
    (
        60_793,
        "a rollback recovered in flight ran again at once while the previous manager's paused \
         executor still ran it (control::tests::a_rollback_recovered_in_flight_waits_for_the_reconcile_window)",
    ),
    (
        100,
        "a failed shard of a force-started task was never retried: the retry paths asked for \
         done dependencies (control::tests::a_failed_shard_of_a_force_started_task_is_retried_though_its_dependencies_are_not_done)",
    ),
];

#[test]
fn seeds_that_once_broke_an_invariant_keep_every_invariant() {
    for &(seed, what) in KEPT_SEEDS {
        if let Err(f) = sim::run(seed, &SimConfig::default()) {
            panic!("kept seed {seed} ({what}) fails again: {f}");
        }
    }
}
