//! The signals that stop a run in this process: Ctrl-C (SIGINT), SIGTERM (systemd, a container
//! stop, a cancelled CI job) and SIGHUP (the terminal went away). All three mean the same: the
//! first cancels the execution cleanly, a second stops at once and leaves it resumable. Left to
//! their default, SIGTERM and SIGHUP would end wayline on the spot with the execution still
//! `running` and its steps' processes orphaned.

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Stop {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Stop {
    /// Takes the three signals over from their default action, for the rest of the process.
    pub fn listen() -> std::io::Result<Stop> {
        Ok(Stop {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next stop signal, named the way a person knows it.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.interrupt.recv() => "Ctrl-C",
            Some(()) = self.terminate.recv() => "SIGTERM",
            Some(()) = self.hangup.recv() => "SIGHUP",
            else => std::future::pending().await,
        }
    }
}
