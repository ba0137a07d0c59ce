//! `wayline run`: start an execution in this process, show its progress, and end with its
//! result (exit 0 when it succeeded, 1 when it ended otherwise).

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;
use tokio_util::sync::CancellationToken;
use wayline_core::execution::{Control, Created, Execution, Secrets};
use wayline_core::report::Report;
use wayline_journal::Decision;
use wayline_journal::Event;
use wayline_journal::EventKind;
use wayline_journal::Status;
use wayline_journal::StepStatus;
use wayline_journal::Time;
use wayline_lang::Workflow;
use wayline_runtime::clock::Clock;
use wayline_runtime::{Engine, EngineHandle, Item, Options, Requests, Submission, owner};
use wayline_store::{NewExecution, Store};

use crate::backend::{self, AnyStore};
use crate::cli::{Exit, invalid};
use crate::output::{self, EventsFile, escape};
use crate::progress::Progress;
use crate::{control, definition, secrets, signals};

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
    pub detach: bool,
}

/// Everything `wayline resume` was asked to do.
#[derive(Debug, Clone)]
pub struct ResumeArgs {
    pub id: String,
    pub secrets_file: Option<PathBuf>,
    pub location: backend::Location,
    pub json: bool,
    pub events: Option<PathBuf>,
    /// No progress output (the detached worker of `run --detach`).
    pub quiet: bool,
    /// Take over even from a live owner on this host.
    pub force: bool,
}

/// How the watched execution comes to be.
enum Start {
    Submit(Submission),
    /// Take over an execution whose owner is gone.
    Recover {
        id: String,
        secrets: Arc<Secrets>,
        workflow: Arc<Workflow>,
        /// Take it over even from a live owner on this host.
        force: bool,
    },
}

pub fn run(args: RunArgs) -> anyhow::Result<Exit> {
    let (workflow, source) = definition::load(&args.file)?;
    let inputs = definition::resolve_inputs(&workflow, &args.inputs, args.input_file.as_deref())?;
    let secrets = secrets::load(args.secrets_file.as_deref())?;
    if workflow.steps.iter().any(|step| !step.agent_labels.is_empty()) {
        say!(
            "wayline: note: `agent.labels` only routes steps in server mode; `wayline run` runs every step here"
        );
    }
    // Checked here too because `--detach` hands the run to another process.
    if let Some(message) = wayline_runtime::render::missing_secrets(&workflow, &secrets) {
        return Err(invalid(message));
    }
    let events = args.events.as_deref().map(EventsFile::create).transpose()?;
    let submission = Submission {
        workflow: Arc::new(workflow),
        source: source.into(),
        path: args.file.display().to_string(),
        inputs,
        secrets: Arc::new(secrets),
    };
    if args.detach {
        return block_on(detach(submission, args));
    }
    let watch = Watch { json: args.json, quiet: false, location: args.location.clone() };
    block_on(async move {
        let store = backend::open(&args.location).await?;
        retention(&store).await;
        execute(store, Start::Submit(submission), &watch, events).await
    })
}

