//! The validated workflow: what lowering produces and everything downstream consumes.
//!
//! These types cannot represent an invalid workflow: every step has exactly one body, every
//! `needs` entry is a resolved step index, the graph is acyclic, every expression parsed and
//! references only what it may, retry policies are consistent.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::Span;
use crate::expr::{Expression, Template};
pub use wayline_journal::Decision;

/// Index of a step in [`Workflow::steps`].
pub type StepIndex = usize;

#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    pub inputs: Vec<Input>,
    pub env: Vec<(String, Template)>,
    pub timeout: Option<Duration>,
    pub max_parallel: Option<u32>,
    pub on_failure: Strategy,
    pub escalation: Escalation,
    pub groups: Vec<Group>,
    pub steps: Vec<Step>,
    /// Named values computed from the steps when the execution succeeds.
    pub outputs: Vec<(String, ValueTemplate)>,
    /// Steps in dependency order: every step comes after all of its needs.
    pub order: Vec<StepIndex>,
    /// For each step, the steps that need it.
    pub dependents: Vec<Vec<StepIndex>>,
    /// Step id to index.
    pub ids: HashMap<String, StepIndex>,
}

#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub ty: InputType,
    pub required: bool,
    pub default: Option<Value>,
    pub description: Option<String>,
    pub allowed: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl InputType {
    pub fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Integer => "integer",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
            InputType::Object => "object",
        }
    }

    pub fn accepts(self, value: &Value) -> bool {
        match self {
            InputType::String => value.is_string(),
            InputType::Integer => value.is_i64() || value.is_u64(),
            InputType::Number => value.is_number(),
            InputType::Boolean => value.is_boolean(),
            InputType::Array => value.is_array(),
            InputType::Object => value.is_object(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub max_parallel: Option<u32>,
    pub description: Option<String>,
    pub steps: Vec<StepIndex>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Every step this one waits for: declared needs, group members, and the condition step
    /// of a branch it is listed in. Sorted, without duplicates.
    pub needs: Vec<StepIndex>,
    /// `None` means the default, `success()`.
    pub when: Option<Expression>,
    pub body: Body,
    pub group: Option<usize>,
    pub retry: Retry,
    pub timeout: Option<Duration>,
    /// A `timeout` written as an expression (`${{ item.limit }}`), evaluated for each attempt
    /// like the body: a duration (`90s`) or a number of seconds. `timeout` is then `None`.
    pub timeout_expression: Option<ValueTemplate>,
    pub on_failure: Strategy,
    pub allow_failure: bool,
    pub compensate: Option<Compensation>,
    pub agent_labels: Vec<String>,
    /// The template the step uses: its body, env, cwd and compensation read `inputs` from it.
    pub template: Option<TemplateUse>,
    /// `for_each` or `matrix`: the step runs once per item.
    pub fan_out: Option<FanOut>,
    /// Conditions that list this step in a branch: (condition step, `true` for `then`).
    pub branches: Vec<(StepIndex, bool)>,
    /// Where the step is defined, for messages at run time.
    pub span: Span,
}

/// A step that runs once per item (`for_each`, `matrix`): each item is an instance of the step
/// with its own attempts, retries, timeout, logs and compensation.
#[derive(Debug, Clone)]
pub struct FanOut {
    pub items: Items,
    /// Items running at once (the step's `max_parallel`); they count toward the group's and
    /// the workflow's caps too.
    pub max_parallel: Option<u32>,
    /// Items that may fail before the step fails.
    pub tolerate: Tolerance,
    /// Where `for_each` or `matrix` is written, for messages at run time.
    pub span: Span,
}

/// What a fan-out's items come from; evaluated once, when the step becomes ready.
#[derive(Debug, Clone)]
pub enum Items {
    /// `for_each`: a list (one item per element), or an object (one item per key, as
    /// `{key, value}`).
    List(ValueTemplate),
    /// `matrix`: every combination of the axes' values, less `exclude`, plus `include`.
    Matrix {
        axes: Vec<(String, ValueTemplate)>,
        include: Option<ValueTemplate>,
        exclude: Option<ValueTemplate>,
    },
}

/// How many failed items a fan-out step tolerates (`tolerate: 2`, `tolerate: 10%`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    Count(u32),
    /// A percentage of the items, 0 to 100.
    Percent(f64),
}

impl Tolerance {
    /// The failed items tolerated out of `items`: a percentage rounds down.
    pub fn of(self, items: usize) -> usize {
        match self {
            Tolerance::Count(count) => count as usize,
            Tolerance::Percent(percent) => ((items as f64) * percent / 100.0).floor() as usize,
        }
    }
}

/// A step's use of a template (`uses`, `with`).
#[derive(Debug, Clone)]
pub struct TemplateUse {
    pub name: String,
    /// The template's declared inputs.
    pub inputs: Vec<Input>,
    /// What the step gives them, evaluated against the workflow (its inputs, the steps).
    pub with: Vec<(String, ValueTemplate)>,
}

impl Step {
    /// The `if` is the default `success()`.
    pub fn default_if(&self) -> bool {
        self.when.is_none()
    }
}

#[derive(Debug, Clone)]
pub enum Body {
    Run(Command),
    Http(Http),
    Wait(Wait),
    Condition(Condition),
    Set(Vec<(String, ValueTemplate)>),
}

impl Body {
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Run(_) => "run",
            Body::Http(_) => "http",
            Body::Wait(_) => "wait",
            Body::Condition(_) => "condition",
            Body::Set(_) => "set",
        }
    }

    /// The per-attempt timeout when the step sets none: [`Http::DEFAULT_TIMEOUT`] for http.
    pub fn default_timeout(&self) -> Option<Duration> {
        match self {
            Body::Http(_) => Some(Http::DEFAULT_TIMEOUT),
            Body::Run(_) | Body::Wait(_) | Body::Condition(_) | Body::Set(_) => None,
        }
    }
}

