//! The OpenAPI 3.1 document of the API, served at `/api/v1/openapi.json` and committed as
//! `docs/openapi.json` (a test fails when the copy is stale, and another asks the running
//! server for every operation it lists, so that the document and the router cannot drift).

use serde_json::{Map, Value, json};

/// One operation: method, path, summary, the role it needs, its request body schema, its
/// success status and schema, and the error statuses it may answer.
struct Operation {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    role: Option<&'static str>,
    parameters: &'static [(&'static str, &'static str, &'static str)],
    body: Option<(&'static str, Value)>,
    ok: (&'static str, &'static str, Value),
    errors: &'static [&'static str],
}

/// The path parameter naming an execution.
const ID: (&str, &str, &str) = ("id", "path", "An execution id, or a unique prefix of one.");

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Every operation of the API, in the order the design lists them.
fn operations() -> Vec<Operation> {
    let json_type = "application/json";
    vec![
        Operation {
            method: "get",
            path: "/healthz",
            summary: "The server is alive.",
            role: None,
            parameters: &[],
            body: None,
            ok: ("200", "text/plain", json!({ "type": "string" })),
            errors: &[],
        },
        Operation {
            method: "get",
            path: "/readyz",
            summary: "The store answers.",
            role: None,
            parameters: &[],
            body: None,
            ok: ("200", "text/plain", json!({ "type": "string" })),
            errors: &["503"],
        },
        Operation {
            method: "get",
            path: "/metrics",
            summary: "Prometheus metrics (no token from loopback, else `read`).",
            role: None,
            parameters: &[],
            body: None,
            ok: ("200", "application/openmetrics-text", json!({ "type": "string" })),
            errors: &["401"],
        },
        Operation {
            method: "post",
            path: "/api/v1/executions",
            summary: "Start an execution of an inline definition or of a registered workflow.",
            role: Some("operate"),
            parameters: &[(
                "Idempotency-Key",
                "header",
                "Repeating a start with the same key returns the execution it started.",
            )],
            body: Some((json_type, reference("StartRequest"))),
            ok: ("201", json_type, reference("Started")),
            errors: &["400", "401", "403", "404", "413", "422", "503"],
        },
        Operation {
            method: "get",
            path: "/api/v1/executions",
            summary: "Executions, newest first, a page at a time.",
            role: Some("read"),
            parameters: &[
                ("status", "query", "Comma-separated statuses."),
                ("workflow", "query", "A workflow name."),
                ("since", "query", "An RFC 3339 time or a duration back from now (`2h`)."),
                ("limit", "query", "1 to 1000 (default 50)."),
                ("cursor", "query", "`next_cursor` of the page before."),
            ],
            body: None,
            ok: (
                "200",
                json_type,
                json!({
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "items": { "type": "array", "items": reference("ExecutionSummary") },
                        "next_cursor": { "type": "string" }
                    }
                }),
            ),
            errors: &["401", "403", "422"],
        },
        Operation {
            method: "get",
            path: "/api/v1/executions/{id}",
            summary: "An execution's result object (status, inputs, steps, why steps wait); with `at`, as it was right after that event.",
            role: Some("read"),
            parameters: &[
                ID,
                (
                    "at",
                    "query",
                    "A sequence number: the execution as it was right after that event.",
                ),
            ],
            body: None,
            ok: ("200", json_type, reference("Report")),
            errors: &["401", "403", "404", "422"],
        },
        Operation {
            method: "get",
            path: "/api/v1/executions/{id}/events",
            summary: "CloudEvents as a JSON array, or server-sent events with `Accept: text/event-stream` (resume with `Last-Event-ID`).",
            role: Some("read"),
            parameters: &[
                ID,
                ("after", "query", "A sequence number: only the events after it."),
                ("step", "query", "Only the events of this step."),
            ],
            body: None,
            ok: ("200", json_type, json!({ "type": "array", "items": reference("CloudEvent") })),
            errors: &["400", "401", "403", "404", "422", "429"],
        },
        Operation {
            method: "get",
            path: "/api/v1/executions/{id}/logs",
            summary: "Log lines as NDJSON.",
            role: Some("read"),
            parameters: &[
                ID,
                ("step", "query", "Only this step's lines."),
                ("after", "query", "A line number: only the lines after it."),
                ("limit", "query", "At most this many lines (and at most 10,000)."),
            ],
            body: None,
            ok: ("200", "application/x-ndjson", json!({ "type": "string" })),
            errors: &["401", "403", "404", "422"],
        },
        control("pause", "Pause: running steps finish, nothing new starts.", "PauseRequest"),
        control("resume", "Resume a paused execution.", "ResumeRequest"),
        control("cancel", "Cancel, or cancel and roll back.", "CancelRequest"),
        control(
            "step",
            "At a breakpoint (or a pause): start the next ready steps; pause again once they finished.",
            "StepRequest",
        ),
        control(
            "patch",
            "While paused: change the outputs of a succeeded step, or inputs, for the steps still to run (recorded with the actor).",
            "PatchRequest",
        ),
        Operation {
            method: "post",
            path: "/api/v1/executions/{id}/rerun",
            summary: "Rerun a finished execution in place: what did not succeed, or `from` steps and everything downstream.",
            role: Some("operate"),
            parameters: &[ID],
            body: Some((json_type, reference("RerunRequest"))),
            ok: ("202", json_type, reference("Rerun")),
            errors: &["400", "401", "403", "404", "409", "422"],
        },
        Operation {
            method: "post",
            path: "/api/v1/executions/{id}/steps/{step}/decision",
            summary: "Decide an escalated step: retry, skip, rollback or fail.",
            role: Some("operate"),
            parameters: &[ID, ("step", "path", "The step's id.")],
            body: Some((json_type, reference("DecisionRequest"))),
            ok: ("202", json_type, reference("Accepted")),
            errors: &["400", "401", "403", "404", "409", "422"],
        },
        Operation {
            method: "get",
            path: "/api/v1/executions/{id}/steps/{step}/inspect",
            summary: "What a step will do when it next starts: the rendered command (script or argv, cwd, env) or HTTP request, secrets masked, and the upstream outputs and inputs it reads.",
            role: Some("read"),
            parameters: &[ID, ("step", "path", "The step's id.")],
            body: None,
            ok: (
                "200",
                json_type,
                json!({ "type": "object", "required": ["step", "attempt", "kind", "reads"] }),
            ),
            errors: &["401", "403", "404"],
        },
        Operation {
            method: "get",
            path: "/api/v1/events",
            summary: "Server-sent events: the lifecycle of every execution this server runs.",
            role: Some("read"),
            parameters: &[("workflow", "query", "Only this workflow's executions.")],
            body: None,
            ok: ("200", "text/event-stream", json!({ "type": "string" })),
            errors: &["401", "403", "422", "429"],
        },
        Operation {
            method: "get",
            path: "/api/v1/ws",
            summary: "A WebSocket following many executions: send `{\"subscribe\": id, \"after\": n}` and `{\"unsubscribe\": id}`.",
            role: Some("read"),
            parameters: &[],
            body: None,
            ok: ("101", json_type, json!({})),
            errors: &["400", "401", "403", "429"],
        },
        Operation {
            method: "get",
            path: "/api/v1/workflows",
            summary: "The newest version of every registered workflow.",
            role: Some("read"),
            parameters: &[],
            body: None,
            ok: (
                "200",
                json_type,
                json!({
                    "type": "object",
                    "required": ["items"],
                    "properties": { "items": { "type": "array", "items": reference("WorkflowSummary") } }
                }),
            ),
            errors: &["401", "403"],
        },
        Operation {
            method: "put",
            path: "/api/v1/workflows/{name}",
            summary: "Register a workflow file; a changed file is a new version.",
            role: Some("admin"),
            parameters: &[("name", "path", "The workflow's name (its file's `name`).")],
            body: Some(("application/yaml", json!({ "type": "string" }))),
            ok: ("201", json_type, reference("WorkflowSummary")),
            errors: &["400", "401", "403", "413", "422"],
        },
        Operation {
            method: "get",
            path: "/api/v1/workflows/{name}",
            summary: "One version of a workflow, with its source.",
            role: Some("read"),
            parameters: &[
                ("name", "path", "The workflow's name."),
                ("version", "query", "A version (default: the newest)."),
            ],
            body: None,
            ok: ("200", json_type, reference("WorkflowDetail")),
            errors: &["401", "403", "404", "422"],
        },
        Operation {
            method: "delete",
            path: "/api/v1/workflows/{name}",
            summary: "Delete every version of a workflow (its executions keep their source).",
            role: Some("admin"),
            parameters: &[("name", "path", "The workflow's name.")],
            body: None,
            ok: ("204", json_type, json!({})),
            errors: &["401", "403", "404", "422"],
        },
    ]
}

