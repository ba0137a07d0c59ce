//! The fold: how each journal event changes an execution's state, and the only code that can.
//!
//! The state's fields are private to this file, so "every state change goes through
//! `apply`" is held by the compiler, not by review: decisions read the state through the
//! accessors below and change it only by emitting events. (The fields of `StepRun`, `Stop` and
//! `Pause` are readable, but only this file holds them mutably.) The live state therefore
//! always equals the fold of the journal.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use wayline_journal::{
    Actor, Decision, ErrorClass, ErrorInfo, Event, EventKind, Outcome, StopReason, Time,
};
use wayline_lang::model::{Body, Step, StepIndex, Strategy, Workflow};

use super::{AttemptState, Compensation, Created, Execution, StepRun, StepState};

impl Execution {
    /// Applies one journal event to the state: the same function folds a stored journal and
    /// records the events of a decision.
    pub fn apply(&mut self, event: &Event) -> Result<(), String> {
        self.state.apply(&self.workflow, event)
    }
}

/// Why the execution is stopping, as its `stopping` event says.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stop {
    pub(super) reason: StopReason,
    pub(super) rollback: bool,
    pub(super) error: Option<ErrorInfo>,
}

/// Who paused the execution, and until when.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Pause {
    pub(super) actor: Actor,
    pub(super) until: Option<Time>,
}

/// Everything an execution's journal says, and indexes over it that scheduling needs.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct State {
    id: String,
    inputs: Value,
    path: String,
    source: Arc<str>,
    created_at: Time,
    started_at: Option<Time>,
    /// When the latest rerun opened the execution again.
    redriven_at: Option<Time>,
    finished_at: Option<Time>,
    seq: u64,
    steps: Vec<StepRun>,
    /// Position of each step in the workflow's dependency order.
    position: Vec<usize>,
    /// Needs of each step that are not finished yet.
    missing: Vec<u32>,
    /// Positions of pending steps whose needs are all finished.
    ready: BTreeSet<usize>,
    /// Positions of compensations that are `Ready` (highest first when taken).
    compensations_ready: BTreeSet<usize>,
    /// Attempts in flight that take a slot.
    running: u32,
    group_running: Vec<u32>,
    pause: Option<Pause>,
    escalated: BTreeSet<StepIndex>,
    stop: Option<Stop>,
    rolling_back: bool,
    outcome: Option<(Outcome, Option<ErrorInfo>)>,
    owner: Option<String>,
    /// The workflow's `outputs`, once it succeeded.
    outputs: serde_json::Map<String, Value>,
    /// Steps the execution pauses before (`run --break`, `pause --before`).
    breakpoints: BTreeSet<StepIndex>,
    /// Pause before every step (`run --step`).
    break_every: bool,
    /// The steps the execution is paused before, at a breakpoint.
    held: BTreeSet<StepIndex>,
    /// Steps let past their breakpoint (by `resume` or `step`).
    released: BTreeSet<StepIndex>,
    /// After `wayline step`: start only the released steps, and pause before the next ones
    /// once they finished.
    stepping: bool,
}

impl State {
    /// The state after an execution's first event, `created`, recorded at `now`.
    pub(super) fn created(created: Created, now: Time) -> State {
        let workflow = &created.workflow;
        let count = workflow.steps.len();
        let mut position = vec![0; count];
        for (at, &step) in workflow.order.iter().enumerate() {
            position[step] = at;
        }
        let missing: Vec<u32> = workflow.steps.iter().map(|s| s.needs.len() as u32).collect();
        let ready =
            (0..count).filter(|&step| missing[step] == 0).map(|step| position[step]).collect();
        State {
            steps: (0..count).map(|_| StepRun::new()).collect(),
            group_running: vec![0; workflow.groups.len()],
            id: created.id,
            inputs: Value::Object(created.inputs),
            path: created.path,
            source: created.source,
            created_at: now,
            started_at: None,
            redriven_at: None,
            finished_at: None,
            seq: 1,
            position,
            missing,
            ready,
            compensations_ready: BTreeSet::new(),
            running: 0,
            pause: None,
            escalated: BTreeSet::new(),
            stop: None,
            rolling_back: false,
            outcome: None,
            owner: None,
            outputs: serde_json::Map::new(),
            breakpoints: BTreeSet::new(),
            break_every: false,
            held: BTreeSet::new(),
            released: BTreeSet::new(),
            stepping: false,
        }
    }

