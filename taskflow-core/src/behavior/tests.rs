//! Tests of the drivers and the registry; the `command` behavior's tests are in `tests/command.rs`.

mod command;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::timeout;

use super::*;

/// Every test finishes well within this, or fails.
const LIMIT: Duration = Duration::from_secs(20);

/// What a [`RecordingSink`] received.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Event {
    Started(usize),
    Checkpoint(Checkpoint),
    Progress(Progress),
    Log(LogLine),
}

/// A sink that records everything and lets a test wait for an event.
pub(super) struct RecordingSink {
    events: Mutex<Vec<Event>>,
    changed: watch::Sender<usize>,
    fail_checkpoints: bool,
}

impl RecordingSink {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(RecordingSink {
            events: Mutex::new(Vec::new()),
            changed: watch::Sender::new(0),
            fail_checkpoints: false,
        })
    }

    fn push(&self, event: Event) {
        self.events.lock().expect("sink lock").push(event);
        self.changed.send_modify(|n| *n += 1);
    }

    pub(super) fn events(&self) -> Vec<Event> {
        self.events.lock().expect("sink lock").clone()
    }

    pub(super) fn logs(&self) -> Vec<LogLine> {
        let events = self.events();
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::Log(line) => Some(line),
                _ => None,
            })
            .collect()
    }

    pub(super) fn log_text(&self) -> Vec<String> {
        self.logs().into_iter().map(|l| l.message).collect()
    }

    fn checkpoints(&self) -> Vec<usize> {
        let events = self.events();
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::Checkpoint(c) => Some(c.completed_steps),
                _ => None,
            })
            .collect()
    }

    /// Waits until `pred` holds for the events so far.
    pub(super) async fn wait_until(&self, pred: impl Fn(&[Event]) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            if pred(&self.events.lock().expect("sink lock")) {
                return;
            }
            rx.changed().await.expect("sink alive");
        }
    }
}

impl ShardSink for RecordingSink {
    fn step_started(&self, step: usize, _name: &str) {
        self.push(Event::Started(step));
    }

    fn checkpoint(&self, checkpoint: Checkpoint) -> BoxFuture<'_, Result<(), CheckpointError>> {
        Box::pin(async move {
            if self.fail_checkpoints {
                return Err(CheckpointError("manager unreachable".to_owned()));
            }
            self.push(Event::Checkpoint(checkpoint));
            Ok(())
        })
    }

    fn progress(&self, progress: Progress) {
        self.push(Event::Progress(progress));
    }

    fn log(&self, line: LogLine) {
        self.push(Event::Log(line));
    }
}

pub(super) fn spec(task: &str, shard: &str) -> ShardSpec {
    let date = BusinessDate::from_ymd(2026, 11, 24).expect("valid date");
    ShardSpec::new(TaskId::new(task), date, ShardKey::new(shard), vec![ScopeItem::product(shard)])
}

/// Four steps; step 2 fails on attempt 1. Records `(attempt, step, completed_steps)` per call.
#[derive(Default)]
struct FlakyAtStep2 {
    calls: Arc<Mutex<Vec<(u32, usize, usize)>>>,
}

impl TaskBehavior for FlakyAtStep2 {
    fn steps(&self) -> &[&str] {
        &["load_applications", "validate", "confirm", "write_shares"]
    }

