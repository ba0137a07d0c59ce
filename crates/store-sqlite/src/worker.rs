//! The threads that own the connections: one writer (group commit), a few readers, and a
//! watcher that notices other processes' writes.
//!
//! A write runs on the caller's thread when it finds the writing connection idle and the
//! database unlocked: a transaction of a few rows takes tens of microseconds, less than
//! waking the writer thread and being woken by it, and an engine that commits before every
//! step pays that on each one. Otherwise (a batch in progress, another process's
//! transaction, a checkpoint) it is queued for the writer thread, which waits with the busy
//! timeout and commits everything queued at once. Checkpoints, the one slow part of a commit
//! (copying the log into the database and syncing it), run on the writer thread, so no
//! caller's thread stalls on the disk; writes made meanwhile wait for it asynchronously.
//!
//! The watcher costs nothing while it waits: it sleeps on inotify events for the database and
//! its write-ahead log (other processes write them with `write(2)`), and only then asks
//! `PRAGMA data_version` whether the database really changed. It asks the writing connection,
//! whose version moves with other connections' commits only: this process's own writes wake
//! its waiters when they commit, not a second time through the watcher. Where inotify is
//! unavailable it polls instead.
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

/// Pages in the write-ahead log after which the writer thread checkpoints it (SQLite's own
/// automatic checkpoint, which would run inside whichever commit crosses it, is replaced).
const CHECKPOINT_PAGES: i32 = 1000;

pub(crate) struct Workers {
    pub(crate) path: PathBuf,
    /// The writing connection, shared by the writer thread and callers that find it idle.
    connection: Arc<Writing>,
    writer: Sender<Work>,
    readers: Sender<Read>,
    /// What the watcher thread shares with the handles.
    watch: Arc<Watch>,
    /// Bumped after every write seen (ours at once, other processes' when the watcher sees
    /// them).
    signal: Arc<watch::Sender<u64>>,
    /// Every thread holds a sender; all are gone once every thread has ended.
    running: watch::Receiver<()>,
}

/// The writing connection and what a write on the caller's thread needs beside it.
struct Writing {
    conn: Mutex<Connection>,
    busy_timeout: Duration,
    /// Set by the log hook when the log has grown past [`CHECKPOINT_PAGES`].
    checkpoint_due: Arc<AtomicBool>,
}

impl Writing {
    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The connection if nobody uses it at this moment.
    fn try_lock(&self) -> Option<std::sync::MutexGuard<'_, Connection>> {
        match self.conn.try_lock() {
            Ok(conn) => Some(conn),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// What the writer thread is given.
enum Work {
    Job(Box<dyn Job>),
    /// A commit on a caller's thread filled the log: checkpoint it.
    Checkpoint,
}

impl Workers {
    /// Opens the connections and starts the threads. The opening (checks, migrations) runs on
    /// the writer thread, so that a busy database does not block the caller's executor.
    pub(crate) async fn start(path: PathBuf, options: Options) -> Result<Workers> {
        let (writer, jobs) = mpsc::channel::<Work>();
        let (ready, opened) = oneshot::channel::<Result<(Arc<Writing>, Vec<Connection>)>>();
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
            let opened = open::writer(&writer_path, &writer_options).and_then(|mut conn| {
                let checkpoint_due = Arc::new(AtomicBool::new(false));
                let due = Arc::clone(&checkpoint_due);
                conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
                    if pages >= CHECKPOINT_PAGES {
                        due.store(true, Ordering::SeqCst);
                    }
                    Ok(())
                }))
                .map_err(|error| db_error(&writer_path, &error))?;
                let readers = (0..writer_options.readers.max(1))
                    .map(|_| open::reader(&writer_path, &writer_options))
                    .collect::<Result<Vec<_>>>()?;
                let writing = Writing {
                    conn: Mutex::new(conn),
                    busy_timeout: writer_options.busy_timeout,
                    checkpoint_due,
                };
                Ok((Arc::new(writing), readers))
            });
            match opened {
                Ok((writing, readers)) => {
                    if ready.send(Ok((Arc::clone(&writing), readers))).is_ok() {
                        write_loop(&writing, &jobs, &writer_path, &writer_signal);
                    }
                    // Returns once every other thread dropped its sender; then, with the
                    // last handle gone, the connection closes.
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
        let (connection, reader_connections) = opened.await.map_err(|_| stopped())??;

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
        let watcher_connection = Arc::clone(&connection);
        spawn("wayline-sqlite-watcher", &path, move || {
            // Declared after the tokens, the connection's share is dropped before them.
            let (_alive, _other, writing) = (alive, others, watcher_connection);
            watch_loop(&writing, &watcher_watch, files, &watcher_signal, interval)
        })?;

        Ok(Workers { path, connection, writer, readers, watch, signal, running })
    }

    /// Runs `work` in a transaction of its own on this thread when the writing connection is
    /// idle and the database unlocked, else in the writer's next transaction; resolves once
    /// that transaction committed. `work` may run twice: when another job of its batch fails,
    /// the batch is retried one job at a time.
    ///
    /// For short writes only: a long one (a sweep over many rows) goes through
    /// [`Workers::write_queued`], so that it does not hold up the caller's thread.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Task { work, output: None, reply });
        if let Some(job) = self.write_here(job) {
            self.writer.send(Work::Job(job)).map_err(|_| self.stopped())?;
        }
        answer.await.map_err(|_| self.stopped())?
    }

