//! The commands that read a workflow file without running it: validate, plan, graph.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;

use serde_json::json;
use wayline_core::plan::Plan;
use wayline_lang::inputs::{self, Given};
use wayline_lang::model::Body;
use wayline_lang::{Diagnostic, Workflow};

use crate::cli::{Exit, Format, GraphFormat, invalid};
use crate::output;

/// Reads a workflow, input or secrets file of at most 1 MiB, or explains why it cannot be read
/// (exit 2: it is the user's input).
///
/// The size is checked before the file is read: from its metadata when it is a regular file,
/// otherwise (a pipe, `/dev/zero`) by reading no more than one byte past the limit.
pub fn read(path: &Path) -> anyhow::Result<String> {
    const LIMIT: usize = wayline_lang::lower::MAX_FILE_BYTES;
    let cannot = |error: std::io::Error| {
        invalid(format!("cannot read {}: {}", path.display(), output::reason(&error)))
    };
    let too_large = |size: String| {
        invalid(format!("{} {size}; the limit is {LIMIT} bytes (1 MiB)", path.display()))
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let metadata = file.metadata().map_err(cannot)?;
    if metadata.is_file() && metadata.len() > LIMIT as u64 {
        return Err(too_large(format!("is {} bytes", metadata.len())));
    }
    let mut bytes = Vec::new();
    file.take(LIMIT as u64 + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() > LIMIT {
        return Err(too_large(format!("has more than {LIMIT} bytes")));
    }
    String::from_utf8(bytes).map_err(|error| {
        invalid(format!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            error.utf8_error().valid_up_to()
        ))
    })
}

/// Loads and validates a workflow; on error prints every diagnostic and fails with exit 2.
pub fn load(path: &Path) -> anyhow::Result<(Workflow, String)> {
    let text = read(path)?;
    let loaded = wayline_lang::load(&text);
    let name = path.display().to_string();
    for diagnostic in &loaded.diagnostics {
        output::message(format_args!("{}", diagnostic.render(&name, &text)));
    }
    match loaded.workflow {
        Some(workflow) => Ok((workflow, text)),
        None => {
            let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
            Err(invalid(format!("{name} is invalid ({errors} error{})", plural(errors))))
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub fn validate(files: &[std::path::PathBuf], format: Format) -> anyhow::Result<Exit> {
    let mut all_valid = true;
    let mut reports = Vec::new();
    for path in files {
        let name = path.display().to_string();
        let (diagnostics, steps): (Vec<Diagnostic>, Option<usize>) = match read(path) {
            Ok(text) => {
                let loaded = wayline_lang::load(&text);
                if format == Format::Text {
                    for diagnostic in &loaded.diagnostics {
                        output::message(format_args!("{}", diagnostic.render(&name, &text)));
                    }
                }
                (loaded.diagnostics, loaded.workflow.map(|w| w.steps.len()))
            }
            Err(error) => {
                if format == Format::Text {
                    say!("error: {error}");
                    outln!("{name}: invalid (cannot be read)")?;
                }
                all_valid = false;
                reports.push(json!({ "file": name, "valid": false, "error": error.to_string(), "diagnostics": [] }));
                continue;
            }
        };
        all_valid &= steps.is_some();
        match format {
            Format::Text => match steps {
                Some(steps) => {
                    let warnings = diagnostics.len();
                    let note = if warnings > 0 {
                        format!(", {warnings} warning{}", plural(warnings))
                    } else {
                        String::new()
                    };
                    outln!("{name}: valid ({steps} step{}{note})", plural(steps))?;
                }
                None => {
                    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
                    outln!("{name}: invalid ({errors} error{})", plural(errors))?;
                }
            },
            Format::Json => reports.push(json!({
                "file": name,
                "valid": steps.is_some(),
                "diagnostics": diagnostics,
            })),
        }
    }
    if format == Format::Json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "valid": all_valid, "files": reports }))?
        )?;
    }
    Ok(if all_valid { Exit::Success } else { Exit::Invalid })
}

/// Parses `-i name=value` flags and an optional input file into checked input values.
pub fn resolve_inputs(
    workflow: &Workflow,
    flags: &[String],
    file: Option<&Path>,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut given = Vec::new();
    if let Some(path) = file {
        let text = read(path)?;
        // JSON is YAML, so one parser reads both.
        let node = wayline_lang::yaml::parse(&text).map_err(|d| {
            invalid(format!("{}:{}:{}: {}", path.display(), d.span.line, d.span.column, d.message))
        })?;
        let Some(serde_json::Value::Object(map)) = node.to_json() else {
            return Err(invalid(format!(
                "{}: expected a mapping of input names to values",
                path.display()
            )));
        };
        given.extend(map.into_iter().map(|(name, value)| (name, Given::Json(value))));
    }
    for flag in flags {
        let Some((name, value)) = flag.split_once('=') else {
            return Err(invalid(format!("`-i {flag}`: write inputs as name=value")));
        };
        given.push((name.to_owned(), Given::Text(value.to_owned())));
    }
    inputs::resolve(workflow, given).map_err(|errors| invalid(errors.join("\n       ")))
}

pub fn plan(
    path: &Path,
    flags: &[String],
    input_file: Option<&Path>,
    as_json: bool,
) -> anyhow::Result<Exit> {
    let (workflow, _) = load(path)?;
    // The inputs a run would get, checked exactly as `run` checks them.
    let inputs = resolve_inputs(&workflow, flags, input_file)?;
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
        plural(steps),
        plan.levels.len(),
        plural(plan.levels.len()),
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
        if let Some(when) = &step.when {
            line("if", when.clone());
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

pub fn graph(path: &Path, format: GraphFormat) -> anyhow::Result<Exit> {
    let (workflow, _) = load(path)?;
    out!(
        "{}",
        match format {
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
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\\n{}\"{shape}];",
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
            _ => ("[", "]"),
        };
        let _ = writeln!(out, "  {}{open}\"{}\"{close}", node(index), step.id);
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
