//! The command line: every subcommand, its flags and its help text.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{backend, control, definition, run};

/// How long a control command waits for the owning process to act on its request.
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn block_on(work: impl std::future::Future<Output = anyhow::Result<Exit>>) -> anyhow::Result<Exit> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(work)
}

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
        /// The workflow file (YAML or JSON).
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
        /// The workflow file (YAML or JSON).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Print the JSON Schema of the workflow format (for editors: validation and completion).
    Schema,
    /// Run a workflow: execute its steps here, show live progress, end with the result.
    ///
    /// The execution is recorded in the database (SQLite by default), so it survives a crash
    /// (`wayline resume ID` continues it) and other processes can watch and steer it.
    /// Exit code 0 when the execution succeeded, 1 when it ended otherwise (failed, cancelled,
    /// rolled back), 2 for an invalid definition or input, 3 for an infrastructure error.
    ///
    /// Ctrl-C, SIGTERM or SIGHUP cancels the execution cleanly: the running steps' process
    /// groups get SIGTERM, then SIGKILL 5 seconds later if they are still there (a step's
    /// `timeout` stops it the same way). A second one stops at once, leaving the execution
    /// resumable.
    Run {
        /// The workflow file (YAML or JSON).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// An input value, `name=value` (repeatable). Values are converted to the declared type.
        #[arg(short = 'i', long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// A JSON or YAML file with an object of input values.
        #[arg(long, value_name = "FILE")]
        input_file: Option<PathBuf>,
        /// A file of secrets: `NAME=value` lines or a JSON object. Secrets also come from
        /// `WAYLINE_SECRET_<NAME>` environment variables.
        #[arg(long, value_name = "FILE")]
        secrets_file: Option<PathBuf>,
        #[command(flatten)]
        db: Db,
        /// Keep the execution in memory only (nothing is written to disk).
        #[arg(long, conflicts_with_all = ["db", "detach"])]
        ephemeral: bool,
        /// Print the result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Write every event as a CloudEvents JSON object, one per line.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// Start the execution in the background, print its id and return.
        #[arg(long)]
        detach: bool,
    },
    /// List executions, newest first.
    List {
        /// Only these statuses (repeatable): pending, running, paused, escalated, succeeded,
        /// failed, cancelled, rolled_back.
        #[arg(long, value_name = "STATUS")]
        status: Vec<String>,
        /// Only executions of this workflow.
        #[arg(long, value_name = "NAME")]
        workflow: Option<String>,
        /// Only executions created since: a duration (`2h`, `7d`) or an RFC 3339 time.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the records as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Db,
    },
    /// Show an execution: status, steps, attempts, errors, why waiting steps wait.
    Show {
        /// Execution id (any unique prefix).
        id: String,
        /// Print the result object as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: Db,
    },
    /// Print the logs of an execution, or of one of its steps.
    Logs {
        /// Execution id (any unique prefix).
        id: String,
        /// Only this step.
        step: Option<String>,
        /// Keep printing new lines until the execution ends.
        #[arg(short, long)]
        follow: bool,
        /// Print the text as the steps wrote it, control characters included (on a terminal
        /// they are otherwise shown as escapes like `\x1b`).
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        db: Db,
    },
    /// Print the events of an execution as CloudEvents JSON lines.
    Events {
        /// Execution id (any unique prefix).
        id: String,
        /// Keep printing events as they are committed, until the execution ends.
        #[arg(short, long)]
        follow: bool,
        /// Start after this sequence number (resume a previous read).
        #[arg(long, default_value_t = 0, value_name = "SEQ")]
        after: u64,
        #[command(flatten)]
        db: Db,
    },
    /// Pause an execution: running steps finish, nothing new starts until `resume`.
    Pause {
        /// Execution id (any unique prefix).
        id: String,
        /// Resume by itself at this time (RFC 3339) or after this long (`30m`).
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        db: Db,
    },
    /// Resume a paused execution, or take over one whose process is gone and continue it here.
    Resume {
        /// Execution id (any unique prefix).
        id: String,
        /// Secrets for the steps still to run (as for `run`).
        #[arg(long, value_name = "FILE")]
        secrets_file: Option<PathBuf>,
        /// Print the result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Write every event (from now on) as CloudEvents JSON lines.
        #[arg(long, value_name = "FILE")]
        events: Option<PathBuf>,
        /// No progress output.
        #[arg(long)]
        quiet: bool,
        /// Take the execution over even when its owner is a live process on this host whose
        /// lease lapsed (stuck or stopped). Its running steps are stopped first.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        db: Db,
    },
    /// Cancel an execution: running steps are stopped (SIGTERM, then SIGKILL), nothing new starts.
    ///
    /// The running steps' process groups get SIGTERM, then SIGKILL 5 seconds later if they are
    /// still there; steps that never started are cancelled.
    Cancel {
        /// Execution id (any unique prefix).
        id: String,
        /// Run the compensations of the succeeded steps.
        #[arg(long)]
        rollback: bool,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        db: Db,
    },
    /// Decide what happens to an escalated step: retry, skip, rollback or fail.
    Decide {
        /// Execution id (any unique prefix).
        id: String,
        /// The escalated step.
        step: String,
        #[arg(value_name = "retry|skip|rollback|fail")]
        action: String,
        /// With `skip`: outputs the step gets (`key=value`, value as JSON when it parses).
        #[arg(long = "output", value_name = "KEY=VALUE")]
        outputs: Vec<String>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        db: Db,
    },
    /// Delete finished executions older than a duration, with their events and logs.
    Gc {
        #[arg(long, default_value = "7d", value_name = "DURATION")]
        older_than: String,
        #[command(flatten)]
        db: Db,
    },
}

