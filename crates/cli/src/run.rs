//! `wayline run`: start an execution in this process, show its progress, and end with its
//! result (exit 0 when it succeeded, 1 when it ended otherwise).

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;
use tokio_util::sync::CancellationToken;
use wayline_core::Event;
use wayline_core::cloudevents;
use wayline_core::event::{Actor, EventKind};
use wayline_core::execution::{Control, Execution, Secrets};
use wayline_core::report::Report;
use wayline_runtime::clock::Clock;
use wayline_runtime::{Engine, EngineHandle, Item, Options, Submission};
use wayline_spec::Workflow;
use wayline_spec::model::Decision;
use wayline_store::Store;

use crate::backend::{self, AnyStore};
use crate::cli::{Exit, invalid};
use crate::progress::Progress;
use crate::{definition, secrets};

/// Everything `wayline run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunArgs {
    pub file: PathBuf,
    pub inputs: Vec<String>,
    pub input_file: Option<PathBuf>,
    pub secrets_file: Option<PathBuf>,
    pub location: backend::Location,
    pub json: bool,
    pub events: Option<PathBuf>,
}

pub fn run(args: RunArgs) -> anyhow::Result<Exit> {
    let (workflow, source) = definition::load(&args.file)?;
    let inputs = definition::resolve_inputs(&workflow, &args.inputs, args.input_file.as_deref())?;
    let secrets = secrets::load(args.secrets_file.as_deref())?;
    if workflow.steps.iter().any(|step| !step.agent_labels.is_empty()) {
        eprintln!(
            "wayline: note: `agent.labels` only routes steps in server mode; `wayline run` runs every step here"
        );
    }
    let events = match &args.events {
        Some(path) => Some(std::fs::File::create(path).map_err(|error| {
            invalid(format!("cannot write events to {}: {error}", path.display()))
        })?),
        None => None,
    };
    let submission = Submission {
        workflow: Arc::new(workflow),
        source: source.into(),
        path: args.file.display().to_string(),
        inputs,
        secrets: Arc::new(secrets),
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(async move {
        let store = backend::open(&args.location).await?;
        execute(store, submission, &args, events).await
    });
    // A read of stdin for an escalation prompt may still be blocked; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// Runs the engine and the user-facing loop side by side until the execution ends.
async fn execute(
    store: AnyStore,
    submission: Submission,
    args: &RunArgs,
    events: Option<std::fs::File>,
) -> anyhow::Result<Exit> {
    let shutdown = CancellationToken::new();
    let options = Options {
        request_poll: store.is_shared().then_some(Duration::from_millis(50)),
        ..Options::default()
    };
    let (engine, handle) = Engine::new(store, options, shutdown.clone());
    let watch = async {
        let result = watch(&handle, submission, args, events).await;
        shutdown.cancel();
        result
    };
    let (engine_result, watch_result) = tokio::join!(engine.run(), watch);
    let exit = watch_result?;
    engine_result.map_err(crate::engine_error)?;
    Ok(exit)
}

fn actor() -> Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    Actor { by: format!("{user}@{} (cli)", wayline_runtime::owner::hostname()), reason: None }
}

async fn watch(
    handle: &EngineHandle<AnyStore>,
    submission: Submission,
    args: &RunArgs,
    mut events_file: Option<std::fs::File>,
) -> anyhow::Result<Exit> {
    let workflow: Arc<Workflow> = Arc::clone(&submission.workflow);
    let secrets: Arc<Secrets> = Arc::clone(&submission.secrets);
    let id = handle.submit(submission).await.map_err(crate::engine_error)?;
    let clock = Clock::system();
    let terminal = std::io::stderr().is_terminal() && !args.json;
    let interactive = terminal && std::io::stdin().is_terminal();
    eprintln!("wayline: execution {id} of {} started", workflow.name);
    let mut progress = Progress::new(terminal, clock.now());
    let mut subscription = handle.subscribe(&id, 0);
    let mut fold: Option<Execution> = None;
    let mut redraw = tokio::time::interval(Duration::from_millis(200));
    let mut cancelling = false;
    let mut answers = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut asking: Option<String> = None;
    loop {
        tokio::select! {
            item = subscription.next() => {
                let Some(item) = item.map_err(crate::engine_error)? else { break };
                match item {
                    Item::Event(event) => {
                        if let Some(file) = &mut events_file {
                            writeln!(file, "{}", cloudevents::to_json(&id, &event))?;
                        }
                        let execution = follow(&mut fold, &id, &workflow, &secrets, &event)?;
                        progress.event(execution, &event);
                        if let EventKind::StepEscalated { step, error } = &event.kind
                            && interactive
                        {
                                progress.clear();
                                eprintln!("\nstep `{step}` failed and needs a decision: {}", error.message);
                                eprint!("decide: [r]etry, [s]kip, roll[b]ack, [f]ail > ");
                                let _ = std::io::stderr().flush();
                                asking = Some(step.clone());
                        }
                        if let EventKind::Decided { step, .. } = &event.kind
                            && asking.as_deref() == Some(step)
                        {
                            asking = None;
                        }
                    }
                    Item::Log(line) => {
                        if !terminal {
                            progress.log(&line.step, &line.text);
                        }
                    }
                }
            }
            _ = redraw.tick(), if terminal && asking.is_none() => {
                if let Some(execution) = &fold {
                    progress.draw(execution, clock.now());
                }
            }
            answer = answers.next_line(), if asking.is_some() => {
                let step = asking.clone().unwrap_or_default();
                let decision = match answer?.as_deref().map(str::trim) {
                    Some("r" | "retry") => Some(Decision::Retry),
                    Some("s" | "skip") => Some(Decision::Skip),
                    Some("b" | "rollback") => Some(Decision::Rollback),
                    Some("f" | "fail") => Some(Decision::Fail),
                    None => { asking = None; None } // stdin closed: leave it to `wayline decide`
                    Some(_) => {
                        eprint!("please answer r, s, b or f > ");
                        let _ = std::io::stderr().flush();
                        None
                    }
                };
                if let Some(decision) = decision {
                    let control = Control::Decide { step, decision, outputs: Default::default(), actor: actor() };
                    if let Err(error) = handle.control(&id, control).await {
                        eprintln!("wayline: {error}");
                    }
                    asking = None;
                }
            }
            signal = tokio::signal::ctrl_c() => {
                signal?;
                if cancelling {
                    progress.clear();
                    eprintln!("wayline: stopping now; execution {id} stays resumable with `wayline resume {id}`");
                    return Ok(Exit::Ended);
                }
                cancelling = true;
                progress.clear();
                eprintln!("wayline: cancelling execution {id} (press Ctrl-C again to stop at once)");
                let control = Control::Cancel { actor: Actor { reason: Some("Ctrl-C".into()), ..actor() }, rollback: false };
                if let Err(error) = handle.control(&id, control).await {
                    eprintln!("wayline: {error}");
                }
            }
        }
    }
    if let Some(execution) = &fold {
        progress.draw(execution, clock.now());
    }
    let report = handle.report(&id).await.map_err(crate::engine_error)?;
    finish(handle.store(), &report, args.json, terminal).await
}

/// Keeps a local fold of the execution for display, fed by the events as they arrive.
fn follow<'a>(
    fold: &'a mut Option<Execution>,
    id: &str,
    workflow: &Arc<Workflow>,
    secrets: &Arc<Secrets>,
    event: &Event,
) -> anyhow::Result<&'a Execution> {
    match fold {
        Some(execution) => {
            execution
                .apply(event)
                .map_err(|error| anyhow::anyhow!("the journal of {id} does not fold: {error}"))?;
        }
        None => {
            let execution = Execution::replay(
                id.to_owned(),
                Arc::clone(workflow),
                Arc::clone(secrets),
                std::slice::from_ref(event),
            )
            .map_err(|error| anyhow::anyhow!("the journal of {id} does not start well: {error}"))?;
            *fold = Some(execution);
        }
    }
    fold.as_ref().ok_or_else(|| anyhow::anyhow!("no execution state"))
}