/// A side effect that can be used outside a step body: compensation, escalation notice.
#[derive(Debug, Clone)]
pub enum Action {
    Run(Command),
    Http(Http),
}

impl Action {
    /// The per-attempt timeout when none is set: [`Http::DEFAULT_TIMEOUT`] for http.
    pub fn default_timeout(&self) -> Option<Duration> {
        match self {
            Action::Http(_) => Some(Http::DEFAULT_TIMEOUT),
            Action::Run(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Command {
    pub program: Program,
    pub cwd: Option<Template>,
    pub env: Vec<(String, Template)>,
}

#[derive(Debug, Clone)]
pub enum Program {
    /// Run by `sh -c`. Substituted values never enter the script: each one is passed in an
    /// environment variable the script references (see [`crate::shell`]).
    Shell(crate::shell::Script),
    /// Executed directly; each element is substituted verbatim.
    Argv(Vec<Template>),
}

#[derive(Debug, Clone)]
pub struct Http {
    pub method: String,
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    pub query: Vec<(String, Template)>,
    pub body: Option<ValueTemplate>,
    /// `None`: any 2xx.
    pub expect_status: Option<Vec<u16>>,
}

impl Http {
    /// The per-attempt limit of an http call (step, compensation or notification) that sets
    /// no `timeout`: a server that never answers, or answers a byte at a time, cannot hold a
    /// step forever.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
}

#[derive(Debug, Clone)]
pub enum Wait {
    For(Duration),
    Until(Template),
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub expression: Expression,
    pub then: Vec<StepIndex>,
    pub otherwise: Vec<StepIndex>,
}

/// A JSON-like value whose strings may hold expressions.
#[derive(Debug, Clone)]
pub enum ValueTemplate {
    Literal(Value),
    Text(Template),
    List(Vec<ValueTemplate>),
    Map(Vec<(String, ValueTemplate)>),
}

#[derive(Debug, Clone)]
pub struct Compensation {
    pub action: Action,
    pub retry: Retry,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    FailFast,
    Continue,
    Rollback,
    Escalate,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::FailFast => "fail_fast",
            Strategy::Continue => "continue",
            Strategy::Rollback => "rollback",
            Strategy::Escalate => "escalate",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Escalation {
    pub notify: Option<Action>,
    pub timeout: Option<Duration>,
    pub then: Decision,
}

/// A retry policy (docs/design.md §2.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub delay: Duration,
    pub max_delay: Option<Duration>,
    pub jitter: Jitter,
    pub budget: Option<Duration>,
    pub on: RetryOn,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            max_attempts: 1,
            backoff: Backoff::Fixed,
            delay: Duration::from_secs(1),
            max_delay: None,
            jitter: Jitter::None,
            budget: None,
            on: RetryOn::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    Fixed,
    Linear,
    Exponential { factor: f64 },
    Random,
}

impl Backoff {
    pub fn name(self) -> &'static str {
        match self {
            Backoff::Fixed => "fixed",
            Backoff::Linear => "linear",
            Backoff::Exponential { .. } => "exponential",
            Backoff::Random => "random",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    None,
    Full,
    Equal,
}

impl Jitter {
    pub fn name(self) -> &'static str {
        match self {
            Jitter::None => "none",
            Jitter::Full => "full",
            Jitter::Equal => "equal",
        }
    }
}

/// Which error classes a policy retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    pub failure: bool,
    pub timeout: bool,
    pub lost: bool,
}

impl Default for RetryOn {
    fn default() -> RetryOn {
        RetryOn { failure: true, timeout: true, lost: true }
    }
}

impl Workflow {
    pub fn step(&self, id: &str) -> Option<StepIndex> {
        self.ids.get(id).copied()
    }

    pub fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|input| input.name == name)
    }
}
