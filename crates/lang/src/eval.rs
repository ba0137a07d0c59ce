//! The evaluator of expressions: a walk over the parsed CEL tree that meters its own work and
//! memory, so that no workflow can make the engine spin or fill its memory.
//!
//! The `cel` crate parses expressions (and expands the macros `all`, `exists`, `map`, … into
//! comprehensions); its interpreter has no way to stop an evaluation, so a short expression
//! could build 10^8 list elements or a gigabyte of text. This evaluator implements the same
//! language with the same results — the differential property test in `tests/it/eval.rs`
//! holds it to the `cel` crate's interpreter — and charges every evaluation against the
//! limits of [`crate::expr`]:
//!
//! - **steps**: one for every node evaluated and every element or entry that a list, a map, a
//!   comprehension iteration or a function touches or produces; string functions count one
//!   step per [`SCAN_BYTES_PER_STEP`] bytes they read.
//! - **bytes**: every string, list and map built counts its size when it is built, before
//!   memory is taken for it (a `replace` computes the length of its result first).
//! - **result**: the result's size as compact JSON, measured without building it.
//!
//! Values borrow the bound JSON data and the syntax tree wherever they can: reading
//! `inputs.files[3]` copies nothing.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::rc::Rc;

use cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, ListExpr, LiteralValue, MapExpr,
    operators,
};
use serde::Serialize;
use serde_json::Value as Json;

use crate::expr::{MAX_EVALUATION_BYTES, MAX_EVALUATION_STEPS, MAX_RESULT_BYTES};

/// Bytes of a string one step reads. Scanning memory is much cheaper than evaluating a node:
/// at one step per node, a step costs about as much as reading this many bytes.
pub const SCAN_BYTES_PER_STEP: u64 = 16;

/// Steps charged for compiling a regular expression: compiling a short pattern with Unicode
/// classes takes up to a millisecond, a hundred times the cost of most other steps together.
/// The last pattern compiled is kept, so matching many strings against one pattern pays once.
const REGEX_COMPILE_STEPS: u64 = 10_000;

/// Steps charged per byte a regular expression searches. The regex crate matches in linear
/// time, but with Unicode word boundaries and a large pattern it slows to ~100 ns per byte,
/// several times a step: two steps per byte keep a whole budget of matching near 50 ms.
const REGEX_STEPS_PER_BYTE: u64 = 2;

/// Largest compiled regular expression. The `cel` crate used the regex crate's default of
/// 10 MB, with which one pattern could search a megabyte for seconds; legitimate patterns are
/// far below this.
const REGEX_SIZE_LIMIT: usize = 1024 * 1024;

/// Deepest evaluation: nodes being evaluated inside one another. Brackets nest at most 32
/// deep, but operator and method chains need none: `1 + 1 + …` is two thousand levels in 4096
/// characters. Each level takes a few hundred bytes of stack (over a kilobyte in a debug
/// build); this keeps the deepest evaluation well inside a 2 MiB worker thread, as an error
/// rather than an overflow.
const MAX_DEPTH: u32 = 1024;

/// Bytes counted for each element of a list that is built: the size of its slot.
const ELEMENT_BYTES: u64 = std::mem::size_of::<Value<'static>>() as u64;

/// Bytes counted for each entry of a map that is built.
const ENTRY_BYTES: u64 = std::mem::size_of::<(Key<'static>, Value<'static>)>() as u64;

/// How much an evaluation has used so far. Several expressions may share one meter (the parts
/// of one template), and then share the limits.
#[derive(Debug, Default)]
pub struct Meter {
    steps: u64,
    bytes: u64,
}

impl Meter {
    fn step(&mut self, steps: u64) -> Result<(), Error> {
        self.steps = self.steps.saturating_add(steps);
        if self.steps > MAX_EVALUATION_STEPS { Err(Error::Steps) } else { Ok(()) }
    }

    fn scan(&mut self, bytes: usize) -> Result<(), Error> {
        self.step(bytes as u64 / SCAN_BYTES_PER_STEP)
    }

    /// Counts `bytes` about to be built; refuses before they are.
    pub(crate) fn allocate(&mut self, bytes: u64) -> Result<(), Error> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > MAX_EVALUATION_BYTES { Err(Error::Bytes) } else { Ok(()) }
    }

    fn elements(&mut self, count: usize) -> Result<(), Error> {
        self.step(count as u64)?;
        self.allocate((count as u64).saturating_mul(ELEMENT_BYTES))
    }
}

/// Why an evaluation stopped.
#[derive(Debug)]
pub enum Error {
    /// A key the data does not have (`has()` turns it into `false`).
    NoSuchKey(String),
    /// Any other failure of the expression on this data.
    Failed(String),
    /// The evaluation did more than [`MAX_EVALUATION_STEPS`] steps.
    Steps,
    /// The evaluation built more than [`MAX_EVALUATION_BYTES`] bytes.
    Bytes,
    /// The result is larger than [`MAX_RESULT_BYTES`] as JSON.
    Result,
}

impl Error {
    /// Limits are never absorbed: not by `||`, `&&`, `all()`, `exists()`, `[?…]` or `.?`,
    /// which turn other errors into values.
    fn is_limit(&self) -> bool {
        matches!(self, Error::Steps | Error::Bytes | Error::Result)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSuchKey(key) => write!(f, "No such key: {key}"),
            Error::Failed(message) => f.write_str(message),
            Error::Steps => write!(
                f,
                "the expression did more than {MAX_EVALUATION_STEPS} steps of work (the limit \
                 per evaluation); make it do less: iterate over less data, or split the work \
                 between steps"
            ),
            Error::Bytes => write!(
                f,
                "the expression built more than {MAX_EVALUATION_BYTES} bytes of strings, lists \
                 and maps (the limit per evaluation); build smaller values, or split the work \
                 between steps"
            ),
            Error::Result => write!(
                f,
                "the result is larger than {MAX_RESULT_BYTES} bytes as JSON (the limit, the \
                 same as for a step's outputs); return a smaller value"
            ),
        }
    }
}

/// Evaluates `expr` with `variables` bound and returns the result as JSON.
pub fn evaluate<'a>(
    expr: &'a IdedExpr,
    variables: &[(&'static str, &'a Json)],
    meter: &mut Meter,
) -> Result<Json, Error> {
    let mut evaluator = Evaluator { variables, locals: Vec::new(), meter, depth: 0, regex: None };
    let value = evaluator.eval(expr)?;
    check_size(&value)?;
    serde_json::to_value(&value)
        .map_err(|error| Error::Failed(format!("the result cannot be represented: {error}")))
}

/// Checks that `value` is at most [`MAX_RESULT_BYTES`] as compact JSON, stopping as soon as it
/// is known to be larger: a list may hold the same large string a thousand times.
pub fn check_size(value: &impl Serialize) -> Result<(), Error> {
    let mut counter = Counter { left: MAX_RESULT_BYTES };
    serde_json::to_writer(&mut counter, value).map_err(|_| Error::Result)
}

/// A writer that only counts, and fails once more than its allowance is written.
struct Counter {
    left: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.left = self.left.checked_sub(buf.len()).ok_or(std::io::ErrorKind::FileTooLarge)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ----- values -----

/// A string or byte string that is either borrowed (from the data or the syntax tree) or
/// built during the evaluation and shared.
enum Shared<'a, T: ?Sized + ToOwned> {
    Borrowed(&'a T),
    Owned(Rc<T::Owned>),
}

impl<T: ?Sized + ToOwned> Clone for Shared<'_, T> {
    fn clone(&self) -> Self {
        match self {
            Shared::Borrowed(value) => Shared::Borrowed(value),
            Shared::Owned(value) => Shared::Owned(Rc::clone(value)),
        }
    }
}

impl<T: ?Sized + ToOwned> Deref for Shared<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Shared::Borrowed(value) => value,
            Shared::Owned(value) => value.as_ref().borrow(),
        }
    }
}

impl<T: ?Sized + ToOwned + fmt::Debug> fmt::Debug for Shared<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

type Text<'a> = Shared<'a, str>;
type Blob<'a> = Shared<'a, [u8]>;

impl<'a> Text<'a> {
    fn owned(text: String) -> Text<'a> {
        Shared::Owned(Rc::new(text))
    }

    /// `part`, a slice of this text, as a value: borrowed again when this text is borrowed.
    fn slice(&self, part: &str) -> Text<'a> {
        match self {
            Shared::Borrowed(text) => {
                let start = (part.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
                match text.get(start..start + part.len()) {
                    Some(slice) => Shared::Borrowed(slice),
                    None => Text::owned(part.to_owned()),
                }
            }
            Shared::Owned(_) => Text::owned(part.to_owned()),
        }
    }
}

