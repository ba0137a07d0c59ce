//! `wayline run` end to end: real processes, a real local HTTP server, exit codes and the
//! result object as a script sees them.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use std::sync::Arc;

use serde_json::Value;

use crate::server::Server;

/// One finished `wayline run`.
struct Outcome {
    code: i32,
    report: Value,
    stderr: String,
}

/// A scratch directory with a workflow file written into it.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().expect("a temp dir") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write a file");
        path
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

#[allow(clippy::disallowed_methods)] // tests start the binary under test
fn command(workflow: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wayline"));
    command
        .arg("run")
        .arg(workflow)
        .args(["--ephemeral", "--json"])
        .args(args)
        .current_dir(workflow.parent().expect("a directory"))
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    command
}

fn run(workflow: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut command = command(workflow, args);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("wayline runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("--json prints one JSON object ({error}); stderr:\n{stderr}")
    });
    Outcome { code: output.status.code().expect("exited normally"), report, stderr }
}

fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id}"))
}

/// Whether a process id is still alive (not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z")
        }
        Err(_) => false,
    }
}

#[test]
fn retry_then_success() {
    let scratch = Scratch::new();
    let flow = scratch.write(
        "flow.yaml",
        r#"
name: flaky
steps:
  - id: flaky
    run: test "$WAYLINE_ATTEMPT" -ge 3 || exit 7
    retry: { max_attempts: 5, backoff: fixed, delay: 50ms }
"#,
    );
    let outcome = run(&flow, &[], &[]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(outcome.report["status"], "succeeded");
    assert_eq!(step(&outcome.report, "flaky")["attempts"], 3);
}

#[test]
fn retry_exhausted_fails_with_exit_code_1() {
    let scratch = Scratch::new();
    let flow = scratch.write(
        "flow.yaml",
        r#"
name: broken
steps:
  - id: broken
    run: echo "attempt $WAYLINE_ATTEMPT" >> attempts.txt; exit 3
    retry: { max_attempts: 3, delay: 10ms }
  - id: never
    needs: [broken]
    run: touch never.txt
"#,
    );
    let outcome = run(&flow, &[], &[]);
    assert_eq!(outcome.code, 1);
    assert_eq!(outcome.report["status"], "failed");
    let broken = step(&outcome.report, "broken");
    assert_eq!(broken["attempts"], 3);
    assert_eq!(broken["error"]["message"], "exited with code 3");
    assert_eq!(step(&outcome.report, "never")["status"], "skipped");
    assert_eq!(scratch.read("attempts.txt"), "attempt 1\nattempt 2\nattempt 3\n");
    assert!(!scratch.path("never.txt").exists());
}

#[test]
fn a_timeout_kills_the_whole_process_tree() {
    let scratch = Scratch::new();
    let flow = scratch.write(
        "flow.yaml",
        r#"
name: slow
steps:
  - id: slow
    run: sleep 60 & echo $! > grandchild.pid; echo $$ > child.pid; wait
    timeout: 500ms
"#,
    );
    let started = std::time::Instant::now();
    let outcome = run(&flow, &[], &[]);
    assert!(started.elapsed() < Duration::from_secs(20), "the timeout stopped the step");
    assert_eq!(outcome.code, 1);
    let slow = step(&outcome.report, "slow");
    assert_eq!(slow["status"], "failed");
    assert_eq!(slow["error"]["class"], "timeout");
    for file in ["child.pid", "grandchild.pid"] {
        let pid: u32 = scratch.read(file).trim().parse().expect("a pid");
        assert!(!alive(pid), "{file} ({pid}) is still running");
    }
}

#[test]
fn ctrl_c_cancels_and_stops_running_steps() {
    let scratch = Scratch::new();
    let flow = scratch.write(
        "flow.yaml",
        r#"
name: long
steps:
  - id: long
    run: echo $$ > long.pid; sleep 60
  - id: after
    needs: [long]
    run: touch after.txt
"#,
    );
    let mut child = command(&flow, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wayline starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // Wait until the step is running (a plain line per event on a pipe).
    for line in lines.by_ref() {
        if line.expect("a line").contains("long: running (attempt 1)") {
            break;
        }
    }
    while scratch.read("long.pid").trim().is_empty() {
        std::thread::yield_now();
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).expect("a pid"),
        rustix::process::Signal::INT,
    )
    .expect("SIGINT");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let output = child.wait_with_output().expect("wayline ends");
    let report: Value = serde_json::from_slice(&output.stdout).expect("a report");
    assert_eq!(output.status.code(), Some(1), "{}", rest.join("\n"));
    assert_eq!(report["status"], "cancelled");
    assert_eq!(step(&report, "long")["status"], "cancelled");
    assert_eq!(step(&report, "after")["status"], "cancelled");
    let pid: u32 = scratch.read("long.pid").trim().parse().expect("a pid");
    assert!(!alive(pid), "the step's process was killed");
    assert!(!scratch.path("after.txt").exists());
}

#[test]
fn outputs_flow_into_commands_env_and_shell_quoting_defeats_injection() {
    let scratch = Scratch::new();
    let flow = scratch.write(
        "flow.yaml",
        r#"
name: flow
inputs:
  name: { type: string, required: true }
steps:
  - id: produce
    run: |
      echo "greeting=hello" >> "$WAYLINE_OUTPUT"
      echo "count=3" >> "$WAYLINE_OUTPUT"
  - id: compute
    needs: [produce]
    set: { text: "${{ steps.produce.outputs.greeting }} ${{ inputs.name }}", twice: "${{ int(steps.produce.outputs.count) * 2 }}" }
  - id: consume
    needs: [compute]
    env: { TWICE: "${{ steps.compute.outputs.twice }}" }
    run: |
      printf '%s|%s|%s\n' ${{ steps.compute.outputs.text }} "$TWICE" "in quotes: ${{ inputs.name }}" > result.txt
  - id: argv
    needs: [compute]
    run: [sh, -c, 'printf "%s" "$1" > argv.txt', sh, "${{ inputs.name }}"]
"#,
    );
    let evil = r#"x"; touch pwned1; echo '$(touch pwned2)' `touch pwned3`"#;
    let outcome = run(&flow, &["-i", &format!("name={evil}")], &[]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(step(&outcome.report, "compute")["outputs"]["twice"], 6);
    assert_eq!(scratch.read("result.txt"), format!("hello {evil}|6|in quotes: {evil}\n"));
    assert_eq!(scratch.read("argv.txt"), evil);
    for file in ["pwned1", "pwned2", "pwned3"] {
        assert!(!scratch.path(file).exists(), "the input ran as shell code ({file})");
    }
}

#[test]
fn secrets_are_masked_in_logs_outputs_and_events() {
    let scratch = Scratch::new();
    let flow = scratch.write(
        "flow.yaml",
        r#"
name: secret
steps:
  - id: leak
    run: echo "token is ${{ secrets.TOKEN }}"; echo "copy=${{ secrets.TOKEN }}" >> "$WAYLINE_OUTPUT"
  - id: derived
    needs: [leak]
    set: { header: "Bearer ${{ secrets.TOKEN }}" }
"#,
    );
    let events = scratch.path("events.jsonl");
    let outcome = run(
        &flow,
        &["--events", events.to_str().unwrap()],
        &[("WAYLINE_SECRET_TOKEN", "s3cr3t-value")],
    );
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(step(&outcome.report, "leak")["outputs"]["copy"], "***");
    assert_eq!(step(&outcome.report, "derived")["outputs"]["header"], "Bearer ***");
    assert!(outcome.stderr.contains("token is ***"), "{}", outcome.stderr);
    let everything =
        format!("{}{}{}", outcome.report, outcome.stderr, scratch.read("events.jsonl"));
    assert!(!everything.contains("s3cr3t-value"), "the secret leaked");

    // A missing secret stops the run before anything starts.
    let output = command(&flow, &[]).env_remove("WAYLINE_SECRET_TOKEN").output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("TOKEN"));
}

#[test]
fn invalid_inputs_exit_2() {
    let scratch = Scratch::new();
    let flow = scratch.write("flow.yaml", "name: w\ninputs:\n  n: { type: integer, required: true }\nsteps:\n  - id: a\n    run: 'true'\n");
    let output = command(&flow, &["-i", "n=three"]).output().expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("input `n` must be an integer, got `three`")
    );
}

