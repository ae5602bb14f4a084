//! Parsing and validation of the reference files: `products.toml`, `distributors.toml`,
//! `calendar.toml`.

use std::collections::HashMap;
use std::ops::Range;

use chrono::{NaiveDate, Weekday};
use serde::Deserialize;
use toml::Spanned;
use toml::value::Datetime;

use super::source::{Diagnostic, SourceFile};
use crate::model::{
    Calendar, CalendarError, Distributor, DistributorType, Lifecycle, Product, ProductMode,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    code: Spanned<String>,
    name: String,
    #[serde(default)]
    parent: Option<Spanned<String>>,
    mode: ProductMode,
    lifecycle: Lifecycle,
    #[serde(default)]
    distributors: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDistributor {
    code: Spanned<String>,
    name: String,
    #[serde(rename = "type")]
    kind: DistributorType,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    from: Spanned<Datetime>,
    to: Spanned<Datetime>,
    #[serde(default)]
    weekend: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    holidays: Vec<Spanned<Datetime>>,
    #[serde(default)]
    workdays: Vec<Spanned<Datetime>>,
}

/// Where each product and distributor is defined, for messages from later checks.
#[derive(Debug, Default)]
pub(crate) struct Spans {
    pub(crate) distributor_codes: HashMap<String, Range<usize>>,
}

/// Parses `distributors.toml`. `None` if it has errors (they are in `out`).
pub(crate) fn distributors(
    file: &SourceFile<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<(Vec<Distributor>, Spans)> {
    let before = out.len();
    let mut table = file.parse(out)?;
    let raw_items = match SourceFile::take(&mut table, "distributor") {
        Some(v) => file.array_of_tables("distributor", v, out),
        None => Vec::new(),
    };
    file.unknown_keys(&table, &["distributor"], out);
    let mut spans = Spans::default();
    let mut list = Vec::new();
    for item in raw_items {
        let Some(raw) = file.de::<RawDistributor>(item, out) else { continue };
        let span = raw.code.span();
        let code = raw.code.into_inner();
        check_code(file, "distributor", &code, &span, out);
        if let Some(first) = spans.distributor_codes.get(&code) {
            out.push(file.diag(
                &span,
                format!(
                    "duplicate distributor code `{code}` (first defined on line {}); codes must be unique",
                    file.line(first)
                ),
            ));
            continue;
        }
        spans.distributor_codes.insert(code.clone(), span);
        list.push(Distributor { code, name: raw.name, kind: raw.kind });
    }
    (out.len() == before).then_some((list, spans))
}

/// Parses `products.toml` and checks codes, parents and sales lists. `distributors` is
/// `None` when the distributor file failed; sales lists are then not checked.
pub(crate) fn products(
    file: &SourceFile<'_>,
    distributors: Option<&Spans>,
    distributors_path: &std::path::Path,
    out: &mut Vec<Diagnostic>,
) -> Option<Vec<Product>> {
    let before = out.len();
    let mut table = file.parse(out)?;
    let raw_items = match SourceFile::take(&mut table, "product") {
        Some(v) => file.array_of_tables("product", v, out),
        None => Vec::new(),
    };
    file.unknown_keys(&table, &["product"], out);
    let mut code_spans: HashMap<String, Range<usize>> = HashMap::new();
    let mut parsed: Vec<(RawProduct, Range<usize>)> = Vec::new();
    // Codes of products that had errors of their own: naming them as a parent is not
    // reported again.
    let mut invalid_codes: Vec<String> = Vec::new();
    for item in raw_items {
        let code = super::source::peek_str(&item, "code");
        let Some(raw) = file.de::<RawProduct>(item, out) else {
            invalid_codes.extend(code);
            continue;
        };
        let span = raw.code.span();
        let code = raw.code.get_ref();
        check_code(file, "product", code, &span, out);
        if let Some(first) = code_spans.get(code.as_str()) {
            out.push(file.diag(
                &span,
                format!(
                    "duplicate product code `{code}` (first defined on line {}); codes must be unique",
                    file.line(first)
                ),
            ));
            continue;
        }
        code_spans.insert(code.clone(), span.clone());
        if let (Some(spans), Some(list)) = (distributors, &raw.distributors) {
            for d in list {
                if !spans.distributor_codes.contains_key(d.get_ref()) {
                    out.push(file.diag(
                        &d.span(),
                        format!(
                            "product `{code}` lists unknown distributor `{}`; define it in {} or remove it",
                            d.get_ref(),
                            distributors_path.display()
                        ),
                    ));
                }
            }
        }
        parsed.push((raw, span));
    }
    // Parents: must exist, and a chain of parents must not loop.
    let parent_of: HashMap<&str, &str> = parsed
        .iter()
        .filter_map(|(p, _)| {
            Some((p.code.get_ref().as_str(), p.parent.as_ref()?.get_ref().as_str()))
        })
        .collect();
    for (p, _) in &parsed {
        let Some(parent) = &p.parent else { continue };
        let code = p.code.get_ref();
        if invalid_codes.contains(parent.get_ref()) {
            continue;
        }
        if !code_spans.contains_key(parent.get_ref()) {
            out.push(file.diag(
                &parent.span(),
                format!(
                    "product `{code}` has unknown parent `{}`; a share class's parent must be a product in this file",
                    parent.get_ref()
                ),
            ));
            continue;
        }
        // Walk up; report a loop once, at the product of the loop that comes first in the file.
        let mut chain = vec![code.as_str()];
        let mut cur = parent.get_ref().as_str();
        while !chain.contains(&cur) {
            chain.push(cur);
            match parent_of.get(cur) {
                Some(next) => cur = next,
                None => break,
            }
        }
        if cur == code.as_str() {
            let first_in_file =
                parsed.iter().map(|(q, _)| q.code.get_ref().as_str()).find(|c| chain.contains(c));
            if first_in_file == Some(code.as_str()) {
                chain.push(code);
                out.push(file.diag(
                    &parent.span(),
                    format!(
                        "parent cycle: {}; a share class's parent must be a fund",
                        chain.join(" -> ")
                    ),
                ));
            }
        }
    }
    let products = parsed
        .into_iter()
        .map(|(raw, _)| Product {
            code: raw.code.into_inner(),
            name: raw.name,
            parent: raw.parent.map(Spanned::into_inner),
            mode: raw.mode,
            lifecycle: raw.lifecycle,
            distributors: raw
                .distributors
                .map(|ds| ds.into_iter().map(Spanned::into_inner).collect()),
        })
        .collect();
    (out.len() == before).then_some(products)
}

/// Parses `calendar.toml`. `None` if it has errors.
pub(crate) fn calendar(file: &SourceFile<'_>, out: &mut Vec<Diagnostic>) -> Option<Calendar> {
    let before = out.len();
    let mut table = file.parse(out)?;
    let Some(value) = SourceFile::take(&mut table, "calendar") else {
        out.push(file.diag(
            &(0..0),
            "missing `[calendar]` table; add one with `from` and `to` dates (e.g. from = 2026-01-01)",
        ));
        return None;
    };
    file.unknown_keys(&table, &["calendar"], out);
    let raw: RawCalendar = file.de(value, out)?;
    let date = |d: &Spanned<Datetime>, out: &mut Vec<Diagnostic>| -> Option<NaiveDate> {
        let v = d.get_ref();
        let parsed = match (v.date, v.time, v.offset) {
            (Some(dt), None, None) => {
                NaiveDate::from_ymd_opt(dt.year.into(), dt.month.into(), dt.day.into())
            }
            _ => None,
        };
        if parsed.is_none() {
            out.push(file.diag(
                &d.span(),
                format!("`{v}` is not a plain date; write a TOML local date such as 2026-10-01"),
            ));
        }
        parsed
    };
    let from = date(&raw.from, out);
    let to = date(&raw.to, out);
    let holidays: Vec<(NaiveDate, Range<usize>)> =
        raw.holidays.iter().filter_map(|d| Some((date(d, out)?, d.span()))).collect();
    let workdays: Vec<(NaiveDate, Range<usize>)> =
        raw.workdays.iter().filter_map(|d| Some((date(d, out)?, d.span()))).collect();
    let mut weekend = Vec::new();
    for w in raw.weekend.iter().flatten() {
        match weekday(w.get_ref()) {
            Some(day) => weekend.push(day),
            None => out.push(file.diag(
                &w.span(),
                format!(
                    "unknown weekday `{}`, expected one of `monday`, `tuesday`, `wednesday`, `thursday`, `friday`, `saturday`, `sunday`",
                    w.get_ref()
                ),
            )),
        }
    }
    if raw.weekend.is_none() {
        weekend.extend(Calendar::DEFAULT_WEEKEND);
    }
    let (Some(from), Some(to)) = (from, to) else { return None };
    let result = Calendar::new(
        from,
        to,
        weekend,
        holidays.iter().map(|(d, _)| *d),
        workdays.iter().map(|(d, _)| *d),
    );
    let span_of = |list: &[(NaiveDate, Range<usize>)], date: NaiveDate| {
        list.iter().find(|(d, _)| *d == date).map(|(_, s)| s.clone())
    };
    match result {
        Ok(cal) if out.len() == before => Some(cal),
        Ok(_) => None,
        Err(errors) => {
            for e in errors {
                let span = match &e {
                    CalendarError::EmptyRange { .. } => Some(raw.from.span()),
                    CalendarError::DateOutsideRange { kind: "holiday", date, .. } => {
                        span_of(&holidays, *date)
                    }
                    CalendarError::DateOutsideRange { date, .. } => span_of(&workdays, *date),
                    CalendarError::HolidayAndWorkday(date) => span_of(&workdays, *date),
                    CalendarError::OutOfRange { .. } => None,
                };
                out.push(file.diag(&span.unwrap_or(0..0), e.to_string()));
            }
            None
        }
    }
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s {
        "monday" => Weekday::Mon,
        "tuesday" => Weekday::Tue,
        "wednesday" => Weekday::Wed,
        "thursday" => Weekday::Thu,
        "friday" => Weekday::Fri,
        "saturday" => Weekday::Sat,
        "sunday" => Weekday::Sun,
        _ => return None,
    })
}

/// Codes appear in shard keys (`P001@D001`) and file names: same character set as task ids.
fn check_code(
    file: &SourceFile<'_>,
    what: &str,
    code: &str,
    span: &Range<usize>,
    out: &mut Vec<Diagnostic>,
) {
    if !super::valid_id(code) {
        out.push(file.diag(
            span,
            format!(
                "invalid {what} code `{code}`: use 1 to 64 characters from A-Z, a-z, 0-9, `_`, `.`, `-`"
            ),
        ));
    }
}
