//! Durable executions through the binary: crashes (`kill -9`) and `wayline resume`, racing
//! takeovers, control from a second process, and hostile database states.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A temporary directory with a database in it; the other test modules use it too.
pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
}

impl Sandbox {
    pub(crate) fn new() -> Sandbox {
        Sandbox { dir: tempfile::tempdir().expect("a temp dir") }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn db(&self) -> String {
        format!("sqlite://{}", self.path("wayline.db").display())
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    pub(crate) fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    pub(crate) fn wayline(&self, args: &[&str]) -> Command {
        super::wayline_in(self.dir.path(), &self.db(), args)
    }

    pub(crate) fn output(&self, args: &[&str]) -> Output {
        self.wayline(args).output().expect("wayline runs")
    }

    /// `wayline show ID --json`.
    pub(crate) fn report(&self, id: &str) -> Value {
        let output = self.output(&["show", id, "--json"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).expect("a report")
    }

    /// `wayline events ID` as JSON values.
    pub(crate) fn events(&self, id: &str) -> Vec<Value> {
        let output = self.output(&["events", id]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON"))
            .collect()
    }
}

/// Starts `wayline run` in the background and returns it with its execution id, read from
/// its first line of output. The caller waits for (or kills) the child.
#[allow(clippy::zombie_processes)]
pub(crate) fn start(
    sandbox: &Sandbox,
    flow: &Path,
    args: &[&str],
) -> (Child, String, BufReader<std::process::ChildStderr>) {
    spawn(sandbox.wayline(&[&["run", flow.to_str().unwrap()], args].concat()))
}

/// Starts `command` (a `wayline run`) in the background; as [`start`].
#[allow(clippy::zombie_processes)]
pub(crate) fn spawn(mut command: Command) -> (Child, String, BufReader<std::process::ChildStderr>) {
    let mut child =
        command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("wayline starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            let status = child.wait();
            panic!("wayline ended before starting an execution: {status:?}");
        }
        if let Some(rest) = line.strip_prefix("wayline: execution ") {
            let id = rest.split_whitespace().next().expect("an id").to_owned();
            return (child, id, stderr);
        }
    }
}

/// Reads the child's stderr until a line contains `needle`.
pub(crate) fn wait_for_line(stderr: &mut BufReader<std::process::ChildStderr>, needle: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).expect("a line") > 0, "output ended before `{needle}`");
        if line.contains(needle) {
            return;
        }
    }
}

pub(crate) fn step_status(report: &Value, id: &str) -> String {
    report["steps"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A deterministic pseudo-random sequence for kill points (reproducible failures), between
/// 20 ms and 20 + `span` ms.
fn kill_points(count: usize, span: u64) -> Vec<Duration> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            Duration::from_millis(20 + state % span)
        })
        .collect()
}

const CRASHY: &str = r#"
name: crashy
steps:
  - id: s1
    run: sleep 0.05; echo s1 >> effects.txt
  - id: s2
    needs: [s1]
    run: sleep 0.05; echo s2 >> effects.txt
  - id: s3a
    needs: [s2]
    run: sleep 0.1; echo s3a >> effects.txt
  - id: s3b
    needs: [s2]
    run: sleep 0.08; echo s3b >> effects.txt
  - id: s4
    needs: [s3a, s3b]
    set: { joined: yes }
  - id: s5
    needs: [s4]
    run: sleep 0.05; echo s5 >> effects.txt
  - id: s6
    needs: [s5]
    wait: 50ms
  - id: s7
    needs: [s6]
    run: sleep 0.05; echo s7 >> effects.txt
"#;

