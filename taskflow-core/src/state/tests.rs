//! Tests of the state module: the table, derivation, the fold, commands, the codec, and
//! property tests holding them together.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::graph::{TaskGraph, TaskIx};
use crate::model::{BusinessDate, ScopeItem, ShardKey, TaskId};

use ShardEvent as SE;
use ShardStatus as S;

/// a → b → d, a → c → d.
fn diamond() -> Arc<TaskGraph> {
    let spec: [(&str, &[&str]); 4] = [("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])];
    Arc::new(
        TaskGraph::build(
            spec.iter().map(|(id, deps)| {
                (TaskId::new(*id), deps.iter().map(|d| TaskId::new(*d)).collect())
            }),
        )
        .expect("valid graph"),
    )
}

fn date() -> BusinessDate {
    BusinessDate::from_ymd(2026, 11, 24).expect("valid date")
}

fn tid(s: &str) -> TaskId {
    TaskId::new(s)
}

struct Day {
    st: DayState,
}

impl Day {
    fn new() -> Day {
        let mut d = Day { st: DayState::new(date(), diamond()) };
        d.ok(EventKind::DayOpened { date: date(), flow_digest: "sha256:abc".into() });
        d
    }

    fn ix(&self, t: &str) -> TaskIx {
        self.st.graph().index_of(t).expect("known task")
    }

    fn ev(&mut self, kind: EventKind) -> Result<Applied, Error> {
        let seq = self.st.last_seq() + 1;
        self.st.apply(&DayEvent { seq, at_ms: 1_700_000_000_000 + seq as i64 * 1000, kind })
    }

    fn ok(&mut self, kind: EventKind) -> Applied {
        let dbg = format!("{kind:?}");
        self.ev(kind).unwrap_or_else(|e| panic!("{dbg}: {e}"))
    }

    fn register(&mut self, t: &str, n: usize) -> Applied {
        self.ok(EventKind::TaskRegistered {
            task: tid(t),
            items: (0..n).map(|i| ScopeItem::pair(format!("P{i}"), "D1")).collect(),
            shards: (0..n).map(|i| ShardKey::new(format!("P{i}@D1"))).collect(),
            covered_dates: vec![date().date()],
        })
    }

    fn shard(&mut self, t: &str, shard: u32, event: ShardEvent) -> Result<Applied, Error> {
        self.ev(EventKind::Shard { task: tid(t), shard, event })
    }

    fn dispatch(&mut self, t: &str, shard: u32) -> Applied {
        let attempt = self.st.shard(self.ix(t), shard).map_or(0, |v| v.attempt) + 1;
        self.shard(
            t,
            shard,
            SE::Dispatch { attempt, executor: "exec-1".into(), epoch: 0, instance: 0 },
        )
        .expect("dispatch")
    }

    /// Registers (if needed), readies, dispatches and succeeds every shard of `t`.
    fn run(&mut self, t: &str, n: usize) -> Vec<Applied> {
        if !self.st.is_registered(self.ix(t)) {
            self.register(t, n);
        }
        self.ok(EventKind::TaskReady { task: tid(t) });
        let mut out = Vec::new();
        for i in 0..self.st.shard_count(self.ix(t)) {
            self.dispatch(t, i);
            out.push(self.shard(t, i, SE::Succeed).expect("succeed"));
        }
        out
    }

    fn decide(
        &self,
        action: OperatorAction,
        t: &str,
        shard: Option<u32>,
    ) -> Result<Vec<EventKind>, CommandError> {
        decide(
            &self.st,
            &Command {
                actor: "alice".into(),
                from: "console 127.0.0.1".into(),
                reason: "test".into(),
                action,
                target: Target { task: tid(t), shard },
            },
        )
    }

    fn command(
        &mut self,
        action: OperatorAction,
        t: &str,
        shard: Option<u32>,
    ) -> Result<(), CommandError> {
        for e in self.decide(action, t, shard)? {
            self.ok(e);
        }
        Ok(())
    }
}

/// A path of events from `registered` to each status.
fn path_to(status: ShardStatus) -> Vec<ShardEvent> {
    let dispatch = SE::Dispatch { attempt: 1, executor: "e".into(), epoch: 0, instance: 0 };
    let run = vec![SE::Ready, dispatch];
    let mut p = match status {
        S::Registered => vec![],
        S::Pending => vec![SE::Ready],
        S::Running => run,
        S::Succeeded | S::RollingBack | S::RolledBack | S::RollbackFailed => {
            [run, vec![SE::Succeed]].concat()
        }
        S::Failed => [run, vec![SE::Fail { reason: "boom".into() }]].concat(),
        S::Skipped => vec![SE::Skip],
        S::Stopping => [run, vec![SE::Stop]].concat(),
        S::Stopped => vec![SE::Stop],
        S::Unconfirmed => [run, vec![SE::MarkUnconfirmed]].concat(),
    };
    match status {
        S::RollingBack => p.push(SE::Rollback),
        S::RolledBack => p.extend([SE::Rollback, SE::RollbackSucceeded]),
        S::RollbackFailed => p.extend([SE::Rollback, SE::RollbackFailed { reason: "x".into() }]),
        _ => {}
    }
    p
}

fn sample_event(kind: ShardEventKind) -> ShardEvent {
    match kind {
        ShardEventKind::Ready => SE::Ready,
        ShardEventKind::Dispatch => {
            SE::Dispatch { attempt: 9, executor: "e2".into(), epoch: 0, instance: 0 }
        }
        ShardEventKind::Succeed => SE::Succeed,
        ShardEventKind::Fail => SE::Fail { reason: "boom".into() },
        ShardEventKind::Stop => SE::Stop,
        ShardEventKind::StopAcknowledged => SE::StopAcknowledged,
        ShardEventKind::Skip => SE::Skip,
        ShardEventKind::Retry => SE::Retry,
        ShardEventKind::Rollback => SE::Rollback,
        ShardEventKind::RollbackSucceeded => SE::RollbackSucceeded,
        ShardEventKind::RollbackFailed => SE::RollbackFailed { reason: "x".into() },
        ShardEventKind::Requeue => SE::Requeue,
        ShardEventKind::MarkUnconfirmed => SE::MarkUnconfirmed,
        ShardEventKind::Confirm => SE::Confirm,
        ShardEventKind::MarkFailed => SE::MarkFailed,
        ShardEventKind::RollbackThenRetry => SE::RollbackThenRetry,
    }
}

// ---------------------------------------------------------------------------------------------
// The table

#[test]
fn the_table_has_one_row_per_status_and_event_and_matches_transition() {
    for (i, &(from, event, to)) in TRANSITIONS.iter().enumerate() {
        assert_eq!(transition(from, event), Ok(to));
        assert!(
            !TRANSITIONS[..i].iter().any(|&(f, e, _)| f == from && e == event),
            "duplicate row {from:?} {event:?}"
        );
    }
    for from in ShardStatus::ALL {
        for event in ShardEventKind::ALL {
            let in_table = TRANSITIONS.iter().any(|&(f, e, _)| f == from && e == event);
            assert_eq!(transition(from, event).is_ok(), in_table, "{from:?} {event:?}");
        }
        assert_eq!(
            allowed_events(from),
            TRANSITIONS.iter().filter(|r| r.0 == from).map(|r| r.1).collect::<Vec<_>>()
        );
    }
    for (i, s) in ShardStatus::ALL.iter().enumerate() {
        assert_eq!(*s as usize, i);
        assert_eq!(ShardStatus::from_u8(i as u8), Some(*s));
    }
    assert_eq!(ShardStatus::from_u8(12), None);
}

#[test]
fn every_legal_transition_applies_to_a_day() {
    let mut d = Day::new();
    d.register("a", TRANSITIONS.len());
    for (i, &(from, event, to)) in TRANSITIONS.iter().enumerate() {
        let i = i as u32;
        for e in path_to(from) {
            d.shard("a", i, e).expect("path");
        }
        assert_eq!(d.st.shard(d.ix("a"), i).map(|v| v.status), Some(from));
        let applied = d.shard("a", i, sample_event(event)).expect("legal row");
        assert_eq!(applied.shard, Some(ShardChange { shard: i, from, to }));
        assert_eq!(d.st.shard(d.ix("a"), i).map(|v| v.status), Some(to));
    }
}

#[test]
fn illegal_transitions_read_like_conflict_reasons() {
    let msg = |from, event| transition(from, event).map(|_| ()).unwrap_err().to_string();
    assert_eq!(msg(S::Running, ShardEventKind::Retry), "cannot retry a shard that is running");
    assert_eq!(
        msg(S::Skipped, ShardEventKind::Rollback),
        "cannot roll back a shard that is skipped"
    );
    assert_eq!(
        msg(S::RollbackFailed, ShardEventKind::Retry),
        "cannot retry a shard that is rollback failed"
    );
    assert_eq!(msg(S::Succeeded, ShardEventKind::Stop), "cannot stop a shard that is succeeded");
    assert_eq!(
        transition(S::Registered, ShardEventKind::Dispatch),
        Err(IllegalTransition { from: S::Registered, event: ShardEventKind::Dispatch })
    );

    let mut d = Day::new();
    d.register("a", 1);
    let before = d.st.clone();
    let err = d.shard("a", 0, SE::Succeed).unwrap_err();
    assert_eq!(err.to_string(), "shard 0 of task `a`: cannot complete a shard that is registered");
    assert_eq!(d.st, before, "a refused event changes nothing");
}

#[test]
fn skipped_is_terminal_and_rollback_failed_only_allows_another_rollback() {
    assert!(allowed_events(S::Skipped).is_empty());
    assert_eq!(allowed_events(S::RollbackFailed), vec![ShardEventKind::Rollback]);
    assert_eq!(
        allowed_events(S::Unconfirmed),
        vec![
            ShardEventKind::Confirm,
            ShardEventKind::MarkFailed,
            ShardEventKind::Rollback,
            ShardEventKind::RollbackThenRetry
        ]
    );
    assert_eq!(UnconfirmedPolicy::default().on_unconfirmed(), None);
    assert_eq!(UnconfirmedPolicy::AutoRollback.on_unconfirmed(), Some(SE::RollbackThenRetry));
}

#[test]
fn failures_count_only_failed_runs_of_the_current_generation() {
    let mut d = Day::new();
    d.register("a", 1);
    d.ok(EventKind::TaskReady { task: tid("a") });
    let failures = |d: &Day| d.st.shard(d.ix("a"), 0).map(|v| (v.attempt, v.failures));
    d.dispatch("a", 0);
    // A requeue (lost executor, refused assignment) is not a failure, however often.
    d.shard("a", 0, SE::Requeue).expect("requeue");
    d.dispatch("a", 0);
    d.shard("a", 0, SE::Requeue).expect("requeue");
    d.dispatch("a", 0);
    assert_eq!(failures(&d), Some((3, 0)));
    d.shard("a", 0, SE::Fail { reason: "no quotes".into() }).expect("fail");
    assert_eq!(failures(&d), Some((3, 1)));
    d.shard("a", 0, SE::Retry).expect("retry");
    d.dispatch("a", 0);
    d.shard("a", 0, SE::MarkUnconfirmed).expect("unconfirmed");
    // An operator's verdict on unknown work is not a run that failed.
    d.shard("a", 0, SE::MarkFailed).expect("mark failed");
    assert_eq!(failures(&d), Some((4, 1)));
    d.shard("a", 0, SE::Retry).expect("retry");
    d.dispatch("a", 0);
    d.shard("a", 0, SE::Fail { reason: "again".into() }).expect("fail");
    assert_eq!(failures(&d), Some((5, 2)));
    // A rollback starts a new generation with its own budget.
    d.shard("a", 0, SE::Rollback).expect("rollback");
    d.shard("a", 0, SE::RollbackSucceeded).expect("rolled back");
    assert_eq!(failures(&d), Some((5, 0)));
}

#[test]
fn the_retry_intent_of_an_automatic_rollback_lasts_until_the_retry() {
    let mut d = Day::new();
    d.register("a", 2);
    d.ok(EventKind::TaskReady { task: tid("a") });
    let intent = |d: &Day, i| d.st.shard(d.ix("a"), i).map(|v| (v.status, v.retry_after_rollback));
    for i in 0..2 {
        d.dispatch("a", i);
        d.shard("a", i, SE::MarkUnconfirmed).expect("unconfirmed");
    }
    d.shard("a", 0, SE::RollbackThenRetry).expect("auto rollback");
    d.shard("a", 1, SE::Rollback).expect("operator rollback");
    assert_eq!(intent(&d, 0), Some((S::RollingBack, true)));
    assert_eq!(intent(&d, 1), Some((S::RollingBack, false)));
    d.shard("a", 0, SE::RollbackSucceeded).expect("rolled back");
    d.shard("a", 1, SE::RollbackSucceeded).expect("rolled back");
    // Durable: a snapshot round trip keeps it (a recovery retries shard 0, not shard 1).
    let back = DayState::decode_snapshot(&d.st.encode_snapshot(), diamond()).expect("decode");
    assert_eq!(back, d.st);
    assert_eq!(intent(&d, 0), Some((S::RolledBack, true)));
    assert_eq!(intent(&d, 1), Some((S::RolledBack, false)));
    d.shard("a", 0, SE::Retry).expect("retry");
    assert_eq!(intent(&d, 0), Some((S::Pending, false)));
    // A failed rollback ends the intent: an operator decides.
    d.dispatch("a", 0);
    d.shard("a", 0, SE::MarkUnconfirmed).expect("unconfirmed");
    d.shard("a", 0, SE::RollbackThenRetry).expect("auto rollback");
    d.shard("a", 0, SE::RollbackFailed { reason: "locked".into() }).expect("failed");
    assert_eq!(intent(&d, 0), Some((S::RollbackFailed, false)));
}

#[test]
fn a_shard_record_stays_40_bytes() {
    assert_eq!(std::mem::size_of::<super::day::ShardRecord>(), 40);
}

#[test]
fn a_finishing_shard_wins_over_a_stop_and_a_lost_executor_requeues() {
    let mut d = Day::new();
    d.register("a", 3);
    d.ok(EventKind::TaskReady { task: tid("a") });
    for i in 0..3 {
        d.dispatch("a", i);
        d.shard("a", i, SE::Stop).expect("stop");
    }
    assert_eq!(d.st.task_status_of("a"), Some(TaskStatus::Stopping));
    d.shard("a", 0, SE::Succeed).expect("outcome wins");
    d.shard("a", 1, SE::Requeue).expect("lost executor completes the stop");
    d.shard("a", 2, SE::StopAcknowledged).expect("ack");
    let st = |i| d.st.shard(d.ix("a"), i).map(|v| v.status);
    assert_eq!((st(0), st(1), st(2)), (Some(S::Succeeded), Some(S::Stopped), Some(S::Stopped)));
}

// ---------------------------------------------------------------------------------------------
// Derivation

#[test]
fn task_status_follows_the_documented_priorities() {
    let c = |v: &[(ShardStatus, u32)]| {
        v.iter().flat_map(|&(s, n)| std::iter::repeat_n(s, n as usize)).collect::<StatusCounts>()
    };
    let derive = |v: &[(ShardStatus, u32)]| TaskStatus::derive(true, &c(v));
    assert_eq!(TaskStatus::derive(false, &c(&[])), TaskStatus::Unregistered);
    assert_eq!(derive(&[]), TaskStatus::NotApplicable);
    assert_eq!(
        derive(&[(S::RollingBack, 1), (S::Stopping, 1), (S::Running, 1)]),
        TaskStatus::RollingBack
    );
    assert_eq!(derive(&[(S::Stopping, 1), (S::Running, 1)]), TaskStatus::Stopping);
    assert_eq!(
        derive(&[(S::Running, 1), (S::Unconfirmed, 1), (S::Failed, 1)]),
        TaskStatus::Running
    );
    assert_eq!(derive(&[(S::Pending, 2), (S::Succeeded, 1)]), TaskStatus::Running, "started");
    assert_eq!(derive(&[(S::Pending, 2), (S::Failed, 1)]), TaskStatus::Running, "retrying");
    assert_eq!(derive(&[(S::Pending, 2), (S::Registered, 1)]), TaskStatus::Pending);
    assert_eq!(derive(&[(S::Unconfirmed, 1), (S::Failed, 1)]), TaskStatus::Unconfirmed);
    assert_eq!(derive(&[(S::RollbackFailed, 1), (S::Stopped, 1)]), TaskStatus::Failed);
    assert_eq!(derive(&[(S::Failed, 1), (S::Succeeded, 1)]), TaskStatus::Failed);
    assert_eq!(derive(&[(S::Stopped, 1), (S::RolledBack, 1)]), TaskStatus::Stopped);
    assert_eq!(derive(&[(S::RolledBack, 1), (S::Registered, 1)]), TaskStatus::RolledBack);
    assert_eq!(derive(&[(S::Registered, 1), (S::Succeeded, 1)]), TaskStatus::Registered);
    assert_eq!(derive(&[(S::Skipped, 2)]), TaskStatus::Skipped);
    assert_eq!(derive(&[(S::Skipped, 2), (S::Succeeded, 1)]), TaskStatus::Succeeded);
    assert!(TaskStatus::NotApplicable.is_done() && !TaskStatus::Registered.is_done());
    assert_eq!(c(&[(S::Running, 3), (S::Succeeded, 2)]).to_string(), "3 running, 2 succeeded");
}

#[test]
fn an_empty_scope_is_not_applicable_and_counts_as_done() {
    let mut d = Day::new();
    let applied = d.register("a", 0);
    assert_eq!(applied.task_status, Some(TaskStatus::NotApplicable));
    assert_eq!(applied.ready, vec![d.ix("b"), d.ix("c")]);
    assert!(d.st.is_done(d.ix("a")));
}

// ---------------------------------------------------------------------------------------------
// The fold

#[test]
fn finishing_tasks_readies_successors_once_their_last_dependency_is_done() {
    let mut d = Day::new();
    let applied = d.run("a", 3);
    assert!(applied[..2].iter().all(|a| a.ready.is_empty()), "not before the last shard");
    assert_eq!(applied[2].ready, vec![d.ix("b"), d.ix("c")]);
    assert_eq!(applied[2].task_status, Some(TaskStatus::Succeeded));
    assert!(d.run("b", 1)[0].ready.is_empty());
    assert_eq!(d.run("c", 1)[0].ready, vec![d.ix("d")]);
}

#[test]
fn seq_must_be_exactly_the_next_and_the_day_must_be_open() {
    let mut fresh = DayState::new(date(), diamond());
    let reg = EventKind::TaskReady { task: tid("a") };
    assert_eq!(
        fresh.apply(&DayEvent { seq: 1, at_ms: 0, kind: reg.clone() }),
        Err(Error::NotOpened)
    );
    let open = |d| EventKind::DayOpened { date: d, flow_digest: String::new() };
    let other = BusinessDate::from_ymd(2026, 11, 25).expect("date");
    assert_eq!(
        fresh.apply(&DayEvent { seq: 1, at_ms: 0, kind: open(other) }),
        Err(Error::DateMismatch { expected: date(), got: other })
    );

    let mut d = Day::new();
    d.register("a", 1);
    let before = d.st.clone();
    let gap = DayEvent { seq: 5, at_ms: 0, kind: reg.clone() };
    assert_eq!(d.st.apply(&gap), Err(Error::SeqGap { expected: 3, got: 5 }));
    let replay = DayEvent { seq: 2, at_ms: 0, kind: reg };
    assert_eq!(
        d.st.apply(&replay).unwrap_err().to_string(),
        "event seq 2 is out of order: expected 3"
    );
    assert_eq!(d.st, before);
    d.ok(EventKind::DayClosed);
    assert_eq!(d.ev(EventKind::TaskReady { task: tid("a") }), Err(Error::Closed));
}

#[test]
fn bad_references_are_typed_errors_and_change_nothing() {
    let mut d = Day::new();
    d.register("a", 2);
    let before = d.st.clone();
    assert_eq!(d.shard("zz", 0, SE::Ready), Err(Error::UnknownTask(tid("zz"))));
    assert_eq!(d.shard("b", 0, SE::Ready), Err(Error::NotRegistered(tid("b"))));
    assert_eq!(
        d.shard("a", 2, SE::Ready),
        Err(Error::ShardOutOfRange { task: tid("a"), shard: 2, count: 2 })
    );
    assert_eq!(
        d.ev(EventKind::TaskRegistered {
            task: tid("a"),
            items: vec![],
            shards: vec![],
            covered_dates: vec![]
        }),
        Err(Error::AlreadyRegistered(tid("a")))
    );
    assert_eq!(
        d.ev(EventKind::TaskRegistered {
            task: tid("b"),
            items: vec![],
            shards: vec![ShardKey::new("k"), ShardKey::new("k")],
            covered_dates: vec![]
        }),
        Err(Error::DuplicateShardKey { task: tid("b"), key: ShardKey::new("k") })
    );
    assert_eq!(
        d.ev(EventKind::TaskShards {
            task: tid("a"),
            from: vec![S::Registered, S::Succeeded],
            event: SE::Ready
        }),
        Err(Error::IllegalForTask {
            task: tid("a"),
            source: IllegalTransition { from: S::Succeeded, event: ShardEventKind::Ready }
        })
    );
    assert_eq!(d.st, before);
}

#[test]
fn a_replayed_dispatch_is_rejected_by_its_attempt() {
    let mut d = Day::new();
    d.register("a", 1);
    d.ok(EventKind::TaskReady { task: tid("a") });
    d.dispatch("a", 0);
    d.shard("a", 0, SE::Requeue).expect("requeue");
    let err =
        d.shard("a", 0, SE::Dispatch { attempt: 1, executor: "e".into(), epoch: 0, instance: 0 });
    assert_eq!(err, Err(Error::StaleAttempt { task: tid("a"), shard: 0, last: 1, got: 1 }));
    let v = d.dispatch("a", 0);
    assert_eq!(v.shard.map(|c| c.to), Some(S::Running));
    let view = d.st.shard(d.ix("a"), 0).expect("shard");
    assert_eq!((view.attempt, view.executor, view.key), (2, Some("exec-1"), "P0@D1"));
}

#[test]
fn rollback_bumps_the_generation_and_with_it_the_idempotency_key() {
    let mut d = Day::new();
    d.run("a", 1);
    let a = d.ix("a");
    let key = d.st.idempotency_key(a, 0).expect("key");
    assert_eq!(key.to_string(), "2026-11-24/a/P0@D1/g0");
    d.command(OperatorAction::Rollback { cascade: false }, "a", None).expect("rollback");
    assert_eq!(d.st.task_status(a), TaskStatus::RollingBack);
    assert!(!d.st.is_done(a) && !d.st.dependencies_done(d.ix("b")), "a rollback undoes done");
    assert_eq!(d.st.idempotency_key(a, 0).map(|k| k.generation), Some(0), "not before it ends");
    let applied = d.shard("a", 0, SE::RollbackSucceeded).expect("rolled back");
    assert_eq!(applied.task_status, Some(TaskStatus::RolledBack));
    assert_eq!(
        d.st.idempotency_key(a, 0).map(|k| k.to_string()).as_deref(),
        Some("2026-11-24/a/P0@D1/g1")
    );
    d.command(OperatorAction::Retry, "a", None).expect("retry after rollback");
    d.dispatch("a", 0);
    assert_eq!(d.shard("a", 0, SE::Succeed).expect("ok").ready, vec![d.ix("b"), d.ix("c")]);
}

#[test]
fn checkpoints_survive_a_retry_and_are_reset_by_a_rollback() {
    let mut d = Day::new();
    d.register("a", 1);
    d.ok(EventKind::TaskReady { task: tid("a") });
    d.dispatch("a", 0);
    let cp = |step: u32, generation: u32| EventKind::StepCheckpoint {
        task: tid("a"),
        shard: 0,
        generation,
        step,
        name: format!("step{step}"),
    };
    d.ok(cp(0, 0));
    d.ok(cp(1, 0));
    assert!(matches!(d.ev(cp(1, 0)), Err(Error::InvalidCheckpoint { .. })), "never backwards");
    assert_eq!(
        d.ev(cp(2, 1)),
        Err(Error::StaleGeneration { task: tid("a"), shard: 0, current: 0, got: 1 })
    );
    let a = d.ix("a");
    let resume = |d: &Day| {
        d.st.shard(a, 0).and_then(|v| v.checkpoint).map(|c| (c.steps_done, c.last_step.to_owned()))
    };
    assert_eq!(resume(&d), Some((2, "step1".to_owned())));
    d.shard("a", 0, SE::Fail { reason: "disk full".into() }).expect("fail");
    assert_eq!(d.st.shard(a, 0).and_then(|v| v.last_error), Some("disk full"));
    assert!(matches!(d.ev(cp(2, 0)), Err(Error::InvalidCheckpoint { .. })), "not while failed");
    d.command(OperatorAction::Retry, "a", Some(0)).expect("retry");
    assert_eq!(resume(&d), Some((2, "step1".to_owned())), "a retried shard resumes");
    d.dispatch("a", 0);
    d.shard("a", 0, SE::Fail { reason: "again".into() }).expect("fail");
    d.command(OperatorAction::Rollback { cascade: false }, "a", Some(0)).expect("rollback");
    d.shard("a", 0, SE::RollbackSucceeded).expect("rolled back");
    assert_eq!(resume(&d), None, "a rollback starts the next generation from step 0");
    assert_eq!(d.st.shard(a, 0).and_then(|v| v.last_error), None);
}

#[test]
fn queries_report_scope_and_pages() {
    let mut d = Day::new();
    d.register("a", 5);
    let a = d.ix("a");
    assert_eq!(d.st.scope_items(a)[3], ScopeItem::pair("P3", "D1"));
    assert_eq!(d.st.covered_dates(a), &[date().date()]);
    assert_eq!(d.st.find_shard(a, "P4@D1"), Some(4));
    assert_eq!(d.st.find_shard(a, "nope"), None);
    d.shard("a", 2, SE::Skip).expect("skip");
    let page = d.st.shards(a, Some(S::Registered), 1, 2);
    assert_eq!(page.iter().map(|v| v.index).collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(d.st.counts(a).get(S::Skipped), 1);
    assert!(d.st.registered_at_ms(a).is_some() && d.st.registered_at_ms(d.ix("b")).is_none());
}

// ---------------------------------------------------------------------------------------------
// Commands

#[test]
fn execute_needs_the_dependencies_done() {
    let mut d = Day::new();
    d.register("a", 1);
    d.register("b", 1);
    let err = d.decide(OperatorAction::Execute, "b", None).unwrap_err();
    assert_eq!(
        err,
        CommandError::DependenciesNotDone {
            task: tid("b"),
            action: OperatorAction::Execute,
            waiting_for: vec![tid("a")]
        }
    );
    assert_eq!(err.to_string(), "cannot execute task `b`: it waits for `a` to finish");
    d.run("a", 1);
    let events = d.decide(OperatorAction::Execute, "b", None).expect("ready now");
    assert!(matches!(&events[0], EventKind::Audit(r) if r.actor == "alice"));
    assert_eq!(events[1], EventKind::TaskReady { task: tid("b") });
}

#[test]
fn a_task_level_action_with_no_eligible_shard_says_why() {
    let mut d = Day::new();
    d.run("a", 2);
    let err = d.decide(OperatorAction::Retry, "a", None).unwrap_err();
    assert_eq!(err.to_string(), "no shard of task `a` can be retried: its shards are 2 succeeded");
    let err = d.decide(OperatorAction::Retry, "a", Some(1)).unwrap_err();
    assert_eq!(err.to_string(), "shard 1 of task `a`: cannot retry a shard that is succeeded");
    assert_eq!(
        d.decide(OperatorAction::Stop, "a", Some(7)),
        Err(CommandError::ShardOutOfRange { task: tid("a"), shard: 7, count: 2 })
    );
    assert_eq!(
        d.decide(OperatorAction::Stop, "b", None),
        Err(CommandError::NotRegistered(tid("b")))
    );
}

#[test]
fn task_level_stop_stops_what_can_be_stopped_and_is_audited() {
    let mut d = Day::new();
    d.register("a", 4);
    d.ok(EventKind::TaskReady { task: tid("a") });
    d.dispatch("a", 0);
    d.dispatch("a", 1);
    d.shard("a", 1, SE::Succeed).expect("ok");
    let before = d.st.clone();
    let events = d.decide(OperatorAction::Stop, "a", None).expect("stop");
    assert_eq!(d.st, before, "decide does not mutate");
    assert_eq!(
        events[1],
        EventKind::TaskShards {
            task: tid("a"),
            from: vec![S::Pending, S::Running],
            event: SE::Stop
        }
    );
    d.command(OperatorAction::Stop, "a", None).expect("stop");
    let c = d.st.counts(d.ix("a"));
    assert_eq!((c.get(S::Stopping), c.get(S::Stopped), c.get(S::Succeeded)), (1, 2, 1));
    assert_eq!(d.st.audit_log().len(), 1);
    assert_eq!(d.st.audit_log()[0].record.action, OperatorAction::Stop);
}

#[test]
fn unconfirmed_work_can_be_confirmed_or_marked_failed() {
    let mut d = Day::new();
    d.register("a", 2);
    d.ok(EventKind::TaskReady { task: tid("a") });
    for i in 0..2 {
        d.dispatch("a", i);
        d.shard("a", i, SE::MarkUnconfirmed).expect("unconfirmed");
    }
    assert_eq!(d.st.task_status_of("a"), Some(TaskStatus::Unconfirmed));
    d.command(OperatorAction::Confirm, "a", Some(0)).expect("confirm");
    d.command(OperatorAction::MarkFailed, "a", Some(1)).expect("mark failed");
    assert_eq!(d.st.task_status_of("a"), Some(TaskStatus::Failed));
}

#[test]
fn rolling_back_a_task_whose_dependents_ran_is_refused_unless_cascading_newest_first() {
    let mut d = Day::new();
    d.run("a", 2);
    d.run("b", 1);
    d.run("c", 1);
    d.register("d", 1);
    d.ok(EventKind::TaskReady { task: tid("d") }); // pending: about to run
    let err = d.decide(OperatorAction::Rollback { cascade: false }, "a", None).unwrap_err();
    assert_eq!(
        err,
        CommandError::DependentsRan {
            task: tid("a"),
            dependents: vec![tid("b"), tid("c"), tid("d")]
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot roll back task `a`: `b`, `c`, `d` already ran on its results; roll back with \
         cascade to undo them first"
    );
    assert!(matches!(
        d.decide(OperatorAction::Rollback { cascade: false }, "a", Some(0)),
        Err(CommandError::DependentsRan { .. })
    ));

    let events = d.decide(OperatorAction::Rollback { cascade: true }, "a", None).expect("cascade");
    let order: Vec<(String, ShardEventKind)> = events
        .iter()
        .filter_map(|e| match e {
            EventKind::TaskShards { task, event, .. } => Some((task.to_string(), event.kind())),
            _ => None,
        })
        .collect();
    let k = |t: &str, e| (t.to_owned(), e);
    assert_eq!(
        order,
        vec![
            k("d", ShardEventKind::Stop),
            k("c", ShardEventKind::Rollback),
            k("b", ShardEventKind::Rollback),
            k("a", ShardEventKind::Rollback)
        ]
    );
    for e in events {
        d.ok(e);
    }
    for t in ["a", "b", "c"] {
        assert_eq!(d.st.task_status_of(t), Some(TaskStatus::RollingBack));
    }
    assert_eq!(d.st.task_status_of("d"), Some(TaskStatus::Stopped));

    // A dependent with work in progress blocks the cascade.
    let mut d = Day::new();
    d.run("a", 1);
    d.register("b", 1);
    d.ok(EventKind::TaskReady { task: tid("b") });
    d.dispatch("b", 0);
    let err = d.decide(OperatorAction::Rollback { cascade: true }, "a", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot roll back task `a` with cascade: dependent `b` has work in progress (1 running); \
         stop it first"
    );
}

// ---------------------------------------------------------------------------------------------
// Hold, free, force-start

#[test]
fn a_task_is_held_before_its_registration_and_freed_once() {
    let mut d = Day::new();
    let b = d.ix("b");
    d.command(OperatorAction::Hold, "b", None).expect("hold an unregistered task");
    assert_eq!(d.st.held_by(b, None), Some("alice"));
    let err = d.decide(OperatorAction::Hold, "b", None).unwrap_err();
    assert_eq!(err.to_string(), "task `b` is already held by alice");
    // Registered while held: the hold stays.
    d.register("b", 2);
    assert!(d.st.run_held(b, 1));
    d.command(OperatorAction::Free, "b", None).expect("free");
    assert!(!d.st.run_held(b, 1));
    let err = d.decide(OperatorAction::Free, "b", None).unwrap_err();
    assert_eq!(err.to_string(), "task `b` is not held");
}

#[test]
fn a_shard_is_held_unless_done_and_a_done_task_is_not_held() {
    let mut d = Day::new();
    d.run("a", 2);
    let err = d.decide(OperatorAction::Hold, "a", None).unwrap_err();
    assert_eq!(err.to_string(), "task `a` is done (succeeded): there is nothing to hold");
    let err = d.decide(OperatorAction::Hold, "a", Some(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "shard 0 of task `a` is done (succeeded): there is nothing to hold"
    );
    let err = d.decide(OperatorAction::Hold, "c", Some(0)).unwrap_err();
    assert_eq!(err, CommandError::NotRegistered(tid("c")));
    d.register("b", 3);
    let err = d.decide(OperatorAction::Hold, "b", Some(3)).unwrap_err();
    assert!(matches!(err, CommandError::ShardOutOfRange { shard: 3, count: 3, .. }), "{err}");
    d.command(OperatorAction::Hold, "b", Some(1)).expect("hold a registered shard");
    let b = d.ix("b");
    assert!(d.st.run_held(b, 1) && !d.st.run_held(b, 0));
    assert_eq!(d.st.shard(b, 1).and_then(|v| v.held_by), Some("alice"));
    // Freeing a shard of a held task that is not itself held says what to free.
    d.command(OperatorAction::Hold, "b", None).expect("hold the task too");
    let err = d.decide(OperatorAction::Free, "b", Some(0)).unwrap_err();
    assert_eq!(err.to_string(), "shard 0 of task `b` is not held (its task is: free the task)");
    // Audited: the audit record comes first.
    let events = d.decide(OperatorAction::Free, "b", Some(1)).expect("free the shard");
    assert!(matches!(&events[0], EventKind::Audit(a) if a.action == OperatorAction::Free));
    assert_eq!(events[1], EventKind::Free { task: tid("b"), shard: Some(1) });
}

#[test]
fn force_start_needs_a_reason_and_readies_a_task_whose_dependencies_are_not_done() {
    let mut d = Day::new();
    let with_reason = |reason: &str| Command {
        actor: "alice".into(),
        from: "console".into(),
        reason: reason.into(),
        action: OperatorAction::ForceStart,
        target: Target { task: tid("b"), shard: None },
    };
    let err = decide(&d.st, &with_reason("  ")).unwrap_err();
    assert_eq!(err, CommandError::ReasonRequired { action: OperatorAction::ForceStart });
    assert_eq!(err.to_string(), "force-start needs a reason: say why (it is audited)");
    let err = d.decide(OperatorAction::ForceStart, "b", Some(0)).unwrap_err();
    assert_eq!(err, CommandError::ForceStartOfShard { task: tid("b") });
    // Unregistered: the force-start is recorded; the core registers the task.
    let events = decide(&d.st, &with_reason("the upstream feed is late")).expect("force");
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], EventKind::ForceStarted { task: tid("b") });
    for e in events {
        d.ok(e);
    }
    let b = d.ix("b");
    assert!(d.st.is_forced(b) && !d.st.dependencies_done(b));
    let err = d.decide(OperatorAction::ForceStart, "b", None).unwrap_err();
    assert_eq!(err, CommandError::AlreadyForced(tid("b")));
    // Registered with registered shards: readied in the same batch.
    d.register("c", 2);
    let events = d.decide(OperatorAction::ForceStart, "c", None).expect("force c");
    assert_eq!(events.last(), Some(&EventKind::TaskReady { task: tid("c") }));
    for e in events {
        d.ok(e);
    }
    assert_eq!(d.st.counts(d.ix("c")).get(ShardStatus::Pending), 2);
    let err = d.decide(OperatorAction::ForceStart, "c", None).unwrap_err();
    assert!(matches!(err, CommandError::NothingEligible { .. }), "{err}");
}

#[test]
fn holds_and_force_starts_survive_a_snapshot_and_are_checked_when_applied() {
    let mut d = Day::new();
    d.register("a", 2);
    d.command(OperatorAction::Hold, "a", Some(1)).expect("hold shard");
    d.command(OperatorAction::Hold, "d", None).expect("hold d");
    d.ok(EventKind::ForceStarted { task: tid("c") });
    let back = DayState::decode_snapshot(&d.st.encode_snapshot(), diamond()).expect("decodes");
    assert_eq!(back, d.st);
    assert_eq!(back.held_by(back.graph().index_of("d").expect("d"), None), Some("alice"));
    // The fold refuses what decide would: a second hold, a free of nothing.
    let again = EventKind::Hold { task: tid("d"), shard: None, by: "bob".into() };
    assert!(matches!(d.ev(again), Err(Error::Hold { reason: "already held", .. })));
    let free = EventKind::Free { task: tid("b"), shard: None };
    assert!(matches!(d.ev(free), Err(Error::Hold { reason: "not held", .. })));
}

// ---------------------------------------------------------------------------------------------
// Codec

/// A small day touching every part of snapshot format 1.
fn golden_day_v1() -> Day {
    let mut d = Day::new();
    d.run("a", 2);
    d.register("b", 3);
    d.ok(EventKind::TaskReady { task: tid("b") });
    d.dispatch("b", 0);
    d.ok(EventKind::StepCheckpoint {
        task: tid("b"),
        shard: 0,
        generation: 0,
        step: 0,
        name: "load".into(),
    });
    d.shard("b", 0, SE::Fail { reason: "no quotes".into() }).expect("fail");
    d.command(OperatorAction::Skip, "b", Some(1)).expect("skip");
    d.register("c", 0);
    d
}

/// The golden day with what snapshot format 2 added: holds and a force-start.
fn golden_day() -> DayState {
    let mut d = golden_day_v1();
    d.command(OperatorAction::Hold, "b", Some(2)).expect("hold shard");
    d.command(OperatorAction::Hold, "d", None).expect("hold task");
    d.ok(EventKind::ForceStarted { task: tid("d") });
    d.st
}

fn fixture(name: &str, bytes: &[u8]) -> Vec<u8> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/state/fixtures").join(name);
    if std::env::var_os("TASKFLOW_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write fixture");
    }
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with TASKFLOW_BLESS=1)", path.display()))
}

