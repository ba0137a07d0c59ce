//! The command line: every subcommand, its flags and its help text.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::definition;

/// How a command ended, as the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what was asked (the execution succeeded, the file is valid).
    Success = 0,
    /// The execution ended otherwise: failed, cancelled, rolled back.
    Ended = 1,
    /// Invalid definition, input or usage.
    Invalid = 2,
    /// Infrastructure error: database unreachable, disk full, ...
    Infrastructure = 3,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> std::process::ExitCode {
        std::process::ExitCode::from(exit as u8)
    }
}

/// An error that knows its exit code; anything else is an infrastructure error.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// An invalid definition, input or usage: exit code 2.
pub fn invalid(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure { exit: Exit::Invalid, message: message.into() })
}

pub fn exit_code(error: &anyhow::Error) -> Exit {
    error.downcast_ref::<Failure>().map_or(Exit::Infrastructure, |failure| failure.exit)
}

const ABOUT: &str = "wayline: a durable workflow engine in one binary.\n\n\
Validate, plan and run multi-step workflows (commands, HTTP calls, waits, conditions, computed \
values) as a DAG with parallelism, retries, error strategies and durable state.";

const AFTER_HELP: &str = "Exit codes: 0 success, 1 the execution ended otherwise (failed, \
cancelled, rolled back), 2 invalid definition, input or usage, 3 infrastructure error.";

#[derive(Debug, Parser)]
#[command(name = "wayline", version, about = ABOUT, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check workflow files and report every problem with its file:line:column.
    ///
    /// Exit code 0 when every file is valid (warnings allowed), 2 otherwise.
    Validate {
        /// Workflow files (YAML or JSON).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// `text` for people, `json` for tools and editors.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show what a workflow would do: the levels of steps that may run in parallel, groups
    /// and their caps, and per step its needs, branches, timeout, strategy and retry schedule.
    Plan {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// An input value, `name=value` (repeatable). Values are converted to the declared type.
        #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// A JSON or YAML file with an object of input values.
        #[arg(long, value_name = "FILE")]
        input_file: Option<PathBuf>,
        /// Print the plan as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Draw the dependency graph (Graphviz dot or Mermaid).
    Graph {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Print the JSON Schema of the workflow format (for editors: validation and completion).
    Schema,
    /// Run a workflow: execute its steps here, show live progress, end with the result.
    ///
    /// Exit code 0 when the execution succeeded, 1 when it ended otherwise (failed, cancelled,
    /// rolled back), 2 for an invalid definition or input, 3 for an infrastructure error.
    /// Ctrl-C cancels the execution cleanly (running steps are stopped); a second Ctrl-C stops
    /// at once.
    Run {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// An input value, `name=value` (repeatable). Values are converted to the declared type.
        #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// A JSON file with an object of input values.
        #[arg(long, value_name = "FILE")]
        input_file: Option<PathBuf>,
        /// A file of secrets: `NAME=value` lines or a JSON object. Secrets also come from
        /// `WAYLINE_SECRET_<NAME>` environment variables.
        #[arg(long, value_name = "FILE")]
        secrets_file: Option<PathBuf>,
        /// Keep the execution in memory only (nothing is written to disk).
        #[arg(long)]
        ephemeral: bool,
        /// Print the result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Write every event as a CloudEvents JSON object, one per line.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

impl Cli {
    pub fn run(self) -> anyhow::Result<Exit> {
        match self.command {
            Command::Validate { files, format } => definition::validate(&files, format),
            Command::Plan { file, inputs, input_file, json } => {
                definition::plan(&file, &inputs, input_file.as_deref(), json)
            }
            Command::Graph { file, format } => definition::graph(&file, format),
            Command::Run { file, inputs, input_file, secrets_file, ephemeral: _, json, events } => {
                crate::run::run(crate::run::RunArgs {
                    file,
                    inputs,
                    input_file,
                    secrets_file,
                    location: crate::backend::Location::Ephemeral,
                    json,
                    events,
                })
            }
            Command::Schema => {
                println!("{}", serde_json::to_string_pretty(&wayline_spec::schema::schema())?);
                Ok(Exit::Success)
            }
        }
    }
}
