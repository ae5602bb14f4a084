//! `taskflow store inspect|backup|restore|events|prune`: the next step when a store is in
//! doubt, and retention by hand.
//!
//! A data directory holds one store per business day under `days/<YYYY-MM-DD>/`. `inspect`
//! accepts either a data directory (every day is inspected) or one day's store; `backup` and
//! `restore` work on one day's store; `events` prints one day's logged events as JSON lines;
//! `prune` removes the closed days outside a retention window
//! ([`taskflow_core::prune_days`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use taskflow_core::PastLog;
use taskflow_core::store::{self, Verdict};

/// The store directories under `dir`: `dir` itself if it is a store, else its `days/*`.
fn stores_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if dir.join("STORE").exists() {
        return Ok(vec![dir.to_path_buf()]);
    }
    if !dir.join(store::DAYS_DIR).is_dir() {
        anyhow::bail!(
            "{} is neither a taskflow store (no STORE file) nor a data directory (no days/ inside)",
            dir.display()
        );
    }
    Ok(taskflow_core::list_days(dir)
        .with_context(|| format!("listing the business days of {}", dir.display()))?
        .into_iter()
        .map(|d| d.path)
        .collect())
}

/// `taskflow store inspect DIR`: prints each store's report; exits 1 unless every verdict is ok.
///
/// Changes nothing under `dir` ([`store::inspect`] reads sled from a temporary copy).
pub(crate) fn inspect(dir: &Path) -> anyhow::Result<ExitCode> {
    if store::is_empty_dir(dir) {
        // An empty directory (e.g. a day whose data was lost): say so, and what to do.
        println!("{}", store::inspect(dir));
        return Ok(ExitCode::FAILURE);
    }
    let stores = stores_under(dir)?;
    if stores.is_empty() {
        println!("{}: a data directory with no business day yet", dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut healthy = true;
    for (i, s) in stores.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let report = store::inspect(s);
        println!("{report}");
        healthy &= matches!(report.verdict, Verdict::Ok | Verdict::OkWithWarnings(_));
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `taskflow store prune DATA --keep N [--flow DIR]`: removes the closed days outside the
/// window of N open business days, printing each; refused while a manager holds the data
/// directory (its `MANAGER.lock`), with nothing removed. Exits 1 if a day it should remove
/// could not be.
pub(crate) fn prune(data: &Path, keep: u32, flow: Option<&Path>) -> anyhow::Result<ExitCode> {
    if keep == 0 {
        anyhow::bail!(
            "--keep 0: the newest business day is always kept, so --keep must be at least 1 \
             (e.g. --keep 30, the flow default of retain_days)"
        );
    }
    if !data.join(store::DAYS_DIR).is_dir() {
        anyhow::bail!(
            "{} is not a data directory (no days/ inside): pass the directory a manager runs on \
             (its --data)",
            data.display()
        );
    }
    let flow = match flow {
        Some(dir) => taskflow_core::flow::load_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => taskflow_examples::fund_clearing::flow()
            .map_err(|e| anyhow::anyhow!("the bundled example does not load: {e}"))?,
    };
    let held = match store::ManagerLock::exclusive(data) {
        Ok(held) => held,
        Err(store::Error::Locked { path }) => anyhow::bail!(
            "a taskflow manager is running on {} (it holds {}): nothing was removed; stop it \
             first, or let it prune by itself at its next cutover ([flow] retain_days)",
            data.display(),
            path.display()
        ),
        Err(e) => return Err(e).context("taking the data directory's manager lock"),
    };
    let pruned = taskflow_core::prune_days(&held, data, &flow, keep)
        .with_context(|| format!("pruning {}", data.display()))?;
    for day in &pruned.removed {
        println!("removed {} ({})", day.date, day.path.display());
    }
    if pruned.removed.is_empty() {
        println!(
            "nothing to remove: no closed business day of {} is older than the newest {keep} \
             open business days",
            data.display()
        );
    }
    for (day, e) in &pruned.failed {
        eprintln!("error: cannot remove {} ({}): {e}", day.date, day.path.display());
    }
    Ok(if pruned.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `taskflow store backup DIR FILE`.
pub(crate) fn backup(dir: &Path, file: &Path) -> anyhow::Result<ExitCode> {
    let store = single_store(dir)?;
    let events = store::backup(&store, file)?;
    println!("backed up {} to {} ({events} events)", store.display(), file.display());
    Ok(ExitCode::SUCCESS)
}

/// `taskflow store restore FILE DIR [--force]`.
pub(crate) fn restore(file: &Path, dir: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let events = store::restore(file, dir, force)?;
    println!("restored {} into {} ({events} events)", file.display(), dir.display());
    Ok(ExitCode::SUCCESS)
}

fn single_store(dir: &Path) -> anyhow::Result<PathBuf> {
    let stores = stores_under(dir)?;
    match stores.as_slice() {
        [one] if one == dir => Ok(one.clone()),
        _ => {
            let list: Vec<String> = stores.iter().map(|s| format!("  {}", s.display())).collect();
            anyhow::bail!(
                "{} is a data directory; back up one business day's store:\n{}",
                dir.display(),
                if list.is_empty() {
                    "  (no business day yet)".to_owned()
                } else {
                    list.join("\n")
                }
            )
        }
    }
}

/// `taskflow store events DIR [--date D]`: prints the events in the store's log, one JSON
/// object per line (`{"seq":…,"at_ms":…,"kind":{…}}`, the event's serde form), oldest first.
///
/// Reads the store without writing to it ([`taskflow_core::PastLog::read`]: a torn tail is
/// reported on stderr and left in place); the store must not be open in another process (a
/// running manager holds its lock). Events before the newest kept snapshot may have been
/// compacted away: a note on stderr then says from which seq the log starts, so a count over
/// the printed events is known to be partial.
pub(crate) fn events(dir: &Path, date: Option<&str>) -> anyhow::Result<ExitCode> {
    let store_dir = match date {
        Some(d) => {
            let day = dir.join(store::DAYS_DIR).join(d);
            if !day.join("STORE").exists() {
                anyhow::bail!(
                    "{} has no store for business date {d} (no {}): --date needs a data \
                     directory; pass a day's store directory without --date",
                    dir.display(),
                    day.join("STORE").display()
                );
            }
            day
        }
        None => match stores_under(dir)?.as_slice() {
            [one] => one.clone(),
            _ => single_store(dir).context("pass --date YYYY-MM-DD to choose a business day")?,
        },
    };
    let log =
        PastLog::read(&store_dir).with_context(|| format!("reading {}", store_dir.display()))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for event in &log.events {
        serde_json::to_writer(&mut out, event)?;
        std::io::Write::write_all(&mut out, b"\n")?;
    }
    std::io::Write::flush(&mut out)?;
    drop(out);
    let first = log.events.first().map(|e| e.seq);
    let compacted = match first {
        Some(seq) => seq > 1,
        None => log.snapshot_seq.is_some(),
    };
    if compacted {
        eprintln!(
            "note: the log of {} starts at seq {} (earlier events were compacted into the \
             snapshot at seq {}); {} events printed",
            store_dir.display(),
            first.unwrap_or(log.next_seq),
            log.snapshot_seq.unwrap_or(0),
            log.events.len()
        );
    }
    if let Some(t) = &log.torn_tail {
        eprintln!(
            "note: {} ends in a torn tail at byte {} ({}): never acknowledged, left in place; \
             the events before it were printed",
            t.path.display(),
            t.offset,
            t.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}
