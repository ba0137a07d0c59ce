//! The command line: one module per command, each with its arguments (`Args`) and what it
//! does (`exec`). This module ties them into one `wayline` command and runs the one async
//! runtime the commands that need one share.

use std::time::Duration;

use clap::{Parser, Subcommand};
use wayline_backend::Location;

use crate::error::{Exit, Result};
use crate::remote::{Remote, Target};

pub mod bench;
pub mod cancel;
pub mod decide;
pub mod events;
pub mod gc;
pub mod graph;
pub mod inspect;
pub mod list;
pub mod logs;
pub mod patch;
pub mod pause;
pub mod plan;
pub mod rerun;
pub mod resume;
pub mod run;
pub mod schema;
pub mod server;
pub mod show;
pub mod step;
pub mod test_step;
pub mod token;
pub mod validate;
pub mod workflows;

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
    Validate(validate::Args),
    /// Show what a workflow would do: the levels of steps that may run in parallel, groups
    /// and their caps, and per step its needs, branches, timeout, strategy and retry schedule.
    Plan(plan::Args),
    /// Draw the dependency graph (Graphviz dot or Mermaid).
    Graph(graph::Args),
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
    Run(run::Args),
    /// List executions, newest first.
    List(list::Args),
    /// Show an execution: status, steps, attempts, errors, why waiting steps wait.
    Show(show::Args),
    /// Print the logs of an execution, or of one of its steps.
    Logs(logs::Args),
    /// Print the events of an execution as CloudEvents JSON lines.
    Events(events::Args),
    /// Pause an execution: running steps finish, nothing new starts until `resume`.
    Pause(pause::Args),
    /// Resume a paused execution, or take over one whose process is gone and continue it here.
    Resume(resume::Args),
    /// Run part of a finished execution again, in place: what failed (fixed since), or
    /// everything from a step on. Same id; the journal goes on.
    Rerun(rerun::Args),
    /// At a breakpoint: let the next ready steps start, and pause again once they finished.
    Step(step::Args),
    /// While paused at a breakpoint: change the outputs of a succeeded step, or inputs, for the
    /// steps still to run (recorded with who and why).
    Patch(patch::Args),
    /// What a step will do when it next starts: the rendered command, env and cwd, or the HTTP
    /// request, secrets masked, and the upstream outputs it reads.
    Inspect(inspect::Args),
    /// Run one step of a workflow file in isolation, with upstream outputs from a past
    /// execution or given here, and print what it did; nothing is recorded.
    Test(test_step::Args),
    /// Cancel an execution: running steps are stopped (SIGTERM, then SIGKILL), nothing new starts.
    ///
    /// The running steps' process groups get SIGTERM, then SIGKILL 5 seconds later if they are
    /// still there; steps that never started are cancelled.
    Cancel(cancel::Args),
    /// Decide what happens to an escalated step: retry, skip, rollback or fail.
    Decide(decide::Args),
    /// Delete finished executions older than a duration, with their events and logs.
    Gc(gc::Args),
    /// Measure wayline's own cost: command steps against a shell loop of bare spawns, `set`
    /// steps, and a waiting execution, on memory, SQLite and (with --postgres) PostgreSQL.
    Bench(bench::Args),
    /// Serve the HTTP API: start, list, watch (server-sent events) and steer executions from
    /// other programs; this process runs them.
    ///
    /// Every /api/v1 route needs a bearer token; the first start writes an admin token to
    /// $XDG_CONFIG_HOME/wayline/token. Executions whose owner is gone are taken over at start
    /// and whenever one turns up. A stop signal (Ctrl-C, SIGTERM, SIGHUP) closes the API and
    /// drains: nothing new starts, the attempts under way get --grace to end, then what is left
    /// is cancelled and the leases are released, so the executions continue where wayline runs
    /// next; exit code 0. A second signal stops at once.
    Server(server::Args),
    /// Manage the API tokens of the servers on a database: create (printed once), list, revoke.
    ///
    /// A token's role says what it may do: read, operate (read + start and steer executions),
    /// admin (everything), agent (the agent endpoints). Its name is the actor of what it does.
    /// On its first start a server makes an admin token and writes it to
    /// $XDG_CONFIG_HOME/wayline/token (0600).
    Token(token::Args),
    /// Register workflow files under their names, for a server to start by name (`push`);
    /// list, show and delete what is registered. On a server (--server) or its database.
    Workflows(workflows::Args),
}