#[test]
fn snapshot_golden_bytes() {
    let day = golden_day();
    let bytes = day.encode_snapshot();
    let golden = fixture("day_snapshot_v3.bin", &bytes);
    assert_eq!(bytes, golden, "the snapshot format changed: bump its version and add a migration");
    let decoded = DayState::decode_snapshot(&golden, diamond()).expect("fixture decodes");
    assert_eq!(decoded, day);
    assert_eq!(decoded.task_status_of("b"), Some(TaskStatus::Running), "1 pending after a failure");
    assert_eq!(decoded.task_status_of("c"), Some(TaskStatus::NotApplicable));
}

fn golden_events() -> Vec<DayEvent> {
    vec![
        DayEvent {
            seq: 7,
            at_ms: 1_764_000_000_000,
            kind: EventKind::Shard {
                task: tid("confirm_trades"),
                shard: 3,
                event: SE::Dispatch {
                    attempt: 2,
                    executor: "exec-1".into(),
                    epoch: 0,
                    instance: 0,
                },
            },
        },
        DayEvent {
            seq: 8,
            at_ms: 1_764_000_000_001,
            kind: EventKind::TaskRegistered {
                task: tid("nav"),
                items: vec![ScopeItem::pair("P1", "D1"), ScopeItem::system()],
                shards: vec![ShardKey::new("P1@D1")],
                covered_dates: vec![date().date()],
            },
        },
    ]
}

