//! What the command executor costs beyond starting a process (docs/design.md §4: "command steps:
//! wayline's own overhead beyond spawning the process ≤ 200 µs"). Run with
//! `cargo bench -p wayline-exec --bench spawn [-- [ROUNDS [SPAWNS]] [VARIANT...]]`; naming
//! variants runs only those (handy under strace or callgrind).
//!
//! Four ways to run `true`, measured on one current-thread runtime:
//! - `bare`: `sh -c true` through `tokio::process::Command::status()`, the floor;
//! - `piped`: the same with stdout and stderr piped and read to EOF, the floor for any runner
//!   that captures logs;
//! - `shell`: `run_command` with `Program::Shell("true")`;
//! - `argv`: `run_command` with `Program::Argv(["true"])`, no shell at all.
//!
//! The machine is shared and noisy, so the variants are interleaved: every round runs each of
//! them `SPAWNS` times, in an order that rotates from round to round, and ratios are taken
//! within a round before the median over rounds is printed.

#![allow(clippy::disallowed_methods)] // the baselines spawn processes themselves

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use wayline_exec::{Command, LogSink, Outcome, Program, run_command};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Bare,
    Piped,
    Shell,
    Argv,
}

/// In declaration order, so `variant as usize` is its index.
const VARIANTS: [Variant; 4] = [Variant::Bare, Variant::Piped, Variant::Shell, Variant::Argv];

impl Variant {
    fn key(self) -> &'static str {
        match self {
            Variant::Bare => "bare",
            Variant::Piped => "piped",
            Variant::Shell => "shell",
            Variant::Argv => "argv",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Bare => "bare: sh -c true, status()",
            Variant::Piped => "piped: sh -c true, pipes read to EOF",
            Variant::Shell => "shell: run_command(Shell(\"true\"))",
            Variant::Argv => "argv: run_command(Argv([\"true\"]))",
        }
    }

    async fn once(self) {
        match self {
            Variant::Bare => {
                let status = tokio::process::Command::new("sh")
                    .args(["-c", "true"])
                    .status()
                    .await
                    .expect("sh runs");
                assert!(status.success());
            }
            Variant::Piped => {
                let mut child = tokio::process::Command::new("sh")
                    .args(["-c", "true"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("sh runs");
                let (mut stdout, mut stderr) =
                    (child.stdout.take().unwrap(), child.stderr.take().unwrap());
                let (mut out, mut err) = (Vec::new(), Vec::new());
                let (read_out, read_err, status) = tokio::join!(
                    stdout.read_to_end(&mut out),
                    stderr.read_to_end(&mut err),
                    child.wait()
                );
                read_out.expect("stdout reads");
                read_err.expect("stderr reads");
                assert!(status.expect("sh is reaped").success());
            }
            Variant::Shell => expect_success(Program::Shell("true".to_owned())).await,
            Variant::Argv => expect_success(Program::Argv(vec!["true".to_owned()])).await,
        }
    }
}

async fn expect_success(program: Program) {
    let outcome = run_command(Command::new(program), CancellationToken::new(), LogSink::discard());
    match outcome.await {
        Outcome::Succeeded { .. } => {}
        Outcome::Failed(failure) => panic!("{}: {}", failure.class.as_str(), failure.message),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    let (numbers, names): (Vec<&String>, Vec<&String>) =
        args.iter().partition(|arg| arg.bytes().all(|byte| byte.is_ascii_digit()));
    let rounds: usize = numbers.first().map_or(21, |n| n.parse().expect("ROUNDS is a number"));
    let spawns: usize = numbers.get(1).map_or(50, |n| n.parse().expect("SPAWNS is a number"));
    let wanted =
        |variant: Variant| names.is_empty() || names.iter().any(|name| *name == variant.key());

    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    // Per round and variant: microseconds per spawn.
    let mut times: Vec<[f64; 4]> = Vec::with_capacity(rounds);
    runtime.block_on(async {
        // Warm up: the first spawns pay for page faults, lazy statics and thread pools.
        for variant in VARIANTS.into_iter().filter(|&variant| wanted(variant)) {
            for _ in 0..20 {
                variant.once().await;
            }
        }
        for round in 0..rounds {
            let mut row = [0.0; 4];
            for offset in 0..VARIANTS.len() {
                let index = (round + offset) % VARIANTS.len();
                if !wanted(VARIANTS[index]) {
                    continue;
                }
                let started = Instant::now();
                for _ in 0..spawns {
                    VARIANTS[index].once().await;
                }
                row[index] = micros(started.elapsed()) / spawns as f64;
            }
            times.push(row);
        }
    });

    println!("{rounds} rounds × {spawns} spawns per variant, interleaved; medians over rounds");
    println!(
        "{:<40} {:>9} {:>7} {:>7} {:>9} {:>9}",
        "variant", "µs/spawn", "÷ bare", "÷ piped", "− bare µs", "− piped µs"
    );
    // Within-round comparisons, so a noisy stretch of the machine hits both sides alike.
    let median_of = |f: &dyn Fn(&[f64; 4]) -> f64| {
        let mut values: Vec<f64> = times.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let against = |index: usize, base: Variant, f: fn(f64, f64) -> f64, precision: usize| {
        let base = base as usize;
        if wanted(VARIANTS[base]) {
            format!("{:.precision$}", median_of(&|row| f(row[index], row[base])))
        } else {
            "-".to_owned()
        }
    };
    for (index, variant) in VARIANTS.into_iter().enumerate().filter(|&(_, v)| wanted(v)) {
        println!(
            "{:<40} {:>9.1} {:>7} {:>7} {:>9} {:>9}",
            variant.name(),
            median_of(&|row| row[index]),
            against(index, Variant::Bare, |value, base| value / base, 3),
            against(index, Variant::Piped, |value, base| value / base, 3),
            against(index, Variant::Bare, |value, base| value - base, 1),
            against(index, Variant::Piped, |value, base| value - base, 1),
        );
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