    // ----- reading -----

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn inputs(&self) -> &Value {
        &self.inputs
    }

    pub(super) fn path(&self) -> &str {
        &self.path
    }

    pub(super) fn source(&self) -> &str {
        &self.source
    }

    pub(super) fn created_at(&self) -> Time {
        self.created_at
    }

    pub(super) fn started_at(&self) -> Option<Time> {
        self.started_at
    }

    pub(super) fn finished_at(&self) -> Option<Time> {
        self.finished_at
    }

    pub(super) fn redriven_at(&self) -> Option<Time> {
        self.redriven_at
    }

    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    pub(super) fn steps(&self) -> &[StepRun] {
        &self.steps
    }

    pub(super) fn position(&self, step: StepIndex) -> usize {
        self.position[step]
    }

    pub(super) fn missing(&self, step: StepIndex) -> u32 {
        self.missing[step]
    }

    pub(super) fn ready(&self) -> &BTreeSet<usize> {
        &self.ready
    }

    pub(super) fn compensations_ready(&self) -> &BTreeSet<usize> {
        &self.compensations_ready
    }

    pub(super) fn running(&self) -> u32 {
        self.running
    }

    pub(super) fn group_running(&self, group: usize) -> u32 {
        self.group_running[group]
    }

    pub(super) fn pause(&self) -> Option<&Pause> {
        self.pause.as_ref()
    }

    pub(super) fn escalated(&self) -> &BTreeSet<StepIndex> {
        &self.escalated
    }

    pub(super) fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    pub(super) fn rolling_back(&self) -> bool {
        self.rolling_back
    }

    pub(super) fn outcome(&self) -> Option<&(Outcome, Option<ErrorInfo>)> {
        self.outcome.as_ref()
    }

    pub(super) fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Whether `step` may not start without a `resume` or a `step` first: it has a
    /// breakpoint (or every step has, or a `step` is under way) and was not let past it.
    pub(super) fn breaks_before(&self, step: StepIndex) -> bool {
        !self.released.contains(&step)
            && (self.break_every || self.stepping || self.breakpoints.contains(&step))
    }

    pub(super) fn outputs(&self) -> &serde_json::Map<String, Value> {
        &self.outputs
    }

    pub(super) fn held(&self) -> &BTreeSet<StepIndex> {
        &self.held
    }

    pub(super) fn stepping(&self) -> bool {
        self.stepping
    }

    // ----- folding -----

