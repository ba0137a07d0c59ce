//! `imports:`: files of templates a workflow uses. The files are read before lowering, through
//! the caller's reader (the file system for `wayline validate` and `run`, the journal's copy
//! when an execution is rebuilt), parsed with their spans marked as theirs, and their
//! `templates` declared before the workflow's own. An imported file holds templates only; it
//! imports nothing itself.

use crate::diagnostic::{Code, Diagnostic, Span};
use crate::format;
use crate::yaml::{self, Node, Value};

use super::{Lower, MAX_FILE_BYTES};

/// Most files one workflow imports.
pub const MAX_IMPORTS: usize = 64;

/// An imported file: its path relative to the workflow file, as `imports:` names it once
/// normalised (`./lib/../common.yaml` is `common.yaml`), and its text. Its spans carry its
/// position in [`crate::Loaded::files`], plus one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub path: String,
    pub text: String,
}

/// Reads an imported file by its normalised path; the error says why it cannot.
pub type Reader<'a> = &'a mut dyn FnMut(&str) -> Result<String, String>;

/// A reader for text that imports nothing: every import is refused with `why`.
pub fn no_files(why: &'static str) -> impl FnMut(&str) -> Result<String, String> {
    move |_| Err(why.to_owned())
}

/// `entry` as a normalised relative path, or why it is not one.
pub fn normalise(entry: &str) -> Result<String, String> {
    if entry.is_empty() {
        return Err("an import names a file".into());
    }
    if entry.starts_with('/') || entry.contains('\\') || entry.contains('\0') {
        return Err(format!(
            "`{entry}` is not a relative path with `/`: an import is found relative to the importing file"
        ));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in entry.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|last| *last != "..") => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(format!("`{entry}` names a directory, not a file"));
    }
    Ok(parts.join("/"))
}

/// How an imported file is named in messages: its path next to the workflow file's name
/// (`deploy/main.yaml` importing `lib/common.yaml` shows `deploy/lib/common.yaml`).
pub fn shown(workflow: &str, path: &str) -> String {
    match workflow.rfind('/') {
        Some(slash) => format!("{}/{path}", &workflow[..slash]),
        None => path.to_owned(),
    }
}

impl Lower {
    /// `imports:` itself: a list of paths (what they name was read before).
    pub(super) fn import_list(&mut self, node: &Node) {
        match &node.value {
            Value::Seq(items) => {
                for item in items {
                    if !matches!(item.value, Value::Str(_)) {
                        self.wrong_type(item, "an import", "a path");
                    }
                }
            }
            _ => self.wrong_type(node, "`imports`", "a list of paths"),
        }
    }

    /// Reads the files `root`'s `imports:` names (its shape is checked with the workflow's
    /// other fields); what cannot be read or parsed is reported at its entry.
    pub(super) fn read_imports(&mut self, root: &Node, read: Reader<'_>) {
        let Value::Map(entries) = &root.value else { return };
        let Some((_, list)) = entries.iter().find(|(key, _)| key.name == "imports") else {
            return;
        };
        let Value::Seq(items) = &list.value else { return };
        for item in items {
            let Value::Str(entry) = &item.value else { continue };
            let path = match normalise(entry) {
                Ok(path) => path,
                Err(message) => {
                    self.error(Code::InvalidValue, item.span, message);
                    continue;
                }
            };
            if self.files.iter().any(|file| file.path == path) {
                self.error(Code::DuplicateKey, item.span, format!("`{path}` is imported twice"));
                continue;
            }
            if self.files.len() == MAX_IMPORTS {
                self.error(
                    Code::Limit,
                    item.span,
                    format!("a workflow imports at most {MAX_IMPORTS} files"),
                );
                break;
            }
            let text = match read(&path) {
                Ok(text) if text.len() > MAX_FILE_BYTES => {
                    let message = format!(
                        "`{path}` is {} bytes; the limit is {MAX_FILE_BYTES} bytes (1 MiB)",
                        text.len()
                    );
                    self.error(Code::Limit, item.span, message);
                    continue;
                }
                Ok(text) => text,
                Err(why) => {
                    let d = Diagnostic::error(
                        Code::InvalidValue,
                        item.span,
                        format!("cannot import `{path}`: {why}"),
                    );
                    self.push(d.with_help("the path is relative to the workflow file"));
                    continue;
                }
            };
            self.files.push(super::imports::Imported { path, text });
            let file = self.files.len() as u16;
            match yaml::parse(&self.files[file as usize - 1].text) {
                Ok(mut node) => {
                    node.in_file(file);
                    self.libraries.push(node);
                }
                Err(mut diagnostic) => {
                    diagnostic.span.file = file;
                    self.push(diagnostic);
                }
            }
        }
    }

    /// The templates of the imported files, declared before the workflow's own.
    pub(super) fn libraries(&mut self) {
        for library in std::mem::take(&mut self.libraries) {
            let Some(obj) = self.object(&library, &format::LIBRARY) else { continue };
            if let Some(node) = obj.get("templates") {
                self.templates(node, true);
            }
        }
    }

    /// Where a span is, for a message that names another place: `common.yaml:3:5`, or
    /// `line 3` in the workflow file itself.
    pub(super) fn place(&self, span: Span) -> String {
        match span.file.checked_sub(1).and_then(|file| self.files.get(file as usize)) {
            Some(file) => format!("{}:{}:{}", file.path, span.line, span.column),
            None => format!("line {}", span.line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn paths_are_normalised_and_must_be_relative() {
        assert_eq!(normalise("./lib/../common.yaml").unwrap(), "common.yaml");
        assert_eq!(normalise("../shared/t.yaml").unwrap(), "../shared/t.yaml");
        assert_eq!(normalise("a//b/./c.yaml").unwrap(), "a/b/c.yaml");
        assert!(normalise("/etc/passwd").unwrap_err().contains("relative path"));
        assert!(normalise("./").unwrap_err().contains("directory"));
        assert!(normalise("").is_err());
    }
}