/// Prints the result and picks the exit code.
pub async fn finish<S: Store>(
    store: &S,
    report: &Report,
    json: bool,
    terminal: bool,
) -> anyhow::Result<Exit> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print_summary(store, report, terminal).await;
    }
    Ok(if report.status == "succeeded" { Exit::Success } else { Exit::Ended })
}

async fn print_summary<S: Store>(store: &S, report: &Report, terminal: bool) {
    let mut failed = Vec::new();
    eprintln!();
    for step in &report.steps {
        let attempts = if step.attempts > 1 {
            format!(" after {} attempts", step.attempts)
        } else {
            String::new()
        };
        let detail = match (&step.error, &step.reason) {
            (Some(error), _) if step.status == "failed" => format!(": {}", error.message),
            (_, Some(reason)) => format!(" ({reason})"),
            _ => String::new(),
        };
        let compensation = step
            .compensation
            .as_ref()
            .map(|c| format!(", compensation {}", c.status))
            .unwrap_or_default();
        eprintln!("  {:<24} {}{attempts}{compensation}{detail}", step.id, step.status);
        if step.status == "failed" {
            failed.push(step.id.clone());
        }
    }
    // On a terminal the logs were not shown live: show the end of each failed step's log.
    if terminal {
        for step in failed {
            if let Ok(lines) = store.logs(&report.id, Some(&step), 0, 100_000).await {
                if lines.is_empty() {
                    continue;
                }
                eprintln!("\n  last lines of `{step}`:");
                for line in lines.iter().rev().take(20).rev() {
                    eprintln!("    {}", line.text);
                }
            }
        }
    }
    let error = report.error.as_ref().map(|e| format!(": {}", e.message)).unwrap_or_default();
    eprintln!("\n{} {} {}{error}", report.workflow, report.id, report.status);
}
