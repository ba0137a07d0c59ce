//! The `wayline` binary: parses the command line, runs the command, and maps every outcome to
//! an exit code (0 success, 1 the execution ended otherwise, 2 invalid definition, input or
//! usage, 3 infrastructure error). Each command is a module of [`command`]; what they share
//! (reading definitions, following an execution, control requests, output) sits beside it.

// Every write to stdout and stderr goes through `output`, which decides once what a failed
// write means; `println!` and `eprintln!` would panic instead.
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod output;

mod command;
mod definition;
mod error;
mod follow;
mod progress;
mod remote;
mod request;
mod secrets;
mod signals;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    output::install_log();
    let cli = command::Cli::parse();
    match cli.run() {
        Ok(code) => code.into(),
        // Whoever read stdout has gone (`| head -1`): nothing left to do or to say.
        Err(error) if error.closed => error::Exit::Success.into(),
        Err(error) => {
            say!("error: {error}");
            error.exit.into()
        }
    }
}
