//! Choosing the store: the one place that names concrete backends. The command line and the
//! server both open their store here; [`AnyStore`] delegates every call to the backend a
//! [`Location`] names (a database URL, or memory for an ephemeral run).
//!
//! Database URLs: `sqlite:///absolute/path.db`, `sqlite://relative/path.db` or a plain file
//! path; `?synchronous=full` makes every SQLite commit wait for the disk. `postgres://…` (or
//! `postgresql://…`) selects PostgreSQL; `?schema=NAME` picks wayline's schema (default
//! `wayline`). The default is `$XDG_DATA_HOME/wayline/wayline.db`
//! (`~/.local/share/wayline/wayline.db`).

// A library reports through `tracing` (or its return values); only the binary writes to the
// standard streams.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wayline_journal::{Event, Time};
use wayline_store::{
    Changes, Commit, ExecutionRecord, Filter, Lease, LogLine, MemoryStore, NewExecution, Request,
    Result, Store, StoredRequest, TokenRecord, WorkflowVersion,
};
use wayline_store_postgres::PostgresStore;
use wayline_store_sqlite::SqliteStore;
pub use wayline_store_sqlite::Synchronous;

/// Why a store could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The location itself is wrong (an unknown URL, a directory that does not exist): fix the
    /// URL or the path.
    #[error("{0}")]
    Invalid(String),
    /// The store at a valid location cannot be opened or used.
    #[error("database {location}: {error}")]
    Store { location: String, error: wayline_store::Error },
}

impl Error {
    /// A store error at `location`, for messages.
    pub fn at(error: wayline_store::Error, location: &Location) -> Error {
        Error::Store { location: location.describe(), error }
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

#[derive(Clone)]
pub enum AnyStore {
    Memory(MemoryStore),
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

impl AnyStore {
    /// Resolves once the store's background work is over, after the last handle is dropped
    /// (SQLite then folds its write-ahead log back into the file).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let sqlite = match self {
            AnyStore::Sqlite(store) => Some(store.closed()),
            _ => None,
        };
        async move {
            if let Some(closed) = sqlite {
                closed.await;
            }
        }
    }

    /// Whether other processes can see this store (and so send control requests).
    pub fn is_shared(&self) -> bool {
        !matches!(self, AnyStore::Memory(_))
    }
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Memory($store) => $call,
            AnyStore::Sqlite($store) => $call,
            AnyStore::Postgres($store) => $call,
        }
    };
}

impl Store for AnyStore {
    async fn create(&self, execution: NewExecution, events: Vec<Event>) -> Result<Lease> {
        delegate!(self, s => s.create(execution, events).await)
    }
    async fn commit(&self, commits: Vec<Commit>) -> Result<Vec<Result<()>>> {
        delegate!(self, s => s.commit(commits).await)
    }
    async fn get(&self, id: &str) -> Result<ExecutionRecord> {
        delegate!(self, s => s.get(id).await)
    }
    async fn resolve(&self, prefix: &str) -> Result<String> {
        delegate!(self, s => s.resolve(prefix).await)
    }
    async fn by_idempotency_key(&self, key: &str) -> Result<Option<String>> {
        delegate!(self, s => s.by_idempotency_key(key).await)
    }
    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>> {
        delegate!(self, s => s.events(id, after, limit).await)
    }
    async fn list(&self, filter: Filter) -> Result<Vec<ExecutionRecord>> {
        delegate!(self, s => s.list(filter).await)
    }
    async fn acquire(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        now: Time,
        dead_owner: Option<&str>,
    ) -> Result<Lease> {
        delegate!(self, s => s.acquire(id, owner, ttl, now, dead_owner).await)
    }
    async fn renew(&self, leases: Vec<Lease>, ttl: Duration, now: Time) -> Result<Vec<bool>> {
        delegate!(self, s => s.renew(leases, ttl, now).await)
    }
    async fn release(&self, lease: Lease) -> Result<()> {
        delegate!(self, s => s.release(lease).await)
    }
    async fn request(&self, id: &str, request: Request, now: Time) -> Result<u64> {
        delegate!(self, s => s.request(id, request, now).await)
    }
    async fn requests(&self, ids: Vec<String>) -> Result<Vec<StoredRequest>> {
        delegate!(self, s => s.requests(ids).await)
    }
    async fn append_logs(&self, lines: Vec<LogLine>) -> Result<()> {
        delegate!(self, s => s.append_logs(lines).await)
    }
    async fn logs(
        &self,
        id: &str,
        step: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>> {
        delegate!(self, s => s.logs(id, step, after, limit).await)
    }
    async fn gc(&self, before: Time) -> Result<u64> {
        delegate!(self, s => s.gc(before).await)
    }
    async fn put_workflow(
        &self,
        name: &str,
        source: &str,
        now: Time,
    ) -> Result<(WorkflowVersion, bool)> {
        delegate!(self, s => s.put_workflow(name, source, now).await)
    }
    async fn workflow_versions(&self, name: &str) -> Result<Vec<WorkflowVersion>> {
        delegate!(self, s => s.workflow_versions(name).await)
    }
    async fn workflows(&self) -> Result<Vec<WorkflowVersion>> {
        delegate!(self, s => s.workflows().await)
    }
    async fn delete_workflow(&self, name: &str) -> Result<bool> {
        delegate!(self, s => s.delete_workflow(name).await)
    }
    async fn add_token(&self, token: TokenRecord) -> Result<()> {
        delegate!(self, s => s.add_token(token).await)
    }
    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        delegate!(self, s => s.tokens().await)
    }
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        delegate!(self, s => s.token(id).await)
    }
    async fn revoke_token(&self, name: &str) -> Result<bool> {
        delegate!(self, s => s.revoke_token(name).await)
    }
    fn changes(&self) -> Changes {
        delegate!(self, s => s.changes())
    }
}

