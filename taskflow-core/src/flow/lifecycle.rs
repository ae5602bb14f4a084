//! The day-lifecycle keys of `[flow]`: `new_day_at`, `catch_up`, `max_open_days`,
//! `retain_days`.

use toml::Spanned;

use super::DaySettings;
use super::source::{Diagnostic, SourceFile};
use crate::model::{CatchUp, DEFAULT_RETAIN_DAYS, parse_new_day_at};

/// Checks the keys (each problem located and naming the value); `None` if any is bad.
pub(super) fn settings(
    file: &SourceFile<'_>,
    new_day_at: Option<&Spanned<String>>,
    catch_up: Option<&Spanned<String>>,
    max_open_days: Option<&Spanned<i64>>,
    retain_days: Option<&Spanned<i64>>,
    out: &mut Vec<Diagnostic>,
) -> Option<DaySettings> {
    let before = out.len();
    let new_day_at = new_day_at.and_then(|t| match parse_new_day_at(t.get_ref()) {
        Ok(time) => Some(time),
        Err(e) => {
            out.push(file.diag(&t.span(), format!("`new_day_at`: {e}")));
            None
        }
    });
    let catch_up = catch_up.map_or(Some(CatchUp::All), |c| match c.get_ref().parse::<CatchUp>() {
        Ok(c) => Some(c),
        Err(e) => {
            out.push(file.diag(&c.span(), format!("`catch_up`: {e}")));
            None
        }
    });
    if let Some(m) = max_open_days {
        let n = *m.get_ref();
        if n != 1 {
            let message = if n < 1 {
                format!("`max_open_days = {n}`: at least one day must be open; write 1")
            } else {
                format!(
                    "`max_open_days = {n}` is not supported yet: business days never overlap \
                     in this version (one open day at a time); write 1 or remove the key"
                )
            };
            out.push(file.diag(&m.span(), message));
        }
    }
    let retain_days = retain_days.map_or(Some(DEFAULT_RETAIN_DAYS), |r| {
        let n = *r.get_ref();
        match u32::try_from(n) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                out.push(file.diag(
                    &r.span(),
                    format!(
                        "`retain_days = {n}`: closed days are kept this many business days (the \
                         newest day included), so it must be a whole number from 1 to {}; write \
                         e.g. {DEFAULT_RETAIN_DAYS} (the default)",
                        u32::MAX
                    ),
                ));
                None
            }
        }
    });
    if out.len() > before {
        return None;
    }
    Some(DaySettings { new_day_at, catch_up: catch_up?, retain_days: retain_days? })
}

#[cfg(test)]
mod tests {
    use chrono::NaiveTime;

    use crate::flow::Flow;
    use crate::model::CatchUp;

    const TASK: &str =
        "\n[[task]]\nid = \"a\"\nname = \"A\"\nlevel = \"system\"\nbehavior = \"noop\"\n";
    const CALENDAR: &str = "[calendar]\nfrom = 2026-01-01\nto = 2026-12-31\n";

    /// Loads a flow whose `[flow]` table has `keys` (from line 3 on).
    fn load(keys: &str) -> Result<Flow, Vec<String>> {
        let text = format!("[flow]\nname = \"t\"\n{keys}\n{TASK}");
        Flow::from_strs(&text, "", "", CALENDAR)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    fn one_error(keys: &str) -> String {
        let errors = load(keys).expect_err("refused");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors[0].clone()
    }

    #[test]
    fn the_day_settings_default_to_midnight_and_catch_up_all() {
        let flow = load("").expect("valid");
        assert_eq!(flow.settings().day.new_day_at, None);
        assert_eq!(flow.settings().day.catch_up, CatchUp::All);
        let flow = load("new_day_at = \"15:30\"\ncatch_up = \"latest\"\nmax_open_days = 1")
            .expect("valid");
        assert_eq!(flow.settings().day.new_day_at, NaiveTime::from_hms_opt(15, 30, 0));
        assert_eq!(flow.settings().day.catch_up, CatchUp::Latest);
    }

    #[test]
    fn retain_days_defaults_to_30_and_below_one_is_located_and_named() {
        assert_eq!(load("").expect("valid").settings().day.retain_days, 30);
        assert_eq!(load("retain_days = 3").expect("valid").settings().day.retain_days, 3);
        for bad in ["0", "-2", "5000000000"] {
            let e = one_error(&format!("retain_days = {bad}"));
            assert!(e.starts_with("flow.toml:3:15:"), "{e}");
            assert!(e.contains(&format!("`retain_days = {bad}`")) && e.contains("from 1"), "{e}");
        }
    }

    #[test]
    fn a_new_day_at_that_is_not_a_time_is_located_and_named() {
        let e = one_error("new_day_at = \"25:00\"");
        assert!(e.starts_with("flow.toml:3:14:"), "{e}");
        assert!(e.contains("`25:00` is not a time of day") && e.contains("HH:MM"), "{e}");
    }

    #[test]
    fn an_unknown_catch_up_lists_the_allowed_values() {
        let e = one_error("catch_up = \"sometimes\"");
        assert!(e.starts_with("flow.toml:3:12:"), "{e}");
        assert!(e.contains("`sometimes`") && e.contains("`all`, `latest`"), "{e}");
    }

    #[test]
    fn more_than_one_open_day_is_refused_not_ignored() {
        let e = one_error("max_open_days = 2");
        assert!(e.starts_with("flow.toml:3:17:"), "{e}");
        assert!(e.contains("`max_open_days = 2` is not supported yet"), "{e}");
        let e = one_error("max_open_days = 0");
        assert!(e.contains("`max_open_days = 0`"), "{e}");
    }
}
