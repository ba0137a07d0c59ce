//! Findings from using the release binary as a careless or hostile user would: closed and full
//! output streams, endless input files, databases in the wrong place, signals from service
//! managers, leftovers of killed processes. One test per finding, through the binary.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::Value;

use crate::durable::{Sandbox, start, step_status, wait_for_line};
use crate::run::alive;

const HELLO: &str = "name: hello\nsteps:\n  - id: greet\n    run: echo hello\n";

/// Runs `flow` to its end in `sandbox` and returns the execution's id.
fn run_to_end(sandbox: &Sandbox, flow: &Path) -> String {
    let output = sandbox.output(&["run", flow.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    execution_id(&stderr)
}

fn execution_id(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find_map(|line| line.strip_prefix("wayline: execution "))
        .unwrap_or_else(|| panic!("no execution started: {stderr}"));
    line.split_whitespace().next().unwrap().to_owned()
}

/// Runs `command` with stdout a pipe whose reader is already gone, as `| head -1` leaves it.
fn with_closed_stdout(command: &mut Command) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    command.stdout(writer).stderr(Stdio::piped()).output().expect("wayline runs")
}

fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full")
}

/// Waits, within a generous bound, until `condition` holds.
fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: u32, signal: Signal) {
    kill_process(Pid::from_raw(pid as i32).expect("a pid"), signal).expect("the signal is sent");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o777
}

#[test]
fn a_closed_stdout_ends_the_command_quietly_with_exit_0() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", HELLO);
    let id = run_to_end(&sandbox, &flow);
    for args in [
        vec!["events", id.as_str()],
        vec!["list", "--json"],
        vec!["list"],
        vec!["show", id.as_str()],
        vec!["logs", id.as_str()],
        vec!["schema"],
        vec!["plan", flow.to_str().unwrap()],
    ] {
        let output = with_closed_stdout(&mut sandbox.wayline(&args));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!((output.status.code(), stderr.as_ref()), (Some(0), ""), "{args:?}");
    }
    // `run` still reports how the execution ended.
    let output =
        with_closed_stdout(&mut sandbox.wayline(&["run", flow.to_str().unwrap(), "--json"]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("error"), "{stderr}");
}

#[test]
fn a_full_stdout_is_an_infrastructure_error_naming_it() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", HELLO);
    let output = sandbox
        .wayline(&["run", flow.to_str().unwrap(), "--json"])
        .stdout(dev_full())
        .output()
        .expect("wayline runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.ends_with("error: cannot write to standard output: No space left on device\n"),
        "{stderr}"
    );
    // Only the result could not be shown: the execution itself ran to its end.
    assert_eq!(sandbox.report(&execution_id(&stderr))["status"], "succeeded");

    let output = sandbox.wayline(&["list", "--json"]).stdout(dev_full()).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: cannot write to standard output: No space left on device\n"
    );
}

