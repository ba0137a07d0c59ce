//! Running an execution in this process, for `run` and `resume`: the engine and the view a
//! person (or a script) gets of it side by side — live progress, the escalation prompt, stop
//! signals — until the execution ends, then the summary or the result object and the exit
//! code.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;
use tokio_util::sync::CancellationToken;
use wayline_backend::AnyStore;
use wayline_core::execution::{Control, Execution, Secrets};
use wayline_core::report::Report;
use wayline_journal::{Decision, Event, EventKind, Status, StepStatus, Time};
use wayline_lang::Workflow;
use wayline_runtime::clock::Clock;
use wayline_runtime::{Engine, EngineHandle, Item, Options, Requests, Rerun, Submission};
use wayline_store::Store;

use crate::error::{Error, Exit, Result};
use crate::output::{self, EventsFile, escape};
use crate::progress::Progress;
use crate::{request, signals};

/// How the watched execution comes to be.
pub enum Start {
    Submit(Submission),
    /// Take over an execution whose owner is gone.
    Recover {
        id: String,
        secrets: Arc<Secrets>,
        workflow: Arc<Workflow>,
        /// Take it over even from a live owner on this host.
        force: bool,
    },
    /// Run the one step left in a journal made by `wayline test`.
    Isolated {
        id: String,
        secrets: Arc<Secrets>,
        workflow: Arc<Workflow>,
    },
    /// Rerun a finished execution in place.
    Rerun {
        id: String,
        rerun: Rerun,
        secrets: Arc<Secrets>,
        workflow: Arc<Workflow>,
    },
}

/// How an engine of this process runs on `store`: it listens for control requests from other
/// processes when they can reach the store.
pub fn engine_options(store: &AnyStore) -> Options {
    Options {
        requests: if store.is_shared() {
            Requests::Wakeups { at_most_every: Duration::from_millis(50) }
        } else {
            Requests::Off
        },
        ..Options::default()
    }
}