/// `wayline resume ID`: resume a paused execution, or take over one whose owner is gone.
pub fn resume(args: ResumeArgs) -> anyhow::Result<Exit> {
    let secrets = Arc::new(secrets::load(args.secrets_file.as_deref())?);
    let events = args.events.as_deref().map(EventsFile::create).transpose()?;
    let watch = Watch { json: args.json, quiet: args.quiet, location: args.location.clone() };
    block_on(async move {
        let (store, id) = control::open_execution(&args.location, &args.id).await?;
        let record =
            store.get(&id).await.map_err(|error| backend::store_error(error, &args.location))?;
        if record.status.is_final() {
            return Err(invalid(format!(
                "execution {id} already finished ({}); nothing to resume",
                record.status.name()
            )));
        }
        let now = Clock::system().now();
        let resume = owner::plan_resume(&record, now, args.force);
        if let owner::Resume::Refuse(message) = resume {
            return Err(anyhow::Error::new(crate::cli::Failure { exit: Exit::Invalid, message }));
        }
        if resume == owner::Resume::Request {
            // Paused in a live process: `resume` is the control request.
            return control::control(
                &args.location,
                &id,
                control::Ask::Resume,
                None,
                Duration::from_secs(10),
            )
            .await;
        }
        let events_so_far = wayline_runtime::inspect::all_events(&store, &id)
            .await
            .map_err(|e| control::engine_error(e, &args.location))?;
        let (workflow, _) = wayline_runtime::inspect::definition(&events_so_far)
            .map_err(|e| control::engine_error(e, &args.location))?;
        retention(&store).await;
        let start = Start::Recover { id, secrets, workflow: Arc::new(workflow), force: args.force };
        execute(store, start, &watch, events).await
    })
}

fn block_on<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = runtime.block_on(work);
    // A read of stdin for an escalation prompt may still be blocked; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// Applies the automatic retention (`WAYLINE_RETENTION`, default 30d, `off` to keep
/// everything): finished executions older than that are deleted.
async fn retention<S: Store>(store: &S) {
    let setting = std::env::var("WAYLINE_RETENTION").unwrap_or_else(|_| "30d".into());
    if setting == "off" || setting == "0" {
        return;
    }
    let Ok(age) = wayline_journal::duration::parse(&setting) else {
        say!("wayline: ignoring WAYLINE_RETENTION={setting}: not a duration like 30d");
        return;
    };
    let before = Time::from_micros(Clock::system().now().as_micros() - age.as_micros() as i64);
    if let Err(error) = store.gc(before).await {
        say!("wayline: retention cleanup failed: {error}");
    }
}

/// `run --detach`: record the execution, hand it to a background `wayline resume`, print its
/// id.
async fn detach(submission: Submission, args: RunArgs) -> anyhow::Result<Exit> {
    if args.location == backend::Location::Ephemeral {
        return Err(invalid(
            "--detach needs a database (an ephemeral execution would vanish with this process)",
        ));
    }
    let store = backend::open(&args.location).await?;
    let now = Clock::system().now();
    let id = wayline_runtime::id::new(now);
    let created = Created {
        id: id.clone(),
        workflow: Arc::clone(&submission.workflow),
        source: submission.source,
        path: submission.path,
        inputs: submission.inputs,
    };
    let (_, first) = Execution::create(created, Arc::new(Secrets::default()), now);
    let new = NewExecution {
        id: id.clone(),
        workflow: submission.workflow.name.clone(),
        created_at: now,
        owner: owner::this_process(),
        ttl: Duration::from_secs(15),
        summary: wayline_store::Summary {
            status: wayline_journal::Status::Pending,
            started_at: None,
            finished_at: None,
            error: None,
        },
    };
    let lease = store
        .create(new, vec![first])
        .await
        .map_err(|error| backend::store_error(error, &args.location))?;
    // Free the lease at once so the worker takes it without waiting for this process to end.
    store.release(lease).await.map_err(|error| backend::store_error(error, &args.location))?;
    let exe = std::env::current_exe()?;
    #[allow(clippy::disallowed_methods)] // `--detach` starts wayline itself as the worker
    let mut worker = std::process::Command::new(exe);
    worker.args(["resume", &id, "--quiet", "--db", &args.location.url()]);
    if let Some(file) = &args.secrets_file {
        worker.arg("--secrets-file").arg(std::path::absolute(file)?);
    }
    use std::os::unix::process::CommandExt as _;
    worker
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0) // not killed by the terminal's Ctrl-C
        .spawn()
        .map_err(|error| anyhow::anyhow!("cannot start the background worker: {error}"))?;
    outln!("{id}")?;
    say!(
        "wayline: execution {id} runs in the background; follow it with `wayline show {id}` or `wayline events {id} -f`"
    );
    Ok(Exit::Success)
}

