//! Benchmark (not a timed test): what an evaluation costs with wayline's metered evaluator
//! against the `cel` crate's interpreter, which evaluated expressions before, in the same run;
//! and how long the worst expressions take to hit the limits. Target: a whole budget of work
//! in well under 100 ms on the 2-core development machine.
//!
//! Run with `cargo bench -p wayline-lang --bench eval`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wayline_lang::expr::{Expression, MAX_EXPRESSION_DEPTH, Scope};

const TARGET: Duration = Duration::from_millis(100);

fn main() {
    let data = typical_data();
    println!("typical evaluations (median µs of {RUNS} runs of {BATCH})");
    println!("{:<72} {:>9} {:>9} {:>7}", "expression", "wayline", "cel", "cel/us");
    let mut ratios = Vec::new();
    for source in TYPICAL {
        let expression = Expression::parse(source).expect("parses");
        let cel_ast = cel_parse(source);
        assert_eq!(
            expression.evaluate(&data).ok(),
            cel_evaluate(&cel_ast, &expression, &data).ok(),
            "{source}"
        );
        let ours = measure(|| {
            black_box(expression.evaluate(black_box(&data)).is_ok());
        });
        let theirs = measure(|| {
            black_box(cel_evaluate(&cel_ast, &expression, black_box(&data)).is_ok());
        });
        let ratio = theirs.median.as_secs_f64() / ours.median.as_secs_f64();
        ratios.push(ratio);
        println!("{source:<72} {:>9.2} {:>9.2} {ratio:>6.1}x", us(ours.median), us(theirs.median));
    }
    let geometric = ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64;
    println!("geometric mean: the cel interpreter takes {:.1}x as long", geometric.exp());

    println!();
    println!("heavy but within the limits (median ms of {WORST_RUNS} runs)");
    let heavy = hostile_data();
    let mut slowest = Duration::ZERO;
    for (what, source) in HEAVY {
        let expression = Expression::parse(source).expect("parses");
        let cel_ast = cel_parse(source);
        let ours = worst(|| {
            assert!(expression.evaluate(&heavy).is_ok(), "{source} stays within the limits");
        });
        slowest = slowest.max(ours);
        let theirs = worst(|| {
            black_box(cel_evaluate(&cel_ast, &expression, &heavy).is_ok());
        });
        println!(
            "{what:<44} wayline {:>7.2} ms   cel {:>7.2} ms   cel/us {:>5.1}x",
            ms(ours),
            ms(theirs),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }

    println!();
    println!("hostile: time until the limit stops it (median ms of {WORST_RUNS} runs)");
    for (what, source) in hostile() {
        let expression = Expression::parse(&source).expect("parses");
        let mut message = String::new();
        let took = worst(|| {
            let error = expression.evaluate(&heavy).expect_err(&source);
            message = error.message;
        });
        slowest = slowest.max(took);
        let limit = if message.contains("steps of work") {
            "steps"
        } else if message.contains("bytes of strings") {
            "bytes"
        } else {
            "result"
        };
        println!("{what:<44} {:>7.2} ms  ({limit})", ms(took));
    }
    println!(
        "slowest evaluation, allowed or stopped: {:.2} ms; target < {} ms: {}",
        ms(slowest),
        TARGET.as_millis(),
        if slowest < TARGET { "met" } else { "MISSED" }
    );
}

const RUNS: usize = 15;
const BATCH: usize = 200;
const WORST_RUNS: usize = 5;

/// Expressions like the examples' and the tests': conditions, outputs, small comprehensions.
const TYPICAL: &[&str] = &[
    "steps.test.outputs.coverage >= 80 && inputs.strict",
    "inputs.env == 'prod' ? 3 : 1",
    "steps.build.outputs.tag + '-' + inputs.env",
    "'v%s-%d'.format([inputs.version, inputs.replicas])",
    "inputs.files.filter(f, f.endsWith('.rs')).size() > 0",
    "inputs.files.map(f, f.upperAscii()).join(',')",
    "inputs.regions.exists(r, r.startsWith('eu-'))",
    "inputs.version.matches('^[0-9]+\\\\.[0-9]+\\\\.[0-9]+$')",
    "size(inputs.config.servers) * inputs.replicas",
    "has(inputs.config.debug) ? inputs.config.debug : false",
];

/// Work that legitimately uses a good part of the budget: 1 MiB outputs, thousands of lines.
const HEAVY: &[(&str, &str)] = &[
    (
        "10^4 elements through nested map()",
        "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map(a, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map(b, \
         [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map(c, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map(d, \
         a + b + c + d))))",
    ),
    ("filter 10,000 lines of a log", "inputs.log.split('\\n').filter(l, l.contains('7')).size()"),
    ("contains() on a 1 MiB string", "inputs.big.contains('needle')"),
    ("map() over 10,000 numbers", "inputs.list.map(x, x * 2).size()"),
    // The slowest regular expressions known (Unicode word boundaries) on the largest text the
    // budget lets them search.
    (
        "\\b regex over 430 KB of Unicode text",
        "inputs.words.matches('\\\\b\\\\w+\\\\b\\\\s\\\\b\\\\w+\\\\bq')",
    ),
];

fn hostile() -> Vec<(&'static str, String)> {
    let range = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]";
    let nested = |levels: usize| {
        let mut source = "0".to_owned();
        for level in (0..levels).rev() {
            source = format!("{range}.map(x{level}, {source})");
        }
        source
    };
    let replaces =
        |count: usize| format!("'aaaaaaaaaa'{}", ".replace('a', 'aaaaaaaaaa')".repeat(count));
    vec![
        ("10^7 elements (nested map)", nested(7)),
        ("10^8 elements (nested map)", nested(8)),
        ("10^8 iterations of all()", {
            let mut source = "h >= 0".to_owned();
            for var in ["h", "g", "f", "e", "d", "c", "b", "a"] {
                source = format!("{range}.all({var}, {source})");
            }
            source
        }),
        (
            "O(n²) indexOf over 60 KB",
            "inputs.text.split('').map(c, inputs.text.indexOf(c + 'z'))".to_owned(),
        ),
        (
            "O(n²) equality over 10,000 lists",
            "inputs.list.filter(x, inputs.lists == inputs.lists).size()".to_owned(),
        ),
        ("7 chained replace()", replaces(7)),
        ("8 chained replace()", replaces(8)),
        (
            "join of 60,000 × 60 KB",
            "inputs.text.split('').map(c, inputs.text).join(',')".to_owned(),
        ),
        ("split('') of 1 MiB", "inputs.big.split('')".to_owned()),
        (
            "290 concatenations of 10,000 elements",
            std::iter::repeat_n("inputs.list", 290).collect::<Vec<_>>().join(" + "),
        ),
        (
            "\\b regex over a 1 MiB Unicode text",
            "inputs.unicode.matches('\\\\b\\\\w+\\\\b\\\\s\\\\b\\\\w+\\\\bq')".to_owned(),
        ),
        (
            "new regex per element",
            "inputs.list.map(x, 'a'.matches('^' + string(x) + '\\\\w+$')).size()".to_owned(),
        ),
        ("format() of 10,000 × 60 KB", "'%s'.format([inputs.list.map(x, inputs.text)])".to_owned()),
        ("result of 1000 × 1 MiB", "inputs.list.filter(x, x < 1000).map(x, inputs.big)".to_owned()),
    ]
}