/// A CEL value.
#[derive(Clone, Debug)]
enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    String(Text<'a>),
    Bytes(Blob<'a>),
    List(List<'a>),
    Map(Map<'a>),
    /// A type value, by its name: `int`, `type(x)`.
    Type(&'static str),
    /// What `a.?b` and `a[?b]` make.
    Optional(Option<Rc<Value<'a>>>),
}

#[derive(Clone, Debug)]
enum List<'a> {
    /// A list of the bound data, read in place.
    Json(&'a [Json]),
    Built(Rc<Vec<Value<'a>>>),
}

#[derive(Clone, Debug)]
enum Map<'a> {
    /// An object of the bound data, read in place.
    Json(&'a serde_json::Map<String, Json>),
    /// A map literal, in the order it was written. Only literals build maps, so they are
    /// small (the expression is at most 4096 characters) and a linear search is fine.
    Built(Rc<Vec<(Key<'a>, Value<'a>)>>),
}

#[derive(Clone, Debug)]
enum Key<'a> {
    Bool(bool),
    Int(i64),
    UInt(u64),
    String(Text<'a>),
}

/// The names an identifier resolves to when no variable has it: the types.
const TYPES: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "optional_type",
    "string",
    "type",
    "uint",
];

/// Functions called without a receiver, `size(x)`.
const GLOBALS: &[&str] = &[
    "size",
    "matches",
    "string",
    "int",
    "uint",
    "double",
    "bool",
    "bytes",
    "dyn",
    "type",
    "strings.quote",
    "urlencode",
    "raw",
];

/// Functions called on a receiver, `x.size()`.
const MEMBERS: &[&str] = &[
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
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
];

/// JSON numbers become `int` whenever they fit, so `outputs.n * 2` works whether the number
/// came from a JSON parser (unsigned) or a literal (signed).
fn from_json(json: &Json) -> Value<'_> {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(text) => Value::String(Shared::Borrowed(text)),
        Json::Array(items) => Value::List(List::Json(items)),
        Json::Object(map) => Value::Map(Map::Json(map)),
    }
}

fn literal(literal: &LiteralValue) -> Value<'_> {
    match literal {
        LiteralValue::Boolean(b) => Value::Bool(*b.inner()),
        LiteralValue::Bytes(b) => Value::Bytes(Shared::Borrowed(b.inner())),
        LiteralValue::Double(d) => Value::Double(*d.inner()),
        LiteralValue::Int(i) => Value::Int(*i.inner()),
        LiteralValue::Null => Value::Null,
        LiteralValue::String(s) => Value::String(Shared::Borrowed(s.inner())),
        LiteralValue::UInt(u) => Value::UInt(*u.inner()),
    }
}

fn type_name(value: &Value<'_>) -> &'static str {
    match value {
        Value::Null => "null_type",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Double(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Type(_) => "type",
        Value::Optional(_) => "optional_type",
    }
}

impl<'a> List<'a> {
    fn len(&self) -> usize {
        match self {
            List::Json(items) => items.len(),
            List::Built(items) => items.len(),
        }
    }

    fn get(&self, index: usize) -> Option<Value<'a>> {
        match self {
            List::Json(items) => items.get(index).map(from_json),
            List::Built(items) => items.get(index).cloned(),
        }
    }
}

impl<'a> Map<'a> {
    fn len(&self) -> usize {
        match self {
            Map::Json(map) => map.len(),
            Map::Built(entries) => entries.len(),
        }
    }

    fn entries(&self) -> Entries<'a> {
        match self {
            Map::Json(map) => Entries::Json(map.iter()),
            Map::Built(entries) => Entries::Built(Rc::clone(entries), 0),
        }
    }
}

impl<'a> Key<'a> {
    fn value(&self) -> Value<'a> {
        match self {
            Key::Bool(b) => Value::Bool(*b),
            Key::Int(i) => Value::Int(*i),
            Key::UInt(u) => Value::UInt(*u),
            Key::String(s) => Value::String(s.clone()),
        }
    }
}

/// The elements of a list, or the keys of a map: what a comprehension iterates over.
enum Items<'a> {
    Json(std::slice::Iter<'a, Json>),
    JsonKeys(serde_json::map::Keys<'a>),
    Built(Rc<Vec<Value<'a>>>, usize),
    BuiltKeys(Rc<Vec<(Key<'a>, Value<'a>)>>, usize),
}

impl<'a> Items<'a> {
    fn of(value: &Value<'a>) -> Result<Items<'a>, Error> {
        Ok(match value {
            Value::List(List::Json(items)) => Items::Json(items.iter()),
            Value::List(List::Built(items)) => Items::Built(Rc::clone(items), 0),
            Value::Map(Map::Json(map)) => Items::JsonKeys(map.keys()),
            Value::Map(Map::Built(entries)) => Items::BuiltKeys(Rc::clone(entries), 0),
            other => {
                return Err(Error::Failed(format!(
                    "Unexpected type: got '{}', want 'iterable'",
                    type_name(other)
                )));
            }
        })
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        match self {
            Items::Json(items) => items.next().map(from_json),
            Items::JsonKeys(keys) => keys.next().map(|key| Value::String(Shared::Borrowed(key))),
            Items::Built(items, at) => {
                let item = items.get(*at).cloned();
                *at += 1;
                item
            }
            Items::BuiltKeys(entries, at) => {
                let key = entries.get(*at).map(|(key, _)| key.value());
                *at += 1;
                key
            }
        }
    }
}

/// The entries of a map, keys as values.
enum Entries<'a> {
    Json(serde_json::map::Iter<'a>),
    Built(Rc<Vec<(Key<'a>, Value<'a>)>>, usize),
}

impl<'a> Iterator for Entries<'a> {
    type Item = (Value<'a>, Value<'a>);

    fn next(&mut self) -> Option<(Value<'a>, Value<'a>)> {
        match self {
            Entries::Json(entries) => entries
                .next()
                .map(|(key, value)| (Value::String(Shared::Borrowed(key)), from_json(value))),
            Entries::Built(entries, at) => {
                let entry = entries.get(*at).map(|(key, value)| (key.value(), value.clone()));
                *at += 1;
                entry
            }
        }
    }
}

/// A key to look for in a map. Maps compare numeric keys by value, so an `int` key is also
/// looked for as the same `uint` and the other way round, and a whole `double` as either.
#[derive(Clone, Copy)]
enum Probe<'k> {
    Bool(bool),
    Int(i64),
    UInt(u64),
    String(&'k str),
}

impl Probe<'_> {
    /// The keys to try for `key`, in order; none when `key` cannot be a map key.
    fn of<'k>(key: &'k Value<'_>) -> [Option<Probe<'k>>; 2] {
        match key {
            Value::String(s) => [Some(Probe::String(s)), None],
            Value::Bool(b) => [Some(Probe::Bool(*b)), None],
            Value::Int(i) => [Some(Probe::Int(*i)), u64::try_from(*i).ok().map(Probe::UInt)],
            Value::UInt(u) => [Some(Probe::UInt(*u)), i64::try_from(*u).ok().map(Probe::Int)],
            Value::Double(d) => [
                double_to_int_lossless(*d).map(Probe::Int),
                double_to_uint_lossless(*d).map(Probe::UInt),
            ],
            _ => [None, None],
        }
    }

    fn matches(self, key: &Key<'_>) -> bool {
        match (self, key) {
            (Probe::Bool(a), Key::Bool(b)) => a == *b,
            (Probe::Int(a), Key::Int(b)) => a == *b,
            (Probe::UInt(a), Key::UInt(b)) => a == *b,
            (Probe::String(a), Key::String(b)) => a == &**b,
            _ => false,
        }
    }
}

/// A key as compared for duplicates in a map literal: numbers by value.
#[derive(PartialEq, Eq, Hash)]
enum Canonical<'k> {
    Bool(bool),
    Number(i128),
    String(&'k str),
}

impl<'k> Canonical<'k> {
    fn of(key: &'k Key<'_>) -> Canonical<'k> {
        match key {
            Key::Bool(b) => Canonical::Bool(*b),
            Key::Int(i) => Canonical::Number(i128::from(*i)),
            Key::UInt(u) => Canonical::Number(i128::from(*u)),
            Key::String(s) => Canonical::String(s),
        }
    }
}

/// Whether a value may be looked up in a map (`in` and `[]` fail for anything else).
fn is_lookup_key(key: &Value<'_>) -> bool {
    matches!(
        key,
        Value::String(_) | Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::Double(_)
    )
}

/// `d` as an `i64` if it converts without loss; like cel-go, -2^63 is refused too.
fn double_to_int_lossless(d: f64) -> Option<i64> {
    // `as` saturates, so the range is checked first: 2^63 would come back as i64::MAX.
    if d > i64::MIN as f64 && d < i64::MAX as f64 {
        let i = d as i64;
        (i as f64 == d).then_some(i)
    } else {
        None
    }
}

/// `d` as a `u64` if it converts without loss.
fn double_to_uint_lossless(d: f64) -> Option<u64> {
    if d >= 0.0 && d < u64::MAX as f64 {
        let u = d as u64;
        (u as f64 == d).then_some(u)
    } else {
        None
    }
}

/// How a key reads in a message.
fn key_text(key: &Value<'_>) -> String {
    match key {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// How a value reads in a message: short, whatever its size.
fn describe(value: &Value<'_>) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => format!("{u}u"),
        Value::Double(d) => d.to_string(),
        Value::String(s) if s.len() <= 40 => format!("{:?}", &**s),
        other => format!("a {}", type_name(other)),
    }
}

/// The order of two numbers of any numeric types: `None` when either is not a number, `Some(
/// None)` when they do not compare (NaN).
fn numeric_order(a: &Value<'_>, b: &Value<'_>) -> Option<Option<Ordering>> {
    Some(match (a, b) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::UInt(a), Value::UInt(b)) => Some(a.cmp(b)),
        (Value::Double(a), Value::Double(b)) => a.partial_cmp(b),
        // A negative int is below every uint; a uint above i64::MAX is above every int.
        (Value::Int(a), Value::UInt(b)) => {
            Some(u64::try_from(*a).map_or(Ordering::Less, |a| a.cmp(b)))
        }
        (Value::UInt(a), Value::Int(b)) => {
            Some(i64::try_from(*a).map_or(Ordering::Greater, |a| a.cmp(b)))
        }
        (Value::Int(a), Value::Double(b)) => (*a as f64).partial_cmp(b),
        (Value::UInt(a), Value::Double(b)) => (*a as f64).partial_cmp(b),
        (Value::Double(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Value::Double(a), Value::UInt(b)) => a.partial_cmp(&(*b as f64)),
        _ => return None,
    })
}

fn failed(message: impl Into<String>) -> Error {
    Error::Failed(message.into())
}

fn no_overload(function: &str, receiver: Option<&Value<'_>>, args: &[&Value<'_>]) -> Error {
    let types: Vec<&str> = args.iter().map(|arg| type_name(arg)).collect();
    let signature = match receiver {
        Some(receiver) => format!("{}.({})", type_name(receiver), types.join(", ")),
        None => format!("({})", types.join(", ")),
    };
    failed(format!("found no matching overload for '{function}' applied to '{signature}'"))
}

