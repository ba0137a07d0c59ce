//! Beginning to schedule: a new execution's start, and a new owner's recovery after it folded
//! the journal, which rebuilds what only the live engine knew (timers, the workflow `env`)
//! and records the attempts that were in flight as lost.

use serde_json::{Map, Value};
use wayline_journal::{AttemptKind, ErrorClass, ErrorInfo, EventKind, Outcome, Time};
use wayline_lang::expr::EvalError;

use super::attempt::Failure;
use super::fold::Pause;
use super::{Attempt, AttemptState, Effect, Execution, StepState, Timer, Transition};

impl Execution {
    /// `Input::Start`: the execution begins.
    pub(super) fn start(&mut self, out: &mut Transition, now: Time) {
        self.emit(out, now, EventKind::Started);
        self.begin(out, now);
    }

    /// `Input::Recover`: this owner took the execution over. Attempts in flight died with the
    /// old owner (waits excepted: the core keeps them); every timer is armed again.
    pub(super) fn recover(&mut self, out: &mut Transition, owner: String, now: Time) {
        self.emit(out, now, EventKind::Recovered { owner });
        if self.state.started_at().is_none() {
            self.emit(out, now, EventKind::Started);
        }
        if !self.begin(out, now) {
            return;
        }
        if let Some(Pause { until: Some(until), .. }) = self.state.pause() {
            let until = *until;
            out.effects.push(Effect::Timer { at: until, timer: Timer::PauseEnd { until } });
        }
        for index in 0..self.steps().len() {
            if self.steps()[index].state == StepState::Escalated {
                self.escalation_timer(out, index);
            }
            let items = self.steps()[index].items.as_ref().map_or(0, |items| items.runs.len());
            let instances = std::iter::once(None).chain((0..items as u32).map(Some));
            for item in instances {
                for kind in [AttemptKind::Step, AttemptKind::Compensation] {
                    self.recover_instance(out, Attempt { step: index, item, number: 0, kind }, now);
                }
            }
        }
    }

    /// Re-arms the timer of one instance's attempts (`of.number` is ignored), or records its
    /// attempt in flight as lost.
    fn recover_instance(&mut self, out: &mut Transition, of: Attempt, now: Time) {
        let Some(run) = self.steps()[of.step].instance(of.item) else { return };
        let Some(active) = run.active(of.kind).cloned() else { return };
        let attempt = |number| Attempt { number, ..of };
        match active {
            AttemptState::Running { attempt: number, until: Some(until), .. } => {
                // Waits are kept by the core: they survive the owner.
                let timer = Timer::Wait(attempt(number));
                out.effects.push(Effect::Timer { at: until, timer });
            }
            AttemptState::Running { attempt: number, .. } => {
                let (what, lost) = match of.kind {
                    AttemptKind::Compensation => ("compensation", run.compensation_lost),
                    _ => ("attempt", run.lost),
                };
                let mut message =
                    format!("the process running this {what} stopped before it finished");
                if lost >= crate::retry::MAX_LOST {
                    message.push_str(&format!(
                        " (lost {} times: a lost attempt is retried at most {} times)",
                        lost + 1,
                        crate::retry::MAX_LOST
                    ));
                }
                let error = ErrorInfo::new(ErrorClass::Lost, message);
                self.attempt_failed(out, attempt(number), Failure::of(error), now);
            }
            AttemptState::Retrying { next, at } => {
                out.effects.push(Effect::Timer { at, timer: Timer::Retry(attempt(next)) });
            }
        }
    }

    /// What starting, recovering and rerunning share: the workflow `env` is evaluated (an
    /// `env` that cannot be evaluated fails the execution at once) and the execution's deadline
    /// armed.
    /// Returns whether scheduling goes on.
    pub(super) fn begin(&mut self, out: &mut Transition, now: Time) -> bool {
        if let Err(error) = self.evaluate_env() {
            let error =
                ErrorInfo::new(ErrorClass::Expression, format!("workflow env: {}", error.message));
            self.emit(
                out,
                now,
                EventKind::Finished {
                    outcome: Outcome::Failed,
                    error: Some(error),
                    outputs: Default::default(),
                },
            );
            out.effects.push(Effect::Finished);
            return false;
        }
        // A rerun has the whole timeout again, from the rerun.
        let started = self.state.redriven_at().or(self.state.started_at());
        if let (Some(timeout), Some(started)) = (self.workflow.timeout, started) {
            out.effects.push(Effect::Timer { at: started.after(timeout), timer: Timer::Deadline });
        }
        true
    }

    fn evaluate_env(&mut self) -> Result<(), EvalError> {
        let mut env = Map::new();
        for (key, template) in &self.workflow.env {
            let value = template.render(&self.scope(None), |text| text.to_owned())?;
            env.insert(key.clone(), Value::String(value));
        }
        self.transient.env = Value::Object(env);
        Ok(())
    }
}
