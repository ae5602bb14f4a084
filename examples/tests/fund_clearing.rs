//! The fund behaviors against the bundled flow, through the core's `run_shard` and
//! `run_rollback` drivers: coverage of the flow, success, determinism, injected faults,
//! cancellation and rollback.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use taskflow_core::behavior::{
    BehaviorLease, BehaviorRegistry, BoxFuture, CancelToken, Checkpoint, CheckpointError, LogLine,
    Progress, RunOptions, ShardOutcome, ShardSink, ShardSpec, run_rollback, run_shard,
};
use taskflow_core::flow::Flow;
use taskflow_core::model::BusinessDate;
use taskflow_examples::fund_clearing::{self, FundOptions, MemoryLedger};
use taskflow_examples::shards::shard_specs;
use tokio::sync::watch;
use tokio::time::timeout;

/// Every wait in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(20);

/// Driver options: no timeout, the default grace.
static OPTIONS: RunOptions = RunOptions { timeout: None, cancel_grace: Duration::from_secs(10) };

/// The last business day before the National Day holiday: money-fund income covers 8 dates.
fn holiday_eve() -> BusinessDate {
    "2026-09-30".parse().expect("valid date")
}

/// Records what a shard reported; `changed` ticks on every event so tests can wait for one.
#[derive(Default)]
struct TestSink {
    state: Mutex<Recorded>,
    changed: watch::Sender<u64>,
}

#[derive(Default, Clone)]
struct Recorded {
    started: Vec<usize>,
    checkpoints: Vec<usize>,
    progress: usize,
    logs: Vec<String>,
}

impl TestSink {
    fn new() -> Arc<Self> {
        Arc::new(TestSink::default())
    }

    fn recorded(&self) -> Recorded {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Recorded)) {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.send_modify(|n| *n += 1);
    }

    fn has_log(&self, needle: &str) -> bool {
        self.recorded().logs.iter().any(|l| l.contains(needle))
    }

    /// Waits (bounded by [`LIMIT`]) until a log line containing `needle` arrives.
    async fn wait_for_log(&self, needle: &str) {
        let mut rx = self.changed.subscribe();
        timeout(LIMIT, rx.wait_for(|_| self.has_log(needle)))
            .await
            .unwrap_or_else(|_| panic!("no log line containing `{needle}` within {LIMIT:?}"))
            .expect("sender lives as long as the sink");
    }
}

impl ShardSink for TestSink {
    fn step_started(&self, step: usize, _name: &str) {
        self.update(|r| r.started.push(step));
    }

    fn checkpoint(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<(), CheckpointError>> {
        self.update(|r| r.checkpoints.push(checkpoint.step));
        Box::pin(async { Ok(()) })
    }

    fn progress(&self, _progress: Progress) {
        self.update(|r| r.progress += 1);
    }

    fn log(&self, line: LogLine) {
        self.update(|r| r.logs.push(line.message));
    }
}

struct Fixture {
    flow: Flow,
    registry: BehaviorRegistry,
    ledger: Arc<MemoryLedger>,
}

fn fixture(options: FundOptions) -> Fixture {
    let ledger = Arc::new(MemoryLedger::new());
    let mut registry = BehaviorRegistry::with_builtins();
    fund_clearing::register_with(&mut registry, options.with_ledger(ledger.clone()))
        .expect("fund behaviors register");
    Fixture { flow: fund_clearing::flow().expect("bundled flow loads"), registry, ledger }
}

impl Fixture {
    fn behavior(&self, task: &str) -> BehaviorLease {
        let def = self.flow.task_by_id(task).expect("task exists");
        self.registry.acquire(&def.behavior).expect("behavior registered")
    }

    fn specs(&self, task: &str, date: BusinessDate) -> Vec<ShardSpec> {
        shard_specs(&self.flow, task, date, &self.registry).expect("task registers")
    }

    fn spec(&self, task: &str, shard: &str) -> ShardSpec {
        self.specs(task, holiday_eve())
            .into_iter()
            .find(|s| s.shard.as_str() == shard)
            .unwrap_or_else(|| panic!("{task} has no shard {shard}"))
    }

    async fn run(&self, spec: ShardSpec, sink: Arc<TestSink>) -> ShardOutcome {
        let behavior = self.behavior(spec.task.as_str());
        let run = run_shard(&*behavior, spec, CancelToken::new(), sink, &OPTIONS);
        timeout(LIMIT, run).await.expect("shard finishes in time")
    }

