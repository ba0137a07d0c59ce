//! The execution state machine: state is a fold of journal events; decisions are pure.
//!
//! [`Execution::handle`] takes one input (start, an attempt's result, a timer, a control
//! request) and the current time, and returns the events to commit and the effects to carry
//! out once they are committed. Journal-derived state changes only in [`Execution::apply`]
//! (`fold.rs`, whose state no other file can write), the same function that folds a stored
//! journal, so the state after `handle` is exactly the fold of the journal: replaying a
//! journal reproduces the execution. What only the live engine knows (cancels sent, timers
//! that fired, the evaluated workflow `env`) is kept apart in `Transient`, which decisions may
//! change and `recover` rebuilds after a replay.
//!
//! Decisions are split by the input they answer: `recover.rs` (start and takeover),
//! `attempt.rs` (starting attempts and their results), `timer.rs`, `control.rs`; every input
//! ends in `schedule.rs`, which hands over to `rollback.rs` and `finish.rs`. `scope.rs` is what
//! expressions read, `waiting.rs` says why a step is not running.

mod attempt;
mod control;
mod finish;
mod fold;
mod recover;
mod redrive;
mod rollback;
mod schedule;
mod scope;
mod timer;
mod waiting;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use wayline_journal::{
    Actor, AttemptKind, Decision, ErrorInfo, Event, EventKind, Masker, Outcome, Process, Status,
    StepStatus, Time,
};
use wayline_lang::model::{StepIndex, Workflow};

use fold::State;
pub use scope::{View, item_outputs};

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
    /// Between its first attempt and its end: an attempt in flight, or the next one due.
    Active(AttemptState),
    Succeeded,
    Failed,
    Skipped {
        reason: String,
    },
    Cancelled,
    /// Failed under `escalate`, waiting for a decision.
    Escalated,
    /// A fan-out step whose items are recorded (`fanned_out`): its items run, and it ends
    /// once they have.
    FannedOut,
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

/// The attempts of a step's body or of its compensation, while one is in flight or the next
/// is due: the same lifecycle for both.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptState {
    /// An attempt is in flight. `until` is set for a wait step.
    Running {
        attempt: u32,
        since: Time,
        until: Option<Time>,
        /// The process running it (command steps), once recorded.
        process: Option<Process>,
    },
    /// Between attempts: attempt `next` may start at `at`.
    Retrying { next: u32, at: Time },
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
    /// An attempt in flight, or the next one due.
    Active(AttemptState),
    Succeeded,
    Failed(ErrorInfo),
    /// Nothing to compensate (no `compensate` block): passes straight through.
    Nothing,
    /// A fan-out step's succeeded items are being compensated, one at a time, the last item
    /// first.
    Items,
}

/// Everything the execution knows about one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRun {
    pub state: StepState,
    /// Attempts started, over the step's whole life.
    pub attempts: u32,
    /// Attempts that belong to earlier budgets (a `retry` decision starts a fresh budget).
    pub budget_base: u32,
    /// When the first attempt of the current budget started.
    pub budget_started: Option<Time>,
    /// Attempts of the current budget that were lost (their owner died): they are retried at
    /// once and do not count against `max_attempts`, up to [`crate::retry::MAX_LOST`].
    pub lost: u32,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub outputs: Map<String, Value>,
    pub error: Option<ErrorInfo>,
    pub compensation: Compensation,
    pub compensation_attempts: u32,
    /// Compensation attempts that belong to earlier rollbacks (a rerun rolls back afresh).
    pub compensation_base: u32,
    /// Compensation attempts of the current rollback that were lost.
    pub compensation_lost: u32,
    /// The last decision a person (or the escalation timeout) made about the step.
    pub decision: Option<(Decision, Actor)>,
    /// Who last changed the step's outputs by hand (`wayline patch`), and why.
    pub patched: Option<Actor>,
    /// Compensations of succeeded dependents not yet finished.
    compensation_missing: u32,
    /// A fan-out step's items, once recorded.
    pub items: Option<Box<ItemRuns>>,
}

/// The items of a fan-out step and where each is: every item is an instance of the step with
/// a run of its own (attempts, retries, outputs, compensation).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRuns {
    /// The items, as `fanned_out` recorded them.
    pub values: Vec<Value>,
    /// One per item, in item order.
    pub runs: Vec<StepRun>,
    /// Items not started yet, in item order.
    pending: BTreeSet<u32>,
    /// Items between their first attempt and their end (running, or waiting for a retry).
    active: u32,
    /// Items with an attempt in flight that takes a slot (for the step's `max_parallel`).
    running: u32,
    /// Items that failed terminally.
    failed: u32,
    /// What the step becomes, once its items stopped, because the execution stopped: skipped
    /// or cancelled.
    stopped: Option<StepState>,
}

