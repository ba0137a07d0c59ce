//! The journal: every execution is an append-only list of these events, and its state is a
//! fold of them. Events are stored as JSON; their shape is a compatibility promise, and each
//! carries the format version it was written in (`v`), so a reader can tell an event from a
//! newer wayline instead of misreading it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::status::Decision;
use crate::time::Time;

/// The newest format version of the events this wayline writes and reads. Events written
/// before versions existed read as version 1. Version 2 added fan-out (`fanned_out`, the
/// `item` of attempt events, `redriven.kept_items`) and imports (`created.imports`): an event
/// that uses them is written as version 2, so that an older wayline refuses it instead of
/// misreading it (it would ignore the `item`); every other event stays version 1 and remains
/// readable by older versions.
pub const FORMAT: u16 = 2;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the execution's journal, from 1, without gaps.
    pub seq: u64,
    pub time: Time,
    /// The format version it was written in ([`FORMAT`] for new events).
    #[serde(default = "first_format")]
    pub v: u16,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// A new event in this wayline's format.
    pub fn new(seq: u64, time: Time, kind: EventKind) -> Event {
        Event { seq, time, v: kind.format(), kind }
    }
}

fn first_format() -> u16 {
    1
}

/// Why an attempt failed, and whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Non-zero exit, unexpected HTTP status, connection error: retryable.
    Failure,
    /// The attempt ran past its timeout: retryable.
    Timeout,
    /// The owner or agent running the attempt died: retryable.
    Lost,
    /// The request itself is wrong (bad URL, missing program): never retried.
    Fatal,
    /// An expression could not be evaluated: never retried.
    Expression,
}

impl ErrorClass {
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::Failure => "failure",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Lost => "lost",
            ErrorClass::Fatal => "fatal",
            ErrorClass::Expression => "expression",
        }
    }
}

/// An error as recorded in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub class: ErrorClass,
    pub message: String,
}

impl ErrorInfo {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> ErrorInfo {
        ErrorInfo { class, message: message.into() }
    }
}

/// What an attempt does for its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    /// The step's own body.
    Step,
    /// Its `compensate` action, during a rollback.
    Compensation,
    /// The `escalation.notify` call made when it escalated.
    Notify,
}

impl AttemptKind {
    pub fn name(self) -> &'static str {
        match self {
            AttemptKind::Step => "step",
            AttemptKind::Compensation => "compensation",
            AttemptKind::Notify => "notify",
        }
    }
}

/// The name of a step instance, as people, events, logs and keys write it: `deploy`, or
/// `deploy[3]` for item 3 of a fan-out.
pub fn instance_name(step: &str, item: Option<u32>) -> String {
    match item {
        Some(item) => format!("{step}[{item}]"),
        None => step.to_owned(),
    }
}

/// The durable name of one attempt: what an executor, an agent, a log line and the API call
/// it, the same in every process and across restarts. `item` is the position of a fan-out
/// item (`deploy[3]`), `None` for an ordinary step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptId {
    pub execution: String,
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
    /// From 1; compensations and notifications count on their own.
    pub number: u32,
    pub kind: AttemptKind,
}

impl std::fmt::Display for AttemptId {
    /// `01h…/deploy#2`, `01h…/deploy[3]#1`, `01h…/deploy#1/compensation`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.execution, self.step)?;
        if let Some(item) = self.item {
            write!(f, "[{item}]")?;
        }
        write!(f, "#{}", self.number)?;
        match self.kind {
            AttemptKind::Step => Ok(()),
            other => write!(f, "/{}", other.name()),
        }
    }
}

/// The process running a command attempt, as its owner saw it: recorded so that a new owner
/// on the same host can stop it before the step runs again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub host: String,
    /// The process id, which is also its process group's id.
    pub pid: u32,
    /// When it started, in clock ticks since boot: tells a reused pid apart.
    pub started: u64,
}

/// Who asked for a control action, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Actor {
    /// e.g. `alice@host (cli)`, `timer`, `escalation timeout`.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why an execution stops scheduling new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A step failed terminally under fail_fast or rollback (or a decision said so).
    Failed,
    /// Someone cancelled it.
    Cancelled,
    /// The execution ran past its timeout.
    Timeout,
}

