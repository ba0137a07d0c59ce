//! A YAML (and therefore JSON) document as a tree of nodes that remember where they came from.
//!
//! Lowering needs the position of every key and value to report precise diagnostics, which a
//! serde-based loader throws away. This module turns the event stream of `saphyr-parser` into a
//! small owned tree, resolving plain scalars with the YAML 1.2 core schema (so `on: yes` stays a
//! string and `010` is the integer 10), expanding aliases under a budget (no billion laughs),
//! and bounding nesting depth. It never panics on any input.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Span as YamlSpan};

use crate::diagnostic::{Code, Diagnostic, Span};

/// Nesting deeper than this is rejected before it can hurt anything.
pub const MAX_DEPTH: usize = 64;
/// Upper bound on the nodes of one document, aliases expanded.
pub const MAX_NODES: usize = 500_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
    /// How a scalar was written; lets callers map an offset inside the string to a column.
    pub style: Style,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    /// A literal block scalar (`|`) whose first line is line `first_line` of the file, indented
    /// by `indent` columns: each line of the value sits on its own line of the file.
    Literal {
        first_line: u32,
        indent: u32,
    },
    /// A folded block scalar (`>`), or a literal one whose layout is not known.
    Block,
    /// Sequences and mappings.
    Collection,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key: always a string in this format, with the span of the key itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

impl Value {
    /// The word a person would use for this kind of value in an error message.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// Marks every span of this tree as one of file `file` (an imported file).
    pub fn in_file(&mut self, file: u16) {
        self.span.file = file;
        match &mut self.value {
            Value::Seq(items) => items.iter_mut().for_each(|item| item.in_file(file)),
            Value::Map(entries) => {
                for (key, value) in entries {
                    key.span.file = file;
                    value.in_file(file);
                }
            }
            _ => {}
        }
    }

    /// The file position of character `offset` of this scalar's value, when it can be known
    /// exactly (a one-line plain scalar, or a one-line quoted scalar without escapes); otherwise
    /// the start of the scalar.
    pub fn offset_span(&self, offset: usize, len: usize) -> Span {
        let Value::Str(text) = &self.value else { return self.span };
        let one_line = self.span.line == self.span.end_line;
        let written = self.span.end_column.saturating_sub(self.span.column) as usize;
        let chars = text.chars().count();
        let shift = match self.style {
            Style::Plain if one_line && written == chars => 0,
            Style::Quoted if one_line && written == chars + 2 => 1,
            Style::Literal { first_line, indent } => {
                let before: String = text.chars().take(offset).collect();
                let line = before.matches('\n').count() as u32;
                let column = before.rsplit('\n').next().map_or(0, |rest| rest.chars().count());
                let start = Span {
                    file: self.span.file,
                    ..Span::new(first_line + line, indent + 1, first_line + line, indent + 2)
                };
                return start.sub(column as u32, len as u32);
            }
            _ => return self.span,
        };
        self.span.sub((offset + shift) as u32, len as u32)
    }
}

impl Node {
    /// The text of a plain scalar written as an integer that does not fit in 64 bits: the core
    /// schema makes it an integer, but it could only be kept as a string.
    pub fn out_of_range_integer(&self) -> Option<&str> {
        let Value::Str(text) = &self.value else { return None };
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        let integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        (self.style == Style::Plain && integer).then_some(text)
    }

    /// The node as a JSON value, or `None` when it holds a number JSON cannot represent
    /// (NaN, infinity). For files of plain data, like a run's input values.
    ///
    /// ```
    /// let node = wayline_lang::yaml::parse("replicas: 3\nregions: [eu, us]\n").unwrap();
    /// assert_eq!(node.to_json(), Some(serde_json::json!({ "replicas": 3, "regions": ["eu", "us"] })));
    /// ```
    pub fn to_json(&self) -> Option<serde_json::Value> {
        use serde_json::Value as Json;
        Some(match &self.value {
            Value::Null => Json::Null,
            Value::Bool(value) => Json::Bool(*value),
            Value::Int(value) => Json::from(*value),
            Value::Float(value) => Json::Number(serde_json::Number::from_f64(*value)?),
            Value::Str(text) => Json::String(text.clone()),
            Value::Seq(items) => {
                Json::Array(items.iter().map(Node::to_json).collect::<Option<_>>()?)
            }
            Value::Map(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(key, node)| Some((key.name.clone(), node.to_json()?)))
                    .collect::<Option<_>>()?,
            ),
        })
    }
}

