//! The `wayline` binary: parses the command line, runs the command, and maps every outcome to
//! an exit code (0 success, 1 the execution ended otherwise, 2 invalid definition, input or
//! usage, 3 infrastructure error). The only crate that uses `anyhow`.

// Every write to stdout and stderr goes through `output`, which decides once what a failed
// write means; `println!` and `eprintln!` would panic instead.
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod output;

mod backend;
mod cli;
mod control;
mod definition;
mod progress;
mod run;
mod secrets;
mod signals;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(code) => code.into(),
        // Whoever read stdout has gone (`| head -1`): nothing left to do or to say.
        Err(error) if error.is::<output::Closed>() => cli::Exit::Success.into(),
        Err(error) => {
            let code = cli::exit_code(&error);
            say!("error: {error:#}");
            code.into()
        }
    }
}

/// Maps an engine error to the exit code it deserves.
pub fn engine_error(error: wayline_runtime::Error) -> anyhow::Error {
    use wayline_runtime::Error;
    let exit = match &error {
        Error::Invalid(_) => cli::Exit::Invalid,
        Error::Rejected(_) => cli::Exit::Invalid,
        Error::Store(_) | Error::Stopped => cli::Exit::Infrastructure,
    };
    anyhow::Error::new(cli::Failure { exit, message: error.to_string() })
}
