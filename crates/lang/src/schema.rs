//! The JSON Schema of the workflow format, generated from the tables in [`crate::format`], so
//! editors can validate and complete workflow files. The committed copy lives in
//! `docs/wayline.schema.json`; a test fails when it is stale.

use serde_json::{Map, Value, json};

use crate::format::{self, Object, Ty};

/// The schema as a JSON value (draft 2020-12).
pub fn schema() -> Value {
    let mut defs = Map::new();
    for object in format::OBJECTS {
        defs.insert(object.name.to_owned(), object_schema(object));
    }
    defs.insert(
        "name".into(),
        json!({ "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$" }),
    );
    defs.insert(
        "duration".into(),
        json!({
            "type": "string",
            "pattern": "^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$",
            "minLength": 2,
            "description": "Like 250ms, 10s, 5m, 2h, 1d or 1m30s.",
        }),
    );
    let mut root = object_schema(&format::WORKFLOW);
    if let Value::Object(map) = &mut root {
        map.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
        map.insert("$id".into(), json!("https://wayline.dev/schema/v1/workflow.json"));
        map.insert("title".into(), json!("wayline workflow"));
        map.insert("$defs".into(), Value::Object(defs));
    }
    root
}

fn object_schema(object: &Object) -> Value {
    let mut properties = Map::new();
    for field in object.fields {
        let mut schema = ty_schema(&field.ty);
        if let Value::Object(map) = &mut schema {
            map.insert("description".into(), json!(field.doc));
        }
        properties.insert(field.name.to_owned(), schema);
    }
    let required: Vec<&str> = object.fields.iter().filter(|f| f.required).map(|f| f.name).collect();
    let mut schema = json!({
        "type": "object",
        "description": object.doc,
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    if object.name == "step" {
        // Exactly one body, or a template's (`uses`).
        let one_of: Vec<Value> = format::BODIES
            .iter()
            .chain(&["uses"])
            .map(|body| json!({ "required": [body] }))
            .collect();
        schema["oneOf"] = Value::Array(one_of);
    }
    schema
}

fn ty_schema(ty: &Ty) -> Value {
    match ty {
        Ty::Text => json!({ "type": "string" }),
        Ty::Name => json!({ "$ref": "#/$defs/name" }),
        Ty::Template => json!({ "type": ["string", "number", "boolean"] }),
        Ty::Expression => json!({ "type": ["string", "boolean"] }),
        Ty::Integer { min } => json!({ "type": "integer", "minimum": min }),
        Ty::Number => json!({ "type": "number" }),
        Ty::Boolean => json!({ "type": "boolean" }),
        Ty::Duration => json!({ "$ref": "#/$defs/duration" }),
        Ty::Timestamp => json!({ "type": "string", "format": "date-time" }),
        Ty::Word(words) => json!({ "enum": words }),
        // A single name is accepted where a list of names is expected (`needs: build`).
        Ty::List(Ty::Name) => {
            let name = ty_schema(&Ty::Name);
            json!({ "oneOf": [ { "type": "array", "items": name }, name ] })
        }
        Ty::List(item) => json!({ "type": "array", "items": ty_schema(item) }),
        Ty::Map(value) => json!({ "type": "object", "additionalProperties": ty_schema(value) }),
        Ty::Object(object) => json!({ "$ref": format!("#/$defs/{}", object.name) }),
        Ty::OneOf(options) => json!({ "oneOf": options.iter().map(ty_schema).collect::<Vec<_>>() }),
        Ty::Any => json!({}),
    }
}
