//! The expression evaluator against the `cel` crate's interpreter, which evaluated expressions
//! before: hand-picked and generated expressions give the same result (or both fail); and the
//! hostile expressions that froze the engine stop at a limit, quickly.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};
use wayline_lang::expr::{EvalError, Expression, MAX_EXPRESSION_DEPTH, Scope, Template};

// ----- the data and the two engines -----

struct Data {
    inputs: Value,
    steps: HashMap<String, Value>,
    env: Value,
}

impl Scope for Data {
    fn inputs(&self) -> Cow<'_, Value> {
        Cow::Borrowed(&self.inputs)
    }
    fn step(&self, id: &str) -> Option<Value> {
        self.steps.get(id).cloned()
    }
    fn env(&self) -> Cow<'_, Value> {
        Cow::Borrowed(&self.env)
    }
    fn secret(&self, _: &str) -> Option<String> {
        None
    }
    fn execution(&self) -> Value {
        json!({ "id": "ex1", "started_at": "2026-01-01T00:00:00Z" })
    }
    fn workflow_name(&self) -> &str {
        "w"
    }
}

fn data(inputs: Value) -> Data {
    let steps = HashMap::from([(
        "build".to_owned(),
        json!({ "status": "succeeded", "outputs": { "tag": "v1.2", "files": 3 } }),
    )]);
    Data { inputs, steps, env: json!({ "RUST_LOG": "info" }) }
}

fn sample() -> Data {
    data(json!({
        "s": "héllo wörld",
        "csv": "a,b,,c",
        "i": 3,
        "neg": -7,
        "d": 2.5,
        "big": 18446744073709551615u64,
        "b": true,
        "n": null,
        "nums": [3, 1, 2],
        "strs": ["x", "y", "é"],
        "mixed": [1, 2.5, "x", true, null, [1], {"k": 1}],
        "m": { "a": 1, "b": [true], "c": "see" },
        "empty": {},
    }))
}

/// What the new evaluator says: the result, or that it failed.
fn ours(source: &str, data: &Data) -> Option<Result<Value, EvalError>> {
    Some(Expression::parse(source).ok()?.evaluate(data))
}

thread_local! {
    static ENV: Arc<cel::Env> = {
        let mut env = cel::Env::stdlib();
        env.add_extension(cel::extensions::strings).expect("the strings extension registers");
        Arc::new(env)
    };
}

/// What the engine said before: the `cel` crate's interpreter on the data bound the way
/// `Expression::evaluate` bound it, the result through `Value::json`.
fn oracle(source: &str, data: &Data) -> Result<Value, String> {
    ENV.with(|env| {
        let ast = env
            .parser()
            .max_recursion_depth(MAX_EXPRESSION_DEPTH)
            .parse(source)
            .map_err(|error| format!("{error:?}"))?;
        let mut context = cel::Context::with_env(Arc::clone(env));
        context.add_variable_from_value("inputs", to_cel(&data.inputs));
        context.add_variable_from_value("env", to_cel(&data.env));
        let steps: serde_json::Map<String, Value> =
            data.steps.iter().map(|(id, step)| (id.clone(), step.clone())).collect();
        context.add_variable_from_value("steps", to_cel(&Value::Object(steps)));
        let value = context.resolve(&ast).map_err(|error| error.to_string())?;
        value.json().map_err(|error| format!("{error:?}"))
    })
}

/// JSON to CEL as the engine did it: integers are `int` whenever they fit.
fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let map: HashMap<String, cel::Value> =
                map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            map.into()
        }
    }
}

/// `None` when both agree; otherwise what each said.
fn disagreement(source: &str, data: &Data) -> Option<String> {
    let ours = ours(source, data)?;
    let theirs = oracle(source, data);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) if a == b => None,
        (Err(_), Err(_)) => None,
        _ => Some(format!("`{source}`\n  ours:   {ours:?}\n  oracle: {theirs:?}")),
    }
}

// ----- hand-picked expressions -----