fn too_deep() -> Error {
    failed(format!(
        "the expression is more than {MAX_DEPTH} operations deep (e.g. a sum of that many \
         terms); split it into smaller expressions"
    ))
}

fn unknown_struct(name: &str) -> Error {
    failed(format!("Unexpected type: got '{name}', want 'known struct'"))
}

fn undeclared(name: &str) -> Error {
    failed(format!("Undeclared reference to '{name}'"))
}

fn overflow(operation: &str, a: impl fmt::Display, b: impl fmt::Display) -> Error {
    failed(format!("integer overflow: {a} {operation} {b}"))
}

fn out_of_range(function: &str, index: i64) -> Error {
    failed(format!("{function}: index out of range: {index}"))
}

fn boolean(value: &Value<'_>) -> Result<bool, Error> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(failed(format!("Unexpected type: got '{}', want 'bool'", type_name(other)))),
    }
}

fn some<'a>(value: Value<'a>) -> Value<'a> {
    Value::Optional(Some(Rc::new(value)))
}

// ----- evaluation -----

struct Evaluator<'a, 'e> {
    variables: &'e [(&'static str, &'a Json)],
    /// Comprehension variables in scope, innermost last.
    locals: Vec<(&'a str, Value<'a>)>,
    meter: &'e mut Meter,
    /// Nodes being evaluated, one inside the other.
    depth: u32,
    /// The last regular expression compiled, by its pattern.
    regex: Option<(String, regex::Regex)>,
}

/// The connective of an `all()` / `exists()` loop step, `@result && x` or `@result || x`:
/// an error of one element is only the result if no other element decides it.
#[derive(Clone, Copy)]
enum Fold {
    And,
    Or,
}

impl Fold {
    fn of(comprehension: &ComprehensionExpr) -> Option<Fold> {
        let Expr::Call(call) = &comprehension.loop_step.expr else { return None };
        let folds = call.target.is_none()
            && matches!(
                call.args.first().map(|arg| &arg.expr),
                Some(Expr::Ident(name)) if *name == comprehension.accu_var
            );
        match call.func_name.as_str() {
            operators::LOGICAL_AND if folds => Some(Fold::And),
            operators::LOGICAL_OR if folds => Some(Fold::Or),
            _ => None,
        }
    }

    /// Whether `value` decides the fold whatever errors other elements had.
    fn absorbs(self, value: &Value<'_>) -> bool {
        matches!(value, Value::Bool(b) if *b == matches!(self, Fold::Or))
    }
}

/// The loop step of `map()` and `filter()`: `@result + [x]`, or `cond ? @result + [x] :
/// @result`. Evaluated as written it would copy the accumulator on every iteration; appending
/// in place makes it linear. Nothing else can see the accumulator (`@result` cannot be
/// written in an expression).
struct Append<'a> {
    guard: Option<&'a IdedExpr>,
    items: &'a ListExpr,
}

impl<'a> Append<'a> {
    fn of(comprehension: &'a ComprehensionExpr) -> Option<Append<'a>> {
        let accu = comprehension.accu_var.as_str();
        let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(name) if name == accu);
        let appended = |e: &'a IdedExpr| match &e.expr {
            Expr::Call(call) if call.func_name == operators::ADD && call.target.is_none() => {
                match call.args.as_slice() {
                    [lhs, rhs] if is_accu(lhs) => match &rhs.expr {
                        Expr::List(list) => Some(list),
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        };
        if !is_accu(&comprehension.result)
            || !matches!(comprehension.loop_cond.expr, Expr::Literal(_))
        {
            return None;
        }
        match &comprehension.loop_step.expr {
            Expr::Call(call)
                if call.func_name == operators::CONDITIONAL && call.target.is_none() =>
            {
                match call.args.as_slice() {
                    [guard, step, otherwise] if is_accu(otherwise) => {
                        Some(Append { guard: Some(guard), items: appended(step)? })
                    }
                    _ => None,
                }
            }
            _ => Some(Append { guard: None, items: appended(&comprehension.loop_step)? }),
        }
    }
}

impl<'a> Evaluator<'a, '_> {
    fn eval(&mut self, node: &'a IdedExpr) -> Result<Value<'a>, Error> {
        self.meter.step(1)?;
        if self.depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        self.depth += 1;
        let value = self.node(node);
        self.depth -= 1;
        value
    }

    fn node(&mut self, node: &'a IdedExpr) -> Result<Value<'a>, Error> {
        match &node.expr {
            Expr::Literal(value) => Ok(literal(value)),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(select) => {
                let operand = self.eval(&select.operand)?;
                self.select(operand, &select.field, select.test)
            }
            Expr::Call(call) => self.call(call),
            Expr::List(list) => self.list(list),
            Expr::Map(map) => self.map(map),
            Expr::Comprehension(comprehension) => self.comprehension(comprehension),
            Expr::Struct(object) => Err(unknown_struct(&object.type_name)),
            Expr::Unspecified => Err(unknown_struct("")),
        }
    }

    /// Evaluates a condition: anything but a boolean is an error.
    fn condition(&mut self, node: &'a IdedExpr) -> Result<bool, Error> {
        boolean(&self.eval(node)?)
    }

    fn ident(&self, name: &str) -> Result<Value<'a>, Error> {
        if let Some((_, value)) = self.locals.iter().rev().find(|(local, _)| *local == name) {
            return Ok(value.clone());
        }
        if let Some((_, json)) = self.variables.iter().find(|(variable, _)| *variable == name) {
            return Ok(from_json(json));
        }
        match TYPES.iter().find(|known| **known == name) {
            Some(known) => Ok(Value::Type(known)),
            None => Err(undeclared(name)),
        }
    }

    /// `operand.field`, or `has(operand.field)` when `test`.
    fn select(
        &mut self,
        operand: Value<'a>,
        field: &'a str,
        test: bool,
    ) -> Result<Value<'a>, Error> {
        let key = Value::String(Shared::Borrowed(field));
        let indexable = |value: &Value<'_>| matches!(value, Value::List(_) | Value::Map(_));
        match operand {
            // An absent optional stays absent along the chain.
            Value::Optional(None) => {
                Ok(if test { Value::Bool(false) } else { Value::Optional(None) })
            }
            Value::Optional(Some(inner)) => {
                let inner = Rc::unwrap_or_clone(inner);
                if !indexable(&inner) {
                    return Err(Error::NoSuchKey(field.to_owned()));
                }
                match self.index(inner, &key) {
                    Err(error) if error.is_limit() => Err(error),
                    found if test => Ok(Value::Bool(found.is_ok())),
                    found => Ok(Value::Optional(found.ok().map(Rc::new))),
                }
            }
            operand if test => {
                if !indexable(&operand) {
                    return Err(no_overload("_._", None, &[&operand, &key]));
                }
                match self.index(operand, &key) {
                    Ok(_) => Ok(Value::Bool(true)),
                    Err(Error::NoSuchKey(_)) => Ok(Value::Bool(false)),
                    Err(error) => Err(error),
                }
            }
            Value::Map(map) => self.lookup(&map, &key),
            operand => Err(no_overload("_._", None, &[&operand, &key])),
        }
    }

    /// `value[index]`.
    fn index(&mut self, value: Value<'a>, index: &Value<'a>) -> Result<Value<'a>, Error> {
        match value {
            Value::List(list) => {
                let out_of_bounds = || failed(format!("Index out of bounds: {}", key_text(index)));
                let position = match index {
                    Value::Int(i) => usize::try_from(*i).map_err(|_| out_of_bounds())?,
                    Value::UInt(u) => usize::try_from(*u).map_err(|_| out_of_bounds())?,
                    Value::Double(d) => {
                        let i = double_to_int_lossless(*d).ok_or_else(|| {
                            failed(format!("Cannot use value {d} to index a list"))
                        })?;
                        usize::try_from(i).map_err(|_| out_of_bounds())?
                    }
                    other => {
                        return Err(no_overload("_[_]", None, &[&Value::List(list), other]));
                    }
                };
                list.get(position).ok_or_else(out_of_bounds)
            }
            Value::Map(map) => self.lookup(&map, index),
            other => Err(no_overload("_[_]", None, &[&other, index])),
        }
    }

