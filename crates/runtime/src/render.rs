//! Turning a step body into a concrete executor request for one attempt: every template
//! evaluated against the execution's state, shell values quoted, secrets set up for masking.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use wayline_core::execution::{Attempt, Execution};
use wayline_core::render;
use wayline_exec as exec;
use wayline_journal::ErrorClass;
use wayline_lang::expr::{self, EvalError, Expression, Scope, Template};
use wayline_lang::model::{Action, Body, Command, Http, Program, ValueTemplate, Wait};
use wayline_lang::url;

/// Settings that apply to every attempt.
#[derive(Debug, Clone)]
pub struct Limits {
    pub kill_grace: Duration,
    pub log_bytes: u64,
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            kill_grace: exec::Command::DEFAULT_KILL_GRACE,
            log_bytes: exec::Limits::DEFAULT_BYTES,
            output_bytes: exec::Limits::DEFAULT_BYTES,
        }
    }
}

/// A request ready for an executor.
pub enum Request {
    Command(exec::Command),
    Http(exec::Http),
}

/// Why an attempt's request could not be made. Never retried: the same state renders the
/// same way again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// `expression` when an expression failed; `fatal` when a value is not allowed where it
    /// goes (a URL's host).
    pub class: ErrorClass,
    pub message: String,
}

impl From<EvalError> for Error {
    fn from(error: EvalError) -> Error {
        Error { class: ErrorClass::Expression, message: error.message }
    }
}

impl From<url::Error> for Error {
    fn from(error: url::Error) -> Error {
        match error {
            url::Error::Eval(error) => error.into(),
            url::Error::Rejected(message) => Error { class: ErrorClass::Fatal, message },
        }
    }
}

/// What one attempt needs, taken from the execution while the engine holds it.
pub fn attempt(execution: &Execution, attempt: Attempt, limits: &Limits) -> Result<Request, Error> {
    let compensation = attempt.is_compensation();
    let definition = &execution.workflow().steps[attempt.step];
    let scope = execution.body_scope(attempt.step, attempt.item, Some(attempt.number))?;
    // One key per step instance: each item of a fan-out is work of its own.
    let instance = wayline_journal::instance_name(&definition.id, attempt.item);
    let key = if compensation {
        format!("{}:{instance}:compensate", execution.id())
    } else {
        format!("{}:{instance}", execution.id())
    };
    let (action, timeout) = if compensation {
        let Some(compensate) = &definition.compensate else {
            return Err(EvalError {
                message: format!("step `{}` has no compensation", definition.id),
            }
            .into());
        };
        (compensate.action.clone(), compensate.timeout)
    } else {
        let action = match &definition.body {
            Body::Run(command) => Action::Run(command.clone()),
            Body::Http(http) => Action::Http(http.clone()),
            other => {
                return Err(EvalError {
                    message: format!("a {} step does not run on an executor", other.kind()),
                }
                .into());
            }
        };
        let timeout = match &definition.timeout_expression {
            Some(template) => Some(timeout_of(template, &scope)?),
            None => definition.timeout,
        };
        (action, timeout)
    };
    request(execution, &action, &scope, attempt.number, key, timeout, limits)
}

/// A `timeout` written as an expression, evaluated for this attempt: a duration (`90s`,
/// `1m30s`) or a number of seconds.
fn timeout_of(template: &ValueTemplate, scope: &dyn Scope) -> Result<Duration, EvalError> {
    let value = render::value_with(template, scope, &mut expr::Meter::default())?;
    let timeout = match &value {
        Value::String(text) => wayline_journal::duration::parse(text).ok(),
        Value::Number(seconds) => seconds
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds > 0.0 && *seconds <= 315_576_000.0)
            .map(Duration::from_secs_f64),
        _ => None,
    };
    timeout.filter(|timeout| !timeout.is_zero()).ok_or_else(|| EvalError {
        message: format!(
            "`timeout` must give a duration (`90s`) or a number of seconds, up to 10 years; it gave {value}"
        ),
    })
}