/// Corners of the language: mixed numeric types, overflow, optionals, string functions at
/// their bounds, error absorption in `||` and `all()`, the formatting clauses.
const PROBES: &[&str] = &[
    "inputs.s",
    "inputs.m",
    "steps.build.outputs.tag + '-' + string(steps.build.outputs.files)",
    "env.RUST_LOG",
    "inputs.nums.map(x, x * 2)",
    "inputs.nums.filter(x, x > 1)",
    "inputs.nums.map(x, x > 1, x * 10)",
    "inputs.nums.all(x, x > 0)",
    "inputs.mixed.all(x, x > 0)",
    "[1, 'a', 0].all(x, x > 0)",
    "[1, 'a', 0].exists(x, x > 0)",
    "['a', 0].exists(x, x > 0)",
    "inputs.nums.exists_one(x, x > 2)",
    "inputs.nums.existsOne(x, x > 2)",
    "['a', 2].exists_one(x, x > 2)",
    "inputs.m.all(k, k != 'z')",
    "inputs.m.exists(k, k == 'b')",
    "'abc'.map(x, x)",
    "[[1, 2], [3]].map(l, l.map(x, x + 1))",
    "true || 1 / 0 == 1",
    "false || 1 / 0 == 1",
    "1 / 0 == 1 || true",
    "1 / 0 == 1 || false",
    "1 || true",
    "false || 1",
    "1 && false",
    "true && 1",
    "1 ? 1 : 2",
    "inputs.b ? inputs.i : inputs.d",
    "!1",
    "-'a'",
    "-inputs.d",
    "-(-9223372036854775808)",
    "-9223372036854775808",
    "9223372036854775807 + 1",
    "-9223372036854775807 - 2",
    "4611686018427387904 * 2",
    "-9223372036854775808 / -1",
    "-9223372036854775808 % -1",
    "7 % 0",
    "7 / 0",
    "7u / 0u",
    "7.0 / 0.0",
    "-7.0 / 0.0",
    "0.0 / 0.0",
    "7 % -3",
    "-7 / 2",
    "1 + 1.0",
    "1u + 1",
    "-1u",
    "inputs.big + 1u",
    "inputs.big + 1",
    "inputs.big > inputs.i",
    "inputs.neg < 1u",
    "inputs.big == 18446744073709551615u",
    "1 == 1.0",
    "1u == 1.0",
    "[1] == [1.0]",
    "{'a': 1} == {'a': 1u}",
    "{1: 'a'} == {1u: 'a'}",
    "inputs.m == {'a': 1, 'b': [true], 'c': 'see'}",
    "inputs == inputs",
    "null == null",
    "null == 0",
    "[1, 2] == [1, 2, 3]",
    "[1] == 1",
    "0.0 / 0.0 == 0.0 / 0.0",
    "1 < 1.5",
    "2u >= 1.5",
    "'a' < 'b'",
    "'é' > 'e'",
    "true < false",
    "b'ab' < b'b'",
    "null < null",
    "[1] < [2]",
    "1 < 'a'",
    "0.0 / 0.0 < 1",
    "1 in [1.0]",
    "'a' in inputs.m",
    "1.0 in {1: 2}",
    "1u in {1: 2}",
    "[1] in {'a': 1}",
    "'a' in 'abc'",
    "null in inputs.m",
    "has(inputs.s)",
    "has(inputs.zz)",
    "has(inputs.nums.x)",
    "has(inputs.m.a)",
    "has(inputs.s.x)",
    "inputs.mixed[1]",
    "inputs.mixed[1u]",
    "inputs.mixed[1.0]",
    "inputs.mixed[1.5]",
    "inputs.mixed[-1]",
    "inputs.mixed[7]",
    "inputs.mixed['x']",
    "inputs.mixed[6].k",
    "inputs.m['a']",
    "inputs.m.zz",
    "inputs.m[1]",
    "inputs.s[0]",
    "inputs.s.x",
    "{'a': 1}['b']",
    "{1: 'a'}[1u]",
    "{1: 'a'}[1.0]",
    "{1u: 'a'}[1]",
    "{true: 1}[true]",
    "{1.5: 1}",
    "{[1]: 1}",
    "{null: 1}",
    "{0: 1, 0u: 2}",
    "{'a': 1, 'a': 2}",
    "{'b': 1, 'a': 2, 'c': 3}",
    "{1: 'x', true: 'y', 2u: 'z'}",
    "inputs.?s",
    "inputs.?zz",
    "[?inputs.?zz, 1]",
    "[?inputs.?s, 1]",
    "{?'a': inputs.?zz, 'b': 2}",
    "{?'a': inputs.?i, 'b': 2}",
    "type(inputs.?zz)",
    "inputs.?m.a",
    "inputs.?m.?zz",
    "inputs.?m.zz",
    "has(inputs.?m.a)",
    "has(inputs.?zz.a)",
    "inputs.?s.x",
    "inputs.nums[?5]",
    "inputs.nums[?'x']",
    "inputs.m[?'a']",
    "inputs.?zz.a",
    "inputs.?m == inputs.?m",
    "inputs.?zz == inputs.?zz",
    "type(1) == int",
    "type(type(1))",
    "type(inputs.mixed)",
    "type(inputs.m) == map",
    "type(null)",
    "type(b'a')",
    "inputs.mixed.map(x, type(x))",
    "int",
    "dyn",
    "int.x",
    "uint == type(1u)",
    "'abc' + 1",
    "[1] + 1",
    "[1] + {'a': 1}",
    "{'a': 1} + {'b': 2}",
    "inputs.nums + inputs.strs",
    "b'ab' + b'c'",
    "b'ab' == b'ab'",
    "'x' * 2",
    "2.5 % 1.0",
    "dyn(1) == 1u",
    "string(1.0)",
    "string(1.5e300)",
    "string(1e21)",
    "string(-0.0)",
    "string(0.1 + 0.2)",
    "string(inputs.big)",
    "string(true)",
    "string(null)",
    "string([1])",
    "string(b'\\xff')",
    "string(b'ok')",
    "double('inf')",
    "double('1e3')",
    "double(' 1')",
    "double(inputs.big)",
    "int('+5')",
    "int(' 5')",
    "int('5.0')",
    "int(1e19)",
    "int(-1.9)",
    "int(9223372036854775807u)",
    "int(9223372036854775808u)",
    "int(double('nan'))",
    "uint(-1)",
    "uint(2.9)",
    "uint('18446744073709551615')",
    "bool('True')",
    "bool('yes')",
    "bool(1)",
    "bytes('abc')",
    "bytes(1)",
    "size('héllo')",
    "size(b'abc')",
    "size(inputs.nums)",
    "size(inputs.m)",
    "size(1)",
    "inputs.s.size()",
    "1.size()",
    "size()",
    "''.size(1)",
    "'abc'.charAt(3)",
    "'abc'.charAt(4)",
    "'abc'.charAt(-1)",
    "inputs.s.charAt(1)",
    "inputs.s.indexOf('l')",
    "inputs.s.indexOf('ö')",
    "inputs.s.indexOf('l', 3)",
    "inputs.s.indexOf('', 30)",
    "inputs.s.indexOf('x', 30)",
    "inputs.s.indexOf('l', -1)",
    "inputs.s.lastIndexOf('l')",
    "inputs.s.lastIndexOf('l', 2)",
    "inputs.s.lastIndexOf('', 4)",
    "inputs.s.lastIndexOf('wörld', 7)",
    "inputs.s.lastIndexOf('wörld', 6)",
    "'bananananana'.lastIndexOf('nana', 7)",
    "''.lastIndexOf('@@')",
    "'abc'.substring(1)",
    "'abc'.substring(1, 2)",
    "'abc'.substring(2, 1)",
    "'abc'.substring(4)",
    "'abc'.substring(-1, 2)",
    "inputs.s.substring(1, 4)",
    "' a\\t'.trim()",
    "'ÀbC'.lowerAscii()",
    "'àBc'.upperAscii()",
    "inputs.s.reverse()",
    "inputs.strs.join()",
    "inputs.strs.join('-')",
    "['a', 1].join('-')",
    "inputs.m.join()",
    "[].join(',')",
    "inputs.csv.split(',')",
    "inputs.csv.split(',', 2)",
    "inputs.csv.split(',', 0)",
    "inputs.csv.split(',', -1)",
    "inputs.s.split('')",
    "inputs.s.split('', 3)",
    "''.split('')",
    "''.split(',')",
    "'abc'.replace('', '-')",
    "'aaa'.replace('a', 'bb', 2)",
    "'aaa'.replace('a', 'bb', -1)",
    "'aaa'.replace('a', 'bb', 0)",
    "inputs.s.replace('l', 'L')",
    "'abc'.contains('')",
    "inputs.s.startsWith('hé')",
    "inputs.s.endsWith('rld')",
    "inputs.s.contains(1)",
    "'abc'.contains()",
    "contains('abc', 'b')",
    "'abc'.matches('^a')",
    "matches('abc', 'b')",
    "inputs.s.matches('w.rld$')",
    "'abc'.matches('(')",
    "'%s %d %.2f %e %x %X %o %b'.format(['s', 5, 3.14159, 1234.5, 255, 'hi', 8, 5])",
    "'%s'.format([[1, 'a', 2.0]])",
    "'%s'.format([{'b': 1, 'a': [2]}])",
    "'%s'.format([inputs.m])",
    "'%s'.format([null])",
    "'%s'.format([type(1)])",
    "'%s'.format([b'\\xff\\xfeab'])",
    "'%s'.format([inputs.?s])",
    "'%d'.format([1.5])",
    "'%d'.format(['x'])",
    "'%%'.format([])",
    "'%'.format([])",
    "'%'.format([1])",
    "'%.3e'.format([0.000123])",
    "'%e'.format([0.0])",
    "'%f'.format([1])",
    "'%.0f'.format([2.5])",
    "'%f'.format([0.0 / 0.0])",
    "'%e'.format([-1.0 / 0.0])",
    "'%.101f'.format([1])",
    "'%.f'.format([1])",
    "'%z'.format([1])",
    "'%x'.format([-255])",
    "'%b'.format([true])",
    "'%o'.format([1.5])",
    "'%x'.format([b'\\x01\\xab'])",
    "'%s and %s'.format(['a'])",
    "'%d'.format(inputs.m)",
    "strings.quote('a\"b\\n')",
    "x",
    "foo(1)",
    "'a'.foo()",
    "_foo(1)",
    "'1'.int()",
    "Foo{a: 1}",
    // Not compared: `optional.of(1)` and the other `optional` functions, which the engine
    // never offered (validation rejects them as unknown functions) and the evaluator leaves
    // out.
];