#[test]
fn an_unwritable_events_file_is_reported_once_and_the_execution_still_ends() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        "name: three\nsteps:\n  - id: a\n    run: echo a >> effects.txt\n  - id: b\n    needs: [a]\n    run: echo b >> effects.txt\n  - id: c\n    needs: [b]\n    run: echo c >> effects.txt\n",
    );
    let output = sandbox.output(&["run", flow.to_str().unwrap(), "--events", "/dev/full"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let id = execution_id(&stderr);
    let reported: Vec<&str> =
        stderr.lines().filter(|line| line.contains("cannot write events to /dev/full")).collect();
    assert_eq!(reported.len(), 1, "reported once: {stderr}");
    assert!(reported[0].contains("No space left on device"), "{stderr}");
    assert!(reported[0].contains(&format!("`wayline events {id}`")), "{stderr}");
    assert_eq!(sandbox.report(&id)["status"], "succeeded");
    assert_eq!(sandbox.read("effects.txt"), "a\nb\nc\n");
    assert!(sandbox.events(&id).len() > 5, "the journal has every event");
}

#[test]
fn input_files_are_limited_before_they_are_read() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", HELLO);
    let flow = flow.to_str().unwrap();
    // A file of 8 GiB that takes no space: refused from its size, not by reading it.
    let huge = sandbox.path("huge.yaml");
    std::fs::File::create(&huge).unwrap().set_len(8 << 30).unwrap();
    let huge = huge.to_str().unwrap();
    let cases: [(&[&str], String); 6] = [
        (&["validate", "/dev/zero"], "/dev/zero has more than 1048576 bytes".into()),
        (&["validate", huge], format!("{huge} is 8589934592 bytes")),
        (&["plan", huge], format!("{huge} is 8589934592 bytes")),
        (&["plan", flow, "--input-file", "/dev/zero"], "/dev/zero has more than".into()),
        (&["run", flow, "--input-file", huge], format!("{huge} is 8589934592 bytes")),
        (&["run", flow, "--secrets-file", "/dev/zero"], "/dev/zero has more than".into()),
    ];
    for (args, message) in cases {
        let started = Instant::now();
        let output = sandbox.output(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&message), "{args:?}: {stderr}");
        assert!(stderr.contains("the limit is 1048576 bytes (1 MiB)"), "{stderr}");
        assert!(started.elapsed() < Duration::from_secs(10), "{args:?} read the file");
    }
}

