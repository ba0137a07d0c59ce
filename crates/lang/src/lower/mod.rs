//! Lowering: the YAML tree becomes a validated [`Workflow`], or a list of every problem found.
//!
//! Lowering never stops at the first problem: each field is checked on its own, a bad field is
//! reported and skipped, and checks that need the whole picture (references between steps,
//! cycles, branches that can never run) run at the end on whatever was understood.
//!
//! This file holds the entry point, the state every part shares and the walk over the file's
//! top level; each concern has a file of its own: `steps` (a step's fields), `bodies` (what a
//! step, compensation or notification does), `sections` (inputs, env, groups, escalation),
//! `retry`, `expressions` (what each expression may read), `checks` (what needs the whole
//! graph) and `readers` (mappings, lists and plain values, each with its own diagnostics).

mod bodies;
mod checks;
mod expressions;
mod fan_out;
pub mod imports;
mod readers;
mod retry;
mod sections;
mod steps;
mod templates;

use std::collections::{HashMap, HashSet};

use crate::diagnostic::{Code, Diagnostic, Diagnostics, Span, did_you_mean};
use crate::expr::ExpressionCache;
use crate::format;
use crate::model::*;
use crate::yaml::{self, Node, Value};

use expressions::Ctx;
use readers::{Obj, id_text};
use retry::RetrySpans;

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
    /// The files it imports, as read: a diagnostic whose span has `file: n` is in the
    /// `n`-th (from 1; 0 is the workflow file).
    pub files: Vec<imports::Imported>,
}

impl Loaded {
    /// `diagnostic` rendered with the file it is in: the workflow file (`name`, `text`) or
    /// one of its imports.
    pub fn render(&self, diagnostic: &Diagnostic, name: &str, text: &str) -> String {
        match diagnostic.span.file.checked_sub(1).and_then(|file| self.files.get(file as usize)) {
            Some(file) => diagnostic.render(&imports::shown(name, &file.path), &file.text),
            None => diagnostic.render(name, text),
        }
    }

    /// The imported files' texts by path, as an execution records them to be rebuilt.
    pub fn sources(&self) -> std::collections::BTreeMap<String, String> {
        self.files.iter().map(|file| (file.path.clone(), file.text.clone())).collect()
    }
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
    load_with(
        text,
        &mut imports::no_files("this workflow is not read from a file, so it cannot import one"),
    )
}

/// Parses and validates a workflow file's text, reading the files it imports with `read`
/// (given each import's path, normalised, relative to the workflow file).
pub fn load_with(text: &str, read: imports::Reader<'_>) -> Loaded {
    if text.len() > MAX_FILE_BYTES {
        let diagnostic = Diagnostic::error(
            Code::Limit,
            Span::new(1, 1, 1, 2),
            format!(
                "the file is {} bytes; the limit is {MAX_FILE_BYTES} bytes (1 MiB)",
                text.len()
            ),
        );
        return Loaded { workflow: None, diagnostics: vec![diagnostic], files: Vec::new() };
    }
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(diagnostic) => {
            return Loaded { workflow: None, diagnostics: vec![diagnostic], files: Vec::new() };
        }
    };
    let mut lower = Lower::default();
    lower.read_imports(&root, read);
    let workflow = lower.workflow(&root);
    let failed = lower.diagnostics.has_errors();
    Loaded {
        workflow: if failed { None } else { workflow },
        diagnostics: lower.diagnostics.into_sorted(),
        files: lower.files,
    }
}

/// A reference to a step, checked once the graph is known.
struct StepRef {
    ctx: Ctx,
    path: Vec<String>,
    span: Span,
}

/// A dependency as written. A group's steps are known only once every step has been read, so
/// `checks` expands a group need into them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Step(StepIndex),
    /// Every step of the group; `span` is where it was named, for messages about it.
    Group {
        group: usize,
        span: Span,
    },
}

/// What the first pass learns about each step.
struct Outline {
    id: String,
    span: Span,
}

/// The state of one lowering: the diagnostics so far, and what later checks need to know of
/// what was read before them.
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
    /// `templates:`, by name.
    templates: HashMap<String, templates::Declared>,
    /// While a template's fields are lowered: its name (`inputs` are its inputs).
    in_template: Option<String>,
    /// While a step with `for_each` or `matrix` is lowered: `item` and `index` are known.
    fanning: bool,
    /// The keys its items have, when the file gives the items literally (`item.<key>` is
    /// checked against them).
    item_keys: Option<Vec<String>>,
    /// The imported files, read; their parsed trees until their templates are declared.
    files: Vec<imports::Imported>,
    libraries: Vec<Node>,
    /// The step being lowered.
    using: Option<String>,
}

/// `diagnostic`, labelled "did you mean `…`?" when `name` looks like a typo of one of
/// `candidates`: the fix, under the caret.
fn suggest<'a>(
    diagnostic: Diagnostic,
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Diagnostic {
    match did_you_mean(name, candidates) {
        Some(similar) => diagnostic.with_label(format!("did you mean `{similar}`?")),
        None => diagnostic,
    }
}

impl Lower {
    fn error(&mut self, code: Code, span: Span, message: impl Into<String>) {
        self.push(Diagnostic::error(code, span, message));
    }

    fn push(&mut self, mut diagnostic: Diagnostic) {
        if let (Some(step), 1..) = (&self.using, diagnostic.span.file) {
            let using = format!("found checking step `{step}`, which uses this template");
            diagnostic.help = Some(match diagnostic.help.take() {
                Some(help) => format!("{help} ({using})"),
                None => using,
            });
        }
        self.diagnostics.push(diagnostic);
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str) {
        self.error(
            Code::WrongType,
            node.span,
            format!("{what} must be {expected}, found {}", node.value.kind()),
        );
    }

    /// Warns that `field`, where `obj` has it, does nothing because of the fields around it.
    fn no_effect(&mut self, obj: &Obj<'_>, field: &str, message: &str) {
        if let Some(key) = obj.key(field) {
            self.push(Diagnostic::warning(Code::NoEffect, key.span, message));
        }
    }

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
        if let Some(node) = obj.get("imports") {
            self.import_list(node);
        }
        self.libraries();
        if let Some(node) = obj.get("templates") {
            self.templates(node, false);
        }
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
        let mut declared_needs: Vec<Vec<Need>> = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            // A problem found in an imported template names the step it was checked for.
            self.using = Some(self.outlines[index].id.clone());
            let (step, needs) = self.step(index, item, &retry, on_failure, &groups);
            self.using = None;
            steps.push(step);
            declared_needs.push(needs);
        }
        let outputs = obj.get("outputs").map(|node| self.outputs(node)).unwrap_or_default();
        self.unused_templates();
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
                outputs,
                order: Vec::new(),
                dependents: Vec::new(),
                ids,
            },
            declared_needs,
        )
    }

    /// First pass over the steps: their ids (and ids used twice), so that every later check can
    /// resolve names regardless of the order steps are written in.
    fn outline(&mut self, items: &[Node]) {
        for (index, item) in items.iter().enumerate() {
            let mut outline = Outline { id: String::new(), span: item.span };
            if let Value::Map(entries) = &item.value {
                for (key, node) in entries {
                    // The spellings `id()` accepts, so a step is known by the id it will have.
                    if key.name == "id"
                        && let Some(id) = id_text(&node.value)
                    {
                        outline.id = id;
                        outline.span = node.span;
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
}
