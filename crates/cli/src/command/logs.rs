//! `wayline logs`: the steps' output, escaped on a terminal, followed live with `-f`.

use std::io::IsTerminal as _;
use std::time::Duration;

use wayline_backend::{AnyStore, Location};
use wayline_runtime::inspect;
use wayline_store::Store;

use serde_json::Value;
use wayline_store::LogLine;

use crate::error::{Error, Exit, Result};
use crate::output::escape;
use crate::remote::{Remote, Target};
use crate::request;

/// The longest a follower goes without looking at the store, whatever it is told.
const QUIET: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Execution id (any unique prefix).
    id: String,
    /// Only this step.
    step: Option<String>,
    /// Keep printing new lines until the execution ends.
    #[arg(short, long)]
    follow: bool,
    /// Print the text as the steps wrote it, control characters included (on a terminal
    /// they are otherwise shown as escapes like `\x1b`).
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    pub target: Target,
}

pub async fn exec(args: Args, location: Location) -> Result<Exit> {
    let Args { id, step, follow, raw, .. } = args;
    let step = step.as_deref();
    let (store, id) = request::open_execution(&location, &id).await?;
    if let Some(step) = step {
        check_step(&store, &id, step).await?;
    }
    // A terminal would obey the escape sequences a step printed; a pipe or file gets the text.
    let escaped = !raw && std::io::stdout().is_terminal();
    let mut after = 0;
    // Created before the first read, so that nothing written after it is missed.
    let mut changes = store.changes();
    loop {
        // Whether the execution had ended before this read: then the read saw every line.
        let ended = follow && store.get(&id).await?.status.is_final();
        loop {
            let lines = store.logs(&id, step, after, 1000).await?;
            for line in &lines {
                print(line, escaped)?;
                after = line.line;
            }
            if lines.len() < 1000 {
                break;
            }
        }
        if !follow || ended {
            return Ok(Exit::Success);
        }
        changes.next(QUIET).await;
    }
}

/// `logs --server`: the same, read from the server's log route (polled while following).
pub async fn remote(args: Args, remote: Remote) -> Result<Exit> {
    let Args { id, step, follow, raw, .. } = args;
    let step = step.as_deref();
    let report = remote.report(&id).await?;
    let id = report.get("id").and_then(Value::as_str).unwrap_or(&id).to_owned();
    if let Some(step) = step {
        let steps = report.get("steps").and_then(Value::as_array).cloned().unwrap_or_default();
        let ids: Vec<&str> =
            steps.iter().filter_map(|step| step.get("id").and_then(Value::as_str)).collect();
        if !ids.contains(&step) {
            return Err(no_step(&id, step, ids.into_iter()));
        }
    }
    let escaped = !raw && std::io::stdout().is_terminal();
    let mut after = 0;
    loop {
        let ended = follow && {
            let status = remote.report(&id).await?;
            let status = status.get("status").and_then(Value::as_str).unwrap_or_default();
            wayline_journal::Status::parse(status).is_some_and(|status| status.is_final())
        };
        loop {
            let lines = remote.logs(&id, step, after, 10_000).await?;
            for line in &lines {
                print(line, escaped)?;
                after = line.line;
            }
            if lines.len() < 10_000 {
                break;
            }
        }
        if !follow || ended {
            return Ok(Exit::Success);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print(line: &LogLine, escaped: bool) -> Result<()> {
    let attempt = if line.kind == wayline_journal::AttemptKind::Compensation {
        format!("undo#{}", line.attempt)
    } else {
        format!("#{}", line.attempt)
    };
    let text = if escaped { escape(&line.text) } else { line.text.as_str().into() };
    outln!("{}{attempt} | {text}", line.source())
}

/// Refuses a step the execution's workflow does not have, instead of printing nothing.
async fn check_step(store: &AnyStore, id: &str, step: &str) -> Result<()> {
    let first = store.events(id, 0, 1).await?;
    let (workflow, _) = inspect::definition(&first)?;
    if workflow.step(step).is_some() {
        return Ok(());
    }
    Err(no_step(id, step, workflow.steps.iter().map(|step| step.id.as_str())))
}

fn no_step<'a>(id: &str, step: &str, ids: impl Iterator<Item = &'a str>) -> Error {
    let hint = match wayline_lang::diagnostic::did_you_mean(step, ids) {
        Some(similar) => format!("; did you mean `{similar}`?"),
        None => String::new(),
    };
    Error::invalid(format!("execution {id} has no step `{step}`{hint}"))
}