    /// Runs `work` in the writer thread's next transaction.
    pub(crate) async fn write_queued<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Work::Job(Box::new(Task { work, output: None, reply })))
            .map_err(|_| self.stopped())?;
        answer.await.map_err(|_| self.stopped())?
    }

    /// Commits `job` on this thread if the connection is idle and no other process holds the
    /// database's write lock (the transaction starts without waiting); otherwise hands the
    /// job back, for the writer thread.
    fn write_here(&self, job: Box<dyn Job>) -> Option<Box<dyn Job>> {
        let Some(mut conn) = self.connection.try_lock() else { return Some(job) };
        let begun = conn
            .busy_timeout(Duration::ZERO)
            .and_then(|()| conn.prepare_cached("BEGIN IMMEDIATE")?.execute([]));
        let restored = conn.busy_timeout(self.connection.busy_timeout);
        match begun.and(restored.map(|()| 0)) {
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) =>
            {
                rollback(&conn);
                return Some(job);
            }
            Err(error) => {
                rollback(&conn);
                job.answer(Some(db_error(&self.path, &error)));
                return None;
            }
        }
        write_batch(&mut conn, vec![job], &self.path, &self.signal, Begun::Yes);
        drop(conn);
        if self.connection.checkpoint_due.load(Ordering::SeqCst) {
            // Fails only when the writer thread is gone, and then nobody writes any more.
            let _ = self.writer.send(Work::Checkpoint);
        }
        None
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

fn write_loop(writing: &Writing, jobs: &Receiver<Work>, path: &Path, signal: &watch::Sender<u64>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(work) = next.take() {
            if let Work::Job(job) = work {
                batch.push(job);
            }
            if batch.len() < MAX_BATCH {
                next = jobs.try_recv().ok();
            }
        }
        let mut conn = writing.lock();
        if !batch.is_empty() {
            write_batch(&mut conn, batch, path, signal, Begun::No);
        }
        if writing.checkpoint_due.swap(false, Ordering::SeqCst) {
            // On the writing connection, holding it: with no write in between, the checkpoint
            // gets through the whole log, and the next write starts it again from the
            // beginning instead of growing it. Writes meanwhile wait (asynchronously).
            checkpoint(&conn, path);
        }
    }
}

/// Copies the write-ahead log into the database as far as readers allow, without waiting for
/// them (the log restarts from its beginning once a checkpoint got through all of it).
fn checkpoint(conn: &Connection, path: &Path) {
    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    });
    match done {
        Ok((pages, copied)) => tracing::debug!(pages, copied, "checkpointed {}", shown(path)),
        Err(error) => tracing::warn!("cannot checkpoint {}: {error}", shown(path)),
    }
}

/// Whether the batch's transaction was already started (by a caller that found the
/// connection idle).
#[derive(Clone, Copy)]
enum Begun {
    Yes,
    No,
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
    begun: Begun,
) {
    let wake = || signal.send_modify(|version| *version = version.wrapping_add(1));
    match transaction(conn, &mut batch, begun) {
        Ok(()) => {
            wake();
            batch.into_iter().for_each(|job| job.answer(None));
        }
        Err(Failure::Job(_)) if batch.len() > 1 => {
            // Find the culprit: each job alone, in its own transaction.
            for job in batch {
                let mut single = vec![job];
                let failure = transaction(conn, &mut single, Begun::No).err();
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

fn transaction(
    conn: &mut Connection,
    batch: &mut [Box<dyn Job>],
    begun: Begun,
) -> Result<(), Failure> {
    let run = |conn: &Connection, sql: &str| {
        conn.prepare_cached(sql).and_then(|mut statement| statement.execute([]))
    };
    if let Begun::No = begun {
        run(conn, "BEGIN IMMEDIATE").map_err(Failure::Transaction)?;
    }
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

/// Bumps `signal` when the writing connection's `PRAGMA data_version` (which changes when
/// another process commits) moves, looking while someone waits: when inotify reports a write
/// to the database's files, or every `interval` where inotify is unavailable.
fn watch_loop(
    writing: &Writing,
    watch: &Watch,
    files: Files,
    signal: &watch::Sender<u64>,
    interval: Duration,
) {
    let version =
        || writing.lock().query_row("PRAGMA data_version", [], |row| row.get::<_, i64>(0)).ok();
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
