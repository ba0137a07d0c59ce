//! The one place that writes to the standard streams and to the `--events` file, so that what
//! happens when a write fails is decided once.
//!
//! - Data goes to stdout through [`out!`] and [`outln!`], which return a `Result`: a reader
//!   that went away (`wayline events ID | head -1`) ends the command quietly
//!   ([`Error::closed`], exit 0); any other error (a full disk) is an infrastructure error that says what could
//!   not be written (exit 3).
//! - Messages for people go to stderr through [`say!`], which never fails: a terminal that hung
//!   up or a full disk is no reason to stop an execution, or to panic as `eprintln!` does.
//!
//! The crate denies `println!` and `eprintln!` (see `main.rs`), so nothing bypasses this.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use wayline_journal::{Event, cloudevents};

use crate::error::{Error, Result};

/// Writes data to stdout (see [`data`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::data(format_args!($($arg)*))
    };
}

/// Writes a line of data to stdout (see [`data`]).
macro_rules! outln {
    () => {
        $crate::output::data(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::data(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes a line for people to stderr; never fails (see [`message`]).
macro_rules! say {
    () => {
        $crate::output::message(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::message(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout and flushes, so that an error surfaces here and not unseen at exit.
pub fn data(text: fmt::Arguments<'_>) -> Result<()> {
    let mut stdout = io::stdout().lock();
    let text = text.to_string();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(|error| {
        if error.kind() == io::ErrorKind::BrokenPipe {
            Error::closed()
        } else {
            Error::infrastructure(format!("cannot write to standard output: {}", reason(&error)))
        }
    })
}

/// `Ok` when the error only says that stdout was closed: for a command whose exit code reports
/// something more important than its output (`run` reports how the execution ended).
pub fn unless_closed(result: Result<()>) -> Result<()> {
    match result {
        Err(error) if error.closed => Ok(()),
        other => other,
    }
}

/// Writes to stderr, dropping the text when stderr cannot take it. The text is formatted
/// first and written at once: stderr is unbuffered, and `write_fmt` would make a system call
/// for every piece of the format (a padded column is one write per space).
pub fn message(text: fmt::Arguments<'_>) {
    let text = match text.as_str() {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(text.to_string()),
    };
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Routes what the libraries report (`tracing` events: warnings such as "database unavailable;
/// retrying") to stderr as `wayline: …` lines. `WAYLINE_LOG=debug` shows more, `error` less;
/// the default is `info`.
pub fn install_log() {
    let level = match std::env::var("WAYLINE_LOG").as_deref() {
        Ok("error") => tracing::Level::ERROR,
        Ok("warn") => tracing::Level::WARN,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    // Fails only when a subscriber is already installed, and then that one reports.
    let _ = tracing::subscriber::set_global_default(Log { level });
}

/// Whether log lines are JSON objects (`wayline server --log-format json`) rather than text.
static JSON_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the log one JSON object per line: `time`, `level`, `target`, `message` and the
/// event's other fields, for log collectors.
pub fn log_as_json() {
    JSON_LOG.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A subscriber that prints each event on one line; spans are not used by wayline.
struct Log {
    level: tracing::Level,
}

impl tracing::Subscriber for Log {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= self.level
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        if JSON_LOG.load(std::sync::atomic::Ordering::Relaxed) {
            let metadata = event.metadata();
            let mut fields = Fields(serde_json::Map::new());
            event.record(&mut fields);
            let mut object = serde_json::Map::new();
            let now = wayline_runtime::clock::Clock::system().now();
            object.insert("time".into(), now.rfc3339().into());
            object.insert("level".into(), metadata.level().as_str().to_ascii_lowercase().into());
            object.insert("target".into(), metadata.target().into());
            object.extend(fields.0);
            message(format_args!("{}\n", serde_json::Value::Object(object)));
            return;
        }
        let mut line = Line(String::new());
        event.record(&mut line);
        message(format_args!("wayline: {}\n", escape(&line.0)));
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// The fields of an event as JSON values.
struct Fields(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}

/// The text of an event: its message, then any other fields as `name=value`.
struct Line(String);

impl tracing::field::Visit for Line {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

/// The operating system's reason, without the `(os error 28)` that `io::Error` appends.
pub fn reason(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

/// Text from a step (its output, an error message) made safe to show on a terminal: control
/// characters — C0 but tab, DEL, C1, and so every escape sequence — are shown as `\x1b`-style
/// escapes instead of moving the cursor, clearing the screen or drawing fake lines.
///
/// ```text
/// "\x1b[2J✓ done\r" is shown as `\x1b[2J✓ done\x0d`
/// ```
pub fn escape(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c != '\t' && c.is_control();
    if !text.contains(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            '\0'..='\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// `--events FILE`: every event as a CloudEvents JSON line, written as it is committed.
///
/// A write error is reported once and ends the writing, not the execution: the journal keeps
/// every event, and the command exits 3 at the end ([`EventsFile::failed`]).
pub struct EventsFile {
    path: PathBuf,
    /// `None` once a write failed.
    file: Option<std::fs::File>,
}

impl EventsFile {
    pub fn create(path: &Path) -> Result<EventsFile> {
        let file = std::fs::File::create(path).map_err(|error| {
            Error::invalid(format!("cannot write events to {}: {}", path.display(), reason(&error)))
        })?;
        Ok(EventsFile { path: path.to_owned(), file: Some(file) })
    }

    /// Appends one event; on the first error, returns the message to show.
    pub fn write(&mut self, id: &str, event: &Event) -> std::result::Result<(), String> {
        let Some(file) = &mut self.file else { return Ok(()) };
        // One write per line, so that a reader following the file never sees half an event.
        let mut line = cloudevents::to_json(id, event).to_string();
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(|error| {
            self.file = None;
            format!(
                "cannot write events to {}: {}; no more events are written there, the execution goes on (its journal has every event: `wayline events {id}`)",
                self.path.display(),
                reason(&error)
            )
        })
    }

    /// Whether a write failed.
    pub fn failed(&self) -> bool {
        self.file.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        assert_eq!(escape("plain\ttext ✓"), "plain\ttext ✓");
        assert_eq!(escape("\x1b[2J\x1b[1A✓ ok\r"), "\\x1b[2J\\x1b[1A✓ ok\\x0d");
        assert_eq!(escape("bell\x07 del\x7f csi\u{9b}31m"), "bell\\x07 del\\x7f csi\\u{9b}31m");
    }

    #[test]
    fn reasons_lose_the_error_number() {
        let error = io::Error::from_raw_os_error(28);
        assert_eq!(reason(&error), "No space left on device");
        assert_eq!(reason(&io::Error::other("plain")), "plain");
    }
}
