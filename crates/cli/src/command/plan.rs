//! `wayline plan`: what a workflow would do, without running it.

use std::fmt::Write as _;

use wayline_core::plan::Plan;

use crate::definition;
use crate::error::{Exit, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    definition: definition::WithInputs,
    /// Print the plan as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn exec(args: Args) -> Result<Exit> {
    // The inputs a run would get, checked exactly as `run` checks them.
    let (definition, inputs) = args.definition.load()?;
    let workflow = definition.workflow;
    let as_json = args.json;
    let plan = Plan::new(&workflow);
    if as_json {
        let mut value = serde_json::to_value(&plan)?;
        value["inputs"] = serde_json::Value::Object(inputs);
        outln!("{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        out!("{}", render_plan(&plan, &inputs))?;
    }
    Ok(Exit::Success)
}

fn render_plan(plan: &Plan, inputs: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut out = String::new();
    let steps = plan.steps.len();
    let _ = write!(
        out,
        "{}: {steps} step{} in {} level{}, on_failure {}",
        plan.workflow,
        definition::plural(steps),
        plan.levels.len(),
        definition::plural(plan.levels.len()),
        plan.on_failure
    );
    if let Some(max) = plan.max_parallel {
        let _ = write!(out, ", max_parallel {max}");
    }
    if let Some(timeout) = &plan.timeout {
        let _ = write!(out, ", timeout {timeout}");
    }
    out.push('\n');
    if !inputs.is_empty() {
        out.push_str("\nInputs\n");
        for (name, value) in inputs {
            let _ = writeln!(out, "  {name} = {value}");
        }
    }
    out.push_str("\nLevels (the steps of a level may run in parallel)\n");
    for (level, ids) in plan.levels.iter().enumerate() {
        let _ = writeln!(out, "  {level:>3}  {}", ids.join(", "));
    }
    if !plan.groups.is_empty() {
        out.push_str("\nGroups\n");
        for group in &plan.groups {
            let cap =
                group.max_parallel.map_or("no cap".to_owned(), |n| format!("max_parallel {n}"));
            let _ = writeln!(out, "  {}  ({cap})  {}", group.name, group.steps.join(", "));
        }
    }
    out.push_str("\nSteps\n");
    for step in &plan.steps {
        let _ = write!(out, "  {}  [{}]", step.id, step.kind);
        if !step.needs.is_empty() {
            let _ = write!(out, "  needs {}", step.needs.join(", "));
        }
        out.push('\n');
        let mut line = |label: &str, text: String| {
            let _ = writeln!(out, "      {label:<11}{text}");
        };
        if let Some(fan_out) = &step.fan_out {
            let mut text = fan_out.items.clone();
            if let Some(cap) = fan_out.max_parallel {
                let _ = write!(text, ", {cap} at a time");
            }
            if let Some(tolerate) = &fan_out.tolerate {
                let _ = write!(text, ", tolerates {tolerate} failing");
            }
            line(fan_out.kind, text);
        }
        if let Some(when) = &step.when {
            let each = if step.fan_out.is_some() { "  (for each item)" } else { "" };
            line("if", format!("{when}{each}"));
        }
        if !step.runs_when.is_empty() {
            line("runs when", step.runs_when.join(" and "));
        }
        if let Some(branches) = &step.branches {
            line(
                "then",
                if branches.then.is_empty() { "-".into() } else { branches.then.join(", ") },
            );
            line(
                "else",
                if branches.otherwise.is_empty() {
                    "-".into()
                } else {
                    branches.otherwise.join(", ")
                },
            );
        }
        if let Some(group) = &step.group {
            line("group", group.clone());
        }
        if let Some(timeout) = &step.timeout {
            let default = if step.timeout_default { " (default)" } else { "" };
            line("timeout", format!("{timeout}{default}"));
        }
        if step.on_failure != plan.on_failure || step.allow_failure {
            let allow = if step.allow_failure { ", allow_failure" } else { "" };
            line("on_failure", format!("{}{allow}", step.on_failure));
        }
        if let Some(retry) = step.retry.as_ref().filter(|retry| retry.max_attempts > 1) {
            let mut policy =
                format!("{} attempts, {} from {}", retry.max_attempts, retry.backoff, retry.delay);
            if let Some(factor) = retry.factor {
                let _ = write!(policy, " x{factor}");
            }
            if let Some(max) = &retry.max_delay {
                let _ = write!(policy, ", max {max}");
            }
            if retry.jitter != "none" {
                let _ = write!(policy, ", jitter {}", retry.jitter);
            }
            if let Some(budget) = &retry.budget {
                let _ = write!(policy, ", budget {budget}");
            }
            if retry.on.len() < 3 {
                let _ = write!(policy, ", on {}", retry.on.join("/"));
            }
            line("retry", policy);
            let delays: Vec<&str> = retry.schedule.iter().map(|d| d.text.as_str()).collect();
            line("delays", delays.join(", "));
        }
        if step.compensate {
            line("compensate", "yes".into());
        }
        if !step.agent_labels.is_empty() {
            line("agent", step.agent_labels.join(", "));
        }
    }
    out
}