    /// Runs every shard of `task` on `date`, returning each shard's log.
    async fn run_task(&self, task: &str, date: BusinessDate) -> Vec<(String, Vec<String>)> {
        let mut logs = Vec::new();
        for spec in self.specs(task, date) {
            let shard = spec.shard.to_string();
            let steps = self.behavior(task).steps().len();
            let sink = TestSink::new();
            let outcome = self.run(spec, sink.clone()).await;
            assert_eq!(outcome, ShardOutcome::Succeeded, "{task}/{shard}");
            let recorded = sink.recorded();
            assert_eq!(recorded.checkpoints, (0..steps).collect::<Vec<_>>(), "{task}/{shard}");
            if self.behavior(task).name().starts_with("fund.") {
                assert!(recorded.progress >= steps, "{task}/{shard} reports progress");
            }
            logs.push((shard, recorded.logs));
        }
        logs
    }
}

#[test]
fn every_fund_behavior_of_the_flow_is_registered_and_none_is_extra() {
    let fx = fixture(FundOptions::for_test());
    let named: BTreeSet<&str> = fx.flow.tasks().iter().map(|t| t.behavior.as_str()).collect();
    for name in &named {
        assert!(fx.registry.contains(name), "flow names `{name}` but nothing registers it");
    }
    let in_flow: BTreeSet<&str> =
        named.iter().copied().filter(|n| n.starts_with("fund.")).collect();
    let provided: BTreeSet<&str> = fund_clearing::behavior_names().into_iter().collect();
    assert_eq!(in_flow, provided, "fund behaviors and flow.toml have drifted apart");
}

#[tokio::test]
async fn every_task_of_the_flow_runs_to_success() {
    let fx = fixture(FundOptions::for_test());
    let tasks: Vec<String> = fx.flow.tasks().iter().map(|t| t.id.to_string()).collect();
    for task in tasks {
        let logs = fx.run_task(&task, holiday_eve()).await;
        assert!(!logs.is_empty(), "{task} has shards on {}", holiday_eve());
        if fx.flow.task_by_id(&task).is_some_and(|t| t.behavior.starts_with("fund.")) {
            for (shard, lines) in &logs {
                assert!((2..=12).contains(&lines.len()), "{task}/{shard}: {lines:?}");
            }
        }
    }
}

#[tokio::test]
async fn same_inputs_give_the_same_log_and_postings() {
    let (a, b) = (fixture(FundOptions::for_test()), fixture(FundOptions::for_test()));
    for task in ["import_applications", "confirm_trades", "money_fund_income", "clearing"] {
        let first = a.run_task(task, holiday_eve()).await;
        let second = b.run_task(task, holiday_eve()).await;
        assert_eq!(first, second, "{task}");
    }
    assert!(!a.ledger.entries().is_empty());
    assert_eq!(a.ledger.entries(), b.ledger.entries());

    // Another date, other figures.
    let c = fixture(FundOptions::for_test());
    c.run_task("confirm_trades", "2026-09-29".parse().expect("date")).await;
    let amounts = |l: &MemoryLedger| l.entries().into_values().collect::<Vec<_>>();
    let confirmed: Vec<i64> = a
        .ledger
        .entries()
        .into_iter()
        .filter(|(k, _)| k.contains("/confirm_trades/"))
        .map(|(_, v)| v)
        .collect();
    assert_ne!(amounts(&c.ledger), confirmed);
}

#[tokio::test]
async fn money_fund_income_accrues_once_per_covered_date() {
    let fx = fixture(FundOptions::for_test());
    let spec = fx.spec("money_fund_income", "520001");
    assert_eq!(spec.covered_dates.len(), 8, "2026-09-30 plus the National Day holiday");
    assert_eq!(fx.run(spec, TestSink::new()).await, ShardOutcome::Succeeded);
    let accruals: Vec<String> = fx.ledger.entries().into_keys().collect();
    assert_eq!(accruals.len(), 8, "{accruals:?}");
    assert!(accruals[0].ends_with("/income/2026-09-30") && accruals[7].ends_with("/2026-10-07"));
}

#[tokio::test]
async fn injected_failure_then_retry_resumes_after_the_last_checkpoint() {
    let options = FundOptions::for_test()
        .with_failures("confirm_trades:510002@confirm:1")
        .expect("valid spec");
    let fx = fixture(options);
    let first = fx.spec("confirm_trades", "510002");

    let sink = TestSink::new();
    let outcome = fx.run(first.clone(), sink.clone()).await;
    let ShardOutcome::Failed { reason } = outcome else { panic!("expected a failure") };
    assert!(reason.contains("injected failure at confirm on attempt 1"), "{reason}");
    assert_eq!(sink.recorded().checkpoints, vec![0, 1]);
    assert!(fx.ledger.entries().is_empty(), "nothing posted by the failed step");

    // The runtime retries from the checkpoint: attempt 2, two steps done.
    let retry = ShardSpec { attempt: 2, completed_steps: 2, ..first };
    let sink = TestSink::new();
    assert_eq!(fx.run(retry.clone(), sink.clone()).await, ShardOutcome::Succeeded);
    assert_eq!(sink.recorded().started, vec![2, 3], "only the steps after the checkpoint");
    assert_eq!(fx.ledger.entries().len(), 2, "purchases and redemptions");

    // A step re-run after a lost checkpoint does not post twice.
    let before = fx.ledger.entries();
    assert_eq!(
        fx.run(ShardSpec { attempt: 3, ..retry }, TestSink::new()).await,
        ShardOutcome::Succeeded
    );
    assert_eq!(fx.ledger.entries(), before);
    assert_eq!(fx.ledger.duplicates(), 2);
}

#[tokio::test]
async fn wildcard_failures_fail_every_shard_for_n_attempts() {
    let fx = fixture(FundOptions::for_test().with_failures("clearing:*:2").expect("valid spec"));
    for spec in fx.specs("clearing", holiday_eve()) {
        for attempt in 1..=3 {
            let outcome = fx.run(ShardSpec { attempt, ..spec.clone() }, TestSink::new()).await;
            assert_eq!(
                outcome == ShardOutcome::Succeeded,
                attempt == 3,
                "{} {attempt}",
                spec.shard
            );
        }
    }
}

#[tokio::test]
async fn a_hanging_shard_waits_until_cancelled() {
    let fx = fixture(FundOptions::for_test().with_failures("settlement:D101:hang").expect("spec"));
    let behavior = fx.behavior("settlement");
    let (sink, cancel) = (TestSink::new(), CancelToken::new());
    let running = tokio::spawn({
        let (spec, sink, cancel) = (fx.spec("settlement", "D101"), sink.clone(), cancel.clone());
        async move { run_shard(&*behavior, spec, cancel, sink, &OPTIONS).await }
    });
    sink.wait_for_log("injected hang at load_clearing").await;
    assert!(!running.is_finished());
    cancel.cancel();
    let outcome = timeout(LIMIT, running).await.expect("stops in time").expect("no panic");
    assert_eq!(outcome, ShardOutcome::Cancelled);
    assert!(sink.recorded().checkpoints.is_empty());
}

#[tokio::test]
async fn a_slow_step_stops_promptly_when_cancelled() {
    let options = FundOptions { step_delay: Duration::from_secs(3600), ..FundOptions::for_test() };
    let fx = fixture(options);
    let behavior = fx.behavior("nav_calculation");
    let (sink, cancel) = (TestSink::new(), CancelToken::new());
    let running = tokio::spawn({
        let (spec, sink, cancel) =
            (fx.spec("nav_calculation", "510001"), sink.clone(), cancel.clone());
        async move { run_shard(&*behavior, spec, cancel, sink, &OPTIONS).await }
    });
    let mut changed = sink.changed.subscribe();
    timeout(LIMIT, changed.wait_for(|_| !sink.recorded().started.is_empty()))
        .await
        .expect("step starts")
        .expect("sink alive");
    cancel.cancel();
    let outcome = timeout(LIMIT, running).await.expect("stops in time").expect("no panic");
    assert_eq!(outcome, ShardOutcome::Cancelled);
}

#[tokio::test]
async fn rollback_reverses_what_the_shard_posted() {
    let fx = fixture(FundOptions::for_test());
    let spec = fx.spec("clearing", "D101");
    assert_eq!(fx.run(spec.clone(), TestSink::new()).await, ShardOutcome::Succeeded);
    let other = fx.spec("clearing", "D201");
    assert_eq!(fx.run(other, TestSink::new()).await, ShardOutcome::Succeeded);
    let posted = fx.ledger.entries();
    assert!(posted.keys().any(|k| k.contains("/clearing/D101/g0/net/")));

    let behavior = fx.behavior("clearing");
    let sink = TestSink::new();
    let done = ShardSpec { completed_steps: 3, ..spec };
    let rollback = run_rollback(&*behavior, done, CancelToken::new(), sink.clone(), &OPTIONS);
    assert_eq!(timeout(LIMIT, rollback).await.expect("in time"), ShardOutcome::Succeeded);
    assert!(sink.has_log("reversing the clearing results of 2026-09-30/clearing/D101/g0 (3 of 3"));
    assert!(sink.has_log("reversed 18 postings"), "{:?}", sink.recorded().logs);
    let left = fx.ledger.entries();
    assert!(left.keys().all(|k| !k.contains("/D101/")), "D101 reversed");
    assert!(left.keys().any(|k| k.contains("/D201/")), "D201 untouched");

    // A behavior without effects says so.
    let behavior = fx.behavior("custody_nav_check");
    let sink = TestSink::new();
    let spec = fx.spec("custody_nav_check", "510001");
    let rollback = run_rollback(&*behavior, spec, CancelToken::new(), sink.clone(), &OPTIONS);
    assert_eq!(timeout(LIMIT, rollback).await.expect("in time"), ShardOutcome::Succeeded);
    assert!(sink.has_log("nothing to undo"));
}