/// Where executions are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In this process's memory only (`--ephemeral`).
    Ephemeral,
    Sqlite {
        path: PathBuf,
        synchronous: Synchronous,
        /// The default location, whose directory wayline creates; an explicit path's
        /// directory must exist.
        default: bool,
    },
    Postgres {
        url: String,
        schema: String,
    },
}

impl Location {
    /// The location from `--db`, else `WAYLINE_DB` (clap reads it), else the default file.
    pub fn parse(db: Option<&str>) -> Result<Location, Error> {
        match db.map(str::trim) {
            // Most likely an unset variable in a script (`--db "$DB"`): refuse rather than
            // quietly use, and fill, the default database.
            Some("") => Err(invalid(
                "--db (or WAYLINE_DB) is empty; give a database URL, or leave it out for the default database",
            )),
            Some(url) => Location::from_url(url),
            None => Ok(Location::Sqlite {
                path: default_path()?,
                synchronous: Synchronous::Normal,
                default: true,
            }),
        }
    }

    fn from_url(url: &str) -> Result<Location, Error> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut params = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((key.to_owned(), value.to_owned()));
        }
        if base.starts_with("postgres://") || base.starts_with("postgresql://") {
            let mut schema = "wayline".to_owned();
            let mut rest = Vec::new();
            for (key, value) in params {
                if key == "schema" {
                    schema = value;
                } else {
                    rest.push(format!("{key}={value}"));
                }
            }
            let url = if rest.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", rest.join("&"))
            };
            return Ok(Location::Postgres { url, schema });
        }
        let path = if let Some(path) = base.strip_prefix("sqlite://") {
            path
        } else if let Some(path) = base.strip_prefix("sqlite:") {
            path
        } else if base.contains("://") {
            return Err(invalid(format!(
                "`{url}`: unknown database; use sqlite:///path/to/file.db or postgres://user@host/db"
            )));
        } else {
            base
        };
        if path.is_empty() {
            return Err(invalid(format!("`{url}` names no file")));
        }
        let mut synchronous = Synchronous::Normal;
        for (key, value) in params {
            match (key.as_str(), value.as_str()) {
                ("synchronous", "normal") => synchronous = Synchronous::Normal,
                ("synchronous", "full") => synchronous = Synchronous::Full,
                _ => {
                    return Err(invalid(format!(
                        "`{url}`: unknown option `{key}={value}` (SQLite takes synchronous=normal|full)"
                    )));
                }
            }
        }
        Ok(Location::Sqlite { path: PathBuf::from(path), synchronous, default: false })
    }

    /// The location as a `--db` URL (for a worker process).
    pub fn url(&self) -> String {
        match self {
            Location::Ephemeral => "memory".into(),
            Location::Sqlite { path, synchronous, .. } => {
                let path = std::path::absolute(path).unwrap_or_else(|_| path.clone());
                let sync = if *synchronous == Synchronous::Full { "?synchronous=full" } else { "" };
                format!("sqlite://{}{sync}", path.display())
            }
            Location::Postgres { url, schema } => {
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}schema={schema}")
            }
        }
    }

    /// How to name this location to a person (no passwords).
    pub fn describe(&self) -> String {
        match self {
            Location::Ephemeral => "memory (ephemeral)".into(),
            Location::Sqlite { path, .. } => path.display().to_string(),
            Location::Postgres { url, schema } => {
                let shown = match (url.find("://"), url.rfind('@')) {
                    (Some(scheme), Some(at)) if at > scheme => {
                        format!("{}://…@{}", &url[..scheme], &url[at + 1..])
                    }
                    _ => url.clone(),
                };
                format!("{shown} (schema {schema})")
            }
        }
    }
}