fn framed(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let n = u32::from_le_bytes(*len) as usize;
        out.push(tail[..n].to_vec());
        rest = &tail[n..];
    }
    out
}

/// The events of version 2: version 1's and `rollback_then_retry`.
fn golden_events_v2() -> Vec<DayEvent> {
    let mut events = golden_events();
    events.push(DayEvent {
        seq: 9,
        at_ms: 1_764_000_000_002,
        kind: EventKind::Shard { task: tid("nav"), shard: 0, event: SE::RollbackThenRetry },
    });
    events
}

#[test]
fn event_golden_bytes() {
    let mut events = golden_events_v2();
    let audit = |action| {
        EventKind::Audit(AuditRecord {
            actor: "alice".into(),
            action,
            target: Target { task: tid("nav"), shard: None },
            reason: "feed late".into(),
            from: "console".into(),
        })
    };
    for (seq, kind) in [
        (10, audit(OperatorAction::Hold)),
        (11, EventKind::Hold { task: tid("nav"), shard: None, by: "alice".into() }),
        (12, EventKind::Hold { task: tid("nav"), shard: Some(0), by: "bob".into() }),
        (13, EventKind::Free { task: tid("nav"), shard: Some(0) }),
        (14, audit(OperatorAction::ForceStart)),
        (15, EventKind::ForceStarted { task: tid("nav") }),
    ] {
        events.push(DayEvent { seq, at_ms: 1_764_000_000_000 + seq as i64, kind });
    }
    let mut all = Vec::new();
    for e in &events {
        let b = e.encode();
        assert_eq!(DayEvent::decode(&b).as_ref(), Ok(e));
        all.extend_from_slice(&(b.len() as u32).to_le_bytes());
        all.extend_from_slice(&b);
    }
    let golden = fixture("day_events_v3.bin", &all);
    assert_eq!(all, golden, "the event format changed: bump its version");
}

