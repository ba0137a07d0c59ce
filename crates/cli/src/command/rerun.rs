//! `wayline rerun`: run part of a finished execution again, in place — the same id, its
//! journal continued — and follow it as `run` does, to the same exit codes.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use wayline_core::execution::Secrets;
use wayline_lang::inputs::Given;
use wayline_runtime::{Rerun, inspect};

use super::block_on;
use crate::error::{Error, Exit, Result};
use crate::follow::{self, Start, View, Watch};
use crate::output::EventsFile;
use crate::remote::{Remote, Target, Watcher, execution_path};
use crate::{request, secrets, signals};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without --from, every step that did not succeed runs again — failed, cancelled, never reached,
or skipped because of a failure — with what it held up; succeeded steps keep their outputs.
With --from, those steps and everything downstream of them run again. Steps whose effects a
rollback undid run again either way. Attempt numbers continue; each step that runs again has
its whole retry budget.

Examples:
  wayline rerun 01JD…                       # the failed step (fixed since) and what follows
  wayline rerun 01JD… --from deploy         # deploy and everything after it
  wayline rerun 01JD… -i version=1.4.2 --reason 'hotfix'")]
pub struct Args {
    /// Execution id (any unique prefix).
    id: String,
    /// Run this step and everything downstream of it again (repeatable, or comma-separated).
    #[arg(long, value_name = "STEP", value_delimiter = ',')]
    from: Vec<String>,
    /// A new input value, `name=value` (repeatable): recorded with the rerun, seen by the
    /// steps that run again.
    #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    /// Why, recorded with the rerun.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    view: View,
    #[command(flatten)]
    target: Target,
}

pub fn exec(args: Args) -> Result<Exit> {
    let mut inputs = Vec::new();
    for flag in &args.inputs {
        let Some((name, value)) = flag.split_once('=') else {
            return Err(Error::invalid(format!("`-i {flag}`: write inputs as name=value")));
        };
        inputs.push((name.to_owned(), value.to_owned()));
    }
    if let Some(remote) = args.target.remote()? {
        return block_on(remote_rerun(args, inputs, remote));
    }
    let location = args.target.db.location()?;
    let secrets = Arc::new(secrets::load(args.view.secrets_file.as_deref())?);
    let events = args.view.events.as_deref().map(EventsFile::create).transpose()?;
    let named = location.clone();
    block_on(async move {
        let (store, id) = request::open_execution(&location, &args.id).await?;
        let journal = inspect::all_events(&store, &id).await?;
        let (workflow, _) = inspect::definition(&journal)?;
        let watch = Watch {
            json: args.view.json,
            quiet: args.view.quiet,
            place: location.describe(),
            shown_after: journal.len() as u64,
        };
        let rerun = Rerun {
            from: args.from,
            inputs: inputs.into_iter().map(|(name, text)| (name, Given::Text(text))).collect(),
            actor: request::actor(args.reason),
        };
        let start = Start::Rerun { id, rerun, secrets, workflow: Arc::new(workflow) };
        follow::execute(store, start, &watch, events).await
    })
    .map_err(|error| error.located(&named))
}

/// `rerun --server`: the server reruns the execution; this process follows it as `run
/// --server` does.
async fn remote_rerun(args: Args, inputs: Vec<(String, String)>, remote: Remote) -> Result<Exit> {
    if args.view.secrets_file.is_some() {
        return Err(Error::invalid(
            "--secrets-file does not go with --server: the steps get the server's secrets, and none are sent over the API",
        ));
    }
    let events = args.view.events.as_deref().map(EventsFile::create).transpose()?;
    let stop = signals::Stop::listen()?;
    let path = format!("{}/rerun", execution_path(&args.id)?);
    let inputs: Map<String, Value> =
        inputs.into_iter().map(|(name, text)| (name, Value::String(text))).collect();
    let body = json!({ "from": args.from, "inputs": inputs, "reason": args.reason });
    let answer = remote.post(&path, &body).await?;
    let id = answer["id"].as_str().unwrap_or(&args.id).to_owned();
    let shown_after = answer["seq"].as_u64().unwrap_or(0).saturating_sub(1);
    let journal: Vec<_> = remote.events(&id, 0).await?.into_iter().map(|(_, e)| e).collect();
    let (workflow, _) = inspect::definition(&journal)?;
    let watch = Watch {
        json: args.view.json,
        quiet: args.view.quiet,
        place: remote.describe(),
        shown_after,
    };
    if !args.view.quiet {
        say!("wayline: execution {id} of {} runs again ({})", workflow.name, watch.place);
    }
    use std::io::IsTerminal as _;
    let logs = !args.view.json && !std::io::stderr().is_terminal();
    let log_after = answer["log_after"].as_u64().unwrap_or(0);
    let mut watcher = Watcher::new(remote, &id, logs)?.with_logs_after(log_after);
    let secrets = Arc::new(Secrets::default());
    follow::watch_execution(&mut watcher, stop, &id, &Arc::new(workflow), &secrets, &watch, events)
        .await
}