#[test]
fn kill_9_at_random_points_then_resume_runs_every_committed_step_exactly_once() {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut interrupted = 0;
    for (round, point) in kill_points(20, 500).into_iter().enumerate() {
        assert!(Instant::now() < deadline, "the crash test took too long");
        let sandbox = Sandbox::new();
        let flow = sandbox.write("flow.yaml", CRASHY);
        let (mut child, id, _stderr) = start(&sandbox, &flow, &[]);
        std::thread::sleep(point);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // What the journal says succeeded before the crash must not run again.
        let committed: Vec<String> = sandbox
            .events(&id)
            .iter()
            .filter(|e| e["type"] == "io.serverlessworkflow.task.completed.v1")
            .map(|e| e["subject"].as_str().unwrap().to_owned())
            .collect();
        let before = sandbox.read("effects.txt");
        let finished_before = sandbox
            .events(&id)
            .iter()
            .any(|e| e["type"] == "io.serverlessworkflow.workflow.completed.v1");
        interrupted += usize::from(!finished_before);
        // Step processes the dead owner started may outlive it and append their line late;
        // that can only add to steps that were not committed, which the test allows.
        let resumed = sandbox.output(&["resume", &id, "--json"]);
        let stderr = String::from_utf8_lossy(&resumed.stderr);
        let report = sandbox.report(&id);
        assert_eq!(
            report["status"], "succeeded",
            "round {round} (kill at {point:?}): {stderr}\nbefore: {before}"
        );
        let effects = sandbox.read("effects.txt");
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for line in effects.lines() {
            *counts.entry(line).or_default() += 1;
        }
        for step in ["s1", "s2", "s3a", "s3b", "s5", "s7"] {
            let count = counts.get(step).copied().unwrap_or(0);
            assert!(count >= 1, "round {round}: {step} never ran: {effects}");
            if committed.iter().any(|c| c == step) {
                assert_eq!(
                    count, 1,
                    "round {round}: {step} was committed before the crash but ran again: {effects}"
                );
            }
        }
        // The journal folds to a consistent state: `show` replays it, and its numbering is whole.
        let events = sandbox.events(&id);
        let ids: Vec<u64> =
            events.iter().map(|e| e["id"].as_str().unwrap().parse().unwrap()).collect();
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
        assert_eq!(events.last().unwrap()["type"], "io.serverlessworkflow.workflow.completed.v1");
    }
    assert!(interrupted >= 10, "only {interrupted} of 20 kills hit a running execution");
}

/// A chain of 25 command steps with no retry policy (one attempt each).
fn chain_of_25() -> String {
    let mut yaml = String::from("name: chain\nsteps:\n");
    for n in 1..=25 {
        yaml.push_str(&format!(
            "  - id: s{n:02}\n    run: sleep 0.02; echo s{n:02} >> effects.txt\n"
        ));
        if n > 1 {
            yaml.push_str(&format!("    needs: [s{:02}]\n", n - 1));
        }
    }
    yaml
}

#[test]
fn a_chain_without_retries_killed_anywhere_and_resumed_succeeds() {
    // A lost attempt is wayline's failure, not the step's: it runs again without a retry
    // policy, and `resume` finishes the job.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut interrupted = 0;
    for (round, point) in kill_points(20, 900).into_iter().enumerate() {
        assert!(Instant::now() < deadline, "the crash test took too long");
        let sandbox = Sandbox::new();
        let flow = sandbox.write("flow.yaml", &chain_of_25());
        let (mut child, id, _stderr) = start(&sandbox, &flow, &[]);
        std::thread::sleep(point);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let before = sandbox.events(&id);
        let committed: Vec<String> = before
            .iter()
            .filter(|e| e["type"] == "io.serverlessworkflow.task.completed.v1")
            .map(|e| e["subject"].as_str().unwrap().to_owned())
            .collect();
        let finished =
            before.iter().any(|e| e["type"] == "io.serverlessworkflow.workflow.completed.v1");
        interrupted += usize::from(!finished);
        let resumed = sandbox.output(&["resume", &id]);
        let report = sandbox.report(&id);
        assert_eq!(
            report["status"],
            "succeeded",
            "round {round} (kill at {point:?}): {}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        // An execution that had finished before the kill has nothing to resume (exit 2).
        assert_eq!(resumed.status.code(), Some(if finished { 2 } else { 0 }), "round {round}");
        let effects = sandbox.read("effects.txt");
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for line in effects.lines() {
            *counts.entry(line).or_default() += 1;
        }
        let mut twice = 0;
        for n in 1..=25 {
            let step = format!("s{n:02}");
            let count = counts.get(step.as_str()).copied().unwrap_or(0);
            if committed.contains(&step) {
                assert_eq!(count, 1, "round {round}: committed {step} ran again: {effects}");
            } else {
                assert!((1..=2).contains(&count), "round {round}: {step} ran {count} times");
                twice += usize::from(count == 2);
            }
        }
        // In a chain at most one step is in flight when the owner dies.
        assert!(twice <= 1, "round {round}: {twice} steps ran twice: {effects}");
    }
    assert!(interrupted >= 10, "only {interrupted} of 20 kills hit a running execution");
}

#[test]
fn two_processes_racing_to_resume_an_orphan_one_wins() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        "name: orphan\nretry: { max_attempts: 2, delay: 10ms }\nsteps:\n  - id: slow\n    run: sleep 1; echo done >> effects.txt\n",
    );
    let (mut child, id, mut stderr) = start(&sandbox, &flow, &[]);
    wait_for_line(&mut stderr, "slow: running (attempt 1)");
    let _ = child.kill();
    let _ = child.wait();
    let first = sandbox
        .wayline(&["resume", &id])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    let second = sandbox
        .wayline(&["resume", &id])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("starts");
    let outputs =
        [first.wait_with_output().expect("ends"), second.wait_with_output().expect("ends")];
    let codes: Vec<i32> = outputs.iter().map(|o| o.status.code().unwrap()).collect();
    let winners = codes.iter().filter(|&&code| code == 0).count();
    assert_eq!(winners, 1, "exactly one resume wins: {codes:?}");
    let loser = outputs.iter().find(|o| o.status.code() != Some(0)).unwrap();
    let message = String::from_utf8_lossy(&loser.stderr);
    assert_eq!(loser.status.code(), Some(2), "{message}");
    // The loser either lost the race for the lease, or came late and found the winner running.
    assert!(
        message.contains("taken over")
            || message.contains("is owned by")
            || message.contains("is running in"),
        "a clear message: {message}"
    );
    assert_eq!(sandbox.report(&id)["status"], "succeeded");
}