/// The escalation notice for an escalated step.
pub fn notify(
    execution: &Execution,
    step: usize,
    limits: &Limits,
) -> Option<Result<Request, Error>> {
    let action = execution.workflow().escalation.notify.as_ref()?;
    let scope = execution.notify_scope(step);
    let key = format!("{}:{}:notify", execution.id(), execution.workflow().steps[step].id);
    Some(request(execution, action, &scope, 1, key, Some(Duration::from_secs(30)), limits))
}

fn request(
    execution: &Execution,
    action: &Action,
    scope: &dyn Scope,
    attempt: u32,
    idempotency_key: String,
    timeout: Option<Duration>,
    limits: &Limits,
) -> Result<Request, Error> {
    let masker = execution.secrets().masker().clone();
    let exec_limits =
        exec::Limits { log_bytes: limits.log_bytes, output_bytes: limits.output_bytes };
    Ok(match action {
        Action::Run(command) => {
            let Command { program, cwd, env } = command;
            // The host's variables that say where things are; nothing else of wayline's own
            // environment (its configuration, `WAYLINE_SECRET_*`) reaches a step.
            let mut variables = host_environment().to_vec();
            let mut values = Vec::new();
            let program = match program {
                Program::Shell(script) => {
                    let rendered = script.render(scope)?;
                    values = rendered.values;
                    exec::Program::Shell(rendered.script)
                }
                Program::Argv(parts) => exec::Program::Argv(
                    parts.iter().map(|part| text(part, scope)).collect::<Result<_, _>>()?,
                ),
            };
            if let Value::Object(workflow_env) = scope.env().as_ref() {
                for (key, value) in workflow_env {
                    variables.push((key.clone(), expr::to_text(value)));
                }
            }
            for (key, template) in env {
                variables.push((key.clone(), text(template, scope)?));
            }
            variables.extend(values);
            let mut request = exec::Command::new(program);
            request.cwd =
                cwd.as_ref().map(|cwd| text(cwd, scope).map(PathBuf::from)).transpose()?;
            request.env = variables;
            request.attempt = attempt;
            request.idempotency_key = idempotency_key;
            request.timeout = timeout;
            request.kill_grace = limits.kill_grace;
            request.limits = exec_limits;
            request.masker = masker;
            Request::Command(request)
        }
        Action::Http(http) => {
            let Http { method, url, headers, query, body, expect_status } = http;
            let mut request = exec::Http::new(method.clone(), url::render(url, scope)?);
            // A templated value may be a secret, or data the author did not write: it is
            // not sent on to another origin after a redirect.
            request.headers = headers
                .iter()
                .map(|(name, value)| {
                    let sensitive = value.as_literal().is_none();
                    let header = exec::Header::new(name.clone(), text(value, scope)?);
                    Ok(exec::Header { sensitive, ..header })
                })
                .collect::<Result<_, EvalError>>()?;
            request.query = query
                .iter()
                .map(|(k, v)| Ok((k.clone(), text(v, scope)?)))
                .collect::<Result<_, EvalError>>()?;
            request.body = match body {
                None => None,
                Some(template) => Some(match render::value(template, scope)? {
                    Value::String(text) => exec::Body::Text(text),
                    other => exec::Body::Json(other),
                }),
            };
            request.expect_status = expect_status.clone();
            request.timeout = timeout.unwrap_or(Http::DEFAULT_TIMEOUT);
            request.idempotency_key = idempotency_key;
            request.limits = exec_limits;
            request.masker = masker;
            Request::Http(request)
        }
    })
}

/// Variables of wayline's environment that step processes get: they say where things are
/// (the search path, the home directory, the locale, the terminal, the temporary directory),
/// not what anyone may do. Everything else — wayline's configuration, `WAYLINE_SECRET_*`,
/// credentials that happen to be in the operator's shell — stays out; a step gets more only
/// through `env:` (and secrets only where a template names them).
pub const HOST_VARIABLES: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TERM",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
];

