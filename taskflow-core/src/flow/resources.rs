//! The `[[resource]]` tables of `flow.toml` and the tasks' `needs`: a resource has a unique
//! name and `units` ≥ 1; a task needs only resources that exist, at least 1 and at most their
//! units of each.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeValue;

use super::source::{Diagnostic, SourceFile};
use crate::model::ResourceDef;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    name: Spanned<String>,
    units: Spanned<i64>,
}

/// A task's `needs` as written: each resource name and the units, with their spans.
pub(crate) type RawNeeds = BTreeMap<Spanned<String>, Spanned<i64>>;

/// One need of a task, with where it is written.
pub(crate) struct NeedSpan {
    pub(crate) resource: String,
    pub(crate) name: Range<usize>,
    pub(crate) units: Range<usize>,
}

/// The valid resources, and the names of those with errors of their own (needs of them are
/// not reported again).
pub(crate) struct ParsedResources {
    pub(crate) defs: Vec<ResourceDef>,
    /// Names of resources that had errors of their own.
    invalid: Vec<String>,
}

/// Parses the `[[resource]]` array of tables.
pub(crate) fn parse(
    file: &SourceFile<'_>,
    value: Option<Spanned<DeValue<'_>>>,
    out: &mut Vec<Diagnostic>,
) -> ParsedResources {
    let values = match value {
        Some(v) => file.array_of_tables("resource", v, out),
        None => Vec::new(),
    };
    let mut defs = Vec::new();
    let mut invalid = Vec::new();
    let mut first: HashMap<String, Range<usize>> = HashMap::new();
    for value in values {
        let peeked = super::source::peek_str(&value, "name");
        let Some(raw) = file.de::<RawResource>(value, out) else {
            invalid.extend(peeked);
            continue;
        };
        let name = raw.name.get_ref().clone();
        let before = out.len();
        if !super::valid_id(&name) {
            out.push(file.diag(
                &raw.name.span(),
                format!(
                    "invalid resource name `{name}`: use 1 to 64 characters from A-Z, a-z, 0-9, `_`, `.`, `-`"
                ),
            ));
        }
        let units = match u32::try_from(*raw.units.get_ref()) {
            Ok(u) if u >= 1 => u,
            _ => {
                out.push(file.diag(
                    &raw.units.span(),
                    format!(
                        "resource `{name}`: `units` = {} is invalid; use an integer of at least 1 (1 is an exclusive lock)",
                        raw.units.get_ref()
                    ),
                ));
                0
            }
        };
        if let Some(prev) = first.get(&name) {
            out.push(file.diag(
                &raw.name.span(),
                format!(
                    "duplicate resource name `{name}` (first defined on line {}); resource names must be unique",
                    file.line(prev)
                ),
            ));
            continue;
        }
        first.insert(name.clone(), raw.name.span());
        if out.len() != before {
            invalid.push(name);
            continue;
        }
        defs.push(ResourceDef { name, units });
    }
    ParsedResources { defs, invalid }
}

/// Checks one task's `needs` on their own (each at least 1) and converts them; `None` if
/// there are errors.
pub(crate) fn needs(
    file: &SourceFile<'_>,
    task: &str,
    raw: Option<RawNeeds>,
    out: &mut Vec<Diagnostic>,
) -> Option<(BTreeMap<String, u32>, Vec<NeedSpan>)> {
    let mut needs = BTreeMap::new();
    let mut spans = Vec::new();
    let before = out.len();
    for (name, units) in raw.unwrap_or_default() {
        match u32::try_from(*units.get_ref()) {
            Ok(u) if u >= 1 => {
                needs.insert(name.get_ref().clone(), u);
            }
            _ => out.push(file.diag(
                &units.span(),
                format!(
                    "task `{task}` needs {} units of `{}`; a need is an integer of at least 1 (remove it to need none)",
                    units.get_ref(),
                    name.get_ref()
                ),
            )),
        }
        spans.push(NeedSpan {
            resource: name.get_ref().clone(),
            name: name.span(),
            units: units.span(),
        });
    }
    (out.len() == before).then_some((needs, spans))
}

impl ParsedResources {
    /// Checks a task's needs against the resources: each one exists and has at least as many
    /// units as needed.
    pub(crate) fn check_needs(
        &self,
        file: &SourceFile<'_>,
        task: &str,
        needs: &BTreeMap<String, u32>,
        spans: &[NeedSpan],
        out: &mut Vec<Diagnostic>,
    ) {
        for span in spans {
            let Some(&need) = needs.get(&span.resource) else { continue };
            match self.defs.iter().find(|r| r.name == span.resource) {
                Some(r) if need > r.units => out.push(file.diag(
                    &span.units,
                    format!(
                        "task `{task}` needs {need} units of `{}`, which has only {}; need at most {} or raise the resource's `units`",
                        r.name, r.units, r.units
                    ),
                )),
                Some(_) => {}
                None if self.invalid.contains(&span.resource) => {}
                None => {
                    let known = if self.defs.is_empty() {
                        "the flow defines no resources; add a `[[resource]]` table".to_owned()
                    } else {
                        let names: Vec<String> =
                            self.defs.iter().map(|r| format!("`{}`", r.name)).collect();
                        format!("defined: {}", names.join(", "))
                    };
                    out.push(file.diag(
                        &span.name,
                        format!(
                            "task `{task}` needs unknown resource `{}` ({known})",
                            span.resource
                        ),
                    ));
                }
            }
        }
    }
}
