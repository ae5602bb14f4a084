//! Source files and diagnostics located in them (`path:line:col: message`).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// One problem in a flow directory, located at a file, line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub path: PathBuf,
    /// The line, 1-based.
    pub line: usize,
    /// The column in characters, 1-based.
    pub column: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)
    }
}

/// One input file: its path (for messages) and its text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceFile<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
}

impl<'a> SourceFile<'a> {
    /// The 1-based line and column of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        // Step back to a char boundary so slicing cannot panic.
        let offset = (0..=offset).rev().find(|o| self.text.is_char_boundary(*o)).unwrap_or(0);
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// The 1-based line of a span's start.
    pub(crate) fn line(&self, span: &Range<usize>) -> usize {
        self.line_col(span.start).0
    }

    /// A diagnostic at the start of `span`.
    pub(crate) fn diag(&self, span: &Range<usize>, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.line_col(span.start);
        Diagnostic { path: self.path.to_owned(), line, column, message: message.into() }
    }

    /// Parses the document, reporting every syntax error. `None` if there were any.
    pub(crate) fn parse(&self, out: &mut Vec<Diagnostic>) -> Option<DeTable<'a>> {
        let (table, errors) = DeTable::parse_recoverable(self.text);
        if errors.is_empty() {
            return Some(table.into_inner());
        }
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            out.push(self.diag(&span, format!("TOML syntax error: {}", one_line(e.message()))));
        }
        None
    }

    /// Deserializes one value, turning a serde error into a located diagnostic.
    pub(crate) fn de<T: DeserializeOwned>(
        &self,
        value: Spanned<DeValue<'a>>,
        out: &mut Vec<Diagnostic>,
    ) -> Option<T> {
        let fallback = value.span();
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(e) => {
                let span = e.span().unwrap_or(fallback);
                out.push(self.diag(&span, one_line(e.message())));
                None
            }
        }
    }

    /// The elements of a top-level array of tables (`[[key]]`), or a diagnostic if `value`
    /// is something else.
    pub(crate) fn array_of_tables(
        &self,
        key: &str,
        value: Spanned<DeValue<'a>>,
        out: &mut Vec<Diagnostic>,
    ) -> Vec<Spanned<DeValue<'a>>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => items.into_iter().collect(),
            _ => {
                out.push(self.diag(
                    &span,
                    format!("`{key}` must be an array of tables: write each entry as `[[{key}]]`"),
                ));
                Vec::new()
            }
        }
    }

    /// Reports every key left in `table` (call after taking the `allowed` ones).
    pub(crate) fn unknown_keys(
        &self,
        table: &DeTable<'a>,
        allowed: &[&str],
        out: &mut Vec<Diagnostic>,
    ) {
        let expected = allowed.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        for key in table.keys() {
            out.push(self.diag(
                &key.span(),
                format!("unknown top-level key `{}`, expected one of {expected}", key.get_ref()),
            ));
        }
    }

    /// Removes and returns a top-level key's value.
    pub(crate) fn take(table: &mut DeTable<'a>, key: &str) -> Option<Spanned<DeValue<'a>>> {
        let found = table.keys().find(|k| k.get_ref().as_ref() == key).cloned()?;
        table.remove(&found)
    }
}

/// The string value of `key` in a table value, if any: the id of an entry that failed to
/// deserialize, so that other entries referring to it are not reported as well.
pub(crate) fn peek_str(value: &Spanned<DeValue<'_>>, key: &str) -> Option<String> {
    let DeValue::Table(t) = value.get_ref() else { return None };
    let (_, v) = t.iter().find(|(k, _)| k.get_ref().as_ref() == key)?;
    v.get_ref().as_str().map(str::to_owned)
}

/// serde messages may span lines; a diagnostic is one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_one_based_lines_and_character_columns() {
        let f = SourceFile { path: Path::new("f.toml"), text: "a = 1\nname = \"产品\" x\n" };
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(6), (2, 1));
        let x = f.text.find('x').expect("x");
        assert_eq!(f.line_col(x), (2, 13), "columns count characters, not bytes");
        assert_eq!(f.diag(&(6..7), "bad").to_string(), "f.toml:2:1: bad");
    }
}
