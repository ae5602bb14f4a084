//! Scheduling decisions as plain functions ("decide, then do"): when a registered task becomes
//! ready, whether a failed shard is retried automatically, how a trivial task is prepared inline, where a shard runs, how a task's
//! scope is grouped into shards, and the durability gate that holds effects back until the
//! events they depend on are durable.
//!
//! Nothing here owns an actor, a clock or a file: the manager actor asks, then does.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::behavior::ShardPlan;
use crate::flow::Flow;
use crate::graph::TaskIx;
use crate::model::{BusinessDate, ScopeItem, ShardBy, ShardKey, TaskDef, TaskLevel, Trigger};

/// What to do with a registered task whose dependencies are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Record `TaskReady` now.
    Now,
    /// Ask the clock to fire at this instant (an `at` trigger in the future).
    At(DateTime<Utc>),
    /// A manual task: wait for an operator's execute.
    Operator,
}

/// When a registered task whose dependencies are done may start.
///
/// `auto` starts at once; `at HH:MM` at its instant, or at once when it has passed (so a
/// trigger missed while the manager was down fires once on start); `manual` waits for an
/// operator unless `auto_execute_manual` (the headless runner) is set.
pub(crate) fn readiness(
    trigger: &Trigger,
    date: BusinessDate,
    tz: Tz,
    now: DateTime<Utc>,
    auto_execute_manual: bool,
) -> Readiness {
    match trigger {
        Trigger::Auto => Readiness::Now,
        Trigger::Manual if auto_execute_manual => Readiness::Now,
        Trigger::Manual => Readiness::Operator,
        Trigger::At { .. } => match trigger.fire_at(date, tz) {
            Some(at) if at > now => Readiness::At(at),
            // Passed, or not representable (a date beyond chrono's range): do not block.
            _ => Readiness::Now,
        },
    }
}

/// The backoff before the automatic retry of a shard that has just failed for the
/// `failures`-th time in its generation, or `None` when its automatic retries are used up.
///
/// Failures are counted in the durable state (the shard row), so the rule survives a restart
/// without extra bookkeeping, and only a run that failed counts — not a requeue after a lost
/// executor, a refused assignment or a manager restart: failure `n` is retried while
/// `n <= retries`.
pub(crate) fn auto_retry(failures: u32, retries: u32, backoff: Duration) -> Option<Duration> {
    (failures >= 1 && failures <= retries).then_some(backoff)
}

/// The executor for the next shard: the one with the most free slots among those that host
/// the behavior (least loaded); ties go to the lowest index. `None` when no slot is free.
pub(crate) fn place(free_slots: impl IntoIterator<Item = (usize, bool)>) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, (free, hosts)) in free_slots.into_iter().enumerate() {
        if hosts && free > 0 && best.is_none_or(|(_, f)| free > f) {
            best = Some((i, free));
        }
    }
    best.map(|(i, _)| i)
}

/// Groups a task's registered scope into shard plans by its `shard_by` (the registration's
/// default split; `behavior` is handled by the behavior's own `split`). Sorted by key, so the
/// order equals [`crate::registration::default_shards`].
pub(crate) fn group_scope(task: &TaskDef, items: &[ScopeItem]) -> Vec<ShardPlan> {
    if items.is_empty() {
        return Vec::new();
    }
    let mut groups: BTreeMap<ShardKey, Vec<ScopeItem>> = BTreeMap::new();
    for item in items {
        let key = match task.shard_by {
            ShardBy::Single => ShardKey::new("*"),
            ShardBy::Item | ShardBy::Behavior => item.key(),
            ShardBy::Product => item.product.as_ref().map_or_else(|| item.key(), ShardKey::new),
            ShardBy::Distributor => {
                item.distributor.as_ref().map_or_else(|| item.key(), ShardKey::new)
            }
        };
        groups.entry(key).or_default().push(item.clone());
    }
    groups.into_iter().map(|(key, scope)| ShardPlan::new(key, scope)).collect()
}

/// Effects held back until the events they depend on are durable.
///
/// Each effect is tagged with the seq of the last event it depends on; seqs only grow, so the
/// queue is ordered and releasing is a pop from the front.
#[derive(Debug, Clone)]
pub(crate) struct DurabilityGate<E> {
    durable: u64,
    held: VecDeque<(u64, E)>,
}

impl<E> DurabilityGate<E> {
    /// A gate whose watermark starts at `durable`.
    pub(crate) fn new(durable: u64) -> Self {
        DurabilityGate { durable, held: VecDeque::new() }
    }

    /// The durable watermark seen so far.
    pub(crate) fn durable(&self) -> u64 {
        self.durable
    }

    /// Holds `effect` until `seq` is durable, or returns it at once if it already is (and
    /// nothing before it is still held, which keeps effects in order).
    pub(crate) fn push(&mut self, seq: u64, effect: E) -> Option<E> {
        if seq <= self.durable && self.held.is_empty() {
            return Some(effect);
        }
        let seq = self.held.back().map_or(seq, |(last, _)| seq.max(*last));
        self.held.push_back((seq, effect));
        None
    }

