//! Commands that work on executions in the database, from any process: list, show, logs,
//! events, pause, resume, cancel, decide, gc.
//!
//! Control requests are written to the store; the process that owns the execution turns each
//! into a journal event. These commands wait until that event is in the journal, so when they
//! return, the request has taken effect.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::Duration;

use serde_json::{Map, Value};
use wayline_core::Input;
use wayline_core::execution::{Control, Execution};
use wayline_core::report::Report;
use wayline_journal::Decision;
use wayline_journal::Status;
use wayline_journal::Time;
use wayline_journal::cloudevents;
use wayline_journal::{Actor, EventKind};
use wayline_runtime::clock::Clock;
use wayline_runtime::{Item, Subscription, inspect, owner};
use wayline_store::{Action, Filter, Request, Store};

use crate::backend::{self, AnyStore, Location};
use crate::cli::{Exit, Failure, invalid};
use crate::output::escape;

/// Opens the store and resolves an id prefix.
pub async fn open_execution(location: &Location, id: &str) -> anyhow::Result<(AnyStore, String)> {
    let store = backend::open(location).await?;
    let full = store.resolve(id).await.map_err(|error| backend::store_error(error, location))?;
    Ok((store, full))
}

pub fn engine_error(error: wayline_runtime::Error, location: &Location) -> anyhow::Error {
    match error {
        wayline_runtime::Error::Store(error) => backend::store_error(error, location),
        other => crate::engine_error(other),
    }
}

pub fn actor(reason: Option<String>) -> Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    Actor { by: format!("{user}@{} (cli)", owner::hostname()), reason }
}

// ----- list -----

pub struct ListArgs {
    pub status: Vec<String>,
    pub workflow: Option<String>,
    pub since: Option<String>,
    pub limit: usize,
    pub json: bool,
}

pub async fn list(location: &Location, args: ListArgs) -> anyhow::Result<Exit> {
    let mut filter =
        Filter { workflow: args.workflow, limit: Some(args.limit), ..Filter::default() };
    for status in &args.status {
        let parsed = Status::parse(status).ok_or_else(|| {
            invalid(format!(
                "unknown status `{status}`; use pending, running, paused, escalated, succeeded, failed, cancelled or rolled_back"
            ))
        })?;
        filter.status.push(parsed);
    }
    let now = Clock::system().now();
    if let Some(since) = &args.since {
        filter.since = Some(parse_since(since, now)?);
    }
    let store = backend::open(location).await?;
    let records =
        store.list(filter).await.map_err(|error| backend::store_error(error, location))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&records)?)?;
        return Ok(Exit::Success);
    }
    if records.is_empty() {
        say!("no executions in {}", location.describe());
        return Ok(Exit::Success);
    }
    outln!(
        "{:<26}  {:<20}  {:<11}  {:<20}  {:>9}",
        "ID",
        "WORKFLOW",
        "STATUS",
        "CREATED",
        "DURATION"
    )?;
    for record in records {
        let duration = match (record.started_at, record.finished_at) {
            (Some(start), Some(end)) => short(end.since(start)),
            (Some(start), None) => short(now.since(start)),
            _ => "-".into(),
        };
        let created = record.created_at.rfc3339();
        outln!(
            "{:<26}  {:<20}  {:<11}  {:<20}  {:>9}",
            record.id,
            record.workflow,
            record.status.name(),
            &created[..19.min(created.len())],
            duration
        )?;
    }
    Ok(Exit::Success)
}

/// `7d`, `2h` (that long ago) or an RFC 3339 time.
fn parse_since(text: &str, now: Time) -> anyhow::Result<Time> {
    if let Ok(duration) = wayline_journal::duration::parse(text) {
        return Ok(Time::from_micros(now.as_micros() - duration.as_micros() as i64));
    }
    Time::parse(text).map_err(|_| {
        invalid(format!("`{text}` is neither a duration (like 2h, 7d) nor an RFC 3339 time"))
    })
}

