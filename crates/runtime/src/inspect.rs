//! Reading executions back from the store: journals, definitions, reports. Used by any
//! process, whether or not it owns the execution.

use std::sync::Arc;

use wayline_core::execution::{Execution, Secrets};
use wayline_core::report::Report;
use wayline_journal::{Event, EventKind};
use wayline_lang::Workflow;
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

/// The workflow an execution runs, parsed again from the source in its first event.
pub fn definition(events: &[Event]) -> Result<(Workflow, String)> {
    let Some(Event { kind: EventKind::Created { source, path, .. }, .. }) = events.first() else {
        return Err(Error::Store(store::Error::Corrupt(
            "the journal does not start with `created`".into(),
        )));
    };
    let loaded = wayline_lang::load(source);
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

/// The report of an execution, from the store.
pub async fn report<S: Store>(store: &S, id: &str) -> Result<Report> {
    Ok(Report::new(&replay(store, id).await?))
}
