//! The `wayline` binary tested from the outside, in one test binary: real processes, real
//! files, exit codes and output as a user or a script sees them.

// The tests start the binary under test, local servers and watchdog threads.
#![allow(clippy::disallowed_methods)]

mod api;
mod bench;
mod client;
mod debug;
mod durable;
mod examples;
mod fan_out;
mod graph;
mod history;
mod hostile;
mod imports;
mod plan;
mod postgres;
mod rerun;
mod run;
mod schema;
mod server;
mod takeover;
mod terminal;
mod tidy;
mod validate;

use std::path::{Path, PathBuf};

/// What one run of the binary produced.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The workspace root: commands run there so paths in the output read `examples/…`.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Runs `wayline` with `args` in the workspace root.
#[allow(clippy::disallowed_methods)] // the tests' only process: the binary under test
fn wayline(args: &[&str]) -> Run {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wayline"))
        .args(args)
        .current_dir(root())
        .env_remove("RUST_BACKTRACE")
        .env("NO_COLOR", "1")
        .output()
        .expect("the wayline binary runs");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// A file in a fresh temporary directory, for workflows made up by a test.
fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// `wayline` with `args`, run in `dir` against database `db`, the way the durability tests
/// need it: no automatic retention, scratch files of killed processes inside `dir`, no stdin.
fn wayline_in(dir: &Path, db: &str, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_wayline"));
    command
        .args(args)
        .current_dir(dir)
        .env("WAYLINE_DB", db)
        .env("WAYLINE_RETENTION", "off")
        .env("TMPDIR", dir)
        .env_remove("RUST_BACKTRACE")
        .stdin(std::process::Stdio::null());
    command
}
