//! Input values of a run: typed, checked against the declared inputs, defaults filled in.

use serde_json::{Map, Value};

use crate::diagnostic::did_you_mean;
use crate::model::{InputType, Workflow};

/// A value given for an input.
#[derive(Debug, Clone)]
pub enum Given {
    /// From `-i name=text`: converted to the declared type (`3` is an integer for an integer
    /// input and the string "3" for a string input).
    Text(String),
    /// From an input file: already typed.
    Json(Value),
}

/// Checks the given values against the workflow's inputs and returns the complete inputs
/// object, or every problem found.
///
/// ```
/// use wayline_lang::inputs::{resolve, Given};
/// let workflow = wayline_lang::load(
///     "name: w\ninputs:\n  n: { type: integer, default: 3 }\n  v: { type: string, required: true }\nsteps:\n  - id: a\n    run: 'true'\n",
/// ).workflow.unwrap();
/// let inputs = resolve(&workflow, vec![("v".into(), Given::Text("1.0".into()))]).unwrap();
/// assert_eq!(inputs["n"], 3);
/// assert_eq!(inputs["v"], "1.0");
/// let errors = resolve(&workflow, vec![("n".into(), Given::Text("three".into()))]).unwrap_err();
/// assert_eq!(errors.len(), 2); // n is not an integer, v is missing
/// ```
pub fn resolve(
    workflow: &Workflow,
    given: Vec<(String, Given)>,
) -> Result<Map<String, Value>, Vec<String>> {
    let mut errors = Vec::new();
    let mut out = Map::new();
    for (name, value) in given {
        let Some(input) = workflow.input(&name) else {
            let names = workflow.inputs.iter().map(|input| input.name.as_str());
            errors.push(match did_you_mean(&name, names) {
                Some(similar) => format!("unknown input `{name}`; did you mean `{similar}`?"),
                None if workflow.inputs.is_empty() => format!(
                    "unknown input `{name}`: workflow `{}` declares no inputs",
                    workflow.name
                ),
                None => format!(
                    "unknown input `{name}`; declared inputs: {}",
                    workflow
                        .inputs
                        .iter()
                        .map(|input| input.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
            continue;
        };
        let value = match value {
            Given::Json(value) => value,
            Given::Text(text) => match convert(&text, input.ty) {
                Some(value) => value,
                None => {
                    errors.push(format!(
                        "input `{name}` must be {}, got `{text}`",
                        article(input.ty)
                    ));
                    continue;
                }
            },
        };
        if !input.ty.accepts(&value) {
            errors.push(format!("input `{name}` must be {}, got {value}", article(input.ty)));
            continue;
        }
        if let Some(allowed) = &input.allowed
            && !allowed.contains(&value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            errors.push(format!("input `{name}` must be one of {}, got {value}", list.join(", ")));
            continue;
        }
        out.insert(name, value);
    }
    for input in &workflow.inputs {
        if out.contains_key(&input.name)
            || errors.iter().any(|e| e.contains(&format!("`{}`", input.name)))
        {
            continue;
        }
        match (&input.default, input.required) {
            (_, true) => errors.push(format!(
                "input `{}` is required ({}); pass it with `-i {}=…`",
                input.name,
                input.ty.name(),
                input.name
            )),
            (Some(default), false) => {
                out.insert(input.name.clone(), default.clone());
            }
            (None, false) => {
                out.insert(input.name.clone(), Value::Null);
            }
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn article(ty: InputType) -> &'static str {
    match ty {
        InputType::String => "a string",
        InputType::Integer => "an integer",
        InputType::Number => "a number",
        InputType::Boolean => "true or false",
        InputType::Array => "a JSON array",
        InputType::Object => "a JSON object",
    }
}

fn convert(text: &str, ty: InputType) -> Option<Value> {
    match ty {
        InputType::String => Some(Value::String(text.to_owned())),
        InputType::Integer => text.trim().parse::<i64>().ok().map(Value::from),
        InputType::Number => {
            let number: f64 = text.trim().parse().ok()?;
            serde_json::Number::from_f64(number).map(Value::Number)
        }
        InputType::Boolean => match text.trim() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        InputType::Array | InputType::Object => serde_json::from_str(text).ok(),
    }
}
