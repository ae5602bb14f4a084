//! The data directory's business days: the one place that lists `DATA/days/` and says what
//! each day is (closed, unclosed, empty, unreadable), and retention — the removal of the closed
//! days that `[flow] retain_days` lets go ([`prune_days`]).
//!
//! **Listing never writes.** [`list_days`] reads directory entries; [`DayDir::look`] reads a
//! day's store through [`PastDay::open`] (`store::read_only`), so nothing in a day's directory
//! changes, not even in an empty one.
//!
//! **Pruning touches only `DATA/days/` and the flows kept beside them (`DATA/flows/<date>/`).** The caller proves it holds the data directory's
//! manager lock ([`store::ManagerLock`]: shared for the manager itself, exclusive for
//! `taskflow store prune` by hand); which days go is the pure
//! [`crate::model::days_to_prune`]; a day's directory is removed only while no store in it is
//! open ([`store::remove_day_dir`]). `DATA/history/`, `DATA/EPOCH` and everything else outside
//! `days/` are never touched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::flow::Flow;
use crate::graph::TaskGraph;
use crate::journal::Error as JournalError;
use crate::model::{BusinessDate, DayFound, days_to_prune, window_start};
use crate::past::PastDay;
use crate::store;

/// The directory of business day `date`'s store in `data_dir`: `DATA/days/<YYYY-MM-DD>/`.
pub fn day_dir(data_dir: &Path, date: BusinessDate) -> PathBuf {
    data_dir.join(store::DAYS_DIR).join(date.to_string())
}

/// One business day's directory in a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayDir {
    /// The day's date (the directory's name).
    pub date: BusinessDate,
    /// `DATA/days/<date>/`.
    pub path: PathBuf,
}

/// What a day's directory holds, read read-only ([`DayDir::look`]).
#[derive(Debug)]
pub enum DayLook {
    /// An empty directory: no store was ever written in it (e.g. one waiting for
    /// `--recover-from-replicas`).
    Empty,
    /// A closed day: it never changes again.
    Closed(Box<PastDay>),
    /// A day that did not close (running, stalled, or killed and not resumed).
    Unclosed(Box<PastDay>),
    /// The store cannot be read read-only: damaged, not this flow's day, or open in another
    /// process ([`store::Error::Locked`] inside). Its journal decides when it is opened.
    Unreadable(JournalError),
}

impl DayLook {
    /// Closed, and so never changing again (and one that retention may remove).
    pub fn is_closed(&self) -> bool {
        matches!(self, DayLook::Closed(_))
    }
}

impl DayDir {
    /// Reads the day's store without writing anything (see the module documentation), with
    /// the flow the day opened with when the data directory keeps one
    /// ([`crate::flow::flow_of_day`]), else `fallback`; returns that flow too. Blocking.
    pub fn look(&self, fallback: &Arc<Flow>) -> (Arc<Flow>, DayLook) {
        let data_dir = self.path.parent().and_then(Path::parent).unwrap_or(Path::new("."));
        let (flow, why) = crate::flow::flow_of_day(data_dir, self.date, fallback);
        if let Some(why) = why {
            tracing::warn!(date = %self.date, "{why}; the day is read with the flow in use");
        }
        let look = self.look_with(Arc::new(flow.graph().clone()));
        (flow, look)
    }

    fn look_with(&self, graph: Arc<TaskGraph>) -> DayLook {
        if store::is_empty_dir(&self.path) {
            return DayLook::Empty;
        }
        match PastDay::open(&self.path, self.date, graph) {
            Ok(day) if day.state().is_closed() => DayLook::Closed(Box::new(day)),
            Ok(day) => DayLook::Unclosed(Box::new(day)),
            Err(e) => DayLook::Unreadable(e),
        }
    }
}

/// Every business day's directory of `data_dir`, oldest first: the sub-directories of
/// `DATA/days/` whose name is a date (anything else is ignored). No `days/` is no day.
/// Reading never writes.
pub fn list_days(data_dir: &Path) -> Result<Vec<DayDir>, store::Error> {
    let mut out: Vec<DayDir> = store::day_dirs(data_dir)?
        .into_iter()
        .filter_map(|(name, path)| name.parse().ok().map(|date| DayDir { date, path }))
        .collect();
    out.sort_by_key(|d| d.date);
    Ok(out)
}

/// The days of `data_dir`, each closed or not ([`DayDir::look`]; an empty or unreadable store
/// counts as not closed). Reading never writes. Blocking.
pub fn days_found(data_dir: &Path, flow: &Arc<Flow>) -> Result<Vec<DayFound>, store::Error> {
    Ok(list_days(data_dir)?
        .into_iter()
        .map(|d| {
            let (_, look) = d.look(flow);
            if let DayLook::Unreadable(e) = &look {
                tracing::debug!(date = %d.date, %e, "the day's store cannot be read read-only");
            }
            DayFound { date: d.date, closed: look.is_closed() }
        })
        .collect())
}

