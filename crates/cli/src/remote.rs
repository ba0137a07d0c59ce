//! The command line as a client of `wayline server` (`--server URL`, docs/design.md §7): the
//! same commands, output and exit codes as on a database, through the HTTP API.
//!
//! Nothing here knows the server's insides: requests go to the public `/api/v1` routes with a
//! bearer token, answers are the API's JSON, and an execution's events come back as the
//! CloudEvents the server streams, read into journal events (`cloudevents::from_json`) so that
//! the commands fold and print them exactly as they do from a database. A problem document
//! (RFC 7807) becomes the command's error: 4xx is the user's (exit 2), the rest is the
//! infrastructure's (exit 3).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wayline_core::execution::{Control, Execution};
use wayline_core::report::Report;
use wayline_journal::{Event, EventKind, cloudevents};
use wayline_runtime::Item;
use wayline_store::LogLine;

use crate::command::Db;
use crate::error::{Error, Exit, Result};
use crate::follow::Runner;

/// Where a command finds its executions: a database (`--db`, the default) or a server.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    #[command(flatten)]
    pub db: Db,
    /// Talk to the `wayline server` at this URL (http://127.0.0.1:8080) instead of a database.
    /// Also from WAYLINE_SERVER; a flag beats a variable.
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    server: Option<String>,
    /// The API token for --server (default: the one in $XDG_CONFIG_HOME/wayline/token, which
    /// a server's first start writes).
    #[arg(long, env = "WAYLINE_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM file of CA certificates to trust for an https:// --server, besides the system's
    /// (a server with its own certificate authority).
    #[arg(long, env = "WAYLINE_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

impl Target {
    /// The server to talk to, when one is named.
    ///
    /// Flags beat variables: `--server` or `--db` on the command line decide; without either,
    /// `WAYLINE_SERVER` names the server, and refuses to guess when `WAYLINE_DB` is set too.
    pub fn remote(&self) -> Result<Option<Remote>> {
        let variable = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let url = match (&self.server, self.db.flag()) {
            (Some(url), _) => url.clone(),
            (None, Some(_)) => return Ok(None),
            (None, None) => match (variable("WAYLINE_SERVER"), variable("WAYLINE_DB")) {
                (None, _) => return Ok(None),
                (Some(_), Some(_)) => {
                    return Err(Error::invalid(
                        "WAYLINE_SERVER and WAYLINE_DB are both set: give --server or --db to say which to use",
                    ));
                }
                (Some(url), None) => url,
            },
        };
        let url = &url;
        let token = match &self.token {
            Some(token) => token.trim().to_owned(),
            None => read_token_file()?,
        };
        Remote::connect(url, token, self.ca_cert.as_deref()).map(Some)
    }
}

fn read_token_file() -> Result<String> {
    let missing = "no API token for --server: give --token or WAYLINE_TOKEN (`wayline token create` makes one)";
    let path = crate::command::token::token_file().ok_or_else(|| Error::invalid(missing))?;
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => Err(Error::invalid(format!("{} is empty; {missing}", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::invalid(format!("{missing}; {} does not exist", path.display())))
        }
        Err(error) => Err(Error::invalid(format!(
            "cannot read {}: {}",
            path.display(),
            crate::output::reason(&error)
        ))),
    }
}

/// A `wayline server`, reached over HTTP(S). Clones share the connection pool.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The URL without a trailing slash.
    base: Arc<str>,
    token: Arc<str>,
    client: reqwest::Client,
}

/// How long one request may take, the event streams excepted (they are kept alive by the
/// server's comments, so a silence this long means the connection is gone).
const TIMEOUT: Duration = Duration::from_secs(30);
/// How long a watcher keeps trying to reach a server that went away before it gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

