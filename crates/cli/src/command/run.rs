//! `wayline run`: start an execution in this process, show its progress, and end with its
//! result (exit 0 when it succeeded, 1 when it ended otherwise); or, with `--detach`, record it
//! and hand it to a background worker.

use std::path::PathBuf;
use std::sync::Arc;

use wayline_backend::Location;
use wayline_runtime::clock::Clock;
use wayline_runtime::{Submission, owner, submit};

use super::{Db, block_on};
use crate::error::{Error, Exit, Result};
use crate::follow::{self, Start, Watch};
use crate::output::EventsFile;
use crate::{definition, secrets};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    definition: definition::WithInputs,
    /// A file of secrets: `NAME=value` lines or a JSON object. Secrets also come from
    /// `WAYLINE_SECRET_<NAME>` environment variables.
    #[arg(long, value_name = "FILE")]
    secrets_file: Option<PathBuf>,
    #[command(flatten)]
    db: Db,
    /// Keep the execution in memory only (nothing is written to disk).
    #[arg(long, conflicts_with_all = ["db", "detach"])]
    ephemeral: bool,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Write every event as a CloudEvents JSON object, one per line.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Start the execution in the background, print its id and return.
    #[arg(long)]
    detach: bool,
}

pub fn exec(args: Args) -> Result<Exit> {
    let location = if args.ephemeral { Location::Ephemeral } else { args.db.location()? };
    let (workflow, source, inputs) = args.definition.load()?;
    let secrets = secrets::load(args.secrets_file.as_deref())?;
    if workflow.steps.iter().any(|step| !step.agent_labels.is_empty()) {
        say!(
            "wayline: note: `agent.labels` only routes steps in server mode; `wayline run` runs every step here"
        );
    }
    let events = args.events.as_deref().map(EventsFile::create).transpose()?;
    let submission = Submission {
        workflow: Arc::new(workflow),
        source: source.into(),
        path: args.definition.file.display().to_string(),
        inputs,
        secrets: Arc::new(secrets),
        idempotency_key: None,
    };
    if args.detach {
        return block_on(detach(submission, &location, args.secrets_file.as_deref()))
            .map_err(|error| error.located(&location));
    }
    let watch = Watch { json: args.json, quiet: false, location: location.clone() };
    let named = location.clone();
    block_on(async move {
        let store = wayline_backend::open(&location).await?;
        follow::retention(&store).await;
        follow::execute(store, Start::Submit(submission), &watch, events).await
    })
    .map_err(|error| error.located(&named))
}

/// `run --detach`: record the execution, hand it to a background `wayline resume`, print its
/// id.
async fn detach(
    submission: Submission,
    location: &Location,
    secrets_file: Option<&std::path::Path>,
) -> Result<Exit> {
    if *location == Location::Ephemeral {
        return Err(Error::invalid(
            "--detach needs a database (an ephemeral execution would vanish with this process)",
        ));
    }
    let store = wayline_backend::open(location).await?;
    // The worker reads the secrets again itself; none are stored.
    let id =
        submit::enqueue(&store, submission, &owner::this_process(), Clock::system().now()).await?;
    let exe = std::env::current_exe()?;
    #[allow(clippy::disallowed_methods)] // `--detach` starts wayline itself as the worker
    let mut worker = std::process::Command::new(exe);
    worker.args(["resume", &id, "--quiet", "--db", &location.url()]);
    if let Some(file) = secrets_file {
        worker.arg("--secrets-file").arg(std::path::absolute(file)?);
    }
    use std::os::unix::process::CommandExt as _;
    worker
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0) // not killed by the terminal's Ctrl-C
        .spawn()
        .map_err(|error| {
            Error::infrastructure(format!("cannot start the background worker: {error}"))
        })?;
    outln!("{id}")?;
    say!(
        "wayline: execution {id} runs in the background; follow it with `wayline show {id}` or `wayline events {id} -f`"
    );
    Ok(Exit::Success)
}
