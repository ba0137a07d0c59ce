//! wayline's embedded store: journals, leases, requests and logs in one SQLite file.
//!
//! Several processes may share the file (a running engine, `wayline pause`, `wayline list`):
//! the database runs in WAL mode, every write transaction starts with `BEGIN IMMEDIATE` (so
//! a reader never has to upgrade to a writer, which is what deadlocks), and a busy timeout
//! makes a writer wait for another process's transaction instead of failing.
//!
//! Inside a process there is one writing connection. A write finding it idle (and the file
//! not locked by another process) commits at once on the caller's thread, which spares two
//! thread hand-offs per commit; otherwise it is queued for the writer thread, which takes
//! everything queued and commits it in one transaction (group commit across executions and
//! across callers), each job in its own savepoint so that one refused job does not undo the
//! others. The writer thread also checkpoints the write-ahead log, so no caller waits on the
//! disk for it. Reads run on a small pool of reader threads with their own connections, and a
//! watcher thread notices other processes' writes (woken by inotify, then asking `PRAGMA
//! data_version`) while someone waits for [`Store::changes`].
//!
//! The threads belong to the store: they end when the last [`SqliteStore`] handle is dropped.
//!
//! ```
//! use wayline_store::Store;
//! use wayline_store_sqlite::{Options, SqliteStore};
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store = SqliteStore::open(dir.path().join("wayline.db"), Options::default()).await.unwrap();
//! assert!(store.list(Default::default()).await.unwrap().is_empty());
//! # });
//! ```

// A library reports through `tracing` (or its return values); only the binary writes to the
// standard streams.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod open;
mod ops;
mod worker;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wayline_journal::{Event, Time};
use wayline_store::{
    Changes, Commit, Error, ExecutionRecord, Filter, Lease, LogLine, NewExecution, Request, Result,
    Store, StoredRequest, TokenRecord, WorkflowVersion,
};

pub use open::SCHEMA_VERSION;

/// How hard SQLite works to make a commit survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Commits survive a crash of the process (`kill -9`) but the last ones may be lost when
    /// the machine loses power. Much faster: WAL commits do not wait for the disk.
    #[default]
    Normal,
    /// Every commit waits until it is on disk.
    Full,
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct Options {
    pub synchronous: Synchronous,
    /// How long a write waits for another process's transaction before giving up with
    /// [`Error::Unavailable`].
    pub busy_timeout: Duration,
    /// Reader threads (each with its own connection).
    pub readers: usize,
    /// How often [`Store::changes`] looks for other processes' writes where inotify is not
    /// available (elsewhere, the watcher wakes on writes to the files).
    pub poll_interval: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            synchronous: Synchronous::Normal,
            busy_timeout: Duration::from_secs(10),
            readers: 2,
            poll_interval: Duration::from_millis(10),
        }
    }
}

/// A handle on an open SQLite database; clones share the connections and threads.
#[derive(Clone)]
pub struct SqliteStore {
    workers: Arc<worker::Workers>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.workers.path).finish()
    }
}

impl SqliteStore {
    /// Opens the database at `path` and brings its schema up to date. A missing file is
    /// created, readable by its user only (0600); a missing directory is an error.
    ///
    /// Errors: [`Error::Unavailable`] when the file or its directory cannot be created or
    /// written; [`Error::Corrupt`] when the file is not a wayline SQLite database;
    /// [`Error::SchemaTooNew`] when a newer wayline wrote it (the file is left untouched).
    pub async fn open(path: impl AsRef<Path>, options: Options) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let workers = worker::Workers::start(path, options).await?;
        Ok(SqliteStore { workers: Arc::new(workers) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.workers.path
    }

    /// Resolves once the store's threads have ended and closed the database, which happens
    /// when the last handle is dropped. Keep the future, drop the handles, then await it to
    /// exit with the file closed cleanly (the WAL checkpointed):
    ///
    /// ```
    /// # use wayline_store_sqlite::{Options, SqliteStore};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = SqliteStore::open(dir.path().join("wayline.db"), Options::default()).await.unwrap();
    /// let closed = store.closed();
    /// drop(store);
    /// closed.await;
    /// # });
    /// ```
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.workers.closed()
    }

    /// The settings the writing connection runs with, as SQLite reports them (for
    /// diagnostics and tests).
    pub async fn settings(&self) -> Result<Settings> {
        self.workers
            .write(|conn| {
                let journal_mode: String =
                    conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
                let synchronous: i64 =
                    conn.pragma_query_value(None, "synchronous", |row| row.get(0))?;
                let foreign_keys: bool =
                    conn.pragma_query_value(None, "foreign_keys", |row| row.get(0))?;
                let busy_timeout: u64 =
                    conn.pragma_query_value(None, "busy_timeout", |row| row.get(0))?;
                let schema_version: i64 =
                    conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
                Ok(Ok(Settings {
                    journal_mode,
                    synchronous: match synchronous {
                        0 => "off",
                        1 => "normal",
                        2 => "full",
                        _ => "extra",
                    },
                    foreign_keys,
                    busy_timeout: Duration::from_millis(busy_timeout),
                    schema_version,
                }))
            })
            .await
    }
}

/// What [`SqliteStore::settings`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `wal`.
    pub journal_mode: String,
    /// `normal` or `full`.
    pub synchronous: &'static str,
    pub foreign_keys: bool,
    pub busy_timeout: Duration,
    pub schema_version: i64,
}