fn short(duration: Duration) -> String {
    let rounded = if duration >= Duration::from_secs(60) {
        Duration::from_secs(duration.as_secs())
    } else {
        Duration::from_millis(duration.as_millis() as u64 / 100 * 100)
    };
    wayline_journal::duration::format(rounded)
}

// ----- show -----

pub async fn show(location: &Location, id: &str, json: bool) -> anyhow::Result<Exit> {
    let (store, id) = open_execution(location, id).await?;
    let record = store.get(&id).await.map_err(|error| backend::store_error(error, location))?;
    let execution =
        inspect::replay(&store, &id).await.map_err(|error| engine_error(error, location))?;
    let report = Report::new(&execution);
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(Exit::Success);
    }
    out!("{}", render_report(&report, &execution, record.owner.as_deref()))?;
    Ok(Exit::Success)
}

fn render_report(report: &Report, execution: &Execution, owner: Option<&str>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} {}  {}", report.workflow, report.id, report.status);
    let _ = writeln!(out, "  file       {}", execution.path());
    if let Some(started) = &report.started_at {
        let _ = writeln!(out, "  started    {started}");
    }
    if let Some(finished) = &report.finished_at {
        let _ = writeln!(out, "  finished   {finished}");
    }
    if let (None, Some(owner)) = (&report.finished_at, owner) {
        let state = if owner::is_dead(owner) { " (gone: `wayline resume` takes over)" } else { "" };
        let _ = writeln!(out, "  owner      {owner}{state}");
    }
    if let Some(Value::Object(inputs)) = Some(&report.inputs) {
        for (name, value) in inputs {
            let _ = writeln!(out, "  input      {name} = {value}");
        }
    }
    if let Some(error) = &report.error {
        let _ = writeln!(out, "  error      {} ({})", error.message, error.class);
    }
    let width = report.steps.iter().map(|s| s.id.len()).max().unwrap_or(4);
    out.push('\n');
    for step in &report.steps {
        let attempts =
            if step.attempts > 1 { format!("  {} attempts", step.attempts) } else { String::new() };
        let _ = write!(out, "  {:<width$}  {:<12}{attempts}", step.id, step.status.name());
        if let Some(waiting) = &step.waiting {
            let _ = write!(out, "  ({waiting})");
        }
        if let Some(reason) = &step.reason {
            let _ = write!(out, "  ({reason})");
        }
        out.push('\n');
        if let Some(error) = &step.error {
            let _ = writeln!(out, "  {:<width$}    error: {} ({})", "", error.message, error.class);
        }
        if let Some(decision) = &step.decision {
            let why = decision.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<width$}    decision: {} by {}{why}",
                "", decision.action, decision.by
            );
        }
        if let Some(compensation) = &step.compensation {
            let _ = writeln!(out, "  {:<width$}    compensation: {}", "", compensation.status);
        }
        if !step.outputs.is_empty() {
            let text = Value::Object(step.outputs.clone()).to_string();
            let text: String = text.chars().take(200).collect();
            let _ = writeln!(out, "  {:<width$}    outputs: {text}", "");
        }
    }
    out
}

// ----- logs and events -----

pub async fn logs(
    location: &Location,
    id: &str,
    step: Option<&str>,
    follow: bool,
    raw: bool,
) -> anyhow::Result<Exit> {
    let (store, id) = open_execution(location, id).await?;
    if let Some(step) = step {
        check_step(&store, &id, step, location).await?;
    }
    // A terminal would obey the escape sequences a step printed; a pipe or file gets the text.
    let escaped = !raw && std::io::stdout().is_terminal();
    let mut after = 0;
    loop {
        // Whether the execution had ended before this read: then the read saw every line.
        let ended = follow
            && store
                .get(&id)
                .await
                .map_err(|error| backend::store_error(error, location))?
                .status
                .is_final();
        loop {
            let lines = store
                .logs(&id, step, after, 1000)
                .await
                .map_err(|error| backend::store_error(error, location))?;
            for line in &lines {
                let attempt = if line.kind == wayline_journal::AttemptKind::Compensation {
                    format!("undo#{}", line.attempt)
                } else {
                    format!("#{}", line.attempt)
                };
                let text = if escaped { escape(&line.text) } else { line.text.as_str().into() };
                outln!("{}{attempt} | {text}", line.step)?;
                after = line.line;
            }
            if lines.len() < 1000 {
                break;
            }
        }
        if !follow || ended {
            return Ok(Exit::Success);
        }
        store.changed(Duration::from_millis(500)).await;
    }
}

