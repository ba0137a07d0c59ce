//! `wayline validate`: check workflow files and report every problem with its position.

use std::path::PathBuf;

use clap::ValueEnum;
use serde_json::{Value, json};

use crate::definition;
use crate::error::{Exit, Result};
use crate::output;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workflow files (YAML or JSON).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// `text` for people, `json` for tools and editors.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub fn exec(args: Args) -> Result<Exit> {
    let Args { files, format } = args;
    let mut all_valid = true;
    let mut reports = Vec::new();
    for path in &files {
        let name = path.display().to_string();
        let (diagnostics, steps): (Vec<Value>, Option<usize>) = match definition::parse(path) {
            Ok((loaded, text)) => {
                if format == Format::Text {
                    for diagnostic in &loaded.diagnostics {
                        output::message(format_args!(
                            "{}",
                            loaded.render(diagnostic, &name, &text)
                        ));
                    }
                }
                // In JSON, a problem in an imported file names that file.
                let diagnostics = loaded
                    .diagnostics
                    .iter()
                    .map(|diagnostic| {
                        let mut value = json!(diagnostic);
                        if let Some(file) = diagnostic.span.file.checked_sub(1) {
                            let path = &loaded.files[file as usize].path;
                            value["file"] = json!(wayline_lang::lower::imports::shown(&name, path));
                        }
                        value
                    })
                    .collect();
                (diagnostics, loaded.workflow.map(|w| w.steps.len()))
            }
            Err(error) => {
                if format == Format::Text {
                    say!("error: {error}");
                    outln!("{name}: invalid (cannot be read)")?;
                }
                all_valid = false;
                reports.push(json!({ "file": name, "valid": false, "error": error.to_string(), "diagnostics": [] }));
                continue;
            }
        };
        all_valid &= steps.is_some();
        match format {
            Format::Text => match steps {
                Some(steps) => {
                    let warnings = diagnostics.len();
                    let note = if warnings > 0 {
                        format!(", {warnings} warning{}", definition::plural(warnings))
                    } else {
                        String::new()
                    };
                    outln!("{name}: valid ({steps} step{}{note})", definition::plural(steps))?;
                }
                None => {
                    let errors = diagnostics.iter().filter(|d| d["severity"] == "error").count();
                    outln!("{name}: invalid ({errors} error{})", definition::plural(errors))?;
                }
            },
            Format::Json => reports.push(json!({
                "file": name,
                "valid": steps.is_some(),
                "diagnostics": diagnostics,
            })),
        }
    }
    if format == Format::Json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({ "valid": all_valid, "files": reports }))?
        )?;
    }
    Ok(if all_valid { Exit::Success } else { Exit::Invalid })
}
