//! The executor side of cluster protocol 3, with a real `taskflow executor` process joined to a
//! [`FakeManager`] that sends it messages in orders a real manager produces only under load or
//! faults, and answers (or does not answer) its calls:
//!
//! - every assignment the executor does not run is answered: an older epoch's (it overtook the
//!   join's answer) and one onto a busy slot are `Refused` (naming the job on the slot); one to
//!   no slot or a malformed one fails;
//! - a re-joining executor names its busy slots in `Join`;
//! - an unanswered checkpoint is held (also in `DIR/held/`), sent again, and the shard goes
//!   on; unanswered when the executor fences, it rides with the interrupted outcome into the
//!   next `Join`;
//! - the executor fences itself at lease − lease/5 after the send of its last acknowledged
//!   heartbeat, whatever the heartbeat interval, and refuses a manager whose lease and
//!   heartbeat break the fencing bound.

#[path = "cluster_common/mod.rs"]
mod support;

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;
use taskflow_core::cluster::codec;
use taskflow_core::cluster::messages::{
    AssignMsg, BusySlot, HeldOutcome, Join, LastStep, Reply, ReportBody, ToExecutor, ToManager,
    WireAttempt, WireJobKind, WireOutcome,
};
use taskflow_core::cluster::testing::{FakeManager, Incoming};
use taskflow_core::model::ScopeItem;
use tokio::sync::mpsc::UnboundedReceiver;

const EPOCH: u64 = 7;
const CLUSTER_ID: &str = "c0ffee";

fn key(task: &str) -> WireAttempt {
    WireAttempt {
        task: task.into(),
        shard: 0,
        attempt: 1,
        generation: 0,
        kind: WireJobKind::Run,
        date: DATE.into(),
        cluster_id: CLUSTER_ID.into(),
        dispatch: 0,
    }
}

fn assign(epoch: u64, task: &str, slot: u32, behavior: &str, params: &[(&str, &str)]) -> AssignMsg {
    AssignMsg {
        epoch,
        key: key(task),
        slot,
        behavior: behavior.into(),
        date: DATE.into(),
        shard_key: "s0".into(),
        scope: vec![ScopeItem::system()],
        covered_dates: vec![DATE.into()],
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        completed_steps: 0,
        timeout_ms: None,
    }
}

fn reply(msg: &Reply) -> Vec<u8> {
    codec::encode("reply", msg).unwrap()
}

/// How the fake manager answers heartbeats.
#[derive(Clone, Copy, PartialEq)]
enum Beat {
    /// `ok: true`.
    Ack,
    /// `ok: false`: the executor is told it was declared lost, so it fences and re-joins.
    Lost,
    /// Not at all (the call's port is kept open, as a stalled manager would).
    Ignore,
}

/// What the executor sent, one message at a time (batches unpacked).
enum Got {
    Call(ToManager, Incoming),
    Cast(ToManager),
}

/// A real executor process joined to a fake manager.
struct Session {
    rt: tokio::runtime::Runtime,
    fake: FakeManager,
    rx: UnboundedReceiver<Incoming>,
    exec: Proc,
    join: Join,
    beat: Beat,
    /// When the last heartbeat answered `ok: true` arrived.
    last_acked: Option<Instant>,
    parked: Vec<Incoming>,
    queued: VecDeque<ToManager>,
}

impl Session {
    /// Spawns `taskflow executor` with `args` and returns once its first `Join` arrived
    /// (unanswered: see [`Session::accept`]).
    fn start(args: &[&str], env: &[(&str, &str)]) -> (Session, Incoming) {
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        let rt = rt.worker_threads(2).enable_all().build().unwrap();
        let addr = free_addr();
        let (fake, rx) = rt
            .block_on(FakeManager::start(addr.parse().unwrap(), COOKIE))
            .expect("the fake manager listens");
        let mut all = vec!["executor", "--manager", &addr, "--name", "e1"];
        all.extend_from_slice(args);
        let exec = Proc::spawn(&all, env);
        let mut s = Session {
            rt,
            fake,
            rx,
            exec,
            join: placeholder_join(),
            beat: Beat::Ack,
            last_acked: None,
            parked: Vec::new(),
            queued: VecDeque::new(),
        };
        let (join, call) = s.next_join(Duration::from_secs(30));
        s.join = join;
        (s, call)
    }

