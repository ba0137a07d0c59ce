//! Turning templated values into concrete ones for one attempt.

use serde_json::{Map, Value};
use wayline_spec::expr::{EvalError, Scope};
use wayline_spec::model::ValueTemplate;

/// Evaluates a JSON-like template: strings that are exactly one `${{ }}` keep the value's
/// type, other strings are rendered as text.
pub fn value(template: &ValueTemplate, scope: &dyn Scope) -> Result<Value, EvalError> {
    Ok(match template {
        ValueTemplate::Literal(value) => value.clone(),
        ValueTemplate::Text(text) => text.evaluate(scope)?,
        ValueTemplate::List(items) => {
            Value::Array(items.iter().map(|item| value(item, scope)).collect::<Result<_, _>>()?)
        }
        ValueTemplate::Map(entries) => {
            let mut map = Map::new();
            for (key, item) in entries {
                map.insert(key.clone(), value(item, scope)?);
            }
            Value::Object(map)
        }
    })
}
