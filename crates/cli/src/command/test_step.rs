//! `wayline test`: run one step of a workflow file in isolation — its upstream outputs taken
//! from a past execution or given here — and print what it did, without recording an
//! execution anywhere. The step runs as it would in a real execution: the same rendering,
//! executor, masking, timeout and retries.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};
use wayline_backend::Location;
use wayline_lang::inputs::{self, Given};
use wayline_runtime::clock::Clock;
use wayline_runtime::submit::{self, Seed};
use wayline_runtime::{Submission, inspect, owner};
use wayline_store::Store;

use super::{Db, block_on};
use crate::error::{Error, Exit, Result};
use crate::follow::{self, Start, Watch};
use crate::{definition, request, secrets};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  wayline test deploy.yaml migrate -o build.version=1.4.2
  wayline test deploy.yaml migrate --from-execution 01JD…   # build's outputs as they were then")]
pub struct Args {
    /// The workflow file.
    file: PathBuf,
    /// The step to run.
    step: String,
    /// Take the upstream outputs (and the inputs) from this past execution (any unique prefix).
    #[arg(long, value_name = "ID")]
    from_execution: Option<String>,
    /// An upstream output, `step.key=value` (repeatable; wins over --from-execution). The value
    /// is JSON when it parses as JSON. Of a fan-out upstream, its items' outputs as one list:
    /// `step=[{"key": 1}, {"key": 2}]`.
    #[arg(short = 'o', long = "output", value_name = "STEP.KEY=VALUE")]
    outputs: Vec<String>,
    /// An input value, `name=value` (repeatable).
    #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    /// Secrets for the step (as for `run`).
    #[arg(long, value_name = "FILE")]
    secrets_file: Option<PathBuf>,
    /// Print the result object as JSON.
    #[arg(long)]
    json: bool,
    /// Where --from-execution is read (nothing is written).
    #[command(flatten)]
    db: Db,
}

pub fn exec(args: Args) -> Result<Exit> {
    let definition::Definition { workflow, source, imports } = definition::load(&args.file)?;
    if workflow.step(&args.step).is_none() {
        return Err(Error::invalid(format!(
            "workflow `{}` has no step `{}`",
            workflow.name, args.step
        )));
    }
    let secrets = Arc::new(secrets::load(args.secrets_file.as_deref())?);
    block_on(async move {
        let mut upstream: BTreeMap<String, Seed> = BTreeMap::new();
        let mut past_inputs = Map::new();
        if let Some(id) = &args.from_execution {
            let location = args.db.location()?;
            let (store, id) = request::open_execution(&location, id).await?;
            let past = inspect::replay(&store, &id).await?;
            for (index, run) in past.steps().iter().enumerate() {
                if run.state == wayline_core::execution::StepState::Succeeded {
                    let name = past.workflow().steps[index].id.clone();
                    let items = run.items.as_ref().map(|items| {
                        let outputs = items.runs.iter().map(|item| {
                            (item.state == wayline_core::execution::StepState::Succeeded)
                                .then(|| item.outputs.clone())
                        });
                        items.values.iter().cloned().zip(outputs).collect()
                    });
                    upstream.insert(name, Seed { outputs: run.outputs.clone(), items });
                }
            }
            past_inputs = past.inputs().as_object().cloned().unwrap_or_default();
        }
        for flag in &args.outputs {
            let (path, value) = flag.split_once('=').ok_or_else(|| {
                Error::invalid(format!("`-o {flag}`: write outputs as step.key=value"))
            })?;
            let value = serde_json::from_str(value).unwrap_or(Value::String(value.to_owned()));
            // `-o step=[{…}, …]`: the outputs of a fan-out's items, in item order.
            if let (None, Value::Array(list)) = (path.split_once('.'), &value) {
                let mut items = Vec::with_capacity(list.len());
                for entry in list {
                    let Value::Object(outputs) = entry else {
                        return Err(Error::invalid(format!(
                            "`-o {flag}`: a fan-out's outputs are a list of objects, one per item"
                        )));
                    };
                    items.push((Value::Null, Some(outputs.clone())));
                }
                upstream.entry(path.to_owned()).or_default().items = Some(items);
                continue;
            }
            let (step, key) = path.split_once('.').ok_or_else(|| {
                Error::invalid(format!(
                    "`-o {flag}`: name the step and the key, step.key=value (or, for a fan-out, step=[{{…}}, …])"
                ))
            })?;
            upstream.entry(step.to_owned()).or_default().outputs.insert(key.to_owned(), value);
        }
        // The past execution's inputs (those the file still declares), then the flags.
        let mut given: Vec<(String, Given)> = past_inputs
            .into_iter()
            .filter(|(name, _)| workflow.input(name).is_some())
            .map(|(name, value)| (name, Given::Json(value)))
            .collect();
        for flag in &args.inputs {
            let (name, value) = flag.split_once('=').ok_or_else(|| {
                Error::invalid(format!("`-i {flag}`: write inputs as name=value"))
            })?;
            given.push((name.to_owned(), Given::Text(value.to_owned())));
        }
        let inputs = inputs::resolve(&workflow, given)
            .map_err(|errors| Error::invalid(errors.join("\n       ")))?;
        let workflow = Arc::new(workflow);
        let submission = Submission {
            workflow: Arc::clone(&workflow),
            source: source.into(),
            imports,
            path: args.file.display().to_string(),
            inputs,
            secrets: Arc::clone(&secrets),
            idempotency_key: None,
            breakpoints: Default::default(),
        };
        let now = Clock::system().now();
        let (new, events) =
            submit::isolated(&submission, &args.step, &upstream, &owner::this_process(), now)?;
        let id = new.id.clone();
        // In memory only: nothing of the test is recorded.
        let store = wayline_backend::open(&Location::Ephemeral).await?;
        // The takeover that follows is part of the set-up too.
        let shown_after = events.len() as u64 + 1;
        let lease = store.create(new, events).await?;
        store.release(lease).await?;
        say!(
            "wayline: testing step `{}` of {} in isolation (nothing is recorded)",
            args.step,
            workflow.name
        );
        let watch = Watch { json: args.json, quiet: false, place: "memory".into(), shown_after };
        let start = Start::Isolated { id: id.clone(), secrets, workflow };
        let exit = follow::execute(store.clone(), start, &watch, None).await?;
        if !args.json {
            // The step's outputs, for a script to read.
            let execution = inspect::replay(&store, &id).await?;
            if let Some(index) = execution.workflow().step(&args.step) {
                let run = &execution.steps()[index];
                // Of a fan-out, its items' outputs in item order.
                let outputs = match &run.items {
                    Some(items) => {
                        items.runs.iter().map(wayline_core::execution::item_outputs).collect()
                    }
                    None => Value::Object(run.outputs.clone()),
                };
                outln!("{}", serde_json::to_string_pretty(&outputs)?)?;
            }
        }
        Ok(exit)
    })
}
