//! Lowering: the YAML tree becomes a validated [`Workflow`], or a list of every problem found.
//!
//! Lowering never stops at the first problem: each field is checked on its own, a bad field is
//! reported and skipped, and checks that need the whole picture (references between steps,
//! cycles, branches that can never run) run at the end on whatever was understood.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde_json::Value as Json;

use crate::diagnostic::{Code, Diagnostic, Diagnostics, Span, did_you_mean};
use crate::expr::{self, Expression, ExpressionCache, FUNCTIONS, Reference, Root, Template};
use crate::format::{self, Object};
use crate::graph::{self, Reachability};
use crate::model::*;
use crate::shell::{self, Script};
use crate::yaml::{self, Key, Node, Value};
use wayline_journal::Decision;
use wayline_journal::duration;

/// Largest workflow file accepted.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Most steps in one workflow.
pub const MAX_STEPS: usize = 10_000;

/// The result of loading a file: the workflow when there is no error, and every diagnostic
/// (errors and warnings) in source order.
#[derive(Debug)]
pub struct Loaded {
    pub workflow: Option<Workflow>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses and validates a workflow file's text (YAML or JSON).
///
/// ```
/// let loaded = wayline_lang::load("name: hello\nsteps:\n  - id: greet\n    run: echo hi\n");
/// let workflow = loaded.workflow.unwrap();
/// assert_eq!(workflow.steps[0].id, "greet");
///
/// let loaded = wayline_lang::load("name: hello\nsteps:\n  - id: greet\n    rnu: echo hi\n");
/// assert!(loaded.workflow.is_none());
/// assert_eq!(loaded.diagnostics[0].label.as_deref(), Some("did you mean `run`?"));
/// ```
pub fn load(text: &str) -> Loaded {
    if text.len() > MAX_FILE_BYTES {
        let diagnostic = Diagnostic::error(
            Code::Limit,
            Span::new(1, 1, 1, 2),
            format!(
                "the file is {} bytes; the limit is {MAX_FILE_BYTES} bytes (1 MiB)",
                text.len()
            ),
        );
        return Loaded { workflow: None, diagnostics: vec![diagnostic] };
    }
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(diagnostic) => return Loaded { workflow: None, diagnostics: vec![diagnostic] },
    };
    let mut lower = Lower::default();
    let workflow = lower.workflow(&root);
    let failed = lower.diagnostics.has_errors();
    Loaded {
        workflow: if failed { None } else { workflow },
        diagnostics: lower.diagnostics.into_sorted(),
    }
}

/// Where an expression is evaluated, which decides what it may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// Workflow-level `env` values.
    WorkflowEnv,
    /// A step body (run, http, wait, set, step env/cwd).
    Body(StepIndex),
    /// A step's `if`.
    If(StepIndex),
    /// A condition step's expression.
    Condition(StepIndex),
    /// A step's compensation: may also read the step's own outputs.
    Compensate(StepIndex),
    /// `escalation.notify`.
    Notify,
}

impl Ctx {
    fn step(self) -> Option<StepIndex> {
        match self {
            Ctx::Body(step) | Ctx::If(step) | Ctx::Condition(step) | Ctx::Compensate(step) => {
                Some(step)
            }
            Ctx::WorkflowEnv | Ctx::Notify => None,
        }
    }

    fn allows(self, root: Root) -> bool {
        match root {
            Root::Inputs | Root::Secrets | Root::Execution | Root::Workflow => true,
            Root::Env => self != Ctx::WorkflowEnv,
            Root::Steps => self.step().is_some(),
            Root::Attempt => matches!(self, Ctx::Body(_) | Ctx::Compensate(_)),
            Root::Escalation => self == Ctx::Notify,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Ctx::WorkflowEnv => "the workflow's `env`",
            Ctx::Body(_) => "a step body",
            Ctx::If(_) => "`if`",
            Ctx::Condition(_) => "`condition`",
            Ctx::Compensate(_) => "`compensate`",
            Ctx::Notify => "`escalation.notify`",
        }
    }
}

/// A reference to a step, checked once the graph is known.
struct StepRef {
    ctx: Ctx,
    path: Vec<String>,
    span: Span,
}

/// What the first pass learns about each step.
struct Outline {
    id: String,
    span: Span,
    body: Option<&'static str>,
    set_keys: Vec<String>,
}

#[derive(Default)]
struct Lower {
    diagnostics: Diagnostics,
    outlines: Vec<Outline>,
    ids: HashMap<String, StepIndex>,
    groups: HashMap<String, usize>,
    inputs: HashSet<String>,
    env_keys: HashSet<String>,
    step_refs: Vec<StepRef>,
    /// (step, need) -> where the dependency was written, for cycle messages.
    need_spans: HashMap<(StepIndex, StepIndex), Span>,
    expressions: ExpressionCache,
}

/// The fields of a mapping, checked against a table of the format.
struct Obj<'n> {
    entries: &'n [(Key, Node)],
    span: Span,
}

impl<'n> Obj<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries.iter().find(|(key, _)| key.name == name).map(|(_, node)| node)
    }

    fn key(&self, name: &str) -> Option<&'n Key> {
        self.entries.iter().find(|(key, _)| key.name == name).map(|(key, _)| key)
    }
}

const ID_PATTERN: &str = "[a-z0-9][a-z0-9_-]{0,62}";

fn is_id(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Identifiers readable in expressions without brackets.
fn is_identifier(text: &str, dash: bool) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || (dash && b == b'-'))
}

impl Lower {
    fn error(&mut self, code: Code, span: Span, message: impl Into<String>) {
        self.diagnostics.error(code, span, message);
    }

    fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    // ----- the workflow -----

