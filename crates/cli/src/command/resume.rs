//! `wayline resume`: resume a paused execution (a request to its live owner), or take over one
//! whose owner is gone and continue it in this process.

use std::sync::Arc;

use wayline_core::execution::Control;
use wayline_runtime::clock::Clock;
use wayline_runtime::{inspect, owner};
use wayline_store::Store;

use super::block_on;
use crate::error::{Error, Exit, Result};
use crate::follow::{self, Start, View, Watch};
use crate::output::EventsFile;
use crate::remote::Target;
use crate::{request, secrets};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Execution id (any unique prefix).
    id: String,
    #[command(flatten)]
    view: View,
    /// Take the execution over even when its owner is a live process on this host whose
    /// lease lapsed (stuck or stopped). Its running steps are stopped first.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    target: Target,
}

pub fn exec(args: Args) -> Result<Exit> {
    if let Some(remote) = args.target.remote()? {
        // A server takes over the executions whose owner is gone by itself.
        if args.view.secrets_file.is_some() || args.force {
            return Err(Error::invalid(
                "with --server, `resume` resumes a paused execution; --secrets-file and --force are for taking one over here (the server takes over executions whose owner is gone by itself)",
            ));
        }
        let control = Control::Resume { actor: request::actor(None) };
        return block_on(request::send_remote(&remote, &args.id, control));
    }
    let location = args.target.db.location()?;
    let secrets = Arc::new(secrets::load(args.view.secrets_file.as_deref())?);
    let events = args.view.events.as_deref().map(EventsFile::create).transpose()?;
    let watch = Watch {
        json: args.view.json,
        quiet: args.view.quiet,
        place: location.describe(),
        shown_after: 0,
    };
    let named = location.clone();
    block_on(async move {
        let (store, id) = request::open_execution(&location, &args.id).await?;
        let record = store.get(&id).await?;
        if record.status.is_final() {
            return Err(Error::invalid(format!(
                "execution {id} already finished ({}); nothing to resume",
                record.status.name()
            )));
        }
        match owner::plan_resume(&record, Clock::system().now(), args.force) {
            owner::Resume::Refuse(message) => return Err(Error::invalid(message)),
            // Paused in a live process: `resume` is the control request.
            owner::Resume::Request => {
                let control = Control::Resume { actor: request::actor(None) };
                return request::send(&location, &id, control).await;
            }
            owner::Resume::TakeOver => {}
        }
        let journal = inspect::all_events(&store, &id).await?;
        let (workflow, _) = inspect::definition(&journal)?;
        follow::retention(&store).await;
        let start = Start::Recover { id, secrets, workflow: Arc::new(workflow), force: args.force };
        follow::execute(store, start, &watch, events).await
    })
    .map_err(|error| error.located(&named))
}
