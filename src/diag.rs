//! Problems found in user input, each pinned to a file, line and column, with a hint.
//!
//! Validation never stops at the first problem: every check pushes onto a [`Diagnostics`]
//! list, and the caller reports them all at once (exit status 2).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One file's text, kept so that byte offsets can be turned into lines and columns.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as the user named it (shown in messages).
    pub path: PathBuf,
    /// The file's whole text.
    pub text: String,
    /// Where each line starts, so that a position costs a search, not a scan: a
    /// thousand-node manifest has thousands of positions to report.
    line_starts: Vec<usize>,
}

impl Source {
    /// Wraps a file's text.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        let text = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Source {
            path: path.into(),
            text,
            line_starts,
        }
    }

    /// Turns a byte offset into a 1-based (line, column), counting columns in characters.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }

    /// The text of a 1-based line, without its newline.
    pub fn line_text(&self, line: usize) -> &str {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return "";
        };
        let end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |at| start + at);
        self.text[start..end].trim_end_matches('\r')
    }

    /// The span of the first occurrence of `needle` in the text, if any.
    pub fn find(&self, needle: &str) -> Option<Range<usize>> {
        self.text
            .find(needle)
            .map(|start| start..start + needle.len())
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Where a problem is: a file and, when known, the line and column in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    /// The offending line's text, shown under the message.
    pub snippet: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        Ok(())
    }
}

/// One problem with the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where it is.
    pub location: Location,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = printable(&self.message);
        write!(f, "{}: error: {message}", self.location)?;
        if let (Some(snippet), Some((line, column))) =
            (&self.location.snippet, self.location.position)
        {
            let gutter = line.to_string().len();
            let (shown, caret) = snippet_window(snippet, column);
            write!(f, "\n {line} | {shown}")?;
            write!(f, "\n {:gutter$} | {:>caret$}", "", "^")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {}", printable(hint))?;
        }
        Ok(())
    }
}

/// The most characters of its line a snippet shows.
const SNIPPET_WIDTH: usize = 100;

/// `text` with every control character escaped (`\u{1b}`, `\t`): a manifest's bytes
/// never reach the terminal as commands.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The part of `line` a snippet shows around the 1-based `column`: at most
/// [`SNIPPET_WIDTH`] characters, control characters escaped, `…` where it is cut; and
/// the caret's 1-based column in what is shown.
fn snippet_window(line: &str, column: usize) -> (String, usize) {
    let shown: Vec<String> = line.chars().map(|c| printable(&c.to_string())).collect();
    let width = |part: &[String]| part.iter().map(|s| s.chars().count()).sum::<usize>();
    let at = column.saturating_sub(1).min(shown.len());
    let mut start = 0;
    while width(&shown[start..at]) > SNIPPET_WIDTH / 2 {
        start += 1;
    }
    let mut end = start;
    while end < shown.len() && width(&shown[start..=end]) <= SNIPPET_WIDTH {
        end += 1;
    }
    let mut text = String::new();
    let mut caret = width(&shown[start..at]) + 1;
    if start > 0 {
        text.push('…');
        caret += 1;
    }
    text.extend(shown[start..end].iter().map(String::as_str));
    if end < shown.len() {
        text.push('…');
    }
    (text, caret)
}

/// A diagnostic as `check --json` prints it: named fields, line and column null when the
/// problem is with a file as a whole.
#[derive(Debug, serde::Serialize)]
pub struct DiagnosticRecord<'a> {
    /// The file.
    pub file: &'a Path,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column, in characters.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: &'a str,
    /// What to do about it.
    pub hint: Option<&'a str>,
}

impl Diagnostic {
    /// The diagnostic as `check --json` prints it.
    pub fn record(&self) -> DiagnosticRecord<'_> {
        DiagnosticRecord {
            file: &self.location.path,
            line: self.location.position.map(|(line, _)| line),
            column: self.location.position.map(|(_, column)| column),
            message: &self.message,
            hint: self.hint.as_deref(),
        }
    }
}

