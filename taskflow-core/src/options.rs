//! The options a runtime starts with ([`RuntimeOptions`]): below the actors, which read them,
//! and the runtime, which takes them from its caller.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::journal::JournalOptions;
use crate::model::BusinessDate;
use crate::state::UnconfirmedPolicy;

/// Options of a [`Runtime`](crate::Runtime).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default)]
pub struct RuntimeOptions {
    /// The data directory; a day's journal lives in `<data-dir>/days/<YYYY-MM-DD>/`.
    /// Default `./taskflow-data`.
    pub data_dir: PathBuf,
    /// The business date to run. Default: [`previous_open_day`](crate::previous_open_day) of today in the flow's zone.
    pub date: Option<BusinessDate>,
    /// In-process executors. Default 1.
    pub executors: usize,
    /// Slots per executor (shards running at once on it). Default 4.
    pub slots_per_executor: u32,
    /// Ready manual tasks without an operator's execute (the headless runner). Default false.
    pub auto_execute_manual: bool,
    /// What happens to shards found running after a crash. Default `auto-rollback`.
    pub unconfirmed_policy: UnconfirmedPolicy,
    /// How long a stopped shard may take to return before it is abandoned. Default 10 s.
    #[serde(with = "duration_text")]
    pub stop_grace: Duration,
    /// How long a graceful shutdown waits for running shards. Default 30 s.
    #[serde(with = "duration_text")]
    pub shutdown_grace: Duration,
    /// Journal (store and snapshot) options; not configurable from a file.
    #[serde(skip)]
    pub journal: JournalOptions,
    /// Roll over to the next open business day when the day closes (`taskflow standalone`
    /// without `--until-done`): once the day is closed and the next open date may begin
    /// ([`next_day`](crate::model::next_day): its calendar day has begun in the flow's zone
    /// and `new_day_at` passed), the closed day's manager is shut down and the next day's
    /// opened in `days/<date>/`, in this process; handles follow it. With `cluster`, the
    /// listener is bound again for the new day and executor processes re-join. Default false.
    pub roll_over: bool,
    /// Buffer of each subscription, in notices. Default 4096.
    pub subscriber_buffer: usize,
    /// Shard log lines kept per shard. Default 200.
    pub log_lines_per_shard: usize,
    /// Shard log lines kept in all. Default 100,000.
    pub log_lines_total: usize,
    /// Accept executor processes over the network (`taskflow manager --cluster`). The
    /// in-process executors (`executors`, may be 0) run besides them.
    #[serde(skip)]
    pub cluster: Option<crate::cluster::ClusterListen>,
    /// `--replica-acks K`: with `cluster`, an effect (an assignment, a reply, a console
    /// update, a board) leaves only once the manager's own fdatasync **and** K executor
    /// replicas hold the events it depends on durably (as Kafka's `min.insync.replicas`).
    /// Fewer than K executors with `--data` connected: the day waits (logged). 0 (the
    /// default): only the manager's own fdatasync. K > 0 without `cluster` is refused.
    pub replica_acks: usize,
    /// `--replica-quorum Q`: the executors a recovery from replicas waits for; a cluster
    /// manager states at start which guarantee K and Q give (K + Q > N). Default 1.
    pub replica_quorum: usize,
    /// The directory the flow was loaded from ([`crate::flow::load_dir`]). A rolling runtime
    /// reads it again (flow, calendar, reference data) before it opens each next day: a
    /// changed flow takes effect from that day; one that no longer loads, or names a
    /// behavior the in-process executors do not host, is refused with an error in the log
    /// and the day opens with the flow it had. `None` (a flow built in code): the same flow
    /// every day. Default `None`.
    #[serde(skip)]
    pub flow_dir: Option<PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            data_dir: PathBuf::from("taskflow-data"),
            date: None,
            executors: 1,
            slots_per_executor: 4,
            auto_execute_manual: false,
            unconfirmed_policy: UnconfirmedPolicy::AutoRollback,
            stop_grace: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            journal: JournalOptions::default(),
            roll_over: false,
            subscriber_buffer: 4096,
            log_lines_per_shard: 200,
            log_lines_total: 100_000,
            cluster: None,
            replica_acks: 0,
            replica_quorum: 1,
            flow_dir: None,
        }
    }
}