impl Remote {
    fn connect(url: &str, token: String, ca_cert: Option<&std::path::Path>) -> Result<Remote> {
        let base = url.trim_end_matches('/');
        let parsed = reqwest::Url::parse(base).map_err(|error| {
            Error::invalid(format!("--server {url}: not a URL ({error}); give http://HOST:PORT"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(Error::invalid(format!(
                "--server {url}: give an http:// or https:// URL with a host"
            )));
        }
        if token.is_empty() || token.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::invalid("the API token is empty or has spaces in it"));
        }
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls(ca_cert)?)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wayline/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(45))
            .build()
            .map_err(|error| {
                Error::infrastructure(format!("cannot build the HTTP client: {error}"))
            })?;
        Ok(Remote { base: base.into(), token: token.into(), client })
    }

    /// The server, as messages name it.
    pub fn describe(&self) -> String {
        format!("server {}", self.base)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; an answer other than 2xx becomes the error its problem document says.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let request = request.bearer_auth(&*self.token);
        let response = request.send().await.map_err(|error| self.unreachable(&error))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        Err(problem(status, &body))
    }

    /// A request that got no answer, said by its deepest cause (`Connection refused`), which
    /// is the one a person can act on.
    fn unreachable(&self, error: &reqwest::Error) -> Error {
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            reason = cause.to_string();
            source = cause.source();
        }
        let what = if error.is_timeout() { " (timed out)" } else { "" };
        Error::infrastructure(format!("cannot reach the {}{what}: {reason}", self.describe()))
    }

    fn decode(&self, path: &str, bytes: &[u8]) -> Result<Value> {
        serde_json::from_slice(bytes).map_err(|error| {
            let server = self.describe();
            Error::infrastructure(format!("the {server} answered {path} with bad JSON: {error}"))
        })
    }

    /// `GET path`, answered with JSON.
    pub async fn get(&self, path: &str) -> Result<Value> {
        let response = self.send(self.client.get(self.url(path)).timeout(TIMEOUT)).await?;
        let bytes = response.bytes().await.map_err(|error| self.unreachable(&error))?;
        self.decode(path, &bytes)
    }

    /// `POST path` with a JSON body, answered with JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let request = self
            .client
            .post(self.url(path))
            .timeout(TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let response = self.send(request).await?;
        let bytes = response.bytes().await.map_err(|error| self.unreachable(&error))?;
        self.decode(path, &bytes)
    }

    /// `PUT path` with a text body (a workflow file): the answer's status and JSON.
    pub async fn put(&self, path: &str, body: String) -> Result<(u16, Value)> {
        let request = self
            .client
            .put(self.url(path))
            .timeout(TIMEOUT)
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(body);
        let response = self.send(request).await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|error| self.unreachable(&error))?;
        let json = self.decode(path, &bytes)?;
        Ok((status, json))
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.client.delete(self.url(path)).timeout(TIMEOUT)).await.map(|_| ())
    }

    /// An execution's full state, the result object of `show --json` and `run --json`.
    pub async fn report(&self, id: &str) -> Result<Value> {
        self.get(&execution_path(id)?).await
    }

    /// An execution's events after `after`, read back into journal events; and its full id.
    pub async fn events(&self, id: &str, after: u64) -> Result<Vec<(String, Event)>> {
        let path = format!("{}/events?after={after}", execution_path(id)?);
        let Value::Array(items) = self.get(&path).await? else {
            return Err(Error::infrastructure(format!(
                "the {} did not answer {path} with a list",
                self.describe()
            )));
        };
        items.iter().map(|item| self.event(item)).collect()
    }

    fn event(&self, json: &Value) -> Result<(String, Event)> {
        cloudevents::from_json(json).map_err(|error| {
            Error::infrastructure(format!(
                "the {} sent an event this wayline cannot read ({error}); is it a newer version?",
                self.describe()
            ))
        })
    }

    /// Log lines after line `after`, oldest first (of one step when `step` is given).
    pub async fn logs(
        &self,
        id: &str,
        step: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>> {
        let mut path = format!("{}/logs?after={after}&limit={limit}", execution_path(id)?);
        if let Some(step) = step {
            path.push_str(&format!("&step={}", segment(step)));
        }
        let response = self.send(self.client.get(self.url(&path)).timeout(TIMEOUT)).await?;
        let text = response.text().await.map_err(|error| self.unreachable(&error))?;
        text.lines().filter(|line| !line.is_empty()).map(|line| self.log_line(id, line)).collect()
    }

    fn log_line(&self, id: &str, text: &str) -> Result<LogLine> {
        let bad = |what: &str| {
            Error::infrastructure(format!("the {} sent a log line {what}", self.describe()))
        };
        let json: Value = serde_json::from_str(text).map_err(|_| bad("that is not JSON"))?;
        let field = |name: &str| json.get(name).ok_or_else(|| bad(&format!("without `{name}`")));
        let string = |name: &str| -> Result<String> {
            Ok(field(name)?
                .as_str()
                .ok_or_else(|| bad(&format!("whose `{name}` is not text")))?
                .to_owned())
        };
        let number = |name: &str| -> Result<u64> {
            field(name)?.as_u64().ok_or_else(|| bad(&format!("whose `{name}` is not a number")))
        };
        Ok(LogLine {
            execution: id.to_owned(),
            line: number("line")?,
            step: string("step")?,
            item: match json.get("item") {
                None | Some(Value::Null) => None,
                Some(item) => Some(
                    item.as_u64()
                        .and_then(|item| u32::try_from(item).ok())
                        .ok_or_else(|| bad("whose `item` is not an item number"))?,
                ),
            },
            attempt: u32::try_from(number("attempt")?).map_err(|_| bad("with a huge attempt"))?,
            kind: serde_json::from_value(field("kind")?.clone())
                .map_err(|_| bad("of no known kind"))?,
            stream: string("stream")?,
            time: wayline_journal::Time::parse(&string("time")?)
                .map_err(|_| bad("with a bad time"))?,
            text: string("text")?,
        })
    }

    /// Follows an execution's events live from after `after`, reconnecting where it stopped
    /// when the connection drops.
    pub fn follow(&self, id: &str, after: u64) -> Result<EventStream> {
        Ok(EventStream {
            remote: self.clone(),
            path: format!("{}/events", execution_path(id)?),
            last: after,
            response: None,
            buffer: Vec::new(),
            finished: false,
            ended: false,
            lost_since: None,
        })
    }

    /// `POST …/{id}/{action}` of a control request: the execution's full id, and whether the
    /// journal already shows the request carried out.
    pub async fn steer(&self, id: &str, action: &str, body: &Value) -> Result<(String, bool)> {
        let answer = self.post(&format!("{}/{action}", execution_path(id)?), body).await?;
        let full = answer.get("id").and_then(Value::as_str).unwrap_or(id).to_owned();
        Ok((full, answer.get("applied").and_then(Value::as_bool).unwrap_or(false)))
    }
}

