//! Attempts: starting one (instant steps complete on the spot), the process an executor
//! reports, and what follows an attempt's end: success, a retry, or a terminal failure and
//! the strategy it triggers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use wayline_journal::{ErrorClass, ErrorInfo, EventKind, Process, StopReason, Time};
use wayline_lang::model::{Body, StepIndex, Strategy, ValueTemplate, Wait};

use super::scope::evaluate_bool;
use super::{
    Attempt, AttemptResult, AttemptState, Effect, Execution, StepState, Timer, Transition,
};
use crate::retry;

/// How a failed attempt ended, as the decision about it needs it.
pub(super) struct Failure {
    error: ErrorInfo,
    outputs: Map<String, Value>,
    retry_after: Option<Duration>,
}

impl Failure {
    /// A failure with nothing but its error (a lost attempt, an expression that could not be
    /// evaluated).
    pub(super) fn of(error: ErrorInfo) -> Failure {
        Failure { error, outputs: Map::new(), retry_after: None }
    }
}

impl Execution {
    /// `Input::Running`: the process of a command attempt started. Recorded once, and only
    /// for the attempt in flight.
    pub(super) fn process_started(
        &mut self,
        out: &mut Transition,
        attempt: Attempt,
        process: Process,
        now: Time,
    ) {
        let number = attempt.number;
        let current = self
            .in_flight(attempt)
            .is_some_and(|active| matches!(active, AttemptState::Running { process: None, .. }));
        if current {
            let step = self.workflow.steps[attempt.step].id.clone();
            let compensation = attempt.is_compensation();
            let item = attempt.item;
            self.emit(
                out,
                now,
                EventKind::AttemptRunning { step, item, attempt: number, compensation, process },
            );
        }
    }

    /// `Input::Finished`: an executor finished an attempt.
    pub(super) fn attempt_finished(
        &mut self,
        out: &mut Transition,
        attempt: Attempt,
        result: AttemptResult,
        now: Time,
    ) {
        if self.in_flight(attempt).is_none() {
            return; // a late report about an attempt that is no longer in flight
        }
        let step = self.workflow.steps[attempt.step].id.clone();
        let (number, compensation, item) =
            (attempt.number, attempt.is_compensation(), attempt.item);
        match result {
            AttemptResult::Succeeded { mut outputs } => {
                for value in outputs.values_mut() {
                    self.secrets.mask_value(value);
                }
                let kind = EventKind::AttemptSucceeded {
                    step,
                    item,
                    attempt: number,
                    compensation,
                    outputs,
                };
                self.emit_for(out, now, kind, attempt);
            }
            AttemptResult::Cancelled => {
                let kind =
                    EventKind::AttemptCancelled { step, item, attempt: number, compensation };
                self.emit_for(out, now, kind, attempt);
            }
            AttemptResult::Failed { error, outputs, retry_after } => {
                self.attempt_failed(out, attempt, Failure { error, outputs, retry_after }, now);
            }
        }
    }

    /// Records a failed attempt and decides what follows: a retry, or a terminal failure and
    /// the strategy it triggers.
    pub(super) fn attempt_failed(
        &mut self,
        out: &mut Transition,
        attempt: Attempt,
        failure: Failure,
        now: Time,
    ) {
        let Failure { error, mut outputs, retry_after } = failure;
        for value in outputs.values_mut() {
            self.secrets.mask_value(value);
        }
        let step = attempt.step;
        let compensation = attempt.is_compensation();
        let error = ErrorInfo { message: self.secrets.mask(&error.message), ..error };
        let id = self.workflow.steps[step].id.clone();
        let stopping = self.state.stop().is_some() && !compensation;
        let retry =
            if stopping { None } else { self.retry_delay(attempt, error.class, retry_after, now) };
        let kind = EventKind::AttemptFailed {
            step: id.clone(),
            item: attempt.item,
            attempt: attempt.number,
            compensation,
            error: error.clone(),
            outputs,
            terminal: retry.is_none(),
        };
        if attempt.item.is_some() && !compensation {
            // An item's terminal failure fails the step only once more items failed than it
            // tolerates and the others stopped: the step's strategy follows then.
            self.emit_for(out, now, kind, attempt);
        } else {
            self.emit(out, now, kind);
        }
        if let Some(delay) = retry {
            let at = now.after(delay);
            let next = attempt.numbered(attempt.number + 1);
            self.emit(
                out,
                now,
                EventKind::RetryScheduled {
                    step: id,
                    item: attempt.item,
                    attempt: next.number,
                    compensation,
                    delay_ms: delay.as_millis() as u64,
                    at,
                },
            );
            out.effects.push(Effect::Timer { at, timer: Timer::Retry(next) });
            return;
        }
        if compensation || stopping || attempt.item.is_some() {
            return;
        }
        self.step_failed(out, step, error, now);
    }

