//! Failure injection for demos and tests: a [`FailurePlan`] says which shards of which tasks
//! fail (or hang) on which attempts, parsed from a one-line spec so it needs no code change.
//!
//! # Grammar
//!
//! ```text
//! plan    := "" | rule ("," rule)*
//! rule    := task ":" target ":" kind
//! task    := a task id, or "*" for every task
//! target  := shard ["@" step]          shard: a shard key, or "*" for every shard
//! kind    := N                         fail attempts 1..=N (N ≥ 1), then succeed
//!          | "hang"                    wait until cancelled, on every attempt
//!          | "hang" N                  wait until cancelled on attempts 1..=N
//!          | "stuck" N                 block the step's thread for N s, deaf to cancellation,
//!                                      on every attempt (Rust code stuck in a blocking call:
//!                                      the attempt is abandoned and its slot stays busy)
//! ```
//!
//! Without `@step` the rule fires at whichever step an attempt runs first (the step after the
//! last checkpoint), since a fault ends the attempt there. Shard keys of product×distributor pairs contain `@` themselves
//! (`510001@D001`), so a target is matched against both `shard` and `shard@step` at run time
//! rather than split when parsed: `510001@D001:1` fails that pair shard, and
//! `510001@D001@confirm:1` fails it at step `confirm`.
//!
//! Example: `confirm_trades:510002@confirm:1,clearing:*:2,settlement:D101:hang`.

use std::fmt;
use std::str::FromStr;

/// The environment variable [`FundOptions::from_env`](super::FundOptions::from_env) reads the
/// failure spec from.
pub const INJECT_FAILURES_ENV: &str = "TASKFLOW_INJECT_FAILURES";

/// A parsed failure spec: the rules, in spec order (the first matching rule that fires on the attempt wins).
///
/// # Grammar
///
/// ```text
/// plan    := "" | rule ("," rule)*
/// rule    := task ":" target ":" kind
/// task    := a task id, or "*" for every task
/// target  := shard ["@" step]          shard: a shard key, or "*" for every shard
/// kind    := N                         fail attempts 1..=N (N ≥ 1), then succeed
///          | "hang"                    wait until cancelled, on every attempt
///          | "hang" N                  wait until cancelled on attempts 1..=N
/// ```
///
/// Without `@step` the rule fires at whichever step an attempt runs first (the step after the
/// last checkpoint), since a fault ends the attempt there. Shard keys of product×distributor pairs contain `@` themselves
/// (`510001@D001`), so a target is matched against both `shard` and `shard@step` at run time
/// rather than split when parsed: `510001@D001:1` fails that pair shard, and
/// `510001@D001@confirm:1` fails it at step `confirm`.
///
/// Example: `confirm_trades:510002@confirm:1,clearing:*:2,settlement:D101:hang`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailurePlan {
    rules: Vec<FailureRule>,
}

/// One rule of a [`FailurePlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRule {
    /// The task id, or `*`.
    pub task: String,
    /// The shard key, `*`, or either followed by `@step`.
    pub target: String,
    /// What happens when the rule fires.
    pub kind: FailureKind,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The step returns an error on attempts `1..=attempts`.
    Fail {
        /// How many attempts fail.
        attempts: u32,
    },
    /// The step waits until the shard is cancelled, on attempts `1..=attempts` (`None`: all).
    Hang {
        /// How many attempts hang; `None` for every attempt.
        attempts: Option<u32>,
    },
    /// The step blocks its thread for `secs` seconds, ignoring cancellation, on every attempt.
    Stuck {
        /// How long it blocks.
        secs: u32,
    },
}

/// A fault chosen for one step of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Fail,
    Hang,
    Stuck(u32),
}

/// Why a failure spec does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid failure rule `{rule}` (rule {position} of the spec): {problem}; expected \
     `task:shard[@step]:N`, `task:shard[@step]:hang[N]` or `task:shard[@step]:stuckN`, e.g. `confirm_trades:510002:1,clearing:*:2`"
)]
pub struct FailureSpecError {
    /// The offending rule as written.
    pub rule: String,
    /// Its 1-based position in the comma-separated spec.
    pub position: usize,
    /// What is wrong with it.
    pub problem: String,
}

impl FailurePlan {
    /// A plan that injects nothing.
    pub fn none() -> Self {
        FailurePlan::default()
    }

