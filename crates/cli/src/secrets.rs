//! Secrets for a run: `WAYLINE_SECRET_<NAME>` environment variables and an optional
//! `--secrets-file`. Values never reach the journal; they are masked in logs and outputs.

use std::collections::BTreeMap;
use std::path::Path;

use wayline_core::execution::Secrets;

use crate::error::{Error, Result};

const PREFIX: &str = "WAYLINE_SECRET_";

/// Reads secrets from the environment and, when given, a file. The file wins on conflicts.
///
/// The file holds either one JSON object of strings or `NAME=value` lines (`#` comments and
/// blank lines allowed).
pub fn load(file: Option<&Path>) -> Result<Secrets> {
    let mut values = BTreeMap::new();
    for (key, value) in std::env::vars_os() {
        let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else { continue };
        if let Some(name) = key.strip_prefix(PREFIX)
            && !name.is_empty()
        {
            values.insert(name.to_owned(), value.to_owned());
        }
    }
    if let Some(path) = file {
        values.extend(parse_file(path)?);
    }
    Ok(Secrets::new(values))
}

fn parse_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = crate::definition::read(path)
        .map_err(|error| Error::invalid(format!("secrets file: {error}")))?;
    if text.trim_start().starts_with('{') {
        let map: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|error| {
                Error::invalid(format!("{}: not a JSON object: {error}", path.display()))
            })?;
        return map
            .into_iter()
            .map(|(name, value)| match value {
                serde_json::Value::String(text) => Ok((name, text)),
                other => Err(Error::invalid(format!(
                    "{}: secret `{name}` must be a string, not {other}",
                    path.display()
                ))),
            })
            .collect();
    }
    let mut out = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(Error::invalid(format!(
                "{}:{}: expected NAME=value",
                path.display(),
                number + 1
            )));
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Error::invalid(format!(
                "{}:{}: `{name}` is not a valid secret name",
                path.display(),
                number + 1
            )));
        }
        out.insert(name.to_owned(), value.to_owned());
    }
    Ok(out)
}
