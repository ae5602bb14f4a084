//! Deterministic simulation of the manager core (FoundationDB's simulator, TigerBeetle's VOPR).
//!
//! One seed drives one thread: simulated time, a simulated journal (a crash keeps only the
//! durable prefix; fdatasync latency drawn from a distribution), N simulated executor
//! processes with slots and behaviors of random step counts and durations, and a simulated
//! network (per-link FIFO with random delays, so messages reorder across links; duplicated
//! reports; partitions that hold messages until they heal, and break the session — losing
//! what is in flight — when they outlast two leases). Faults drawn from the seed: executor crash and
//! restart (with or without its held outcomes), executor pause longer than its lease, link
//! partitions (heartbeat loss), manager crash and recovery from its journal (the real
//! `DayState` fold, once through a snapshot round trip). Operator actions drawn from the seed
//! at random times. The **real** manager core (`control::Control`) decides; invariants are checked after every
//! step (see [`Invariant`]).
//!
//! A failing seed replays exactly: [`SimFailure`]'s `Display` prints the one line that does,
//! and [`run`] with `trace: true` keeps the inputs and effects.

mod executor;
mod flows;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::control::{
    Answer, ClusterTiming, Control, ControlOptions, Effect, Input, JoinAnswer, Now, ReqId, Timer,
};
use crate::flow::Flow;
use crate::graph::TaskIx;
use crate::model::{BusinessDate, TaskId};
use crate::state::{
    Command, DayEvent, DayState, EventKind, OperatorAction, ShardEvent, ShardStatus, Target,
    UnconfirmedPolicy,
};

use executor::{Down, ExecSim, Up};
pub use flows::random_flow;

/// Which flow a run uses.
#[derive(Debug, Clone)]
pub enum SimFlow {
    /// A random DAG drawn from the seed.
    Random,
    /// This flow (e.g. the bundled example).
    Given(Arc<Flow>),
}

/// What one simulated run does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Executor processes.
    pub executors: usize,
    /// Faults drawn from the seed.
    pub faults: usize,
    /// Operator actions drawn from the seed.
    pub operator_actions: usize,
    /// The flow.
    pub flow: SimFlow,
    /// Keep every input and effect (for a replay).
    pub trace: bool,
    /// A planted bug the simulator must find: results are accepted unfenced.
    pub plant_no_fencing: bool,
    /// A planted bug the simulator must find: dispatch ignores resources.
    pub plant_ignore_resources: bool,
    /// Give up after this much simulated time (ms).
    pub max_time_ms: u64,
    /// The wall clock at simulated time 0 (ms since the Unix epoch); default: the business
    /// date 2026-09-30 at 15:00 in Shanghai.
    pub start_wall_ms: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            executors: 3,
            faults: 12,
            operator_actions: 6,
            flow: SimFlow::Random,
            trace: false,
            plant_no_fencing: false,
            plant_ignore_resources: false,
            max_time_ms: 20 * 60 * 1000,
            start_wall_ms: BASE_WALL_MS,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Shards in the flow's day.
    pub shards: u64,
    /// Shard attempts started by simulated executors.
    pub attempts: u64,
    /// Inputs handed to the core.
    pub inputs: u64,
    /// Faults injected.
    pub faults: u64,
    /// Manager restarts.
    pub manager_restarts: u64,
    /// Whether the day closed (else it stalled, needing an operator).
    pub closed: bool,
    /// Simulated time at the end (ms).
    pub time_ms: u64,
}

/// The invariants checked after every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    /// Every runtime counter equals its recount.
    CountersRecount,
    /// An effect left before the event it depends on was durable.
    AcknowledgedIsDurable,
    /// After a recovery, the core's day is the fold of the durable log (also through a
    /// snapshot round trip).
    RecoveryFold,
    /// At most one live attempt of a shard runs, and only the shard's current one.
    SingleLiveAttempt,
    /// A shard failed (or used up a retry) without its behavior failing: a restart or a
    /// fault failed it.
    NoFailureByFault,
    /// The faults stopped, yet the day neither closed nor stalled for an operator's reason.
    NothingStuck,
    /// A shard whose behavior failed fewer times than its `retries` was left failed: a
    /// requeue, a refusal or a restart used up its retries.
    RetriesKept,
    /// A shard was dispatched to run while it or its task was held.
    HoldsKept,
    /// A resource had more units in use than it has (without an operator lowering it), or
    /// units stayed in use with nothing running (leaked), or the books' count of them
    /// differs from a recount of the day.
    ResourcesKept,
}

/// A failed run: which invariant, when, and how to replay it.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// The invariant that broke.
    pub invariant: Invariant,
    /// What broke it.
    pub detail: String,
    /// Simulated time (ms).
    pub time_ms: u64,
    /// The trace (with `trace: true`): inputs and effects, oldest first.
    pub trace: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation seed {} broke {:?} at t={} ms: {}\nreplay: TASKFLOW_SIM_SEED={} cargo test -p taskflow-core --test sim -- --exact replay_one_seed --nocapture",
            self.seed, self.invariant, self.time_ms, self.detail, self.seed
        )
    }
}

/// A small deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 >= 1.0 - p
    }
}

/// Lease and heartbeat of the simulated cluster (ms).
const LEASE_MS: u64 = 1000;
const HEARTBEAT_MS: u64 = 200;
/// The wall clock at simulated time 0: the business date 2026-09-30, 15:00 in Shanghai.
const BASE_WALL_MS: i64 = 1_790_751_600_000;
/// Protocol version the simulated executors speak.
const PROTOCOL: u16 = 1;
/// The simulated day store's cluster id.
const CLUSTER_ID: &str = "sim-cluster";

