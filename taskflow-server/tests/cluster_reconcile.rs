//! The manager side of cluster protocol 3, with a real `taskflow manager` process and a
//! [`FakeExecutor`] that joins it and answers its assignments the way an executor does only in
//! rare orders:
//!
//! - a `Refused` assignment is queued again — no failure, no retry spent;
//! - a busy slot named in a `Join` gets no assignment until its job's end is reported, and
//!   after a manager restart a shard still running on such a slot is not run again;
//! - a held outcome of another cluster (or day) is not reconciled;
//! - a checkpoint sent again is answered, not refused;
//! - an executor of protocol 2 is refused naming both versions, and a manager refuses a
//!   heartbeat that breaks the fencing bound;
//! - a paused (SIGSTOP) executor's late outcome, once it resumes, is refused and not recorded.

#[path = "cluster_common/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;
use taskflow_core::cluster::codec::{self, PROTOCOL_VERSION};
use taskflow_core::cluster::messages::{
    AssignMsg, BusySlot, CheckpointMsg, HeldOutcome, Join, Reply, ReportBody, ReportMsg,
    ToExecutor, ToManager, WireAttempt, WireJobKind, WireOutcome,
};
use taskflow_core::cluster::testing::FakeExecutor;
use tokio::sync::mpsc::UnboundedReceiver;

const INFO: (&str, &str) = ("TASKFLOW_LOG", "taskflow_core=info,warn");
const NAME: &str = "fx";
const INSTANCE: u64 = 0x77;

/// A day of two one-shard `noop` tasks: `a` (manual: `--until-done` executes it), then `b`.
fn write_flow(root: &Path) -> PathBuf {
    let flow = root.join("flow");
    std::fs::create_dir_all(&flow).unwrap();
    let task = |id: &str, extra: &str| {
        format!(
            "[[task]]\nid = \"{id}\"\nname = \"{id}\"\nlevel = \"system\"\nbehavior = \"noop\"\n\
             {extra}\n"
        )
    };
    let text = format!(
        "[flow]\nname = \"wire\"\ntime_zone = \"Asia/Shanghai\"\n\n{}{}",
        task("a", "trigger = \"manual\"\n"),
        task("b", "depends_on = [\"a\"]\n"),
    );
    std::fs::write(flow.join("flow.toml"), text).unwrap();
    std::fs::write(flow.join("products.toml"), taskflow_core::testing::PRODUCTS).unwrap();
    std::fs::write(flow.join("distributors.toml"), taskflow_core::testing::DISTRIBUTORS).unwrap();
    std::fs::write(flow.join("calendar.toml"), taskflow_core::testing::CALENDAR).unwrap();
    flow
}

fn manager(c: &Cluster, flow: &Path) -> Proc {
    c.manager_with(60_000, &[INFO], &["--flow", flow.to_str().unwrap()])
}

fn encode(msg: &ToManager) -> Vec<u8> {
    codec::encode("executor message", msg).unwrap()
}

/// A fake executor joined to a real manager.
struct Fx {
    rt: tokio::runtime::Runtime,
    fx: FakeExecutor,
    rx: UnboundedReceiver<Vec<u8>>,
    addr: SocketAddr,
    queued: Vec<ToExecutor>,
}

impl Fx {
    fn connect(addr: &str) -> Fx {
        let mut rt = tokio::runtime::Builder::new_multi_thread();
        let rt = rt.worker_threads(2).enable_all().build().unwrap();
        let addr: SocketAddr = addr.parse().unwrap();
        let (fx, rx) = rt
            .block_on(FakeExecutor::connect(addr, COOKIE, NAME, INSTANCE, Duration::from_secs(30)))
            .expect("a session with the manager");
        Fx { rt, fx, rx, addr, queued: Vec::new() }
    }

    fn reconnect(&mut self) {
        let (addr, within) = (self.addr, Duration::from_secs(30));
        self.rt.block_on(self.fx.reconnect(addr, COOKIE, within)).expect("a new session");
    }

    fn call(&self, msg: &ToManager) -> Reply {
        let answer = self.rt.block_on(self.fx.call(encode(msg), Duration::from_secs(30)));
        codec::decode("reply", &answer.expect("answered")).expect("a reply")
    }

    /// Joins with one slot; the epoch of the registration.
    fn join(&self, held_outcomes: Vec<HeldOutcome>, busy_slots: Vec<BusySlot>) -> u64 {
        let join = Join {
            executor: NAME.into(),
            instance: INSTANCE,
            protocol_version: PROTOCOL_VERSION,
            slots: 1,
            behaviors: vec!["noop".into()],
            held_outcomes,
            replicas: Vec::new(),
            seen_epoch: 0,
            keeps_replica: false,
            busy_slots,
        };
        match self.call(&ToManager::Join(join)) {
            Reply::JoinAccepted { epoch, cluster_id, date, .. } => {
                assert_eq!(date, DATE);
                assert!(!cluster_id.is_empty(), "the manager names its cluster");
                epoch
            }
            other => panic!("join not accepted: {other:?}"),
        }
    }

