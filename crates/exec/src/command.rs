//! Command steps: run one process per attempt in a process group of its own, stream its log,
//! collect its outputs, and make sure nothing it started outlives the attempt.
//!
//! This is the only module in wayline that starts processes (ARCHITECTURE.md, "Invariants").

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::process::Child;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::log::{Lines, Logger};
use crate::scratch::OutputFile;
use crate::{
    FailureClass, Limits, LogSink, Masker, Outcome, Outputs, Stream, format_duration, outputs,
};

/// What to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A script run by `/bin/sh -c`. The caller keeps substituted values out of the script (it
    /// passes them in variables of [`Command::env`] that the script references).
    Shell(String),
    /// A program and its arguments, executed directly: no shell ever sees them, so an argument
    /// like `; rm -rf /` is just text. The program is looked up in `PATH` unless it has a `/`.
    Argv(Vec<String>),
}

/// One attempt of a command step, fully resolved.
///
/// Deliberately not `Debug`: `env` and the program often carry secrets.
#[derive(Clone)]
pub struct Command {
    /// What to execute.
    pub program: Program,
    /// Working directory; the engine's own when `None`. Must exist, else the attempt is `Fatal`.
    pub cwd: Option<PathBuf>,
    /// The whole environment of the process: nothing of the caller's own environment is
    /// inherited (it may hold secrets the step must not see). The `WAYLINE_*` variables below
    /// are set after these and win over them.
    pub env: Vec<(String, String)>,
    /// Exported as `WAYLINE_ATTEMPT`; the first attempt is 1.
    pub attempt: u32,
    /// Exported as `WAYLINE_IDEMPOTENCY_KEY`: the same for every attempt of a step in one
    /// execution, so the command can recognise a repeat of work it already did (docs/design.md §5).
    pub idempotency_key: String,
    /// Per-attempt time limit; past it the process group is stopped and the attempt fails
    /// with [`FailureClass::Timeout`].
    pub timeout: Option<Duration>,
    /// How long processes get between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Log and output file size limits.
    pub limits: Limits,
    /// Secrets to mask in the log, the outputs and the failure message.
    pub masker: Masker,
    /// Told the process (and so its group) as soon as it started, for the caller to record:
    /// if the caller dies, whoever continues its work can stop the group.
    pub on_start: Option<Arc<dyn Fn(Process) + Send + Sync>>,
}

/// A started process, as recorded for whoever may have to stop it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    /// Its pid, which is also its process group's id.
    pub pid: u32,
    /// When it started, in clock ticks since boot (field 22 of `/proc/PID/stat`): a pid that
    /// was reused by another process has another start time.
    pub started: u64,
}

impl Process {
    /// The process `pid` as it is now, if it exists.
    pub fn lookup(pid: u32) -> Option<Process> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces and parentheses: skip past its last `)`.
        let rest = &stat[stat.rfind(')')? + 1..];
        let started = rest.split_whitespace().nth(19)?.parse().ok()?;
        Some(Process { pid, started })
    }
}