#[test]
fn events_of_version_2_are_still_read() {
    let bytes = kept_fixture("day_events_v2.bin");
    let decoded: Vec<DayEvent> = framed(&bytes)
        .iter()
        .map(|b| {
            assert_eq!(b[0], 2, "written by version 2");
            DayEvent::decode(b).expect("a v2 event decodes")
        })
        .collect();
    assert_eq!(decoded, golden_events_v2());
}

/// The bytes of a fixture of an older format version, kept under test and never blessed.
fn kept_fixture(name: &str) -> Vec<u8> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/state/fixtures").join(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (an old fixture is kept)", path.display()))
}

#[test]
fn events_of_version_1_are_still_read() {
    let bytes = kept_fixture("day_events_v1.bin");
    let decoded: Vec<DayEvent> = framed(&bytes)
        .iter()
        .map(|b| {
            assert_eq!(b[0], 1, "written by version 1");
            DayEvent::decode(b).expect("a v1 event decodes")
        })
        .collect();
    assert_eq!(decoded, golden_events());
}

#[test]
fn snapshots_of_row_schema_1_are_still_read_with_the_old_retry_budget() {
    let bytes = kept_fixture("day_snapshot_v1.bin");
    assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), 1, "row schema 1");
    let decoded = DayState::decode_snapshot(&bytes, diamond()).expect("a v1 snapshot decodes");
    let day = golden_day_v1().st;
    // Everything but the failure count equals today's fold; the failure count is the attempt,
    // the budget row schema 1's versions spent (so an upgrade neither adds nor takes retries).
    let b = day.graph().index_of("b").expect("b");
    for i in 0..3 {
        let (old, new) = (decoded.shard(b, i).expect("shard"), day.shard(b, i).expect("shard"));
        assert_eq!(old.failures, old.attempt);
        assert_eq!(ShardView { failures: new.attempt, ..new }, old);
    }
    assert_eq!(decoded.encode_snapshot().len(), day.encode_snapshot().len());
}

