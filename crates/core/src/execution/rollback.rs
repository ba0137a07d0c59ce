//! Scheduling during a rollback: compensations start in reverse dependency order (those of
//! independent steps in parallel, each with its own retries), and the execution finishes once
//! none is left.

use std::collections::BTreeSet;

use wayline_journal::{EventKind, Time};

use super::{Attempt, AttemptState, Compensation, Effect, Execution, Transition};

impl Execution {
    /// Starts the compensations that may start, and finishes when none is left to run.
    pub(super) fn schedule_rollback(&mut self, out: &mut Transition, now: Time) {
        self.start_compensations(out, now);
        let left = self.steps().iter().any(|run| {
            matches!(
                run.compensation,
                Compensation::Waiting | Compensation::Ready | Compensation::Active(_)
            )
        });
        if !left {
            self.finish(out, now);
        }
    }

    fn start_compensations(&mut self, out: &mut Transition, now: Time) {
        // Ready ones and those whose retry is due, the latest in dependency order first.
        let candidates: BTreeSet<usize> = self
            .state
            .compensations_ready()
            .union(&self.transient.compensations_due)
            .copied()
            .collect();
        for position in candidates.into_iter().rev() {
            if self.workflow.max_parallel.is_some_and(|cap| self.state.running() >= cap) {
                break;
            }
            let step = self.workflow.order[position];
            let run = &self.steps()[step];
            let attempt = match &run.compensation {
                Compensation::Ready => run.compensation_attempts + 1,
                Compensation::Active(AttemptState::Retrying { next, at }) if *at <= now => *next,
                _ => continue,
            };
            self.transient.compensations_due.remove(&position);
            let id = self.workflow.steps[step].id.clone();
            self.emit(
                out,
                now,
                EventKind::AttemptStarted { step: id, attempt, compensation: true, until: None },
            );
            out.effects.push(Effect::Start(Attempt::compensation(step, attempt)));
        }
    }
}
