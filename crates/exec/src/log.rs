//! A step's log: turning a process's stdout and stderr into masked, bounded lines as they
//! arrive, and handing them to whoever stores or streams them.

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use crate::Masker;

/// Which pipe a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error; the executor's own notes (log truncation) go here too.
    Stderr,
}

/// One line of a step's log, without its line terminator, secrets already masked.
///
/// A line longer than 16 KiB arrives as several `LogLine`s, so one runaway line cannot hold
/// the whole log in memory; invalid UTF-8 is replaced with `�`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The pipe it came from.
    pub stream: Stream,
    /// The text.
    pub text: String,
}

/// Where log lines go. A receiver that went away (nobody is watching) never disturbs the run:
/// lines are then dropped.
#[derive(Debug, Clone, Default)]
pub struct LogSink {
    sender: Option<mpsc::UnboundedSender<LogLine>>,
}

impl LogSink {
    /// A sink feeding this channel. It is unbounded because the executor must keep draining
    /// the pipes whatever the reader does; [`crate::Limits::log_bytes`] bounds what is sent.
    pub fn new(sender: mpsc::UnboundedSender<LogLine>) -> LogSink {
        LogSink { sender: Some(sender) }
    }

    /// A new channel and the sink that feeds it.
    pub fn channel() -> (LogSink, mpsc::UnboundedReceiver<LogLine>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (LogSink::new(sender), receiver)
    }

    /// A sink that drops every line.
    pub fn discard() -> LogSink {
        LogSink { sender: None }
    }

    fn send(&self, line: LogLine) {
        if let Some(sender) = &self.sender {
            // A closed receiver only means nobody listens any more; the step goes on.
            let _ = sender.send(line);
        }
    }
}

impl From<mpsc::UnboundedSender<LogLine>> for LogSink {
    fn from(sender: mpsc::UnboundedSender<LogLine>) -> LogSink {
        LogSink::new(sender)
    }
}

/// Longest line passed on whole; longer lines are cut into pieces of about this size.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// Room for a pipe's reads until it yields its first byte.
const FIRST_READ: usize = 512;
/// Room for each read after that.
const READ: usize = 8 * 1024;

/// A piece of a pipe's output: one line, or one piece of a line longer than [`MAX_LINE`].
#[derive(Debug)]
pub(crate) struct Chunk {
    /// The text without its line terminator.
    text: Vec<u8>,
    /// How many bytes it took from the pipe, terminator included (what the log budget counts).
    consumed: usize,
}

/// Splits one pipe into [`Chunk`]s.
pub(crate) struct Lines<R> {
    pipe: R,
    buffer: Vec<u8>,
    /// Whether any byte was read yet.
    yielded: bool,
    eof: bool,
    done: bool,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    pub(crate) fn new(pipe: R) -> Lines<R> {
        Lines { pipe, buffer: Vec::new(), yielded: false, eof: false, done: false }
    }

    /// Whether the pipe is closed and everything it held has been returned.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// The next chunk, or `None` once the pipe is closed and drained.
    ///
    /// Cancel-safe, so it can sit in a `select!` loop: the only await is a read into the
    /// internal buffer, which loses nothing when dropped before completing.
    pub(crate) async fn next(&mut self, masker: &Masker) -> Option<Chunk> {
        loop {
            if let Some(chunk) = self.take(masker) {
                return Some(chunk);
            }
            if self.eof {
                self.done = true;
                return None;
            }
            // Until the pipe yields something, a small buffer will do: many steps write
            // nothing, and a pipe that only reports its end then costs no large allocation.
            self.buffer.reserve(if self.yielded { READ } else { FIRST_READ });
            match self.pipe.read_buf(&mut self.buffer).await {
                Ok(0) => self.eof = true,
                Ok(_) => self.yielded = true,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                // A pipe that cannot be read any more is as good as closed.
                Err(_) => self.eof = true,
            }
        }
    }

    fn take(&mut self, masker: &Masker) -> Option<Chunk> {
        if self.buffer.is_empty() {
            return None;
        }
        let newline = self.buffer.iter().position(|&byte| byte == b'\n');
        if let Some(end) = newline
            && end <= MAX_LINE
        {
            return Some(self.split(end, end + 1));
        }
        // No complete line of acceptable length: the line so far ends at the newline (if one
        // is buffered) or at the end of the pipe; otherwise more may follow.
        let end = newline.unwrap_or(self.buffer.len());
        let complete = newline.is_some() || self.eof;
        if complete && end <= MAX_LINE {
            return Some(self.split(end, end));
        }
        // Wait for enough lookahead that a secret starting before the cut is seen whole.
        if !complete && self.buffer.len() < MAX_LINE + masker.longest() + 4 {
            return None;
        }
        let cut = masker.safe_cut(&self.buffer[..end], MAX_LINE);
        // The piece that reaches the newline takes it along, so no empty line follows.
        let consumed = if cut == end && newline.is_some() { end + 1 } else { cut };
        Some(self.split(cut, consumed))
    }

