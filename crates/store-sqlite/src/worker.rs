//! The threads that own the connections: one writer (group commit), a few readers, and a
//! watcher that notices other processes' writes.
//!
//! The watcher costs nothing while it waits: it sleeps on inotify events for the database and
//! its write-ahead log (other processes write them with `write(2)`), and only then asks
//! `PRAGMA data_version` whether the database really changed. Where inotify is unavailable it
//! polls instead.
//!
//! Ownership: [`Workers`] holds the sending ends of every thread's channel. When the last
//! [`crate::SqliteStore`] handle drops it, the channels disconnect and each thread finishes
//! what it was given and ends, closing its connection. Nothing else keeps them alive.

use std::ffi::OsString;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::fs::inotify;
use tokio::sync::{oneshot, watch};
use wayline_store::{Changes, Error, Result};

use crate::{Options, db_error, open, shown};

/// Jobs taken into one transaction at most; a bound on how long one commit holds the lock.
const MAX_BATCH: usize = 512;

pub(crate) struct Workers {
    pub(crate) path: PathBuf,
    writer: Sender<Box<dyn Job>>,
    readers: Sender<Read>,
    /// What the watcher thread shares with the handles.
    watch: Arc<Watch>,
    /// Bumped after every write seen (ours at once, other processes' when the watcher sees
    /// them).
    signal: Arc<watch::Sender<u64>>,
    /// Every thread holds a sender; all are gone once every thread has ended.
    running: watch::Receiver<()>,
}

impl Workers {
    /// Opens the connections and starts the threads. The opening (checks, migrations) runs on
    /// the writer thread, so that a busy database does not block the caller's executor.
    pub(crate) async fn start(path: PathBuf, options: Options) -> Result<Workers> {
        let (writer, jobs) = mpsc::channel::<Box<dyn Job>>();
        let (ready, opened) = oneshot::channel::<Result<(Vec<Connection>, Connection)>>();
        let signal = Arc::new(watch::Sender::new(0u64));
        let (alive, running) = watch::channel(());
        // The readers and the watcher hold `others`; the writer closes its connection last,
        // after theirs, so that closing checkpoints the WAL and removes it.
        let (others, others_ended) = mpsc::channel::<()>();

        let writer_path = path.clone();
        let writer_options = options.clone();
        let writer_signal = Arc::clone(&signal);
        let writer_alive = alive.clone();
        spawn("wayline-sqlite-writer", &path, move || {
            let _alive = writer_alive;
            let opened = open::writer(&writer_path, &writer_options).and_then(|conn| {
                let readers = (0..writer_options.readers.max(1))
                    .map(|_| open::reader(&writer_path, &writer_options))
                    .collect::<Result<Vec<_>>>()?;
                let watcher = open::reader(&writer_path, &writer_options)?;
                Ok((conn, readers, watcher))
            });
            match opened {
                Ok((mut conn, readers, watcher)) => {
                    if ready.send(Ok((readers, watcher))).is_ok() {
                        write_loop(&mut conn, &jobs, &writer_path, &writer_signal);
                    }
                    // Returns once every other thread dropped its sender; then `conn` closes.
                    let _ = others_ended.recv();
                }
                Err(error) => {
                    let _ = ready.send(Err(error));
                }
            }
        })?;
        let stopped = || {
            Error::Unavailable(format!(
                "the SQLite writer for {} stopped while opening",
                shown(&path)
            ))
        };
        let (reader_connections, watcher) = opened.await.map_err(|_| stopped())??;

        let (readers, reads) = mpsc::channel::<Read>();
        let reads = Arc::new(Mutex::new(reads));
        for (index, conn) in reader_connections.into_iter().enumerate() {
            let reads = Arc::clone(&reads);
            let (alive, other) = (alive.clone(), others.clone());
            spawn(&format!("wayline-sqlite-reader-{index}"), &path, move || {
                // Declared after the tokens, `conn` is closed before they are dropped.
                let (_alive, _other, conn) = (alive, other, conn);
                read_loop(&conn, &reads)
            })?;
        }

        let doorbell = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|error| {
                Error::Unavailable(format!(
                    "cannot watch the database {} (eventfd: {error})",
                    shown(&path)
                ))
            })?;
        let watch = Arc::new(Watch {
            waiters: AtomicUsize::new(0),
            idle: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            doorbell,
        });
        let watcher_watch = Arc::clone(&watch);
        let watcher_signal = Arc::clone(&signal);
        let interval = options.poll_interval;
        let files = Files::new(&path);
        spawn("wayline-sqlite-watcher", &path, move || {
            let (_alive, _other, watcher) = (alive, others, watcher);
            watch_loop(&watcher, &watcher_watch, files, &watcher_signal, interval)
        })?;