// ----- data -----

struct Data {
    inputs: Value,
    steps: HashMap<String, Value>,
}

impl Scope for Data {
    fn inputs(&self) -> Cow<'_, Value> {
        Cow::Borrowed(&self.inputs)
    }
    fn step(&self, id: &str) -> Option<Value> {
        self.steps.get(id).cloned()
    }
    fn env(&self) -> Cow<'_, Value> {
        Cow::Owned(json!({}))
    }
    fn secret(&self, _: &str) -> Option<String> {
        None
    }
    fn execution(&self) -> Value {
        json!({ "id": "ex1" })
    }
    fn workflow_name(&self) -> &str {
        "bench"
    }
}

fn typical_data() -> Data {
    let files: Vec<String> = (0..20).map(|i| format!("src/module{i}.rs")).collect();
    let steps = HashMap::from([
        ("test".to_owned(), json!({ "status": "succeeded", "outputs": { "coverage": 85 } })),
        ("build".to_owned(), json!({ "status": "succeeded", "outputs": { "tag": "v1.2.3" } })),
    ]);
    Data {
        inputs: json!({
            "strict": true, "env": "prod", "version": "1.2.3", "files": files,
            "regions": ["us-east-1", "eu-west-1"], "replicas": 3,
            "config": { "servers": ["a", "b", "c"], "debug": false },
        }),
        steps,
    }
}