impl RuntimeOptions {
    /// Options for tests: the given data dir and date, 2 slots, short graces, test journal.
    pub fn for_test(data_dir: impl Into<PathBuf>, date: BusinessDate) -> Self {
        RuntimeOptions {
            data_dir: data_dir.into(),
            date: Some(date),
            slots_per_executor: 2,
            stop_grace: Duration::from_millis(300),
            shutdown_grace: Duration::from_secs(5),
            journal: JournalOptions::for_test(),
            ..RuntimeOptions::default()
        }
    }

    /// The journal directory of `date`.
    pub fn day_dir(&self, date: BusinessDate) -> PathBuf {
        crate::days::day_dir(&self.data_dir, date)
    }
}

/// `"10s"`-style durations in option files.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::model::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// The wall clock every cutover decision and `at` trigger reads: the system clock, or — for
/// tests only — a clock started at a given instant that runs `speed` times as fast
/// ([`set_test_clock`](crate::wall::set_test_clock); the binary sets it from
/// `TASKFLOW_TEST_CLOCK`). Monotonic timers (retry backoffs, leases, graces) are not scaled.
pub mod wall {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use chrono::{DateTime, Utc};

    struct TestClock {
        start_wall: DateTime<Utc>,
        start: Instant,
        speed: f64,
    }

    static TEST_CLOCK: OnceLock<TestClock> = OnceLock::new();

    /// Makes this process's wall clock start at `start` now and run `speed` (> 0) times as
    /// fast as real time. Test-only; at most once per process.
    pub fn set_test_clock(start: DateTime<Utc>, speed: f64) -> Result<(), String> {
        if !(speed.is_finite() && speed > 0.0) {
            return Err(format!("the test clock's speed must be a number above 0, not {speed}"));
        }
        TEST_CLOCK
            .set(TestClock { start_wall: start, start: Instant::now(), speed })
            .map_err(|_| "the test clock is already set".to_owned())
    }

    /// Parses `TASKFLOW_TEST_CLOCK`'s value: `<RFC 3339 instant>[,<speed>]` (speed default 1).
    pub fn parse_test_clock(text: &str) -> Result<(DateTime<Utc>, f64), String> {
        let (at, speed) = match text.split_once(',') {
            Some((a, s)) => (a, s.trim()),
            None => (text, "1"),
        };
        let at = DateTime::parse_from_rfc3339(at.trim())
            .map_err(|e| {
                format!("`{at}` is not an RFC 3339 instant (e.g. 2026-10-09T23:59:00+08:00): {e}")
            })?
            .with_timezone(&Utc);
        let speed =
            speed.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0).ok_or_else(|| {
                format!("`{speed}` is not a speed: write a number above 0, e.g. 60")
            })?;
        Ok((at, speed))
    }

    /// The wall-clock time now.
    pub fn now() -> DateTime<Utc> {
        match TEST_CLOCK.get() {
            None => Utc::now(),
            Some(c) => {
                let real = c.start.elapsed().as_secs_f64() * c.speed;
                c.start_wall + chrono::Duration::microseconds((real * 1e6) as i64)
            }
        }
    }

    /// How long to sleep, in real time, until the wall clock reads `at` (zero if it passed).
    pub fn real_delay_until(at: DateTime<Utc>) -> Duration {
        let wall = (at - now()).to_std().unwrap_or(Duration::ZERO);
        match TEST_CLOCK.get() {
            None => wall,
            Some(c) => wall.div_f64(c.speed),
        }
    }
}
