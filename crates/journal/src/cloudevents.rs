//! Journal events as CloudEvents 1.0 JSON objects (docs/design.md §2.6), with the Serverless
//! Workflow lifecycle type names where one exists and `dev.wayline.*` for the rest.

use serde_json::{Value, json};

use crate::event::{ErrorInfo, Event, EventKind, Outcome};

const SW: &str = "io.serverlessworkflow";
const WL: &str = "dev.wayline";
/// Where the `type` URLs of the problem objects of errors start; the error class ends them.
const ERROR_TYPES: &str = "https://wayline.dev/errors/";

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
        EventKind::FannedOut { .. } => format!("{WL}.task.fanned_out.v1"),
        EventKind::StepEscalated { .. } => format!("{WL}.workflow.escalated.v1"),
        EventKind::Decided { .. } => format!("{WL}.workflow.decided.v1"),
        EventKind::Paused { .. } => format!("{SW}.workflow.suspended.v1"),
        EventKind::Resumed { .. } => format!("{SW}.workflow.resumed.v1"),
        EventKind::Stopping { .. } => format!("{WL}.workflow.stopping.v1"),
        EventKind::RollbackStarted => format!("{WL}.workflow.rollback.started.v1"),
        EventKind::Redriven { .. } => format!("{WL}.workflow.redriven.v1"),
        EventKind::BreakpointsSet { .. } => format!("{WL}.workflow.breakpoints.set.v1"),
        EventKind::BreakpointHit { .. } => format!("{WL}.workflow.breakpoint.hit.v1"),
        EventKind::Stepped { .. } => format!("{WL}.workflow.stepped.v1"),
        EventKind::Patched { .. } => format!("{WL}.workflow.patched.v1"),
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
        "type": format!("{ERROR_TYPES}{}", error.class.name()),
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
    if let Some(subject) = event.kind.subject() {
        object["subject"] = Value::String(subject);
    }
    object
}

/// Reads back an event written by [`to_json`]: the execution id and the journal event, exactly
/// as they were (a client of the API rebuilds an execution's state from its stream with this,
/// the same way the engine folds its journal). Refuses what [`to_json`] does not write, with
/// the reason.
pub fn from_json(object: &Value) -> Result<(String, Event), String> {
    let text = |name: &str| {
        object.get(name).and_then(Value::as_str).ok_or_else(|| format!("no `{name}` string"))
    };
    let execution = text("source")?
        .strip_prefix("/executions/")
        .ok_or("`source` is not /executions/ID")?
        .to_owned();
    let seq = text("id")?.parse::<u64>().map_err(|_| "`id` is not a sequence number")?;
    let time = crate::Time::parse(text("time")?)?;
    let kind = text("type")?;
    let tag = tag_of(kind).ok_or_else(|| format!("unknown event type `{kind}`"))?;
    let Some(Value::Object(data)) = object.get("data") else {
        return Err("no `data` object".into());
    };
    let mut data = data.clone();
    if let Some(error) = data.get("error").filter(|error| !error.is_null()) {
        data.insert("error".into(), error_of(error)?);
    }
    if tag == "step_skipped" {
        data.remove("status");
    }
    data.insert("type".into(), Value::String(tag.into()));
    let kind: EventKind = serde_json::from_value(Value::Object(data))
        .map_err(|error| format!("`data` does not fit `{kind}`: {error}"))?;
    Ok((execution, Event::new(seq, time, kind)))
}

