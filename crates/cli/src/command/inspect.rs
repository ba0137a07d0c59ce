//! `wayline inspect`: what a step will do when it next starts — the rendered command, its
//! environment and working directory, or the full HTTP request — with secrets masked, and the
//! upstream outputs and inputs it reads. Made for a breakpoint; works at any time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use wayline_core::execution::{Execution, Secrets};
use wayline_runtime::{inspect, render};

use super::block_on;
use crate::error::{Exit, Result};
use crate::remote::{Target, execution_path, segment};
use crate::{request, secrets};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Execution id (any unique prefix).
    id: String,
    /// The step, or one item of a fan-out step (`deploy[3]`; a fan-out step alone shows its
    /// first item).
    step: String,
    /// The secrets it will run with (as for `run`); missing ones are shown masked all the same.
    #[arg(long, value_name = "FILE")]
    secrets_file: Option<PathBuf>,
    /// Print it as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

pub fn exec(args: Args) -> Result<Exit> {
    let inspection = block_on(inspection(&args))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&inspection)?)?;
    } else {
        out!("{}", render_text(&inspection))?;
    }
    Ok(Exit::Success)
}

async fn inspection(args: &Args) -> Result<Value> {
    if let Some(remote) = args.target.remote()? {
        let path = format!("{}/steps/{}/inspect", execution_path(&args.id)?, segment(&args.step));
        return remote.get(&path).await;
    }
    let location = args.target.db.location()?;
    let (store, id) = request::open_execution(&location, &args.id).await?;
    let events = inspect::all_events(&store, &id).await?;
    let (workflow, _) = inspect::definition(&events)?;
    // A secret this process does not have gets a stand-in: it is masked like the real one.
    let given = secrets::load(args.secrets_file.as_deref())?;
    let mut values: BTreeMap<String, String> = given
        .names()
        .map(|name| (name.to_owned(), given.get(name).unwrap_or_default().to_owned()))
        .collect();
    for name in render::secret_names(&workflow) {
        values.entry(name.clone()).or_insert_with(|| format!("<secret {name}>"));
    }
    let execution =
        Execution::replay(id.clone(), Arc::new(workflow), Arc::new(Secrets::new(values)), &events)
            .map_err(|error| {
                crate::error::Error::infrastructure(format!("execution {id}: {error}"))
            })?;
    Ok(serde_json::to_value(inspect::inspection(&execution, &args.step)?)?)
}

/// The inspection for people.
fn render_text(inspection: &Value) -> String {
    let mut out = String::new();
    // What a step renders may hold anything: control characters are shown escaped.
    let text = |value: &Value| {
        let raw = value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
        crate::output::escape(&raw).into_owned()
    };
    let _ = writeln!(
        out,
        "{} ({} step), attempt {}",
        text(&inspection["step"]),
        text(&inspection["kind"]),
        inspection["attempt"]
    );
    if let Some(command) = inspection.get("command") {
        if let Some(script) = command.get("script").and_then(Value::as_str) {
            for (number, line) in script.lines().enumerate() {
                let label = if number == 0 { "sh -c" } else { "" };
                let _ = writeln!(out, "  {label:<10} {}", crate::output::escape(line));
            }
        }
        if let Some(Value::Array(argv)) = command.get("argv") {
            let argv: Vec<String> = argv.iter().map(text).collect();
            let _ = writeln!(out, "  argv       {}", argv.join(" "));
        }
        if let Some(cwd) = command.get("cwd") {
            let _ = writeln!(out, "  cwd        {}", text(cwd));
        }
        if let Some(timeout) = command.get("timeout") {
            let _ = writeln!(out, "  timeout    {}", text(timeout));
        }
        for pair in command["env"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  env        {}={}", text(&pair[0]), text(&pair[1]));
        }
    }
    if let Some(http) = inspection.get("http") {
        let _ = writeln!(out, "  {} {}", text(&http["method"]), text(&http["url"]));
        for pair in http["query"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  query      {}={}", text(&pair[0]), text(&pair[1]));
        }
        for pair in http["headers"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  header     {}: {}", text(&pair[0]), text(&pair[1]));
        }
        if let Some(body) = http.get("body") {
            let _ = writeln!(out, "  body       {}", text(body));
        }
        if let Some(Value::Array(statuses)) = http.get("expect_status") {
            let statuses: Vec<String> = statuses.iter().map(text).collect();
            let _ = writeln!(out, "  expect     {}", statuses.join(", "));
        }
        let _ = writeln!(out, "  timeout    {}", text(&http["timeout"]));
    }
    if let Some(error) = inspection.get("error") {
        let _ = writeln!(out, "  cannot be rendered: {}", text(error));
    }
    let reads = &inspection["reads"];
    for (step, outputs) in reads["steps"].as_object().into_iter().flatten() {
        for (key, value) in outputs.as_object().into_iter().flatten() {
            let _ = writeln!(out, "  reads      steps.{step}.outputs.{key} = {value}");
        }
    }
    for (name, value) in reads["inputs"].as_object().into_iter().flatten() {
        let _ = writeln!(out, "  reads      inputs.{name} = {value}");
    }
    out
}
