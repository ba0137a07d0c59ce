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
}

impl Execution {
    /// What expressions of `step` can read, for the runtime to render a step body.
    pub fn scope(&self, attempt: Option<u32>) -> View<'_> {
        View { execution: self, attempt, status: None, escalation: None }
    }

    /// What `escalation.notify` can read.
    pub fn notify_scope(&self, step: StepIndex) -> View<'_> {
        let reason = self.steps()[step].error.as_ref().map(|e| e.message.clone());
        let escalation =
            serde_json::json!({ "step": self.workflow.steps[step].id, "reason": reason });
        View { execution: self, attempt: None, status: None, escalation: Some(escalation) }
    }

    /// What a step's `if` can read: the status functions answer for its needs.
    pub(super) fn if_scope(&self, status: StatusView) -> View<'_> {
        View { execution: self, attempt: None, status: Some(status), escalation: None }
    }
}

impl Scope for View<'_> {
    fn inputs(&self) -> Cow<'_, Value> {
        Cow::Borrowed(self.execution.inputs())
    }

    fn step(&self, id: &str) -> Option<Value> {
        let index = self.execution.workflow.step(id)?;
        let run = &self.execution.steps()[index];
        Some(serde_json::json!({ "status": run.status().name(), "outputs": run.outputs }))
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
