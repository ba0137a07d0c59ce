//! The items of a fan-out step, from the evaluated values of its `for_each` or `matrix`: pure
//! functions of JSON values, so that the engine (which evaluates the expressions when the step
//! becomes ready) and `wayline plan` (which counts literal items) agree.

use serde_json::{Map, Value};

/// Most items one fan-out step may have.
pub const MAX_ITEMS: usize = 10_000;

/// The items of `for_each`: the elements of a list, or one `{key, value}` per key of an
/// object.
///
/// ```
/// use serde_json::json;
/// use wayline_lang::fan_out::list_items;
/// assert_eq!(list_items(json!(["eu", "us"])).unwrap(), [json!("eu"), json!("us")]);
/// assert_eq!(list_items(json!({"a": 1})).unwrap(), [json!({"key": "a", "value": 1})]);
/// assert!(list_items(json!("eu")).unwrap_err().contains("must give a list or an object"));
/// ```
pub fn list_items(value: Value) -> Result<Vec<Value>, String> {
    let items: Vec<Value> = match value {
        Value::Array(items) => items,
        Value::Object(map) => map
            .into_iter()
            .map(|(key, value)| {
                Value::Object(Map::from_iter([
                    ("key".to_owned(), Value::String(key)),
                    ("value".to_owned(), value),
                ]))
            })
            .collect(),
        other => {
            return Err(format!(
                "`for_each` must give a list or an object, but it gave {}",
                describe(&other)
            ));
        }
    };
    within_limit(items.len())?;
    Ok(items)
}

/// The items of `matrix`: every combination of the axes' values (the first axis varies
/// slowest), without those matching an `exclude` entry, with the `include` entries: an entry
/// extends each combination whose axis values it does not contradict, and becomes a
/// combination of its own when it extends none. Each item is an object with one key per axis.
///
/// ```
/// use serde_json::json;
/// use wayline_lang::fan_out::matrix_items;
/// let axes = vec![("os".to_owned(), json!(["linux", "mac"])), ("v".to_owned(), json!([1, 2]))];
/// let items = matrix_items(axes, Some(json!([{"os": "win", "v": 2}])), Some(json!([{"os": "mac", "v": 1}]))).unwrap();
/// assert_eq!(items, [
///     json!({"os": "linux", "v": 1}),
///     json!({"os": "linux", "v": 2}),
///     json!({"os": "mac", "v": 2}),
///     json!({"os": "win", "v": 2}),
/// ]);
/// ```
pub fn matrix_items(
    axes: Vec<(String, Value)>,
    include: Option<Value>,
    exclude: Option<Value>,
) -> Result<Vec<Value>, String> {
    let mut lists: Vec<(String, Vec<Value>)> = Vec::with_capacity(axes.len());
    for (name, value) in axes {
        match value {
            Value::Array(values) => lists.push((name, values)),
            other => {
                return Err(format!(
                    "matrix axis `{name}` must be a list, but it is {}",
                    describe(&other)
                ));
            }
        }
    }
    let include = entries(include, "include")?;
    let exclude = entries(exclude, "exclude")?;
    // Bound the product before building it: ten axes of ten values would be 10^10 items.
    let product =
        lists.iter().try_fold(1usize, |count, (_, values)| count.checked_mul(values.len()));
    match product {
        Some(count) if count <= MAX_ITEMS => {}
        _ => {
            let sizes: Vec<String> =
                lists.iter().map(|(name, values)| format!("{name}: {}", values.len())).collect();
            return Err(format!(
                "the matrix has more than {MAX_ITEMS} combinations ({}); a fan-out has at most {MAX_ITEMS} items",
                sizes.join(" × ")
            ));
        }
    }
    let mut combinations: Vec<Map<String, Value>> =
        if lists.is_empty() { Vec::new() } else { vec![Map::new()] };
    for (name, values) in &lists {
        let mut next = Vec::with_capacity(combinations.len() * values.len());
        for combination in &combinations {
            for value in values {
                let mut extended = combination.clone();
                extended.insert(name.clone(), value.clone());
                next.push(extended);
            }
        }
        combinations = next;
    }
    combinations.retain(|combination| !exclude.iter().any(|entry| matches(combination, entry)));
    // An include may not change an axis value of a combination; it may change what an earlier
    // include added.
    let is_axis = |key: &str| lists.iter().any(|(name, _)| name == key);
    let original = combinations.len();
    for entry in include {
        let mut extended_any = false;
        for combination in &mut combinations[..original] {
            let fits = entry
                .iter()
                .all(|(key, value)| !is_axis(key) || combination.get(key) == Some(value));
            if fits {
                for (key, value) in &entry {
                    combination.insert(key.clone(), value.clone());
                }
                extended_any = true;
            }
        }
        if !extended_any {
            combinations.push(entry);
        }
    }
    within_limit(combinations.len())?;
    Ok(combinations.into_iter().map(Value::Object).collect())
}