    fn lookup(&mut self, map: &Map<'a>, key: &Value<'a>) -> Result<Value<'a>, Error> {
        match self.find(map, key)? {
            Some(value) => Ok(value),
            None if is_lookup_key(key) => Err(Error::NoSuchKey(key_text(key))),
            None => {
                Err(failed(format!("Unexpected type: got '{}', want 'map key'", type_name(key))))
            }
        }
    }

    fn find(&mut self, map: &Map<'a>, key: &Value<'a>) -> Result<Option<Value<'a>>, Error> {
        match map {
            // The data's objects have string keys only.
            Map::Json(map) => Ok(match key {
                Value::String(key) => map.get(&**key).map(from_json),
                _ => None,
            }),
            Map::Built(entries) => {
                self.meter.step(entries.len() as u64 / 8)?;
                for probe in Probe::of(key).into_iter().flatten() {
                    if let Some((_, value)) = entries.iter().find(|(k, _)| probe.matches(k)) {
                        return Ok(Some(value.clone()));
                    }
                }
                Ok(None)
            }
        }
    }

    fn list(&mut self, list: &'a ListExpr) -> Result<Value<'a>, Error> {
        self.meter.elements(list.elements.len())?;
        let mut items = Vec::with_capacity(list.elements.len());
        self.push_elements(list, &mut items)?;
        Ok(Value::List(List::Built(Rc::new(items))))
    }

    /// Evaluates the elements of a list literal onto `out`; an optional element (`[?x]`)
    /// adds its value, or nothing when it has none.
    fn push_elements(&mut self, list: &'a ListExpr, out: &mut Vec<Value<'a>>) -> Result<(), Error> {
        for (index, element) in list.elements.iter().enumerate() {
            let value = self.eval(element)?;
            if list.optional_indices.contains(&index) {
                match value {
                    Value::Optional(None) => {}
                    Value::Optional(Some(value)) => out.push(Rc::unwrap_or_clone(value)),
                    value => out.push(value),
                }
            } else {
                out.push(value);
            }
        }
        Ok(())
    }

    fn map(&mut self, map: &'a MapExpr) -> Result<Value<'a>, Error> {
        self.meter.step(map.entries.len() as u64)?;
        self.meter.allocate((map.entries.len() as u64).saturating_mul(ENTRY_BYTES))?;
        let mut entries: Vec<(Key<'a>, Value<'a>)> = Vec::with_capacity(map.entries.len());
        for entry in &map.entries {
            let EntryExpr::MapEntry(entry) = &entry.expr else {
                return Err(failed("a field inside a map"));
            };
            let key = match self.eval(&entry.key)? {
                Value::Bool(b) => Key::Bool(b),
                Value::Int(i) => Key::Int(i),
                Value::UInt(u) => Key::UInt(u),
                Value::String(s) => Key::String(s),
                other => {
                    return Err(failed(format!("Unable to use {} as a map key", describe(&other))));
                }
            };
            let value = self.eval(&entry.value)?;
            // An optional entry without a value adds nothing, not even its key.
            let value = match value {
                Value::Optional(None) if entry.optional => continue,
                Value::Optional(Some(value)) if entry.optional => Rc::unwrap_or_clone(value),
                value => value,
            };
            entries.push((key, value));
        }
        let mut seen = HashSet::with_capacity(entries.len());
        for (key, _) in &entries {
            if !seen.insert(Canonical::of(key)) {
                return Err(failed(format!(
                    "Failed with repeated key: {}",
                    key_text(&key.value())
                )));
            }
        }
        Ok(Value::Map(Map::Built(Rc::new(entries))))
    }

    fn comprehension(&mut self, comprehension: &'a ComprehensionExpr) -> Result<Value<'a>, Error> {
        let init = self.eval(&comprehension.accu_init)?;
        let range = self.eval(&comprehension.iter_range)?;
        let items = Items::of(&range)?;
        let depth = self.locals.len();
        let result = match Append::of(comprehension) {
            Some(append) if matches!(&init, Value::List(list) if list.len() == 0) => {
                self.append(comprehension, &append, items)
            }
            _ => {
                self.locals.push((&comprehension.accu_var, init));
                self.fold(comprehension, items, depth)
            }
        };
        self.locals.truncate(depth);
        result
    }

    fn fold(
        &mut self,
        comprehension: &'a ComprehensionExpr,
        items: Items<'a>,
        accu: usize,
    ) -> Result<Value<'a>, Error> {
        let fold = Fold::of(comprehension);
        let mut pending: Option<Error> = None;
        let mut slot: Option<usize> = None;
        for item in items {
            self.meter.step(1)?;
            if !self.condition(&comprehension.loop_cond)? {
                break;
            }
            self.bind(&comprehension.iter_var, item, &mut slot);
            match (self.eval(&comprehension.loop_step), fold) {
                (Err(error), _) if error.is_limit() => return Err(error),
                (Err(error), Some(_)) => pending = Some(error),
                (Err(error), None) => return Err(error),
                (Ok(value), Some(fold)) if pending.is_some() && !fold.absorbs(&value) => {}
                (Ok(value), _) => {
                    pending = None;
                    self.locals[accu].1 = value;
                }
            }
        }
        if let Some(error) = pending {
            return Err(error);
        }
        self.eval(&comprehension.result)
    }

    fn append(
        &mut self,
        comprehension: &'a ComprehensionExpr,
        append: &Append<'a>,
        items: Items<'a>,
    ) -> Result<Value<'a>, Error> {
        let mut out = Vec::new();
        let mut slot = None;
        for item in items {
            self.meter.step(1)?;
            if !self.condition(&comprehension.loop_cond)? {
                break;
            }
            self.bind(&comprehension.iter_var, item, &mut slot);
            if let Some(guard) = append.guard
                && !self.condition(guard)?
            {
                continue;
            }
            self.meter.elements(append.items.elements.len())?;
            self.push_elements(append.items, &mut out)?;
        }
        Ok(Value::List(List::Built(Rc::new(out))))
    }

    /// Binds the iteration variable: pushed on the first element, replaced after.
    fn bind(&mut self, name: &'a str, value: Value<'a>, slot: &mut Option<usize>) {
        match *slot {
            Some(at) => self.locals[at].1 = value,
            None => {
                *slot = Some(self.locals.len());
                self.locals.push((name, value));
            }
        }
    }

    /// Calls are operators or functions. This only dispatches, and every step of the
    /// recursion through it has its own small frame: deep operator chains (`1 + 1 + …`, two
    /// thousand levels in 4096 characters) must fit on a worker thread's stack.
    fn call(&mut self, call: &'a CallExpr) -> Result<Value<'a>, Error> {
        let name = call.func_name.as_str();
        match (name, call.args.as_slice()) {
            (operators::CONDITIONAL, [condition, yes, no]) => {
                if self.condition(condition)? {
                    self.eval(yes)
                } else {
                    self.eval(no)
                }
            }
            (operators::LOGICAL_OR | operators::LOGICAL_AND, [left, right]) => {
                self.logical(name == operators::LOGICAL_OR, left, right)
            }
            (operators::INDEX | operators::OPT_INDEX, [value, index]) => {
                self.index_call(name == operators::OPT_INDEX, value, index)
            }
            (operators::OPT_SELECT, [operand, field]) => self.optional_select(operand, field),
            (
                operators::NOT_STRICTLY_FALSE | operators::LOGICAL_NOT | operators::NEGATE,
                [value],
            ) => self.unary(name, value),
            (
                operators::EQUALS
                | operators::NOT_EQUALS
                | operators::ADD
                | operators::SUBSTRACT
                | operators::MULTIPLY
                | operators::DIVIDE
                | operators::MODULO
                | operators::LESS
                | operators::LESS_EQUALS
                | operators::GREATER
                | operators::GREATER_EQUALS
                | operators::IN,
                [a, b],
            ) => self.operands(name, a, b),
            _ => self.function(call),
        }
    }

    fn unary(&mut self, name: &str, value: &'a IdedExpr) -> Result<Value<'a>, Error> {
        if name == operators::NOT_STRICTLY_FALSE {
            return match self.condition(value) {
                Err(error) if error.is_limit() => Err(error),
                result => Ok(Value::Bool(result.unwrap_or(true))),
            };
        }
        match (name, self.eval(value)?) {
            (operators::LOGICAL_NOT, Value::Bool(b)) => Ok(Value::Bool(!b)),
            (operators::NEGATE, Value::Int(i)) => i
                .checked_neg()
                .map(Value::Int)
                .ok_or_else(|| failed(format!("integer overflow: -({i})"))),
            (operators::NEGATE, Value::Double(d)) => Ok(Value::Double(-d)),
            (_, other) => Err(no_overload(name, None, &[&other])),
        }
    }

    /// A binary operator: both operands, then the operation (which is not on the recursion's
    /// path, so its frame does not count towards the depth).
    fn operands(
        &mut self,
        name: &str,
        a: &'a IdedExpr,
        b: &'a IdedExpr,
    ) -> Result<Value<'a>, Error> {
        let a = self.eval(a)?;
        let b = self.eval(b)?;
        self.binary(name, a, b)
    }

    fn function(&mut self, call: &'a CallExpr) -> Result<Value<'a>, Error> {
        let name = call.func_name.as_str();
        let mut values = Vec::with_capacity(call.args.len());
        for arg in &call.args {
            values.push(self.eval(arg)?);
        }
        match &call.target {
            None => self.global(name, values),
            // `strings.quote(x)` names a function of the `strings` namespace, not a member
            // function of a variable `strings`.
            Some(target)
                if name == "quote"
                    && matches!(&target.expr, Expr::Ident(ns) if ns == "strings") =>
            {
                self.global("strings.quote", values)
            }
            Some(target) => {
                let receiver = self.eval(target)?;
                self.member(name, receiver, values)
            }
        }
    }

    /// `left || right` and `left && right`: an error on one side is forgiven when the other
    /// side decides the result.
    fn logical(
        &mut self,
        or: bool,
        left: &'a IdedExpr,
        right: &'a IdedExpr,
    ) -> Result<Value<'a>, Error> {
        let left = match self.condition(left) {
            Err(error) if error.is_limit() => return Err(error),
            Ok(left) if left == or => return Ok(Value::Bool(or)),
            left => left,
        };
        let right = self.eval(right)?;
        match (left, &right) {
            (Ok(_), Value::Bool(right)) => Ok(Value::Bool(*right)),
            (Err(_), Value::Bool(right)) if *right == or => Ok(Value::Bool(or)),
            (Err(error), _) => Err(error),
            (Ok(left), right) => Err(no_overload(
                if or { operators::LOGICAL_OR } else { operators::LOGICAL_AND },
                None,
                &[&Value::Bool(left), right],
            )),
        }
    }

    fn index_call(
        &mut self,
        optional: bool,
        value: &'a IdedExpr,
        index: &'a IdedExpr,
    ) -> Result<Value<'a>, Error> {
        let (value, optional) = match self.eval(value)? {
            Value::Optional(None) => return Ok(Value::Optional(None)),
            Value::Optional(Some(value)) => (Rc::unwrap_or_clone(value), true),
            value => (value, optional),
        };
        let index = self.eval(index)?;
        let found = self.index(value, &index);
        if !optional {
            return found;
        }
        match found {
            Ok(value) => Ok(some(value)),
            Err(error) if error.is_limit() => Err(error),
            Err(_) => Ok(Value::Optional(None)),
        }
    }

    /// `operand.?field`: the field as an optional, absent when it is missing.
    fn optional_select(
        &mut self,
        operand: &'a IdedExpr,
        field: &'a IdedExpr,
    ) -> Result<Value<'a>, Error> {
        let operand = self.eval(operand)?;
        let field = self.eval(field)?;
        if !matches!(field, Value::String(_)) {
            return Err(failed("_?._: field must be string"));
        }
        let target = match operand {
            Value::Optional(None) => return Ok(Value::Optional(None)),
            Value::Optional(Some(value)) => Rc::unwrap_or_clone(value),
            value => value,
        };
        match self.index(target, &field) {
            Ok(value) => Ok(some(value)),
            Err(error) if error.is_limit() => Err(error),
            Err(_) => Ok(Value::Optional(None)),
        }
    }

    fn binary(&mut self, name: &str, a: Value<'a>, b: Value<'a>) -> Result<Value<'a>, Error> {
        let compared = |evaluator: &mut Self, accept: fn(Ordering) -> bool| {
            evaluator.compare(name, &a, &b).map(|order| Value::Bool(accept(order)))
        };
        match name {
            operators::EQUALS => Ok(Value::Bool(self.equals(&a, &b)?)),
            operators::NOT_EQUALS => Ok(Value::Bool(!self.equals(&a, &b)?)),
            operators::LESS => compared(self, Ordering::is_lt),
            operators::LESS_EQUALS => compared(self, Ordering::is_le),
            operators::GREATER => compared(self, Ordering::is_gt),
            operators::GREATER_EQUALS => compared(self, Ordering::is_ge),
            operators::IN => self.contains(a, b),
            operators::ADD => self.add(a, b),
            _ => arithmetic(name, &a, &b),
        }
    }

    fn equals(&mut self, a: &Value<'a>, b: &Value<'a>) -> Result<bool, Error> {
        Ok(match (a, b) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::String(a), Value::String(b)) => {
                self.meter.scan(a.len().min(b.len()))?;
                **a == **b
            }
            (Value::Bytes(a), Value::Bytes(b)) => {
                self.meter.scan(a.len().min(b.len()))?;
                **a == **b
            }
            (Value::Type(a), Value::Type(b)) => a == b,
            (Value::List(a), Value::List(b)) => {
                if a.len() != b.len() {
                    return Ok(false);
                }
                for index in 0..a.len() {
                    self.meter.step(1)?;
                    let (Some(x), Some(y)) = (a.get(index), b.get(index)) else {
                        return Ok(false);
                    };
                    if !self.equals(&x, &y)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Value::Map(a), Value::Map(b)) => {
                if a.len() != b.len() {
                    return Ok(false);
                }
                for (key, value) in a.entries() {
                    self.meter.step(1)?;
                    match self.find(b, &key)? {
                        Some(other) if self.equals(&value, &other)? => {}
                        _ => return Ok(false),
                    }
                }
                true
            }
            (Value::Optional(a), Value::Optional(b)) => match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => self.equals(a, b)?,
                _ => false,
            },
            // Numbers compare by value across types: `1 == 1u`, `1 == 1.0`.
            _ => numeric_order(a, b) == Some(Some(Ordering::Equal)),
        })
    }

    fn compare(&mut self, name: &str, a: &Value<'a>, b: &Value<'a>) -> Result<Ordering, Error> {
        let order = match (a, b) {
            (Value::String(x), Value::String(y)) => {
                self.meter.scan(x.len().min(y.len()))?;
                Some((**x).cmp(&**y))
            }
            (Value::Bytes(x), Value::Bytes(y)) => {
                self.meter.scan(x.len().min(y.len()))?;
                Some((**x).cmp(&**y))
            }
            (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
            _ => numeric_order(a, b).flatten(),
        };
        order.ok_or_else(|| no_overload(name, None, &[a, b]))
    }

    /// `a in b`: an element of a list, a key of a map.
    fn contains(&mut self, a: Value<'a>, b: Value<'a>) -> Result<Value<'a>, Error> {
        match &b {
            Value::List(list) => {
                for index in 0..list.len() {
                    self.meter.step(1)?;
                    if let Some(item) = list.get(index)
                        && self.equals(&a, &item)?
                    {
                        return Ok(Value::Bool(true));
                    }
                }
                Ok(Value::Bool(false))
            }
            Value::Map(map) => match self.find(map, &a)? {
                Some(_) => Ok(Value::Bool(true)),
                None if is_lookup_key(&a) => Ok(Value::Bool(false)),
                None => Err(failed(format!("Unable to use {} as a map key", describe(&a)))),
            },
            _ => Err(no_overload(operators::IN, None, &[&a, &b])),
        }
    }

    fn add(&mut self, a: Value<'a>, b: Value<'a>) -> Result<Value<'a>, Error> {
        match (&a, &b) {
            (Value::String(x), Value::String(y)) => {
                let len = x.len() + y.len();
                self.meter.allocate(len as u64)?;
                self.meter.scan(len)?;
                let mut text = String::with_capacity(len);
                text.push_str(x);
                text.push_str(y);
                Ok(Value::String(Text::owned(text)))
            }
            (Value::Bytes(x), Value::Bytes(y)) => {
                let len = x.len() + y.len();
                self.meter.allocate(len as u64)?;
                self.meter.scan(len)?;
                let mut bytes = Vec::with_capacity(len);
                bytes.extend_from_slice(x);
                bytes.extend_from_slice(y);
                Ok(Value::Bytes(Shared::Owned(Rc::new(bytes))))
            }
            (Value::List(x), Value::List(y)) => {
                self.meter.elements(x.len() + y.len())?;
                let mut items = Vec::with_capacity(x.len() + y.len());
                items.extend((0..x.len()).filter_map(|index| x.get(index)));
                items.extend((0..y.len()).filter_map(|index| y.get(index)));
                Ok(Value::List(List::Built(Rc::new(items))))
            }
            // A list plus a map appends the map's keys.
            (Value::List(x), Value::Map(y)) => {
                self.meter.elements(x.len() + y.len())?;
                let mut items = Vec::with_capacity(x.len() + y.len());
                items.extend((0..x.len()).filter_map(|index| x.get(index)));
                items.extend(Items::of(&b)?);
                Ok(Value::List(List::Built(Rc::new(items))))
            }
            _ => arithmetic(operators::ADD, &a, &b),
        }
    }

    // ----- functions -----

    fn global(&mut self, name: &str, args: Vec<Value<'a>>) -> Result<Value<'a>, Error> {
        match (name, args.as_slice()) {
            ("size", [value]) => self.size(name, None, value),
            ("matches", [Value::String(text), Value::String(pattern)]) => {
                self.matches(text, pattern)
            }
            ("string", [value]) => self.string(value),
            ("int", [value]) => int(value),
            ("uint", [value]) => uint(value),
            ("double", [value]) => double(value),
            ("bool", [value]) => to_bool(value),
            ("bytes", [Value::String(text)]) => {
                self.meter.allocate(text.len() as u64)?;
                Ok(Value::Bytes(Shared::Owned(Rc::new(text.as_bytes().to_vec()))))
            }
            ("bytes", [value @ Value::Bytes(_)]) | ("dyn" | "raw", [value]) => Ok(value.clone()),
            ("type", [value]) => Ok(Value::Type(type_name(value))),
            ("strings.quote", [Value::String(text)]) => self.quote(text),
            ("urlencode", [value]) => self.urlencode(value),
            _ if GLOBALS.contains(&name) => {
                Err(no_overload(name, None, &args.iter().collect::<Vec<_>>()))
            }
            _ => Err(undeclared(name)),
        }
    }

    fn member(
        &mut self,
        name: &str,
        receiver: Value<'a>,
        args: Vec<Value<'a>>,
    ) -> Result<Value<'a>, Error> {
        use Value::{Int, String as Str};
        match (name, &receiver, args.as_slice()) {
            ("size", value, []) => self.size(name, Some(value), value),
            ("contains", Str(text), [Str(needle)]) => {
                self.meter.scan(text.len())?;
                Ok(Value::Bool(text.contains(&**needle)))
            }
            ("startsWith", Str(text), [Str(prefix)]) => {
                self.meter.scan(prefix.len())?;
                Ok(Value::Bool(text.starts_with(&**prefix)))
            }
            ("endsWith", Str(text), [Str(suffix)]) => {
                self.meter.scan(suffix.len())?;
                Ok(Value::Bool(text.ends_with(&**suffix)))
            }
            ("matches", Str(text), [Str(pattern)]) => self.matches(text, pattern),
            ("charAt", Str(text), [Int(index)]) => self.char_at(text, *index),
            ("indexOf", Str(text), [Str(needle)]) => self.index_of(text, needle, None),
            ("indexOf", Str(text), [Str(needle), Int(offset)]) => {
                self.index_of(text, needle, Some(*offset))
            }
            ("lastIndexOf", Str(text), [Str(needle)]) => self.last_index_of(text, needle, None),
            ("lastIndexOf", Str(text), [Str(needle), Int(offset)]) => {
                self.last_index_of(text, needle, Some(*offset))
            }
            ("join", Value::List(list), []) => self.join(list, ""),
            ("join", Value::List(list), [Str(separator)]) => self.join(list, separator),
            ("lowerAscii", Str(text), []) => self.map_text(text, |t| t.to_ascii_lowercase()),
            ("upperAscii", Str(text), []) => self.map_text(text, |t| t.to_ascii_uppercase()),
            ("trim", Str(text), []) => self.map_text(text, |t| t.trim().to_owned()),
            ("reverse", Str(text), []) => self.map_text(text, |t| t.chars().rev().collect()),
            ("replace", Str(text), [Str(from), Str(to)]) => self.replace(text, from, to, None),
            ("replace", Str(text), [Str(from), Str(to), Int(count)]) => {
                self.replace(text, from, to, Some(*count))
            }
            ("split", Str(text), [Str(separator)]) => self.split(text, separator, -1),
            ("split", Str(text), [Str(separator), Int(limit)]) => {
                self.split(text, separator, *limit)
            }
            ("substring", Str(text), [Int(start)]) => self.substring(text, *start, None),
            ("substring", Str(text), [Int(start), Int(end)]) => {
                self.substring(text, *start, Some(*end))
            }
            ("format", Str(template), [Value::List(args)]) => self.format(template, args),
            _ if MEMBERS.contains(&name) => {
                Err(no_overload(name, Some(&receiver), &args.iter().collect::<Vec<_>>()))
            }
            _ => Err(undeclared(name)),
        }
    }

    fn size(
        &mut self,
        name: &str,
        receiver: Option<&Value<'a>>,
        value: &Value<'a>,
    ) -> Result<Value<'a>, Error> {
        let size = match value {
            Value::String(text) => {
                self.meter.scan(text.len())?;
                text.chars().count()
            }
            Value::Bytes(bytes) => bytes.len(),
            Value::List(list) => list.len(),
            Value::Map(map) => map.len(),
            other => {
                return Err(match receiver {
                    Some(receiver) => no_overload(name, Some(receiver), &[]),
                    None => no_overload(name, None, &[other]),
                });
            }
        };
        Ok(Value::Int(i64::try_from(size).unwrap_or(i64::MAX)))
    }

    /// A new string made from `text` by `f`, which makes a string of about the same length.
    fn map_text(&mut self, text: &str, f: impl FnOnce(&str) -> String) -> Result<Value<'a>, Error> {
        self.meter.scan(text.len())?;
        self.meter.allocate(text.len() as u64)?;
        Ok(Value::String(Text::owned(f(text))))
    }

    fn string(&mut self, value: &Value<'a>) -> Result<Value<'a>, Error> {
        let text = match value {
            Value::String(_) => return Ok(value.clone()),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Double(d) => d.to_string(),
            Value::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => text.to_owned(),
                Err(_) => return Err(failed("string: the bytes are not valid UTF-8")),
            },
            other => return Err(no_overload("string", None, &[other])),
        };
        self.meter.allocate(text.len() as u64)?;
        Ok(Value::String(Text::owned(text)))
    }

    fn matches(&mut self, text: &str, pattern: &str) -> Result<Value<'a>, Error> {
        if !matches!(&self.regex, Some((compiled, _)) if compiled == pattern) {
            self.meter.step(REGEX_COMPILE_STEPS.saturating_add(pattern.len() as u64))?;
            let regex = regex::RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|error| {
                    failed(format!(
                        "matches: '{pattern}' is not a valid regular expression: {error}"
                    ))
                })?;
            self.regex = Some((pattern.to_owned(), regex));
        }
        self.meter.step((text.len() as u64).saturating_mul(REGEX_STEPS_PER_BYTE))?;
        match &self.regex {
            Some((_, regex)) => Ok(Value::Bool(regex.is_match(text))),
            None => Err(failed("matches: no regular expression")),
        }
    }

    fn char_at(&mut self, text: &str, index: i64) -> Result<Value<'a>, Error> {
        self.meter.scan(text.len())?;
        let len = text.chars().count();
        let Some(at) = usize::try_from(index).ok().filter(|at| *at <= len) else {
            return Err(out_of_range("charAt", index));
        };
        let found = text.chars().nth(at).map(String::from).unwrap_or_default();
        Ok(Value::String(Text::owned(found)))
    }

    /// `text.indexOf(needle[, offset])`, in characters.
    fn index_of(
        &mut self,
        text: &str,
        needle: &str,
        offset: Option<i64>,
    ) -> Result<Value<'a>, Error> {
        self.meter.scan(text.len())?;
        let start = match offset {
            None => 0,
            Some(offset) => {
                let len = text.chars().count();
                let Ok(at) = usize::try_from(offset) else {
                    return Err(out_of_range("indexOf", offset));
                };
                if needle.is_empty() {
                    return Ok(Value::Int(to_int(at.min(len))));
                }
                if at >= len {
                    return Err(out_of_range("indexOf", offset));
                }
                byte_offset(text, at)
            }
        };
        // UTF-8 matches only at character boundaries, so a byte search finds what a search
        // over characters would.
        Ok(Value::Int(match text[start..].find(needle) {
            Some(found) => to_int(text[..start + found].chars().count()),
            None => -1,
        }))
    }

    /// `text.lastIndexOf(needle[, offset])`: the last match starting at or before `offset`.
    fn last_index_of(
        &mut self,
        text: &str,
        needle: &str,
        offset: Option<i64>,
    ) -> Result<Value<'a>, Error> {
        self.meter.scan(text.len())?;
        let len = text.chars().count();
        let last = match offset {
            None => len,
            Some(offset) => {
                let Ok(at) = usize::try_from(offset) else {
                    return Err(out_of_range("lastIndexOf", offset));
                };
                if needle.is_empty() {
                    return Ok(Value::Int(to_int(at.min(len))));
                }
                if at >= len {
                    return Err(out_of_range("lastIndexOf", offset));
                }
                at
            }
        };
        let needle_len = needle.chars().count();
        if needle_len > len {
            return Ok(Value::Int(-1));
        }
        let end = byte_offset(text, last.min(len - needle_len) + needle_len);
        Ok(Value::Int(match text[..end].rfind(needle) {
            Some(found) => to_int(text[..found].chars().count()),
            None => -1,
        }))
    }

    fn substring(&mut self, text: &str, start: i64, end: Option<i64>) -> Result<Value<'a>, Error> {
        self.meter.scan(text.len())?;
        let len = text.chars().count();
        let in_range = |index: i64| usize::try_from(index).ok().filter(|at| *at <= len);
        let end = match end {
            None => {
                if in_range(start).is_none() {
                    return Err(out_of_range("substring", start));
                }
                len
            }
            Some(end) => {
                if start > end {
                    return Err(failed(format!(
                        "substring: invalid substring range. start: {start}, end: {end}"
                    )));
                }
                in_range(end).ok_or_else(|| out_of_range("substring", end))?
            }
        };
        let start = in_range(start).ok_or_else(|| out_of_range("substring", start))?;
        let part = &text[byte_offset(text, start)..byte_offset(text, end)];
        self.meter.allocate(part.len() as u64)?;
        Ok(Value::String(Text::owned(part.to_owned())))
    }

    fn replace(
        &mut self,
        text: &str,
        from: &str,
        to: &str,
        count: Option<i64>,
    ) -> Result<Value<'a>, Error> {
        self.meter.scan(text.len())?;
        // A negative count replaces every match, as no count does.
        let limit = count.and_then(|count| usize::try_from(count).ok());
        // The result's length first: chained replaces that would build a gigabyte stop here,
        // before anything is allocated.
        let found = text.matches(from).take(limit.unwrap_or(usize::MAX)).count();
        let len = (text.len() as u128 + found as u128 * to.len() as u128)
            .saturating_sub(found as u128 * from.len() as u128);
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        self.meter.allocate(len)?;
        self.meter.step(len / SCAN_BYTES_PER_STEP)?;
        let replaced = match limit {
            Some(limit) => text.replacen(from, to, limit),
            None => text.replace(from, to),
        };
        Ok(Value::String(Text::owned(replaced)))
    }

    fn split(&mut self, text: &Text<'a>, separator: &str, limit: i64) -> Result<Value<'a>, Error> {
        self.meter.scan(text.len())?;
        let whole: &str = text;
        // An empty separator splits between characters; a limit keeps the rest in the last
        // part.
        let parts: Vec<&str> = match (usize::try_from(limit), separator.is_empty()) {
            (Ok(0), _) => Vec::new(),
            (Ok(limit), true) => {
                let count = whole.chars().count().min(limit);
                self.meter.elements(count)?;
                let mut parts = Vec::with_capacity(count);
                let mut rest = whole;
                while let Some(c) = rest.chars().next() {
                    if parts.len() + 1 == limit {
                        break;
                    }
                    let (head, tail) = rest.split_at(c.len_utf8());
                    parts.push(head);
                    rest = tail;
                }
                if !rest.is_empty() {
                    parts.push(rest);
                }
                parts
            }
            (Ok(limit), false) => {
                self.meter.elements(whole.splitn(limit, separator).count())?;
                whole.splitn(limit, separator).collect()
            }
            (Err(_), true) => {
                self.meter.elements(whole.chars().count())?;
                whole.char_indices().map(|(at, c)| &whole[at..at + c.len_utf8()]).collect()
            }
            (Err(_), false) => {
                self.meter.elements(whole.split(separator).count())?;
                whole.split(separator).collect()
            }
        };
        if matches!(text, Shared::Owned(_)) {
            self.meter.allocate(text.len() as u64)?;
        }
        let items = parts.into_iter().map(|part| Value::String(text.slice(part))).collect();
        Ok(Value::List(List::Built(Rc::new(items))))
    }

    fn join(&mut self, list: &List<'a>, separator: &str) -> Result<Value<'a>, Error> {
        self.meter.step(list.len() as u64)?;
        let mut len = separator.len().saturating_mul(list.len().saturating_sub(1));
        for index in 0..list.len() {
            match list.get(index) {
                Some(Value::String(text)) => len = len.saturating_add(text.len()),
                Some(other) => {
                    return Err(failed(format!(
                        "join: Unexpected type: got '{}', want 'string'",
                        type_name(&other)
                    )));
                }
                None => {}
            }
        }
        self.meter.allocate(len as u64)?;
        self.meter.scan(len)?;
        let mut joined = String::with_capacity(len);
        for index in 0..list.len() {
            if index > 0 {
                joined.push_str(separator);
            }
            if let Some(Value::String(text)) = list.get(index) {
                joined.push_str(&text);
            }
        }
        Ok(Value::String(Text::owned(joined)))
    }

    fn quote(&mut self, text: &str) -> Result<Value<'a>, Error> {
        self.meter.scan(text.len())?;
        self.meter.allocate(text.len() as u64 * 2 + 2)?;
        let mut quoted = String::with_capacity(text.len() + 2);
        quoted.push('"');
        for c in text.chars() {
            match c {
                '\x07' => quoted.push_str("\\a"),
                '\x08' => quoted.push_str("\\b"),
                '\x0c' => quoted.push_str("\\f"),
                '\n' => quoted.push_str("\\n"),
                '\r' => quoted.push_str("\\r"),
                '\t' => quoted.push_str("\\t"),
                '\x0b' => quoted.push_str("\\v"),
                '\\' => quoted.push_str("\\\\"),
                '"' => quoted.push_str("\\\""),
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        Ok(Value::String(Text::owned(quoted)))
    }

    /// `urlencode(value)`: the value's text (as it would be substituted into a string) with
    /// every byte outside RFC 3986's unreserved characters percent-encoded.
    fn urlencode(&mut self, value: &Value<'a>) -> Result<Value<'a>, Error> {
        let rendered;
        let text: &str = match value {
            Value::String(text) => text,
            other => {
                check_size(other)?;
                let json = serde_json::to_value(other)
                    .map_err(|error| failed(format!("urlencode: {error}")))?;
                rendered = crate::expr::to_text(&json);
                self.meter.allocate(rendered.len() as u64)?;
                &rendered
            }
        };
        self.meter.scan(text.len())?;
        let unreserved =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        let len: usize = text.bytes().map(|b| if unreserved(b) { 1 } else { 3 }).sum();
        self.meter.allocate(len as u64)?;
        let encoded = crate::url::encode(text);
        Ok(Value::String(Text::owned(encoded)))
    }

    /// `template.format(args)`: printf-style clauses `%[.precision]conversion`, each taking
    /// the next argument; `%%` is a `%`.
    fn format(&mut self, template: &str, args: &List<'a>) -> Result<Value<'a>, Error> {
        self.meter.scan(template.len())?;
        let fail = |message: String| failed(format!("format: {message}"));
        let mut out = String::new();
        let mut rest = template;
        let mut next = 0;
        while let Some(at) = rest.find('%') {
            self.meter.allocate(at as u64)?;
            out.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            if let Some(after) = rest.strip_prefix('%') {
                out.push('%');
                rest = after;
                continue;
            }
            let Some(arg) = args.get(next) else {
                return Err(fail(format!("index {next} out of range")));
            };
            if rest.is_empty() {
                return Err(fail("unexpected end of string".to_owned()));
            }
            let (clause, after) = Clause::parse(rest)
                .map_err(|error| fail(format!("could not parse formatting clause: {error}")))?;
            let formatted = match self.clause(clause, &arg) {
                Ok(formatted) => formatted,
                Err(Error::Failed(message)) => {
                    return Err(fail(format!("error during formatting: {message}")));
                }
                Err(error) => return Err(error),
            };
            self.meter.allocate(formatted.len() as u64)?;
            out.push_str(&formatted);
            rest = after;
            next += 1;
        }
        self.meter.allocate(rest.len() as u64)?;
        out.push_str(rest);
        Ok(Value::String(Text::owned(out)))
    }

    fn clause(&mut self, clause: Clause, arg: &Value<'a>) -> Result<String, Error> {
        self.meter.step(1)?;
        let as_double = match arg {
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Double(d) => Some(*d),
            _ => None,
        };
        let sign = |i: i64| if i < 0 { "-" } else { "" };
        let formatted = match clause {
            Clause::String => return self.display(arg),
            Clause::Decimal => match arg {
                Value::Int(i) => Some(i.to_string()),
                Value::UInt(u) => Some(u.to_string()),
                Value::Double(d) => Some(display_double(*d)),
                _ => None,
            },
            Clause::Fixed(precision) => as_double.map(|d| match non_finite(d) {
                Some(name) => name.to_owned(),
                None => format!("{d:.precision$}"),
            }),
            Clause::Scientific(precision) => as_double.map(|d| match non_finite(d) {
                Some(name) => name.to_owned(),
                None => scientific(d, precision),
            }),
            Clause::Binary => match arg {
                Value::Bool(b) => Some(u8::from(*b).to_string()),
                Value::Int(i) => Some(format!("{}{:b}", sign(*i), i.unsigned_abs())),
                Value::UInt(u) => Some(format!("{u:b}")),
                _ => None,
            },
            Clause::Hex { upper } => match arg {
                Value::Int(i) if upper => Some(format!("{}{:X}", sign(*i), i.unsigned_abs())),
                Value::Int(i) => Some(format!("{}{:x}", sign(*i), i.unsigned_abs())),
                Value::UInt(u) if upper => Some(format!("{u:X}")),
                Value::UInt(u) => Some(format!("{u:x}")),
                Value::String(text) => Some(self.hex(text.as_bytes(), upper)?),
                Value::Bytes(bytes) => Some(self.hex(bytes, upper)?),
                _ => None,
            },
            Clause::Octal => match arg {
                Value::Int(i) => Some(format!("{}{:o}", sign(*i), i.unsigned_abs())),
                Value::UInt(u) => Some(format!("{u:o}")),
                _ => None,
            },
        };
        formatted.ok_or_else(|| failed(clause.type_error(type_name(arg))))
    }

    fn hex(&mut self, bytes: &[u8], upper: bool) -> Result<String, Error> {
        self.meter.scan(bytes.len())?;
        self.meter.allocate(bytes.len() as u64 * 2)?;
        let digits: &[u8; 16] = if upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push(char::from(digits[usize::from(b >> 4)]));
            out.push(char::from(digits[usize::from(b & 0xf)]));
        }
        Ok(out)
    }

    /// How `%s` shows a value: lists and maps in CEL-like syntax, strings without quotes,
    /// map entries sorted (by their text) so the text is the same whatever the map's order.
    fn display(&mut self, value: &Value<'a>) -> Result<String, Error> {
        self.meter.step(1)?;
        let text = match value {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Double(d) => display_double(*d),
            Value::String(text) => text.to_string(),
            Value::Bytes(bytes) => lossy_utf8(bytes),
            Value::Type(name) => (*name).to_owned(),
            Value::List(list) => {
                let mut items = Vec::with_capacity(list.len());
                for index in 0..list.len() {
                    if let Some(item) = list.get(index) {
                        items.push(self.display(&item)?);
                    }
                }
                format!("[{}]", items.join(", "))
            }
            Value::Map(map) => {
                let mut entries = Vec::with_capacity(map.len());
                for (key, value) in map.entries() {
                    entries.push((self.display(&key)?, self.display(&value)?));
                }
                entries.sort();
                let entries: Vec<String> =
                    entries.into_iter().map(|(key, value)| format!("{key}: {value}")).collect();
                format!("{{{}}}", entries.join(", "))
            }
            Value::Optional(_) => {
                return Err(failed(format!(
                    "string clause can only be used on strings, bools, bytes, ints, doubles, \
                     maps, lists, types, durations, and timestamps, was given {}",
                    type_name(value)
                )));
            }
        };
        self.meter.allocate(text.len() as u64)?;
        Ok(text)
    }
}

fn to_int(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// The byte offset of character `index` of `text` (its length past the end).
fn byte_offset(text: &str, index: usize) -> usize {
    text.char_indices().nth(index).map_or(text.len(), |(at, _)| at)
}

/// `-`, `*`, `/`, `%`, and `+` on numbers: same types only, integers checked for overflow.
fn arithmetic<'a>(name: &str, a: &Value<'a>, b: &Value<'a>) -> Result<Value<'a>, Error> {
    use Value::{Double, Int, UInt};
    let symbol = name.trim_matches('_');
    match (name, a, b) {
        (operators::ADD, Int(x), Int(y)) => x.checked_add(*y).map(Int),
        (operators::ADD, UInt(x), UInt(y)) => x.checked_add(*y).map(UInt),
        (operators::ADD, Double(x), Double(y)) => Some(Double(x + y)),
        (operators::SUBSTRACT, Int(x), Int(y)) => x.checked_sub(*y).map(Int),
        (operators::SUBSTRACT, UInt(x), UInt(y)) => x.checked_sub(*y).map(UInt),
        (operators::SUBSTRACT, Double(x), Double(y)) => Some(Double(x - y)),
        (operators::MULTIPLY, Int(x), Int(y)) => x.checked_mul(*y).map(Int),
        (operators::MULTIPLY, UInt(x), UInt(y)) => x.checked_mul(*y).map(UInt),
        (operators::MULTIPLY, Double(x), Double(y)) => Some(Double(x * y)),
        (operators::DIVIDE, Int(x), Int(0)) => {
            return Err(failed(format!("division by zero: {x} / 0")));
        }
        (operators::DIVIDE, UInt(x), UInt(0)) => {
            return Err(failed(format!("division by zero: {x}u / 0u")));
        }
        (operators::DIVIDE, Int(x), Int(y)) => x.checked_div(*y).map(Int),
        (operators::DIVIDE, UInt(x), UInt(y)) => x.checked_div(*y).map(UInt),
        (operators::DIVIDE, Double(x), Double(y)) => Some(Double(x / y)),
        (operators::MODULO, Int(x), Int(0)) => {
            return Err(failed(format!("remainder by zero: {x} % 0")));
        }
        (operators::MODULO, UInt(x), UInt(0)) => {
            return Err(failed(format!("remainder by zero: {x}u % 0u")));
        }
        (operators::MODULO, Int(x), Int(y)) => x.checked_rem(*y).map(Int),
        (operators::MODULO, UInt(x), UInt(y)) => x.checked_rem(*y).map(UInt),
        _ => return Err(no_overload(name, None, &[a, b])),
    }
    .ok_or_else(|| overflow(symbol, describe(a), describe(b)))
}

fn int<'a>(value: &Value<'a>) -> Result<Value<'a>, Error> {
    match value {
        Value::Int(i) => Ok(Value::Int(*i)),
        Value::UInt(u) => {
            i64::try_from(*u).map(Value::Int).map_err(|_| failed("int: integer overflow"))
        }
        // The range is exclusive at both ends: i64::MAX as f64 is 2^63, out of range.
        Value::Double(d) if *d > i64::MIN as f64 && *d < i64::MAX as f64 => {
            Ok(Value::Int(*d as i64))
        }
        Value::Double(_) => Err(failed("int: integer overflow")),
        Value::String(text) => text
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|error| failed(format!("int: string parse error: {error}"))),
        other => Err(no_overload("int", None, &[other])),
    }
}

fn uint<'a>(value: &Value<'a>) -> Result<Value<'a>, Error> {
    match value {
        Value::UInt(u) => Ok(Value::UInt(*u)),
        Value::Int(i) => u64::try_from(*i)
            .map(Value::UInt)
            .map_err(|_| failed("uint: unsigned integer overflow")),
        Value::Double(d) if *d >= 0.0 && *d < u64::MAX as f64 => Ok(Value::UInt(*d as u64)),
        Value::Double(_) => Err(failed("uint: unsigned integer overflow")),
        Value::String(text) => text
            .parse::<u64>()
            .map(Value::UInt)
            .map_err(|error| failed(format!("uint: string parse error: {error}"))),
        other => Err(no_overload("uint", None, &[other])),
    }
}

