//! `wayline server` over HTTP loopback (docs/design.md §7), the real binary on SQLite, driven by
//! plain HTTP/1.1 keep-alive clients. Run with `cargo bench -p wayline --bench api`.
//!
//! - throughput of 1-step `set` executions submitted by 16 connections (target ≥ 3,000/s),
//!   counted when submitted and when finished;
//! - the same throughput and the latency below on a server with `--threads 1`, in the same
//!   run, against the default of a worker per core;
//! - submission latency at 200 submissions/s, p50 and p99 (targets ≤ 2 ms and ≤ 10 ms): a
//!   201 comes back once the commit that creates the execution and starts its first step is
//!   durable, so this is submit-to-first-step;
//! - 1,000 concurrent 5-step chains, one step of which is `run: sleep 1`: the batch's time
//!   against its critical path (target ≤ 1.5× + 2 s), and the server's RSS;
//! - 1,000 event-stream subscribers on 100 running executions (10 each): every subscriber
//!   gets every event of its execution, in order, none lost, none twice; the delivery time of
//!   the events from their time in the journal to their arrival, p50 and p99;
//! - 10,000 executions parked on `wait`: the server's RSS per execution (target ≤ 4 KiB).
//!
//! With `WAYLINE_TEST_POSTGRES_URL`, the throughput is measured on PostgreSQL too.
//! The server runs with `--local-slots 1000`. `WAYLINE_BENCH_SCALE=0.1` runs a tenth of every count, for a quick look.

#![allow(clippy::disallowed_methods)] // a benchmark starts its server and client threads

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

struct Server {
    child: Child,
    address: String,
    token: String,
    /// Its `--db`.
    db: String,
}

impl Server {
    fn start(dir: &Path, db: &str) -> Server {
        Server::start_with(dir, db, &[])
    }

    /// With more `wayline server` flags.
    fn start_with(dir: &Path, db: &str, flags: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wayline"))
            .args(["server", "--listen", "127.0.0.1:0", "--local-slots", "1000", "--db", db])
            .args(flags)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("WAYLINE_RETENTION", "off")
            .env("TMPDIR", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let address = loop {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "the server ended before listening");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = stderr.read_to_string(&mut sink);
        });
        let token = std::fs::read_to_string(dir.join("config/wayline/token")).unwrap();
        Server { child, address, token: token.trim().to_owned(), db: db.to_owned() }
    }

    fn connect(&self) -> Connection<'_> {
        let stream = TcpStream::connect(&self.address).unwrap();
        stream.set_nodelay(true).unwrap();
        Connection { reader: BufReader::new(stream.try_clone().unwrap()), stream, server: self }
    }

    /// The server's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    }

    /// A counter or gauge of `/metrics`, 0 when absent.
    fn metric(&self, name: &str) -> f64 {
        let text = self.connect().request("GET", "/metrics", None).1;
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Connection<'a> {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    server: &'a Server,
}

impl Connection<'_> {
    fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.server.address,
            self.server.token,
            body.len()
        );
        self.stream.write_all(format!("{head}{body}").as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn start_body(definition: &str) -> String {
    json!({ "definition": definition }).to_string()
}

/// Submits `count` executions of `body` over `connections` connections; returns the time.
fn submit_all(server: &Server, body: &str, count: usize, connections: usize) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for lane in 0..connections {
            let share = count / connections + usize::from(lane < count % connections);
            scope.spawn(move || {
                let mut connection = server.connect();
                for _ in 0..share {
                    let (status, answer) =
                        connection.request("POST", "/api/v1/executions", Some(body));
                    assert_eq!(status, 201, "{answer}");
                }
            });
        }
    });
    started.elapsed()
}

