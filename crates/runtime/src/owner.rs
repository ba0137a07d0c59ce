//! Who owns an execution: `host:pid:start`, so that on the same host a dead owner can be
//! recognised at once (DESIGN.md §1.4), even if its pid was reused.

/// This process's owner id.
pub fn this_process() -> String {
    let pid = std::process::id();
    format!("{}:{pid}:{}", hostname(), start_time(pid).unwrap_or(0))
}

/// Whether the owner is a process on this host that no longer exists.
pub fn is_dead(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(start), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if host != hostname() {
        return false; // another host: only the lease expiry can tell
    }
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else { return false };
    match start_time(pid) {
        None => true,                    // no such process
        Some(actual) => actual != start, // the pid was reused by another process
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past its last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
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
        assert!(!is_dead("elsewhere:1:1"), "another host cannot be judged");
    }
}
