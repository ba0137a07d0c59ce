//! `wayline plan`: what a workflow would do, without doing it — the levels of steps that may
//! run in parallel, the groups and their caps, and for each step its dependencies, branches,
//! timeout, strategy and exact retry schedule.

use serde::Serialize;
use serde_json::Value;
use wayline_journal::duration;
use wayline_lang::fan_out;
use wayline_lang::graph;
use wayline_lang::model::{Backoff, Body, FanOut, Items, Tolerance, ValueTemplate, Workflow};

use crate::retry;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub workflow: String,
    pub max_parallel: Option<u32>,
    pub timeout: Option<String>,
    pub on_failure: &'static str,
    /// Level n holds the steps whose needs are all in lower levels.
    pub levels: Vec<Vec<String>>,
    pub groups: Vec<PlanGroup>,
    pub steps: Vec<PlanStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanGroup {
    pub name: String,
    pub max_parallel: Option<u32>,
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanStep {
    pub id: String,
    pub kind: &'static str,
    pub level: usize,
    pub needs: Vec<String>,
    #[serde(rename = "if", skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// For a condition: the steps of each branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branches: Option<Branches>,
    /// The branches this step belongs to, as `condition:then` / `condition:else`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs_when: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The per-attempt timeout in effect: the step's own, or the default of its kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// `timeout` is the default of the step's kind (http: 30s), not written in the file.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timeout_default: bool,
    pub on_failure: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_failure: bool,
    /// `None` for the kinds of step that are never retried: `set`, `condition` and `wait`
    /// fail only on an expression error, which fails the same way every time.
    pub retry: Option<PlanRetry>,
    pub compensate: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub agent_labels: Vec<String>,
    /// `for_each` or `matrix`: how many items, or where they come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<PlanFanOut>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanFanOut {
    /// `for_each` or `matrix`.
    pub kind: &'static str,
    /// The number of items, when the file gives them literally.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// `3 items`, or `from steps.list.outputs.regions at run time`.
    pub items: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// `2 items` or `10% of the items`; absent when no failure is tolerated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerate: Option<String>,
}

impl PlanFanOut {
    fn new(fan_out: &FanOut) -> PlanFanOut {
        let (kind, count, sources) = match &fan_out.items {
            Items::List(template) => {
                let count = literal(template).and_then(|value| fan_out::list_items(value).ok());
                ("for_each", count.map(|items| items.len()), sources(template))
            }
            Items::Matrix { axes, include, exclude } => {
                let count = (|| {
                    let values = axes
                        .iter()
                        .map(|(name, template)| Some((name.clone(), literal(template)?)))
                        .collect::<Option<Vec<_>>>()?;
                    let include =
                        include.as_ref().map(|t| literal(t).ok_or(())).transpose().ok()?;
                    let exclude =
                        exclude.as_ref().map(|t| literal(t).ok_or(())).transpose().ok()?;
                    let items = fan_out::matrix_items(values, include, exclude).ok()?;
                    Some(items.len())
                })();
                let mut all: Vec<String> = axes.iter().flat_map(|(_, t)| sources(t)).collect();
                all.extend(include.iter().chain(exclude).flat_map(sources));
                ("matrix", count, all)
            }
        };
        let items = match count {
            Some(1) => "1 item".to_owned(),
            Some(count) => format!("{count} items"),
            None => format!("from {} at run time", sources.join(", ")),
        };
        let tolerate = match fan_out.tolerate {
            Tolerance::Count(0) => None,
            Tolerance::Count(1) => Some("1 item".to_owned()),
            Tolerance::Count(count) => Some(format!("{count} items")),
            Tolerance::Percent(percent) => Some(format!("{percent}% of the items")),
        };
        PlanFanOut { kind, count, items, max_parallel: fan_out.max_parallel, tolerate }
    }
}

/// The value of a template without expressions.
fn literal(template: &ValueTemplate) -> Option<Value> {
    Some(match template {
        ValueTemplate::Literal(value) => value.clone(),
        ValueTemplate::Text(_) => return None,
        ValueTemplate::List(items) => {
            Value::Array(items.iter().map(literal).collect::<Option<Vec<_>>>()?)
        }
        ValueTemplate::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(key, value)| Some((key.clone(), literal(value)?)))
                .collect::<Option<serde_json::Map<_, _>>>()?,
        ),
    })
}