/// 1,000 subscribers of the event streams of 100 executions, which wait 3 s (while the
/// subscribers connect) and then run 20 short steps each.
fn subscribers(server: &Server) {
    let executions = scaled(100);
    let per_execution = 10;
    // A token holds at most 64 streams: the subscribers use 16 tokens (read role).
    let tokens: Vec<String> = (0..16)
        .map(|n| {
            let made = Command::new(env!("CARGO_BIN_EXE_wayline"))
                .args(["token", "create", &format!("reader{n}"), "--role", "read", "--db"])
                .arg(&server.db)
                .output()
                .expect("a token is made");
            assert!(made.status.success(), "{made:?}");
            String::from_utf8(made.stdout).unwrap().trim().to_owned()
        })
        .collect();
    let mut definition = String::from("name: watched\nsteps:\n  - id: gate\n    wait: 3s\n");
    for n in 0..20 {
        let needs = if n == 0 { "gate".to_owned() } else { format!("s{}", n - 1) };
        definition.push_str(&format!("  - id: s{n}\n    needs: [{needs}]\n    wait: 50ms\n"));
    }
    let body = start_body(&definition);
    let mut connection = server.connect();
    let ids: Vec<String> = (0..executions)
        .map(|_| {
            let (status, answer) = connection.request("POST", "/api/v1/executions", Some(&body));
            assert_eq!(status, 201, "{answer}");
            let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
            answer["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let started = Instant::now();
    let results: Vec<(Vec<u64>, Vec<Duration>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..executions * per_execution)
            .map(|n| {
                let id = &ids[n / per_execution];
                let token = &tokens[n % tokens.len()];
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, move || subscribe(&server.address, token, id))
                    .unwrap()
            })
            .collect();
        threads.into_iter().map(|thread| thread.join().unwrap()).collect()
    });
    let took = started.elapsed();
    // Every subscriber saw its execution's whole journal: 1, 2, 3, … up to its last event.
    let mut journal_lengths = std::collections::HashMap::new();
    for id in &ids {
        let (status, events) =
            connection.request("GET", &format!("/api/v1/executions/{id}/events"), None);
        assert_eq!(status, 200);
        let events: serde_json::Value = serde_json::from_str(&events).unwrap();
        journal_lengths.insert(id.clone(), events.as_array().unwrap().len() as u64);
    }
    let mut delays = Vec::new();
    for (n, (seqs, delivered)) in results.into_iter().enumerate() {
        let length = journal_lengths[&ids[n / per_execution]];
        let expected: Vec<u64> = (1..=length).collect();
        assert_eq!(seqs, expected, "subscriber {n}: every event, in order, once");
        delays.extend(delivered);
    }
    println!(
        "  {} subscribers on {executions} executions: every one got every event in order ({} deliveries in {:.1} s); delivery p50 {:.2} ms, p99 {:.2} ms",
        executions * per_execution,
        delays.len(),
        took.as_secs_f64(),
        percentile(&mut delays, 0.5).as_secs_f64() * 1e3,
        percentile(&mut delays, 0.99).as_secs_f64() * 1e3
    );
}

/// Follows one execution's event stream to its end: the sequence numbers seen, and for each
/// event committed after the subscription opened, how long after its time it arrived.
fn subscribe(address: &str, token: &str, id: &str) -> (Vec<u64>, Vec<Duration>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "GET /api/v1/executions/{id}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let opened = now_micros();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    // The body is chunked: gather the chunks, then cut them into messages.
    let mut text = String::new();
    let (mut seqs, mut delays) = (Vec::new(), Vec::new());
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).unwrap();
        let arrived = now_micros();
        text.push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            let id = message.lines().find_map(|l| l.strip_prefix("id: "));
            let data = message.lines().find_map(|l| l.strip_prefix("data: "));
            let (Some(id), Some(data)) = (id, data) else { continue };
            seqs.push(id.parse().unwrap());
            let event: serde_json::Value = serde_json::from_str(data).unwrap();
            let time = wayline_journal::Time::parse(event["time"].as_str().unwrap()).unwrap();
            if time.as_micros() > opened {
                delays.push(Duration::from_micros((arrived - time.as_micros()).max(0) as u64));
            }
        }
    }
    (seqs, delays)
}

fn now_micros() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    since.as_micros() as i64
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    values[((values.len() as f64 - 1.0) * p).round() as usize]
}

