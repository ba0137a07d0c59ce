//! `wayline` on PostgreSQL: a run steered from another process (LISTEN/NOTIFY), and a run that
//! survives its database connections being cut mid-run. Needs `WAYLINE_TEST_POSTGRES_URL`;
//! skipped with a message without it, unless `WAYLINE_REQUIRE_POSTGRES=1`.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The database for these tests, or `None` (with a message) when there is none.
fn database() -> Option<String> {
    match std::env::var("WAYLINE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("WAYLINE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "WAYLINE_REQUIRE_POSTGRES=1 but WAYLINE_TEST_POSTGRES_URL is not set"
            );
            eprintln!(
                "SKIPPED: set WAYLINE_TEST_POSTGRES_URL to run the PostgreSQL tests of the CLI"
            );
            None
        }
    }
}

/// A schema of its own for one test, dropped at the end.
struct Schema {
    url: String,
    name: String,
    dir: tempfile::TempDir,
}

impl Schema {
    fn new(url: String, test: &str) -> Schema {
        let name = format!("cli_{test}_{}", std::process::id());
        Schema { url, name, dir: tempfile::tempdir().expect("a temp dir") }
    }

    /// Its processes connect as `wayline_<schema>`, so that a test cutting connections cuts
    /// only its own, not those of the tests running beside it.
    fn db(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}schema={}&application_name=wayline_{}",
            self.url, self.name, self.name
        )
    }

    fn wayline(&self, args: &[&str]) -> Command {
        super::wayline_in(self.dir.path(), &self.db(), args)
    }

    fn sql(&self, statement: &str) {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async {
            let (client, connection) =
                tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.expect("connects");
            let driver = async move {
                let _ = connection.await;
            };
            let work = async move {
                client.batch_execute(statement).await.expect("the statement runs");
            };
            tokio::join!(driver, work);
        });
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        self.sql(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
    }
}

fn read_until(stderr: &mut BufReader<std::process::ChildStderr>, needle: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).expect("a line") > 0, "output ended before `{needle}`");
        if line.contains(needle) {
            return;
        }
    }
}

#[test]
fn a_run_on_postgres_is_paused_and_resumed_from_another_process() {
    let Some(url) = database() else { return };
    let schema = Schema::new(url, "steer");
    let flow = schema.dir.path().join("flow.yaml");
    std::fs::write(&flow, "name: pg\nsteps:\n  - id: one\n    run: sleep 1\n  - id: two\n    needs: [one]\n    run: echo two > two.txt\n").unwrap();
    let mut child = schema
        .wayline(&["run", flow.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    stderr.read_line(&mut first).expect("a line");
    let id = first.split_whitespace().nth(2).expect("an id").to_owned();
    read_until(&mut stderr, "one: running (attempt 1)");
    let started = Instant::now();
    let paused = schema.wayline(&["pause", &id]).output().expect("runs");
    assert!(paused.status.success(), "{}", String::from_utf8_lossy(&paused.stderr));
    assert!(started.elapsed() < Duration::from_secs(5), "the owner acted on the request promptly");
    read_until(&mut stderr, "one: succeeded");
    let show = schema.wayline(&["show", &id, "--json"]).output().expect("runs");
    let report: serde_json::Value = serde_json::from_slice(&show.stdout).expect("JSON");
    assert_eq!(report["status"], "paused");
    assert!(!schema.dir.path().join("two.txt").exists());
    let resumed = schema.wayline(&["resume", &id]).output().expect("runs");
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(child.wait().expect("ends").code(), Some(0));
    assert_eq!(std::fs::read_to_string(schema.dir.path().join("two.txt")).unwrap(), "two\n");
}

#[test]
fn a_run_survives_its_database_connections_being_cut() {
    let Some(url) = database() else { return };
    let schema = Schema::new(url, "cut");
    let flow = schema.dir.path().join("flow.yaml");
    std::fs::write(
        &flow,
        "name: pgcut\nsteps:\n  - id: a\n    run: sleep 0.3\n  - id: b\n    needs: [a]\n    run: sleep 0.3\n  - id: c\n    needs: [b]\n    run: echo c > c.txt\n",
    )
    .unwrap();
    let mut child = schema
        .wayline(&["run", flow.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    read_until(&mut stderr, "a: running (attempt 1)");
    // What a server restart does to its clients: every wayline connection is cut.
    schema.sql(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'wayline_{}' AND pid <> pg_backend_pid()", schema.name));
    let rest: Vec<String> = stderr.lines().map_while(Result::ok).collect();
    let status = child.wait().expect("ends");
    assert_eq!(status.code(), Some(0), "{}", rest.join("\n"));
    assert_eq!(std::fs::read_to_string(schema.dir.path().join("c.txt")).unwrap(), "c\n");
}

#[test]
fn bench_measures_postgres_too() {
    let Some(url) = database() else { return };
    let run = super::wayline(&[
        "bench",
        "--steps",
        "3",
        "--parallel",
        "4",
        "--rounds",
        "1",
        "--waiting",
        "0",
        "--json",
        "--postgres",
        &url,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let figures: serde_json::Value = serde_json::from_str(&run.stdout).expect("one JSON object");
    for figure in ["chain_ms", "set_chain_ms", "parallel_steps_per_second"] {
        let value = figures["postgres"][figure].as_f64();
        assert!(value.is_some_and(|value| value > 0.0), "{figure}: {figures:#}");
    }
}

#[test]
fn bench_refuses_a_postgres_url_that_is_not_one() {
    let run = super::wayline(&["bench", "--postgres", "sqlite:///tmp/x.db", "--rounds", "1"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--postgres takes a postgres:// URL"), "{}", run.stderr);
}