/// The day every key of the simulated manager carries.
fn key_day() -> crate::control::KeyDay {
    crate::control::KeyDay { date: "2026-09-30".into(), cluster_id: CLUSTER_ID.into() }
}

/// What happens at an instant.
#[derive(Debug, Clone)]
enum Ev {
    /// A message to the manager over an executor's session.
    Up { exec: usize, session: u64, msg: Up },
    /// A message to an executor over its session.
    Down { exec: usize, session: u64, msg: Down },
    /// A manager timer (of one incarnation).
    Timer { inc: u64, timer: Timer },
    /// A task actor's answer.
    Prepared { inc: u64, task: TaskIx },
    /// An fdatasync completed, covering `upto`.
    Fsync { inc: u64, upto: u64 },
    /// The manager learns that a session closed.
    SessionClosed { inc: u64, exec: usize, session: u64 },
    /// An executor's own event (tick, step, call timeout, connect…).
    Exec { exec: usize, ev: executor::ExecEv },
    /// A fault or its end.
    Fault(Fault),
    /// An operator action.
    Operator,
}

#[derive(Debug, Clone)]
enum Fault {
    CrashExecutor { exec: usize, keep_held: bool },
    RestartExecutor { exec: usize },
    PauseExecutor { exec: usize },
    ResumeExecutor { exec: usize },
    Partition { exec: usize, until: u64 },
    BreakSession { exec: usize },
    CrashManager,
    RestartManager,
}

/// The simulated disk of the manager's data directory: the day's log and the epoch.
#[derive(Default)]
struct Disk {
    events: Vec<DayEvent>,
    durable: u64,
    fsync_in_flight: bool,
    epoch: u64,
    /// Seq of each dispatch (task, shard, attempt), durable or not.
    dispatch_seq: BTreeMap<(TaskId, u32, u32), u64>,
}

impl Disk {
    fn append(&mut self, events: Vec<DayEvent>) {
        for e in &events {
            if let EventKind::Shard { task, shard, event: ShardEvent::Dispatch { attempt, .. } } =
                &e.kind
            {
                self.dispatch_seq.insert((task.clone(), *shard, *attempt), e.seq);
            }
        }
        self.events.extend(events);
    }

    fn last_seq(&self) -> u64 {
        self.events.last().map_or(0, |e| e.seq)
    }

    /// A crash: only the durable prefix survives.
    fn crash(&mut self) {
        let d = self.durable;
        self.events.truncate(d as usize);
        self.fsync_in_flight = false;
        self.dispatch_seq.retain(|_, s| *s <= d);
    }
}

/// Where an answer goes.
#[derive(Debug, Clone)]
enum ReqDest {
    Exec { exec: usize, session: u64, call: u64 },
    Operator,
}

struct ManagerSim {
    core: Control,
    inc: u64,
    reqs: BTreeMap<ReqId, ReqDest>,
    next_req: ReqId,
    /// Core executor index → (sim executor, session).
    links: BTreeMap<usize, (usize, u64)>,
}

/// The whole simulated world of one seed.
pub(crate) struct World {
    seed: u64,
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    next_ev: u64,
    flow: Arc<Flow>,
    date: BusinessDate,
    disk: Disk,
    manager: Option<ManagerSim>,
    next_inc: u64,
    execs: Vec<ExecSim>,
    /// Per (exec, session, direction): the last delivery time (FIFO per link).
    link_clock: BTreeMap<(usize, u64, bool), u64>,
    /// Sessions still open: exec → (session id, manager incarnation).
    sessions: BTreeMap<usize, (u64, u64)>,
    next_session: u64,
    partitioned_until: BTreeMap<usize, u64>,
    /// Attempts whose behavior failed by design: (task, shard, attempt).
    designed_failures: BTreeSet<(TaskId, u32, u32)>,
    report: SimReport,
    trace: Vec<String>,
    faults_over_at: u64,
    /// The executor and session of the join being handled (for `Effect::Link`).
    joining: Option<(usize, u64)>,
}

/// Runs one seed.
pub fn run(seed: u64, cfg: &SimConfig) -> Result<SimReport, Box<SimFailure>> {
    let mut w = World::new(seed, cfg.clone());
    w.run_all().map_err(|(invariant, detail)| {
        Box::new(SimFailure {
            seed,
            invariant,
            detail,
            time_ms: w.now,
            trace: std::mem::take(&mut w.trace),
        })
    })?;
    Ok(w.report.clone())
}

type Broke = (Invariant, String);

impl World {
    fn new(seed: u64, cfg: SimConfig) -> World {
        let mut rng = Rng::new(seed);
        let flow = match &cfg.flow {
            SimFlow::Random => Arc::new(random_flow(&mut rng)),
            SimFlow::Given(f) => f.clone(),
        };
        let date = BusinessDate::from_ymd(2026, 9, 30).expect("a valid date");
        let execs = (0..cfg.executors.max(1))
            .map(|i| ExecSim::new(format!("e{}", i + 1), rng.chance(0.7), 2 + (i as u32 % 3)))
            .collect();
        World {
            seed,
            rng,
            now: 0,
            queue: BTreeMap::new(),
            next_ev: 0,
            flow,
            date,
            disk: Disk::default(),
            manager: None,
            next_inc: 1,
            execs,
            link_clock: BTreeMap::new(),
            sessions: BTreeMap::new(),
            next_session: 1,
            partitioned_until: BTreeMap::new(),
            designed_failures: BTreeSet::new(),
            report: SimReport { seed, ..SimReport::default() },
            trace: Vec::new(),
            faults_over_at: 0,
            joining: None,
            cfg,
        }
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.next_ev += 1;
        self.queue.insert((t, self.next_ev), ev);
    }