/// Parses one YAML document. Errors are returned as diagnostics with positions.
pub fn parse(text: &str) -> Result<Node, Diagnostic> {
    let mut builder = Builder { text, ..Builder::default() };
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0;
    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok(next)) => next,
            Some(Err(error)) => return Err(syntax_error(text, &builder, &error)),
        };
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(Diagnostic::error(
                        Code::Syntax,
                        convert(span),
                        "a workflow file holds exactly one YAML document",
                    )
                    .with_help(
                        "remove the `---` separator and everything after it, or split the file",
                    ));
                }
            }
            Event::StreamEnd => break,
            other => builder.event(other, span)?,
        }
    }
    builder.root.ok_or_else(|| {
        Diagnostic::error(Code::Syntax, Span::new(1, 1, 1, 2), "the file is empty")
            .with_help("a workflow needs at least `name:` and `steps:`")
    })
}

/// Turns the parser's complaint into a message about the likely cause: a tab in the
/// indentation, or a `[`/`{` that was never closed, rather than where the parser gave up.
fn syntax_error(text: &str, builder: &Builder<'_>, error: &saphyr_parser::ScanError) -> Diagnostic {
    let (line, column) = position(error.marker());
    if error.info().contains("tab")
        && let Some((line, column)) = first_tab(text, line)
    {
        return Diagnostic::error(
            Code::Syntax,
            Span::new(line, column, line, column + 1),
            "a tab in the indentation; YAML indents with spaces only",
        )
        .with_help("replace the tab with spaces");
    }
    let mut diagnostic = Diagnostic::error(
        Code::Syntax,
        Span::new(line, column, line, column + 1),
        format!("invalid YAML: {}", error.info()),
    );
    if error.info().contains("mapping values are not allowed") {
        diagnostic = diagnostic.with_help(
            "`: ` inside an unquoted value starts a new key; quote the whole value, or write it as a block scalar (`run: |` and the command on the next line)",
        );
    }
    let open_flow = builder.stack.iter().rev().find_map(|open| {
        let start = open.start;
        let c =
            text.lines().nth(start.line as usize - 1)?.chars().nth(start.column as usize - 1)?;
        matches!(c, '[' | '{').then_some((c, start))
    });
    if let Some((bracket, start)) = open_flow
        && start.line < line
    {
        let close = if bracket == '[' { ']' } else { '}' };
        diagnostic = diagnostic.with_help(format!(
            "the `{bracket}` on line {}, column {} is still open here; is a `{close}` missing?",
            start.line, start.column
        ));
    }
    diagnostic
}

/// Where the lines of a literal block scalar lie in the file. The parser's span starts at the
/// first character of the content; the value's lines follow it one by one at the same
/// indentation. `None` when the file does not show exactly that (leading empty lines, an
/// explicit indentation indicator).
fn literal_layout(text: &str, value: &str, span: Span) -> Option<Style> {
    let line = text.lines().nth(span.line as usize - 1)?;
    let indent = span.column - 1;
    let written: String = line.chars().skip(indent as usize).collect();
    let first = value.split('\n').next().unwrap_or("");
    let blank_prefix = line.chars().take(indent as usize).all(|c| c == ' ');
    (blank_prefix && !first.is_empty() && written == first)
        .then_some(Style::Literal { first_line: span.line, indent })
}

/// The first tab at or after the start of `line` (1-based), as (line, column).
fn first_tab(text: &str, line: u32) -> Option<(u32, u32)> {
    text.lines().enumerate().skip(line.saturating_sub(1) as usize).find_map(|(index, content)| {
        let column = content.chars().position(|c| c == '\t')?;
        Some((index as u32 + 1, column as u32 + 1))
    })
}

#[derive(Default)]
struct Builder<'a> {
    /// The document's text, to find where the lines of a literal block scalar start.
    text: &'a str,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    nodes: usize,
}