    /// The next message from the manager, within `within`.
    fn next(&mut self, within: Duration) -> Option<ToExecutor> {
        if !self.queued.is_empty() {
            return Some(self.queued.remove(0));
        }
        let bytes = self
            .rt
            .block_on(async { tokio::time::timeout(within, self.rx.recv()).await })
            .ok()
            .flatten()?;
        match codec::decode("manager message", &bytes).expect("an envelope") {
            ToExecutor::Batch(items) => {
                self.queued = items;
                self.next(within)
            }
            other => Some(other),
        }
    }

    /// The next assignment (other messages skipped), within `within`.
    fn next_assign(&mut self, within: Duration) -> Option<AssignMsg> {
        let deadline = Instant::now() + within;
        loop {
            match self.next(deadline.saturating_duration_since(Instant::now()))? {
                ToExecutor::Assign(a) => return Some(a),
                _ => continue,
            }
        }
    }

    fn report(&self, epoch: u64, key: &WireAttempt, slot: u32, body: ReportBody) {
        let msg = ReportMsg {
            epoch,
            executor: NAME.into(),
            instance: INSTANCE,
            key: key.clone(),
            slot,
            body,
        };
        self.fx.cast(encode(&ToManager::Report(msg))).unwrap();
    }

    fn succeed(&self, a: &AssignMsg) {
        let body = ReportBody::Finished { outcome: WireOutcome::Succeeded, last_step: None };
        self.report(a.epoch, &a.key, a.slot, body);
    }

    /// Runs every further assignment (successfully) until the manager exits; its exit code.
    fn run_rest(&mut self, m: &mut Proc) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = m.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "the day did not end:\n{}", m.output());
            if let Some(a) = self.next_assign(Duration::from_millis(100)) {
                self.succeed(&a);
            }
        }
    }
}

fn at(a: &AssignMsg) -> (&str, u32, u32) {
    (a.key.task.as_str(), a.key.shard, a.key.attempt)
}

/// The `shard` events of the day, as (task, shard, event).
fn shard_events(data: &Path) -> Vec<(String, u64, serde_json::Value)> {
    store_events(data)
        .into_iter()
        .filter_map(|e| {
            let s = e["kind"].get("shard")?;
            Some((s["task"].as_str()?.to_owned(), s["shard"].as_u64()?, s["event"].clone()))
        })
        .collect()
}

fn is(event: &serde_json::Value, name: &str) -> bool {
    event.as_str() == Some(name) || event.get(name).is_some()
}

#[test]
fn a_refused_assignment_is_queued_again_without_a_failure() {
    let c = Cluster::new();
    let flow = write_flow(c.dir.path());
    let mut m = manager(&c, &flow);
    let mut fx = Fx::connect(&c.addr);
    fx.join(Vec::new(), Vec::new());
    let first = fx.next_assign(Duration::from_secs(30)).expect("an assignment");
    assert_eq!(at(&first), ("a", 0, 1));
    let reason = "test: the assignment overtook the answer to the join".to_owned();
    fx.report(first.epoch, &first.key, first.slot, ReportBody::Refused { reason, busy: None });
    let again = fx.next_assign(Duration::from_secs(10)).expect("the shard is assigned again");
    assert_eq!(at(&again), ("a", 0, 2), "{}", m.output());
    fx.succeed(&again);
    assert_eq!(fx.run_rest(&mut m), 0, "{}", m.output());
    assert!(m.output().contains("assignment refused by the executor"), "{}", m.output());
    let events = shard_events(&c.data());
    assert!(!events.iter().any(|(_, _, e)| is(e, "fail")), "no failure recorded: {events:?}");
    assert!(events.iter().any(|(t, _, e)| t == "a" && is(e, "requeue")), "{events:?}");
}

#[test]
fn a_busy_slot_of_a_join_gets_no_assignment_until_its_job_ends() {
    let c = Cluster::new();
    let flow = write_flow(c.dir.path());
    let mut m = manager(&c, &flow);
    let mut fx = Fx::connect(&c.addr);
    let earlier = WireAttempt {
        task: "earlier".into(),
        shard: 0,
        attempt: 1,
        generation: 0,
        kind: WireJobKind::Run,
        date: DATE.into(),
        cluster_id: "another-manager".into(),
        dispatch: 0,
    };
    let busy = BusySlot { slot: 0, epoch: 0, key: earlier.clone(), abandoned: true };
    fx.join(Vec::new(), vec![busy]);
    // The only slot is busy: nothing may be assigned onto it (it used to be: "slot busy", a
    // failure and a spent retry).
    assert!(fx.next_assign(Duration::from_secs(3)).is_none(), "{}", m.output());
    fx.report(0, &earlier, 0, ReportBody::SlotFreed);
    let a = fx.next_assign(Duration::from_secs(10)).expect("assigned once the slot is free");
    assert_eq!((at(&a), a.slot), (("a", 0, 1), 0));
    fx.succeed(&a);
    assert_eq!(fx.run_rest(&mut m), 0, "{}", m.output());
}