/// An execution run by a server, watched from here (`run --server`): its event stream, and in
/// pipe mode its log lines, polled and handed out before the events that end their attempts so
/// that they read in the order they were written.
pub struct Watcher {
    remote: Remote,
    id: String,
    stream: EventStream,
    /// Whether log lines are wanted (they are shown live only when stderr is not a terminal).
    logs: bool,
    after: u64,
    /// Ready to hand out.
    pending: std::collections::VecDeque<Item>,
    /// An event that ends an attempt, held back until the log has been read up to it.
    held: Option<Event>,
    /// The stream has ended: the log is read once more, then nothing follows.
    ended: bool,
    drained: bool,
}

/// How often the log is looked at while no event comes.
const LOG_POLL: Duration = Duration::from_millis(250);

impl Watcher {
    /// Log lines up to line `after` are history (a rerun's earlier run): not shown.
    pub fn with_logs_after(mut self, after: u64) -> Watcher {
        self.after = after;
        self
    }

    pub fn new(remote: Remote, id: &str, logs: bool) -> Result<Watcher> {
        let stream = remote.follow(id, 0)?;
        Ok(Watcher {
            remote,
            id: id.to_owned(),
            stream,
            logs,
            after: 0,
            pending: Default::default(),
            held: None,
            ended: false,
            drained: false,
        })
    }