    fn apply(&mut self, workflow: &Workflow, event: &Event) -> Result<(), String> {
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
                let index = index(workflow, step)?;
                let position = self.position[index];
                let run = &mut self.steps[index];
                if *compensation {
                    // A compensation never waits: `until` belongs to wait steps.
                    run.compensation = Compensation::Active(AttemptState::Running {
                        attempt: *attempt,
                        since: now,
                        until: None,
                        process: None,
                    });
                    run.compensation_attempts = *attempt;
                    self.compensations_ready.remove(&position);
                    self.running += 1;
                } else {
                    if run.started_at.is_none() {
                        run.started_at = Some(now);
                    }
                    if run.budget_started.is_none() {
                        run.budget_started = Some(now);
                    }
                    run.attempts = *attempt;
                    run.state = StepState::Active(AttemptState::Running {
                        attempt: *attempt,
                        since: now,
                        until: *until,
                        process: None,
                    });
                    self.ready.remove(&position);
                    let definition = &workflow.steps[index];
                    if takes_slot(definition) {
                        self.running += 1;
                        if let Some(group) = definition.group {
                            self.group_running[group] += 1;
                        }
                    }
                }
            }
            EventKind::AttemptRunning { step, attempt, compensation, process } => {
                let index = index(workflow, step)?;
                match active_mut(&mut self.steps[index], *compensation) {
                    Some(AttemptState::Running { attempt: a, process: slot, .. })
                        if a == attempt =>
                    {
                        *slot = Some(process.clone());
                    }
                    _ => {
                        return Err(format!(
                            "the journal records a process for attempt {attempt} of `{step}`, which is not running"
                        ));
                    }
                }
            }
            EventKind::AttemptSucceeded { step, compensation, outputs, .. } => {
                let index = index(workflow, step)?;
                if *compensation {
                    self.release_compensation_slot(index);
                    self.steps[index].compensation = Compensation::Succeeded;
                    self.compensation_done(workflow, index);
                } else {
                    self.release_slot(workflow, index);
                    let run = &mut self.steps[index];
                    run.outputs = outputs.clone();
                    run.error = None;
                    run.state = StepState::Succeeded;
                    run.finished_at = Some(now);
                    self.done(workflow, index);
                }
            }
            EventKind::AttemptFailed { step, compensation, error, outputs, terminal, .. } => {
                let index = index(workflow, step)?;
                let lost = u32::from(error.class == ErrorClass::Lost);
                if *compensation {
                    self.release_compensation_slot(index);
                    self.steps[index].compensation_lost += lost;
                    if *terminal {
                        self.steps[index].compensation = Compensation::Failed(error.clone());
                        self.compensation_done(workflow, index);
                    }
                } else {
                    self.release_slot(workflow, index);
                    let run = &mut self.steps[index];
                    run.lost += lost;
                    run.error = Some(error.clone());
                    run.outputs = outputs.clone();
                    if *terminal {
                        run.finished_at = Some(now);
                        run.state = StepState::Failed;
                        // Escalation, if any, follows as its own event.
                        if workflow.steps[index].on_failure != Strategy::Escalate
                            || self.stop.is_some()
                        {
                            self.done(workflow, index);
                        }
                    }
                }
            }
            EventKind::AttemptCancelled { step, compensation, .. } => {
                let index = index(workflow, step)?;
                if *compensation {
                    self.release_compensation_slot(index);
                    self.steps[index].compensation = Compensation::Failed(ErrorInfo::new(
                        ErrorClass::Fatal,
                        "compensation cancelled",
                    ));
                    self.compensation_done(workflow, index);
                } else {
                    self.release_slot(workflow, index);
                    let run = &mut self.steps[index];
                    run.state = StepState::Cancelled;
                    run.finished_at = Some(now);
                    self.done(workflow, index);
                }
            }
            EventKind::RetryScheduled { step, attempt, compensation, at, .. } => {
                let index = index(workflow, step)?;
                let retrying = AttemptState::Retrying { next: *attempt, at: *at };
                let run = &mut self.steps[index];
                if *compensation {
                    run.compensation = Compensation::Active(retrying);
                } else {
                    run.state = StepState::Active(retrying);
                }
            }
            EventKind::StepSkipped { step, reason, cancelled } => {
                let index = index(workflow, step)?;
                let run = &mut self.steps[index];
                run.state = if *cancelled {
                    StepState::Cancelled
                } else {
                    StepState::Skipped { reason: reason.clone() }
                };
                run.finished_at = Some(now);
                self.ready.remove(&self.position[index]);
                self.escalated.remove(&index);
                self.done(workflow, index);
            }
            EventKind::StepEscalated { step, error } => {
                let index = index(workflow, step)?;
                let run = &mut self.steps[index];
                run.state = StepState::Escalated;
                run.error = Some(error.clone());
                self.escalated.insert(index);
            }
            EventKind::Decided { step, decision, outputs, actor } => {
                let index = index(workflow, step)?;
                self.escalated.remove(&index);
                let decision = *decision;
                let run = &mut self.steps[index];
                run.decision = Some((decision, actor.clone()));
                match decision {
                    Decision::Retry => {
                        run.state = StepState::Pending;
                        run.budget_base = run.attempts;
                        run.budget_started = None;
                        run.lost = 0;
                        run.finished_at = None;
                        self.ready.insert(self.position[index]);
                    }
                    Decision::Skip if !outputs.is_empty() => {
                        // It counts as succeeded with these outputs; its failure stays on
                        // record beside the decision.
                        run.state = StepState::Succeeded;
                        run.outputs = outputs.clone();
                        run.finished_at = Some(now);
                        self.done(workflow, index);
                    }
                    Decision::Skip => {
                        run.state = StepState::Skipped { reason: "skipped by decision".into() };
                        run.finished_at = Some(now);
                        self.done(workflow, index);
                    }
                    Decision::Fail | Decision::Rollback => {
                        run.state = StepState::Failed;
                        run.finished_at = Some(now);
                        self.done(workflow, index);
                    }
                }
            }
            EventKind::Paused { actor, until } => {
                self.pause = Some(Pause { actor: actor.clone(), until: *until })
            }
            EventKind::Resumed { .. } => {
                self.pause = None;
                self.released.append(&mut self.held);
                self.stepping = false;
            }
            EventKind::BreakpointsSet { steps, every, .. } => {
                for step in steps {
                    self.breakpoints.insert(index(workflow, step)?);
                }
                self.break_every |= *every;
            }
            EventKind::BreakpointHit { steps } => {
                let mut held = BTreeSet::new();
                for step in steps {
                    held.insert(index(workflow, step)?);
                }
                let reason = format!("breakpoint before {}", steps.join(", "));
                let actor = Actor { by: "breakpoint".into(), reason: Some(reason) };
                self.pause = Some(Pause { actor, until: None });
                self.held = held;
                self.stepping = false;
            }
            EventKind::Stepped { .. } => {
                self.pause = None;
                if self.held.is_empty() {
                    // Paused by a person, not at a breakpoint: the steps ready now go.
                    for &position in &self.ready {
                        self.released.insert(workflow.order[position]);
                    }
                }
                self.released.append(&mut self.held);
                self.stepping = true;
            }
            EventKind::Patched { step, outputs, inputs, actor } => {
                if let Some(step) = step
                    && !outputs.is_empty()
                {
                    let run = &mut self.steps[index(workflow, step)?];
                    run.patched = Some(actor.clone());
                    for (key, value) in outputs {
                        run.outputs.insert(key.clone(), value.clone());
                    }
                }
                if let Value::Object(current) = &mut self.inputs {
                    for (name, value) in inputs {
                        current.insert(name.clone(), value.clone());
                    }
                }
            }
            EventKind::Stopping { reason, rollback, error, .. } => {
                self.stop =
                    Some(Stop { reason: *reason, rollback: *rollback, error: error.clone() });
                self.pause = None;
            }
            EventKind::RollbackStarted => self.begin_rollback(workflow),
            EventKind::Redriven { steps, inputs, .. } => {
                if self.outcome.is_none() {
                    return Err("`redriven` can only follow the end of the execution".into());
                }
                let mut reset = Vec::with_capacity(steps.len());
                for step in steps {
                    reset.push(index(workflow, step)?);
                }
                self.redrive(workflow, &reset, inputs, now);
            }
            EventKind::Finished { outcome, error, outputs } => {
                self.outcome = Some((*outcome, error.clone()));
                self.outputs = outputs.clone();
                self.finished_at = Some(now);
            }
        }
        self.seq = event.seq;
        Ok(())
    }

    fn release_slot(&mut self, workflow: &Workflow, index: StepIndex) {
        if !matches!(self.steps[index].state, StepState::Active(AttemptState::Running { .. })) {
            return;
        }
        let definition = &workflow.steps[index];
        if !takes_slot(definition) {
            return;
        }
        self.running = self.running.saturating_sub(1);
        if let Some(group) = definition.group {
            self.group_running[group] = self.group_running[group].saturating_sub(1);
        }
    }

    fn release_compensation_slot(&mut self, index: StepIndex) {
        if matches!(
            self.steps[index].compensation,
            Compensation::Active(AttemptState::Running { .. })
        ) {
            self.running = self.running.saturating_sub(1);
        }
    }

    /// A step reached a terminal state: its dependents get closer to ready.
    fn done(&mut self, workflow: &Workflow, index: StepIndex) {
        for &dependent in &workflow.dependents[index] {
            self.missing[dependent] = self.missing[dependent].saturating_sub(1);
            if self.missing[dependent] == 0 && self.steps[dependent].state == StepState::Pending {
                self.ready.insert(self.position[dependent]);
            }
        }
    }

    /// A rerun opens the finished execution again: `reset` run again with a fresh attempt
    /// budget (their numbering continues), every other step keeps what it has, and the
    /// execution is as if just started, with no stop, pause or rollback.
    fn redrive(
        &mut self,
        workflow: &Workflow,
        reset: &[StepIndex],
        inputs: &serde_json::Map<String, Value>,
        now: Time,
    ) {
        if let Value::Object(current) = &mut self.inputs {
            for (name, value) in inputs {
                current.insert(name.clone(), value.clone());
            }
        }
        self.held.clear();
        self.stepping = false;
        for &index in reset {
            // A breakpoint before a step that runs again holds again.
            self.released.remove(&index);
            let run = &mut self.steps[index];
            run.state = StepState::Pending;
            run.budget_base = run.attempts;
            run.budget_started = None;
            run.lost = 0;
            run.started_at = None;
            run.finished_at = None;
            run.outputs.clear();
            run.error = None;
            run.decision = None;
            run.patched = None;
        }
        for run in &mut self.steps {
            run.compensation = Compensation::None;
            run.compensation_base = run.compensation_attempts;
            run.compensation_lost = 0;
            run.compensation_missing = 0;
        }
        self.compensations_ready.clear();
        self.escalated.clear();
        self.running = 0;
        self.group_running.iter_mut().for_each(|count| *count = 0);
        self.pause = None;
        self.stop = None;
        self.rolling_back = false;
        self.outcome = None;
        self.outputs.clear();
        self.finished_at = None;
        self.redriven_at = Some(now);
        self.ready.clear();
        for index in 0..self.steps.len() {
            let missing =
                workflow.steps[index].needs.iter().filter(|&&n| !self.steps[n].state.is_done());
            self.missing[index] = missing.count() as u32;
            if self.missing[index] == 0 && self.steps[index].state == StepState::Pending {
                self.ready.insert(self.position[index]);
            }
        }
    }

    fn begin_rollback(&mut self, workflow: &Workflow) {
        self.rolling_back = true;
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
            let unblocked = self.steps[index].compensation == Compensation::Waiting
                && self.steps[index].compensation_missing == 0;
            if unblocked && !self.compensation_ready(workflow, index) {
                self.compensation_done(workflow, index);
            }
        }
    }

    /// The compensation of `index` no longer waits for others: it becomes ready, or, with
    /// nothing to compensate, passes through. Returns whether it became ready; one that passed
    /// through is done, which the caller records.
    fn compensation_ready(&mut self, workflow: &Workflow, index: StepIndex) -> bool {
        if workflow.steps[index].compensate.is_some() {
            self.steps[index].compensation = Compensation::Ready;
            self.compensations_ready.insert(self.position[index]);
            true
        } else {
            self.steps[index].compensation = Compensation::Nothing;
            false
        }
    }

    /// A compensation finished (or there was nothing to compensate): the compensations of the
    /// step's needs get closer to ready.
    fn compensation_done(&mut self, workflow: &Workflow, index: StepIndex) {
        self.compensations_ready.remove(&self.position[index]);
        let mut stack = vec![index];
        while let Some(done) = stack.pop() {
            for &need in &workflow.steps[done].needs {
                if self.steps[need].compensation != Compensation::Waiting {
                    continue;
                }
                let run = &mut self.steps[need];
                run.compensation_missing = run.compensation_missing.saturating_sub(1);
                if run.compensation_missing == 0 && !self.compensation_ready(workflow, need) {
                    stack.push(need);
                }
            }
        }
    }
}

/// Whether a step's attempts count against `max_parallel`: condition and set steps complete
/// instantly and take no slot.
pub(super) fn takes_slot(step: &Step) -> bool {
    !matches!(step.body, Body::Condition(_) | Body::Set(_))
}

fn index(workflow: &Workflow, step: &str) -> Result<StepIndex, String> {
    workflow
        .step(step)
        .ok_or_else(|| format!("the journal names step `{step}`, which the workflow does not have"))
}

/// The attempts in flight or due of a step's body or compensation, to change.
fn active_mut(run: &mut StepRun, compensation: bool) -> Option<&mut AttemptState> {
    match (compensation, &mut run.state, &mut run.compensation) {
        (false, StepState::Active(active), _) | (true, _, Compensation::Active(active)) => {
            Some(active)
        }
        _ => None,
    }
}