#[test]
fn a_restarted_manager_does_not_run_again_a_shard_still_running_on_a_busy_slot() {
    let c = Cluster::new();
    let flow = write_flow(c.dir.path());
    let mut m = manager(&c, &flow);
    let mut fx = Fx::connect(&c.addr);
    fx.join(Vec::new(), Vec::new());
    let a = fx.next_assign(Duration::from_secs(30)).expect("an assignment");
    assert_eq!(at(&a), ("a", 0, 1));
    m.signal("-9");
    assert!(m.wait_exit(Duration::from_secs(10)).is_some());
    let mut m = manager(&c, &flow);
    fx.reconnect();
    // The same process re-joins: the shard was not finished (no held outcome), but it still
    // runs on slot 0. It used to be taken for "never received" and assigned again at once,
    // onto that very slot.
    let busy = BusySlot { slot: a.slot, epoch: a.epoch, key: a.key.clone(), abandoned: false };
    let epoch = fx.join(Vec::new(), vec![busy]);
    assert!(epoch > a.epoch);
    assert!(fx.next_assign(Duration::from_secs(3)).is_none(), "{}", m.output());
    fx.succeed(&a);
    let b = fx.next_assign(Duration::from_secs(10)).expect("the next task");
    assert_eq!(at(&b), ("b", 0, 1), "{}", m.output());
    fx.succeed(&b);
    assert_eq!(fx.run_rest(&mut m), 0, "{}", m.output());
    let out = m.output();
    assert!(out.contains("still runs this shard"), "{out}");
    assert!(out.contains("re-reported outcome reconciled"), "{out}");
    assert!(!out.contains("unconfirmed"), "{out}");
    let dispatches =
        shard_events(&c.data()).into_iter().filter(|(t, _, e)| t == "a" && is(e, "dispatch"));
    assert_eq!(dispatches.count(), 1, "a ran once");
}

#[test]
fn a_held_outcome_of_another_cluster_is_not_reconciled() {
    let c = Cluster::new();
    let flow = write_flow(c.dir.path());
    let mut m = manager(&c, &flow);
    let mut fx = Fx::connect(&c.addr);
    fx.join(Vec::new(), Vec::new());
    let a = fx.next_assign(Duration::from_secs(30)).expect("an assignment");
    m.signal("-9");
    assert!(m.wait_exit(Duration::from_secs(10)).is_some());
    let mut m = manager(&c, &flow);
    fx.reconnect();
    // The same task, shard and numbers — of another cluster's day.
    let mut foreign = a.key.clone();
    foreign.cluster_id = "someone-else".into();
    let held = HeldOutcome {
        epoch: a.epoch,
        key: foreign,
        outcome: WireOutcome::Succeeded,
        last_step: None,
    };
    fx.join(vec![held], Vec::new());
    // Not taken as a's success: a runs again (the same process re-joined without vouching for
    // it, so it never received it).
    let again = fx.next_assign(Duration::from_secs(10)).expect("a is assigned again");
    assert_eq!(at(&again), ("a", 0, 2), "{}", m.output());
    fx.succeed(&again);
    assert_eq!(fx.run_rest(&mut m), 0, "{}", m.output());
    assert!(m.output().contains("re-reported outcome is of another day or cluster"));
}

#[test]
fn a_checkpoint_sent_again_is_answered_not_refused() {
    // An executor holds a checkpoint whose answer it did not get and sends it again; the
    // manager may have recorded it the first time.
    let c = Cluster::new();
    let flow = write_flow(c.dir.path());
    let mut m = manager(&c, &flow);
    let mut fx = Fx::connect(&c.addr);
    fx.join(Vec::new(), Vec::new());
    let a = fx.next_assign(Duration::from_secs(30)).expect("an assignment");
    let checkpoint = ToManager::Checkpoint(CheckpointMsg {
        epoch: a.epoch,
        executor: NAME.into(),
        instance: INSTANCE,
        key: a.key.clone(),
        step: 0,
        name: "noop".into(),
    });
    for n in ["first", "second"] {
        match fx.call(&checkpoint) {
            Reply::CheckpointAck { error: None } => {}
            other => panic!("the {n} time: {other:?}\n{}", m.output()),
        }
    }
    fx.succeed(&a);
    assert_eq!(fx.run_rest(&mut m), 0, "{}", m.output());
}