#[test]
fn http_retries_honour_retry_after_and_expect() {
    let server = Server::start(vec![
        (503, vec![("retry-after", "1")], "busy"),
        (200, vec![("content-type", "application/json")], r#"{"id": 42}"#),
    ]);
    let scratch = Scratch::new();
    let flow = scratch.write(
        "flow.yaml",
        r#"
name: api
inputs:
  url: { type: string, required: true }
steps:
  - id: make
    set: { payload: { name: widget, size: 3 } }
  - id: call
    needs: [make]
    http:
      method: POST
      url: "${{ inputs.url + '/things' }}"
      query: { dry: "no" }
      body: "${{ steps.make.outputs.payload }}"
      expect: { status: [200, 201] }
    retry: { max_attempts: 3, delay: 10ms }
  - id: use
    needs: [call]
    run: echo "id=${{ steps.call.outputs.body.id }}" > id.txt
"#,
    );
    let events = scratch.path("events.jsonl");
    let outcome = run(
        &flow,
        &["-i", &format!("url={}", server.url), "--events", events.to_str().unwrap()],
        &[],
    );
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let call = step(&outcome.report, "call");
    assert_eq!(call["attempts"], 2);
    assert_eq!(call["outputs"]["status"], 200);
    assert_eq!(scratch.read("id.txt"), "id=42\n");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].uri, "/things?dry=no");
    assert_eq!(requests[0].body, r#"{"name":"widget","size":3}"#);
    assert_eq!(
        requests[0].header("idempotency-key"),
        requests[1].header("idempotency-key"),
        "every attempt carries the same idempotency key"
    );
    assert!(!requests[0].header("idempotency-key").is_empty());
    let retried = scratch
        .read("events.jsonl")
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON lines"))
        .find(|event| event["type"] == "io.serverlessworkflow.task.retried.v1")
        .expect("a task.retried event");
    assert!(
        retried["data"]["delay_ms"].as_u64().unwrap() >= 1000,
        "Retry-After: 1 lengthened the 10ms delay: {retried}"
    );

    // A status outside `expect` is a failure.
    let server = Server::start(vec![(404, vec![], "nope")]);
    let outcome = run(&flow, &["-i", &format!("url={}", server.url)], &[]);
    assert_eq!(outcome.code, 1);
    let call = step(&outcome.report, "call");
    assert_eq!(call["error"]["message"], "unexpected status 404 (expected 200, 201)");
    assert_eq!(call["attempts"], 3);
}

