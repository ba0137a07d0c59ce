//! Reading executions back from the store: journals, definitions, reports. Used by any
//! process, whether or not it owns the execution.

use std::sync::Arc;

use wayline_core::execution::{Execution, Secrets};
use wayline_core::report::Report;
use wayline_journal::{Event, EventKind};
use wayline_lang::Workflow;
use wayline_lang::inputs::Given;
use wayline_store::{self as store, Store};

use crate::engine::{Error, Result};

/// The whole journal of an execution.
pub async fn all_events<S: Store>(store: &S, id: &str) -> Result<Vec<Event>> {
    let mut events: Vec<Event> = Vec::new();
    loop {
        let after = events.last().map_or(0, |event| event.seq);
        let page = store.events(id, after, 10_000).await?;
        if page.is_empty() {
            return Ok(events);
        }
        events.extend(page);
    }
}

/// The workflow an execution runs, parsed again from the source in its first event (and the
/// imported files recorded with it, never the files as they are now).
pub fn definition(events: &[Event]) -> Result<(Workflow, String)> {
    let Some(Event { kind: EventKind::Created { source, path, imports, .. }, .. }) = events.first()
    else {
        return Err(Error::Store(store::Error::Corrupt(
            "the journal does not start with `created`".into(),
        )));
    };
    let loaded = wayline_lang::load_with(source, &mut |file: &str| {
        imports.get(file).cloned().ok_or_else(|| "it was not recorded with the execution".into())
    });
    match loaded.workflow {
        Some(workflow) => Ok((workflow, source.clone())),
        None => {
            let problems: Vec<String> =
                loaded.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.to_string()).collect();
            Err(Error::Invalid(format!(
                "the definition stored with this execution ({path}) does not validate with this version of wayline: {}",
                problems.join("; ")
            )))
        }
    }
}

/// Rebuilds an execution from its journal (without secrets: for reading, not running).
pub async fn replay<S: Store>(store: &S, id: &str) -> Result<Execution> {
    fold(id, &all_events(store, id).await?)
}

/// Rebuilds execution `id` from its whole journal, wherever it was read (a store, or a
/// server's event stream), without secrets: for reading, not running.
pub fn fold(id: &str, events: &[Event]) -> Result<Execution> {
    if events.is_empty() {
        return Err(Error::Store(store::Error::NotFound(id.to_owned())));
    }
    let (workflow, _) = definition(events)?;
    Execution::replay(id.to_owned(), Arc::new(workflow), Arc::new(Secrets::default()), events)
        .map_err(|error| Error::Store(store::Error::Corrupt(format!("execution {id}: {error}"))))
}

/// Execution `id` as it was right after event `at` (`show --at`): the fold of the journal
/// prefix, statuses, attempts and waiting reasons as they were then.
pub fn fold_at(id: &str, events: &[Event], at: u64) -> Result<Execution> {
    let count = events.len() as u64;
    if at == 0 || at > count {
        return Err(Error::Invalid(format!(
            "execution {id} has {count} events; --at takes a sequence number from 1 to {count}"
        )));
    }
    fold(id, &events[..at as usize])
}

/// Whether the workflow of a journal has step `step`; the reason when it does not.
pub fn check_step(events: &[Event], step: &str) -> Result<()> {
    let (workflow, _) = definition(events)?;
    match workflow.step(step) {
        Some(_) => Ok(()),
        None => Err(Error::Invalid(format!("workflow `{}` has no step `{step}`", workflow.name))),
    }
}

/// The inputs a rerun or a patch changes: the given values checked against the declared inputs (typed,
/// allowed values) on top of the execution's current ones, keeping those that differ.
pub fn changed_inputs(
    execution: &Execution,
    given: Vec<(String, Given)>,
) -> std::result::Result<serde_json::Map<String, serde_json::Value>, String> {
    if given.is_empty() {
        return Ok(serde_json::Map::new());
    }
    let current = execution.inputs().as_object().cloned().unwrap_or_default();
    let mut all: Vec<(String, Given)> =
        current.iter().map(|(name, value)| (name.clone(), Given::Json(value.clone()))).collect();
    all.extend(given);
    let resolved = wayline_lang::inputs::resolve(execution.workflow(), all)
        .map_err(|errors| errors.join("; "))?;
    Ok(resolved.into_iter().filter(|(name, value)| current.get(name) != Some(value)).collect())
}

/// The report of an execution, from the store.
pub async fn report<S: Store>(store: &S, id: &str) -> Result<Report> {
    Ok(Report::new(&replay(store, id).await?))
}