    fn split(&mut self, end: usize, consumed: usize) -> Chunk {
        let mut text: Vec<u8> = self.buffer.drain(..consumed).collect();
        text.truncate(end);
        if text.last() == Some(&b'\r') && consumed > end {
            text.pop();
        }
        Chunk { text, consumed }
    }
}

/// Masks chunks and passes them on until the log budget is spent, then counts what it drops.
pub(crate) struct Logger {
    sink: LogSink,
    masker: Masker,
    limit: u64,
    sent: u64,
    dropped: u64,
}

impl Logger {
    pub(crate) fn new(sink: LogSink, masker: Masker, limit: u64) -> Logger {
        Logger { sink, masker, limit, sent: 0, dropped: 0 }
    }

    pub(crate) fn write(&mut self, stream: Stream, chunk: Chunk) {
        let size = chunk.consumed as u64;
        // Once one chunk did not fit, later (smaller) ones are dropped too, so the log never
        // has holes in the middle.
        if self.dropped > 0 || self.sent + size > self.limit {
            self.dropped += size;
            return;
        }
        self.sent += size;
        let text = String::from_utf8_lossy(&chunk.text);
        let text = self.masker.mask(&text).into_owned();
        self.sink.send(LogLine { stream, text });
    }

    /// Sends the truncation note, if anything was dropped.
    pub(crate) fn finish(self) {
        if self.dropped > 0 {
            self.sink.send(LogLine {
                stream: Stream::Stderr,
                text: format!(
                    "[wayline] log truncated: {} bytes dropped (limit {} bytes)",
                    self.dropped, self.limit
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `input` as a pipe would deliver it and renders each chunk as `text|consumed`.
    fn chunks(input: &[u8], masker: &Masker) -> Vec<(String, usize)> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let mut lines = Lines::new(input);
            let mut out = Vec::new();
            while let Some(chunk) = lines.next(masker).await {
                out.push((String::from_utf8_lossy(&chunk.text).into_owned(), chunk.consumed));
            }
            assert!(lines.is_done());
            out
        })
    }

    #[test]
    fn splits_lines_and_keeps_the_last_partial_line() {
        let got = chunks(b"one\r\ntwo\n\nlast", &Masker::default());
        let expected = [("one", 5), ("two", 4), ("", 1), ("last", 4)];
        assert_eq!(got, expected.map(|(text, size)| (text.to_owned(), size)));
    }

    #[test]
    fn long_lines_are_cut_into_pieces() {
        let mut input = vec![b'x'; MAX_LINE * 2 + 10];
        input.extend_from_slice(b"\nnext\n");
        let got = chunks(&input, &Masker::default());
        let sizes: Vec<(usize, usize)> =
            got.iter().map(|(text, size)| (text.len(), *size)).collect();
        assert_eq!(sizes, [(MAX_LINE, MAX_LINE), (MAX_LINE, MAX_LINE), (10, 11), (4, 5)]);
    }

    #[test]
    fn a_cut_never_splits_a_secret() {
        let masker = Masker::new(["SECRET"]);
        let mut input = vec![b'x'; MAX_LINE - 3];
        input.extend_from_slice(b"SECRET");
        input.extend_from_slice(&vec![b'y'; MAX_LINE]);
        let got = chunks(&input, &masker);
        assert_eq!(got[0].0.len(), MAX_LINE + 3);
        assert!(got[0].0.ends_with("SECRET"));
        assert_eq!(got.iter().map(|(_, size)| size).sum::<usize>(), input.len());
    }

    #[test]
    fn logger_stops_at_the_budget_and_reports_what_it_dropped() {
        let (sink, mut receiver) = LogSink::channel();
        let mut logger = Logger::new(sink, Masker::new(["pw"]), 10);
        for text in ["pw=1", "abcd", "ef", "g"] {
            let chunk = Chunk { text: text.as_bytes().to_vec(), consumed: text.len() + 1 };
            logger.write(Stream::Stdout, chunk);
        }
        logger.finish();
        let mut got = Vec::new();
        while let Ok(line) = receiver.try_recv() {
            got.push(line.text);
        }
        assert_eq!(
            got,
            ["***=1", "abcd", "[wayline] log truncated: 5 bytes dropped (limit 10 bytes)"]
        );
    }

    #[test]
    fn a_closed_receiver_is_ignored() {
        let (sink, receiver) = LogSink::channel();
        drop(receiver);
        let mut logger = Logger::new(sink, Masker::default(), 100);
        logger.write(Stream::Stderr, Chunk { text: b"x".to_vec(), consumed: 2 });
        logger.finish();
    }
}
