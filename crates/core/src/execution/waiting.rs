//! Why a step is not running (docs/design.md §2.5): one sentence per step for people, computed
//! from the state, never stored.

use wayline_journal::StopReason;
use wayline_lang::model::StepIndex;

use super::{AttemptState, Execution, StepState};

impl Execution {
    /// Why a step that is not running is not running, for people; `None` once it runs or
    /// finished.
    pub fn waiting(&self, step: StepIndex) -> Option<String> {
        let state = &self.state;
        let run = &state.steps()[step];
        let definition = &self.workflow.steps[step];
        match &run.state {
            StepState::Active(AttemptState::Retrying { next, at }) => {
                return Some(format!("attempt {next} at {}", at.rfc3339()));
            }
            StepState::Escalated => return Some("waiting for a decision (wayline decide)".into()),
            StepState::FannedOut => return self.items_waiting(step),
            StepState::Pending => {}
            _ => return None,
        }
        if state.outcome().is_some() {
            return None;
        }
        if let Some(stop) = state.stop() {
            return Some(match stop.reason {
                StopReason::Failed => "the execution is stopping after a failure".into(),
                StopReason::Cancelled => "the execution is being cancelled".into(),
                StopReason::Timeout => "the execution timed out".into(),
            });
        }
        if state.missing(step) > 0 {
            let waiting: Vec<&str> = definition
                .needs
                .iter()
                .filter(|&&need| !state.steps()[need].state.is_done())
                .map(|&need| self.workflow.steps[need].id.as_str())
                .collect();
            return Some(format!("waiting for {}", waiting.join(", ")));
        }
        if state.pause().is_some() && state.held().contains(&step) {
            return Some(format!(
                "at its breakpoint: `wayline step {id}` starts it, `wayline resume {id}` goes on",
                id = self.id()
            ));
        }
        if let Some(pause) = state.pause() {
            if let Some(reason) = &pause.actor.reason {
                return Some(format!("execution paused by {} ({reason})", pause.actor.by));
            }
            let until = pause.until.map(|t| format!(" until {}", t.rfc3339())).unwrap_or_default();
            return Some(format!("execution paused by {}{until}", pause.actor.by));
        }
        if let Some(&escalated) = state.escalated().iter().next() {
            return Some(format!(
                "execution escalated: waiting for a decision on `{}`",
                self.workflow.steps[escalated].id
            ));
        }
        self.slots_full(step).or_else(|| Some("ready".into()))
    }

    /// Why items of a fan-out step are not started yet; `None` when none waits.
    fn items_waiting(&self, step: StepIndex) -> Option<String> {
        let items = self.state.steps()[step].items.as_ref()?;
        let pending = items.pending();
        if pending == 0 || self.state.outcome().is_some() {
            return None;
        }
        let total = items.runs.len();
        let why = if let Some(pause) = self.state.pause() {
            format!("execution paused by {}", pause.actor.by)
        } else if let Some(cap) =
            self.workflow.steps[step].fan_out.as_ref().and_then(|f| f.max_parallel)
            && items.running() >= cap
        {
            format!("the step's max_parallel is reached ({}/{cap} items running)", items.running())
        } else {
            self.slots_full(step).unwrap_or_else(|| "ready".into())
        };
        Some(format!("{pending} of {total} items not started: {why}"))
    }

    /// Why a step that may start cannot for want of a slot, if so.
    fn slots_full(&self, step: StepIndex) -> Option<String> {
        let state = &self.state;
        let definition = &self.workflow.steps[step];
        if let Some(group) = definition.group {
            let cap = self.workflow.groups[group].max_parallel.unwrap_or(u32::MAX);
            let running = state.group_running(group);
            if running >= cap {
                return Some(format!(
                    "group `{}` is full ({running}/{cap} running)",
                    self.workflow.groups[group].name
                ));
            }
        }
        if let Some(cap) = self.workflow.max_parallel
            && state.running() >= cap
        {
            return Some(format!("max_parallel reached ({}/{cap} running)", state.running()));
        }
        None
    }
}
