//! wayline-exec's integration tests, in one binary so the crate links its tests once: real
//! processes through /bin/sh and a real HTTP server on 127.0.0.1.

mod command;
mod http;
mod redirects;

use std::fmt::Write as _;

use wayline_exec::{LogLine, Outcome, Stream};

/// Renders an outcome and its log the same way for every snapshot: first line the result,
/// then the outputs as JSON, then the log lines with their stream.
fn render(outcome: &Outcome, logs: &[LogLine]) -> String {
    let mut text = match outcome {
        Outcome::Succeeded { outputs } => format!("succeeded\noutputs: {}\n", json(outputs)),
        Outcome::Failed(failure) => format!(
            "{}: {}\noutputs: {}\n",
            failure.class.as_str(),
            failure.message,
            json(&failure.outputs)
        ),
    };
    for line in logs {
        let stream = match line.stream {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        };
        writeln!(text, "{stream}| {}", line.text).unwrap();
    }
    text
}

fn json(outputs: &wayline_exec::Outputs) -> String {
    serde_json::Value::Object(outputs.clone()).to_string()
}