fn default_path() -> Result<PathBuf, Error> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")));
    match data {
        Some(dir) => Ok(dir.join("wayline").join("wayline.db")),
        None => {
            Err(invalid("no database given and neither XDG_DATA_HOME nor HOME is set; pass --db"))
        }
    }
}

/// Creates the default database's directory, private to its user (0700) like the database in
/// it; for an explicit path, refuses a directory that does not exist rather than creating it
/// wherever a typo points (`--db /nope/x.db` would create `/nope`).
fn prepare_directory(path: &Path, default: bool) -> Result<(), Error> {
    let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) else {
        return Ok(()); // the current directory
    };
    if !default {
        return match std::fs::metadata(dir) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(invalid(format!(
                "the directory {} of database {} does not exist; create it, or choose another --db",
                dir.display(),
                path.display()
            ))),
            // Anything else (not a directory, no permission) is the store's to report.
            _ => Ok(()),
        };
    }
    let unwritable = |error: std::io::Error| Error::Store {
        location: path.display().to_string(),
        error: wayline_store::Error::Unavailable(format!(
            "cannot create the directory {} for the database: {error}; pass --db to use another place",
            dir.display()
        )),
    };
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(unwritable)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => Err(unwritable(error)),
        _ => Ok(()),
    }
}

/// Opens the store; a failure is an infrastructure error (exit 3) with the reason.
pub async fn open(location: &Location) -> Result<AnyStore, Error> {
    let store = match location {
        Location::Ephemeral => Ok(AnyStore::Memory(MemoryStore::new())),
        Location::Sqlite { path, synchronous, default } => {
            prepare_directory(path, *default)?;
            let options =
                wayline_store_sqlite::Options { synchronous: *synchronous, ..Default::default() };
            SqliteStore::open(path, options).await.map(AnyStore::Sqlite)
        }
        Location::Postgres { url, schema } => {
            let options =
                wayline_store_postgres::Options { schema: schema.clone(), ..Default::default() };
            PostgresStore::connect(url, options).await.map(AnyStore::Postgres)
        }
    };
    store.map_err(|error| Error::at(error, location))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            Location::parse(Some("sqlite:///var/lib/w.db?synchronous=full")).unwrap(),
            Location::Sqlite {
                path: "/var/lib/w.db".into(),
                synchronous: Synchronous::Full,
                default: false
            }
        );
        assert_eq!(
            Location::parse(Some("data/w.db")).unwrap(),
            Location::Sqlite {
                path: "data/w.db".into(),
                synchronous: Synchronous::Normal,
                default: false
            }
        );
        assert_eq!(
            Location::parse(Some("postgres://u@h/db?schema=ci&sslmode=disable")).unwrap(),
            Location::Postgres {
                url: "postgres://u@h/db?sslmode=disable".into(),
                schema: "ci".into()
            }
        );
        assert!(Location::parse(Some("mysql://x")).is_err());
        assert!(Location::parse(Some(" ")).is_err(), "an empty --db is not the default");
        assert!(Location::parse(Some("sqlite:///x.db?fast=yes")).is_err());
        let described =
            Location::parse(Some("postgres://user:secret@h:5432/db")).unwrap().describe();
        assert!(!described.contains("secret"), "{described}");
    }
}