/// Final status of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    RolledBack,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::RolledBack => "rolled_back",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The first event: everything needed to rebuild the execution.
    Created {
        workflow: String,
        /// The workflow file's text, parsed again on recovery.
        source: String,
        /// Where the file was read from, for display.
        path: String,
        inputs: Map<String, Value>,
        /// The texts of the files it imports, by their path relative to it: the execution is
        /// rebuilt from these, not from files that may have changed since.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        imports: std::collections::BTreeMap<String, String>,
    },
    /// Scheduling began.
    Started,
    /// A new owner took the execution over (after a crash, or `wayline resume`).
    Recovered {
        owner: String,
    },
    AttemptStarted {
        step: String,
        /// The fan-out item it belongs to; absent for an ordinary step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<u32>,
        attempt: u32,
        #[serde(default, skip_serializing_if = "is_false")]
        compensation: bool,
        /// For a wait step: when it ends.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Time>,
    },
    /// The process of a command attempt is running (it follows `attempt_started`).
    AttemptRunning {
        step: String,
        /// The fan-out item it belongs to; absent for an ordinary step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<u32>,
        attempt: u32,
        #[serde(default, skip_serializing_if = "is_false")]
        compensation: bool,
        process: Process,
    },
    AttemptSucceeded {
        step: String,
        /// The fan-out item it belongs to; absent for an ordinary step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<u32>,
        attempt: u32,
        #[serde(default, skip_serializing_if = "is_false")]
        compensation: bool,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        outputs: Map<String, Value>,
    },
    AttemptFailed {
        step: String,
        /// The fan-out item it belongs to; absent for an ordinary step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<u32>,
        attempt: u32,
        #[serde(default, skip_serializing_if = "is_false")]
        compensation: bool,
        error: ErrorInfo,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        outputs: Map<String, Value>,
        /// No further attempt follows: the step (or compensation) has failed.
        terminal: bool,
    },
    AttemptCancelled {
        step: String,
        /// The fan-out item it belongs to; absent for an ordinary step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<u32>,
        attempt: u32,
        #[serde(default, skip_serializing_if = "is_false")]
        compensation: bool,
    },
    RetryScheduled {
        step: String,
        /// The fan-out item it belongs to; absent for an ordinary step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<u32>,
        /// The attempt that will run next.
        attempt: u32,
        #[serde(default, skip_serializing_if = "is_false")]
        compensation: bool,
        delay_ms: u64,
        at: Time,
    },
    /// The step will not run: a need did not succeed, its `if` was false, its branch was not
    /// taken, or the execution stopped before it started (`cancelled: true`).
    StepSkipped {
        step: String,
        /// The fan-out item skipped (its `if` was false). On a fan-out step without `item`:
        /// every item not started yet or waiting for a retry, when the execution stops.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<u32>,
        reason: String,
        #[serde(default, skip_serializing_if = "is_false")]
        cancelled: bool,
    },
    /// A fan-out step (`for_each`, `matrix`) became ready: its list of items, evaluated once
    /// and recorded, so a replay never evaluates it again. Item `i` is `items[i]`.
    FannedOut {
        step: String,
        items: Vec<Value>,
    },
    /// The step failed terminally under the escalate strategy; a human decides.
    StepEscalated {
        step: String,
        error: ErrorInfo,
    },
    Decided {
        step: String,
        decision: Decision,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        outputs: Map<String, Value>,
        actor: Actor,
    },
    Paused {
        actor: Actor,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Time>,
    },
    Resumed {
        actor: Actor,
    },
    /// No new steps start; running ones are cancelled; then roll back or finish.
    Stopping {
        reason: StopReason,
        rollback: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actor: Option<Actor>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
    },
    /// Compensation of the succeeded steps begins.
    RollbackStarted,
    /// Breakpoints were added (`run --break`, `run --step`, `pause --before`): the execution
    /// pauses before these steps start, or before every step with `every`.
    BreakpointsSet {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        steps: Vec<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        every: bool,
        actor: Actor,
    },
    /// The execution paused at a breakpoint, before these steps (ready to start).
    BreakpointHit {
        steps: Vec<String>,
    },
    /// `wayline step`: the steps held at the breakpoint (or, after a pause, those ready) start,
    /// and the execution pauses again before the next ones once they finished.
    Stepped {
        actor: Actor,
    },
    /// A person changed what the steps still to run see (`wayline patch`): the outputs of a
    /// finished step, inputs. Recorded with who and why, so the change is never silent.
    Patched {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        outputs: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        inputs: Map<String, Value>,
        actor: Actor,
    },
    /// A finished execution was opened again (`wayline rerun`): `steps` run again with a
    /// fresh attempt budget (their attempt numbers continue), the rest keep what they have;
    /// `inputs` are the inputs whose values the rerun changed. The fan-out steps in
    /// `kept_items` keep the items they recorded and run again only those that did not
    /// succeed (or whose work a rollback undid); the others evaluate their items afresh.
    Redriven {
        actor: Actor,
        steps: Vec<String>,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        inputs: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        kept_items: Vec<String>,
    },
    Finished {
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorInfo>,
        /// The workflow's `outputs`, evaluated when it succeeded (masked).
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        outputs: Map<String, Value>,
    },
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl EventKind {
    /// The step this event is about, if any (the CloudEvents `subject`).
    pub fn step(&self) -> Option<&str> {
        match self {
            EventKind::AttemptStarted { step, .. }
            | EventKind::AttemptRunning { step, .. }
            | EventKind::AttemptSucceeded { step, .. }
            | EventKind::AttemptFailed { step, .. }
            | EventKind::AttemptCancelled { step, .. }
            | EventKind::RetryScheduled { step, .. }
            | EventKind::StepSkipped { step, .. }
            | EventKind::FannedOut { step, .. }
            | EventKind::StepEscalated { step, .. }
            | EventKind::Decided { step, .. } => Some(step),
            EventKind::Patched { step, .. } => step.as_deref(),
            _ => None,
        }
    }

    /// The format version this event needs (see [`FORMAT`]).
    pub fn format(&self) -> u16 {
        let newer = match self {
            EventKind::FannedOut { .. } => true,
            EventKind::Redriven { kept_items, .. } => !kept_items.is_empty(),
            EventKind::Created { imports, .. } => !imports.is_empty(),
            other => other.item().is_some(),
        };
        if newer { 2 } else { 1 }
    }

    /// The fan-out item this event is about, if any.
    pub fn item(&self) -> Option<u32> {
        match self {
            EventKind::AttemptStarted { item, .. }
            | EventKind::AttemptRunning { item, .. }
            | EventKind::AttemptSucceeded { item, .. }
            | EventKind::AttemptFailed { item, .. }
            | EventKind::AttemptCancelled { item, .. }
            | EventKind::RetryScheduled { item, .. }
            | EventKind::StepSkipped { item, .. } => *item,
            _ => None,
        }
    }

    /// What the event is about, for people and the CloudEvents `subject`: `deploy`, or
    /// `deploy[3]` for a fan-out item.
    pub fn subject(&self) -> Option<String> {
        Some(instance_name(self.step()?, self.item()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_flat_and_compact() {
        let kind = EventKind::AttemptStarted {
            step: "build".into(),
            item: None,
            attempt: 1,
            compensation: false,
            until: None,
        };
        let event = Event::new(3, Time::from_micros(5), kind);
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(
            text,
            r#"{"seq":3,"time":5,"v":1,"type":"attempt_started","step":"build","attempt":1}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
    }

    #[test]
    fn only_events_that_use_fan_out_or_imports_need_version_2() {
        let plain = EventKind::AttemptStarted {
            step: "build".into(),
            item: None,
            attempt: 1,
            compensation: false,
            until: None,
        };
        assert_eq!(Event::new(1, Time::from_micros(0), plain).v, 1);
        let item = EventKind::StepSkipped {
            step: "d".into(),
            item: Some(2),
            reason: "r".into(),
            cancelled: false,
        };
        assert_eq!(Event::new(1, Time::from_micros(0), item).v, 2);
        let fanned = EventKind::FannedOut { step: "d".into(), items: vec![] };
        assert_eq!(Event::new(1, Time::from_micros(0), fanned).v, 2);
        let created = |imports: std::collections::BTreeMap<String, String>| EventKind::Created {
            workflow: "w".into(),
            source: String::new(),
            path: String::new(),
            inputs: Map::new(),
            imports,
        };
        assert_eq!(created(Default::default()).format(), 1);
        assert_eq!(created([("a.yaml".to_owned(), String::new())].into()).format(), 2);
        assert_eq!(FORMAT, 2);
    }

    #[test]
    fn events_written_before_versions_read_as_version_1() {
        let old = r#"{"seq":2,"time":7,"type":"decided","step":"a","decision":"skip","actor":{"by":"ops"}}"#;
        let event: Event = serde_json::from_str(old).unwrap();
        assert_eq!(event.v, 1);
        assert!(matches!(event.kind, EventKind::Decided { decision: Decision::Skip, .. }));
    }
}