#[test]
fn hand_picked_expressions_agree_with_the_cel_interpreter() {
    let data = sample();
    let failures: Vec<String> =
        PROBES.iter().filter_map(|source| disagreement(source, &data)).collect();
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
}

/// The probes exercise both sides: most succeed, and a fair share fail.
#[test]
fn the_probes_cover_successes_and_failures() {
    let data = sample();
    let (ok, failed): (Vec<_>, Vec<_>) =
        PROBES.iter().filter_map(|source| ours(source, &data)).partition(Result::is_ok);
    assert!(ok.len() > PROBES.len() / 2, "{} succeed, {} fail", ok.len(), failed.len());
    assert!(failed.len() > PROBES.len() / 5, "{} succeed, {} fail", ok.len(), failed.len());
}

// ----- generated expressions -----

/// A small deterministic generator of typed expressions: typed so that most expressions get
/// past the type checks and exercise the functions, with a share of mismatches for the
/// errors. It never iterates over a map in an order-dependent way (`map()`, `filter()`,
/// list `+` map): the interpreter's maps are hash maps with a random order.
struct Gen {
    state: u64,
    /// Comprehension variables in scope, with their types.
    vars: Vec<(String, Ty)>,
    /// No maps here: the right side of a list `+` iterates over them.
    no_maps: bool,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Ty {
    Int,
    UInt,
    Double,
    Str,
    Bool,
    List,
    Map,
    Any,
}

impl Gen {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'s>(&mut self, choices: &[&'s str]) -> &'s str {
        choices[self.below(choices.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn any_type(&mut self) -> Ty {
        let types = [Ty::Int, Ty::UInt, Ty::Double, Ty::Str, Ty::Bool, Ty::List, Ty::Map];
        types[self.below(if self.no_maps { 6 } else { 7 })]
    }

    /// An expression of type `ty` (mostly), at most `depth` levels deep.
    fn expr(&mut self, ty: Ty, depth: u32) -> String {
        let ty = if ty == Ty::Any || self.chance(6) { self.any_type() } else { ty };
        let ty = if self.no_maps && ty == Ty::Map { Ty::List } else { ty };
        if depth == 0 || self.chance(25) {
            return self.leaf(ty);
        }
        let d = depth - 1;
        match ty {
            Ty::Int => match self.below(11) {
                0 => {
                    let op = self.pick(&["+", "-", "*", "/", "%"]);
                    format!("({} {op} {})", self.expr(Ty::Int, d), self.expr(Ty::Int, d))
                }
                1 => format!("-({})", self.expr(Ty::Int, d)),
                2 => {
                    let sized = self.sized();
                    format!("size({})", self.expr(sized, d))
                }
                3 => {
                    let sized = self.sized();
                    format!("{}.size()", self.expr(sized, d))
                }
                4 => format!("int({})", self.expr(Ty::Any, d)),
                5 => format!("{}.indexOf({})", self.expr(Ty::Str, d), self.expr(Ty::Str, d)),
                6 => format!(
                    "{}.lastIndexOf({}, {})",
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Int, d)
                ),
                7 => self.conditional(Ty::Int, d),
                8 => format!("{}[{}]", self.int_list(d), self.expr(Ty::Int, d)),
                9 => format!(
                    "{}.indexOf({}, {})",
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Int, d)
                ),
                _ => format!("{}.map({}).size()", self.int_list(d), self.body("x", Ty::Int, d)),
            },
            Ty::UInt => match self.below(4) {
                0 => {
                    let op = self.pick(&["+", "-", "*", "/", "%"]);
                    format!("({} {op} {})", self.expr(Ty::UInt, d), self.expr(Ty::UInt, d))
                }
                1 => format!("uint({})", self.expr(Ty::Any, d)),
                2 => self.conditional(Ty::UInt, d),
                _ => format!("-({})", self.expr(Ty::UInt, d)),
            },
            Ty::Double => match self.below(4) {
                0 => {
                    let op = self.pick(&["+", "-", "*", "/"]);
                    format!("({} {op} {})", self.expr(Ty::Double, d), self.expr(Ty::Double, d))
                }
                1 => format!("double({})", self.expr(Ty::Any, d)),
                2 => format!("-({})", self.expr(Ty::Double, d)),
                _ => self.conditional(Ty::Double, d),
            },
            Ty::Str => match self.below(16) {
                0 => format!("({} + {})", self.expr(Ty::Str, d), self.expr(Ty::Str, d)),
                1 => {
                    let f = self.pick(&["lowerAscii", "upperAscii", "trim", "reverse"]);
                    format!("{}.{f}()", self.expr(Ty::Str, d))
                }
                2 => format!(
                    "{}.replace({}, {})",
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Str, d)
                ),
                3 => format!(
                    "{}.replace({}, {}, {})",
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Int, d)
                ),
                4 => format!("{}.substring({})", self.expr(Ty::Str, d), self.expr(Ty::Int, d)),
                5 => format!(
                    "{}.substring({}, {})",
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Int, d),
                    self.expr(Ty::Int, d)
                ),
                6 => format!("{}.charAt({})", self.expr(Ty::Str, d), self.expr(Ty::Int, d)),
                7 => format!("string({})", self.expr(Ty::Any, d)),
                8 => format!("{}.join({})", self.str_list(d), self.expr(Ty::Str, d)),
                9 => {
                    let template = self.pick(&[
                        "'%s'",
                        "'%d-%s'",
                        "'%.2f|%e'",
                        "'%x %o %b'",
                        "'%X%%'",
                        "'%.0e %s'",
                        "'<%s>'",
                    ]);
                    let args = (0..self.below(3))
                        .map(|_| self.expr(Ty::Any, d))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("{template}.format([{}, {args}])", self.expr(Ty::Any, d))
                }
                10 => format!("strings.quote({})", self.expr(Ty::Str, d)),
                11 => self.conditional(Ty::Str, d),
                12 => format!("{}[{}]", self.str_list(d), self.expr(Ty::Int, d)),
                13 => format!("{}.join()", self.str_list(d)),
                14 => format!("{}.split({})[0]", self.expr(Ty::Str, d), self.expr(Ty::Str, d)),
                _ => format!("inputs.m[{}]", self.expr(Ty::Str, d)),
            },
            Ty::Bool => match self.below(16) {
                0 => {
                    let op = self.pick(&["==", "!=", "<", "<=", ">", ">="]);
                    let (a, b) = (self.numeric(), self.numeric());
                    format!("({} {op} {})", self.expr(a, d), self.expr(b, d))
                }
                1 => {
                    let op = self.pick(&["==", "!="]);
                    format!("({} {op} {})", self.expr(Ty::Any, d), self.expr(Ty::Any, d))
                }
                2 => format!("!({})", self.expr(Ty::Bool, d)),
                3 => {
                    let op = self.pick(&["&&", "||"]);
                    format!("({} {op} {})", self.expr(Ty::Bool, d), self.expr(Ty::Bool, d))
                }
                4 => {
                    let f = self.pick(&["contains", "startsWith", "endsWith"]);
                    format!("{}.{f}({})", self.expr(Ty::Str, d), self.expr(Ty::Str, d))
                }
                5 => {
                    let pattern = self.pick(&["'^h'", "'l+'", "'[0-9]'", "'é'", "'^$'", "'('"]);
                    format!("{}.matches({pattern})", self.expr(Ty::Str, d))
                }
                6 => format!("({} in {})", self.expr(Ty::Any, d), self.expr(Ty::List, d)),
                7 => format!("({} in {})", self.expr(Ty::Any, d), self.expr(Ty::Map, d)),
                8 => {
                    let f = self.pick(&["all", "exists", "exists_one"]);
                    let range =
                        if self.chance(70) { self.int_list(d) } else { self.expr(Ty::Map, d) };
                    let element =
                        if range.contains('{') || range.contains(".m") { Ty::Str } else { Ty::Int };
                    format!("{range}.{f}({})", self.body("x", element, d))
                }
                9 => format!("has({}.a)", self.expr(Ty::Map, d)),
                10 => format!("bool({})", self.expr(Ty::Any, d)),
                11 => {
                    let name = self.pick(&[
                        "int",
                        "uint",
                        "double",
                        "string",
                        "bool",
                        "list",
                        "map",
                        "null_type",
                    ]);
                    format!("type({}) == {name}", self.expr(Ty::Any, d))
                }
                12 => self.conditional(Ty::Bool, d),
                13 => {
                    let op = self.pick(&["<", ">="]);
                    format!("({} {op} {})", self.expr(Ty::Str, d), self.expr(Ty::Str, d))
                }
                14 => format!("({} == {})", self.expr(Ty::List, d), self.expr(Ty::List, d)),
                _ => format!("({} == {})", self.expr(Ty::Map, d), self.expr(Ty::Map, d)),
            },
            Ty::List => match self.below(9) {
                0 => format!("[{}, {}]", self.expr(Ty::Any, d), self.expr(Ty::Any, d)),
                1 => {
                    let left = self.expr(Ty::List, d);
                    let outer = std::mem::replace(&mut self.no_maps, true);
                    let right = self.expr(Ty::List, d);
                    self.no_maps = outer;
                    format!("({left} + {right})")
                }
                2 => format!("{}.map({})", self.int_list(d), self.body("x", Ty::Int, d)),
                3 => format!(
                    "{}.filter({})",
                    self.int_list(d),
                    self.body_typed("x", Ty::Int, Ty::Bool, d)
                ),
                4 => format!(
                    "{}.map(x, {}, {})",
                    self.int_list(d),
                    self.with_var("x", Ty::Int, |g| g.expr(Ty::Bool, d)),
                    self.with_var("x", Ty::Int, |g| g.expr(Ty::Any, d)),
                ),
                5 => format!("{}.split({})", self.expr(Ty::Str, d), self.expr(Ty::Str, d)),
                6 => format!(
                    "{}.split({}, {})",
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Str, d),
                    self.expr(Ty::Int, d)
                ),
                7 => format!("[?{}.?a, {}]", self.expr(Ty::Map, d), self.expr(Ty::Any, d)),
                _ => self.conditional(Ty::List, d),
            },
            Ty::Map | Ty::Any => match self.below(4) {
                0 => format!("{{'a': {}, 'b': {}}}", self.expr(Ty::Any, d), self.expr(Ty::Any, d)),
                1 => format!(
                    "{{1: {}, 2u: {}, true: {}}}",
                    self.expr(Ty::Any, d),
                    self.expr(Ty::Any, d),
                    self.expr(Ty::Any, d)
                ),
                2 => format!(
                    "{{?'a': {}.?a, 'c': {}}}",
                    self.expr(Ty::Map, d),
                    self.expr(Ty::Any, d)
                ),
                _ => self.conditional(Ty::Map, d),
            },
        }
    }

    fn leaf(&mut self, ty: Ty) -> String {
        if let Some(name) = self.var_of(ty)
            && self.chance(50)
        {
            return name;
        }
        let choices: &[&str] = match ty {
            Ty::Int => &[
                "0",
                "1",
                "-1",
                "3",
                "7",
                "9223372036854775807",
                "-9223372036854775808",
                "inputs.i",
                "inputs.neg",
                "inputs.nums[0]",
                "steps.build.outputs.files",
            ],
            Ty::UInt => &["0u", "1u", "3u", "18446744073709551615u", "inputs.big"],
            Ty::Double => &["0.0", "1.5", "-2.25", "1e300", "inputs.d", "inputs.mixed[1]"],
            Ty::Str => &[
                "''",
                "'a'",
                "'l'",
                "'é'",
                "' x '",
                "'a,b'",
                "'%'",
                "'1'",
                "'1.5'",
                "'true'",
                "inputs.s",
                "inputs.csv",
                "inputs.strs[2]",
                "steps.build.outputs.tag",
                "env.RUST_LOG",
            ],
            Ty::Bool => &["true", "false", "inputs.b", "inputs.m.b[0]"],
            Ty::List => &["[]", "[1, 2]", "inputs.nums", "inputs.strs", "inputs.mixed", "[1, 'a']"],
            Ty::Map | Ty::Any => &["{}", "inputs.m", "inputs.empty", "inputs.mixed[6]", "{'a': 1}"],
        };
        let mut text = self.pick(choices).to_owned();
        if self.chance(3) {
            text = self.pick(&["null", "inputs.n", "b'ab'", "inputs.?s", "int"]).to_owned();
        }
        text
    }

    fn var_of(&mut self, ty: Ty) -> Option<String> {
        let matching: Vec<String> =
            self.vars.iter().filter(|(_, t)| *t == ty).map(|(name, _)| name.clone()).collect();
        if matching.is_empty() {
            return None;
        }
        let at = self.below(matching.len());
        Some(matching[at].clone())
    }

    fn sized(&mut self) -> Ty {
        [Ty::Str, Ty::List, Ty::Map][self.below(3)]
    }

    fn numeric(&mut self) -> Ty {
        [Ty::Int, Ty::UInt, Ty::Double][self.below(3)]
    }

    fn conditional(&mut self, ty: Ty, d: u32) -> String {
        format!("({} ? {} : {})", self.expr(Ty::Bool, d), self.expr(ty, d), self.expr(ty, d))
    }

    fn int_list(&mut self, d: u32) -> String {
        match self.below(5) {
            0 => "inputs.nums".to_owned(),
            1 => "[1, 2, 3]".to_owned(),
            2 => "[]".to_owned(),
            3 => format!("[{}, {}]", self.expr(Ty::Int, d), self.expr(Ty::Int, d)),
            _ => format!("inputs.nums.map(n, n * {})", self.expr(Ty::Int, d)),
        }
    }

    fn str_list(&mut self, d: u32) -> String {
        match self.below(4) {
            0 => "inputs.strs".to_owned(),
            1 => "['a', 'b']".to_owned(),
            2 => format!("[{}, {}]", self.expr(Ty::Str, d), self.expr(Ty::Str, d)),
            _ => format!("{}.split(',')", self.expr(Ty::Str, d)),
        }
    }

    /// `x, <expression of any type using x>`, the arguments of a comprehension.
    fn body(&mut self, var: &str, element: Ty, d: u32) -> String {
        let out = self.any_type();
        self.body_typed(var, element, out, d)
    }

    fn body_typed(&mut self, var: &str, element: Ty, out: Ty, d: u32) -> String {
        let body = self.with_var(var, element, |g| g.expr(out, d));
        format!("{var}, {body}")
    }

    fn with_var(&mut self, var: &str, ty: Ty, f: impl FnOnce(&mut Gen) -> String) -> String {
        self.vars.push((var.to_owned(), ty));
        let out = f(self);
        self.vars.pop();
        out
    }
}