#[test]
fn an_executor_of_protocol_version_2_is_refused_naming_both_versions() {
    let c = Cluster::new();
    let flow = write_flow(c.dir.path());
    let _m = manager(&c, &flow);
    let args = ["executor", "--manager", &c.addr, "--name", "old", "--protocol-version", "2"];
    let mut old = Proc::spawn(&args, &[]);
    let code = old.wait_exit(Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "{}", old.output());
    let out = old.output();
    assert!(out.contains("the executor speaks 2, the manager speaks 3"), "{out}");
}

#[test]
fn a_manager_refuses_a_heartbeat_that_breaks_the_fencing_bound() {
    let c = Cluster::new();
    let data = c.data();
    let args = [
        "manager",
        "--cluster",
        &c.addr,
        "--date",
        DATE,
        "--data",
        data.to_str().unwrap(),
        "--lease",
        "1000",
        "--heartbeat",
        "500",
    ];
    let mut m = Proc::spawn(&args, &[]);
    let code = m.wait_exit(Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "{}", m.output());
    let out = m.output();
    assert!(
        out.contains("--lease 1000 --heartbeat 500") && out.contains("at most 2/5 of the lease"),
        "{out}"
    );
    assert!(!out.contains("accepting executors"), "{out}");
}

#[test]
fn a_paused_executor_s_late_outcome_is_refused_and_not_recorded() {
    // A SIGSTOPped process cannot fence itself: the manager declares it lost at lease + lease/5
    // and reassigns its shards while it is frozen. What makes that safe is result fencing:
    // once resumed, its late reports are refused, and none of them is recorded.
    const SLOW: (&str, &str) = ("TASKFLOW_FUND_STEP_DELAY", "250ms");
    let c = Cluster::new();
    let mut m = c.manager(1000, &[SLOW]);
    let frozen = c.executor("frozen", 2, &[SLOW, JOB_STARTED_LOG]);
    assert!(frozen.wait_for("joined the manager", Duration::from_secs(30)), "{}", frozen.output());
    let other = c.executor("other", 2, &[SLOW]);
    assert!(other.wait_for("joined the manager", Duration::from_secs(30)));
    assert!(frozen.wait_running_shard(Duration::from_secs(60)), "{}", frozen.output());
    frozen.signal("-STOP");
    let lost = m.wait_for_line(&["executor lost", "executor=frozen"], Duration::from_secs(10));
    frozen.signal("-CONT");
    assert!(lost, "{}", m.output());
    assert!(
        m.wait_for_line(&["late result rejected", "executor=frozen"], Duration::from_secs(15)),
        "the resumed executor's late report was refused:\n{}",
        m.output()
    );
    assert_eq!(m.wait_exit(Duration::from_secs(240)), Some(0), "{}", m.output());
    assert_all_done(&c.read_report());
    drop((frozen, other));

    // Each refused attempt: dispatched to `frozen`, then requeued when it was lost — its own
    // outcome never recorded — and the shard succeeded exactly once, on a later attempt.
    let refused: Vec<(String, u64, u64)> = m
        .output()
        .lines()
        .filter(|l| l.contains("late result rejected") && l.contains("executor=frozen"))
        .filter_map(|l| {
            let job = l.split("job=").nth(1)?.split(" epoch=").next()?;
            let (task, rest) = job.split_once('[')?;
            let (shard, rest) = rest.split_once("] attempt ")?;
            let attempt = rest.split(' ').next()?;
            Some((task.to_owned(), shard.parse().ok()?, attempt.parse().ok()?))
        })
        .collect();
    assert!(!refused.is_empty(), "{}", m.output());
    let events = shard_events(&c.data());
    for (task, shard, attempt) in refused {
        let mine: Vec<&serde_json::Value> = events
            .iter()
            .filter(|(t, s, _)| *t == task && *s == shard)
            .map(|(_, _, e)| e)
            .collect();
        let at = mine
            .iter()
            .position(|e| e["dispatch"]["attempt"].as_u64() == Some(attempt))
            .unwrap_or_else(|| panic!("{task}[{shard}] attempt {attempt} dispatched: {mine:?}"));
        assert_eq!(mine[at]["dispatch"]["executor"], "frozen");
        assert!(is(mine[at + 1], "requeue"), "lost, not settled by its own report: {mine:?}");
        let succeeded: Vec<usize> = (0..mine.len()).filter(|&i| is(mine[i], "succeed")).collect();
        assert_eq!(succeeded.len(), 1, "{task}[{shard}] succeeded once: {mine:?}");
        let last_dispatch = mine[..succeeded[0]]
            .iter()
            .rev()
            .find_map(|e| e["dispatch"]["attempt"].as_u64())
            .unwrap();
        assert!(last_dispatch > attempt, "by a later attempt: {mine:?}");
    }
}
