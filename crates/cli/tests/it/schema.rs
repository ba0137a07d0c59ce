//! `wayline schema` and its committed copy, `docs/wayline.schema.json`, which editors use to
//! validate and complete workflow files.

use crate::{root, wayline};

#[test]
fn the_committed_schema_is_current() {
    let run = wayline(&["schema"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    let committed =
        std::fs::read_to_string(root().join("docs/wayline.schema.json")).unwrap_or_default();
    assert!(
        committed == run.stdout,
        "docs/wayline.schema.json is stale or missing; regenerate it with\n\n    \
         cargo run -p wayline -- schema > docs/wayline.schema.json\n"
    );
}

#[test]
fn the_schema_describes_every_object_of_the_format() {
    let run = wayline(&["schema"]);
    let schema: serde_json::Value = serde_json::from_str(&run.stdout).expect("valid JSON");
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(schema["required"], serde_json::json!(["name", "steps"]));
    assert_eq!(schema["additionalProperties"], false);
    let defs = schema["$defs"].as_object().unwrap();
    for object in ["step", "retry", "http", "compensate", "escalation", "input", "group", "wait"] {
        assert!(defs.contains_key(object), "no definition of `{object}`");
    }
    // Every reference resolves: an object the tables name but the schema lacks would make
    // an editor refuse every file.
    fn refs<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(target)) = map.get("$ref") {
                    out.push(target);
                }
                map.values().for_each(|value| refs(value, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|value| refs(value, out)),
            _ => {}
        }
    }
    let mut targets = Vec::new();
    refs(&schema, &mut targets);
    assert!(targets.len() > 10, "{targets:?}");
    for target in targets {
        let name = target.strip_prefix("#/$defs/").expect("a local reference");
        assert!(defs.contains_key(name), "`{target}` names no definition");
    }
    let step = &defs["step"]["properties"];
    for field in ["id", "needs", "if", "run", "http", "wait", "condition", "set", "retry"] {
        assert!(step.get(field).is_some(), "step has no `{field}`");
    }
}
