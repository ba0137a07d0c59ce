//! What every input ends with: start whatever may start now, skip what can no longer run, and
//! hand over to the rollback or the end when nothing is left.

use std::sync::Arc;

use serde_json::Value;
use wayline_journal::{ErrorClass, ErrorInfo, EventKind, StopReason, Time};
use wayline_lang::expr::StatusView;
use wayline_lang::model::StepIndex;

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
                    StepState::Active(_) | StepState::Escalated | StepState::Pending
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
            let next_due = self.transient.due.range(cursor..).next().copied();
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
        let under_way = self.steps().iter().any(|run| matches!(run.state, StepState::Active(_)));
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
                _ => false,
            };
            if skip {
                let id = definition.id.clone();
                self.emit(
                    out,
                    now,
                    EventKind::StepSkipped { step: id, reason: reason.into(), cancelled },
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

    /// Looks at one step whose needs are finished: skip it, or start it if a slot is free.
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
        if let StepState::Active(AttemptState::Retrying { next, at }) = self.steps()[step].state {
            let position = self.state.position(step);
            if at > now || !self.transient.due.contains(&position) || !self.slot_free(step) {
                return false;
            }
            self.transient.due.remove(&position);
            self.start_attempt(out, step, next, now);
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
                self.emit(out, now, EventKind::StepSkipped { step: id, reason, cancelled: false });
                return true;
            }
        }
        let status = self.status_view(step, stopping);
        let run = match &definition.when {
            None => Ok(status.success),
            Some(expression) => evaluate_bool(expression, &self.if_scope(status)),
        };
        let attempt = self.steps()[step].attempts + 1;
        match run {
            Ok(false) => {
                let reason = match &definition.when {
                    None => self.not_successful(step),
                    Some(expression) => format!("`if: {}` is false", expression.source()),
                };
                self.emit(out, now, EventKind::StepSkipped { step: id, reason, cancelled: false });
                true
            }
            Ok(true) => {
                if !stopping && self.state.breaks_before(step) {
                    self.transient.breaking.insert(step);
                    return false;
                }
                if !self.slot_free(step) {
                    return false;
                }
                self.start_attempt(out, step, attempt, now);
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

    fn slot_free(&self, step: StepIndex) -> bool {
        let definition = &self.workflow.steps[step];
        if !takes_slot(definition) {
            return true;
        }
        if self.workflow_full() {
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
