//! `wayline graph`: the dependency graph as Graphviz dot or Mermaid.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::ValueEnum;
use wayline_lang::Workflow;
use wayline_lang::model::Body;

use crate::definition;
use crate::error::{Exit, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The workflow file (YAML or JSON).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    format: GraphFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

pub fn exec(args: Args) -> Result<Exit> {
    let workflow = definition::load(&args.file)?.workflow;
    out!(
        "{}",
        match args.format {
            GraphFormat::Dot => dot(&workflow),
            GraphFormat::Mermaid => mermaid(&workflow),
        }
    )?;
    Ok(Exit::Success)
}

/// Edges point the way work flows: from a step to the steps that need it.
fn edges(workflow: &Workflow) -> Vec<(usize, usize, Option<&'static str>)> {
    let mut out = Vec::new();
    for (index, step) in workflow.steps.iter().enumerate() {
        for &need in &step.needs {
            let branch = step
                .branches
                .iter()
                .find(|(condition, _)| *condition == need)
                .map(|(_, taken)| if *taken { "then" } else { "else" });
            out.push((need, index, branch));
        }
    }
    out
}

fn dot(workflow: &Workflow) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n",
        workflow.name
    );
    for (index, group) in workflow.groups.iter().enumerate() {
        let cap = group.max_parallel.map_or(String::new(), |n| format!(" (max {n})"));
        let _ = writeln!(out, "  subgraph cluster_{index} {{\n    label=\"{}{cap}\";", group.name);
        for &step in &group.steps {
            let _ = writeln!(out, "    \"{}\";", workflow.steps[step].id);
        }
        out.push_str("  }\n");
    }
    for step in &workflow.steps {
        let shape = match step.body {
            Body::Condition(_) => ", shape=diamond, style=\"\"",
            Body::Wait(_) => ", shape=ellipse",
            _ => "",
        };
        // A fan-out is drawn as a stack: one node, many instances.
        let (fan, stack) = match fan_out_kind(step) {
            Some(kind) => (format!(" · {kind}"), ", peripheries=2"),
            None => (String::new(), ""),
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{}{fan}\"{shape}{stack}];",
            step.id,
            step.id,
            step.body.kind()
        );
    }
    for (from, to, branch) in edges(workflow) {
        let label = branch.map_or(String::new(), |b| format!(" [label=\"{b}\", style=dashed]"));
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\"{label};",
            workflow.steps[from].id, workflow.steps[to].id
        );
    }
    out.push_str("}\n");
    out
}

fn mermaid(workflow: &Workflow) -> String {
    // Mermaid ids may not contain `-`; use the index and show the id as the label.
    let mut out = String::from("flowchart LR\n");
    let node = |index: usize| format!("s{index}");
    for (index, group) in workflow.groups.iter().enumerate() {
        let _ = writeln!(out, "  subgraph g{index} [\"{}\"]", group.name);
        for &step in &group.steps {
            let _ = writeln!(out, "    {}", node(step));
        }
        out.push_str("  end\n");
    }
    for (index, step) in workflow.steps.iter().enumerate() {
        let (open, close) = match step.body {
            Body::Condition(_) => ("{", "}"),
            Body::Wait(_) => ("([", "])"),
            _ if step.fan_out.is_some() => ("[[", "]]"),
            _ => ("[", "]"),
        };
        let fan = fan_out_kind(step).map_or(String::new(), |kind| format!(" · {kind}"));
        let _ = writeln!(out, "  {}{open}\"{}{fan}\"{close}", node(index), step.id);
    }
    for (from, to, branch) in edges(workflow) {
        match branch {
            Some(label) => {
                let _ = writeln!(out, "  {} -. {label} .-> {}", node(from), node(to));
            }
            None => {
                let _ = writeln!(out, "  {} --> {}", node(from), node(to));
            }
        }
    }
    out
}

/// `for_each` or `matrix`, for a fan-out step.
fn fan_out_kind(step: &wayline_lang::model::Step) -> Option<&'static str> {
    step.fan_out.as_ref().map(|fan_out| match fan_out.items {
        wayline_lang::model::Items::List(_) => "for_each",
        wayline_lang::model::Items::Matrix { .. } => "matrix",
    })
}