#[test]
fn a_hostile_input_cannot_change_the_path_or_the_host() {
    let server = Server::start(vec![(200, vec![], "ok")]);
    let scratch = Scratch::new();
    let flow = scratch.write(
        "flow.yaml",
        r#"
name: items
inputs:
  host: { type: string, default: "127.0.0.1" }
  port: { type: integer }
  id: { type: string }
steps:
  - id: get
    http:
      url: "http://${{ inputs.host }}:${{ inputs.port }}/v1/items/${{ inputs.id }}?q=${{ inputs.id }}"
    retry: { max_attempts: 3, delay: 10ms }
"#,
    );
    let port = format!("port={}", server.port());
    let outcome = run(&flow, &["-i", &port, "-i", "id=../../admin?x=1#"], &[]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].uri, "/v1/items/..%2F..%2Fadmin%3Fx%3D1%23?q=..%2F..%2Fadmin%3Fx%3D1%23",
        "the value is one path segment and one query value"
    );
    let call = step(&outcome.report, "get");
    assert!(
        call["outputs"]["url"]
            .as_str()
            .unwrap()
            .ends_with("/v1/items/..%2F..%2Fadmin%3Fx%3D1%23?q=..%2F..%2Fadmin%3Fx%3D1%23")
    );

    // A host with a path, a user or a port of its own is refused before anything is sent,
    // and not retried.
    for host in ["evil.example/x?", "evil.example@127.0.0.1", "127.0.0.1:1"] {
        let outcome = run(&flow, &["-i", &format!("host={host}"), "-i", &port, "-i", "id=1"], &[]);
        assert_eq!(outcome.code, 1, "{}", outcome.stderr);
        let call = step(&outcome.report, "get");
        assert_eq!(call["attempts"], 1, "a fatal error is not retried");
        assert_eq!(call["error"]["class"], "fatal");
        let message = call["error"]["message"].as_str().unwrap();
        assert!(message.contains("`${{ inputs.host }}` is in the scheme or host"), "{message}");
        assert!(!message.contains("evil"), "the value is not quoted: {message}");
    }
    assert_eq!(server.requests().len(), 1, "no request left for a refused host");
}

