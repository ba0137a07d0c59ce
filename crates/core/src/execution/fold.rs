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

use super::{
    AttemptState, Compensation, Created, Execution, Instance, ItemRuns, StepRun, StepState,
};

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
    /// Compensations that are `Ready`, of steps and items (highest first when taken).
    compensations_ready: BTreeSet<Instance>,
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

    pub(super) fn compensations_ready(&self) -> &BTreeSet<Instance> {
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
            EventKind::AttemptStarted { step, item, attempt, compensation, until } => {
                let index = index(workflow, step)?;
                let position = self.position[index];
                if *compensation {
                    let run = instance_mut(&mut self.steps[index], step, *item)?;
                    // A compensation never waits: `until` belongs to wait steps.
                    run.compensation = Compensation::Active(AttemptState::Running {
                        attempt: *attempt,
                        since: now,
                        until: None,
                        process: None,
                    });
                    run.compensation_attempts = *attempt;
                    self.compensations_ready.remove(&(position, *item));
                    self.running += 1;
                } else {
                    let run = instance_mut(&mut self.steps[index], step, *item)?;
                    let was_active = matches!(run.state, StepState::Active(_));
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
                    let definition = &workflow.steps[index];
                    let slot = takes_slot(definition);
                    match item {
                        None => {
                            self.ready.remove(&position);
                        }
                        Some(item) => {
                            let items = items_mut(&mut self.steps[index], step)?;
                            items.pending.remove(item);
                            items.active += u32::from(!was_active);
                            items.running += u32::from(slot);
                            if items.pending.is_empty() {
                                self.ready.remove(&position);
                            }
                        }
                    }
                    if slot {
                        self.running += 1;
                        if let Some(group) = definition.group {
                            self.group_running[group] += 1;
                        }
                    }
                }
            }
            EventKind::AttemptRunning { step, item, attempt, compensation, process } => {
                let index = index(workflow, step)?;
                let run = instance_mut(&mut self.steps[index], step, *item)?;
                match active_mut(run, *compensation) {
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
            EventKind::AttemptSucceeded { step, item, compensation, outputs, .. } => {
                let index = index(workflow, step)?;
                if *compensation {
                    self.release_compensation_slot(index, *item);
                    instance_mut(&mut self.steps[index], step, *item)?.compensation =
                        Compensation::Succeeded;
                    self.compensation_done(workflow, index, *item);
                } else {
                    self.release_slot(workflow, index, *item);
                    let run = instance_mut(&mut self.steps[index], step, *item)?;
                    run.outputs = outputs.clone();
                    run.error = None;
                    run.state = StepState::Succeeded;
                    run.finished_at = Some(now);
                    self.ended(workflow, index, *item, now);
                }
            }
            EventKind::AttemptFailed {
                step, item, compensation, error, outputs, terminal, ..
            } => {
                let index = index(workflow, step)?;
                let lost = u32::from(error.class == ErrorClass::Lost);
                if *compensation {
                    self.release_compensation_slot(index, *item);
                    let run = instance_mut(&mut self.steps[index], step, *item)?;
                    run.compensation_lost += lost;
                    if *terminal {
                        run.compensation = Compensation::Failed(error.clone());
                        self.compensation_done(workflow, index, *item);
                    }
                } else {
                    self.release_slot(workflow, index, *item);
                    let run = instance_mut(&mut self.steps[index], step, *item)?;
                    run.lost += lost;
                    run.error = Some(error.clone());
                    run.outputs = outputs.clone();
                    if *terminal {
                        run.finished_at = Some(now);
                        run.state = StepState::Failed;
                        if item.is_some() {
                            items_mut(&mut self.steps[index], step)?.failed += 1;
                            self.ended(workflow, index, *item, now);
                        } else if workflow.steps[index].on_failure != Strategy::Escalate
                            || self.stop.is_some()
                        {
                            // Escalation, if any, follows as its own event.
                            self.done(workflow, index);
                        }
                    }
                }
            }
            EventKind::AttemptCancelled { step, item, compensation, .. } => {
                let index = index(workflow, step)?;
                if *compensation {
                    self.release_compensation_slot(index, *item);
                    instance_mut(&mut self.steps[index], step, *item)?.compensation =
                        Compensation::Failed(ErrorInfo::new(
                            ErrorClass::Fatal,
                            "compensation cancelled",
                        ));
                    self.compensation_done(workflow, index, *item);
                } else {
                    self.release_slot(workflow, index, *item);
                    let run = instance_mut(&mut self.steps[index], step, *item)?;
                    run.state = StepState::Cancelled;
                    run.finished_at = Some(now);
                    self.ended(workflow, index, *item, now);
                }
            }
            EventKind::RetryScheduled { step, item, attempt, compensation, at, .. } => {
                let index = index(workflow, step)?;
                let retrying = AttemptState::Retrying { next: *attempt, at: *at };
                let run = instance_mut(&mut self.steps[index], step, *item)?;
                if *compensation {
                    run.compensation = Compensation::Active(retrying);
                } else {
                    run.state = StepState::Active(retrying);
                }
            }
            EventKind::FannedOut { step, items } => {
                let index = index(workflow, step)?;
                let run = &mut self.steps[index];
                if run.state != StepState::Pending || workflow.steps[index].fan_out.is_none() {
                    return Err(format!("the journal fans out `{step}`, which cannot fan out now"));
                }
                run.state = StepState::FannedOut;
                run.started_at.get_or_insert(now);
                let count = items.len() as u32;
                run.items = Some(Box::new(ItemRuns {
                    values: items.clone(),
                    runs: (0..count).map(|_| StepRun::new()).collect(),
                    pending: (0..count).collect(),
                    active: 0,
                    running: 0,
                    failed: 0,
                    stopped: None,
                }));
                self.settle(workflow, index, now);
            }
            EventKind::StepSkipped { step, item: Some(item), reason, .. } => {
                let index = index(workflow, step)?;
                let run = instance_mut(&mut self.steps[index], step, Some(*item))?;
                // Skipped before its first attempt (its `if`), or instead of a retry (its
                // step failed past its tolerance).
                let retrying =
                    matches!(run.state, StepState::Active(AttemptState::Retrying { .. }));
                run.state = StepState::Skipped { reason: reason.clone() };
                run.finished_at = Some(now);
                let items = items_mut(&mut self.steps[index], step)?;
                items.pending.remove(item);
                items.active -= u32::from(retrying);
                self.settle(workflow, index, now);
            }
            EventKind::StepSkipped { step, item: None, reason, cancelled } => {
                let index = index(workflow, step)?;
                let state = if *cancelled {
                    StepState::Cancelled
                } else {
                    StepState::Skipped { reason: reason.clone() }
                };
                let run = &mut self.steps[index];
                if let (StepState::FannedOut, Some(items)) = (&run.state, run.items.as_mut()) {
                    // The execution stopped: items not started, and those waiting for a retry,
                    // will not run.
                    for item in 0..items.runs.len() {
                        let item_run = &mut items.runs[item];
                        let waiting = matches!(
                            item_run.state,
                            StepState::Active(AttemptState::Retrying { .. })
                        );
                        if waiting || item_run.state == StepState::Pending {
                            item_run.state = state.clone();
                            item_run.finished_at = Some(now);
                            items.active -= u32::from(waiting);
                        }
                    }
                    items.pending.clear();
                    items.stopped = Some(state);
                    self.settle(workflow, index, now);
                } else {
                    run.state = state;
                    run.finished_at = Some(now);
                    self.ready.remove(&self.position[index]);
                    self.escalated.remove(&index);
                    self.done(workflow, index);
                }
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
                        run.finished_at = None;
                        match run.items.as_mut() {
                            // A fan-out runs again the items that did not succeed.
                            Some(items) => {
                                for (item, item_run) in items.runs.iter_mut().enumerate() {
                                    if item_run.state != StepState::Succeeded {
                                        item_run.fresh_budget();
                                        items.pending.insert(item as u32);
                                    }
                                }
                                items.failed = 0;
                                items.stopped = None;
                                run.state = StepState::FannedOut;
                            }
                            None => run.fresh_budget(),
                        }
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
            EventKind::Redriven { steps, inputs, kept_items, .. } => {
                if self.outcome.is_none() {
                    return Err("`redriven` can only follow the end of the execution".into());
                }
                let mut reset = Vec::with_capacity(steps.len());
                for step in steps {
                    reset.push(index(workflow, step)?);
                }
                let mut kept = Vec::with_capacity(kept_items.len());
                for step in kept_items {
                    let index = index(workflow, step)?;
                    items_mut(&mut self.steps[index], step)?;
                    kept.push(index);
                }
                self.redrive(workflow, &reset, &kept, inputs, now);
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

    fn release_slot(&mut self, workflow: &Workflow, index: StepIndex, item: Option<u32>) {
        let Some(run) = self.steps[index].instance(item) else { return };
        if !matches!(run.state, StepState::Active(AttemptState::Running { .. })) {
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
        if let (Some(_), Some(items)) = (item, self.steps[index].items.as_mut()) {
            items.running = items.running.saturating_sub(1);
        }
    }

    fn release_compensation_slot(&mut self, index: StepIndex, item: Option<u32>) {
        let running = self.steps[index].instance(item).is_some_and(|run| {
            matches!(run.compensation, Compensation::Active(AttemptState::Running { .. }))
        });
        if running {
            self.running = self.running.saturating_sub(1);
        }
    }

    /// A step, or an item of a fan-out step, reached a terminal state.
    fn ended(&mut self, workflow: &Workflow, index: StepIndex, item: Option<u32>, now: Time) {
        match item {
            None => self.done(workflow, index),
            Some(_) => {
                if let Some(items) = self.steps[index].items.as_mut() {
                    items.active = items.active.saturating_sub(1);
                }
                self.settle(workflow, index, now);
            }
        }
    }

    /// A fan-out step ends once none of its items runs and none will start: every item ended,
    /// or more failed than it tolerates (those not started are skipped then). It fails when
    /// more items failed than it tolerates; otherwise it is cancelled or skipped when the
    /// execution stopped its items, and succeeds when not.
    /// Ends a fan-out step once its items allow: when none is in flight and either none is
    /// left to start or more failed than it tolerates (the rest are then skipped). Its state
    /// follows: failed past the tolerance, else what a stop made it, else cancelled if an item
    /// was, else succeeded.
    fn settle(&mut self, workflow: &Workflow, index: StepIndex, now: Time) {
        let definition = &workflow.steps[index];
        let Some(fan_out) = &definition.fan_out else { return };
        let run = &mut self.steps[index];
        let Some(items) = run.items.as_mut() else { return };
        if run.state != StepState::FannedOut {
            return;
        }
        let tolerated = fan_out.tolerate.of(items.runs.len());
        let over = items.failed as usize > tolerated;
        if items.active > 0 || (!items.pending.is_empty() && !over) {
            return;
        }
        if over {
            let failed = items.failed;
            let reason = format!(
                "not started: {failed} item{} failed, more than the {tolerated} tolerated",
                if failed == 1 { "" } else { "s" }
            );
            for item in std::mem::take(&mut items.pending) {
                let item_run = &mut items.runs[item as usize];
                item_run.state = StepState::Skipped { reason: reason.clone() };
                item_run.finished_at = Some(now);
            }
        }
        run.finished_at = Some(now);
        run.state = if over {
            run.error = Some(items_error(definition, items));
            StepState::Failed
        } else if let Some(stopped) = items.stopped.clone() {
            stopped
        } else if items.runs.iter().any(|item| item.state == StepState::Cancelled) {
            // An item's attempt was cancelled (by a stop that found nothing left to skip, or
            // from outside): the step did not do all its work.
            StepState::Cancelled
        } else {
            run.error = None;
            StepState::Succeeded
        };
        self.ready.remove(&self.position[index]);
        let escalates = definition.on_failure == Strategy::Escalate && self.stop.is_none();
        if !(run.state == StepState::Failed && escalates) {
            // Escalation, if any, follows as its own event.
            self.done(workflow, index);
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
        kept: &[StepIndex],
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
            run.fresh_budget();
            run.started_at = None;
            run.outputs.clear();
            run.error = None;
            run.decision = None;
            run.patched = None;
            if !kept.contains(&index) {
                // A fan-out evaluates its items again (their attempt numbers start over).
                run.items = None;
                continue;
            }
            // It keeps its items: those that succeeded (and were not undone) stay done, the
            // others run again with a fresh budget.
            run.state = StepState::FannedOut;
            let Some(items) = run.items.as_mut() else { continue };
            items.pending.clear();
            for (item, item_run) in items.runs.iter_mut().enumerate() {
                let undone = matches!(
                    item_run.compensation,
                    Compensation::Succeeded | Compensation::Failed(_)
                );
                if item_run.state == StepState::Succeeded && !undone {
                    continue;
                }
                item_run.fresh_budget();
                item_run.started_at = None;
                item_run.finished_at = None;
                item_run.outputs.clear();
                item_run.error = None;
                items.pending.insert(item as u32);
            }
            items.active = 0;
            items.running = 0;
            items.failed = 0;
            items.stopped = None;
        }
        for run in &mut self.steps {
            run.compensation_afresh();
            for item in run.items.iter_mut().flat_map(|items| items.runs.iter_mut()) {
                item.compensation_afresh();
            }
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
            let waiting =
                matches!(self.steps[index].state, StepState::Pending | StepState::FannedOut);
            if self.missing[index] == 0 && waiting {
                self.ready.insert(self.position[index]);
            }
        }
        // A fan-out that kept every item (it was stopped after they all succeeded) ends now.
        for &index in kept {
            self.settle(workflow, index, now);
        }
    }

    fn begin_rollback(&mut self, workflow: &Workflow) {
        self.rolling_back = true;
        // Only what succeeded takes part (of a fan-out, the items that succeeded); a step's
        // compensation waits for those of its dependents that take part.
        for index in 0..self.steps.len() {
            if !takes_part(&self.steps[index]) {
                continue;
            }
            let missing =
                workflow.dependents[index].iter().filter(|&&d| takes_part(&self.steps[d])).count();
            let run = &mut self.steps[index];
            run.compensation_missing = missing as u32;
            run.compensation = Compensation::Waiting;
            for item in run.items.iter_mut().flat_map(|items| items.runs.iter_mut()) {
                if item.state == StepState::Succeeded {
                    item.compensation = Compensation::Waiting;
                }
            }
        }
        for &index in workflow.order.iter().rev() {
            let unblocked = self.steps[index].compensation == Compensation::Waiting
                && self.steps[index].compensation_missing == 0;
            if unblocked && !self.compensation_ready(workflow, index) {
                self.compensation_done(workflow, index, None);
            }
        }
    }

    /// The compensation of `index` no longer waits for others: it becomes ready (of a
    /// fan-out, that of its last succeeded item), or, with nothing to compensate, passes
    /// through. Returns whether it became ready; one that passed through is done, which the
    /// caller records.
    fn compensation_ready(&mut self, workflow: &Workflow, index: StepIndex) -> bool {
        if workflow.steps[index].compensate.is_none() {
            self.steps[index].compensation = Compensation::Nothing;
            return false;
        }
        let position = self.position[index];
        let run = &mut self.steps[index];
        match run.items.as_mut() {
            None => {
                run.compensation = Compensation::Ready;
                self.compensations_ready.insert((position, None));
            }
            Some(items) => {
                let last =
                    items.runs.iter().rposition(|item| item.compensation == Compensation::Waiting);
                let Some(last) = last else {
                    // No item succeeded: nothing to undo.
                    run.compensation = Compensation::Nothing;
                    return false;
                };
                run.compensation = Compensation::Items;
                items.runs[last].compensation = Compensation::Ready;
                self.compensations_ready.insert((position, Some(last as u32)));
            }
        }
        true
    }

    /// A compensation finished (or there was nothing to compensate): of an item, the next
    /// item's becomes ready, and after the first item the step's is done; of a step, the
    /// compensations of its needs get closer to ready.
    fn compensation_done(&mut self, workflow: &Workflow, index: StepIndex, item: Option<u32>) {
        let position = self.position[index];
        self.compensations_ready.remove(&(position, item));
        if item.is_some() {
            let run = &mut self.steps[index];
            let Some(items) = run.items.as_mut() else { return };
            let next =
                items.runs.iter().rposition(|item| item.compensation == Compensation::Waiting);
            if let Some(next) = next {
                items.runs[next].compensation = Compensation::Ready;
                self.compensations_ready.insert((position, Some(next as u32)));
                return;
            }
            let failed = items.runs.iter().find_map(|item| match &item.compensation {
                Compensation::Failed(error) => Some(error.clone()),
                _ => None,
            });
            run.compensation = match failed {
                Some(error) => Compensation::Failed(error),
                None => Compensation::Succeeded,
            };
        }
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

/// Whether a step takes part in a rollback: it succeeded, or some of its items did.
fn takes_part(run: &StepRun) -> bool {
    run.state == StepState::Succeeded
        || run
            .items
            .as_ref()
            .is_some_and(|items| items.runs.iter().any(|item| item.state == StepState::Succeeded))
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

/// The run of `item` of a step (the step's own for `None`), to change.
fn instance_mut<'r>(
    run: &'r mut StepRun,
    step: &str,
    item: Option<u32>,
) -> Result<&'r mut StepRun, String> {
    match item {
        None => Ok(run),
        Some(item) => {
            run.items.as_mut().and_then(|items| items.runs.get_mut(item as usize)).ok_or_else(
                || format!("the journal names item {item} of `{step}`, which it does not have"),
            )
        }
    }
}

/// The items of a fan-out step, to change.
fn items_mut<'r>(run: &'r mut StepRun, step: &str) -> Result<&'r mut ItemRuns, String> {
    run.items
        .as_deref_mut()
        .ok_or_else(|| format!("the journal names an item of `{step}`, which has not fanned out"))
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

/// Why a fan-out step failed: how many of its items failed against how many it tolerates, and
/// the first failure, with the class of that failure.
pub(super) fn items_error(definition: &wayline_lang::model::Step, items: &ItemRuns) -> ErrorInfo {
    let tolerated = definition.fan_out.as_ref().map_or(0, |f| f.tolerate.of(items.runs.len()));
    let first = items.runs.iter().enumerate().find_map(|(i, item)| match item.state {
        StepState::Failed => item.error.as_ref().map(|error| (i, error)),
        _ => None,
    });
    let (class, first) = match first {
        Some((i, error)) => (error.class, format!(": {}[{i}]: {}", definition.id, error.message)),
        None => (ErrorClass::Failure, String::new()),
    };
    ErrorInfo::new(
        class,
        format!(
            "{} of {} items failed, {tolerated} tolerated{first}",
            items.failed,
            items.runs.len()
        ),
    )
}
