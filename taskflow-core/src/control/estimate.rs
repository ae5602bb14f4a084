//! Duration estimates for the forecast, from the duration history of past days
//! (`store::history`), and the samples a closed day adds to it.
//!
//! A shard's estimate is the mean of its key's past durations; a key never seen is its task's
//! mean scaled by today's scope size (scope items per shard today over the task's past items
//! per shard); a task with no history at all gets a default — a tenth of its `timeout`, or
//! [`DEFAULT_MS`] without one — and its forecast is marked low-confidence.

use std::collections::BTreeMap;

use crate::flow::Flow;
use crate::graph::TaskIx;
use crate::state::{DayState, ShardStatus};
use crate::store::history::{DaySamples, DaySize, History};

/// A shard's duration when its task has no history and no timeout: 1 s.
pub(crate) const DEFAULT_MS: u64 = 1_000;

/// One task's estimates.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskEstimate {
    /// The mean of its past shard durations (ms), if it has any.
    pub(crate) mean_ms: Option<u64>,
    /// The mean per shard key (ms).
    pub(crate) keys: BTreeMap<String, u64>,
    /// Its shards on the newest past day, if known.
    pub(crate) shards: Option<u32>,
    /// The shard keys of the newest past day (empty if unknown or too many).
    pub(crate) last_keys: Vec<String>,
    /// Its past scope items per shard (the mean over the kept days).
    pub(crate) items_per_shard: Option<f64>,
    /// The default when it has no history.
    pub(crate) default_ms: u64,
}

/// Estimates for every task of a flow, by task index.
#[derive(Debug, Clone, Default)]
pub(crate) struct Estimates {
    pub(crate) tasks: Vec<TaskEstimate>,
}

fn mean(v: &[u64]) -> Option<u64> {
    (!v.is_empty()).then(|| v.iter().sum::<u64>() / v.len() as u64)
}

impl Estimates {
    /// The estimates of `flow`'s tasks from `history` (tasks it does not name get defaults).
    pub(crate) fn new(flow: &Flow, history: &History) -> Estimates {
        let tasks = flow
            .graph()
            .indices()
            .map(|ix| {
                let def = flow.task(ix);
                let default_ms =
                    def.timeout.map_or(DEFAULT_MS, |t| (t.as_millis() as u64 / 10).max(1));
                let Some(h) = history.tasks.get(def.id.as_str()) else {
                    return TaskEstimate { default_ms, ..TaskEstimate::default() };
                };
                let (shards, items) =
                    h.sizes.iter().filter(|s| s.shards > 0).fold((0u64, 0u64), |(a, b), s| {
                        (a + u64::from(s.shards), b + u64::from(s.items))
                    });
                TaskEstimate {
                    mean_ms: mean(&h.samples),
                    keys: h.keys.iter().filter_map(|(k, v)| Some((k.clone(), mean(v)?))).collect(),
                    shards: h.sizes.last().map(|s| s.shards),
                    last_keys: h.last_keys.clone(),
                    items_per_shard: (shards > 0 && items > 0)
                        .then(|| items as f64 / shards as f64),
                    default_ms,
                }
            })
            .collect();
        Estimates { tasks }
    }

    /// The estimate of one shard of `ix` with `key` and `items` scope items today (0:
    /// unknown), and whether it comes from history.
    pub(crate) fn shard_ms(&self, ix: TaskIx, key: &str, items: usize) -> (u64, bool) {
        let Some(t) = self.tasks.get(ix.get()) else { return (DEFAULT_MS, false) };
        if let Some(&ms) = t.keys.get(key) {
            return (ms, true);
        }
        match (t.mean_ms, t.items_per_shard) {
            (Some(m), Some(past)) if items > 0 && past > 0.0 => {
                (((m as f64) * (items as f64 / past)).round() as u64, true)
            }
            (Some(m), _) => (m, true),
            (None, _) => (t.default_ms, false),
        }
    }

    /// The task's mean shard duration (its default without history), and whether it has
    /// history.
    pub(crate) fn task_mean(&self, ix: TaskIx) -> (u64, bool) {
        match self.tasks.get(ix.get()) {
            Some(TaskEstimate { mean_ms: Some(m), .. }) => (*m, true),
            Some(t) => (t.default_ms, false),
            None => (DEFAULT_MS, false),
        }
    }
}

/// What a closed day adds to the duration history: per task its size and, per succeeded
/// shard, its key and the duration of its succeeded attempt (dispatch to success).
pub(crate) fn day_samples(flow: &Flow, day: &DayState) -> DaySamples {
    let mut tasks = BTreeMap::new();
    for ix in flow.graph().indices() {
        if !day.is_registered(ix) {
            continue;
        }
        let shards = day.shard_count(ix);
        let items = day.scope_items(ix).len() as u32;
        let mut list = Vec::new();
        for v in day.shards(ix, Some(ShardStatus::Succeeded), 0, usize::MAX) {
            if let (Some(start), Some(end)) = (v.started_ms, v.finished_ms)
                && end >= start
            {
                list.push((v.key.to_owned(), (end - start) as u64));
            }
        }
        tasks.insert(flow.graph().id(ix).to_string(), (DaySize { shards, items }, list));
    }
    DaySamples { date: day.date().to_string(), tasks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::TaskHistory;

    #[test]
    fn a_known_key_uses_its_mean_a_new_key_its_tasks_mean_scaled_and_no_history_a_default() {
        let text = "[flow]\nname = \"e\"\n[[task]]\nid = \"a\"\nname = \"a\"\nlevel = \"system\"\nbehavior = \"noop\"\n[[task]]\nid = \"b\"\nname = \"b\"\nlevel = \"system\"\nbehavior = \"noop\"\n";
        let flow = Flow::from_strs(
            text,
            crate::testing::PRODUCTS,
            crate::testing::DISTRIBUTORS,
            crate::testing::CALENDAR,
        )
        .expect("flow");
        let mut h = History::default();
        let mut t = TaskHistory { samples: vec![100, 200, 300], ..TaskHistory::default() };
        t.keys.insert("F1".into(), vec![1_000, 3_000]);
        t.sizes.push(DaySize { shards: 4, items: 8 });
        h.tasks.insert("a".into(), t);
        let est = Estimates::new(&flow, &h);
        let a = flow.graph().index_of("a").expect("a");
        let b = flow.graph().index_of("b").expect("b");
        assert_eq!(est.shard_ms(a, "F1", 0), (2_000, true));
        // A new key: the task's mean (200), scaled by 4 items today over 2 per shard before.
        assert_eq!(est.shard_ms(a, "NEW", 4), (400, true));
        assert_eq!(est.shard_ms(a, "NEW", 0), (200, true));
        assert_eq!(est.shard_ms(b, "x", 3), (DEFAULT_MS, false));
    }
}
