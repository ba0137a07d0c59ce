//! Control requests from the command line (`pause`, `resume`, `cancel`, `decide`): sent to the
//! process that owns the execution through the store, then waited for until the journal shows
//! their effect (`wayline_runtime::control`), and said in words; or, with `--server`, posted to
//! the server, which does the same.

use std::time::Duration;

use serde_json::{Map, Value, json};
use wayline_backend::Location;
use wayline_core::execution::Control;
use wayline_journal::{Actor, EventKind, Time};
use wayline_runtime::clock::Clock;
use wayline_runtime::control::{self, Sent, Settled};
use wayline_runtime::owner;
use wayline_store::Store;

use crate::error::{Error, Exit, Result};
use crate::remote::{Remote, Target};

/// How long a control command waits for the owning process to act on its request.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Who is asking: the user at this host, through the command line.
pub fn actor(reason: Option<String>) -> Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    Actor { by: format!("{user}@{} (cli)", owner::hostname()), reason }
}

/// Opens the store at `location` and resolves an execution id prefix.
pub async fn open_execution(
    location: &Location,
    id: &str,
) -> Result<(wayline_backend::AnyStore, String)> {
    let store = wayline_backend::open(location).await?;
    let full = store.resolve(id).await?;
    Ok((store, full))
}

/// Sends `control` for execution `id` and waits for its effect.
pub async fn send(location: &Location, id: &str, control: Control) -> Result<Exit> {
    let (store, id) = open_execution(location, id).await?;
    let by = control.actor().by.clone();
    let after = match control::send(&store, &id, control, Clock::system().now()).await? {
        Sent::Orphaned => {
            say!(
                "wayline: no live process runs execution {id}; the request is recorded and takes effect when it is resumed (wayline resume {id})"
            );
            return Ok(Exit::Success);
        }
        Sent::Delivered { after } => after,
    };
    match control::wait(store, &id, after, &by, PATIENCE).await? {
        Settled::TimedOut => {
            say!(
                "wayline: the request is recorded, but the owning process has not acted on it within {}s",
                PATIENCE.as_secs()
            );
            Ok(Exit::Infrastructure)
        }
        Settled::Applied(event) | Settled::Ended(event) => {
            say!("wayline: execution {id} {}", describe(&event.kind));
            Ok(Exit::Success)
        }
    }
}

/// Sends `control` for execution `id` to where `target` says: the database, or a server.
pub fn dispatch(target: &Target, id: &str, control: Control) -> Result<Exit> {
    match target.remote()? {
        Some(remote) => crate::command::block_on(send_remote(&remote, id, control)),
        None => {
            let location = target.db.location()?;
            crate::command::block_on(send(&location, id, control))
                .map_err(|error| error.located(&location))
        }
    }
}

/// Posts `control` for execution `id` to the server, which carries it out (or records it for
/// the engine that owns the execution) and says whether the journal shows it done. The server
/// records the token's name as the actor; the reason goes along.
pub async fn send_remote(remote: &Remote, id: &str, control: Control) -> Result<Exit> {
    let (id, applied) = post_control(remote, id, &control).await?;
    if applied {
        say!("wayline: execution {id} {}", describe_request(&control));
    } else {
        say!(
            "wayline: the request is recorded; the engine that runs execution {id} carries it out when it gets to it"
        );
    }
    Ok(Exit::Success)
}

/// Posts `control` to the server's route for it: the execution's full id, and whether the
/// journal already shows the request carried out.
pub async fn post_control(remote: &Remote, id: &str, control: &Control) -> Result<(String, bool)> {
    let (action, body) = match control {
        Control::Pause { actor, until } => {
            ("pause".to_owned(), json!({"until": until.map(Time::rfc3339), "reason": actor.reason}))
        }
        Control::Resume { actor } => ("resume".to_owned(), json!({"reason": actor.reason})),
        Control::Cancel { actor, rollback } => {
            ("cancel".to_owned(), json!({"rollback": rollback, "reason": actor.reason}))
        }
        Control::Decide { step, decision, outputs, actor } => (
            format!("steps/{}/decision", crate::remote::segment(step)),
            json!({"action": decision.name(), "outputs": outputs, "reason": actor.reason}),
        ),
        Control::Break { steps, actor, .. } => {
            ("pause".to_owned(), json!({"before": steps, "reason": actor.reason}))
        }
        Control::Step { actor } => ("step".to_owned(), json!({"reason": actor.reason})),
        Control::Patch { step, outputs, inputs, actor } => (
            "patch".to_owned(),
            json!({"step": step, "outputs": outputs, "inputs": inputs, "reason": actor.reason}),
        ),
    };
    remote.steer(id, &action, &body).await
}

/// What a request carried out did, in the words [`describe`] uses for its event.
fn describe_request(control: &Control) -> String {
    match control {
        Control::Pause { until: Some(until), .. } => format!("paused until {}", until.rfc3339()),
        Control::Pause { .. } => "paused".into(),
        Control::Resume { .. } => "resumed".into(),
        Control::Cancel { rollback: true, .. } => "cancelling and rolling back".into(),
        Control::Cancel { .. } => "cancelling".into(),
        Control::Decide { step, decision, .. } => format!("decided {decision} for {step}"),
        Control::Break { steps, .. } => format!("pauses before {}", steps.join(", ")),
        Control::Step { .. } => "steps".into(),
        Control::Patch { .. } => "patched".into(),
    }
}

/// What the event that carried out a request did, in a few words.
fn describe(kind: &EventKind) -> String {
    match kind {
        EventKind::Paused { until: Some(until), .. } => format!("paused until {}", until.rfc3339()),
        EventKind::Paused { .. } => "paused".into(),
        EventKind::Resumed { .. } => "resumed".into(),
        EventKind::Stopping { rollback: true, .. } => "cancelling and rolling back".into(),
        EventKind::Stopping { .. } => "cancelling".into(),
        EventKind::Decided { step, decision, .. } => format!("decided {decision} for {step}"),
        EventKind::BreakpointsSet { steps, .. } => format!("pauses before {}", steps.join(", ")),
        EventKind::Stepped { .. } => "steps".into(),
        EventKind::Patched { .. } => "patched".into(),
        EventKind::Finished { outcome, .. } => outcome.name().into(),
        other => format!("{other:?}"),
    }
}

/// `--until`: an RFC 3339 time, or a duration from now (`30m`).
pub fn parse_until(text: &str, now: Time) -> Result<Time> {
    if let Ok(duration) = wayline_journal::duration::parse(text) {
        return Ok(now.after(duration));
    }
    Time::parse(text).map_err(|_| {
        Error::invalid(format!("`--until {text}`: give an RFC 3339 time or a duration like 30m"))
    })
}

/// `--output key=value`: the value is JSON when it parses as JSON, else a string.
pub fn parse_outputs(pairs: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Error::invalid(format!("`--output {pair}`: write outputs as key=value")));
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}