#[test]
fn a_long_source_line_is_quoted_as_a_window_around_the_problem() {
    let sandbox = Sandbox::new();
    // Minified JSON: the whole workflow on one line, the mistake far into it.
    let padding = "x".repeat(100_000);
    let flow = sandbox.write(
        "flow.json",
        &format!(
            r#"{{"name": "long", "description": "{padding}", "steps": [{{"id": "a", "rnu": "true"}}]}}"#
        ),
    );
    let output = sandbox.output(&["validate", flow.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let longest = stderr.lines().map(|line| line.chars().count()).max().unwrap();
    assert!(longest < 200, "a line of {longest} characters: {stderr:.1000}");
    let quoted = stderr.lines().find(|line| line.starts_with("1 | ")).expect("the source line");
    assert!(quoted.starts_with("1 | …") && quoted.contains(r#""rnu": "true""#), "{stderr}");
    let caret = stderr.lines().find(|line| line.contains("^^^")).expect("the carets");
    assert_eq!(caret.find('^'), quoted.find("\"rnu").map(|at| at - "…".len() + 1), "{stderr}");
    assert!(caret.ends_with("did you mean `run`?"), "{stderr}");
}

#[test]
fn what_a_step_prints_cannot_drive_the_terminal_of_a_run_on_a_pipe() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        "name: evil\nsteps:\n  - id: evil\n    run: printf '\\033[2J\\033[1;1H\\r  ✓ deploy succeeded\\a\\n'\n",
    );
    let output = sandbox.output(&["run", flow.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(r"  evil | \x1b[2J\x1b[1;1H\x0d  ✓ deploy succeeded\x07"), "{stderr}");
    assert!(
        !stderr.contains(['\x1b', '\r', '\x07']),
        "a control character got through: {stderr:?}"
    );
}

#[test]
fn databases_and_their_directory_are_private() {
    let sandbox = Sandbox::new();
    let data = sandbox.path("data/home");
    let flow = sandbox.write(
        "flow.yaml",
        "name: slow\nsteps:\n  - id: a\n    run: while [ ! -e go ]; do sleep 0.01; done\n",
    );
    let mut child = sandbox
        .wayline(&["run", flow.to_str().unwrap()])
        .env_remove("WAYLINE_DB")
        .env("XDG_DATA_HOME", &data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wayline starts");
    let db = data.join("wayline/wayline.db");
    let wal = data.join("wayline/wayline.db-wal");
    let shm = data.join("wayline/wayline.db-shm");
    eventually("the write-ahead log", || wal.exists() && shm.exists());
    for file in [&db, &wal, &shm] {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&data.join("wayline")), 0o700);
    std::fs::write(sandbox.path("go"), "").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn an_empty_db_or_a_missing_directory_is_a_usage_error() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", HELLO);
    for args in [vec!["list", "--db", ""], vec!["run", flow.to_str().unwrap(), "--db", " "]] {
        let output = sandbox.output(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--db (or WAYLINE_DB) is empty"), "{stderr}");
    }
    let missing = sandbox.path("missing");
    let db = missing.join("x.db");
    let output = sandbox.output(&["run", flow.to_str().unwrap(), "--db", db.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("the directory {} of database", missing.display())),
        "{stderr}"
    );
    assert!(!missing.exists(), "the directory was created");
    // The default location's directories are created.
    let output = sandbox
        .wayline(&["run", flow.to_str().unwrap()])
        .env_remove("WAYLINE_DB")
        .env("XDG_DATA_HOME", sandbox.path("fresh/data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(sandbox.path("fresh/data/wayline/wayline.db").is_file());
}

#[test]
fn resuming_a_finished_execution_is_refused_with_the_reason() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", HELLO);
    let id = run_to_end(&sandbox, &flow);
    let output = sandbox.output(&["resume", &id]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("error: execution {id} already finished (succeeded); nothing to resume\n")
    );
}

#[test]
fn logs_of_an_unknown_step_are_an_error_with_a_suggestion() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", HELLO);
    let id = run_to_end(&sandbox, &flow);
    let logs = |step: &str| {
        let output = sandbox.output(&["logs", &id, step]);
        let text =
            (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.code(), text.0.into_owned(), text.1.into_owned())
    };
    assert_eq!(logs("greet"), (Some(0), "greet#1 | hello\n".into(), String::new()));
    assert_eq!(
        logs("nostep"),
        (Some(2), String::new(), format!("error: execution {id} has no step `nostep`\n"))
    );
    assert_eq!(
        logs("gret"),
        (
            Some(2),
            String::new(),
            format!("error: execution {id} has no step `gret`; did you mean `greet`?\n")
        )
    );
}

/// Field 22 of /proc/self/stat: this process's start time, as wayline names processes.
fn own_start_time() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    stat[stat.rfind(')').unwrap() + 1..].split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn scratch_directories_of_dead_processes_are_removed_and_nothing_else() {
    let sandbox = Sandbox::new();
    let temp = sandbox.dir.path();
    let namespace = std::fs::metadata("/proc/self/ns/pid").unwrap().ino();
    let dead = {
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        child.id()
    };
    let me = std::process::id();
    let make = |name: &str| {
        let dir = temp.join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("output-3"), "k=v\n").unwrap();
        dir
    };
    let stale = make(&format!("wayline-{dead}-12345-{namespace}-AbC123"));
    let live = make(&format!("wayline-{me}-{}-{namespace}-AbC123", own_start_time()));
    let elsewhere = make(&format!("wayline-{dead}-12345-{}-AbC123", namespace + 1));
    let unnamed = make("wayline-Q1w2E3");
    let target = make("precious");
    let link = temp.join(format!("wayline-{dead}-54321-{namespace}-LiNk00"));
    std::os::unix::fs::symlink(&target, &link).unwrap();

    // A process killed outright leaves its directory (its step keeps running: kill that too).
    let flow = sandbox.write(
        "slow.yaml",
        "name: slow\nsteps:\n  - id: a\n    run: echo $$ > a.pid; exec sleep 60\n",
    );
    let (mut child, _, mut stderr) = start(&sandbox, &flow, &[]);
    wait_for_line(&mut stderr, "a: running (attempt 1)");
    let pid = child.id();
    let scratch = || {
        std::fs::read_dir(temp)
            .unwrap()
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.to_string_lossy().contains(&format!("/wayline-{pid}-")))
    };
    eventually("the run's scratch directory", || scratch().is_some());
    let killed = scratch().unwrap();
    eventually("the step's pid", || sandbox.read("a.pid").ends_with('\n'));
    child.kill().unwrap();
    child.wait().unwrap();
    signal(sandbox.read("a.pid").trim().parse().unwrap(), Signal::KILL);

    let hello = sandbox.write("hello.yaml", HELLO);
    run_to_end(&sandbox, &hello);
    assert!(!stale.exists(), "the dead process's directory stays");
    assert!(!killed.exists(), "the killed run's directory stays");
    for kept in [&live, &elsewhere, &unnamed, &target] {
        assert!(kept.join("output-3").is_file(), "{} was touched", kept.display());
    }
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink(), "the symlink is left alone");
}

#[test]
fn help_says_how_long_steps_get_to_stop() {
    for command in ["run", "cancel"] {
        let run = crate::wayline(&[command, "--help"]);
        assert_eq!(run.code, 0);
        assert!(
            run.stdout.replace('\n', " ").contains("SIGTERM, then SIGKILL 5 seconds later"),
            "{command}: {}",
            run.stdout
        );
    }
}

const LONG: &str = "name: long\nsteps:\n  - id: long\n    run: echo $$ >> long.pid; exec sleep 60\n  - id: after\n    needs: [long]\n    run: touch after.txt\n";

/// Reads the rest of a child's stderr.
fn rest(mut stderr: impl std::io::Read) -> String {
    let mut text = String::new();
    let _ = stderr.read_to_string(&mut text);
    text
}

#[test]
fn sigterm_and_sighup_cancel_a_run_like_ctrl_c() {
    for sent in [Signal::TERM, Signal::HUP] {
        let sandbox = Sandbox::new();
        let flow = sandbox.write("flow.yaml", LONG);
        let (mut child, id, mut stderr) = start(&sandbox, &flow, &[]);
        wait_for_line(&mut stderr, "long: running (attempt 1)");
        eventually("the step's pid", || sandbox.read("long.pid").ends_with('\n'));
        let step: u32 = sandbox.read("long.pid").trim().parse().unwrap();
        signal(child.id(), sent);
        let said = rest(stderr);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{sent:?}: {said}");
        let report = sandbox.report(&id);
        assert_eq!(report["status"], "cancelled", "{sent:?}: {said}");
        assert_eq!(step_status(&report, "long"), "cancelled");
        assert_eq!(step_status(&report, "after"), "cancelled");
        assert!(!alive(step), "{sent:?}: the step's process was stopped");
        assert!(!sandbox.path("after.txt").exists());
    }
}

#[test]
fn sigterm_cancels_an_execution_that_resume_drives() {
    let sandbox = Sandbox::new();
    let flow =
        sandbox.write("flow.yaml", &format!("retry: {{ max_attempts: 2, on: [lost] }}\n{LONG}"));
    let (mut crashed, id, mut stderr) = start(&sandbox, &flow, &[]);
    wait_for_line(&mut stderr, "long: running (attempt 1)");
    eventually("the first step's pid", || sandbox.read("long.pid").ends_with('\n'));
    crashed.kill().unwrap();
    crashed.wait().unwrap();
    // At-least-once: the dead owner's step process lives on; it is not this test's subject.
    signal(sandbox.read("long.pid").trim().parse().unwrap(), Signal::KILL);

    let mut resumed = sandbox
        .wayline(&["resume", &id])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("resume starts");
    let mut stderr = std::io::BufReader::new(resumed.stderr.take().unwrap());
    wait_for_line(&mut stderr, "long: running (attempt 2)");
    eventually("the second step's pid", || sandbox.read("long.pid").lines().count() == 2);
    let step: u32 = sandbox.read("long.pid").lines().nth(1).unwrap().parse().unwrap();
    signal(resumed.id(), Signal::TERM);
    let said = rest(stderr);
    assert_eq!(resumed.wait().unwrap().code(), Some(1), "{said}");
    assert_eq!(sandbox.report(&id)["status"], "cancelled", "{said}");
    assert!(!alive(step), "the step's process was stopped");
}

#[test]
fn yaml_tags_are_refused_everywhere_with_their_position() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write("flow.yaml", "name: !!str x\nsteps:\n  - id: a\n    run: 'true'\n");
    let output = sandbox.output(&["validate", flow.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error[syntax]: YAML tags such as `!!str` are not supported\n"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!(" --> {}:1:7\n", flow.display())), "{stderr}");
}

#[test]
fn an_integer_default_beyond_64_bits_is_out_of_range() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        "name: big\ninputs:\n  n: { type: integer, default: 99999999999999999999 }\nsteps:\n  - id: a\n    run: 'true'\n",
    );
    let output = sandbox.output(&["validate", flow.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error[input-default]: input `n` is of type integer, but 99999999999999999999 is out of range (-9223372036854775808 to 9223372036854775807)\n"),
        "{stderr}"
    );
}

#[test]
fn steps_that_are_never_retried_have_no_retry_schedule() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        r#"
name: kinds
retry: { max_attempts: 3, delay: 1s }
steps:
  - id: command
    run: 'true'
  - id: compute
    set: { x: 1 }
    retry: { max_attempts: 2 }
  - id: check
    condition: true
    then: [pause]
  - id: pause
    wait: 1s
"#,
    );
    let flow = flow.to_str().unwrap();
    let output = sandbox.output(&["plan", flow, "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let plan: Value = serde_json::from_slice(&output.stdout).unwrap();
    let retries: Vec<(&str, bool)> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| (step["id"].as_str().unwrap(), step["retry"].is_null()))
        .collect();
    assert_eq!(retries, [("command", false), ("compute", true), ("check", true), ("pause", true)]);
    let text = String::from_utf8(sandbox.output(&["plan", flow]).stdout).unwrap();
    let retried: Vec<&str> = text.lines().filter(|line| line.contains("retry ")).collect();
    assert_eq!(retried, ["      retry      3 attempts, fixed from 1s"], "{text}");

    let output = sandbox.output(&["validate", flow]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.starts_with("warning[no-effect]: `retry` has no effect on a set step\n"),
        "{stderr}"
    );

    // A wrong `max_attempts` is an error, and says nothing about `backoff`.
    let flow = sandbox.write(
        "zero.yaml",
        "name: zero\nsteps:\n  - id: a\n    run: 'true'\n    retry: { max_attempts: 0, backoff: linear }\n",
    );
    let output = sandbox.output(&["validate", flow.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`max_attempts: 0` would never run the step"), "{stderr}");
    assert!(!stderr.contains("has no effect"), "{stderr}");
}

#[test]
fn the_examples_name_only_commands_and_flags_that_exist() {
    let mut helps: std::collections::HashMap<String, String> = Default::default();
    // The examples and the files of templates they import (`examples/lib/`).
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(crate::root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        match std::fs::read_dir(&path) {
            Ok(inner) => paths.extend(inner.map(|entry| entry.unwrap().path())),
            Err(_) => paths.push(path),
        }
    }
    for path in paths {
        for (number, line) in std::fs::read_to_string(&path).unwrap().lines().enumerate() {
            let Some((_, comment)) = line.split_once('#') else { continue };
            let mut rest = comment;
            while let Some(at) = rest.find("wayline ") {
                let before = rest[..at].trim_end();
                let command_line = before.is_empty()
                    || before.ends_with('`')
                    || before.rsplit(' ').next().is_some_and(|word| word.contains('='));
                let words: Vec<&str> = rest[at + "wayline ".len()..]
                    .split(['`', ')'])
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect();
                rest = &rest[at + 1..];
                let Some(subcommand) = words.first().filter(|_| command_line) else { continue };
                let help = helps.entry(subcommand.to_string()).or_insert_with(|| {
                    let run = crate::wayline(&[subcommand, "--help"]);
                    assert_eq!(
                        run.code,
                        0,
                        "{}:{}: no command `wayline {subcommand}`",
                        path.display(),
                        number + 1
                    );
                    run.stdout
                });
                for flag in
                    words.iter().filter(|word| word.trim_start_matches('[').starts_with("--"))
                {
                    let flag: String = flag
                        .trim_start_matches('[')
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                        .collect();
                    assert!(
                        help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                        "{}:{}: `wayline {subcommand}` has no `{flag}`",
                        path.display(),
                        number + 1
                    );
                }
            }
        }
    }
    assert!(helps.contains_key("plan") && helps.contains_key("decide"), "{:?}", helps.keys());
}