#[test]
fn events_are_cloudevents_with_one_end_per_attempt() {
    let scratch = Scratch::new();
    let flow = scratch.write(
        "flow.yaml",
        "name: ce\nsteps:\n  - id: a\n    run: test $WAYLINE_ATTEMPT = 2\n    retry: { max_attempts: 2, delay: 10ms }\n",
    );
    let events = scratch.path("events.jsonl");
    let outcome = run(&flow, &["--events", events.to_str().unwrap()], &[]);
    assert_eq!(outcome.code, 0);
    let events: Vec<Value> =
        scratch.read("events.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for event in &events {
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(
            event["source"],
            format!("/executions/{}", outcome.report["id"].as_str().unwrap())
        );
        assert!(event["time"].as_str().unwrap().contains('.'), "microsecond precision");
    }
    let kinds: Vec<String> = events
        .iter()
        .filter(|e| e["subject"] == "a")
        .map(|e| {
            format!(
                "{}#{}",
                e["type"].as_str().unwrap().rsplit('.').nth(1).unwrap(),
                e["data"]["attempt"]
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "started#1",
            "running#1",
            "faulted#1",
            "retried#2",
            "started#2",
            "running#2",
            "completed#2"
        ]
    );
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
}

#[test]
fn an_escalation_is_decided_at_the_terminal_prompt() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    use std::io::{Read as _, Write as _};

    let scratch = Scratch::new();
    let flow = scratch.write(
        "flow.yaml",
        "name: esc\non_failure: escalate\nsteps:\n  - id: risky\n    run: exit 3\n  - id: after\n    needs: [risky]\n    run: touch after.txt\n",
    );
    // A pseudo-terminal, so that `wayline run` believes a person is watching.
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pty");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("the pty's name");
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .expect("the terminal side");
    #[allow(clippy::disallowed_methods)]
    let mut child = Command::new(env!("CARGO_BIN_EXE_wayline"))
        .args(["run", flow.to_str().unwrap(), "--ephemeral"])
        .current_dir(scratch.path(""))
        .stdin(terminal.try_clone().unwrap())
        .stdout(Stdio::null())
        .stderr(terminal)
        .spawn()
        .expect("wayline starts");
    // A stuck run must not hang the suite: end it after a generous bound.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = Arc::clone(&done);
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a pid");
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !done.load(std::sync::atomic::Ordering::SeqCst)
                && std::time::Instant::now() < deadline
            {
                std::thread::park_timeout(Duration::from_millis(100));
            }
            if !done.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        })
    };
    let mut screen = std::fs::File::from(master);
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while !seen.contains("decide: [r]etry, [s]kip, roll[b]ack, [f]ail >") {
        let read = screen.read(&mut buffer).expect("the terminal shows the run");
        assert!(read > 0, "the terminal closed before the prompt: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    assert!(
        seen.contains("step `risky` failed and needs a decision: exited with code 3"),
        "{seen}"
    );
    screen.write_all(b"s\n").expect("answer the prompt");
    let status = child.wait().expect("wayline ends");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    watchdog.thread().unpark();
    let _ = watchdog.join();
    assert_eq!(status.code(), Some(0), "skipping the step lets the execution succeed");
    assert!(!scratch.path("after.txt").exists(), "`after` needs a success, so it is skipped too");
}