/// The journal's name for the event kind behind a CloudEvents `type`.
fn tag_of(kind: &str) -> Option<&'static str> {
    let (family, name) = if let Some(name) = kind.strip_prefix(SW) {
        (SW, name)
    } else {
        (WL, kind.strip_prefix(WL)?)
    };
    Some(match (family, name) {
        (WL, ".workflow.created.v1") => "created",
        (SW, ".workflow.started.v1") => "started",
        (WL, ".workflow.recovered.v1") => "recovered",
        (SW, ".task.started.v1") | (WL, ".task.compensation.started.v1") => "attempt_started",
        (WL, ".task.running.v1") => "attempt_running",
        (SW, ".task.completed.v1") | (WL, ".task.compensation.completed.v1") => "attempt_succeeded",
        (SW, ".task.faulted.v1") | (WL, ".task.compensation.faulted.v1") => "attempt_failed",
        (SW, ".task.cancelled.v1") | (WL, ".task.compensation.cancelled.v1") => "attempt_cancelled",
        (SW, ".task.retried.v1") => "retry_scheduled",
        (WL, ".task.skipped.v1") => "step_skipped",
        (WL, ".task.fanned_out.v1") => "fanned_out",
        (WL, ".workflow.escalated.v1") => "step_escalated",
        (WL, ".workflow.decided.v1") => "decided",
        (SW, ".workflow.suspended.v1") => "paused",
        (SW, ".workflow.resumed.v1") => "resumed",
        (WL, ".workflow.stopping.v1") => "stopping",
        (WL, ".workflow.rollback.started.v1") => "rollback_started",
        (WL, ".workflow.redriven.v1") => "redriven",
        (WL, ".workflow.breakpoints.set.v1") => "breakpoints_set",
        (WL, ".workflow.breakpoint.hit.v1") => "breakpoint_hit",
        (WL, ".workflow.stepped.v1") => "stepped",
        (WL, ".workflow.patched.v1") => "patched",
        (SW, ".workflow.completed.v1" | ".workflow.cancelled.v1" | ".workflow.faulted.v1") => {
            "finished"
        }
        _ => return None,
    })
}