    /// Takes the new log lines. A failure to read them is not the end of the watch: the event
    /// stream decides whether the server is gone.
    async fn poll_logs(&mut self) {
        if !self.logs {
            return;
        }
        while let Ok(lines) = self.remote.logs(&self.id, None, self.after, 10_000).await {
            let full = lines.len() == 10_000;
            for line in lines {
                self.after = line.line;
                self.pending.push_back(Item::Log(line));
            }
            if !full {
                break;
            }
        }
    }
}

impl Runner for Watcher {
    /// Cancel-safe (the watch loop drops it for every redraw): whatever has been taken from
    /// the server is in `pending` or `held` before the next await.
    async fn next(&mut self) -> Result<Option<Item>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(Some(item));
            }
            if self.held.is_some() || (self.ended && !self.drained) {
                self.poll_logs().await;
                if let Some(event) = self.held.take() {
                    self.pending.push_back(Item::Event(event));
                }
                self.drained = self.ended;
                continue;
            }
            if self.ended {
                return Ok(None);
            }
            tokio::select! {
                event = self.stream.next() => match event? {
                    None => self.ended = true,
                    Some(event) => {
                        let ends_attempt = matches!(
                            event.kind,
                            EventKind::AttemptSucceeded { .. }
                                | EventKind::AttemptFailed { .. }
                                | EventKind::AttemptCancelled { .. }
                                | EventKind::StepEscalated { .. }
                                | EventKind::Finished { .. }
                        );
                        if ends_attempt && self.logs {
                            self.held = Some(event);
                        } else {
                            self.pending.push_back(Item::Event(event));
                        }
                    }
                },
                () = tokio::time::sleep(LOG_POLL), if self.logs => self.poll_logs().await,
            }
        }
    }

    async fn control(&mut self, control: Control) -> Result<()> {
        crate::request::post_control(&self.remote, &self.id, &control).await.map(|_| ())
    }

    async fn report(&mut self, fold: Option<&Execution>) -> Result<Report> {
        match fold {
            Some(execution) => Ok(Report::new(execution)),
            None => Err(Error::infrastructure(format!(
                "the {} sent no event of execution {}",
                self.remote.describe(),
                self.id
            ))),
        }
    }

    async fn logs(&mut self, step: &str) -> Vec<String> {
        let lines = self.remote.logs(&self.id, Some(step), 0, 10_000).await;
        lines.unwrap_or_default().into_iter().map(|line| line.text).collect()
    }

    fn left_behind(&self) -> String {
        format!(
            "execution {} goes on at the {} (`wayline show --server {} {}`)",
            self.id,
            self.remote.describe(),
            self.remote.base,
            self.id
        )
    }
}

