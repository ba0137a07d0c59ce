//! Steering an execution from any process: a control request is checked against the journal
//! as it is, written to the store's inbox for whichever engine owns the execution, and waited
//! for until the journal shows its effect. The command line uses it today, the API tomorrow.

use std::time::Duration;

use wayline_core::Input;
use wayline_core::execution::Control;
use wayline_journal::{Actor, Decision, Event, EventKind, Time};
use wayline_store::{Action, Request, Store, StoredRequest};

use crate::engine::{Error, Result};
use crate::subscription::{Item, Subscription};
use crate::{inspect, owner};

/// What became of a request once it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// A live owner will carry it out; its event will come after sequence number `after`.
    Delivered { after: u64 },
    /// Nobody runs the execution now: the request applies when someone takes it over.
    Orphaned,
}

/// How waiting for a request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// The journal shows the request carried out, by this event.
    Applied(Event),
    /// The execution ended first (which settles any request), with this event.
    Ended(Event),
    /// The owner did not act within the time given; the request stays in the inbox.
    TimedOut,
}

/// Checks `control` against the journal as it is — a request that cannot apply is refused
/// here, with the reason ([`Error::Rejected`]) — then stores it for the owner.
pub async fn send<S: Store>(store: &S, id: &str, control: Control, now: Time) -> Result<Sent> {
    let mut execution = inspect::replay(store, id).await?;
    let after = execution.seq();
    execution.handle(Input::Control(control.clone()), now).map_err(Error::Rejected)?;
    let record = store.get(id).await?;
    store.request(id, request(&control), now).await?;
    let orphaned = match &record.owner {
        None => true,
        Some(owner) => owner::is_dead(owner) || record.lease_until.is_some_and(|until| until < now),
    };
    Ok(if orphaned { Sent::Orphaned } else { Sent::Delivered { after } })
}

/// Waits until the journal of `id` shows, after sequence number `after`, the event that
/// carries out a request made by `by`, or the execution's end, for at most `patience`.
pub async fn wait<S: Store>(
    store: S,
    id: &str,
    after: u64,
    by: &str,
    patience: Duration,
) -> Result<Settled> {
    let mut subscription = Subscription::follow(store, id, after);
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, subscription.next()).await else {
            return Ok(Settled::TimedOut);
        };
        let Some(Item::Event(event)) = next? else { continue };
        let ours = |actor: &Actor| actor.by == by;
        match &event.kind {
            EventKind::Paused { actor, .. } | EventKind::Resumed { actor } if ours(actor) => {
                return Ok(Settled::Applied(event));
            }
            EventKind::Stopping { actor: Some(actor), .. }
            | EventKind::Decided { actor, .. }
            | EventKind::BreakpointsSet { actor, .. }
            | EventKind::Stepped { actor }
            | EventKind::Patched { actor, .. }
                if ours(actor) =>
            {
                return Ok(Settled::Applied(event));
            }
            EventKind::Finished { .. } => return Ok(Settled::Ended(event)),
            _ => {}
        }
    }
}

/// The inbox record of a control request.
pub fn request(control: &Control) -> Request {
    let (action, actor) = match control {
        Control::Pause { actor, until } => (Action::Pause { until: *until }, actor),
        Control::Resume { actor } => (Action::Resume, actor),
        Control::Cancel { actor, rollback } => (Action::Cancel { rollback: *rollback }, actor),
        Control::Decide { step, decision, outputs, actor } => (
            Action::Decide {
                step: step.clone(),
                decision: decision.name().to_owned(),
                outputs: outputs.clone(),
            },
            actor,
        ),
        Control::Break { steps, every, actor } => {
            (Action::Break { steps: steps.clone(), every: *every }, actor)
        }
        Control::Step { actor } => (Action::Step, actor),
        Control::Patch { step, outputs, inputs, actor } => (
            Action::Patch { step: step.clone(), outputs: outputs.clone(), inputs: inputs.clone() },
            actor,
        ),
    };
    Request { action, by: actor.by.clone(), reason: actor.reason.clone() }
}

/// The control request an inbox record asks for; `None` for a record no wayline could have
/// written (an unknown decision).
pub fn control(stored: &StoredRequest) -> Option<Control> {
    let request = &stored.request;
    let actor = Actor { by: request.by.clone(), reason: request.reason.clone() };
    Some(match &request.action {
        Action::Pause { until } => Control::Pause { actor, until: *until },
        Action::Resume => Control::Resume { actor },
        Action::Cancel { rollback } => Control::Cancel { actor, rollback: *rollback },
        Action::Decide { step, decision, outputs } => Control::Decide {
            step: step.clone(),
            decision: Decision::parse(decision)?,
            outputs: outputs.clone(),
            actor,
        },
        Action::Break { steps, every } => {
            Control::Break { steps: steps.clone(), every: *every, actor }
        }
        Action::Step => Control::Step { actor },
        Action::Patch { step, outputs, inputs } => Control::Patch {
            step: step.clone(),
            outputs: outputs.clone(),
            inputs: inputs.clone(),
            actor,
        },
    })
}