/// What [`prune_days`] did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// The days removed, oldest first, with the directory each was in.
    pub removed: Vec<DayDir>,
    /// The days retention let go that could not be removed, with why (they are still there).
    pub failed: Vec<(DayDir, store::Error)>,
}

/// Removes the closed days of `data_dir` outside the retention window of `keep` open
/// business days counted back from its newest day ([`crate::model::days_to_prune`] on the
/// flow's calendar), one info line each. `_held`: the data directory's manager lock, shared
/// (the manager itself) or exclusive (by hand). An interrupted earlier removal
/// (`days/.<date>.pruning`) is finished first. Touches nothing outside `DATA/days/`. Blocking.
pub fn prune_days(
    _held: &store::ManagerLock,
    data_dir: &Path,
    flow: &Flow,
    keep: u32,
) -> Result<Pruned, store::Error> {
    store::finish_removals(data_dir)?;
    let fallback = Arc::new(flow.clone());
    let days = list_days(data_dir)?;
    let policy = flow.day_policy();
    // Only a day before the window can go: only those are read (a day's store read-only costs
    // a copy of its sled and a fold; reading all 30 kept days at every cutover would be
    // O(retain_days) work per cutover). Inside the window closed or not changes nothing.
    let start = days.last().and_then(|newest| window_start(&policy, newest.date, keep));
    let found: Vec<DayFound> = days
        .iter()
        .map(|d| {
            let outside = start.is_some_and(|s| d.date < s);
            DayFound { date: d.date, closed: outside && d.look(&fallback).1.is_closed() }
        })
        .collect();
    let doomed = days_to_prune(&policy, &found, keep);
    let mut pruned = Pruned::default();
    for day in days.into_iter().filter(|d| doomed.contains(&d.date)) {
        match store::remove_day_dir(&day.path) {
            Ok(()) => {
                // The flow the day opened with goes with it (a copy written before its store).
                if let Err(e) = crate::flow::FlowFiles::remove_copy(data_dir, day.date) {
                    tracing::warn!(date = %day.date, %e, "retention: cannot remove the day's kept flow");
                }
                tracing::info!(date = %day.date, dir = %day.path.display(), retain_days = keep, "retention: closed business day removed");
                pruned.removed.push(day);
            }
            Err(e) => pruned.failed.push((day, e)),
        }
    }
    Ok(pruned)
}

/// Retention at a cutover of a rolling runtime: [`prune_days`] with the flow's `retain_days`,
/// off the async threads; a failure is logged (one line per day it could not remove), never
/// fatal.
pub(crate) async fn prune_at_cutover(
    held: Arc<store::ManagerLock>,
    data_dir: PathBuf,
    flow: Arc<Flow>,
) {
    let keep = flow.settings().day.retain_days;
    let task = tokio::task::spawn_blocking(move || prune_days(&held, &data_dir, &flow, keep));
    match task.await {
        Ok(Ok(pruned)) => {
            for (day, e) in pruned.failed {
                tracing::warn!(date = %day.date, %e, "retention: cannot remove a closed business day; it is kept");
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(%e, "retention: cannot list the business days; nothing removed")
        }
        Err(e) => tracing::warn!(%e, "retention: the pruning task failed; nothing more removed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_directories_named_by_a_date_are_days_and_listing_writes_nothing() {
        let data = tempfile::tempdir().expect("tempdir");
        let days = data.path().join("days");
        for name in ["2026-09-29", "2026-09-28", "notes", ".2026-09-01.pruning"] {
            std::fs::create_dir_all(days.join(name)).expect("mkdir");
        }
        std::fs::write(days.join("2026-09-30"), b"a file, not a day").expect("write");
        let listed: Vec<String> =
            list_days(data.path()).expect("list").iter().map(|d| d.date.to_string()).collect();
        assert_eq!(listed, ["2026-09-28", "2026-09-29"]);
        let flow = Flow::from_strs(
            "[flow]\nname = \"t\"\n[[task]]\nid = \"a\"\nname = \"A\"\nlevel = \"system\"\nbehavior = \"noop\"\n",
            "",
            "",
            "[calendar]\nfrom = 2026-01-01\nto = 2026-12-31\n",
        )
        .expect("valid");
        let found = days_found(data.path(), &Arc::new(flow)).expect("found");
        assert!(found.iter().all(|f| !f.closed), "empty day directories are not closed");
        assert!(store::is_empty_dir(&days.join("2026-09-28")), "nothing created in an empty day");
        assert!(list_days(&data.path().join("absent")).expect("no days/").is_empty());
    }
}
