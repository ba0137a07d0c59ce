//! `wayline server` over HTTP loopback (docs/design.md §7), the real binary on SQLite, driven by
//! plain HTTP/1.1 keep-alive clients. Run with `cargo bench -p wayline --bench api`.
//!
//! - throughput of 1-step `set` executions submitted by 16 connections (target ≥ 3,000/s),
//!   counted when submitted and when finished;
//! - submission latency at 200 submissions/s, p50 and p99 (targets ≤ 2 ms and ≤ 10 ms): a
//!   201 comes back once the commit that creates the execution and starts its first step is
//!   durable, so this is submit-to-first-step;
//! - 1,000 concurrent 5-step chains, one step of which is `run: sleep 1`: the batch's time
//!   against its critical path (target ≤ 1.5× + 2 s), and the server's RSS;
//! - 10,000 executions parked on `wait`: the server's RSS per execution (target ≤ 4 KiB).
//!
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
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wayline"))
            .args(["server", "--listen", "127.0.0.1:0", "--local-slots", "1000", "--db"])
            .arg(dir.join("bench.db"))
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
        Server { child, address, token: token.trim().to_owned() }
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
    let server = Server::start(dir.path());
    println!("wayline server over HTTP loopback, SQLite; load average {}", load_average());
    let empty = server.rss_kib();

    // Throughput: 1-step set executions from 16 connections.
    let count = scaled(6000);
    let body = start_body("name: one\nsteps:\n  - id: x\n    set: { y: 1 }\n");
    let submitted = submit_all(&server, &body, count, 16);
    let finished = wait_for("the set executions", Duration::from_secs(120), || {
        server.metric(r#"wayline_executions_finished_total{workflow="one",status="succeeded"}"#)
            >= count as f64
    });
    println!(
        "  {count} one-step set executions, 16 connections: {:.0} submitted/s, {:.0} finished/s (target ≥ 3,000/s)",
        count as f64 / submitted.as_secs_f64(),
        count as f64 / (submitted + finished).as_secs_f64()
    );

    // Latency at 200 submissions/s: 4 connections, each 50/s on its own clock.
    let count = scaled(1000);
    let body = start_body("name: first\nsteps:\n  - id: x\n    run: \"true\"\n");
    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
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
                        out.push(sent.elapsed());
                    }
                    out
                })
            })
            .collect();
        lanes.into_iter().flat_map(|lane| lane.join().unwrap()).collect()
    });
    println!(
        "  submit to first step at 200/s ({} submissions): p50 {:.2} ms, p99 {:.2} ms (targets ≤ 2 ms, ≤ 10 ms)",
        latencies.len(),
        percentile(&mut latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&mut latencies, 0.99).as_secs_f64() * 1e3
    );

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
}
