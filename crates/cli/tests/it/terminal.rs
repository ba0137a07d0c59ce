//! What wayline shows on a terminal, on a real pseudo-terminal of a given size: the live
//! progress table fits it, and nothing a step printed reaches it as a control sequence.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{Winsize, tcsetwinsize};

use crate::durable::Sandbox;

/// Runs `command` with stdout and stderr on a new terminal of `rows` x `columns` and returns
/// its exit code and everything it drew there (the terminal turns `\n` into `\r\n`).
fn on_terminal(mut command: Command, rows: u16, columns: u16) -> (i32, String) {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("a pty");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let size = Winsize { ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0 };
    tcsetwinsize(&master, size).expect("the terminal's size");
    let name = ptsname(&master, Vec::new()).expect("the pty's name");
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .expect("the terminal side");
    command.stdin(Stdio::null()).stdout(terminal.try_clone().unwrap()).stderr(terminal);
    let mut child = command.spawn().expect("wayline starts");
    // The command holds the terminal side open: without it, reading ends when the child does.
    drop(command);
    // A stuck process must not hang the suite.
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = Arc::clone(&done);
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a pid");
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !done.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                std::thread::park_timeout(Duration::from_millis(100));
            }
            if !done.load(Ordering::SeqCst) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        })
    };
    let mut screen = std::fs::File::from(master);
    let mut shown = Vec::new();
    let mut buffer = [0u8; 8192];
    // Linux answers EIO once the last process holding the terminal side has ended.
    while let Ok(read @ 1..) = screen.read(&mut buffer) {
        shown.extend_from_slice(&buffer[..read]);
    }
    let status = child.wait().expect("wayline ends");
    done.store(true, Ordering::SeqCst);
    watchdog.thread().unpark();
    let _ = watchdog.join();
    (status.code().expect("exited"), String::from_utf8_lossy(&shown).into_owned())
}

/// `text` without its CSI sequences (`\x1b[…` up to a letter): what the lines look like.
fn visible(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.next() == Some('[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[test]
fn the_progress_table_fits_a_small_terminal() {
    let sandbox = Sandbox::new();
    let mut flow = String::from("name: many\nsteps:\n");
    for n in 0..30 {
        flow.push_str(&format!(
            "  - id: step_with_a_long_name_{n:02}\n    run: sleep 0.{}\n",
            3 + n % 5
        ));
    }
    let flow = sandbox.write("flow.yaml", &flow);
    let (rows, columns) = (12, 40);
    let (code, shown) =
        on_terminal(sandbox.wayline(&["run", flow.to_str().unwrap()]), rows, columns);
    assert_eq!(code, 0, "{shown}");
    // Each redraw: up over the last table, each line cleared and drawn, the rest cleared.
    let frames: Vec<&str> =
        shown.split("\x1b[J").filter(|frame| frame.contains("\x1b[2K")).collect();
    assert!(frames.len() >= 2, "the table was drawn and redrawn: {shown:?}");
    for frame in &frames {
        let lines = frame.matches("\x1b[2K").count();
        assert!(lines < rows as usize, "{lines} lines on a terminal of {rows} rows: {frame:?}");
        for drawn in frame.split("\x1b[2K").skip(1) {
            let line = visible(drawn.split("\r\n").next().unwrap_or_default());
            let width = line.chars().count();
            assert!(width < columns as usize, "{width} columns: {line:?}");
        }
        let table = visible(frame);
        assert!(table.contains("  … "), "the hidden steps are counted: {table}");
    }
    for up in shown.split("\x1b[").skip(1) {
        if let Some(count) = up.split('A').next().and_then(|n| n.parse::<usize>().ok()) {
            assert!(count < rows as usize, "moved up {count} rows on a terminal of {rows}");
        }
    }
}

#[test]
fn control_characters_a_step_printed_are_escaped_on_a_terminal() {
    let sandbox = Sandbox::new();
    let flow = sandbox.write(
        "flow.yaml",
        "name: evil\nsteps:\n  - id: evil\n    run: printf '\\033[2J\\033[1;1H  ✓ deploy succeeded\\n'; exit 1\n",
    );
    let (code, shown) = on_terminal(sandbox.wayline(&["run", flow.to_str().unwrap()]), 24, 80);
    assert_eq!(code, 1, "{shown}");
    assert!(!shown.contains("\x1b[2J") && !shown.contains("\x1b[1;1H"), "{shown:?}");
    // The end of a failed step's log is shown, harmless.
    assert!(shown.contains(r"\x1b[2J\x1b[1;1H  ✓ deploy succeeded"), "{shown:?}");
    let id = shown
        .split("wayline: execution ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the execution id")
        .to_owned();

    let (code, shown) = on_terminal(sandbox.wayline(&["logs", &id]), 24, 80);
    assert_eq!((code, shown.as_str()), (0, "evil#1 | \\x1b[2J\\x1b[1;1H  ✓ deploy succeeded\r\n"));
    // As written: with `--raw`, and to a pipe or a file.
    let (code, shown) = on_terminal(sandbox.wayline(&["logs", &id, "--raw"]), 24, 80);
    assert_eq!((code, shown.as_str()), (0, "evil#1 | \x1b[2J\x1b[1;1H  ✓ deploy succeeded\r\n"));
    let piped = sandbox.output(&["logs", &id]);
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout),
        "evil#1 | \x1b[2J\x1b[1;1H  ✓ deploy succeeded\n"
    );
}