/// What a step will do when it next starts (`wayline inspect`): the command or HTTP request
/// rendered against the execution as it is, secrets masked, and what it reads from upstream.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Inspection {
    pub step: String,
    /// The attempt this is for: the next one, or the one running.
    pub attempt: u32,
    /// `run`, `http`, `wait`, `condition` or `set`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<InspectedCommand>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<InspectedHttp>,
    /// Why the request cannot be made (an expression that fails, a missing value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The outputs of the steps it needs, and the execution's inputs.
    pub reads: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InspectedCommand {
    /// The script for `sh -c`, or the program and its arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The whole environment the process gets (besides `WAYLINE_*`).
    pub env: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InspectedHttp {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<Vec<u16>>,
    pub timeout: String,
}

/// Renders what `step` will do next. The execution should carry the secrets it will run with
/// (missing ones may be stand-ins): every secret value is masked in what comes back.
pub fn inspection(execution: &Execution, step: &str) -> Result<Inspection> {
    use wayline_core::execution::{Attempt, AttemptState, StepState};
    let workflow = execution.workflow();
    // `deploy[3]` names an item of a fan-out.
    let (id, item) = match step.strip_suffix(']').and_then(|rest| rest.split_once('[')) {
        Some((id, item)) => {
            let item = item.parse::<u32>().map_err(|_| {
                Error::Invalid(format!("`{step}`: an item is named by its index, as `{id}[0]`"))
            })?;
            (id, Some(item))
        }
        None => (step, None),
    };
    let Some(index) = workflow.step(id) else {
        return Err(Error::Invalid(format!("workflow `{}` has no step `{id}`", workflow.name)));
    };
    let definition = &workflow.steps[index];
    let step_run = &execution.steps()[index];
    let fanned = step_run.items.as_ref().map_or(0, |items| items.runs.len());
    // A fan-out step is inspected through one of its items: the one named, or its first.
    let item = match (&definition.fan_out, item) {
        (None, Some(_)) => {
            return Err(Error::Invalid(format!(
                "step `{id}` has no items: it has no `for_each` or `matrix`"
            )));
        }
        (None, None) => None,
        (Some(_), Some(item)) if (item as usize) < fanned => Some(item),
        (Some(_), Some(item)) if fanned > 0 => {
            return Err(Error::Invalid(format!(
                "step `{id}` has {fanned} items, from {id}[0] to {id}[{}]; there is no {id}[{item}]",
                fanned - 1
            )));
        }
        (Some(_), None) if fanned > 0 => Some(0),
        (Some(_), _) => {
            return Err(Error::Invalid(format!(
                "the items of `{id}` are evaluated when it becomes ready ({}); inspect `{id}[0]` then",
                if step_run.items.is_some() { "it has none" } else { "it is not ready yet" }
            )));
        }
    };
    let step = &wayline_journal::instance_name(id, item);
    let run = step_run.instance(item).unwrap_or(step_run);
    let attempt = match &run.state {
        StepState::Active(AttemptState::Running { attempt, .. }) => *attempt,
        StepState::Active(AttemptState::Retrying { next, .. }) => *next,
        _ => run.attempts + 1,
    };
    let masked = |text: &str| execution.secrets().mask(text);
    let mut reads = serde_json::Map::new();
    let mut upstream = serde_json::Map::new();
    for &need in &definition.needs {
        let need_run = &execution.steps()[need];
        // A fan-out's outputs are its items' list.
        let mut outputs = match &need_run.items {
            Some(items) => items.runs.iter().map(wayline_core::execution::item_outputs).collect(),
            None => serde_json::Value::Object(need_run.outputs.clone()),
        };
        execution.secrets().masker().mask_value(&mut outputs);
        upstream.insert(workflow.steps[need].id.clone(), outputs);
    }
    reads.insert("steps".into(), serde_json::Value::Object(upstream));
    reads.insert("inputs".into(), execution.inputs().clone());
    if let (Some(item), Some(items)) = (item, &step_run.items) {
        let mut value = items.values[item as usize].clone();
        execution.secrets().masker().mask_value(&mut value);
        reads.insert("item".into(), value);
        reads.insert("index".into(), item.into());
    }
    let mut inspection = Inspection {
        step: step.to_owned(),
        attempt,
        kind: definition.body.kind(),
        command: None,
        http: None,
        error: None,
        reads: serde_json::Value::Object(reads),
    };
    if !matches!(
        definition.body,
        wayline_lang::model::Body::Run(_) | wayline_lang::model::Body::Http(_)
    ) {
        return Ok(inspection);
    }
    let limits = crate::render::Limits::default();
    match crate::render::attempt(execution, Attempt::of_item(index, item, attempt), &limits) {
        Ok(crate::render::Request::Command(command)) => {
            let (script, argv) = match &command.program {
                wayline_exec::Program::Shell(script) => (Some(masked(script)), None),
                wayline_exec::Program::Argv(argv) => {
                    (None, Some(argv.iter().map(|arg| masked(arg)).collect()))
                }
            };
            inspection.command = Some(InspectedCommand {
                script,
                argv,
                cwd: command.cwd.as_ref().map(|cwd| cwd.display().to_string()),
                env: command.env.iter().map(|(k, v)| (k.clone(), masked(v))).collect(),
                timeout: command.timeout.map(wayline_journal::duration::format),
            });
        }
        Ok(crate::render::Request::Http(http)) => {
            let body = http.body.as_ref().map(|body| match body {
                wayline_exec::http::Body::Json(value) => {
                    let mut value = value.clone();
                    execution.secrets().masker().mask_value(&mut value);
                    value
                }
                wayline_exec::http::Body::Text(text) => serde_json::Value::String(masked(text)),
            });
            inspection.http = Some(InspectedHttp {
                method: http.method.clone(),
                url: masked(&http.url),
                headers: http.headers.iter().map(|h| (h.name.clone(), masked(&h.value))).collect(),
                query: http.query.iter().map(|(k, v)| (k.clone(), masked(v))).collect(),
                body,
                expect_status: http.expect_status.clone(),
                timeout: wayline_journal::duration::format(http.timeout),
            });
        }
        Err(error) => inspection.error = Some(masked(&error.message)),
    }
    Ok(inspection)
}