/// The client's TLS: rustls with the ring provider (the one TLS stack of the tree), verifying
/// against the platform's trust store plus the certificates of `--ca-cert`.
fn tls(ca_cert: Option<&std::path::Path>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::infrastructure(format!("cannot configure TLS: {error}")))?;
    let Some(path) = ca_cert else {
        use rustls_platform_verifier::BuilderVerifierExt as _;
        return Ok(builder
            .with_platform_verifier()
            .map_err(|error| Error::infrastructure(format!("cannot configure TLS: {error}")))?
            .with_no_client_auth());
    };
    let bad = |reason: String| Error::invalid(format!("--ca-cert {}: {reason}", path.display()));
    let roots = CertificateDer::pem_file_iter(path)
        .map_err(|error| bad(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| bad(error.to_string()))?;
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider)
        .map_err(|error| bad(error.to_string()))?;
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The error a problem document (or whatever else came with a failed answer) stands for.
fn problem(status: reqwest::StatusCode, body: &[u8]) -> Error {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |name: &str| json.get(name).and_then(Value::as_str);
    let mut message = match (text("detail"), text("title")) {
        (Some(detail), _) => detail.to_owned(),
        (None, Some(title)) => title.to_owned(),
        (None, None) => String::from_utf8_lossy(body).trim().chars().take(300).collect(),
    };
    for error in json.get("errors").and_then(Value::as_array).into_iter().flatten() {
        let at = match (
            error.get("line").and_then(Value::as_u64),
            error.get("column").and_then(Value::as_u64),
        ) {
            (Some(line), Some(column)) => format!("{line}:{column}: "),
            _ => String::new(),
        };
        let said = error.get("message").and_then(Value::as_str).unwrap_or_default();
        message.push_str(&format!("\n  {at}{said}"));
    }
    let message = match status.as_u16() {
        401 => format!(
            "the server refused the token ({message}); give a valid one with --token or WAYLINE_TOKEN"
        ),
        403 => format!("the token may not do this ({message})"),
        _ => message,
    };
    if status.is_client_error() {
        Error::invalid(message)
    } else {
        Error::infrastructure(format!("the server failed ({status}): {message}"))
    }
}

/// The API path of execution `id` (any unique prefix). Ids are letters and digits; anything
/// else names no execution, and is refused here rather than sent as a path of another meaning
/// (`..`).
pub fn execution_path(id: &str) -> Result<String> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::invalid(format!("no execution `{id}`")));
    }
    Ok(format!("/api/v1/executions/{id}"))
}

/// One path segment, percent-encoded: ids and step names are plain, but a user may type
/// anything.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An execution's live events from the server (`text/event-stream`), ending after the final
/// one. A dropped connection is taken up again with `Last-Event-ID`, so nothing is missed and
/// nothing is seen twice.
pub struct EventStream {
    remote: Remote,
    path: String,
    /// The sequence number of the last event given out.
    last: u64,
    response: Option<reqwest::Response>,
    buffer: Vec<u8>,
    /// The last event given out was a `finished` event: the stream ends when the server
    /// closes it next (unless a rerun's events follow).
    finished: bool,
    ended: bool,
    /// Since when the server has been out of reach, while it is.
    lost_since: Option<std::time::Instant>,
}

