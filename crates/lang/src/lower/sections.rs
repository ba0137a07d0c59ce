//! The workflow-level sections that steps draw on: `inputs`, `env`, `groups` and
//! `escalation`.

use serde_json::Value as Json;

use crate::diagnostic::{Code, Diagnostic};
use crate::expr::Template;
use crate::format;
use crate::model::*;
use crate::shell;
use crate::yaml::{Node, Value};
use wayline_journal::Decision;

use super::readers::{is_id, is_identifier};
use super::{Ctx, Lower};

impl Lower {
    /// The workflow's `outputs`: a mapping of names to values that may hold `${{ }}`.
    pub(super) fn outputs(&mut self, node: &Node) -> Vec<(String, ValueTemplate)> {
        self.named_values(node, "`outputs`", Ctx::Outputs).unwrap_or_default()
    }

    /// A mapping of output names to values (a `set` body, the workflow's `outputs`); `None`
    /// when a name or a value is wrong (each is reported).
    pub(super) fn named_values(
        &mut self,
        node: &Node,
        what: &str,
        ctx: Ctx,
    ) -> Option<Vec<(String, ValueTemplate)>> {
        let entries = self.mapping(node, what, "a mapping of output names to values")?;
        let mut out = Vec::new();
        let mut valid = true;
        for (key, value) in entries {
            if !is_identifier(&key.name, true) {
                self.error(
                    Code::BadName,
                    key.span,
                    format!("output name `{}` must match [A-Za-z_][A-Za-z0-9_-]*", key.name),
                );
                valid = false;
                continue;
            }
            match self.value_template(value, ctx) {
                Some(value) => out.push((key.name.clone(), value)),
                None => valid = false,
            }
        }
        valid.then_some(out)
    }

    /// The workflow's `inputs`: declared, and readable as `inputs.<name>` everywhere.
    pub(super) fn inputs(&mut self, node: &Node) -> Vec<Input> {
        let inputs = self.declare_inputs(node);
        self.inputs.extend(inputs.iter().map(|input| input.name.clone()));
        inputs
    }

    /// Input declarations (of the workflow, or of a template).
    pub(super) fn declare_inputs(&mut self, node: &Node) -> Vec<Input> {
        let entries = self
            .mapping(node, "`inputs`", "a mapping of input names to their declarations")
            .unwrap_or_default();
        let mut out = Vec::new();
        for (key, spec) in entries {
            if !is_identifier(&key.name, false) || key.name.len() > 63 {
                self.push(
                    Diagnostic::error(Code::BadName, key.span, format!("input name `{}` must match [A-Za-z_][A-Za-z0-9_]*", key.name))
                        .with_help("inputs are read in expressions as `inputs.<name>`, so the name must be an identifier"),
                );
                continue;
            }
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
            if required && default.is_some() {
                self.no_effect(&obj, "default", "a required input never uses its default");
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

    pub(super) fn groups(&mut self, node: &Node) -> Vec<Group> {
        let entries = self
            .mapping(node, "`groups`", "a mapping of group names to settings")
            .unwrap_or_default();
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

    pub(super) fn escalation(&mut self, node: &Node) -> Escalation {
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
        if timeout.is_none() {
            self.no_effect(&obj, "then", "`then` only applies when `timeout` is set");
        }
        Escalation { notify, timeout, then }
    }

    pub(super) fn env(&mut self, node: &Node, ctx: Ctx) -> Vec<(String, Template)> {
        let entries = self
            .mapping(node, "`env`", "a mapping of variable names to values")
            .unwrap_or_default();
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
}

/// Variables wayline sets for each command attempt; a workflow cannot declare them.
fn is_reserved_variable(name: &str) -> bool {
    matches!(name, "WAYLINE_OUTPUT" | "WAYLINE_ATTEMPT" | "WAYLINE_IDEMPOTENCY_KEY")
        || name
            .strip_prefix(shell::VALUE_VARIABLE)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}