        Ok(Workers { path, writer, readers, watch, signal, running })
    }

    /// Runs `work` in the writer's next transaction; resolves once that transaction committed.
    /// `work` may run twice: when another job of its batch fails, the batch is retried one job
    /// at a time.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Box::new(Task { work, output: None, reply }))
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// Runs `work` on a reader connection.
    pub(crate) async fn read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let path = self.path.clone();
        let job: Read = Box::new(move |conn| {
            let _ = reply.send(work(conn).unwrap_or_else(|error| Err(db_error(&path, &error))));
        });
        self.readers.send(job).map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// A wait for changes; the watcher looks for other processes' writes while one lives.
    pub(crate) fn changes(&self) -> Changes {
        let receiver = self.signal.subscribe();
        let waiting = Waiting::start(Arc::clone(&self.watch));
        Changes::new(receiver, Some(Box::new(waiting)))
    }

    /// Resolves once every thread has ended and closed its connection, which happens after
    /// the last handle is dropped.
    pub(crate) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut running = self.running.clone();
        async move { while running.changed().await.is_ok() {} }
    }

    fn stopped(&self) -> Error {
        Error::Unavailable(format!(
            "the SQLite worker for {} stopped unexpectedly; restart wayline",
            shown(&self.path)
        ))
    }
}

/// Starts one of the store's threads. Thread ownership: see the module docs; each thread ends
/// when its channel disconnects, that is when the last store handle is dropped.
fn spawn(name: &str, path: &Path, run: impl FnOnce() + Send + 'static) -> Result<()> {
    // A storage driver's own thread: the accepted exception to "only the runtime spawns".
    // `Builder::spawn` (a named thread; an error instead of a panic when the OS refuses) is
    // not in clippy.toml today; the allow keeps this the one exempt call site if it is added.
    #[allow(clippy::disallowed_methods)]
    std::thread::Builder::new().name(name.to_owned()).spawn(run).map(drop).map_err(|error| {
        Error::Unavailable(format!(
            "cannot start a thread for the database {}: {error}",
            shown(path)
        ))
    })
}

impl Drop for Workers {
    fn drop(&mut self) {
        // The last handle is gone: the watcher may be asleep, wake it to end.
        self.watch.closing.store(true, Ordering::SeqCst);
        self.watch.ring();
    }
}

/// What the watcher thread and the store's handles share.
struct Watch {
    /// Live [`Changes`]: the watcher looks for writes only while there is one.
    waiters: AtomicUsize,
    /// The watcher sleeps until the doorbell rings (nobody waits).
    idle: AtomicBool,
    /// The store is closing: the watcher ends.
    closing: AtomicBool,
    /// An eventfd that wakes the watcher.
    doorbell: OwnedFd,
}

impl Watch {
    fn ring(&self) {
        // Fails only when the counter is full, and then the watcher is woken anyway.
        let _ = rustix::io::write(&self.doorbell, &1u64.to_ne_bytes());
    }

    /// Empties the doorbell after waking.
    fn answer(&self) {
        let mut buffer = [0u8; 8];
        let _ = rustix::io::read(&self.doorbell, &mut buffer);
    }
}

/// Counts a live [`Changes`] and wakes an idle watcher for it.
struct Waiting(Arc<Watch>);

