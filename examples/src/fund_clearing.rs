//! The behaviors of the bundled fund-clearing flow (`examples/fund-clearing/`): one
//! implementation of every `fund.*` behavior its `flow.toml` names, plus the flow files
//! themselves, embedded so a binary can run the example without a checkout.
//!
//! The work is simulated but shaped like the real thing: each behavior has the steps a TA
//! batch job has (`load_applications → validate → confirm → write_shares`), reports progress,
//! logs a few lines per shard, and derives every figure deterministically from the business
//! date and shard key. [`FundOptions`] sets how long a step takes (a few milliseconds in tests,
//! [`FundOptions::demo`] for a human watching the console), which faults to inject
//! ([`FailurePlan`], also from the `TASKFLOW_INJECT_FAILURES` environment variable), and an
//! optional exactly-once [`Ledger`] that behaviors post their money movements to.
//!
//! ```
//! use taskflow_core::behavior::BehaviorRegistry;
//! use taskflow_examples::fund_clearing::{self, FundOptions};
//!
//! let mut registry = BehaviorRegistry::with_builtins();
//! fund_clearing::register_with(&mut registry, FundOptions::for_test())?;
//! let flow = fund_clearing::flow()?;
//! assert!(flow.tasks().iter().all(|t| registry.contains(&t.behavior)));
//! # Ok::<(), anyhow::Error>(())
//! ```

mod behaviors;
mod failure;
mod file_ledger;
mod ledger;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use taskflow_core::behavior::{BehaviorRegistry, RegistryError};
use taskflow_core::flow::{self, Flow};
use taskflow_core::model::parse_duration;

use behaviors::{FundBehavior, Kind};

pub use failure::{FailureKind, FailurePlan, FailureRule, FailureSpecError, INJECT_FAILURES_ENV};
pub use file_ledger::{FileLedger, KeyAttempts, LEDGER_DIR_ENV};
pub use ledger::{Ledger, MemoryLedger};

/// `examples/fund-clearing/flow.toml`.
pub const FLOW_TOML: &str = include_str!("../fund-clearing/flow.toml");
/// `examples/fund-clearing/products.toml`.
pub const PRODUCTS_TOML: &str = include_str!("../fund-clearing/products.toml");
/// `examples/fund-clearing/distributors.toml`.
pub const DISTRIBUTORS_TOML: &str = include_str!("../fund-clearing/distributors.toml");
/// `examples/fund-clearing/calendar.toml`.
pub const CALENDAR_TOML: &str = include_str!("../fund-clearing/calendar.toml");

/// The environment variable [`FundOptions::from_env`] reads the step delay from, as a
/// duration such as `"800ms"` or `"2s"`.
pub const STEP_DELAY_ENV: &str = "TASKFLOW_FUND_STEP_DELAY";

/// Loads the embedded fund-clearing flow.
pub fn flow() -> Result<Flow, flow::Errors> {
    Flow::from_strs(FLOW_TOML, PRODUCTS_TOML, DISTRIBUTORS_TOML, CALENDAR_TOML)
}

/// The names of every `fund.*` behavior this module provides, in flow order.
pub fn behavior_names() -> Vec<&'static str> {
    Kind::ALL.iter().map(|kind| kind.name()).collect()
}

/// Registers every `fund.*` behavior with [`FundOptions::default`]: no injected faults, no
/// ledger, a few milliseconds per step. The environment is not read; a binary that wants
/// `TASKFLOW_INJECT_FAILURES` calls `register_with(registry, FundOptions::from_env()?)`.
pub fn register(registry: &mut BehaviorRegistry) -> Result<(), RegistryError> {
    register_with(registry, FundOptions::default())
}

/// Registers every `fund.*` behavior, all sharing `options`.
pub fn register_with(
    registry: &mut BehaviorRegistry,
    options: FundOptions,
) -> Result<(), RegistryError> {
    let options = Arc::new(options);
    for kind in Kind::ALL {
        let options = Arc::clone(&options);
        registry.register(kind.name(), move || FundBehavior::new(kind, Arc::clone(&options)))?;
    }
    Ok(())
}

/// Process-wide settings of the fund behaviors.
#[derive(Clone)]
pub struct FundOptions {
    /// How long each step's simulated work takes, spread over up to four progress reports.
    /// Waiting honours cancellation. Default 2 ms; [`FundOptions::demo`] 1.5 s.
    pub step_delay: Duration,
    /// Faults to inject (failures, hangs). Default: none.
    pub failures: FailurePlan,
    /// Where behaviors post money and share movements, keyed by idempotency key, and where
    /// rollbacks reverse them. Default: none (postings are only logged).
    pub ledger: Option<Arc<dyn Ledger>>,
}

impl Default for FundOptions {
    fn default() -> Self {
        FundOptions {
            step_delay: Duration::from_millis(2),
            failures: FailurePlan::none(),
            ledger: None,
        }
    }
}

impl FundOptions {
    /// The step delay of [`FundOptions::demo`].
    pub const DEMO_STEP_DELAY: Duration = Duration::from_millis(1500);

    /// For tests: no delay at all, no faults, no ledger.
    pub fn for_test() -> Self {
        FundOptions { step_delay: Duration::ZERO, ..FundOptions::default() }
    }