    /// Records an event about an instance of a step, and, when it made a fan-out step fail,
    /// lets the step's strategy decide.
    pub(super) fn emit_for(
        &mut self,
        out: &mut Transition,
        now: Time,
        kind: EventKind,
        attempt: Attempt,
    ) {
        let step = attempt.step;
        let before = self.steps()[step].state.clone();
        let failed_before = self.steps()[step].items.as_ref().map_or(0, |items| items.failed());
        self.emit(out, now, kind);
        if attempt.item.is_none() || attempt.is_compensation() || before != StepState::FannedOut {
            return;
        }
        let run = &self.steps()[step];
        if run.state == StepState::Failed {
            if self.state.stop().is_none() {
                let error = run
                    .error
                    .clone()
                    .unwrap_or_else(|| ErrorInfo::new(ErrorClass::Failure, "items failed"));
                self.step_failed(out, step, error, now);
            }
            return;
        }
        let Some(items) = &run.items else { return };
        let tolerated = self.workflow.steps[step]
            .fan_out
            .as_ref()
            .map_or(0, |fan_out| fan_out.tolerate.of(items.runs.len()));
        if items.failed() as usize > tolerated && failed_before as usize <= tolerated {
            self.items_exceeded(out, step, now);
        }
    }

    /// One failure more than a fan-out step tolerates: the step has failed, though some of
    /// its items are still in flight. Under `fail_fast` and `rollback` the execution stops at
    /// once (which cancels those items too); otherwise the step's own items stop: those
    /// running are cancelled, those waiting for a retry are skipped, and the step's strategy
    /// decides once they are all back.
    fn items_exceeded(&mut self, out: &mut Transition, step: StepIndex, now: Time) {
        let definition = &self.workflow.steps[step];
        let run = &self.steps()[step];
        let Some(items) = &run.items else { return };
        if self.state.stop().is_none()
            && matches!(definition.on_failure, Strategy::FailFast | Strategy::Rollback)
        {
            let rollback = definition.on_failure == Strategy::Rollback;
            let error = super::fold::items_error(definition, items);
            let error = ErrorInfo::new(
                error.class,
                format!("step `{}` failed: {}", definition.id, error.message),
            );
            self.stop(out, now, StopReason::Failed, rollback, None, Some(error));
            return;
        }
        let id = definition.id.clone();
        let tolerated = definition.fan_out.as_ref().map_or(0, |f| f.tolerate.of(items.runs.len()));
        let failed = items.failed();
        let reason = format!(
            "not run again: {failed} item{} failed, more than the {tolerated} tolerated",
            if failed == 1 { "" } else { "s" }
        );
        let skip: Vec<u32> = (0..items.runs.len() as u32)
            .filter(|&item| {
                matches!(
                    items.runs[item as usize].state,
                    StepState::Active(AttemptState::Retrying { .. })
                )
            })
            .collect();
        let instances = (0..items.runs.len() as u32).map(Some).collect();
        self.cancel_in_flight(out, now, step, instances);
        for item in skip {
            self.transient.due.remove(&(self.state.position(step), Some(item)));
            let kind = EventKind::StepSkipped {
                step: id.clone(),
                item: Some(item),
                reason: reason.clone(),
                cancelled: false,
            };
            self.emit_for(out, now, kind, Attempt::of_item(step, Some(item), 0));
        }
    }