/// Where executions are stored.
#[derive(Debug, Clone, clap::Args)]
pub struct Db {
    /// Database URL: sqlite:///path/file.db (default: $XDG_DATA_HOME/wayline/wayline.db) or
    /// postgres://user@host/db.
    #[arg(long, env = "WAYLINE_DB", value_name = "URL")]
    db: Option<String>,
}

impl Db {
    fn location(&self) -> anyhow::Result<backend::Location> {
        backend::Location::parse(self.db.as_deref())
    }
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
            Command::Run {
                file,
                inputs,
                input_file,
                secrets_file,
                db,
                ephemeral,
                json,
                events,
                detach,
            } => {
                let location =
                    if ephemeral { backend::Location::Ephemeral } else { db.location()? };
                run::run(run::RunArgs {
                    file,
                    inputs,
                    input_file,
                    secrets_file,
                    location,
                    json,
                    events,
                    detach,
                })
            }
            Command::Resume { id, secrets_file, json, events, quiet, force, db } => {
                run::resume(run::ResumeArgs {
                    id,
                    secrets_file,
                    location: db.location()?,
                    json,
                    events,
                    quiet,
                    force,
                })
            }
            Command::List { status, workflow, since, limit, json, db } => {
                let location = db.location()?;
                block_on(control::list(
                    &location,
                    control::ListArgs { status, workflow, since, limit, json },
                ))
            }
            Command::Show { id, json, db } => block_on(control::show(&db.location()?, &id, json)),
            Command::Logs { id, step, follow, raw, db } => {
                block_on(control::logs(&db.location()?, &id, step.as_deref(), follow, raw))
            }
            Command::Events { id, follow, after, db } => {
                block_on(control::events(&db.location()?, &id, after, follow))
            }
            Command::Pause { id, until, reason, db } => block_on(control::control(
                &db.location()?,
                &id,
                control::Ask::Pause { until },
                reason,
                WAIT,
            )),
            Command::Cancel { id, rollback, reason, db } => block_on(control::control(
                &db.location()?,
                &id,
                control::Ask::Cancel { rollback },
                reason,
                WAIT,
            )),
            Command::Decide { id, step, action, outputs, reason, db } => {
                let ask = control::Ask::Decide { step, decision: action, outputs };
                block_on(control::control(&db.location()?, &id, ask, reason, WAIT))
            }
            Command::Gc { older_than, db } => block_on(control::gc(&db.location()?, &older_than)),
            Command::Schema => {
                outln!("{}", serde_json::to_string_pretty(&wayline_lang::schema::schema())?)?;
                Ok(Exit::Success)
            }
        }
    }
}
