//! `wayline events`: an execution's journal as CloudEvents JSON lines, live with `-f`.

use wayline_backend::Location;
use wayline_journal::cloudevents;
use wayline_runtime::{Item, Subscription, inspect};

use super::Db;
use crate::error::{Exit, Result};
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
    #[command(flatten)]
    pub db: Db,
}

pub async fn exec(args: Args, location: Location) -> Result<Exit> {
    let Args { id, follow, after, .. } = args;
    let (store, id) = request::open_execution(&location, &id).await?;
    if !follow {
        let events = inspect::all_events(&store, &id).await?;
        for event in events.iter().filter(|event| event.seq > after) {
            outln!("{}", cloudevents::to_json(&id, event))?;
        }
        return Ok(Exit::Success);
    }
    let mut subscription = Subscription::follow(store, &id, after);
    while let Some(item) = subscription.next().await? {
        if let Item::Event(event) = item {
            outln!("{}", cloudevents::to_json(&id, &event))?;
        }
    }
    Ok(Exit::Success)
}