/// Refuses a step the execution's workflow does not have, instead of printing nothing.
async fn check_step(
    store: &AnyStore,
    id: &str,
    step: &str,
    location: &Location,
) -> anyhow::Result<()> {
    let first =
        store.events(id, 0, 1).await.map_err(|error| backend::store_error(error, location))?;
    let (workflow, _) =
        inspect::definition(&first).map_err(|error| engine_error(error, location))?;
    if workflow.step(step).is_some() {
        return Ok(());
    }
    let ids = workflow.steps.iter().map(|step| step.id.as_str());
    let hint = match wayline_lang::diagnostic::did_you_mean(step, ids) {
        Some(similar) => format!("; did you mean `{similar}`?"),
        None => String::new(),
    };
    Err(invalid(format!("execution {id} has no step `{step}`{hint}")))
}

pub async fn events(
    location: &Location,
    id: &str,
    after: u64,
    follow: bool,
) -> anyhow::Result<Exit> {
    let (store, id) = open_execution(location, id).await?;
    if !follow {
        let events = inspect::all_events(&store, &id)
            .await
            .map_err(|error| engine_error(error, location))?;
        for event in events.iter().filter(|event| event.seq > after) {
            outln!("{}", cloudevents::to_json(&id, event))?;
        }
        return Ok(Exit::Success);
    }
    let mut subscription = Subscription::follow(store, &id, after);
    while let Some(item) =
        subscription.next().await.map_err(|error| engine_error(error, location))?
    {
        if let Item::Event(event) = item {
            outln!("{}", cloudevents::to_json(&id, &event))?;
        }
    }
    Ok(Exit::Success)
}

// ----- control -----

/// A control request from the command line.
pub enum Ask {
    Pause { until: Option<String> },
    Resume,
    Cancel { rollback: bool },
    Decide { step: String, decision: String, outputs: Vec<String> },
}

