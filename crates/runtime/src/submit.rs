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
    /// The texts of the files it imports, by path relative to it (stored with the source).
    pub imports: std::collections::BTreeMap<String, String>,
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
            imports: self.imports,
        };
        Ok(Execution::create(created, self.secrets, now))
    }
}

/// What a step upstream of an isolated one produced: its outputs, or of a fan-out, its items
/// in item order (each value, and its outputs; `None` for one that did not succeed).
#[derive(Debug, Clone, Default)]
pub struct Seed {
    pub outputs: Map<String, Value>,
    pub items: Option<Vec<SeedItem>>,
}

/// An item of a fan-out upstream: its value, and its outputs (`None`: it did not succeed).
pub type SeedItem = (Value, Option<Map<String, Value>>);

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

/// A journal in which only `step` is left to run (`wayline test`): the steps it depends on
/// succeeded with the outputs given (none for those not given; a condition on the way took
/// the branch that leads to `step` unless its `result` is given), every other step was
/// skipped. Replayed and recovered by an engine, it runs that one step exactly as a real
/// execution would — rendering, executor, masking, timeout, retries — and nothing else.
pub fn isolated(
    submission: &Submission,
    step: &str,
    upstream: &std::collections::BTreeMap<String, Seed>,
    owner: &str,
    now: Time,
) -> Result<(NewExecution, Vec<Event>)> {
    use wayline_journal::EventKind;
    let workflow = &submission.workflow;
    let Some(target) = workflow.step(step) else {
        return Err(Error::Invalid(format!("workflow `{}` has no step `{step}`", workflow.name)));
    };
    if let Some(unknown) = upstream.keys().find(|name| workflow.step(name).is_none()) {
        return Err(Error::Invalid(format!(
            "workflow `{}` has no step `{unknown}` to take outputs for",
            workflow.name
        )));
    }
    // The steps `step` depends on, directly or not.
    let mut ancestors = vec![false; workflow.steps.len()];
    let mut stack = workflow.steps[target].needs.clone();
    while let Some(need) = stack.pop() {
        if !std::mem::replace(&mut ancestors[need], true) {
            stack.extend(workflow.steps[need].needs.iter().copied());
        }
    }
    let (execution, first) = submission.clone().create(now)?;
    let id = execution.id().to_owned();
    let mut kinds = vec![EventKind::Started];
    for &index in &workflow.order {
        if index == target {
            continue;
        }
        let name = workflow.steps[index].id.clone();
        if !ancestors[index] {
            let reason = format!("not under test (wayline test {step})");
            kinds.push(EventKind::StepSkipped { item: None, step: name, reason, cancelled: false });
            continue;
        }
        let seed = upstream.get(&name).cloned().unwrap_or_default();
        if workflow.steps[index].fan_out.is_some() {
            // A fan-out upstream: its items, each succeeded with its outputs.
            let items = seed.items.unwrap_or_default();
            kinds.push(EventKind::FannedOut {
                step: name.clone(),
                items: items.iter().map(|(item, _)| item.clone()).collect(),
            });
            for (position, (_, outputs)) in items.into_iter().enumerate() {
                let item = Some(position as u32);
                let step = name.clone();
                let Some(outputs) = outputs else {
                    let reason = "it did not succeed in the execution the outputs come from".into();
                    kinds.push(EventKind::StepSkipped { step, item, reason, cancelled: false });
                    continue;
                };
                kinds.push(EventKind::AttemptStarted {
                    item,
                    step: step.clone(),
                    attempt: 1,
                    compensation: false,
                    until: None,
                });
                kinds.push(EventKind::AttemptSucceeded {
                    item,
                    step,
                    attempt: 1,
                    compensation: false,
                    outputs,
                });
            }
            continue;
        }
        let mut outputs = seed.outputs;
        if matches!(workflow.steps[index].body, wayline_lang::model::Body::Condition(_)) {
            // Toward `step` (or an ancestor of it) where the condition has a branch to it.
            let taken = workflow.steps.iter().enumerate().find_map(|(other, definition)| {
                let on_the_way = other == target || ancestors[other];
                let branch = definition.branches.iter().find(|(condition, _)| *condition == index);
                branch.filter(|_| on_the_way).map(|&(_, taken)| taken)
            });
            outputs.entry("result").or_insert(Value::Bool(taken.unwrap_or(true)));
        }
        kinds.push(EventKind::AttemptStarted {
            item: None,
            step: name.clone(),
            attempt: 1,
            compensation: false,
            until: None,
        });
        kinds.push(EventKind::AttemptSucceeded {
            item: None,
            step: name,
            attempt: 1,
            compensation: false,
            outputs,
        });
    }
    let mut events = vec![first];
    for kind in kinds {
        events.push(Event::new(events.len() as u64 + 1, now, kind));
    }
    // The journal must fold, as any other.
    let replayed = Execution::replay(
        id.clone(),
        Arc::clone(workflow),
        Arc::clone(&submission.secrets),
        &events,
    )
    .map_err(|error| Error::Invalid(format!("cannot isolate step `{step}`: {error}")))?;
    let new = NewExecution {
        id,
        workflow: workflow.name.clone(),
        created_at: now,
        owner: owner.to_owned(),
        ttl: LEASE_TTL,
        summary: summary(&replayed),
        idempotency_key: None,
    };
    Ok((new, events))
}
