//! Control requests from people (pause, resume, cancel, decide) and the decisions on escalated
//! steps, whoever takes them: a request that cannot apply is rejected with its reason and
//! changes nothing.

use serde_json::{Map, Value};
use wayline_journal::{Actor, Decision, ErrorClass, ErrorInfo, EventKind, StopReason, Time};
use wayline_lang::model::StepIndex;

use super::{Control, Effect, Execution, Rejected, StepState, Timer, Transition};

impl Execution {
    /// `Input::Control`.
    pub(super) fn control(
        &mut self,
        out: &mut Transition,
        control: Control,
        now: Time,
    ) -> Result<(), Rejected> {
        match control {
            Control::Pause { actor, until } => {
                if self.state.stop().is_some() {
                    return Err(Rejected::Stopping);
                }
                self.emit(out, now, EventKind::Paused { actor, until });
                if let Some(until) = until {
                    out.effects.push(Effect::Timer { at: until, timer: Timer::PauseEnd { until } });
                }
            }
            Control::Resume { actor } => {
                if self.state.pause().is_none() {
                    return Err(Rejected::NotPaused {
                        id: self.id().to_owned(),
                        status: self.status(),
                    });
                }
                self.emit(out, now, EventKind::Resumed { actor });
            }
            Control::Cancel { actor, rollback } => {
                if self.state.stop().is_some() {
                    return Err(Rejected::AlreadyStopping);
                }
                let error = ErrorInfo::new(ErrorClass::Fatal, format!("cancelled by {}", actor.by));
                self.stop(out, now, StopReason::Cancelled, rollback, Some(actor), Some(error));
            }
            Control::Decide { step, decision, outputs, actor } => {
                let Some(index) = self.workflow.step(&step) else {
                    let workflow = self.workflow.name.clone();
                    return Err(Rejected::UnknownStep { workflow, step });
                };
                let run = &self.steps()[index];
                if run.state != StepState::Escalated {
                    return Err(Rejected::NotEscalated { step, status: run.status() });
                }
                if !outputs.is_empty() && decision != Decision::Skip {
                    return Err(Rejected::OutputsWithoutSkip);
                }
                if !outputs.is_empty() && run.items.is_some() {
                    return Err(Rejected::OutputsOfFanOut { step });
                }
                self.decide(out, index, decision, outputs, actor, now);
            }
            Control::Break { steps, every, actor } => {
                if self.state.stop().is_some() {
                    return Err(Rejected::Stopping);
                }
                for step in &steps {
                    let index = self.step_named(step)?;
                    let run = &self.steps()[index];
                    if run.state != StepState::Pending {
                        return Err(Rejected::AlreadyStarted {
                            step: step.clone(),
                            status: run.status(),
                        });
                    }
                }
                self.emit(out, now, EventKind::BreakpointsSet { steps, every, actor });
            }
            Control::Step { actor } => {
                if self.state.pause().is_none() || self.state.stop().is_some() {
                    return Err(Rejected::NotPaused {
                        id: self.id().to_owned(),
                        status: self.status(),
                    });
                }
                self.emit(out, now, EventKind::Stepped { actor });
            }
            Control::Patch { step, mut outputs, inputs, actor } => {
                if self.state.pause().is_none() || self.state.stop().is_some() {
                    return Err(Rejected::NotPausedForPatch {
                        id: self.id().to_owned(),
                        status: self.status(),
                    });
                }
                if outputs.is_empty() && inputs.is_empty() {
                    return Err(Rejected::BadPatch(
                        "a patch needs an output or an input to change".into(),
                    ));
                }
                if !outputs.is_empty() {
                    let Some(name) = &step else {
                        return Err(Rejected::BadPatch("outputs belong to a step: name it".into()));
                    };
                    let index = self.step_named(name)?;
                    let run = &self.steps()[index];
                    if run.items.is_some() {
                        return Err(Rejected::OutputsOfFanOut { step: name.clone() });
                    }
                    if run.state != StepState::Succeeded {
                        return Err(Rejected::NotSucceeded {
                            step: name.clone(),
                            status: run.status(),
                        });
                    }
                } else if let Some(name) = &step {
                    self.step_named(name)?;
                }
                for (name, value) in &inputs {
                    let Some(input) = self.workflow.input(name) else {
                        return Err(Rejected::BadPatch(format!(
                            "workflow `{}` has no input `{name}`",
                            self.workflow.name
                        )));
                    };
                    if !input.ty.accepts(value) {
                        return Err(Rejected::BadPatch(format!(
                            "input `{name}` must be of type {}, got {value}",
                            input.ty.name()
                        )));
                    }
                }
                for value in outputs.values_mut() {
                    self.secrets.mask_value(value);
                }
                self.emit(out, now, EventKind::Patched { step, outputs, inputs, actor });
            }
        }
        Ok(())
    }

    fn step_named(&self, step: &str) -> Result<StepIndex, Rejected> {
        self.workflow.step(step).ok_or_else(|| Rejected::UnknownStep {
            workflow: self.workflow.name.clone(),
            step: step.to_owned(),
        })
    }

    /// Records a decision on an escalated step; `fail` and `rollback` stop the execution.
    pub(super) fn decide(
        &mut self,
        out: &mut Transition,
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
                        "step `{id}` failed and {} decided to {decision}{}",
                        actor.by,
                        reason.map(|r| format!(": {r}")).unwrap_or_default()
                    ),
                );
                let rollback = decision == Decision::Rollback;
                self.stop(out, now, StopReason::Failed, rollback, Some(actor), Some(error));
            }
            Decision::Retry | Decision::Skip => {}
        }
    }
}
