//! What every input ends with: start whatever may start now, skip what can no longer run, and
//! hand over to the rollback or the end when nothing is left.

use std::sync::Arc;

use serde_json::Value;
use wayline_journal::{ErrorClass, ErrorInfo, EventKind, StopReason, Time};
use wayline_lang::expr::StatusView;
use wayline_lang::fan_out;
use wayline_lang::model::{Items, StepIndex, ValueTemplate};

use super::attempt::Failure;
use super::fold::takes_slot;
use super::scope::evaluate_bool;
use super::{Attempt, AttemptState, Execution, StepState, Transition};

impl Execution {
    /// Starts whatever may start now, skips what can no longer run, and finishes the execution
    /// when nothing is left.
    pub(super) fn schedule(&mut self, out: &mut Transition, now: Time) {
        if self.transient.held {
            return;
        }
        loop {
            if self.state.outcome().is_some() || self.state.started_at().is_none() {
                return;
            }
            if self.state.rolling_back() {
                self.schedule_rollback(out, now);
                return;
            }
            let progressed = if self.state.stop().is_some() {
                self.schedule_stopping(out, now)
            } else {
                self.schedule_running(out, now)
            };
            if progressed {
                continue;
            }
            let busy = self.steps().iter().any(|run| {
                matches!(
                    run.state,
                    StepState::Active(_)
                        | StepState::Escalated
                        | StepState::Pending
                        | StepState::FannedOut
                )
            });
            if busy {
                return;
            }
            if self.state.stop().is_some_and(|stop| stop.rollback) {
                self.emit(out, now, EventKind::RollbackStarted);
                continue;
            }
            self.finish(out, now);
            return;
        }
    }

    /// Normal scheduling. Returns whether anything changed (so that consequences are looked at).
    fn schedule_running(&mut self, out: &mut Transition, now: Time) -> bool {
        if self.state.pause().is_some() || !self.state.escalated().is_empty() {
            return false;
        }
        let mut progressed = false;
        self.transient.breaking.clear();
        // Walk the ready and due steps in dependency order, lazily: both sets change as steps
        // start and finish, and a full workflow cap ends the walk at once.
        let mut cursor = 0;
        loop {
            if self.workflow_full() {
                break;
            }
            let state = &self.state;
            if state.stop().is_some() || state.pause().is_some() || !state.escalated().is_empty() {
                break;
            }
            let next_ready = state.ready().range(cursor..).next().copied();
            let next_due = self.transient.due.range((cursor, None)..).next().map(|due| due.0);
            let Some(position) = next_ready.into_iter().chain(next_due).min() else { break };
            cursor = position + 1;
            let step = self.workflow.order[position];
            progressed |= self.consider(out, step, now, false);
        }
        progressed | self.break_if_held(out, now)
    }

    /// Pauses at a breakpoint when the walk found steps before theirs: at once, or, while
    /// stepping, once the steps let go have finished. Returns whether it paused.
    fn break_if_held(&mut self, out: &mut Transition, now: Time) -> bool {
        if self.transient.breaking.is_empty() || self.state.pause().is_some() {
            return false;
        }
        let under_way = self
            .steps()
            .iter()
            .any(|run| matches!(run.state, StepState::Active(_) | StepState::FannedOut));
        if self.state.stepping() && under_way {
            return false;
        }
        let mut held: Vec<StepIndex> =
            std::mem::take(&mut self.transient.breaking).into_iter().collect();
        held.sort_by_key(|&step| self.state.position(step));
        let steps = held.into_iter().map(|step| self.workflow.steps[step].id.clone()).collect();
        self.emit(out, now, EventKind::BreakpointHit { steps });
        true
    }

