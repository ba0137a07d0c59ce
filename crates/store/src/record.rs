//! The records a store keeps besides events.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use wayline_journal::Status;
use wayline_journal::{AttemptKind, Event, Time};

/// A new execution, for [`crate::Store::create`].
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub id: String,
    pub workflow: String,
    pub created_at: Time,
    pub owner: String,
    pub ttl: std::time::Duration,
    /// The summary after the first events: an engine commits `created` together with the
    /// decisions of the start, so a new execution is listed as running (or even finished) at
    /// once.
    pub summary: Summary,
    /// A key the client chose so that a repeated request never starts a second execution: no
    /// two executions have the same one (until the first is deleted).
    pub idempotency_key: Option<String>,
}

/// One version of a registered workflow. A version never changes once stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkflowVersion {
    pub name: String,
    /// From 1, one more for each change of the source.
    pub version: u32,
    pub source: String,
    pub created_at: Time,
}

/// An API token as stored: never the token itself, only its id and the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// Unique; what control events record as their actor.
    pub name: String,
    /// The public half of the token, to find its record.
    pub id: String,
    /// Lower-case hex SHA-256 of the secret half.
    #[serde(skip)]
    pub hash: String,
    /// `read`, `operate`, `admin` or `agent`; the server decides what each may do.
    pub role: String,
    pub created_at: Time,
    pub expires_at: Option<Time>,
}

/// What a store knows about an execution without reading its journal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionRecord {
    pub id: String,
    pub workflow: String,
    pub status: Status,
    pub created_at: Time,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    /// Sequence number of the last event.
    pub last_seq: u64,
    /// Current lease holder, if any lease was ever taken and not released.
    pub owner: Option<String>,
    pub lease_until: Option<Time>,
    pub error: Option<String>,
}

/// The fields of [`ExecutionRecord`] that change with events; written with each commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub status: Status,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub error: Option<String>,
}

/// One execution's share of a group commit.
#[derive(Debug, Clone)]
pub struct Commit {
    pub lease: Lease,
    /// Must continue the stored journal: the first has `seq = last_seq + 1`, no gaps.
    pub events: Vec<Event>,
    pub summary: Summary,
    /// Control requests these events answer; marked handled in the same transaction.
    pub handled: Vec<u64>,
}

/// The right to append to one execution's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub execution: String,
    pub owner: String,
    /// Grows with every takeover; appends must present the current one.
    pub token: u64,
}

/// Which executions to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Any of these statuses (all when empty).
    pub status: Vec<Status>,
    pub workflow: Option<String>,
    /// Created at or after.
    pub since: Option<Time>,
    /// Only what comes after this execution (its creation time and id) in the listing order,
    /// newest first: the cursor of a paginated listing.
    pub before: Option<(Time, String)>,
    pub limit: Option<usize>,
}

/// A control request made from any process, for the owner to carry out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Pause {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Time>,
    },
    Resume,
    Cancel {
        rollback: bool,
    },
    Decide {
        step: String,
        decision: String,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        outputs: Map<String, Value>,
    },
    Break {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        steps: Vec<String>,
        #[serde(default)]
        every: bool,
    },
    Step,
    Patch {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        outputs: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Map::is_empty")]
        inputs: Map<String, Value>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    #[serde(flatten)]
    pub action: Action,
    /// Who asked (`user@host`).
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredRequest {
    pub id: u64,
    pub execution: String,
    pub request: Request,
    pub created_at: Time,
}

/// One line of a step's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub execution: String,
    /// Position in the execution's log, from 1; assigned by the store (a value given to
    /// `append_logs` is ignored).
    pub line: u64,
    pub step: String,
    /// The fan-out item whose attempt wrote it (`deploy[3]`); absent for an ordinary step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
    pub attempt: u32,
    /// What the attempt did: the step's body, its compensation, or the escalation notice
    /// (stored as the `compensation` flag, and attempt 0 for notices).
    pub kind: AttemptKind,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub time: Time,
    pub text: String,
}

impl LogLine {
    /// Who wrote it, as people read it: `deploy`, or `deploy[3]` for an item of a fan-out.
    pub fn source(&self) -> String {
        wayline_journal::instance_name(&self.step, self.item)
    }
}
