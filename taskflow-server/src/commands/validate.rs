//! `taskflow validate` and `taskflow plan`: check a flow directory, show a day's registrations.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use taskflow_core::flow::{self, Flow};
use taskflow_core::model::{BusinessDate, Trigger};
use taskflow_core::registration;

/// Loads the flow; on failure prints every diagnostic (one `FILE:LINE:COL: message` per line).
fn load(path: &Path) -> Result<Flow, ExitCode> {
    if !path.is_dir() {
        eprintln!(
            "{}: not a directory; give the flow directory (the one holding flow.toml)",
            path.display()
        );
        return Err(ExitCode::FAILURE);
    }
    flow::load_dir(path).map_err(|errors| {
        eprintln!("{errors}");
        let n = errors.diagnostics().len();
        eprintln!("{}: {n} problem{} found", path.display(), if n == 1 { "" } else { "s" });
        ExitCode::FAILURE
    })
}

/// `taskflow validate PATH`: exit 0 with a one-screen summary, or 1 with every problem.
pub(crate) fn run(path: &Path) -> anyhow::Result<ExitCode> {
    match load(path) {
        Ok(flow) => {
            println!("{}: ok", path.display());
            println!("{}", flow.summary());
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

/// `taskflow plan PATH --date D`: what each task registers on a business date, in
/// dependency order. A dry run: nothing is stored.
pub(crate) fn plan(path: &Path, date: &str) -> anyhow::Result<ExitCode> {
    let date: BusinessDate = date
        .parse()
        .with_context(|| format!("--date {date:?} is not a date of the form YYYY-MM-DD"))?;
    let flow = match load(path) {
        Ok(flow) => flow,
        Err(code) => return Ok(code),
    };
    let open = flow.is_open_day(date.date()).with_context(|| format!("business date {date}"))?;
    println!(
        "{} on {date} ({}): {}",
        flow.settings().name,
        date.date().format("%A"),
        if open { "the engine opens this business day" } else { "not an open day" }
    );
    println!(
        "{:<24} {:<12} {:<18} {:>6} {:>7}  notes",
        "task", "level", "trigger", "scope", "shards"
    );
    for &ix in flow.graph().topo_order() {
        let task = flow.task(ix);
        let reg = registration::register(task, date, flow.reference())
            .with_context(|| format!("registering task `{}` on {date}", task.id))?;
        let shards = registration::default_shards(task, &reg.items);
        let mut notes = Vec::new();
        if let Some(reason) = &reg.not_applicable {
            notes.push(format!("counts as done: {reason}"));
        }
        if reg.covered_dates.len() > 1 {
            let last = reg.covered_dates.last().map(|d| d.to_string()).unwrap_or_default();
            notes.push(format!("covers {} calendar days through {last}", reg.covered_dates.len()));
        }
        if let (Trigger::At { .. }, Some(at)) =
            (&task.trigger, task.trigger.fire_at(date, flow.settings().time_zone))
        {
            notes.push(format!("fires at {}", at.with_timezone(&flow.settings().time_zone)));
        }
        println!(
            "{:<24} {:<12} {:<18} {:>6} {:>7}  {}",
            task.id.as_str(),
            task.level.as_str(),
            task.trigger.to_string(),
            reg.items.len(),
            shards.len(),
            notes.join("; ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
