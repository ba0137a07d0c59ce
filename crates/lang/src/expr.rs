//! Expressions (`${{ … }}`) and templates: one sandboxed engine for `if`, `condition`, `set`
//! and every templated string.
//!
//! The language is CEL (Common Expression Language): it has the `&&`, `||`, `!`, `==`, `in`
//! and `? :` people know from GitHub Actions, no loops, no I/O and no side effects. We cap the
//! length and the nesting depth before the parser sees the text (deep nesting has overflowed
//! CEL parsers' stacks elsewhere). Comprehensions can still multiply work (`a.map(x,
//! b.map(y, …))`), so evaluation is metered by our own evaluator (`eval.rs`) and stops at
//! [`MAX_EVALUATION_STEPS`], [`MAX_EVALUATION_BYTES`] and [`MAX_RESULT_BYTES`].
//!
//! wayline adds the status functions `success()`, `failure()`, `always()` and `cancelled()`.
//! They are rewritten at parse time into bindings (`@success`, …) that the caller supplies,
//! which keeps evaluation free of global state.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use cel::Env;
use cel::common::ast::{CallExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators};
use serde_json::Value;

use crate::eval;
pub use crate::eval::Meter;

/// Longest expression between `${{` and `}}`, in characters.
pub const MAX_EXPRESSION_LEN: usize = 4096;
/// Deepest nesting of an expression (parentheses, calls, operators).
pub const MAX_EXPRESSION_DEPTH: u16 = 32;
/// Longest templated string, in bytes.
pub const MAX_TEMPLATE_LEN: usize = 256 * 1024;

/// Most work one evaluation may do, in steps: one per node of the expression evaluated and
/// one per element or entry that a list, a map, a comprehension or a function touches or
/// produces (string functions: one per 16 bytes read). A million steps take 10–50 ms, so an
/// expression can iterate over every element of the largest step output (1 MiB) a few times,
/// and no expression can hold the engine for more than a blink. A template's expressions
/// share one budget.
pub const MAX_EVALUATION_STEPS: u64 = 1_000_000;

/// Most bytes of strings, lists and maps one evaluation may build (a list element counts as
/// the size of its slot, 32 bytes). Sixteen times the largest value an evaluation may return
/// ([`MAX_RESULT_BYTES`]) leaves room for intermediate values while bounding the memory an
/// expression can take: chained `replace()` calls stop here before allocating.
pub const MAX_EVALUATION_BYTES: u64 = 16 * 1024 * 1024;

/// Largest result of an evaluation, as compact JSON: 1 MiB, the same as a step's outputs may
/// be (`wayline_exec::Limits::DEFAULT_BYTES`, which this crate cannot name), so an expression
/// cannot make a value that no step could have produced. A rendered template is limited
/// alike.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

/// What an expression can name at its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Root {
    Inputs,
    Steps,
    Env,
    Secrets,
    Execution,
    Workflow,
    Attempt,
    /// `escalation.step`, `escalation.reason`: only inside `escalation.notify`.
    Escalation,
    /// The item of a fan-out step's instance.
    Item,
    /// The item's position, from 0.
    Index,
}

impl Root {
    pub const ALL: [Root; 10] = [
        Root::Inputs,
        Root::Steps,
        Root::Env,
        Root::Secrets,
        Root::Execution,
        Root::Workflow,
        Root::Attempt,
        Root::Escalation,
        Root::Item,
        Root::Index,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Root::Inputs => "inputs",
            Root::Steps => "steps",
            Root::Env => "env",
            Root::Secrets => "secrets",
            Root::Execution => "execution",
            Root::Workflow => "workflow",
            Root::Attempt => "attempt",
            Root::Escalation => "escalation",
            Root::Item => "item",
            Root::Index => "index",
        }
    }

    fn from_name(name: &str) -> Option<Root> {
        Root::ALL.into_iter().find(|root| root.name() == name)
    }
}

/// The status functions usable in `if`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusFn {
    Success,
    Failure,
    Always,
    Cancelled,
}

impl StatusFn {
    pub(crate) const ALL: [StatusFn; 4] =
        [StatusFn::Success, StatusFn::Failure, StatusFn::Always, StatusFn::Cancelled];

    pub fn name(self) -> &'static str {
        match self {
            StatusFn::Success => "success",
            StatusFn::Failure => "failure",
            StatusFn::Always => "always",
            StatusFn::Cancelled => "cancelled",
        }
    }

    fn binding(self) -> &'static str {
        match self {
            StatusFn::Success => "@success",
            StatusFn::Failure => "@failure",
            StatusFn::Always => "@always",
            StatusFn::Cancelled => "@cancelled",
        }
    }
}

/// A name an expression reads: `steps.build.outputs.tag` is root `Steps`, path
/// `["build", "outputs", "tag"]`. The path stops at the first segment that is not a constant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub root: Root,
    pub path: Vec<String>,
    /// Character offset and length of the reference inside the expression source.
    pub offset: usize,
    pub len: usize,
}

