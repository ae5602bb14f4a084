//! Shared helpers for the taskflow benchmarks: the W1a/W1b/W2/W3 workloads (one definition
//! for the in-process bench `runtime_w123` and the executor-process bench `cluster_w123`), the
//! bench behavior, the flow builder and small statistics.
//!
//! Every workload task uses the built-in `noop` behavior (one step, one debug log line), which
//! splits into `shards` shards when its params say so — so the same flow runs on executor
//! processes of the shipped `taskflow` binary. In-process, [`bench_registry`] registers
//! [`BenchNoop`] under the same name: the same split and step, plus a record of when the step
//! ran (W2's hop measurement).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use taskflow_core::behavior::{
    BehaviorError, BehaviorRegistry, NoopBehavior, ShardContext, ShardPlan, SplitContext,
    TaskBehavior,
};
use taskflow_core::flow::Flow;
use taskflow_core::model::BusinessDate;

/// The reference data of every bench flow: one product, one distributor.
pub const PRODUCTS: &str = r#"
[[product]]
code = "F1"
name = "fund one"
mode = "open-nav"
lifecycle = "open"
distributors = ["D1"]
"#;

/// See [`PRODUCTS`].
pub const DISTRIBUTORS: &str = r#"
[[distributor]]
code = "D1"
name = "direct"
type = "direct"
"#;

/// Every day of 2026 is a business day.
pub const CALENDAR: &str = r#"
[calendar]
from = 2026-01-01
to = 2026-12-31
"#;

/// The behavior every workload task uses.
pub const BEHAVIOR: &str = NoopBehavior::NAME;

/// A business day of the calendar above (a Tuesday).
pub fn date() -> BusinessDate {
    BusinessDate::from_ymd(2026, 11, 24).expect("valid date")
}

/// One `[[task]]` of a bench flow, with the bench behavior.
pub fn task(id: &str, deps: &[String], extra: &str) -> String {
    let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "[[task]]\nid = \"{id}\"\nname = \"{id}\"\nlevel = \"system\"\nbehavior = \"{BEHAVIOR}\"\n\
         depends_on = [{}]\n{extra}\n\n",
        deps.join(", ")
    )
}

/// A flow of `tasks` (TOML `[[task]]` tables) over the reference data above.
pub fn flow(tasks: &str) -> Arc<Flow> {
    let text = format!("[flow]\nname = \"bench\"\ntime_zone = \"Asia/Shanghai\"\n\n{tasks}");
    Arc::new(Flow::from_strs(&text, PRODUCTS, DISTRIBUTORS, CALENDAR).expect("valid bench flow"))
}

/// The scheduler workloads (the same for taskflow and the peers in `benches/peers/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// One task with 10,000 no-op shards.
    W1a,
    /// 10,000 independent one-shard tasks.
    W1b,
    /// A chain of 1,000 dependent one-shard tasks (each records its step's timing).
    W2,
    /// Fan-out 1 → 5,000 → 1.
    W3,
}

/// The number of hops of W2.
pub const W2_HOPS: usize = 1_000;

impl Workload {
    /// Its name in the bench output.
    pub fn label(self) -> &'static str {
        match self {
            Workload::W1a => "W1a one task × 10,000 shards",
            Workload::W1b => "W1b 10,000 one-shard tasks",
            Workload::W2 => "W2 chain of 1,000 one-shard tasks",
            Workload::W3 => "W3 fan-out 1 → 5,000 → 1",
        }
    }

    /// How many shards a day of it runs.
    pub fn shards(self) -> u64 {
        match self {
            Workload::W1a | Workload::W1b => 10_000,
            Workload::W2 => W2_HOPS as u64,
            Workload::W3 => 5_002,
        }
    }

    /// Its tasks. With `after`, every task without a dependency depends on that task instead
    /// (a start gate: the cluster bench starts the clock when it executes the gate, once
    /// every executor process has joined).
    pub fn tasks(self, after: Option<&str>) -> String {
        let root = |deps: Vec<String>| -> Vec<String> {
            if deps.is_empty() {
                after.map(|a| vec![a.to_owned()]).unwrap_or_default()
            } else {
                deps
            }
        };
        match self {
            Workload::W1a => task(
                "one",
                &root(vec![]),
                "shard_by = \"behavior\"\nparams = { shards = \"10000\" }",
            ),
            Workload::W1b => {
                let mut text = String::new();
                for i in 0..10_000 {
                    text.push_str(&task(&format!("t{i:05}"), &root(vec![]), ""));
                }
                text
            }
            Workload::W2 => {
                let mut text = String::new();
                for i in 0..W2_HOPS {
                    let deps = if i == 0 { vec![] } else { vec![w2_task(i - 1)] };
                    text.push_str(&task(&w2_task(i), &root(deps), "params = { record = \"1\" }"));
                }
                text
            }
            Workload::W3 => format!(
                "{}{}{}",
                task("root", &root(vec![]), ""),
                task(
                    "fan",
                    &["root".into()],
                    "shard_by = \"behavior\"\nparams = { shards = \"5000\" }"
                ),
                task("sink", &["fan".into()], ""),
            ),
        }
    }
}

/// The id of W2's task `i`.
pub fn w2_task(i: usize) -> String {
    format!("c{i:04}")
}

/// When each shard's (single) step started and ended, by task id; only for tasks with
/// `record = "1"`.
pub type Timings = Arc<Mutex<Vec<(String, Instant, Instant)>>>;

/// The in-process bench behavior: the built-in `noop` (same split, same step with its debug
/// log line) plus a record of when the step ran, for tasks with `record = "1"`.
pub struct BenchNoop {
    /// Where the records go.
    pub timings: Timings,
}

impl TaskBehavior for BenchNoop {
    fn split(&self, ctx: &SplitContext) -> Result<Vec<ShardPlan>, BehaviorError> {
        NoopBehavior.split(ctx)
    }

    fn steps(&self) -> &[&str] {
        &["noop"]
    }

    async fn run_step(&self, ctx: &mut ShardContext, _step: usize) -> Result<(), BehaviorError> {
        let start = Instant::now();
        ctx.debug("nothing to do");
        if ctx.params().get("record").is_some() {
            let end = Instant::now();
            let task = ctx.task().as_str().to_owned();
            self.timings.lock().unwrap_or_else(PoisonError::into_inner).push((task, start, end));
        }
        Ok(())
    }
}

/// A registry where [`BEHAVIOR`] is [`BenchNoop`] recording into `timings`.
pub fn bench_registry(timings: &Timings) -> BehaviorRegistry {
    let mut registry = BehaviorRegistry::new();
    let t = timings.clone();
    registry.register(BEHAVIOR, move || BenchNoop { timings: t.clone() }).expect("register");
    registry
}

/// A number from the environment, or `default`.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Whether workload `w` is selected by `TF_ONLY` (a comma list; empty: all).
pub fn selected(w: &str) -> bool {
    let only = std::env::var("TF_ONLY").unwrap_or_default();
    only.is_empty() || only.split(',').any(|o| o.trim() == w)
}

/// The `q` quantile (0..=1, nearest rank) of sorted samples.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Best and median of rates (higher is better).
pub fn best_median(rates: &mut [f64]) -> (f64, f64) {
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() - 1], rates[rates.len() / 2])
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Microseconds.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The machine's load averages (1, 5, 15 min) from `/proc/loadavg`, for the bench output.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
