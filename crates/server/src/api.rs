//! The API's own JSON: what requests carry and what responses say. These types are the
//! contract with clients (docs/design.md §7.1); the store's records and the engine's types
//! stay free to change behind them. An execution's full state is the §3 result object
//! (`wayline_core::report::Report`), which is a contract of its own (`run --json`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use wayline_journal::{Status, Time};
use wayline_store::ExecutionRecord;

/// `POST /api/v1/executions`: start an execution of an inline definition.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The workflow file's text (YAML or JSON); or else:
    pub definition: Option<String>,
    /// With `definition`: the texts of the files it imports, by the path `imports:` gives.
    #[serde(default)]
    pub imports: std::collections::BTreeMap<String, String>,
    /// A registered workflow's name, and which version (the newest when absent).
    pub workflow: Option<String>,
    pub version: Option<u32>,
    /// Input values, already typed (as an input file gives them).
    #[serde(default)]
    pub inputs: Map<String, Value>,
    /// Pause before these steps (`run --break`).
    #[serde(default)]
    pub breakpoints: Vec<String>,
    /// Pause before every step (`run --step`).
    #[serde(default)]
    pub step: bool,
}

/// The answer to a start.
#[derive(Debug, Serialize)]
pub struct Started {
    pub id: String,
    pub workflow: String,
    pub status: Status,
    /// The registered version it runs, when started by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// A registered workflow version, as listed.
#[derive(Debug, Serialize)]
pub struct WorkflowSummary {
    pub name: String,
    pub version: u32,
    pub created_at: String,
}

/// One registered workflow version with its source and the versions there are.
#[derive(Debug, Serialize)]
pub struct WorkflowDetail {
    pub name: String,
    pub version: u32,
    pub created_at: String,
    pub source: String,
    pub versions: Vec<u32>,
}

/// One execution in a listing.
#[derive(Debug, Serialize)]
pub struct ExecutionSummary {
    pub id: String,
    pub workflow: String,
    pub status: Status,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

impl From<ExecutionRecord> for ExecutionSummary {
    fn from(record: ExecutionRecord) -> ExecutionSummary {
        ExecutionSummary {
            id: record.id,
            workflow: record.workflow,
            status: record.status,
            created_at: record.created_at.rfc3339(),
            started_at: record.started_at.map(Time::rfc3339),
            finished_at: record.finished_at.map(Time::rfc3339),
            error: record.error,
        }
    }
}

/// A page of a listing, newest first.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST …/pause`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// An RFC 3339 time or a duration from now (`30m`).
    pub until: Option<String>,
    /// Not now: before these steps start (`pause --before`).
    #[serde(default)]
    pub before: Vec<String>,
    pub reason: Option<String>,
}

/// `POST …/step`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    pub reason: Option<String>,
}

/// `POST …/patch`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    /// The succeeded step whose outputs change.
    pub step: Option<String>,
    #[serde(default)]
    pub outputs: Map<String, Value>,
    /// Input values, typed.
    #[serde(default)]
    pub inputs: Map<String, Value>,
    pub reason: Option<String>,
}

/// `POST …/resume`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    pub reason: Option<String>,
}

/// `POST …/cancel`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    #[serde(default)]
    pub rollback: bool,
    pub reason: Option<String>,
}

/// `POST …/steps/{step}/decision`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// `retry`, `skip`, `rollback` or `fail`.
    pub action: String,
    #[serde(default)]
    pub outputs: Map<String, Value>,
    pub reason: Option<String>,
}

/// `POST …/rerun`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerunRequest {
    /// Run these steps and everything downstream of them again; empty: what did not succeed.
    #[serde(default)]
    pub from: Vec<String>,
    /// New input values, checked against the workflow's declared inputs.
    #[serde(default)]
    pub inputs: Map<String, Value>,
    pub reason: Option<String>,
}

/// The answer to a rerun: committed, and running.
#[derive(Debug, Serialize)]
pub struct Rerun {
    pub id: String,
    /// The sequence number of the `redriven` event: what came before is the earlier run.
    pub seq: u64,
    /// The last log line of the earlier run.
    pub log_after: u64,
}

/// The answer to a control request.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub id: String,
    /// True when the journal already shows the request carried out; false when it is
    /// recorded for the engine that owns the execution, or for whoever takes it over.
    pub applied: bool,
}

/// A position in a listing, newest first: the creation time and id of the last execution
/// of the page before. Written as `MICROS.ID`; clients treat it as opaque.
pub fn cursor(record: &ExecutionRecord) -> String {
    format!("{}.{}", record.created_at.as_micros(), record.id)
}

/// Reads a cursor written by [`cursor`].
pub fn parse_cursor(text: &str) -> Option<(Time, String)> {
    let (micros, id) = text.split_once('.')?;
    let micros: i64 = micros.parse().ok()?;
    let valid = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then(|| (Time::from_micros(micros), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_nonsense_is_refused() {
        assert_eq!(
            parse_cursor("1700000000000000.01abc"),
            Some((Time::from_micros(1_700_000_000_000_000), "01abc".into()))
        );
        for bad in ["", ".", "12", "x.abc", "12.", "12.a/b", "12.a.b"] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }
}