struct Open {
    start: Span,
    anchor: usize,
    kind: OpenKind,
}

enum OpenKind {
    Seq(Vec<Node>),
    Map { entries: Vec<(Key, Node)>, key: Option<Key> },
}

impl Builder<'_> {
    fn event(&mut self, event: Event<'_>, span: YamlSpan) -> Result<(), Diagnostic> {
        let span = convert(span);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let style_kind = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    ScalarStyle::Literal => {
                        literal_layout(self.text, &text, span).unwrap_or(Style::Block)
                    }
                    _ => Style::Block,
                };
                // Every tag is refused, `!!str` too: a tag that changes nothing today would
                // invite the ones that change how a value is read.
                let value = match tag {
                    None if style == ScalarStyle::Plain => resolve_plain(text),
                    None => Value::Str(text.into_owned()),
                    Some(tag) => return Err(unsupported_tag(span, &tag)),
                };
                self.finish(Node { value, span, style: style_kind }, anchor)
            }
            Event::SequenceStart(_, Some(tag)) | Event::MappingStart(_, Some(tag)) => {
                Err(unsupported_tag(span, &tag))
            }
            Event::SequenceStart(anchor, _) => self.open(span, anchor, OpenKind::Seq(Vec::new())),
            Event::MappingStart(anchor, _) => {
                self.open(span, anchor, OpenKind::Map { entries: Vec::new(), key: None })
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(open) = self.stack.pop() else { return Ok(()) };
                let span =
                    Span::new(open.start.line, open.start.column, span.end_line, span.end_column);
                let value = match open.kind {
                    OpenKind::Seq(items) => Value::Seq(items),
                    OpenKind::Map { entries, .. } => Value::Map(entries),
                };
                self.finish(Node { value, span, style: Style::Collection }, open.anchor)
            }
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id) else {
                    return Err(Diagnostic::error(Code::Syntax, span, "unknown YAML alias"));
                };
                let size = count(node);
                self.nodes += size;
                if self.nodes > MAX_NODES {
                    return Err(limit(span));
                }
                let mut node = node.clone();
                node.span = span;
                self.finish(node, 0)
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd => Ok(()),
            Event::DocumentStart(_) | Event::DocumentEnd => Ok(()),
        }
    }

    fn open(&mut self, start: Span, anchor: usize, kind: OpenKind) -> Result<(), Diagnostic> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(Diagnostic::error(
                Code::Limit,
                start,
                format!("the document nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.stack.push(Open { start, anchor, kind });
        Ok(())
    }

    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), Diagnostic> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(limit(node.span));
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut parent.kind {
            OpenKind::Seq(items) => items.push(node),
            OpenKind::Map { entries, key } => match key.take() {
                Some(key) => entries.push((key, node)),
                None => {
                    let name = match node.value {
                        Value::Str(name) => name,
                        Value::Null => String::new(),
                        Value::Bool(b) => b.to_string(),
                        Value::Int(i) => i.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(Diagnostic::error(
                                Code::Syntax,
                                node.span,
                                "a mapping key must be a plain string, not a list or mapping",
                            ));
                        }
                    };
                    *key = Some(Key { name, span: node.span });
                }
            },
        }
        Ok(())
    }
}

fn unsupported_tag(span: Span, tag: &saphyr_parser::Tag) -> Diagnostic {
    // `!!binary` is shown as written, not as its expanded `tag:yaml.org,2002:` form.
    let written =
        if tag.is_yaml_core_schema() { format!("!!{}", tag.suffix) } else { tag.to_string() };
    Diagnostic::error(
        Code::Syntax,
        span,
        format!("YAML tags such as `{written}` are not supported"),
    )
    .with_help("remove the tag; to keep a value as text, quote it")
}

fn count(node: &Node) -> usize {
    match &node.value {
        Value::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| count(v)).sum::<usize>(),
        _ => 1,
    }
}

fn limit(span: Span) -> Diagnostic {
    Diagnostic::error(
        Code::Limit,
        span,
        format!("the document expands to more than {MAX_NODES} nodes (aliases included)"),
    )
    .with_help("each alias (`*name`) is a full copy of its anchor, so aliases of aliases multiply; write the values out or use fewer levels")
}