impl Store for SqliteStore {
    async fn create(&self, execution: NewExecution, events: Vec<Event>) -> Result<Lease> {
        wayline_store::check_sequence(&execution.id, 0, events.iter().map(|e| e.seq))?;
        let events = ops::encode(&events)?;
        self.workers.write(move |conn| ops::create(conn, &execution, &events)).await
    }

    async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<Result<()>>> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        let commits = commits.into_iter().map(ops::Encoded::new).collect::<Result<Vec<_>>>()?;
        self.workers.write(move |conn| ops::commit(conn, &commits).map(Ok)).await
    }

    async fn get(&self, id: &str) -> Result<ExecutionRecord> {
        let id = id.to_owned();
        self.workers.read(move |conn| ops::get(conn, &id)).await
    }

    async fn by_idempotency_key(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_owned();
        self.workers.read(move |conn| ops::by_idempotency_key(conn, &key).map(Ok)).await
    }

    async fn resolve(&self, prefix: &str) -> Result<String> {
        let prefix = prefix.to_owned();
        self.workers.read(move |conn| ops::resolve(conn, &prefix)).await
    }

    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>> {
        let id = id.to_owned();
        self.workers.read(move |conn| ops::events(conn, &id, after, limit)).await
    }

    async fn list(&self, filter: Filter) -> Result<Vec<ExecutionRecord>> {
        self.workers.read(move |conn| ops::list(conn, &filter)).await
    }

    async fn acquire(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        now: Time,
        dead_owner: Option<&str>,
    ) -> Result<Lease> {
        let (id, owner, dead_owner) =
            (id.to_owned(), owner.to_owned(), dead_owner.map(str::to_owned));
        self.workers
            .write(move |conn| {
                ops::acquire(conn, &id, &owner, now.after(ttl), now, dead_owner.as_deref())
            })
            .await
    }

    async fn renew(&self, leases: Vec<Lease>, ttl: Duration, now: Time) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        self.workers.write(move |conn| ops::renew(conn, &leases, now.after(ttl)).map(Ok)).await
    }

    async fn release(&self, lease: Lease) -> Result<()> {
        self.workers.write(move |conn| ops::release(conn, &lease).map(Ok)).await
    }

    async fn request(&self, id: &str, request: Request, now: Time) -> Result<u64> {
        let id = id.to_owned();
        let body = ops::to_json(&request)?;
        self.workers.write(move |conn| ops::request(conn, &id, &body, now)).await
    }

    async fn requests(&self, ids: Vec<String>) -> Result<Vec<StoredRequest>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ops::to_json(&ids)?;
        self.workers.read(move |conn| ops::requests(conn, &ids)).await
    }

    async fn append_logs(&self, lines: Vec<LogLine>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.workers.write(move |conn| ops::append_logs(conn, &lines).map(Ok)).await
    }

    async fn logs(
        &self,
        id: &str,
        step: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>> {
        let (id, step) = (id.to_owned(), step.map(str::to_owned));
        self.workers.read(move |conn| ops::logs(conn, &id, step.as_deref(), after, limit)).await
    }

    async fn put_workflow(
        &self,
        name: &str,
        source: &str,
        now: Time,
    ) -> Result<(WorkflowVersion, bool)> {
        let (name, source) = (name.to_owned(), source.to_owned());
        self.workers.write(move |conn| ops::put_workflow(conn, &name, &source, now).map(Ok)).await
    }

    async fn workflow_versions(&self, name: &str) -> Result<Vec<WorkflowVersion>> {
        let name = name.to_owned();
        self.workers.read(move |conn| ops::workflow_versions(conn, &name)).await
    }

    async fn workflows(&self) -> Result<Vec<WorkflowVersion>> {
        self.workers.read(move |conn| ops::workflows(conn).map(Ok)).await
    }

    async fn delete_workflow(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.workers.write(move |conn| ops::delete_workflow(conn, &name).map(Ok)).await
    }

    async fn add_token(&self, token: TokenRecord) -> Result<()> {
        self.workers.write(move |conn| ops::add_token(conn, &token)).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.workers.read(move |conn| ops::tokens(conn).map(Ok)).await
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let id = id.to_owned();
        self.workers.read(move |conn| ops::token(conn, &id).map(Ok)).await
    }

    async fn revoke_token(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.workers.write(move |conn| ops::revoke_token(conn, &name).map(Ok)).await
    }

    async fn gc(&self, before: Time) -> Result<u64> {
        self.workers.write_queued(move |conn| ops::gc(conn, before).map(Ok)).await
    }

    fn changes(&self) -> Changes {
        self.workers.changes()
    }
}

/// `path` for messages.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Turns a SQLite failure into what the caller can act on, naming the file.
fn db_error(path: &Path, error: &rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let path = shown(path);
    if let rusqlite::Error::FromSqlConversionFailure(..)
    | rusqlite::Error::IntegralValueOutOfRange(..)
    | rusqlite::Error::InvalidColumnType(..)
    | rusqlite::Error::Utf8Error(..) = error
    {
        return Error::Corrupt(format!(
            "{path} holds a value wayline cannot read ({error}); restore it from a backup"
        ));
    }
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Error::Corrupt(format!(
            "{path} is not a wayline database or is damaged ({error}); restore it from a backup or use another file"
        )),
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            Error::Unavailable(format!(
                "cannot write {path} ({error}); check that the file and its directory exist and are writable"
            ))
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Unavailable(format!(
            "{path} stayed locked by another process for longer than the busy timeout ({error}); try again"
        )),
        Some(ErrorCode::DiskFull) => Error::Unavailable(format!(
            "cannot write {path}: the disk is full ({error}); free some space"
        )),
        _ => Error::Unavailable(format!("{path}: {error}")),
    }
}
