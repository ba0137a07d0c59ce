//! What a step does: the `run`, `http`, `wait`, `condition` and `set` bodies, and the
//! `run`-or-`http` actions of compensations and notifications. Substitutions in a `run` command
//! and an `http` URL are placed here, where the text around them is known.

use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::expr::{self, Template};
use crate::format;
use crate::model::*;
use crate::shell::{self, Script};
use crate::yaml::{Node, Value};

use super::readers::{Obj, scalar_text};
use super::{Ctx, Lower, suggest};

impl Lower {
    pub(super) fn body(&mut self, index: StepIndex, kind: &str, obj: &Obj<'_>) -> Option<Body> {
        let node = obj.get(kind)?;
        match kind {
            "run" => self.command(obj, node, Ctx::Body(index)).map(Body::Run),
            "http" => self.http(node, Ctx::Body(index)).map(Body::Http),
            "wait" => self.wait(node, Ctx::Body(index)).map(Body::Wait),
            "condition" => {
                let expression = self.expression(node, Ctx::Condition(index));
                let then = obj.get("then").map(|node| self.branch(index, node)).unwrap_or_default();
                let otherwise =
                    obj.get("else").map(|node| self.branch(index, node)).unwrap_or_default();
                // Only when neither branch is written: an unknown step in a branch is already
                // an error, and a second message about it would only distract.
                if obj.key("then").is_none() && obj.key("else").is_none() {
                    self.push(Diagnostic::warning(
                        Code::NoEffect,
                        node.span,
                        "this condition has no `then` or `else`; its result is only an output",
                    ));
                }
                for both in then.iter().filter(|step| otherwise.contains(step)) {
                    let id = &self.outlines[*both].id;
                    let span = obj.get("else").map_or(node.span, |n| n.span);
                    self.push(
                        Diagnostic::error(Code::NeverRuns, span, format!("step `{id}` is in both `then` and `else`, so it is always skipped"))
                            .with_help("a step listed in a branch runs only when that branch is taken; remove it from one of them"),
                    );
                }
                Some(Body::Condition(Condition { expression: expression?, then, otherwise }))
            }
            "set" => self.named_values(node, "`set`", Ctx::Body(index)).map(Body::Set),
            _ => None,
        }
    }

    fn branch(&mut self, condition: StepIndex, node: &Node) -> Vec<StepIndex> {
        let mut out = Vec::new();
        for item in self.list(node, "a branch") {
            let Some(name) = self.id(item, "step id") else { continue };
            match self.ids.get(&name) {
                Some(&step) if step == condition => {
                    self.error(
                        Code::SelfDependency,
                        item.span,
                        format!("condition `{name}` lists itself in a branch"),
                    );
                }
                Some(&step) => {
                    self.need_spans.entry((step, condition)).or_insert(item.span);
                    if !out.contains(&step) {
                        out.push(step);
                    }
                }
                None => {
                    let diagnostic = Diagnostic::error(
                        Code::UnknownStep,
                        item.span,
                        format!("unknown step `{name}` in a branch"),
                    );
                    let diagnostic =
                        suggest(diagnostic, &name, self.ids.keys().map(String::as_str));
                    self.push(diagnostic);
                }
            }
        }
        out
    }

    /// A `run` (`node`) with the `cwd` and `env` beside it in `obj`: a step's, a
    /// compensation's or a notification's.
    fn command(&mut self, obj: &Obj<'_>, node: &Node, ctx: Ctx) -> Option<Command> {
        let program = self.program(node, ctx)?;
        let cwd = obj.get("cwd").and_then(|node| self.template(node, ctx));
        let env = obj.get("env").map(|node| self.env(node, ctx)).unwrap_or_default();
        Some(Command { program, cwd, env })
    }

    fn program(&mut self, node: &Node, ctx: Ctx) -> Option<Program> {
        match &node.value {
            Value::Str(text) if text.trim().is_empty() => {
                self.error(Code::InvalidValue, node.span, "`run` is empty");
                None
            }
            Value::Str(text) => {
                let template = self.template(node, ctx)?;
                self.script(node, text, template).map(Program::Shell)
            }
            Value::Seq(items) if items.is_empty() => {
                self.error(
                    Code::InvalidValue,
                    node.span,
                    "`run` is an empty list; the first element is the program",
                );
                None
            }
            Value::Seq(items) => {
                let parts: Vec<Option<Template>> =
                    items.iter().map(|item| self.template(item, ctx)).collect();
                let parts = parts.into_iter().collect::<Option<Vec<_>>>()?;
                self.argv(items);
                Some(Program::Argv(parts))
            }
            _ => {
                self.wrong_type(
                    node,
                    "`run`",
                    "a command string or a list of program and arguments",
                );
                None
            }
        }
    }