/// Whether a combination has every value of an `exclude` entry.
fn matches(combination: &Map<String, Value>, entry: &Map<String, Value>) -> bool {
    entry.iter().all(|(key, value)| combination.get(key) == Some(value))
}

/// The objects of `include` or `exclude`.
fn entries(value: Option<Value>, field: &str) -> Result<Vec<Map<String, Value>>, String> {
    let Some(value) = value else { return Ok(Vec::new()) };
    let Value::Array(list) = value else {
        return Err(format!(
            "matrix `{field}` must be a list of objects, but it is {}",
            describe(&value)
        ));
    };
    list.into_iter()
        .map(|entry| match entry {
            Value::Object(map) => Ok(map),
            other => Err(format!(
                "each entry of matrix `{field}` must be an object, but one is {}",
                describe(&other)
            )),
        })
        .collect()
}

fn within_limit(count: usize) -> Result<(), String> {
    if count > MAX_ITEMS {
        return Err(format!(
            "the fan-out has {count} items; a fan-out has at most {MAX_ITEMS} (split the list, or process a batch per item)"
        ));
    }
    Ok(())
}

/// A value as a message shows it: its type, and the value itself when it is short.
fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => return "null".into(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    let text = value.to_string();
    if text.len() <= 40 { format!("{kind}, {text}") } else { kind.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn axes(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.clone())).collect()
    }

    #[test]
    fn the_first_axis_varies_slowest() {
        let items =
            matrix_items(axes(&[("a", json!([1, 2])), ("b", json!(["x", "y"]))]), None, None)
                .unwrap();
        let pairs: Vec<(i64, &str)> = items
            .iter()
            .map(|item| (item["a"].as_i64().unwrap(), item["b"].as_str().unwrap()))
            .collect();
        assert_eq!(pairs, [(1, "x"), (1, "y"), (2, "x"), (2, "y")]);
    }

    #[test]
    fn an_include_extends_the_combinations_it_fits_and_may_not_change_an_axis_value() {
        let include = json!([{"os": "linux", "arch": "arm"}, {"os": "bsd"}, {"extra": true}]);
        let items =
            matrix_items(axes(&[("os", json!(["linux", "mac"]))]), Some(include), None).unwrap();
        assert_eq!(
            items,
            [
                json!({"os": "linux", "arch": "arm", "extra": true}),
                json!({"os": "mac", "extra": true}),
                json!({"os": "bsd"}),
            ]
        );
    }

    #[test]
    fn only_includes_make_a_matrix_of_their_own() {
        let items = matrix_items(Vec::new(), Some(json!([{"a": 1}, {"a": 2}])), None).unwrap();
        assert_eq!(items, [json!({"a": 1}), json!({"a": 2})]);
    }

    #[test]
    fn a_product_past_the_limit_is_refused_before_it_is_built() {
        let big: Vec<Value> = (0..1000).map(Value::from).collect();
        let error = matrix_items(
            axes(&[("a", Value::Array(big.clone())), ("b", Value::Array(big))]),
            None,
            None,
        )
        .unwrap_err();
        assert!(error.contains("more than 10000 combinations (a: 1000 × b: 1000)"), "{error}");
    }

    #[test]
    fn a_list_past_the_limit_is_refused_with_its_size() {
        let list: Vec<Value> = (0..=MAX_ITEMS).map(Value::from).collect();
        let error = list_items(Value::Array(list)).unwrap_err();
        assert!(error.contains("10001 items; a fan-out has at most 10000"), "{error}");
        assert_eq!(list_items(Value::Array(vec![Value::Null; MAX_ITEMS])).unwrap().len(), 10_000);
    }

    #[test]
    fn bad_shapes_name_the_field_and_what_it_got() {
        let error = matrix_items(axes(&[("os", json!("linux"))]), None, None).unwrap_err();
        assert_eq!(error, "matrix axis `os` must be a list, but it is a string, \"linux\"");
        let error = matrix_items(axes(&[("os", json!([1]))]), None, Some(json!([1]))).unwrap_err();
        assert!(error.contains("each entry of matrix `exclude` must be an object"), "{error}");
    }
}
