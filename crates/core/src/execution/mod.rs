//! The execution state machine: state is a fold of journal events; decisions are pure.
//!
//! [`Execution::handle`] takes one input (start, an attempt's result, a timer, a control
//! request) and the current time, and returns the events to commit and the effects to carry
//! out once they are committed. Every state change goes through [`Execution::apply`], the same
//! function that folds a stored journal, so the state after `handle` is exactly the fold of
//! the journal: replaying a journal reproduces the execution.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use wayline_lang::expr::{EvalError, Expression, Scope, StatusView};
use wayline_lang::model::{Body, Decision, StepIndex, Strategy, Wait, Workflow};

use crate::retry;
use wayline_journal::{
    Actor, ErrorClass, ErrorInfo, Event, EventKind, Outcome, Process, Status, StepStatus,
    StopReason,
};
use wayline_journal::{AttemptKind, Masker, Time};

/// Secret values by name: handed in by the runtime, never stored in the journal.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
    /// Masks every value, the same way the executors do.
    masker: Masker,
}

impl Secrets {
    pub fn new(values: BTreeMap<String, String>) -> Secrets {
        let masker = Masker::new(values.values().map(String::as_str));
        Secrets { values, masker }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The values, for masking.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(String::as_str).filter(|value| !value.is_empty())
    }

    /// The masker of these secrets.
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// Replaces every secret value in `text` with `***`.
    pub fn mask(&self, text: &str) -> String {
        self.masker.mask(text).into_owned()
    }

    fn mask_value(&self, value: &mut Value) {
        self.masker.mask_value(value);
    }
}

/// Where a step is in its lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub enum StepState {
    /// Not started: waiting for needs, a slot, or the execution.
    Pending,
    /// An attempt is in flight. `until` is set for a wait step; `cancelling` once a cancel was
    /// requested.
    Running {
        attempt: u32,
        since: Time,
        until: Option<Time>,
        cancelling: bool,
        /// The process running it (command steps), once recorded.
        process: Option<Process>,
    },
    /// Between attempts.
    Retrying {
        next: u32,
        at: Time,
    },
    Succeeded,
    Failed,
    Skipped {
        reason: String,
    },
    Cancelled,
    /// Failed under `escalate`, waiting for a decision.
    Escalated,
}

impl StepState {
    /// A terminal state: dependents may go ahead.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            StepState::Succeeded
                | StepState::Failed
                | StepState::Skipped { .. }
                | StepState::Cancelled
        )
    }
}

/// Where a step's compensation is, during a rollback.
#[derive(Debug, Clone, PartialEq)]
pub enum Compensation {
    /// Not part of a rollback.
    None,
    /// Waiting for the compensations of its dependents.
    Waiting,
    /// May start.
    Ready,
    Running {
        attempt: u32,
        since: Time,
        cancelling: bool,
        process: Option<Process>,
    },
    Retrying {
        next: u32,
        at: Time,
    },
    Succeeded,
    Failed(ErrorInfo),
    /// Nothing to compensate (no `compensate` block): passes straight through.
    Nothing,
}

/// Everything the execution knows about one step.
#[derive(Debug, Clone)]
pub struct StepRun {
    pub state: StepState,
    /// Attempts started, over the step's whole life.
    pub attempts: u32,
    /// Attempts that belong to earlier budgets (a `retry` decision starts a fresh budget).
    pub budget_base: u32,
    /// When the first attempt of the current budget started.
    pub budget_started: Option<Time>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub outputs: Map<String, Value>,
    pub error: Option<ErrorInfo>,
    pub compensation: Compensation,
    pub compensation_attempts: u32,
    /// The last decision a person (or the escalation timeout) made about the step.
    pub decision: Option<(Decision, Actor)>,
    /// Compensations of succeeded dependents not yet finished.
    compensation_missing: u32,
}

impl StepRun {
    fn new() -> StepRun {
        StepRun {
            state: StepState::Pending,
            attempts: 0,
            budget_base: 0,
            budget_started: None,
            started_at: None,
            finished_at: None,
            outputs: Map::new(),
            error: None,
            compensation: Compensation::None,
            compensation_attempts: 0,
            decision: None,
            compensation_missing: 0,
        }
    }

    pub fn status(&self) -> StepStatus {
        match (&self.state, &self.compensation) {
            (_, Compensation::Running { .. } | Compensation::Retrying { .. }) => {
                StepStatus::Compensating
            }
            (_, Compensation::Succeeded) => StepStatus::Compensated,
            (StepState::Pending, _) => StepStatus::Pending,
            (StepState::Running { .. }, _) => StepStatus::Running,
            (StepState::Retrying { .. }, _) => StepStatus::Retrying,
            (StepState::Succeeded, _) => StepStatus::Succeeded,
            (StepState::Failed, _) => StepStatus::Failed,
            (StepState::Skipped { .. }, _) => StepStatus::Skipped,
            (StepState::Cancelled, _) => StepStatus::Cancelled,
            (StepState::Escalated, _) => StepStatus::Escalated,
        }
    }
}

/// One attempt of a step, as the state machine names it (the runtime turns it into a durable
/// [`wayline_journal::AttemptId`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attempt {
    pub step: StepIndex,
    /// The fan-out item it belongs to; `None` for an ordinary step.
    pub item: Option<u32>,
    /// From 1, counted per kind.
    pub number: u32,
    pub kind: AttemptKind,
}

impl Attempt {
    /// Attempt `number` of `step`'s body.
    pub fn step(step: StepIndex, number: u32) -> Attempt {
        Attempt { step, item: None, number, kind: AttemptKind::Step }
    }

    /// Attempt `number` of `step`'s compensation.
    pub fn compensation(step: StepIndex, number: u32) -> Attempt {
        Attempt { step, item: None, number, kind: AttemptKind::Compensation }
    }

    /// Whether this is a compensation (the journal's `compensation` flag).
    pub fn is_compensation(self) -> bool {
        self.kind == AttemptKind::Compensation
    }

    /// The same kind of attempt of the same step, numbered `number`.
    fn numbered(self, number: u32) -> Attempt {
        Attempt { number, ..self }
    }
}

/// Timers the core asks the runtime to arm. A timer that fires after it stopped mattering is
/// recognised and ignored, so timers never need cancelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// A step's (or compensation's) next attempt is due.
    Retry(Attempt),
    /// A wait step is over.
    Wait(Attempt),
    /// No decision on an escalated step by the escalation timeout.
    Escalation { step: StepIndex, since: Time },
    /// `pause --until` is reached.
    PauseEnd { until: Time },
    /// The execution's timeout.
    Deadline,
}

/// What the runtime must do once the events of a decision are committed.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Run an attempt of a step (or of its compensation) on an executor.
    Start(Attempt),
    /// Stop an attempt in flight (SIGTERM then SIGKILL, abort the request).
    Cancel(Attempt),
    /// Deliver `Input::Timer(timer)` at `at`.
    Timer { at: Time, timer: Timer },
    /// A step escalated: call `escalation.notify`.
    Notify { step: StepIndex },
    /// The execution reached its final status.
    Finished,
}

/// An input to the state machine.
#[derive(Debug, Clone)]
pub enum Input {
    /// Begin scheduling a new execution.
    Start,
    /// A new owner folded the journal: attempts that were in flight are lost.
    Recover {
        owner: String,
    },
    /// The process of a command attempt started.
    Running {
        attempt: Attempt,
        process: Process,
    },
    /// An executor finished an attempt.
    Finished {
        attempt: Attempt,
        result: AttemptResult,
    },
    Timer(Timer),
    Control(Control),
}

/// How an attempt ended, as the runtime reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    Succeeded { outputs: Map<String, Value> },
    Failed { error: ErrorInfo, outputs: Map<String, Value>, retry_after: Option<Duration> },
    Cancelled,
}

