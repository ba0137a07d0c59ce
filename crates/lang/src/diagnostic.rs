//! Diagnostics: what is wrong with a workflow file, where, and what to do about it.
//!
//! Every problem found while parsing or validating is a [`Diagnostic`] with a [`Span`]
//! (1-based line and column, in characters) so that a person — or an editor reading the JSON
//! form — can jump straight to it.

use std::fmt::{self, Write as _};

use serde::Serialize;

/// A region of a source file. Lines and columns are 1-based and count characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Span {
    pub line: u32,
    pub column: u32,
    pub end_line: u32,
    pub end_column: u32,
    /// Which file: 0 for the workflow file, `n` for its `n`-th imported file
    /// ([`crate::Loaded::files`]).
    #[serde(skip)]
    pub file: u16,
}

impl Span {
    pub fn new(line: u32, column: u32, end_line: u32, end_column: u32) -> Span {
        Span { line, column, end_line, end_column, file: 0 }
    }

    /// A span starting at `self` and covering `len` characters on the same line.
    pub fn sub(self, offset: u32, len: u32) -> Span {
        let column = self.column + offset;
        let end_column = column + len.max(1);
        Span { line: self.line, column, end_line: self.line, end_column, file: self.file }
    }

    /// The span of the first character only.
    pub fn start(self) -> Span {
        self.sub(0, 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// The kinds of problem wayline reports. The kebab-case name is stable: it appears in the
/// text (`error[unknown-field]`) and JSON output, and tools may match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    Syntax,
    Limit,
    UnknownField,
    MissingField,
    WrongType,
    InvalidValue,
    BadName,
    DuplicateId,
    DuplicateKey,
    MissingBody,
    MultipleBodies,
    UnknownStep,
    UnknownGroup,
    SelfDependency,
    Cycle,
    BadDuration,
    BadTimestamp,
    RetryConflict,
    InputDefault,
    ExpressionSyntax,
    UnknownReference,
    NotUpstream,
    BadCompensate,
    NeverRuns,
    NoEffect,
    ShellSubstitution,
    ShellSyntax,
    RawUrl,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "syntax",
            Code::Limit => "limit",
            Code::UnknownField => "unknown-field",
            Code::MissingField => "missing-field",
            Code::WrongType => "wrong-type",
            Code::InvalidValue => "invalid-value",
            Code::BadName => "bad-name",
            Code::DuplicateId => "duplicate-id",
            Code::DuplicateKey => "duplicate-key",
            Code::MissingBody => "missing-body",
            Code::MultipleBodies => "multiple-bodies",
            Code::UnknownStep => "unknown-step",
            Code::UnknownGroup => "unknown-group",
            Code::SelfDependency => "self-dependency",
            Code::Cycle => "cycle",
            Code::BadDuration => "bad-duration",
            Code::BadTimestamp => "bad-timestamp",
            Code::RetryConflict => "retry-conflict",
            Code::InputDefault => "input-default",
            Code::ExpressionSyntax => "expression-syntax",
            Code::UnknownReference => "unknown-reference",
            Code::NotUpstream => "not-upstream",
            Code::BadCompensate => "bad-compensate",
            Code::NeverRuns => "never-runs",
            Code::NoEffect => "no-effect",
            Code::ShellSubstitution => "shell-substitution",
            Code::ShellSyntax => "shell-syntax",
            Code::RawUrl => "raw-url",
        }
    }
}