    /// A step failed terminally: its strategy decides what follows.
    fn step_failed(&mut self, out: &mut Transition, step: StepIndex, error: ErrorInfo, now: Time) {
        let id = self.workflow.steps[step].id.clone();
        match self.workflow.steps[step].on_failure {
            Strategy::Continue => {}
            strategy @ (Strategy::FailFast | Strategy::Rollback) => {
                let rollback = strategy == Strategy::Rollback;
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

    /// Starts `this` attempt (of a step, or of one of its items). Condition and set steps
    /// complete on the spot.
    pub(super) fn start_attempt(&mut self, out: &mut Transition, this: Attempt, now: Time) {
        let workflow = Arc::clone(&self.workflow);
        let step = this.step;
        match &workflow.steps[step].body {
            Body::Run(_) | Body::Http(_) => {
                self.emit_started(out, this, None, now);
                out.effects.push(Effect::Start(this));
            }
            // The end of a wait is part of its start event, so it is evaluated first.
            Body::Wait(wait) => match self.wait_end(this, wait, now) {
                Ok(until) => {
                    self.emit_started(out, this, Some(until), now);
                    out.effects.push(Effect::Timer { at: until, timer: Timer::Wait(this) });
                }
                Err(message) => {
                    self.emit_started(out, this, None, now);
                    self.complete(out, this, Err(format!("wait: {message}")), now);
                }
            },
            Body::Condition(condition) => {
                self.emit_started(out, this, None, now);
                let result = self
                    .body_scope(step, this.item, None)
                    .and_then(|view| evaluate_bool(&condition.expression, &view))
                    .map(|result| Map::from_iter([("result".to_owned(), Value::Bool(result))]))
                    .map_err(|error| format!("condition: {}", error.message));
                self.complete(out, this, result, now);
            }
            Body::Set(entries) => {
                self.emit_started(out, this, None, now);
                let result = self.set_outputs(this, entries);
                self.complete(out, this, result, now);
            }
        }
    }

    /// Records the start of `attempt` of a step's body.
    pub(super) fn emit_started(
        &mut self,
        out: &mut Transition,
        attempt: Attempt,
        until: Option<Time>,
        now: Time,
    ) {
        let step = self.workflow.steps[attempt.step].id.clone();
        let kind = EventKind::AttemptStarted {
            step,
            item: attempt.item,
            attempt: attempt.number,
            compensation: false,
            until,
        };
        self.emit(out, now, kind);
    }

    /// The state of `attempt` while it is in flight; `None` once it ended (a late report).
    fn in_flight(&self, attempt: Attempt) -> Option<&AttemptState> {
        let run = self.steps().get(attempt.step)?.instance(attempt.item)?;
        let active = run.active(attempt.kind)?;
        match active {
            AttemptState::Running { attempt: number, .. } if *number == attempt.number => {
                Some(active)
            }
            _ => None,
        }
    }

    /// Ends an attempt the core carried out itself: with its outputs, or failed by an
    /// expression that could not be evaluated (never retried).
    fn complete(
        &mut self,
        out: &mut Transition,
        attempt: Attempt,
        result: Result<Map<String, Value>, String>,
        now: Time,
    ) {
        match result {
            Ok(outputs) => {
                let step = self.workflow.steps[attempt.step].id.clone();
                let kind = EventKind::AttemptSucceeded {
                    step,
                    item: attempt.item,
                    attempt: attempt.number,
                    compensation: false,
                    outputs,
                };
                self.emit_for(out, now, kind, attempt);
            }
            Err(message) => {
                let error = ErrorInfo::new(ErrorClass::Expression, message);
                self.attempt_failed(out, attempt, Failure::of(error), now);
            }
        }
    }

    /// The end of a wait step's attempt.
    fn wait_end(&self, attempt: Attempt, wait: &Wait, now: Time) -> Result<Time, String> {
        match wait {
            Wait::For(duration) => Ok(now.after(*duration)),
            Wait::Until(template) => {
                let view = self
                    .body_scope(attempt.step, attempt.item, Some(attempt.number))
                    .map_err(|e| e.message)?;
                let value = template.evaluate(&view).map_err(|e| e.message)?;
                match value {
                    Value::String(text) => Time::parse(&text),
                    other => Err(format!("`until` must be a timestamp string, got {other}")),
                }
            }
        }
    }

    /// The outputs of a `set` step, masked.
    fn set_outputs(
        &self,
        attempt: Attempt,
        entries: &[(String, ValueTemplate)],
    ) -> Result<Map<String, Value>, String> {
        let view = self
            .body_scope(attempt.step, attempt.item, Some(attempt.number))
            .map_err(|e| e.message)?;
        let mut outputs = Map::new();
        // All values of the step share one evaluation budget.
        let mut meter = wayline_lang::expr::Meter::default();
        for (key, template) in entries {
            let mut value = crate::render::value_with(template, &view, &mut meter)
                .map_err(|error| format!("set.{key}: {}", error.message))?;
            self.secrets.mask_value(&mut value);
            outputs.insert(key.clone(), value);
        }
        Ok(outputs)
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
        let run = self.steps()[attempt.step].instance(attempt.item)?;
        // Lost attempts do not count against `max_attempts`.
        let (policy, used, lost, first) = if compensation {
            let comp = definition.compensate.as_ref()?;
            let used = run.compensation_attempts - run.compensation_base - run.compensation_lost;
            (&comp.retry, used, run.compensation_lost, None)
        } else {
            let used = run.attempts - run.budget_base - run.lost;
            (&definition.retry, used, run.lost, run.budget_started)
        };
        let allowed = match class {
            ErrorClass::Failure => policy.on.failure,
            ErrorClass::Timeout => policy.on.timeout,
            ErrorClass::Lost => policy.on.lost,
            ErrorClass::Fatal | ErrorClass::Expression => false,
        };
        if !allowed {
            return None;
        }
        if class == ErrorClass::Lost {
            // The attempt died with its owner, through no fault of the step: it runs again
            // at once, outside the budget, a bounded number of times.
            return (lost < retry::MAX_LOST).then_some(Duration::ZERO);
        }
        if used >= policy.max_attempts {
            return None;
        }
        let number = if compensation { run.compensation_attempts + 1 } else { run.attempts + 1 };
        let instance = wayline_journal::instance_name(&definition.id, attempt.item);
        let salt = if compensation { format!("{instance}#compensate") } else { instance };
        let (pick, jitter) = retry::samples(self.id(), &salt, number);
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
}
