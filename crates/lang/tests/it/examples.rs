//! Every workflow in `examples/` is valid without a single warning, and together they use
//! every field and every keyword of the format. (`examples/lib/` holds files of templates
//! that examples import.)

use std::collections::BTreeSet;
use std::path::PathBuf;

use wayline_lang::format::{self, Object, Ty};
use wayline_lang::yaml::{self, Node, Value};

use crate::crate_path;

/// Loads an example as `wayline validate` does: its imports read next to it.
fn load(text: &str) -> wayline_lang::Loaded {
    wayline_lang::load_with(text, &mut |import: &str| {
        std::fs::read_to_string(crate_path("../../examples").join(import))
            .map_err(|error| error.to_string())
    })
}

fn examples() -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(crate_path("../../examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_example_is_valid_without_warnings() {
    let examples = examples();
    assert!(examples.len() >= 15, "found only {} examples", examples.len());
    for (path, text) in &examples {
        let name = path.file_name().unwrap().to_string_lossy();
        let loaded = load(text);
        let shown: String =
            loaded.diagnostics.iter().map(|d| loaded.render(d, &name, text)).collect();
        assert!(shown.is_empty(), "{name} has diagnostics:\n{shown}");
        assert!(loaded.workflow.is_some(), "{name} did not load");
    }
}

/// Walks a document along the format tables, recording every (object, field) it uses.
fn used_fields(
    node: &Node,
    object: &'static Object,
    out: &mut BTreeSet<(&'static str, &'static str)>,
) {
    let Value::Map(entries) = &node.value else { return };
    for (key, value) in entries {
        if let Some(field) = object.field(&key.name) {
            out.insert((object.name, field.name));
            used_in(value, &field.ty, out);
        }
    }
}

fn used_in(node: &Node, ty: &Ty, out: &mut BTreeSet<(&'static str, &'static str)>) {
    match (ty, &node.value) {
        (Ty::Object(object), _) => used_fields(node, object, out),
        (Ty::List(item), Value::Seq(items)) => items.iter().for_each(|n| used_in(n, item, out)),
        (Ty::Map(item), Value::Map(entries)) => {
            entries.iter().for_each(|(_, n)| used_in(n, item, out))
        }
        (Ty::OneOf(options), _) => options.iter().for_each(|option| used_in(node, option, out)),
        _ => {}
    }
}

#[test]
fn examples_use_every_field_and_keyword() {
    let examples = examples();
    let mut used = BTreeSet::new();
    for (_, text) in &examples {
        used_fields(&yaml::parse(text).unwrap(), &format::WORKFLOW, &mut used);
    }
    let mut missing: Vec<String> = Vec::new();
    for object in format::OBJECTS {
        for field in object.names() {
            if !used.contains(&(object.name, field)) {
                missing.push(format!("field `{field}` of {}", object.name));
            }
        }
    }
    // Keywords and functions: comments do not count.
    let code: String = examples
        .iter()
        .flat_map(|(_, text)| text.lines())
        .map(|line| line.split(" #").next().unwrap_or(line))
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let words = [
        format::STRATEGIES,
        format::INPUT_TYPES,
        format::BACKOFFS,
        format::JITTERS,
        format::ERROR_CLASSES,
        format::ESCALATION_THEN,
    ];
    for word in words.into_iter().flatten() {
        let written = [" ", "[", ","].iter().any(|before| {
            [",", "]", " ", "\n", "}"]
                .iter()
                .any(|after| code.contains(&format!("{before}{word}{after}")))
        });
        if !written {
            missing.push(format!("keyword `{word}`"));
        }
    }
    for function in ["success()", "failure()", "always()", "cancelled()"] {
        if !code.contains(function) {
            missing.push(format!("function `{function}`"));
        }
    }
    assert!(missing.is_empty(), "no example shows: {}", missing.join(", "));
}
