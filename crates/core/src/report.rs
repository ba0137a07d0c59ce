//! The result object of an execution (docs/design.md §3): what `run --json` and `show --json`
//! print, built from the folded state.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::execution::{AttemptState, Compensation, Execution, StepRun, StepState, item_outputs};
use wayline_journal::{Decision, ErrorInfo, Status, StepStatus};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub id: String,
    pub workflow: String,
    pub status: Status,
    pub inputs: Value,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<ReportError>,
    /// The workflow's `outputs`, once it succeeded.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub outputs: Map<String, Value>,
    /// While paused: by whom (`breakpoint` at a breakpoint), why, until when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseReport>,
    pub steps: Vec<StepReport>,
}

/// Who did something by hand, and why (and, for a pause, until when).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PauseReport {
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    pub id: String,
    pub status: StepStatus,
    /// Of a fan-out step: the sum of its items' attempts.
    pub attempts: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// An object; of a fan-out step, the list of its items' outputs (null for an item that did
    /// not succeed), as `steps.<id>.outputs` reads them.
    pub outputs: Value,
    pub error: Option<ReportError>,
    pub compensation: Option<CompensationReport>,
    /// The items of a fan-out step, in item order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemReport>,
    /// Why a step that is not running is not running (absent once it finished).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Why a skipped step was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The decision taken on the step after it escalated; its `error` stays the failure that
    /// led there, also when the decision made it succeed (`skip` with outputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionReport>,
    /// Who changed the step's outputs by hand (`wayline patch`), and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patched: Option<PauseReport>,
}

impl StepReport {
    /// How a fan-out's items stand, for people: `3 succeeded, 1 failed` (statuses in the
    /// order they first occur); empty for a step without items.
    pub fn item_counts(&self) -> String {
        let mut counts: Vec<(StepStatus, usize)> = Vec::new();
        for item in &self.items {
            match counts.iter_mut().find(|(status, _)| *status == item.status) {
                Some((_, count)) => *count += 1,
                None => counts.push((item.status, 1)),
            }
        }
        let counts: Vec<String> =
            counts.iter().map(|(status, count)| format!("{count} {status}")).collect();
        counts.join(", ")
    }
}

/// One item of a fan-out step: an instance of the step with its own attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemReport {
    pub index: u32,
    pub item: Value,
    pub status: StepStatus,
    pub attempts: u32,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub outputs: Map<String, Value>,
    pub error: Option<ReportError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compensation: Option<CompensationReport>,
    /// Why a skipped item was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionReport {
    pub action: Decision,
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportError {
    pub class: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompensationReport {
    pub status: StepStatus,
    pub attempts: u32,
    pub error: Option<ReportError>,
}

fn error(info: &ErrorInfo) -> ReportError {
    ReportError { class: info.class.name(), message: info.message.clone() }
}

impl Report {
    pub fn new(execution: &Execution) -> Report {
        let workflow = execution.workflow();
        let steps = execution
            .steps()
            .iter()
            .enumerate()
            .map(|(index, run)| {
                let compensation = compensation_report(run);
                let (outputs, items) = match &run.items {
                    None => (Value::Object(run.outputs.clone()), Vec::new()),
                    Some(items) => {
                        let outputs = items.runs.iter().map(item_outputs).collect();
                        let reports = items
                            .runs
                            .iter()
                            .zip(&items.values)
                            .enumerate()
                            .map(|(index, (item, value))| ItemReport {
                                index: index as u32,
                                item: value.clone(),
                                status: item.status(),
                                attempts: item.attempts,
                                started_at: item.started_at.map(|t| t.rfc3339()),
                                finished_at: item.finished_at.map(|t| t.rfc3339()),
                                outputs: item.outputs.clone(),
                                error: item.error.as_ref().map(error),
                                compensation: compensation_report(item),
                                reason: skip_reason(item),
                            })
                            .collect();
                        (Value::Array(outputs), reports)
                    }
                };
                // A fan-out's attempts are its items'.
                let attempts = match &run.items {
                    Some(items) => items.runs.iter().map(|item| item.attempts).sum(),
                    None => run.attempts,
                };
                StepReport {
                    id: workflow.steps[index].id.clone(),
                    status: run.status(),
                    attempts,
                    started_at: run.started_at.map(|t| t.rfc3339()),
                    finished_at: run.finished_at.map(|t| t.rfc3339()),
                    outputs,
                    error: run.error.as_ref().map(error),
                    compensation,
                    items,
                    waiting: execution.waiting(index),
                    reason: skip_reason(run),
                    patched: run.patched.as_ref().map(|actor| PauseReport {
                        by: actor.by.clone(),
                        reason: actor.reason.clone(),
                        until: None,
                    }),
                    decision: run.decision.as_ref().map(|(decision, actor)| DecisionReport {
                        action: *decision,
                        by: actor.by.clone(),
                        reason: actor.reason.clone(),
                    }),
                }
            })
            .collect();
        Report {
            id: execution.id().to_owned(),
            workflow: workflow.name.clone(),
            status: execution.status(),
            inputs: execution.inputs().clone(),
            started_at: execution.started_at().map(|t| t.rfc3339()),
            finished_at: execution.finished_at().map(|t| t.rfc3339()),
            error: execution.outcome().and_then(|(_, e)| e.as_ref()).map(error),
            outputs: execution.outputs().clone(),
            paused: execution.paused().map(|(actor, until)| PauseReport {
                by: actor.by.clone(),
                reason: actor.reason.clone(),
                until: until.map(|t| t.rfc3339()),
            }),
            steps,
        }
    }
}

fn compensation_report(run: &StepRun) -> Option<CompensationReport> {
    compensation_status(&run.compensation).map(|status| CompensationReport {
        status,
        attempts: run.compensation_attempts,
        error: match &run.compensation {
            Compensation::Failed(info) => Some(error(info)),
            _ => None,
        },
    })
}

fn skip_reason(run: &StepRun) -> Option<String> {
    match &run.state {
        StepState::Skipped { reason } => Some(reason.clone()),
        _ => None,
    }
}

/// The status a report gives a compensation, in the words of step statuses; `None` when there
/// is none to report (not part of a rollback, or nothing to compensate).
fn compensation_status(compensation: &Compensation) -> Option<StepStatus> {
    Some(match compensation {
        Compensation::None | Compensation::Nothing => return None,
        Compensation::Waiting | Compensation::Ready => StepStatus::Pending,
        Compensation::Active(AttemptState::Running { .. }) | Compensation::Items => {
            StepStatus::Running
        }
        Compensation::Active(AttemptState::Retrying { .. }) => StepStatus::Retrying,
        Compensation::Succeeded => StepStatus::Succeeded,
        Compensation::Failed(_) => StepStatus::Failed,
    })
}
