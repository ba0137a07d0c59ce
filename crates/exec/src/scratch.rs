//! Where `$WAYLINE_OUTPUT` files live: one private directory shared by this process's command
//! attempts, and a name in it that no other attempt ever gets.
//!
//! A directory per attempt would be simpler, but creating and removing it are two journaled
//! metadata updates (about 80 µs on the development machine's ext4), as much as everything
//! else the executor does for a short step (docs/design.md §4). What it guaranteed still holds:
//! - the directory is created fresh with a random name and mode 0700, so no other user can
//!   read, plant or replace an output file;
//! - each attempt gets a name never handed out before in this process, so neither a leftover
//!   of an earlier attempt nor a concurrent attempt writes this attempt's file by accident
//!   (a process of the same user could do anything on purpose, as with a directory each);
//! - an attempt's file is removed when the attempt ends, on every path;
//! - the directory is removed once no thread that ran an attempt is left: every such thread
//!   keeps it alive until it exits (a runtime's worker threads at shutdown, the main thread at
//!   process exit), so a chain of steps reuses it instead of recreating it each time. Only a
//!   process killed outright leaves it behind, empty but for a file being written then.
//!
//! So that such leftovers do not pile up, the directory's name says which process made it:
//! `wayline-<pid>-<start time>-<pid namespace>-<random>`, the pid and start time as in an
//! execution's owner id. When a process makes its directory, it removes the ones of dead
//! processes of the same user in the same pid namespace, and only those: a name it cannot
//! read, another user's directory, a symlink or a live process's directory stays.

use std::cell::RefCell;
use std::fs::Permissions;
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once, Weak};

use rustix::fs::{Mode, OFlags};
use tempfile::TempDir;

/// The `$WAYLINE_OUTPUT` path of one attempt; dropping it removes the file.
pub(crate) struct OutputFile {
    path: PathBuf,
    /// The file was found missing after the process ended, so there is nothing to remove.
    absent: bool,
    /// Keeps the directory alive while the attempt runs.
    _directory: Arc<TempDir>,
}

