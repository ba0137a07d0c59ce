//! The end of an execution: stopping (nothing new starts, attempts in flight are cancelled)
//! and the final outcome with its error, once nothing is left to run or compensate.

use wayline_journal::{Actor, ErrorClass, ErrorInfo, EventKind, Outcome, StopReason, Time};
use wayline_lang::model::{StepIndex, Strategy};

use super::{Attempt, AttemptState, Compensation, Effect, Execution, StepState, Transition};

impl Execution {
    /// Stops the execution, once: no new step with the default `if` starts, attempts in
    /// flight are cancelled, waits end at once.
    pub(super) fn stop(
        &mut self,
        out: &mut Transition,
        now: Time,
        reason: StopReason,
        rollback: bool,
        actor: Option<Actor>,
        error: Option<ErrorInfo>,
    ) {
        if self.state.stop().is_some() {
            return;
        }
        self.emit(out, now, EventKind::Stopping { reason, rollback, actor, error });
        // Retries that were due no longer start: the stopping schedule skips their steps.
        self.transient.due.clear();
        for index in 0..self.steps().len() {
            let items = self.steps()[index].items.as_ref().map_or(0, |items| items.runs.len());
            let instances = std::iter::once(None).chain((0..items as u32).map(Some));
            self.cancel_in_flight(out, now, index, instances.collect());
        }
    }

    /// Stops the attempts in flight of these instances of `step`: a wait ends on the spot
    /// (cancelled), a process or request is asked to stop (once).
    pub(super) fn cancel_in_flight(
        &mut self,
        out: &mut Transition,
        now: Time,
        step: StepIndex,
        instances: Vec<Option<u32>>,
    ) {
        let run = &self.steps()[step];
        let running: Vec<(Option<u32>, u32, bool)> = instances
            .into_iter()
            .filter_map(|item| match run.instance(item)?.state {
                StepState::Active(AttemptState::Running { attempt, until, .. }) => {
                    Some((item, attempt, until.is_some()))
                }
                _ => None,
            })
            .collect();
        for (item, attempt, waits) in running {
            let this = Attempt::of_item(step, item, attempt);
            if waits {
                let id = self.workflow.steps[step].id.clone();
                let kind =
                    EventKind::AttemptCancelled { step: id, item, attempt, compensation: false };
                self.emit_for(out, now, kind, this);
            } else if self.transient.cancels_sent.insert(this) {
                out.effects.push(Effect::Cancel(this));
            }
        }
    }

    /// Records the final outcome: nothing is left to run or compensate.
    pub(super) fn finish(&mut self, out: &mut Transition, now: Time) {
        let (mut outcome, mut error) = self.outcome_now();
        let mut outputs = serde_json::Map::new();
        if outcome == Outcome::Succeeded {
            match self.workflow_outputs() {
                Ok(values) => outputs = values,
                // An output that cannot be computed is the workflow's failure: a caller would
                // otherwise read a success without the values it promised.
                Err(message) => {
                    outcome = Outcome::Failed;
                    error = Some(ErrorInfo::new(ErrorClass::Expression, message));
                }
            }
        }
        self.emit(out, now, EventKind::Finished { outcome, error, outputs });
        out.effects.push(Effect::Finished);
    }

    /// The workflow's `outputs`, evaluated against the finished steps, masked; or why one
    /// cannot be.
    fn workflow_outputs(&self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let view = self.scope(None);
        let mut meter = wayline_lang::expr::Meter::default();
        let mut outputs = serde_json::Map::new();
        for (key, template) in &self.workflow.outputs {
            let mut value = crate::render::value_with(template, &view, &mut meter)
                .map_err(|error| format!("workflow output `{key}`: {}", error.message))?;
            self.secrets.mask_value(&mut value);
            outputs.insert(key.clone(), value);
        }
        Ok(outputs)
    }

    fn outcome_now(&self) -> (Outcome, Option<ErrorInfo>) {
        let steps = self.steps();
        let Some(stop) = self.state.stop() else {
            let failed: Vec<usize> =
                (0..steps.len()).filter(|&i| steps[i].state == StepState::Failed).collect();
            let tolerated = failed.iter().all(|&i| {
                let step = &self.workflow.steps[i];
                step.on_failure == Strategy::Continue && step.allow_failure
            });
            if failed.is_empty() || tolerated {
                return (Outcome::Succeeded, None);
            }
            let names: Vec<&str> =
                failed.iter().map(|&i| self.workflow.steps[i].id.as_str()).collect();
            let first =
                steps[failed[0]].error.as_ref().map(|e| e.class).unwrap_or(ErrorClass::Failure);
            let plural = if names.len() > 1 { "s" } else { "" };
            let message = format!("step{plural} failed: {}", names.join(", "));
            return (Outcome::Failed, Some(ErrorInfo::new(first, message)));
        };
        let failed: Vec<&str> = steps
            .iter()
            .enumerate()
            .filter(|(_, run)| matches!(run.compensation, Compensation::Failed(_)))
            .map(|(index, _)| self.workflow.steps[index].id.as_str())
            .collect();
        if !failed.is_empty() {
            let detail =
                stop.error.as_ref().map(|e| format!("{}; ", e.message)).unwrap_or_default();
            let message =
                format!("{detail}rollback_failed: compensation of {} failed", failed.join(", "));
            return (Outcome::Failed, Some(ErrorInfo::new(ErrorClass::Failure, message)));
        }
        let outcome = match stop.reason {
            StopReason::Cancelled => Outcome::Cancelled,
            StopReason::Failed if stop.rollback => Outcome::RolledBack,
            StopReason::Failed | StopReason::Timeout => Outcome::Failed,
        };
        (outcome, stop.error.clone())
    }
}