/// Sends a control request to the process that owns the execution and waits until the
/// journal shows its effect.
pub async fn control(
    location: &Location,
    id: &str,
    ask: Ask,
    reason: Option<String>,
    wait: Duration,
) -> anyhow::Result<Exit> {
    let (store, id) = open_execution(location, id).await?;
    let clock = Clock::system();
    let now = clock.now();
    let actor = actor(reason.clone());
    let (action, control) = match ask {
        Ask::Pause { until } => {
            let until = match until {
                Some(text) => Some(parse_until(&text, now)?),
                None => None,
            };
            (Action::Pause { until }, Control::Pause { actor: actor.clone(), until })
        }
        Ask::Resume => (Action::Resume, Control::Resume { actor: actor.clone() }),
        Ask::Cancel { rollback } => {
            (Action::Cancel { rollback }, Control::Cancel { actor: actor.clone(), rollback })
        }
        Ask::Decide { step, decision, outputs } => {
            let parsed = Decision::parse(&decision).ok_or_else(|| {
                invalid(format!(
                    "`{decision}` is not a decision; use retry, skip, rollback or fail"
                ))
            })?;
            let outputs = parse_outputs(&outputs)?;
            (
                Action::Decide {
                    step: step.clone(),
                    decision: decision.clone(),
                    outputs: outputs.clone(),
                },
                Control::Decide { step, decision: parsed, outputs, actor: actor.clone() },
            )
        }
    };
    // Check the request against the journal as it is, so a request that cannot apply is
    // refused here with the reason instead of silently doing nothing.
    let mut execution =
        inspect::replay(&store, &id).await.map_err(|error| engine_error(error, location))?;
    let seq = execution.seq();
    execution.handle(Input::Control(control), now).map_err(|rejected| {
        anyhow::Error::new(Failure { exit: Exit::Invalid, message: rejected.to_string() })
    })?;
    let record = store.get(&id).await.map_err(|error| backend::store_error(error, location))?;
    let request = Request { action, by: actor.by.clone(), reason };
    store
        .request(&id, request, now)
        .await
        .map_err(|error| backend::store_error(error, location))?;
    let orphaned = match &record.owner {
        None => true,
        Some(owner) => owner::is_dead(owner) || record.lease_until.is_some_and(|until| until < now),
    };
    if orphaned {
        say!(
            "wayline: no live process runs execution {id}; the request is recorded and takes effect when it is resumed (wayline resume {id})"
        );
        return Ok(Exit::Success);
    }
    // Wait for the owner to commit the event that carries out the request.
    let mut subscription = Subscription::follow(store, &id, seq);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, subscription.next()).await else {
            say!(
                "wayline: the request is recorded, but the owning process has not acted on it within {}s",
                wait.as_secs()
            );
            return Ok(Exit::Infrastructure);
        };
        // `None`: the execution ended, which settles any request.
        let Some(item) = next.map_err(|error| engine_error(error, location))? else {
            return Ok(Exit::Success);
        };
        let Item::Event(event) = item else { continue };
        let by_us = |a: &Actor| a.by == actor.by;
        let summary = match &event.kind {
            EventKind::Paused { actor: a, until: Some(until) } if by_us(a) => {
                format!("paused until {}", until.rfc3339())
            }
            EventKind::Paused { actor: a, .. } if by_us(a) => "paused".to_owned(),
            EventKind::Resumed { actor: a } if by_us(a) => "resumed".to_owned(),
            EventKind::Stopping { actor: Some(a), rollback, .. } if by_us(a) => {
                if *rollback {
                    "cancelling and rolling back".to_owned()
                } else {
                    "cancelling".to_owned()
                }
            }
            EventKind::Decided { actor: a, step, decision, .. } if by_us(a) => {
                format!("decided {decision} for {step}")
            }
            EventKind::Finished { outcome, .. } => outcome.name().to_owned(),
            _ => continue,
        };
        say!("wayline: execution {id} {summary}");
        return Ok(Exit::Success);
    }
}

/// `--until`: an RFC 3339 time, or a duration from now (`30m`).
fn parse_until(text: &str, now: Time) -> anyhow::Result<Time> {
    if let Ok(duration) = wayline_journal::duration::parse(text) {
        return Ok(now.after(duration));
    }
    Time::parse(text).map_err(|_| {
        invalid(format!("`--until {text}`: give an RFC 3339 time or a duration like 30m"))
    })
}

/// `--output key=value`: the value is JSON when it parses as JSON, else a string.
fn parse_outputs(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid(format!("`--output {pair}`: write outputs as key=value")));
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

// ----- gc -----

pub async fn gc(location: &Location, older_than: &str) -> anyhow::Result<Exit> {
    let age = wayline_journal::duration::parse(older_than)
        .map_err(|error| invalid(format!("--older-than: {error}")))?;
    let store = backend::open(location).await?;
    let before = Time::from_micros(Clock::system().now().as_micros() - age.as_micros() as i64);
    let removed = store.gc(before).await.map_err(|error| backend::store_error(error, location))?;
    say!(
        "wayline: removed {removed} finished execution{} older than {older_than}",
        if removed == 1 { "" } else { "s" }
    );
    Ok(Exit::Success)
}