fn scaled(count: usize) -> usize {
    let scale: f64 =
        std::env::var("WAYLINE_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    ((count as f64 * scale) as usize).max(1)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter this target ignores.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &dir.path().join("bench.db").display().to_string());
    println!("wayline server over HTTP loopback, SQLite; load average {}", load_average());
    let empty = server.rss_kib();
    throughput(&server, "sqlite");

    latency(&server, "default threads");
    // The same on one thread (`--threads 1`), in the same run: the trade of latency against
    // spreading over the cores.
    {
        let one = tempfile::tempdir().unwrap();
        let db = one.path().join("bench.db").display().to_string();
        let server = Server::start_with(one.path(), &db, &["--threads", "1"]);
        throughput(&server, "sqlite, --threads 1");
        latency(&server, "--threads 1");
    }

    // 1,000 concurrent 5-step chains with one `sleep 1`.
    let count = scaled(1000);
    let body = start_body(
        "name: chains\nsteps:\n  - id: a\n    set: { x: 1 }\n  - id: b\n    needs: [a]\n    run: sleep 1\n  - id: c\n    needs: [b]\n    set: { x: 2 }\n  - id: d\n    needs: [c]\n    set: { x: 3 }\n  - id: e\n    needs: [d]\n    set: { x: 4 }\n",
    );
    let started = Instant::now();
    submit_all(&server, &body, count, 16);
    let mut peak = 0;
    wait_for("the chains", Duration::from_secs(300), || {
        peak = peak.max(server.rss_kib());
        server.metric(r#"wayline_executions_finished_total{workflow="chains",status="succeeded"}"#)
            >= count as f64
    });
    let took = started.elapsed();
    println!(
        "  {count} concurrent 5-step chains with `sleep 1`: {:.2} s, {:.2}x the 1 s critical path (target ≤ 1.5x + 2 s = 3.5 s); server RSS peak {} MiB",
        took.as_secs_f64(),
        took.as_secs_f64(),
        peak / 1024
    );

    subscribers(&server);

    // 10,000 executions parked on a wait.
    let count = scaled(10_000);
    let before = server.rss_kib();
    let body = start_body("name: parked\nsteps:\n  - id: w\n    wait: 1h\n");
    submit_all(&server, &body, count, 16);
    std::thread::sleep(Duration::from_millis(500));
    let after = server.rss_kib();
    println!(
        "  {count} executions parked on `wait`: RSS {} MiB (empty server {} MiB), {:.2} KiB per execution (target ≤ 4 KiB)",
        after / 1024,
        empty / 1024,
        (after.saturating_sub(before)) as f64 / count as f64
    );
    let running = server.metric("wayline_executions_running ");
    assert!(running >= count as f64, "{running} running");
    drop(server);

    // The same throughput on PostgreSQL, in a schema of its own.
    match std::env::var("WAYLINE_TEST_POSTGRES_URL") {
        Ok(url) => {
            let schema = format!("bench_api_{}", std::process::id());
            let join = if url.contains('?') { '&' } else { '?' };
            let postgres = tempfile::tempdir().unwrap();
            let server = Server::start(postgres.path(), &format!("{url}{join}schema={schema}"));
            throughput(&server, "postgres");
            drop(server);
            drop_schema(&url, &schema);
        }
        Err(_) => println!("  postgres skipped: set WAYLINE_TEST_POSTGRES_URL"),
    }
}

/// Submission latency at 200 submissions/s: 4 connections, each 50/s on its own clock.
fn latency(server: &Server, label: &str) {
    // At 200 submissions/s: 4 connections, each 50/s on its own clock.
    let count = scaled(1000);
    let body = start_body("name: first\nsteps:\n  - id: x\n    run: \"true\"\n");
    // Each submission is followed by a `GET /healthz` on the same connection: the round trip
    // of this machine's loopback, HTTP stack and scheduler, measured in the same run, is the
    // floor the submission latency stands on.
    let (mut latencies, mut floor): (Vec<Duration>, Vec<Duration>) = std::thread::scope(|scope| {
        let lanes: Vec<_> = (0..4)
            .map(|_| {
                let body = &body;
                let server = &server;
                scope.spawn(move || {
                    let mut connection = server.connect();
                    let mut out = Vec::new();
                    let origin = Instant::now();
                    for n in 0..count / 4 {
                        let due = origin + Duration::from_millis(20) * n as u32;
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let sent = Instant::now();
                        let (status, answer) =
                            connection.request("POST", "/api/v1/executions", Some(body));
                        assert_eq!(status, 201, "{answer}");
                        let submitted = sent.elapsed();
                        let asked = Instant::now();
                        let (status, _) = connection.request("GET", "/healthz", None);
                        assert_eq!(status, 200);
                        out.push((submitted, asked.elapsed()));
                    }
                    out
                })
            })
            .collect();
        lanes.into_iter().flat_map(|lane| lane.join().unwrap()).unzip()
    });
    let ms = |values: &mut [Duration], p| percentile(values, p).as_secs_f64() * 1e3;
    let (p50, p99) = (ms(&mut latencies, 0.5), ms(&mut latencies, 0.99));
    let (floor50, floor99) = (ms(&mut floor, 0.5), ms(&mut floor, 0.99));
    println!(
        "  {label}: submit to first step at 200/s ({} submissions): p50 {p50:.2} ms, p99 {p99:.2} ms (targets ≤ 2 ms, ≤ 10 ms); \
         a GET /healthz on the same connections: p50 {floor50:.2} ms, p99 {floor99:.2} ms, so \
         wayline's own share is p50 {:.2} ms",
        latencies.len(),
        p50 - floor50
    );
}

fn drop_schema(url: &str, schema: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await
        else {
            return;
        };
        let driver = tokio::spawn(connection);
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
        drop(client);
        let _ = driver.await;
    });
}

/// 1-step `set` executions submitted by 16 connections: per second submitted, and finished.
fn throughput(server: &Server, label: &str) {
    let count = scaled(6000);
    let body = start_body("name: one\nsteps:\n  - id: x\n    set: { y: 1 }\n");
    let submitted = submit_all(server, &body, count, 16);
    let finished = wait_for("the set executions", Duration::from_secs(120), || {
        server.metric(r#"wayline_executions_finished_total{workflow="one",status="succeeded"}"#)
            >= count as f64
    });
    println!(
        "  {label:<8} {count} one-step set executions, 16 connections: {:.0} submitted/s, {:.0} finished/s (target ≥ 3,000/s on SQLite)",
        count as f64 / submitted.as_secs_f64(),
        count as f64 / (submitted + finished).as_secs_f64()
    );
}