fn control(action: &'static str, summary: &'static str, body: &'static str) -> Operation {
    let path = match action {
        "pause" => "/api/v1/executions/{id}/pause",
        "resume" => "/api/v1/executions/{id}/resume",
        "step" => "/api/v1/executions/{id}/step",
        "patch" => "/api/v1/executions/{id}/patch",
        _ => "/api/v1/executions/{id}/cancel",
    };
    Operation {
        method: "post",
        path,
        summary,
        role: Some("operate"),
        parameters: &[ID],
        body: Some(("application/json", reference(body))),
        ok: ("202", "application/json", reference("Accepted")),
        errors: &["400", "401", "403", "404", "409", "422"],
    }
}

fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let reason = json!({ "type": "string", "description": "Recorded with the event." });
    json!({
        "Problem": {
            "type": "object",
            "description": "RFC 7807 problem details.",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": string, "title": string, "status": { "type": "integer" }, "detail": string,
                "errors": { "type": "array", "items": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": string, "message": string,
                        "line": { "type": "integer" }, "column": { "type": "integer" }
                    }
                } }
            }
        },
        "StartRequest": {
            "type": "object",
            "additionalProperties": false,
            "description": "Either `definition`, or `workflow` with an optional `version`.",
            "properties": {
                "definition": { "type": "string", "description": "A workflow file's text (YAML or JSON)." },
                "imports": {
                    "type": "object",
                    "additionalProperties": string,
                    "description": "With `definition`: the texts of the files it imports, by the path its `imports:` names them with."
                },
                "workflow": string,
                "version": { "type": "integer", "minimum": 1 },
                "inputs": { "type": "object" },
                "breakpoints": { "type": "array", "items": string, "description": "Pause before these steps." },
                "step": { "type": "boolean", "description": "Pause before every step." }
            }
        },
        "Started": {
            "type": "object",
            "required": ["id", "workflow", "status"],
            "properties": { "id": string, "workflow": string, "status": string, "version": { "type": "integer" } }
        },
        "ExecutionSummary": {
            "type": "object",
            "required": ["id", "workflow", "status", "created_at"],
            "properties": {
                "id": string, "workflow": string, "status": string, "created_at": string,
                "started_at": { "type": ["string", "null"] },
                "finished_at": { "type": ["string", "null"] },
                "error": { "type": ["string", "null"] }
            }
        },
        "Report": {
            "type": "object",
            "description": "The result object of `wayline run --json` (README, Command line).",
            "required": ["id", "workflow", "status", "inputs", "steps"],
            "properties": {
                "id": string, "workflow": string, "status": string, "inputs": { "type": "object" },
                "steps": { "type": "array", "items": { "type": "object" } }
            }
        },
        "CloudEvent": {
            "type": "object",
            "required": ["specversion", "id", "source", "type", "time", "data"],
            "properties": {
                "specversion": string, "id": string, "source": string, "type": string,
                "time": string, "subject": string, "data": { "type": "object" }
            }
        },
        "PauseRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "until": { "type": "string", "description": "An RFC 3339 time or a duration (`30m`)." },
                "before": { "type": "array", "items": string, "description": "Not now: before these steps start." },
                "reason": reason
            }
        },
        "StepRequest": { "type": "object", "additionalProperties": false, "properties": { "reason": reason } },
        "PatchRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "step": string,
                "outputs": { "type": "object" },
                "inputs": { "type": "object" },
                "reason": reason
            }
        },
        "ResumeRequest": { "type": "object", "additionalProperties": false, "properties": { "reason": reason } },
        "CancelRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": { "rollback": { "type": "boolean" }, "reason": reason }
        },
        "DecisionRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["action"],
            "properties": {
                "action": { "enum": ["retry", "skip", "rollback", "fail"] },
                "outputs": { "type": "object" },
                "reason": reason
            }
        },
        "RerunRequest": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "from": { "type": "array", "items": string },
                "inputs": { "type": "object" },
                "reason": reason
            }
        },
        "Rerun": {
            "type": "object",
            "required": ["id", "seq", "log_after"],
            "properties": { "id": string, "seq": { "type": "integer" }, "log_after": { "type": "integer" } }
        },
        "Accepted": {
            "type": "object",
            "required": ["id", "applied"],
            "properties": { "id": string, "applied": { "type": "boolean" } }
        },
        "WorkflowSummary": {
            "type": "object",
            "required": ["name", "version", "created_at"],
            "properties": { "name": string, "version": { "type": "integer" }, "created_at": string }
        },
        "WorkflowDetail": {
            "type": "object",
            "required": ["name", "version", "created_at", "source", "versions"],
            "properties": {
                "name": string, "version": { "type": "integer" }, "created_at": string, "source": string,
                "versions": { "type": "array", "items": { "type": "integer" } }
            }
        }
    })
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for operation in operations() {
        let mut responses = Map::new();
        let (status, media, schema) = operation.ok;
        let ok = if status == "204" || status == "101" {
            json!({ "description": "Done." })
        } else {
            json!({ "description": "Done.", "content": { media: { "schema": schema } } })
        };
        responses.insert(status.into(), ok);
        for error in operation.errors {
            responses.insert(
                (*error).into(),
                json!({
                    "description": "A problem document.",
                    "content": { "application/problem+json": { "schema": reference("Problem") } }
                }),
            );
        }
        let parameters: Vec<Value> = operation
            .parameters
            .iter()
            .map(|(name, place, description)| {
                json!({
                    "name": name, "in": place, "description": description,
                    "required": *place == "path", "schema": { "type": "string" }
                })
            })
            .collect();
        let mut entry = json!({
            "summary": operation.summary,
            "responses": Value::Object(responses),
        });
        if !parameters.is_empty() {
            entry["parameters"] = Value::Array(parameters);
        }
        if let Some((media, schema)) = operation.body {
            entry["requestBody"] =
                json!({ "required": true, "content": { media: { "schema": schema } } });
        }
        match operation.role {
            Some(role) => {
                entry["security"] = json!([{ "bearer": [] }]);
                entry["x-wayline-role"] = Value::String(role.into());
            }
            None => entry["security"] = json!([]),
        }
        let item = paths.entry(operation.path).or_insert_with(|| json!({}));
        item[operation.method] = entry;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "wayline",
            "version": "1",
            "description": "The HTTP API of `wayline server` (docs/design.md §7.1)."
        },
        "paths": Value::Object(paths),
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        }
    })
}

/// Every operation as (method, path), for a test that asks the server for each.
pub fn operation_list() -> Vec<(&'static str, &'static str)> {
    operations().into_iter().map(|operation| (operation.method, operation.path)).collect()
}
