//! A small day whose shards prove exactly-once from outside (included with `#[path]`): every
//! shard runs a `command` that appends `KEY MARK` to `starts.txt` (MARK = the executor's
//! `TF_MARK` env, empty if unset), sleeps, then appends its idempotency key
//! (`date/task/shard/gN`) to `ledger.txt`. A shard that ran twice shows up twice.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

pub use taskflow_core::testing::{CALENDAR, DISTRIBUTORS, PRODUCTS};

/// The shards of the day: 1 + 5 product×distributor pairs (`F2` is not sold by `D2`) + 3
/// products + 2 distributors.
pub const SHARDS: usize = 11;

/// Where the day's files live.
pub struct LedgerFlow {
    pub flow: PathBuf,
    pub ledger: PathBuf,
    pub starts: PathBuf,
}

impl LedgerFlow {
    /// Writes the flow under `root/flow`; each shard sleeps `sleep_s` seconds. The root task
    /// is manual (`--until-done` executes it).
    pub fn write(root: &Path, sleep_s: f64) -> LedgerFlow {
        let flow = root.join("flow");
        std::fs::create_dir_all(&flow).unwrap();
        let (ledger, starts) = (root.join("ledger.txt"), root.join("starts.txt"));
        let shell = format!(
            "echo \"$TASKFLOW_IDEMPOTENCY_KEY ${{TF_MARK:-}}\" >> '{}'; sleep {sleep_s}; \
             echo \"$TASKFLOW_IDEMPOTENCY_KEY\" >> '{}'",
            starts.display(),
            ledger.display()
        );
        let task = |id: &str, level: &str, deps: &str, extra: &str| {
            format!(
                "[[task]]\nid = \"{id}\"\nname = \"{id}\"\nlevel = \"{level}\"\nbehavior = \
                 \"command\"\ndepends_on = [{deps}]\n{extra}params = {{ shell = {shell:?} }}\n\n"
            )
        };
        let text = format!(
            "[flow]\nname = \"ledger\"\ntime_zone = \"Asia/Shanghai\"\n\n{}{}{}{}",
            task("init", "system", "", "trigger = \"manual\"\n"),
            task(
                "per_pair",
                "product",
                "\"init\"",
                "in_lifecycle = [\"open\"]\nper_distributor = true\n"
            ),
            task("per_product", "product", "\"per_pair\"", "in_lifecycle = [\"open\"]\n"),
            task("per_distributor", "distributor", "\"per_product\"", ""),
        );
        std::fs::write(flow.join("flow.toml"), text).unwrap();
        std::fs::write(flow.join("products.toml"), PRODUCTS).unwrap();
        std::fs::write(flow.join("distributors.toml"), DISTRIBUTORS).unwrap();
        std::fs::write(flow.join("calendar.toml"), CALENDAR).unwrap();
        LedgerFlow { flow, ledger, starts }
    }

    /// The keys committed so far, in order.
    pub fn ledger(&self) -> Vec<String> {
        lines(&self.ledger)
    }

    /// `(key, mark)` of every start so far, in order.
    pub fn starts(&self) -> Vec<(String, String)> {
        lines(&self.starts)
            .into_iter()
            .map(|l| match l.split_once(' ') {
                Some((k, m)) => (k.to_owned(), m.trim().to_owned()),
                None => (l, String::new()),
            })
            .collect()
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}