/// Where executions are stored.
#[derive(Debug, Clone, clap::Args)]
pub struct Db {
    /// Database URL: sqlite:///path/file.db (default: $XDG_DATA_HOME/wayline/wayline.db) or
    /// postgres://user@host/db. Also from WAYLINE_DB; the flag wins.
    #[arg(long, value_name = "URL", global = true)]
    db: Option<String>,
}

impl Db {
    /// The database: `--db`, else `WAYLINE_DB`, else the default one. (The variable is read
    /// here rather than by clap, so that an exported `WAYLINE_DB` does not conflict with an
    /// explicit `--server`.)
    pub fn location(&self) -> Result<Location> {
        Ok(Location::parse(self.url().as_deref())?)
    }

    /// The URL given with the flag.
    pub fn flag(&self) -> Option<&str> {
        self.db.as_deref()
    }

    fn url(&self) -> Option<String> {
        self.db.clone().or_else(|| std::env::var("WAYLINE_DB").ok())
    }
}

impl Cli {
    pub fn run(self) -> Result<Exit> {
        match self.command {
            Command::Validate(args) => validate::exec(args),
            Command::Plan(args) => plan::exec(args),
            Command::Graph(args) => graph::exec(args),
            Command::Schema => schema::exec(),
            Command::Run(args) => run::exec(args),
            Command::Resume(args) => resume::exec(args),
            Command::Rerun(args) => rerun::exec(args),
            Command::Step(args) => step::exec(args),
            Command::Patch(args) => patch::exec(args),
            Command::Inspect(args) => inspect::exec(args),
            Command::Test(args) => test_step::exec(args),
            Command::List(args) => on_target(&args.target.clone(), args, list::exec, list::remote),
            Command::Show(args) => on_target(&args.target.clone(), args, show::exec, show::remote),
            Command::Logs(args) => on_target(&args.target.clone(), args, logs::exec, logs::remote),
            Command::Events(args) => {
                on_target(&args.target.clone(), args, events::exec, events::remote)
            }
            Command::Pause(args) => pause::exec(args),
            Command::Cancel(args) => cancel::exec(args),
            Command::Decide(args) => decide::exec(args),
            Command::Gc(args) => with_db(&args.db.clone(), |location| gc::exec(args, location)),
            Command::Bench(args) => bench::exec(args),
            Command::Server(args) => server::exec(args),
            Command::Token(args) => token::exec(args),
            Command::Workflows(args) => workflows::exec(args),
        }
    }
}

/// Runs a command on the server `target` names (`--server`), or else on its database.
fn on_target<A, L, R>(
    target: &Target,
    args: A,
    local: impl FnOnce(A, Location) -> L,
    remote: impl FnOnce(A, Remote) -> R,
) -> Result<Exit>
where
    L: std::future::Future<Output = Result<Exit>>,
    R: std::future::Future<Output = Result<Exit>>,
{
    match target.remote()? {
        Some(server) => block_on(remote(args, server)),
        None => with_db(&target.db, |location| local(args, location)),
    }
}

/// Runs a command that works on the database at `db`, naming the database in its errors.
fn with_db<F>(db: &Db, command: impl FnOnce(Location) -> F) -> Result<Exit>
where
    F: std::future::Future<Output = Result<Exit>>,
{
    let location = db.location()?;
    block_on(command(location.clone())).map_err(|error| error.located(&location))
}

/// The one async runtime of a command. One thread: the engine, its attempts and the user's
/// view share it, which keeps hand-offs between threads off the path of every step (the
/// stores run their own threads; blocking reads of stdin go to tokio's blocking pool).
pub fn block_on<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(work);
    // A read of stdin for an escalation prompt may still be blocked; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap checks a command line's definition only when it is used; this checks all of it.
    #[test]
    fn every_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
