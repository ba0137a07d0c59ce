//! Scheduling during a rollback: compensations start in reverse dependency order (those of
//! independent steps in parallel, each with its own retries), and the execution finishes once
//! none is left.

use std::collections::BTreeSet;

use wayline_journal::{AttemptKind, EventKind, Time};

use super::{Attempt, AttemptState, Compensation, Effect, Execution, Instance, Transition};

impl Execution {
    /// Starts the compensations that may start, and finishes when none is left to run.
    pub(super) fn schedule_rollback(&mut self, out: &mut Transition, now: Time) {
        self.start_compensations(out, now);
        let left = self.steps().iter().any(|run| {
            matches!(
                run.compensation,
                Compensation::Waiting
                    | Compensation::Ready
                    | Compensation::Active(_)
                    | Compensation::Items
            )
        });
        if !left {
            self.finish(out, now);
        }
    }

    fn start_compensations(&mut self, out: &mut Transition, now: Time) {
        // Ready ones and those whose retry is due, the latest in dependency order first (of a
        // fan-out, one item at a time, the last first).
        let candidates: BTreeSet<Instance> = self
            .state
            .compensations_ready()
            .union(&self.transient.compensations_due)
            .copied()
            .collect();
        for (position, item) in candidates.into_iter().rev() {
            if self.workflow.max_parallel.is_some_and(|cap| self.state.running() >= cap) {
                break;
            }
            let step = self.workflow.order[position];
            let Some(run) = self.steps()[step].instance(item) else { continue };
            let attempt = match &run.compensation {
                Compensation::Ready => run.compensation_attempts + 1,
                Compensation::Active(AttemptState::Retrying { next, at }) if *at <= now => *next,
                _ => continue,
            };
            self.transient.compensations_due.remove(&(position, item));
            let id = self.workflow.steps[step].id.clone();
            self.emit(
                out,
                now,
                EventKind::AttemptStarted {
                    step: id,
                    item,
                    attempt,
                    compensation: true,
                    until: None,
                },
            );
            let this = Attempt { step, item, number: attempt, kind: AttemptKind::Compensation };
            out.effects.push(Effect::Start(this));
        }
    }
}