    fn accept(&self, call: Incoming, lease_ms: u64, heartbeat_ms: u64) {
        call.answer(reply(&Reply::JoinAccepted {
            epoch: EPOCH,
            lease_ms,
            heartbeat_ms,
            cluster_id: CLUSTER_ID.into(),
            date: DATE.into(),
        }));
    }

    fn cast(&self, msg: ToExecutor) {
        let bytes = codec::encode("manager message", &msg).unwrap();
        self.fake.cast_to_executor(&self.join.executor, self.join.instance, bytes).unwrap();
    }

    /// The next message other than a heartbeat (answered as `self.beat` says), or `None`
    /// after `within`.
    fn next(&mut self, within: Duration) -> Option<Got> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(m) = self.queued.pop_front() {
                return Some(Got::Cast(m));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let incoming = self
                .rt
                .block_on(async { tokio::time::timeout(left, self.rx.recv()).await })
                .ok()
                .flatten()?;
            let msg: ToManager = codec::decode("executor message", &incoming.bytes)
                .expect("the executor sends envelopes");
            match msg {
                ToManager::Heartbeat(hb) => match self.beat {
                    Beat::Ack => {
                        self.last_acked = Some(Instant::now());
                        incoming.answer(reply(&Reply::HeartbeatAck { seq: hb.seq, ok: true }));
                    }
                    Beat::Lost => {
                        incoming.answer(reply(&Reply::HeartbeatAck { seq: hb.seq, ok: false }))
                    }
                    Beat::Ignore => self.parked.push(incoming),
                },
                ToManager::Batch(items) => self.queued.extend(items),
                m @ (ToManager::Join(_)
                | ToManager::Checkpoint(_)
                | ToManager::Drain(_)
                | ToManager::Leave(_)) => return Some(Got::Call(m, incoming)),
                other => return Some(Got::Cast(other)),
            }
        }
    }

    /// Waits for a cast matching `f`, skipping (and answering ok) everything else.
    fn wait_cast<T>(&mut self, within: Duration, mut f: impl FnMut(&ToManager) -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                None => panic!("not received within {within:?}; executor:\n{}", self.exec.output()),
                Some(Got::Cast(m)) => {
                    if let Some(t) = f(&m) {
                        return t;
                    }
                }
                Some(Got::Call(ToManager::Checkpoint(_), call)) => {
                    call.answer(reply(&Reply::CheckpointAck { error: None }))
                }
                Some(Got::Call(m, _)) => panic!("unexpected call {m:?}"),
            }
        }
    }

    /// The report about `key` matching `f`.
    fn wait_report<T>(
        &mut self,
        key: &WireAttempt,
        within: Duration,
        mut f: impl FnMut(&ReportBody) -> Option<T>,
    ) -> T {
        let key = key.clone();
        self.wait_cast(within, |m| match m {
            ToManager::Report(r) if r.key == key => f(&r.body),
            _ => None,
        })
    }

    /// The next `Join` (checkpoints answered ok, casts skipped).
    fn next_join(&mut self, within: Duration) -> (Join, Incoming) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                None => panic!("no join within {within:?}; executor:\n{}", self.exec.output()),
                Some(Got::Call(ToManager::Join(j), call)) => return (j, call),
                Some(Got::Call(ToManager::Checkpoint(_), call)) => {
                    call.answer(reply(&Reply::CheckpointAck { error: None }))
                }
                Some(_) => {}
            }
        }
    }
}

fn placeholder_join() -> Join {
    Join {
        executor: String::new(),
        instance: 0,
        protocol_version: 0,
        slots: 0,
        behaviors: Vec::new(),
        held_outcomes: Vec::new(),
        replicas: Vec::new(),
        seen_epoch: 0,
        keeps_replica: false,
        busy_slots: Vec::new(),
    }
}

