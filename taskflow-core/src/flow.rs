//! Loading and validation of a flow directory: `flow.toml` (settings and task definitions)
//! plus the reference files `products.toml`, `distributors.toml` and `calendar.toml`.
//!
//! The format is documented in `proto-docs/flow-format.md`. Loading collects every problem
//! it finds, each located as `path:line:col: message`, so an operator fixes a file in one
//! pass instead of one error per restart.

mod copy;
mod lifecycle;
mod reference;
mod resources;
mod source;
mod summary;
mod tasks;

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::graph::{TaskGraph, TaskIx};
use crate::model::{
    Calendar, CalendarError, CatchUp, DayPolicy, ResourceDef, RunOn, StaticReferenceData, TaskDef,
};

pub use copy::{FlowFiles, flow_of_day, read_kept};
pub use source::Diagnostic;
pub use summary::Summary;

/// The `[flow]` table of `flow.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSettings {
    /// The flow's name, shown in the console and logs.
    pub name: String,
    /// The zone of `at HH:MM` triggers and of business dates (default `Asia/Shanghai`).
    pub time_zone: Tz,
    /// The products file, relative to the flow directory (default `products.toml`).
    pub products: String,
    /// The distributors file, relative to the flow directory (default `distributors.toml`).
    pub distributors: String,
    /// The calendar file, relative to the flow directory (default `calendar.toml`).
    pub calendar: String,
    /// For which dates the engine opens a business day (default business days only).
    pub open_days: RunOn,
    /// When the next business day opens (`new_day_at`, `catch_up`, `max_open_days`) and how
    /// many closed days are kept (`retain_days`).
    pub day: DaySettings,
    /// When the whole day should be done (`deadline = "HH:MM [+Nd]"`), if it has a deadline.
    pub deadline: Option<crate::model::Deadline>,
}

/// The day-lifecycle settings of `[flow]` (`proto-docs/flow-format.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaySettings {
    /// The earliest wall-clock time (flow zone) on its own date at which a business day may
    /// open; `None`: as soon as its calendar day has begun.
    pub new_day_at: Option<chrono::NaiveTime>,
    /// Which missed days open after a manager was down over several (default `all`).
    pub catch_up: CatchUp,
    /// Closed days are kept this many open business days, counted back from the newest day
    /// of the data directory (`retain_days`, ≥ 1, default 30; `crate::model::days_to_prune`).
    pub retain_days: u32,
}

impl Default for DaySettings {
    fn default() -> Self {
        DaySettings {
            new_day_at: None,
            catch_up: CatchUp::All,
            retain_days: crate::model::DEFAULT_RETAIN_DAYS,
        }
    }
}

/// Every problem found while loading a flow, sorted by file and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Errors(pub Vec<Diagnostic>);

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

impl Errors {
    /// The diagnostics.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.0
    }
}

/// A loaded, valid flow: settings, task definitions, their graph and the reference data.
#[derive(Debug, Clone)]
pub struct Flow {
    settings: FlowSettings,
    tasks: Vec<TaskDef>,
    resources: Vec<ResourceDef>,
    graph: TaskGraph,
    reference: StaticReferenceData,
}

/// One input file for [`Flow::from_sources`]: the path used in messages and the text.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The path shown in diagnostics (need not exist).
    pub path: &'a Path,
    /// The file's contents.
    pub text: &'a str,
}

impl<'a> Source<'a> {
    fn file(self) -> source::SourceFile<'a> {
        source::SourceFile { path: self.path, text: self.text }
    }
}

/// Loads and validates the flow in directory `dir`.
pub fn load_dir(dir: impl AsRef<Path>) -> Result<Flow, Errors> {
    load_dir_files(dir).map(|(flow, _)| flow)
}

/// Loads and validates the flow in directory `dir`, with the texts it was built from (what
/// a day keeps as the flow it opened with: [`FlowFiles::write_copy`]).
pub fn load_dir_files(dir: impl AsRef<Path>) -> Result<(Flow, FlowFiles), Errors> {
    let dir = dir.as_ref();
    let flow_path = dir.join("flow.toml");
    let mut errors = Vec::new();
    let read = |path: &Path, errors: &mut Vec<Diagnostic>| match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) => {
            errors.push(Diagnostic {
                path: path.to_owned(),
                line: 1,
                column: 1,
                message: format!("cannot read the file: {e}"),
            });
            None
        }
    };
    let flow_text = read(&flow_path, &mut errors);
    let (p, d, c) = flow_text.as_deref().map(tasks::file_names).unwrap_or_else(|| {
        ("products.toml".into(), "distributors.toml".into(), "calendar.toml".into())
    });
    let paths: [PathBuf; 3] = [dir.join(p), dir.join(d), dir.join(c)];
    let mut texts = paths.iter().map(|p| read(p, &mut errors));
    let (Some(flow), Some(products), Some(distributors), Some(calendar)) =
        (flow_text, texts.next().flatten(), texts.next().flatten(), texts.next().flatten())
    else {
        return Err(Errors(errors));
    };
    let built = Flow::from_sources(
        Source { path: &flow_path, text: &flow },
        Source { path: &paths[0], text: &products },
        Source { path: &paths[1], text: &distributors },
        Source { path: &paths[2], text: &calendar },
    )?;
    Ok((built, FlowFiles { flow, products, distributors, calendar }))
}

