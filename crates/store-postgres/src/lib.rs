//! wayline's shared store: journals, leases, requests and logs in PostgreSQL, for servers
//! (one or several, sharing the database) and for processes that steer them.
//!
//! Everything lives in one schema (`wayline` unless configured), created and migrated on
//! [`PostgresStore::connect`] in a transaction under an advisory lock, so several servers can
//! start at once. A database migrated by a newer wayline is refused.
//!
//! Fencing: a commit locks the rows of its executions (`SELECT … FOR UPDATE`, in id order so
//! two group commits cannot deadlock) and checks the lease token and the journal's end
//! before it appends; two engines can never both append the same sequence number.
//! Every write that others may wait for sends a `NOTIFY`; [`Store::changed`] listens on a
//! connection of its own.
//!
//! Connections come from a small pool. A connection that died (the server restarted, an
//! administrator terminated it) is replaced on the next use: while the server is down,
//! operations fail with [`Error::Unavailable`], and they work again once it is back.
//!
//! There is no TLS: use it on loopback or a trusted network.
//!
//! ```no_run
//! use wayline_store::Store;
//! use wayline_store_postgres::{Options, PostgresStore};
//! # async fn example() -> wayline_store::Result<()> {
//! let store = PostgresStore::connect("postgres://wayline@127.0.0.1/wayline", Options::default()).await?;
//! let running = store.list(Default::default()).await?;
//! # Ok(()) }
//! ```

// A library reports through `tracing` (or its return values); only the binary writes to the
// standard streams.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod listen;
mod ops;
mod pool;
mod schema;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::error::SqlState;
use wayline_journal::{Event, Time};
use wayline_store::{
    Changes, Commit, Error, ExecutionRecord, Filter, Lease, LogLine, NewExecution, Request, Result,
    Store, StoredRequest, TokenRecord, WorkflowVersion,
};

pub use schema::SCHEMA_VERSION;

/// How to use the database.
#[derive(Debug, Clone)]
pub struct Options {
    /// The schema wayline's tables live in: lowercase letters, digits and `_`.
    pub schema: String,
    /// Connections used for operations (one more listens for notifications).
    pub pool_size: usize,
    /// How long to wait for a connection when the URL does not say (`connect_timeout`).
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options { schema: "wayline".into(), pool_size: 4, connect_timeout: Duration::from_secs(5) }
    }
}

/// A handle on a PostgreSQL database; clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

struct Shared {
    pool: pool::Pool,
    listener: listen::Listener,
    /// Bumped after this process's own writes, and on notifications from other processes.
    signal: Arc<watch::Sender<u64>>,
    /// The NOTIFY channel and this store's payload (its own notifications are not news).
    channel: String,
    origin: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore").field("database", &self.shared.pool.target).finish()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database?…`), creates the schema
    /// when missing and applies the migrations.
    ///
    /// Errors: [`Error::Config`] for a malformed URL or schema name; [`Error::Unavailable`]
    /// when the server cannot be reached or refuses the login; [`Error::SchemaTooNew`] when a
    /// newer wayline migrated the schema (nothing is changed).
    pub async fn connect(url: &str, options: Options) -> Result<PostgresStore> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|error| {
            Error::Config(format!("`{}` is not a PostgreSQL URL: {error}", redact(url)))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("wayline");
        }
        schema::check_name(&options.schema)?;
        let pool = pool::Pool::new(config, &options);
        schema::migrate(&pool).await?;

        static STORES: AtomicU64 = AtomicU64::new(0);
        let origin = format!("{}-{}", std::process::id(), STORES.fetch_add(1, Ordering::Relaxed));
        let channel = format!("wayline_{}", options.schema);
        let signal = Arc::new(watch::Sender::new(0));
        let listener = listen::Listener::new(&channel, &origin);
        Ok(PostgresStore { shared: Arc::new(Shared { pool, listener, signal, channel, origin }) })
    }

    /// The schema this store uses.
    pub fn schema(&self) -> &str {
        &self.shared.pool.schema
    }

    /// Wakes this process's waiters in [`Store::changed`] after a write of ours.
    fn wrote(&self) {
        self.shared.signal.send_modify(|version| *version = version.wrapping_add(1));
    }
}

/// Runs an operation on a pooled connection, retrying on a fresh connection when the pooled
/// one turned out to be dead before anything was committed (or on a serialization failure).
macro_rules! attempt {
    ($store:expr, |$conn:ident| $body:expr) => {{
        let pool = &$store.shared.pool;
        let mut tries = 0;
        loop {
            let mut pooled = pool.get().await?;
            let outcome = {
                let $conn = pooled.conn();
                $body.await
            };
            match outcome {
                Ok(value) => {
                    pooled.done();
                    break value;
                }
                Err(failure) => {
                    if failure.lost_connection() {
                        pool.purge();
                    }
                    tries += 1;
                    if tries < 3 && failure.retryable(pooled.reused()) {
                        continue;
                    }
                    break Err(pool.error(&failure));
                }
            }
        }
    }};
}

impl Store for PostgresStore {
    async fn create(&self, execution: NewExecution, events: Vec<Event>) -> Result<Lease> {
        wayline_store::check_sequence(&execution.id, 0, events.iter().map(|e| e.seq))?;
        let events = ops::encode(&events)?;
        let shared = &self.shared;
        let lease = attempt!(self, |conn| ops::create(
            conn,
            &execution,
            &events,
            &shared.channel,
            &shared.origin
        ))?;
        self.wrote();
        Ok(lease)
    }