impl Waiting {
    fn start(watch: Arc<Watch>) -> Waiting {
        watch.waiters.fetch_add(1, Ordering::SeqCst);
        if watch.idle.load(Ordering::SeqCst) {
            watch.ring();
        }
        Waiting(watch)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// The writer.

/// A write waiting for its transaction.
trait Job: Send {
    /// Runs inside the batch transaction. `Ok(false)`: refused (not found, fenced, …), so its
    /// savepoint is rolled back. `Err`: the database failed.
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<bool>;

    /// Answers the caller: its own outcome once the transaction committed, or `failure`.
    fn answer(self: Box<Self>, failure: Option<Error>);
}

struct Task<T, F> {
    work: F,
    output: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Task<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> rusqlite::Result<Result<T>> + Send,
{
    fn run(&mut self, conn: &Connection) -> rusqlite::Result<bool> {
        let output = (self.work)(conn)?;
        let accepted = output.is_ok();
        self.output = Some(output);
        Ok(accepted)
    }

    fn answer(self: Box<Self>, failure: Option<Error>) {
        let answer = match (failure, self.output) {
            (Some(error), _) => Err(error),
            (None, Some(output)) => output,
            (None, None) => Err(Error::Unavailable("the write was not carried out".into())),
        };
        let _ = self.reply.send(answer);
    }
}

fn write_loop(
    conn: &mut Connection,
    jobs: &Receiver<Box<dyn Job>>,
    path: &Path,
    signal: &watch::Sender<u64>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        write_batch(conn, batch, path, signal);
    }
}

/// Where a batch failed.
enum Failure {
    /// Starting or committing the transaction: every job of it failed the same way.
    Transaction(rusqlite::Error),
    /// One job's statements: the others may be fine on their own.
    Job(rusqlite::Error),
}

/// Commits a batch, then wakes this process's waiters, then answers the callers (in this
/// order, so that a caller that goes on to wait in `changed()` is not woken by its own write).
fn write_batch(
    conn: &mut Connection,
    mut batch: Vec<Box<dyn Job>>,
    path: &Path,
    signal: &watch::Sender<u64>,
) {
    let wake = || signal.send_modify(|version| *version = version.wrapping_add(1));
    match transaction(conn, &mut batch) {
        Ok(()) => {
            wake();
            batch.into_iter().for_each(|job| job.answer(None));
        }
        Err(Failure::Job(_)) if batch.len() > 1 => {
            // Find the culprit: each job alone, in its own transaction.
            for job in batch {
                let mut single = vec![job];
                let failure = transaction(conn, &mut single).err();
                wake();
                let error = failure.map(|(Failure::Transaction(error) | Failure::Job(error))| {
                    db_error(path, &error)
                });
                single.into_iter().for_each(|job| job.answer(error.clone()));
            }
        }
        Err(Failure::Transaction(error) | Failure::Job(error)) => {
            let error = db_error(path, &error);
            batch.into_iter().for_each(|job| job.answer(Some(error.clone())));
        }
    }
}

fn transaction(conn: &mut Connection, batch: &mut [Box<dyn Job>]) -> Result<(), Failure> {
    let run = |conn: &Connection, sql: &str| {
        conn.prepare_cached(sql).and_then(|mut statement| statement.execute([]))
    };
    run(conn, "BEGIN IMMEDIATE").map_err(Failure::Transaction)?;
    for job in batch.iter_mut() {
        let step = run(conn, "SAVEPOINT job").and_then(|_| match job.run(conn)? {
            true => run(conn, "RELEASE job"),
            false => run(conn, "ROLLBACK TO job").and_then(|_| run(conn, "RELEASE job")),
        });
        if let Err(error) = step {
            rollback(conn);
            return Err(Failure::Job(error));
        }
    }
    run(conn, "COMMIT").map(drop).map_err(|error| {
        rollback(conn);
        Failure::Transaction(error)
    })
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        // Fails only when SQLite already rolled back by itself.
        let _ = conn.execute_batch("ROLLBACK");
    }
}

// ---------------------------------------------------------------------------------------------
// Readers and the watcher.

type Read = Box<dyn FnOnce(&Connection) + Send>;

fn read_loop(conn: &Connection, reads: &Mutex<Receiver<Read>>) {
    loop {
        // Hold the lock only while taking a job, so the other readers take the next ones.
        let next = reads.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv();
        match next {
            Ok(read) => read(conn),
            Err(_) => return,
        }
    }
}

/// The files other processes write when they commit: the database and its write-ahead log.
/// Each is watched for writes; the directory only for files appearing in it (the log comes
/// and goes), so that writes to unrelated files beside the database (a busy `/tmp`, a log
/// file) never wake the watcher.
struct Files {
    directory: PathBuf,
    /// The database's file name, then its log's.
    names: [OsString; 2],
}

/// The inotify instance and its watches.
struct Watches {
    fd: OwnedFd,
    directory: i32,
}

impl Files {
    fn new(path: &Path) -> Files {
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        let mut wal = name.clone();
        wal.push("-wal");
        Files { directory, names: [name, wal] }
    }

