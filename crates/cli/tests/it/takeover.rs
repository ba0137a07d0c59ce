//! What a step may see and who may take an execution over, through the binary: a step's
//! environment holds nothing of wayline's own, an orphaned attempt is stopped before its
//! retry runs, a live owner is not taken over without `--force`, and substituted values stay
//! data in a real run.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::durable::{Sandbox, start, step_status};

/// Polls `condition` every 20 ms for up to 20 s.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purposes: it runs nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill").args([name, &pid.to_string()]).status();
    assert!(status.is_ok_and(|status| status.success()), "kill {name} {pid}");
}

/// The first attempt records its pid and sleeps; the second notes whether the first still runs.
const LONG: &str = r#"name: orphan
steps:
  - id: long
    retry: { max_attempts: 2, delay: 10ms }
    run: |
      if [ "$WAYLINE_ATTEMPT" = 1 ]; then
        echo $$ > first.pid
        exec sleep 60
      fi
      # Still running (a zombie left to a PID 1 that does not reap is not running).
      state=$(sed 's/.*) //' "/proc/$(cat first.pid)/stat" 2>/dev/null | cut -d' ' -f1)
      if [ -n "$state" ] && [ "$state" != Z ]; then echo overlap > overlap; fi
"#;

/// Waits until the first attempt runs and its process is in the journal; returns its pid.
fn first_attempt_running(sandbox: &Sandbox, id: &str) -> u32 {
    eventually("the first attempt's pid", || {
        sandbox.read("first.pid").trim().parse::<u32>().is_ok()
    });
    eventually("the process record", || {
        sandbox.events(id).iter().any(|event| event["type"] == "dev.wayline.task.running.v1")
    });
    sandbox.read("first.pid").trim().parse().expect("a pid")
}

fn attempts_of(events: &[Value], step: &str) -> Vec<String> {
    events
        .iter()
        .filter(|event| event["subject"] == step)
        .map(|event| {
            let kind = event["type"].as_str().unwrap_or("").rsplit('.').nth(1).unwrap_or("");
            let class =
                event["data"]["error"]["type"].as_str().map(|t| t.rsplit('/').next().unwrap_or(""));
            match class {
                Some(class) => format!("{kind}#{}({class})", event["data"]["attempt"]),
                None => format!("{kind}#{}", event["data"]["attempt"]),
            }
        })
        .collect()
}

#[test]
fn after_kill_9_resume_stops_the_orphaned_attempt_before_the_retry_runs() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", LONG);
    let (mut child, id, _stderr) = start(&sandbox, &flow, &[]);
    let first = first_attempt_running(&sandbox, &id);
    let _ = child.kill(); // SIGKILL: the attempt's process is left behind
    let _ = child.wait();
    assert!(alive(first), "the orphan outlives its wayline");

    let resumed = sandbox.output(&["resume", &id]);
    assert_eq!(resumed.status.code(), Some(0), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(!alive(first), "the orphan was stopped");
    assert!(!Path::new(&sandbox.path("overlap")).exists(), "the retry ran beside the orphan");
    let report = sandbox.report(&id);
    assert_eq!(step_status(&report, "long"), "succeeded");
    assert_eq!(
        attempts_of(&sandbox.events(&id), "long"),
        [
            "started#1",
            "running#1",
            "faulted#1(lost)",
            "retried#2",
            "started#2",
            "running#2",
            "completed#2"
        ]
    );
}