    /// A `run` string: where each substitution lands in the script decides how its value is
    /// referenced; a place where no reference is safe is refused (see [`crate::shell`]).
    fn script(&mut self, node: &Node, text: &str, template: Template) -> Option<Script> {
        let ranges = expr::expression_ranges(text);
        if ranges.is_empty() {
            return Some(Script::new(template, Vec::new()));
        }
        let analysis = shell::analyse_script(text, &ranges);
        for finding in &analysis.warnings {
            let code =
                if finding.slot.is_some() { Code::ShellSubstitution } else { Code::ShellSyntax };
            let span = node.offset_span(finding.offset, finding.len);
            self.push(Diagnostic::warning(code, span, &finding.message).with_help(&finding.help));
        }
        if !analysis.errors.is_empty() {
            for finding in &analysis.errors {
                let span = node.offset_span(finding.offset, finding.len);
                self.push(
                    Diagnostic::error(Code::ShellSubstitution, span, &finding.message)
                        .with_help(&finding.help),
                );
            }
            return None;
        }
        Some(Script::new(template, analysis.placements))
    }

    /// The list form of `run` passes elements verbatim; only programs that run an argument as
    /// code (`sh -c`, `python -c`, …) need a look.
    fn argv(&mut self, items: &[Node]) {
        let mut elements = Vec::new();
        let mut spans = Vec::new();
        for item in items {
            // The same text `template()` parsed, so offsets point into what was written.
            let text = scalar_text(&item.value).unwrap_or_default();
            let mut element = shell::Element::default();
            let mut last = 0;
            for range in expr::expression_ranges(&text) {
                element.text.push_str(&text[last..range.start]);
                element.text.push('\u{1}');
                let offset = text[..range.start].chars().count();
                let len = text[range.clone()].chars().count();
                element.slots.push((spans.len(), offset, len));
                spans.push(item.offset_span(offset, len));
                last = range.end;
            }
            element.text.push_str(&text[last..]);
            elements.push(element);
        }
        if spans.is_empty() {
            return;
        }
        let analysis = shell::analyse_argv(&elements);
        for (finding, error) in analysis
            .errors
            .iter()
            .map(|finding| (finding, true))
            .chain(analysis.warnings.iter().map(|finding| (finding, false)))
        {
            let Some(span) = finding.slot.and_then(|slot| spans.get(slot)).copied() else {
                continue;
            };
            let diagnostic = if error {
                Diagnostic::error(Code::ShellSubstitution, span, &finding.message)
            } else {
                Diagnostic::warning(Code::ShellSubstitution, span, &finding.message)
            };
            self.push(diagnostic.with_help(&finding.help));
        }
    }

    /// A `run` or `http` with its `env`/`cwd`, for compensations and notifications.
    pub(super) fn action(&mut self, obj: &Obj<'_>, ctx: Ctx, what: &str) -> Option<Action> {
        match (obj.get("run"), obj.get("http")) {
            (Some(run), None) => self.command(obj, run, ctx).map(Action::Run),
            (None, Some(http)) => {
                for field in ["env", "cwd"] {
                    if let Some(key) = obj.key(field) {
                        self.push(Diagnostic::error(
                            Code::BadCompensate,
                            key.span,
                            format!("`{field}` only applies to `run`"),
                        ));
                    }
                }
                self.http(http, ctx).map(Action::Http)
            }
            (Some(_), Some(_)) => {
                let span = obj.key("http").map_or(obj.span, |key| key.span);
                self.push(Diagnostic::error(
                    Code::BadCompensate,
                    span,
                    format!("`{what}` has both `run` and `http`; pick one"),
                ));
                None
            }
            (None, None) => {
                self.push(Diagnostic::error(
                    Code::BadCompensate,
                    obj.span.start(),
                    format!("`{what}` needs `run` or `http`"),
                ));
                None
            }
        }
    }

    /// Every field is checked even when an earlier one is wrong, so one pass reports them all.
    fn http(&mut self, node: &Node, ctx: Ctx) -> Option<Http> {
        let obj = self.object(node, &format::HTTP)?;
        let method = match obj.get("method") {
            Some(node) => self.method(node),
            None => Some("GET".to_owned()),
        };
        let url = obj.get("url").and_then(|node| {
            let url = self.template(node, ctx)?;
            if let Some(literal) = url.as_literal()
                && !(literal.starts_with("http://") || literal.starts_with("https://"))
            {
                self.push(
                    Diagnostic::error(
                        Code::InvalidValue,
                        node.span,
                        format!("`{literal}` is not an http:// or https:// URL"),
                    )
                    .with_help(
                        "wayline calls HTTP endpoints only, e.g. `https://hooks.example/deploy`",
                    ),
                );
                return None;
            }
            self.url_layout(node, &url).then_some(url)
        });
        let headers = obj
            .get("headers")
            .map(|node| self.string_map(node, ctx, "header name"))
            .unwrap_or_default();
        let query = obj
            .get("query")
            .map(|node| self.string_map(node, ctx, "query parameter"))
            .unwrap_or_default();
        let body = obj.get("body").map(|node| self.value_template(node, ctx));
        let expect_status = obj.get("expect").map(|node| self.expect(node));
        Some(Http {
            method: method?,
            url: url?,
            headers,
            query,
            body: match body {
                Some(body) => Some(body?),
                None => None,
            },
            expect_status: match expect_status {
                Some(codes) => Some(codes?),
                None => None,
            },
        })
    }

