//! Statuses of executions and steps (docs/design.md §2.5), and the decisions a person can take on
//! an escalated step: the words every part of wayline (API, CLI, UI, store) shares.

use serde::{Deserialize, Serialize};

use crate::event::Outcome;

/// Status of a step (docs/design.md §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
    Escalated,
    Compensating,
    Compensated,
}

impl StepStatus {
    pub fn name(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Retrying => "retrying",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Escalated => "escalated",
            StepStatus::Compensating => "compensating",
            StepStatus::Compensated => "compensated",
        }
    }
}

/// Status of an execution (docs/design.md §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Running,
    Paused,
    Escalated,
    Succeeded,
    Failed,
    Cancelled,
    RolledBack,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Escalated => "escalated",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::RolledBack => "rolled_back",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Running,
            Status::Paused,
            Status::Escalated,
            Status::Succeeded,
            Status::Failed,
            Status::Cancelled,
            Status::RolledBack,
        ]
        .into_iter()
        .find(|status| status.name() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled | Status::RolledBack)
    }
}

impl From<Outcome> for Status {
    fn from(outcome: Outcome) -> Status {
        match outcome {
            Outcome::Succeeded => Status::Succeeded,
            Outcome::Failed => Status::Failed,
            Outcome::Cancelled => Status::Cancelled,
            Outcome::RolledBack => Status::RolledBack,
        }
    }
}

/// What a human (or the escalation timeout) decides about an escalated step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    #[default]
    Fail,
    Rollback,
    Skip,
    Retry,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Fail => "fail",
            Decision::Rollback => "rollback",
            Decision::Skip => "skip",
            Decision::Retry => "retry",
        }
    }

    pub fn parse(text: &str) -> Option<Decision> {
        [Decision::Fail, Decision::Rollback, Decision::Skip, Decision::Retry]
            .into_iter()
            .find(|decision| decision.name() == text)
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that a width (`{:<12}`) lines columns up.
        f.pad(self.name())
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that a width (`{:<12}`) lines columns up.
        f.pad(self.name())
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that a width (`{:<12}`) lines columns up.
        f.pad(self.name())
    }
}