/// Something the expression names that does not exist; reported by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub name: String,
    pub function: bool,
    pub offset: usize,
    pub len: usize,
}

/// A parse error, with the character offset inside the expression source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub message: String,
    pub offset: usize,
    pub len: usize,
}

/// An error while evaluating: never retried, reported on the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError {
    pub message: String,
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EvalError {}

/// A parsed, checked expression.
#[derive(Debug, Clone)]
pub struct Expression {
    source: Arc<str>,
    ast: Arc<IdedExpr>,
    references: Vec<Reference>,
    status_fns: Vec<(StatusFn, usize)>,
    unknown: Vec<Unknown>,
    /// The whole expression is one reference (`inputs.x`, `steps.a.outputs.b`): it is read
    /// straight from the data, which keeps objects' key order and costs no evaluation.
    direct: bool,
}

impl PartialEq for Expression {
    fn eq(&self, other: &Expression) -> bool {
        self.source == other.source
    }
}

/// The status of the needs of a step, for `success()` and friends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusView {
    /// Every need succeeded (vacuously true without needs).
    pub success: bool,
    /// Some need failed.
    pub failure: bool,
    /// The execution is being cancelled or is stopping after a failure.
    pub cancelled: bool,
}

/// What an expression can read at evaluation time. Implementations return only what is asked
/// for, so evaluation costs what the expression reads, not what the execution holds.
pub trait Scope {
    /// The inputs object.
    fn inputs(&self) -> Cow<'_, Value>;
    /// `{ "status": …, "outputs": {…} }` of a step, if it exists.
    fn step(&self, id: &str) -> Option<Value>;
    /// The declared environment visible here.
    fn env(&self) -> Cow<'_, Value>;
    /// A secret's value, if it is available.
    fn secret(&self, name: &str) -> Option<String>;
    /// `{ "id": …, "started_at": … }`.
    fn execution(&self) -> Value;
    fn workflow_name(&self) -> &str;
    /// The attempt number, where it makes sense (inside a step body).
    fn attempt(&self) -> Option<u32> {
        None
    }
    /// The status of the needs, where it makes sense (inside `if`).
    fn status(&self) -> Option<StatusView> {
        None
    }
    /// `{ "step": …, "reason": … }` inside `escalation.notify`.
    fn escalation(&self) -> Option<Value> {
        None
    }
    /// The item and its position, inside an instance of a fan-out step.
    fn item(&self) -> Option<(Cow<'_, Value>, u32)> {
        None
    }
}

thread_local! {
    /// Building the standard environment costs more than parsing a typical expression; each
    /// thread builds it once. Parsing only needs its macros (`all`, `map`, …).
    static PARSE_ENV: Env = Env::stdlib();
}

/// Function names the engine knows (CEL's standard library, macros and strings extension, and
/// wayline's `urlencode` and `raw`). Validation rejects calls to anything else.
pub const FUNCTIONS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "string",
    "int",
    "uint",
    "double",
    "bool",
    "bytes",
    "type",
    "dyn",
    "has",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
    "charAt",
    "indexOf",
    "lastIndexOf",
    "join",
    "lowerAscii",
    "upperAscii",
    "trim",
    "replace",
    "split",
    "substring",
    "format",
    "reverse",
    "urlencode",
    "raw",
];

/// Identifiers that CEL resolves on its own (type names).
const TYPE_NAMES: &[&str] = &[
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "type",
    "dyn",
];