    /// Parses a spec (see [`FailurePlan`] for the grammar). An empty or blank spec is
    /// the empty plan.
    pub fn parse(spec: &str) -> Result<Self, FailureSpecError> {
        let mut rules = Vec::new();
        if spec.trim().is_empty() {
            return Ok(FailurePlan { rules });
        }
        for (i, raw) in spec.split(',').enumerate() {
            let raw = raw.trim();
            let error = |problem: &str| FailureSpecError {
                rule: raw.to_owned(),
                position: i + 1,
                problem: problem.to_owned(),
            };
            let mut parts = raw.split(':');
            let (Some(task), Some(target), Some(kind), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(error("expected three `:`-separated fields"));
            };
            let (task, target, kind) = (task.trim(), target.trim(), kind.trim());
            if task.is_empty() {
                return Err(error("the task is empty"));
            }
            if target.is_empty() || target.starts_with('@') || target.ends_with('@') {
                return Err(error("the shard is empty"));
            }
            let count = |digits: &str| match digits.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(error("the attempt count must be a whole number of at least 1")),
            };
            let kind = match (kind.strip_prefix("hang"), kind.strip_prefix("stuck")) {
                (Some(""), _) => FailureKind::Hang { attempts: None },
                (Some(n), _) => FailureKind::Hang { attempts: Some(count(n)?) },
                (_, Some(n)) => FailureKind::Stuck { secs: count(n)? },
                (None, None) => FailureKind::Fail { attempts: count(kind)? },
            };
            rules.push(FailureRule { task: task.to_owned(), target: target.to_owned(), kind });
        }
        Ok(FailurePlan { rules })
    }

    /// The rules, in spec order.
    pub fn rules(&self) -> &[FailureRule] {
        &self.rules
    }

    /// Whether the plan injects nothing.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The fault, if any, for step `step_name` of `shard` of `task` on `attempt`.
    pub(crate) fn fault(
        &self,
        task: &str,
        shard: &str,
        step_name: &str,
        attempt: u32,
    ) -> Option<Fault> {
        self.rules
            .iter()
            .filter(|r| (r.task == "*" || r.task == task) && r.matches_target(shard, step_name))
            .find_map(|rule| match rule.kind {
                FailureKind::Fail { attempts } if attempt <= attempts => Some(Fault::Fail),
                FailureKind::Hang { attempts } if attempts.is_none_or(|n| attempt <= n) => {
                    Some(Fault::Hang)
                }
                FailureKind::Stuck { secs } => Some(Fault::Stuck(secs)),
                _ => None,
            })
    }
}

impl FailureRule {
    fn matches_target(&self, shard: &str, step_name: &str) -> bool {
        let whole = |t: &str| t == "*" || t == shard;
        if whole(&self.target) {
            return true;
        }
        // `shard@step`: the shard part may itself contain `@`, so split at the last one.
        self.target.rsplit_once('@').is_some_and(|(target_shard, target_step)| {
            target_step == step_name && whole(target_shard)
        })
    }
}

impl FromStr for FailurePlan {
    type Err = FailureSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FailurePlan::parse(s)
    }
}

impl fmt::Display for FailurePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}:", rule.task, rule.target)?;
            match rule.kind {
                FailureKind::Fail { attempts } => write!(f, "{attempts}")?,
                FailureKind::Hang { attempts: None } => f.write_str("hang")?,
                FailureKind::Hang { attempts: Some(n) } => write!(f, "hang{n}")?,
                FailureKind::Stuck { secs } => write!(f, "stuck{secs}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_specs_parse_and_round_trip() {
        let spec = "confirm_trades:P003:1,clearing:*:2,settlement:D101@send_instructions:hang,\
                    *:510001@D001@confirm:hang2,day_init:*:stuck20";
        let plan = FailurePlan::parse(spec).expect("valid spec");
        assert_eq!(plan.rules().len(), 5);
        assert_eq!(plan.rules()[4].kind, FailureKind::Stuck { secs: 20 });
        assert_eq!(plan.rules()[0].kind, FailureKind::Fail { attempts: 1 });
        assert_eq!(plan.rules()[2].kind, FailureKind::Hang { attempts: None });
        assert_eq!(plan.rules()[3].kind, FailureKind::Hang { attempts: Some(2) });
        assert_eq!(plan.to_string().parse::<FailurePlan>(), Ok(plan));
        assert!(FailurePlan::parse("  ").expect("blank spec").is_empty());
    }

    #[test]
    fn bad_specs_name_the_rule_and_the_problem() {
        for (spec, position, problem) in [
            ("confirm_trades:P003", 1, "three"),
            ("a:b:1,confirm_trades:P003:0", 2, "at least 1"),
            ("confirm_trades:P003:often", 1, "whole number"),
            ("confirm_trades:P003:hangx", 1, "whole number"),
            (":P003:1", 1, "task is empty"),
            ("t::1", 1, "shard is empty"),
            ("t:P1:1:2", 1, "three"),
        ] {
            let error = FailurePlan::parse(spec).expect_err(spec);
            assert_eq!(error.position, position, "{spec}");
            assert!(error.problem.contains(problem), "{spec}: {error}");
            assert!(error.to_string().contains("e.g."), "{error}");
        }
    }

    #[test]
    fn rules_match_shard_step_and_attempt() {
        let plan = FailurePlan::parse("t:510001@D001@confirm:1,t:P1:2,*:*@post:hang1")
            .expect("valid spec");
        // A pair shard at the named step only.
        assert_eq!(plan.fault("t", "510001@D001", "confirm", 1), Some(Fault::Fail));
        assert_eq!(plan.fault("t", "510001@D001", "load", 1), None);
        assert_eq!(plan.fault("t", "510001@D001", "confirm", 2), None);
        // Without a step: any step (so the attempt's first), attempts 1 and 2.
        assert_eq!(plan.fault("t", "P1", "load", 2), Some(Fault::Fail));
        assert_eq!(plan.fault("t", "P1", "load", 3), None);
        assert_eq!(plan.fault("t", "P2", "load", 1), None);
        // Wildcards; an exhausted rule lets a later one fire.
        assert_eq!(plan.fault("other", "X", "post", 1), Some(Fault::Hang));
        assert_eq!(plan.fault("other", "X", "post", 2), None);
        let plan = FailurePlan::parse("t:P1:1,t:P1:hang2").expect("valid spec");
        assert_eq!(plan.fault("t", "P1", "load", 1), Some(Fault::Fail));
        assert_eq!(plan.fault("t", "P1", "load", 2), Some(Fault::Hang));
        assert_eq!(plan.fault("t", "P1", "load", 3), None);
    }
}
