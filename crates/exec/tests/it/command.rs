//! Command steps against real processes: outputs, environment, exit classification, and that
//! no process of a step outlives it (timeout, cancel, leftovers, a dropped future).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use expect_test::{Expect, expect};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, Signal};
use tokio_util::sync::CancellationToken;
use wayline_exec::{
    Command, FailureClass, LogLine, LogSink, Masker, Outcome, Program, run_command,
};

use crate::render;

/// A shell step with a short grace period, so the kill paths stay fast.
fn sh(script: &str) -> Command {
    let mut command = Command::new(Program::Shell(script.to_owned()));
    command.kill_grace = Duration::from_millis(200);
    command
}

/// Runs the step to its end and returns the outcome with the complete log, stdout lines first
/// (the two pipes interleave nondeterministically; each keeps its own order).
async fn run(command: Command) -> (Outcome, Vec<LogLine>) {
    let (sink, mut lines) = LogSink::channel();
    let outcome = run_command(command, CancellationToken::new(), sink).await;
    let mut logs = Vec::new();
    // The executor dropped its sink, so this ends after the last line.
    while let Some(line) = lines.recv().await {
        logs.push(line);
    }
    logs.sort_by_key(|line| line.stream != wayline_exec::Stream::Stdout);
    (outcome, logs)
}

async fn check(command: Command, expected: Expect) {
    let (outcome, logs) = run(command).await;
    expected.assert_eq(&render(&outcome, &logs));
}

/// A scratch directory and the command variable `PIDFILE` naming a file in it, where a script
/// writes the process ids the test then follows.
fn with_pidfile(mut command: Command) -> (Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pids");
    command.env.push(("PIDFILE".to_owned(), path.display().to_string()));
    (command, dir)
}

fn read_pids(dir: &Path) -> Vec<i32> {
    let text = std::fs::read_to_string(dir.join("pids")).unwrap();
    text.split_whitespace().map(|pid| pid.parse().unwrap()).collect()
}

/// Waits for the kernel's notice that process `pid` ended (a pidfd turns readable on exit,
/// for any process, child or not). Fails the test if it is still running after 10 seconds.
/// It blocks the test's thread, which has nothing else to do by then.
fn assert_exits(pid: i32) {
    let pid = Pid::from_raw(pid).unwrap();
    let fd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return,
        Err(error) => panic!("pidfd_open({pid:?}): {error}"),
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec { tv_sec: 10, tv_nsec: 0 };
    let ready = loop {
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Err(rustix::io::Errno::INTR) => continue,
            result => break result.unwrap(),
        }
    };
    assert_eq!(ready, 1, "process {pid:?} is still running after its step ended");
}

/// Completes when the log shows `text`.
async fn wait_for_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<LogLine>, text: &str) {
    while let Some(line) = lines.recv().await {
        if line.text == text {
            return;
        }
    }
    panic!("the log ended without {text:?}");
}