/// How the user-facing loop shows the execution.
struct Watch {
    json: bool,
    quiet: bool,
    location: backend::Location,
}

/// Runs the engine and the user-facing loop side by side until the execution ends.
async fn execute(
    store: AnyStore,
    start: Start,
    watch: &Watch,
    events: Option<EventsFile>,
) -> anyhow::Result<Exit> {
    let shutdown = CancellationToken::new();
    let options = Options {
        requests: if store.is_shared() {
            Requests::Wakeups { at_most_every: Duration::from_millis(50) }
        } else {
            Requests::Off
        },
        ..Options::default()
    };
    let closed = store.closed();
    let (engine, handle) = Engine::new(store, options, shutdown.clone());
    let user = async {
        let result = follow_execution(&handle, start, watch, events).await;
        shutdown.cancel();
        result
    };
    let (engine_result, user_result) = tokio::join!(engine.run(), user);
    // With every handle gone, the store finishes its work (SQLite folds its WAL back).
    drop(handle);
    let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
    let exit = user_result?;
    engine_result.map_err(|error| control::engine_error(error, &watch.location))?;
    Ok(exit)
}

async fn follow_execution(
    handle: &EngineHandle<AnyStore>,
    start: Start,
    watch: &Watch,
    mut events_file: Option<EventsFile>,
) -> anyhow::Result<Exit> {
    // Before anything is started, so that no stop signal finds the default action (the end
    // of this process, leaving the execution `running` and its steps orphaned).
    let mut stop = signals::Stop::listen()?;
    let (id, workflow, secrets) = match start {
        Start::Submit(submission) => {
            let workflow = Arc::clone(&submission.workflow);
            let secrets = Arc::clone(&submission.secrets);
            let id = handle
                .submit(submission)
                .await
                .map_err(|e| control::engine_error(e, &watch.location))?;
            if !watch.quiet {
                say!(
                    "wayline: execution {id} of {} started ({})",
                    workflow.name,
                    watch.location.describe()
                );
            }
            (id, workflow, secrets)
        }
        Start::Recover { id, secrets, workflow, force } => {
            match handle.recover(&id, Arc::clone(&secrets), force).await {
                Ok(_) => {}
                Err(wayline_runtime::Error::Store(wayline_store::Error::Held {
                    owner, ..
                })) => {
                    return Err(anyhow::Error::new(crate::cli::Failure {
                        exit: Exit::Invalid,
                        message: format!(
                            "execution {id} was just taken over by {owner}; it is running there"
                        ),
                    }));
                }
                Err(error) => return Err(control::engine_error(error, &watch.location)),
            }
            if !watch.quiet {
                say!("wayline: took over execution {id} of {}", workflow.name);
            }
            // A takeover of a paused execution continues it.
            let paused =
                handle.report(&id).await.is_ok_and(|report| report.status == Status::Paused);
            if paused {
                let control = Control::Resume { actor: control::actor(None) };
                if let Err(error) = handle.control(&id, control).await {
                    say!("wayline: {error}");
                }
            }
            (id, workflow, secrets)
        }
    };
    let clock = Clock::system();
    let terminal = std::io::stderr().is_terminal() && !watch.json && !watch.quiet;
    let interactive = terminal && std::io::stdin().is_terminal();
    let mut progress = Progress::new(terminal, clock.now());
    let mut subscription = handle.subscribe(&id, 0).with_logs(0);
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
                        if let Some(file) = &mut events_file
                            && let Err(message) = file.write(&id, &event)
                        {
                            progress.clear();
                            say!("wayline: {message}");
                        }
                        let execution = follow(&mut fold, &id, &workflow, &secrets, &event)?;
                        if !watch.quiet {
                            progress.event(execution, &event);
                        }
                        if let EventKind::StepEscalated { step, error } = &event.kind
                            && interactive
                        {
                                progress.clear();
                                say!("\nstep `{step}` failed and needs a decision: {}", escape(&error.message));
                                output::message(format_args!("decide: [r]etry, [s]kip, roll[b]ack, [f]ail > "));
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
                        if !terminal && !watch.quiet {
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
                        output::message(format_args!("please answer r, s, b or f > "));
                        let _ = std::io::stderr().flush();
                        None
                    }
                };
                if let Some(decision) = decision {
                    let control = Control::Decide { step, decision, outputs: Default::default(), actor: control::actor(None) };
                    if let Err(error) = handle.control(&id, control).await {
                        say!("wayline: {error}");
                    }
                    asking = None;
                }
            }
            signal = stop.next() => {
                if cancelling {
                    progress.clear();
                    say!("wayline: stopping now ({signal}); execution {id} stays resumable with `wayline resume {id}`");
                    return Ok(Exit::Ended);
                }
                cancelling = true;
                progress.clear();
                say!("wayline: {signal}: cancelling execution {id} (a second Ctrl-C or SIGTERM stops at once)");
                let control = Control::Cancel { actor: control::actor(Some(signal.into())), rollback: false };
                if let Err(error) = handle.control(&id, control).await {
                    say!("wayline: {error}");
                }
            }
        }
    }
    if let Some(execution) = &fold {
        progress.draw(execution, clock.now());
    }
    let report = handle.report(&id).await.map_err(|e| control::engine_error(e, &watch.location))?;
    let exit = if watch.quiet {
        if report.status == Status::Succeeded { Exit::Success } else { Exit::Ended }
    } else {
        finish(handle.store(), &report, watch.json, terminal).await?
    };
    // The write error was reported when it happened; the exit code says it again.
    Ok(if events_file.as_ref().is_some_and(EventsFile::failed) {
        Exit::Infrastructure
    } else {
        exit
    })
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
        // The exit code reports the execution, even to a reader of stdout that left early.
        output::unless_closed(outln!("{}", serde_json::to_string_pretty(report)?))?;
    } else {
        print_summary(store, report, terminal).await;
    }
    Ok(if report.status == Status::Succeeded { Exit::Success } else { Exit::Ended })
}

