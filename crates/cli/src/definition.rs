//! Reading what the user gives: workflow files (validated, every diagnostic printed), input
//! values and files, each at most 1 MiB and checked before it is read.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use wayline_lang::Workflow;
use wayline_lang::inputs::{self, Given};

use crate::error::{Error, Result};
use crate::output;

/// Reads a workflow, input or secrets file of at most 1 MiB, or explains why it cannot be read
/// (exit 2: it is the user's input).
///
/// The size is checked before the file is read: from its metadata when it is a regular file,
/// otherwise (a pipe, `/dev/zero`) by reading no more than one byte past the limit.
pub fn read(path: &Path) -> Result<String> {
    const LIMIT: usize = wayline_lang::lower::MAX_FILE_BYTES;
    let cannot = |error: std::io::Error| {
        Error::invalid(format!("cannot read {}: {}", path.display(), output::reason(&error)))
    };
    let too_large = |size: String| {
        Error::invalid(format!("{} {size}; the limit is {LIMIT} bytes (1 MiB)", path.display()))
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    let metadata = file.metadata().map_err(cannot)?;
    if metadata.is_file() && metadata.len() > LIMIT as u64 {
        return Err(too_large(format!("is {} bytes", metadata.len())));
    }
    let mut bytes = Vec::new();
    file.take(LIMIT as u64 + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() > LIMIT {
        return Err(too_large(format!("has more than {LIMIT} bytes")));
    }
    String::from_utf8(bytes).map_err(|error| {
        Error::invalid(format!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            error.utf8_error().valid_up_to()
        ))
    })
}

/// A workflow file, validated: the workflow, its text, and the texts of the files it
/// imports (by path relative to it), which an execution records.
pub struct Definition {
    pub workflow: Workflow,
    pub source: String,
    pub imports: BTreeMap<String, String>,
}

/// Parses and validates the workflow file at `path` and the files it imports (found next to
/// it, each at most 1 MiB); returns the result and the file's text.
pub fn parse(path: &Path) -> Result<(wayline_lang::Loaded, String)> {
    let text = read(path)?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let loaded = wayline_lang::load_with(&text, &mut |import: &str| {
        read(&dir.join(import)).map_err(|error| error.message)
    });
    Ok((loaded, text))
}

/// Loads and validates a workflow; on error prints every diagnostic and fails with exit 2.
pub fn load(path: &Path) -> Result<Definition> {
    let (loaded, text) = parse(path)?;
    let name = path.display().to_string();
    for diagnostic in &loaded.diagnostics {
        output::message(format_args!("{}", loaded.render(diagnostic, &name, &text)));
    }
    let imports = loaded.sources();
    match loaded.workflow {
        Some(workflow) => Ok(Definition { workflow, source: text, imports }),
        None => {
            let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
            Err(Error::invalid(format!("{name} is invalid ({errors} error{})", plural(errors))))
        }
    }
}

pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A workflow file and the inputs given for it, as `plan` and `run` take them.
#[derive(Debug, clap::Args)]
pub struct WithInputs {
    /// The workflow file (YAML or JSON).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// An input value, `name=value` (repeatable). Values are converted to the declared type.
    #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
    inputs: Vec<String>,
    /// A JSON or YAML file with an object of input values.
    #[arg(long, value_name = "FILE")]
    input_file: Option<PathBuf>,
}

impl WithInputs {
    /// Loads and validates the workflow (its text too), then checks the inputs against it.
    pub fn load(&self) -> Result<(Definition, serde_json::Map<String, serde_json::Value>)> {
        let definition = load(&self.file)?;
        let inputs =
            resolve_inputs(&definition.workflow, &self.inputs, self.input_file.as_deref())?;
        Ok((definition, inputs))
    }
}

/// Parses `-i name=value` flags and an optional input file into checked input values.
fn resolve_inputs(
    workflow: &Workflow,
    flags: &[String],
    file: Option<&Path>,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut given = Vec::new();
    if let Some(path) = file {
        let text = read(path)?;
        // JSON is YAML, so one parser reads both.
        let node = wayline_lang::yaml::parse(&text).map_err(|d| {
            Error::invalid(format!(
                "{}:{}:{}: {}",
                path.display(),
                d.span.line,
                d.span.column,
                d.message
            ))
        })?;
        let Some(serde_json::Value::Object(map)) = node.to_json() else {
            return Err(Error::invalid(format!(
                "{}: expected a mapping of input names to values",
                path.display()
            )));
        };
        given.extend(map.into_iter().map(|(name, value)| (name, Given::Json(value))));
    }
    for flag in flags {
        let Some((name, value)) = flag.split_once('=') else {
            return Err(Error::invalid(format!("`-i {flag}`: write inputs as name=value")));
        };
        given.push((name.to_owned(), Given::Text(value.to_owned())));
    }
    inputs::resolve(workflow, given).map_err(|errors| Error::invalid(errors.join("\n       ")))
}