impl ItemRuns {
    /// Items not started yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Items with an attempt in flight that takes a slot.
    pub fn running(&self) -> u32 {
        self.running
    }

    /// Items that failed terminally.
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// The first item not started yet.
    fn next_pending(&self) -> Option<u32> {
        self.pending.first().copied()
    }
}

impl StepRun {
    pub fn status(&self) -> StepStatus {
        match (&self.state, &self.compensation) {
            (_, Compensation::Active(_) | Compensation::Items) => StepStatus::Compensating,
            (_, Compensation::Succeeded) => StepStatus::Compensated,
            (StepState::Pending, _) => StepStatus::Pending,
            (StepState::Active(AttemptState::Running { .. }), _) => StepStatus::Running,
            (StepState::Active(AttemptState::Retrying { .. }), _) => StepStatus::Retrying,
            (StepState::Succeeded, _) => StepStatus::Succeeded,
            (StepState::Failed, _) => StepStatus::Failed,
            (StepState::Skipped { .. }, _) => StepStatus::Skipped,
            (StepState::Cancelled, _) => StepStatus::Cancelled,
            (StepState::Escalated, _) => StepStatus::Escalated,
            (StepState::FannedOut, _) => StepStatus::Running,
        }
    }

    /// The run of `item`, or this run itself for `None`.
    pub fn instance(&self, item: Option<u32>) -> Option<&StepRun> {
        match item {
            None => Some(self),
            Some(item) => self.items.as_ref()?.runs.get(item as usize),
        }
    }

    /// The attempts of the step's body or of its compensation, while one is in flight or the
    /// next is due. Notifications are not in the journal: never.
    pub fn active(&self, kind: AttemptKind) -> Option<&AttemptState> {
        match (kind, &self.state, &self.compensation) {
            (AttemptKind::Step, StepState::Active(active), _) => Some(active),
            (AttemptKind::Compensation, _, Compensation::Active(active)) => Some(active),
            _ => None,
        }
    }

    /// Runs again with a fresh attempt budget (a `retry` decision, a rerun): its attempt
    /// numbers continue.
    fn fresh_budget(&mut self) {
        self.state = StepState::Pending;
        self.budget_base = self.attempts;
        self.budget_started = None;
        self.lost = 0;
        self.finished_at = None;
    }

    /// Out of any rollback: a rerun may roll back afresh.
    fn compensation_afresh(&mut self) {
        self.compensation = Compensation::None;
        self.compensation_base = self.compensation_attempts;
        self.compensation_lost = 0;
        self.compensation_missing = 0;
    }