/// How a failed attempt ended, as the decision about it needs it.
struct Failure {
    error: ErrorInfo,
    outputs: Map<String, Value>,
    retry_after: Option<Duration>,
}

impl Failure {
    /// A failure with nothing but its error (an expression that could not be evaluated).
    fn of(error: ErrorInfo) -> Failure {
        Failure { error, outputs: Map::new(), retry_after: None }
    }
}

/// A request from a person (CLI, API) to steer the execution.
#[derive(Debug, Clone)]
pub enum Control {
    Pause { actor: Actor, until: Option<Time> },
    Resume { actor: Actor },
    Cancel { actor: Actor, rollback: bool },
    Decide { step: String, decision: Decision, outputs: Map<String, Value>, actor: Actor },
}

/// A control request that does not apply to the execution as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected(pub String);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rejected {}

/// The result of handling one input.
#[derive(Debug, Default)]
pub struct Step {
    /// Commit these first…
    pub events: Vec<Event>,
    /// …then do these.
    pub effects: Vec<Effect>,
}

#[derive(Debug, Clone)]
struct Stop {
    reason: StopReason,
    rollback: bool,
    error: Option<ErrorInfo>,
}

#[derive(Debug, Clone)]
struct Pause {
    actor: Actor,
    until: Option<Time>,
}

/// One execution of a workflow.
#[derive(Debug, Clone)]
pub struct Execution {
    id: String,
    workflow: Arc<Workflow>,
    secrets: Arc<Secrets>,
    inputs: Value,
    path: String,
    source: Arc<str>,
    created_at: Time,
    started_at: Option<Time>,
    finished_at: Option<Time>,
    seq: u64,
    steps: Vec<StepRun>,
    /// Evaluated workflow `env`, for `env.*` in expressions.
    env: Value,
    /// Position of each step in the workflow's dependency order.
    position: Vec<usize>,
    /// Needs of each step that are not finished yet.
    missing: Vec<u32>,
    /// Positions of pending steps whose needs are all finished.
    ready: BTreeSet<usize>,
    /// Retrying steps whose timer fired (positions).
    due: BTreeSet<usize>,
    /// Compensations that may start, by position (highest first when taken).
    compensable: BTreeSet<usize>,
    running: u32,
    group_running: Vec<u32>,
    pause: Option<Pause>,
    escalated: BTreeSet<StepIndex>,
    stop: Option<Stop>,
    rolling_back: bool,
    outcome: Option<(Outcome, Option<ErrorInfo>)>,
    owner: Option<String>,
}

/// The data of an execution's first event, checked.
pub struct Created {
    pub id: String,
    pub workflow: Arc<Workflow>,
    pub source: Arc<str>,
    pub path: String,
    pub inputs: Map<String, Value>,
}

impl Execution {
    /// A new execution and its first event, to be committed before anything else.
    pub fn create(created: Created, secrets: Arc<Secrets>, now: Time) -> (Execution, Event) {
        let event = Event {
            v: wayline_journal::FORMAT,
            seq: 1,
            time: now,
            kind: EventKind::Created {
                workflow: created.workflow.name.clone(),
                source: created.source.to_string(),
                path: created.path.clone(),
                inputs: created.inputs.clone(),
            },
        };
        let mut execution = Execution::empty(created, secrets, now);
        execution.seq = 1;
        (execution, event)
    }

    /// Rebuilds an execution from its journal. `workflow` must be the parse of the source in
    /// the first event.
    pub fn replay(
        id: String,
        workflow: Arc<Workflow>,
        secrets: Arc<Secrets>,
        events: &[Event],
    ) -> Result<Execution, String> {
        let Some(first) = events.first() else { return Err("the journal is empty".into()) };
        let EventKind::Created { source, path, inputs, .. } = &first.kind else {
            return Err("the journal does not start with `created`".into());
        };
        let created = Created {
            id,
            workflow,
            source: source.as_str().into(),
            path: path.clone(),
            inputs: inputs.clone(),
        };
        let mut execution = Execution::empty(created, secrets, first.time);
        execution.seq = 1;
        for event in &events[1..] {
            if event.seq != execution.seq + 1 {
                return Err(format!(
                    "the journal jumps from event {} to {}",
                    execution.seq, event.seq
                ));
            }
            execution.apply(event)?;
        }
        Ok(execution)
    }

    fn empty(created: Created, secrets: Arc<Secrets>, now: Time) -> Execution {
        let workflow = created.workflow;
        let count = workflow.steps.len();
        let mut position = vec![0; count];
        for (at, &step) in workflow.order.iter().enumerate() {
            position[step] = at;
        }
        let missing: Vec<u32> = workflow.steps.iter().map(|s| s.needs.len() as u32).collect();
        let ready =
            (0..count).filter(|&step| missing[step] == 0).map(|step| position[step]).collect();
        Execution {
            id: created.id,
            secrets,
            inputs: Value::Object(created.inputs),
            path: created.path,
            source: created.source,
            created_at: now,
            started_at: None,
            finished_at: None,
            seq: 0,
            steps: (0..count).map(|_| StepRun::new()).collect(),
            env: Value::Object(Map::new()),
            position,
            missing,
            ready,
            due: BTreeSet::new(),
            compensable: BTreeSet::new(),
            running: 0,
            group_running: vec![0; workflow.groups.len()],
            pause: None,
            escalated: BTreeSet::new(),
            stop: None,
            rolling_back: false,
            outcome: None,
            owner: None,
            workflow,
        }
    }

    // ----- reading -----

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn workflow(&self) -> &Arc<Workflow> {
        &self.workflow
    }

    pub fn secrets(&self) -> &Arc<Secrets> {
        &self.secrets
    }

    pub fn inputs(&self) -> &Value {
        &self.inputs
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn created_at(&self) -> Time {
        self.created_at
    }

    pub fn started_at(&self) -> Option<Time> {
        self.started_at
    }

    pub fn finished_at(&self) -> Option<Time> {
        self.finished_at
    }

    pub fn steps(&self) -> &[StepRun] {
        &self.steps
    }

    pub fn outcome(&self) -> Option<&(Outcome, Option<ErrorInfo>)> {
        self.outcome.as_ref()
    }

    /// The latest recorded owner (after a takeover).
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    pub fn status(&self) -> Status {
        if let Some((outcome, _)) = &self.outcome {
            return (*outcome).into();
        }
        if self.started_at.is_none() {
            Status::Pending
        } else if self.stop.is_none() && !self.escalated.is_empty() {
            Status::Escalated
        } else if self.stop.is_none() && self.pause.is_some() {
            Status::Paused
        } else {
            Status::Running
        }
    }

    /// Why a step that is not running is not running (DESIGN.md §2.5), for people.
    pub fn waiting(&self, step: StepIndex) -> Option<String> {
        let run = &self.steps[step];
        let definition = &self.workflow.steps[step];
        match &run.state {
            StepState::Retrying { next, at } => {
                return Some(format!("attempt {next} at {}", at.rfc3339()));
            }
            StepState::Escalated => return Some("waiting for a decision (wayline decide)".into()),
            StepState::Pending => {}
            _ => return None,
        }
        if self.outcome.is_some() {
            return None;
        }
        if let Some(stop) = &self.stop {
            return Some(match stop.reason {
                StopReason::Failed => "the execution is stopping after a failure".into(),
                StopReason::Cancelled => "the execution is being cancelled".into(),
                StopReason::Timeout => "the execution timed out".into(),
            });
        }
        if self.missing[step] > 0 {
            let waiting: Vec<&str> = definition
                .needs
                .iter()
                .filter(|&&need| !self.steps[need].state.is_done())
                .map(|&need| self.workflow.steps[need].id.as_str())
                .collect();
            return Some(format!("waiting for {}", waiting.join(", ")));
        }
        if let Some(pause) = &self.pause {
            let until = pause.until.map(|t| format!(" until {}", t.rfc3339())).unwrap_or_default();
            return Some(format!("execution paused by {}{until}", pause.actor.by));
        }
        if let Some(&escalated) = self.escalated.iter().next() {
            return Some(format!(
                "execution escalated: waiting for a decision on `{}`",
                self.workflow.steps[escalated].id
            ));
        }
        if let Some(group) = definition.group {
            let cap = self.workflow.groups[group].max_parallel.unwrap_or(u32::MAX);
            if self.group_running[group] >= cap {
                return Some(format!(
                    "group `{}` is full ({}/{cap} running)",
                    self.workflow.groups[group].name, self.group_running[group]
                ));
            }
        }
        if let Some(cap) = self.workflow.max_parallel
            && self.running >= cap
        {
            return Some(format!("max_parallel reached ({}/{cap} running)", self.running));
        }
        Some("ready".into())
    }

    /// The processes of attempts in flight, as their owners recorded them: after a takeover,
    /// those on this host are stopped before the steps run again.
    pub fn processes(&self) -> Vec<&Process> {
        let mut processes = Vec::new();
        for run in &self.steps {
            if let StepState::Running { process: Some(process), .. } = &run.state {
                processes.push(process);
            }
            if let Compensation::Running { process: Some(process), .. } = &run.compensation {
                processes.push(process);
            }
        }
        processes
    }

    /// What expressions of `step` can read, for the runtime to render a step body.
    pub fn scope(&self, attempt: Option<u32>) -> View<'_> {
        View { execution: self, attempt, status: None, escalation: None }
    }

