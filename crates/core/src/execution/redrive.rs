//! Rerunning a finished execution in place (`wayline rerun`): which steps run again, decided
//! from the journal alone, recorded as one `redriven` event; the fold then opens the
//! execution again and scheduling carries on as after a start.

use wayline_journal::{EventKind, StepStatus, Time};
use wayline_lang::model::StepIndex;

use super::{Compensation, Execution, Redrive, Rejected, StepState, Transition};

impl Execution {
    /// `Input::Redrive`: refused with the reason unless the execution finished and something
    /// runs again.
    pub(super) fn redrive(
        &mut self,
        out: &mut Transition,
        redrive: Redrive,
        now: Time,
    ) -> Result<(), Rejected> {
        if self.state.outcome().is_none() {
            return Err(Rejected::NotFinished { id: self.id().to_owned(), status: self.status() });
        }
        let steps = self.rerun_set(&redrive.from)?;
        if steps.is_empty() {
            return Err(Rejected::NothingToRerun { id: self.id().to_owned() });
        }
        let kept_items = self.kept_items(&steps, &redrive);
        let steps = steps.into_iter().map(|step| self.workflow.steps[step].id.clone()).collect();
        let Redrive { inputs, actor, .. } = redrive;
        self.transient.due.clear();
        self.transient.compensations_due.clear();
        self.transient.cancels_sent.clear();
        self.emit(out, now, EventKind::Redriven { actor, steps, inputs, kept_items });
        self.begin(out, now);
        Ok(())
    }

    /// The fan-out steps among `rerun` that keep their items: a plain rerun (no `from`, no new
    /// input) of a fan-out whose needs do not run again would evaluate the same items, so
    /// only those that did not succeed run again (as AWS Step Functions redrives a Map run).
    /// A `from` step, or one whose items may come out differently, starts over.
    fn kept_items(&self, rerun: &[StepIndex], redrive: &Redrive) -> Vec<String> {
        if !redrive.from.is_empty() || !redrive.inputs.is_empty() {
            return Vec::new();
        }
        rerun
            .iter()
            .filter(|&&index| {
                self.steps()[index].items.is_some()
                    && self.workflow.steps[index].needs.iter().all(|need| !rerun.contains(need))
            })
            .map(|&index| self.workflow.steps[index].id.clone())
            .collect()
    }

    /// The steps that run again, in dependency order.
    ///
    /// Without `from`: every step that did not succeed — failed, cancelled, never reached,
    /// skipped by a decision, or skipped because the execution stopped — and, downstream of
    /// those, every step that did not succeed either (its skip was decided on what changes
    /// now). Succeeded steps keep their outputs, even downstream.
    ///
    /// With `from`: those steps and everything downstream of them, whatever their status. A
    /// `from` step whose need failed and stays failed would only be skipped again: refused.
    ///
    /// Either way, a step whose effects a rollback undid (compensated) runs again: what was
    /// undone must be redone for the steps after it to make sense.
    fn rerun_set(&self, from: &[String]) -> Result<Vec<StepIndex>, Rejected> {
        let workflow = &self.workflow;
        let steps = self.steps();
        let mut seed = vec![false; steps.len()];
        for name in from {
            let Some(index) = workflow.step(name) else {
                return Err(Rejected::UnknownStep {
                    workflow: workflow.name.clone(),
                    step: name.clone(),
                });
            };
            seed[index] = true;
        }
        for (index, run) in steps.iter().enumerate() {
            if matches!(run.compensation, Compensation::Succeeded | Compensation::Items) {
                seed[index] = true;
            }
            if !from.is_empty() {
                continue;
            }
            let definition = &workflow.steps[index];
            seed[index] |= match &run.state {
                StepState::Succeeded => false,
                // Skipped by its `if` or its branch: that stands unless what it read changes.
                // A step with the default `if` whose needs all succeeded was skipped by a
                // stop or a decision.
                StepState::Skipped { .. } => {
                    run.decision.is_some()
                        || (definition.default_if()
                            && definition.branches.is_empty()
                            && definition
                                .needs
                                .iter()
                                .all(|&need| steps[need].state == StepState::Succeeded))
                }
                StepState::Failed
                | StepState::Cancelled
                | StepState::Pending
                | StepState::Active(_)
                | StepState::Escalated
                | StepState::FannedOut => true,
            };
        }
        let mut reset = vec![false; steps.len()];
        for &index in &workflow.order {
            let upstream = workflow.steps[index].needs.iter().any(|&need| reset[need]);
            let downstream =
                upstream && (!from.is_empty() || steps[index].state != StepState::Succeeded);
            reset[index] = seed[index] || downstream;
        }
        if !from.is_empty() {
            self.check_needs(&reset)?;
        }
        Ok(workflow.order.iter().copied().filter(|&index| reset[index]).collect())
    }

    /// Every step that runs again by default (`if: success()`) has needs that succeeded or
    /// run again too.
    fn check_needs(&self, reset: &[bool]) -> Result<(), Rejected> {
        let workflow = &self.workflow;
        for &index in &workflow.order {
            let definition = &workflow.steps[index];
            if !reset[index] || !definition.default_if() {
                continue;
            }
            for &need in &definition.needs {
                let run = &self.steps()[need];
                let status = run.status();
                if reset[need] || status == StepStatus::Succeeded {
                    continue;
                }
                if matches!(status, StepStatus::Skipped) {
                    continue; // skipped by its own `if` or branch: the dependent's skip stands
                }
                return Err(Rejected::NeedNotRerun {
                    step: definition.id.clone(),
                    need: workflow.steps[need].id.clone(),
                    status,
                });
            }
        }
        Ok(())
    }
}