#[tokio::test]
async fn key_value_outputs_and_logs() {
    let script = r#"
        echo hello
        echo "greeting=hi there" >> "$WAYLINE_OUTPUT"
        echo "count=3" >> "$WAYLINE_OUTPUT"
        echo warning >&2
    "#;
    check(
        sh(script),
        expect![[r#"
            succeeded
            outputs: {"greeting":"hi there","count":"3","exit_code":0}
            out| hello
            err| warning
        "#]],
    )
    .await;
}

#[tokio::test]
async fn json_outputs_keep_their_types() {
    let script = r#"printf '{"n": 3, "ok": true, "tags": ["a"]}' > "$WAYLINE_OUTPUT""#;
    check(
        sh(script),
        expect![[r#"
            succeeded
            outputs: {"n":3,"ok":true,"tags":["a"],"exit_code":0}
        "#]],
    )
    .await;
}

#[tokio::test]
async fn non_zero_exit_is_a_retryable_failure_with_outputs() {
    let script = r#"echo "partial=yes" >> "$WAYLINE_OUTPUT"; echo "bad things" >&2; exit 3"#;
    check(
        sh(script),
        expect![[r#"
            failure: exited with code 3
            outputs: {"partial":"yes","exit_code":3}
            err| bad things
        "#]],
    )
    .await;
}

#[tokio::test]
async fn death_by_signal_names_the_signal() {
    check(
        sh("kill -USR1 $$"),
        expect![[r#"
            failure: killed by signal SIGUSR1
            outputs: {"exit_code":138}
        "#]],
    )
    .await;
}

#[tokio::test]
async fn the_process_sees_attempt_key_env_and_cwd() {
    let workdir = tempfile::tempdir().unwrap();
    let script = r#"
        {
            echo "attempt=$WAYLINE_ATTEMPT"
            echo "key=$WAYLINE_IDEMPOTENCY_KEY"
            echo "custom=$CUSTOM"
            echo "home_set=${HOME:+yes}"
            echo "cwd=$(pwd -P)"
            echo "output=$WAYLINE_OUTPUT"
            echo "scratch_mode=$(stat -c %a "$(dirname "$WAYLINE_OUTPUT")")"
        } >> "$WAYLINE_OUTPUT"
        read -r line || echo "stdin is empty"
    "#;
    let mut command = sh(script);
    command.attempt = 2;
    command.idempotency_key = "exec-1/deploy".to_owned();
    command.cwd = Some(workdir.path().to_owned());
    // The executor's own variables win over the step's.
    command.env = vec![
        ("CUSTOM".to_owned(), "value with spaces".to_owned()),
        ("WAYLINE_ATTEMPT".to_owned(), "99".to_owned()),
    ];
    let (outcome, logs) = run(command).await;
    let Outcome::Succeeded { outputs } = outcome else { panic!("{outcome:?}") };
    assert_eq!(outputs["attempt"], "2");
    assert_eq!(outputs["key"], "exec-1/deploy");
    assert_eq!(outputs["custom"], "value with spaces");
    assert_eq!(outputs["home_set"], "", "nothing of the caller's environment is inherited");
    let cwd = workdir.path().canonicalize().unwrap();
    assert_eq!(outputs["cwd"], cwd.display().to_string());
    assert_eq!(outputs["scratch_mode"], "700");
    let output = outputs["output"].as_str().unwrap();
    assert!(!Path::new(output).exists(), "the output file is removed afterwards");
    assert_eq!(logs.iter().map(|line| line.text.as_str()).collect::<Vec<_>>(), ["stdin is empty"]);
}

#[tokio::test]
async fn argv_reaches_the_program_verbatim_without_a_shell() {
    let argument = "; rm -rf / `id` $HOME \"quoted\" *";
    let argv = ["printf", "%s\\n", argument].map(str::to_owned).to_vec();
    let (outcome, logs) = run(Command::new(Program::Argv(argv))).await;
    assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].text, argument);
}

#[tokio::test]
async fn requests_that_cannot_start_are_fatal() {
    check(
        Command::new(Program::Argv(vec!["wayline-no-such-program".to_owned()])),
        expect![[r#"
            fatal: program not found: wayline-no-such-program
            outputs: {}
        "#]],
    )
    .await;
    check(
        Command::new(Program::Argv(Vec::new())),
        expect![[r#"
            fatal: the command names no program
            outputs: {}
        "#]],
    )
    .await;
    let mut command = sh("true");
    command.cwd = Some("/nonexistent/wayline-dir".into());
    check(
        command,
        expect![[r#"
            fatal: working directory /nonexistent/wayline-dir does not exist
            outputs: {}
        "#]],
    )
    .await;
    // Inside a shell script a missing command is the shell's exit code 127, not a start error.
    check(
        sh("wayline-no-such-program 2>/dev/null"),
        expect![[r#"
            failure: exited with code 127
            outputs: {"exit_code":127}
        "#]],
    )
    .await;
}

#[tokio::test]
async fn timeout_kills_the_whole_tree_even_when_it_ignores_sigterm() {
    // Both the shell and its background child ignore SIGTERM, so only SIGKILL after the
    // grace period ends them.
    let script = r#"trap '' TERM; sleep 30 & echo "$$ $!" > "$PIDFILE"; sleep 30"#;
    let (mut command, dir) = with_pidfile(sh(script));
    command.timeout = Some(Duration::from_millis(500));
    check(
        command,
        expect![[r#"
            timeout: timed out after 500ms
            outputs: {}
        "#]],
    )
    .await;
    for pid in read_pids(dir.path()) {
        assert_exits(pid);
    }
}

#[tokio::test]
async fn cancel_stops_a_running_step_and_its_children() {
    let script = r#"sleep 30 & echo "$$ $!" > "$PIDFILE"; echo started; wait"#;
    let (command, dir) = with_pidfile(sh(script));
    let (sink, mut lines) = LogSink::channel();
    let cancel = CancellationToken::new();
    let step = run_command(command, cancel.clone(), sink);
    let canceller = async {
        wait_for_line(&mut lines, "started").await;
        cancel.cancel();
    };
    let (outcome, ()) = tokio::join!(step, canceller);
    expect![[r#"
        cancelled: cancelled
        outputs: {}
    "#]]
    .assert_eq(&render(&outcome, &[]));
    for pid in read_pids(dir.path()) {
        assert_exits(pid);
    }
}

#[tokio::test]
async fn leftover_processes_are_terminated_when_the_main_process_exits() {
    // The leftover ignores SIGTERM and holds the log pipe open: the step must still end, with
    // the main process's result, after the grace period.
    let script = r#"(trap '' TERM; exec sleep 30) & echo "$!" > "$PIDFILE"; echo done"#;
    let (command, dir) = with_pidfile(sh(script));
    check(
        command,
        expect![[r#"
            succeeded
            outputs: {"exit_code":0}
            out| done
        "#]],
    )
    .await;
    for pid in read_pids(dir.path()) {
        assert_exits(pid);
    }
}

#[tokio::test]
async fn leftovers_that_obey_sigterm_do_not_cost_the_grace_period() {
    // With a 60s grace, finishing at all within the bound below shows the executor noticed the
    // leftover's end (here a zombie nobody reaps, in some containers) instead of waiting it out.
    let script = r#"sleep 30 & echo "$!" > "$PIDFILE"; echo done"#;
    let (mut command, dir) = with_pidfile(sh(script));
    command.kill_grace = Duration::from_secs(60);
    let finished = tokio::time::timeout(Duration::from_secs(20), run(command)).await;
    let (outcome, logs) = finished.expect("the step waited out the grace period");
    expect![[r#"
        succeeded
        outputs: {"exit_code":0}
        out| done
    "#]]
    .assert_eq(&render(&outcome, &logs));
    for pid in read_pids(dir.path()) {
        assert_exits(pid);
    }
}

#[tokio::test]
async fn a_process_that_escaped_the_group_cannot_hang_the_step() {
    // setsid puts the sleep in a session of its own, out of the step's reach, and it keeps the
    // log pipes open; the step reads them for the grace period only.
    let script = r#"setsid sleep 30 & echo "$!" > "$PIDFILE"; echo done"#;
    let (command, dir) = with_pidfile(sh(script));
    let (outcome, logs) = run(command).await;
    let escaped = read_pids(dir.path());
    for &pid in &escaped {
        let _ = rustix::process::kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL);
    }
    expect![[r#"
        succeeded
        outputs: {"exit_code":0}
        out| done
    "#]]
    .assert_eq(&render(&outcome, &logs));
}

#[tokio::test]
async fn dropping_the_future_kills_the_group() {
    let script = r#"sleep 30 & echo "$$ $!" > "$PIDFILE"; echo started; wait"#;
    let (command, dir) = with_pidfile(sh(script));
    let (sink, mut lines) = LogSink::channel();
    let step = run_command(command, CancellationToken::new(), sink);
    tokio::select! {
        outcome = step => panic!("the step ended by itself: {outcome:?}"),
        () = wait_for_line(&mut lines, "started") => {}
    }
    // `step` is dropped here, mid-run, as when the runtime aborts an attempt.
    for pid in read_pids(dir.path()) {
        assert_exits(pid);
    }
}

#[tokio::test]
async fn the_log_is_truncated_with_a_marker() {
    let script = r#"i=0; while [ $i -lt 100 ]; do echo "line-$i"; i=$((i+1)); done"#;
    let mut command = sh(script);
    command.limits.log_bytes = 50;
    check(
        command,
        expect![[r#"
            succeeded
            outputs: {"exit_code":0}
            out| line-0
            out| line-1
            out| line-2
            out| line-3
            out| line-4
            out| line-5
            out| line-6
            err| [wayline] log truncated: 741 bytes dropped (limit 50 bytes)
        "#]],
    )
    .await;
}

#[tokio::test]
async fn a_closed_log_receiver_does_not_disturb_the_step() {
    let (sink, lines) = LogSink::channel();
    drop(lines);
    let command = sh(r#"echo one; echo "k=v" > "$WAYLINE_OUTPUT"; echo two"#);
    let outcome = run_command(command, CancellationToken::new(), sink).await;
    expect![[r#"
        succeeded
        outputs: {"k":"v","exit_code":0}
    "#]]
    .assert_eq(&render(&outcome, &[]));
}

#[tokio::test]
async fn secrets_are_masked_in_logs_outputs_and_messages() {
    let script = r#"
        echo "token=$TOKEN"
        echo "key=$TOKEN" >> "$WAYLINE_OUTPUT"
        echo "$TOKEN" >&2
    "#;
    let mut command = sh(script);
    command.env.push(("TOKEN".to_owned(), "s3cr3t-value".to_owned()));
    command.masker = Masker::new(["s3cr3t-value"]);
    check(
        command,
        expect![[r#"
            succeeded
            outputs: {"key":"***","exit_code":0}
            out| token=***
            err| ***
        "#]],
    )
    .await;

    let mut command =
        Command::new(Program::Argv(vec!["/nonexistent/s3cr3t-value/tool".to_owned()]));
    command.masker = Masker::new(["s3cr3t-value"]);
    check(
        command,
        expect![[r#"
            fatal: program not found: /nonexistent/***/tool
            outputs: {}
        "#]],
    )
    .await;
}

#[tokio::test]
async fn an_output_file_over_the_limit_is_fatal() {
    let mut command = sh(r#"echo "k=0123456789abcdef" > "$WAYLINE_OUTPUT""#);
    command.limits.output_bytes = 16;
    check(
        command,
        expect![[r#"
            fatal: output file is larger than the limit of 16 bytes
            outputs: {"exit_code":0}
        "#]],
    )
    .await;
}

#[tokio::test]
async fn output_files_share_one_private_directory_and_never_outlive_their_attempt() {
    let mut paths = Vec::new();
    for ending in ["exit 0", "exit 3", "sleep 30"] {
        // The script tells the test where its output file is, then ends its own way.
        let script = format!(
            r#"echo "k=v" > "$WAYLINE_OUTPUT"; echo "$WAYLINE_OUTPUT" > "$PIDFILE"; {ending}"#
        );
        let (mut command, dir) = with_pidfile(sh(&script));
        if ending.starts_with("sleep") {
            command.timeout = Some(Duration::from_millis(300));
        }
        let (outcome, _) = run(command).await;
        let path = std::fs::read_to_string(dir.path().join("pids")).unwrap();
        let path = std::path::PathBuf::from(path.trim_end());
        assert!(!path.exists(), "{ending}: {} outlived {outcome:?}", path.display());
        paths.push(path);
    }
    let directory = paths[0].parent().unwrap();
    assert!(paths.iter().all(|path| path.parent() == Some(directory)), "{paths:?}");
    assert!(paths[0] != paths[1] && paths[1] != paths[2], "every attempt gets its own name");
    let mode = std::fs::metadata(directory).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[tokio::test]
async fn a_large_output_file_is_read_whole_and_still_bounded() {
    // Past 64 KiB the file is read off the runtime's thread; the limit holds there too.
    let script = r#"printf 'big=%070000d\n' 0 > "$WAYLINE_OUTPUT""#;
    let (outcome, _) = run(sh(script)).await;
    let Outcome::Succeeded { outputs } = outcome else { panic!("{outcome:?}") };
    assert_eq!(outputs["big"].as_str().map(str::len), Some(70_000));
    let mut command = sh(script);
    command.limits.output_bytes = 70_000;
    check(
        command,
        expect![[r#"
            fatal: output file is larger than the limit of 70000 bytes
            outputs: {"exit_code":0}
        "#]],
    )
    .await;
}

#[tokio::test]
async fn an_output_file_that_is_not_a_regular_file_is_fatal() {
    // Reading a FIFO nobody writes would block forever; a directory cannot be read at all.
    for make in ["mkfifo", "mkdir"] {
        let script = format!(r#"{make} "$WAYLINE_OUTPUT"; echo "$WAYLINE_OUTPUT" > "$PIDFILE""#);
        let (command, dir) = with_pidfile(sh(&script));
        let (outcome, _) = run(command).await;
        expect![[r#"
            fatal: output file is not a regular file
            outputs: {"exit_code":0}
        "#]]
        .assert_eq(&render(&outcome, &[]));
        let path = std::fs::read_to_string(dir.path().join("pids")).unwrap();
        assert!(!Path::new(path.trim_end()).exists(), "{make}: {path} is left behind");
    }
}

#[tokio::test]
async fn an_invalid_output_file_is_fatal_and_names_the_line() {
    check(
        sh(r#"printf 'a=1\nnot a pair\n' > "$WAYLINE_OUTPUT""#),
        expect![[r#"
            fatal: output file line 2: expected key=value, found no `=`
            outputs: {"exit_code":0}
        "#]],
    )
    .await;
    // When the process failed too, its exit is what the retry policy should see.
    let (outcome, _) = run(sh(r#"echo oops > "$WAYLINE_OUTPUT"; exit 1"#)).await;
    let Outcome::Failed(failure) = outcome else { panic!("{outcome:?}") };
    assert_eq!(failure.class, FailureClass::Failure);
    assert_eq!(
        failure.message,
        "exited with code 1; output file line 1: expected key=value, found no `=`"
    );
}
