//! Turning templated values into concrete ones for one attempt.

use serde_json::{Map, Value};
use wayline_lang::expr::{EvalError, Meter, Scope};
use wayline_lang::model::ValueTemplate;

/// Evaluates a JSON-like template: strings that are exactly one `${{ }}` keep the value's
/// type, other strings are rendered as text.
pub fn value(template: &ValueTemplate, scope: &dyn Scope) -> Result<Value, EvalError> {
    value_with(template, scope, &mut Meter::default())
}

/// Like [`value`], counting the work on `meter`, so that the values of one step share one
/// evaluation budget.
pub fn value_with(
    template: &ValueTemplate,
    scope: &dyn Scope,
    meter: &mut Meter,
) -> Result<Value, EvalError> {
    Ok(match template {
        ValueTemplate::Literal(value) => value.clone(),
        ValueTemplate::Text(text) => text.evaluate_with(scope, meter)?,
        ValueTemplate::List(items) => Value::Array(
            items.iter().map(|item| value_with(item, scope, meter)).collect::<Result<_, _>>()?,
        ),
        ValueTemplate::Map(entries) => {
            let mut map = Map::new();
            for (key, item) in entries {
                map.insert(key.clone(), value_with(item, scope, meter)?);
            }
            Value::Object(map)
        }
    })
}
