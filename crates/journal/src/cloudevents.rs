//! Journal events as CloudEvents 1.0 JSON objects (docs/design.md §2.6), with the Serverless
//! Workflow lifecycle type names where one exists and `dev.wayline.*` for the rest.

use serde_json::{Value, json};

use crate::event::{ErrorInfo, Event, EventKind, Outcome};

const SW: &str = "io.serverlessworkflow";
const WL: &str = "dev.wayline";

/// The CloudEvents `type` of a journal event.
pub fn type_of(kind: &EventKind) -> String {
    match kind {
        EventKind::Created { .. } => format!("{WL}.workflow.created.v1"),
        EventKind::Started => format!("{SW}.workflow.started.v1"),
        EventKind::Recovered { .. } => format!("{WL}.workflow.recovered.v1"),
        EventKind::AttemptStarted { compensation: true, .. } => {
            format!("{WL}.task.compensation.started.v1")
        }
        EventKind::AttemptStarted { .. } => format!("{SW}.task.started.v1"),
        EventKind::AttemptRunning { .. } => format!("{WL}.task.running.v1"),
        EventKind::AttemptSucceeded { compensation: true, .. } => {
            format!("{WL}.task.compensation.completed.v1")
        }
        EventKind::AttemptSucceeded { .. } => format!("{SW}.task.completed.v1"),
        EventKind::AttemptFailed { compensation: true, .. } => {
            format!("{WL}.task.compensation.faulted.v1")
        }
        EventKind::AttemptFailed { .. } => format!("{SW}.task.faulted.v1"),
        EventKind::AttemptCancelled { compensation: true, .. } => {
            format!("{WL}.task.compensation.cancelled.v1")
        }
        EventKind::AttemptCancelled { .. } => format!("{SW}.task.cancelled.v1"),
        EventKind::RetryScheduled { .. } => format!("{SW}.task.retried.v1"),
        EventKind::StepSkipped { .. } => format!("{WL}.task.skipped.v1"),
        EventKind::StepEscalated { .. } => format!("{WL}.workflow.escalated.v1"),
        EventKind::Decided { .. } => format!("{WL}.workflow.decided.v1"),
        EventKind::Paused { .. } => format!("{SW}.workflow.suspended.v1"),
        EventKind::Resumed { .. } => format!("{SW}.workflow.resumed.v1"),
        EventKind::Stopping { .. } => format!("{WL}.workflow.stopping.v1"),
        EventKind::RollbackStarted => format!("{WL}.workflow.rollback.started.v1"),
        EventKind::Finished { outcome: Outcome::Succeeded, .. } => {
            format!("{SW}.workflow.completed.v1")
        }
        EventKind::Finished { outcome: Outcome::Cancelled, .. } => {
            format!("{SW}.workflow.cancelled.v1")
        }
        EventKind::Finished { .. } => format!("{SW}.workflow.faulted.v1"),
    }
}

/// An RFC 7807 problem object for an error inside an event.
pub fn problem(error: &ErrorInfo, instance: &str) -> Value {
    let (title, status) = match error.class {
        crate::event::ErrorClass::Failure => ("Step failed", 500),
        crate::event::ErrorClass::Timeout => ("Timed out", 504),
        crate::event::ErrorClass::Lost => ("Attempt lost", 503),
        crate::event::ErrorClass::Fatal => ("Unrecoverable error", 400),
        crate::event::ErrorClass::Expression => ("Expression error", 422),
    };
    json!({
        "type": format!("https://wayline.dev/errors/{}", error.class.name()),
        "title": title,
        "status": status,
        "detail": error.message,
        "instance": instance,
    })
}

/// The CloudEvents 1.0 JSON form of a journal event of execution `execution`.
///
/// ```
/// use wayline_journal::{Event, EventKind, Time, cloudevents};
/// let event = Event { v: wayline_journal::FORMAT, seq: 2, time: Time::from_micros(0), kind: EventKind::Started };
/// let ce = cloudevents::to_json("01abc", &event);
/// assert_eq!(ce["specversion"], "1.0");
/// assert_eq!(ce["type"], "io.serverlessworkflow.workflow.started.v1");
/// assert_eq!(ce["source"], "/executions/01abc");
/// assert_eq!(ce["id"], "2");
/// ```
pub fn to_json(execution: &str, event: &Event) -> Value {
    let source = format!("/executions/{execution}");
    let mut data = serde_json::to_value(&event.kind).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut data {
        map.remove("type");
        if let Some(step) = event.kind.step() {
            map.insert("step".into(), Value::String(step.to_owned()));
        }
        // Errors as RFC 7807 problem objects.
        let instance = match event.kind.step() {
            Some(step) => format!("{source}/steps/{step}"),
            None => source.clone(),
        };
        let error = match &event.kind {
            EventKind::AttemptFailed { error, .. } | EventKind::StepEscalated { error, .. } => {
                Some(error)
            }
            EventKind::Finished { error: Some(error), .. }
            | EventKind::Stopping { error: Some(error), .. } => Some(error),
            _ => None,
        };
        if let Some(error) = error {
            map.insert("error".into(), problem(error, &instance));
        }
        if let EventKind::StepSkipped { cancelled: true, .. } = &event.kind {
            map.insert("status".into(), Value::String("cancelled".into()));
        }
    }
    let mut object = json!({
        "specversion": "1.0",
        "id": event.seq.to_string(),
        "source": source,
        "type": type_of(&event.kind),
        "time": event.time.rfc3339(),
        "datacontenttype": "application/json",
        "data": data,
    });
    if let Some(step) = event.kind.step() {
        object["subject"] = Value::String(step.to_owned());
    }
    object
}
