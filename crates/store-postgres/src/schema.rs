//! wayline's tables in PostgreSQL and the migrations that create them.
//!
//! Migrations run in one transaction holding an advisory lock keyed by the schema name, so
//! that servers starting together apply each migration once. `schema_migrations` records
//! what was applied; a version above [`SCHEMA_VERSION`] means a newer wayline migrated the
//! database, and this one refuses it without changing anything.

use wayline_store::{Error, Result};

use crate::Failure;
use crate::pool::Pool;

/// The migrations, in order; `{schema}` stands for the quoted schema name. Never edit one
/// that shipped; append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: executions, their journals, control requests, logs. Ids compare bytewise (`C`), so
    // that prefix ranges and ordering match every other backend.
    r#"
    CREATE TABLE {schema}.executions (
        id          text COLLATE "C" PRIMARY KEY,
        workflow    text NOT NULL,
        status      text NOT NULL,
        created_at  bigint NOT NULL,
        started_at  bigint,
        finished_at bigint,
        error       text,
        last_seq    bigint NOT NULL,
        owner       text,
        lease_until bigint,
        token       bigint NOT NULL,
        last_log    bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX executions_by_created ON {schema}.executions (created_at, id);
    CREATE INDEX executions_by_status ON {schema}.executions (status, created_at);
    CREATE INDEX executions_by_workflow ON {schema}.executions (workflow, created_at);
    CREATE INDEX executions_by_finished ON {schema}.executions (finished_at) WHERE finished_at IS NOT NULL;

    CREATE TABLE {schema}.events (
        execution text COLLATE "C" NOT NULL REFERENCES {schema}.executions (id) ON DELETE CASCADE,
        seq       bigint NOT NULL,
        body      text NOT NULL,
        PRIMARY KEY (execution, seq)
    );

    CREATE TABLE {schema}.requests (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        execution  text COLLATE "C" NOT NULL REFERENCES {schema}.executions (id) ON DELETE CASCADE,
        body       text NOT NULL,
        created_at bigint NOT NULL,
        handled    boolean NOT NULL DEFAULT false
    );
    CREATE INDEX requests_by_execution ON {schema}.requests (execution, id);
    CREATE INDEX requests_unhandled ON {schema}.requests (execution, id) WHERE NOT handled;

    CREATE TABLE {schema}.logs (
        execution    text COLLATE "C" NOT NULL REFERENCES {schema}.executions (id) ON DELETE CASCADE,
        line         bigint NOT NULL,
        step         text NOT NULL,
        attempt      integer NOT NULL,
        compensation boolean NOT NULL,
        stream       text NOT NULL,
        time         bigint NOT NULL,
        text         bytea NOT NULL,
        PRIMARY KEY (execution, line)
    );
    CREATE INDEX logs_by_step ON {schema}.logs (execution, step, line);
    "#,
    // 2: idempotency keys of executions started through the API.
    r#"
    ALTER TABLE {schema}.executions ADD COLUMN idempotency_key text COLLATE "C";
    CREATE UNIQUE INDEX executions_by_idempotency_key ON {schema}.executions (idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    "#,
    // 3: API tokens (only the SHA-256 of each secret).
    r#"
    CREATE TABLE {schema}.tokens (
        name       text COLLATE "C" PRIMARY KEY,
        id         text COLLATE "C" NOT NULL UNIQUE,
        hash       text NOT NULL,
        role       text NOT NULL,
        created_at bigint NOT NULL,
        expires_at bigint
    );
    "#,
    // 4: the workflow registry: every version of every workflow, never changed once stored.
    r#"
    CREATE TABLE {schema}.workflows (
        name       text COLLATE "C" NOT NULL,
        version    integer NOT NULL,
        source     text NOT NULL,
        created_at bigint NOT NULL,
        PRIMARY KEY (name, version)
    );
    "#,
    // 5: the fan-out item a log line belongs to (NULL for an ordinary step).
    r#"
    ALTER TABLE {schema}.logs ADD COLUMN item integer;
    "#,
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Schema names are spliced into SQL, so only plain identifiers are accepted.
pub(crate) fn check_name(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 50 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "`{schema}` cannot be a schema name: use at most 50 lowercase letters, digits and `_`, starting with a letter or `_`"
        )))
    }
}

/// Brings the schema up to date, or refuses a newer one.
pub(crate) async fn migrate(pool: &Pool) -> Result<()> {
    // A connection of its own, dropped afterwards: its search path was set before the schema
    // existed.
    let mut conn = pool.open(false).await?;
    apply(&mut conn, &pool.schema).await.map_err(|failure| match failure {
        Outcome::TooNew(found) => Error::SchemaTooNew { found, supported: SCHEMA_VERSION },
        Outcome::Failed(failure) => pool.error(&failure),
    })
}

enum Outcome {
    TooNew(i64),
    Failed(Failure),
}

impl From<tokio_postgres::Error> for Outcome {
    fn from(error: tokio_postgres::Error) -> Outcome {
        Outcome::Failed(Failure::from(error))
    }
}

async fn apply(conn: &mut crate::pool::Conn, schema: &str) -> Result<(), Outcome> {
    let client = &conn.client;
    client.batch_execute("BEGIN").await?;
    client
        .execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("wayline migrations {schema}")],
        )
        .await?;
    let table = format!("\"{schema}\".schema_migrations");
    let exists: bool =
        client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await?.try_get(0)?;
    let version: i64 = if exists {
        client
            .query_one(&format!("SELECT coalesce(max(version), 0) FROM {table}"), &[])
            .await?
            .try_get(0)?
    } else {
        0
    };
    if version > SCHEMA_VERSION {
        client.batch_execute("ROLLBACK").await?;
        return Err(Outcome::TooNew(version));
    }
    if version < SCHEMA_VERSION {
        let quoted = format!("\"{schema}\"");
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {quoted};
                 CREATE TABLE IF NOT EXISTS {table} (
                     version    bigint PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );"
            ))
            .await?;
        for (index, migration) in
            MIGRATIONS.iter().enumerate().skip(usize::try_from(version).unwrap_or(0))
        {
            client.batch_execute(&migration.replace("{schema}", &quoted)).await?;
            client
                .execute(
                    &format!("INSERT INTO {table} (version) VALUES ($1)"),
                    &[&(index as i64 + 1)],
                )
                .await?;
        }
    }
    client.batch_execute("COMMIT").await?;
    Ok(())
}