impl EventStream {
    /// The next event, or `None` once the execution has ended. Cancel-safe: a call dropped
    /// before it returns loses nothing.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        loop {
            if self.ended {
                return Ok(None);
            }
            while let Some(block) = take_block(&mut self.buffer) {
                let message = parse_message(&block);
                if message.name.as_deref() == Some("error") {
                    // The server could not read on; the connection ends and is taken up again.
                    continue;
                }
                let (Some(id), Some(data)) = (message.id, message.data) else { continue };
                let Ok(seq) = id.parse::<u64>() else { continue };
                if seq <= self.last {
                    continue;
                }
                let json: Value = serde_json::from_str(&data).map_err(|error| {
                    Error::infrastructure(format!(
                        "the server sent an event that is not JSON: {error}"
                    ))
                })?;
                let (_, event) = self.remote.event(&json)?;
                self.last = seq;
                self.finished = matches!(event.kind, EventKind::Finished { .. });
                return Ok(Some(event));
            }
            let chunk = match &mut self.response {
                Some(response) => response.chunk().await,
                None => match self.open().await {
                    Ok(response) => {
                        self.response = Some(response);
                        self.lost_since = None;
                        continue;
                    }
                    // Refused (unknown execution, bad token): no point in asking again.
                    Err(error) if error.exit == Exit::Invalid => return Err(error),
                    Err(error) => {
                        let since = *self.lost_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() > RECONNECT_FOR {
                            return Err(error);
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
            };
            match chunk {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                // The server closed the stream before the final event (it stopped, or it
                // dropped a reader that fell behind): take it up again where it stopped.
                Ok(None) | Err(_) if self.finished => {
                    self.ended = true;
                }
                Ok(None) | Err(_) => {
                    self.response = None;
                    self.buffer.clear();
                    self.lost_since.get_or_insert_with(std::time::Instant::now);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn open(&self) -> Result<reqwest::Response> {
        let request = self
            .remote
            .client
            .get(self.remote.url(&self.path))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header("Last-Event-ID", self.last.to_string());
        self.remote.send(request).await
    }
}

/// Takes one complete message (up to a blank line) off the front of `buffer`.
fn take_block(buffer: &mut Vec<u8>) -> Option<String> {
    let mut end = None;
    for i in 0..buffer.len() {
        if buffer[i] == b'\n' {
            if buffer.get(i + 1) == Some(&b'\n') {
                end = Some((i, i + 2));
                break;
            }
            if buffer.get(i + 1) == Some(&b'\r') && buffer.get(i + 2) == Some(&b'\n') {
                end = Some((i, i + 3));
                break;
            }
        }
    }
    let (stop, next) = end?;
    let block = String::from_utf8_lossy(&buffer[..stop]).into_owned();
    buffer.drain(..next);
    Some(block)
}

#[derive(Debug, Default, PartialEq)]
struct Message {
    id: Option<String>,
    name: Option<String>,
    data: Option<String>,
}

/// Reads one server-sent event message: `id:`, `event:` and `data:` fields (several data
/// lines join with newlines); comments (`:`) and other fields are skipped.
fn parse_message(block: &str) -> Message {
    let mut message = Message::default();
    for line in block.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => message.id = Some(value.to_owned()),
            "event" => message.name = Some(value.to_owned()),
            "data" => match &mut message.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => message.data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_at_blank_lines_and_read_field_by_field() {
        let mut buffer = b": keep-alive\n\nid: 7\ndata: {\"a\":\ndata: 1}\n\nid: 8\r\ndata: x\r\n\r\nid: 9\ndata: partial".to_vec();
        assert_eq!(parse_message(&take_block(&mut buffer).unwrap()), Message::default());
        let second = parse_message(&take_block(&mut buffer).unwrap());
        assert_eq!(second.id.as_deref(), Some("7"));
        assert_eq!(second.data.as_deref(), Some("{\"a\":\n1}"));
        let third = parse_message(&take_block(&mut buffer).unwrap());
        assert_eq!((third.id.as_deref(), third.data.as_deref()), (Some("8"), Some("x")));
        // The last message has not ended yet: it stays for the next chunk.
        assert_eq!(take_block(&mut buffer), None);
        assert_eq!(buffer, b"id: 9\ndata: partial");
        let error = parse_message("event: error\ndata: the store failed");
        assert_eq!(error.name.as_deref(), Some("error"));
    }

    #[test]
    fn a_problem_document_becomes_the_error_its_status_deserves() {
        let body = br#"{"type":"x","title":"Unprocessable","status":422,"detail":"the definition is invalid (1 errors)","errors":[{"code":"c","message":"unknown field `ruN`","line":3,"column":5}]}"#;
        let error = problem(reqwest::StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(error.exit, Exit::Invalid);
        assert_eq!(
            error.message,
            "the definition is invalid (1 errors)\n  3:5: unknown field `ruN`"
        );
        let error = problem(reqwest::StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(error.exit, Exit::Infrastructure);
        assert!(error.message.contains("upstream down"), "{}", error.message);
        let error = problem(reqwest::StatusCode::UNAUTHORIZED, br#"{"detail":"unknown token"}"#);
        assert!(error.message.contains("--token"), "{}", error.message);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("01JABC"), "01JABC");
        assert_eq!(segment("../a b"), "..%2Fa%20b");
    }
}