/// A list of problems, gathered across a whole validation pass.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem at a span of a source file.
    pub fn at(
        &mut self,
        source: &Source,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        hint: impl Into<Option<String>>,
    ) {
        let (position, snippet) = match span {
            Some(span) => {
                let (line, column) = source.line_col(span.start);
                (
                    Some((line, column)),
                    Some(source.line_text(line).to_string()),
                )
            }
            None => (None, None),
        };
        self.items.push(Diagnostic {
            location: Location {
                path: source.path.clone(),
                position,
                snippet,
            },
            message: message.into(),
            hint: hint.into(),
        });
    }

    /// Records a problem with a file as a whole.
    pub fn in_file(
        &mut self,
        path: &Path,
        message: impl Into<String>,
        hint: impl Into<Option<String>>,
    ) {
        self.items.push(Diagnostic {
            location: Location {
                path: path.to_path_buf(),
                position: None,
                snippet: None,
            },
            message: message.into(),
            hint: hint.into(),
        });
    }

    /// Records a problem made elsewhere.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    /// Drops repeats: a template rendered for N nodes fails N times the same way.
    pub fn dedup(&mut self) {
        let mut seen = std::collections::HashSet::new();
        self.items.retain(|item| seen.insert(item.to_string()));
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Moves another list's problems into this one.
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// The problems found so far.
    pub fn items(&self) -> &[Diagnostic] {
        &self.items
    }

    /// `Ok(())` when nothing was found so far, otherwise every problem as one error,
    /// leaving the list empty.
    pub fn check(&mut self) -> Result<(), InvalidInput> {
        std::mem::take(self).into_result(())
    }

    /// `Ok(value)` when nothing was found, otherwise every problem as one error.
    pub fn into_result<T>(mut self, value: T) -> Result<T, InvalidInput> {
        if self.items.is_empty() {
            Ok(value)
        } else {
            // File order reads best; problems without a line come first in their file.
            self.items.sort_by(|a, b| {
                (&a.location.path, a.location.position)
                    .cmp(&(&b.location.path, b.location.position))
            });
            Err(InvalidInput(self.items))
        }
    }
}

/// The error for input that failed validation: every problem found, in file order.
///
/// Binaries map it to exit status 2, the status for "your input is wrong".
#[derive(Debug, thiserror::Error)]
pub struct InvalidInput(pub Vec<Diagnostic>);

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.0 {
            writeln!(f, "{diagnostic}")?;
        }
        let count = self.0.len();
        write!(
            f,
            "{count} problem{} found; nothing was built",
            if count == 1 { "" } else { "s" }
        )
    }
}

/// A command line that does not fit the manifest or itself (a node or role the manifest
/// does not have, options that do not go together): invalid input like a bad manifest,
/// so binaries map it to exit status 2 too.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let source = Source::new("m.toml", "a = 1\nbé = 2\n");
        assert_eq!(source.line_col(0), (1, 1));
        assert_eq!(source.line_col(6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(source.line_col(9), (2, 3));
        assert_eq!(source.line_text(2), "bé = 2");
        assert_eq!(source.line_col(source.text.len()), (3, 1));
        assert_eq!(source.line_col(usize::MAX), (3, 1));
        assert_eq!(source.line_text(1), "a = 1");
        assert_eq!(source.line_text(9), "");
        // Inside a two-byte character: the character's own column.
        assert_eq!(source.line_col(8), (2, 2));
    }

    #[test]
    fn a_long_line_is_cut_around_the_caret_and_control_characters_are_escaped() {
        let long = format!("name = \"{}x{}\"", "a".repeat(300), "b".repeat(300));
        let at = long.find('x').unwrap();
        let escapes = "role = \"db\u{1b}[2J\"\tvalue";
        // (the line, the byte the problem is at, what the caret must point at)
        let table: [(&str, usize, &str); 3] = [
            (&long, at, "x"),
            (escapes, escapes.find('\u{1b}').unwrap(), "\\u{1b}"),
            (escapes, escapes.find("value").unwrap(), "value"),
        ];
        for (line, offset, under_caret) in table {
            let source = Source::new("m.toml", format!("{line}\n"));
            let mut diagnostics = Diagnostics::new();
            diagnostics.at(&source, Some(offset..offset + 1), "bad \u{7}value", None);
            let text = diagnostics.check().unwrap_err().to_string();
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\n'),
                "{text:?}"
            );
            assert!(text.contains("bad \\u{7}value"), "{text}");
            let lines: Vec<&str> = text.lines().collect();
            let (shown, caret) = (lines[1], lines[2]);
            assert!(shown.chars().count() <= SNIPPET_WIDTH + 10, "{shown}");
            let column = caret.chars().count() - 1;
            let pointed: String = shown.chars().skip(column).collect();
            assert!(pointed.starts_with(under_caret), "{shown}\n{caret}");
        }
    }

    #[test]
    fn a_diagnostic_shows_place_snippet_and_hint() {
        let source = Source::new("m.toml", "x = 1\nrole = \"dbx\"\n");
        let mut diagnostics = Diagnostics::new();
        diagnostics.at(
            &source,
            source.find("\"dbx\""),
            "unknown role \"dbx\"",
            Some("use one of: db".to_string()),
        );
        let text = diagnostics.into_result(()).unwrap_err().to_string();
        assert!(
            text.starts_with("m.toml:2:8: error: unknown role \"dbx\""),
            "{text}"
        );
        assert!(text.contains(" 2 | role = \"dbx\""), "{text}");
        assert!(text.contains("= hint: use one of: db"), "{text}");
        assert!(
            text.ends_with("1 problem found; nothing was built"),
            "{text}"
        );
    }
}