    fn new() -> StepRun {
        StepRun {
            state: StepState::Pending,
            attempts: 0,
            budget_base: 0,
            budget_started: None,
            lost: 0,
            started_at: None,
            finished_at: None,
            outputs: Map::new(),
            error: None,
            compensation: Compensation::None,
            compensation_attempts: 0,
            compensation_base: 0,
            compensation_lost: 0,
            decision: None,
            patched: None,
            compensation_missing: 0,
            items: None,
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

    /// Attempt `number` of the body of `item` of fan-out step `step` (`None`: the step's own).
    pub fn of_item(step: StepIndex, item: Option<u32>, number: u32) -> Attempt {
        Attempt { step, item, number, kind: AttemptKind::Step }
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
    /// Open a finished execution again (`wayline rerun`).
    Redrive(Redrive),
}

/// A request to run part of a finished execution again, in place.
#[derive(Debug, Clone, Default)]
pub struct Redrive {
    /// Run these steps and everything downstream of them again. Empty: every step that did
    /// not succeed (failed, cancelled, skipped because of a failure or a stop), and what
    /// depends on them.
    pub from: Vec<String>,
    /// Inputs whose values change (already checked against the declared inputs).
    pub inputs: Map<String, Value>,
    pub actor: Actor,
}

/// How an attempt ended, as the runtime reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    Succeeded { outputs: Map<String, Value> },
    Failed { error: ErrorInfo, outputs: Map<String, Value>, retry_after: Option<Duration> },
    Cancelled,
}

/// A request from a person (CLI, API) to steer the execution.
#[derive(Debug, Clone)]
pub enum Control {
    Pause {
        actor: Actor,
        until: Option<Time>,
    },
    Resume {
        actor: Actor,
    },
    Cancel {
        actor: Actor,
        rollback: bool,
    },
    Decide {
        step: String,
        decision: Decision,
        outputs: Map<String, Value>,
        actor: Actor,
    },
    /// Pause before these steps start (before every step with `every`).
    Break {
        steps: Vec<String>,
        every: bool,
        actor: Actor,
    },
    /// At a breakpoint (or a pause): start the next ready steps, pause again once they finish.
    Step {
        actor: Actor,
    },
    /// While paused: change the outputs of a succeeded step, or inputs, for the steps still
    /// to run. Input values are already typed (checked again here).
    Patch {
        step: Option<String>,
        outputs: Map<String, Value>,
        inputs: Map<String, Value>,
        actor: Actor,
    },
}

impl Control {
    /// Who asked.
    pub fn actor(&self) -> &Actor {
        match self {
            Control::Pause { actor, .. }
            | Control::Resume { actor }
            | Control::Cancel { actor, .. }
            | Control::Decide { actor, .. }
            | Control::Break { actor, .. }
            | Control::Step { actor }
            | Control::Patch { actor, .. } => actor,
        }
    }
}

/// Why a control request does not apply to the execution as it is. One variant per reason, so
/// that a caller can tell "no such step" from "not now".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// The execution already reached its final status.
    Finished { id: String, status: Status },
    /// A pause while the execution is stopping.
    Stopping,
    /// A resume of an execution that is not paused.
    NotPaused { id: String, status: Status },
    /// A cancel while the execution is already stopping.
    AlreadyStopping,
    /// A decision about a step the workflow does not have.
    UnknownStep { workflow: String, step: String },
    /// A decision about a step that is not waiting for one.
    NotEscalated { step: String, status: StepStatus },
    /// Outputs given with a decision other than `skip`.
    OutputsWithoutSkip,
    /// Outputs given for a fan-out step, whose outputs are its items'.
    OutputsOfFanOut { step: String },
    /// A breakpoint before a step that has already started.
    AlreadyStarted { step: String, status: StepStatus },
    /// A patch or a step while the execution runs on.
    NotPausedForPatch { id: String, status: Status },
    /// A patch of the outputs of a step that has not succeeded.
    NotSucceeded { step: String, status: StepStatus },
    /// A patch that names no output and no input, or an input the workflow does not have or
    /// a value of the wrong type.
    BadPatch(String),
    /// A rerun of an execution that has not finished.
    NotFinished { id: String, status: Status },
    /// A rerun without `--from` of an execution in which every step succeeded.
    NothingToRerun { id: String },
    /// A rerun `--from` a step whose need did not succeed and does not run again: the step
    /// would be skipped again.
    NeedNotRerun { step: String, need: String, status: StepStatus },
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Finished { id, status } => {
                write!(f, "execution {id} already finished ({status})")
            }
            Rejected::Stopping => f.write_str("the execution is stopping; it cannot be paused"),
            Rejected::NotPaused { id, status } => {
                write!(f, "execution {id} is not paused ({status})")
            }
            Rejected::AlreadyStopping => f.write_str("the execution is already stopping"),
            Rejected::UnknownStep { workflow, step } => {
                write!(f, "workflow `{workflow}` has no step `{step}`")
            }
            Rejected::NotEscalated { step, status } => write!(
                f,
                "step `{step}` is not escalated (it is {status}); only escalated steps take a decision"
            ),
            Rejected::OutputsWithoutSkip => f.write_str("outputs can only be given with `skip`"),
            Rejected::OutputsOfFanOut { step } => write!(
                f,
                "step `{step}` fans out: its outputs are its items' outputs and cannot be given by hand"
            ),
            Rejected::AlreadyStarted { step, status } => write!(
                f,
                "step `{step}` has already started (it is {status}); a breakpoint before it would never be reached"
            ),
            Rejected::NotPausedForPatch { id, status } => write!(
                f,
                "execution {id} is {status}; it must be paused (at a breakpoint, or by `wayline pause`) first"
            ),
            Rejected::NotSucceeded { step, status } => write!(
                f,
                "step `{step}` is {status}; only the outputs of a succeeded step can be patched"
            ),
            Rejected::BadPatch(message) => f.write_str(message),
            Rejected::NotFinished { id, status } => write!(
                f,
                "execution {id} is {status}; only a finished execution can be rerun (pause, cancel or wait for it first)"
            ),
            Rejected::NothingToRerun { id } => write!(
                f,
                "every step of execution {id} succeeded; name the steps to run again with --from STEP"
            ),
            Rejected::NeedNotRerun { step, need, status } => write!(
                f,
                "step `{step}` needs `{need}`, which {status} and does not run again, so `{step}` would be skipped again; add --from {need}, or rerun without --from"
            ),
        }
    }
}

impl std::error::Error for Rejected {}