fn double<'a>(value: &Value<'a>) -> Result<Value<'a>, Error> {
    match value {
        Value::Double(d) => Ok(Value::Double(*d)),
        Value::Int(i) => Ok(Value::Double(*i as f64)),
        Value::UInt(u) => Ok(Value::Double(*u as f64)),
        Value::String(text) => text
            .parse::<f64>()
            .map(Value::Double)
            .map_err(|error| failed(format!("double: string parse error: {error}"))),
        other => Err(no_overload("double", None, &[other])),
    }
}

fn to_bool<'a>(value: &Value<'a>) -> Result<Value<'a>, Error> {
    match value {
        Value::Bool(b) => Ok(Value::Bool(*b)),
        Value::String(text) => match &**text {
            "1" | "t" | "true" | "TRUE" | "True" => Ok(Value::Bool(true)),
            "0" | "f" | "false" | "FALSE" | "False" => Ok(Value::Bool(false)),
            _ => Err(failed(format!("bool: cannot convert {} to a bool", describe(value)))),
        },
        other => Err(no_overload("bool", None, &[other])),
    }
}

// ----- format -----

/// A formatting clause of `format()`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Clause {
    String,
    Decimal,
    Fixed(usize),
    Scientific(usize),
    Binary,
    Hex { upper: bool },
    Octal,
}