/// Stops what is left of an attempt whose owner died: SIGTERM to the process group, SIGKILL
/// after `grace` for whatever still runs. Returns whether anything was found to stop.
///
/// The group is signalled only when it is certainly the attempt's: its leader is still the
/// recorded process, or the leader is gone (then the group id cannot have been given to anyone
/// else while members remain). A pid that now names another process means the group is gone.
pub async fn stop_orphan(process: Process, grace: Duration) -> bool {
    if let Some(now) = Process::lookup(process.pid)
        && now.started != process.started
    {
        return false;
    }
    let Some(mut group) = Group::new(process.pid) else { return false };
    if !group.has_live_members() {
        group.armed = false;
        return false;
    }
    let Phase::Terminating { kill_at } = group.terminate(grace) else { return true };
    while Instant::now() < kill_at {
        if !group.has_live_members() {
            group.armed = false;
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    group.kill(grace);
    true
}

impl Command {
    /// The default [`Command::kill_grace`].
    pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

    /// A first attempt of `program` with default limits, no timeout and no secrets.
    pub fn new(program: Program) -> Command {
        Command {
            program,
            cwd: None,
            env: Vec::new(),
            attempt: 1,
            idempotency_key: String::new(),
            timeout: None,
            kill_grace: Self::DEFAULT_KILL_GRACE,
            limits: Limits::default(),
            masker: Masker::default(),
            on_start: None,
        }
    }
}

/// Runs one attempt of a command step to its end.
///
/// The process gets stdin from `/dev/null`, stdout and stderr as pipes whose lines go to
/// `logs` (masked, bounded by [`Limits::log_bytes`]), and the variables `WAYLINE_OUTPUT`
/// (a path no other attempt is ever given, in a private (0700) directory; the file need not
/// be created and is removed when the attempt ends), `WAYLINE_ATTEMPT` and
/// `WAYLINE_IDEMPOTENCY_KEY`.
///
/// The process leads a new process group, and the whole group is this attempt's: nothing in
/// it outlives the attempt.
/// - On timeout or cancellation the group gets SIGTERM, then SIGKILL after
///   [`Command::kill_grace`]; the outcome is `Timeout` or `Cancelled` with no outputs.
/// - When the main process exits on its own, whatever it left running in its group (a
///   background `cmd &`) gets the same SIGTERM, grace, SIGKILL treatment; the outcome is still
///   decided by the main process's exit status. A process that left the group (`setsid`) is
///   out of reach; if it keeps the log pipes open, they are read for at most `kill_grace` more.
/// - When the returned future is dropped (the runtime aborted the attempt), the group gets
///   SIGKILL at once.
///
/// Outcome: exit code 0 is `Succeeded` with the output file's values plus `exit_code`; a
/// non-zero code is `Failure` ("exited with code 3"), death by a signal is `Failure`
/// ("killed by signal SIGSEGV") with `exit_code` 128 + the signal number, as shells report it.
/// A program that cannot be found or executed, an argv without a program, a missing working
/// directory, and an invalid or too large output file are `Fatal`: running the same request
/// again cannot succeed. A script in [`Program::Shell`] whose command is missing is different:
/// the shell reports it as exit code 127, an ordinary (retryable) `Failure`.
pub async fn run_command(command: Command, cancel: CancellationToken, logs: LogSink) -> Outcome {
    let masker = command.masker.clone();
    run(command, cancel, logs).await.masked(&masker)
}

/// Command attempts of this process whose main process is running.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Counts one running attempt in [`RUNNING`] while it lives.
struct Running;

impl Running {
    fn count() -> Running {
        RUNNING.fetch_add(1, Ordering::Relaxed);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often the group is checked while leftover processes are given their grace period.
const POLL: Duration = Duration::from_millis(25);

/// Why the attempt was stopped before its main process exited on its own.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Timeout,
    Cancelled,
}

/// The attempt's lifecycle once the process is started.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// The main process runs and nothing has been signalled.
    Running,
    /// The group got SIGTERM (stop, or leftovers after the main process exited); whatever is
    /// still alive at `kill_at` gets SIGKILL.
    Terminating { kill_at: Instant },
    /// The group is gone or was SIGKILLed; what is left in the pipes is read until `until`.
    Draining { until: Instant },
}

impl Phase {
    fn draining(grace: Duration) -> Phase {
        Phase::Draining { until: Instant::now() + grace }
    }
}

async fn run(command: Command, cancel: CancellationToken, logs: LogSink) -> Outcome {
    let (program, args) = match &command.program {
        Program::Shell(script) => ("/bin/sh", vec!["-c", script.as_str()]),
        Program::Argv(argv) => match argv.split_first() {
            Some((program, args)) if !program.is_empty() => {
                (program.as_str(), args.iter().map(String::as_str).collect())
            }
            _ => return Outcome::failed(FailureClass::Fatal, "the command names no program"),
        },
    };
    // Removed when dropped, on every path; declared before `child` and `group` so that it
    // drops after them, when nothing of the group can write it any more.
    let mut output = match OutputFile::new() {
        Ok(output) => output,
        Err(error) => {
            let message = format!("cannot create a directory for the output file: {error}");
            return Outcome::failed(FailureClass::Failure, message);
        }
    };
    let mut child = match spawn(&command, program, &args, output.path()).await {
        Ok(child) => child,
        Err(outcome) => return outcome,
    };
    let _running = Running::count();
    // Declared after `child` so it drops first: the group is killed while its leader is still
    // unreaped, when the group id cannot belong to anybody else.
    let Some(mut group) = child.id().and_then(Group::new) else {
        return Outcome::failed(FailureClass::Failure, "the process vanished right after starting");
    };
    if let (Some(on_start), Some(process)) =
        (&command.on_start, child.id().and_then(Process::lookup))
    {
        on_start(process);
    }
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Outcome::failed(FailureClass::Failure, "the process has no output pipes");
    };

    let masker = &command.masker;
    let grace = command.kill_grace;
    let deadline = command.timeout.map(|timeout| Instant::now() + timeout);
    let mut stdout = Lines::new(stdout);
    let mut stderr = Lines::new(stderr);
    let mut logger = Logger::new(logs, masker.clone(), command.limits.log_bytes);
    let mut phase = Phase::Running;
    let mut stop = None;
    let mut exit: Option<io::Result<ExitStatus>> = None;
    loop {
        if matches!(phase, Phase::Draining { .. })
            && exit.is_some()
            && stdout.is_done()
            && stderr.is_done()
        {
            break;
        }
        let wake = match phase {
            Phase::Running => deadline,
            // The main process is gone: poll for the leftovers' end instead of waiting out
            // the whole grace period.
            Phase::Terminating { kill_at } if exit.is_some() => {
                Some(kill_at.min(Instant::now() + POLL))
            }
            Phase::Terminating { kill_at } => Some(kill_at),
            Phase::Draining { until } => Some(until),
        };
        // The sleep future is built even when its branch is disabled, so it needs some instant.
        let wake_at = wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        // Not `biased`: a process flooding its pipes must not starve the timeout or the cancel.
        tokio::select! {
            chunk = stdout.next(masker), if !stdout.is_done() => {
                if let Some(chunk) = chunk {
                    logger.write(Stream::Stdout, chunk);
                }
            }
            chunk = stderr.next(masker), if !stderr.is_done() => {
                if let Some(chunk) = chunk {
                    logger.write(Stream::Stderr, chunk);
                }
            }
            result = child.wait(), if exit.is_none() => {
                phase = match (&result, phase) {
                    (Err(_), _) => group.kill(grace),
                    (Ok(_), Phase::Running) => group.sweep(grace),
                    (Ok(_), Phase::Terminating { .. }) if !group.has_live_members() => {
                        group.release(grace)
                    }
                    (Ok(_), phase) => phase,
                };
                exit = Some(result);
            }
            () = cancel.cancelled(), if matches!(phase, Phase::Running) => {
                stop = Some(Stop::Cancelled);
                phase = group.terminate(grace);
            }
            () = sleep_until(wake_at), if wake.is_some() => {
                phase = match phase {
                    Phase::Running => {
                        stop = Some(Stop::Timeout);
                        group.terminate(grace)
                    }
                    Phase::Terminating { kill_at } if Instant::now() >= kill_at => group.kill(grace),
                    Phase::Terminating { .. } if !group.has_live_members() => group.release(grace),
                    Phase::Terminating { .. } => phase,
                    // Something outside the group holds the pipes open; stop reading them.
                    Phase::Draining { .. } => break,
                };
            }
            else => break,
        }
    }
    logger.finish();
    drop(group);

    match (stop, exit) {
        (Some(Stop::Timeout), _) => {
            let timeout = format_duration(command.timeout.unwrap_or_default());
            Outcome::failed(FailureClass::Timeout, format!("timed out after {timeout}"))
        }
        (Some(Stop::Cancelled), _) => Outcome::failed(FailureClass::Cancelled, "cancelled"),
        (None, Some(Ok(status))) => {
            finish(status, &mut output, command.limits.output_bytes, masker).await
        }
        (None, Some(Err(error))) => {
            let message = format!("lost track of the process: {error}");
            Outcome::failed(FailureClass::Failure, message)
        }
        (None, None) => Outcome::failed(FailureClass::Failure, "the process ended unobserved"),
    }
}

/// Starts the main process.
///
/// The C library's `posix_spawn` suspends the calling thread until the child has executed its
/// program (~0.1–0.2 ms: the child resets every signal first). When the attempt is the only one
/// running, that wait is on the critical path anyway and a hand-off to another thread would only
/// add to it; when others run, the spawn moves to a blocking thread, so that the runtime's
/// thread goes on with their logs and ends meanwhile.
async fn spawn(
    command: &Command,
    program: &str,
    args: &[&str],
    output: &Path,
) -> Result<Child, Outcome> {
    // The one place in wayline that starts a process (ARCHITECTURE.md, "Invariants"); the
    // lint keeps every other crate and module from doing it.
    #[allow(clippy::disallowed_methods)]
    let mut process = tokio::process::Command::new(program);
    process
        .args(args)
        .env_clear()
        .envs(command.env.iter().map(|(name, value)| (name, value)))
        .env("WAYLINE_OUTPUT", output)
        .env("WAYLINE_ATTEMPT", command.attempt.to_string())
        .env("WAYLINE_IDEMPOTENCY_KEY", &command.idempotency_key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // The group guard kills the rest; this makes tokio reap the main process too.
        .kill_on_drop(true);
    if let Some(cwd) = &command.cwd {
        process.current_dir(cwd);
    }
    let started = if RUNNING.load(Ordering::Relaxed) == 0 {
        process.spawn()
    } else {
        match tokio::task::spawn_blocking(move || process.spawn()).await {
            Ok(started) => started,
            Err(error) => Err(io::Error::other(error)),
        }
    };
    started.map_err(|error| {
        // Checked only now that the start failed: on the happy path it would be one more
        // system call, and the start fails anyway (ENOENT, ENOTDIR) when the directory is bad.
        if let Some(cwd) = &command.cwd
            && !std::fs::metadata(cwd).is_ok_and(|metadata| metadata.is_dir())
        {
            let message = format!("working directory {} does not exist", cwd.display());
            return Outcome::failed(FailureClass::Fatal, message);
        }
        let (class, message) = match error.kind() {
            io::ErrorKind::NotFound => {
                (FailureClass::Fatal, format!("program not found: {program}"))
            }
            io::ErrorKind::PermissionDenied => {
                (FailureClass::Fatal, format!("permission denied executing {program}"))
            }
            // A NUL byte in an argument or variable, `=` in a variable name.
            io::ErrorKind::InvalidInput => {
                (FailureClass::Fatal, format!("invalid command for {program}: {error}"))
            }
            _ if error.raw_os_error() == Some(rustix::io::Errno::NOEXEC.raw_os_error()) => {
                (FailureClass::Fatal, format!("{program} is not an executable: {error}"))
            }
            // Out of processes, memory or file descriptors: may well work next time.
            _ => (FailureClass::Failure, format!("cannot start {program}: {error}")),
        };
        Outcome::failed(class, message)
    })
}

/// Turns a main process that exited on its own into the outcome, reading its output file.
async fn finish(
    status: ExitStatus,
    output: &mut OutputFile,
    limit: u64,
    masker: &Masker,
) -> Outcome {
    let exit_code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let read = match output.open() {
        Ok(Some(file)) => outputs::read(file, limit).await,
        Ok(None) => Ok(Outputs::new()),
        Err(error) => Err(outputs::Error::Unreadable(error)),
    };
    let (mut outputs, invalid) = match read {
        Ok(outputs) => (outputs, None),
        Err(error) => (Outputs::new(), Some(error)),
    };
    masker.mask_map(&mut outputs);
    outputs.insert("exit_code".to_owned(), exit_code.into());
    let exited = match (status.code(), status.signal()) {
        (Some(0), _) => None,
        (Some(code), _) => Some(format!("exited with code {code}")),
        (None, Some(signal)) => {
            let core = if status.core_dumped() { " (core dumped)" } else { "" };
            Some(format!("killed by signal {}{core}", signal_name(signal)))
        }
        (None, None) => Some("ended without an exit code".to_owned()),
    };
    let (class, message) = match (exited, invalid) {
        (None, None) => return Outcome::Succeeded { outputs },
        // The process says it succeeded but handed over something unusable: running it again
        // would produce the same file.
        (None, Some(error)) => (FailureClass::Fatal, error.to_string()),
        // A failed process's broken output file is most likely a symptom, not the cause.
        (Some(exited), Some(error)) => (FailureClass::Failure, format!("{exited}; {error}")),
        (Some(exited), None) => (FailureClass::Failure, exited),
    };
    Outcome::Failed(crate::Failure { class, message, outputs, retry_after: None })
}

fn signal_name(number: i32) -> String {
    const NAMES: [(Signal, &str); 15] = [
        (Signal::HUP, "SIGHUP"),
        (Signal::INT, "SIGINT"),
        (Signal::QUIT, "SIGQUIT"),
        (Signal::ILL, "SIGILL"),
        (Signal::TRAP, "SIGTRAP"),
        (Signal::ABORT, "SIGABRT"),
        (Signal::BUS, "SIGBUS"),
        (Signal::FPE, "SIGFPE"),
        (Signal::KILL, "SIGKILL"),
        (Signal::USR1, "SIGUSR1"),
        (Signal::SEGV, "SIGSEGV"),
        (Signal::USR2, "SIGUSR2"),
        (Signal::PIPE, "SIGPIPE"),
        (Signal::ALARM, "SIGALRM"),
        (Signal::TERM, "SIGTERM"),
    ];
    match NAMES.iter().find(|(signal, _)| signal.as_raw() == number) {
        Some((_, name)) => (*name).to_owned(),
        None => format!("{number}"),
    }
}

/// The attempt's process group. Until it is known to be empty or has been SIGKILLed, dropping
/// it SIGKILLs the group, so an aborted attempt leaks no process.
struct Group {
    id: Pid,
    armed: bool,
}

impl Group {
    fn new(leader: u32) -> Option<Group> {
        let id = Pid::from_raw(i32::try_from(leader).ok()?)?;
        Some(Group { id, armed: true })
    }

    /// SIGTERM to the group; SIGKILL follows after `grace`.
    fn terminate(&mut self, grace: Duration) -> Phase {
        self.signal(Signal::TERM);
        Phase::Terminating { kill_at: Instant::now() + grace }
    }

    /// After the main process exited on its own: terminate whatever it left behind.
    fn sweep(&mut self, grace: Duration) -> Phase {
        if self.has_live_members() { self.terminate(grace) } else { self.release(grace) }
    }

    fn kill(&mut self, grace: Duration) -> Phase {
        self.signal(Signal::KILL);
        self.armed = false;
        Phase::draining(grace)
    }

    /// The group is empty: signalling its id from now on could reach an unrelated group that
    /// reused it.
    fn release(&mut self, grace: Duration) -> Phase {
        self.armed = false;
        Phase::draining(grace)
    }

    fn signal(&self, signal: Signal) {
        // ESRCH (nobody left) is the outcome we want anyway.
        let _ = rustix::process::kill_process_group(self.id, signal);
    }

    /// Whether a process of the group is still running. kill(2) counts zombies as members, and
    /// where PID 1 does not reap orphans (some containers) they stay forever, so when kill says
    /// "someone is there", /proc is asked whether anyone is more than a zombie.
    fn has_live_members(&self) -> bool {
        match rustix::process::test_kill_process_group(self.id) {
            Err(rustix::io::Errno::SRCH) => false,
            _ => !only_zombies_in(self.id),
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::KILL);
        }
    }
}

/// Whether /proc shows no running member of process group `id`. Answers `false` when /proc
/// cannot be read, so the caller falls back to waiting out the grace period.
fn only_zombies_in(id: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    let id = id.as_raw_pid().to_string();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // A process that exits meanwhile simply has no stat file any more.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, pgrp) = (fields.next(), fields.nth(1));
        if pgrp == Some(id.as_str()) && !matches!(state, Some("Z" | "X")) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(Signal::SEGV.as_raw()), "SIGSEGV");
        assert_eq!(signal_name(Signal::KILL.as_raw()), "SIGKILL");
        assert_eq!(signal_name(64), "64");
    }
}
