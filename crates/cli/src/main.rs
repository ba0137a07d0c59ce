//! The `wayline` binary: parses the command line, runs the command, and maps every outcome to
//! an exit code (0 success, 1 the execution ended otherwise, 2 invalid definition, input or
//! usage, 3 infrastructure error). The only crate that uses `anyhow`.

mod cli;
mod definition;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(code) => code.into(),
        Err(error) => {
            let code = cli::exit_code(&error);
            eprintln!("error: {error:#}");
            code.into()
        }
    }
}