impl Expression {
    /// Parses an expression (the text inside `${{ }}`).
    ///
    /// ```
    /// use wayline_lang::expr::{Expression, Root};
    /// let e = Expression::parse("steps.test.outputs.coverage >= 80 && inputs.strict").unwrap();
    /// let roots: Vec<_> = e.references().iter().map(|r| (r.root, r.path.join("."))).collect();
    /// assert_eq!(roots, [(Root::Steps, "test.outputs.coverage".into()), (Root::Inputs, "strict".into())]);
    /// ```
    pub fn parse(source: &str) -> Result<Expression, SyntaxError> {
        let chars = source.chars().count();
        if chars > MAX_EXPRESSION_LEN {
            return Err(SyntaxError {
                message: format!(
                    "expression is {chars} characters long; the limit is {MAX_EXPRESSION_LEN}"
                ),
                offset: 0,
                len: 1,
            });
        }
        if source.trim().is_empty() {
            return Err(SyntaxError { message: "empty expression".into(), offset: 0, len: 1 });
        }
        check_nesting(source)?;
        let parser = PARSE_ENV.with(|env| env.parser().max_recursion_depth(MAX_EXPRESSION_DEPTH));
        let (mut ast, info) = match parser.parse_with_source_info(source) {
            Ok(parsed) => parsed,
            Err(errors) => return Err(syntax_error(source, errors)),
        };
        let mut walker =
            Walker { source, info: &info, scopes: Vec::new(), out: Collected::default() };
        walker.walk(&mut ast);
        let direct = walker.chain(&ast).is_some();
        let Collected { references, status_fns, unknown } = walker.out;
        let direct = direct && references.len() == 1 && status_fns.is_empty() && unknown.is_empty();
        Ok(Expression {
            source: source.into(),
            ast: Arc::new(ast),
            references,
            status_fns,
            unknown,
            direct,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the whole expression is a call of the global function `name`, as in `raw(x)`.
    pub fn is_call_to(&self, name: &str) -> bool {
        matches!(&self.ast.expr, Expr::Call(call) if call.target.is_none() && call.func_name == name)
    }

    pub fn references(&self) -> &[Reference] {
        &self.references
    }

    /// Status functions called, with their character offsets.
    pub fn status_functions(&self) -> &[(StatusFn, usize)] {
        &self.status_fns
    }

    /// Names that are neither a known root, a comprehension variable nor a known function.
    pub fn unknown_names(&self) -> &[Unknown] {
        &self.unknown
    }

    /// Evaluates the expression against `scope`.
    pub fn evaluate(&self, scope: &dyn Scope) -> Result<Value, EvalError> {
        self.evaluate_metered(scope, &mut Meter::default())
    }

    /// Evaluates the expression, counting its work on `meter`: the expressions of one
    /// template share one budget.
    pub(crate) fn evaluate_metered(
        &self,
        scope: &dyn Scope,
        meter: &mut Meter,
    ) -> Result<Value, EvalError> {
        if self.direct {
            return self.lookup(scope);
        }
        let bound = self.bind(scope)?;
        let variables: Vec<(&'static str, &Value)> =
            bound.iter().map(|(name, value)| (*name, value.as_ref())).collect();
        eval::evaluate(&self.ast, &variables, meter).map_err(|error| self.error(error))
    }

    fn error(&self, error: impl std::fmt::Display) -> EvalError {
        EvalError { message: format!("`{}`: {error}", self.source) }
    }

    /// Reads a plain reference from the data without the CEL engine.
    fn lookup(&self, scope: &dyn Scope) -> Result<Value, EvalError> {
        let reference = &self.references[0];
        let missing = |what: &str| EvalError { message: format!("`{}`: {what}", self.source) };
        let step;
        let secret;
        let workflow;
        let other;
        let (start, path): (Cow<'_, Value>, &[String]) = match reference.root {
            Root::Inputs => (scope.inputs(), &reference.path),
            Root::Env => (scope.env(), &reference.path),
            Root::Steps => {
                let Some(id) = reference.path.first() else { return Err(missing("name a step")) };
                step = scope.step(id).ok_or_else(|| missing(&format!("no step `{id}`")))?;
                (Cow::Borrowed(&step), &reference.path[1..])
            }
            Root::Secrets => {
                let Some(name) = reference.path.first() else {
                    return Err(missing("name a secret"));
                };
                secret = Value::String(scope.secret(name).ok_or_else(|| EvalError {
                    message: format!("secret `{name}` is not available"),
                })?);
                (Cow::Borrowed(&secret), &reference.path[1..])
            }
            Root::Workflow => {
                workflow = serde_json::json!({ "name": scope.workflow_name() });
                (Cow::Borrowed(&workflow), &reference.path)
            }
            Root::Execution => {
                other = scope.execution();
                (Cow::Borrowed(&other), &reference.path)
            }
            Root::Escalation => {
                other = scope.escalation().unwrap_or(Value::Null);
                (Cow::Borrowed(&other), &reference.path)
            }
            Root::Attempt => match scope.attempt() {
                Some(attempt) => return Ok(Value::from(attempt)),
                None => return Err(missing("`attempt` is only known inside a step body")),
            },
            Root::Index => match scope.item() {
                Some((_, index)) => return Ok(Value::from(index)),
                None => return Err(missing("`index` is only known in a fan-out step")),
            },
            Root::Item => match scope.item() {
                Some((item, _)) => {
                    other = item.into_owned();
                    (Cow::Borrowed(&other), &reference.path)
                }
                None => return Err(missing("`item` is only known in a fan-out step")),
            },
        };
        let mut value: &Value = start.as_ref();
        for key in path {
            value = match value {
                Value::Object(map) => {
                    map.get(key).ok_or_else(|| missing(&format!("No such key: {key}")))?
                }
                other => return Err(missing(&format!("cannot read `{key}` of {other}"))),
            };
        }
        eval::check_size(value).map_err(|error| self.error(error))?;
        Ok(value.clone())
    }

    /// The variables the expression reads, by name: each root it names once, `steps` with
    /// only the steps it names that exist, `secrets` with only the secrets it names, and the
    /// status bindings of the status functions it calls.
    fn bind<'s>(
        &self,
        scope: &'s dyn Scope,
    ) -> Result<Vec<(&'static str, Cow<'s, Value>)>, EvalError> {
        let mut bound: Vec<(&'static str, Cow<'s, Value>)> = Vec::new();
        let mut roots: Vec<Root> = Vec::new();
        let mut steps = serde_json::Map::new();
        let mut secrets = serde_json::Map::new();
        for reference in &self.references {
            match reference.root {
                Root::Steps => {
                    // A bare `steps` has no path; validation rejects it, evaluation binds nothing.
                    if let Some(id) = reference.path.first()
                        && !steps.contains_key(id)
                        && let Some(step) = scope.step(id)
                    {
                        steps.insert(id.clone(), step);
                    }
                }
                Root::Secrets => {
                    if let Some(name) = reference.path.first() {
                        let value = scope.secret(name).ok_or_else(|| EvalError {
                            message: format!("secret `{name}` is not available"),
                        })?;
                        secrets.insert(name.clone(), Value::String(value));
                    }
                }
                root if !roots.contains(&root) => {
                    roots.push(root);
                    let value = match root {
                        Root::Inputs => scope.inputs(),
                        Root::Env => scope.env(),
                        Root::Execution => Cow::Owned(scope.execution()),
                        Root::Workflow => {
                            Cow::Owned(serde_json::json!({ "name": scope.workflow_name() }))
                        }
                        Root::Attempt => match scope.attempt() {
                            Some(attempt) => Cow::Owned(Value::from(attempt)),
                            None => {
                                return Err(EvalError {
                                    message: "`attempt` is only known inside a step body".into(),
                                });
                            }
                        },
                        Root::Escalation => Cow::Owned(scope.escalation().unwrap_or(Value::Null)),
                        Root::Item | Root::Index => match scope.item() {
                            Some((item, _)) if root == Root::Item => item,
                            Some((_, index)) => Cow::Owned(Value::from(index)),
                            None => {
                                return Err(EvalError {
                                    message: format!(
                                        "`{}` is only known in a fan-out step",
                                        root.name()
                                    ),
                                });
                            }
                        },
                        Root::Steps | Root::Secrets => continue,
                    };
                    bound.push((root.name(), value));
                }
                _ => {}
            }
        }
        if !steps.is_empty() {
            bound.push(("steps", Cow::Owned(Value::Object(steps))));
        }
        if !secrets.is_empty() {
            bound.push(("secrets", Cow::Owned(Value::Object(secrets))));
        }
        if !self.status_fns.is_empty() {
            let status = scope.status().ok_or_else(|| EvalError {
                message: "status functions (success(), failure(), …) only work in `if`".into(),
            })?;
            for function in StatusFn::ALL {
                if self.status_fns.iter().any(|(called, _)| *called == function) {
                    let value = match function {
                        StatusFn::Success => status.success && !status.cancelled,
                        StatusFn::Failure => status.failure,
                        StatusFn::Always => true,
                        StatusFn::Cancelled => status.cancelled,
                    };
                    bound.push((function.binding(), Cow::Owned(Value::Bool(value))));
                }
            }
        }
        Ok(bound)
    }
}

/// Rejects nesting deeper than the cap before the parser recurses into it.
fn check_nesting(source: &str) -> Result<(), SyntaxError> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (offset, c) in source.chars().enumerate() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_EXPRESSION_DEPTH as usize {
                    return Err(SyntaxError {
                        message: format!(
                            "expression nests deeper than {MAX_EXPRESSION_DEPTH} levels"
                        ),
                        offset,
                        len: 1,
                    });
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn syntax_error(source: &str, errors: cel::ParseErrors) -> SyntaxError {
    let Some(first) = errors.errors.into_iter().next() else {
        return SyntaxError { message: "invalid expression".into(), offset: 0, len: 1 };
    };
    let (line, column) = (first.pos.0.max(1) as usize, first.pos.1.max(0) as usize);
    let offset: usize =
        source.split_inclusive('\n').take(line - 1).map(|l| l.chars().count()).sum::<usize>()
            + column;
    let offset = offset.min(source.chars().count().saturating_sub(1));
    SyntaxError { message: tidy_message(&first.msg), offset, len: 1 }
}

/// The parser's messages list every acceptable token; a person needs less.
fn tidy_message(message: &str) -> String {
    let message = message.strip_prefix("Syntax error: ").unwrap_or(message);
    let message = match message.find(" expecting {") {
        Some(at) => format!("{}; expected a value", &message[..at]),
        None => message.to_owned(),
    };
    message
        .replace("mismatched input '<EOF>'", "unexpected end of expression")
        .replace("extraneous input", "unexpected")
        .replace("mismatched input", "unexpected")
}

#[derive(Default)]
struct Collected {
    references: Vec<Reference>,
    status_fns: Vec<(StatusFn, usize)>,
    unknown: Vec<Unknown>,
}

struct Walker<'a> {
    source: &'a str,
    info: &'a cel::common::ast::SourceInfo,
    /// Comprehension variables in scope (`x` in `list.all(x, x > 0)`).
    scopes: Vec<String>,
    out: Collected,
}

impl Walker<'_> {
    /// The byte range of the token a node was made from. The parser records byte offsets of
    /// the first and the last character (inclusive).
    fn bytes(&self, id: u64) -> Option<(usize, usize)> {
        let (start, stop) = self.info.offset_for(id)?;
        let (start, stop) = (start as usize, stop as usize);
        if !self.source.is_char_boundary(start) || !self.source.is_char_boundary(stop) {
            return None;
        }
        let end = stop + self.source[stop..].chars().next().map_or(0, char::len_utf8);
        Some((start, end.max(start)))
    }

    /// Character offset and length of a node's token.
    fn span(&self, id: u64) -> (usize, usize) {
        match self.bytes(id) {
            Some((start, end)) => {
                (self.chars(start), self.source[start..end].chars().count().max(1))
            }
            None => (0, 1),
        }
    }

    fn chars(&self, byte: usize) -> usize {
        self.source[..byte].chars().count()
    }

    /// Character offset and length of a call's function name. The parser places a call at its
    /// `(`; the name is written just before it.
    fn call_span(&self, id: u64, name: &str) -> (usize, usize) {
        let name = name.trim_start_matches('.');
        if let Some((paren, _)) = self.bytes(id) {
            let before = self.source[..paren].trim_end();
            if let Some(start) = before.strip_suffix(name).map(str::len) {
                return (self.chars(start), name.chars().count().max(1));
            }
        }
        self.span(id)
    }

    /// The end (in bytes) of a reference chain starting at `start`: the root name followed by
    /// `segments` selections, each `.name` or `["name"]`.
    fn chain_end(&self, start: usize, segments: usize) -> usize {
        let text = self.source.as_bytes();
        let ident = |mut at: usize| {
            while at < text.len() && (text[at].is_ascii_alphanumeric() || text[at] == b'_') {
                at += 1;
            }
            at
        };
        let space = |mut at: usize| {
            while at < text.len() && text[at].is_ascii_whitespace() {
                at += 1;
            }
            at
        };
        let mut end = ident(start);
        for _ in 0..segments {
            let at = space(end);
            match text.get(at) {
                Some(b'.') => {
                    let name = space(at + 1);
                    let after = ident(name);
                    if after == name {
                        break;
                    }
                    end = after;
                }
                Some(b'[') => {
                    let open = space(at + 1);
                    let Some(&quote @ (b'\'' | b'"')) = text.get(open) else { break };
                    let mut i = open + 1;
                    while i < text.len() && text[i] != quote {
                        i += if text[i] == b'\\' { 2 } else { 1 };
                    }
                    let close = space(i + 1);
                    if text.get(close) != Some(&b']') {
                        break;
                    }
                    end = close + 1;
                }
                _ => break,
            }
        }
        end.min(text.len())
    }

    fn walk(&mut self, node: &mut IdedExpr) {
        if let Some((root, path, root_id)) = self.chain(node) {
            self.reference(root, path, root_id);
            return;
        }
        match &mut node.expr {
            Expr::Call(call) => {
                if call.target.is_none()
                    && call.args.is_empty()
                    && let Some(function) =
                        StatusFn::ALL.into_iter().find(|f| f.name() == call.func_name)
                {
                    let (offset, _) = self.call_span(node.id, function.name());
                    self.out.status_fns.push((function, offset));
                    node.expr = Expr::Ident(function.binding().to_owned());
                    return;
                }
                self.check_function(call, node.id);
                if let Some(target) = &mut call.target {
                    self.walk(target);
                }
                for arg in &mut call.args {
                    self.walk(arg);
                }
            }
            Expr::Comprehension(comprehension) => {
                self.walk(&mut comprehension.iter_range);
                self.walk(&mut comprehension.accu_init);
                let depth = self.scopes.len();
                self.scopes.push(comprehension.iter_var.clone());
                if let Some(second) = &comprehension.iter_var2 {
                    self.scopes.push(second.clone());
                }
                self.scopes.push(comprehension.accu_var.clone());
                self.walk(&mut comprehension.loop_cond);
                self.walk(&mut comprehension.loop_step);
                self.walk(&mut comprehension.result);
                self.scopes.truncate(depth);
            }
            Expr::Ident(name) => {
                let name = name.clone();
                if !self.scopes.contains(&name) && !TYPE_NAMES.contains(&name.as_str()) {
                    let (offset, len) = self.span(node.id);
                    self.out.unknown.push(Unknown { name, function: false, offset, len });
                }
            }
            Expr::List(list) => list.elements.iter_mut().for_each(|e| self.walk(e)),
            Expr::Map(map) => {
                for entry in &mut map.entries {
                    match &mut entry.expr {
                        EntryExpr::MapEntry(entry) => {
                            self.walk(&mut entry.key);
                            self.walk(&mut entry.value);
                        }
                        EntryExpr::StructField(field) => self.walk(&mut field.value),
                    }
                }
            }
            Expr::Struct(object) => {
                for entry in &mut object.entries {
                    if let EntryExpr::StructField(field) = &mut entry.expr {
                        self.walk(&mut field.value);
                    }
                }
            }
            Expr::Select(select) => self.walk(&mut select.operand),
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    fn check_function(&mut self, call: &CallExpr, id: u64) {
        let name = call.func_name.as_str();
        let operator = name.starts_with('_')
            || name.starts_with('@')
            || name.starts_with('!')
            || name.starts_with('-');
        if !operator && !FUNCTIONS.contains(&name) && name != "strings.quote" {
            let (offset, len) = self.call_span(id, name);
            self.out.unknown.push(Unknown { name: name.to_owned(), function: true, offset, len });
        }
    }

    /// Recognises `root.a.b`, `root["a"].b` and `root.a["b"]` chains rooted at a known name.
    /// Returns the root, the constant path and the id of the node the chain starts at.
    fn chain(&self, node: &IdedExpr) -> Option<(Root, Vec<String>, u64)> {
        let mut path = Vec::new();
        let mut current = node;
        loop {
            match &current.expr {
                Expr::Select(select) if !select.test => {
                    path.push(select.field.clone());
                    current = &select.operand;
                }
                Expr::Call(call)
                    if call.func_name == operators::INDEX
                        && call.target.is_none()
                        && call.args.len() == 2 =>
                {
                    let Expr::Literal(LiteralValue::String(key)) = &call.args[1].expr else {
                        // A computed index: the chain before it is still a reference.
                        return None;
                    };
                    path.push(key.inner().to_string());
                    current = &call.args[0];
                }
                Expr::Ident(name) if !self.scopes.contains(name) => {
                    let root = Root::from_name(name)?;
                    path.reverse();
                    return Some((root, path, current.id));
                }
                _ => return None,
            }
        }
    }

    fn reference(&mut self, root: Root, path: Vec<String>, root_id: u64) {
        let (offset, len) = match self.bytes(root_id) {
            Some((start, _)) => {
                let end = self.chain_end(start, path.len());
                (self.chars(start), self.source[start..end].chars().count())
            }
            None => (0, 1),
        };
        let len = len.max(root.name().len());
        self.out.references.push(Reference { root, path, offset, len });
    }
}

// ----- templates -----

/// Expressions already parsed while loading one file, by source text: workflows repeat
/// expressions (`${{ inputs.version }}` in many steps), and parsing is the costly part of
/// loading. An [`Expression`] shares its syntax tree, so a hit is a cheap clone.
#[derive(Debug, Default)]
pub(crate) struct ExpressionCache {
    parsed: HashMap<Box<str>, Expression>,
}

impl ExpressionCache {
    pub(crate) fn parse(&mut self, source: &str) -> Result<Expression, SyntaxError> {
        if let Some(expression) = self.parsed.get(source) {
            return Ok(expression.clone());
        }
        let expression = Expression::parse(source)?;
        self.parsed.insert(source.into(), expression.clone());
        Ok(expression)
    }
}

/// A string that may hold `${{ }}` expressions.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    /// An expression and the character offset of its source inside the template.
    Expr(Expression, usize),
}

/// A template error at a character offset inside the template.
pub type TemplateError = SyntaxError;

impl Template {
    /// Parses `text`, finding each `${{ … }}`. A `}}` inside a quoted string of the expression
    /// does not close it.
    ///
    /// ```
    /// use wayline_lang::expr::Template;
    /// let t = Template::parse("deploy ${{ inputs.version }} now").unwrap();
    /// assert_eq!(t.expressions().count(), 1);
    /// assert!(Template::parse("plain").unwrap().as_literal().is_some());
    /// ```
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        Template::parse_with(text, &mut Expression::parse)
    }

    /// Like [`Template::parse`], reusing the expressions `cache` already parsed.
    pub(crate) fn parse_cached(
        text: &str,
        cache: &mut ExpressionCache,
    ) -> Result<Template, TemplateError> {
        Template::parse_with(text, &mut |source| cache.parse(source))
    }

    fn parse_with(
        text: &str,
        parse: &mut dyn FnMut(&str) -> Result<Expression, SyntaxError>,
    ) -> Result<Template, TemplateError> {
        if text.len() > MAX_TEMPLATE_LEN {
            return Err(SyntaxError {
                message: format!(
                    "text is {} bytes long; the limit is {MAX_TEMPLATE_LEN}",
                    text.len()
                ),
                offset: 0,
                len: 1,
            });
        }
        let mut parts = Vec::new();
        let mut rest = text;
        let mut consumed_chars = 0usize;
        while let Some(start) = rest.find("${{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let open_chars = consumed_chars + rest[..start].chars().count();
            let inner = &rest[start + 3..];
            let Some(end) = closing(inner) else {
                return Err(SyntaxError {
                    message: "`${{` is never closed with `}}`".into(),
                    offset: open_chars,
                    len: 3,
                });
            };
            let source = &inner[..end];
            let leading = source.len() - source.trim_start().len();
            let expression_offset = open_chars + 3 + source[..leading].chars().count();
            let expression = parse(source.trim()).map_err(|error| SyntaxError {
                offset: expression_offset + error.offset,
                ..error
            })?;
            parts.push(Part::Expr(expression, expression_offset));
            let used = start + 3 + end + 2;
            consumed_chars += rest[..used].chars().count();
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The text, when the template holds no expression.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// The single expression, when the whole string is exactly one `${{ }}`.
    pub fn as_expression(&self) -> Option<&Expression> {
        match self.parts.as_slice() {
            [Part::Expr(expression, _)] => Some(expression),
            _ => None,
        }
    }

    pub fn expressions(&self) -> impl Iterator<Item = (&Expression, usize)> {
        self.parts.iter().filter_map(|part| match part {
            Part::Expr(expression, offset) => Some((expression, *offset)),
            Part::Text(_) => None,
        })
    }

    /// Evaluates to a typed value: a template that is exactly one expression keeps the
    /// expression's type; anything else is a string.
    pub fn evaluate(&self, scope: &dyn Scope) -> Result<Value, EvalError> {
        self.evaluate_with(scope, &mut Meter::default())
    }

    /// Like [`Template::evaluate`], counting the work on `meter`: the templates of one step
    /// (the values of a `set`) share one budget.
    pub fn evaluate_with(&self, scope: &dyn Scope, meter: &mut Meter) -> Result<Value, EvalError> {
        match self.as_expression() {
            Some(expression) => expression.evaluate_metered(scope, meter),
            None => self.render_with(scope, meter, |text| text.to_owned()).map(Value::String),
        }
    }

    /// Renders to a string, passing each substituted value through `quote` (an encoding for
    /// where the text goes; identity for plain text).
    pub fn render(
        &self,
        scope: &dyn Scope,
        quote: impl Fn(&str) -> String,
    ) -> Result<String, EvalError> {
        // The expressions of one template share one budget: many small expressions in one
        // string cannot do more work than one large one.
        self.render_with(scope, &mut Meter::default(), quote)
    }

    fn render_with(
        &self,
        scope: &dyn Scope,
        meter: &mut Meter,
        quote: impl Fn(&str) -> String,
    ) -> Result<String, EvalError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Expr(expression, _) => {
                    let value = expression.evaluate_metered(scope, meter)?;
                    out.push_str(&quote(&to_text(&value)));
                    check_rendered(&out, expression)?;
                }
            }
        }
        Ok(out)
    }
}

/// A rendered template is a result like any other: at most [`MAX_RESULT_BYTES`]. Checked
/// after each substitution, so a template of many large values stops early.
fn check_rendered(out: &str, expression: &Expression) -> Result<(), EvalError> {
    if out.len() > MAX_RESULT_BYTES {
        return Err(expression.error(format_args!(
            "the text of this template grows larger than {MAX_RESULT_BYTES} bytes (the limit, \
             the same as for a step's outputs); substitute smaller values"
        )));
    }
    Ok(())
}

/// How a value reads when substituted into a string: strings as they are, `null` as nothing,
/// everything else as compact JSON.
pub fn to_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The byte ranges of the `${{ … }}` in `text`, delimiters included, as [`Template::parse`]
/// finds them.
///
/// ```
/// assert_eq!(wayline_lang::expr::expression_ranges("a ${{ x }} b ${{ 'y}}' }}"), [2..10, 13..25]);
/// ```
pub fn expression_ranges(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("${{") {
        let open = from + start;
        let Some(end) = closing(&text[open + 3..]) else { break };
        let close = open + 3 + end + 2;
        ranges.push(open..close);
        from = close;
    }
    ranges
}

/// Finds the `}}` that closes an expression: the first one outside quoted strings and outside
/// the expression's own braces, so that `${{ {'a': 1} }}` ends after the map and the shell's
/// `${X:-${{ v }}}` ends right after `v`.
fn closing(inner: &str) -> Option<usize> {
    let bytes = inner.as_bytes();
    let mut quote: Option<u8> = None;
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'{' => depth += 1,
                b'}' if depth == 0 && bytes.get(i + 1) == Some(&b'}') => return Some(i),
                b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixture;

    impl Scope for Fixture {
        fn inputs(&self) -> Cow<'_, Value> {
            Cow::Owned(json!({ "version": "1.2", "replicas": 3 }))
        }
        fn step(&self, id: &str) -> Option<Value> {
            (id == "test").then(|| json!({ "status": "succeeded", "outputs": { "coverage": 85 } }))
        }
        fn env(&self) -> Cow<'_, Value> {
            Cow::Owned(json!({ "RUST_LOG": "info" }))
        }
        fn secret(&self, name: &str) -> Option<String> {
            (name == "TOKEN").then(|| "s3cret".to_owned())
        }
        fn execution(&self) -> Value {
            json!({ "id": "ex1", "started_at": "2026-01-01T00:00:00Z" })
        }
        fn workflow_name(&self) -> &str {
            "demo"
        }
        fn status(&self) -> Option<StatusView> {
            Some(StatusView { success: true, failure: false, cancelled: false })
        }
    }

    fn eval(text: &str) -> Value {
        Template::parse(text).unwrap().evaluate(&Fixture).unwrap()
    }

    #[test]
    fn whole_templates_keep_their_type() {
        assert_eq!(eval("${{ inputs.replicas }}"), json!(3));
        assert_eq!(eval("${{ steps.test.outputs.coverage >= 80 }}"), json!(true));
        assert_eq!(eval("${{ {'a': [1, 2]} }}"), json!({ "a": [1, 2] }));
        assert_eq!(eval("v${{ inputs.version }}"), json!("v1.2"));
        assert_eq!(eval("n=${{ inputs.replicas }}"), json!("n=3"));
    }

    #[test]
    fn status_functions_and_context() {
        assert_eq!(eval("${{ success() && !failure() }}"), json!(true));
        assert_eq!(eval("${{ workflow.name + '/' + execution.id }}"), json!("demo/ex1"));
        assert_eq!(eval("${{ secrets.TOKEN }}"), json!("s3cret"));
        assert_eq!(eval("${{ 'x'.upperAscii() }}"), json!("X"));
        assert_eq!(eval("${{ [1, 2, 3].all(x, x > 0) }}"), json!(true));
    }

    #[test]
    fn references_are_found_through_brackets_and_not_through_locals() {
        let e = Expression::parse("steps['deploy-eu'].outputs.id + [1].map(x, x)[0]").unwrap();
        assert_eq!(e.references()[0].path, ["deploy-eu", "outputs", "id"]);
        assert!(e.unknown_names().is_empty(), "{:?}", e.unknown_names());
        let e = Expression::parse("foo + sizee(inputs)").unwrap();
        let names: Vec<_> = e.unknown_names().iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["foo", "sizee"]);
    }

    #[test]
    fn every_listed_function_exists_in_the_engine() {
        for name in FUNCTIONS {
            if ["has", "all", "exists", "exists_one", "map", "filter"].contains(name) {
                continue; // macros: expanded at parse time
            }
            let global = Expression::parse(&format!("{name}()")).unwrap().evaluate(&Fixture);
            let member = Expression::parse(&format!("''.{name}()")).unwrap().evaluate(&Fixture);
            let undeclared = |result: Result<Value, EvalError>| {
                result.is_err_and(|error| error.message.contains("Undeclared reference"))
            };
            assert!(!(undeclared(global) && undeclared(member)), "{name} is not in the engine");
        }
    }

    #[test]
    fn spans_count_characters_and_cover_whole_names() {
        let e = Expression::parse("'é' + steps['a-b'].outputs.x + upper(1) + 'x'.nope()").unwrap();
        let reference = &e.references()[0];
        assert_eq!((reference.offset, reference.len), (6, "steps['a-b'].outputs.x".len()));
        let unknown: Vec<(&str, usize, usize)> =
            e.unknown_names().iter().map(|u| (u.name.as_str(), u.offset, u.len)).collect();
        assert_eq!(unknown, [("upper", 31, 5), ("nope", 46, 4)]);
        let e = Expression::parse("inputs.a &&  failure ()").unwrap();
        assert_eq!(e.status_functions(), [(StatusFn::Failure, 13)]);
        let e = Expression::parse("nope").unwrap();
        assert_eq!((e.unknown_names()[0].offset, e.unknown_names()[0].len), (0, 4));
    }

    #[test]
    fn templates_report_positions() {
        let error = Template::parse("echo ${{ inputs.x + }}").unwrap_err();
        assert_eq!(error.offset, 18, "{error:?}");
        let error = Template::parse("echo ${{ inputs.x").unwrap_err();
        assert_eq!(error.offset, 5);
        assert_eq!(error.message, "`${{` is never closed with `}}`");
    }

    #[test]
    fn a_template_closes_at_the_first_braces_outside_the_expression() {
        assert_eq!(eval("${{ {'a': {'b': 1}} }}"), json!({ "a": { "b": 1 } }));
        assert_eq!(eval("${{ {'a': {'b': 1}}}}"), json!({ "a": { "b": 1 } }));
        assert_eq!(eval("${X:-${{ inputs.version }}}"), json!("${X:-1.2}"));
        assert_eq!(eval("${{ '}}' }}}"), json!("}}}"));
    }

    #[test]
    fn templates_sharing_a_meter_share_the_budget() {
        let ten = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]";
        let heavy = format!(
            "${{{{ {ten}.map(a, {ten}.map(b, {ten}.map(c, {ten}.map(d, {ten}.map(e, a))))).size() }}}}"
        );
        let template = Template::parse(&heavy).unwrap();
        assert_eq!(template.evaluate(&Fixture).unwrap(), json!(10), "one alone fits the budget");
        let mut meter = Meter::default();
        let results: Vec<_> =
            (0..20).map(|_| template.evaluate_with(&Fixture, &mut meter)).collect();
        let error = results.into_iter().find_map(Result::err).expect("the shared budget runs out");
        assert!(error.message.contains("1000000 steps"), "{error}");
    }

    #[test]
    fn limits_are_enforced() {
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert!(Expression::parse(&deep).unwrap_err().message.contains("nests deeper"));
        let long = "1 + ".repeat(2000) + "1";
        assert!(Expression::parse(&long).unwrap_err().message.contains("limit"));
    }
}