fn position(marker: &Marker) -> (u32, u32) {
    (marker.line().max(1) as u32, marker.col() as u32 + 1)
}

fn convert(span: YamlSpan) -> Span {
    let (line, column) = position(&span.start);
    let (end_line, end_column) = position(&span.end);
    Span::new(line, column, end_line, end_column)
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(text: std::borrow::Cow<'_, str>) -> Value {
    match &*text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(value) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(value);
    }
    if let Some(octal) = text.strip_prefix("0o")
        && let Ok(value) = i64::from_str_radix(octal, 8)
    {
        return Value::Int(value);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(&text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(value) = text.parse::<i64>()
    {
        return Value::Int(value);
    }
    if is_float(digits)
        && let Ok(value) = text.parse::<f64>()
    {
        return Value::Float(value);
    }
    Value::Str(text.into_owned())
}

/// `[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?` or `\.[0-9]+(...)` — stricter than `f64::from_str`,
/// which would also accept `inf` and `NaN`.
fn is_float(text: &str) -> bool {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(whole)
        && fraction.is_none_or(digits)
        && !(whole.is_empty() && fraction.is_none_or(str::is_empty));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok && (fraction.is_some() || exponent.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Value {
        parse(text).unwrap().value
    }

    #[test]
    fn plain_scalars_follow_the_core_schema() {
        assert_eq!(value("10"), Value::Int(10));
        assert_eq!(value("-3"), Value::Int(-3));
        assert_eq!(value("0x1f"), Value::Int(31));
        assert_eq!(value("1.5"), Value::Float(1.5));
        assert_eq!(value("1e3"), Value::Float(1000.0));
        assert_eq!(value("yes"), Value::Str("yes".into()));
        assert_eq!(value("5m"), Value::Str("5m".into()));
        assert_eq!(value("'10'"), Value::Str("10".into()));
        assert_eq!(value("~"), Value::Null);
        assert_eq!(value("True"), Value::Bool(true));
    }

    #[test]
    fn every_tag_is_refused() {
        for text in
            ["name: !!str x", "a: !!int 3", "a: !custom x", "a: !!map { b: 1 }", "- !!seq [1]"]
        {
            let error = parse(text).unwrap_err();
            assert!(error.message.starts_with("YAML tags such as"), "{text}: {error}");
        }
        let error = parse("name: demo\nsteps:\n  - id: !!str a\n").unwrap_err();
        assert_eq!((error.span.line, error.span.column), (3, 9));
        assert!(error.message.contains("`!!str`"), "{}", error.message);
    }

    #[test]
    fn spans_point_at_keys_and_values() {
        let node = parse("name: demo\nsteps:\n  - id: a\n").unwrap();
        let Value::Map(entries) = node.value else { panic!("not a map") };
        assert_eq!(entries[1].0.span, Span::new(2, 1, 2, 6));
        let Value::Seq(steps) = &entries[1].1.value else { panic!("not a seq") };
        let Value::Map(step) = &steps[0].value else { panic!("not a map") };
        assert_eq!(step[0].1.span, Span::new(3, 9, 3, 10));
    }

    #[test]
    fn aliases_expand_but_cannot_explode() {
        let node = parse("a: &x [1, 2]\nb: *x\n").unwrap();
        let Value::Map(entries) = node.value else { panic!("not a map") };
        assert_eq!(entries[1].1.value, entries[0].1.value);

        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        let error = parse(&bomb).unwrap_err();
        assert_eq!(error.code, Code::Limit);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let flow = "[".repeat(10_000);
        assert!(parse(&flow).is_err());
        let block: String = (0..100).map(|depth| format!("{}a:\n", "  ".repeat(depth))).collect();
        assert_eq!(parse(&block).unwrap_err().code, Code::Limit);
    }

    #[test]
    fn json_is_yaml() {
        let node = parse(r#"{"name": "x", "steps": [{"id": "a", "run": "true"}]}"#).unwrap();
        assert!(matches!(node.value, Value::Map(_)));
    }
}
