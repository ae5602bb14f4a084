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
    /// Roll over to the next open business day when the day closes. Not supported: the
    /// runtime runs one day, and with this set it warns at the close that the next day must be
    /// started explicitly. Default false.
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
        self.data_dir.join("days").join(date.to_string())
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