    /// Moves the watermark to `durable` and returns the effects it releases, in order.
    pub(crate) fn advance(&mut self, durable: u64) -> Vec<E> {
        self.durable = self.durable.max(durable);
        // The queue is ordered by seq: find the released prefix, then move it out with one
        // allocation (a release carries thousands of effects under load).
        let n = self.held.partition_point(|(seq, _)| *seq <= self.durable);
        self.held.drain(..n).map(|(_, e)| e).collect()
    }

    /// How many effects are held.
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TaskLevel;
    use chrono::NaiveTime;

    fn date() -> BusinessDate {
        BusinessDate::from_ymd(2026, 9, 30).unwrap()
    }

    #[test]
    fn triggers_decide_readiness() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let at = Trigger::At { time: NaiveTime::from_hms_opt(18, 0, 0).unwrap(), day_offset: 0 };
        let fire = at.fire_at(date(), tz).unwrap();
        let before = fire - chrono::Duration::minutes(1);
        assert_eq!(readiness(&Trigger::Auto, date(), tz, before, false), Readiness::Now);
        assert_eq!(readiness(&Trigger::Manual, date(), tz, before, false), Readiness::Operator);
        assert_eq!(readiness(&Trigger::Manual, date(), tz, before, true), Readiness::Now);
        assert_eq!(readiness(&at, date(), tz, before, false), Readiness::At(fire));
        assert_eq!(readiness(&at, date(), tz, fire, false), Readiness::Now);
    }

    #[test]
    fn retries_are_counted_by_failure() {
        let b = Duration::from_secs(1);
        assert_eq!(auto_retry(1, 2, b), Some(b));
        assert_eq!(auto_retry(2, 2, b), Some(b));
        assert_eq!(auto_retry(3, 2, b), None);
        assert_eq!(auto_retry(1, 0, b), None);
    }

    #[test]
    fn placement_prefers_the_least_loaded_host() {
        assert_eq!(place([(1, true), (3, true), (3, true)]), Some(1));
        assert_eq!(place([(5, false), (0, true)]), None);
        assert_eq!(place([(0, true), (2, true)]), Some(1));
    }

    #[test]
    fn scope_groups_match_default_shards() {
        let mut task = TaskDef::new("t", TaskLevel::Product, "noop", &[]);
        let items = vec![
            ScopeItem::pair("P1", "D1"),
            ScopeItem::pair("P1", "D2"),
            ScopeItem::pair("P2", "D1"),
        ];
        for by in [ShardBy::Item, ShardBy::Single, ShardBy::Product, ShardBy::Distributor] {
            task.shard_by = by;
            let plans = group_scope(&task, &items);
            let keys: Vec<ShardKey> = plans.iter().map(|p| p.key.clone()).collect();
            assert_eq!(keys, crate::registration::default_shards(&task, &items), "{by:?}");
            assert_eq!(plans.iter().map(|p| p.scope.len()).sum::<usize>(), items.len());
        }
    }

    #[test]
    fn gate_releases_in_order_once_durable() {
        let mut g = DurabilityGate::new(0);
        assert_eq!(g.push(1, "a"), None);
        assert_eq!(g.push(3, "b"), None);
        assert_eq!(g.push(2, "c"), None, "held behind b, so it keeps its place");
        assert_eq!(g.advance(1), vec!["a"]);
        assert_eq!(g.advance(2), Vec::<&str>::new());
        assert_eq!(g.advance(3), vec!["b", "c"]);
        assert_eq!(g.push(3, "d"), Some("d"));
        assert_eq!(g.len(), 0);
    }
}

/// A task's registration and split, computed ahead of recording it.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The registered scope.
    pub(crate) items: Vec<ScopeItem>,
    /// The covered calendar dates.
    pub(crate) covered_dates: Vec<chrono::NaiveDate>,
    /// The shards, in registration order.
    pub(crate) plans: Vec<ShardPlan>,
}

/// Whether preparing `ix` is trivial enough for the manager to do inline: a system-level task
/// (one scope item, no reference data walked) split by the flow, not by its behavior.
pub(crate) fn is_trivial(flow: &Flow, ix: TaskIx) -> bool {
    let def = flow.task(ix);
    def.level == TaskLevel::System && def.shard_by != ShardBy::Behavior
}

/// Registration plus the flow's own split (`shard_by` other than `behavior`): pure.
pub(crate) fn prepare_by_flow(
    flow: &Flow,
    date: BusinessDate,
    ix: TaskIx,
) -> Result<Prepared, String> {
    let def = flow.task(ix);
    let reg =
        crate::registration::register(def, date, flow.reference()).map_err(|e| e.to_string())?;
    if reg.is_empty() {
        return Ok(Prepared { items: Vec::new(), covered_dates: Vec::new(), plans: Vec::new() });
    }
    let plans = group_scope(def, &reg.items);
    Ok(Prepared { items: reg.items, covered_dates: reg.covered_dates, plans })
}