#[test]
fn pause_resume_and_cancel_from_another_process() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        r#"
name: steer
steps:
  - id: one
    run: sleep 1
  - id: two
    needs: [one]
    run: echo two >> effects.txt
  - id: three
    needs: [two]
    run: sleep 30
"#,
    );
    let (mut child, id, mut stderr) = start(&sandbox, &flow, &[]);
    wait_for_line(&mut stderr, "one: running (attempt 1)");
    let paused = sandbox.output(&["pause", &id, "--reason", "maintenance"]);
    assert!(paused.status.success(), "{}", String::from_utf8_lossy(&paused.stderr));
    wait_for_line(&mut stderr, "one: succeeded");
    let report = sandbox.report(&id);
    assert_eq!(report["status"], "paused");
    assert_eq!(step_status(&report, "two"), "pending");
    assert!(sandbox.read("effects.txt").is_empty(), "nothing new starts while paused");
    let resumed = sandbox.output(&["resume", &id]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    wait_for_line(&mut stderr, "three: running (attempt 1)");
    let started = Instant::now();
    let cancelled = sandbox.output(&["cancel", &id]);
    assert!(cancelled.status.success(), "{}", String::from_utf8_lossy(&cancelled.stderr));
    let status = child.wait().expect("wayline ends");
    assert_eq!(status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10), "the cancel stopped the 30s step");
    let report = sandbox.report(&id);
    assert_eq!(report["status"], "cancelled");
    assert_eq!(step_status(&report, "three"), "cancelled");
    let events = sandbox.events(&id);
    let paused = events
        .iter()
        .find(|e| e["type"] == "io.serverlessworkflow.workflow.suspended.v1")
        .expect("a suspended event");
    assert_eq!(paused["data"]["actor"]["reason"], "maintenance");
}

#[test]
fn decide_from_another_process() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        r#"
name: decide
on_failure: escalate
steps:
  - id: risky
    run: exit 4
  - id: after
    needs: [risky]
    run: echo "rows=${{ steps.risky.outputs.rows }}" >> effects.txt