#[test]
fn snapshots_of_format_1_are_still_read_without_holds() {
    let bytes = kept_fixture("day_snapshot_v2.bin");
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 1, "format 1");
    let decoded = DayState::decode_snapshot(&bytes, diamond()).expect("a format 1 snapshot");
    assert_eq!(decoded, golden_day_v1().st);
    assert_eq!(decoded.holds().count(), 0);
}

#[test]
fn unknown_future_versions_are_rejected_clearly() {
    let mut bytes = golden_day().encode_snapshot();
    bytes[4..6].copy_from_slice(&3u16.to_le_bytes());
    let err = DayState::decode_snapshot(&bytes, diamond()).unwrap_err();
    assert_eq!(err, CodecError::UnsupportedVersion { what: "snapshot", found: 3, supported: 2 });
    assert_eq!(
        err.to_string(),
        "unsupported snapshot format version 3 (this build reads version 2); upgrade taskflow to \
         read it"
    );
    bytes[4..6].copy_from_slice(&2u16.to_le_bytes());
    bytes[6..8].copy_from_slice(&9u16.to_le_bytes());
    assert_eq!(
        DayState::decode_snapshot(&bytes, diamond()),
        Err(CodecError::UnsupportedVersion { what: "shard row", found: 9, supported: 2 })
    );
    let mut ev = DayEvent { seq: 1, at_ms: 0, kind: EventKind::DayClosed }.encode();
    ev[0] = 4;
    assert_eq!(
        DayEvent::decode(&ev),
        Err(CodecError::UnsupportedVersion { what: "event", found: 4, supported: 3 })
    );
}

