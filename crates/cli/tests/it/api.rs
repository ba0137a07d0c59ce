//! `wayline server` through a real server process and real HTTP over loopback: starting,
//! listing, reading and steering executions, the event stream and its resumption, the problem
//! documents of bad requests, and a server killed with -9 whose executions a new one finishes.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::wayline_in;

/// A scratch directory and the SQLite database in it, for one test's servers.
pub(super) fn sandbox() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("api.db").display().to_string();
    (dir, db)
}

/// A `wayline server` on a free loopback port, killed when dropped; it derefs to a client.
pub(super) struct Server {
    child: Child,
    client: Client,
}

/// HTTP/1.1 over loopback, one connection per request, written out by hand so that the tests
/// control every byte (headers like `Last-Event-ID`, oversized bodies).
#[derive(Clone)]
pub(super) struct Client {
    pub(super) address: String,
    /// Sent as `Authorization: Bearer …` unless a request names its own.
    pub(super) token: Option<String>,
}

impl std::ops::Deref for Server {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Server {
    pub(super) fn start(dir: &Path, db: &str) -> Server {
        Server::start_with(dir, db, &[])
    }

    fn start_with(dir: &Path, db: &str, extra: &[&str]) -> Server {
        let mut args = vec!["server", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = wayline_in(dir, db, &args)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let address = loop {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "the server ended before listening");
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest.split_whitespace().next().unwrap();
                break url.split("://").nth(1).unwrap().to_owned();
            }
        };
        // Keep reading, so that the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = stderr.read_to_string(&mut sink);
        });
        // The first start made an admin token for the local user.
        let token = std::fs::read_to_string(dir.join("config/wayline/token")).unwrap();
        Server { child, client: Client { address, token: Some(token.trim().to_owned()) } }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Client {
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let own = headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        if let (Some(token), false) = (&self.token, own) {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        // A server may refuse before reading a large body; what it answers is what counts.
        let _ = stream.write_all(body);
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        Response::parse(&raw)
    }

    pub(super) fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    /// Opens a server-sent event stream at `path`; returns its status line and the reader of
    /// the rest, to read as it comes.
    fn open_stream(&self, path: &str) -> (String, BufReader<TcpStream>) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer {}\r\n\r\n",
            self.token.as_deref().unwrap_or_default()
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        (status, reader)
    }

    /// Starts an execution of `definition` and returns its id.
    fn start(&self, definition: &str) -> String {
        let started = self.post("/api/v1/executions", &json!({ "definition": definition }));
        assert_eq!(started.status, 201, "{started:?}");
        started.json()["id"].as_str().unwrap().to_owned()
    }

    /// `POST path` with a JSON body, expecting a 2xx JSON answer.
    pub(super) fn post_json(&self, path: &str, body: &Value) -> Value {
        let response = self.post(path, body);
        assert!((200..300).contains(&response.status), "{response:?}");
        response.json()
    }

    pub(super) fn post(&self, path: &str, body: &Value) -> Response {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub(super) struct Response {
    pub(super) status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn parse(raw: &[u8]) -> Response {
        let text = String::from_utf8_lossy(raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(name, value)| name == "transfer-encoding" && value.contains("chunked"));
        let body = if chunked { dechunk(body) } else { body.to_owned() };
        Response { status, headers, body }
    }

    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(key, _)| key == name).map_or("", |(_, value)| value)
    }

    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("{error}: {self:?}"))
    }

    /// The problem document of an error, checked to be one.
    fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("content-type"), "application/problem+json", "{self:?}");
        let problem = self.json();
        assert_eq!(problem["status"], status, "{problem}");
        for field in ["type", "title", "detail"] {
            assert!(
                problem[field].as_str().is_some_and(|text| !text.is_empty()),
                "{field}: {problem}"
            );
        }
        problem
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        // (A binary body, gzip, is not text: it is left as it is.)
        if size == 0 || rest.len() < size || !rest.is_char_boundary(size) {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The events of a server-sent event stream, as (id, CloudEvent), read until it ends.
fn sse_events(body: &str) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let mut id = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("id:") {
                id = value.trim().parse().ok();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim_start());
            }
        }
        if let (Some(id), false) = (id, data.is_empty()) {
            out.push((id, serde_json::from_str(&data).unwrap()));
        }
    }
    out
}

pub(super) fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(super) fn status_of(server: &Server, id: &str) -> String {
    server.get(&format!("/api/v1/executions/{id}")).json()["status"].as_str().unwrap().to_owned()
}

const CHAIN: &str = "name: chain\ninputs:\n  who: { type: string }\nsteps:\n  - id: a\n    run: echo \"hello ${{ inputs.who }}\"\n  - id: b\n    needs: [a]\n    run: sleep 0.2\n  - id: c\n    needs: [b]\n    set: { done: true }\n";

#[test]
fn an_execution_is_started_read_listed_and_streamed_over_http() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get("/readyz").status, 200);

    let started = server.post(
        "/api/v1/executions",
        &json!({ "definition": CHAIN, "inputs": { "who": "api; rm -rf /" } }),
    );
    assert_eq!(started.status, 201, "{started:?}");
    let id = started.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(started.header("location"), format!("/api/v1/executions/{id}"));

    // The stream delivers every event, numbered without gaps, and ends after the last.
    let stream = server.request(
        "GET",
        &format!("/api/v1/executions/{id}/events"),
        &[("Accept", "text/event-stream")],
        b"",
    );
    assert_eq!(stream.status, 200);
    assert!(stream.header("content-type").starts_with("text/event-stream"), "{stream:?}");
    let events = sse_events(&stream.body);
    let ids: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "{}", stream.body);
    assert_eq!(
        events.last().unwrap().1["type"],
        "io.serverlessworkflow.workflow.completed.v1",
        "{}",
        stream.body
    );
    for (seq, event) in &events {
        assert_eq!(event["id"], seq.to_string(), "{event}");
        assert_eq!(event["source"], format!("/executions/{id}"));
    }

    // A reconnection with Last-Event-ID gets exactly the events after it.
    let resumed = server.request(
        "GET",
        &format!("/api/v1/executions/{id}/events"),
        &[("Accept", "text/event-stream"), ("Last-Event-ID", "3")],
        b"",
    );
    let rest: Vec<(u64, Value)> = sse_events(&resumed.body);
    assert_eq!(rest, events[3..].to_vec());
    // Without the stream, the same events as a JSON array.
    let array = server.get(&format!("/api/v1/executions/{id}/events?after=3")).json();
    assert_eq!(
        array.as_array().unwrap(),
        &rest.iter().map(|(_, event)| event.clone()).collect::<Vec<_>>()
    );

    // The §3 result object, by full id or by a prefix.
    let report = server.get(&format!("/api/v1/executions/{}", &id[..10])).json();
    assert_eq!(report["id"], id.as_str());
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["steps"][2]["outputs"]["done"], true);

    // The input reached the step as data.
    let logs = server.get(&format!("/api/v1/executions/{id}/logs?step=a"));
    assert_eq!(logs.header("content-type"), "application/x-ndjson");
    let line: Value = serde_json::from_str(logs.body.lines().next().unwrap()).unwrap();
    assert_eq!(line["text"], "hello api; rm -rf /");
    assert_eq!(line["step"], "a");

    let listed = server.get("/api/v1/executions?status=succeeded&workflow=chain").json();
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert!(listed.get("next_cursor").is_none(), "{listed}");
}

