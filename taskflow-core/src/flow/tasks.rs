//! Parsing and validation of `flow.toml`: the `[flow]` settings and the `[[task]]` tables.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::FlowSettings;
use super::source::{Diagnostic, SourceFile};
use crate::graph::{self, TaskGraph};
use crate::model::{
    Deadline, DistributorType, Lifecycle, ProductMode, ProductSelection, RunOn, ShardBy,
    StaticReferenceData, TaskDef, TaskId, TaskLevel, Trigger, parse_duration,
};
use crate::registration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSettings {
    name: Spanned<String>,
    #[serde(default)]
    time_zone: Option<Spanned<String>>,
    #[serde(default)]
    products: Option<String>,
    #[serde(default)]
    distributors: Option<String>,
    #[serde(default)]
    calendar: Option<String>,
    #[serde(default)]
    open_days: Option<RunOn>,
    #[serde(default)]
    new_day_at: Option<Spanned<String>>,
    #[serde(default)]
    catch_up: Option<Spanned<String>>,
    #[serde(default)]
    max_open_days: Option<Spanned<i64>>,
    #[serde(default)]
    retain_days: Option<Spanned<i64>>,
    #[serde(default)]
    deadline: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    id: Spanned<String>,
    name: String,
    level: TaskLevel,
    behavior: Spanned<String>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    #[serde(default)]
    trigger: Option<Spanned<String>>,
    #[serde(default)]
    run_on: Option<RunOn>,
    #[serde(default)]
    in_lifecycle: Option<Spanned<Vec<Lifecycle>>>,
    #[serde(default)]
    product_modes: Option<Spanned<Vec<ProductMode>>>,
    #[serde(default)]
    distributor_types: Option<Spanned<Vec<DistributorType>>>,
    #[serde(default)]
    per_distributor: Option<Spanned<bool>>,
    #[serde(default)]
    products: Option<Spanned<ProductSelection>>,
    #[serde(default)]
    shard_by: Option<Spanned<ShardBy>>,
    #[serde(default)]
    covers_non_business_days: Option<Spanned<bool>>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    priority: Option<Spanned<i64>>,
    #[serde(default)]
    retry_backoff: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    deadline: Option<Spanned<String>>,
    #[serde(default)]
    needs: Option<super::resources::RawNeeds>,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

/// `flow.toml`, parsed but not yet checked against the reference data.
pub(crate) struct ParsedFlow {
    pub(crate) settings: Option<FlowSettings>,
    tasks: Vec<(TaskDef, TaskSpans)>,
    /// The `[[resource]]` tables.
    resources: super::resources::ParsedResources,
    /// Ids of tasks that had errors of their own: depending on them is not reported again.
    invalid_ids: HashSet<String>,
}

/// Where a task's parts are, for messages.
struct TaskSpans {
    id: Range<usize>,
    depends_on: Vec<Range<usize>>,
    in_lifecycle: Option<Range<usize>>,
    needs: Vec<super::resources::NeedSpan>,
}

/// Reads only the `[flow]` file names, for the loader to find the reference files. Problems
/// are reported by [`parse`] later; here they fall back to the defaults.
pub(crate) fn file_names(text: &str) -> (String, String, String) {
    #[derive(Deserialize, Default)]
    struct Names {
        products: Option<String>,
        distributors: Option<String>,
        calendar: Option<String>,
    }
    #[derive(Deserialize)]
    struct Doc {
        flow: Option<Names>,
    }
    let names = toml::from_str::<Doc>(text).ok().and_then(|d| d.flow).unwrap_or_default();
    (
        names.products.unwrap_or_else(|| "products.toml".into()),
        names.distributors.unwrap_or_else(|| "distributors.toml".into()),
        names.calendar.unwrap_or_else(|| "calendar.toml".into()),
    )
}

/// Parses `flow.toml` and checks each task on its own (ids, triggers, durations, options
/// valid for the level).
pub(crate) fn parse(file: &SourceFile<'_>, out: &mut Vec<Diagnostic>) -> Option<ParsedFlow> {
    let mut table = file.parse(out)?;
    let settings_value = SourceFile::take(&mut table, "flow");
    let task_value = SourceFile::take(&mut table, "task");
    let resource_value = SourceFile::take(&mut table, "resource");
    let resources = super::resources::parse(file, resource_value, out);
    let has_tasks = task_value.is_some();
    let task_values = match task_value {
        Some(v) => file.array_of_tables("task", v, out),
        None => Vec::new(),
    };
    file.unknown_keys(&table, &["flow", "task", "resource"], out);
    let settings =
        match settings_value {
            None => {
                out.push(file.diag(
                    &(0..0),
                    "missing `[flow]` table; add one with at least `name = \"...\"`",
                ));
                None
            }
            Some(v) => file.de::<RawSettings>(v, out).and_then(|raw| settings(file, raw, out)),
        };
    if !has_tasks {
        out.push(file.diag(&(0..0), "the flow has no tasks; add at least one `[[task]]` table"));
    }
    let mut tasks = Vec::new();
    let mut invalid_ids = HashSet::new();
    for value in task_values {
        let id = super::source::peek_str(&value, "id");
        match file.de::<RawTask>(value, out).and_then(|raw| task(file, raw, out)) {
            Some(t) => tasks.push(t),
            None => invalid_ids.extend(id),
        }
    }
    for (def, spans) in &tasks {
        resources.check_needs(file, def.id.as_str(), &def.needs, &spans.needs, out);
    }
    Some(ParsedFlow { settings, tasks, resources, invalid_ids })
}

fn settings(
    file: &SourceFile<'_>,
    raw: RawSettings,
    out: &mut Vec<Diagnostic>,
) -> Option<FlowSettings> {
    let time_zone = match &raw.time_zone {
        None => chrono_tz::Asia::Shanghai,
        Some(tz) => match tz.get_ref().parse::<chrono_tz::Tz>() {
            Ok(tz) => tz,
            Err(_) => {
                out.push(file.diag(
                    &tz.span(),
                    format!(
                        "unknown time zone `{}`: use an IANA name such as \"Asia/Shanghai\" or \"UTC\"",
                        tz.get_ref()
                    ),
                ));
                return None;
            }
        },
    };
    if raw.name.get_ref().trim().is_empty() {
        out.push(file.diag(&raw.name.span(), "the flow `name` must not be empty"));
        return None;
    }
    let day = super::lifecycle::settings(
        file,
        raw.new_day_at.as_ref(),
        raw.catch_up.as_ref(),
        raw.max_open_days.as_ref(),
        raw.retain_days.as_ref(),
        out,
    )?;
    let deadline = match &raw.deadline {
        None => None,
        Some(d) => Some(parse_deadline(file, d, "the day's", out)?),
    };
    Some(FlowSettings {
        name: raw.name.into_inner(),
        time_zone,
        products: raw.products.unwrap_or_else(|| "products.toml".into()),
        distributors: raw.distributors.unwrap_or_else(|| "distributors.toml".into()),
        calendar: raw.calendar.unwrap_or_else(|| "calendar.toml".into()),
        open_days: raw.open_days.unwrap_or(RunOn::BusinessDays),
        day,
        deadline,
    })
}

/// A `deadline` value, or a located error naming it.
fn parse_deadline(
    file: &SourceFile<'_>,
    d: &Spanned<String>,
    whose: &str,
    out: &mut Vec<Diagnostic>,
) -> Option<Deadline> {
    match Deadline::parse(d.get_ref()) {
        Ok(v) => Some(v),
        Err(e) => {
            out.push(file.diag(&d.span(), format!("{whose} `deadline`: {e}")));
            None
        }
    }
}

/// Checks one task on its own; `None` if it has errors.
fn task(
    file: &SourceFile<'_>,
    raw: RawTask,
    out: &mut Vec<Diagnostic>,
) -> Option<(TaskDef, TaskSpans)> {
    let before = out.len();
    let id = raw.id.get_ref().clone();
    let id_span = raw.id.span();
    if !super::valid_id(&id) {
        out.push(file.diag(
            &id_span,
            format!(
                "invalid task id `{id}`: use 1 to 64 characters from A-Z, a-z, 0-9, `_`, `.`, `-`"
            ),
        ));
    }
    if raw.behavior.get_ref().trim().is_empty() {
        out.push(file.diag(
            &raw.behavior.span(),
            format!("task `{id}` has an empty `behavior`; name one, or use \"noop\""),
        ));
    }
    let trigger = match &raw.trigger {
        None => Trigger::Auto,
        Some(t) => match Trigger::parse(t.get_ref()) {
            Ok(t) => t,
            Err(e) => {
                out.push(file.diag(&t.span(), e.to_string()));
                Trigger::Auto
            }
        },
    };
    let mut duration =
        |d: &Option<Spanned<String>>, field: &str| {
            let d = d.as_ref()?;
            match parse_duration(d.get_ref()) {
                Ok(v) if v.is_zero() && field == "timeout" => {
                    out.push(file.diag(
                        &d.span(),
                        "`timeout` must be longer than zero; omit it for no limit",
                    ));
                    None
                }
                Ok(v) => Some(v),
                Err(e) => {
                    out.push(file.diag(&d.span(), format!("`{field}`: {e}")));
                    None
                }
            }
        };
    let retry_backoff = duration(&raw.retry_backoff, "retry_backoff");
    let timeout = duration(&raw.timeout, "timeout");
    let deadline =
        raw.deadline.as_ref().and_then(|d| parse_deadline(file, d, &format!("task `{id}`"), out));
    let priority = match &raw.priority {
        None => 0,
        Some(p) => match i32::try_from(*p.get_ref()) {
            Ok(v) if TaskDef::PRIORITIES.contains(&v) => v,
            _ => {
                let (lo, hi) = (TaskDef::PRIORITIES.start(), TaskDef::PRIORITIES.end());
                out.push(file.diag(
                    &p.span(),
                    format!(
                        "`priority` = {} is out of range; use an integer from {lo} to {hi} (higher runs first, default 0)",
                        p.get_ref()
                    ),
                ));
                0
            }
        },
    };

    let level = raw.level;
    let per_distributor = raw.per_distributor.as_ref().is_some_and(|p| *p.get_ref());
    let mut level_error = |span: Range<usize>, what: &str| {
        out.push(file.diag(&span, format!("task `{id}` ({level} level): {what}")));
    };
    if level == TaskLevel::Product && raw.in_lifecycle.is_none() {
        level_error(
            id_span.clone(),
            "product-level tasks need `in_lifecycle`, the product lifecycles they apply to (e.g. in_lifecycle = [\"open\"])",
        );
    }
    if level != TaskLevel::Product {
        let product_only = [
            raw.in_lifecycle.as_ref().map(|s| ("in_lifecycle", s.span())),
            raw.product_modes.as_ref().map(|s| ("product_modes", s.span())),
            raw.per_distributor.as_ref().map(|s| ("per_distributor", s.span())),
            raw.products.as_ref().map(|s| ("products", s.span())),
        ];
        for (field, span) in product_only.into_iter().flatten() {
            level_error(span, &format!("`{field}` applies to product-level tasks only; remove it"));
        }
    }
    let pairs_or_distributors = level == TaskLevel::Distributor || per_distributor;
    if let Some(t) = raw.distributor_types.as_ref().filter(|_| !pairs_or_distributors) {
        level_error(
            t.span(),
            "`distributor_types` applies to distributor-level tasks and to product-level tasks with `per_distributor = true`",
        );
    }
    if let Some(s) = &raw.shard_by {
        let ok = match s.get_ref() {
            ShardBy::Product => level == TaskLevel::Product,
            ShardBy::Distributor => pairs_or_distributors,
            ShardBy::Item | ShardBy::Single | ShardBy::Behavior => true,
        };
        if !ok {
            level_error(
                s.span(),
                &format!(
                    "`shard_by = \"{}\"` needs items with that code; use it on product-level tasks (\"product\") or distributor-level / per-distributor tasks (\"distributor\")",
                    s.get_ref()
                ),
            );
        }
    }
    let run_on = raw.run_on.unwrap_or(RunOn::BusinessDays);
    let covers = raw.covers_non_business_days.as_ref().is_some_and(|c| *c.get_ref());
    if let (true, Some(c)) = (covers && run_on == RunOn::EveryDay, &raw.covers_non_business_days) {
        level_error(
            c.span(),
            "`covers_non_business_days` needs `run_on = \"business-days\"`: a task that runs every day already covers every day",
        );
    }
    // Explicitly empty filters: the task could never qualify.
    let empty_filters = [
        raw.in_lifecycle
            .as_ref()
            .filter(|l| l.get_ref().is_empty())
            .map(|l| ("in_lifecycle", l.span())),
        raw.product_modes
            .as_ref()
            .filter(|l| l.get_ref().is_empty())
            .map(|l| ("product_modes", l.span())),
        raw.distributor_types
            .as_ref()
            .filter(|l| l.get_ref().is_empty())
            .map(|l| ("distributor_types", l.span())),
    ];
    for (field, span) in empty_filters.into_iter().flatten() {
        out.push(file.diag(
            &span,
            format!(
                "task `{id}` can never qualify: `{field}` is empty; list at least one value or remove the field"
            ),
        ));
    }
    let needs = super::resources::needs(file, &id, raw.needs, out);
    if out.len() != before {
        return None;
    }
    let (needs, need_spans) = needs?;
    let spans = TaskSpans {
        id: id_span,
        depends_on: raw.depends_on.iter().map(Spanned::span).collect(),
        in_lifecycle: raw.in_lifecycle.as_ref().map(Spanned::span),
        needs: need_spans,
    };
    let def = TaskDef {
        id: TaskId::new(id),
        name: raw.name,
        level,
        behavior: raw.behavior.into_inner(),
        depends_on: raw.depends_on.into_iter().map(|d| TaskId::new(d.into_inner())).collect(),
        trigger,
        run_on,
        in_lifecycle: raw.in_lifecycle.map(Spanned::into_inner).unwrap_or_default(),
        product_modes: raw.product_modes.map(Spanned::into_inner),
        distributor_types: raw.distributor_types.map(Spanned::into_inner),
        per_distributor,
        products: raw.products.map_or(ProductSelection::All, Spanned::into_inner),
        shard_by: raw.shard_by.map_or(ShardBy::Item, Spanned::into_inner),
        covers_non_business_days: covers,
        retries: raw.retries.unwrap_or(0),
        retry_backoff: retry_backoff.unwrap_or(TaskDef::DEFAULT_RETRY_BACKOFF),
        priority,
        timeout,
        deadline,
        needs,
        params: raw.params,
    };
    Some((def, spans))
}

impl ParsedFlow {
    /// Checks the tasks together (duplicate ids, unknown dependencies, cycles) and builds the
    /// graph. `None` if there are errors.
    pub(crate) fn graph(
        &self,
        file: &SourceFile<'_>,
        out: &mut Vec<Diagnostic>,
    ) -> Option<TaskGraph> {
        let before = out.len();
        let mut first: HashMap<&str, &Range<usize>> = HashMap::new();
        let mut unique: Vec<&(TaskDef, TaskSpans)> = Vec::new();
        for entry @ (def, spans) in &self.tasks {
            if let Some(prev) = first.get(def.id.as_str()) {
                out.push(file.diag(
                    &spans.id,
                    format!(
                        "duplicate task id `{}` (first defined on line {}); task ids must be unique",
                        def.id,
                        file.line(prev)
                    ),
                ));
            } else {
                first.insert(def.id.as_str(), &spans.id);
                unique.push(entry);
            }
        }
        for (def, spans) in &unique {
            for (dep, span) in def.depends_on.iter().zip(&spans.depends_on) {
                if !first.contains_key(dep.as_str()) && !self.invalid_ids.contains(dep.as_str()) {
                    out.push(file.diag(
                        span,
                        format!(
                            "task `{}` depends on unknown task `{dep}`; define it or fix the id",
                            def.id
                        ),
                    ));
                }
            }
        }
        // Build from what is known so a cycle is found even alongside other errors.
        let nodes = unique.iter().map(|(def, _)| {
            let deps = def.depends_on.iter().filter(|d| first.contains_key(d.as_str())).cloned();
            (def.id.clone(), deps.collect())
        });
        match TaskGraph::build(nodes) {
            Ok(g) if out.len() == before => Some(g),
            Ok(_) => None,
            Err(e) => {
                let at = match &e {
                    graph::Error::Cycle(path) => path.first(),
                    graph::Error::DuplicateTask(id) => Some(id),
                    graph::Error::UnknownDependency { task, .. } => Some(task),
                };
                let span = at.and_then(|id| first.get(id.as_str())).map_or(0..0, |s| (*s).clone());
                let hint = match e {
                    graph::Error::Cycle(_) => "; remove one of these dependencies",
                    _ => "",
                };
                out.push(file.diag(&span, format!("{e}{hint}")));
                None
            }
        }
    }

    /// The task definitions, in file order (the graph's order once it is built), and the
    /// resources, in file order.
    pub(crate) fn into_parts(self) -> (Vec<TaskDef>, Vec<crate::model::ResourceDef>) {
        (self.tasks.into_iter().map(|(def, _)| def).collect(), self.resources.defs)
    }

    /// Reports each product- or distributor-level task that no item of the reference data
    /// satisfies, whatever the date.
    pub(crate) fn check_qualification(
        &self,
        file: &SourceFile<'_>,
        data: &StaticReferenceData,
        products_path: &std::path::Path,
        distributors_path: &std::path::Path,
        out: &mut Vec<Diagnostic>,
    ) {
        for (def, spans) in &self.tasks {
            if def.level == TaskLevel::System || !registration::scope_items(def, data).is_empty() {
                continue;
            }
            let mut filters = Vec::new();
            if def.level == TaskLevel::Product {
                filters.push(format!("in_lifecycle = [{}]", quoted(&def.in_lifecycle)));
                if let Some(m) = &def.product_modes {
                    filters.push(format!("product_modes = [{}]", quoted(m)));
                }
                if def.products != ProductSelection::All {
                    filters.push(format!("products = \"{}\"", def.products));
                }
                if def.per_distributor {
                    filters.push("per_distributor = true".into());
                }
            }
            if let Some(t) = &def.distributor_types {
                filters.push(format!("distributor_types = [{}]", quoted(t)));
            }
            if filters.is_empty() {
                filters.push("(no filters)".into());
            }
            let checked = match (def.level, def.per_distributor) {
                (TaskLevel::Distributor, _) => {
                    format!("no distributor in {} matches", distributors_path.display())
                }
                (_, true) => format!(
                    "no product in {} sold by a distributor in {} matches",
                    products_path.display(),
                    distributors_path.display()
                ),
                _ => format!("no product in {} matches", products_path.display()),
            };
            let span = spans.in_lifecycle.as_ref().unwrap_or(&spans.id);
            out.push(file.diag(
                span,
                format!(
                    "task `{}` can never qualify: {checked} {}; fix the filters or the reference data",
                    def.id,
                    filters.join(", ")
                ),
            ));
        }
    }
}

fn quoted<T: std::fmt::Display>(values: &[T]) -> String {
    values.iter().map(|v| format!("\"{v}\"")).collect::<Vec<_>>().join(", ")
}