    /// What `escalation.notify` can read.
    pub fn notify_scope(&self, step: StepIndex) -> View<'_> {
        let reason = self.steps[step].error.as_ref().map(|e| e.message.clone());
        let escalation =
            serde_json::json!({ "step": self.workflow.steps[step].id, "reason": reason });
        View { execution: self, attempt: None, status: None, escalation: Some(escalation) }
    }

    // ----- deciding -----

    /// Handles one input at time `now`: the events to commit and the effects to carry out
    /// after the commit. Control requests that do not apply are rejected without events.
    pub fn handle(&mut self, input: Input, now: Time) -> Result<Step, Rejected> {
        let mut out = Step::default();
        if self.outcome.is_some() {
            return match input {
                Input::Control(_) => Err(Rejected(format!(
                    "execution {} already finished ({})",
                    self.id,
                    self.status().name()
                ))),
                _ => Ok(out),
            };
        }
        match input {
            Input::Start => {
                if self.started_at.is_some() {
                    return Ok(out);
                }
                self.emit(&mut out, now, EventKind::Started);
                if let Err(error) = self.evaluate_env() {
                    let error = ErrorInfo::new(
                        ErrorClass::Expression,
                        format!("workflow env: {}", error.message),
                    );
                    self.emit(
                        &mut out,
                        now,
                        EventKind::Finished { outcome: Outcome::Failed, error: Some(error) },
                    );
                    out.effects.push(Effect::Finished);
                    return Ok(out);
                }
                if let Some(timeout) = self.workflow.timeout {
                    out.effects
                        .push(Effect::Timer { at: now.after(timeout), timer: Timer::Deadline });
                }
            }
            Input::Recover { owner } => self.recover(&mut out, owner, now),
            Input::Running { attempt, process } => {
                let number = attempt.number;
                let current = self.steps.get(attempt.step).is_some_and(|run| match attempt.kind {
                    AttemptKind::Compensation => {
                        matches!(&run.compensation, Compensation::Running { attempt: a, process: None, .. } if *a == number)
                    }
                    AttemptKind::Step => {
                        matches!(&run.state, StepState::Running { attempt: a, process: None, .. } if *a == number)
                    }
                    AttemptKind::Notify => false,
                });
                if current {
                    let step = self.workflow.steps[attempt.step].id.clone();
                    let compensation = attempt.is_compensation();
                    self.emit(
                        &mut out,
                        now,
                        EventKind::AttemptRunning { step, attempt: number, compensation, process },
                    );
                }
                return Ok(out);
            }
            Input::Finished { attempt, result } => self.finished(&mut out, attempt, result, now),
            Input::Timer(timer) => self.timer(&mut out, timer, now),
            Input::Control(control) => self.control(&mut out, control, now)?,
        }
        self.schedule(&mut out, now);
        Ok(out)
    }

    fn emit(&mut self, out: &mut Step, now: Time, kind: EventKind) {
        let event = Event { v: wayline_journal::FORMAT, seq: self.seq + 1, time: now, kind };
        // Events made here are valid by construction; a failure would be a bug in the core.
        if let Err(error) = self.apply(&event) {
            debug_assert!(false, "the core emitted an event it cannot apply: {error}");
        }
        out.events.push(event);
    }

    fn recover(&mut self, out: &mut Step, owner: String, now: Time) {
        self.emit(out, now, EventKind::Recovered { owner });
        if self.started_at.is_none() {
            self.emit(out, now, EventKind::Started);
        }
        if let Err(error) = self.evaluate_env() {
            let error =
                ErrorInfo::new(ErrorClass::Expression, format!("workflow env: {}", error.message));
            self.emit(
                out,
                now,
                EventKind::Finished { outcome: Outcome::Failed, error: Some(error) },
            );
            out.effects.push(Effect::Finished);
            return;
        }
        if let (Some(timeout), Some(started)) = (self.workflow.timeout, self.started_at) {
            out.effects.push(Effect::Timer { at: started.after(timeout), timer: Timer::Deadline });
        }
        if let Some(Pause { until: Some(until), .. }) = &self.pause {
            out.effects
                .push(Effect::Timer { at: *until, timer: Timer::PauseEnd { until: *until } });
        }
        for index in 0..self.steps.len() {
            match self.steps[index].state.clone() {
                StepState::Running { attempt, until: Some(until), .. } => {
                    // Waits are kept by the core: they survive the owner.
                    out.effects.push(Effect::Timer {
                        at: until,
                        timer: Timer::Wait(Attempt::step(index, attempt)),
                    });
                }
                StepState::Running { attempt, .. } => {
                    let error = ErrorInfo::new(
                        ErrorClass::Lost,
                        "the process running this attempt stopped before it finished",
                    );
                    let failure = Failure { error, outputs: Map::new(), retry_after: None };
                    self.attempt_failed(out, Attempt::step(index, attempt), failure, now);
                }
                StepState::Retrying { next, at } => {
                    out.effects.push(Effect::Timer {
                        at,
                        timer: Timer::Retry(Attempt::step(index, next)),
                    });
                }
                StepState::Escalated => {
                    self.escalation_timer(out, index);
                }
                _ => {}
            }
            match self.steps[index].compensation.clone() {
                Compensation::Running { attempt, .. } => {
                    let error = ErrorInfo::new(
                        ErrorClass::Lost,
                        "the process running this compensation stopped before it finished",
                    );
                    let failure = Failure { error, outputs: Map::new(), retry_after: None };
                    self.attempt_failed(out, Attempt::compensation(index, attempt), failure, now);
                }
                Compensation::Retrying { next, at } => {
                    let timer = Timer::Retry(Attempt::compensation(index, next));
                    out.effects.push(Effect::Timer { at, timer });
                }
                _ => {}
            }
        }
    }

    fn escalation_timer(&self, out: &mut Step, step: StepIndex) {
        if let (Some(timeout), Some(since)) =
            (self.workflow.escalation.timeout, self.steps[step].finished_at)
        {
            out.effects.push(Effect::Timer {
                at: since.after(timeout),
                timer: Timer::Escalation { step, since },
            });
        }
    }

    fn finished(&mut self, out: &mut Step, attempt: Attempt, result: AttemptResult, now: Time) {
        let Some(run) = self.steps.get(attempt.step) else { return };
        let number = attempt.number;
        let current = match attempt.kind {
            AttemptKind::Compensation => {
                matches!(run.compensation, Compensation::Running { attempt: a, .. } if a == number)
            }
            AttemptKind::Step => {
                matches!(run.state, StepState::Running { attempt: a, .. } if a == number)
            }
            // Notifications are not in the journal.
            AttemptKind::Notify => false,
        };
        if !current {
            return; // a late report about an attempt that is no longer in flight
        }
        let id = self.workflow.steps[attempt.step].id.clone();
        let compensation = attempt.is_compensation();
        match result {
            AttemptResult::Succeeded { mut outputs } => {
                for value in outputs.values_mut() {
                    self.secrets.mask_value(value);
                }
                self.emit(
                    out,
                    now,
                    EventKind::AttemptSucceeded {
                        step: id,
                        attempt: number,
                        compensation,
                        outputs,
                    },
                );
            }
            AttemptResult::Cancelled => {
                self.emit(
                    out,
                    now,
                    EventKind::AttemptCancelled { step: id, attempt: number, compensation },
                );
            }
            AttemptResult::Failed { error, outputs, retry_after } => {
                self.attempt_failed(out, attempt, Failure { error, outputs, retry_after }, now);
            }
        }
    }

    /// Records a failed attempt and decides what follows: a retry, or a terminal failure and
    /// the strategy it triggers.
    fn attempt_failed(&mut self, out: &mut Step, attempt: Attempt, failure: Failure, now: Time) {
        let Failure { error, mut outputs, retry_after } = failure;
        for value in outputs.values_mut() {
            self.secrets.mask_value(value);
        }
        let step = attempt.step;
        let compensation = attempt.is_compensation();
        let error = ErrorInfo { message: self.secrets.mask(&error.message), ..error };
        let id = self.workflow.steps[step].id.clone();
        let stopping = self.stop.is_some() && !compensation;
        let retry =
            if stopping { None } else { self.retry_delay(attempt, error.class, retry_after, now) };
        self.emit(
            out,
            now,
            EventKind::AttemptFailed {
                step: id.clone(),
                attempt: attempt.number,
                compensation,
                error: error.clone(),
                outputs,
                terminal: retry.is_none(),
            },
        );
        if let Some(delay) = retry {
            let at = now.after(delay);
            let next = attempt.numbered(attempt.number + 1);
            self.emit(
                out,
                now,
                EventKind::RetryScheduled {
                    step: id,
                    attempt: next.number,
                    compensation,
                    delay_ms: delay.as_millis() as u64,
                    at,
                },
            );
            out.effects.push(Effect::Timer { at, timer: Timer::Retry(next) });
            return;
        }
        if compensation || stopping {
            return;
        }
        // A terminal failure: the step's strategy decides.
        match self.workflow.steps[step].on_failure {
            Strategy::Continue => {}
            Strategy::FailFast | Strategy::Rollback => {
                let rollback = self.workflow.steps[step].on_failure == Strategy::Rollback;
                let error =
                    ErrorInfo::new(error.class, format!("step `{id}` failed: {}", error.message));
                self.stop(out, now, StopReason::Failed, rollback, None, Some(error));
            }
            Strategy::Escalate => {
                self.emit(out, now, EventKind::StepEscalated { step: id, error });
                out.effects.push(Effect::Notify { step });
                self.escalation_timer(out, step);
            }
        }
    }

    /// The pause before the next attempt, or `None` when no attempt may follow.
    fn retry_delay(
        &self,
        attempt: Attempt,
        class: ErrorClass,
        retry_after: Option<Duration>,
        now: Time,
    ) -> Option<Duration> {
        let compensation = attempt.is_compensation();
        let definition = &self.workflow.steps[attempt.step];
        let run = &self.steps[attempt.step];
        let (policy, used, first) = if compensation {
            let comp = definition.compensate.as_ref()?;
            (&comp.retry, run.compensation_attempts, None)
        } else {
            (&definition.retry, run.attempts - run.budget_base, run.budget_started)
        };
        let allowed = match class {
            ErrorClass::Failure => policy.on.failure,
            ErrorClass::Timeout => policy.on.timeout,
            ErrorClass::Lost => policy.on.lost,
            ErrorClass::Fatal | ErrorClass::Expression => false,
        };
        if !allowed || used >= policy.max_attempts {
            return None;
        }
        let attempt = if compensation { run.compensation_attempts + 1 } else { run.attempts + 1 };
        let salt = if compensation {
            format!("{}#compensate", definition.id)
        } else {
            definition.id.clone()
        };
        let (pick, jitter) = retry::samples(&self.id, &salt, attempt);
        let mut delay = retry::delay(policy, used, pick, jitter);
        if let Some(retry_after) = retry_after {
            delay = delay.max(retry_after);
        }
        if let (Some(budget), Some(first)) = (policy.budget, first)
            && now.after(delay) > first.after(budget)
        {
            return None;
        }
        Some(delay)
    }

    fn stop(
        &mut self,
        out: &mut Step,
        now: Time,
        reason: StopReason,
        rollback: bool,
        actor: Option<Actor>,
        error: Option<ErrorInfo>,
    ) {
        if self.stop.is_some() {
            return;
        }
        self.emit(out, now, EventKind::Stopping { reason, rollback, actor, error });
        for index in 0..self.steps.len() {
            match self.steps[index].state {
                StepState::Running { attempt, until: None, cancelling: false, .. } => {
                    if let StepState::Running { cancelling, .. } = &mut self.steps[index].state {
                        *cancelling = true; // transient: only avoids sending a second cancel
                    }
                    out.effects.push(Effect::Cancel(Attempt::step(index, attempt)));
                }
                StepState::Running { attempt, until: Some(_), .. } => {
                    let step = self.workflow.steps[index].id.clone();
                    self.emit(
                        out,
                        now,
                        EventKind::AttemptCancelled { step, attempt, compensation: false },
                    );
                }
                _ => {}
            }
        }
    }

    fn timer(&mut self, out: &mut Step, timer: Timer, now: Time) {
        match timer {
            Timer::Retry(Attempt { step, number, kind: AttemptKind::Step, .. }) => {
                if matches!(self.steps[step].state, StepState::Retrying { next, .. } if next == number)
                {
                    self.due.insert(self.position[step]);
                }
            }
            Timer::Retry(Attempt { step, number, kind: AttemptKind::Compensation, .. }) => {
                if matches!(self.steps[step].compensation, Compensation::Retrying { next, .. } if next == number)
                {
                    self.compensable.insert(self.position[step]);
                }
            }
            Timer::Retry(Attempt { kind: AttemptKind::Notify, .. }) => {}
            Timer::Wait(Attempt { step, number: attempt, .. }) => {
                if matches!(self.steps[step].state, StepState::Running { attempt: a, until: Some(_), .. } if a == attempt)
                {
                    let id = self.workflow.steps[step].id.clone();
                    self.emit(
                        out,
                        now,
                        EventKind::AttemptSucceeded {
                            step: id,
                            attempt,
                            compensation: false,
                            outputs: Map::new(),
                        },
                    );
                }
            }
            Timer::Escalation { step, since } => {
                if self.steps[step].state == StepState::Escalated
                    && self.steps[step].finished_at == Some(since)
                {
                    let decision = self.workflow.escalation.then;
                    let actor = Actor {
                        by: "escalation timeout".into(),
                        reason: Some("no decision before escalation.timeout".into()),
                    };
                    self.decide(out, step, decision, Map::new(), actor, now);
                }
            }
            Timer::PauseEnd { until } => {
                if matches!(&self.pause, Some(Pause { until: Some(u), .. }) if *u == until) {
                    self.emit(
                        out,
                        now,
                        EventKind::Resumed {
                            actor: Actor {
                                by: "timer".into(),
                                reason: Some("pause --until reached".into()),
                            },
                        },
                    );
                }
            }
            Timer::Deadline => {
                let timeout = self
                    .workflow
                    .timeout
                    .map(wayline_journal::duration::format)
                    .unwrap_or_default();
                let error = ErrorInfo::new(
                    ErrorClass::Timeout,
                    format!("the execution ran past its timeout of {timeout}"),
                );
                let rollback = self.workflow.on_failure == Strategy::Rollback;
                self.stop(out, now, StopReason::Timeout, rollback, None, Some(error));
            }
        }
    }

    fn control(&mut self, out: &mut Step, control: Control, now: Time) -> Result<(), Rejected> {
        match control {
            Control::Pause { actor, until } => {
                if self.stop.is_some() {
                    return Err(Rejected("the execution is stopping; it cannot be paused".into()));
                }
                self.emit(out, now, EventKind::Paused { actor, until });
                if let Some(until) = until {
                    out.effects.push(Effect::Timer { at: until, timer: Timer::PauseEnd { until } });
                }
            }
            Control::Resume { actor } => {
                if self.pause.is_none() {
                    return Err(Rejected(format!(
                        "execution {} is not paused ({})",
                        self.id,
                        self.status().name()
                    )));
                }
                self.emit(out, now, EventKind::Resumed { actor });
            }
            Control::Cancel { actor, rollback } => {
                if self.stop.is_some() {
                    return Err(Rejected("the execution is already stopping".into()));
                }
                let error = ErrorInfo::new(ErrorClass::Fatal, format!("cancelled by {}", actor.by));
                self.stop(out, now, StopReason::Cancelled, rollback, Some(actor), Some(error));
            }
            Control::Decide { step, decision, outputs, actor } => {
                let Some(index) = self.workflow.step(&step) else {
                    return Err(Rejected(format!(
                        "workflow `{}` has no step `{step}`",
                        self.workflow.name
                    )));
                };
                if self.steps[index].state != StepState::Escalated {
                    return Err(Rejected(format!(
                        "step `{step}` is not escalated (it is {}); only escalated steps take a decision",
                        self.steps[index].status().name()
                    )));
                }
                if !outputs.is_empty() && decision != Decision::Skip {
                    return Err(Rejected("outputs can only be given with `skip`".into()));
                }
                self.decide(out, index, decision, outputs, actor, now);
            }
        }
        Ok(())
    }

    fn decide(
        &mut self,
        out: &mut Step,
        step: StepIndex,
        decision: Decision,
        outputs: Map<String, Value>,
        actor: Actor,
        now: Time,
    ) {
        let id = self.workflow.steps[step].id.clone();
        let reason = actor.reason.clone();
        self.emit(
            out,
            now,
            EventKind::Decided { step: id.clone(), decision, outputs, actor: actor.clone() },
        );
        match decision {
            Decision::Fail | Decision::Rollback => {
                let error = ErrorInfo::new(
                    ErrorClass::Fatal,
                    format!(
                        "step `{id}` failed and {} decided to {}{}",
                        actor.by,
                        decision.name(),
                        reason.map(|r| format!(": {r}")).unwrap_or_default()
                    ),
                );
                self.stop(
                    out,
                    now,
                    StopReason::Failed,
                    decision == Decision::Rollback,
                    Some(actor),
                    Some(error),
                );
            }
            Decision::Retry | Decision::Skip => {}
        }
    }

    /// Starts whatever may start now, skips what can no longer run, and finishes the execution
    /// when nothing is left.
    fn schedule(&mut self, out: &mut Step, now: Time) {
        loop {
            if self.outcome.is_some() || self.started_at.is_none() {
                return;
            }
            if self.rolling_back {
                self.schedule_compensations(out, now);
                if !self.steps.iter().any(|run| {
                    matches!(
                        run.compensation,
                        Compensation::Waiting
                            | Compensation::Ready
                            | Compensation::Running { .. }
                            | Compensation::Retrying { .. }
                    )
                }) {
                    self.finish(out, now);
                }
                return;
            }
            let progressed = if self.stop.is_some() {
                self.schedule_stopping(out, now)
            } else {
                self.schedule_running(out, now)
            };
            if progressed {
                continue;
            }
            let busy = self.steps.iter().any(|run| {
                matches!(
                    run.state,
                    StepState::Running { .. }
                        | StepState::Retrying { .. }
                        | StepState::Escalated
                        | StepState::Pending
                )
            });
            if busy {
                return;
            }
            if self.stop.as_ref().is_some_and(|stop| stop.rollback) {
                self.emit(out, now, EventKind::RollbackStarted);
                continue;
            }
            self.finish(out, now);
            return;
        }
    }

    /// Normal scheduling. Returns whether anything changed (so that consequences are looked at).
    fn schedule_running(&mut self, out: &mut Step, now: Time) -> bool {
        if self.pause.is_some() || !self.escalated.is_empty() {
            return false;
        }
        let mut progressed = false;
        // Walk the ready and due steps in dependency order, lazily: both sets change as steps
        // start and finish, and a full workflow cap ends the walk at once.
        let mut cursor = 0;
        loop {
            if self.workflow.max_parallel.is_some_and(|cap| self.running >= cap) {
                break;
            }
            if self.stop.is_some() || self.pause.is_some() || !self.escalated.is_empty() {
                break;
            }
            let next_ready = self.ready.range(cursor..).next().copied();
            let next_due = self.due.range(cursor..).next().copied();
            let Some(position) = next_ready.into_iter().chain(next_due).min() else { break };
            cursor = position + 1;
            let step = self.workflow.order[position];
            progressed |= self.consider(out, step, now, false);
        }
        progressed
    }

    /// Scheduling while stopping: steps with the default `if` are skipped, steps with an
    /// explicit `if` (cleanup, notifications) are still evaluated once their needs finished.
    fn schedule_stopping(&mut self, out: &mut Step, now: Time) -> bool {
        let mut progressed = false;
        let Some(stop) = self.stop.clone() else { return false };
        let cancelled = stop.reason != StopReason::Failed;
        let reason = match stop.reason {
            StopReason::Failed => "the execution stopped after a failure",
            StopReason::Cancelled => "the execution was cancelled",
            StopReason::Timeout => "the execution timed out",
        };
        let workflow = Arc::clone(&self.workflow);
        for &step in &workflow.order {
            let state = self.steps[step].state.clone();
            match state {
                StepState::Retrying { .. } => {
                    let id = self.workflow.steps[step].id.clone();
                    self.emit(
                        out,
                        now,
                        EventKind::StepSkipped { step: id, reason: reason.into(), cancelled },
                    );
                    progressed = true;
                }
                StepState::Escalated => {
                    // An open escalation is moot once the execution stops.
                    let id = self.workflow.steps[step].id.clone();
                    self.emit(
                        out,
                        now,
                        EventKind::StepSkipped { step: id, reason: reason.into(), cancelled },
                    );
                    progressed = true;
                }
                StepState::Pending if self.workflow.steps[step].default_if() => {
                    let id = self.workflow.steps[step].id.clone();
                    self.emit(
                        out,
                        now,
                        EventKind::StepSkipped { step: id, reason: reason.into(), cancelled },
                    );
                    progressed = true;
                }
                StepState::Pending if self.missing[step] == 0 => {
                    if self.workflow.max_parallel.is_some_and(|cap| self.running >= cap) {
                        continue;
                    }
                    progressed |= self.consider(out, step, now, true);
                }
                _ => {}
            }
        }
        progressed
    }

    /// Looks at one step whose needs are finished: skip it, or start it if a slot is free.
    fn consider(&mut self, out: &mut Step, step: StepIndex, now: Time, stopping: bool) -> bool {
        let definition = &self.workflow.steps[step];
        let id = definition.id.clone();
        if let StepState::Retrying { next, at } = self.steps[step].state {
            if at > now || !self.due.contains(&self.position[step]) {
                return false;
            }
            if !self.slot_free(step) {
                return false;
            }
            return self.start(out, step, next, now);
        }
        if self.steps[step].state != StepState::Pending {
            return false;
        }
        // Branches: every condition listing this step must have taken its branch.
        for &(condition, taken) in &definition.branches {
            let result = self.steps[condition].outputs.get("result").and_then(Value::as_bool);
            let taken_now =
                self.steps[condition].state == StepState::Succeeded && result == Some(taken);
            if !taken_now {
                let which = if taken { "then" } else { "else" };
                let reason = format!(
                    "branch `{which}` of `{}` was not taken",
                    self.workflow.steps[condition].id
                );
                self.emit(out, now, EventKind::StepSkipped { step: id, reason, cancelled: false });
                return true;
            }
        }
        let status = self.status_view(step, stopping);
        let run = match &definition.when {
            None => Ok(status.success),
            Some(expression) => {
                let view =
                    View { execution: self, attempt: None, status: Some(status), escalation: None };
                evaluate_bool(expression, &view)
            }
        };
        match run {
            Ok(false) => {
                let reason = match &definition.when {
                    None => {
                        let unsuccessful: Vec<String> = definition
                            .needs
                            .iter()
                            .filter(|&&need| self.steps[need].state != StepState::Succeeded)
                            .map(|&need| {
                                format!(
                                    "`{}` {}",
                                    self.workflow.steps[need].id,
                                    self.steps[need].status().name()
                                )
                            })
                            .collect();
                        if unsuccessful.is_empty() {
                            "the execution is stopping".to_owned()
                        } else {
                            format!("needs did not succeed: {}", unsuccessful.join(", "))
                        }
                    }
                    Some(expression) => format!("`if: {}` is false", expression.source()),
                };
                self.emit(out, now, EventKind::StepSkipped { step: id, reason, cancelled: false });
                true
            }
            Ok(true) => {
                if !self.slot_free(step) {
                    return false;
                }
                let attempt = self.steps[step].attempts + 1;
                self.start(out, step, attempt, now)
            }
            Err(error) => {
                // The `if` cannot be evaluated: the step fails without running.
                let attempt = self.steps[step].attempts + 1;
                self.emit(
                    out,
                    now,
                    EventKind::AttemptStarted {
                        step: id,
                        attempt,
                        compensation: false,
                        until: None,
                    },
                );
                let error =
                    ErrorInfo::new(ErrorClass::Expression, format!("`if`: {}", error.message));
                self.attempt_failed(out, Attempt::step(step, attempt), Failure::of(error), now);
                true
            }
        }
    }

    fn slot_free(&self, step: StepIndex) -> bool {
        let definition = &self.workflow.steps[step];
        // Instant steps (condition, set) take no slot.
        if matches!(definition.body, Body::Condition(_) | Body::Set(_)) {
            return true;
        }
        if self.workflow.max_parallel.is_some_and(|cap| self.running >= cap) {
            return false;
        }
        match definition.group {
            Some(group) => self.workflow.groups[group]
                .max_parallel
                .is_none_or(|cap| self.group_running[group] < cap),
            None => true,
        }
    }

    /// Starts attempt `attempt` of `step`. Condition and set steps complete on the spot.
    fn start(&mut self, out: &mut Step, step: StepIndex, attempt: u32, now: Time) -> bool {
        let workflow = Arc::clone(&self.workflow);
        let definition = &workflow.steps[step];
        let id = definition.id.clone();
        match &definition.body {
            Body::Run(_) | Body::Http(_) => {
                self.emit(
                    out,
                    now,
                    EventKind::AttemptStarted {
                        step: id,
                        attempt,
                        compensation: false,
                        until: None,
                    },
                );
                out.effects.push(Effect::Start(Attempt::step(step, attempt)));
            }
            Body::Wait(wait) => {
                let until = match wait {
                    Wait::For(duration) => Ok(now.after(*duration)),
                    Wait::Until(template) => {
                        let view = self.scope(Some(attempt));
                        template.evaluate(&view).map_err(|e| e.message).and_then(
                            |value| match value {
                                Value::String(text) => Time::parse(&text),
                                other => {
                                    Err(format!("`until` must be a timestamp string, got {other}"))
                                }
                            },
                        )
                    }
                };
                match until {
                    Ok(until) => {
                        self.emit(
                            out,
                            now,
                            EventKind::AttemptStarted {
                                step: id,
                                attempt,
                                compensation: false,
                                until: Some(until),
                            },
                        );
                        out.effects.push(Effect::Timer {
                            at: until,
                            timer: Timer::Wait(Attempt::step(step, attempt)),
                        });
                    }
                    Err(message) => {
                        self.emit(
                            out,
                            now,
                            EventKind::AttemptStarted {
                                step: id,
                                attempt,
                                compensation: false,
                                until: None,
                            },
                        );
                        let error =
                            ErrorInfo::new(ErrorClass::Expression, format!("wait: {message}"));
                        self.attempt_failed(
                            out,
                            Attempt::step(step, attempt),
                            Failure::of(error),
                            now,
                        );
                    }
                }
            }
            Body::Condition(condition) => {
                self.emit(
                    out,
                    now,
                    EventKind::AttemptStarted {
                        step: id.clone(),
                        attempt,
                        compensation: false,
                        until: None,
                    },
                );
                let view = self.scope(None);
                match evaluate_bool(&condition.expression, &view) {
                    Ok(result) => {
                        let mut outputs = Map::new();
                        outputs.insert("result".into(), Value::Bool(result));
                        self.emit(
                            out,
                            now,
                            EventKind::AttemptSucceeded {
                                step: id,
                                attempt,
                                compensation: false,
                                outputs,
                            },
                        );
                    }
                    Err(error) => {
                        let error = ErrorInfo::new(
                            ErrorClass::Expression,
                            format!("condition: {}", error.message),
                        );
                        self.attempt_failed(
                            out,
                            Attempt::step(step, attempt),
                            Failure::of(error),
                            now,
                        );
                    }
                }
            }
            Body::Set(entries) => {
                self.emit(
                    out,
                    now,
                    EventKind::AttemptStarted {
                        step: id.clone(),
                        attempt,
                        compensation: false,
                        until: None,
                    },
                );
                let view = self.scope(Some(attempt));
                let mut outputs = Map::new();
                let mut failure = None;
                // All values of the step share one evaluation budget.
                let mut meter = wayline_lang::expr::Meter::default();
                for (key, template) in entries {
                    match crate::render::value_with(template, &view, &mut meter) {
                        Ok(mut value) => {
                            self.secrets.mask_value(&mut value);
                            outputs.insert(key.clone(), value);
                        }
                        Err(error) => {
                            failure = Some(ErrorInfo::new(
                                ErrorClass::Expression,
                                format!("set.{key}: {}", error.message),
                            ));
                            break;
                        }
                    }
                }
                match failure {
                    None => self.emit(
                        out,
                        now,
                        EventKind::AttemptSucceeded {
                            step: id,
                            attempt,
                            compensation: false,
                            outputs,
                        },
                    ),
                    Some(error) => self.attempt_failed(
                        out,
                        Attempt::step(step, attempt),
                        Failure::of(error),
                        now,
                    ),
                }
            }
        }
        true
    }

    fn status_view(&self, step: StepIndex, stopping: bool) -> StatusView {
        let needs = &self.workflow.steps[step].needs;
        let cancelled = self.stop.as_ref().is_some_and(|stop| stop.reason != StopReason::Failed);
        StatusView {
            success: !stopping
                && needs.iter().all(|&need| self.steps[need].state == StepState::Succeeded),
            failure: needs.iter().any(|&need| self.steps[need].state == StepState::Failed),
            cancelled,
        }
    }

    fn schedule_compensations(&mut self, out: &mut Step, now: Time) {
        let candidates: Vec<usize> = self.compensable.iter().rev().copied().collect();
        for position in candidates {
            if self.workflow.max_parallel.is_some_and(|cap| self.running >= cap) {
                break;
            }
            let step = self.workflow.order[position];
            let attempt = match &self.steps[step].compensation {
                Compensation::Ready => self.steps[step].compensation_attempts + 1,
                Compensation::Retrying { next, at } if *at <= now => *next,
                _ => continue,
            };
            let id = self.workflow.steps[step].id.clone();
            self.emit(
                out,
                now,
                EventKind::AttemptStarted { step: id, attempt, compensation: true, until: None },
            );
            out.effects.push(Effect::Start(Attempt::compensation(step, attempt)));
        }
    }

    fn finish(&mut self, out: &mut Step, now: Time) {
        let compensation_failed =
            self.steps.iter().any(|run| matches!(run.compensation, Compensation::Failed(_)));
        let (outcome, error) = match self.stop.clone() {
            Some(stop) => {
                let base = match stop.reason {
                    StopReason::Cancelled => Outcome::Cancelled,
                    StopReason::Failed if stop.rollback => Outcome::RolledBack,
                    StopReason::Failed | StopReason::Timeout => Outcome::Failed,
                };
                if compensation_failed {
                    let failed: Vec<&str> = self
                        .steps
                        .iter()
                        .enumerate()
                        .filter(|(_, run)| matches!(run.compensation, Compensation::Failed(_)))
                        .map(|(index, _)| self.workflow.steps[index].id.as_str())
                        .collect();
                    let detail = stop.error.map(|e| format!("{}; ", e.message)).unwrap_or_default();
                    (
                        Outcome::Failed,
                        Some(ErrorInfo::new(
                            ErrorClass::Failure,
                            format!(
                                "{detail}rollback_failed: compensation of {} failed",
                                failed.join(", ")
                            ),
                        )),
                    )
                } else {
                    (base, stop.error)
                }
            }
            None => {
                let failed: Vec<usize> = (0..self.steps.len())
                    .filter(|&i| self.steps[i].state == StepState::Failed)
                    .collect();
                let tolerated = failed.iter().all(|&i| {
                    let step = &self.workflow.steps[i];
                    step.on_failure == Strategy::Continue && step.allow_failure
                });
                if failed.is_empty() || tolerated {
                    (Outcome::Succeeded, None)
                } else {
                    let names: Vec<&str> =
                        failed.iter().map(|&i| self.workflow.steps[i].id.as_str()).collect();
                    let first = self.steps[failed[0]]
                        .error
                        .as_ref()
                        .map(|e| e.class)
                        .unwrap_or(ErrorClass::Failure);
                    (
                        Outcome::Failed,
                        Some(ErrorInfo::new(
                            first,
                            format!(
                                "step{} failed: {}",
                                if names.len() > 1 { "s" } else { "" },
                                names.join(", ")
                            ),
                        )),
                    )
                }
            }
        };
        self.emit(out, now, EventKind::Finished { outcome, error });
        out.effects.push(Effect::Finished);
    }

    fn evaluate_env(&mut self) -> Result<(), EvalError> {
        let mut env = Map::new();
        for (key, template) in &self.workflow.env {
            let view = View { execution: self, attempt: None, status: None, escalation: None };
            let value = template.render(&view, |text| text.to_owned())?;
            env.insert(key.clone(), Value::String(value));
        }
        self.env = Value::Object(env);
        Ok(())
    }

    // ----- folding -----

    /// Applies one journal event to the state. This is the only place state changes.
    pub fn apply(&mut self, event: &Event) -> Result<(), String> {
        if event.v > wayline_journal::FORMAT {
            return Err(format!(
                "event {} is in journal format {}, newer than this wayline reads ({}); upgrade wayline",
                event.seq,
                event.v,
                wayline_journal::FORMAT
            ));
        }
        if event.seq != self.seq + 1 {
            return Err(format!("event {} does not follow event {}", event.seq, self.seq));
        }
        let now = event.time;
        match &event.kind {
            EventKind::Created { .. } => return Err("`created` can only be the first event".into()),
            EventKind::Started => self.started_at = Some(now),
            EventKind::Recovered { owner } => self.owner = Some(owner.clone()),
            EventKind::AttemptStarted { step, attempt, compensation, until } => {
                let index = self.index(step)?;
                let run = &mut self.steps[index];
                if *compensation {
                    run.compensation = Compensation::Running {
                        attempt: *attempt,
                        since: now,
                        cancelling: false,
                        process: None,
                    };
                    run.compensation_attempts = *attempt;
                    self.compensable.remove(&self.position[index]);
                    self.running += 1;
                } else {
                    if run.started_at.is_none() {
                        run.started_at = Some(now);
                    }
                    if run.budget_started.is_none() {
                        run.budget_started = Some(now);
                    }
                    run.attempts = *attempt;
                    run.state = StepState::Running {
                        attempt: *attempt,
                        since: now,
                        until: *until,
                        cancelling: false,
                        process: None,
                    };
                    self.ready.remove(&self.position[index]);
                    self.due.remove(&self.position[index]);
                    let definition = &self.workflow.steps[index];
                    if !matches!(definition.body, Body::Condition(_) | Body::Set(_)) {
                        self.running += 1;
                        if let Some(group) = definition.group {
                            self.group_running[group] += 1;
                        }
                    }
                }
            }
            EventKind::AttemptRunning { step, attempt, compensation, process } => {
                let index = self.index(step)?;
                let run = &mut self.steps[index];
                let slot = if *compensation {
                    match &mut run.compensation {
                        Compensation::Running { attempt: a, process, .. } if a == attempt => {
                            Some(process)
                        }
                        _ => None,
                    }
                } else {
                    match &mut run.state {
                        StepState::Running { attempt: a, process, .. } if a == attempt => {
                            Some(process)
                        }
                        _ => None,
                    }
                };
                match slot {
                    Some(slot) => *slot = Some(process.clone()),
                    None => {
                        return Err(format!(
                            "the journal records a process for attempt {attempt} of `{step}`, which is not running"
                        ));
                    }
                }
            }
            EventKind::AttemptSucceeded { step, compensation, outputs, .. } => {
                let index = self.index(step)?;
                if *compensation {
                    self.release_compensation_slot(index);
                    self.steps[index].compensation = Compensation::Succeeded;
                    self.compensation_done(index);
                } else {
                    self.release_slot(index);
                    let run = &mut self.steps[index];
                    run.outputs = outputs.clone();
                    run.error = None;
                    run.state = StepState::Succeeded;
                    run.finished_at = Some(now);
                    self.done(index);
                }
            }
            EventKind::AttemptFailed { step, compensation, error, outputs, terminal, .. } => {
                let index = self.index(step)?;
                if *compensation {
                    self.release_compensation_slot(index);
                    if *terminal {
                        self.steps[index].compensation = Compensation::Failed(error.clone());
                        self.compensation_done(index);
                    }
                } else {
                    self.release_slot(index);
                    let run = &mut self.steps[index];
                    run.error = Some(error.clone());
                    run.outputs = outputs.clone();
                    if *terminal {
                        run.finished_at = Some(now);
                        run.state = StepState::Failed;
                        // Escalation, if any, follows as its own event.
                        if self.workflow.steps[index].on_failure != Strategy::Escalate
                            || self.stop.is_some()
                        {
                            self.done(index);
                        }
                    }
                }
            }
            EventKind::AttemptCancelled { step, compensation, .. } => {
                let index = self.index(step)?;
                if *compensation {
                    self.release_compensation_slot(index);
                    self.steps[index].compensation = Compensation::Failed(ErrorInfo::new(
                        ErrorClass::Fatal,
                        "compensation cancelled",
                    ));
                    self.compensation_done(index);
                } else {
                    self.release_slot(index);
                    let run = &mut self.steps[index];
                    run.state = StepState::Cancelled;
                    run.finished_at = Some(now);
                    self.done(index);
                }
            }
            EventKind::RetryScheduled { step, attempt, compensation, at, .. } => {
                let index = self.index(step)?;
                if *compensation {
                    self.steps[index].compensation =
                        Compensation::Retrying { next: *attempt, at: *at };
                } else {
                    self.steps[index].state = StepState::Retrying { next: *attempt, at: *at };
                }
            }
            EventKind::StepSkipped { step, reason, cancelled } => {
                let index = self.index(step)?;
                let run = &mut self.steps[index];
                run.state = if *cancelled {
                    StepState::Cancelled
                } else {
                    StepState::Skipped { reason: reason.clone() }
                };
                run.finished_at = Some(now);
                self.ready.remove(&self.position[index]);
                self.due.remove(&self.position[index]);
                self.escalated.remove(&index);
                self.done(index);
            }
            EventKind::StepEscalated { step, error } => {
                let index = self.index(step)?;
                let run = &mut self.steps[index];
                run.state = StepState::Escalated;
                run.error = Some(error.clone());
                self.escalated.insert(index);
            }
            EventKind::Decided { step, decision, outputs, actor } => {
                let index = self.index(step)?;
                self.escalated.remove(&index);
                let decision = *decision;
                let run = &mut self.steps[index];
                run.decision = Some((decision, actor.clone()));
                match decision {
                    Decision::Retry => {
                        run.state = StepState::Pending;
                        run.budget_base = run.attempts;
                        run.budget_started = None;
                        run.finished_at = None;
                        self.ready.insert(self.position[index]);
                    }
                    Decision::Skip if !outputs.is_empty() => {
                        // It counts as succeeded with these outputs; its failure stays on
                        // record beside the decision.
                        run.state = StepState::Succeeded;
                        run.outputs = outputs.clone();
                        run.finished_at = Some(now);
                        self.done(index);
                    }
                    Decision::Skip => {
                        run.state = StepState::Skipped { reason: "skipped by decision".into() };
                        run.finished_at = Some(now);
                        self.done(index);
                    }
                    Decision::Fail | Decision::Rollback => {
                        run.state = StepState::Failed;
                        run.finished_at = Some(now);
                        self.done(index);
                    }
                }
            }
            EventKind::Paused { actor, until } => {
                self.pause = Some(Pause { actor: actor.clone(), until: *until })
            }
            EventKind::Resumed { .. } => self.pause = None,
            EventKind::Stopping { reason, rollback, error, .. } => {
                self.stop =
                    Some(Stop { reason: *reason, rollback: *rollback, error: error.clone() });
                self.pause = None;
                self.due.clear();
            }
            EventKind::RollbackStarted => self.begin_rollback(),
            EventKind::Finished { outcome, error } => {
                self.outcome = Some((*outcome, error.clone()));
                self.finished_at = Some(now);
            }
        }
        self.seq = event.seq;
        Ok(())
    }

    fn index(&self, step: &str) -> Result<StepIndex, String> {
        self.workflow.step(step).ok_or_else(|| {
            format!("the journal names step `{step}`, which the workflow does not have")
        })
    }

    fn release_slot(&mut self, index: StepIndex) {
        if !matches!(self.steps[index].state, StepState::Running { .. }) {
            return;
        }
        let definition = &self.workflow.steps[index];
        if matches!(definition.body, Body::Condition(_) | Body::Set(_)) {
            return;
        }
        self.running = self.running.saturating_sub(1);
        if let Some(group) = definition.group {
            self.group_running[group] = self.group_running[group].saturating_sub(1);
        }
    }

    fn release_compensation_slot(&mut self, index: StepIndex) {
        if matches!(self.steps[index].compensation, Compensation::Running { .. }) {
            self.running = self.running.saturating_sub(1);
        }
    }

    /// A step reached a terminal state: its dependents get closer to ready.
    fn done(&mut self, index: StepIndex) {
        let workflow = Arc::clone(&self.workflow);
        for &dependent in &workflow.dependents[index] {
            self.missing[dependent] = self.missing[dependent].saturating_sub(1);
            if self.missing[dependent] == 0 && self.steps[dependent].state == StepState::Pending {
                self.ready.insert(self.position[dependent]);
            }
        }
    }

    fn begin_rollback(&mut self) {
        self.rolling_back = true;
        let workflow = Arc::clone(&self.workflow);
        // Only succeeded steps take part; a step's compensation waits for those of its
        // succeeded dependents.
        for index in 0..self.steps.len() {
            if self.steps[index].state != StepState::Succeeded {
                continue;
            }
            let missing = workflow.dependents[index]
                .iter()
                .filter(|&&d| self.steps[d].state == StepState::Succeeded)
                .count();
            self.steps[index].compensation_missing = missing as u32;
            self.steps[index].compensation = Compensation::Waiting;
        }
        for &index in workflow.order.iter().rev() {
            if self.steps[index].compensation == Compensation::Waiting
                && self.steps[index].compensation_missing == 0
            {
                self.compensation_ready(index);
            }
        }
    }

    fn compensation_ready(&mut self, index: StepIndex) {
        if self.workflow.steps[index].compensate.is_some() {
            self.steps[index].compensation = Compensation::Ready;
            self.compensable.insert(self.position[index]);
        } else {
            self.steps[index].compensation = Compensation::Nothing;
            self.compensation_done(index);
        }
    }

    /// A compensation finished (or there was nothing to compensate): the compensations of the
    /// step's needs get closer to ready.
    fn compensation_done(&mut self, index: StepIndex) {
        self.compensable.remove(&self.position[index]);
        let workflow = Arc::clone(&self.workflow);
        let mut stack = vec![index];
        while let Some(done) = stack.pop() {
            for &need in &workflow.steps[done].needs {
                if self.steps[need].compensation != Compensation::Waiting {
                    continue;
                }
                let run = &mut self.steps[need];
                run.compensation_missing = run.compensation_missing.saturating_sub(1);
                if run.compensation_missing == 0 {
                    if workflow.steps[need].compensate.is_some() {
                        run.compensation = Compensation::Ready;
                        self.compensable.insert(self.position[need]);
                    } else {
                        run.compensation = Compensation::Nothing;
                        stack.push(need);
                    }
                }
            }
        }
    }
}

