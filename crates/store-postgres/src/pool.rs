//! A small pool of connections, each with its prepared statements.
//!
//! A connection goes back to the pool only after an operation finished cleanly; one that
//! failed, was dropped mid-transaction or was closed by the server is dropped, and the next
//! operation opens a new one. That is all the "reconnect" there is.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::config::Host;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Connection, NoTls, Row, Socket, Statement};
use wayline_store::{Error, Result};

use crate::{Failure, Options, connection_lost, describe};

pub(crate) struct Pool {
    config: tokio_postgres::Config,
    pub(crate) schema: String,
    /// "PostgreSQL at host:port, database d, user u", for messages.
    pub(crate) target: String,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

/// One connection and the statements prepared on it.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Pool {
    pub(crate) fn new(config: tokio_postgres::Config, options: &Options) -> Pool {
        let target = target(&config);
        Pool {
            config,
            schema: options.schema.clone(),
            target,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(options.pool_size.max(1)),
        }
    }

    /// A connection for one operation: an idle one that is still open, or a new one.
    pub(crate) async fn get(&self) -> Result<Pooled<'_>> {
        let permit = self.permits.acquire().await.map_err(|_| {
            Error::Unavailable(format!("the connection pool for {} was closed", self.target))
        })?;
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            idle.retain(|conn| !conn.client.is_closed());
            idle.pop()
        };
        let (conn, reused) = match idle {
            Some(conn) => (conn, true),
            None => (self.open(true).await?, false),
        };
        Ok(Pooled { pool: self, conn: Some(conn), reused, clean: false, _permit: permit })
    }

    /// Forgets the idle connections: after one was found dead (the server restarted), the
    /// others most likely are too, and reopening is cheaper than finding out one by one.
    pub(crate) fn purge(&self) {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }

    /// A new connection whose driver the caller runs.
    pub(crate) async fn connect(&self) -> Result<(Client, Connection<Socket, NoTlsStream>)> {
        self.config.connect(NoTls).await.map_err(|error| self.unreachable(&error))
    }

    /// Opens a connection; `in_schema`: with the search path set to wayline's schema.
    pub(crate) async fn open(&self, in_schema: bool) -> Result<Conn> {
        let (client, connection) = self.connect().await?;
        // The connection's driver task belongs to its Client: it ends when the Client is
        // dropped (the pool lets go of it, or the last store handle is dropped) or when the
        // server closes the connection. A storage driver's task: the accepted exception to
        // "only the runtime spawns".
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            let _ = connection.await;
        });
        if in_schema {
            client
                .batch_execute(&format!("SET search_path TO \"{}\"", self.schema))
                .await
                .map_err(|error| self.error(&Failure::from(error)))?;
        }
        Ok(Conn { client, statements: HashMap::new() })
    }

    fn unreachable(&self, error: &tokio_postgres::Error) -> Error {
        if error.as_db_error().is_some() {
            // The server answered: a login or database problem.
            return Error::Unavailable(format!(
                "{} refused the connection: {}; check the user, password and database in the URL",
                self.target,
                describe(error)
            ));
        }
        Error::Unavailable(format!(
            "cannot connect to {}: {}; is the server running and the URL right?",
            self.target,
            describe(error)
        ))
    }

    /// What a failed operation means for the caller.
    pub(crate) fn error(&self, failure: &Failure) -> Error {
        match failure {
            Failure::Corrupt(message) => Error::Corrupt(message.clone()),
            Failure::Db { error, committing } => {
                let what = describe(error);
                if connection_lost(error) {
                    let outcome = if *committing {
                        "; the last commit may or may not have been applied"
                    } else {
                        ""
                    };
                    Error::Unavailable(format!(
                        "lost the connection to {} ({what}){outcome}; retry later",
                        self.target
                    ))
                } else {
                    Error::Unavailable(format!("{} failed: {what}", self.target))
                }
            }
        }
    }
}

/// A connection lent to one operation. It returns to the pool only when the operation
/// called [`Pooled::done`].
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    reused: bool,
    clean: bool,
    _permit: SemaphorePermit<'a>,
}

impl Pooled<'_> {
    pub(crate) fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a pooled connection is present until dropped")
    }

    /// Whether the connection served an earlier operation (and so may have died since).
    pub(crate) fn reused(&self) -> bool {
        self.reused
    }

    /// The operation finished with the connection in a clean state (no open transaction).
    pub(crate) fn done(&mut self) {
        self.clean = true;
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.clean
            && !conn.client.is_closed()
        {
            self.pool.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(conn);
        }
    }
}

impl Conn {
    async fn statement(&mut self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    pub(crate) async fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Failure> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query(&statement, params).await?)
    }

    pub(crate) async fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Failure> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query_opt(&statement, params).await?)
    }

    pub(crate) async fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Failure> {
        let statement = self.statement(sql).await?;
        Ok(self.client.query_one(&statement, params).await?)
    }

    pub(crate) async fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Failure> {
        let statement = self.statement(sql).await?;
        Ok(self.client.execute(&statement, params).await?)
    }

    /// Starts a transaction and runs its first statement, in one round trip (pipelined).
    pub(crate) async fn begin_with(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Failure> {
        let statement = self.statement(sql).await?;
        let (_, rows) = tokio::try_join!(
            self.client.batch_execute("BEGIN"),
            self.client.query(&statement, params)
        )?;
        Ok(rows)
    }

    /// Runs the transaction's last statement and commits, in one round trip (pipelined).
    pub(crate) async fn commit_with(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Failure> {
        let statement = self.statement(sql).await?;
        let (rows, committed) = tokio::join!(
            self.client.query(&statement, params),
            self.client.batch_execute("COMMIT")
        );
        match (rows, committed) {
            (Ok(rows), Ok(())) => Ok(rows),
            // The statement failed on a live connection: the COMMIT rolled back, nothing landed.
            (Err(error), _) if !connection_lost(&error) => Err(Failure::from(error)),
            // Lost while committing: whether it landed is unknown.
            (Err(error), _) | (Ok(_), Err(error)) => Err(Failure::Db { error, committing: true }),
        }
    }

    pub(crate) async fn rollback(&mut self) -> Result<(), Failure> {
        Ok(self.client.batch_execute("ROLLBACK").await?)
    }
}

fn target(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let port = config
                .get_ports()
                .get(index)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() { "localhost:5432".to_owned() } else { hosts.join(",") };
    let user = config.get_user().unwrap_or("(default user)");
    let database = config.get_dbname().unwrap_or(user);
    format!("PostgreSQL at {hosts} (database {database}, user {user})")
}
