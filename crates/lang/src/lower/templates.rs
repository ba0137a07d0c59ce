//! Reusable step templates: `templates:` declares them (a body, typed inputs, defaults), and a
//! step `uses` one `with` values for its inputs. The template's fields are lowered as part of
//! each step that uses it, so every check — what its expressions read, whether the steps they
//! read are upstream — is made for that step; its expressions read `inputs` from the
//! template's own inputs.

use std::collections::HashSet;

use crate::diagnostic::{Code, Diagnostic};
use crate::format;
use crate::model::*;
use crate::yaml::{Key, Node};

use super::expressions::Ctx;
use super::readers::{Obj, is_identifier};
use super::{Lower, suggest};

/// A template as declared: its entries are lowered with each step that uses it.
#[derive(Debug, Clone)]
pub(super) struct Declared {
    pub(super) entries: Vec<(Key, Node)>,
    pub(super) inputs: Vec<Input>,
    pub(super) used: bool,
    pub(super) key: Key,
    /// Declared in an imported file: a file of templates offers more than one workflow uses.
    pub(super) imported: bool,
}

/// A step's use of a template, checked: the fields the template lends, and the inputs.
pub(super) struct Use {
    pub(super) lent: Vec<(Key, Node)>,
    pub(super) template: TemplateUse,
    /// The names `inputs.<name>` resolves to inside the template.
    pub(super) names: HashSet<String>,
}

impl Lower {
    /// `templates:` of the workflow or of an imported file, read before the steps.
    pub(super) fn templates(&mut self, node: &Node, imported: bool) {
        let entries = self
            .mapping(node, "`templates`", "a mapping of template names to templates")
            .unwrap_or_default();
        for (key, spec) in entries {
            if !is_identifier(&key.name, true) {
                self.error(
                    Code::BadName,
                    key.span,
                    format!("template name `{}` must match [A-Za-z_][A-Za-z0-9_-]*", key.name),
                );
                continue;
            }
            let Some(obj) = self.object(spec, &format::TEMPLATE) else { continue };
            let bodies: Vec<&Key> =
                ["run", "http", "wait", "set"].iter().filter_map(|body| obj.key(body)).collect();
            if bodies.len() != 1 {
                self.push(
                    Diagnostic::error(
                        Code::MissingBody,
                        key.span,
                        format!("template `{}` must do exactly one thing", key.name),
                    )
                    .with_help("give it one of `run`, `http`, `wait` or `set`"),
                );
                continue;
            }
            if let Some(first) = self.templates.get(&key.name) {
                let message = format!(
                    "template `{}` is defined twice: first at {}",
                    key.name,
                    self.place(first.key.span)
                );
                let d = Diagnostic::error(Code::DuplicateId, key.span, message);
                self.push(d.with_help("rename one of them; a step names the one it uses"));
                continue;
            }
            let inputs =
                obj.get("inputs").map(|node| self.declare_inputs(node)).unwrap_or_default();
            let entries = obj.entries.to_vec();
            self.templates.insert(
                key.name.clone(),
                Declared { entries, inputs, used: false, key: key.clone(), imported },
            );
        }
    }