#[test]
fn truncated_garbage_and_mismatched_snapshots_are_typed_errors() {
    let bytes = golden_day().encode_snapshot();
    for n in 0..bytes.len() {
        assert!(DayState::decode_snapshot(&bytes[..n], diamond()).is_err(), "prefix {n}");
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert_eq!(
        DayState::decode_snapshot(&extra, diamond()),
        Err(CodecError::TrailingBytes { what: "snapshot" })
    );
    assert_eq!(DayState::decode_snapshot(b"NOPE\x01\x00", diamond()), Err(CodecError::BadMagic));
    let other = Arc::new(TaskGraph::build([(tid("x"), vec![])]).expect("graph"));
    assert!(matches!(DayState::decode_snapshot(&bytes, other), Err(CodecError::GraphMismatch(_))));
    for n in 0..12 {
        let ev =
            DayEvent { seq: 1, at_ms: 0, kind: EventKind::TaskReady { task: tid("a") } }.encode();
        if n < ev.len() {
            assert!(DayEvent::decode(&ev[..n]).is_err());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

#[derive(Debug, Clone)]
enum Op {
    Event(EventKind),
    BadSeq(EventKind, u64),
    Cmd(OperatorAction, usize, Option<u32>),
}

const TASKS: [&str; 5] = ["a", "b", "c", "d", "zz"];

fn shard_event() -> impl Strategy<Value = ShardEvent> {
    prop_oneof![
        3 => Just(SE::Ready),
        3 => (0u32..5, 0usize..2, 0u64..3).prop_map(|(attempt, e, epoch)| SE::Dispatch {
            attempt,
            executor: ["e1", "e2"][e].into(),
            epoch,
            instance: epoch * 7,
        }),
        3 => Just(SE::Succeed),
        2 => Just(SE::Fail { reason: "boom".into() }),
        1 => Just(SE::Stop),
        1 => Just(SE::StopAcknowledged),
        1 => Just(SE::Skip),
        2 => Just(SE::Retry),
        2 => Just(SE::Rollback),
        2 => Just(SE::RollbackSucceeded),
        1 => Just(SE::RollbackFailed { reason: "x".into() }),
        1 => Just(SE::Requeue),
        1 => Just(SE::MarkUnconfirmed),
        1 => Just(SE::Confirm),
        1 => Just(SE::MarkFailed),
    ]
}

fn task() -> impl Strategy<Value = TaskId> {
    prop_oneof![10 => 0usize..4, 1 => Just(4usize)].prop_map(|i| tid(TASKS[i]))
}

fn event_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        3 => (task(), 0usize..4).prop_map(|(task, n)| EventKind::TaskRegistered {
            task,
            items: (0..n).map(|i| ScopeItem::product(format!("P{}", i % 2))).collect(),
            shards: (0..n).map(|i| ShardKey::new(format!("k{i}"))).collect(),
            covered_dates: vec![],
        }),
        2 => task().prop_map(|task| EventKind::TaskReady { task }),
        12 => (task(), 0u32..4, shard_event()).prop_map(|(task, shard, event)| EventKind::Shard { task, shard, event }),
        2 => (task(), proptest::sample::subsequence(ShardStatus::ALL.to_vec(), 0..3), shard_event())
            .prop_map(|(task, from, event)| EventKind::TaskShards { task, from, event }),
        2 => (task(), 0u32..4, 0u32..2, 0u32..3).prop_map(|(task, shard, generation, step)| {
            EventKind::StepCheckpoint { task, shard, generation, step, name: format!("s{step}") }
        }),
        1 => Just(EventKind::Audit(AuditRecord {
            actor: "bob".into(),
            action: OperatorAction::Skip,
            target: Target { task: tid("a"), shard: None },
            reason: "r".into(),
            from: "cli".into(),
        })),
    ]
}

fn action() -> impl Strategy<Value = OperatorAction> {
    prop_oneof![
        Just(OperatorAction::Execute),
        Just(OperatorAction::Stop),
        Just(OperatorAction::Skip),
        Just(OperatorAction::Retry),
        any::<bool>().prop_map(|cascade| OperatorAction::Rollback { cascade }),
        Just(OperatorAction::Confirm),
        Just(OperatorAction::MarkFailed),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => event_kind().prop_map(Op::Event),
        1 => (event_kind(), prop_oneof![Just(0u64), 2u64..4]).prop_map(|(k, s)| Op::BadSeq(k, s)),
        4 => (action(), 0usize..5, proptest::option::of(0u32..4)).prop_map(|(a, t, s)| Op::Cmd(a, t, s)),
        1 => Just(Op::Event(EventKind::DayClosed)),
    ]
}

fn statuses(st: &DayState, ix: TaskIx) -> Vec<ShardStatus> {
    (0..st.shard_count(ix)).filter_map(|i| st.shard(ix, i).map(|v| v.status)).collect()
}

/// Everything derived equals a recomputation from the shards.
fn check_invariants(st: &DayState) -> Result<(), TestCaseError> {
    let g = st.graph().clone();
    for ix in g.indices() {
        let shards = statuses(st, ix);
        let counts: StatusCounts = shards.iter().copied().collect();
        prop_assert_eq!(&counts, st.counts(ix));
        let derived = TaskStatus::derive(st.is_registered(ix), &counts);
        prop_assert_eq!(derived, st.task_status(ix));
        let done = st.is_registered(ix) && shards.iter().all(|s| s.is_done());
        prop_assert_eq!(done, st.is_done(ix));
        prop_assert_eq!(done, derived.is_done());
        let deps = g.predecessors(ix).iter().all(|&p| st.is_done(p));
        prop_assert_eq!(deps, st.dependencies_done(ix));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_respect_the_table_and_the_derivations(ops in proptest::collection::vec(op(), 1..80)) {
        let mut d = Day::new();
        let mut accepted = vec![DayEvent { seq: 1, at_ms: 1_700_000_001_000, kind: EventKind::DayOpened { date: date(), flow_digest: "sha256:abc".into() } }];
        for op in ops {
            let kinds = match op {
                Op::Event(k) => vec![k],
                Op::BadSeq(kind, s) => {
                    let before = d.st.clone();
                    let seq = if s == 0 { d.st.last_seq() } else { d.st.last_seq() + s };
                    let r = d.st.apply(&DayEvent { seq, at_ms: 0, kind });
                    let is_gap = matches!(r, Err(Error::SeqGap { .. }));
                    prop_assert!(is_gap);
                    prop_assert_eq!(&d.st, &before);
                    continue;
                }
                Op::Cmd(a, t, s) => match d.decide(a, TASKS[t], s) {
                    // Whatever decide returns applies cleanly, in order.
                    Ok(events) => {
                        for k in events {
                            let seq = d.st.last_seq() + 1;
                            let e = DayEvent { seq, at_ms: seq as i64, kind: k };
                            prop_assert!(d.st.apply(&e).is_ok(), "decided event refused: {:?}", e);
                            accepted.push(e);
                        }
                        check_invariants(&d.st)?;
                        continue;
                    }
                    Err(_) => continue,
                },
            };
            for kind in kinds {
                let before = d.st.clone();
                let seq = d.st.last_seq() + 1;
                let e = DayEvent { seq, at_ms: seq as i64, kind };
                match d.st.apply(&e) {
                    Err(_) => prop_assert_eq!(&d.st, &before, "a refused event changed the state"),
                    Ok(_) => {
                        let changed_ix = match &e.kind {
                            EventKind::Shard { task, .. } | EventKind::TaskShards { task, .. } | EventKind::TaskReady { task } => d.st.graph().index_of(task.as_str()),
                            _ => None,
                        };
                        if let Some(ix) = changed_ix {
                            let ev_kind = match &e.kind {
                                EventKind::Shard { event, .. } | EventKind::TaskShards { event, .. } => event.kind(),
                                _ => ShardEventKind::Ready,
                            };
                            for (old, new) in statuses(&before, ix).into_iter().zip(statuses(&d.st, ix)) {
                                if old != new {
                                    prop_assert!(TRANSITIONS.contains(&(old, ev_kind, new)), "{:?} --{:?}--> {:?} is not in the table", old, ev_kind, new);
                                }
                            }
                        }
                        accepted.push(e);
                    }
                }
                check_invariants(&d.st)?;
            }
        }
        // Snapshot round trip.
        let bytes = d.st.encode_snapshot();
        let decoded = DayState::decode_snapshot(&bytes, diamond());
        prop_assert_eq!(decoded.as_ref(), Ok(&d.st));
        // Determinism: the same events, folded again (through the event codec), give the same bytes.
        let mut again = DayState::new(date(), diamond());
        for e in &accepted {
            let e = DayEvent::decode(&e.encode());
            prop_assert!(e.is_ok());
            if let Ok(e) = e {
                prop_assert!(again.apply(&e).is_ok());
            }
        }
        prop_assert_eq!(again.encode_snapshot(), bytes);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let _ = DayState::decode_snapshot(&bytes, diamond());
        let _ = DayEvent::decode(&bytes);
        let mut good = golden_day().encode_snapshot();
        for (i, b) in flips {
            let n = good.len();
            good[i % n] = b;
        }
        if let Ok(st) = DayState::decode_snapshot(&good, diamond()) {
            check_invariants(&st)?;
        }
    }
}
