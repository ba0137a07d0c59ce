//! Expressions and `${{ }}` templates: parsed once, then checked against where they are
//! evaluated (what each place may read, which names and fields exist).

use serde_json::Value as Json;

use crate::diagnostic::{Code, Diagnostic, Span, did_you_mean};
use crate::expr::{Expression, FUNCTIONS, Reference, Root, StatusFn, Template};
use crate::model::*;
use crate::yaml::{Node, Value};

use super::readers::{is_identifier, scalar_text};
use super::{Lower, StepRef, suggest};

/// Where an expression is evaluated, which decides what it may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ctx {
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
    /// The workflow's `outputs`: read any step, once every step finished.
    Outputs,
    /// A fan-out step's `for_each` or `matrix`: evaluated before any item exists.
    ForEach(StepIndex),
}

impl Ctx {
    pub(super) fn step(self) -> Option<StepIndex> {
        match self {
            Ctx::Body(step)
            | Ctx::If(step)
            | Ctx::Condition(step)
            | Ctx::Compensate(step)
            | Ctx::ForEach(step) => Some(step),
            Ctx::WorkflowEnv | Ctx::Notify | Ctx::Outputs => None,
        }
    }

    fn allows(self, root: Root) -> bool {
        match root {
            Root::Inputs | Root::Secrets | Root::Execution | Root::Workflow => true,
            Root::Env => self != Ctx::WorkflowEnv,
            Root::Steps => self.step().is_some() || self == Ctx::Outputs,
            Root::Attempt => matches!(self, Ctx::Body(_) | Ctx::Compensate(_)),
            Root::Escalation => self == Ctx::Notify,
            Root::Item | Root::Index => {
                matches!(self, Ctx::Body(_) | Ctx::If(_) | Ctx::Condition(_) | Ctx::Compensate(_))
            }
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
            Ctx::Outputs => "the workflow's `outputs`",
            Ctx::ForEach(_) => "`for_each` or `matrix` (the items do not exist yet)",
        }
    }
}

impl Lower {
    /// An `if` or `condition`: a boolean, one `${{ }}`, or a bare expression.
    pub(super) fn expression(&mut self, node: &Node, ctx: Ctx) -> Option<Expression> {
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
    pub(super) fn template(&mut self, node: &Node, ctx: Ctx) -> Option<Template> {
        let Some(text) = scalar_text(&node.value) else {
            self.wrong_type(node, "this value", "a string");
            return None;
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

    pub(super) fn value_template(&mut self, node: &Node, ctx: Ctx) -> Option<ValueTemplate> {
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
                let names = FUNCTIONS.iter().copied().chain(StatusFn::ALL.map(StatusFn::name));
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
                    None => d.with_help("expressions can read inputs, steps, env, secrets, execution, workflow and attempt (and item and index in a fan-out step)"),
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
        if matches!(root, Root::Item | Root::Index) && ctx.allows(root) && !self.fanning {
            let d = Diagnostic::error(
                Code::UnknownReference,
                span,
                format!("`{}` is only known in a step with `for_each` or `matrix`", root.name()),
            );
            self.push(d.with_help(
                "give this step `for_each: [...]` to run it once per item, or read a value from `inputs` or `steps`",
            ));
            return;
        }
        if matches!(root, Root::Item | Root::Index)
            && self.in_template.is_some()
            && ctx.allows(root)
        {
            let template = self.in_template.clone().unwrap_or_default();
            let d = Diagnostic::error(
                Code::UnknownReference,
                span,
                format!("template `{template}` reads its own inputs, not `{}`", root.name()),
            );
            self.push(d.with_help(format!(
                "declare an input and pass the item to it from the step: `with: {{ x: \"${{{{ {} }}}}\" }}`",
                root.name()
            )));
            return;
        }
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
                    let message = match &self.in_template {
                        Some(template) => format!("template `{template}` has no input `{name}`"),
                        None => format!("input `{name}` is not declared"),
                    };
                    let mut d = Diagnostic::error(Code::UnknownReference, span, message);
                    d = match (did_you_mean(name, self.inputs.iter().map(String::as_str)), &self.in_template) {
                        (Some(similar), _) => d.with_label(format!("did you mean `{similar}`?")),
                        (None, Some(template)) => d.with_help(format!(
                            "a template reads its own inputs: declare `{name}` under the `inputs:` of template `{template}` and give it with `with:` (the workflow's input as `${{{{ inputs.{name} }}}}`)"
                        )),
                        (None, None) => d.with_help(format!(
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
                    let d = Diagnostic::error(
                        Code::UnknownReference,
                        span,
                        format!("`env.{name}` is not declared in the workflow's `env`"),
                    );
                    let d = suggest(d, name, self.env_keys.iter().map(String::as_str));
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
            Root::Index => {
                if first.is_some() {
                    self.error(
                        Code::UnknownReference,
                        span,
                        "`index` is the item's position (a number); it has no fields",
                    );
                }
            }
            // An item is any value; its keys are known when the file lists the items.
            Root::Item => {
                if let (Some(name), Some(keys)) = (first, &self.item_keys)
                    && !keys.iter().any(|key| key == name)
                {
                    let d = Diagnostic::error(
                        Code::UnknownReference,
                        span,
                        format!("no item of this step has `{name}`"),
                    );
                    let d = match did_you_mean(name, keys.iter().map(String::as_str)) {
                        Some(similar) => d.with_label(format!("did you mean `{similar}`?")),
                        None => d.with_help(format!("its items have {}", keys.join(", "))),
                    };
                    self.push(d);
                }
            }
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
                    let d =
                        Diagnostic::error(Code::UnknownStep, span, format!("unknown step `{id}`"));
                    let d = suggest(d, id, self.ids.keys().map(String::as_str));
                    self.push(d);
                    return;
                }
                if let Some(field) = reference.path.get(1)
                    && !matches!(field.as_str(), "outputs" | "status" | "items")
                {
                    let d = Diagnostic::error(
                        Code::UnknownReference,
                        span,
                        format!(
                            "a step has `outputs` and `status` (and `items` with `for_each`), not `{field}`"
                        ),
                    );
                    self.push(suggest(d, field, ["outputs", "status", "items"]));
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
}