/// What handling one input decided.
#[derive(Debug, Default)]
pub struct Transition {
    /// Commit these first…
    pub events: Vec<Event>,
    /// …then do these.
    pub effects: Vec<Effect>,
}

/// The data of an execution's first event, checked.
pub struct Created {
    pub id: String,
    pub workflow: Arc<Workflow>,
    pub source: Arc<str>,
    pub path: String,
    pub inputs: Map<String, Value>,
    /// The imported files' texts, by path relative to the workflow file.
    pub imports: std::collections::BTreeMap<String, String>,
}

/// One execution of a workflow.
#[derive(Debug, Clone)]
pub struct Execution {
    workflow: Arc<Workflow>,
    secrets: Arc<Secrets>,
    /// What the journal says; only the fold can change it.
    state: State,
    /// What the live engine knows besides.
    transient: Transient,
}

impl Execution {
    /// A new execution and its first event, to be committed before anything else.
    pub fn create(created: Created, secrets: Arc<Secrets>, now: Time) -> (Execution, Event) {
        let kind = EventKind::Created {
            workflow: created.workflow.name.clone(),
            source: created.source.to_string(),
            path: created.path.clone(),
            inputs: created.inputs.clone(),
            imports: created.imports.clone(),
        };
        let event = Event::new(1, now, kind);
        (Execution::new(created, secrets, now), event)
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
        let EventKind::Created { source, path, inputs, imports, .. } = &first.kind else {
            return Err("the journal does not start with `created`".into());
        };
        let created = Created {
            id,
            workflow,
            source: source.as_str().into(),
            path: path.clone(),
            inputs: inputs.clone(),
            imports: imports.clone(),
        };
        let mut execution = Execution::new(created, secrets, first.time);
        for event in &events[1..] {
            if event.seq != execution.seq() + 1 {
                return Err(format!(
                    "the journal jumps from event {} to {}",
                    execution.seq(),
                    event.seq
                ));
            }
            execution.apply(event)?;
        }
        Ok(execution)
    }

    // ----- reading -----

    pub fn id(&self) -> &str {
        self.state.id()
    }

    pub fn workflow(&self) -> &Arc<Workflow> {
        &self.workflow
    }

    pub fn secrets(&self) -> &Arc<Secrets> {
        &self.secrets
    }

    pub fn inputs(&self) -> &Value {
        self.state.inputs()
    }

    pub fn path(&self) -> &str {
        self.state.path()
    }

    pub fn source(&self) -> &str {
        self.state.source()
    }

    pub fn seq(&self) -> u64 {
        self.state.seq()
    }

    /// From now on, starts nothing and finishes nothing: what is running ends and is recorded,
    /// and the rest is left for the next owner (an engine that drains before it stops).
    pub fn hold(&mut self) {
        self.transient.held = true;
    }

    pub fn created_at(&self) -> Time {
        self.state.created_at()
    }

    pub fn started_at(&self) -> Option<Time> {
        self.state.started_at()
    }

    pub fn finished_at(&self) -> Option<Time> {
        self.state.finished_at()
    }

    pub fn steps(&self) -> &[StepRun] {
        self.state.steps()
    }

    pub fn outcome(&self) -> Option<&(Outcome, Option<ErrorInfo>)> {
        self.state.outcome()
    }

    /// The workflow's `outputs`, evaluated when the execution succeeded.
    pub fn outputs(&self) -> &Map<String, Value> {
        self.state.outputs()
    }

    /// Who paused the execution (a person, or `breakpoint`), why, and until when, while it is
    /// paused.
    pub fn paused(&self) -> Option<(&Actor, Option<Time>)> {
        self.state.pause().map(|pause| (&pause.actor, pause.until))
    }

    /// The latest recorded owner (after a takeover).
    pub fn owner(&self) -> Option<&str> {
        self.state.owner()
    }

    pub fn status(&self) -> Status {
        let state = &self.state;
        if let Some((outcome, _)) = state.outcome() {
            return (*outcome).into();
        }
        if state.started_at().is_none() {
            Status::Pending
        } else if state.stop().is_none() && !state.escalated().is_empty() {
            Status::Escalated
        } else if state.stop().is_none() && state.pause().is_some() {
            Status::Paused
        } else {
            Status::Running
        }
    }

    /// The processes of attempts in flight, as their owners recorded them: after a takeover,
    /// those on this host are stopped before the steps run again.
    pub fn processes(&self) -> Vec<&Process> {
        self.steps()
            .iter()
            .flat_map(|run| {
                let items = run.items.iter().flat_map(|items| items.runs.iter());
                std::iter::once(run).chain(items)
            })
            .flat_map(|run| [AttemptKind::Step, AttemptKind::Compensation].map(|k| run.active(k)))
            .filter_map(|active| match active {
                Some(AttemptState::Running { process: Some(process), .. }) => Some(process),
                _ => None,
            })
            .collect()
    }