impl Clause {
    /// Parses the clause at the start of `text` (just after its `%`).
    fn parse(text: &str) -> Result<(Clause, &str), String> {
        let (precision, rest) = match text.strip_prefix('.') {
            None => (6, text),
            Some(digits) => {
                let end =
                    digits.find(|c: char| !c.is_ascii_digit()).ok_or("the precision has no end")?;
                let precision: usize = digits[..end]
                    .parse()
                    .map_err(|error| format!("the precision is not a number: {error}"))?;
                if precision > 100 {
                    return Err(format!("precision {precision} is above the maximum, 100"));
                }
                (precision, &digits[end..])
            }
        };
        let mut chars = rest.chars();
        let clause = match chars.next() {
            Some('s') => Clause::String,
            Some('d') => Clause::Decimal,
            Some('f') => Clause::Fixed(precision),
            Some('e') => Clause::Scientific(precision),
            Some('b') => Clause::Binary,
            Some('x') => Clause::Hex { upper: false },
            Some('X') => Clause::Hex { upper: true },
            Some('o') => Clause::Octal,
            Some(c) => return Err(format!("unrecognized formatting clause \"{c}\"")),
            None => return Err("unexpected end of string".to_owned()),
        };
        Ok((clause, chars.as_str()))
    }

    fn type_error(self, given: &str) -> String {
        let accepted = match self {
            Clause::String => {
                "string clause can only be used on strings, bools, bytes, ints, \
                               doubles, maps, lists, types, durations, and timestamps"
            }
            Clause::Decimal => "decimal clause can only be used on ints, uints, and doubles",
            Clause::Fixed(_) => "fixed-point clause can only be used on ints, uints, and doubles",
            Clause::Scientific(_) => {
                "scientific clause can only be used on ints, uints, and doubles"
            }
            Clause::Binary => "only ints, uints, and bools can be formatted as binary",
            Clause::Hex { .. } => "only ints, uints, bytes, and strings can be formatted as hex",
            Clause::Octal => "octal clause can only be used on ints and uints",
        };
        format!("{accepted}, was given {given}")
    }
}