/// Waits (bounded) until the held outcomes in `data/held/` are `expected` (they are written
/// in the background).
fn wait_held(data: &Path, expected: &[HeldOutcome], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let found = held_files(data);
        if found == expected {
            return;
        }
        assert!(Instant::now() < deadline, "held on disk: {found:?}, expected {expected:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The held outcomes in `data/held/`.
fn held_files(data: &Path) -> Vec<HeldOutcome> {
    let Ok(dir) = std::fs::read_dir(data.join("held")) else { return Vec::new() };
    dir.flatten()
        .filter(|f| f.path().extension().is_some_and(|x| x == "held"))
        .filter_map(|f| codec::decode("held outcome", &std::fs::read(f.path()).ok()?).ok())
        .collect()
}

#[test]
fn an_assignment_older_than_the_registration_is_refused_out_loud() {
    // The regression: an `Assign` of a lower epoch than the executor's (epochs start again at 1
    // with each day's store; an assignment can overtake the join's answer) was dropped with no
    // report, and the shard stayed running on the manager for ever.
    let (mut s, call) = Session::start(&["--slots", "1"], &[JOB_STARTED_LOG]);
    s.accept(call, 60_000, 10_000);
    assert!(s.exec.wait_for("joined the manager", Duration::from_secs(30)), "{}", s.exec.output());
    let old = assign(EPOCH - 2, "t", 0, "noop", &[]);
    s.cast(ToExecutor::Assign(old.clone()));
    let reason = s.wait_report(&old.key, Duration::from_secs(10), |b| match b {
        ReportBody::Refused { reason, busy: None } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.contains("older than this executor's registration"), "{reason}");
    assert!(!s.exec.output().contains("job started"), "it did not run:\n{}", s.exec.output());
}

#[test]
fn every_assignment_the_executor_cannot_run_is_answered() {
    let (mut s, call) = Session::start(&["--slots", "1"], &[JOB_STARTED_LOG]);
    s.accept(call, 60_000, 10_000);
    let long = assign(EPOCH, "long", 0, "command", &[("shell", "sleep 5")]);
    s.cast(ToExecutor::Assign(long.clone()));
    assert!(s.exec.wait_for_line(&["job started", "long[0]"], Duration::from_secs(30)));

    // Onto the busy slot: refused, naming the job still there (it used to fail as "slot
    // busy", a spent retry).
    let onto_busy = assign(EPOCH, "second", 0, "noop", &[]);
    s.cast(ToExecutor::Assign(onto_busy.clone()));
    let busy = s.wait_report(&onto_busy.key, Duration::from_secs(10), |b| match b {
        ReportBody::Refused { busy, .. } => Some(busy.clone()),
        other => panic!("a busy slot is refused, not {other:?}"),
    });
    let expected = BusySlot { slot: 0, epoch: EPOCH, key: long.key.clone(), abandoned: false };
    assert_eq!(busy, Some(expected));

    // To a slot it does not have, and malformed: failed (sent again, they would fail again),
    // never dropped.
    let nowhere = assign(EPOCH, "nowhere", 3, "noop", &[]);
    s.cast(ToExecutor::Assign(nowhere.clone()));
    let reason = s.wait_report(&nowhere.key, Duration::from_secs(10), |b| match b {
        ReportBody::Finished { outcome: WireOutcome::Failed { reason }, .. } => {
            Some(reason.clone())
        }
        _ => None,
    });
    assert!(reason.contains("slot 3 does not exist"), "{reason}");
    let mut bad = assign(EPOCH, "bad", 0, "noop", &[]);
    bad.date = "2026-02-30".into();
    s.cast(ToExecutor::Assign(bad.clone()));
    let reason = s.wait_report(&bad.key, Duration::from_secs(10), |b| match b {
        ReportBody::Finished { outcome: WireOutcome::Failed { reason }, .. } => {
            Some(reason.clone())
        }
        _ => None,
    });
    assert!(reason.contains("malformed assignment"), "{reason}");
}

#[test]
fn a_rejoining_executor_names_its_busy_slots() {
    // A job stuck in a blocking call outlives the fence: the slot runner abandons it (after
    // 1.5 × the stop grace) but the slot stays busy until it returns. The re-join says so, or
    // the manager would assign onto the slot (a "slot busy" failure, a spent retry) or, after
    // a manager restart, run the shard a second time while it still runs.
    let (mut s, call) = Session::start(
        &["--slots", "1", "--stop-grace-ms", "300"],
        &[JOB_STARTED_LOG, ("TASKFLOW_INJECT_FAILURES", "stuck:*:stuck20")],
    );
    s.accept(call, 60_000, 200);
    let stuck = assign(EPOCH, "stuck", 0, "fund.day_init", &[]);
    s.cast(ToExecutor::Assign(stuck.clone()));
    assert!(s.exec.wait_for_line(&["job started", "stuck[0]"], Duration::from_secs(30)));
    s.beat = Beat::Lost;
    let fenced = s.wait_report(&stuck.key, Duration::from_secs(15), |b| match b {
        ReportBody::Abandoned { fenced, .. } => Some(*fenced),
        _ => None,
    });
    assert!(fenced, "abandoned after the executor fenced it");
    s.beat = Beat::Ack;
    let (join, _call) = s.next_join(Duration::from_secs(15));
    assert_eq!(
        join.busy_slots,
        vec![BusySlot { slot: 0, epoch: EPOCH, key: stuck.key, abandoned: true }],
        "{}",
        s.exec.output()
    );
}

#[test]
fn an_unanswered_checkpoint_is_held_and_sent_again_and_the_shard_goes_on() {
    // The regression: a step whose checkpoint got no answer failed the shard ("step N
    // completed but checkpoint not recorded: the manager did not confirm the checkpoint"): a
    // spent retry, e.g. whenever the manager was killed mid-shard.
    let data = tempfile::tempdir().unwrap();
    let args = ["--slots", "1", "--data", data.path().to_str().unwrap()];
    let (mut s, call) = Session::start(&args, &[("TASKFLOW_FUND_STEP_DELAY", "30ms")]);
    s.accept(call, 1000, 200);
    let job = assign(EPOCH, "day_init", 0, "fund.day_init", &[]);
    s.cast(ToExecutor::Assign(job.clone()));
    let first = loop {
        match s.next(Duration::from_secs(30)) {
            Some(Got::Call(ToManager::Checkpoint(cp), call)) => break (cp, call),
            Some(_) => {}
            None => panic!("no checkpoint:\n{}", s.exec.output()),
        }
    };
    assert_eq!((first.0.step, &first.0.key), (0, &job.key));
    drop(first.1); // never answered
    // It comes again (after the lease), and meanwhile the step is held on disk as "interrupted
    // after step 0" — what a restarted process could vouch for.
    let again = loop {
        match s.next(Duration::from_secs(10)) {
            Some(Got::Call(ToManager::Checkpoint(cp), call)) => break (cp, call),
            Some(Got::Cast(ToManager::Report(r)))
                if r.key == job.key && matches!(r.body, ReportBody::Finished { .. }) =>
            {
                panic!("the job must wait, not end: {r:?}\n{}", s.exec.output())
            }
            Some(_) => {}
            None => panic!("the checkpoint was not sent again:\n{}", s.exec.output()),
        }
    };
    assert_eq!(again.0.step, 0);
    let step0 = LastStep { step: 0, name: "check_calendar".into() };
    let held = HeldOutcome {
        epoch: EPOCH,
        key: job.key.clone(),
        outcome: WireOutcome::Cancelled,
        last_step: Some(step0),
    };
    wait_held(data.path(), &[held], Duration::from_secs(5));
    again.1.answer(reply(&Reply::CheckpointAck { error: None }));
    // The shard goes on: the next steps run and it succeeds.
    let (outcome, last) = s.wait_report(&job.key, Duration::from_secs(30), |b| match b {
        ReportBody::Finished { outcome, last_step } => Some((outcome.clone(), last_step.clone())),
        _ => None,
    });
    assert_eq!(outcome, WireOutcome::Succeeded, "{}", s.exec.output());
    assert_eq!(last.map(|l| l.step), Some(2));
}

#[test]
fn a_checkpoint_unanswered_when_the_executor_fences_rides_with_its_interrupted_outcome() {
    let data = tempfile::tempdir().unwrap();
    let args = ["--slots", "1", "--data", data.path().to_str().unwrap()];
    let (mut s, call) = Session::start(&args, &[("TASKFLOW_FUND_STEP_DELAY", "30ms")]);
    s.accept(call, 60_000, 200);
    let job = assign(EPOCH, "day_init", 0, "fund.day_init", &[]);
    s.cast(ToExecutor::Assign(job.clone()));
    let pending = loop {
        match s.next(Duration::from_secs(30)) {
            Some(Got::Call(ToManager::Checkpoint(cp), call)) => break (cp, call),
            Some(_) => {}
            None => panic!("no checkpoint:\n{}", s.exec.output()),
        }
    };
    assert_eq!(pending.0.step, 0);
    // The manager is declared to have lost it while the checkpoint is unanswered: the
    // executor fences, the job ends at once as interrupted, carrying the step.
    s.beat = Beat::Lost;
    let step0 = Some(LastStep { step: 0, name: "check_calendar".into() });
    // Its report and the next join, in either order (a cast and a call).
    let (mut finished, mut rejoin) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while finished.is_none() || rejoin.is_none() {
        let left = deadline.checked_duration_since(Instant::now());
        match left.and_then(|left| s.next(left)) {
            Some(Got::Cast(ToManager::Report(r))) if r.key == job.key => {
                if let ReportBody::Finished { outcome, last_step } = r.body {
                    finished = Some((outcome, last_step));
                }
            }
            Some(Got::Call(ToManager::Join(j), call)) => {
                s.beat = Beat::Ack;
                rejoin = Some((j, call));
            }
            Some(_) => {}
            None => panic!("no report and join:\n{}", s.exec.output()),
        }
    }
    let (join, call) = rejoin.unwrap();
    assert_eq!(finished, Some((WireOutcome::Cancelled, step0.clone())), "{}", s.exec.output());
    let expected = HeldOutcome {
        epoch: EPOCH,
        key: job.key.clone(),
        outcome: WireOutcome::Cancelled,
        last_step: step0,
    };
    assert_eq!(join.held_outcomes, vec![expected.clone()], "delivered in the next join");
    wait_held(data.path(), &[expected], Duration::from_secs(5));
    drop(pending);
    s.accept(call, 60_000, 200);
    wait_held(data.path(), &[], Duration::from_secs(10));
}

#[test]
fn an_executor_fences_itself_at_lease_minus_a_fifth_after_its_last_acknowledged_heartbeat() {
    // Lease 1000 ms, heartbeat 400 ms (the largest allowed): the executor must fence (and join
    // again) 800 ms after sending the last heartbeat that was answered, strictly before the
    // manager's lease + lease/5 = 1200 ms. It used to check only between heartbeat calls
    // (each waiting up to one interval), so it fenced at about 1200 ms.
    let (mut s, call) = Session::start(&["--slots", "1"], &[]);
    s.accept(call, 1000, 400);
    // Answer heartbeats for a while, then none.
    let until = Instant::now() + Duration::from_millis(1500);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let _ = s.next(left);
    }
    s.beat = Beat::Ignore;
    let acked = s.last_acked.expect("heartbeats were answered");
    let (_join, _call) = s.next_join(Duration::from_secs(5));
    let gap = acked.elapsed();
    println!("fenced and joined again {gap:?} after the last answered heartbeat arrived");
    assert!(gap >= Duration::from_millis(700), "not before its fence time: {gap:?}");
    assert!(
        gap < Duration::from_millis(1000),
        "fenced at lease − lease/5, well before the manager's lease + lease/5: {gap:?}"
    );
    drop(std::mem::take(&mut s.parked));
}

#[test]
fn an_executor_refuses_a_manager_whose_lease_and_heartbeat_break_the_fencing_bound() {
    // Heartbeat = lease/2 (what managers of protocol 2 allowed): a live executor could fence
    // itself after the manager reassigned its shards.
    let (mut s, call) = Session::start(&["--slots", "1"], &[]);
    s.accept(call, 1000, 500);
    let code = s.exec.wait_exit(Duration::from_secs(15));
    assert!(matches!(code, Some(c) if c != 0), "{}", s.exec.output());
    let out = s.exec.output();
    assert!(
        out.contains("break the fencing bound") && out.contains("at most 2/5 of the lease"),
        "{out}"
    );
}
