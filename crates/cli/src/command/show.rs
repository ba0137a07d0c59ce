//! `wayline show`: an execution's status, steps, attempts, errors, decisions, and why waiting
//! steps wait.

use std::fmt::Write as _;

use serde_json::Value;
use wayline_backend::Location;
use wayline_core::execution::Execution;
use wayline_core::report::{ItemReport, Report, StepReport};
use wayline_journal::StepStatus;
use wayline_runtime::{inspect, owner};
use wayline_store::Store;

use crate::error::{Exit, Result};
use crate::remote::{Remote, Target};
use crate::request;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Execution id (any unique prefix).
    id: String,
    /// Print the result object as JSON.
    #[arg(long)]
    json: bool,
    /// Show the execution as it was right after event SEQ (`wayline events ID` numbers them):
    /// statuses, attempts and waiting reasons then.
    #[arg(long, value_name = "SEQ")]
    at: Option<u64>,
    #[command(flatten)]
    pub target: Target,
}

pub async fn exec(args: Args, location: Location) -> Result<Exit> {
    let (store, id) = request::open_execution(&location, &args.id).await?;
    let json = args.json;
    let record = store.get(&id).await?;
    let events = inspect::all_events(&store, &id).await?;
    let execution = match args.at {
        Some(at) => inspect::fold_at(&id, &events, at)?,
        None => inspect::fold(&id, &events)?,
    };
    let report = Report::new(&execution);
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(Exit::Success);
    }
    // Then, the owner of now means nothing.
    let owner = if args.at.is_some() { None } else { record.owner.as_deref() };
    out!("{}", render_report(&report, &execution, owner, at_of(&events, args.at)))?;
    Ok(Exit::Success)
}

/// `as of event SEQ (TIME)`, for `--at`.
fn at_of(events: &[wayline_journal::Event], at: Option<u64>) -> Option<String> {
    let event = events.get(at? as usize - 1)?;
    Some(format!("as of event {} ({})", event.seq, event.time.rfc3339()))
}

/// `show --server`: the server's result object with `--json`; otherwise its events, folded
/// here as the engine folds them, and shown as from a database.
pub async fn remote(args: Args, remote: Remote) -> Result<Exit> {
    if args.json {
        let report = match args.at {
            Some(at) => {
                let path = format!("{}?at={at}", crate::remote::execution_path(&args.id)?);
                remote.get(&path).await?
            }
            None => remote.report(&args.id).await?,
        };
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(Exit::Success);
    }
    let events = remote.events(&args.id, 0).await?;
    let Some((id, _)) = events.first() else {
        return Err(crate::error::Error::invalid(format!("no execution `{}`", args.id)));
    };
    let id = id.clone();
    let events: Vec<_> = events.into_iter().map(|(_, event)| event).collect();
    let execution = match args.at {
        Some(at) => inspect::fold_at(&id, &events, at)?,
        None => inspect::fold(&id, &events)?,
    };
    let at = at_of(&events, args.at);
    out!("{}", render_report(&Report::new(&execution), &execution, None, at))?;
    Ok(Exit::Success)
}

fn render_report(
    report: &Report,
    execution: &Execution,
    owner: Option<&str>,
    at: Option<String>,
) -> String {
    let mut out = String::new();
    let _ = write!(out, "{} {}  {}", report.workflow, report.id, report.status);
    match at {
        Some(at) => {
            let _ = writeln!(out, "  {at}");
        }
        None => out.push('\n'),
    }
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
    for (name, value) in &report.outputs {
        let _ = writeln!(out, "  output     {name} = {value}");
    }
    if let Some(paused) = &report.paused {
        let why = paused.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
        let until = paused.until.as_deref().map(|u| format!(" until {u}")).unwrap_or_default();
        let _ = writeln!(out, "  paused     by {}{until}{why}", paused.by);
    }
    let width = report.steps.iter().map(|s| s.id.len()).max().unwrap_or(4);
    out.push('\n');
    for step in &report.steps {
        let attempts =
            if step.attempts > 1 { format!("  {} attempts", step.attempts) } else { String::new() };
        let _ = write!(out, "  {:<width$}  {:<12}{attempts}", step.id, step.status);
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
        if let Some(patched) = &step.patched {
            let why = patched.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            let _ = writeln!(out, "  {:<width$}    outputs patched by {}{why}", "", patched.by);
        }
        if let Some(compensation) = &step.compensation {
            let _ = writeln!(out, "  {:<width$}    compensation: {}", "", compensation.status);
        }
        let has_outputs = match &step.outputs {
            Value::Object(outputs) => !outputs.is_empty(),
            _ => !step.items.is_empty(),
        };
        if has_outputs {
            let text: String = step.outputs.to_string().chars().take(200).collect();
            let _ = writeln!(out, "  {:<width$}    outputs: {text}", "");
        }
        if !step.items.is_empty() {
            items(&mut out, step, width);
        }
    }
    out
}

/// Most items shown one per line under a fan-out step; the rest are counted.
const ITEMS_SHOWN: usize = 10;

/// A fan-out step's items: counts by status, then the items that did not succeed (those are
/// what a reader looks for), each with its error or reason.
fn items(out: &mut String, step: &StepReport, width: usize) {
    let _ = writeln!(out, "  {:<width$}    items: {}", "", step.item_counts());
    let unusual: Vec<&ItemReport> =
        step.items.iter().filter(|item| item.status != StepStatus::Succeeded).collect();
    for item in unusual.iter().take(ITEMS_SHOWN) {
        let value: String = item.item.to_string().chars().take(60).collect();
        let _ = write!(out, "  {:<width$}      [{}] {value}  {}", "", item.index, item.status);
        if let Some(error) = &item.error {
            let _ = write!(out, ": {} ({})", error.message, error.class);
        }
        if let Some(reason) = &item.reason {
            let _ = write!(out, " ({reason})");
        }
        out.push('\n');
    }
    if unusual.len() > ITEMS_SHOWN {
        let _ = writeln!(out, "  {:<width$}      … {} more", "", unusual.len() - ITEMS_SHOWN);
    }
}