/// One problem in a workflow file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    pub span: Span,
    /// Short text shown under the caret, e.g. "did you mean `needs`?".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A hint on how to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            label: None,
            help: None,
        }
    }

    pub fn warning(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, span, message) }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders the diagnostic the way a compiler would: a header, the location, the source line
    /// with a caret under the problem, and the help text.
    ///
    /// ```
    /// use wayline_lang::{Code, Diagnostic, Span};
    /// let text = "steps:\n  - id: a\n    nedes: [b]\n";
    /// let d = Diagnostic::error(Code::UnknownField, Span::new(3, 5, 3, 10), "unknown field `nedes`")
    ///     .with_label("did you mean `needs`?");
    /// let shown = d.render("flow.yaml", text);
    /// assert!(shown.contains("--> flow.yaml:3:5"));
    /// assert!(shown.contains("^^^^^ did you mean `needs`?"));
    /// ```
    pub fn render(&self, file: &str, source: &str) -> String {
        let mut out = String::new();
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{severity}[{}]: {}", self.code.as_str(), self.message);
        let line_no = self.span.line.to_string();
        let pad = " ".repeat(line_no.len());
        let _ = writeln!(out, "{pad}--> {file}:{}:{}", self.span.line, self.span.column);
        if let Some(line) = source.lines().nth(self.span.line.saturating_sub(1) as usize) {
            let line = line.trim_end_matches('\r');
            let length = line.chars().count();
            let start = self.span.column.max(1) as usize;
            let end =
                if self.span.end_line == self.span.line && self.span.end_column as usize > start {
                    self.span.end_column as usize
                } else {
                    (length + 1).max(start + 1)
                };
            let window = Window::around(length, start - 1);
            let mut shown = String::new();
            if window.first > 0 {
                shown.push('…');
            }
            let visible = line.chars().skip(window.first).take(window.last - window.first);
            shown.extend(visible.map(|c| if c == '\t' { ' ' } else { c }));
            if window.last < length {
                shown.push('…');
            }
            // Columns of the window, the leading `…` included; the carets stop at its end.
            let offset = start - 1 - window.first + usize::from(window.first > 0);
            let limit = window.last + 1 + usize::from(window.last < length);
            let carets = "^".repeat((end.min(limit).saturating_sub(start)).clamp(1, 200));
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{line_no} | {shown}");
            let _ = write!(out, "{pad} | {}{carets}", " ".repeat(offset));
            if let Some(label) = &self.label {
                let _ = write!(out, " {label}");
            }
            out.push('\n');
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} = help: {help}");
        }
        out
    }
}

/// The characters of a source line that a diagnostic quotes: the whole line when it is short,
/// otherwise a window around the problem, so that a minified JSON file or a line of megabytes
/// does not end up on the terminal whole.
struct Window {
    /// Index of the first character shown.
    first: usize,
    /// Index after the last character shown.
    last: usize,
}

impl Window {
    /// Longest line quoted whole.
    const WIDTH: usize = 120;
    /// Characters kept before the problem's column in a window.
    const BEFORE: usize = 40;

    fn around(length: usize, column: usize) -> Window {
        if length <= Self::WIDTH {
            return Window { first: 0, last: length };
        }
        let first = column.saturating_sub(Self::BEFORE).min(length - Self::WIDTH);
        Window { first, last: first + Self::WIDTH }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.span.line, self.span.column, self.message)
    }
}

/// Collects diagnostics while parsing and lowering.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    pub fn error(&mut self, code: Code, span: Span, message: impl Into<String>) {
        self.push(Diagnostic::error(code, span, message));
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The diagnostics in source order (errors before warnings on the same spot).
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            (a.span.file, a.span.line, a.span.column, std::cmp::Reverse(a.severity)).cmp(&(
                b.span.file,
                b.span.line,
                b.span.column,
                std::cmp::Reverse(b.severity),
            ))
        });
        self.items.dedup();
        self.items
    }
}

/// The closest candidate to `name` by edit distance, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1) + usize::from(name.len() > 6);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Damerau-Levenshtein distance (optimal string alignment): a transposition counts as one edit,
/// which is the most common typo (`nedes` for `needs`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best =
                (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_quoted_as_a_window_around_the_problem() {
        let line = format!("{}BAD{}", "a".repeat(5_000), "b".repeat(5_000));
        let d = Diagnostic::error(Code::Syntax, Span::new(1, 5_001, 1, 5_004), "bad");
        let shown = d.render("f.json", &line);
        let quoted = shown.lines().nth(3).unwrap();
        assert_eq!(quoted, format!("1 | …{}BAD{}…", "a".repeat(40), "b".repeat(77)));
        let carets = shown.lines().nth(4).unwrap();
        assert_eq!(carets, format!("  | {}^^^", " ".repeat(41)));

        // Near the end of the line the window ends with it.
        let d = Diagnostic::error(Code::Syntax, Span::new(1, 10_004, 1, 10_005), "end");
        let shown = d.render("f.json", &line);
        assert_eq!(shown.lines().nth(3).unwrap(), format!("1 | …{}", "b".repeat(120)));
        assert_eq!(shown.lines().nth(4).unwrap(), format!("  | {}^", " ".repeat(121)));
    }

    #[test]
    fn suggestions_catch_common_typos() {
        let fields = ["needs", "run", "retry", "timeout", "compensate"];
        assert_eq!(did_you_mean("nedes", fields), Some("needs"));
        assert_eq!(did_you_mean("retyr", fields), Some("retry"));
        assert_eq!(did_you_mean("timout", fields), Some("timeout"));
        assert_eq!(did_you_mean("banana", fields), None);
    }
}