    async fn run_step(&self, ctx: &mut ShardContext, step: usize) -> Result<(), BehaviorError> {
        self.calls.lock().expect("calls lock").push((ctx.attempt(), step, ctx.completed_steps()));
        if step == 2 && ctx.attempt() == 1 {
            return Err(BehaviorError::new("ledger locked"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn retried_shard_resumes_after_last_checkpoint_and_never_reruns_completed_steps() {
    let behavior = FlakyAtStep2::default();
    let calls = Arc::clone(&behavior.calls);

    let sink = RecordingSink::new();
    let first = spec("confirm_trades", "P001");
    let outcome = timeout(
        LIMIT,
        run_shard(
            &behavior,
            first.clone(),
            CancelToken::new(),
            sink.clone(),
            &RunOptions::default(),
        ),
    )
    .await
    .expect("bounded");
    assert_eq!(
        outcome,
        ShardOutcome::Failed { reason: "step 2 (confirm) failed: ledger locked".to_owned() }
    );
    assert_eq!(sink.checkpoints(), vec![1, 2]);

    // The runtime resumes from the last checkpoint it recorded.
    let resume_at = *sink.checkpoints().last().expect("a checkpoint");
    let second = ShardSpec { attempt: 2, completed_steps: resume_at, ..first };
    let sink = RecordingSink::new();
    let outcome = timeout(
        LIMIT,
        run_shard(&behavior, second, CancelToken::new(), sink.clone(), &RunOptions::default()),
    )
    .await
    .expect("bounded");
    assert_eq!(outcome, ShardOutcome::Succeeded);
    assert_eq!(sink.checkpoints(), vec![3, 4]);
    assert_eq!(
        *calls.lock().expect("calls lock"),
        vec![(1, 0, 0), (1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 3, 3)]
    );
}

#[tokio::test]
async fn fully_checkpointed_shard_succeeds_without_running_and_bad_checkpoint_fails() {
    let behavior = FlakyAtStep2::default();
    let done = ShardSpec { completed_steps: 4, ..spec("t", "P1") };
    let sink = RecordingSink::new();
    let outcome = timeout(
        LIMIT,
        run_shard(&behavior, done, CancelToken::new(), sink, &RunOptions::default()),
    )
    .await
    .expect("bounded");
    assert_eq!(outcome, ShardOutcome::Succeeded);
    assert!(behavior.calls.lock().expect("calls lock").is_empty());

    let beyond = ShardSpec { completed_steps: 5, ..spec("t", "P1") };
    let outcome = timeout(
        LIMIT,
        run_shard(
            &behavior,
            beyond,
            CancelToken::new(),
            RecordingSink::new(),
            &RunOptions::default(),
        ),
    )
    .await
    .expect("bounded");
    let ShardOutcome::Failed { reason } = outcome else { panic!("expected failure: {outcome:?}") };
    assert!(reason.contains("5 steps are complete but the behavior has only 4"), "{reason}");
}

/// One step that panics, errors, waits for cancellation, or hangs, as configured.
struct Misbehaves(&'static str);

impl TaskBehavior for Misbehaves {
    fn steps(&self) -> &[&str] {
        &["work", "after"]
    }

    async fn run_step(&self, ctx: &mut ShardContext, step: usize) -> Result<(), BehaviorError> {
        if step == 1 {
            ctx.info("second step ran");
            return Ok(());
        }
        match self.0 {
            "panic" => panic!("boom in step"),
            "error" => Err(std::io::Error::other("disk full").into()),
            "cooperative" => {
                ctx.cancelled().await;
                Err(BehaviorError::new("stopped on request"))
            }
            "finishes-anyway" => {
                ctx.cancelled().await;
                Ok(())
            }
            _ => std::future::pending().await,
        }
    }

    async fn rollback(&self, _ctx: &mut ShardContext) -> Result<(), BehaviorError> {
        match self.0 {
            "panic" => panic!("boom in rollback"),
            "error" => Err(BehaviorError::new("cannot undo")),
            _ => Ok(()),
        }
    }
}

async fn run(
    behavior: &dyn DynTaskBehavior,
    options: RunOptions,
) -> (ShardOutcome, Arc<RecordingSink>) {
    let sink = RecordingSink::new();
    let outcome = timeout(
        LIMIT,
        run_shard(behavior, spec("t", "P1"), CancelToken::new(), sink.clone(), &options),
    )
    .await
    .expect("bounded");
    (outcome, sink)
}

#[tokio::test]
async fn panicking_step_fails_the_shard_not_the_caller() {
    let (outcome, sink) = run(&Misbehaves("panic"), RunOptions::default()).await;
    assert_eq!(
        outcome,
        ShardOutcome::Failed { reason: "step 0 (work) panicked: boom in step".to_owned() }
    );
    assert!(sink.checkpoints().is_empty());
    assert!(sink.logs().iter().any(|l| l.level == LogLevel::Error && l.message.contains("boom")));
}

#[tokio::test]
async fn erroring_step_fails_the_shard_with_the_error_chain() {
    let (outcome, _) = run(&Misbehaves("error"), RunOptions::default()).await;
    assert_eq!(
        outcome,
        ShardOutcome::Failed { reason: "step 0 (work) failed: disk full".to_owned() }
    );
}

#[tokio::test]
async fn cancelled_shard_stops_cooperatively_and_starts_no_further_step() {
    for mode in ["cooperative", "finishes-anyway"] {
        let behavior = Misbehaves(mode);
        let sink = RecordingSink::new();
        let cancel = CancelToken::new();
        let running = tokio::spawn({
            let (sink, cancel) = (sink.clone(), cancel.clone());
            async move {
                let options = RunOptions::default();
                run_shard(&behavior, spec("t", "P1"), cancel, sink, &options).await
            }
        });
        timeout(LIMIT, sink.wait_until(|e| e.contains(&Event::Started(0)))).await.expect("started");
        cancel.cancel();
        let outcome = timeout(LIMIT, running).await.expect("bounded").expect("no panic");
        assert_eq!(outcome, ShardOutcome::Cancelled, "{mode}");
        assert!(!sink.events().contains(&Event::Started(1)), "{mode}");
        // A step that completed despite the stop request is still checkpointed.
        let expected: Vec<usize> = if mode == "finishes-anyway" { vec![1] } else { vec![] };
        assert_eq!(sink.checkpoints(), expected, "{mode}");
    }
}

#[tokio::test]
async fn shard_cancelled_before_it_starts_runs_nothing() {
    let cancel = CancelToken::new();
    cancel.cancel();
    let sink = RecordingSink::new();
    let options = RunOptions::default();
    let outcome = timeout(
        LIMIT,
        run_shard(&Misbehaves("panic"), spec("t", "P1"), cancel, sink.clone(), &options),
    )
    .await
    .expect("bounded");
    assert_eq!(outcome, ShardOutcome::Cancelled);
    assert!(sink.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_the_step_and_fails_the_shard() {
    let options = RunOptions::with_timeout(Duration::from_secs(5));
    let (outcome, _) = run(&Misbehaves("cooperative"), options).await;
    assert_eq!(
        outcome,
        ShardOutcome::Failed { reason: "timed out after 5s in step 0 (work)".to_owned() }
    );
}

#[tokio::test(start_paused = true)]
async fn step_ignoring_cancellation_is_abandoned_after_the_grace() {
    let options =
        RunOptions { timeout: Some(Duration::from_secs(5)), cancel_grace: Duration::from_secs(1) };
    let (outcome, sink) = run(&Misbehaves("hang"), options).await;
    let ShardOutcome::Failed { reason } = outcome else { panic!("expected failure") };
    assert!(reason.starts_with("timed out after 5s in step 0 (work)"), "{reason}");
    assert!(reason.contains("did not stop within 1s and was abandoned"), "{reason}");
    assert!(sink.log_text().iter().any(|l| l.contains("abandoned")));
}

/// Reports progress and logs, including an over-long line.
struct Chatty;

impl TaskBehavior for Chatty {
    fn steps(&self) -> &[&str] {
        &["only"]
    }

    async fn run_step(&self, ctx: &mut ShardContext, _step: usize) -> Result<(), BehaviorError> {
        ctx.progress(1, 2);
        ctx.info(format!("working on {}", ctx.idempotency_key()));
        ctx.progress(2, 2);
        ctx.warn("é".repeat(LogLine::MAX_LEN));
        Ok(())
    }
}

#[tokio::test]
async fn progress_and_log_lines_reach_the_sink_tagged_with_the_step() {
    let (outcome, sink) = run(&Chatty, RunOptions::default()).await;
    assert_eq!(outcome, ShardOutcome::Succeeded);
    let events = sink.events();
    assert!(events.contains(&Event::Progress(Progress { step: 0, done: 1, total: 2 })));
    assert!(events.contains(&Event::Progress(Progress { step: 0, done: 2, total: 2 })));
    let logs = sink.logs();
    assert_eq!(logs[0].message, "working on 2026-11-24/t/P1/g0");
    assert_eq!((logs[0].level, logs[0].step), (LogLevel::Info, Some(0)));
    assert!(logs[1].message.len() <= LogLine::MAX_LEN && logs[1].message.ends_with('…'));
}

#[tokio::test]
async fn unrecorded_checkpoint_fails_the_shard() {
    let sink = Arc::new(RecordingSink {
        events: Mutex::new(Vec::new()),
        changed: watch::Sender::new(0),
        fail_checkpoints: true,
    });
    let options = RunOptions::default();
    let outcome =
        timeout(LIMIT, run_shard(&Chatty, spec("t", "P1"), CancelToken::new(), sink, &options))
            .await
            .expect("bounded");
    assert_eq!(
        outcome,
        ShardOutcome::Failed {
            reason: "step 0 (only) completed but checkpoint not recorded: manager unreachable"
                .to_owned()
        }
    );
}

#[tokio::test]
async fn rollback_default_succeeds_and_a_panicking_rollback_fails() {
    let options = RunOptions::default();
    for (behavior, expected) in [
        (&Chatty as &dyn DynTaskBehavior, ShardOutcome::Succeeded),
        (
            &Misbehaves("panic") as &dyn DynTaskBehavior,
            ShardOutcome::Failed { reason: "rollback panicked: boom in rollback".to_owned() },
        ),
        (
            &Misbehaves("error") as &dyn DynTaskBehavior,
            ShardOutcome::Failed { reason: "rollback failed: cannot undo".to_owned() },
        ),
    ] {
        let sink = RecordingSink::new();
        let spec = ShardSpec { generation: 1, ..spec("t", "P1") };
        let outcome =
            timeout(LIMIT, run_rollback(behavior, spec, CancelToken::new(), sink, &options))
                .await
                .expect("bounded");
        assert_eq!(outcome, expected);
    }
}

#[test]
fn idempotency_key_has_a_stable_string_form() {
    let mut spec = spec("confirm_trades", "P001");
    assert_eq!(spec.idempotency_key().to_string(), "2026-11-24/confirm_trades/P001/g0");
    spec.generation = 3;
    spec.attempt = 7; // retries share the key; only the generation changes it
    assert_eq!(spec.idempotency_key().to_string(), "2026-11-24/confirm_trades/P001/g3");
}

fn split_ctx() -> SplitContext {
    SplitContext {
        task: TaskId::new("t"),
        date: BusinessDate::from_ymd(2026, 11, 24).expect("valid date"),
        scope: vec![ScopeItem::pair("P1", "D1"), ScopeItem::product("P2")],
        covered_dates: vec![],
        params: Params::new(),
    }
}

/// Puts everything in one shard twice (a bug), or panics.
struct BadSplit(bool);

impl TaskBehavior for BadSplit {
    fn split(&self, ctx: &SplitContext) -> Result<Vec<ShardPlan>, BehaviorError> {
        assert!(!self.0, "split exploded");
        let all = ShardPlan::new(ShardKey::new("all"), ctx.scope.clone());
        Ok(vec![all.clone(), all])
    }

    fn steps(&self) -> &[&str] {
        &[]
    }

    async fn run_step(&self, _ctx: &mut ShardContext, _step: usize) -> Result<(), BehaviorError> {
        Ok(())
    }
}

#[test]
fn default_split_makes_one_shard_per_item_and_bad_splits_are_errors() {
    let plans = split_shards(&NoopBehavior, &split_ctx()).expect("split");
    let keys: Vec<&str> = plans.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["P1@D1", "P2"]);
    assert_eq!(plans[0].scope, vec![ScopeItem::pair("P1", "D1")]);

    let duplicate = split_shards(&BadSplit(false), &split_ctx()).expect_err("duplicate");
    assert!(duplicate.to_string().contains("shard key `all` twice"), "{duplicate}");
    let panicked = split_shards(&BadSplit(true), &split_ctx()).expect_err("panic");
    assert!(
        panicked.to_string().contains("split of task t panicked: split exploded"),
        "{panicked}"
    );
}

static BUILT: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// Counts constructions and drops.
struct Counted;

impl Counted {
    fn new() -> Self {
        BUILT.fetch_add(1, Ordering::SeqCst);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

impl TaskBehavior for Counted {
    fn steps(&self) -> &[&str] {
        &["x"]
    }

    async fn run_step(&self, _ctx: &mut ShardContext, _step: usize) -> Result<(), BehaviorError> {
        Ok(())
    }
}

#[test]
fn registry_builds_lazily_shares_while_leased_and_releases_after_the_last_lease() {
    let mut registry = BehaviorRegistry::with_builtins();
    registry.register("fund.counted", Counted::new).expect("register");
    assert_eq!(registry.names(), ["command", "fund.counted", "noop"]);
    assert_eq!(BUILT.load(Ordering::SeqCst), 0, "nothing built at registration");
    assert!(!registry.is_loaded("fund.counted"));

    let a = registry.acquire("fund.counted").expect("acquire");
    let b = registry.acquire("fund.counted").expect("acquire");
    assert_eq!(BUILT.load(Ordering::SeqCst), 1, "one shared instance");
    assert_eq!(a.name(), "fund.counted");
    assert_eq!(a.steps(), ["x"]);
    drop(a);
    assert!(registry.is_loaded("fund.counted"));
    assert_eq!(DROPPED.load(Ordering::SeqCst), 0);
    drop(b);
    assert_eq!(DROPPED.load(Ordering::SeqCst), 1, "released with the last lease");
    assert!(!registry.is_loaded("fund.counted"));

    let c = registry.acquire("fund.counted").expect("acquire");
    assert_eq!(BUILT.load(Ordering::SeqCst), 2, "rebuilt on next use");
    drop(c);
    assert_eq!(DROPPED.load(Ordering::SeqCst), 2);
}

#[test]
fn registry_rejects_unknown_and_duplicate_names_with_typed_errors() {
    let mut registry = BehaviorRegistry::with_builtins();
    let err = registry.acquire("fund.nope").expect_err("unknown");
    assert_eq!(
        err,
        RegistryError::UnknownBehavior {
            name: "fund.nope".to_owned(),
            known: vec!["command".to_owned(), "noop".to_owned()]
        }
    );
    assert_eq!(err.to_string(), "unknown behavior `fund.nope`; this executor hosts: command, noop");
    let dup = registry.register("noop", NoopBehavior::default).expect_err("duplicate");
    assert_eq!(dup, RegistryError::Duplicate { name: "noop".to_owned() });
}

#[tokio::test]
async fn noop_succeeds_in_one_step() {
    let registry = BehaviorRegistry::with_builtins();
    let noop = registry.acquire("noop").expect("builtin");
    let (outcome, sink) = run(&*noop, RunOptions::default()).await;
    assert_eq!(outcome, ShardOutcome::Succeeded);
    assert_eq!(sink.checkpoints(), vec![1]);
}
