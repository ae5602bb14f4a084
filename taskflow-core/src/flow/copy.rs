//! The flow a day opened with, kept beside the day: `DATA/flows/<date>/` holds the four
//! texts (`flow.toml`, `products.toml`, `distributors.toml`, `calendar.toml`) the day's flow
//! was built from, so that the day is recovered, listed and browsed with its own flow after
//! the flow directory has changed (a changed flow takes effect from the next day).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Errors, Flow};
use crate::model::BusinessDate;

/// The four texts a flow is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowFiles {
    /// `flow.toml`.
    pub flow: String,
    /// The products file.
    pub products: String,
    /// The distributors file.
    pub distributors: String,
    /// The calendar file.
    pub calendar: String,
}

const NAMES: [&str; 4] = ["flow.toml", "products.toml", "distributors.toml", "calendar.toml"];

impl FlowFiles {
    /// Where the flow of `date` is kept in data directory `data_dir`.
    pub fn copy_dir(data_dir: &Path, date: BusinessDate) -> PathBuf {
        data_dir.join("flows").join(date.to_string())
    }

    /// Builds the flow (messages name the four files by their kept names).
    pub fn build(&self) -> Result<Flow, Errors> {
        Flow::from_strs(&self.flow, &self.products, &self.distributors, &self.calendar)
    }

    fn texts(&self) -> [&str; 4] {
        [&self.flow, &self.products, &self.distributors, &self.calendar]
    }

    /// Keeps the texts as the flow of `date`: written to a staging directory, each file and
    /// the directory fsync'd, then renamed into place, so a crash leaves either no copy or
    /// a whole one. An existing copy is left as it is (a day keeps the flow it opened with).
    pub fn write_copy(&self, data_dir: &Path, date: BusinessDate) -> std::io::Result<()> {
        let dest = Self::copy_dir(data_dir, date);
        if dest.exists() {
            return Ok(());
        }
        let parent = data_dir.join("flows");
        std::fs::create_dir_all(&parent)?;
        let staging = parent.join(format!(".{date}.staging"));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir(&staging)?;
        for (name, text) in NAMES.iter().zip(self.texts()) {
            let mut f = std::fs::File::create(staging.join(name))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::File::open(&staging)?.sync_all()?;
        std::fs::rename(&staging, &dest)?;
        std::fs::File::open(&parent)?.sync_all()
    }

    /// Removes the kept flow of `date` (retention, once its day is removed); none is fine.
    pub fn remove_copy(data_dir: &Path, date: BusinessDate) -> std::io::Result<()> {
        match std::fs::remove_dir_all(Self::copy_dir(data_dir, date)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// The kept flow of `date`, read only: `None` when the day has no copy (a day of an
    /// earlier version, or of a flow built in code).
    pub fn read_copy(data_dir: &Path, date: BusinessDate) -> Option<std::io::Result<FlowFiles>> {
        let dir = Self::copy_dir(data_dir, date);
        if !dir.is_dir() {
            return None;
        }
        let read = |name: &str| std::fs::read_to_string(dir.join(name));
        Some((|| {
            Ok(FlowFiles {
                flow: read(NAMES[0])?,
                products: read(NAMES[1])?,
                distributors: read(NAMES[2])?,
                calendar: read(NAMES[3])?,
            })
        })())
    }
}

/// The flow day `date` opened with and its texts, if the data directory keeps a copy:
/// `None` without one, `Some(Err(why))` when it cannot be read or no longer loads.
pub fn read_kept(data_dir: &Path, date: BusinessDate) -> Option<Result<(Flow, FlowFiles), String>> {
    Some(match FlowFiles::read_copy(data_dir, date)? {
        Err(e) => Err(format!("its kept flow cannot be read: {e}")),
        Ok(files) => match files.build() {
            Ok(flow) => Ok((flow, files)),
            Err(e) => Err(format!("its kept flow no longer loads: {e}")),
        },
    })
}

/// The flow day `date` opened with, if the data directory keeps one and it still builds;
/// else `fallback`. Why a kept copy was not used is returned beside it (for a log line).
pub fn flow_of_day(
    data_dir: &Path,
    date: BusinessDate,
    fallback: &std::sync::Arc<Flow>,
) -> (std::sync::Arc<Flow>, Option<String>) {
    match read_kept(data_dir, date) {
        None => (fallback.clone(), None),
        Some(Err(why)) => (fallback.clone(), Some(why)),
        Some(Ok((flow, _))) => (std::sync::Arc::new(flow), None),
    }
}