    /// Scheduling while stopping: steps with the default `if` are skipped, steps with an
    /// explicit `if` (cleanup, notifications) are still evaluated once their needs finished.
    fn schedule_stopping(&mut self, out: &mut Transition, now: Time) -> bool {
        let mut progressed = false;
        let Some(stop) = self.state.stop() else { return false };
        let cancelled = stop.reason != StopReason::Failed;
        let reason = match stop.reason {
            StopReason::Failed => "the execution stopped after a failure",
            StopReason::Cancelled => "the execution was cancelled",
            StopReason::Timeout => "the execution timed out",
        };
        let workflow = Arc::clone(&self.workflow);
        for &step in &workflow.order {
            let definition = &workflow.steps[step];
            let state = &self.steps()[step].state;
            let skip = match state {
                // An open escalation is moot once the execution stops.
                StepState::Active(AttemptState::Retrying { .. }) | StepState::Escalated => true,
                StepState::Pending => definition.default_if(),
                // Items not started or waiting for a retry do not run.
                StepState::FannedOut => self.steps()[step].items.as_ref().is_some_and(|items| {
                    items.pending() > 0
                        || items.runs.iter().any(|item| {
                            matches!(item.state, StepState::Active(AttemptState::Retrying { .. }))
                        })
                }),
                _ => false,
            };
            if skip {
                let id = definition.id.clone();
                self.emit(
                    out,
                    now,
                    EventKind::StepSkipped {
                        step: id,
                        item: None,
                        reason: reason.into(),
                        cancelled,
                    },
                );
                progressed = true;
            } else if *state == StepState::Pending
                && self.state.missing(step) == 0
                && !self.workflow_full()
            {
                progressed |= self.consider(out, step, now, true);
            }
        }
        progressed
    }

    /// Looks at one step whose needs are finished: skip it, or start it if a slot is free; of a
    /// fan-out step, record its items, then start those that may start.
    fn consider(
        &mut self,
        out: &mut Transition,
        step: StepIndex,
        now: Time,
        stopping: bool,
    ) -> bool {
        let workflow = Arc::clone(&self.workflow);
        let definition = &workflow.steps[step];
        let id = definition.id.clone();
        if self.steps()[step].state == StepState::FannedOut {
            return self.consider_items(out, step, now, stopping);
        }
        if let StepState::Active(AttemptState::Retrying { next, at }) = self.steps()[step].state {
            let position = self.state.position(step);
            if at > now
                || !self.transient.due.contains(&(position, None))
                || !self.slot_free(step, None)
            {
                return false;
            }
            self.transient.due.remove(&(position, None));
            self.start_attempt(out, Attempt::step(step, next), now);
            return true;
        }
        if self.steps()[step].state != StepState::Pending {
            return false;
        }
        // Branches: every condition listing this step must have taken its branch.
        for &(condition, taken) in &definition.branches {
            let run = &self.steps()[condition];
            let result = run.outputs.get("result").and_then(Value::as_bool);
            if run.state != StepState::Succeeded || result != Some(taken) {
                let which = if taken { "then" } else { "else" };
                let reason =
                    format!("branch `{which}` of `{}` was not taken", workflow.steps[condition].id);
                self.emit(
                    out,
                    now,
                    EventKind::StepSkipped { step: id, item: None, reason, cancelled: false },
                );
                return true;
            }
        }
        // A fan-out step decides its `if` item by item; with the default `if`, needs that
        // did not succeed skip it as a whole.
        let per_item = definition.fan_out.is_some() && definition.when.is_some();
        let status = self.status_view(step, stopping);
        let run = match &definition.when {
            _ if per_item => Ok(true),
            None => Ok(status.success),
            Some(expression) => evaluate_bool(expression, &self.if_scope(status, step, None)),
        };
        let attempt = self.steps()[step].attempts + 1;
        match run {
            Ok(false) => {
                let reason = match &definition.when {
                    None => self.not_successful(step),
                    Some(expression) => format!("`if: {}` is false", expression.source()),
                };
                self.emit(
                    out,
                    now,
                    EventKind::StepSkipped { step: id, item: None, reason, cancelled: false },
                );
                true
            }
            Ok(true) => {
                if !stopping && self.state.breaks_before(step) {
                    self.transient.breaking.insert(step);
                    return false;
                }
                if definition.fan_out.is_some() {
                    return self.fan_out(out, step, now, stopping);
                }
                if !self.slot_free(step, None) {
                    return false;
                }
                self.start_attempt(out, Attempt::step(step, attempt), now);
                true
            }
            Err(error) => {
                // The `if` cannot be evaluated: the step fails without running.
                let this = Attempt::step(step, attempt);
                self.emit_started(out, this, None, now);
                let error =
                    ErrorInfo::new(ErrorClass::Expression, format!("`if`: {}", error.message));
                self.attempt_failed(out, this, Failure::of(error), now);
                true
            }
        }
    }