/// Applies the automatic retention (`WAYLINE_RETENTION`, default 30d, `off` to keep
/// everything): finished executions older than that are deleted.
pub async fn retention<S: Store>(store: &S) {
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

/// How a command that drives an execution it did not start (`resume`, `rerun`) shows it.
#[derive(Debug, clap::Args)]
pub struct View {
    /// Secrets for the steps still to run (as for `run`).
    #[arg(long, value_name = "FILE")]
    pub secrets_file: Option<std::path::PathBuf>,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write every event from now on as CloudEvents JSON lines.
    #[arg(long, value_name = "FILE")]
    pub events: Option<std::path::PathBuf>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// How the user-facing loop shows the execution.
pub struct Watch {
    pub json: bool,
    pub quiet: bool,
    /// Where the execution is kept, as the start message names it (a database, a server).
    pub place: String,
    /// Events up to this sequence number are history (a rerun's earlier run): folded, not
    /// shown or written to the events file.
    pub shown_after: u64,
}

/// Runs the engine and the user-facing loop side by side until the execution ends.
pub async fn execute(
    store: AnyStore,
    start: Start,
    watch: &Watch,
    events: Option<EventsFile>,
) -> Result<Exit> {
    let shutdown = CancellationToken::new();
    let options = engine_options(&store);
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
    engine_result?;
    Ok(exit)
}

async fn follow_execution(
    handle: &EngineHandle<AnyStore>,
    start: Start,
    watch: &Watch,
    events_file: Option<EventsFile>,
) -> Result<Exit> {
    // Before anything is started, so that no stop signal finds the default action (the end
    // of this process, leaving the execution `running` and its steps orphaned).
    let stop = signals::Stop::listen()?;
    let mut logs_after = 0;
    let (id, workflow, secrets) = match start {
        Start::Submit(submission) => {
            let workflow = Arc::clone(&submission.workflow);
            let secrets = Arc::clone(&submission.secrets);
            let id = handle.submit(submission).await?;
            if !watch.quiet {
                say!("wayline: execution {id} of {} started ({})", workflow.name, watch.place);
            }
            (id, workflow, secrets)
        }
        Start::Recover { id, secrets, workflow, force } => {
            match handle.recover(&id, Arc::clone(&secrets), force).await {
                Ok(_) => {}
                Err(wayline_runtime::Error::Store(wayline_store::Error::Held {
                    owner, ..
                })) => {
                    return Err(Error::invalid(format!(
                        "execution {id} was just taken over by {owner}; it is running there"
                    )));
                }
                Err(error) => return Err(error.into()),
            }
            if !watch.quiet {
                say!("wayline: took over execution {id} of {}", workflow.name);
            }
            // A takeover of a paused execution continues it.
            let paused =
                handle.report(&id).await.is_ok_and(|report| report.status == Status::Paused);
            if paused {
                let control = Control::Resume { actor: request::actor(None) };
                if let Err(error) = handle.control(&id, control).await {
                    say!("wayline: {error}");
                }
            }
            (id, workflow, secrets)
        }
        Start::Isolated { id, secrets, workflow } => {
            handle.recover(&id, Arc::clone(&secrets), false).await?;
            (id, workflow, secrets)
        }
        Start::Rerun { id, rerun, secrets, workflow } => {
            // The earlier run's log lines are history, as its events are.
            while let Ok(lines) = handle.store().logs(&id, None, logs_after, 10_000).await
                && let Some(last) = lines.last()
            {
                logs_after = last.line;
            }
            handle.rerun(&id, rerun, Arc::clone(&secrets)).await?;
            if !watch.quiet {
                say!("wayline: execution {id} of {} runs again ({})", workflow.name, watch.place);
            }
            (id, workflow, secrets)
        }
    };
    let subscription = handle.subscribe(&id, 0).with_logs(logs_after);
    let mut runner = Local { handle, id: id.clone(), subscription };
    watch_execution(&mut runner, stop, &id, &workflow, &secrets, watch, events_file).await
}

/// Where a watched execution runs: the engine of this process, or a server
/// ([`crate::remote`]). The user's view of it is the same either way.
pub trait Runner {
    /// The next event or log line; `None` once the execution has ended.
    async fn next(&mut self) -> Result<Option<Item>>;
    /// Steers the execution.
    async fn control(&mut self, control: Control) -> Result<()>;
    /// The result object, once the execution has ended (`fold` is the watcher's own state).
    async fn report(&mut self, fold: Option<&Execution>) -> Result<Report>;
    /// The log of one step, for the summary of a failed step.
    async fn logs(&mut self, step: &str) -> Vec<String>;
    /// What a second stop signal leaves behind, in words.
    fn left_behind(&self) -> String;
}

/// An execution run by this process's engine.
struct Local<'a> {
    handle: &'a EngineHandle<AnyStore>,
    id: String,
    subscription: wayline_runtime::Subscription<AnyStore>,
}

impl Runner for Local<'_> {
    async fn next(&mut self) -> Result<Option<Item>> {
        Ok(self.subscription.next().await?)
    }

    async fn control(&mut self, control: Control) -> Result<()> {
        Ok(self.handle.control(&self.id, control).await?)
    }

    async fn report(&mut self, _fold: Option<&Execution>) -> Result<Report> {
        Ok(self.handle.report(&self.id).await?)
    }

    async fn logs(&mut self, step: &str) -> Vec<String> {
        let lines = self.handle.store().logs(&self.id, Some(step), 0, 100_000).await;
        lines.unwrap_or_default().into_iter().map(|line| line.text).collect()
    }

    fn left_behind(&self) -> String {
        format!("execution {} stays resumable with `wayline resume {}`", self.id, self.id)
    }
}