fn generated(seed: u64) -> (String, Value) {
    let mut g = Gen { state: seed, vars: Vec::new(), no_maps: false };
    let source = g.expr(Ty::Any, 4);
    let words = ["", "a", "héllo wörld", "a,b,,c", "l", "1", "x y", "%", "true"];
    let int = [0i64, 1, 3, -7, i64::MAX, i64::MIN][g.below(6)];
    let double = [0.5, -2.0, 1e300, 3.0][g.below(4)];
    let inputs = json!({
        "s": words[g.below(words.len())],
        "csv": words[g.below(words.len())],
        "i": int,
        "neg": -(g.below(10) as i64),
        "d": double,
        "big": 18446744073709551615u64,
        "b": g.chance(50),
        "n": null,
        "nums": (0..g.below(4)).map(|i| i as i64 * 2 - 1).collect::<Vec<_>>(),
        "strs": ["x", "y", "é"],
        "mixed": [1, 2.5, "x", true, null, [1], {"k": 1}],
        "m": { "a": g.below(3), "b": [true], "c": "see" },
        "empty": {},
    });
    (source, inputs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Random expressions over random data: the evaluator says what the interpreter says.
    #[test]
    fn generated_expressions_agree_with_the_cel_interpreter(seed in any::<u64>()) {
        let (source, inputs) = generated(seed);
        let data = data(inputs.clone());
        if let Some(difference) = disagreement(&source, &data) {
            return Err(TestCaseError::fail(format!("{difference}\n  inputs: {inputs}")));
        }
    }
}

/// The generator reaches past the type checks often enough to test the functions.
#[test]
fn generated_expressions_mostly_evaluate() {
    let results: Vec<bool> = (0..2000u64)
        .filter_map(|seed| {
            let (source, inputs) = generated(seed);
            ours(&source, &data(inputs)).map(|result| result.is_ok())
        })
        .collect();
    let ok = results.iter().filter(|ok| **ok).count();
    assert!(results.len() > 1900, "only {} of 2000 parse", results.len());
    assert!(ok * 3 > results.len(), "only {ok} of {} evaluate", results.len());
}

// ----- hostile expressions -----

/// Peak memory of this process so far, in bytes (Linux; 0 elsewhere). nextest runs each test
/// in its own process, so this is the test's own peak.
fn peak_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Nested `map()`s over ten elements, `levels` deep: 10^levels elements.
fn nested_maps(levels: usize) -> String {
    let range = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]";
    let mut source = "0".to_owned();
    for level in (0..levels).rev() {
        source = format!("{range}.map(x{level}, {source})");
    }
    source
}