    fn workflow(&mut self, root: &Node) -> Option<Workflow> {
        let obj = self.object(root, &format::WORKFLOW)?;
        if let Some(node) = obj.get("version")
            && let Some(version) = self.integer(node, "`version`", 1)
            && version != format::VERSION
        {
            self.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    node.span,
                    format!(
                        "format version {version} is not supported; this wayline reads version {}",
                        format::VERSION
                    ),
                )
                .with_help("upgrade wayline, or write the workflow for version 1"),
            );
        }
        let name = obj.get("name").and_then(|node| self.id(node, "workflow name"));
        let description = obj.get("description").and_then(|node| self.text(node, "`description`"));
        let inputs = obj.get("inputs").map(|node| self.inputs(node)).unwrap_or_default();
        let env = match obj.get("env") {
            Some(node) => {
                let env = self.env(node, Ctx::WorkflowEnv);
                self.env_keys = env.iter().map(|(key, _)| key.clone()).collect();
                env
            }
            None => Vec::new(),
        };
        let timeout = obj.get("timeout").and_then(|node| self.duration(node));
        let max_parallel =
            obj.get("max_parallel").and_then(|node| self.count(node, "`max_parallel`"));
        let on_failure = obj
            .get("on_failure")
            .and_then(|node| self.strategy(node, "`on_failure`"))
            .unwrap_or(Strategy::FailFast);
        let retry = match obj.get("retry") {
            Some(node) => self.retry(node, &Retry::default(), &RetrySpans::default()),
            None => (Retry::default(), RetrySpans::default()),
        };
        let mut groups = obj.get("groups").map(|node| self.groups(node)).unwrap_or_default();
        let escalation =
            obj.get("escalation").map(|node| self.escalation(node)).unwrap_or_default();

        let steps_node = obj.get("steps")?;
        let Value::Seq(items) = &steps_node.value else {
            self.wrong_type(steps_node, "`steps`", "a list of steps");
            return None;
        };
        if items.is_empty() {
            self.error(
                Code::InvalidValue,
                steps_node.span,
                "`steps` is empty; a workflow needs at least one step",
            );
            return None;
        }
        if items.len() > MAX_STEPS {
            self.error(
                Code::Limit,
                steps_node.span,
                format!("the workflow has {} steps; the limit is {MAX_STEPS}", items.len()),
            );
            return None;
        }
        self.outline(items);
        let mut steps = Vec::with_capacity(items.len());
        let mut declared_needs: Vec<Vec<StepIndex>> = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let (step, needs) = self.step(index, item, &retry, on_failure, &groups);
            steps.push(step);
            declared_needs.push(needs);
        }
        let name = name?;
        let steps: Vec<Step> = steps.into_iter().collect::<Option<Vec<Step>>>()?;
        for (index, step) in steps.iter().enumerate() {
            if let Some(group) = step.group {
                groups[group].steps.push(index);
            }
        }
        let ids = std::mem::take(&mut self.ids);
        self.finish(
            Workflow {
                name,
                description,
                inputs,
                env,
                timeout,
                max_parallel,
                on_failure,
                escalation,
                groups,
                steps,
                order: Vec::new(),
                dependents: Vec::new(),
                ids,
            },
            declared_needs,
        )
    }

    /// First pass over the steps: ids (duplicates, pattern) and body kinds, so that every
    /// later check can resolve names regardless of the order steps are written in.
    fn outline(&mut self, items: &[Node]) {
        for (index, item) in items.iter().enumerate() {
            let mut outline =
                Outline { id: String::new(), span: item.span, body: None, set_keys: Vec::new() };
            if let Value::Map(entries) = &item.value {
                for (key, node) in entries {
                    match key.name.as_str() {
                        // The same spellings `id()` accepts: `id: 1` is the step "1".
                        "id" => {
                            let id = match &node.value {
                                Value::Str(id) => id.clone(),
                                Value::Int(id) => id.to_string(),
                                _ => continue,
                            };
                            outline.id = id;
                            outline.span = node.span;
                        }
                        "set" => {
                            outline.body.get_or_insert("set");
                            if let Value::Map(keys) = &node.value {
                                outline.set_keys =
                                    keys.iter().map(|(k, _)| k.name.clone()).collect();
                            }
                        }
                        name => {
                            if let Some(body) = format::BODIES.iter().find(|body| **body == name) {
                                outline.body.get_or_insert(body);
                            }
                        }
                    }
                }
            }
            if !outline.id.is_empty() {
                if let Some(&first) = self.ids.get(&outline.id) {
                    let first_line = self.outlines[first].span.line;
                    self.push(
                        Diagnostic::error(
                            Code::DuplicateId,
                            outline.span,
                            format!("step id `{}` is used twice", outline.id),
                        )
                        .with_label(format!("first used on line {first_line}")),
                    );
                } else {
                    self.ids.insert(outline.id.clone(), index);
                    if self.groups.contains_key(&outline.id) {
                        self.error(
                            Code::DuplicateId,
                            outline.span,
                            format!("`{}` is both a step id and a group name; `needs` could not tell them apart", outline.id),
                        );
                    }
                }
            }
            self.outlines.push(outline);
        }
    }

    // ----- steps -----

    fn step(
        &mut self,
        index: StepIndex,
        node: &Node,
        default_retry: &(Retry, RetrySpans),
        default_strategy: Strategy,
        groups: &[Group],
    ) -> (Option<Step>, Vec<StepIndex>) {
        let Some(obj) = self.object(node, &format::STEP) else { return (None, Vec::new()) };
        let id = obj.get("id").and_then(|node| self.id(node, "step id"));
        let name = obj.get("name").and_then(|node| self.text(node, "`name`"));
        let description = obj.get("description").and_then(|node| self.text(node, "`description`"));
        let display = id.clone().unwrap_or_else(|| format!("#{}", index + 1));

        let needs = obj.get("needs").map(|node| self.needs(index, node)).unwrap_or_default();
        let when = obj.get("if").and_then(|node| self.expression(node, Ctx::If(index)));

        // Exactly one body.
        let present: Vec<&Key> = format::BODIES.iter().filter_map(|body| obj.key(body)).collect();
        // A misspelt body (`rnu:`) is already reported as an unknown field with a suggestion;
        // "does nothing" on top of it would only blur the fix.
        let misspelt_body = obj.entries.iter().any(|(key, _)| {
            format::STEP.field(&key.name).is_none()
                && did_you_mean(&key.name, format::STEP.names())
                    .is_some_and(|field| format::BODIES.contains(&field))
        });
        let body = match present.as_slice() {
            [] if misspelt_body => None,
            [] => {
                self.push(
                    Diagnostic::error(
                        Code::MissingBody,
                        obj.span.start(),
                        format!("step `{display}` does nothing"),
                    )
                    .with_help(
                        "give it exactly one of `run`, `http`, `wait`, `condition` or `set`",
                    ),
                );
                None
            }
            [key] => self.body(index, &key.name, &obj),
            [first, others @ ..] => {
                for other in others {
                    self.push(
                        Diagnostic::error(
                            Code::MultipleBodies,
                            other.span,
                            format!(
                                "step `{display}` has both `{}` and `{}`",
                                first.name, other.name
                            ),
                        )
                        .with_label("a step does exactly one thing")
                        .with_help("split it into two steps and connect them with `needs`"),
                    );
                }
                None
            }
        };
        let is = |kind: &str| present.len() == 1 && present[0].name == kind;
        for field in ["then", "else"] {
            if let Some(key) = obj.key(field)
                && !is("condition")
            {
                self.error(
                    Code::InvalidValue,
                    key.span,
                    format!("`{field}` only applies to a `condition` step"),
                );
            }
        }
        for field in ["env", "cwd"] {
            if let Some(key) = obj.key(field)
                && !is("run")
            {
                self.error(
                    Code::InvalidValue,
                    key.span,
                    format!("`{field}` only applies to a `run` step"),
                );
            }
        }

        let group = obj.get("group").and_then(|node| {
            let name = self.id(node, "group name")?;
            match self.groups.get(&name) {
                Some(&group) => Some(group),
                None => {
                    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
                    let mut diagnostic = Diagnostic::error(
                        Code::UnknownGroup,
                        node.span,
                        format!("unknown group `{name}`"),
                    );
                    diagnostic = match did_you_mean(&name, names.iter().copied()) {
                        Some(similar) => {
                            diagnostic.with_label(format!("did you mean `{similar}`?"))
                        }
                        None if names.is_empty() => diagnostic
                            .with_help("declare it under `groups:` at the top of the file"),
                        None => {
                            diagnostic.with_help(format!("declared groups: {}", names.join(", ")))
                        }
                    };
                    self.push(diagnostic);
                    None
                }
            }
        });
        let (retry, retry_spans) = match obj.get("retry") {
            Some(node) => self.retry(node, &default_retry.0, &default_retry.1),
            None => default_retry.clone(),
        };
        let _ = retry_spans;
        if let Some(key) = obj.key("retry")
            && let [body] = present.as_slice()
            && matches!(body.name.as_str(), "set" | "condition" | "wait")
        {
            self.push(
                Diagnostic::warning(
                    Code::NoEffect,
                    key.span,
                    format!("`retry` has no effect on a {} step", body.name),
                )
                .with_help(
                    "only `run` and `http` steps are retried; remove `retry` from this step",
                ),
            );
        }
        let timeout = obj.get("timeout").and_then(|node| self.duration(node));
        let on_failure = obj
            .get("on_failure")
            .and_then(|node| self.strategy(node, "`on_failure`"))
            .unwrap_or(default_strategy);
        let allow_failure = obj
            .get("allow_failure")
            .and_then(|node| self.boolean(node, "`allow_failure`"))
            .unwrap_or(false);
        if allow_failure
            && on_failure != Strategy::Continue
            && let Some(key) = obj.key("allow_failure")
        {
            self.push(Diagnostic::warning(
                Code::NoEffect,
                key.span,
                "`allow_failure` has no effect unless the step's `on_failure` is `continue`",
            ));
        }
        let compensate =
            obj.get("compensate").and_then(|node| self.compensate(index, node, &default_retry.0));
        let agent_labels = obj.get("agent").map(|node| self.agent(node)).unwrap_or_default();

        let step = match (id, body) {
            (Some(id), Some(body)) => Some(Step {
                id,
                name,
                description,
                needs: Vec::new(),
                when,
                body,
                group,
                retry,
                timeout,
                on_failure,
                allow_failure,
                compensate,
                agent_labels,
                branches: Vec::new(),
                span: self.outlines[index].span,
            }),
            _ => None,
        };
        (step, needs)
    }

    fn needs(&mut self, index: StepIndex, node: &Node) -> Vec<StepIndex> {
        let mut out = Vec::new();
        for item in self.list(node, "`needs`") {
            let Some(name) = self.id(item, "step or group name") else { continue };
            if let Some(&need) = self.ids.get(&name) {
                if need == index {
                    self.push(
                        Diagnostic::error(
                            Code::SelfDependency,
                            item.span,
                            format!("step `{name}` needs itself"),
                        )
                        .with_help("remove it from its own `needs`"),
                    );
                    continue;
                }
                self.need_spans.entry((index, need)).or_insert(item.span);
                out.push(need);
            } else if let Some(&group) = self.groups.get(&name) {
                // Group members are resolved once every step's group is known.
                out.push(usize::MAX - group);
                self.need_spans.entry((index, usize::MAX - group)).or_insert(item.span);
            } else {
                let candidates: Vec<&str> =
                    self.ids.keys().chain(self.groups.keys()).map(String::as_str).collect();
                let suggestion = did_you_mean(&name, candidates.iter().copied()).map(str::to_owned);
                let mut diagnostic = Diagnostic::error(
                    Code::UnknownStep,
                    item.span,
                    format!("`needs` names `{name}`, which is neither a step nor a group"),
                );
                if let Some(similar) = suggestion {
                    diagnostic = diagnostic.with_label(format!("did you mean `{similar}`?"));
                }
                self.push(diagnostic);
            }
        }
        out
    }

    fn body(&mut self, index: StepIndex, kind: &str, obj: &Obj<'_>) -> Option<Body> {
        let node = obj.get(kind)?;
        match kind {
            "run" => {
                let program = self.program(node, Ctx::Body(index))?;
                let cwd = obj.get("cwd").and_then(|node| self.template(node, Ctx::Body(index)));
                let env =
                    obj.get("env").map(|node| self.env(node, Ctx::Body(index))).unwrap_or_default();
                Some(Body::Run(Command { program, cwd, env }))
            }
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
            "set" => {
                let Value::Map(entries) = &node.value else {
                    self.wrong_type(node, "`set`", "a mapping of output names to values");
                    return None;
                };
                self.unique_keys(entries);
                let mut out = Vec::new();
                let mut valid = true;
                for (key, value) in entries {
                    if !is_identifier(&key.name, true) {
                        self.error(
                            Code::BadName,
                            key.span,
                            format!(
                                "output name `{}` must match [A-Za-z_][A-Za-z0-9_-]*",
                                key.name
                            ),
                        );
                        valid = false;
                        continue;
                    }
                    match self.value_template(value, Ctx::Body(index)) {
                        Some(value) => out.push((key.name.clone(), value)),
                        None => valid = false,
                    }
                }
                valid.then_some(Body::Set(out))
            }
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
                    let suggestion =
                        did_you_mean(&name, self.ids.keys().map(String::as_str)).map(str::to_owned);
                    let mut diagnostic = Diagnostic::error(
                        Code::UnknownStep,
                        item.span,
                        format!("unknown step `{name}` in a branch"),
                    );
                    if let Some(similar) = suggestion {
                        diagnostic = diagnostic.with_label(format!("did you mean `{similar}`?"));
                    }
                    self.push(diagnostic);
                }
            }
        }
        out
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
            let text = match &item.value {
                Value::Str(text) => text.clone(),
                Value::Int(value) => value.to_string(),
                Value::Float(value) => value.to_string(),
                Value::Bool(value) => value.to_string(),
                _ => String::new(),
            };
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

    fn compensate(
        &mut self,
        index: StepIndex,
        node: &Node,
        default_retry: &Retry,
    ) -> Option<Compensation> {
        let Value::Map(entries) = &node.value else {
            self.push(Diagnostic::error(
                Code::BadCompensate,
                node.span,
                format!(
                    "`compensate` must be a mapping with `run` or `http`, found {}",
                    node.value.kind()
                ),
            ));
            return None;
        };
        for (key, _) in entries {
            if ["wait", "set", "condition"].contains(&key.name.as_str()) {
                self.push(
                    Diagnostic::error(
                        Code::BadCompensate,
                        key.span,
                        format!("a compensation cannot be a `{}` step", key.name),
                    )
                    .with_help(
                        "compensate with `run` (a command) or `http` (a call) that undoes the step",
                    ),
                );
                return None;
            }
        }
        let obj = self.object(node, &format::COMPENSATE)?;
        let action = self.action(&obj, Ctx::Compensate(index), "compensate")?;
        let retry = obj
            .get("retry")
            .map(|node| self.retry(node, default_retry, &RetrySpans::default()).0)
            .unwrap_or_else(|| default_retry.clone());
        let timeout = obj.get("timeout").and_then(|node| self.duration(node));
        Some(Compensation { action, retry, timeout })
    }

    /// A `run` or `http` with its `env`/`cwd`, for compensations and notifications.
    fn action(&mut self, obj: &Obj<'_>, ctx: Ctx, what: &str) -> Option<Action> {
        match (obj.get("run"), obj.get("http")) {
            (Some(run), None) => {
                let program = self.program(run, ctx)?;
                let cwd = obj.get("cwd").and_then(|node| self.template(node, ctx));
                let env = obj.get("env").map(|node| self.env(node, ctx)).unwrap_or_default();
                Some(Action::Run(Command { program, cwd, env }))
            }
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

    fn agent(&mut self, node: &Node) -> Vec<String> {
        let Some(obj) = self.object(node, &format::AGENT) else { return Vec::new() };
        let Some(labels) = obj.get("labels") else { return Vec::new() };
        self.list(labels, "`labels`")
            .iter()
            .filter_map(|item| self.id(item, "agent label"))
            .collect()
    }

    // ----- workflow-level sections -----

    fn inputs(&mut self, node: &Node) -> Vec<Input> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, "`inputs`", "a mapping of input names to their declarations");
            return Vec::new();
        };
        self.unique_keys(entries);
        let mut out = Vec::new();
        for (key, spec) in entries {
            if !is_identifier(&key.name, false) || key.name.len() > 63 {
                self.push(
                    Diagnostic::error(Code::BadName, key.span, format!("input name `{}` must match [A-Za-z_][A-Za-z0-9_]*", key.name))
                        .with_help("inputs are read in expressions as `inputs.<name>`, so the name must be an identifier"),
                );
                continue;
            }
            self.inputs.insert(key.name.clone());
            let Some(obj) = self.object(spec, &format::INPUT) else { continue };
            let Some(ty) =
                obj.get("type").and_then(|node| self.word(node, "`type`", format::INPUT_TYPES))
            else {
                continue;
            };
            let ty = match ty {
                "string" => InputType::String,
                "integer" => InputType::Integer,
                "number" => InputType::Number,
                "boolean" => InputType::Boolean,
                "array" => InputType::Array,
                _ => InputType::Object,
            };
            let required = obj
                .get("required")
                .and_then(|node| self.boolean(node, "`required`"))
                .unwrap_or(false);
            let description =
                obj.get("description").and_then(|node| self.text(node, "`description`"));
            let allowed = obj.get("enum").and_then(|node| {
                let items = self.list(node, "`enum`");
                let values: Vec<Json> =
                    items.iter().filter_map(|item| self.typed_json(item, ty, &key.name)).collect();
                (values.len() == items.len() && !values.is_empty()).then_some(values)
            });
            let default = obj.get("default").and_then(|node| {
                let value = self.typed_json(node, ty, &key.name)?;
                if let Some(allowed) = &allowed
                    && !allowed.contains(&value)
                {
                    self.error(
                        Code::InputDefault,
                        node.span,
                        format!("the default of `{}` is not one of its `enum` values", key.name),
                    );
                }
                Some(value)
            });
            if required
                && default.is_some()
                && let Some(key) = obj.key("default")
            {
                self.push(Diagnostic::warning(
                    Code::NoEffect,
                    key.span,
                    "a required input never uses its default",
                ));
            }
            out.push(Input { name: key.name.clone(), ty, required, default, description, allowed });
        }
        out
    }

    /// A literal JSON value that must have the input's type.
    fn typed_json(&mut self, node: &Node, ty: InputType, input: &str) -> Option<Json> {
        let value = self.json(node)?;
        if ty.accepts(&value) {
            Some(value)
        } else if let Some(text) = node.out_of_range_integer()
            && ty == InputType::Integer
        {
            self.push(Diagnostic::error(
                Code::InputDefault,
                node.span,
                format!(
                    "input `{input}` is of type integer, but {text} is out of range ({} to {})",
                    i64::MIN,
                    i64::MAX
                ),
            ));
            None
        } else {
            self.push(Diagnostic::error(
                Code::InputDefault,
                node.span,
                format!(
                    "input `{input}` is of type {}, but this value is {}",
                    ty.name(),
                    node.value.kind()
                ),
            ));
            None
        }
    }

    fn groups(&mut self, node: &Node) -> Vec<Group> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, "`groups`", "a mapping of group names to settings");
            return Vec::new();
        };
        self.unique_keys(entries);
        let mut out = Vec::new();
        for (key, spec) in entries {
            if !is_id(&key.name) {
                self.bad_id(key.span, &key.name, "group name");
                continue;
            }
            let (max_parallel, description) = match &spec.value {
                Value::Null => (None, None),
                _ => match self.object(spec, &format::GROUP) {
                    Some(obj) => (
                        obj.get("max_parallel").and_then(|node| self.count(node, "`max_parallel`")),
                        obj.get("description").and_then(|node| self.text(node, "`description`")),
                    ),
                    None => (None, None),
                },
            };
            self.groups.insert(key.name.clone(), out.len());
            out.push(Group {
                name: key.name.clone(),
                max_parallel,
                description,
                steps: Vec::new(),
            });
        }
        out
    }

    fn escalation(&mut self, node: &Node) -> Escalation {
        let Some(obj) = self.object(node, &format::ESCALATION) else {
            return Escalation::default();
        };
        let notify = obj.get("notify").and_then(|node| {
            let obj = self.object(node, &format::ACTION)?;
            self.action(&obj, Ctx::Notify, "notify")
        });
        let timeout = obj.get("timeout").and_then(|node| self.duration(node));
        let then = obj
            .get("then")
            .and_then(|node| self.word(node, "`then`", format::ESCALATION_THEN))
            .and_then(Decision::parse)
            .unwrap_or_default();
        if obj.get("then").is_some()
            && timeout.is_none()
            && let Some(key) = obj.key("then")
        {
            self.push(Diagnostic::warning(
                Code::NoEffect,
                key.span,
                "`then` only applies when `timeout` is set",
            ));
        }
        Escalation { notify, timeout, then }
    }

    fn env(&mut self, node: &Node, ctx: Ctx) -> Vec<(String, Template)> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, "`env`", "a mapping of variable names to values");
            return Vec::new();
        };
        self.unique_keys(entries);
        let mut out = Vec::new();
        for (key, value) in entries {
            if !is_identifier(&key.name, false) {
                self.error(
                    Code::BadName,
                    key.span,
                    format!(
                        "`{}` is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)",
                        key.name
                    ),
                );
                continue;
            }
            if is_reserved_variable(&key.name) {
                self.push(
                    Diagnostic::error(
                        Code::BadName,
                        key.span,
                        format!("`{}` is set by wayline for every command step", key.name),
                    )
                    .with_help("wayline's own variables start with `WAYLINE_`; pick another name"),
                );
                continue;
            }
            if let Some(template) = self.template(value, ctx) {
                out.push((key.name.clone(), template));
            }
        }
        out
    }

    fn string_map(&mut self, node: &Node, ctx: Ctx, what: &str) -> Vec<(String, Template)> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, what, "a mapping");
            return Vec::new();
        };
        self.unique_keys(entries);
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

    // ----- retry -----

    fn retry(&mut self, node: &Node, base: &Retry, base_spans: &RetrySpans) -> (Retry, RetrySpans) {
        let mut retry = base.clone();
        let mut spans = base_spans.clone();
        let Some(obj) = self.object(node, &format::RETRY) else { return (retry, spans) };
        // A `max_attempts` that is itself wrong says nothing about whether the rest applies.
        let mut attempts_valid = true;
        if let Some(node) = obj.get("max_attempts") {
            attempts_valid = false;
            match node.value {
                Value::Int(value) if value < 1 => self.push(
                    Diagnostic::error(
                        Code::RetryConflict,
                        node.span,
                        format!("`max_attempts: {value}` would never run the step"),
                    )
                    .with_help("`max_attempts` counts every attempt, the first included: 1 means no retry, 3 means up to two retries"),
                ),
                _ => {
                    if let Some(value) = self.integer(node, "`max_attempts`", 1) {
                        retry.max_attempts = value.min(u32::MAX as i64) as u32;
                        spans.max_attempts = Some(node.span);
                        attempts_valid = true;
                    }
                }
            }
        }
        let mut factor = None;
        if let Some(node) = obj.get("factor") {
            match node.value {
                Value::Int(v) => factor = Some((v as f64, node.span)),
                Value::Float(v) if v.is_finite() => factor = Some((v, node.span)),
                _ => self.wrong_type(node, "`factor`", "a number like 2 or 1.5"),
            }
        }
        if let Some(node) = obj.get("backoff")
            && let Some(word) = self.word(node, "`backoff`", format::BACKOFFS)
        {
            retry.backoff = match word {
                "fixed" => Backoff::Fixed,
                "linear" => Backoff::Linear,
                "exponential" => Backoff::Exponential { factor: 2.0 },
                _ => Backoff::Random,
            };
            spans.backoff = Some(node.span);
        }
        if let Some((value, span)) = factor {
            match retry.backoff {
                Backoff::Exponential { .. } if (1.0..=1000.0).contains(&value) => {
                    retry.backoff = Backoff::Exponential { factor: value };
                }
                Backoff::Exponential { .. } => {
                    self.error(
                        Code::RetryConflict,
                        span,
                        format!("`factor` must be between 1 and 1000, not {value}"),
                    );
                }
                other => {
                    self.push(
                        Diagnostic::error(Code::RetryConflict, span, format!("`factor` only applies to `backoff: exponential`, but the backoff is {}", other.name()))
                            .with_help("remove `factor`, or set `backoff: exponential`"),
                    );
                }
            }
        }
        if let Some(node) = obj.get("delay")
            && let Some(value) = self.duration(node)
        {
            retry.delay = value;
            spans.delay = Some(node.span);
        }
        if let Some(node) = obj.get("max_delay")
            && let Some(value) = self.duration(node)
        {
            retry.max_delay = Some(value);
            spans.max_delay = Some(node.span);
        }
        if let Some(node) = obj.get("jitter")
            && let Some(word) = self.word(node, "`jitter`", format::JITTERS)
        {
            retry.jitter = match word {
                "none" => Jitter::None,
                "full" => Jitter::Full,
                _ => Jitter::Equal,
            };
        }
        if let Some(node) = obj.get("budget") {
            retry.budget = self.duration(node);
        }
        if let Some(node) = obj.get("on") {
            let mut on = RetryOn { failure: false, timeout: false, lost: false };
            for item in self.list(node, "`on`") {
                match self.word(item, "an error class", format::ERROR_CLASSES) {
                    Some("failure") => on.failure = true,
                    Some("timeout") => on.timeout = true,
                    Some(_) => on.lost = true,
                    None => {}
                }
            }
            retry.on = on;
            spans.on = Some(node.span);
        }
        // Contradictions, judged on the merged policy.
        // Each contradiction is reported at a field written in this object when there is one:
        // that is the line to change when the other half comes from the workflow's default.
        let own = |name: &str| obj.get(name).map(|node| node.span);
        if retry.backoff == Backoff::Random && retry.max_delay.is_none() {
            let span = own("backoff").or(spans.backoff).unwrap_or(obj.span.start());
            self.push(
                Diagnostic::error(Code::RetryConflict, span, "`backoff: random` needs `max_delay`")
                    .with_help("the pause is drawn between `delay` and `max_delay`; set both"),
            );
        }
        if let Some(max_delay) = retry.max_delay
            && max_delay < retry.delay
        {
            let span =
                own("max_delay").or(own("delay")).or(spans.max_delay).unwrap_or(obj.span.start());
            let help = match (own("max_delay"), spans.max_delay) {
                (None, Some(inherited)) => format!(
                    "`max_delay` comes from the workflow's `retry` (line {}); set a larger `max_delay` here, or a smaller `delay`",
                    inherited.line
                ),
                _ => "`max_delay` caps the pause; make it at least `delay`".to_owned(),
            };
            self.push(
                Diagnostic::error(
                    Code::RetryConflict,
                    span,
                    format!(
                        "`max_delay` ({}) is shorter than `delay` ({})",
                        duration::format(max_delay),
                        duration::format(retry.delay)
                    ),
                )
                .with_help(help),
            );
        }
        let on = retry.on;
        if retry.max_attempts > 1 && !(on.failure || on.timeout || on.lost) {
            let span = own("on").or(own("max_attempts")).or(spans.on).unwrap_or(obj.span.start());
            self.push(
                Diagnostic::error(Code::RetryConflict, span, format!("`on` is empty, so none of the {} attempts after the first can ever run", retry.max_attempts - 1))
                    .with_help("list the error classes to retry (failure, timeout, lost), or set `max_attempts: 1`"),
            );
        }
        if retry.max_attempts == 1 && attempts_valid {
            let tuned = ["backoff", "delay", "factor", "max_delay", "jitter", "budget"]
                .iter()
                .find_map(|field| obj.key(field));
            if let Some(key) = tuned {
                self.push(
                    Diagnostic::warning(
                        Code::NoEffect,
                        key.span,
                        format!("`{}` has no effect with `max_attempts: 1` (no retry)", key.name),
                    )
                    .with_help("set `max_attempts` to the number of attempts, the first included"),
                );
            }
        }
        (retry, spans)
    }

    // ----- expressions -----

    /// An `if` or `condition`: a boolean, one `${{ }}`, or a bare expression.
    fn expression(&mut self, node: &Node, ctx: Ctx) -> Option<Expression> {
        let (source, offset) = match &node.value {
            Value::Bool(value) => return self.expressions.parse(&value.to_string()).ok(),
            Value::Str(text) => {
                let template = match Template::parse_cached(text, &mut self.expressions) {
                    Ok(template) => template,
                    Err(error) => {
                        self.error(
                            Code::ExpressionSyntax,
                            node.offset_span(error.offset, error.len),
                            error.message,
                        );
                        return None;
                    }
                };
                if let Some(literal) = template.as_literal() {
                    (
                        literal.to_owned(),
                        text.find(|c: char| !c.is_whitespace())
                            .map_or(0, |b| text[..b].chars().count()),
                    )
                } else if let Some((expression, offset)) =
                    template.expressions().next().filter(|_| template.as_expression().is_some())
                {
                    self.check(node, expression, offset, ctx);
                    return Some(expression.clone());
                } else {
                    self.push(
                        Diagnostic::error(
                            Code::ExpressionSyntax,
                            node.span,
                            "this must be a single expression, with no text around `${{ }}`",
                        )
                        .with_help("write `${{ a && b }}` rather than `${{ a }} and ${{ b }}`"),
                    );
                    return None;
                }
            }
            _ => {
                self.wrong_type(
                    node,
                    "an expression",
                    "a boolean or an expression like `${{ inputs.enabled }}`",
                );
                return None;
            }
        };
        match self.expressions.parse(source.trim()) {
            Ok(expression) => {
                self.check(node, &expression, offset, ctx);
                Some(expression)
            }
            Err(error) => {
                self.error(
                    Code::ExpressionSyntax,
                    node.offset_span(offset + error.offset, error.len),
                    format!("invalid expression: {}", error.message),
                );
                None
            }
        }
    }

    /// A string that may hold `${{ }}`. Numbers and booleans are accepted as their text.
    fn template(&mut self, node: &Node, ctx: Ctx) -> Option<Template> {
        let text = match &node.value {
            Value::Str(text) => text.clone(),
            Value::Int(value) => value.to_string(),
            Value::Float(value) => value.to_string(),
            Value::Bool(value) => value.to_string(),
            _ => {
                self.wrong_type(node, "this value", "a string");
                return None;
            }
        };
        match Template::parse_cached(&text, &mut self.expressions) {
            Ok(template) => {
                for (expression, offset) in template.expressions() {
                    self.check(node, expression, offset, ctx);
                }
                Some(template)
            }
            Err(error) => {
                self.error(
                    Code::ExpressionSyntax,
                    node.offset_span(error.offset, error.len),
                    format!("invalid expression: {}", error.message),
                );
                None
            }
        }
    }

    fn value_template(&mut self, node: &Node, ctx: Ctx) -> Option<ValueTemplate> {
        Some(match &node.value {
            Value::Str(_) => {
                let template = self.template(node, ctx)?;
                match template.as_literal() {
                    Some(text) => ValueTemplate::Literal(Json::String(text.to_owned())),
                    None => ValueTemplate::Text(template),
                }
            }
            Value::Seq(items) => {
                let items: Vec<Option<ValueTemplate>> =
                    items.iter().map(|item| self.value_template(item, ctx)).collect();
                ValueTemplate::List(items.into_iter().collect::<Option<Vec<_>>>()?)
            }
            Value::Map(entries) => {
                self.unique_keys(entries);
                let values: Vec<Option<ValueTemplate>> =
                    entries.iter().map(|(_, value)| self.value_template(value, ctx)).collect();
                let values = values.into_iter().collect::<Option<Vec<_>>>()?;
                ValueTemplate::Map(
                    entries.iter().map(|(key, _)| key.name.clone()).zip(values).collect(),
                )
            }
            _ => ValueTemplate::Literal(self.json(node)?),
        })
    }

    /// Checks what an expression reads against where it is used.
    fn check(&mut self, node: &Node, expression: &Expression, offset: usize, ctx: Ctx) {
        for unknown in expression.unknown_names() {
            let span = node.offset_span(offset + unknown.offset, unknown.len);
            let diagnostic = if unknown.function {
                let names =
                    FUNCTIONS.iter().copied().chain(["success", "failure", "always", "cancelled"]);
                let mut d = Diagnostic::error(
                    Code::UnknownReference,
                    span,
                    format!("unknown function `{}`", unknown.name),
                );
                // `upper` for `upperAscii`: a prefix is as telling as a typo.
                let lower = unknown.name.to_ascii_lowercase();
                let prefixed = FUNCTIONS.iter().copied().find(|function| {
                    lower.len() >= 3 && function.to_ascii_lowercase().starts_with(&lower)
                });
                d = match did_you_mean(&unknown.name, names).or(prefixed) {
                    Some(similar) => d.with_label(format!("did you mean `{similar}`?")),
                    None => d.with_help(format!(
                        "expressions are CEL; its functions are {}",
                        FUNCTIONS.join(", ")
                    )),
                };
                d
            } else {
                let roots: Vec<&str> = Root::ALL.iter().map(|root| root.name()).collect();
                let mut d = Diagnostic::error(
                    Code::UnknownReference,
                    span,
                    format!("unknown name `{}`", unknown.name),
                );
                d = match did_you_mean(&unknown.name, roots.iter().copied()) {
                    Some(similar) => d.with_label(format!("did you mean `{similar}`?")),
                    None => d.with_help("expressions can read inputs, steps, env, secrets, execution, workflow and attempt"),
                };
                d
            };
            self.push(diagnostic);
        }
        for (function, at) in expression.status_functions() {
            if !matches!(ctx, Ctx::If(_)) {
                let span = node.offset_span(offset + at, function.name().len() + 2);
                let help = match ctx {
                    Ctx::Condition(_) => "give the condition step an `if`, and keep `condition` for the values it decides on".to_owned(),
                    _ => format!("it describes the needs of a step, so use it in `if:`, e.g. `if: ${{{{ {}() }}}}`; a step reads one need's result as `steps.<id>.status`", function.name()),
                };
                self.push(
                    Diagnostic::error(
                        Code::UnknownReference,
                        span,
                        format!("`{}()` only makes sense in a step's `if`", function.name()),
                    )
                    .with_help(help),
                );
            }
        }
        for reference in expression.references() {
            let span = node.offset_span(offset + reference.offset, reference.len);
            self.reference(reference, span, ctx);
        }
    }

    fn reference(&mut self, reference: &Reference, span: Span, ctx: Ctx) {
        let root = reference.root;
        if !ctx.allows(root) {
            let message = match root {
                Root::Env => "the workflow's `env` values cannot read `env`".to_owned(),
                _ => format!("`{}` cannot be read in {}", root.name(), ctx.describe()),
            };
            self.error(Code::UnknownReference, span, message);
            return;
        }
        let first = reference.path.first().map(String::as_str);
        match root {
            Root::Inputs => {
                if let Some(name) = first
                    && !self.inputs.contains(name)
                {
                    let mut d = Diagnostic::error(
                        Code::UnknownReference,
                        span,
                        format!("input `{name}` is not declared"),
                    );
                    d = match did_you_mean(name, self.inputs.iter().map(String::as_str)) {
                        Some(similar) => d.with_label(format!("did you mean `{similar}`?")),
                        None => d.with_help(format!(
                            "declare it under `inputs:`, e.g. `{name}: {{ type: string }}`"
                        )),
                    };
                    self.push(d);
                }
            }
            Root::Env => {
                if let Some(name) = first
                    && !self.env_keys.contains(name)
                {
                    let mut d = Diagnostic::error(
                        Code::UnknownReference,
                        span,
                        format!("`env.{name}` is not declared in the workflow's `env`"),
                    );
                    if let Some(similar) =
                        did_you_mean(name, self.env_keys.iter().map(String::as_str))
                    {
                        d = d.with_label(format!("did you mean `{similar}`?"));
                    }
                    self.push(d);
                }
            }
            Root::Secrets => match first {
                Some(name) if is_identifier(name, false) => {}
                Some(name) => self.error(
                    Code::UnknownReference,
                    span,
                    format!("`{name}` is not a valid secret name ([A-Za-z_][A-Za-z0-9_]*)"),
                ),
                None => self.error(Code::UnknownReference, span, "name the secret: `secrets.NAME`"),
            },
            Root::Execution => self.field(span, "execution", first, &["id", "started_at"]),
            Root::Workflow => self.field(span, "workflow", first, &["name"]),
            Root::Escalation => self.field(span, "escalation", first, &["step", "reason"]),
            Root::Attempt => {
                if first.is_some() {
                    self.error(
                        Code::UnknownReference,
                        span,
                        "`attempt` is a number; it has no fields",
                    );
                }
            }
            Root::Steps => {
                let Some(id) = first else {
                    self.error(
                        Code::UnknownReference,
                        span,
                        "name the step: `steps.<id>.outputs.<key>` or `steps.<id>.status`",
                    );
                    return;
                };
                if !self.ids.contains_key(id) {
                    let mut d =
                        Diagnostic::error(Code::UnknownStep, span, format!("unknown step `{id}`"));
                    if let Some(similar) = did_you_mean(id, self.ids.keys().map(String::as_str)) {
                        d = d.with_label(format!("did you mean `{similar}`?"));
                    }
                    self.push(d);
                    return;
                }
                if let Some(field) = reference.path.get(1)
                    && field != "outputs"
                    && field != "status"
                {
                    let mut d = Diagnostic::error(
                        Code::UnknownReference,
                        span,
                        format!("a step has `outputs` and `status`, not `{field}`"),
                    );
                    if let Some(similar) = did_you_mean(field, ["outputs", "status"]) {
                        d = d.with_label(format!("did you mean `{similar}`?"));
                    }
                    self.push(d);
                    return;
                }
                self.step_refs.push(StepRef { ctx, path: reference.path.clone(), span });
            }
        }
    }

    fn field(&mut self, span: Span, root: &str, field: Option<&str>, fields: &[&str]) {
        if let Some(field) = field
            && !fields.contains(&field)
        {
            let mut d = Diagnostic::error(
                Code::UnknownReference,
                span,
                format!("`{root}` has no field `{field}`"),
            );
            d = match did_you_mean(field, fields.iter().copied()) {
                Some(similar) => d.with_label(format!("did you mean `{similar}`?")),
                None => d.with_help(format!("`{root}` has: {}", fields.join(", "))),
            };
            self.push(d);
        }
    }

    // ----- whole-workflow checks -----

    fn finish(
        &mut self,
        mut workflow: Workflow,
        declared: Vec<Vec<StepIndex>>,
    ) -> Option<Workflow> {
        let count = workflow.steps.len();
        // Effective needs: declared steps, group members, and the condition of every branch.
        let mut needs: Vec<BTreeSet<StepIndex>> = vec![BTreeSet::new(); count];
        for (index, list) in declared.into_iter().enumerate() {
            for need in list {
                if need < count {
                    needs[index].insert(need);
                    continue;
                }
                let group = usize::MAX - need;
                let span = self.need_spans.get(&(index, need)).copied().unwrap_or_default();
                let members = workflow.groups[group].steps.clone();
                if members.is_empty() {
                    self.push(Diagnostic::warning(
                        Code::NoEffect,
                        span,
                        format!(
                            "group `{}` has no steps, so needing it waits for nothing",
                            workflow.groups[group].name
                        ),
                    ));
                }
                for member in members {
                    if member == index {
                        self.push(
                            Diagnostic::error(Code::SelfDependency, span, format!("step `{}` is in group `{}`, so needing the group means needing itself", workflow.steps[index].id, workflow.groups[group].name)),
                        );
                        continue;
                    }
                    self.need_spans.entry((index, member)).or_insert(span);
                    needs[index].insert(member);
                }
            }
        }
        for condition in 0..count {
            if let Body::Condition(Condition { then, otherwise, .. }) =
                &workflow.steps[condition].body
            {
                let branches: Vec<(StepIndex, bool)> = then
                    .iter()
                    .map(|&s| (s, true))
                    .chain(otherwise.iter().map(|&s| (s, false)))
                    .collect();
                for (step, taken) in branches {
                    needs[step].insert(condition);
                    workflow.steps[step].branches.push((condition, taken));
                }
            }
        }
        let needs: Vec<Vec<StepIndex>> =
            needs.into_iter().map(|set| set.into_iter().collect()).collect();
        let cycles = graph::cycles(&needs);
        for cycle in &cycles {
            // Shown in the order things would run: each step before the one that needs it.
            let names: Vec<&str> =
                cycle.iter().rev().map(|&i| workflow.steps[i].id.as_str()).collect();
            let (from, to) = (cycle[0], cycle[1]);
            let span =
                self.need_spans.get(&(from, to)).copied().unwrap_or(workflow.steps[from].span);
            self.push(
                Diagnostic::error(Code::Cycle, span, format!("dependency cycle: {}", names.join(" -> ")))
                    .with_label(format!("`{}` needs `{}` here", workflow.steps[from].id, workflow.steps[to].id))
                    .with_help("a step cannot (even indirectly) need a step that needs it; remove one of these dependencies"),
            );
        }
        if !cycles.is_empty() {
            return None;
        }
        let order = graph::topological_order(&needs)?;
        self.check_step_refs(&workflow, &needs, &order);
        self.check_never_runs(&workflow, &needs, &order);
        for (index, list) in needs.iter().enumerate() {
            workflow.steps[index].needs = list.clone();
        }
        workflow.dependents = graph::dependents(&needs);
        workflow.order = order;
        Some(workflow)
    }

    fn check_step_refs(
        &mut self,
        workflow: &Workflow,
        needs: &[Vec<StepIndex>],
        order: &[StepIndex],
    ) {
        let mut reach = Reachability::new(needs, order);
        for reference in std::mem::take(&mut self.step_refs) {
            let id = &reference.path[0];
            let Some(&target) = workflow.ids.get(id) else { continue };
            let Some(from) = reference.ctx.step() else { continue };
            let own = target == from && matches!(reference.ctx, Ctx::Compensate(_));
            if target == from && !own {
                self.push(
                    Diagnostic::error(Code::NotUpstream, reference.span, format!("step `{id}` reads its own `steps.{id}`"))
                        .with_help("a step's outputs exist only after it finished; read them from a later step"),
                );
                continue;
            }
            if !own && !reach.is_upstream(target, from) {
                let reader = &workflow.steps[from].id;
                self.push(
                    Diagnostic::error(Code::NotUpstream, reference.span, format!("step `{reader}` reads `steps.{id}`, but `{id}` is not upstream of `{reader}`"))
                        .with_help(format!("add `{id}` to the `needs` of `{reader}` (directly or through another step) so its result exists when `{reader}` runs")),
                );
                continue;
            }
            if reference.path.get(1).map(String::as_str) != Some("outputs") {
                continue;
            }
            let Some(key) = reference.path.get(2) else { continue };
            let known: Option<Vec<String>> = match &workflow.steps[target].body {
                Body::Set(entries) => Some(entries.iter().map(|(k, _)| k.clone()).collect()),
                Body::Condition(_) => Some(vec!["result".into()]),
                Body::Wait(_) => Some(Vec::new()),
                Body::Http(_) => Some(
                    ["status", "headers", "body", "url", "redirects"].map(String::from).to_vec(),
                ),
                Body::Run(_) => None,
            };
            if let Some(known) = known
                && !known.contains(key)
            {
                let kind = workflow.steps[target].body.kind();
                let mut d = Diagnostic::error(
                    Code::UnknownReference,
                    reference.span,
                    format!("step `{id}` ({kind}) has no output `{key}`"),
                );
                d = match did_you_mean(key, known.iter().map(String::as_str)) {
                    Some(similar) => d.with_label(format!("did you mean `{similar}`?")),
                    None if known.is_empty() => {
                        d.with_help(format!("a {kind} step has no outputs"))
                    }
                    None => d.with_help(format!("its outputs are: {}", known.join(", "))),
                };
                self.push(d);
            }
        }
    }

    /// A step listed in a branch of a condition can only run if that branch is taken. If,
    /// through steps with the default `if` (which are skipped when a need is skipped), it also
    /// depends on the other branch of the same condition, it can never run.
    fn check_never_runs(
        &mut self,
        workflow: &Workflow,
        needs: &[Vec<StepIndex>],
        order: &[StepIndex],
    ) {
        let mut requires: Vec<BTreeSet<(StepIndex, bool)>> =
            vec![BTreeSet::new(); workflow.steps.len()];
        let mut hopeless = vec![false; workflow.steps.len()];
        for &index in order {
            let step = &workflow.steps[index];
            let mut set: BTreeSet<(StepIndex, bool)> = step.branches.iter().copied().collect();
            if step.default_if() {
                if needs[index].iter().any(|&need| hopeless[need]) {
                    hopeless[index] = true;
                    continue;
                }
                for &need in &needs[index] {
                    set.extend(requires[need].iter().copied());
                }
            }
            let conflict =
                set.iter().find(|(condition, taken)| set.contains(&(*condition, !taken))).copied();
            if let Some((condition, _)) = conflict {
                hopeless[index] = true;
                let both_here = step
                    .branches
                    .iter()
                    .any(|&(c, t)| c == condition && step.branches.contains(&(c, !t)));
                if !both_here {
                    let name = &workflow.steps[condition].id;
                    self.push(
                        Diagnostic::error(Code::NeverRuns, step.span, format!("step `{}` can never run: it needs both the `then` and the `else` branch of condition `{name}`", step.id))
                            .with_help("only one branch of a condition runs; move the step, or give it an `if` such as `${{ always() }}`"),
                    );
                }
            }
            requires[index] = set;
        }
    }

    // ----- scalar readers -----

    fn object<'n>(&mut self, node: &'n Node, def: &'static Object) -> Option<Obj<'n>> {
        let Value::Map(entries) = &node.value else {
            if def.name == format::WORKFLOW.name {
                self.push(
                    Diagnostic::error(
                        Code::WrongType,
                        node.span,
                        format!("a workflow file must be a mapping, found {}", node.value.kind()),
                    )
                    .with_help("start the file with `name:` and `steps:`"),
                );
            } else {
                self.wrong_type(node, &format!("`{}`", def.name), "a mapping");
            }
            return None;
        };
        self.unique_keys(entries);
        for (key, _) in entries {
            if def.field(&key.name).is_none() {
                let mut d = Diagnostic::error(
                    Code::UnknownField,
                    key.span,
                    format!("unknown field `{}` in {}", key.name, def.name),
                );
                d = match did_you_mean(&key.name, def.names()) {
                    Some(similar) => d.with_label(format!("did you mean `{similar}`?")),
                    None => d.with_help(format!(
                        "{} fields: {}",
                        def.name,
                        def.names().collect::<Vec<_>>().join(", ")
                    )),
                };
                self.push(d);
            }
        }
        for field in def.fields.iter().filter(|field| field.required) {
            if !entries.iter().any(|(key, _)| key.name == field.name) {
                self.push(
                    Diagnostic::error(
                        Code::MissingField,
                        node.span.start(),
                        format!("{} is missing `{}`", def.name, field.name),
                    )
                    .with_help(format!(
                        "add `{}:` ({})",
                        field.name,
                        sentence(field.doc)
                    )),
                );
            }
        }
        Some(Obj { entries, span: node.span })
    }

    /// YAML leaves a repeated key to the reader's whim (most keep the last one); wayline
    /// refuses it, in fixed fields and free-form mappings alike.
    fn unique_keys(&mut self, entries: &[(Key, Node)]) {
        // Most mappings have a handful of keys: comparing pairs beats hashing them.
        let first_of = |index: usize| -> Option<Span> {
            let name = &entries[index].0.name;
            entries[..index].iter().find(|(key, _)| key.name == *name).map(|(key, _)| key.span)
        };
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for (index, (key, _)) in entries.iter().enumerate() {
            let first = if entries.len() <= 16 {
                first_of(index)
            } else {
                let first = *seen.entry(key.name.as_str()).or_insert(key.span);
                (first != key.span).then_some(first)
            };
            if let Some(first) = first {
                self.push(
                    Diagnostic::error(
                        Code::DuplicateKey,
                        key.span,
                        format!("`{}` is given twice", key.name),
                    )
                    .with_label(format!("first given on line {}", first.line)),
                );
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, what: &str) -> Vec<&'n Node> {
        match &node.value {
            Value::Seq(items) => items.iter().collect(),
            // A single name is accepted where a list is expected: `needs: build`.
            Value::Str(_) => vec![node],
            _ => {
                self.wrong_type(node, what, "a list");
                Vec::new()
            }
        }
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str) {
        self.error(
            Code::WrongType,
            node.span,
            format!("{what} must be {expected}, found {}", node.value.kind()),
        );
    }

    fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Str(text) => Some(text.clone()),
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    fn id(&mut self, node: &Node, what: &str) -> Option<String> {
        let text = match &node.value {
            Value::Str(text) => text.clone(),
            Value::Int(value) => value.to_string(),
            _ => {
                self.wrong_type(node, &format!("a {what}"), "a string");
                return None;
            }
        };
        if is_id(&text) {
            Some(text)
        } else {
            self.bad_id(node.span, &text, what);
            None
        }
    }

    fn bad_id(&mut self, span: Span, text: &str, what: &str) {
        let fixed: String = text
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
            .take(63)
            .collect();
        let mut d = Diagnostic::error(
            Code::BadName,
            span,
            format!("{what} `{text}` must match {ID_PATTERN}"),
        );
        if is_id(&fixed) {
            d = d.with_help(format!(
                "lower-case letters, digits, `_` and `-`, up to 63 characters: e.g. `{fixed}`"
            ));
        }
        self.push(d);
    }

    fn integer(&mut self, node: &Node, what: &str, min: i64) -> Option<i64> {
        match node.value {
            Value::Int(value) if value >= min => Some(value),
            Value::Int(value) => {
                self.error(
                    Code::InvalidValue,
                    node.span,
                    format!("{what} must be at least {min}, not {value}"),
                );
                None
            }
            _ => {
                self.wrong_type(node, what, "an integer");
                None
            }
        }
    }

    fn count(&mut self, node: &Node, what: &str) -> Option<u32> {
        self.integer(node, what, 1).map(|value| value.min(u32::MAX as i64) as u32)
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(value) => Some(*value),
            Value::Str(text) => {
                // YAML 1.1 read these as booleans; YAML 1.2 (and wayline) reads them as text.
                let meant = match text.to_ascii_lowercase().as_str() {
                    "yes" | "y" | "on" => Some(true),
                    "no" | "n" | "off" => Some(false),
                    _ => None,
                };
                let mut d = Diagnostic::error(
                    Code::WrongType,
                    node.span,
                    format!("{what} must be true or false, found the string `{text}`"),
                );
                if let Some(meant) = meant {
                    d = d.with_help(format!("YAML 1.2 reads `{text}` as text; write `{meant}`"));
                }
                self.push(d);
                None
            }
            _ => {
                self.wrong_type(node, what, "true or false");
                None
            }
        }
    }

    fn duration(&mut self, node: &Node) -> Option<Duration> {
        match &node.value {
            Value::Str(text) => match duration::parse(text) {
                Ok(value) => Some(value),
                Err(message) => {
                    self.error(Code::BadDuration, node.span, message);
                    None
                }
            },
            Value::Int(value) => {
                self.push(
                    Diagnostic::error(
                        Code::BadDuration,
                        node.span,
                        format!("`{value}` has no unit"),
                    )
                    .with_help(format!(
                        "write `{value}s` for seconds, `{value}ms` for milliseconds"
                    )),
                );
                None
            }
            _ => {
                self.error(
                    Code::BadDuration,
                    node.span,
                    format!("a duration must be a string like `30s`, found {}", node.value.kind()),
                );
                None
            }
        }
    }

    fn strategy(&mut self, node: &Node, what: &str) -> Option<Strategy> {
        Some(match self.word(node, what, format::STRATEGIES)? {
            "fail_fast" => Strategy::FailFast,
            "continue" => Strategy::Continue,
            "rollback" => Strategy::Rollback,
            _ => Strategy::Escalate,
        })
    }

    fn word(
        &mut self,
        node: &Node,
        what: &str,
        words: &'static [&'static str],
    ) -> Option<&'static str> {
        let Value::Str(text) = &node.value else {
            self.wrong_type(node, what, &format!("one of {}", words.join(", ")));
            return None;
        };
        if let Some(word) = words.iter().find(|word| *word == text) {
            return Some(word);
        }
        let mut d = Diagnostic::error(
            Code::InvalidValue,
            node.span,
            format!("{what} must be one of {}, not `{text}`", words.join(", ")),
        );
        if let Some(similar) = did_you_mean(text, words.iter().copied()) {
            d = d.with_label(format!("did you mean `{similar}`?"));
        }
        self.push(d);
        None
    }

    fn json(&mut self, node: &Node) -> Option<Json> {
        Some(match &node.value {
            Value::Null => Json::Null,
            Value::Bool(value) => Json::Bool(*value),
            Value::Int(value) => Json::from(*value),
            Value::Float(value) => match serde_json::Number::from_f64(*value) {
                Some(number) => Json::Number(number),
                None => {
                    self.error(
                        Code::InvalidValue,
                        node.span,
                        "NaN and infinity cannot be represented in JSON",
                    );
                    return None;
                }
            },
            Value::Str(text) => Json::String(text.clone()),
            Value::Seq(items) => {
                let items: Vec<Option<Json>> = items.iter().map(|item| self.json(item)).collect();
                Json::Array(items.into_iter().collect::<Option<Vec<_>>>()?)
            }
            Value::Map(entries) => {
                self.unique_keys(entries);
                let values: Vec<Option<Json>> =
                    entries.iter().map(|(_, value)| self.json(value)).collect();
                let values = values.into_iter().collect::<Option<Vec<_>>>()?;
                Json::Object(entries.iter().map(|(key, _)| key.name.clone()).zip(values).collect())
            }
        })
    }
}

/// A field's documentation as part of a sentence: `The name.` becomes `the name`.
fn sentence(doc: &str) -> String {
    let doc = doc.trim_end_matches('.');
    let mut chars = doc.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Where each retry field was written, for messages about contradictions between fields that
/// may come from the workflow default and the step.
#[derive(Debug, Clone, Default)]
struct RetrySpans {
    max_attempts: Option<Span>,
    backoff: Option<Span>,
    delay: Option<Span>,
    max_delay: Option<Span>,
    on: Option<Span>,
}

/// Variables wayline sets for each command attempt; a workflow cannot declare them.
fn is_reserved_variable(name: &str) -> bool {
    matches!(name, "WAYLINE_OUTPUT" | "WAYLINE_ATTEMPT" | "WAYLINE_IDEMPOTENCY_KEY")
        || name
            .strip_prefix(shell::VALUE_VARIABLE)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}