async fn print_summary<S: Store>(store: &S, report: &Report, terminal: bool) {
    let mut failed = Vec::new();
    say!();
    for step in &report.steps {
        let attempts = if step.attempts > 1 {
            format!(" after {} attempts", step.attempts)
        } else {
            String::new()
        };
        let mut detail = match (&step.error, &step.reason) {
            (Some(error), _) if step.status == StepStatus::Failed => {
                format!(": {}", escape(&error.message))
            }
            (_, Some(reason)) => format!(" ({})", escape(reason)),
            _ => String::new(),
        };
        if let Some(decision) = &step.decision {
            let why =
                decision.reason.as_deref().map(|r| format!(": {}", escape(r))).unwrap_or_default();
            detail.push_str(&format!(
                " (decided {} by {}{why}",
                decision.action,
                escape(&decision.by)
            ));
            match &step.error {
                Some(error) if step.status != StepStatus::Failed => {
                    detail.push_str(&format!("; it had failed: {})", escape(&error.message)))
                }
                _ => detail.push(')'),
            }
        }
        let compensation = step
            .compensation
            .as_ref()
            .map(|c| format!(", compensation {}", c.status))
            .unwrap_or_default();
        say!("  {:<24} {}{attempts}{compensation}{detail}", step.id, step.status);
        if step.status == StepStatus::Failed {
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
                say!("\n  last lines of `{step}`:");
                for line in lines.iter().rev().take(20).rev() {
                    say!("    {}", escape(&line.text));
                }
            }
        }
    }
    let error =
        report.error.as_ref().map(|e| format!(": {}", escape(&e.message))).unwrap_or_default();
    say!("\n{} {} {}{error}", report.workflow, report.id, report.status);
}