fn chained_replaces(count: usize) -> String {
    let mut source = "'aaaaaaaaaa'".to_owned();
    for _ in 0..count {
        source.push_str(".replace('a', 'aaaaaaaaaa')");
    }
    source
}

fn hostile_data() -> Data {
    let text: String = (0..60_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let list: Vec<u32> = (0..10_000).collect();
    // `big` is exactly 1 MiB as JSON, quotes included: the largest result there may be.
    data(json!({ "text": text, "list": list, "big": "x".repeat((1 << 20) - 2) }))
}

/// Each hostile expression stops at a limit, says which, and takes neither long nor much
/// memory. (They froze the `cel` interpreter: 10^7 elements 17 s, 10^8 over 100 s and
/// 2.7 GB, the O(n²) scan 20 s, seven replaces 100 MB.)
#[test]
fn hostile_expressions_stop_at_a_limit() {
    let steps = "steps of work (the limit per evaluation)";
    // Chained replaces stop at whichever comes first: reading the ever longer string, or
    // the length of the next one, computed before it is built.
    let either = "(the limit per evaluation)";
    let bytes = "bytes of strings, lists and maps (the limit per evaluation)";
    let concatenated = std::iter::repeat_n("inputs.list", 290).collect::<Vec<_>>().join(" + ");
    let cases: Vec<(String, &str)> = vec![
        (nested_maps(7), steps),
        (nested_maps(8), steps),
        ("inputs.text.split('').map(c, inputs.text.indexOf(c + 'z'))".to_owned(), steps),
        ("inputs.text.split('').filter(c, inputs.text.lastIndexOf(c) > 0).size()".to_owned(), steps),
        (chained_replaces(7), either),
        (chained_replaces(8), either),
        ("inputs.text.split('').map(c, inputs.text).join(',')".to_owned(), bytes),
        ("inputs.big.split('')".to_owned(), steps),
        ("inputs.big.replace('x', 'xx').replace('x', 'xx').replace('x', 'xx').replace('x', 'xx').replace('x', 'xx')".to_owned(), either),
        (concatenated, bytes),
        ("inputs.list.map(a, inputs.list.map(b, a + b)).size()".to_owned(), steps),
        ("[inputs.big, inputs.big].map(x, inputs.text.split('').map(y, x + y))".to_owned(), bytes),
        ("'%s'.format([inputs.list.map(x, inputs.text)])".to_owned(), bytes),
    ];
    let data = hostile_data();
    for (source, limit) in &cases {
        let start = Instant::now();
        let result = Expression::parse(source).expect("parses").evaluate(&data);
        let took = start.elapsed();
        let error = result.expect_err(source);
        assert!(error.message.contains(limit), "{source}: {}", error.message);
        assert!(error.message.starts_with(&format!("`{source}`: ")), "{}", error.message);
        // Generous for debug builds on a loaded machine; the benchmark measures it properly.
        assert!(took < Duration::from_secs(5), "{source} took {took:?}");
    }
    let peak = peak_memory();
    assert!(peak < 512 << 20, "the hostile expressions took {} MiB at peak", peak >> 20);
}

/// A result is at most 1 MiB as JSON, however it was made: a list of one large string many
/// times over costs little to build, a plain reference nothing.
#[test]
fn results_are_limited_to_a_mebibyte() {
    let data = hostile_data();
    let limit = "the result is larger than 1048576 bytes as JSON";
    for source in [
        "[inputs.big, inputs.big]",
        "inputs.list.map(x, inputs.text)",
        "inputs",
        "inputs.big + 'x'",
    ] {
        let error = Expression::parse(source).unwrap().evaluate(&data).expect_err(source);
        assert!(error.message.contains(limit), "{source}: {}", error.message);
    }
    let evaluate = |source: &str| Expression::parse(source).unwrap().evaluate(&data);
    assert_eq!(evaluate("inputs.big").unwrap().as_str().map(str::len), Some((1 << 20) - 2));
    let same = evaluate("true ? inputs.big : ''").unwrap();
    assert_eq!(same.as_str().map(str::len), Some((1 << 20) - 2));
    assert_eq!(evaluate("size(inputs.big + inputs.big)").unwrap(), json!((2 << 20) - 4));
    // A template's text is a result too, and its expressions share one budget.
    let text = Template::parse("${{ inputs.big }}${{ inputs.big }}").unwrap();
    let error = text.render(&data, str::to_owned).unwrap_err();
    assert!(error.message.contains("grows larger than 1048576 bytes"), "{}", error.message);
    let half = nested_maps(5);
    let shared = Template::parse(&format!(
        "${{{{ size({half}) }}}} ${{{{ size({half}) }}}} ${{{{ size({half}) }}}}"
    ))
    .unwrap();
    let error = shared.render(&data, str::to_owned).unwrap_err();
    assert!(error.message.contains("steps of work"), "{}", error.message);
}

/// Ordinary expressions are far from the limits: every example workflow loads and the
/// evaluator's semantics tests pass; here, a few typical shapes on realistic data.
#[test]
fn ordinary_expressions_are_unaffected() {
    let lines: Vec<String> = (0..5_000).map(|i| format!("line {i}: ok")).collect();
    let data = data(json!({ "log": lines.join("\n"), "files": lines, "version": "1.2.3" }));
    let cases = [
        ("inputs.log.split('\\n').filter(l, l.contains('99')).size()", json!(95)),
        ("inputs.files.map(f, f.upperAscii()).size()", json!(5000)),
        ("inputs.files.exists(f, f.endsWith('4999: ok'))", json!(true)),
        ("inputs.version.matches('^[0-9]+\\\\.[0-9]+\\\\.[0-9]+$')", json!(true)),
        ("inputs.files.filter(f, f.matches('7: ok$')).size()", json!(500)),
        ("'v%s-%d'.format([inputs.version, size(inputs.files)])", json!("v1.2.3-5000")),
        ("size(inputs.files.join(','))", json!(lines.join(",").len())),
    ];
    for (source, expected) in cases {
        let value = Expression::parse(source).unwrap().evaluate(&data);
        assert_eq!(value.as_ref().ok(), Some(&expected), "{source}: {value:?}");
    }
}

// ----- wayline's own functions -----

#[test]
fn urlencode_percent_encodes_all_but_unreserved_bytes() {
    let data = data(json!({ "q": "a b&c=d/é~_.-", "n": 5, "list": [1, "x"] }));
    let cases = [
        ("urlencode(inputs.q)", json!("a%20b%26c%3Dd%2F%C3%A9~_.-")),
        ("urlencode(inputs.n)", json!("5")),
        ("urlencode(inputs.list)", json!("%5B1%2C%22x%22%5D")),
        ("urlencode(null)", json!("")),
        ("urlencode('AZaz09')", json!("AZaz09")),
        ("raw(inputs.list)", json!([1, "x"])),
        ("raw(urlencode(inputs.q)) == urlencode(inputs.q)", json!(true)),
    ];
    for (source, expected) in cases {
        let value = Expression::parse(source).unwrap().evaluate(&data);
        assert_eq!(value.as_ref().ok(), Some(&expected), "{source}: {value:?}");
    }
    let error = Expression::parse("urlencode()").unwrap().evaluate(&data).unwrap_err();
    assert!(error.message.contains("no matching overload"), "{}", error.message);
}

/// Map results keep the order of the literal or of the data (the interpreter's hash maps
/// gave a random order).
#[test]
fn maps_keep_their_order() {
    let data = data(json!({ "b": false, "m": { "z": 1, "a": 2, "m": 3 } }));
    for (source, text) in [
        ("{'b': 1, 'a': 2, 'c': 3}", r#"{"b":1,"a":2,"c":3}"#),
        ("inputs.b ? {} : inputs.m", r#"{"z":1,"a":2,"m":3}"#),
        ("inputs.m.all(k, true) ? inputs.m : {}", r#"{"z":1,"a":2,"m":3}"#),
    ] {
        let value = Expression::parse(source).unwrap().evaluate(&data).unwrap();
        assert_eq!(value.to_string(), text, "{source}");
    }
}

/// The deepest trees 4096 characters can spell (operator and method chains need no brackets,
/// so the nesting cap does not bound them; the parser itself bounds `? :` chains and folds
/// `!` and `-` chains) evaluate on a 2 MiB stack, a tokio worker's, even
/// in a debug build; deeper than the evaluator's limit is an error, never an overflow.
#[test]
fn the_deepest_expressions_evaluate_on_a_small_stack() {
    let deep = "operations deep";
    let nested = (0..31).fold(json!(0), |inner, _| json!([inner]));
    let cases: Vec<(String, Result<Value, &str>)> = vec![
        (format!("{}1", "1+".repeat(1022)), Ok(json!(1023))),
        (format!("{}1", "1+".repeat(2047)), Err(deep)),
        (format!("{}1", "1==".repeat(1023)), Ok(json!(false))),
        (format!("{}true", "true&&".repeat(680)), Ok(json!(true))),
        (format!("{}false", "false||".repeat(584)), Ok(json!(false))),
        (format!("'a'{}", ".trim()".repeat(584)), Ok(json!("a"))),
        (format!("inputs{} == 1", ".m".repeat(2000)), Err(deep)),
        (format!("inputs{}", ".m".repeat(2000)), Err("No such key: m")),
        (format!("{}0{}", "[1].map(x, ".repeat(31), ")".repeat(31)), Ok(nested)),
    ];
    #[allow(clippy::disallowed_methods)] // a thread with a worker's stack size
    let outcomes = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let data = sample();
            cases
                .into_iter()
                .map(|(source, expected)| {
                    let got = Expression::parse(&source).expect("parses").evaluate(&data);
                    (source, expected, got)
                })
                .collect::<Vec<_>>()
        })
        .expect("the thread starts")
        .join()
        .expect("no stack overflow");
    for (source, expected, got) in outcomes {
        let head: String = source.chars().take(40).collect();
        match (expected, got) {
            (Ok(expected), Ok(got)) => assert_eq!(got, expected, "{head}…"),
            (Err(message), Err(error)) => {
                assert!(error.message.contains(message), "{head}…: {}", error.message)
            }
            (expected, got) => panic!("{head}…: expected {expected:?}, got {got:?}"),
        }
    }
}
