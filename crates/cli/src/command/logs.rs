//! `wayline logs`: the steps' output, escaped on a terminal, followed live with `-f`.

use std::io::IsTerminal as _;
use std::time::Duration;

use wayline_backend::{AnyStore, Location};
use wayline_runtime::inspect;
use wayline_store::Store;

use super::Db;
use crate::error::{Error, Exit, Result};
use crate::output::escape;
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
    pub db: Db,
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
        changes.next(QUIET).await;
    }
}

/// Refuses a step the execution's workflow does not have, instead of printing nothing.
async fn check_step(store: &AnyStore, id: &str, step: &str) -> Result<()> {
    let first = store.events(id, 0, 1).await?;
    let (workflow, _) = inspect::definition(&first)?;
    if workflow.step(step).is_some() {
        return Ok(());
    }
    let ids = workflow.steps.iter().map(|step| step.id.as_str());
    let hint = match wayline_lang::diagnostic::did_you_mean(step, ids) {
        Some(similar) => format!("; did you mean `{similar}`?"),
        None => String::new(),
    };
    Err(Error::invalid(format!("execution {id} has no step `{step}`{hint}")))
}