#[test]
fn a_live_owner_is_not_taken_over_without_force() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", LONG);
    let (mut child, id, _stderr) = start(&sandbox, &flow, &[]);
    let first = first_attempt_running(&sandbox, &id);
    // A stopped owner (SIGSTOP, a debugger, a frozen machine) is alive: its lease may lapse,
    // but it would carry on where it stopped.
    signal(child.id(), "-STOP");

    let refused = sandbox.output(&["resume", &id]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("owned by process {}", child.id())), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(alive(first), "a refused resume touches nothing");

    let forced = sandbox.output(&["resume", "--force", &id]);
    assert_eq!(forced.status.code(), Some(0), "{}", String::from_utf8_lossy(&forced.stderr));
    assert!(!alive(first), "the old owner's attempt was stopped");
    assert!(!sandbox.path("overlap").exists(), "the retry ran beside the old attempt");
    assert_eq!(step_status(&sandbox.report(&id), "long"), "succeeded");

    // The old owner wakes up fenced: it can no longer write, and leaves the journal alone.
    let seq_before = sandbox.events(&id).len();
    signal(child.id(), "-CONT");
    child.wait().expect("the old owner ends");
    assert_eq!(sandbox.events(&id).len(), seq_before, "the fenced owner appended nothing");
}

#[test]
fn a_step_sees_only_the_host_basics_what_the_workflow_declares_and_its_own_variables() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        r#"name: envcheck
env: { DECLARED: "${{ secrets.USED }}" }
steps:
  - id: show
    run: env > env.txt
"#,
    );
    let output = sandbox
        .wayline(&["run", flow.to_str().unwrap()])
        .env("WAYLINE_SECRET_USED", "used-value")
        .env("WAYLINE_SECRET_UNUSED", "unused-value")
        .env("AWS_SECRET_ACCESS_KEY", "host-credential")
        .env("WAYLINE_TOKEN", "a-token")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("wayline runs");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let env = sandbox.read("env.txt");
    let names: Vec<&str> =
        env.lines().filter_map(|line| line.split_once('=').map(|(n, _)| n)).collect();
    for expected in [
        "PATH",
        "HOME",
        "LC_ALL",
        "DECLARED",
        "WAYLINE_OUTPUT",
        "WAYLINE_ATTEMPT",
        "WAYLINE_IDEMPOTENCY_KEY",
    ] {
        assert!(names.contains(&expected), "{expected} is missing from:\n{env}");
    }
    assert!(
        env.contains("DECLARED=used-value"),
        "a secret reaches the step where a template names it"
    );
    for leaked in [
        "unused-value",
        "host-credential",
        "a-token",
        "WAYLINE_DB",
        "WAYLINE_SECRET",
        "WAYLINE_RETENTION",
    ] {
        assert!(!env.contains(leaked), "{leaked} leaked into the step:\n{env}");
    }
}

#[test]
fn substituted_values_stay_data_in_a_real_run_and_unsafe_places_are_refused_with_their_position() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        r#"name: values
inputs: { p: { type: string } }
steps:
  - id: bare
    run: printf '%s\n' ${{ inputs.p }} "x${{ inputs.p }}" 'y${{ inputs.p }}' > words.txt
  - id: heredoc
    run: |
      cat > doc.txt <<EOF
      <${{ inputs.p }}>
      EOF
"#,
    );
    let payload = "$(touch pwned)`touch pwned`'; touch pwned; '\"\nEOF\ntouch pwned";
    let output = sandbox
        .wayline(&["run", flow.to_str().unwrap(), "-i", &format!("p={payload}")])
        .output()
        .expect("wayline runs");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!sandbox.path("pwned").exists(), "an injected command ran");
    assert_eq!(sandbox.read("words.txt"), format!("{payload}\nx{payload}\ny{payload}\n"));
    assert_eq!(sandbox.read("doc.txt"), format!("<{payload}>\n"));

    let unsafe_flow = sandbox.write(
        "unsafe.yaml",
        "name: unsafe\ninputs: { p: { type: string } }\nsteps:\n  - id: a\n    run: eval \"echo ${{ inputs.p }}\"\n",
    );
    let refused = sandbox
        .wayline(&["run", unsafe_flow.to_str().unwrap(), "-i", "p=x"])
        .output()
        .expect("wayline runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unsafe.yaml:5:21"), "{stderr}");
    assert!(stderr.contains("`eval` runs its arguments as shell code"), "{stderr}");
}