impl Flow {
    /// Loads a flow from texts held in memory (e.g. embedded with `include_str!`); messages
    /// name the files `flow.toml`, `products.toml`, `distributors.toml`, `calendar.toml`.
    pub fn from_strs(
        flow: &str,
        products: &str,
        distributors: &str,
        calendar: &str,
    ) -> Result<Flow, Errors> {
        Flow::from_sources(
            Source { path: Path::new("flow.toml"), text: flow },
            Source { path: Path::new("products.toml"), text: products },
            Source { path: Path::new("distributors.toml"), text: distributors },
            Source { path: Path::new("calendar.toml"), text: calendar },
        )
    }

    /// Loads a flow from four sources, reporting every problem found in any of them.
    pub fn from_sources(
        flow: Source<'_>,
        products: Source<'_>,
        distributors: Source<'_>,
        calendar: Source<'_>,
    ) -> Result<Flow, Errors> {
        let (flow_file, prod_file, dist_file, cal_file) =
            (flow.file(), products.file(), distributors.file(), calendar.file());
        let mut out = Vec::new();
        let dist = reference::distributors(&dist_file, &mut out);
        let prods = reference::products(
            &prod_file,
            dist.as_ref().map(|(_, spans)| spans),
            dist_file.path,
            &mut out,
        );
        let cal = reference::calendar(&cal_file, &mut out);
        let parsed = tasks::parse(&flow_file, &mut out);
        let graph = parsed.as_ref().and_then(|p| p.graph(&flow_file, &mut out));
        let reference = match (prods, dist, cal) {
            (Some(products), Some((distributors, _)), Some(calendar)) => {
                Some(StaticReferenceData { products, distributors, calendar })
            }
            _ => None,
        };
        if let (Some(p), Some(data)) = (&parsed, &reference) {
            p.check_qualification(&flow_file, data, prod_file.path, dist_file.path, &mut out);
        }
        match (parsed, graph, reference) {
            (Some(parsed), Some(graph), Some(reference)) if out.is_empty() => {
                let Some(settings) = parsed.settings.clone() else {
                    return Err(Errors(out));
                };
                let (tasks, resources) = parsed.into_parts();
                Ok(Flow { settings, tasks, resources, graph, reference })
            }
            _ => {
                out.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
                Err(Errors(out))
            }
        }
    }

    /// The `[flow]` settings.
    pub fn settings(&self) -> &FlowSettings {
        &self.settings
    }

    /// The task definitions, in file order: `tasks()[ix.get()]` is the task at `ix` in
    /// [`Flow::graph`].
    pub fn tasks(&self) -> &[TaskDef] {
        &self.tasks
    }

    /// The task at a graph index.
    pub fn task(&self, ix: TaskIx) -> &TaskDef {
        &self.tasks[ix.get()]
    }

    /// The `[[resource]]`s, in file order (their units as the flow sets them).
    pub fn resources(&self) -> &[ResourceDef] {
        &self.resources
    }

    /// The task with an id.
    pub fn task_by_id(&self, id: &str) -> Option<&TaskDef> {
        self.graph.index_of(id).map(|ix| self.task(ix))
    }

    /// The dependency graph.
    pub fn graph(&self) -> &TaskGraph {
        &self.graph
    }

    /// The reference data loaded with the flow (it implements
    /// [`crate::model::ReferenceData`]).
    pub fn reference(&self) -> &StaticReferenceData {
        &self.reference
    }

    /// The business calendar.
    pub fn calendar(&self) -> &Calendar {
        &self.reference.calendar
    }

    /// Whether the engine opens a business day for `date` (the `open_days` setting).
    pub fn is_open_day(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        match self.settings.open_days {
            RunOn::EveryDay => {
                if self.calendar().covers(date) {
                    Ok(true)
                } else {
                    self.calendar().is_business_day(date)
                }
            }
            RunOn::BusinessDays => self.calendar().is_business_day(date),
        }
    }

    /// The day lifecycle's view of the flow ([`crate::model::next_day`],
    /// [`crate::model::plan_start`]).
    pub fn day_policy(&self) -> DayPolicy<'_> {
        DayPolicy {
            calendar: self.calendar(),
            open_days: self.settings.open_days,
            time_zone: self.settings.time_zone,
            new_day_at: self.settings.day.new_day_at,
            catch_up: self.settings.day.catch_up,
        }
    }

    /// A one-screen summary of what was loaded.
    pub fn summary(&self) -> Summary {
        Summary::of(self)
    }
}

/// Ids and codes: `[A-Za-z0-9_.-]{1,64}`.
fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests;