fn evaluate_bool(expression: &Expression, scope: &dyn Scope) -> Result<bool, EvalError> {
    match expression.evaluate(scope)? {
        Value::Bool(value) => Ok(value),
        other => Err(EvalError {
            message: format!("`{}` must be true or false, but it is {other}", expression.source()),
        }),
    }
}

/// What an expression evaluated for one execution can read.
pub struct View<'a> {
    execution: &'a Execution,
    attempt: Option<u32>,
    status: Option<StatusView>,
    escalation: Option<Value>,
}

impl Scope for View<'_> {
    fn inputs(&self) -> std::borrow::Cow<'_, Value> {
        std::borrow::Cow::Borrowed(&self.execution.inputs)
    }

    fn step(&self, id: &str) -> Option<Value> {
        let index = self.execution.workflow.step(id)?;
        let run = &self.execution.steps[index];
        Some(serde_json::json!({ "status": run.status().name(), "outputs": run.outputs }))
    }

    fn env(&self) -> std::borrow::Cow<'_, Value> {
        std::borrow::Cow::Borrowed(&self.execution.env)
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.execution.secrets.get(name).map(str::to_owned)
    }

    fn execution(&self) -> Value {
        let started = self.execution.started_at.unwrap_or(self.execution.created_at);
        serde_json::json!({ "id": self.execution.id, "started_at": started.rfc3339() })
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