impl OutputFile {
    /// A fresh name in the shared directory; the file itself is left to the process.
    pub(crate) fn new() -> io::Result<OutputFile> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let directory = shared()?;
        let number = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = directory.path().join(format!("output-{number}"));
        Ok(OutputFile { path, absent: false, _directory: directory })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens what the process wrote, `None` if it wrote nothing. Non-blocking, so a FIFO
    /// planted at the path cannot hang the attempt; the caller checks it is a regular file.
    pub(crate) fn open(&mut self) -> io::Result<Option<std::fs::File>> {
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        match rustix::fs::open(&self.path, flags, Mode::empty()) {
            Ok(fd) => Ok(Some(fd.into())),
            Err(rustix::io::Errno::NOENT) => {
                self.absent = true;
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if self.absent {
            return;
        }
        // A process may have made a directory of it; anything else is gone with one unlink.
        if let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() == io::ErrorKind::IsADirectory
        {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The directory while some thread holds it, so that threads share one.
static SHARED: Mutex<Weak<TempDir>> = Mutex::new(Weak::new());

thread_local! {
    /// This thread's hold on the shared directory, released when the thread exits. Also the
    /// lock-free way to it for every attempt after the thread's first.
    static HELD: RefCell<Option<Arc<TempDir>>> = const { RefCell::new(None) };
}

fn shared() -> io::Result<Arc<TempDir>> {
    // `try_with` fails only while this thread's locals are being destroyed; such a late
    // attempt gets the directory without keeping it.
    let held = HELD.try_with(|held| held.borrow().clone()).ok().flatten();
    // A long-idle directory may have been removed by a /tmp cleaner; start a new one then.
    if let Some(directory) = held.filter(|directory| is_directory(directory.path())) {
        return Ok(directory);
    }
    let directory = {
        let mut shared = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match shared.upgrade().filter(|directory| is_directory(directory.path())) {
            Some(directory) => directory,
            None => {
                let temp = std::env::temp_dir();
                let owner = Owner::this_process();
                let prefix = owner.map_or_else(|| "wayline-".to_owned(), Owner::prefix);
                let directory = Arc::new(
                    tempfile::Builder::new()
                        .prefix(&prefix)
                        .permissions(Permissions::from_mode(0o700))
                        .tempdir_in(&temp)?,
                );
                *shared = Arc::downgrade(&directory);
                // Once per process: the dead do not come back between two directories.
                static SWEPT: Once = Once::new();
                if let Some(owner) = owner {
                    SWEPT.call_once(|| remove_stale(&temp, owner));
                }
                directory
            }
        }
    };
    let _ = HELD.try_with(|held| *held.borrow_mut() = Some(Arc::clone(&directory)));
    Ok(directory)
}

fn is_directory(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|metadata| metadata.is_dir())
}

/// The process a scratch directory belongs to, as its name records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    pid: u32,
    /// Clock ticks since boot: with the pid, names one process even after its pid is reused.
    start: u64,
    /// The pid namespace's inode: a pid means nothing in another namespace (a container
    /// sharing this temporary directory), so no judgement is made there.
    namespace: u64,
}

impl Owner {
    /// This process, when /proc tells enough to recognise it later.
    fn this_process() -> Option<Owner> {
        let pid = std::process::id();
        let namespace = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
        Some(Owner { pid, start: start_time(pid)?, namespace })
    }

    fn prefix(self) -> String {
        format!("wayline-{}-{}-{}-", self.pid, self.start, self.namespace)
    }

    /// The owner in a directory name made by [`Owner::prefix`] and a random suffix.
    fn parse(name: &str) -> Option<Owner> {
        let mut parts = name.strip_prefix("wayline-")?.split('-');
        let (pid, start, namespace, random) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || random.is_empty() {
            return None;
        }
        Some(Owner {
            pid: pid.parse().ok()?,
            start: start.parse().ok()?,
            namespace: namespace.parse().ok()?,
        })
    }

    fn is_alive(self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Removes the scratch directories in `temp` that dead processes of this user left, seen
/// from `this` process's pid namespace.
fn remove_stale(temp: &Path, this: Owner) {
    let Ok(entries) = std::fs::read_dir(temp) else { return };
    let user = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let Some(owner) = entry.file_name().to_str().and_then(Owner::parse) else { continue };
        if owner.namespace != this.namespace || owner == this || owner.is_alive() {
            continue;
        }
        // Not followed: a symlink with such a name is no scratch directory.
        let Ok(metadata) = std::fs::symlink_metadata(entry.path()) else { continue };
        if metadata.is_dir() && metadata.uid() == user {
            // Never follows a symlink inside either; a failure leaves it for the next process.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat). The same
/// small read as the runtime's owner ids; this crate knows nothing of the runtime.
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
    fn the_name_records_the_owner() {
        let this = Owner::this_process().expect("/proc is there");
        assert!(this.is_alive());
        let name = format!("{}a1B2c3", this.prefix());
        assert_eq!(Owner::parse(&name), Some(this));
        for other in [
            "wayline-a1B2c3",
            "wayline-1-2-3-",
            "wayline-x-2-3-abc",
            "wayline-1-2-3-a-b",
            "other-1-2-3-a",
        ] {
            assert_eq!(Owner::parse(other), None, "{other}");
        }
        assert!(!Owner { start: this.start + 1, ..this }.is_alive(), "same pid, another start");
    }

    /// The whole life of the shared directory, on a thread of its own so that the test decides
    /// when that thread ends. One test, since every test of this binary shares the directory.
    #[test]
    fn the_directory_is_private_emptied_and_removed_with_the_last_thread() {
        // Only the end of a real thread runs its thread-local destructors.
        #[allow(clippy::disallowed_methods)]
        let thread = std::thread::spawn(|| {
            let mut first = OutputFile::new().unwrap();
            let second = OutputFile::new().unwrap();
            let directory = first.path().parent().unwrap().to_owned();
            assert_eq!(second.path().parent(), Some(directory.as_path()), "shared");
            assert_ne!(first.path(), second.path());
            let mode = std::fs::metadata(&directory).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);

            // One attempt wrote its file, the other made a directory of it.
            std::fs::write(first.path(), "k=v\n").unwrap();
            std::fs::create_dir(second.path()).unwrap();
            std::fs::write(second.path().join("inside"), "x").unwrap();
            assert!(first.open().unwrap().is_some());
            drop((first, second));
            assert_eq!(std::fs::read_dir(&directory).unwrap().count(), 0, "emptied");

            // Between attempts the directory stays; one removed behind our back is replaced.
            assert_eq!(OutputFile::new().unwrap().path().parent(), Some(directory.as_path()));
            std::fs::remove_dir(&directory).unwrap();
            let mut third = OutputFile::new().unwrap();
            let replacement = third.path().parent().unwrap().to_owned();
            assert_ne!(replacement, directory);
            assert!(third.open().unwrap().is_none(), "an unwritten file is no file");
            drop(third);
            replacement
        });
        let directory = thread.join().unwrap();
        assert!(!directory.exists(), "{} outlived the last thread using it", directory.display());
    }
}
