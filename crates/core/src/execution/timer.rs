//! Timers: a retry that is due, a wait that is over, an escalation nobody decided, the end of
//! `pause --until`, the execution's deadline. A timer that stopped mattering is ignored, so
//! none ever needs cancelling.

use serde_json::Map;
use wayline_journal::{Actor, AttemptKind, ErrorClass, ErrorInfo, EventKind, StopReason, Time};
use wayline_lang::model::{StepIndex, Strategy};

use super::fold::Pause;
use super::{Attempt, AttemptState, Effect, Execution, StepState, Timer, Transition};

impl Execution {
    /// `Input::Timer`.
    pub(super) fn timer(&mut self, out: &mut Transition, timer: Timer, now: Time) {
        match timer {
            Timer::Retry(attempt) => {
                let due = self
                    .steps()
                    .get(attempt.step)
                    .and_then(|run| run.instance(attempt.item))
                    .and_then(|run| run.active(attempt.kind));
                if !matches!(due, Some(AttemptState::Retrying { next, .. }) if *next == attempt.number)
                {
                    return;
                }
                // Firing records nothing: the start it allows will be recorded.
                let key = (self.state.position(attempt.step), attempt.item);
                match attempt.kind {
                    AttemptKind::Step => self.transient.due.insert(key),
                    AttemptKind::Compensation => self.transient.compensations_due.insert(key),
                    AttemptKind::Notify => false,
                };
            }
            Timer::Wait(this @ Attempt { step, item, number: attempt, .. }) => {
                let waiting = self.steps()[step].instance(item).is_some_and(|run| {
                    matches!(
                        run.state,
                        StepState::Active(AttemptState::Running { attempt: a, until: Some(_), .. }) if a == attempt
                    )
                });
                if waiting {
                    let id = self.workflow.steps[step].id.clone();
                    let kind = EventKind::AttemptSucceeded {
                        step: id,
                        item,
                        attempt,
                        compensation: false,
                        outputs: Map::new(),
                    };
                    self.emit_for(out, now, kind, this);
                }
            }
            Timer::Escalation { step, since } => {
                if self.steps()[step].state == StepState::Escalated
                    && self.steps()[step].finished_at == Some(since)
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
                if matches!(self.state.pause(), Some(Pause { until: Some(u), .. }) if *u == until) {
                    let actor =
                        Actor { by: "timer".into(), reason: Some("pause --until reached".into()) };
                    self.emit(out, now, EventKind::Resumed { actor });
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

    /// Arms the escalation timeout of an escalated step, if the workflow has one.
    pub(super) fn escalation_timer(&self, out: &mut Transition, step: StepIndex) {
        if let (Some(timeout), Some(since)) =
            (self.workflow.escalation.timeout, self.steps()[step].finished_at)
        {
            out.effects.push(Effect::Timer {
                at: since.after(timeout),
                timer: Timer::Escalation { step, since },
            });
        }
    }
}