    /// The journal-derived state, for comparing folds: the live state of an execution equals
    /// the fold of its journal (ARCHITECTURE.md, "Invariants"). What only the live engine
    /// knows (cancels sent, timers that fired, the evaluated `env`) is not part of it.
    pub fn journal_state(&self) -> &(impl std::fmt::Debug + PartialEq + use<>) {
        &self.state
    }

    // ----- deciding -----

    /// Handles one input at time `now`: the events to commit and the effects to carry out
    /// after the commit. Control requests that do not apply are rejected without events.
    pub fn handle(&mut self, input: Input, now: Time) -> Result<Transition, Rejected> {
        let mut out = Transition::default();
        if let Input::Redrive(redrive) = input {
            self.redrive(&mut out, redrive, now)?;
            self.schedule(&mut out, now);
            return Ok(out);
        }
        if self.state.outcome().is_some() {
            return match input {
                Input::Control(_) => {
                    Err(Rejected::Finished { id: self.id().to_owned(), status: self.status() })
                }
                _ => Ok(out),
            };
        }
        match input {
            Input::Start => {
                if self.state.started_at().is_some() {
                    return Ok(out);
                }
                self.start(&mut out, now);
            }
            Input::Recover { owner } => self.recover(&mut out, owner, now),
            Input::Running { attempt, process } => {
                self.process_started(&mut out, attempt, process, now);
                return Ok(out);
            }
            Input::Finished { attempt, result } => {
                self.attempt_finished(&mut out, attempt, result, now)
            }
            Input::Timer(timer) => self.timer(&mut out, timer, now),
            Input::Control(control) => self.control(&mut out, control, now)?,
            Input::Redrive(_) => {} // handled above: the only input a finished execution takes
        }
        self.schedule(&mut out, now);
        Ok(out)
    }

    fn new(created: Created, secrets: Arc<Secrets>, now: Time) -> Execution {
        let workflow = Arc::clone(&created.workflow);
        Execution {
            workflow,
            secrets,
            state: State::created(created, now),
            transient: Transient::new(),
        }
    }

    /// Records one event of a decision: folds it into the state and adds it to the events to
    /// commit.
    fn emit(&mut self, out: &mut Transition, now: Time, kind: EventKind) {
        let event = Event::new(self.seq() + 1, now, kind);
        // Events made here are valid by construction; a failure would be a bug in the core.
        if let Err(error) = self.apply(&event) {
            debug_assert!(false, "the core emitted an event it cannot apply: {error}");
        }
        out.events.push(event);
    }
}

/// A step (`None`) or one item of a fan-out step, by the step's position in dependency order:
/// the unit that is ready, due, started and compensated.
type Instance = (usize, Option<u32>);

/// What the live engine knows about an execution that its journal does not say. Decisions may
/// change it; a replay starts it empty, and `recover` rebuilds what matters: it re-arms every
/// timer (so fired timers fire again), records the attempts that were in flight as lost (so
/// there is nothing left to cancel), and evaluates `env` again.
#[derive(Debug, Clone)]
struct Transient {
    /// Attempts a cancel was sent to, so that none is sent twice (at most one a step: an
    /// execution stops once). A cancel is a request to an executor, not a fact: the journal
    /// records how the attempt ended.
    cancels_sent: BTreeSet<Attempt>,
    /// Positions (in dependency order) of retrying steps (and items) whose retry timer fired.
    /// A timer firing is not recorded: the attempt it lets start is.
    due: BTreeSet<Instance>,
    /// Positions of compensations whose retry timer fired, for the same reason.
    compensations_due: BTreeSet<Instance>,
    /// The evaluated workflow `env`, for `env.*` in expressions. It follows from the inputs
    /// and the secrets, and may hold secret values, which the journal never does.
    env: Value,
    /// The engine is draining (its server stops): nothing new is decided, results are still
    /// recorded. Not a fact of the execution either: the next owner schedules as usual.
    held: bool,
    /// Ready steps the walk of one scheduling round found at their breakpoint.
    breaking: BTreeSet<StepIndex>,
}

impl Transient {
    fn new() -> Transient {
        Transient {
            cancels_sent: BTreeSet::new(),
            due: BTreeSet::new(),
            compensations_due: BTreeSet::new(),
            env: Value::Object(Map::new()),
            held: false,
            breaking: BTreeSet::new(),
        }
    }
}