    /// A step's `uses` (and `with`): the template's fields it has not set itself, and its
    /// inputs checked against what `with` gives.
    pub(super) fn template_use(
        &mut self,
        index: StepIndex,
        obj: &Obj<'_>,
        display: &str,
    ) -> Option<Use> {
        let uses = obj.get("uses")?;
        let name = self.id(uses, "template name")?;
        let Some(declared) = self.templates.get_mut(&name) else {
            let d = Diagnostic::error(
                Code::UnknownReference,
                uses.span,
                format!("unknown template `{name}`"),
            );
            let names: Vec<String> = self.templates.keys().cloned().collect();
            let d = suggest(d, &name, names.iter().map(String::as_str));
            let d = if names.is_empty() {
                d.with_help("declare it under `templates:` at the top of the file")
            } else {
                d
            };
            self.push(d);
            return None;
        };
        declared.used = true;
        let declared = declared.clone();
        // The body is the template's; env, cwd and the compensation read the template's
        // inputs, so they come from it too.
        for field in ["run", "http", "wait", "condition", "set", "env", "cwd", "compensate"] {
            if let Some(key) = obj.key(field) {
                self.push(
                    Diagnostic::error(
                        Code::MultipleBodies,
                        key.span,
                        format!("step `{display}` uses template `{name}`, so it has no `{field}` of its own"),
                    )
                    .with_help(format!("set `{field}` in template `{name}`, and pass the values it needs through `with`")),
                );
            }
        }
        let lent = declared
            .entries
            .iter()
            .filter(|(key, _)| format::TEMPLATE_LENDS.contains(&key.name.as_str()))
            .filter(|(key, _)| obj.get(&key.name).is_none())
            .cloned()
            .collect();
        let with = self.with(index, obj.get("with"), &declared, &name, display);
        let names = declared.inputs.iter().map(|input| input.name.clone()).collect();
        Some(Use { lent, template: TemplateUse { name, inputs: declared.inputs, with }, names })
    }

    /// `with:`: a value for each input the template declares and none other; literal values
    /// have the input's type; the required ones are there.
    fn with(
        &mut self,
        index: StepIndex,
        node: Option<&Node>,
        declared: &Declared,
        name: &str,
        display: &str,
    ) -> Vec<(String, ValueTemplate)> {
        let entries = match node {
            Some(node) => self
                .mapping(node, "`with`", "a mapping of the template's input names to values")
                .unwrap_or_default(),
            None => &[],
        };
        let mut out = Vec::new();
        for (key, value) in entries {
            let Some(input) = declared.inputs.iter().find(|input| input.name == key.name) else {
                let d = Diagnostic::error(
                    Code::UnknownReference,
                    key.span,
                    format!("template `{name}` has no input `{}`", key.name),
                );
                let names: Vec<&str> = declared.inputs.iter().map(|i| i.name.as_str()).collect();
                let d = suggest(d, &key.name, names.iter().copied());
                let d = if names.is_empty() {
                    d.with_help(format!("template `{name}` declares no inputs"))
                } else {
                    d.with_help(format!("its inputs: {}", names.join(", ")))
                };
                self.push(d);
                continue;
            };
            let Some(template) = self.value_template(value, Ctx::Body(index)) else { continue };
            if let ValueTemplate::Literal(literal) = &template
                && !input.ty.accepts(literal)
            {
                self.error(
                    Code::WrongType,
                    value.span,
                    format!(
                        "input `{}` of template `{name}` must be of type {}, found {}",
                        input.name,
                        input.ty.name(),
                        value.value.kind()
                    ),
                );
                continue;
            }
            out.push((key.name.clone(), template));
        }
        let span = node.map_or(declared.key.span, |node| node.span);
        for input in &declared.inputs {
            let given = entries.iter().any(|(key, _)| key.name == input.name);
            if input.required && !given {
                self.push(
                    Diagnostic::error(
                        Code::MissingField,
                        span,
                        format!("step `{display}` does not give template `{name}` its required input `{}`", input.name),
                    )
                    .with_help(format!("add `with: {{ {}: … }}`", input.name)),
                );
            }
        }
        out
    }

    /// Templates nobody uses: their fields were never checked, and they do nothing.
    pub(super) fn unused_templates(&mut self) {
        let unused: Vec<Key> = self
            .templates
            .values()
            .filter(|t| !t.used && !t.imported)
            .map(|t| t.key.clone())
            .collect();
        for key in unused {
            self.push(
                Diagnostic::warning(
                    Code::NoEffect,
                    key.span,
                    format!("template `{}` is never used", key.name),
                )
                .with_help("a step uses it with `uses:`; its fields are checked where it is used"),
            );
        }
    }
}