/// The expressions a template reads, as written.
fn sources(template: &ValueTemplate) -> Vec<String> {
    match template {
        ValueTemplate::Literal(_) => Vec::new(),
        ValueTemplate::Text(text) => {
            text.expressions().map(|(expression, _)| expression.source().to_owned()).collect()
        }
        ValueTemplate::List(items) => items.iter().flat_map(sources).collect(),
        ValueTemplate::Map(entries) => {
            entries.iter().flat_map(|(_, value)| sources(value)).collect()
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Branches {
    pub then: Vec<String>,
    #[serde(rename = "else")]
    pub otherwise: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanRetry {
    pub max_attempts: u32,
    pub backoff: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    pub delay: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<String>,
    pub jitter: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    pub on: Vec<&'static str>,
    /// The pause before each retry.
    pub schedule: Vec<PlanDelay>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanDelay {
    /// The attempt this pause comes before (2 = the first retry).
    pub before_attempt: u32,
    pub min_ms: u64,
    pub max_ms: u64,
    /// `1s`, or `0s..2s` for a random pause.
    pub text: String,
}

impl Plan {
    pub fn new(workflow: &Workflow) -> Plan {
        let ids = |list: &[usize]| -> Vec<String> {
            list.iter().map(|&i| workflow.steps[i].id.clone()).collect()
        };
        let needs: Vec<Vec<usize>> = workflow.steps.iter().map(|s| s.needs.clone()).collect();
        // A validated workflow is acyclic, so levels always exist.
        let levels = graph::levels(&needs).unwrap_or_default();
        let mut level_of = vec![0; workflow.steps.len()];
        for (level, members) in levels.iter().enumerate() {
            for &member in members {
                level_of[member] = level;
            }
        }
        let steps = workflow
            .steps
            .iter()
            .enumerate()
            .map(|(index, step)| {
                let retry = &step.retry;
                let retried = matches!(step.body, Body::Run(_) | Body::Http(_));
                let branches = match &step.body {
                    Body::Condition(condition) => Some(Branches {
                        then: ids(&condition.then),
                        otherwise: ids(&condition.otherwise),
                    }),
                    _ => None,
                };
                let on = [
                    (retry.on.failure, "failure"),
                    (retry.on.timeout, "timeout"),
                    (retry.on.lost, "lost"),
                ]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
                PlanStep {
                    id: step.id.clone(),
                    kind: step.body.kind(),
                    level: level_of[index],
                    needs: ids(&step.needs),
                    when: step.when.as_ref().map(|e| e.source().to_owned()),
                    branches,
                    runs_when: step
                        .branches
                        .iter()
                        .map(|&(c, taken)| {
                            format!(
                                "{}:{}",
                                workflow.steps[c].id,
                                if taken { "then" } else { "else" }
                            )
                        })
                        .collect(),
                    group: step.group.map(|g| workflow.groups[g].name.clone()),
                    timeout: match &step.timeout_expression {
                        Some(template) => {
                            Some(format!("from {} for each attempt", sources(template).join(", ")))
                        }
                        None => step.timeout.or(step.body.default_timeout()).map(duration::format),
                    },
                    timeout_default: step.timeout.is_none()
                        && step.timeout_expression.is_none()
                        && step.body.default_timeout().is_some(),
                    on_failure: step.on_failure.name(),
                    allow_failure: step.allow_failure,
                    retry: retried.then(|| PlanRetry {
                        max_attempts: retry.max_attempts,
                        backoff: retry.backoff.name(),
                        factor: match retry.backoff {
                            Backoff::Exponential { factor } => Some(factor),
                            _ => None,
                        },
                        delay: duration::format(retry.delay),
                        max_delay: retry.max_delay.map(duration::format),
                        jitter: retry.jitter.name(),
                        budget: retry.budget.map(duration::format),
                        on,
                        schedule: retry::schedule(retry)
                            .into_iter()
                            .enumerate()
                            .map(|(n, range)| PlanDelay {
                                before_attempt: n as u32 + 2,
                                min_ms: range.min.as_millis() as u64,
                                max_ms: range.max.as_millis() as u64,
                                text: if range.min == range.max {
                                    duration::format(range.min)
                                } else {
                                    format!(
                                        "{}..{}",
                                        duration::format(range.min),
                                        duration::format(range.max)
                                    )
                                },
                            })
                            .collect(),
                    }),
                    compensate: step.compensate.is_some(),
                    agent_labels: step.agent_labels.clone(),
                    fan_out: step.fan_out.as_ref().map(PlanFanOut::new),
                }
            })
            .collect();
        Plan {
            workflow: workflow.name.clone(),
            max_parallel: workflow.max_parallel,
            timeout: workflow.timeout.map(duration::format),
            on_failure: workflow.on_failure.name(),
            levels: levels.iter().map(|level| ids(level)).collect(),
            groups: workflow
                .groups
                .iter()
                .map(|g| PlanGroup {
                    name: g.name.clone(),
                    max_parallel: g.max_parallel,
                    steps: ids(&g.steps),
                })
                .collect(),
            steps,
        }
    }
}