    /// Watches for writes to the database's files; `None` where inotify fails (then the
    /// watcher polls).
    fn watch(&self) -> Option<Watches> {
        let fd =
            inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).ok()?;
        let appearing = inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_TO;
        let directory = inotify::add_watch(&fd, &self.directory, appearing).ok()?;
        let watches = Watches { fd, directory };
        for name in &self.names {
            // A log that does not exist yet is watched once it appears.
            self.watch_file(&watches, name);
        }
        Some(watches)
    }

    fn watch_file(&self, watches: &Watches, name: &OsString) {
        let _ = inotify::add_watch(
            &watches.fd,
            self.directory.join(name),
            inotify::WatchFlags::MODIFY | inotify::WatchFlags::CLOSE_WRITE,
        );
    }

    /// Reads the pending events; whether one says the database may have changed.
    fn drain(&self, watches: &Watches) -> bool {
        let mut buffer = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&watches.fd, &mut buffer);
        let mut changed = false;
        let mut appeared = Vec::new();
        while let Ok(event) = reader.next() {
            if event.wd() != watches.directory {
                // A write to the database or its log, or an overflowed queue.
                changed = true;
                continue;
            }
            let name = event.file_name().map(|name| std::ffi::OsStr::from_bytes(name.to_bytes()));
            if let Some(known) = self.names.iter().find(|known| name.is_some_and(|n| n == *known)) {
                appeared.push(known.clone());
                changed = true;
            }
        }
        for name in &appeared {
            self.watch_file(watches, name);
        }
        changed
    }
}

/// How long the watcher lets writes gather before it looks: other processes' writes are
/// noticed this much later, and a busy database wakes it at most this often.
const DEBOUNCE: Duration = Duration::from_millis(5);

/// How long the watcher trusts inotify before asking the database anyway.
const SAFETY_NET: Duration = Duration::from_secs(2);

/// Bumps `signal` when `PRAGMA data_version` (which changes when another connection, in this
/// process or another, commits) moves, looking while someone waits: when inotify reports a
/// write to the database's files, or every `interval` where inotify is unavailable.
fn watch_loop(
    conn: &Connection,
    watch: &Watch,
    files: Files,
    signal: &watch::Sender<u64>,
    interval: Duration,
) {
    let version = || conn.query_row("PRAGMA data_version", [], |row| row.get::<_, i64>(0)).ok();
    let inotify = files.watch();
    let mut last = version();
    loop {
        if watch.closing.load(Ordering::SeqCst) {
            return;
        }
        if watch.waiters.load(Ordering::SeqCst) == 0 {
            // Idle until someone waits; changes from before they started waiting are theirs
            // to read, not to be woken for.
            watch.idle.store(true, Ordering::SeqCst);
            if watch.waiters.load(Ordering::SeqCst) == 0 {
                sleep(watch, None, None);
            }
            watch.idle.store(false, Ordering::SeqCst);
            if let Some(watches) = &inotify {
                files.drain(watches);
            }
            last = version();
            continue;
        }
        let look = match &inotify {
            Some(watches) => match sleep(watch, Some(&watches.fd), Some(SAFETY_NET)) {
                Woken::Files => {
                    // A commit is several writes, and a busy writer (this process's own)
                    // commits again within a millisecond: gather them into one look.
                    std::thread::sleep(DEBOUNCE);
                    files.drain(watches)
                }
                Woken::Timeout => true,
                Woken::Doorbell => false,
            },
            None => {
                sleep(watch, None, Some(interval));
                true
            }
        };
        if !look {
            continue;
        }
        let now = version();
        if now != last {
            last = now;
            signal.send_modify(|version| *version = version.wrapping_add(1));
        }
    }
}

enum Woken {
    Files,
    Doorbell,
    Timeout,
}

/// Sleeps until the doorbell rings, `files` has events, or `timeout` passes.
fn sleep(watch: &Watch, files: Option<&OwnedFd>, timeout: Option<Duration>) -> Woken {
    let timeout = timeout.and_then(|timeout| rustix::time::Timespec::try_from(timeout).ok());
    let mut fds = vec![PollFd::new(&watch.doorbell, PollFlags::IN)];
    if let Some(files) = files {
        fds.push(PollFd::new(files, PollFlags::IN));
    }
    match rustix::event::poll(&mut fds, timeout.as_ref()) {
        Ok(0) => Woken::Timeout,
        Ok(_) if !fds[0].revents().is_empty() => {
            watch.answer();
            Woken::Doorbell
        }
        Ok(_) => Woken::Files,
        // EINTR and the like: look again.
        Err(_) => Woken::Timeout,
    }
}
