//! Opening the file: checks that it is a wayline database this version understands, sets the
//! connection up, and applies the migrations.
//!
//! Nothing is written before the checks pass: a file of another application, a damaged file
//! or a newer schema is refused as it is.

use std::fs::OpenOptions;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};
use wayline_store::{Error, Result};

use crate::{Options, Synchronous, db_error, shown};

/// `PRAGMA application_id` of wayline databases ("wayl").
const APPLICATION_ID: i32 = 0x7761_796c;

/// The migrations, in order: the schema version is the number applied (`PRAGMA user_version`).
/// Never edit one that shipped; append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: executions, their journals, control requests, logs.
    "
    CREATE TABLE executions (
        id          TEXT PRIMARY KEY NOT NULL,
        workflow    TEXT NOT NULL,
        status      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        started_at  INTEGER,
        finished_at INTEGER,
        error       TEXT,
        last_seq    INTEGER NOT NULL,
        owner       TEXT,
        lease_until INTEGER,
        token       INTEGER NOT NULL,
        last_log    INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX executions_by_created ON executions (created_at, id);
    CREATE INDEX executions_by_status ON executions (status, created_at);
    CREATE INDEX executions_by_workflow ON executions (workflow, created_at);
    CREATE INDEX executions_by_finished ON executions (finished_at) WHERE finished_at IS NOT NULL;

    CREATE TABLE events (
        execution TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
        seq       INTEGER NOT NULL,
        body      TEXT NOT NULL,
        PRIMARY KEY (execution, seq)
    ) WITHOUT ROWID;

    CREATE TABLE requests (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        execution  TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
        body       TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        handled    INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX requests_by_execution ON requests (execution, id);
    CREATE INDEX requests_unhandled ON requests (execution, id) WHERE handled = 0;

    CREATE TABLE logs (
        execution    TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
        line         INTEGER NOT NULL,
        step         TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        compensation INTEGER NOT NULL,
        stream       TEXT NOT NULL,
        time         INTEGER NOT NULL,
        text         TEXT NOT NULL,
        PRIMARY KEY (execution, line)
    ) WITHOUT ROWID;
    CREATE INDEX logs_by_step ON logs (execution, step, line);
    ",
    // 2: idempotency keys of executions started through the API.
    "
    ALTER TABLE executions ADD COLUMN idempotency_key TEXT;
    CREATE UNIQUE INDEX executions_by_idempotency_key ON executions (idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    ",
    // 3: API tokens (only the SHA-256 of each secret).
    "
    CREATE TABLE tokens (
        name       TEXT PRIMARY KEY NOT NULL,
        id         TEXT NOT NULL UNIQUE,
        hash       TEXT NOT NULL,
        role       TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER
    );
    ",
    // 4: the workflow registry: every version of every workflow, never changed once stored.
    "
    CREATE TABLE workflows (
        name       TEXT NOT NULL,
        version    INTEGER NOT NULL,
        source     TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (name, version)
    ) WITHOUT ROWID;
    ",
    // 5: the fan-out item a log line belongs to (NULL for an ordinary step).
    "
    ALTER TABLE logs ADD COLUMN item INTEGER;
    ",
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens the writing connection: checks the file, sets WAL mode, migrates.
pub(crate) fn writer(path: &Path, options: &Options) -> Result<Connection> {
    prepare_file(path)?;
    let conn = connect(path, options)?;
    let error = |e: rusqlite::Error| db_error(path, &e);

    // Read-only checks first: they fail on a file that is not a database, and they refuse a
    // newer or foreign schema before anything is written.
    check(path, &conn)?;

    let mode = wal(&conn, options).map_err(error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Unavailable(format!(
            "{} cannot use write-ahead logging (journal mode stayed `{mode}`); put it on a local file system",
            shown(path)
        )));
    }
    migrate(path, &conn)?;
    Ok(conn)
}

/// Switches the file to write-ahead logging (a no-op when it is already). The switch needs
/// the file to itself and, unlike other statements, does not wait for it in SQLite's busy
/// handler: when another process is opening the same file at this moment, wait here.
fn wal(conn: &Connection, options: &Options) -> rusqlite::Result<String> {
    let deadline = Instant::now() + options.busy_timeout;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(error)
                if error.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            outcome => return outcome,
        }
    }
}

/// Opens a connection that only reads (readers and the watcher).
pub(crate) fn reader(path: &Path, options: &Options) -> Result<Connection> {
    let conn = connect(path, options)?;
    conn.pragma_update(None, "query_only", true).map_err(|e| db_error(path, &e))?;
    Ok(conn)
}

/// Makes sure the file can be created and written, so that the error names the path and the
/// operating system's reason. A new file is private to its user (0600): it holds every
/// execution's inputs, outputs and logs. SQLite gives its `-wal` and `-shm` files the mode of
/// the database file, so they are private too.
///
/// A missing directory is not created: where a database may go is the caller's decision.
fn prepare_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|error| {
            Error::Unavailable(format!(
                "cannot create or write {} ({error}); check that the directory exists and is writable, or choose another --db",
                shown(path)
            ))
        })?;
    Ok(())
}

fn connect(path: &Path, options: &Options) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| db_error(path, &e))?;
    let error = |e: rusqlite::Error| db_error(path, &e);
    conn.busy_timeout(options.busy_timeout).map_err(error)?;
    conn.pragma_update(None, "foreign_keys", true).map_err(error)?;
    let synchronous = match options.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous).map_err(error)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Refuses files that are not wayline databases of a version this build understands; returns
/// the schema version. One statement, so one consistent snapshot even while another process
/// migrates.
fn check(path: &Path, conn: &Connection) -> Result<i64> {
    let (application, version, tables): (i32, i64, i64) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id),
                    (SELECT user_version FROM pragma_user_version),
                    (SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%')",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .map_err(|e| db_error(path, &e))?;
    if application != 0 && application != APPLICATION_ID {
        return Err(Error::Corrupt(format!(
            "{} is a SQLite database of another application (application_id {application:#x}), not wayline's; use another file",
            shown(path)
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew { found: version, supported: SCHEMA_VERSION });
    }
    if application == 0 && tables > 0 {
        return Err(Error::Corrupt(format!(
            "{} is a SQLite database with tables of its own, not wayline's; use another file",
            shown(path)
        )));
    }
    Ok(version)
}

/// Applies the missing migrations in one immediate transaction; a second process opening the
/// same file at the same moment waits, then finds nothing left to do.
fn migrate(path: &Path, conn: &Connection) -> Result<()> {
    let error = |e: rusqlite::Error| db_error(path, &e);
    // Cheap check without the write lock: the usual case is an up-to-date file.
    let version: i64 =
        conn.pragma_query_value(None, "user_version", |row| row.get(0)).map_err(error)?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)
        .map_err(error)?;
    let version = check(path, &tx)?;
    for (index, migration) in
        MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0))
    {
        tx.execute_batch(migration).map_err(error)?;
        tx.pragma_update(None, "user_version", index as i64 + 1).map_err(error)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(error)?;
    tx.commit().map_err(error)
}