/// The [`HOST_VARIABLES`] of this process, read once.
pub fn host_environment() -> &'static [(String, String)] {
    static HOST: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
            .filter(|(name, _)| {
                HOST_VARIABLES.iter().any(|allowed| match allowed.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix),
                    None => name == allowed,
                })
            })
            .collect()
    })
}

fn text(template: &Template, scope: &dyn Scope) -> Result<String, EvalError> {
    template.render(scope, |value| value.to_owned())
}

/// Says which secrets the workflow reads but `secrets` lacks, in a sentence for people; `None`
/// when every one is there.
pub fn missing_secrets(
    workflow: &wayline_lang::Workflow,
    secrets: &wayline_core::execution::Secrets,
) -> Option<String> {
    let missing: Vec<String> =
        secret_names(workflow).into_iter().filter(|name| secrets.get(name).is_none()).collect();
    if missing.is_empty() {
        return None;
    }
    let (plural, verb) = if missing.len() == 1 { ("", "it is") } else { ("s", "they are") };
    Some(format!(
        "the workflow reads secret{plural} {} but {verb} not set; set WAYLINE_SECRET_<NAME> or use --secrets-file",
        missing.join(", ")
    ))
}

/// Names of every secret the workflow's expressions read, to check they exist before a run.
pub fn secret_names(workflow: &wayline_lang::Workflow) -> BTreeSet<String> {
    let mut names = SecretNames::default();
    workflow.env.iter().for_each(|(_, template)| names.template(template));
    if let Some(notify) = &workflow.escalation.notify {
        names.action(notify);
    }
    for step in &workflow.steps {
        if let Some(when) = &step.when {
            names.expression(when);
        }
        match &step.body {
            Body::Run(command) => names.command(command),
            Body::Http(http) => names.http(http),
            Body::Wait(Wait::Until(template)) => names.template(template),
            Body::Wait(Wait::For(_)) => {}
            Body::Condition(condition) => names.expression(&condition.expression),
            Body::Set(entries) => entries.iter().for_each(|(_, template)| names.value(template)),
        }
        if let Some(compensate) = &step.compensate {
            names.action(&compensate.action);
        }
    }
    names.0
}

#[derive(Default)]
struct SecretNames(BTreeSet<String>);

impl SecretNames {
    fn expression(&mut self, expression: &Expression) {
        for reference in expression.references() {
            if reference.root == expr::Root::Secrets
                && let Some(name) = reference.path.first()
            {
                self.0.insert(name.clone());
            }
        }
    }

    fn template(&mut self, template: &Template) {
        template.expressions().for_each(|(expression, _)| self.expression(expression));
    }

    fn value(&mut self, template: &ValueTemplate) {
        match template {
            ValueTemplate::Literal(_) => {}
            ValueTemplate::Text(text) => self.template(text),
            ValueTemplate::List(items) => items.iter().for_each(|item| self.value(item)),
            ValueTemplate::Map(entries) => entries.iter().for_each(|(_, item)| self.value(item)),
        }
    }

    fn command(&mut self, command: &Command) {
        match &command.program {
            Program::Shell(script) => self.template(script.template()),
            Program::Argv(parts) => parts.iter().for_each(|part| self.template(part)),
        }
        command.cwd.iter().for_each(|cwd| self.template(cwd));
        command.env.iter().for_each(|(_, template)| self.template(template));
    }

    fn http(&mut self, http: &Http) {
        self.template(&http.url);
        http.headers.iter().chain(&http.query).for_each(|(_, template)| self.template(template));
        if let Some(body) = &http.body {
            self.value(body);
        }
    }

    fn action(&mut self, action: &Action) {
        match action {
            Action::Run(command) => self.command(command),
            Action::Http(http) => self.http(http),
        }
    }
}
