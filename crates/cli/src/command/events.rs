//! `wayline events`: an execution's journal as CloudEvents JSON lines, live with `-f`.

use wayline_backend::Location;
use wayline_journal::{Event, cloudevents};
use wayline_runtime::{Item, Subscription, inspect};

use crate::error::{Exit, Result};
use crate::remote::{Remote, Target};
use crate::request;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Execution id (any unique prefix).
    id: String,
    /// Keep printing events as they are committed, until the execution ends.
    #[arg(short, long)]
    follow: bool,
    /// Start after this sequence number (resume a previous read).
    #[arg(long, default_value_t = 0, value_name = "SEQ")]
    after: u64,
    /// Only the events of this step (its attempts, retries, skip, escalation, decisions).
    #[arg(long, value_name = "STEP")]
    step: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

/// Whether `event` is one `--step` asks for.
fn wanted(event: &Event, step: Option<&str>) -> bool {
    step.is_none_or(|step| event.kind.step() == Some(step))
}

pub async fn exec(args: Args, location: Location) -> Result<Exit> {
    let Args { id, follow, after, step, .. } = args;
    let step = step.as_deref();
    let (store, id) = request::open_execution(&location, &id).await?;
    let events = inspect::all_events(&store, &id).await?;
    if let Some(step) = step {
        inspect::check_step(&events, step)?;
    }
    if !follow {
        for event in events.iter().filter(|event| event.seq > after && wanted(event, step)) {
            outln!("{}", cloudevents::to_json(&id, event))?;
        }
        return Ok(Exit::Success);
    }
    let mut subscription = Subscription::follow(store, &id, after);
    while let Some(item) = subscription.next().await? {
        if let Item::Event(event) = item
            && wanted(&event, step)
        {
            outln!("{}", cloudevents::to_json(&id, &event))?;
        }
    }
    Ok(Exit::Success)
}

/// `events --server`: the same lines, from the server's event list, or live from its event
/// stream with `-f` (taken up again where it stopped if the connection drops).
pub async fn remote(args: Args, remote: Remote) -> Result<Exit> {
    let Args { id, follow, after, step, .. } = args;
    let step = step.as_deref();
    if let Some(step) = step {
        let first: Vec<Event> =
            remote.events(&id, 0).await?.into_iter().take(1).map(|(_, e)| e).collect();
        inspect::check_step(&first, step)?;
    }
    if !follow {
        for (id, event) in remote.events(&id, after).await? {
            if wanted(&event, step) {
                outln!("{}", cloudevents::to_json(&id, &event))?;
            }
        }
        return Ok(Exit::Success);
    }
    // The full id, for the lines (the stream's events carry it too, but a prefix may be given).
    let report = remote.report(&id).await?;
    let id = report.get("id").and_then(serde_json::Value::as_str).unwrap_or(&id).to_owned();
    let mut stream = remote.follow(&id, after)?;
    while let Some(event) = stream.next().await? {
        if wanted(&event, step) {
            outln!("{}", cloudevents::to_json(&id, &event))?;
        }
    }
    Ok(Exit::Success)
}