    /// Where each `${{ }}` of a URL falls (see [`crate::url`]): a template that cannot make an
    /// absolute http(s) URL is an error, each `raw()` a warning. Returns whether it is usable.
    fn url_layout(&mut self, node: &Node, url: &Template) -> bool {
        if url.as_literal().is_some() {
            return true;
        }
        let slots = match crate::url::layout(url) {
            Ok(slots) => slots,
            Err(error) => {
                let diagnostic = Diagnostic::error(Code::InvalidValue, node.span, error.message);
                self.push(diagnostic.with_help(error.help));
                return false;
            }
        };
        for (slot, (expression, offset)) in slots.into_iter().zip(url.expressions()) {
            if slot == crate::url::Slot::Raw {
                // `raw` is the call at the top; only parentheses can come before its name.
                let source = expression.source();
                let at = source.find("raw").unwrap_or(0);
                let at = source[..at].chars().count();
                self.push(
                    Diagnostic::warning(
                        Code::RawUrl,
                        node.offset_span(offset + at, 3),
                        "raw() puts the value into the URL unencoded: it can change the host, path or query",
                    )
                    .with_help("without raw(), the value is encoded for where it sits; keep raw() for values you control"),
                );
            }
        }
        true
    }

    fn method(&mut self, node: &Node) -> Option<String> {
        const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
        let text = self.text(node, "`method`")?;
        let upper = text.to_ascii_uppercase();
        if METHODS.contains(&upper.as_str()) {
            return Some(upper);
        }
        let mut diagnostic = Diagnostic::error(
            Code::InvalidValue,
            node.span,
            format!("`{text}` is not an HTTP method"),
        );
        diagnostic = match did_you_mean(&upper, METHODS) {
            Some(similar) => diagnostic.with_label(format!("did you mean `{similar}`?")),
            None => diagnostic.with_help(format!("use one of {}", METHODS.join(", "))),
        };
        self.push(diagnostic);
        None
    }

    /// `expect: { status: … }`: the accepted status codes.
    fn expect(&mut self, node: &Node) -> Option<Vec<u16>> {
        let expect = self.object(node, &format::EXPECT)?;
        let status = expect.get("status")?;
        let items: Vec<&Node> = match &status.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![status],
        };
        let mut codes = Vec::new();
        let mut valid = true;
        for item in items {
            match item.value {
                Value::Int(code @ 100..=599) => codes.push(code as u16),
                Value::Int(code) => {
                    valid = false;
                    self.error(
                        Code::InvalidValue,
                        item.span,
                        format!("{code} is not an HTTP status code (100-599)"),
                    );
                }
                _ => {
                    valid = false;
                    self.wrong_type(item, "a status code", "an integer like 200");
                }
            }
        }
        if valid && codes.is_empty() {
            self.error(Code::InvalidValue, status.span, "`expect.status` lists no status code");
        }
        (valid && !codes.is_empty()).then_some(codes)
    }

    fn string_map(&mut self, node: &Node, ctx: Ctx, what: &str) -> Vec<(String, Template)> {
        let entries = self.mapping(node, what, "a mapping").unwrap_or_default();
        let mut out = Vec::new();
        for (key, value) in entries {
            if key.name.is_empty()
                || key.name.chars().any(|c| {
                    c.is_control() || (what == "header name" && (c.is_whitespace() || c == ':'))
                })
            {
                self.error(
                    Code::BadName,
                    key.span,
                    format!("`{}` is not a valid {what}", key.name),
                );
                continue;
            }
            if let Some(template) = self.template(value, ctx) {
                out.push((key.name.clone(), template));
            }
        }
        out
    }

    fn wait(&mut self, node: &Node, ctx: Ctx) -> Option<Wait> {
        match &node.value {
            Value::Str(_) => self.duration(node).map(Wait::For),
            Value::Map(_) => {
                let obj = self.object(node, &format::WAIT)?;
                let until = obj.get("until")?;
                let template = self.template(until, ctx)?;
                if let Some(literal) = template.as_literal()
                    && let Err(error) = literal.parse::<jiff::Timestamp>()
                {
                    self.push(
                        Diagnostic::error(
                            Code::BadTimestamp,
                            until.span,
                            format!("`{literal}` is not an RFC 3339 timestamp: {error}"),
                        )
                        .with_help(
                            "write it like 2026-12-01T09:00:00Z or 2026-12-01T10:00:00+01:00",
                        ),
                    );
                    return None;
                }
                Some(Wait::Until(template))
            }
            _ => {
                self.wrong_type(node, "`wait`", "a duration like `5m` or `{ until: <timestamp> }`");
                None
            }
        }
    }
}