fn hostile_data() -> Data {
    let text: String = (0..60_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let list: Vec<u32> = (0..10_000).collect();
    let lists: Vec<Vec<u32>> = (0..100).map(|_| (0..100).collect()).collect();
    let log: Vec<String> = (0..10_000).map(|i| format!("{i}: all good here")).collect();
    let unicode: String = (0..(1 << 20) / 2)
        .map(|i| {
            if i % 7 == 0 {
                ' '
            } else if i % 13 == 0 {
                'é'
            } else {
                'a'
            }
        })
        .collect();
    Data {
        inputs: json!({
            "text": text, "list": list, "lists": lists, "log": log.join("\n"),
            "big": "x".repeat((1 << 20) - 2), "words": unicode.chars().take(400_000).collect::<String>(),
            "unicode": unicode,
        }),
        steps: HashMap::new(),
    }
}

// ----- the cel interpreter, as the engine used it -----

thread_local! {
    static ENV: Arc<cel::Env> = {
        let mut env = cel::Env::stdlib();
        env.add_extension(cel::extensions::strings).expect("the strings extension registers");
        Arc::new(env)
    };
    static ROOT: cel::Context<'static, 'static> =
        ENV.with(|env| cel::Context::with_env(Arc::clone(env)));
}

fn cel_parse(source: &str) -> cel::IdedExpr {
    ENV.with(|env| {
        env.parser().max_recursion_depth(MAX_EXPRESSION_DEPTH).parse(source).expect("parses")
    })
}

/// What `Expression::evaluate` did before: bind what the expression reads (copied and
/// converted to CEL values), resolve, convert the result to JSON.
fn cel_evaluate(
    ast: &cel::IdedExpr,
    expression: &Expression,
    data: &Data,
) -> Result<Value, String> {
    ROOT.with(|root| {
        let mut context = root.new_inner_scope();
        let mut steps = serde_json::Map::new();
        let mut inputs = false;
        for reference in expression.references() {
            match reference.root {
                wayline_lang::expr::Root::Inputs if !inputs => {
                    inputs = true;
                    context.add_variable_from_value("inputs", to_cel(&data.inputs.clone()));
                }
                wayline_lang::expr::Root::Steps => {
                    if let Some(id) = reference.path.first()
                        && let Some(step) = data.step(id)
                    {
                        steps.insert(id.clone(), step);
                    }
                }
                _ => {}
            }
        }
        if !steps.is_empty() {
            context.add_variable_from_value("steps", to_cel(&Value::Object(steps)));
        }
        let value = context.resolve(ast).map_err(|error| error.to_string())?;
        value.json().map_err(|error| format!("{error:?}"))
    })
}

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

// ----- measuring -----

#[derive(Clone, Copy)]
struct Figures {
    median: Duration,
}

/// Median time of one run of `run`, over RUNS batches of BATCH runs.
fn measure(mut run: impl FnMut()) -> Figures {
    run();
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..BATCH {
                run();
            }
            start.elapsed() / BATCH as u32
        })
        .collect();
    times.sort();
    Figures { median: times[RUNS / 2] }
}

/// Median time of one run of a long `run`.
fn worst(mut run: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..WORST_RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[WORST_RUNS / 2]
}

fn us(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
