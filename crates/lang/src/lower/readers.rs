//! Readers of mappings, lists and plain values (text, ids, integers, booleans, durations,
//! words, literal JSON): each reports a value of the wrong kind in the same words everywhere.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value as Json;

use crate::diagnostic::{Code, Diagnostic, Span, did_you_mean};
use crate::format::{self, Object};
use crate::model::*;
use crate::yaml::{Key, Node, Value};
use wayline_journal::duration;

use super::{Lower, suggest};

/// The fields of a mapping, checked against a table of the format.
pub(super) struct Obj<'n> {
    pub(super) entries: &'n [(Key, Node)],
    pub(super) span: Span,
}

impl<'n> Obj<'n> {
    pub(super) fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries.iter().find(|(key, _)| key.name == name).map(|(_, node)| node)
    }

    pub(super) fn key(&self, name: &str) -> Option<&'n Key> {
        self.entries.iter().find(|(key, _)| key.name == name).map(|(key, _)| key)
    }
}

const ID_PATTERN: &str = "[a-z0-9][a-z0-9_-]{0,62}";

pub(super) fn is_id(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Identifiers readable in expressions without brackets.
pub(super) fn is_identifier(text: &str, dash: bool) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || (dash && b == b'-'))
}

/// A name as written: text, or an integer read as its digits (`id: 1` is the step "1").
pub(super) fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Str(text) => Some(text.clone()),
        Value::Int(value) => Some(value.to_string()),
        _ => None,
    }
}

/// A scalar as text, for places that take text but where `8080` or `true` reads naturally
/// (an argument, an env value, a header).
pub(super) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Str(text) => Some(text.clone()),
        Value::Int(value) => Some(value.to_string()),
        Value::Float(value) => Some(value.to_string()),
        Value::Bool(value) => Some(value.to_string()),
        _ => None,
    }
}