#[test]
fn a_fan_out_over_http_reports_its_items_and_logs_each_items_lines() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let id = server.start(
        "name: fan\nsteps:\n  - id: each\n    for_each: [eu, us]\n    run: echo \"at ${{ item }}\"\n",
    );
    eventually("the fan-out to end", || status_of(&server, &id) == "succeeded");
    let report = server.get(&format!("/api/v1/executions/{id}")).json();
    let each = &report["steps"][0];
    assert_eq!(each["outputs"], json!([{ "exit_code": 0 }, { "exit_code": 0 }]));
    assert_eq!(each["items"][1]["item"], "us");
    assert_eq!(each["items"][1]["status"], "succeeded");
    let logs = server.get(&format!("/api/v1/executions/{id}/logs?step=each"));
    let mut lines: Vec<(u64, String)> = logs
        .body
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .map(|line| (line["item"].as_u64().unwrap(), line["text"].as_str().unwrap().to_owned()))
        .collect();
    lines.sort();
    assert_eq!(lines, [(0, "at eu".to_owned()), (1, "at us".to_owned())]);
}

#[test]
fn listings_are_paginated_newest_first_with_cursors() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let definition = "name: one\nsteps:\n  - id: x\n    set: { y: 1 }\n";
    let mut ids = Vec::new();
    for _ in 0..5 {
        let started = server.post("/api/v1/executions", &json!({ "definition": definition }));
        ids.push(started.json()["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut path = "/api/v1/executions?limit=2".to_owned();
    loop {
        let page = server.get(&path).json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        seen.extend(items.iter().map(|item| item["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/executions?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    server.get("/api/v1/executions?cursor=nonsense").problem(422);
    server.get("/api/v1/executions?limit=0").problem(422);
    server.get("/api/v1/executions?status=sleeping").problem(422);
}

#[test]
fn bad_requests_get_a_problem_document_and_change_nothing() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let start = |body: &[u8]| {
        server.request("POST", "/api/v1/executions", &[("Content-Type", "application/json")], body)
    };

    let malformed = start(b"{\"definition\": ").problem(400);
    assert!(malformed["detail"].as_str().unwrap().contains("line 1 column"), "{malformed}");
    let unknown = start(br#"{"definition": "name: x", "definitoin": 1}"#).problem(422);
    assert!(unknown["detail"].as_str().unwrap().contains("definitoin"), "{unknown}");
    let invalid = start(
        json!({ "definition": "name: x\nsteps:\n  - id: a\n    nedes: [b]\n    run: true\n" })
            .to_string()
            .as_bytes(),
    )
    .problem(422);
    let error = &invalid["errors"][0];
    assert_eq!((error["line"].as_u64(), error["column"].as_u64()), (Some(4), Some(5)), "{invalid}");
    assert_eq!(error["code"], "unknown-field");
    let inputs = start(
        json!({ "definition": CHAIN, "inputs": { "who": 3, "extra": 1 } }).to_string().as_bytes(),
    )
    .problem(422);
    assert!(inputs["errors"].as_array().unwrap().len() >= 2, "{inputs}");
    let large = start(&vec![b' '; 2 << 20]).problem(413);
    assert!(large["detail"].as_str().unwrap().contains("1048576"), "{large}");

    server.get("/api/v1/executions/0123456789abcdef").problem(404);
    server.post("/api/v1/executions/0123456789abcdef/cancel", &json!({})).problem(404);
    server.get("/api/v1/nothing-here").problem(404);
    server.request("DELETE", "/api/v1/executions", &[], b"").problem(405);

    // Nothing was started by any of them.
    assert_eq!(server.get("/api/v1/executions").json()["items"], json!([]));
}

#[test]
fn executions_are_paused_resumed_and_cancelled_and_refusals_say_why() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let definition = "name: slow\nsteps:\n  - id: a\n    run: sleep 0.3\n  - id: b\n    needs: [a]\n    run: sleep 30\n";
    let id = server.start(definition);
    let control = |action: &str, body: Value| {
        server.post(&format!("/api/v1/executions/{id}/{action}"), &body)
    };

    let paused = control("pause", json!({ "reason": "maintenance" }));
    assert_eq!(paused.status, 202, "{paused:?}");
    assert_eq!(paused.json()["applied"], true);
    assert_eq!(status_of(&server, &id), "paused");
    // Step a ends meanwhile; b does not start while paused.
    eventually("a to end while paused", || {
        server.get(&format!("/api/v1/executions/{id}")).json()["steps"][0]["status"] == "succeeded"
    });
    let report = server.get(&format!("/api/v1/executions/{id}")).json();
    assert_eq!(report["steps"][1]["status"], "pending", "{report}");
    assert_eq!(control("resume", json!({})).status, 202);
    let twice = control("resume", json!({})).problem(409);
    assert!(twice["detail"].as_str().unwrap().contains("is not paused"), "{twice}");
    eventually("b to run", || {
        server.get(&format!("/api/v1/executions/{id}")).json()["steps"][1]["status"] == "running"
    });
    let refused = server
        .post(&format!("/api/v1/executions/{id}/steps/b/decision"), &json!({ "action": "skip" }))
        .problem(409);
    assert!(refused["detail"].as_str().unwrap().contains("not escalated"), "{refused}");
    server
        .post(&format!("/api/v1/executions/{id}/steps/b/decision"), &json!({ "action": "maybe" }))
        .problem(422);
    server
        .post(&format!("/api/v1/executions/{id}/steps/zz/decision"), &json!({ "action": "retry" }))
        .problem(404);

    let cancelled = control("cancel", json!({ "reason": "enough" }));
    assert_eq!(cancelled.status, 202, "{cancelled:?}");
    eventually("the cancel to end the execution", || status_of(&server, &id) == "cancelled");
    let events = server.get(&format!("/api/v1/executions/{id}/events")).json();
    let paused_event = events
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["type"] == "io.serverlessworkflow.workflow.suspended.v1")
        .unwrap();
    assert_eq!(paused_event["data"]["actor"]["by"], "admin", "{paused_event}");
    assert_eq!(paused_event["data"]["actor"]["reason"], "maintenance");
    let late = control("resume", json!({})).problem(409);
    assert!(late["detail"].as_str().unwrap().contains("already finished"), "{late}");
}

#[test]
fn a_server_killed_with_9_leaves_executions_a_new_server_finishes() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let definition = "name: survive\nsteps:\n  - id: a\n    run: sleep 1\n    retry: { max_attempts: 2, delay: 0s }\n  - id: b\n    needs: [a]\n    set: { ok: true }\n";
    let ids: Vec<String> = (0..3).map(|_| server.start(definition)).collect();
    eventually("the first attempts to run", || {
        ids.iter().all(|id| {
            server.get(&format!("/api/v1/executions/{id}")).json()["steps"][0]["status"]
                == "running"
        })
    });
    server.kill();

    let again = Server::start(dir.path(), &db);
    for id in &ids {
        eventually("the execution to finish on the new server", || {
            status_of(&again, id) != "running"
        });
        let report = again.get(&format!("/api/v1/executions/{id}")).json();
        assert_eq!(report["status"], "succeeded", "{report}");
        assert_eq!(report["steps"][1]["outputs"]["ok"], true);
    }
}

#[test]
fn a_non_loopback_listen_is_refused_without_insecure_listen() {
    let (dir, db) = sandbox();
    let output =
        wayline_in(dir.path(), &db, &["server", "--listen", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--insecure-listen"));
}

#[test]
fn sigterm_closes_streams_releases_the_executions_and_exits_0() {
    let (dir, db) = sandbox();
    let mut server = Server::start(dir.path(), &db);
    let definition = "name: long\nsteps:\n  - id: a\n    run: sleep 2\n    retry: { max_attempts: 2, delay: 0s }\n";
    let id = server.start(definition);
    eventually("the attempt to run", || {
        server.get(&format!("/api/v1/executions/{id}")).json()["steps"][0]["status"] == "running"
    });
    // The stream is open (its status line came) before the signal.
    let (status, mut reader) = server.open_stream(&format!("/api/v1/executions/{id}/events"));
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // ... and has delivered its first event: the answer's head is sent before the stream is
    // first read, so a signal right after it could find nothing delivered yet.
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended before an event");
        seen.extend_from_slice(line.as_bytes());
        if line.starts_with("data:") {
            break;
        }
    }
    let watcher = std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        Response::parse(&[b"HTTP/1.1 200 OK\r\n".as_slice(), &seen, &rest].concat())
    });
    let stopped = Instant::now();
    #[allow(clippy::disallowed_methods)]
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(stopped.elapsed() < Duration::from_secs(10), "{:?}", stopped.elapsed());
    // The stream ended with the server, after the events it had.
    let stream = watcher.join().unwrap();
    assert!(!sse_events(&stream.body).is_empty(), "{stream:?}");

    // Nothing holds the execution any more: the next server continues it at once.
    let again = Server::start(dir.path(), &db);
    eventually("the execution to finish on the new server", || status_of(&again, &id) != "running");
    assert_eq!(status_of(&again, &id), "succeeded");
}

#[test]
fn an_idempotency_key_starts_one_execution_even_across_a_restart() {
    let (dir, db) = sandbox();
    let definition = "name: once\nsteps:\n  - id: x\n    set: { y: 1 }\n";
    let body = json!({ "definition": definition }).to_string();
    let start = |server: &Client, key: &str, body: &str| {
        server.request(
            "POST",
            "/api/v1/executions",
            &[("Content-Type", "application/json"), ("Idempotency-Key", key)],
            body.as_bytes(),
        )
    };
    let server = Server::start(dir.path(), &db);
    // Eight clients race with one key: one execution.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let (client, body) = (server.client.clone(), body.clone());
            std::thread::spawn(move || start(&client, "order-17", &body))
        })
        .collect();
    let answers: Vec<Response> = racers.into_iter().map(|racer| racer.join().unwrap()).collect();
    let ids: std::collections::BTreeSet<String> =
        answers.iter().map(|answer| answer.json()["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    let mut statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 201], "{answers:?}");
    let id = ids.into_iter().next().unwrap();
    server.kill();

    let again = Server::start(dir.path(), &db);
    let repeated = start(&again, "order-17", &body);
    assert_eq!(repeated.status, 200, "{repeated:?}");
    assert_eq!(repeated.json()["id"], id.as_str());
    // The same key for another request is a mistake, said as such.
    let other = json!({ "definition": definition.replace("y: 1", "y: 2") }).to_string();
    let problem = start(&again, "order-17", &other).problem(422);
    assert!(problem["detail"].as_str().unwrap().contains("different request"), "{problem}");
    start(&again, "", &body).problem(400);
    // Another key is another execution.
    assert_eq!(start(&again, "order-18", &body).status, 201);
    assert_eq!(again.get("/api/v1/executions").json()["items"].as_array().unwrap().len(), 2);
}

#[test]
fn tokens_decide_who_may_do_what_and_name_the_actor() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let mode = std::fs::metadata(dir.path().join("config/wayline/token")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    let token = |name: &str, role: &str, extra: &[&str]| {
        let mut args = vec!["token", "create", name, "--role", role];
        args.extend_from_slice(extra);
        let output = wayline_in(dir.path(), &db, &args).output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let as_token =
        |token: &str| Client { address: server.address.clone(), token: Some(token.to_owned()) };
    let reader = as_token(&token("dashboard", "read", &[]));
    let operator = as_token(&token("deployer", "operate", &[]));
    let brief = as_token(&token("brief", "operate", &["--expires", "1s"]));
    let anonymous = Client { address: server.address.clone(), token: None };

    let missing = anonymous.get("/api/v1/executions");
    missing.problem(401);
    assert_eq!(missing.header("www-authenticate"), "Bearer");
    // Health needs no token.
    assert_eq!(anonymous.get("/healthz").status, 200);
    // Made-up tokens, well-formed or not, are all refused alike.
    for n in 0..10_000u32 {
        let guess = match n % 4 {
            0 => format!("wl_{:024x}_{:064x}", n, n),
            1 => format!("wl_{}", "a".repeat(n as usize % 90)),
            2 => "Bearer".to_owned(),
            _ => format!("{n}"),
        };
        as_token(&guess).get("/api/v1/executions").problem(401);
    }

    let definition = "name: gated\nsteps:\n  - id: a\n    run: sleep 30\n";
    let start = json!({ "definition": definition });
    reader.post("/api/v1/executions", &start).problem(403);
    let started = operator.post("/api/v1/executions", &start);
    assert_eq!(started.status, 201, "{started:?}");
    let id = started.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(reader.get(&format!("/api/v1/executions/{id}")).status, 200);
    let forbidden =
        reader.post(&format!("/api/v1/executions/{id}/cancel"), &json!({})).problem(403);
    assert!(forbidden["detail"].as_str().unwrap().contains("dashboard"), "{forbidden}");

    eventually("the brief token to expire", || brief.get("/api/v1/executions").status == 401);
    brief.get("/api/v1/executions").problem(401);

    // The token's name is the actor of what it does.
    assert_eq!(operator.post(&format!("/api/v1/executions/{id}/cancel"), &json!({})).status, 202);
    eventually("the cancel", || status_of(&server, &id) == "cancelled");
    let events = operator.get(&format!("/api/v1/executions/{id}/events")).json();
    let stopping = events
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["type"] == "dev.wayline.workflow.stopping.v1")
        .unwrap();
    assert_eq!(stopping["data"]["actor"]["by"], "deployer", "{stopping}");

    // Revoked: refused from the next request on.
    let revoked = wayline_in(dir.path(), &db, &["token", "revoke", "deployer"]).output().unwrap();
    assert_eq!(revoked.status.code(), Some(0));
    operator.get("/api/v1/executions").problem(401);
    let again = wayline_in(dir.path(), &db, &["token", "revoke", "deployer"]).output().unwrap();
    assert_eq!(again.status.code(), Some(2));

    // Listed by name and role, never with the token itself.
    let listed = wayline_in(dir.path(), &db, &["token", "list", "--json"]).output().unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> =
        listed.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "brief", "dashboard"]);
    assert!(listed.as_array().unwrap().iter().all(|t| t.get("hash").is_none()), "{listed}");
}

