//! Making an execution: a submission checked and turned into its first event, either by the
//! engine that will run it ([`crate::EngineHandle::submit`]) or recorded for another process
//! to take over and run ([`enqueue`]: `run --detach`, and the server's queue).

use std::sync::Arc;

use serde_json::{Map, Value};
use wayline_core::execution::{Control, Created, Execution, Input, Secrets};
use wayline_journal::{Event, Time};
use wayline_lang::Workflow;
use wayline_store::{NewExecution, Store};

use crate::engine::{Error, LEASE_TTL, Result, summary};
use crate::{id, render};

/// A workflow to run.
#[derive(Debug, Clone)]
pub struct Submission {
    pub workflow: Arc<Workflow>,
    /// The file's text, stored in the journal so the execution can be rebuilt anywhere.
    pub source: Arc<str>,
    pub path: String,
    pub inputs: Map<String, Value>,
    pub secrets: Arc<Secrets>,
    /// The client's key for this start (`Idempotency-Key`): a second submission with the same
    /// key is refused by the store ([`wayline_store::Error::Exists`]).
    pub idempotency_key: Option<String>,
    /// Breakpoints from the start (`run --break`, `run --step`): recorded before the first
    /// step can start.
    pub breakpoints: Breakpoints,
}

/// Where an execution pauses before steps.
#[derive(Debug, Clone, Default)]
pub struct Breakpoints {
    pub steps: Vec<String>,
    /// Before every step (`--step`).
    pub every: bool,
}

impl Breakpoints {
    /// Records the breakpoints on a new execution, before it starts: their events.
    pub fn set(self, execution: &mut Execution, now: Time) -> Result<Vec<Event>> {
        let actor = wayline_journal::Actor { by: "run --break".into(), reason: None };
        let control = Control::Break { steps: self.steps, every: self.every, actor };
        let set = execution.handle(Input::Control(control), now).map_err(Error::Rejected)?;
        Ok(set.events)
    }
}

impl Submission {
    /// Checks the submission — every secret it reads is there — and makes the execution, with
    /// a new id, and its first event (nothing is stored).
    pub fn create(self, now: Time) -> Result<(Execution, Event)> {
        if let Some(message) = render::missing_secrets(&self.workflow, &self.secrets) {
            return Err(Error::Invalid(message));
        }
        let created = Created {
            id: id::new(now),
            workflow: self.workflow,
            source: self.source,
            path: self.path,
            inputs: self.inputs,
        };
        Ok(Execution::create(created, self.secrets, now))
    }
}

/// Records a new execution without running it, and lets go of it at once, so that another
/// engine takes it over (`wayline resume`, a server) and runs it; returns its id. Nothing of it
/// starts here: its first decisions belong to whoever takes it.
pub async fn enqueue<S: Store>(
    store: &S,
    submission: Submission,
    owner: &str,
    now: Time,
) -> Result<String> {
    let idempotency_key = submission.idempotency_key.clone();
    let breakpoints = submission.breakpoints.clone();
    let (mut execution, first) = submission.create(now)?;
    let mut events = vec![first];
    if !breakpoints.steps.is_empty() || breakpoints.every {
        events.extend(breakpoints.set(&mut execution, now)?);
    }
    let id = execution.id().to_owned();
    let new = NewExecution {
        id: id.clone(),
        workflow: execution.workflow().name.clone(),
        created_at: now,
        owner: owner.to_owned(),
        ttl: LEASE_TTL,
        summary: summary(&execution),
        idempotency_key,
    };
    let lease = store.create(new, events).await?;
    store.release(lease).await?;
    Ok(id)
}