/// A field's documentation as part of a sentence: `The name.` becomes `the name`.
fn sentence(doc: &str) -> String {
    let doc = doc.trim_end_matches('.');
    let mut chars = doc.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl Lower {
    pub(super) fn object<'n>(&mut self, node: &'n Node, def: &'static Object) -> Option<Obj<'n>> {
        let Value::Map(entries) = &node.value else {
            if def.name == format::WORKFLOW.name {
                self.push(
                    Diagnostic::error(
                        Code::WrongType,
                        node.span,
                        format!("a workflow file must be a mapping, found {}", node.value.kind()),
                    )
                    .with_help("start the file with `name:` and `steps:`"),
                );
            } else {
                self.wrong_type(node, &format!("`{}`", def.name), "a mapping");
            }
            return None;
        };
        self.unique_keys(entries);
        for (key, _) in entries {
            if def.field(&key.name).is_none() {
                let mut d = Diagnostic::error(
                    Code::UnknownField,
                    key.span,
                    format!("unknown field `{}` in {}", key.name, def.name),
                );
                d = match did_you_mean(&key.name, def.names()) {
                    Some(similar) => d.with_label(format!("did you mean `{similar}`?")),
                    None => d.with_help(format!(
                        "{} fields: {}",
                        def.name,
                        def.names().collect::<Vec<_>>().join(", ")
                    )),
                };
                self.push(d);
            }
        }
        for field in def.fields.iter().filter(|field| field.required) {
            if !entries.iter().any(|(key, _)| key.name == field.name) {
                self.push(
                    Diagnostic::error(
                        Code::MissingField,
                        node.span.start(),
                        format!("{} is missing `{}`", def.name, field.name),
                    )
                    .with_help(format!(
                        "add `{}:` ({})",
                        field.name,
                        sentence(field.doc)
                    )),
                );
            }
        }
        Some(Obj { entries, span: node.span })
    }

    /// YAML leaves a repeated key to the reader's whim (most keep the last one); wayline
    /// refuses it, in fixed fields and free-form mappings alike.
    pub(super) fn unique_keys(&mut self, entries: &[(Key, Node)]) {
        // Most mappings have a handful of keys: comparing pairs beats hashing them.
        let first_of = |index: usize| -> Option<Span> {
            let name = &entries[index].0.name;
            entries[..index].iter().find(|(key, _)| key.name == *name).map(|(key, _)| key.span)
        };
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for (index, (key, _)) in entries.iter().enumerate() {
            let first = if entries.len() <= 16 {
                first_of(index)
            } else {
                let first = *seen.entry(key.name.as_str()).or_insert(key.span);
                (first != key.span).then_some(first)
            };
            if let Some(first) = first {
                self.push(
                    Diagnostic::error(
                        Code::DuplicateKey,
                        key.span,
                        format!("`{}` is given twice", key.name),
                    )
                    .with_label(format!("first given on line {}", first.line)),
                );
            }
        }
    }

    /// A mapping whose names the workflow chooses (inputs, env, headers…), each name given once.
    pub(super) fn mapping<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        expected: &str,
    ) -> Option<&'n [(Key, Node)]> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, what, expected);
            return None;
        };
        self.unique_keys(entries);
        Some(entries)
    }

    pub(super) fn list<'n>(&mut self, node: &'n Node, what: &str) -> Vec<&'n Node> {
        match &node.value {
            Value::Seq(items) => items.iter().collect(),
            // A single name is accepted where a list is expected: `needs: build`.
            Value::Str(_) => vec![node],
            _ => {
                self.wrong_type(node, what, "a list");
                Vec::new()
            }
        }
    }

    pub(super) fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::Str(text) => Some(text.clone()),
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    pub(super) fn id(&mut self, node: &Node, what: &str) -> Option<String> {
        let Some(text) = id_text(&node.value) else {
            self.wrong_type(node, &format!("a {what}"), "a string");
            return None;
        };
        if is_id(&text) {
            Some(text)
        } else {
            self.bad_id(node.span, &text, what);
            None
        }
    }

    pub(super) fn bad_id(&mut self, span: Span, text: &str, what: &str) {
        let fixed: String = text
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
            .take(63)
            .collect();
        let mut d = Diagnostic::error(
            Code::BadName,
            span,
            format!("{what} `{text}` must match {ID_PATTERN}"),
        );
        if is_id(&fixed) {
            d = d.with_help(format!(
                "lower-case letters, digits, `_` and `-`, up to 63 characters: e.g. `{fixed}`"
            ));
        }
        self.push(d);
    }

    pub(super) fn integer(&mut self, node: &Node, what: &str, min: i64) -> Option<i64> {
        match node.value {
            Value::Int(value) if value >= min => Some(value),
            Value::Int(value) => {
                self.error(
                    Code::InvalidValue,
                    node.span,
                    format!("{what} must be at least {min}, not {value}"),
                );
                None
            }
            _ => {
                self.wrong_type(node, what, "an integer");
                None
            }
        }
    }

    pub(super) fn count(&mut self, node: &Node, what: &str) -> Option<u32> {
        self.integer(node, what, 1).map(|value| value.min(u32::MAX as i64) as u32)
    }

    pub(super) fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(value) => Some(*value),
            Value::Str(text) => {
                // YAML 1.1 read these as booleans; YAML 1.2 (and wayline) reads them as text.
                let meant = match text.to_ascii_lowercase().as_str() {
                    "yes" | "y" | "on" => Some(true),
                    "no" | "n" | "off" => Some(false),
                    _ => None,
                };
                let mut d = Diagnostic::error(
                    Code::WrongType,
                    node.span,
                    format!("{what} must be true or false, found the string `{text}`"),
                );
                if let Some(meant) = meant {
                    d = d.with_help(format!("YAML 1.2 reads `{text}` as text; write `{meant}`"));
                }
                self.push(d);
                None
            }
            _ => {
                self.wrong_type(node, what, "true or false");
                None
            }
        }
    }

    pub(super) fn duration(&mut self, node: &Node) -> Option<Duration> {
        match &node.value {
            Value::Str(text) => match duration::parse(text) {
                Ok(value) => Some(value),
                Err(message) => {
                    self.error(Code::BadDuration, node.span, message);
                    None
                }
            },
            Value::Int(value) => {
                self.push(
                    Diagnostic::error(
                        Code::BadDuration,
                        node.span,
                        format!("`{value}` has no unit"),
                    )
                    .with_help(format!(
                        "write `{value}s` for seconds, `{value}ms` for milliseconds"
                    )),
                );
                None
            }
            _ => {
                self.error(
                    Code::BadDuration,
                    node.span,
                    format!("a duration must be a string like `30s`, found {}", node.value.kind()),
                );
                None
            }
        }
    }

    pub(super) fn strategy(&mut self, node: &Node, what: &str) -> Option<Strategy> {
        Some(match self.word(node, what, format::STRATEGIES)? {
            "fail_fast" => Strategy::FailFast,
            "continue" => Strategy::Continue,
            "rollback" => Strategy::Rollback,
            _ => Strategy::Escalate,
        })
    }

    pub(super) fn word(
        &mut self,
        node: &Node,
        what: &str,
        words: &'static [&'static str],
    ) -> Option<&'static str> {
        let Value::Str(text) = &node.value else {
            self.wrong_type(node, what, &format!("one of {}", words.join(", ")));
            return None;
        };
        if let Some(word) = words.iter().find(|word| *word == text) {
            return Some(word);
        }
        let diagnostic = Diagnostic::error(
            Code::InvalidValue,
            node.span,
            format!("{what} must be one of {}, not `{text}`", words.join(", ")),
        );
        self.push(suggest(diagnostic, text, words.iter().copied()));
        None
    }

    pub(super) fn json(&mut self, node: &Node) -> Option<Json> {
        Some(match &node.value {
            Value::Null => Json::Null,
            Value::Bool(value) => Json::Bool(*value),
            Value::Int(value) => Json::from(*value),
            Value::Float(value) => match serde_json::Number::from_f64(*value) {
                Some(number) => Json::Number(number),
                None => {
                    self.error(
                        Code::InvalidValue,
                        node.span,
                        "NaN and infinity cannot be represented in JSON",
                    );
                    return None;
                }
            },
            Value::Str(text) => Json::String(text.clone()),
            Value::Seq(items) => {
                let items: Vec<Option<Json>> = items.iter().map(|item| self.json(item)).collect();
                Json::Array(items.into_iter().collect::<Option<Vec<_>>>()?)
            }
            Value::Map(entries) => {
                self.unique_keys(entries);
                let values: Vec<Option<Json>> =
                    entries.iter().map(|(_, value)| self.json(value)).collect();
                let values = values.into_iter().collect::<Option<Vec<_>>>()?;
                Json::Object(entries.iter().map(|(key, _)| key.name.clone()).zip(values).collect())
            }
        })
    }
}
