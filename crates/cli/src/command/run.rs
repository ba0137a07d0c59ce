//! `wayline run`: start an execution in this process, show its progress, and end with its
//! result (exit 0 when it succeeded, 1 when it ended otherwise); or, with `--detach`, record it
//! and hand it to a background worker.

use std::path::PathBuf;
use std::sync::Arc;

use wayline_backend::Location;
use wayline_runtime::clock::Clock;
use wayline_runtime::{Breakpoints, Submission, owner, submit};

use serde_json::{Value, json};
use wayline_core::execution::Secrets;

use super::block_on;
use crate::error::{Error, Exit, Result};
use crate::follow::{self, Start, Watch};
use crate::output::EventsFile;
use crate::remote::{Remote, Target, Watcher};
use crate::{definition, secrets, signals};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    definition: definition::WithInputs,
    /// A file of secrets: `NAME=value` lines or a JSON object. Secrets also come from
    /// `WAYLINE_SECRET_<NAME>` environment variables. (With --server, the steps get the
    /// server's secrets; none are sent.)
    #[arg(long, value_name = "FILE")]
    secrets_file: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
    /// Keep the execution in memory only (nothing is written to disk).
    #[arg(long, conflicts_with_all = ["db", "detach", "server"])]
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
    /// Pause before these steps start, breakpoints (repeatable, or comma-separated): then
    /// `wayline inspect`, `wayline patch`, `wayline step` or `wayline resume`.
    #[arg(long = "break", value_name = "STEP", value_delimiter = ',')]
    breakpoints: Vec<String>,
    /// Pause before every step; `wayline step ID` runs the next ones.
    #[arg(long)]
    step: bool,
}

/// The breakpoints asked for, checked against the workflow (exit 2 for a step it does not
/// have).
fn breakpoints(args: &Args, workflow: &wayline_lang::Workflow) -> Result<Breakpoints> {
    for step in &args.breakpoints {
        if workflow.step(step).is_none() {
            let names = workflow.steps.iter().map(|s| s.id.as_str());
            let hint = wayline_lang::diagnostic::did_you_mean(step, names)
                .map(|similar| format!("; did you mean `{similar}`?"))
                .unwrap_or_default();
            return Err(Error::invalid(format!(
                "`--break {step}`: workflow `{}` has no step `{step}`{hint}",
                workflow.name
            )));
        }
    }
    Ok(Breakpoints { steps: args.breakpoints.clone(), every: args.step })
}

pub fn exec(args: Args) -> Result<Exit> {
    if let Some(remote) = args.target.remote()? {
        return block_on(remote_run(args, remote));
    }
    let location = if args.ephemeral { Location::Ephemeral } else { args.target.db.location()? };
    let (definition, inputs) = args.definition.load()?;
    let definition::Definition { workflow, source, imports } = definition;
    let secrets = secrets::load(args.secrets_file.as_deref())?;
    if workflow.steps.iter().any(|step| !step.agent_labels.is_empty()) {
        say!(
            "wayline: note: `agent.labels` only routes steps in server mode; `wayline run` runs every step here"
        );
    }
    let events = args.events.as_deref().map(EventsFile::create).transpose()?;
    let breakpoints = breakpoints(&args, &workflow)?;
    let submission = Submission {
        workflow: Arc::new(workflow),
        source: source.into(),
        imports,
        path: args.definition.file.display().to_string(),
        inputs,
        secrets: Arc::new(secrets),
        idempotency_key: None,
        breakpoints,
    };
    if args.detach {
        return block_on(detach(submission, &location, args.secrets_file.as_deref()))
            .map_err(|error| error.located(&location));
    }
    let watch = Watch { json: args.json, quiet: false, place: location.describe(), shown_after: 0 };
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

/// `run --server`: the file goes to the server as an inline definition (checked here first,
/// so that its errors read as they do without --server), the server runs it, and this process
/// follows its event stream with the same live view, prompt, stop signals, summary and exit
/// code as a run here.
async fn remote_run(args: Args, remote: Remote) -> Result<Exit> {
    if args.secrets_file.is_some() {
        return Err(Error::invalid(
            "--secrets-file does not go with --server: the steps get the server's secrets, and none are sent over the API",
        ));
    }
    let (definition, inputs) = args.definition.load()?;
    let definition::Definition { workflow, source, imports } = definition;
    let breakpoints = breakpoints(&args, &workflow)?;
    let events = args.events.as_deref().map(EventsFile::create).transpose()?;
    // Before the execution exists, so that no stop signal finds the default action.
    let stop = signals::Stop::listen()?;
    let body = json!({
        "definition": source,
        "imports": imports,
        "inputs": inputs,
        "breakpoints": breakpoints.steps,
        "step": breakpoints.every,
    });
    let started = remote.post("/api/v1/executions", &body).await?;
    let Some(id) = started.get("id").and_then(Value::as_str).map(str::to_owned) else {
        return Err(Error::infrastructure(format!(
            "the {} started an execution without saying its id: {started}",
            remote.describe()
        )));
    };
    if args.detach {
        outln!("{id}")?;
        say!(
            "wayline: execution {id} runs on the {}; follow it with `wayline events --server URL {id} -f`",
            remote.describe()
        );
        return Ok(Exit::Success);
    }
    let watch = Watch { json: args.json, quiet: false, place: remote.describe(), shown_after: 0 };
    say!("wayline: execution {id} of {} started ({})", workflow.name, watch.place);
    use std::io::IsTerminal as _;
    // Log lines are shown live where the progress table is not.
    let logs = !args.json && !std::io::stderr().is_terminal();
    let mut watcher = Watcher::new(remote, &id, logs)?;
    let secrets = Arc::new(Secrets::default());
    follow::watch_execution(&mut watcher, stop, &id, &Arc::new(workflow), &secrets, &watch, events)
        .await
}