    /// For demos: steps take [`FundOptions::DEMO_STEP_DELAY`] so shards visibly move.
    pub fn demo() -> Self {
        FundOptions { step_delay: Self::DEMO_STEP_DELAY, ..FundOptions::default() }
    }

    /// The defaults, overridden by `TASKFLOW_FUND_STEP_DELAY` (a duration such as `"800ms"`),
    /// `TASKFLOW_INJECT_FAILURES` (a [`FailurePlan`] spec) and `TASKFLOW_LEDGER_DIR` (a
    /// directory: postings go to a [`FileLedger`] there, shared by every process using it)
    /// when they are set.
    pub fn from_env() -> Result<Self, OptionsError> {
        Self::default().with_env()
    }

    /// `self`, overridden by the environment variables that are set (see
    /// [`from_env`](Self::from_env)); e.g. `FundOptions::demo().with_env()`.
    pub fn with_env(self) -> Result<Self, OptionsError> {
        self.with_vars(|name| std::env::var(name).ok())
    }

    /// `self`, overridden by the variables `var` returns (testable form of
    /// [`with_env`](Self::with_env)).
    pub fn with_vars(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self, OptionsError> {
        if let Some(value) = var(STEP_DELAY_ENV) {
            self.step_delay = parse_duration(&value)
                .map_err(|problem| OptionsError::StepDelay { value, problem })?;
        }
        if let Some(spec) = var(INJECT_FAILURES_ENV) {
            self.failures = FailurePlan::parse(&spec)?;
        }
        if let Some(dir) = var(LEDGER_DIR_ENV).filter(|d| !d.is_empty()) {
            let ledger = FileLedger::open(&dir)
                .map_err(|e| OptionsError::Ledger { dir, problem: e.to_string() })?;
            self.ledger = Some(Arc::new(ledger));
        }
        Ok(self)
    }

    /// `self` with the faults of `spec` (see [`FailurePlan`]).
    pub fn with_failures(mut self, spec: &str) -> Result<Self, FailureSpecError> {
        self.failures = FailurePlan::parse(spec)?;
        Ok(self)
    }

    /// `self` posting to `ledger`.
    pub fn with_ledger(mut self, ledger: Arc<dyn Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }
}

impl fmt::Debug for FundOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FundOptions")
            .field("step_delay", &self.step_delay)
            .field("failures", &self.failures.to_string())
            .field("ledger", &self.ledger.is_some())
            .finish()
    }
}

/// Why [`FundOptions::from_env`] rejected the environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// `TASKFLOW_FUND_STEP_DELAY` is not a duration.
    #[error("{STEP_DELAY_ENV}=`{value}`: {problem}")]
    StepDelay {
        /// The value as set.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `TASKFLOW_INJECT_FAILURES` is not a valid spec.
    #[error("{INJECT_FAILURES_ENV}: {0}")]
    Failures(#[from] FailureSpecError),
    /// `TASKFLOW_LEDGER_DIR` cannot be opened as a ledger directory.
    #[error("{LEDGER_DIR_ENV}=`{dir}`: cannot open the ledger directory: {problem}")]
    Ledger {
        /// The directory as set.
        dir: String,
        /// The I/O error.
        problem: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_read_the_environment_variables() {
        let vars = |name: &str| match name {
            STEP_DELAY_ENV => Some("250ms".to_owned()),
            INJECT_FAILURES_ENV => Some("clearing:*:2".to_owned()),
            _ => None,
        };
        let options = FundOptions::default().with_vars(vars).expect("valid variables");
        assert_eq!(options.step_delay, Duration::from_millis(250));
        assert_eq!(options.failures.to_string(), "clearing:*:2");

        let bad = FundOptions::default()
            .with_vars(|name| (name == INJECT_FAILURES_ENV).then(|| "clearing".to_owned()))
            .expect_err("bad spec");
        assert!(bad.to_string().starts_with("TASKFLOW_INJECT_FAILURES: invalid failure rule"));
        let bad = FundOptions::default()
            .with_vars(|name| (name == STEP_DELAY_ENV).then(|| "soon".to_owned()))
            .expect_err("bad delay");
        assert!(matches!(bad, OptionsError::StepDelay { .. }), "{bad}");
    }

    #[test]
    fn the_ledger_directory_variable_makes_a_file_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger");
        let path_str = path.to_str().unwrap().to_owned();
        let options = FundOptions::default()
            .with_vars(|name| (name == LEDGER_DIR_ENV).then(|| path_str.clone()))
            .expect("a creatable directory");
        let ledger = options.ledger.expect("a ledger");
        assert!(ledger.post("k", 1));
        assert!(path.join("entries").is_dir());

        let file = dir.path().join("file");
        std::fs::write(&file, "not a directory").unwrap();
        let file_str = file.to_str().unwrap().to_owned();
        let bad = FundOptions::default()
            .with_vars(|name| (name == LEDGER_DIR_ENV).then(|| file_str.clone()))
            .expect_err("a file is not a ledger directory");
        assert!(bad.to_string().starts_with("TASKFLOW_LEDGER_DIR="), "{bad}");
    }

    #[test]
    fn registering_twice_is_a_duplicate() {
        let mut registry = BehaviorRegistry::new();
        register(&mut registry).expect("first registration");
        assert!(matches!(register(&mut registry), Err(RegistryError::Duplicate { .. })));
    }
}
