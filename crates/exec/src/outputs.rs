//! The `$WAYLINE_OUTPUT` file contract (docs/design.md §2.2): how a command hands values to later steps.
//!
//! Two forms are accepted. When the trimmed content starts with `{`, it is one JSON object and
//! its values keep their types. Otherwise it is `key=value` lines: blank lines are ignored, the
//! value is everything after the first `=` (a string, kept verbatim), keys match
//! `[A-Za-z_][A-Za-z0-9_-]*`, and a later line for the same key wins.

use std::fmt;
use std::io::Read;

use tokio::io::AsyncReadExt;

use crate::Outputs;

/// Why an output file was rejected. Every variant is the step's fault, so never retried.
#[derive(Debug)]
pub(crate) enum Error {
    TooLarge { limit: u64 },
    Unreadable(std::io::Error),
    NotAFile,
    NotUtf8,
    Json(serde_json::Error),
    MissingEquals { line: usize },
    InvalidKey { line: usize, key: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge { limit } => {
                write!(f, "output file is larger than the limit of {limit} bytes")
            }
            Error::Unreadable(error) => write!(f, "cannot read the output file: {error}"),
            Error::NotAFile => f.write_str("output file is not a regular file"),
            Error::NotUtf8 => f.write_str("output file is not valid UTF-8"),
            Error::Json(error) => write!(f, "output file is not a valid JSON object: {error}"),
            Error::MissingEquals { line } => {
                write!(f, "output file line {line}: expected key=value, found no `=`")
            }
            Error::InvalidKey { line, key } => write!(
                f,
                "output file line {line}: invalid key {key:?} (keys match [A-Za-z_][A-Za-z0-9_-]*)"
            ),
        }
    }
}

/// Files up to this size are read on the calling thread: from the page cache that takes a few
/// microseconds, much less than handing the read to a blocking thread and back.
const INLINE_READ: u64 = 64 * 1024;

/// Reads and parses an output file the process left. Only a regular file is accepted: reading
/// a FIFO or a device (through a symlink) could block forever or never end.
pub(crate) async fn read(file: std::fs::File, limit: u64) -> Result<Outputs, Error> {
    let metadata = file.metadata().map_err(Error::Unreadable)?;
    if !metadata.is_file() {
        return Err(Error::NotAFile);
    }
    // Read one byte past the limit instead of trusting the size on disk, so a file that is
    // still growing (a leftover writer) cannot make us buffer more than the limit.
    let bound = limit.saturating_add(1);
    let mut content = Vec::new();
    let result = if metadata.len() <= INLINE_READ {
        file.take(bound).read_to_end(&mut content)
    } else {
        tokio::fs::File::from_std(file).take(bound).read_to_end(&mut content).await
    };
    result.map_err(Error::Unreadable)?;
    if content.len() as u64 > limit {
        return Err(Error::TooLarge { limit });
    }
    parse(&content)
}

pub(crate) fn parse(content: &[u8]) -> Result<Outputs, Error> {
    let text = std::str::from_utf8(content).map_err(|_| Error::NotUtf8)?;
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(Error::Json);
    }
    let mut outputs = Outputs::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Error::MissingEquals { line: line_number });
        };
        if !is_key(key) {
            return Err(Error::InvalidKey { line: line_number, key: key.to_owned() });
        }
        outputs.insert(key.to_owned(), value.into());
    }
    Ok(outputs)
}

fn is_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes.next().is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn check(content: &str, expected: Expect) {
        let actual = match parse(content.as_bytes()) {
            Ok(outputs) => serde_json::Value::Object(outputs).to_string(),
            Err(error) => format!("error: {error}"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn key_value_lines() {
        check("a=1\n\nb_c-d=x=y\r\n  \n_e=\n", expect![[r#"{"a":"1","b_c-d":"x=y","_e":""}"#]]);
        check("a=1\na=2", expect![[r#"{"a":"2"}"#]]);
        check("k= spaced value ", expect![[r#"{"k":" spaced value "}"#]]);
        check("", expect![[r#"{}"#]]);
    }

    #[test]
    fn json_object() {
        check(
            "  \n{\"n\": 3, \"ok\": true, \"list\": [1, \"x\"], \"o\": {\"k\": null}}\n",
            expect![[r#"{"n":3,"ok":true,"list":[1,"x"],"o":{"k":null}}"#]],
        );
    }

    #[test]
    fn errors_name_the_problem() {
        check(
            "a=1\njust text\n",
            expect!["error: output file line 2: expected key=value, found no `=`"],
        );
        check(
            "1a=x",
            expect![[
                r#"error: output file line 1: invalid key "1a" (keys match [A-Za-z_][A-Za-z0-9_-]*)"#
            ]],
        );
        check(
            "=x",
            expect![[
                r#"error: output file line 1: invalid key "" (keys match [A-Za-z_][A-Za-z0-9_-]*)"#
            ]],
        );
        check(
            "a b=x",
            expect![[
                r#"error: output file line 1: invalid key "a b" (keys match [A-Za-z_][A-Za-z0-9_-]*)"#
            ]],
        );
        check(
            "{\"a\": ",
            expect![
                "error: output file is not a valid JSON object: EOF while parsing a value at line 1 column 6"
            ],
        );
        check("[1, 2]", expect!["error: output file line 1: expected key=value, found no `=`"]);
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        assert!(matches!(parse(b"a=\xff"), Err(Error::NotUtf8)));
    }
}