fn non_finite(d: f64) -> Option<&'static str> {
    if d.is_nan() {
        Some("NaN")
    } else if d.is_infinite() {
        Some(if d > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        None
    }
}

fn display_double(d: f64) -> String {
    non_finite(d).map_or_else(|| d.to_string(), str::to_owned)
}

/// `d` in scientific notation with `precision` digits after the point and an exponent of at
/// least two digits with its sign, `1.234500e+03`.
fn scientific(d: f64, precision: usize) -> String {
    let formatted = format!("{d:.precision$e}");
    let (mantissa, exponent) = formatted.split_once('e').unwrap_or((&formatted, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
}

/// Bytes as text for `%s`: each run of invalid UTF-8 becomes one replacement character.
fn lossy_utf8(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for (index, chunk) in bytes.utf8_chunks().enumerate() {
        out.push_str(chunk.valid());
        // An invalid sequence right after another (nothing valid between) was already marked.
        if !chunk.invalid().is_empty() && (index == 0 || !chunk.valid().is_empty()) {
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
    out
}

// ----- results -----

impl Serialize for Value<'_> {
    /// The JSON form of a result: bytes in base64, types by name, an optional as `null`, map
    /// keys as text, in the order the map has them.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null | Value::Optional(_) => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::UInt(u) => serializer.serialize_u64(*u),
            Value::Double(d) => serializer.serialize_f64(*d),
            Value::String(text) => serializer.serialize_str(text),
            Value::Bytes(bytes) => serializer.serialize_str(&base64(bytes)),
            Value::Type(name) => serializer.serialize_str(name),
            Value::List(List::Json(items)) => items.serialize(serializer),
            Value::List(List::Built(items)) => serializer.collect_seq(items.iter()),
            Value::Map(Map::Json(map)) => map.serialize(serializer),
            Value::Map(Map::Built(entries)) => {
                serializer.collect_map(entries.iter().map(|(key, value)| (KeyText(key), value)))
            }
        }
    }
}

/// A map key as JSON has it: text.
struct KeyText<'k, 'a>(&'k Key<'a>);

impl Serialize for KeyText<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Key::String(text) => serializer.serialize_str(text),
            Key::Bool(b) => serializer.serialize_str(if *b { "true" } else { "false" }),
            Key::Int(i) => serializer.serialize_str(&i.to_string()),
            Key::UInt(u) => serializer.serialize_str(&u.to_string()),
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4), as bytes appear in JSON results.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk
            .iter()
            .enumerate()
            .fold(0u32, |group, (i, b)| group | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (group >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads_like_rfc_4648() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg==")];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn lossy_bytes_mark_each_invalid_run_once() {
        assert_eq!(lossy_utf8(b"\xff\xfeab"), "\u{fffd}ab");
        assert_eq!(lossy_utf8(b"a\xffb\xfe"), "a\u{fffd}b\u{fffd}");
    }
}
