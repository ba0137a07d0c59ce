//! The shape of the file format, as data: every object, its fields, their types and their
//! documentation.
//!
//! Lowering reads these tables to reject unknown fields (with a "did you mean"), and
//! [`crate::schema`] walks the same tables to generate the JSON Schema. One description of the
//! format, so the two can never disagree.

/// The format version this build reads.
pub const VERSION: i64 = 1;

#[derive(Debug)]
pub struct Object {
    pub name: &'static str,
    pub doc: &'static str,
    pub fields: &'static [Field],
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub doc: &'static str,
    pub required: bool,
}

/// The type of a field, as far as a schema can express it.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// Plain text, no expressions.
    Text,
    /// An identifier: `[a-z0-9][a-z0-9_-]{0,62}`.
    Name,
    /// Text that may hold `${{ }}`.
    Template,
    /// An expression, with or without `${{ }}`, or a boolean.
    Expression,
    Integer {
        min: i64,
    },
    Number,
    Boolean,
    Duration,
    Timestamp,
    /// One of a fixed set of words.
    Word(&'static [&'static str]),
    List(&'static Ty),
    /// A mapping with free keys.
    Map(&'static Ty),
    Object(&'static Object),
    OneOf(&'static [Ty]),
    /// Any JSON value; strings may hold `${{ }}`.
    Any,
}

const fn field(name: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field { name, ty, doc, required: false }
}

const fn required(name: &'static str, ty: Ty, doc: &'static str) -> Field {
    Field { name, ty, doc, required: true }
}

pub const STRATEGIES: &[&str] = &["fail_fast", "continue", "rollback", "escalate"];
pub const INPUT_TYPES: &[&str] = &["string", "integer", "number", "boolean", "array", "object"];
pub const BACKOFFS: &[&str] = &["fixed", "linear", "exponential", "random"];
pub const JITTERS: &[&str] = &["none", "full", "equal"];
pub const ERROR_CLASSES: &[&str] = &["failure", "timeout", "lost"];
pub const ESCALATION_THEN: &[&str] = &["fail", "rollback", "skip", "retry"];
/// The fields of a step that give it its body; exactly one must be present.
pub const BODIES: &[&str] = &["run", "http", "wait", "condition", "set"];

const TEMPLATE_MAP: Ty = Ty::Map(&Ty::Template);
const NAME_LIST: Ty = Ty::List(&Ty::Name);
const COMMAND: Ty = Ty::OneOf(&[Ty::Template, Ty::List(&Ty::Template)]);
const STATUS: Ty = Ty::OneOf(&[Ty::Integer { min: 100 }, Ty::List(&Ty::Integer { min: 100 })]);

/// Fields several objects share (a step, a template, a compensation, an action).
const RUN: Field =
    field("run", COMMAND, "A shell command (string) or a program and its arguments (list).");
const HTTP_CALL: Field = field("http", Ty::Object(&HTTP), "An HTTP call.");
const WAIT_FOR: Field =
    field("wait", Ty::OneOf(&[Ty::Duration, Ty::Object(&WAIT)]), "A pause: a duration or `until`.");
const SET: Field = field("set", Ty::Map(&Ty::Any), "Computed outputs, no side effects.");
const ENV: Field = field("env", TEMPLATE_MAP, "Environment variables for the command.");
const CWD: Field = field("cwd", Ty::Template, "Working directory of the command.");

pub const WORKFLOW: Object = Object {
    name: "workflow",
    doc: "A wayline workflow (format version 1).",
    fields: &[
        field("version", Ty::Integer { min: 1 }, "Format version; only 1 exists."),
        required("name", Ty::Name, "The workflow's name: [a-z0-9][a-z0-9_-]{0,62}."),
        field("description", Ty::Text, "What the workflow does."),
        field("inputs", Ty::Map(&Ty::Object(&INPUT)), "Typed parameters of a run."),
        field("env", TEMPLATE_MAP, "Environment variables for every command step."),
        field("timeout", Ty::Duration, "Limit on the whole execution."),
        field("max_parallel", Ty::Integer { min: 1 }, "Steps running at once (default: no limit)."),
        field(
            "on_failure",
            Ty::Word(STRATEGIES),
            "What a terminal step failure does (default fail_fast).",
        ),
        field("retry", Ty::Object(&RETRY), "Default retry policy of every step."),
        field("escalation", Ty::Object(&ESCALATION), "How `escalate` reaches a human."),
        field(
            "groups",
            Ty::Map(&Ty::Object(&GROUP)),
            "Named groups of steps with a shared concurrency cap.",
        ),
        required(
            "steps",
            Ty::List(&Ty::Object(&STEP)),
            "The steps; order does not matter, `needs` does.",
        ),
        field(
            "outputs",
            Ty::Map(&Ty::Any),
            "Named values computed from the steps' outputs when the execution succeeds: the result's `outputs`.",
        ),
        field(
            "templates",
            Ty::Map(&Ty::Object(&TEMPLATE)),
            "Reusable step bodies with typed inputs; a step uses one with `uses` and `with`.",
        ),
        field(
            "imports",
            Ty::List(&Ty::Text),
            "Files whose `templates` this workflow may use, relative to this file.",
        ),
    ],
};

/// A file of templates that workflows import (`imports:`): not a workflow itself, so not
/// one of [`OBJECTS`] (the JSON Schema describes workflow files).
pub const LIBRARY: Object = Object {
    name: "template file",
    doc: "Templates for workflows that import this file.",
    fields: &[
        field("description", Ty::Text, "What the templates are for."),
        required("templates", Ty::Map(&Ty::Object(&TEMPLATE)), "The templates it offers."),
    ],
};

pub const TEMPLATE: Object = Object {
    name: "template",
    doc: "A reusable step body. Its expressions read `inputs.<name>` from its own inputs.",
    fields: &[
        field("description", Ty::Text, "What the template does."),
        field("inputs", Ty::Map(&Ty::Object(&INPUT)), "Its typed parameters, given by `with`."),
        RUN,
        HTTP_CALL,
        WAIT_FOR,
        SET,
        ENV,
        CWD,
        field("retry", Ty::Object(&RETRY), "Default retry policy of the steps that use it."),
        field("timeout", Ty::Duration, "Default limit on each attempt."),
        field("compensate", Ty::Object(&COMPENSATE), "How to undo it during rollback."),
    ],
};

/// The fields a template lends the steps that use it.
pub const TEMPLATE_LENDS: &[&str] =
    &["run", "http", "wait", "set", "env", "cwd", "retry", "timeout", "compensate"];

pub const INPUT: Object = Object {
    name: "input",
    doc: "A typed input parameter.",
    fields: &[
        required("type", Ty::Word(INPUT_TYPES), "The value's type."),
        field("required", Ty::Boolean, "A run must provide it (default false)."),
        field("default", Ty::Any, "Value used when a run does not provide one."),
        field("description", Ty::Text, "What the input means."),
        field("enum", Ty::List(&Ty::Any), "The only values allowed."),
    ],
};

pub const RETRY: Object = Object {
    name: "retry",
    doc: "Retry policy. A step's retry overrides the workflow default field by field.",
    fields: &[
        field(
            "max_attempts",
            Ty::Integer { min: 1 },
            "Attempts including the first (default 1: no retry).",
        ),
        field("backoff", Ty::Word(BACKOFFS), "How the pause grows (default fixed)."),
        field("delay", Ty::Duration, "Base pause before a retry (default 1s)."),
        field("factor", Ty::Number, "Growth factor of exponential backoff (default 2)."),
        field("max_delay", Ty::Duration, "Cap on the pause; required by random backoff."),
        field("jitter", Ty::Word(JITTERS), "Randomisation of the pause (default none)."),
        field(
            "budget",
            Ty::Duration,
            "No new attempt starts later than this after the first started.",
        ),
        field(
            "on",
            Ty::List(&Ty::Word(ERROR_CLASSES)),
            "Error classes that are retried (default all).",
        ),
    ],
};

pub const ESCALATION: Object = Object {
    name: "escalation",
    doc: "How the `escalate` strategy reaches a human.",
    fields: &[
        field("notify", Ty::Object(&ACTION), "Called when a step escalates."),
        field("timeout", Ty::Duration, "Without a decision by then, `then` applies."),
        field("then", Ty::Word(ESCALATION_THEN), "Decision applied at the timeout (default fail)."),
    ],
};

pub const ACTION: Object = Object {
    name: "action",
    doc: "A command or an HTTP call.",
    fields: &[RUN, HTTP_CALL, ENV, CWD],
};

pub const COMPENSATE: Object = Object {
    name: "compensate",
    doc: "How to undo a succeeded step during rollback.",
    fields: &[
        RUN,
        HTTP_CALL,
        ENV,
        CWD,
        field("retry", Ty::Object(&RETRY), "Retry policy of the compensation."),
        field("timeout", Ty::Duration, "Limit on each attempt."),
    ],
};

pub const GROUP: Object = Object {
    name: "group",
    doc: "A group of steps sharing a concurrency cap.",
    fields: &[
        field("max_parallel", Ty::Integer { min: 1 }, "Steps of the group running at once."),
        field("description", Ty::Text, "What the group is for."),
    ],
};

pub const STEP: Object = Object {
    name: "step",
    doc: "One step. Exactly one of run, http, wait, condition, set, or `uses` a template.",
    fields: &[
        required("id", Ty::Name, "Unique id: [a-z0-9][a-z0-9_-]{0,62}."),
        field("name", Ty::Text, "Display name."),
        field("description", Ty::Text, "What the step does."),
        field("needs", NAME_LIST, "Steps or groups that must finish first."),
        field("if", Ty::Expression, "Run only when true (default success())."),
        RUN,
        HTTP_CALL,
        WAIT_FOR,
        field("condition", Ty::Expression, "Branch: run `then` when true, `else` when false."),
        field("then", NAME_LIST, "Steps run when the condition is true."),
        field("else", NAME_LIST, "Steps run when the condition is false."),
        SET,
        field(
            "uses",
            Ty::Name,
            "A template of this file's `templates`: its body, and its defaults.",
        ),
        field("with", Ty::Map(&Ty::Any), "The template's inputs (may hold `${{ }}`)."),
        ENV,
        CWD,
        field("group", Ty::Name, "The group this step belongs to."),
        field(
            "retry",
            Ty::Object(&RETRY),
            "Retry policy (overrides the workflow default field by field).",
        ),
        field(
            "timeout",
            Ty::OneOf(&[Ty::Duration, Ty::Template]),
            "Limit on each attempt: a duration, or `${{ }}` giving one (or seconds) per attempt, e.g. from `item`.",
        ),
        field("on_failure", Ty::Word(STRATEGIES), "Strategy when this step fails terminally."),
        field(
            "allow_failure",
            Ty::Boolean,
            "With on_failure: continue, this failure does not fail the execution.",
        ),
        field("compensate", Ty::Object(&COMPENSATE), "How to undo this step during rollback."),
        field("agent", Ty::Object(&AGENT), "Run on a remote agent (server mode)."),
        field(
            "for_each",
            Ty::OneOf(&[Ty::Template, Ty::List(&Ty::Any), Ty::Map(&Ty::Any)]),
            "Run the step once per item of this list (or per key of this object, as `{key, value}`); the body reads `item` and `index`.",
        ),
        field(
            "matrix",
            Ty::Map(&Ty::Any),
            "Run the step once per combination of these axes (lists); `include` and `exclude` add and remove combinations.",
        ),
        field(
            "max_parallel",
            Ty::Integer { min: 1 },
            "Items of this fan-out running at once (default: no limit of its own).",
        ),
        field(
            "tolerate",
            Ty::OneOf(&[Ty::Integer { min: 0 }, Ty::Text]),
            "Items that may fail before the step fails: a count, or a percentage like `10%` (default 0).",
        ),
    ],
};

pub const HTTP: Object = Object {
    name: "http",
    doc: "An HTTP call.",
    fields: &[
        field("method", Ty::Text, "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS (default GET)."),
        required("url", Ty::Template, "http:// or https:// URL."),
        field("headers", TEMPLATE_MAP, "Request headers."),
        field("query", TEMPLATE_MAP, "Query parameters appended to the URL."),
        field("body", Ty::Any, "A mapping or list is sent as JSON; a string as text."),
        field("expect", Ty::Object(&EXPECT), "What counts as success (default any 2xx)."),
    ],
};

pub const EXPECT: Object = Object {
    name: "expect",
    doc: "What counts as a successful response.",
    fields: &[required("status", STATUS, "Accepted status codes.")],
};

pub const WAIT: Object = Object {
    name: "wait",
    doc: "Wait until a point in time.",
    fields: &[required("until", Ty::Template, "RFC 3339 timestamp, e.g. 2026-12-01T09:00:00Z.")],
};

pub const AGENT: Object = Object {
    name: "agent",
    doc: "Which remote agents may run the step.",
    fields: &[required("labels", NAME_LIST, "An agent must carry every label.")],
};

/// Every object of the format, the workflow first.
pub const OBJECTS: [&Object; 13] = [
    &WORKFLOW,
    &INPUT,
    &RETRY,
    &ESCALATION,
    &ACTION,
    &COMPENSATE,
    &GROUP,
    &STEP,
    &HTTP,
    &EXPECT,
    &WAIT,
    &AGENT,
    &TEMPLATE,
];

impl Object {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|field| field.name == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.fields.iter().map(|field| field.name)
    }
}