/// The user's view of a running execution: live progress (a table on a terminal, log lines
/// elsewhere), the escalation prompt, stop signals; then the summary or the result object and
/// the exit code.
pub async fn watch_execution(
    runner: &mut impl Runner,
    mut stop: signals::Stop,
    id: &str,
    workflow: &Arc<Workflow>,
    secrets: &Arc<Secrets>,
    watch: &Watch,
    mut events_file: Option<EventsFile>,
) -> Result<Exit> {
    let id = id.to_owned();
    let clock = Clock::system();
    let terminal = std::io::stderr().is_terminal() && !watch.json && !watch.quiet;
    let interactive = terminal && std::io::stdin().is_terminal();
    let mut progress = Progress::new(terminal, clock.now());
    let mut fold: Option<Execution> = None;
    let mut redraw = tokio::time::interval(Duration::from_millis(200));
    let mut cancelling = false;
    let mut answers = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut asking: Option<String> = None;
    loop {
        tokio::select! {
            item = runner.next() => {
                let Some(item) = item? else { break };
                match item {
                    Item::Event(event) => {
                        let history = event.seq <= watch.shown_after;
                        if !history
                            && let Some(file) = &mut events_file
                            && let Err(message) = file.write(&id, &event)
                        {
                            progress.clear();
                            say!("wayline: {message}");
                        }
                        let execution = follow(&mut fold, &id, workflow, secrets, &event)?;
                        if !watch.quiet && !history {
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
                            progress.log(&line.source(), &line.text);
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
                    let control = Control::Decide { step, decision, outputs: Default::default(), actor: request::actor(None) };
                    if let Err(error) = runner.control(control).await {
                        say!("wayline: {error}");
                    }
                    asking = None;
                }
            }
            signal = stop.next() => {
                if cancelling {
                    progress.clear();
                    say!("wayline: stopping now ({signal}); {}", runner.left_behind());
                    return Ok(Exit::Ended);
                }
                cancelling = true;
                progress.clear();
                say!("wayline: {signal}: cancelling execution {id} (a second Ctrl-C or SIGTERM stops at once)");
                let control = Control::Cancel { actor: request::actor(Some(signal.into())), rollback: false };
                if let Err(error) = runner.control(control).await {
                    say!("wayline: {error}");
                }
            }
        }
    }
    if let Some(execution) = &fold {
        progress.draw(execution, clock.now());
    }
    let report = runner.report(fold.as_ref()).await?;
    let exit = if watch.quiet {
        exit_of(&report)
    } else {
        finish(runner, &report, watch.json, terminal).await?
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
) -> Result<&'a Execution> {
    match fold {
        Some(execution) => {
            execution.apply(event).map_err(|error| {
                Error::infrastructure(format!("the journal of {id} does not fold: {error}"))
            })?;
        }
        None => {
            let execution = Execution::replay(
                id.to_owned(),
                Arc::clone(workflow),
                Arc::clone(secrets),
                std::slice::from_ref(event),
            )
            .map_err(|error| {
                Error::infrastructure(format!("the journal of {id} does not start well: {error}"))
            })?;
            *fold = Some(execution);
        }
    }
    fold.as_ref().ok_or_else(|| Error::infrastructure("no execution state"))
}

/// Prints the result and picks the exit code.
pub async fn finish(
    runner: &mut impl Runner,
    report: &Report,
    json: bool,
    terminal: bool,
) -> Result<Exit> {
    if json {
        // The exit code reports the execution, even to a reader of stdout that left early.
        output::unless_closed(outln!("{}", serde_json::to_string_pretty(report)?))?;
    } else {
        print_summary(runner, report, terminal).await;
    }
    Ok(exit_of(report))
}

async fn print_summary(runner: &mut impl Runner, report: &Report, terminal: bool) {
    let mut failed = Vec::new();
    say!();
    for step in &report.steps {
        let attempts = if !step.items.is_empty() {
            // A fan-out: how its items ended, e.g. `, 4 items: 3 succeeded, 1 failed`.
            format!(", {} items: {}", step.items.len(), step.item_counts())
        } else if step.attempts > 1 {
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
            let lines = runner.logs(&step).await;
            if lines.is_empty() {
                continue;
            }
            say!("\n  last lines of `{step}`:");
            for line in lines.iter().rev().take(20).rev() {
                say!("    {}", escape(line));
            }
        }
    }
    if !report.outputs.is_empty() {
        say!();
        for (name, value) in &report.outputs {
            say!("  output {name} = {}", escape(&value.to_string()));
        }
    }
    let error =
        report.error.as_ref().map(|e| format!(": {}", escape(&e.message))).unwrap_or_default();
    say!("\n{} {} {}{error}", report.workflow, report.id, report.status);
}

/// The exit code of an execution that ended with `report`: 0 when it succeeded, 1 otherwise.
pub fn exit_of(report: &Report) -> Exit {
    if report.status == Status::Succeeded { Exit::Success } else { Exit::Ended }
}
