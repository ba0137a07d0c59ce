//! Workflows made up to measure an engine — `wayline bench` and the benchmarks: chains,
//! parallel runs and fan-outs of one step body, validated and ready to submit.

use std::fmt::Write as _;
use std::sync::Arc;

use wayline_core::execution::Secrets;
use wayline_lang::Workflow;

use crate::engine::{Error, Result};
use crate::submit::Submission;

/// A validated workflow and its text.
#[derive(Debug, Clone)]
pub struct Workload {
    workflow: Arc<Workflow>,
    source: Arc<str>,
}

impl Workload {
    /// `count` steps, each needing the one before, each with `body` (the step's body on one
    /// line, `run: "true"` or `set: { x: 1 }`).
    pub fn chain(count: usize, body: &str) -> Result<Workload> {
        let mut yaml = String::from("name: chain\nsteps:\n");
        for i in 0..count {
            let _ = write!(yaml, "  - id: s{i}\n    {body}\n");
            if i > 0 {
                let _ = writeln!(yaml, "    needs: [s{}]", i - 1);
            }
        }
        Workload::parse(yaml)
    }

    /// `count` independent steps with `body`, at most `max_parallel` of them at once.
    pub fn parallel(count: usize, max_parallel: u32, body: &str) -> Result<Workload> {
        let mut yaml = format!("name: parallel\nmax_parallel: {max_parallel}\nsteps:\n");
        for i in 0..count {
            let _ = write!(yaml, "  - id: s{i}\n    {body}\n");
        }
        Workload::parse(yaml)
    }

    /// A `set` step, `count` `set` steps that need it, and one that needs them all.
    pub fn fan(count: usize) -> Result<Workload> {
        let mut yaml = String::from("name: fan\nsteps:\n  - id: root\n    set: { x: 1 }\n");
        for i in 0..count {
            let _ = write!(yaml, "  - id: s{i}\n    needs: [root]\n    set: {{ x: 1 }}\n");
        }
        yaml.push_str("  - id: sink\n    needs: [");
        yaml.push_str(&(0..count).map(|i| format!("s{i}")).collect::<Vec<_>>().join(", "));
        yaml.push_str("]\n    set: { done: true }\n");
        Workload::parse(yaml)
    }

    /// One step fanned out over `count` literal items (`for_each`) with `body`, at most
    /// `max_parallel` at once, and a `set` step that reads their outputs: the same work as
    /// [`Workload::fan`] or [`Workload::parallel`], as one step.
    pub fn items(count: usize, max_parallel: Option<u32>, body: &str) -> Result<Workload> {
        let items: Vec<String> = (0..count).map(|i| i.to_string()).collect();
        let mut yaml =
            format!("name: items\nsteps:\n  - id: each\n    for_each: [{}]\n", items.join(", "));
        if let Some(cap) = max_parallel {
            let _ = writeln!(yaml, "    max_parallel: {cap}");
        }
        let _ = writeln!(yaml, "    {body}");
        yaml.push_str("  - id: sink\n    needs: [each]\n    set: { n: \"${{ size(steps.each.outputs) }}\" }\n");
        Workload::parse(yaml)
    }

    /// A workload from the text of a workflow.
    pub fn parse(yaml: String) -> Result<Workload> {
        let loaded = wayline_lang::load(&yaml);
        match loaded.workflow {
            Some(workflow) => Ok(Workload { workflow: Arc::new(workflow), source: yaml.into() }),
            None => {
                let messages: Vec<String> =
                    loaded.diagnostics.iter().map(|d| d.message.clone()).collect();
                Err(Error::Invalid(format!(
                    "the workload does not validate: {}",
                    messages.join("; ")
                )))
            }
        }
    }

    /// One execution of it, with no inputs and no secrets.
    pub fn submission(&self) -> Submission {
        Submission {
            workflow: Arc::clone(&self.workflow),
            source: Arc::clone(&self.source),
            imports: Default::default(),
            path: "workload.yaml".into(),
            inputs: Default::default(),
            secrets: Arc::new(Secrets::default()),
            idempotency_key: None,
            breakpoints: Default::default(),
        }
    }
}