    /// A fan-out step became ready: its items are evaluated and recorded (a replay reads them
    /// from the journal), then the first ones start. Items that cannot be evaluated fail the
    /// step without running, as an `if` that cannot be does.
    fn fan_out(
        &mut self,
        out: &mut Transition,
        step: StepIndex,
        now: Time,
        stopping: bool,
    ) -> bool {
        match self.items(step) {
            Ok(items) => {
                let id = self.workflow.steps[step].id.clone();
                self.emit(out, now, EventKind::FannedOut { step: id, items });
                self.consider_items(out, step, now, stopping);
            }
            Err(message) => {
                let this = Attempt::step(step, self.steps()[step].attempts + 1);
                self.emit_started(out, this, None, now);
                let error = ErrorInfo::new(ErrorClass::Expression, message);
                self.attempt_failed(out, this, Failure::of(error), now);
            }
        }
        true
    }

    /// The items of a fan-out step, evaluated now.
    fn items(&self, step: StepIndex) -> Result<Vec<Value>, String> {
        let Some(fan_out) = &self.workflow.steps[step].fan_out else { return Ok(Vec::new()) };
        let view = self.scope(None);
        let mut meter = wayline_lang::expr::Meter::default();
        let mut value = |template: &ValueTemplate, what: &str| {
            crate::render::value_with(template, &view, &mut meter)
                .map_err(|error| format!("{what}: {}", error.message))
        };
        let items = match &fan_out.items {
            Items::List(template) => fan_out::list_items(value(template, "`for_each`")?),
            Items::Matrix { axes, include, exclude } => {
                let mut values = Vec::with_capacity(axes.len());
                for (name, template) in axes {
                    values.push((name.clone(), value(template, &format!("matrix axis `{name}`"))?));
                }
                let include = include.as_ref().map(|t| value(t, "matrix `include`")).transpose()?;
                let exclude = exclude.as_ref().map(|t| value(t, "matrix `exclude`")).transpose()?;
                fan_out::matrix_items(values, include, exclude)
            }
        };
        let mut items = items?;
        for item in &mut items {
            self.secrets.mask_value(item);
        }
        Ok(items)
    }

