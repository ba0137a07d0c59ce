//! Executors that perform a step attempt's side effect (a process, an HTTP call) and say how it
//! ended, in terms the scheduler can act on: succeeded with outputs, or failed with a class that
//! decides whether the attempt may be retried.
//!
//! This crate knows nothing about workflows, journals, stores or the scheduler. It receives fully
//! resolved requests (every `${{ }}` template already substituted by the caller), performs them
//! within the limits it is given, and returns an [`Outcome`]. It spawns no tasks: all concurrency
//! (reading pipes, watching timeouts and cancellation) happens inside the returned future, so the
//! caller's task owner stays the only place that spawns.
//!
//! Secrets are masked here, before anything leaves the executor: every log line, every output
//! string and every failure message passes through the request's [`Masker`].
//!
//! ```
//! use tokio_util::sync::CancellationToken;
//! use wayline_exec::{Command, LogSink, Outcome, Program, run_command};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let (logs, mut lines) = LogSink::channel();
//! let script = r#"echo hello; echo "greeting=hi" >> "$WAYLINE_OUTPUT""#;
//! let command = Command::new(Program::Shell(script.to_owned()));
//! match run_command(command, CancellationToken::new(), logs).await {
//!     Outcome::Succeeded { outputs } => {
//!         assert_eq!(outputs["greeting"], "hi");
//!         assert_eq!(outputs["exit_code"], 0);
//!     }
//!     Outcome::Failed(failure) => panic!("{}: {}", failure.class.as_str(), failure.message),
//! }
//! assert_eq!(lines.recv().await.unwrap().text, "hello");
//! # });
//! ```

// A library reports through `tracing` (or its return values); only the binary writes to the
// standard streams.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod command;
pub mod http;
mod log;
mod outputs;
mod scratch;

use std::time::Duration;

pub use command::{Command, Process, Program, run_command, stop_orphan};
pub use http::{Body, Header, Http, HttpClient, RetryAfter, run_http};
pub use log::{LogLine, LogSink, Stream};
pub use wayline_journal::Masker;

/// A step's outputs: the values later steps read as `steps.<id>.outputs.<key>`.
pub type Outputs = serde_json::Map<String, serde_json::Value>;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The side effect happened and was accepted (exit code 0, an expected HTTP status).
    Succeeded {
        /// Outputs, already masked.
        outputs: Outputs,
    },
    /// The attempt did not succeed; [`Failure::class`] says whether trying again can help.
    Failed(Failure),
}

/// Why an attempt did not succeed, and what it left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Decides whether the retry policy may run another attempt.
    pub class: FailureClass,
    /// One line a person can act on, e.g. `exited with code 3` or `timed out after 2s`.
    /// Secrets are already masked.
    pub message: String,
    /// Outputs gathered before the failure (for example `exit_code`, or an HTTP response's
    /// `status`, `headers` and `body`); empty when the attempt was stopped. Already masked.
    pub outputs: Outputs,
    /// A server's request to wait before the next attempt (`Retry-After` on 429 and 503).
    /// docs/design.md §2.3: the retry delay becomes `max(delay, retry_after)`.
    pub retry_after: Option<RetryAfter>,
}

/// The error classes of docs/design.md §2.3 that an executor can produce (`lost` is decided by the
/// runtime, which notices a dead owner; executors never see it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The side effect ran and reported failure: a non-zero exit, an unexpected HTTP status,
    /// a refused or reset connection, a DNS failure. Retried when the policy's `on` has `failure`.
    Failure,
    /// The attempt ran past its `timeout` and was stopped. Retried when `on` has `timeout`.
    Timeout,
    /// The caller cancelled the attempt (execution cancel, fail-fast). Never retried.
    Cancelled,
    /// The request itself is wrong and will be wrong again: a bad URL, method or header, a
    /// program that does not exist, an output file or response that is too large or invalid.
    /// Never retried.
    Fatal,
}

impl FailureClass {
    /// The lower-case name used in the workflow format and in events (`failure`, `timeout`,
    /// `cancelled`, `fatal`).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Failure => "failure",
            FailureClass::Timeout => "timeout",
            FailureClass::Cancelled => "cancelled",
            FailureClass::Fatal => "fatal",
        }
    }

    /// Whether another attempt could succeed at all. The retry policy's `on` list narrows this
    /// further; it can never widen it.
    pub fn is_retryable(self) -> bool {
        matches!(self, FailureClass::Failure | FailureClass::Timeout)
    }
}

/// Size limits that keep one attempt from exhausting memory or storage (docs/design.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Log bytes read from a process's stdout and stderr together (line terminators included)
    /// that are passed on; the rest is counted and reported in one final truncation line.
    pub log_bytes: u64,
    /// Largest output file (command) or response body (http) accepted; larger is `Fatal`.
    pub output_bytes: u64,
}

impl Limits {
    /// 1 MiB, the default for both limits.
    pub const DEFAULT_BYTES: u64 = 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits { log_bytes: Self::DEFAULT_BYTES, output_bytes: Self::DEFAULT_BYTES }
    }
}

impl Outcome {
    fn failed(class: FailureClass, message: impl Into<String>) -> Outcome {
        Outcome::Failed(Failure {
            class,
            message: message.into(),
            outputs: Outputs::new(),
            retry_after: None,
        })
    }

    /// Failure messages are built from requests and errors that may quote a secret (a URL with
    /// a token, an argument); masking them at the single exit point covers every path.
    fn masked(mut self, masker: &Masker) -> Outcome {
        if let Outcome::Failed(failure) = &mut self
            && let std::borrow::Cow::Owned(message) = masker.mask(&failure.message)
        {
            failure.message = message;
        }
        self
    }
}

/// Formats a duration in the workflow format's syntax (`250ms`, `2s`, `1m30s`), so messages
/// quote timeouts the way the user wrote them.
fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return if duration.is_zero() { "0s".to_owned() } else { format!("{duration:?}") };
    }
    let mut text = String::new();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis >= size {
            text.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    if millis > 0 {
        text.push_str(&format!("{millis}ms"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_workflow_format() {
        let cases = [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_secs(86_400 + 7_200), "1d2h"),
            (Duration::ZERO, "0s"),
            (Duration::from_micros(5), "5µs"),
        ];
        for (duration, expected) in cases {
            assert_eq!(format_duration(duration), expected);
        }
    }
}
