//! What an expression evaluated for an execution can read: its inputs, the steps' statuses
//! and outputs, the workflow `env`, secrets, and what the place of the expression adds (the
//! attempt, the status functions of an `if`, the escalation of a notification).

use std::borrow::Cow;

use serde_json::Value;
use wayline_lang::expr::{EvalError, Expression, Scope, StatusView};
use wayline_lang::model::StepIndex;

use super::Execution;

/// What an expression evaluated for one execution can read.
pub struct View<'a> {
    execution: &'a Execution,
    attempt: Option<u32>,
    status: Option<StatusView>,
    escalation: Option<Value>,
    /// A templated step's body reads `inputs` from its template: these values.
    inputs: Option<Value>,
    /// In an instance of a fan-out step: the item and its position.
    item: Option<(&'a Value, u32)>,
}

impl Execution {
    /// What expressions of `step` can read, for the runtime to render a step body.
    pub fn scope(&self, attempt: Option<u32>) -> View<'_> {
        View { execution: self, attempt, status: None, escalation: None, inputs: None, item: None }
    }

    /// What expressions about `item` of fan-out step `step` can read besides: `item`,
    /// `index`. `None` (or an item the step does not have) reads nothing more.
    fn with_item<'a>(&'a self, mut view: View<'a>, step: StepIndex, item: Option<u32>) -> View<'a> {
        let items = self.steps()[step].items.as_ref();
        view.item = item.and_then(|item| Some((items?.values.get(item as usize)?, item)));
        view
    }

    /// What the body of `step` (its env, cwd and compensation too) can read: for a step that
    /// uses a template, `inputs` are the template's, as `with` gives them (evaluated now,
    /// against the workflow), defaults filled in.
    ///
    /// In an instance of a fan-out step (`item`), `item` and `index` are readable too,
    /// `with` values included.
    pub fn body_scope(
        &self,
        step: StepIndex,
        item: Option<u32>,
        attempt: Option<u32>,
    ) -> Result<View<'_>, EvalError> {
        let mut view = self.with_item(self.scope(attempt), step, item);
        let Some(used) = &self.workflow.steps[step].template else { return Ok(view) };
        let mut inputs = serde_json::Map::new();
        let mut meter = wayline_lang::expr::Meter::default();
        for (name, template) in &used.with {
            let value =
                crate::render::value_with(template, &view, &mut meter).map_err(|error| {
                    EvalError { message: format!("`with.{name}`: {}", error.message) }
                })?;
            inputs.insert(name.clone(), value);
        }
        for input in &used.inputs {
            if !inputs.contains_key(&input.name) {
                inputs.insert(input.name.clone(), input.default.clone().unwrap_or(Value::Null));
            }
        }
        for input in &used.inputs {
            let value = &inputs[&input.name];
            if !value.is_null() && !input.ty.accepts(value) {
                return Err(EvalError {
                    message: format!(
                        "`with.{}` must be of type {} for template `{}`, but it is {value}",
                        input.name,
                        input.ty.name(),
                        used.name
                    ),
                });
            }
        }
        view.inputs = Some(Value::Object(inputs));
        Ok(view)
    }

    /// What `escalation.notify` can read.
    pub fn notify_scope(&self, step: StepIndex) -> View<'_> {
        let reason = self.steps()[step].error.as_ref().map(|e| e.message.clone());
        let escalation =
            serde_json::json!({ "step": self.workflow.steps[step].id, "reason": reason });
        View {
            execution: self,
            attempt: None,
            status: None,
            escalation: Some(escalation),
            inputs: None,
            item: None,
        }
    }

    /// What a step's `if` can read: the status functions answer for its needs; in a fan-out
    /// step, `item` and `index` of the item it decides on.
    pub(super) fn if_scope(
        &self,
        status: StatusView,
        step: StepIndex,
        item: Option<u32>,
    ) -> View<'_> {
        let view = View {
            execution: self,
            attempt: None,
            status: Some(status),
            escalation: None,
            inputs: None,
            item: None,
        };
        self.with_item(view, step, item)
    }
}

impl Scope for View<'_> {
    fn inputs(&self) -> Cow<'_, Value> {
        match &self.inputs {
            Some(inputs) => Cow::Borrowed(inputs),
            None => Cow::Borrowed(self.execution.inputs()),
        }
    }

    fn step(&self, id: &str) -> Option<Value> {
        let index = self.execution.workflow.step(id)?;
        let run = &self.execution.steps()[index];
        let Some(items) = &run.items else {
            return Some(
                serde_json::json!({ "status": run.status().name(), "outputs": run.outputs }),
            );
        };
        // A fan-out step's outputs are its items', in item order (null for an item that did
        // not succeed); `items` tells each item's story.
        let outputs: Vec<Value> = items.runs.iter().map(item_outputs).collect();
        let details: Vec<Value> = items
            .runs
            .iter()
            .zip(&items.values)
            .enumerate()
            .map(|(index, (item, value))| {
                serde_json::json!({
                    "item": value,
                    "index": index,
                    "status": item.status().name(),
                    "outputs": item_outputs(item),
                })
            })
            .collect();
        Some(serde_json::json!({
            "status": run.status().name(),
            "outputs": outputs,
            "items": details,
        }))
    }

    fn env(&self) -> Cow<'_, Value> {
        Cow::Borrowed(&self.execution.transient.env)
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.execution.secrets.get(name).map(str::to_owned)
    }

    fn execution(&self) -> Value {
        let started = self.execution.started_at().unwrap_or(self.execution.created_at());
        serde_json::json!({ "id": self.execution.id(), "started_at": started.rfc3339() })
    }

    fn workflow_name(&self) -> &str {
        &self.execution.workflow.name
    }

    fn attempt(&self) -> Option<u32> {
        self.attempt
    }

    fn status(&self) -> Option<StatusView> {
        self.status
    }

    fn escalation(&self) -> Option<Value> {
        self.escalation.clone()
    }

    fn item(&self) -> Option<(Cow<'_, Value>, u32)> {
        self.item.map(|(value, index)| (Cow::Borrowed(value), index))
    }
}

/// What an item of a fan-out step gives the step's outputs: its own once it succeeded, null
/// otherwise.
pub fn item_outputs(item: &super::StepRun) -> Value {
    match item.state {
        super::StepState::Succeeded => Value::Object(item.outputs.clone()),
        _ => Value::Null,
    }
}

/// Evaluates an expression that must give `true` or `false` (an `if`, a condition).
pub(super) fn evaluate_bool(expression: &Expression, scope: &dyn Scope) -> Result<bool, EvalError> {
    match expression.evaluate(scope)? {
        Value::Bool(value) => Ok(value),
        other => Err(EvalError {
            message: format!("`{}` must be true or false, but it is {other}", expression.source()),
        }),
    }
}