"#,
    );
    let (mut child, id, mut stderr) = start(&sandbox, &flow, &[]);
    wait_for_line(&mut stderr, "risky: ESCALATED");
    let wrong = sandbox.output(&["decide", &id, "after", "skip"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("is not escalated"));
    let decided = sandbox.output(&[
        "decide",
        &id,
        "risky",
        "skip",
        "--output",
        "rows=7",
        "--reason",
        "checked by hand",
    ]);
    assert!(decided.status.success(), "{}", String::from_utf8_lossy(&decided.stderr));
    assert_eq!(child.wait().expect("ends").code(), Some(0));
    assert_eq!(sandbox.read("effects.txt"), "rows=7\n");
    let decided = sandbox
        .events(&id)
        .into_iter()
        .find(|e| e["type"] == "dev.wayline.workflow.decided.v1")
        .expect("decided");
    assert_eq!(decided["data"]["actor"]["reason"], "checked by hand");
    assert_eq!(decided["data"]["decision"], "skip");
    // The step counts as succeeded, and still says what happened to it.
    let report = sandbox.report(&id);
    let risky = report["steps"].as_array().unwrap().iter().find(|s| s["id"] == "risky").unwrap();
    assert_eq!(risky["status"], "succeeded");
    assert_eq!(risky["outputs"]["rows"], 7);
    assert_eq!(risky["error"]["message"], "exited with code 4");
    assert_eq!(risky["decision"]["action"], "skip");
    assert_eq!(risky["decision"]["reason"], "checked by hand");
    let shown = sandbox.output(&["show", &id]);
    let text = String::from_utf8_lossy(&shown.stdout).into_owned()
        + &String::from_utf8_lossy(&shown.stderr);
    assert!(text.contains("skip") && text.contains("exited with code 4"), "{text}");
}

#[test]
fn detach_runs_in_the_background_and_list_shows_it() {
    let sandbox = Sandbox::new();
    let flow =
        sandbox.write("flow.yaml", "name: bg\nsteps:\n  - id: a\n    run: echo a >> effects.txt\n");
    let output = sandbox.output(&["run", flow.to_str().unwrap(), "--detach"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let follow = sandbox.output(&["events", &id, "--follow"]);
    let last = String::from_utf8_lossy(&follow.stdout)
        .lines()
        .last()
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(last.contains("workflow.completed"), "{last}");
    assert_eq!(sandbox.read("effects.txt"), "a\n");
    let list = sandbox.output(&["list", "--json", "--status", "succeeded", "--workflow", "bg"]);
    let records: Value = serde_json::from_slice(&list.stdout).expect("JSON");
    assert_eq!(records[0]["id"], id);
    let gc = sandbox.output(&["gc", "--older-than", "0s"]);
    assert!(String::from_utf8_lossy(&gc.stderr).contains("removed 1 finished execution"));
    assert_eq!(sandbox.output(&["show", &id]).status.code(), Some(2));
}

#[test]
fn hostile_databases_fail_cleanly_with_exit_3() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", "name: h\nsteps:\n  - id: a\n    run: 'true'\n");
    let run = |db: &str| {
        let output = sandbox.output(&["run", flow.to_str().unwrap(), "--db", db]);
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    // Not writable: the directory is a file.
    sandbox.write("not-a-dir", "");
    let (code, message) =
        run(&format!("sqlite://{}/wayline.db", sandbox.path("not-a-dir").display()));
    assert_eq!(code, Some(3), "{message}");
    assert!(message.contains("not-a-dir"), "{message}");
    // Corrupt.
    let garbage = "this is not a database, it is a shopping list\n".repeat(200);
    sandbox.write("corrupt.db", &garbage);
    let (code, message) = run(&format!("sqlite://{}", sandbox.path("corrupt.db").display()));
    assert_eq!(code, Some(3), "{message}");
    assert!(message.to_lowercase().contains("corrupt") || message.contains("not a"), "{message}");
    assert_eq!(sandbox.read("corrupt.db"), garbage, "the file is left alone");
    // Newer schema.
    let newer = sandbox.path("newer.db");
    let (code, _) = run(&format!("sqlite://{}", newer.display()));
    assert_eq!(code, Some(0));
    {
        let connection = rusqlite::Connection::open(&newer).expect("opens");
        connection.pragma_update(None, "user_version", 9999).expect("sets the version");
    }
    let (code, message) = run(&format!("sqlite://{}", newer.display()));
    assert_eq!(code, Some(3), "{message}");
    assert!(message.contains("newer"), "{message}");
    // PostgreSQL that is not there.
    let started = Instant::now();
    let (code, message) = run("postgres://postgres@127.0.0.1:1/test");
    assert_eq!(code, Some(3), "{message}");
    assert!(started.elapsed() < Duration::from_secs(15));
}
