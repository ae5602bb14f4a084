//! `taskflow store inspect|backup|restore`: the next step when a store is in doubt.
//!
//! A data directory holds one store per business day under `days/<YYYY-MM-DD>/`. `inspect`
//! accepts either a data directory (every day is inspected) or one day's store; `backup` and
//! `restore` work on one day's store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use taskflow_core::store::{self, Verdict};

/// The store directories under `dir`: `dir` itself if it is a store, else its `days/*`.
fn stores_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if dir.join("STORE").exists() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let days = dir.join("days");
    if !days.is_dir() {
        anyhow::bail!(
            "{} is neither a taskflow store (no STORE file) nor a data directory (no days/ inside)",
            dir.display()
        );
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(&days)
        .with_context(|| format!("reading {}", days.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    Ok(out)
}

/// `taskflow store inspect DIR`: prints each store's report; exits 1 unless every verdict is ok.
pub(crate) fn inspect(dir: &Path) -> anyhow::Result<ExitCode> {
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
