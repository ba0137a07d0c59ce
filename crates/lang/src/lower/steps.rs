//! A step's own fields: its id, `needs`, `if`, group, retry, failure handling, compensation
//! and agent, around the one body that `bodies` reads.

use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::format;
use crate::model::*;
use crate::yaml::{Key, Node, Value};

use super::{Ctx, Lower, Need, RetrySpans, suggest};

impl Lower {
    pub(super) fn step(
        &mut self,
        index: StepIndex,
        node: &Node,
        default_retry: &(Retry, RetrySpans),
        default_strategy: Strategy,
        groups: &[Group],
    ) -> (Option<Step>, Vec<Need>) {
        let Some(own) = self.object(node, &format::STEP) else { return (None, Vec::new()) };
        let id = own.get("id").and_then(|node| self.id(node, "step id"));
        let name = own.get("name").and_then(|node| self.text(node, "`name`"));
        let description = own.get("description").and_then(|node| self.text(node, "`description`"));
        let display = id.clone().unwrap_or_else(|| format!("#{}", index + 1));

        let needs = own.get("needs").map(|node| self.needs(index, node)).unwrap_or_default();
        // `item` and `index` are known in every field of a fan-out step but its items' source.
        self.fanning = own.get("for_each").is_some() || own.get("matrix").is_some();
        self.item_keys = super::fan_out::item_keys(&own);
        let when = own.get("if").and_then(|node| self.expression(node, Ctx::If(index)));
        // A step that uses a template has the template's fields it does not set itself; they
        // read `inputs` from the template's inputs.
        let used = self.template_use(index, &own, &display);
        let merged: Vec<(Key, Node)> = match &used {
            Some(used) => own.entries.iter().cloned().chain(used.lent.iter().cloned()).collect(),
            None => Vec::new(),
        };
        let obj = match &used {
            Some(_) => super::readers::Obj { entries: &merged, span: own.span },
            None => super::readers::Obj { entries: own.entries, span: own.span },
        };
        let workflow_inputs = match &used {
            Some(used) => {
                self.in_template = Some(used.template.name.clone());
                Some(std::mem::replace(&mut self.inputs, used.names.clone()))
            }
            None => None,
        };

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
            // A template it could not use was reported as such.
            [] if own.get("uses").is_some() => None,
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
        // Fields that belong to one body only.
        for (field, kind) in
            [("then", "condition"), ("else", "condition"), ("env", "run"), ("cwd", "run")]
        {
            if let Some(key) = obj.key(field)
                && !is(kind)
            {
                self.error(
                    Code::InvalidValue,
                    key.span,
                    format!("`{field}` only applies to a `{kind}` step"),
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
        // Where the step's own fields were written matters only inside `retry()`.
        let retry = match obj.get("retry") {
            Some(node) => self.retry(node, &default_retry.0, &default_retry.1).0,
            None => default_retry.0.clone(),
        };
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
        let (timeout, timeout_expression) = match obj.get("timeout") {
            Some(node) if matches!(&node.value, Value::Str(text) if text.contains("${{")) => {
                (None, self.value_template(node, Ctx::Body(index)))
            }
            Some(node) => (self.duration(node), None),
            None => (None, None),
        };
        let on_failure = obj
            .get("on_failure")
            .and_then(|node| self.strategy(node, "`on_failure`"))
            .unwrap_or(default_strategy);
        let allow_failure = obj
            .get("allow_failure")
            .and_then(|node| self.boolean(node, "`allow_failure`"))
            .unwrap_or(false);
        if allow_failure && on_failure != Strategy::Continue {
            self.no_effect(
                &obj,
                "allow_failure",
                "`allow_failure` has no effect unless the step's `on_failure` is `continue`",
            );
        }
        let compensate =
            obj.get("compensate").and_then(|node| self.compensate(index, node, &default_retry.0));
        if let Some(inputs) = workflow_inputs {
            self.inputs = inputs;
            self.in_template = None;
        }
        let agent_labels = obj.get("agent").map(|node| self.agent(node)).unwrap_or_default();
        let fan_out = self.fan_out(index, &obj);
        self.fanning = false;
        self.item_keys = None;
        if let (Some(fan_out), Some(Body::Condition(_))) = (&fan_out, &body) {
            // Its branches would be taken once per item, each item choosing differently.
            self.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    fan_out.span,
                    "a condition step cannot fan out: its `then` and `else` are taken once",
                )
                .with_help("fan out the steps of the branch instead, or compute a list with `set`"),
            );
        }

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
                timeout_expression,
                on_failure,
                allow_failure,
                compensate,
                agent_labels,
                template: used.map(|used| used.template),
                fan_out,
                branches: Vec::new(),
                span: self.outlines[index].span,
            }),
            _ => None,
        };
        (step, needs)
    }

    fn needs(&mut self, index: StepIndex, node: &Node) -> Vec<Need> {
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
                out.push(Need::Step(need));
            } else if let Some(&group) = self.groups.get(&name) {
                // Named twice, a group counts once, and is reported where it was named first.
                let named = out
                    .iter()
                    .any(|need| matches!(need, Need::Group { group: g, .. } if *g == group));
                if !named {
                    out.push(Need::Group { group, span: item.span });
                }
            } else {
                let diagnostic = Diagnostic::error(
                    Code::UnknownStep,
                    item.span,
                    format!("`needs` names `{name}`, which is neither a step nor a group"),
                );
                let candidates = self.ids.keys().chain(self.groups.keys()).map(String::as_str);
                let diagnostic = suggest(diagnostic, &name, candidates);
                self.push(diagnostic);
            }
        }
        out
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

    fn agent(&mut self, node: &Node) -> Vec<String> {
        let Some(obj) = self.object(node, &format::AGENT) else { return Vec::new() };
        let Some(labels) = obj.get("labels") else { return Vec::new() };
        self.list(labels, "`labels`")
            .iter()
            .filter_map(|item| self.id(item, "agent label"))
            .collect()
    }
}