    fn after(&mut self, dt: u64, ev: Ev) {
        self.at(self.now + dt, ev);
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.cfg.trace {
            let l = line();
            self.trace.push(format!("t={:>7} {l}", self.now));
        }
    }

    fn run_all(&mut self) -> Result<(), Broke> {
        self.start_manager()?;
        for i in 0..self.execs.len() {
            let t = self.rng.range(0, 50);
            self.at(t, Ev::Exec { exec: i, ev: executor::ExecEv::Connect { life: 0 } });
        }
        self.plan_faults();
        let max = self.cfg.max_time_ms;
        let mut quiet_since: Option<u64> = None;
        let mut closer_rounds = 0;
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            self.now = t;
            if t > max {
                break;
            }
            self.step(ev)?;
            // The end: faults over, the day closed or stalled for a while.
            if t > self.faults_over_at
                && let Some(m) = &self.manager
            {
                if m.core.day().is_closed() {
                    self.report.closed = true;
                    break;
                }
                let all_joined = self.execs.iter().all(|e| e.joined());
                if m.core.stalled() && all_joined {
                    let since = *quiet_since.get_or_insert(t);
                    if t - since > 3 * LEASE_MS + 2000 {
                        // An operator finishes the day: retries what failed, executes what
                        // waits for them, confirms what is unconfirmed (a few rounds).
                        if closer_rounds < 6 && self.close_the_day()? {
                            closer_rounds += 1;
                            quiet_since = None;
                            continue;
                        }
                        break;
                    }
                } else {
                    quiet_since = None;
                }
            }
        }
        self.report.time_ms = self.now;
        self.final_check()
    }

    fn plan_faults(&mut self) {
        let n = self.execs.len();
        let window = 6_000 + 400 * self.cfg.faults as u64;
        let mut last = 0;
        for _ in 0..self.cfg.faults {
            let t = self.rng.range(100, window);
            let exec = self.rng.range(0, n as u64 - 1) as usize;
            let kind = self.rng.range(0, 9);
            let (fault, end) = match kind {
                0..=2 => {
                    let down = self.rng.range(50, 2_500);
                    let keep_held = self.rng.chance(0.6);
                    (
                        Fault::CrashExecutor { exec, keep_held },
                        Some((t + down, Fault::RestartExecutor { exec })),
                    )
                }
                3 | 4 => {
                    let long = self.rng.range(LEASE_MS + 200, 3 * LEASE_MS);
                    (
                        Fault::PauseExecutor { exec },
                        Some((t + long, Fault::ResumeExecutor { exec })),
                    )
                }
                5 | 6 => {
                    let until = t + self.rng.range(100, 3 * LEASE_MS);
                    (Fault::Partition { exec, until }, None)
                }
                _ => {
                    let down = self.rng.range(20, 2_000);
                    (Fault::CrashManager, Some((t + down, Fault::RestartManager)))
                }
            };
            self.at(t, Ev::Fault(fault));
            last = last.max(t);
            if let Some((te, f)) = end {
                last = last.max(te);
                self.at(te, Ev::Fault(f));
            }
            self.report.faults += 1;
        }
        for _ in 0..self.cfg.operator_actions {
            let t = self.rng.range(200, window);
            self.at(t, Ev::Operator);
            last = last.max(t);
        }
        self.faults_over_at = last + 1;
    }

    // ----- the manager -----------------------------------------------------------------

    fn start_manager(&mut self) -> Result<(), Broke> {
        let inc = self.next_inc;
        self.next_inc += 1;
        // The epoch never goes backwards: it is bumped durably at every start.
        self.disk.epoch += 1;
        let graph = Arc::new(self.flow.graph().clone());
        let day = self.recover_day(graph)?;
        let opts = ControlOptions {
            auto_execute_manual: self.rng.chance(0.5),
            unconfirmed_policy: if self.rng.chance(0.8) {
                UnconfirmedPolicy::AutoRollback
            } else {
                UnconfirmedPolicy::Hold
            },
            shutdown_grace_ms: 1000,
            local: Vec::new(),
            cluster: Some(ClusterTiming {
                epoch: self.disk.epoch,
                lease_ms: LEASE_MS,
                heartbeat_ms: HEARTBEAT_MS,
                lost_after_ms: LEASE_MS + LEASE_MS / 5,
                reconcile_ms: LEASE_MS + LEASE_MS / 5 + 1000,
                protocol_version: PROTOCOL,
                cluster_id: CLUSTER_ID.into(),
            }),
        };
        let now = self.now();
        let mut core =
            Control::new(self.flow.clone(), self.date, day, self.disk.durable, opts, now);
        core.faults.no_fencing = self.cfg.plant_no_fencing;
        core.plant_ignore_resources(self.cfg.plant_ignore_resources);
        self.manager = Some(ManagerSim {
            core,
            inc,
            reqs: BTreeMap::new(),
            next_req: 1,
            links: BTreeMap::new(),
        });
        self.feed(Input::Start)
    }

    /// The day from the durable log: the real fold, and once through a snapshot round trip;
    /// both must agree.
    fn recover_day(&mut self, graph: Arc<crate::graph::TaskGraph>) -> Result<DayState, Broke> {
        let mut day = DayState::new(self.date, graph.clone());
        let cut = if self.disk.events.is_empty() {
            0
        } else {
            self.rng.range(0, self.disk.events.len() as u64) as usize
        };
        let mut via_snapshot = None;
        for (i, e) in self.disk.events.iter().enumerate() {
            if i == cut {
                via_snapshot = Some(day.encode_snapshot());
            }
            day.apply(e).map_err(|err| {
                (Invariant::RecoveryFold, format!("durable event {} does not apply: {err}", e.seq))
            })?;
        }
        if let Some(bytes) = via_snapshot {
            let mut other = DayState::decode_snapshot(&bytes, graph).map_err(|err| {
                (Invariant::RecoveryFold, format!("snapshot at cut {cut} does not decode: {err}"))
            })?;
            for e in &self.disk.events[cut..] {
                other.apply(e).map_err(|err| {
                    (Invariant::RecoveryFold, format!("event {} after a snapshot: {err}", e.seq))
                })?;
            }
            if other.encode_snapshot() != day.encode_snapshot() {
                return Err((
                    Invariant::RecoveryFold,
                    format!("the fold through a snapshot at {cut} differs from the full fold"),
                ));
            }
        }
        Ok(day)
    }

    fn now(&self) -> Now {
        Now { mono_ms: self.now, wall_ms: self.cfg.start_wall_ms + self.now as i64 }
    }

    /// Hands one input to the core and carries out its effects.
    fn feed(&mut self, input: Input) -> Result<(), Broke> {
        let now = self.now();
        let Some(m) = self.manager.as_mut() else { return Ok(()) };
        if self.cfg.trace {
            let line = format!("t={:>7} in  {input:?}", self.now);
            self.trace.push(line);
        }
        let effects = m.core.handle(input, now);
        self.report.inputs += 1;
        m.core.check().map_err(|e| (Invariant::CountersRecount, e))?;
        Self::check_retry_armed(&self.flow, m.core.day(), &effects)?;
        Self::check_holds_kept(&self.flow, m.core.day(), &effects)?;
        Self::check_resources_kept(&self.flow, &m.core)?;
        for e in effects {
            self.note(|| format!("eff {e:?}"));
            self.effect(e)?;
        }
        self.check_live_attempts()
    }

    fn effect(&mut self, e: Effect) -> Result<(), Broke> {
        let Some(m) = self.manager.as_mut() else { return Ok(()) };
        let inc = m.inc;
        match e {
            Effect::Append(events) => {
                self.check_failures(&events)?;
                self.disk.append(events);
                self.start_fsync(inc);
            }
            Effect::Snapshot | Effect::Retire { .. } | Effect::Note(_) | Effect::Close { .. } => {}
            Effect::Assign { executor, assignment } => {
                if assignment.key.kind == crate::job::JobKind::Run {
                    let k =
                        (assignment.key.task.clone(), assignment.key.shard, assignment.key.attempt);
                    match self.disk.dispatch_seq.get(&k) {
                        Some(&s) if s <= self.disk.durable => {}
                        other => {
                            return Err((
                                Invariant::AcknowledgedIsDurable,
                                format!(
                                    "{} assigned before its dispatch ({other:?}) is durable (durable {})",
                                    assignment.key, self.disk.durable
                                ),
                            ));
                        }
                    }
                }
                let epoch = self.disk.epoch;
                self.send_down(executor, Down::Assign { assignment, epoch });
            }
            Effect::Stop { executor, slot, key } => {
                self.send_down(executor, Down::Stop { slot, key })
            }
            Effect::Confirm { executor, key } => self.send_down(executor, Down::Confirm { key }),
            Effect::Publish(n) => {
                if let crate::view::Notice::Event { seq, .. } = n
                    && seq > self.disk.durable
                {
                    return Err((
                        Invariant::AcknowledgedIsDurable,
                        format!("event {seq} published before durable ({})", self.disk.durable),
                    ));
                }
            }
            Effect::Reply { req, answer } => self.answer(req, answer)?,
            Effect::Timer { at_ms, timer } => {
                self.at(at_ms.max(self.now), Ev::Timer { inc, timer })
            }
            Effect::WakeAt { task, at_wall_ms } => {
                let at = (at_wall_ms - self.cfg.start_wall_ms).max(self.now as i64) as u64;
                self.at(at, Ev::Timer { inc, timer: Timer::Trigger(task) });
            }
            Effect::Prepare { tasks, .. } => {
                for task in tasks {
                    let dt = self.rng.range(1, 30);
                    self.after(dt, Ev::Prepared { inc, task });
                }
            }
            Effect::Link { executor } => {
                if let (Some(link), Some(m)) = (self.joining, self.manager.as_mut()) {
                    m.links.insert(executor, link);
                }
            }
        }
        Ok(())
    }

    fn start_fsync(&mut self, inc: u64) {
        if self.disk.fsync_in_flight || self.disk.last_seq() <= self.disk.durable {
            return;
        }
        self.disk.fsync_in_flight = true;
        let latency =
            if self.rng.chance(0.05) { self.rng.range(20, 80) } else { self.rng.range(0, 4) };
        let upto = self.disk.last_seq();
        self.after(latency, Ev::Fsync { inc, upto });
    }

    fn answer(&mut self, req: ReqId, answer: Answer) -> Result<(), Broke> {
        let Some(m) = self.manager.as_mut() else { return Ok(()) };
        let Some(dest) = m.reqs.remove(&req) else { return Ok(()) };
        match (dest, answer) {
            (ReqDest::Operator, Answer::Act(Ok(seq))) if seq > self.disk.durable => Err((
                Invariant::AcknowledgedIsDurable,
                format!("operator answered with seq {seq} before durable ({})", self.disk.durable),
            )),
            (ReqDest::Operator, _) => Ok(()),
            (ReqDest::Exec { exec, session, call }, answer) => {
                if let Answer::Join(JoinAnswer::Rejected { reason }) = &answer {
                    self.note(|| format!("join of e{} rejected: {reason}", exec + 1));
                }
                self.send_reply(exec, session, call, answer);
                Ok(())
            }
        }
    }

    fn keep(&mut self, dest: ReqDest) -> ReqId {
        let m = self.manager.as_mut().expect("a manager");
        let req = m.next_req;
        m.next_req += 1;
        m.reqs.insert(req, dest);
        req
    }

    // ----- the network -----------------------------------------------------------------

    fn delay(&mut self) -> u64 {
        if self.rng.chance(0.02) { self.rng.range(20, 200) } else { self.rng.range(0, 5) }
    }

    fn send_down(&mut self, core_ix: usize, msg: Down) {
        let Some(&(exec, session)) = self.manager.as_ref().and_then(|m| m.links.get(&core_ix))
        else {
            return;
        };
        self.send_to_exec(exec, session, msg);
    }

    /// When a message sent now on `exec`'s link can arrive: after the delay, and not before
    /// a partition heals (the transport is TCP: within a session nothing is lost; what is in
    /// flight when a session breaks is).
    fn arrival(&mut self, exec: usize) -> u64 {
        let d = self.delay();
        let healed = self.partitioned_until.get(&exec).copied().unwrap_or(0);
        (self.now + d).max(healed + d)
    }

    fn send_to_exec(&mut self, exec: usize, session: u64, msg: Down) {
        if self.sessions.get(&exec).map(|s| s.0) != Some(session) {
            return;
        }
        let arrival = self.arrival(exec);
        let key = (exec, session, false);
        let t = arrival.max(*self.link_clock.get(&key).unwrap_or(&0));
        self.link_clock.insert(key, t);
        self.at(t, Ev::Down { exec, session, msg });
    }

    fn send_reply(&mut self, exec: usize, session: u64, call: u64, answer: Answer) {
        self.send_to_exec(exec, session, Down::Reply { call, answer });
    }

    /// An executor sends to the manager over its current session.
    pub(crate) fn send_up(&mut self, exec: usize, msg: Up) {
        let Some(&(session, _)) = self.sessions.get(&exec) else { return };
        let arrival = self.arrival(exec);
        let key = (exec, session, true);
        let t = arrival.max(*self.link_clock.get(&key).unwrap_or(&0));
        self.link_clock.insert(key, t);
        let dup = matches!(msg, Up::Report(_)) && self.rng.chance(0.03);
        if dup {
            self.at(t, Ev::Up { exec, session, msg: msg.clone() });
        }
        self.at(t, Ev::Up { exec, session, msg });
    }

    /// Opens a session for `exec` if the manager is up.
    pub(crate) fn connect(&mut self, exec: usize) -> Option<u64> {
        let inc = self.manager.as_ref()?.inc;
        let id = self.next_session;
        self.next_session += 1;
        self.sessions.insert(exec, (id, inc));
        Some(id)
    }

    /// Closes `exec`'s session (its side knows; the manager learns after a delay).
    pub(crate) fn close_session(&mut self, exec: usize) {
        if let Some((session, inc)) = self.sessions.remove(&exec) {
            let d = self.rng.range(1, 20);
            self.after(d, Ev::SessionClosed { inc, exec, session });
        }
    }

    // ----- one event -------------------------------------------------------------------

    fn step(&mut self, ev: Ev) -> Result<(), Broke> {
        self.event(ev)?;
        self.check_live_attempts()
    }

    fn event(&mut self, ev: Ev) -> Result<(), Broke> {
        let inc = self.manager.as_ref().map(|m| m.inc);
        match ev {
            Ev::Up { exec, session, msg } => {
                // Delivered only on the session it was sent on, to the manager it was opened
                // with (a message sent before a pause still arrives).
                let open =
                    self.sessions.get(&exec).is_some_and(|s| s.0 == session && Some(s.1) == inc);
                if !open {
                    return Ok(());
                }
                self.manager_receives(exec, session, msg)
            }
            Ev::Down { exec, session, msg } => {
                if self.sessions.get(&exec).map(|s| s.0) != Some(session) {
                    return Ok(());
                }
                if self.execs[exec].paused() {
                    // Delivered when the process resumes (TCP buffers it).
                    self.execs[exec].defer(Ev::Down { exec, session, msg });
                    return Ok(());
                }
                executor::on_down(self, exec, msg);
                Ok(())
            }
            Ev::Timer { inc: i, timer } => {
                if Some(i) != inc {
                    return Ok(());
                }
                self.feed(Input::Timer(timer))
            }
            Ev::Prepared { inc: i, task } => {
                if Some(i) != inc {
                    return Ok(());
                }
                let result = crate::schedule::prepare_by_flow(&self.flow, self.date, task);
                self.feed(Input::Prepared { task, result })
            }
            Ev::Fsync { inc: i, upto } => {
                if Some(i) != inc {
                    return Ok(());
                }
                self.disk.fsync_in_flight = false;
                self.disk.durable = self.disk.durable.max(upto);
                let durable = self.disk.durable;
                self.feed(Input::Durable(durable))?;
                self.start_fsync(i);
                Ok(())
            }
            Ev::SessionClosed { inc: i, exec, session } => {
                if Some(i) != inc {
                    return Ok(());
                }
                let ixs: Vec<usize> = self
                    .manager
                    .as_ref()
                    .map(|m| {
                        m.links
                            .iter()
                            .filter(|(_, l)| **l == (exec, session))
                            .map(|(ix, _)| *ix)
                            .collect()
                    })
                    .unwrap_or_default();
                if ixs.is_empty() {
                    return Ok(());
                }
                self.feed(Input::SessionClosed { executors: ixs })
            }
            Ev::Exec { exec, ev } => {
                if self.execs[exec].paused() {
                    self.execs[exec].defer(Ev::Exec { exec, ev });
                    return Ok(());
                }
                executor::on_event(self, exec, ev);
                Ok(())
            }
            Ev::Fault(f) => self.fault(f),
            Ev::Operator => self.operator(),
        }
    }

    fn manager_receives(&mut self, exec: usize, session: u64, msg: Up) -> Result<(), Broke> {
        if self.manager.is_none() {
            return Ok(());
        }
        let input = match msg {
            Up::Join { call, join } => {
                let req = self.keep(ReqDest::Exec { exec, session, call });
                self.joining = Some((exec, session));
                let handled = self.feed(Input::Join { req, join });
                self.joining = None;
                return handled;
            }
            Up::Heartbeat { call, instance, seq } => {
                let req = self.keep(ReqDest::Exec { exec, session, call });
                let executor = self.execs[exec].name.clone();
                Input::Heartbeat { req, executor, instance, seq }
            }
            Up::Checkpoint { call, instance, epoch, key, step, name } => {
                let req = self.keep(ReqDest::Exec { exec, session, call });
                let executor = self.execs[exec].name.clone();
                Input::RemoteCheckpoint { req, executor, instance, epoch, key, step, name }
            }
            Up::Report(r) => Input::RemoteReports(vec![r]),
        };
        self.feed(input)
    }

    fn fault(&mut self, f: Fault) -> Result<(), Broke> {
        self.note(|| format!("fault {f:?}"));
        match f {
            Fault::CrashExecutor { exec, keep_held } => executor::crash(self, exec, keep_held),
            Fault::RestartExecutor { exec } => executor::restart(self, exec),
            Fault::PauseExecutor { exec } => self.execs[exec].pause(),
            Fault::ResumeExecutor { exec } => {
                for ev in self.execs[exec].resume() {
                    self.at(self.now, ev);
                }
            }
            Fault::Partition { exec, until } => {
                self.partitioned_until.insert(exec, until);
                // A partition much longer than the lease breaks the session (keepalives
                // give up): both ends see it close, and what was in flight is lost.
                if until - self.now > 2 * LEASE_MS {
                    self.after(2 * LEASE_MS, Ev::Fault(Fault::BreakSession { exec }));
                }
            }
            Fault::BreakSession { exec } => {
                if self.sessions.contains_key(&exec) {
                    self.close_session(exec);
                    self.after(1, Ev::Exec { exec, ev: executor::ExecEv::Disconnected });
                }
            }
            Fault::CrashManager => {
                if self.manager.take().is_some() {
                    self.disk.crash();
                    let open: Vec<usize> = self.sessions.keys().copied().collect();
                    for exec in open {
                        self.sessions.remove(&exec);
                        let d = self.rng.range(1, 20);
                        self.after(d, Ev::Exec { exec, ev: executor::ExecEv::Disconnected });
                    }
                }
            }
            Fault::RestartManager => {
                if self.manager.is_none() {
                    self.report.manager_restarts += 1;
                    self.start_manager()?;
                }
            }
        }
        Ok(())
    }

    fn operator(&mut self) -> Result<(), Broke> {
        let Some(m) = self.manager.as_ref() else { return Ok(()) };
        // The forecast runs from whatever state the day is in (remote executors, orphans,
        // reconciles, holds): on a clone, bounded, leaving the live core as it was.
        let before = m.core.day().last_seq();
        let est = crate::control::Estimates::new(&self.flow, &Default::default());
        let f = crate::control::forecast(m.core.clone(), &est, self.now());
        if f.tasks.len() != self.flow.tasks().len() || m.core.day().last_seq() != before {
            return Err((Invariant::CountersRecount, "the forecast changed the live core".into()));
        }
        let day = m.core.day();
        let n = self.flow.tasks().len() as u64;
        let ix = TaskIx(self.rng.range(0, n - 1) as u32);
        let task = self.flow.graph().id(ix).clone();
        let shards = if day.is_registered(ix) { day.shard_count(ix) } else { 0 };
        let shard = (shards > 0 && self.rng.chance(0.5))
            .then(|| self.rng.range(0, shards as u64 - 1) as u32);
        let action = match self.rng.range(0, 9) {
            0 => OperatorAction::Execute,
            1 => OperatorAction::Stop,
            2 => OperatorAction::Skip,
            3 | 4 => OperatorAction::Retry,
            5 => OperatorAction::Rollback { cascade: false },
            6 => OperatorAction::Rollback { cascade: true },
            7 => OperatorAction::Confirm,
            8 => OperatorAction::MarkFailed,
            _ => match self.rng.range(0, 3) {
                0 | 1 => OperatorAction::Hold,
                2 => OperatorAction::Free,
                _ => OperatorAction::ForceStart,
            },
        };
        let cmd = Command {
            actor: "sim".into(),
            from: "sim".into(),
            reason: "simulated operator".into(),
            action,
            target: Target { task, shard },
        };
        let req = self.keep(ReqDest::Operator);
        self.feed(Input::Act { req, cmd })
    }

    /// Operator actions that let a stalled day go on; whether any was sent.
    fn close_the_day(&mut self) -> Result<bool, Broke> {
        let Some(m) = self.manager.as_ref() else { return Ok(false) };
        let day = m.core.day();
        let mut cmds = Vec::new();
        // Holds first: what they keep back is waiting for this operator.
        for (ix, shard, _) in day.holds() {
            cmds.push(Command {
                actor: "sim-closer".into(),
                from: "sim".into(),
                reason: "finish the day".into(),
                action: OperatorAction::Free,
                target: Target { task: self.flow.graph().id(ix).clone(), shard },
            });
        }
        for ix in self.flow.graph().topo_order().to_vec() {
            if !day.is_registered(ix) || day.is_done(ix) {
                continue;
            }
            let c = day.counts(ix);
            let action = if c.get(ShardStatus::Unconfirmed) > 0 {
                Some(OperatorAction::Confirm)
            } else if c.get(ShardStatus::Failed)
                + c.get(ShardStatus::Stopped)
                + c.get(ShardStatus::RollbackFailed)
                + c.get(ShardStatus::RolledBack)
                > 0
            {
                Some(OperatorAction::Retry)
            } else if c.get(ShardStatus::Registered) > 0 && day.may_run(ix) {
                Some(OperatorAction::Execute)
            } else {
                None
            };
            if let Some(action) = action {
                cmds.push(Command {
                    actor: "sim-closer".into(),
                    from: "sim".into(),
                    reason: "finish the day".into(),
                    action,
                    target: Target { task: self.flow.graph().id(ix).clone(), shard: None },
                });
            }
        }
        let any = !cmds.is_empty();
        for cmd in cmds {
            let req = self.keep(ReqDest::Operator);
            self.feed(Input::Act { req, cmd })?;
        }
        Ok(any)
    }

    // ----- invariants ------------------------------------------------------------------

    /// A `Fail` is recorded only for an attempt whose behavior failed by design.
    fn check_failures(&self, events: &[DayEvent]) -> Result<(), Broke> {
        let Some(m) = self.manager.as_ref() else { return Ok(()) };
        for e in events {
            if let EventKind::Shard { task, shard, event: ShardEvent::Fail { reason } } = &e.kind {
                let ix = self.flow.graph().index_of(task.as_str());
                let attempt = ix.and_then(|ix| m.core.day().shard(ix, *shard)).map(|v| v.attempt);
                let designed = attempt
                    .is_some_and(|a| self.designed_failures.contains(&(task.clone(), *shard, a)));
                if !designed {
                    return Err((
                        Invariant::NoFailureByFault,
                        format!(
                            "{task}[{shard}] attempt {attempt:?} failed without its behavior failing: {reason}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// At most one live (running, not paused, not fenced) attempt of each shard, and it is
    /// the shard's current one in the manager's day.
    fn check_live_attempts(&self) -> Result<(), Broke> {
        let mut live: BTreeMap<(TaskId, u32), (usize, crate::job::AttemptKey)> = BTreeMap::new();
        for (i, e) in self.execs.iter().enumerate() {
            for key in e.live_jobs(self.now) {
                if let Some((other, k)) =
                    live.insert((key.task.clone(), key.shard), (i, key.clone()))
                {
                    return Err((
                        Invariant::SingleLiveAttempt,
                        format!("{k} on e{} and {key} on e{} run at once", other + 1, i + 1),
                    ));
                }
            }
        }
        let Some(m) = self.manager.as_ref() else { return Ok(()) };
        let day = m.core.day();
        for ((task, shard), (i, key)) in &live {
            let Some(ix) = self.flow.graph().index_of(task.as_str()) else { continue };
            let Some(v) = day.shard(ix, *shard) else { continue };
            let ok = match key.kind {
                crate::job::JobKind::Run => {
                    matches!(v.status, ShardStatus::Running | ShardStatus::Stopping)
                        && v.attempt == key.attempt
                }
                crate::job::JobKind::Rollback => {
                    v.status == ShardStatus::RollingBack && v.generation == key.generation
                }
            };
            // A manager that has not recorded the dispatch yet durably may lag; the live job
            // must then be of a later attempt than the day knows, never an earlier one.
            if !(ok || key.kind == crate::job::JobKind::Run && key.attempt > v.attempt) {
                return Err((
                    Invariant::SingleLiveAttempt,
                    format!(
                        "{key} runs live on e{} but the day says {:?} attempt {} g{}",
                        i + 1,
                        v.status,
                        v.attempt,
                        v.generation
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A shard whose run failed with retries left gets its retry timer in the same turn:
    /// only failures count, so a requeue, a refusal or a restart never uses one up.
    fn check_retry_armed(flow: &Flow, day: &DayState, effects: &[Effect]) -> Result<(), Broke> {
        for e in effects {
            let Effect::Append(events) = e else { continue };
            for ev in events {
                let EventKind::Shard { task, shard, event: ShardEvent::Fail { .. } } = &ev.kind
                else {
                    continue;
                };
                let Some(ix) = flow.graph().index_of(task.as_str()) else { continue };
                let Some(v) = day.shard(ix, *shard) else { continue };
                let retries = flow.task(ix).retries;
                if v.status != ShardStatus::Failed || v.failures > retries || !day.may_run(ix) {
                    continue;
                }
                let armed = effects.iter().any(|e| {
                    matches!(e, Effect::Timer { timer: Timer::Retry { task: t, shard: s, .. }, .. }
                        if *t == ix && s == shard)
                });
                if !armed {
                    return Err((
                        Invariant::RetriesKept,
                        format!(
                            "{task}[{shard}] failed ({} failure(s), retries = {retries}, attempt \
                             {}) and no retry was scheduled",
                            v.failures, v.attempt
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// No shard is dispatched to run while it or its task is held. A turn that records a hold
    /// is an operator's and dispatches nothing, so its dispatches (none) need no order check.
    fn check_holds_kept(flow: &Flow, day: &DayState, effects: &[Effect]) -> Result<(), Broke> {
        let events = effects.iter().filter_map(|e| match e {
            Effect::Append(events) => Some(events.iter()),
            _ => None,
        });
        let events: Vec<&EventKind> = events.flatten().map(|e| &e.kind).collect();
        if events.iter().any(|k| matches!(k, EventKind::Hold { .. })) {
            return Ok(());
        }
        for kind in events {
            let EventKind::Shard { task, shard, event: ShardEvent::Dispatch { attempt, .. } } =
                kind
            else {
                continue;
            };
            let Some(ix) = flow.graph().index_of(task.as_str()) else { continue };
            if day.run_held(ix, *shard) {
                return Err((
                    Invariant::HoldsKept,
                    format!("{task}[{shard}] was dispatched (attempt {attempt}) while held"),
                ));
            }
        }
        Ok(())
    }

    /// Recounts every resource's units in use from the day (the needs of shards running or
    /// stopping) and checks them against its units and the core's books; with nothing
    /// running, nothing is in use.
    fn check_resources_kept(flow: &Flow, core: &Control) -> Result<(), Broke> {
        let day = core.day();
        let mut in_use: BTreeMap<&str, u32> = BTreeMap::new();
        let mut anything_runs = false;
        for ix in flow.graph().indices() {
            if !day.is_registered(ix) {
                continue;
            }
            let c = day.counts(ix);
            let holding = c.get(ShardStatus::Running) + c.get(ShardStatus::Stopping);
            anything_runs |= holding > 0;
            for (name, &units) in &flow.task(ix).needs {
                *in_use.entry(name.as_str()).or_default() += units * holding;
            }
        }
        for r in core.resources() {
            let used = in_use.get(r.name.as_str()).copied().unwrap_or(0);
            if used > r.units {
                return Err((
                    Invariant::ResourcesKept,
                    format!("resource {} has {used} units in use of {}", r.name, r.units),
                ));
            }
            if r.in_use != used {
                return Err((
                    Invariant::ResourcesKept,
                    format!(
                        "resource {}: the books say {} in use, the day {used}",
                        r.name, r.in_use
                    ),
                ));
            }
            if !anything_runs && r.in_use > 0 {
                return Err((
                    Invariant::ResourcesKept,
                    format!("resource {}: {} units in use with nothing running", r.name, r.in_use),
                ));
            }
        }
        Ok(())
    }

    /// Every shard left failed by its behavior's failure (the last event on it in the
    /// durable log is a `Fail`, not an operator's action) used up its retries: its failures
    /// in this generation exceed `retries`.
    fn check_retries_kept(&self) -> Result<(), Broke> {
        let Some(m) = self.manager.as_ref() else { return Ok(()) };
        let day = m.core.day();
        let mut by_fail: BTreeMap<(&str, u32), bool> = BTreeMap::new();
        for e in &self.disk.events {
            match &e.kind {
                EventKind::Shard { task, shard, event } => {
                    by_fail
                        .insert((task.as_str(), *shard), matches!(event, ShardEvent::Fail { .. }));
                }
                EventKind::TaskShards { task, .. } => {
                    by_fail.retain(|(t, _), _| *t != task.as_str());
                }
                _ => {}
            }
        }
        for ((task, shard), failed) in by_fail {
            let Some(ix) = self.flow.graph().index_of(task) else { continue };
            let Some(v) = day.shard(ix, shard) else { continue };
            let retries = self.flow.task(ix).retries;
            if failed && v.status == ShardStatus::Failed && v.failures <= retries && day.may_run(ix)
            {
                return Err((
                    Invariant::RetriesKept,
                    format!(
                        "{task}[{shard}] is left failed after {} failure(s) of retries = {retries} \
                         (attempt {})",
                        v.failures, v.attempt
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The faults are over: the day closed, or it stalled and every shard that is not
    /// terminal waits for an operator.
    fn final_check(&mut self) -> Result<(), Broke> {
        let Some(m) = self.manager.as_ref() else {
            return Err((Invariant::NothingStuck, "the manager is down at the end".into()));
        };
        let day = m.core.day();
        self.report.shards = self
            .flow
            .graph()
            .indices()
            .filter(|&ix| day.is_registered(ix))
            .map(|ix| u64::from(day.shard_count(ix)))
            .sum();
        self.report.attempts = self.execs.iter().map(|e| e.attempts).sum();
        if day.is_closed() {
            return Ok(());
        }
        self.check_retries_kept()?;
        let Some(m) = self.manager.as_ref() else { return Ok(()) };
        let day = m.core.day();
        if !m.core.stalled() {
            return Err((
                Invariant::NothingStuck,
                format!(
                    "after {} ms the day is neither closed nor stalled: {}",
                    self.now,
                    m.core.not_stalled_because()
                ),
            ));
        }
        for ix in self.flow.graph().indices() {
            if !day.is_registered(ix) {
                continue;
            }
            for v in day.shards(ix, None, 0, usize::MAX) {
                let needs_operator = matches!(
                    v.status,
                    ShardStatus::Succeeded
                        | ShardStatus::Skipped
                        | ShardStatus::Failed
                        | ShardStatus::Stopped
                        | ShardStatus::RolledBack
                        | ShardStatus::RollbackFailed
                        | ShardStatus::Unconfirmed
                ) || (v.status == ShardStatus::Registered
                    && (!day.may_run(ix)
                        || self.flow.task(ix).trigger == crate::model::Trigger::Manual))
                    || (v.status == ShardStatus::Pending && day.run_held(ix, v.index));
                if !needs_operator {
                    return Err((
                        Invariant::NothingStuck,
                        format!(
                            "stalled with {}[{}] {:?} (attempt {}), which needs no operator",
                            self.flow.graph().id(ix),
                            v.index,
                            v.status,
                            v.attempt
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