/// The journal's error behind a problem object written by [`problem`].
fn error_of(problem: &Value) -> Result<Value, String> {
    let class = problem
        .get("type")
        .and_then(Value::as_str)
        .and_then(|url| url.strip_prefix(ERROR_TYPES))
        .ok_or("an `error` without a wayline error type")?;
    let message = problem.get("detail").and_then(Value::as_str).unwrap_or_default();
    Ok(json!({ "class": class, "message": message }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, ErrorClass, Process, StopReason};
    use crate::{Decision, Time};

    fn every_kind() -> Vec<EventKind> {
        let error = ErrorInfo::new(ErrorClass::Timeout, "ran past 5s");
        let actor = Actor { by: "ops".into(), reason: Some("window".into()) };
        let mut outputs = serde_json::Map::new();
        outputs.insert("version".into(), json!("1.2"));
        let mut kinds = vec![
            EventKind::Created {
                workflow: "deploy".into(),
                source: "version: 1\n".into(),
                path: "deploy.yaml".into(),
                inputs: outputs.clone(),
                imports: [("lib/common.yaml".to_owned(), "templates: {}\n".to_owned())].into(),
            },
            EventKind::Started,
            EventKind::Recovered { owner: "host:1".into() },
            EventKind::StepSkipped {
                step: "a".into(),
                item: None,
                reason: "need failed".into(),
                cancelled: true,
            },
            EventKind::FannedOut { step: "deploy".into(), items: vec![json!("eu"), json!("us")] },
            EventKind::StepSkipped {
                step: "deploy".into(),
                item: Some(1),
                reason: "`if: item != \"us\"` is false".into(),
                cancelled: false,
            },
            EventKind::StepSkipped {
                step: "a".into(),
                item: None,
                reason: "if false".into(),
                cancelled: false,
            },
            EventKind::StepEscalated { step: "a".into(), error: error.clone() },
            EventKind::Decided {
                step: "a".into(),
                decision: Decision::Skip,
                outputs: outputs.clone(),
                actor: actor.clone(),
            },
            EventKind::Paused { actor: actor.clone(), until: Some(Time::from_micros(7)) },
            EventKind::Resumed { actor: actor.clone() },
            EventKind::Stopping {
                reason: StopReason::Cancelled,
                rollback: true,
                actor: Some(actor.clone()),
                error: Some(error.clone()),
            },
            EventKind::RollbackStarted,
            EventKind::Redriven {
                actor: actor.clone(),
                steps: vec!["a".into(), "b".into()],
                inputs: outputs.clone(),
                kept_items: vec!["b".into()],
            },
            EventKind::Redriven {
                actor: actor.clone(),
                steps: vec!["a".into()],
                inputs: Default::default(),
                kept_items: Vec::new(),
            },
            EventKind::BreakpointsSet {
                steps: vec!["a".into()],
                every: false,
                actor: actor.clone(),
            },
            EventKind::BreakpointsSet { steps: vec![], every: true, actor: actor.clone() },
            EventKind::BreakpointHit { steps: vec!["a".into(), "b".into()] },
            EventKind::Stepped { actor: actor.clone() },
            EventKind::Patched {
                step: Some("a".into()),
                outputs: outputs.clone(),
                inputs: Default::default(),
                actor: actor.clone(),
            },
            EventKind::Patched {
                step: None,
                outputs: Default::default(),
                inputs: outputs.clone(),
                actor: actor.clone(),
            },
            EventKind::Finished {
                outcome: Outcome::Succeeded,
                error: None,
                outputs: outputs.clone(),
            },
            EventKind::Finished {
                outcome: Outcome::Cancelled,
                error: None,
                outputs: Default::default(),
            },
            EventKind::Finished {
                outcome: Outcome::Failed,
                error: Some(error.clone()),
                outputs: Default::default(),
            },
            EventKind::Finished {
                outcome: Outcome::RolledBack,
                error: Some(error.clone()),
                outputs: Default::default(),
            },
        ];
        for (compensation, item) in [(false, None), (true, None), (false, Some(3)), (true, Some(3))]
        {
            let step = String::from("b");
            kinds.extend([
                EventKind::AttemptStarted {
                    step: step.clone(),
                    item,
                    attempt: 2,
                    compensation,
                    until: Some(Time::from_micros(9)),
                },
                EventKind::AttemptRunning {
                    step: step.clone(),
                    item,
                    attempt: 2,
                    compensation,
                    process: Process { host: "h".into(), pid: 40, started: 77 },
                },
                EventKind::AttemptSucceeded {
                    step: step.clone(),
                    item,
                    attempt: 2,
                    compensation,
                    outputs: outputs.clone(),
                },
                EventKind::AttemptFailed {
                    step: step.clone(),
                    item,
                    attempt: 2,
                    compensation,
                    error: error.clone(),
                    outputs: outputs.clone(),
                    terminal: compensation,
                },
                EventKind::AttemptCancelled { step: step.clone(), item, attempt: 2, compensation },
                EventKind::RetryScheduled {
                    step,
                    item,
                    attempt: 3,
                    compensation,
                    delay_ms: 250,
                    at: Time::from_micros(11),
                },
            ]);
        }
        kinds
    }

    #[test]
    fn every_event_reads_back_from_its_cloudevent_exactly() {
        for (seq, kind) in every_kind().into_iter().enumerate() {
            let event = Event::new(seq as u64 + 1, Time::from_micros(1_700_000_000_123_456), kind);
            let written = to_json("01abc", &event);
            let read = from_json(&written).unwrap_or_else(|error| panic!("{written}: {error}"));
            assert_eq!(read, ("01abc".to_owned(), event), "{written}");
        }
    }

    #[test]
    fn a_fan_out_item_is_the_subject_of_its_events() {
        let kind = EventKind::AttemptStarted {
            step: "deploy".into(),
            item: Some(3),
            attempt: 1,
            compensation: false,
            until: None,
        };
        let written = to_json("01abc", &Event::new(4, Time::from_micros(0), kind));
        assert_eq!(written["subject"], "deploy[3]");
        assert_eq!(written["data"]["item"], 3);
    }

    #[test]
    fn what_to_json_does_not_write_is_refused_with_the_reason() {
        let event = Event::new(1, Time::from_micros(0), EventKind::Started);
        let good = to_json("01abc", &event);
        let mut unknown = good.clone();
        unknown["type"] = json!("io.serverlessworkflow.workflow.exploded.v1");
        assert!(from_json(&unknown).unwrap_err().contains("unknown event type"));
        let mut bad_seq = good.clone();
        bad_seq["id"] = json!("x");
        assert!(from_json(&bad_seq).unwrap_err().contains("sequence number"));
        let mut bad_data = good;
        bad_data["type"] = json!("io.serverlessworkflow.task.started.v1");
        assert!(from_json(&bad_data).unwrap_err().contains("does not fit"));
    }
}