#[test]
fn metrics_count_executions_attempts_and_requests() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let definition = "name: counted\nsteps:\n  - id: flaky\n    run: test \"$WAYLINE_ATTEMPT\" = 2\n    retry: { max_attempts: 2, delay: 0s }\n  - id: then\n    needs: [flaky]\n    set: { ok: true }\n";
    let id = server.start(definition);
    eventually("the execution to end", || status_of(&server, &id) == "succeeded");
    // Loopback needs no token for the metrics.
    let anonymous = Client { address: server.address.clone(), token: None };
    let line = |text: &str, name: &str| {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok())
    };
    let mut text = String::new();
    eventually("the metrics to show the end", || {
        let metrics = anonymous.get("/metrics");
        assert_eq!(metrics.status, 200, "{metrics:?}");
        text = metrics.body;
        line(&text, r#"wayline_executions_finished_total{workflow="counted",status="succeeded"}"#)
            == Some(1.0)
    });
    let expect = [
        (r#"wayline_executions_started_total{workflow="counted"}"#, 1.0),
        ("wayline_executions_running ", 0.0),
        (r#"wayline_attempts_total{status="failed",class="failure"}"#, 1.0),
        // flaky's second attempt, and the set step's one.
        (r#"wayline_attempts_total{status="succeeded",class=""}"#, 2.0),
        ("wayline_attempts_running ", 0.0),
        ("wayline_attempt_duration_seconds_count", 3.0),
        // The two command attempts each waited for a slot once (the set step has no process).
        ("wayline_attempt_queue_seconds_count", 2.0),
        (
            r#"wayline_http_requests_total{route="/api/v1/executions",method="POST",status="201"}"#,
            1.0,
        ),
    ];
    for (name, value) in expect {
        assert_eq!(line(&text, name), Some(value), "{name} in\n{text}");
    }
    assert!(line(&text, r#"wayline_http_requests_total{route="/api/v1/executions/{id}",method="GET",status="200"}"#).is_some_and(|n| n >= 1.0), "{text}");
    // Every event went through a group commit (the creation's too), each carrying at least one
    // execution.
    let commits = line(&text, "wayline_store_commit_seconds_count").unwrap_or(0.0);
    assert!(commits >= 1.0, "{text}");
    assert_eq!(line(&text, "wayline_store_commit_executions_count"), Some(commits), "{text}");
    let events = line(&text, "wayline_store_commit_events_sum").unwrap_or(0.0);
    let journal = server.get(&format!("/api/v1/executions/{id}/events")).json();
    assert_eq!(events, journal.as_array().unwrap().len() as f64, "{events} events in\n{text}");
}

#[test]
fn one_websocket_follows_many_executions_and_resumes_after_a_sequence_number() {
    use tungstenite::Message;
    use tungstenite::client::IntoClientRequest as _;

    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let definition = "name: ws\nsteps:\n  - id: a\n    run: sleep 0.2\n  - id: b\n    needs: [a]\n    set: { x: 1 }\n";
    let ids: Vec<String> = (0..3).map(|_| server.start(definition)).collect();

    let connect = |token: Option<&str>| {
        let mut request =
            format!("ws://{}/api/v1/ws", server.address).into_client_request().unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        }
        let stream = TcpStream::connect(&server.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tungstenite::client(request, stream)
    };
    assert!(connect(None).is_err(), "a socket without a token is refused");
    let (mut socket, _) = connect(server.token.as_deref()).unwrap();
    fn send(socket: &mut tungstenite::WebSocket<TcpStream>, value: Value) {
        socket.send(Message::text(value.to_string())).unwrap();
    }
    fn read(socket: &mut tungstenite::WebSocket<TcpStream>) -> Value {
        loop {
            if let Message::Text(text) = socket.read().unwrap() {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }
    for id in &ids {
        send(&mut socket, json!({ "subscribe": id }));
    }
    send(&mut socket, json!({ "subscribe": "nope" }));
    send(&mut socket, json!({ "bogus": 1 }));
    // Each execution's events arrive complete and in order, interleaved with the others'.
    let mut events: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    let (mut ended, mut acks, mut errors) = (0, 0, 0);
    while ended < ids.len() || errors < 2 {
        let message = read(&mut socket);
        if message.get("subscribed").is_some() {
            acks += 1;
        } else if message.get("error").is_some() {
            errors += 1;
        } else if message.get("ended").is_some() {
            ended += 1;
        } else {
            let execution =
                message["source"].as_str().unwrap().trim_start_matches("/executions/").to_owned();
            events
                .entry(execution)
                .or_default()
                .push(message["id"].as_str().unwrap().parse().unwrap());
        }
    }
    assert_eq!(acks, 3);
    for id in &ids {
        let seqs = &events[id];
        assert_eq!(seqs, &(1..=seqs.len() as u64).collect::<Vec<_>>(), "{id}");
        assert!(seqs.len() >= 6, "{seqs:?}");
    }
    // Subscribing again after a sequence number gets exactly the rest.
    let first = &ids[0];
    send(&mut socket, json!({ "subscribe": first, "after": 4 }));
    assert_eq!(read(&mut socket)["subscribed"], first.as_str());
    let mut rest = Vec::new();
    loop {
        let message = read(&mut socket);
        if message.get("ended").is_some() {
            break;
        }
        rest.push(message["id"].as_str().unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(rest, events[first][4..].to_vec());
    // Unsubscribing what is not subscribed says so.
    send(&mut socket, json!({ "unsubscribe": first }));
    assert!(read(&mut socket)["error"].as_str().unwrap().contains("not subscribed"));
}

#[test]
fn workflows_are_registered_in_versions_and_started_by_name() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let put = |client: &Client, name: &str, text: &str| {
        client.request(
            "PUT",
            &format!("/api/v1/workflows/{name}"),
            &[("Content-Type", "application/yaml")],
            text.as_bytes(),
        )
    };
    let v1 = "name: deploy\ninputs:\n  env: { type: string, default: dev }\nsteps:\n  - id: a\n    set: { where: \"${{ inputs.env }}\", version: 1 }\n";
    let v2 = v1.replace("version: 1", "version: 2");

    let created = put(&server, "deploy", v1);
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.json()["version"], 1);
    let unchanged = put(&server, "deploy", v1);
    assert_eq!((unchanged.status, unchanged.json()["version"].as_u64()), (200, Some(1)));
    let changed = put(&server, "deploy", &v2);
    assert_eq!((changed.status, changed.json()["version"].as_u64()), (201, Some(2)));

    let invalid =
        put(&server, "deploy", "name: deploy\nsteps:\n  - id: a\n    runn: true\n").problem(422);
    assert_eq!(
        (invalid["errors"][0]["line"].as_u64(), invalid["errors"][0]["column"].as_u64()),
        (Some(4), Some(5))
    );
    let renamed = put(&server, "other", v1).problem(422);
    assert!(renamed["detail"].as_str().unwrap().contains("named `deploy`"), "{renamed}");
    put(&server, "..%2Fetc", v1).problem(422);
    put(&server, ".hidden", v1).problem(422);
    // Registering is for admins.
    let operate = wayline_in(dir.path(), &db, &["token", "create", "ops", "--role", "operate"])
        .output()
        .unwrap();
    let operator = Client {
        address: server.address.clone(),
        token: Some(String::from_utf8(operate.stdout).unwrap().trim().to_owned()),
    };
    put(&operator, "deploy", v1).problem(403);

    let listed = operator.get("/api/v1/workflows").json();
    assert_eq!(
        listed["items"],
        json!([{ "name": "deploy", "version": 2, "created_at": listed["items"][0]["created_at"] }])
    );
    let first = operator.get("/api/v1/workflows/deploy?version=1").json();
    assert_eq!((first["source"].as_str(), &first["versions"]), (Some(v1), &json!([1, 2])));
    operator.get("/api/v1/workflows/deploy?version=7").problem(404);

    // Started by name: the newest version, or the one asked for, with inputs.
    let newest = operator
        .post("/api/v1/executions", &json!({ "workflow": "deploy", "inputs": { "env": "prod" } }));
    assert_eq!(newest.status, 201, "{newest:?}");
    assert_eq!(newest.json()["version"], 2);
    let pinned =
        operator.post("/api/v1/executions", &json!({ "workflow": "deploy", "version": 1 }));
    let (newest, pinned) = (
        newest.json()["id"].as_str().unwrap().to_owned(),
        pinned.json()["id"].as_str().unwrap().to_owned(),
    );
    for (id, version, env) in [(&newest, 2, "prod"), (&pinned, 1, "dev")] {
        eventually("the execution", || status_of(&server, id) == "succeeded");
        let report = server.get(&format!("/api/v1/executions/{id}")).json();
        assert_eq!(
            report["steps"][0]["outputs"],
            json!({ "where": env, "version": version }),
            "{report}"
        );
    }
    operator.post("/api/v1/executions", &json!({ "workflow": "nope" })).problem(404);
    operator
        .post("/api/v1/executions", &json!({ "workflow": "deploy", "definition": v1 }))
        .problem(422);
    operator
        .post("/api/v1/executions", &json!({ "workflow": "deploy", "inputs": { "env": 3 } }))
        .problem(422);

    // Deleting the workflow leaves its executions as they were.
    assert_eq!(server.request("DELETE", "/api/v1/workflows/deploy", &[], b"").status, 204);
    server.get("/api/v1/workflows/deploy").problem(404);
    server.request("DELETE", "/api/v1/workflows/deploy", &[], b"").problem(404);
    assert_eq!(status_of(&server, &pinned), "succeeded");
}

#[test]
fn the_lifecycle_stream_shows_every_execution_of_a_workflow_as_it_goes() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let (status, mut reader) = server.open_stream("/api/v1/events?workflow=watched");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut line = String::new();

    let watched = "name: watched\nsteps:\n  - id: a\n    set: { x: 1 }\n";
    let other = "name: other\nsteps:\n  - id: a\n    set: { x: 1 }\n";
    let mut ids = Vec::new();
    for definition in [watched, other, watched] {
        let started = server.post("/api/v1/executions", &json!({ "definition": definition }));
        ids.push(started.json()["id"].as_str().unwrap().to_owned());
    }
    let mut seen: Vec<(String, String)> = Vec::new();
    while seen.len() < 4 {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended early");
        // Chunked framing lines and blank lines are not data.
        if let Some(data) = line.trim_end().strip_prefix("data:") {
            let event: Value = serde_json::from_str(data.trim()).unwrap();
            let id =
                event["source"].as_str().unwrap().trim_start_matches("/executions/").to_owned();
            seen.push((id, event["type"].as_str().unwrap().to_owned()));
        }
    }
    let expected: Vec<(String, String)> = [&ids[0], &ids[2]]
        .into_iter()
        .flat_map(|id| {
            [
                (id.clone(), "dev.wayline.workflow.created.v1".to_owned()),
                (id.clone(), "io.serverlessworkflow.workflow.completed.v1".to_owned()),
            ]
        })
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn after_kill_9_of_a_server_running_50_executions_no_committed_step_runs_again() {
    let (dir, db) = sandbox();
    let runs = dir.path().join("runs.log");
    let definition = format!(
        "name: crash\ninputs:\n  tag: {{ type: string }}\nsteps:\n  - id: s1\n    run: echo \"${{{{ inputs.tag }}}} s1\" >> {runs}\n  - id: s2\n    needs: [s1]\n    run: echo \"${{{{ inputs.tag }}}} s2\" >> {runs}; sleep 1\n    retry: {{ max_attempts: 3, delay: 0s }}\n  - id: s3\n    needs: [s2]\n    run: echo \"${{{{ inputs.tag }}}} s3\" >> {runs}\n",
        runs = runs.display()
    );
    let server = Server::start(dir.path(), &db);
    let mut tags = std::collections::BTreeMap::new();
    for n in 0..50 {
        let tag = format!("t{n}");
        let started = server.post(
            "/api/v1/executions",
            &json!({ "definition": definition, "inputs": { "tag": tag } }),
        );
        assert_eq!(started.status, 201, "{started:?}");
        tags.insert(started.json()["id"].as_str().unwrap().to_owned(), tag);
    }
    // Kill once every execution is inside s2 (its s1 committed), some attempts in flight.
    eventually("every execution to reach s2", || {
        tags.keys().all(|id| {
            server.get(&format!("/api/v1/executions/{id}")).json()["steps"][1]["status"]
                == "running"
        })
    });
    server.kill();

    // What the journal says had succeeded when the server died.
    let mut committed = Vec::new();
    for (id, tag) in &tags {
        let output = wayline_in(dir.path(), &db, &["show", id, "--json"]).output().unwrap();
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        for step in report["steps"].as_array().unwrap() {
            if step["status"] == "succeeded" {
                committed.push(format!("{tag} {}", step["id"].as_str().unwrap()));
            }
        }
    }
    assert!(committed.len() >= 50, "the kill came too early to mean anything: {committed:?}");

    let again = Server::start(dir.path(), &db);
    for id in tags.keys() {
        eventually("every execution to finish", || status_of(&again, id) != "running");
        assert_eq!(status_of(&again, id), "succeeded", "{id}");
    }
    let log = std::fs::read_to_string(&runs).unwrap();
    for line in &committed {
        assert_eq!(
            log.lines().filter(|l| l == line).count(),
            1,
            "{line} ran again after its success was committed"
        );
    }
    // And every step of every execution ran.
    for tag in tags.values() {
        for step in ["s1", "s2", "s3"] {
            assert!(log.lines().any(|l| l == format!("{tag} {step}")), "{tag} {step} never ran");
        }
    }
}

#[test]
fn the_api_is_served_over_tls_with_the_given_certificate() {
    let (dir, db) = sandbox();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    #[allow(clippy::disallowed_methods)]
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"])
        // A server's certificate, not an authority's (rustls refuses a CA as the end entity).
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl makes a test certificate");
    assert!(made.status.success(), "{made:?}");
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());

    // A key that is not one is refused before anything listens.
    let refused = wayline_in(
        dir.path(),
        &db,
        &["server", "--listen", "127.0.0.1:0", "--tls-cert", &cert_arg, "--tls-key", &cert_arg],
    )
    .output()
    .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");

    let server =
        Server::start_with(dir.path(), &db, &["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    // Plain HTTP gets no answer from a TLS port.
    assert_ne!(server.get("/healthz").status, 200);

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&cert).unwrap();
    for der in
        <rustls::pki_types::CertificateDer<'_> as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &pem,
        )
    {
        roots.add(der.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(&server.address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let token = server.token.clone().unwrap();
    let request = format!(
        "GET /api/v1/executions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let response = Response::parse(&raw);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["items"], json!([]));

    // The CLI as a client: it trusts the certificate given with --ca-cert, and no other.
    let url = format!("https://{}", server.address);
    let cli = |extra: &[&str]| {
        let mut args = vec!["list", "--server", &url, "--token", &token];
        args.extend_from_slice(extra);
        let mut command = wayline_in(dir.path(), &db, &args);
        command.env_remove("WAYLINE_DB");
        command.output().unwrap()
    };
    let trusted = cli(&["--ca-cert", &cert_arg]);
    assert_eq!(trusted.status.code(), Some(0), "{trusted:?}");
    assert!(String::from_utf8_lossy(&trusted.stderr).contains("no executions in server"));
    let unknown = cli(&[]);
    assert_eq!(unknown.status.code(), Some(3), "{unknown:?}");
    let not_pem = cli(&["--ca-cert", &db]);
    assert_eq!(not_pem.status.code(), Some(2), "{not_pem:?}");
}

#[test]
fn with_log_format_json_every_line_the_server_writes_is_a_json_object() {
    let (dir, db) = sandbox();
    let mut child =
        wayline_in(dir.path(), &db, &["server", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    let mut address = None;
    while address.is_none() {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "ended early: {lines:?}");
        let object: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if let Some(rest) = object["message"].as_str().and_then(|m| m.split("http://").nth(1)) {
            address = Some(rest.split_whitespace().next().unwrap().to_owned());
        }
        lines.push(object);
    }
    assert!(
        lines.iter().all(|line| line["level"] == "info" && line["time"].is_string()),
        "{lines:?}"
    );
    // A request is logged with its route pattern, status and duration.
    let client = Client { address: address.unwrap(), token: None };
    assert_eq!(client.get("/healthz").status, 200);
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let logged: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (logged["route"].as_str(), logged["status"].as_u64()),
        (Some("/healthz"), Some(200)),
        "{logged}"
    );
    assert!(logged["ms"].as_f64().is_some(), "{logged}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends SIGTERM to the server and waits for its exit; returns how long that took.
fn terminate(server: &mut Server) -> Duration {
    let stopped = Instant::now();
    #[allow(clippy::disallowed_methods)]
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    stopped.elapsed()
}

#[test]
fn a_stopping_server_lets_running_attempts_end_starts_nothing_new_and_the_next_one_continues() {
    let (dir, db) = sandbox();
    let mut server = Server::start(dir.path(), &db);
    let definition = "name: drained\nsteps:\n  - id: a\n    run: sleep 1\n  - id: b\n    needs: [a]\n    set: { done: true }\n";
    let id = server.start(definition);
    eventually("a to run", || {
        server.get(&format!("/api/v1/executions/{id}")).json()["steps"][0]["status"] == "running"
    });
    let took = terminate(&mut server);
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(10), "{took:?}");

    // a ended during the drain and is recorded; b did not start.
    let output = wayline_in(dir.path(), &db, &["show", &id, "--json"]).output().unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["steps"][0]["status"], "succeeded", "{report}");
    assert_eq!(report["steps"][1]["status"], "pending", "{report}");
    assert_eq!(report["status"], "running");

    let again = Server::start(dir.path(), &db);
    eventually("the execution to finish on the next server", || {
        status_of(&again, &id) != "running"
    });
    let report = again.get(&format!("/api/v1/executions/{id}")).json();
    assert_eq!(report["status"], "succeeded", "{report}");
    assert_eq!(report["steps"][0]["attempts"], 1, "a ran once: {report}");
}

#[test]
fn an_attempt_longer_than_the_grace_is_cancelled_and_retried_by_the_next_server() {
    let (dir, db) = sandbox();
    let mut server = Server::start_with(dir.path(), &db, &["--grace", "300ms"]);
    let definition = "name: long\nsteps:\n  - id: a\n    run: test \"$WAYLINE_ATTEMPT\" = 2 || sleep 30\n    retry: { max_attempts: 2, delay: 0s }\n";
    let id = server.start(definition);
    eventually("a to run", || {
        server.get(&format!("/api/v1/executions/{id}")).json()["steps"][0]["status"] == "running"
    });
    let took = terminate(&mut server);
    assert!(took < Duration::from_secs(8), "the grace was not kept: {took:?}");
    let again = Server::start(dir.path(), &db);
    eventually("the execution to finish on the next server", || {
        status_of(&again, &id) != "running"
    });
    let report = again.get(&format!("/api/v1/executions/{id}")).json();
    assert_eq!(
        (report["status"].as_str(), report["steps"][0]["attempts"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{report}"
    );
}

#[test]
fn local_slots_cap_the_attempts_running_at_once() {
    let (dir, db) = sandbox();
    // On one thread (`--threads 1`), the attempts still run side by side.
    let server = Server::start_with(dir.path(), &db, &["--local-slots", "2", "--threads", "1"]);
    let trace = dir.path().join("trace.log");
    let mut definition = "name: slots\nsteps:\n".to_owned();
    for n in 0..6 {
        definition.push_str(&format!(
            "  - id: s{n}\n    run: echo + >> {t}; sleep 0.3; echo - >> {t}\n",
            t = trace.display()
        ));
    }
    let id = server.start(&definition);
    eventually("the execution", || status_of(&server, &id) == "succeeded");
    // The most processes that were inside their script at once.
    let (mut now, mut most) = (0i32, 0i32);
    for line in std::fs::read_to_string(&trace).unwrap().lines() {
        now += if line == "+" { 1 } else { -1 };
        most = most.max(now);
    }
    assert_eq!(most, 2, "{}", std::fs::read_to_string(&trace).unwrap());
    for flag in ["--local-slots", "--threads"] {
        let refused = wayline_in(dir.path(), &db, &["server", flag, "0"]).output().unwrap();
        assert_eq!(refused.status.code(), Some(2), "{flag} 0");
    }
}

#[test]
fn a_token_holds_at_most_64_live_streams() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let definition = "name: held\nsteps:\n  - id: a\n    wait: 1h\n";
    let id = server.start(definition);
    let open = || server.open_stream(&format!("/api/v1/executions/{id}/events"));
    let mut held = Vec::new();
    for _ in 0..64 {
        let (status, reader) = open();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        held.push(reader);
    }
    let (status, _) = open();
    assert!(status.starts_with("HTTP/1.1 429"), "{status}");
    // Closing one frees its place (the server notices at its next write: a keep-alive).
    drop(held.pop());
    let mut status = String::new();
    eventually("a freed stream slot", || {
        status = open().0;
        status.starts_with("HTTP/1.1 200")
    });
}

#[test]
fn the_frameworks_own_rejections_are_problem_documents_too() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    // A path segment that is not UTF-8, a query of the wrong type, an unknown query field.
    server.get("/api/v1/executions/%FF%FE").problem(400);
    server.get("/api/v1/executions?limit=many").problem(422);
    server.get("/api/v1/executions?colour=red").problem(422);
    server.get("/api/v1/ws").problem(400);
}

#[test]
fn the_committed_openapi_document_is_current() {
    let path = super::root().join("docs/openapi.json");
    let document = format!(
        "{}\n",
        serde_json::to_string_pretty(&wayline_server::openapi::document()).unwrap()
    );
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, &document).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == document,
        "docs/openapi.json is stale: run `UPDATE_EXPECT=1 cargo nextest run -p wayline openapi`"
    );
}

#[test]
fn the_server_answers_every_operation_of_its_openapi_document_and_serves_it() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let anonymous = Client { address: server.address.clone(), token: None };
    let served = anonymous.get("/api/v1/openapi.json");
    assert_eq!(served.status, 200, "{served:?}");
    assert_eq!(served.json(), wayline_server::openapi::document());
    let definition = "name: deploy\nsteps:\n  - id: a\n    set: { x: 1 }\n";
    let id = server.start(definition);
    for (method, path) in wayline_server::openapi::operation_list() {
        let path = path.replace("{id}", &id).replace("{step}", "a").replace("{name}", "deploy");
        let body: &[u8] = match (method, path.as_str()) {
            ("put", _) => definition.as_bytes(),
            ("post", "/api/v1/executions") => {
                br#"{"definition": "name: x\nsteps:\n  - id: a\n    set: { y: 1 }\n"}"#
            }
            ("post", p) if p.ends_with("/decision") => br#"{"action": "retry"}"#,
            ("post", _) => b"{}",
            _ => b"",
        };
        if path == "/api/v1/events" {
            // A live stream that never ends: its status line is the answer.
            let (status, _) = server.open_stream(&path);
            assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
            continue;
        }
        let answer = server.request(
            &method.to_ascii_uppercase(),
            &path,
            &[("Content-Type", "application/json")],
            body,
        );
        let unrouted =
            answer.status == 405 || (answer.status == 404 && answer.body.contains("no such route"));
        assert!(!unrouted, "{method} {path}: {answer:?}");
        assert!(answer.status < 500, "{method} {path}: {answer:?}");
    }
}

#[test]
fn answers_are_gzipped_for_clients_that_ask_and_event_streams_never_are() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let id = server.start("name: quick\nsteps:\n  - id: a\n    run: echo hi\n  - id: b\n    needs: [a]\n    set: { x: 1 }\n");
    eventually("the end", || status_of(&server, &id) == "succeeded");
    let gzip = [("Accept-Encoding", "gzip")];
    let report = server.request("GET", &format!("/api/v1/executions/{id}"), &gzip, b"");
    assert_eq!(report.status, 200, "{report:?}");
    assert_eq!(report.header("content-encoding"), "gzip", "{report:?}");
    let plain = server.get(&format!("/api/v1/executions/{id}"));
    assert_eq!(plain.header("content-encoding"), "", "{plain:?}");
    assert_eq!(plain.json()["id"], id.as_str());
    // The stream of a finished execution ends after its last event: read it whole.
    let stream = server.request(
        "GET",
        &format!("/api/v1/executions/{id}/events"),
        &[("Accept-Encoding", "gzip"), ("Accept", "text/event-stream")],
        b"",
    );
    assert_eq!(stream.header("content-encoding"), "", "{stream:?}");
    assert!(sse_events(&stream.body).len() > 5, "{stream:?}");
}

#[test]
fn rerun_breakpoint_patch_and_inspect_refuse_what_cannot_apply_with_a_problem_document() {
    let (dir, db) = sandbox();
    let server = Server::start(dir.path(), &db);
    let running = server.start("name: slow\nsteps:\n  - id: a\n    run: sleep 30\n  - id: b\n    needs: [a]\n    set: { x: 1 }\n");
    eventually("a to run", || {
        server.get(&format!("/api/v1/executions/{running}")).json()["steps"][0]["status"]
            == "running"
    });
    let path = |action: &str| format!("/api/v1/executions/{running}/{action}");
    let problem = server.post(&path("rerun"), &json!({})).problem(409);
    assert!(
        problem["detail"].as_str().unwrap().contains("only a finished execution can be rerun"),
        "{problem}"
    );
    let problem = server.post(&path("step"), &json!({})).problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("is not paused"), "{problem}");
    let problem =
        server.post(&path("patch"), &json!({ "step": "a", "outputs": { "x": 1 } })).problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("it must be paused"), "{problem}");
    server.post(&path("patch"), &json!({ "bogus": 1 })).problem(422);
    let problem = server.post(&path("pause"), &json!({ "before": ["a"] })).problem(409);
    assert!(problem["detail"].as_str().unwrap().contains("has already started"), "{problem}");
    server.post(&path("pause"), &json!({ "before": ["nope"] })).problem(404);
    server.post(&path("pause"), &json!({ "before": ["b"], "until": "5m" })).problem(422);
    server.get(&path("steps/nope/inspect")).problem(404);
    let inspected = server.get(&path("steps/a/inspect")).json();
    assert_eq!(inspected["command"]["script"], "sleep 30", "{inspected}");
    server.get(&format!("/api/v1/executions/{running}?at=0")).problem(422);
    server.get(&format!("/api/v1/executions/{running}?at=x")).problem(422);
    server.get(&format!("/api/v1/executions/{running}/events?step=nope")).problem(422);
    let unknown = json!({ "definition": "name: w\nsteps:\n  - id: a\n    set: { x: 1 }\n", "breakpoints": ["nope"] });
    server.post("/api/v1/executions", &unknown).problem(422);
    // Nothing of it reached the journal.
    let events = server.get(&format!("/api/v1/executions/{running}/events")).json();
    let kinds: Vec<&str> =
        events.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        !kinds.iter().any(|kind| kind.contains("patched")
            || kind.contains("breakpoint")
            || kind.contains("redriven")),
        "{kinds:?}"
    );
    assert_eq!(server.post(&path("cancel"), &json!({})).status, 202);
}