    async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<Result<()>>> {
        if commits.is_empty() {
            return Ok(Vec::new());
        }
        let commits = commits.into_iter().map(ops::Encoded::new).collect::<Result<Vec<_>>>()?;
        let shared = &self.shared;
        let results =
            attempt!(self, |conn| ops::commit(conn, &commits, &shared.channel, &shared.origin))?;
        self.wrote();
        Ok(results)
    }

    async fn get(&self, id: &str) -> Result<ExecutionRecord> {
        attempt!(self, |conn| ops::get(conn, id))
    }

    async fn by_idempotency_key(&self, key: &str) -> Result<Option<String>> {
        attempt!(self, |conn| ops::by_idempotency_key(conn, key))
    }

    async fn resolve(&self, prefix: &str) -> Result<String> {
        attempt!(self, |conn| ops::resolve(conn, prefix))
    }

    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>> {
        attempt!(self, |conn| ops::events(conn, id, after, limit))
    }

    async fn list(&self, filter: Filter) -> Result<Vec<ExecutionRecord>> {
        attempt!(self, |conn| ops::list(conn, &filter))
    }

    async fn acquire(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        now: Time,
        dead_owner: Option<&str>,
    ) -> Result<Lease> {
        attempt!(self, |conn| ops::acquire(conn, id, owner, now.after(ttl), now, dead_owner))
    }

    async fn renew(&self, leases: Vec<Lease>, ttl: Duration, now: Time) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        attempt!(self, |conn| ops::renew(conn, &leases, now.after(ttl)))
    }

    async fn release(&self, lease: Lease) -> Result<()> {
        attempt!(self, |conn| ops::release(conn, &lease))
    }

    async fn request(&self, id: &str, request: Request, now: Time) -> Result<u64> {
        let body = ops::to_json(&request)?;
        let shared = &self.shared;
        let number = attempt!(self, |conn| ops::request(
            conn,
            id,
            &body,
            now,
            &shared.channel,
            &shared.origin
        ))?;
        self.wrote();
        Ok(number)
    }

    async fn requests(&self, ids: Vec<String>) -> Result<Vec<StoredRequest>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        attempt!(self, |conn| ops::requests(conn, &ids))
    }

    async fn append_logs(&self, lines: Vec<LogLine>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let shared = &self.shared;
        attempt!(self, |conn| ops::append_logs(conn, &lines, &shared.channel, &shared.origin))?;
        self.wrote();
        Ok(())
    }

    async fn logs(
        &self,
        id: &str,
        step: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>> {
        attempt!(self, |conn| ops::logs(conn, id, step, after, limit))
    }

    async fn put_workflow(
        &self,
        name: &str,
        source: &str,
        now: Time,
    ) -> Result<(WorkflowVersion, bool)> {
        attempt!(self, |conn| ops::put_workflow(conn, name, source, now))
    }

    async fn workflow_versions(&self, name: &str) -> Result<Vec<WorkflowVersion>> {
        attempt!(self, |conn| ops::workflow_versions(conn, name))
    }

    async fn workflows(&self) -> Result<Vec<WorkflowVersion>> {
        attempt!(self, |conn| ops::workflows(conn))
    }

    async fn delete_workflow(&self, name: &str) -> Result<bool> {
        attempt!(self, |conn| ops::delete_workflow(conn, name))
    }

    async fn add_token(&self, token: TokenRecord) -> Result<()> {
        attempt!(self, |conn| ops::add_token(conn, &token))
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        attempt!(self, |conn| ops::tokens(conn))
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        attempt!(self, |conn| ops::token(conn, id))
    }

    async fn revoke_token(&self, name: &str) -> Result<bool> {
        attempt!(self, |conn| ops::revoke_token(conn, name))
    }

    async fn gc(&self, before: Time) -> Result<u64> {
        attempt!(self, |conn| ops::gc(conn, before))
    }

    fn changes(&self) -> Changes {
        let receiver = self.shared.signal.subscribe();
        listen::ensure(&self.shared);
        Changes::new(receiver, None)
    }
}

/// What went wrong in an operation, and whether trying again on another connection is safe.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The statement failed; `committing`: it was the COMMIT, so its outcome is unknown.
    Db { error: tokio_postgres::Error, committing: bool },
    /// Stored data could not be decoded.
    Corrupt(String),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Failure {
        Failure::Db { error, committing: false }
    }
}

impl Failure {
    fn lost_connection(&self) -> bool {
        matches!(self, Failure::Db { error, .. } if connection_lost(error))
    }

    /// Safe and worth repeating: a reused connection that turned out dead before the
    /// commit, or a transaction the server aborted to break a conflict.
    fn retryable(&self, reused: bool) -> bool {
        match self {
            Failure::Db { error, committing } => {
                let conflict = matches!(error.code(), Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED);
                conflict || (reused && !committing && connection_lost(error))
            }
            Failure::Corrupt(_) => false,
        }
    }
}

/// The connection is gone (closed, reset, the backend terminated or shutting down).
fn connection_lost(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        }
        // No SQLSTATE: an I/O error on the socket.
        None => error.as_db_error().is_none(),
    }
}

/// The error's whole chain, without the unhelpful "db error" prefix.
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} ({})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => {
                    format!("{}{}:***{}", &url[..scheme + 3], &credentials[..colon], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
