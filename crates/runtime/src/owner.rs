//! Who owns an execution: `host:pid:start`, so that on the same host a dead owner can be
//! recognised at once (docs/design.md §1.4), even if its pid was reused.

use wayline_journal::Status;
use wayline_journal::Time;
use wayline_store::{ExecutionRecord, Filter, Store};

/// This process's owner id.
pub fn this_process() -> String {
    let pid = std::process::id();
    format!("{}:{pid}:{}", hostname(), start_time(pid).unwrap_or(0))
}

/// What can be known about an owner from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// A process on this host that is still there (running, stopped or busy).
    Alive { pid: u32 },
    /// A process on this host that no longer exists.
    Dead,
    /// Another host (or a name that is not a process): only its lease can tell.
    Elsewhere,
}

/// Whether `owner` (`host:pid:start`) is alive, dead, or out of sight.
pub fn liveness(owner: &str) -> Liveness {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(start), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return Liveness::Elsewhere;
    };
    if host != hostname() {
        return Liveness::Elsewhere;
    }
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return Liveness::Elsewhere;
    };
    match start_time(pid) {
        Some(actual) if actual == start => Liveness::Alive { pid },
        // No such process, or the pid was reused by another one.
        _ => Liveness::Dead,
    }
}

/// Whether the owner is a process on this host that no longer exists.
pub fn is_dead(owner: &str) -> bool {
    liveness(owner) == Liveness::Dead
}

/// What `resume` should do with an execution that has not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Its owner is alive and it is paused: ask the owner to resume it.
    Request,
    /// Take it over here and continue it.
    TakeOver,
    /// Neither; the reason, for people.
    Refuse(String),
}

/// Decides between asking the owner and taking over. A live owner on this host is never
/// taken over unless `force` (its lease may have lapsed while it was stopped or busy); an owner
/// elsewhere is while its lease is valid.
pub fn plan_resume(record: &ExecutionRecord, now: Time, force: bool) -> Resume {
    let paused = record.status == Status::Paused;
    let Some(owner) = record.owner.as_deref() else { return Resume::TakeOver };
    match liveness(owner) {
        Liveness::Dead => Resume::TakeOver,
        Liveness::Alive { .. } if paused => Resume::Request,
        Liveness::Alive { .. } if force => Resume::TakeOver,
        Liveness::Alive { pid } => Resume::Refuse(alive_owner(&record.id, owner, pid)),
        Liveness::Elsewhere if record.lease_until.is_some_and(|until| until > now) => {
            if paused {
                Resume::Request
            } else {
                Resume::Refuse(format!(
                    "execution {} is running in {owner} and is not paused; there is nothing to resume",
                    record.id
                ))
            }
        }
        Liveness::Elsewhere => Resume::TakeOver,
    }
}

/// Why an execution whose owner is a live process here is not taken over.
pub fn alive_owner(id: &str, owner: &str, pid: u32) -> String {
    format!(
        "execution {id} is owned by process {pid} on this host ({owner}), which is still alive; \
         it may be busy or stopped, so it is not taken over. Stop that process (kill {pid}) or \
         take the execution over anyway with `wayline resume --force {id}`"
    )
}

/// Whether `host` is this host.
pub fn is_here(host: &str) -> bool {
    host == hostname()
}

/// This host's name, read once (every process record and owner id carries it).
pub fn hostname() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_owned())
    })
    .clone()
}

/// The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); `None`
/// for no such process, and for one that has exited but was not reaped yet (a zombie, state
/// `Z`, or `X`): it will never renew a lease again.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past its last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Unfinished executions that nobody runs: their owner is dead or its lease expired (and it is
/// not a live process on this host). A server takes them over when it starts, and keeps
/// looking, so that no execution stays orphaned while a server is up.
pub async fn orphans<S: Store>(store: &S, now: Time) -> wayline_store::Result<Vec<String>> {
    let unfinished = Filter {
        status: vec![Status::Pending, Status::Running, Status::Paused, Status::Escalated],
        ..Filter::default()
    };
    let records = store.list(unfinished).await?;
    Ok(records
        .into_iter()
        .filter(|record| plan_resume(record, now, false) == Resume::TakeOver)
        .map(|record| record.id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_one_is_recognised() {
        let me = this_process();
        assert!(!is_dead(&me));
        let host = hostname();
        assert!(is_dead(&format!("{host}:{}:1", std::process::id())), "same pid, other start time");
        assert!(is_dead(&format!("{host}:4000000:1")), "no such pid");
        // A child that exited and is not reaped yet (a zombie) is dead too.
        #[allow(clippy::disallowed_methods)]
        let mut child = std::process::Command::new("true").spawn().expect("true runs");
        let pid = child.id();
        let started = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        {
            assert!(std::time::Instant::now() < deadline, "the child did not exit");
            std::thread::yield_now();
        }
        let ticks = started
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(19))
            .unwrap_or("0");
        assert!(is_dead(&format!("{host}:{pid}:{ticks}")), "a zombie is dead");
        let _ = child.wait();
        assert!(!is_dead("elsewhere:1:1"), "another host cannot be judged");
        assert_eq!(liveness(&me), Liveness::Alive { pid: std::process::id() });
        assert_eq!(liveness("elsewhere:1:1"), Liveness::Elsewhere);
        assert_eq!(liveness("not an owner"), Liveness::Elsewhere);
    }
}
