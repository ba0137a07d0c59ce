//! `wayline patch`: while an execution is paused (at a breakpoint), change what the steps
//! still to run see — the outputs of a succeeded step, or inputs — recorded with who and why.

use serde_json::{Map, Value};
use wayline_core::execution::Control;
use wayline_lang::inputs::Given;
use wayline_runtime::inspect;

use super::block_on;
use crate::error::{Error, Exit, Result};
use crate::remote::Target;
use crate::request;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  wayline patch 01JD… build --output version=1.4.2     # deploy will read steps.build.outputs.version = \"1.4.2\"
  wayline patch 01JD… --input region=eu-west-1 --reason 'us-east is down'")]
pub struct Args {
    /// Execution id (any unique prefix).
    id: String,
    /// The succeeded step whose outputs change (needed with --output).
    step: Option<String>,
    /// An output of STEP, `key=value` (repeatable); the value is JSON when it parses as JSON.
    #[arg(long = "output", value_name = "KEY=VALUE")]
    outputs: Vec<String>,
    /// An input, `name=value` (repeatable), converted to its declared type.
    #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

pub fn exec(args: Args) -> Result<Exit> {
    if args.outputs.is_empty() && args.inputs.is_empty() {
        return Err(Error::invalid(
            "give what to change: --output KEY=VALUE or --input NAME=VALUE",
        ));
    }
    if !args.outputs.is_empty() && args.step.is_none() {
        return Err(Error::invalid(
            "--output changes the outputs of a step: name it (wayline patch ID STEP --output …)",
        ));
    }
    let outputs = request::parse_outputs(&args.outputs)?;
    let mut given = Vec::new();
    for flag in &args.inputs {
        let Some((name, value)) = flag.split_once('=') else {
            return Err(Error::invalid(format!("`--input {flag}`: write inputs as name=value")));
        };
        given.push((name.to_owned(), Given::Text(value.to_owned())));
    }
    let inputs = if given.is_empty() { Map::new() } else { block_on(typed(&args, given))? };
    let control =
        Control::Patch { step: args.step, outputs, inputs, actor: request::actor(args.reason) };
    request::dispatch(&args.target, &args.id, control)
}

/// The input values converted to their declared types, read off the execution's definition
/// (from the database or the server).
async fn typed(args: &Args, given: Vec<(String, Given)>) -> Result<Map<String, Value>> {
    let execution = match args.target.remote()? {
        Some(remote) => {
            let events = remote.events(&args.id, 0).await?;
            let Some((id, _)) = events.first() else {
                return Err(Error::invalid(format!("no execution `{}`", args.id)));
            };
            let id = id.clone();
            let events: Vec<_> = events.into_iter().map(|(_, event)| event).collect();
            inspect::fold(&id, &events)?
        }
        None => {
            let location = args.target.db.location()?;
            let (store, id) = request::open_execution(&location, &args.id).await?;
            inspect::replay(&store, &id).await?
        }
    };
    let mut changed = inspect::changed_inputs(&execution, given.clone()).map_err(Error::invalid)?;
    // A value equal to the current one is still what the person asked for: keep it on record.
    for (name, _) in given {
        if !changed.contains_key(&name)
            && let Some(value) = execution.inputs().get(&name)
        {
            changed.insert(name, value.clone());
        }
    }
    Ok(changed)
}