    /// Starts the items of a fan-out step that may start: those whose retry is due, then
    /// those not started, in item order, while slots are free and no more items failed than
    /// the step tolerates. An item whose `if` is false is skipped.
    fn consider_items(
        &mut self,
        out: &mut Transition,
        step: StepIndex,
        now: Time,
        stopping: bool,
    ) -> bool {
        let workflow = Arc::clone(&self.workflow);
        let definition = &workflow.steps[step];
        let position = self.state.position(step);
        let mut progressed = false;
        let due: Vec<(usize, Option<u32>)> = self
            .transient
            .due
            .range((position, Some(0))..=(position, Some(u32::MAX)))
            .copied()
            .collect();
        for key in due {
            let Some(run) = self.steps()[step].instance(key.1) else { continue };
            let StepState::Active(AttemptState::Retrying { next, at }) = run.state else {
                self.transient.due.remove(&key);
                continue;
            };
            if at > now || !self.slot_free(step, key.1) {
                continue;
            }
            self.transient.due.remove(&key);
            self.start_attempt(out, Attempt::of_item(step, key.1, next), now);
            progressed = true;
        }
        let Some(fan_out) = &definition.fan_out else { return progressed };
        loop {
            if self.state.stop().is_some() && !stopping {
                break;
            }
            let run = &self.steps()[step];
            let Some(items) = &run.items else { break };
            if run.state != StepState::FannedOut {
                break;
            }
            if items.failed() as usize > fan_out.tolerate.of(items.runs.len()) {
                break;
            }
            let Some(item) = items.next_pending() else { break };
            let attempt = items.runs[item as usize].attempts + 1;
            let this = Attempt::of_item(step, Some(item), attempt);
            let decision = match &definition.when {
                None => Ok(true),
                Some(expression) => {
                    let status = self.status_view(step, stopping);
                    evaluate_bool(expression, &self.if_scope(status, step, Some(item)))
                }
            };
            match decision {
                Ok(false) => {
                    let reason = match &definition.when {
                        Some(expression) => format!("`if: {}` is false", expression.source()),
                        None => String::new(),
                    };
                    let kind = EventKind::StepSkipped {
                        step: definition.id.clone(),
                        item: Some(item),
                        reason,
                        cancelled: false,
                    };
                    self.emit_for(out, now, kind, this);
                }
                Ok(true) => {
                    if !self.slot_free(step, Some(item)) {
                        break;
                    }
                    self.start_attempt(out, this, now);
                }
                Err(error) => {
                    self.emit_started(out, this, None, now);
                    let error =
                        ErrorInfo::new(ErrorClass::Expression, format!("`if`: {}", error.message));
                    self.attempt_failed(out, this, Failure::of(error), now);
                }
            }
            progressed = true;
        }
        progressed
    }

    /// Why a step with the default `if` (`success()`) does not run.
    fn not_successful(&self, step: StepIndex) -> String {
        let unsuccessful: Vec<String> = self.workflow.steps[step]
            .needs
            .iter()
            .filter(|&&need| self.steps()[need].state != StepState::Succeeded)
            .map(|&need| {
                format!("`{}` {}", self.workflow.steps[need].id, self.steps()[need].status())
            })
            .collect();
        if unsuccessful.is_empty() {
            "the execution is stopping".to_owned()
        } else {
            format!("needs did not succeed: {}", unsuccessful.join(", "))
        }
    }

    /// Whether the workflow's `max_parallel` is reached.
    fn workflow_full(&self) -> bool {
        self.workflow.max_parallel.is_some_and(|cap| self.state.running() >= cap)
    }

    /// Whether an attempt of `step` (of its `item`) may start now: workflow, group and, for an
    /// item, the step's own `max_parallel`.
    fn slot_free(&self, step: StepIndex, item: Option<u32>) -> bool {
        let definition = &self.workflow.steps[step];
        if !takes_slot(definition) {
            return true;
        }
        if self.workflow_full() {
            return false;
        }
        if let (Some(_), Some(fan_out), Some(items)) =
            (item, &definition.fan_out, &self.steps()[step].items)
            && fan_out.max_parallel.is_some_and(|cap| items.running() >= cap)
        {
            return false;
        }
        match definition.group {
            Some(group) => self.workflow.groups[group]
                .max_parallel
                .is_none_or(|cap| self.state.group_running(group) < cap),
            None => true,
        }
    }

    fn status_view(&self, step: StepIndex, stopping: bool) -> StatusView {
        let needs = &self.workflow.steps[step].needs;
        let steps = self.steps();
        let cancelled = self.state.stop().is_some_and(|stop| stop.reason != StopReason::Failed);
        StatusView {
            success: !stopping
                && needs.iter().all(|&need| steps[need].state == StepState::Succeeded),
            failure: needs.iter().any(|&need| steps[need].state == StepState::Failed),
            cancelled,
        }
    }
}
